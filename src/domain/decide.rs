//! `decide`: state, clock and command in; a record (or a remembered answer) out.
//! It never changes the state: the caller applies the record it returns.

use super::command::*;
use super::entities::*;
use super::record::*;
use super::refusal::Refusal;
use super::retention;
use super::rules::{check_redeemable, check_reversible, resolve_venue, Venue};
use super::serial::Serial;
use super::state::State;
use super::types::*;
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
        RegisterCommanditaire { name } => {
            let c = Commanditaire {
                id: CommanditaireId(state.commanditaires.len() as u64 + 1),
                name: name.clone(),
            };
            let id = c.id;
            Ok(change(
                vec![Fact::CommanditaireRegistered(c)],
                Outcome::CommanditaireRegistered(id),
            ))
        }
        RegisterStructure { name, payee, iban } => register_structure(state, name, payee, iban),
        SetStructureIban {
            structure,
            iban,
            verified,
        } => {
            known_structure(state, *structure)?;
            let fact = Fact::StructureIbanSet {
                structure: *structure,
                iban: iban.clone(),
                verified: *verified,
            };
            Ok(change(vec![fact], Outcome::StructureUpdated(*structure)))
        }
        RegisterSite {
            structure,
            name,
            kind,
        } => {
            known_structure(state, *structure)?;
            let id = SiteId(state.sites.len() as u64 + 1);
            let site = Site {
                id,
                structure: *structure,
                name: name.clone(),
                kind: kind.clone(),
                active: true,
                reference: None,
                listings: vec![],
            };
            Ok(change(
                vec![Fact::SiteRegistered(site)],
                Outcome::SiteRegistered(id),
            ))
        }
        SetSiteActive { site, active } => {
            state.sites.get(site).ok_or(Refusal::UnknownSite(*site))?;
            let fact = Fact::SiteActivitySet {
                site: *site,
                active: *active,
            };
            Ok(change(vec![fact], Outcome::SiteUpdated(*site)))
        }
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

fn register_structure(
    state: &State,
    name: &Label,
    payee: &PayeeId,
    iban: &Option<Iban>,
) -> Result<Step, Refusal> {
    if state.structures.values().any(|s| &s.payee == payee) {
        return Err(Refusal::PayeeAlreadyRegistered);
    }
    let id = StructureId(state.structures.len() as u64 + 1);
    let s = Structure {
        id,
        name: name.clone(),
        payee: payee.clone(),
        iban: iban.clone(),
        // An IBAN given by the operator at registration is the operator's own check.
        iban_verified: iban.is_some(),
    };
    Ok(change(
        vec![Fact::StructureRegistered(s)],
        Outcome::StructureRegistered(id),
    ))
}

fn issue_credential(
    state: &State,
    rules: &Rules,
    now: Timestamp,
    token_hash: &[u8; 32],
    role: &Role,
    lifetime: Lifetime,
) -> Result<Step, Refusal> {
    if state.credentials.contains_key(token_hash) {
        return Err(Refusal::CredentialExists);
    }
    match role {
        Role::Operator | Role::Hub(_) => {}
        Role::Commanditaire(c) => {
            state
                .commanditaires
                .get(c)
                .ok_or(Refusal::UnknownCommanditaire(*c))?;
        }
        Role::Structure(s) => {
            known_structure(state, *s)?;
        }
        Role::Site(s) => {
            state.sites.get(s).ok_or(Refusal::UnknownSite(*s))?;
        }
    }
    let expires_at = credential_expiry(state, rules, now, role, lifetime)?;
    let mut facts = vec![Fact::CredentialIssued {
        token_hash: *token_hash,
        role: role.clone(),
    }];
    facts.extend(expires_at.map(|at| Fact::CredentialExpires {
        token_hash: *token_hash,
        at,
    }));
    Ok(change(facts, Outcome::CredentialIssued))
}

/// When a credential issued now expires. Only a ledger's first credential, the operator's,
/// may never expire: every other one is issued by a credential, and lives at most the
/// rules' longest.
fn credential_expiry(
    state: &State,
    rules: &Rules,
    now: Timestamp,
    role: &Role,
    lifetime: Lifetime,
) -> Result<Option<Timestamp>, Refusal> {
    let longest = rules.credential_lifetime_ms;
    let out_of_range = Refusal::CredentialLifetimeOutOfRange {
        longest_ms: longest,
    };
    let ms = match lifetime {
        Lifetime::Never if state.credentials.is_empty() && *role == Role::Operator => {
            return Ok(None)
        }
        Lifetime::Never => return Err(out_of_range),
        Lifetime::Longest => longest,
        Lifetime::Ms(ms) if (1..=longest).contains(&ms) => ms,
        Lifetime::Ms(_) => return Err(out_of_range),
    };
    Ok(Some(Timestamp(now.0.saturating_add(ms))))
}

fn revoke_credential(state: &State, token_hash: &[u8; 32]) -> Result<Step, Refusal> {
    let c = state
        .credentials
        .get(token_hash)
        .ok_or(Refusal::UnknownCredential)?;
    if c.is_revoked() {
        return Err(Refusal::CredentialRevoked);
    }
    let fact = Fact::CredentialRevoked {
        token_hash: *token_hash,
    };
    Ok(change(vec![fact], Outcome::CredentialRevoked))
}

fn create_order(
    state: &State,
    now: Timestamp,
    fee: FeeRate,
    new: &NewOrder,
) -> Result<Step, Refusal> {
    let c = new.commanditaire;
    state
        .commanditaires
        .get(&c)
        .ok_or(Refusal::UnknownCommanditaire(c))?;
    if new.perimeter.is_empty() {
        return Err(Refusal::EmptyPerimeter);
    }
    if let Some(site) = new
        .perimeter
        .sites
        .iter()
        .find(|s| !state.sites.contains_key(s))
    {
        return Err(Refusal::UnknownSite(*site));
    }
    if new.valid_until <= new.valid_from {
        return Err(Refusal::ValidityWindowInverted);
    }
    if new.carnet_size == 0 || new.carnet_size > CARNET_SIZE_MAX || new.carnet_size > new.pass_count
    {
        return Err(Refusal::CarnetSizeInvalid);
    }
    let id = OrderId(state.orders.len() as u64 + 1);
    let order = Order {
        id,
        commanditaire: c,
        pass_count: new.pass_count,
        carnet_size: new.carnet_size,
        face_value: new.face_value,
        valid_from: new.valid_from,
        valid_until: new.valid_until,
        grace_days: new.grace_days,
        perimeter: new.perimeter.clone(),
        services: new.services.clone(),
        programme: new.programme.clone(),
        created_at: now,
        minted: false,
        funding: None,
        distributed: Default::default(),
        swept: false,
    };
    Ok(change(
        vec![
            Fact::OrderCreated(order),
            Fact::OrderFee {
                order: id,
                rate: fee,
            },
        ],
        Outcome::OrderCreated(id),
    ))
}

/// Minting is idempotent by order: a second mint answers like the first and adds nothing.
fn mint(state: &State, order_id: OrderId, serials: &[Serial]) -> Result<Step, Refusal> {
    let order = known_order(state, order_id)?;
    let outcome = Outcome::Minted {
        order: order_id,
        passes: order.pass_count,
    };
    if order.minted {
        return Ok(Step::NoChange(outcome));
    }
    if serials.len() != order.pass_count as usize {
        return Err(Refusal::MintCountMismatch {
            expected: order.pass_count,
            got: serials.len() as u32,
        });
    }
    let mut seen = HashSet::with_capacity(serials.len());
    if let Some(s) = serials
        .iter()
        .find(|s| state.passes.contains_key(s) || !seen.insert(**s))
    {
        return Err(Refusal::SerialCollision(*s));
    }
    Ok(change(
        vec![Fact::PassesMinted {
            order: order_id,
            serials: serials.to_vec(),
        }],
        outcome,
    ))
}

/// Funding activates the order's minted passes. Passes cancelled or expired before funding
/// are paid for all the same, so their value is owed back to the commanditaire at once.
fn fund(
    state: &State,
    now: Timestamp,
    order_id: OrderId,
    amount: Cents,
    reference: &Label,
) -> Result<Step, Refusal> {
    let order = known_order(state, order_id)?;
    if !order.minted {
        return Err(Refusal::NotMinted);
    }
    if order.funding.is_some() {
        return Err(Refusal::AlreadyFunded);
    }
    if amount != order.total() {
        return Err(Refusal::FundingMismatch {
            expected: order.total(),
            got: amount,
        });
    }
    let activated = count_passes(state, order_id, |p| p.status == PassStatus::Minted);
    let closed = order.pass_count - activated;
    let face = order.face_value.0;
    let c = order.commanditaire;
    let mut postings = vec![
        Posting {
            account: Account::Funds(c),
            amount: amount.0,
        },
        Posting {
            account: Account::Outstanding(c),
            amount: -face * i64::from(activated),
        },
    ];
    if closed > 0 {
        postings.push(Posting {
            account: Account::CreditDue(c),
            amount: -face * i64::from(closed),
        });
    }
    let funding = Funding {
        at: now,
        amount,
        reference: reference.clone(),
    };
    Ok(Step::Change(Effects {
        facts: vec![Fact::OrderFunded {
            order: order_id,
            funding,
        }],
        postings,
        outcome: Outcome::Funded {
            order: order_id,
            activated,
        },
    }))
}

fn count_passes(state: &State, order: OrderId, pred: impl Fn(&Pass) -> bool) -> u32 {
    let serials = state
        .order_serials
        .get(&order)
        .map(|s| &s[..])
        .unwrap_or(&[]);
    serials.iter().filter(|s| pred(&state.passes[*s])).count() as u32
}

fn distribute(state: &State, order_id: OrderId, carnet: u32) -> Result<Step, Refusal> {
    let order = known_order(state, order_id)?;
    if !order.minted {
        return Err(Refusal::NotMinted);
    }
    if carnet >= order.carnet_count() {
        return Err(Refusal::UnknownCarnet {
            order: order_id,
            carnet,
        });
    }
    if order.distributed.contains(&carnet) {
        return Err(Refusal::AlreadyDistributed { carnet });
    }
    Ok(change(
        vec![Fact::CarnetDistributed {
            order: order_id,
            carnet,
        }],
        Outcome::Distributed {
            order: order_id,
            carnet,
        },
    ))
}

fn redemption_effects(
    order: &Order,
    venue: &Venue,
    now: Timestamp,
    serial: Serial,
    service: &ServiceCode,
    workshop: Option<WorkshopId>,
) -> (Fact, [Posting; 2], Redeemed) {
    let redemption = Redemption {
        at: now,
        site: venue.site,
        structure: venue.structure,
        stop: venue.stop,
        commune: venue.commune,
        service: service.clone(),
        workshop,
        settlement: None,
    };
    let face = order.face_value.0;
    let postings = [
        Posting {
            account: Account::Outstanding(order.commanditaire),
            amount: face,
        },
        Posting {
            account: Account::Payable(venue.structure),
            amount: -face,
        },
    ];
    let redeemed = Redeemed {
        serial,
        order: order.id,
        amount: order.face_value,
        at: now,
        site: venue.site,
    };
    (
        Fact::PassRedeemed { serial, redemption },
        postings,
        redeemed,
    )
}

/// When a redemption happened: now, or the time a device scanned the pass offline, which
/// every redemption rule is then judged at (the pass was valid when the person was
/// helped). The window bounds what a wrong or dishonest device clock can reach back to.
fn scan_time(
    rules: &Rules,
    now: Timestamp,
    scanned_at: Option<Timestamp>,
) -> Result<Timestamp, Refusal> {
    let Some(at) = scanned_at else {
        return Ok(now);
    };
    let latest = now.plus_ms(rules.scan_clock_skew_ms);
    if at > latest {
        return Err(Refusal::ScanInFuture { latest });
    }
    let oldest = now.plus_ms(-rules.offline_window_ms);
    if at < oldest {
        return Err(Refusal::ScanTooOld { oldest });
    }
    Ok(at.min(now))
}

fn redeem(
    state: &State,
    now: Timestamp,
    serial: Serial,
    site: SiteId,
    place: &Place,
    service: &ServiceCode,
) -> Result<Step, Refusal> {
    let venue = resolve_venue(state, site, place)?;
    let order = check_redeemable(state, now, &venue, serial, std::slice::from_ref(service))?;
    let (fact, postings, redeemed) = redemption_effects(order, &venue, now, serial, service, None);
    Ok(Step::Change(Effects {
        facts: vec![fact],
        postings: postings.to_vec(),
        outcome: Outcome::Redeemed(redeemed),
    }))
}

/// A workshop redeems many passes in one session: one outcome per pass, in the order
/// given. The session is recorded even if every pass is refused: it took place. Every
/// rule is judged `at` the session: now, or when a device recorded it offline.
fn redeem_workshop(
    state: &State,
    at: Timestamp,
    w: &NewWorkshop,
    serials: &[Serial],
) -> Result<Step, Refusal> {
    let venue = resolve_venue(state, w.site, &w.place)?;
    let id = WorkshopId(state.workshops.len() as u64 + 1);
    let session = WorkshopSession {
        id,
        site: w.site,
        stop: venue.stop,
        commune: venue.commune,
        date_days: w.date_days,
        start_minute: w.start_minute,
        duration_minutes: w.duration_minutes,
        themes: w.themes.clone(),
        participants: w.participants,
        mediator: w.mediator.clone(),
    };
    let service = w
        .themes
        .first()
        .expect("a workshop has at least one theme (validated at the edge)");
    let mut facts = vec![Fact::WorkshopHeld(session)];
    let mut postings = vec![];
    let mut outcomes = Vec::with_capacity(serials.len());
    let mut seen = HashSet::with_capacity(serials.len());
    for serial in serials {
        if !seen.insert(*serial) {
            outcomes.push(Err(Refusal::AlreadyRedeemed { at, site: w.site }));
            continue;
        }
        match check_redeemable(state, at, &venue, *serial, &w.themes) {
            Ok(order) => {
                let (fact, more, redeemed) =
                    redemption_effects(order, &venue, at, *serial, service, Some(id));
                facts.push(fact);
                postings.extend(more);
                outcomes.push(Ok(redeemed));
            }
            Err(refusal) => outcomes.push(Err(refusal)),
        }
    }
    let outcome = Outcome::Workshop {
        workshop: id,
        passes: outcomes,
    };
    Ok(Step::Change(Effects {
        facts,
        postings,
        outcome,
    }))
}

fn reverse(
    state: &State,
    rules: &Rules,
    now: Timestamp,
    serial: Serial,
    site: SiteId,
) -> Result<Step, Refusal> {
    check_reversible(state, now, rules.reversal_window_ms, serial, site)?;
    let pass = &state.passes[&serial];
    let order = &state.orders[&pass.order];
    let structure = pass.redemption().expect("checked reversible").structure;
    let face = order.face_value.0;
    let c = order.commanditaire;
    let mut effects = Effects {
        facts: vec![Fact::RedemptionReversed { serial, site }],
        postings: vec![
            Posting {
                account: Account::Payable(structure),
                amount: face,
            },
            Posting {
                account: Account::Outstanding(c),
                amount: -face,
            },
        ],
        outcome: Outcome::Reversed {
            serial,
            amount: order.face_value,
        },
    };
    // A pass given back after its order was swept would stay live forever: expire it now.
    if order.swept {
        effects.facts.push(Fact::PassExpired { serial });
        effects.postings.extend(credit_back(c, face));
    }
    Ok(Step::Change(effects))
}

fn credit_back(c: CommanditaireId, face: i64) -> [Posting; 2] {
    [
        Posting {
            account: Account::Outstanding(c),
            amount: face,
        },
        Posting {
            account: Account::CreditDue(c),
            amount: -face,
        },
    ]
}

/// Cancels listed passes (all or none), or every still-live pass of a carnet.
fn cancel(state: &State, target: &CancelTarget) -> Result<Step, Refusal> {
    let serials: Vec<Serial> = match target {
        CancelTarget::Passes(list) => {
            for s in list {
                let pass = state.passes.get(s).ok_or(Refusal::UnknownPass(*s))?;
                if !is_live(pass) {
                    return Err(Refusal::NotCancellable);
                }
            }
            list.clone()
        }
        CancelTarget::Carnet { order, carnet } => {
            let o = known_order(state, *order)?;
            if !o.minted || *carnet >= o.carnet_count() {
                return Err(Refusal::UnknownCarnet {
                    order: *order,
                    carnet: *carnet,
                });
            }
            let all = &state.order_serials[order];
            let start = (*carnet * o.carnet_size) as usize;
            let end = (start + o.carnet_size as usize).min(all.len());
            let live: Vec<Serial> = all[start..end]
                .iter()
                .copied()
                .filter(|s| is_live(&state.passes[s]))
                .collect();
            if live.is_empty() {
                return Err(Refusal::NotCancellable);
            }
            live
        }
    };
    let (mut facts, mut postings) = (vec![], vec![]);
    let credited = close_passes(
        state,
        &serials,
        |serial| Fact::PassCancelled { serial },
        &mut facts,
        &mut postings,
    );
    let outcome = Outcome::Cancelled {
        passes: serials.len() as u32,
        credited,
    };
    Ok(Step::Change(Effects {
        facts,
        postings,
        outcome,
    }))
}

fn is_live(pass: &Pass) -> bool {
    matches!(pass.status, PassStatus::Minted | PassStatus::Active)
}

/// Closes live passes; the value of activated ones goes back to the commanditaire.
fn close_passes(
    state: &State,
    serials: &[Serial],
    fact: impl Fn(Serial) -> Fact,
    facts: &mut Vec<Fact>,
    postings: &mut Vec<Posting>,
) -> Cents {
    let mut credited = 0;
    for serial in serials {
        let pass = &state.passes[serial];
        facts.push(fact(*serial));
        if pass.status == PassStatus::Active {
            let order = &state.orders[&pass.order];
            credited += order.face_value.0;
            postings.extend(credit_back(order.commanditaire, order.face_value.0));
        }
    }
    Cents(credited)
}

/// Expires the live passes of up to `sweep_orders_max` orders whose validity plus grace
/// has ended. The engine calls it again until it reports no order swept.
fn expire_sweep(state: &State, rules: &Rules, now: Timestamp) -> Step {
    let due: Vec<&Order> = state
        .orders
        .values()
        .filter(|o| !o.swept && o.minted && o.expires_at().plus_ms(rules.offline_window_ms) <= now)
        .take(rules.sweep_orders_max)
        .collect();
    if due.is_empty() {
        return Step::NoChange(Outcome::Expired {
            passes: 0,
            credited: Cents(0),
        });
    }
    let (mut facts, mut postings) = (vec![], vec![]);
    let mut passes = 0;
    let mut credited = 0;
    for order in due {
        let live: Vec<Serial> = state.order_serials[&order.id]
            .iter()
            .copied()
            .filter(|s| is_live(&state.passes[s]))
            .collect();
        passes += live.len() as u32;
        credited += close_passes(
            state,
            &live,
            |serial| Fact::PassExpired { serial },
            &mut facts,
            &mut postings,
        )
        .0;
        facts.push(Fact::OrderSwept { order: order.id });
    }
    let outcome = Outcome::Expired {
        passes,
        credited: Cents(credited),
    };
    Step::Change(Effects {
        facts,
        postings,
        outcome,
    })
}

/// The next settlements of the run with this cut-off; none left is an answer, not a change.
fn run_clearing(
    state: &State,
    rules: &Rules,
    now: Timestamp,
    cut_off: Timestamp,
) -> Result<Step, Refusal> {
    if cut_off > now {
        return Err(Refusal::CutOffInFuture { now });
    }
    let super::clearing::NextSettlements {
        settlements,
        remaining,
    } = super::clearing::next_settlements(
        state,
        cut_off,
        now,
        rules.reversal_window_ms,
        rules.clearing_lines_max,
    );
    if settlements.is_empty() {
        let done = Outcome::Cleared {
            cut_off,
            settlements: vec![],
            lines: 0,
            total: Cents(0),
            remaining: false,
        };
        return Ok(Step::NoChange(done));
    }
    let mut postings = vec![];
    for s in &settlements {
        assert_eq!(
            s.total,
            s.lines_total(),
            "a settlement's total is the sum of its lines"
        );
        postings.push(Posting {
            account: Account::Payable(s.structure),
            amount: s.total.0,
        });
        postings.push(Posting {
            account: Account::InPayment(s.structure),
            amount: -s.total.0,
        });
    }
    let outcome = Outcome::Cleared {
        cut_off,
        settlements: settlements.iter().map(|s| s.id).collect(),
        lines: settlements.iter().map(|s| s.lines.len() as u32).sum(),
        total: Cents(settlements.iter().map(|s| s.total.0).sum()),
        remaining,
    };
    let facts = settlements
        .into_iter()
        .map(Fact::SettlementCreated)
        .collect();
    Ok(Step::Change(Effects {
        facts,
        postings,
        outcome,
    }))
}

fn open_settlement(
    state: &State,
    id: SettlementId,
) -> Result<&super::clearing::Settlement, Refusal> {
    let s = state
        .settlements
        .get(&id)
        .ok_or(Refusal::UnknownSettlement(id))?;
    if s.status != super::clearing::SettlementStatus::Created {
        return Err(Refusal::SettlementNotOpen(id));
    }
    Ok(s)
}

/// The bank executed the transfer: the money leaves each commanditaire's funds.
fn settle_payment(
    state: &State,
    now: Timestamp,
    id: SettlementId,
    bank_reference: &Label,
    executed_on_days: i32,
    amount: Cents,
) -> Result<Step, Refusal> {
    let s = open_settlement(state, id)?;
    if amount != s.total {
        return Err(Refusal::PaymentAmountMismatch {
            expected: s.total,
            got: amount,
        });
    }
    let mut postings = vec![Posting {
        account: Account::InPayment(s.structure),
        amount: s.total.0,
    }];
    for (c, amount) in s.by_commanditaire() {
        postings.push(Posting {
            account: Account::Funds(c),
            amount: -amount.0,
        });
    }
    let status = super::clearing::SettlementStatus::Paid {
        at: now,
        bank_reference: bank_reference.clone(),
        executed_on_days,
        amount,
    };
    Ok(Step::Change(Effects {
        facts: vec![Fact::SettlementStatusSet {
            settlement: id,
            status,
        }],
        postings,
        outcome: Outcome::SettlementPaid(id),
    }))
}

/// The bank returned the transfer: the lines go back to the next run.
fn reject_payment(
    state: &State,
    now: Timestamp,
    id: SettlementId,
    reason: &Label,
) -> Result<Step, Refusal> {
    let s = open_settlement(state, id)?;
    let postings = vec![
        Posting {
            account: Account::InPayment(s.structure),
            amount: s.total.0,
        },
        Posting {
            account: Account::Payable(s.structure),
            amount: -s.total.0,
        },
    ];
    let status = super::clearing::SettlementStatus::Rejected {
        at: now,
        reason: reason.clone(),
    };
    Ok(Step::Change(Effects {
        facts: vec![Fact::SettlementStatusSet {
            settlement: id,
            status,
        }],
        postings,
        outcome: Outcome::SettlementRejected(id),
    }))
}
