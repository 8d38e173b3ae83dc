//! Issuance (commanditaire, operator): orders, minting, funding, printing, distribution,
//! cancellation, the order dashboard.

use super::context::Ctx;
use super::convert;
use super::errors::{self, Violations};
use super::pb::{self, issuance_server::Issuance};
use crate::domain::*;
use crate::render;
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

pub struct IssuanceService(pub Arc<Ctx>);

type ResultStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// PDF sheets go out in chunks of this size.
const CHUNK_BYTES: usize = 64 << 10;

fn random_serials(n: u32) -> Vec<Serial> {
    let mut bytes = vec![0u8; n as usize * 8];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    bytes
        .chunks_exact(8)
        .map(|c| Serial::from_random(u64::from_le_bytes(c.try_into().expect("8"))))
        .collect()
}

#[tonic::async_trait]
impl Issuance for IssuanceService {
    async fn create_order(
        &self,
        req: Request<pb::CreateOrderRequest>,
    ) -> Result<Response<pb::CreateOrderResponse>, Status> {
        let who = self.0.auth(&req)?;
        let r = req.get_ref();
        let limits = &self.0.limits;
        who.may_act_for_commanditaire(CommanditaireId(r.commanditaire_id))?;
        if r.pass_count > limits.order_passes_max {
            return Err(errors::limit(
                "order_passes",
                limits.order_passes_max as usize,
                r.pass_count as usize,
            ));
        }
        let mut v = Violations::default();
        if r.pass_count == 0 {
            v.add("pass_count", "an order has at least one pass");
        }
        let face_value = v.check("face_value_cents", Cents::face_value(r.face_value_cents));
        let perimeter = convert::perimeter(&mut v, limits, r.perimeter.as_ref());
        let services = convert::services(&mut v, limits, "services", &r.services);
        let programme = convert::label(&mut v, "programme", &r.programme);
        if r.grace_days > 366 {
            v.add("grace_days", "at most 366 days");
        }
        v.into_result()?;
        let new = NewOrder {
            commanditaire: CommanditaireId(r.commanditaire_id),
            pass_count: r.pass_count,
            carnet_size: r.carnet_size,
            face_value: face_value.expect("checked"),
            valid_from: Timestamp(r.valid_from_ms),
            valid_until: Timestamp(r.valid_until_ms),
            grace_days: r.grace_days,
            perimeter: perimeter.expect("checked"),
            services,
            programme: programme.expect("checked"),
        };
        match self
            .0
            .submit(
                &who,
                "CreateOrder",
                &r.request_id,
                r,
                Command::CreateOrder(new),
            )
            .await?
        {
            Outcome::OrderCreated(id) => {
                Ok(Response::new(pb::CreateOrderResponse { order_id: id.0 }))
            }
            o => Err(errors::unexpected(o)),
        }
    }

    async fn mint_order(
        &self,
        req: Request<pb::MintOrderRequest>,
    ) -> Result<Response<pb::MintOrderResponse>, Status> {
        let who = self.0.auth(&req)?;
        let r = req.get_ref();
        let order = self.0.order(OrderId(r.order_id))?;
        who.may_manage_order(&order)?;
        let serials = if order.minted {
            vec![]
        } else {
            random_serials(order.pass_count)
        };
        match self
            .0
            .submit(
                &who,
                "MintOrder",
                &r.request_id,
                r,
                Command::Mint {
                    order: order.id,
                    serials,
                },
            )
            .await?
        {
            Outcome::Minted { order, passes } => Ok(Response::new(pb::MintOrderResponse {
                order_id: order.0,
                passes,
            })),
            o => Err(errors::unexpected(o)),
        }
    }

    async fn record_funding(
        &self,
        req: Request<pb::RecordFundingRequest>,
    ) -> Result<Response<pb::RecordFundingResponse>, Status> {
        let who = self.0.auth(&req)?;
        who.require_operator()?;
        let r = req.get_ref();
        let mut v = Violations::default();
        if r.amount_cents <= 0 {
            v.add("amount_cents", "a positive number of cents");
        }
        let reference = convert::label(&mut v, "reference", &r.reference);
        v.into_result()?;
        let cmd = Command::RecordFunding {
            order: OrderId(r.order_id),
            amount: Cents(r.amount_cents),
            reference: reference.expect("checked"),
        };
        match self
            .0
            .submit(&who, "RecordFunding", &r.request_id, r, cmd)
            .await?
        {
            Outcome::Funded { activated, .. } => {
                Ok(Response::new(pb::RecordFundingResponse { activated }))
            }
            o => Err(errors::unexpected(o)),
        }
    }

    type ListPassesStream = ResultStream<pb::PassInfo>;

    async fn list_passes(
        &self,
        req: Request<pb::ListPassesRequest>,
    ) -> Result<Response<Self::ListPassesStream>, Status> {
        let who = self.0.auth(&req)?;
        let r = req.get_ref();
        let limits = &self.0.limits;
        let order = self.0.order(OrderId(r.order_id))?;
        who.may_read_order(&order)?;
        let size = convert::page_size(
            r.page_size,
            limits.page_passes_default,
            limits.page_passes_max,
        )?;
        let start: usize = if r.page_token.is_empty() {
            0
        } else {
            let mut v = Violations::default();
            let t = v.check(
                "page_token",
                r.page_token
                    .parse::<usize>()
                    .map_err(|_| "not a token from this server"),
            );
            v.into_result()?;
            t.expect("checked")
        };
        let (page, total) = {
            let state = self.0.read()?;
            let serials = state
                .order_serials
                .get(&order.id)
                .map(|s| &s[..])
                .unwrap_or(&[]);
            let end = (start + size).min(serials.len());
            let page: Vec<Result<pb::PassInfo, Status>> = serials
                .get(start..end)
                .unwrap_or(&[])
                .iter()
                .map(|s| Ok(convert::pass_info(&self.0.keys, &state.passes[s], &order)))
                .collect();
            (page, serials.len())
        };
        let mut page = page;
        let end = (start + size).min(total);
        if end < total {
            if let Some(Ok(last)) = page.last_mut() {
                last.next_page_token = end.to_string();
            }
        }
        self.0.settle().await?;
        Ok(Response::new(Box::pin(tokio_stream::iter(page))))
    }

    async fn render_code(
        &self,
        req: Request<pb::RenderCodeRequest>,
    ) -> Result<Response<pb::RenderCodeResponse>, Status> {
        let who = self.0.auth(&req)?;
        let r = req.get_ref();
        let mut v = Violations::default();
        let serial = convert::serial(&mut v, "serial", &r.serial);
        let format = pb::CodeFormat::try_from(r.format).unwrap_or(pb::CodeFormat::Unspecified);
        if format == pb::CodeFormat::Unspecified {
            v.add("format", "SVG or PNG");
        }
        v.into_result()?;
        let pass = self.0.pass(serial.expect("checked"))?;
        let order = self.0.order(pass.order)?;
        who.may_read_order(&order)
            .map_err(|_| errors::refused(&Refusal::UnknownPass(pass.serial)))?;
        let code = self.0.keys.qr_payload(pass.serial);
        let (image, content_type) = match format {
            pb::CodeFormat::Png => (render::png(&code), "image/png"),
            _ => (render::svg(&code), "image/svg+xml"),
        };
        self.0.settle().await?;
        Ok(Response::new(pb::RenderCodeResponse {
            image,
            content_type: content_type.into(),
            code,
        }))
    }

    type RenderSheetStream = ResultStream<pb::Chunk>;

    async fn render_sheet(
        &self,
        req: Request<pb::RenderSheetRequest>,
    ) -> Result<Response<Self::RenderSheetStream>, Status> {
        let who = self.0.auth(&req)?;
        let r = req.get_ref();
        let order = self.0.order(OrderId(r.order_id))?;
        who.may_read_order(&order)?;
        if !order.minted {
            return Err(errors::refused(&Refusal::NotMinted));
        }
        let carnets: Vec<u32> = match r.carnet {
            Some(c) if c >= order.carnet_count() => {
                return Err(errors::refused(&Refusal::UnknownCarnet {
                    order: order.id,
                    carnet: c,
                }))
            }
            Some(c) => vec![c],
            None => (0..order.carnet_count()).collect(),
        };
        let passes = carnets.len() as u32 * order.carnet_size;
        if passes > self.0.limits.sheet_passes_max {
            return Err(errors::limit(
                "sheet_passes (render one carnet at a time)",
                self.0.limits.sheet_passes_max as usize,
                passes as usize,
            ));
        }
        let (commanditaire, serials) = {
            let state = self.0.read()?;
            let name = state
                .commanditaires
                .get(&order.commanditaire)
                .map(|c| c.name.to_string());
            (
                name.unwrap_or_default(),
                state
                    .order_serials
                    .get(&order.id)
                    .cloned()
                    .unwrap_or_default(),
            )
        };
        let header = render::SheetHeader::of(&order, commanditaire);
        let pages = render::carnet_pages(&self.0.keys, &order, &serials, &carnets);
        let pdf = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            render::sheet_pdf(&mut out, &header, &pages).map(|_| out)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| Status::internal(e.to_string()))?;
        let chunks: Vec<Result<pb::Chunk, Status>> = pdf
            .chunks(CHUNK_BYTES)
            .map(|c| Ok(pb::Chunk { data: c.to_vec() }))
            .collect();
        self.0.settle().await?;
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }

    async fn mark_distributed(
        &self,
        req: Request<pb::MarkDistributedRequest>,
    ) -> Result<Response<pb::MarkDistributedResponse>, Status> {
        let who = self.0.auth(&req)?;
        let r = req.get_ref();
        let order = self.0.order(OrderId(r.order_id))?;
        who.may_manage_order(&order)?;
        let cmd = Command::MarkDistributed {
            order: order.id,
            carnet: r.carnet,
        };
        self.0
            .submit(&who, "MarkDistributed", &r.request_id, r, cmd)
            .await?;
        Ok(Response::new(pb::MarkDistributedResponse {}))
    }

    async fn cancel_passes(
        &self,
        req: Request<pb::CancelPassesRequest>,
    ) -> Result<Response<pb::CancelPassesResponse>, Status> {
        let who = self.0.auth(&req)?;
        let r = req.get_ref();
        let target = cancel_target(&self.0, &who, r)?;
        match self
            .0
            .submit(
                &who,
                "CancelPasses",
                &r.request_id,
                r,
                Command::Cancel { target },
            )
            .await?
        {
            Outcome::Cancelled { passes, credited } => {
                Ok(Response::new(pb::CancelPassesResponse {
                    cancelled: passes,
                    credited_cents: credited.0,
                }))
            }
            o => Err(errors::unexpected(o)),
        }
    }

    async fn get_dashboard(
        &self,
        req: Request<pb::GetDashboardRequest>,
    ) -> Result<Response<pb::Dashboard>, Status> {
        let who = self.0.auth(&req)?;
        let order = self.0.order(OrderId(req.get_ref().order_id))?;
        who.may_read_order(&order)?;
        let board = {
            let state = self.0.read()?;
            let serials = state
                .order_serials
                .get(&order.id)
                .map(|s| &s[..])
                .unwrap_or(&[]);
            let passes: Vec<&Pass> = serials.iter().map(|s| &state.passes[s]).collect();
            dashboard(&order, &passes)
        };
        self.0.settle().await?;
        Ok(Response::new(board))
    }

    async fn run_expiry_sweep(
        &self,
        req: Request<pb::RunExpirySweepRequest>,
    ) -> Result<Response<pb::RunExpirySweepResponse>, Status> {
        let who = self.0.auth(&req)?;
        who.require_operator()?;
        let swept = self.0.sweep().await?;
        Ok(Response::new(pb::RunExpirySweepResponse {
            expired: swept.passes,
            credited_cents: swept.cents,
            credentials_forgotten: swept.credentials_forgotten,
            requests_remembered: swept.requests_remembered,
        }))
    }
}

fn cancel_target(
    ctx: &Ctx,
    who: &super::auth::Principal,
    r: &pb::CancelPassesRequest,
) -> Result<CancelTarget, Status> {
    let mut v = Violations::default();
    match (r.serials.is_empty(), r.carnet) {
        (false, None) => {
            if r.serials.len() > ctx.limits.cancel_passes_max {
                return Err(errors::limit(
                    "cancel_passes",
                    ctx.limits.cancel_passes_max,
                    r.serials.len(),
                ));
            }
            let serials: Vec<Serial> = r
                .serials
                .iter()
                .enumerate()
                .filter_map(|(i, s)| convert::serial(&mut v, &format!("serials[{i}]"), s))
                .collect();
            v.into_result()?;
            for s in &serials {
                let pass = ctx.pass(*s)?;
                let order = ctx.order(pass.order)?;
                who.may_manage_order(&order)
                    .map_err(|_| errors::refused(&Refusal::UnknownPass(*s)))?;
            }
            Ok(CancelTarget::Passes(serials))
        }
        (true, Some(carnet)) => {
            let order = ctx.order(OrderId(r.order_id))?;
            who.may_manage_order(&order)?;
            Ok(CancelTarget::Carnet {
                order: order.id,
                carnet,
            })
        }
        _ => {
            v.add(
                "serials",
                "give serials, or an order_id and a carnet, not both",
            );
            Err(v.into_result().expect_err("one violation"))
        }
    }
}

/// A pass was activated when the order was funded while the pass was still live.
fn was_activated(order: &Order, pass: &Pass) -> bool {
    let Some(funding) = &order.funding else {
        return false;
    };
    pass.closed_at.is_none_or(|closed| closed >= funding.at)
}

/// Counts and amounts of an order's passes; carnets started and finished.
pub fn dashboard(order: &Order, passes: &[&Pass]) -> pb::Dashboard {
    let face = order.face_value.0;
    let count = |pred: &dyn Fn(&Pass) -> bool| {
        let n = passes.iter().filter(|p| pred(p)).count() as u32;
        Some(pb::Count {
            passes: n,
            cents: i64::from(n) * face,
        })
    };
    let carnets = order.carnet_count();
    let mut started = 0;
    let mut finished = 0;
    for chunk in passes.chunks(order.carnet_size as usize) {
        let used = chunk
            .iter()
            .filter(|p| p.status == PassStatus::Redeemed)
            .count();
        started += u32::from(used > 0);
        finished += u32::from(used == chunk.len());
    }
    pb::Dashboard {
        order_id: order.id.0,
        commanditaire_id: order.commanditaire.0,
        issued: count(&|_| true),
        activated: count(&|p| was_activated(order, p)),
        redeemed: count(&|p| p.status == PassStatus::Redeemed),
        cancelled: count(&|p| p.status == PassStatus::Cancelled),
        expired: count(&|p| p.status == PassStatus::Expired),
        outstanding: count(&|p| p.status == PassStatus::Active),
        carnets,
        carnets_distributed: order.distributed.len() as u32,
        carnets_started: started,
        carnets_finished: finished,
        expires_at_ms: order.expires_at().0,
    }
}
