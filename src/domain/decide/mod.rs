//! `decide`: state, clock and command in; a record (or a remembered answer) out.
//! It never changes the state: the caller applies the record it returns.

mod actors;
mod closing;
mod orders;
mod redemptions;
mod settlement;

use super::command::*;
use super::entities::*;
use super::record::*;
use super::refusal::Refusal;
use super::retention;
use super::rules::{check_redeemable, check_reversible, resolve_venue, Venue};
use super::serial::Serial;
use super::state::State;
use super::types::*;
use actors::*;
use closing::*;
use orders::*;
use redemptions::*;
use settlement::*;
use std::collections::HashSet;

/// Rules an operator sets, not facts of the scheme.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rules {
    /// How long a site may reverse its own redemption, from when it reached the ledger.
    pub reversal_window_ms: i64,
    /// How many orders one expiry sweep record covers, to bound the record's size.
    pub sweep_orders_max: usize,
    /// How many settlement lines one clearing record holds: about 5 MiB of record.
    pub clearing_lines_max: usize,
    /// How old a scan made offline may be when it reaches the ledger (a bus parks in a
    /// village every fortnight). The expiry sweep waits this long past an order's validity
    /// plus grace, so a pass scanned in time is still live when its scan arrives. 0 turns
    /// offline scans off.
    pub offline_window_ms: i64,
    /// How far ahead of the server's clock a device's scan time may be: its clock drifts.
    /// A scan time within it is taken as now; past it, the scan is refused.
    pub scan_clock_skew_ms: i64,
    /// The longest a credential may be valid for, and what it gets when its issuer names
    /// no lifetime: a year and a month, so a yearly rotation overlaps.
    pub credential_lifetime_ms: i64,
    /// The fee billed to a commanditaire on each new order (recorded with it). 0 by
    /// default: no rate is a fact of the scheme.
    pub order_fee: FeeRate,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            reversal_window_ms: 24 * 3_600_000,
            sweep_orders_max: 8,
            clearing_lines_max: 100_000,
            offline_window_ms: 15 * 24 * 3_600_000,
            scan_clock_skew_ms: 5 * 60_000,
            credential_lifetime_ms: 400 * Timestamp::MS_PER_DAY,
            order_fee: FeeRate(0),
        }
    }
}

/// A carnet holds at most 20 passes: DOMAIN.md knows carnets of 5 and 10.
pub const CARNET_SIZE_MAX: u32 = 20;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to record: a retry's remembered answer, an idempotent no-op, or a refusal
    /// that nobody needs remembered (no request id, or a request id reused).
    Answer(Result<Outcome, Refusal>),
    /// Append this record; its `result` is the answer.
    Record(RecordBody),
}

/// What a command changes, before it is wrapped into a record.
struct Effects {
    facts: Vec<Fact>,
    postings: Vec<Posting>,
    outcome: Outcome,
}

impl Effects {
    fn of(facts: Vec<Fact>, outcome: Outcome) -> Effects {
        Effects {
            facts,
            postings: vec![],
            outcome,
        }
    }
}

enum Step {
    Change(Effects),
    NoChange(Outcome),
}

pub fn decide(state: &State, rules: &Rules, now: Timestamp, envelope: &Envelope) -> Decision {
    if let Some(req) = &envelope.request {
        if let Some(seen) = state.requests.get(&req.digest()) {
            if !seen.is_retry_of(req) {
                return Decision::Answer(Err(Refusal::RequestIdReused));
            }
            return Decision::Answer(seen.result.clone());
        }
    }
    let step = step(state, rules, now, &envelope.command);
    let request = envelope.request.clone();
    match step {
        Ok(Step::Change(e)) => Decision::Record(RecordBody {
            request,
            facts: e.facts,
            postings: e.postings,
            result: Ok(e.outcome),
        }),
        Ok(Step::NoChange(outcome)) => match request {
            // Remember the answer so a retry is answered the same way even if state moves on.
            Some(_) => Decision::Record(RecordBody {
                request,
                facts: vec![],
                postings: vec![],
                result: Ok(outcome),
            }),
            None => Decision::Answer(Ok(outcome)),
        },
        Err(refusal) => match request {
            Some(_) => Decision::Record(RecordBody {
                request,
                facts: vec![],
                postings: vec![],
                result: Err(refusal),
            }),
            None => Decision::Answer(Err(refusal)),
        },
    }
}

fn step(state: &State, rules: &Rules, now: Timestamp, command: &Command) -> Result<Step, Refusal> {
    use Command::*;
    match command {
        RegisterCommanditaire { name } => Ok(register_commanditaire(state, name)),
        RegisterStructure { name, payee, iban } => register_structure(state, name, payee, iban),
        SetStructureIban {
            structure,
            iban,
            verified,
        } => set_structure_iban(state, *structure, iban, *verified),
        RegisterSite {
            structure,
            name,
            kind,
        } => register_site(state, *structure, name, kind),
        SetSiteActive { site, active } => set_site_active(state, *site, *active),
        IssueCredential {
            token_hash,
            role,
            lifetime,
        } => issue_credential(state, rules, now, token_hash, role, *lifetime),
        RevokeCredential { token_hash } => revoke_credential(state, token_hash),
        ForgetRequests => Ok(match retention::forget(retention::due(state, now)) {
            Some((fact, outcome)) => change(vec![fact], outcome),
            None => Step::NoChange(Outcome::RequestsForgotten { credentials: 0 }),
        }),
        CreateOrder(new) => create_order(state, now, rules.order_fee, new),
        Mint { order, serials } => mint(state, *order, serials),
        RecordFunding {
            order,
            amount,
            reference,
        } => fund(state, now, *order, *amount, reference),
        MarkDistributed { order, carnet } => distribute(state, *order, *carnet),
        Redeem {
            serial,
            site,
            place,
            service,
            scanned_at,
        } => {
            let at = scan_time(rules, now, *scanned_at)?;
            redeem(state, at, *serial, *site, place, service)
        }
        RedeemWorkshop {
            workshop,
            serials,
            held_at,
        } => {
            let at = scan_time(rules, now, *held_at)?;
            redeem_workshop(state, at, workshop, serials)
        }
        Reverse { serial, site } => reverse(state, rules, now, *serial, *site),
        Cancel { target } => cancel(state, target),
        ExpireSweep => Ok(expire_sweep(state, rules, now)),
        RunClearing { cut_off } => run_clearing(state, rules, now, *cut_off),
        RecordPayment {
            settlement,
            bank_reference,
            executed_on_days,
            amount,
        } => settle_payment(
            state,
            now,
            *settlement,
            bank_reference,
            *executed_on_days,
            *amount,
        ),
        RecordRejection { settlement, reason } => reject_payment(state, now, *settlement, reason),
        ImportSites { rows, scope } => {
            let (facts, report) = super::import::plan(state, rows, scope);
            Ok(change(facts, Outcome::SitesImported(Box::new(report))))
        }
        ReturnCredit {
            commanditaire,
            amount,
            reference,
        } => return_credit(state, *commanditaire, *amount, reference),
    }
}

fn change(facts: Vec<Fact>, outcome: Outcome) -> Step {
    Step::Change(Effects::of(facts, outcome))
}

fn known_structure(state: &State, id: StructureId) -> Result<&Structure, Refusal> {
    state
        .structures
        .get(&id)
        .ok_or(Refusal::UnknownStructure(id))
}

fn known_order(state: &State, id: OrderId) -> Result<&Order, Refusal> {
    state.orders.get(&id).ok_or(Refusal::UnknownOrder(id))
}
