//! Ledger (every role, scoped): the head, the records as their exact bytes, verification.

use super::context::Ctx;
use super::errors;
use super::feed;
use super::pb::{self, ledger_server::Ledger};
use crate::code::hex;
use crate::domain::*;
use crate::engine::Stage;
use crate::storage::{self, LedgerRecord};
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

pub struct LedgerService(pub Arc<Ctx>);

#[tonic::async_trait]
impl Ledger for LedgerService {
    async fn get_head(
        &self,
        req: Request<pb::GetHeadRequest>,
    ) -> Result<Response<pb::Head>, Status> {
        self.0.auth(&req)?;
        // The engine's head is durable: what is signed is on the disk.
        let head = self.0.engine.head();
        Ok(Response::new(self.0.signed_head(head.seq, head.hash)))
    }

    type StreamRecordsStream = Pin<Box<dyn Stream<Item = Result<pb::LedgerRecord, Status>> + Send>>;

    async fn stream_records(
        &self,
        req: Request<pb::StreamRecordsRequest>,
    ) -> Result<Response<Self::StreamRecordsStream>, Status> {
        let who = self.0.auth(&req)?;
        let r = req.get_ref();
        let max = self.0.limits.stream_records_max;
        if r.limit > max {
            return Err(errors::limit("limit", max as usize, r.limit as usize));
        }
        let limit = if r.limit == 0 { max } else { r.limit } as u64;
        let from = r.from_seq.max(1);
        // Only acknowledged records, and the scan stops there: a batch being written after
        // them is not yet part of the ledger, nor whole.
        let until = self.0.engine.head().seq.min(from.saturating_add(limit) - 1);
        // From the last mark before `from`: a page costs what it returns plus at most a
        // mark's spacing, wherever it is in the log.
        let start = self.0.engine.mark_before(from);
        let permit = self.0.reader_permit()?;
        let path = self.0.log_path.clone();
        let ctx = self.0.clone();
        let (mut feed, stream) = feed::feed(self.0.limits.stream_queue_records, ctx.stall());
        // Read and sent record by record into a bounded queue: a slow reader holds the
        // scan back, a reader gone or stalled stops it.
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let scanned = storage::log::scan_from(&path, start, until, None, |rec| {
                let wanted = rec.seq >= from
                    && (who.may_read_whole_ledger() || concerns(&ctx, &who.role, rec));
                if wanted && feed.send(to_pb(rec)).is_err() {
                    return Err(storage::LogError::Io(std::io::Error::other("reader gone")));
                }
                Ok(())
            });
            let Err(e) = scanned else { return };
            let (code, reason) = match e {
                storage::LogError::Corrupt { .. } => (tonic::Code::DataLoss, "LOG_DAMAGED"),
                storage::LogError::Io(_) => (tonic::Code::Unavailable, "STORAGE_FAILED"),
            };
            // After a stop, the stream's end is set already: this one is dropped.
            feed.fail(errors::status(code, reason, e.to_string(), vec![]));
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_group_commits(
        &self,
        req: Request<pb::GetGroupCommitsRequest>,
    ) -> Result<Response<pb::GroupCommits>, Status> {
        self.0.auth(&req)?.require_operator()?;
        let g = self.0.engine.sync_stats().snapshot();
        Ok(Response::new(pb::GroupCommits {
            syncs: g.syncs,
            requests: g.requests,
            sync_p50_us: g.quantile_micros(0.5),
            sync_p99_us: g.quantile_micros(0.99),
            sync_max_us: g.quantile_micros(1.0),
            answered: g.answered,
            engine_mean_us: g.engine_mean_micros(),
            queue_mean_us: g.stage_mean_micros(Stage::Queue),
            staging_mean_us: g.stage_mean_micros(Stage::Staging),
            sync_wait_mean_us: g.stage_mean_micros(Stage::SyncWait),
            fsync_mean_us: g.stage_mean_micros(Stage::Fsync),
            answer_mean_us: g.stage_mean_micros(Stage::Answer),
        }))
    }

    async fn verify_chain(
        &self,
        req: Request<pb::VerifyChainRequest>,
    ) -> Result<Response<pb::VerifyChainResponse>, Status> {
        let who = self.0.auth(&req)?;
        if !who.may_read_whole_ledger() {
            return Err(errors::denied(
                "only the operator and hubs verify the whole chain",
            ));
        }
        let permit = self.0.reader_permit()?;
        let path = self.0.log_path.clone();
        // Up to the durable head: past it, a batch may be half written.
        let head = self.0.engine.head().seq;
        // The permit goes with the work: a caller gone does not stop a verification.
        let result = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            storage::verify_log_upto(&path, head)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(match result {
            Ok((scan, _)) => pb::VerifyChainResponse {
                ok: true,
                records: scan.records,
                head_hash: hex(&scan.head_hash),
                problem: String::new(),
            },
            Err(e) => pb::VerifyChainResponse {
                ok: false,
                records: 0,
                head_hash: String::new(),
                problem: e.to_string(),
            },
        }))
    }
}

fn to_pb(rec: &LedgerRecord) -> pb::LedgerRecord {
    let (frame, _) = storage::frame::encode(rec.seq, rec.at, &rec.prev_hash, &rec.body);
    pb::LedgerRecord {
        seq: rec.seq,
        at_ms: rec.at.0,
        hash: hex(&rec.hash),
        prev_hash: hex(&rec.prev_hash),
        frame,
        body_json: serde_json::to_string(&rec.body).unwrap_or_default(),
    }
}

/// Whether a record concerns a commanditaire, a structure or a site: it moves their money,
/// or names their orders, sites or passes.
fn concerns(ctx: &Ctx, role: &Role, rec: &LedgerRecord) -> bool {
    let accounts =
        |pred: &dyn Fn(&Account) -> bool| rec.body.postings.iter().any(|p| pred(&p.account));
    match role {
        Role::Commanditaire(c) => {
            let own_order = |o: &OrderId| ctx.order(*o).is_ok_and(|o| o.commanditaire == *c);
            accounts(
                &|a| matches!(a, Account::Funds(x) | Account::Outstanding(x) | Account::CreditDue(x) if x == c),
            ) || rec.body.facts.iter().any(|f| match f {
                Fact::CommanditaireRegistered(x) => x.id == *c,
                Fact::OrderCreated(o) => o.commanditaire == *c,
                Fact::PassesMinted { order, .. }
                | Fact::OrderFunded { order, .. }
                | Fact::CarnetDistributed { order, .. }
                | Fact::OrderFee { order, .. }
                | Fact::OrderSwept { order } => own_order(order),
                _ => false,
            })
        }
        Role::Structure(s) => {
            accounts(&|a| matches!(a, Account::Payable(x) if x == s))
                || rec.body.facts.iter().any(|f| match f {
                    Fact::StructureRegistered(x) => x.id == *s,
                    Fact::SiteRegistered(site) => site.structure == *s,
                    _ => false,
                })
        }
        Role::Site(l) => rec.body.facts.iter().any(|f| match f {
            Fact::PassRedeemed { redemption, .. } => redemption.site == *l,
            Fact::RedemptionReversed { site, .. } | Fact::SiteActivitySet { site, .. } => site == l,
            Fact::SiteRegistered(site) => site.id == *l,
            Fact::WorkshopHeld(w) => w.site == *l,
            _ => false,
        }),
        Role::Operator | Role::Hub(_) => true,
    }
}
