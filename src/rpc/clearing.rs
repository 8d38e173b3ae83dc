//! Clearing (operator; structures, commanditaires and hubs read their share): runs,
//! payments, balances, statements, exports, reconciliation, proofs.

use super::auth::Principal;
use super::context::{ChunkStream, Ctx};
use super::errors::{self, Violations};
use super::pb::{self, clearing_server::Clearing};
use super::reports::{self as conv, day, midnight, period};
use crate::domain::reports;
use crate::domain::*;
use crate::export::{attestation, pain001, statement, usage, Export};
use std::collections::BTreeSet;
use std::sync::Arc;
use tonic::{Code, Request, Response, Status};

pub struct ClearingService(pub Arc<Ctx>);

fn cut_off(text: &str) -> Result<Timestamp, Status> {
    let mut v = Violations::default();
    let d = day(&mut v, "cut_off", text);
    v.into_result()?;
    Ok(midnight(d.expect("checked")))
}

/// A structure reads only its own; the operator reads any (0 = all, where allowed).
fn structure_scope(
    who: &Principal,
    asked: u64,
    all_allowed: bool,
) -> Result<Option<StructureId>, Status> {
    match who.role {
        Role::Operator if asked == 0 && !all_allowed => {
            let mut v = Violations::default();
            v.add("structure_id", "name the structure");
            v.into_result().map(|_| None)
        }
        Role::Operator => Ok((asked != 0).then_some(StructureId(asked))),
        Role::Structure(own) if asked == 0 || asked == own.0 => Ok(Some(own)),
        Role::Structure(_) => Err(errors::denied("a structure reads only its own settlements")),
        _ => Err(errors::denied(
            "only the operator and structures read settlements",
        )),
    }
}

fn nothing_to_pay(cut_off: &str) -> Status {
    errors::status(
        Code::FailedPrecondition,
        "NOTHING_TO_PAY",
        format!("the run of {cut_off} has no open settlement to a verified IBAN"),
        vec![("cut_off", cut_off.to_owned())],
    )
}

impl ClearingService {
    fn summary(&self, cut: Timestamp, records: u32) -> Result<pb::RunSummary, Status> {
        let state = self.0.read()?;
        Ok(conv::run_summary(
            &reports::run_summary(&state, cut),
            records,
        ))
    }

    fn scoped_departements(
        &self,
        who: &Principal,
        asked: &[String],
    ) -> Result<BTreeSet<Departement>, Status> {
        let mut v = Violations::default();
        let asked: BTreeSet<Departement> = asked
            .iter()
            .filter_map(|d| v.check("departements", Departement::parse(d)))
            .collect();
        v.into_result()?;
        match &who.role {
            Role::Operator => Ok(asked),
            Role::Hub(own) if asked.is_empty() => Ok(own.clone()),
            Role::Hub(own) if asked.is_subset(own) => Ok(asked),
            Role::Hub(_) => Err(errors::denied("a hub reconciles only its own départements")),
            _ => Err(errors::denied("only hubs and the operator reconcile")),
        }
    }

    /// Who may see a pass's settlement line: the operator, the hub of the commune it was
    /// used in, its structure or site, its commanditaire. Others learn nothing of it.
    fn may_prove(&self, who: &Principal, state: &State, serial: Serial) -> Result<(), Status> {
        let hidden = || errors::refused(&Refusal::UnknownPass(serial));
        let pass = state.passes.get(&serial).ok_or_else(hidden)?;
        let order = &state.orders[&pass.order];
        let r = pass.redemption();
        let ok = match &who.role {
            Role::Operator => true,
            Role::Commanditaire(c) => *c == order.commanditaire,
            Role::Structure(s) => r.is_some_and(|r| r.structure == *s),
            Role::Site(s) => r.is_some_and(|r| r.site == *s),
            Role::Hub(d) => r.is_some_and(|r| d.contains(&r.commune.departement())),
        };
        if ok {
            Ok(())
        } else {
            Err(hidden())
        }
    }
}

#[tonic::async_trait]
impl Clearing for ClearingService {
    async fn run_clearing(
        &self,
        req: Request<pb::RunClearingRequest>,
    ) -> Result<Response<pb::RunSummary>, Status> {
        let who = self.0.auth(&req)?;
        who.require_operator()?;
        let cut = cut_off(&req.get_ref().cut_off)?;
        // The cut-off is the run's identity: each step settles what is left, so a retry or a
        // run interrupted half-way converges on the same settlements.
        let mut records = 0;
        loop {
            match self
                .0
                .submit_unkeyed(Command::RunClearing { cut_off: cut })
                .await?
            {
                Outcome::Cleared {
                    settlements,
                    remaining,
                    ..
                } => {
                    records += u32::from(!settlements.is_empty());
                    if !remaining {
                        break;
                    }
                }
                o => return Err(errors::unexpected(o)),
            }
        }
        let summary = self.summary(cut, records)?;
        self.0.settle().await?;
        Ok(Response::new(summary))
    }

    async fn get_run(
        &self,
        req: Request<pb::GetRunRequest>,
    ) -> Result<Response<pb::RunSummary>, Status> {
        let who = self.0.auth(&req)?;
        who.require_operator()?;
        let cut = cut_off(&req.get_ref().cut_off)?;
        let summary = self.summary(cut, 0)?;
        self.0.settle().await?;
        Ok(Response::new(summary))
    }

    type ListSettlementsStream = ChunkStreamOf<pb::SettlementInfo>;

    async fn list_settlements(
        &self,
        req: Request<pb::ListSettlementsRequest>,
    ) -> Result<Response<Self::ListSettlementsStream>, Status> {
        let who = self.0.auth(&req)?;
        let r = req.get_ref();
        let structure = structure_scope(&who, r.structure_id, true)?;
        let cut = (!r.cut_off.is_empty())
            .then(|| cut_off(&r.cut_off))
            .transpose()?;
        let max = self.0.limits.page_settlements_max;
        if r.page_size > max {
            return Err(errors::limit(
                "page_size",
                max as usize,
                r.page_size as usize,
            ));
        }
        let size = if r.page_size == 0 { 100 } else { r.page_size } as usize;
        let mut v = Violations::default();
        let after = if r.page_token.is_empty() {
            0
        } else {
            v.check(
                "page_token",
                r.page_token
                    .parse::<u64>()
                    .map_err(|_| "not a token from this server"),
            )
            .unwrap_or(0)
        };
        v.into_result()?;
        let mut page: Vec<pb::SettlementInfo> = {
            let state = self.0.read()?;
            state
                .settlements
                .range(SettlementId(after + 1)..)
                .map(|(_, s)| s)
                .filter(|s| structure.is_none_or(|id| s.structure == id))
                .filter(|s| cut.is_none_or(|c| s.cut_off == c))
                .take(size + 1)
                .map(conv::settlement_info)
                .collect()
        };
        if page.len() > size {
            page.truncate(size);
            let last = page.last_mut().expect("a full page");
            last.next_page_token = last.settlement_id.to_string();
        }
        self.0.settle().await?;
        Ok(Response::new(Box::pin(tokio_stream::iter(
            page.into_iter().map(Ok),
        ))))
    }

    async fn record_payment(
        &self,
        req: Request<pb::RecordPaymentRequest>,
    ) -> Result<Response<pb::RecordPaymentResponse>, Status> {
        let who = self.0.auth(&req)?;
        who.require_operator()?;
        let r = req.get_ref();
        let mut v = Violations::default();
        let bank_reference = super::convert::label(&mut v, "bank_reference", &r.bank_reference);
        let executed = day(&mut v, "executed_on", &r.executed_on);
        if r.amount_cents <= 0 {
            v.add(
                "amount_cents",
                "the amount the bank executed, in cents, is positive",
            );
        }
        v.into_result()?;
        let command = Command::RecordPayment {
            settlement: SettlementId(r.settlement_id),
            bank_reference: bank_reference.expect("checked"),
            executed_on_days: executed.expect("checked"),
            amount: Cents(r.amount_cents),
        };
        match self
            .0
            .submit(&who, "RecordPayment", &r.request_id, r, command)
            .await?
        {
            Outcome::SettlementPaid(_) => Ok(Response::new(pb::RecordPaymentResponse {})),
            o => Err(errors::unexpected(o)),
        }
    }

    async fn return_credit(
        &self,
        req: Request<pb::ReturnCreditRequest>,
    ) -> Result<Response<pb::ReturnCreditResponse>, Status> {
        let who = self.0.auth(&req)?;
        who.require_operator()?;
        let r = req.get_ref();
        let mut v = Violations::default();
        let reference = super::convert::label(&mut v, "reference", &r.reference);
        if r.amount_cents <= 0 {
            v.add(
                "amount_cents",
                "the credit given back, in cents, is positive",
            );
        }
        v.into_result()?;
        let command = Command::ReturnCredit {
            commanditaire: CommanditaireId(r.commanditaire_id),
            amount: Cents(r.amount_cents),
            reference: reference.expect("checked"),
        };
        match self
            .0
            .submit(&who, "ReturnCredit", &r.request_id, r, command)
            .await?
        {
            Outcome::CreditReturned { remaining, .. } => {
                Ok(Response::new(pb::ReturnCreditResponse {
                    credit_due_cents: remaining.0,
                }))
            }
            o => Err(errors::unexpected(o)),
        }
    }

    async fn record_rejection(
        &self,
        req: Request<pb::RecordRejectionRequest>,
    ) -> Result<Response<pb::RecordRejectionResponse>, Status> {
        let who = self.0.auth(&req)?;
        who.require_operator()?;
        let r = req.get_ref();
        let mut v = Violations::default();
        let reason = super::convert::label(&mut v, "reason", &r.reason);
        v.into_result()?;
        let command = Command::RecordRejection {
            settlement: SettlementId(r.settlement_id),
            reason: reason.expect("checked"),
        };
        match self
            .0
            .submit(&who, "RecordRejection", &r.request_id, r, command)
            .await?
        {
            Outcome::SettlementRejected(_) => Ok(Response::new(pb::RecordRejectionResponse {})),
            o => Err(errors::unexpected(o)),
        }
    }

    async fn get_balances(
        &self,
        req: Request<pb::GetBalancesRequest>,
    ) -> Result<Response<pb::GetBalancesResponse>, Status> {
        let who = self.0.auth(&req)?;
        let asked = req.get_ref().commanditaire_id;
        let only = match who.role {
            Role::Operator => (asked != 0).then_some(CommanditaireId(asked)),
            Role::Commanditaire(own) if asked == 0 || asked == own.0 => Some(own),
            _ => return Err(errors::denied("a commanditaire reads only its own balance")),
        };
        let balances = {
            let state = self.0.read()?;
            if let Some(c) = only.filter(|c| !state.commanditaires.contains_key(c)) {
                return Err(errors::refused(&Refusal::UnknownCommanditaire(c)));
            }
            reports::balances(&state)
                .values()
                .filter(|b| only.is_none_or(|c| b.commanditaire == c))
                .map(|b| conv::balance(b, state.commanditaires[&b.commanditaire].name.as_str()))
                .collect()
        };
        self.0.settle().await?;
        Ok(Response::new(pb::GetBalancesResponse { balances }))
    }

    async fn get_order_statement(
        &self,
        req: Request<pb::GetOrderStatementRequest>,
    ) -> Result<Response<pb::OrderStatement>, Status> {
        let who = self.0.auth(&req)?;
        let order = self.0.order(OrderId(req.get_ref().order_id))?;
        who.may_read_order(&order)?;
        let statement = reports::order_statement(&*self.0.read()?, &order);
        self.0.settle().await?;
        Ok(Response::new(conv::order_statement(
            &statement,
            order.commanditaire,
        )))
    }

    type ExportPaymentFileStream = ChunkStream;

    async fn export_payment_file(
        &self,
        req: Request<pb::ExportPaymentFileRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let who = self.0.auth(&req)?;
        who.require_operator()?;
        let r = req.get_ref();
        let cut = cut_off(&r.cut_off)?;
        let mut v = Violations::default();
        let name = super::convert::label(&mut v, "debtor_name", &r.debtor_name);
        let iban = v.check("debtor_iban", Iban::parse(&r.debtor_iban));
        let bic = (!r.debtor_bic.is_empty())
            .then(|| v.check("debtor_bic", pain001::parse_bic(&r.debtor_bic)))
            .flatten();
        let exec = day(&mut v, "execution_date", &r.execution_date);
        v.into_result()?;
        let debtor = pain001::Debtor {
            name: name.expect("checked").to_string(),
            iban: iban.expect("checked"),
            bic,
        };
        let now = (self.0.clock)();
        let file = {
            let state = self.0.read()?;
            pain001::PaymentFile::plan(&state, cut, &debtor, now, exec.expect("checked"))
        };
        self.0.settle().await?;
        let file = file.ok_or_else(|| nothing_to_pay(&r.cut_off))?;
        Ok(Response::new(self.0.stream_export(Box::new(file))?))
    }

    type ExportStatementStream = ChunkStream;

    async fn export_statement(
        &self,
        req: Request<pb::ExportStatementRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let who = self.0.auth(&req)?;
        let r = req.get_ref();
        let structure = structure_scope(&who, r.structure_id, true)?;
        let cut = cut_off(&r.cut_off)?;
        let dialect = match pb::CsvDialect::try_from(r.dialect) {
            Ok(pb::CsvDialect::Machine) => statement::Dialect::Machine,
            _ => statement::Dialect::Spreadsheet,
        };
        let export: Box<dyn Export> = {
            let state = self.0.read()?;
            if let Some(s) = structure.filter(|s| !state.structures.contains_key(s)) {
                return Err(errors::refused(&Refusal::UnknownStructure(s)));
            }
            if r.lines {
                Box::new(statement::LineStatement::new(
                    &state, cut, structure, dialect,
                ))
            } else {
                Box::new(statement::RunStatement::new(
                    &state, cut, structure, dialect,
                ))
            }
        };
        self.0.settle().await?;
        Ok(Response::new(self.0.stream_export(export)?))
    }

    type GetAttestationStream = ChunkStream;

    async fn get_attestation(
        &self,
        req: Request<pb::GetAttestationRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let who = self.0.auth(&req)?;
        let r = req.get_ref();
        let structure = structure_scope(&who, r.structure_id, false)?.expect("named");
        let mut v = Violations::default();
        let p = period(&mut v, &r.from, &r.to, self.0.limits.period_days_max);
        v.into_result()?;
        let (from_days, to_days) = p.expect("checked");
        let mut pdf = Vec::new();
        {
            let state = self.0.read()?;
            let st = state
                .structures
                .get(&structure)
                .ok_or_else(|| errors::refused(&Refusal::UnknownStructure(structure)))?;
            let rows = attestation::received(&state, structure, from_days, to_days);
            let period = attestation::Period { from_days, to_days };
            attestation::pdf(&mut pdf, st, &period, &rows, (state.seq, state.head_hash))
                .map_err(|e| Status::internal(format!("writing the PDF: {e}")))?;
        }
        self.0.settle().await?;
        Ok(Response::new(self.0.stream_bytes(pdf)))
    }

    async fn reconcile(
        &self,
        req: Request<pb::ReconcileRequest>,
    ) -> Result<Response<pb::Reconciliation>, Status> {
        let who = self.0.auth(&req)?;
        let r = req.get_ref();
        let depts = self.scoped_departements(&who, &r.departements)?;
        let mut v = Violations::default();
        let p = period(&mut v, &r.from, &r.to, self.0.limits.period_days_max);
        v.into_result()?;
        let (recon, seq, hash) = {
            let state = self.0.read()?;
            let recon = conv::reconciliation(&state, &depts, p.expect("checked"));
            (recon, state.seq, state.head_hash)
        };
        self.0.settle().await?;
        let max = self.0.limits.reconcile_rows_max;
        if recon.rows.len() > max {
            return Err(errors::limit(
                "reconciliation rows (name fewer départements)",
                max,
                recon.rows.len(),
            ));
        }
        Ok(Response::new(pb::Reconciliation {
            from: r.from.clone(),
            to: r.to.clone(),
            head: Some(self.0.signed_head(seq, hash)),
            ..recon
        }))
    }

    async fn get_proof(
        &self,
        req: Request<pb::GetProofRequest>,
    ) -> Result<Response<pb::PassProof>, Status> {
        let who = self.0.auth(&req)?;
        let mut v = Violations::default();
        let serial = super::convert::serial(&mut v, "serial", &req.get_ref().serial);
        v.into_result()?;
        let serial = serial.expect("checked");
        let proof = {
            let state = self.0.read()?;
            self.may_prove(&who, &state, serial)?;
            let p = proof::prove(&state, serial).map_err(|r| errors::refused(&r))?;
            conv::proof(&p, &state.settlements[&p.settlement].status)
        };
        self.0.settle().await?;
        Ok(Response::new(proof))
    }

    type ExportUsageStream = ChunkStream;

    async fn export_usage(
        &self,
        req: Request<pb::ExportUsageRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let who = self.0.auth(&req)?;
        let r = req.get_ref();
        if matches!(who.role, Role::Structure(_) | Role::Site(_)) {
            return Err(errors::denied(
                "the usage report is for commanditaires, hubs and the operator",
            ));
        }
        let mut v = Violations::default();
        let p = period(&mut v, &r.from, &r.to, self.0.limits.period_days_max);
        v.into_result()?;
        let (from, to) = p.expect("checked");
        if r.order_id != 0 {
            who.may_read_order(&self.0.order(OrderId(r.order_id))?)?;
        }
        let report = {
            let state = self.0.read()?;
            let include = |o: &Order| {
                (r.order_id == 0 || o.id.0 == r.order_id) && who.may_read_order(o).is_ok()
            };
            usage::UsageReport::new(&state, include, midnight(from), midnight(to))
        };
        self.0.settle().await?;
        Ok(Response::new(self.0.stream_export(Box::new(report))?))
    }
}

type ChunkStreamOf<T> =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;
