//! The reference model of the ledger, shared by the model test, the deterministic
//! simulation (tests/model.rs) and the core-against-model fuzz target (fuzz/): three orders
//! of five passes, two sites (one outside the perimeter), one structure, and the
//! settlements clearing makes of its redemptions. `step` says what the ledger must answer
//! to each operation.
#![allow(dead_code)]

use passnum::domain::*;
use passnum::storage::Fault;

pub const HOUR: i64 = 3_600_000;
pub const T0: i64 = 1_767_225_600_000;
pub const ORDERS: u64 = 3;
pub const PASSES_PER_ORDER: u64 = 5;
pub const VALID_MS: i64 = 10 * 24 * HOUR;
pub const GRACE_DAYS: u32 = 1;
/// `Rules::default()`'s: how old an offline scan may be, how far ahead its clock.
pub const OFFLINE_WINDOW_MS: i64 = 15 * 24 * HOUR;
pub const SCAN_SKEW_MS: i64 = 5 * 60_000;

#[derive(Clone, Debug)]
pub enum Op {
    Redeem {
        pass: u64,
        site: u64,
    },
    /// A scan a device made `ago_ms` before now (negative: its clock is ahead), sent now.
    RedeemOffline {
        pass: u64,
        site: u64,
        ago_ms: i64,
    },
    /// A workshop at `site` redeeming `passes` (a pass may come twice), sent as it
    /// happens or (`ago_ms`) recorded offline that long before now.
    Workshop {
        passes: Vec<u64>,
        site: u64,
        ago_ms: Option<i64>,
    },
    Reverse {
        pass: u64,
        site: u64,
    },
    Cancel {
        pass: u64,
    },
    Fund {
        order: u64,
    },
    Advance {
        hours: i64,
    },
    Sweep,
    /// A clearing run with the cut-off at the current time.
    Clear,
    /// The bank executed settlement `settlement` (perhaps unknown), for its total or not.
    Pay {
        settlement: u64,
        whole: bool,
    },
    /// The bank returned settlement `settlement`: its lines go back to the next run.
    Reject {
        settlement: u64,
    },
    Restart {
        drop_index: bool,
    },
    /// The site's tablet `device` is lost: its credential is revoked, and the tablet's
    /// next generation (issued at setup) sends from then on.
    Retire {
        device: u64,
    },
    /// The sweep's second step: the requests of credentials revoked before yesterday are
    /// forgotten.
    Forget,
    /// A tablet sends again the `nth` request (modulo those remembered), with its id.
    Retry {
        nth: u64,
    },
    /// The operator gives back `cents` of the commanditaire's credit due.
    ReturnCredit {
        cents: i64,
    },
    /// The inner operation's batch meets a storage fault; the ledger is then restarted.
    Faulted {
        inner: Box<Op>,
        fault: Fault,
    },
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MStatus {
    Minted,
    Active,
    /// `at`: when the service took place (an offline scan's time); `recorded`: when the
    /// redemption reached the ledger, from which its reversal window runs.
    Redeemed {
        site: u64,
        at: i64,
        recorded: i64,
        /// The settlement that took it (an index into `Model::settlements`).
        settlement: Option<usize>,
    },
    Cancelled,
    Expired,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SStatus {
    Open,
    Paid,
    Rejected,
}

/// A settlement: its passes and where its payment stands. Settlement `k + 1` of the ledger.
#[derive(Clone, Debug)]
pub struct MSettlement {
    pub passes: Vec<usize>,
    pub status: SStatus,
}

/// Tablets, one credential each at a time; a redemption is sent by tablet `pass % DEVICES`
/// with a request id. Each has `GENERATIONS` credentials issued at setup, used in turn.
pub const DEVICES: u64 = 3;
pub const GENERATIONS: u32 = 4;

/// A request the ledger remembers: who sent it, what, and the answer a retry must get.
#[derive(Clone, Debug)]
pub struct Sent {
    pub credential: [u8; 32],
    pub id: u64,
    pub pass: u64,
    pub site: u64,
    pub answer: String,
}

/// A revoked credential: when, and whether its requests were forgotten since.
#[derive(Clone, Debug)]
pub struct Retired {
    pub credential: [u8; 32],
    pub at: i64,
    pub forgotten: bool,
}

#[derive(Clone)]
pub struct Model {
    pub passes: Vec<MStatus>,
    pub settlements: Vec<MSettlement>,
    pub funded: Vec<bool>,
    pub swept: Vec<bool>,
    pub now: i64,
    /// Each tablet's credential in use (its generation).
    pub generations: Vec<u32>,
    pub retired: Vec<Retired>,
    pub remembered: Vec<Sent>,
    /// Request ids given so far: the next one is this.
    pub sent: u64,
    /// Credit given back to the commanditaire so far, in cents.
    pub returned: i64,
}

/// The token hash of tablet `device`'s credential of `generation`.
pub fn credential(device: u64, generation: u32) -> [u8; 32] {
    let mut hash = [0; 32];
    hash[0] = 0x5a;
    hash[1] = device as u8;
    hash[2..6].copy_from_slice(&generation.to_be_bytes());
    hash
}

impl Model {
    pub fn expires_at() -> i64 {
        T0 + VALID_MS + i64::from(GRACE_DAYS) * 24 * HOUR
    }

    /// The reason the ledger must give, or "OK"; for a workshop, each pass's (`reason`).
    pub fn step(&mut self, op: &Op) -> String {
        match *op {
            Op::Workshop {
                ref passes,
                site,
                ago_ms,
            } => match self.judged_at(ago_ms) {
                Ok(at) => self.workshop(passes, site, at),
                Err(reason) => reason.into(),
            },
            Op::Faulted { ref inner, .. } => self.step(inner),
            Op::Redeem { pass, site } => {
                let answer = self.step_one(op).to_string();
                let device = pass % DEVICES;
                self.remembered.push(Sent {
                    credential: credential(device, self.generations[device as usize]),
                    id: self.sent,
                    pass,
                    site,
                    answer: answer.clone(),
                });
                self.sent += 1;
                answer
            }
            Op::Retire { device } => {
                let g = &mut self.generations[device as usize];
                if *g + 1 < GENERATIONS {
                    self.retired.push(Retired {
                        credential: credential(device, *g),
                        at: self.now,
                        forgotten: false,
                    });
                    *g += 1;
                }
                "OK".into()
            }
            Op::Forget => {
                let day = 24 * HOUR;
                let before = self.now - self.now.rem_euclid(day) - day;
                let mut gone = vec![];
                for r in self
                    .retired
                    .iter_mut()
                    .filter(|r| !r.forgotten && r.at < before)
                {
                    r.forgotten = true;
                    gone.push(r.credential);
                }
                self.remembered.retain(|s| !gone.contains(&s.credential));
                forgot(gone.len() as u32)
            }
            Op::Retry { nth } => match self.retry(nth) {
                Some(sent) => sent.answer.clone(),
                None => "OK".into(),
            },
            _ => self.step_one(op).into(),
        }
    }

    /// The remembered request a retry resends, unless its tablet's credential was revoked
    /// (authentication refuses it: nothing reaches the core).
    fn retry(&self, nth: u64) -> Option<&Sent> {
        let n = self.remembered.len() as u64;
        let sent = self.remembered.get(nth.checked_rem(n)? as usize)?;
        let revoked = self.retired.iter().any(|r| r.credential == sent.credential);
        (!revoked).then_some(sent)
    }

    fn step_one(&mut self, op: &Op) -> &'static str {
        match *op {
            Op::Redeem { pass, site } => self.redeem(pass as usize, site, self.now),
            Op::RedeemOffline { pass, site, ago_ms } => match self.judged_at(Some(ago_ms)) {
                Ok(at) => self.redeem(pass as usize, site, at),
                Err(reason) => reason,
            },
            Op::Reverse { pass, site } => self.reverse(pass as usize, site),
            Op::Cancel { pass } => match self.passes[pass as usize] {
                MStatus::Minted | MStatus::Active => {
                    self.passes[pass as usize] = MStatus::Cancelled;
                    "OK"
                }
                _ => "NOT_CANCELLABLE",
            },
            Op::Fund { order } => {
                if self.funded[order as usize] {
                    return "ALREADY_FUNDED";
                }
                self.funded[order as usize] = true;
                for p in self.order_passes(order) {
                    if self.passes[p] == MStatus::Minted {
                        self.passes[p] = MStatus::Active;
                    }
                }
                "OK"
            }
            Op::Sweep => {
                if self.now >= Self::expires_at() + OFFLINE_WINDOW_MS {
                    for o in 0..ORDERS {
                        for p in self.order_passes(o) {
                            if matches!(self.passes[p], MStatus::Minted | MStatus::Active) {
                                self.passes[p] = MStatus::Expired;
                            }
                        }
                        self.swept[o as usize] = true;
                    }
                }
                "OK"
            }
            Op::Clear => {
                let (now, next) = (self.now, self.settlements.len());
                let mut taken = vec![];
                for (i, p) in self.passes.iter_mut().enumerate() {
                    if let MStatus::Redeemed {
                        at,
                        recorded,
                        settlement: settlement @ None,
                        ..
                    } = p
                    {
                        if *at < now && *recorded + 24 * HOUR <= now {
                            *settlement = Some(next);
                            taken.push(i);
                        }
                    }
                }
                if !taken.is_empty() {
                    self.settlements.push(MSettlement {
                        passes: taken,
                        status: SStatus::Open,
                    });
                }
                "OK"
            }
            Op::Pay { settlement, whole } => match self.open_settlement(settlement) {
                Err(reason) => reason,
                Ok(_) if !whole => "PAYMENT_AMOUNT_MISMATCH",
                Ok(k) => {
                    self.settlements[k].status = SStatus::Paid;
                    "OK"
                }
            },
            Op::Reject { settlement } => match self.open_settlement(settlement) {
                Err(reason) => reason,
                Ok(k) => {
                    self.settlements[k].status = SStatus::Rejected;
                    for &p in &self.settlements[k].passes {
                        if let MStatus::Redeemed { settlement, .. } = &mut self.passes[p] {
                            *settlement = None;
                        }
                    }
                    "OK"
                }
            },
            Op::ReturnCredit { cents } => {
                if cents <= 0 || cents > self.credit_due() {
                    return "CREDIT_EXCEEDED";
                }
                self.returned += cents;
                "OK"
            }
            Op::Advance { .. } | Op::Restart { .. } => "OK",
            Op::Workshop { .. }
            | Op::Faulted { .. }
            | Op::Retire { .. }
            | Op::Forget
            | Op::Retry { .. } => unreachable!("answered by step"),
        }
    }

    /// The credit due to the commanditaire: the face value of its funded orders' passes
    /// cancelled or expired, less what went back to it.
    pub fn credit_due(&self) -> i64 {
        let closed = (0..ORDERS)
            .filter(|o| self.funded[*o as usize])
            .flat_map(|o| self.order_passes(o))
            .filter(|p| matches!(self.passes[*p], MStatus::Cancelled | MStatus::Expired))
            .count() as i64;
        1000 * closed - self.returned
    }

    /// The index of the ledger's settlement `id`, if it is open.
    fn open_settlement(&self, id: u64) -> Result<usize, &'static str> {
        match self.settlements.get((id as usize).wrapping_sub(1)) {
            None => Err("UNKNOWN_SETTLEMENT"),
            Some(s) if s.status != SStatus::Open => Err("SETTLEMENT_NOT_OPEN"),
            Some(_) => Ok(id as usize - 1),
        }
    }

    /// What the structure is owed for redemptions not yet settled, and what its open
    /// settlements hold, in cents.
    pub fn payable_and_in_payment(&self) -> (i64, i64) {
        let (mut payable, mut in_payment) = (0, 0);
        for p in &self.passes {
            match p {
                MStatus::Redeemed {
                    settlement: None, ..
                } => payable += 1000,
                MStatus::Redeemed {
                    settlement: Some(k),
                    ..
                } if self.settlements[*k].status == SStatus::Open => in_payment += 1000,
                _ => {}
            }
        }
        (payable, in_payment)
    }

    /// When something done `ago_ms` before now (None: now) is judged, or why it is not.
    fn judged_at(&self, ago_ms: Option<i64>) -> Result<i64, &'static str> {
        let Some(ago_ms) = ago_ms else {
            return Ok(self.now);
        };
        let at = self.now - ago_ms;
        if at > self.now + SCAN_SKEW_MS {
            return Err("SCAN_IN_FUTURE");
        }
        if at < self.now - OFFLINE_WINDOW_MS {
            return Err("SCAN_TOO_OLD");
        }
        Ok(at.min(self.now))
    }

    /// Each pass in turn, judged at the session's time; a pass given twice is refused
    /// the second time, whatever the first answer was.
    fn workshop(&mut self, passes: &[u64], site: u64, at: i64) -> String {
        let mut seen = vec![];
        let each: Vec<&str> = passes
            .iter()
            .map(|&p| {
                if seen.contains(&p) {
                    return "ALREADY_REDEEMED";
                }
                seen.push(p);
                self.redeem(p as usize, site, at)
            })
            .collect();
        workshop_reasons(&each)
    }

    fn order_passes(&self, order: u64) -> std::ops::Range<usize> {
        let start = (order * PASSES_PER_ORDER) as usize;
        start..start + PASSES_PER_ORDER as usize
    }

    /// A redemption judged at `at`: now, or an offline scan's time.
    fn redeem(&mut self, p: usize, site: u64, at: i64) -> &'static str {
        match self.passes[p] {
            MStatus::Minted => return "NOT_ACTIVATED",
            MStatus::Cancelled => return "CANCELLED",
            MStatus::Expired => return "EXPIRED",
            _ => {}
        }
        if at >= Self::expires_at() {
            return "EXPIRED";
        }
        if at < T0 {
            return "NOT_YET_VALID";
        }
        if let MStatus::Redeemed { .. } = self.passes[p] {
            return "ALREADY_REDEEMED";
        }
        if site == 2 {
            return "OUTSIDE_PERIMETER";
        }
        self.passes[p] = MStatus::Redeemed {
            site,
            at,
            recorded: self.now,
            settlement: None,
        };
        "OK"
    }

    fn reverse(&mut self, p: usize, site: u64) -> &'static str {
        let MStatus::Redeemed {
            site: at_site,
            recorded,
            settlement,
            ..
        } = self.passes[p]
        else {
            return "NOT_REDEEMED";
        };
        if at_site != site {
            return "WRONG_SITE";
        }
        if settlement.is_some() {
            return "ALREADY_SETTLED";
        }
        if self.now >= recorded + 24 * HOUR {
            return "REVERSAL_WINDOW_CLOSED";
        }
        let order = p / PASSES_PER_ORDER as usize;
        self.passes[p] = if self.swept[order] {
            MStatus::Expired
        } else {
            MStatus::Active
        };
        "OK"
    }
}

pub fn serial(pass: u64) -> Serial {
    Serial::from_random(1000 + pass)
}

/// Registers the world the model assumes, through `run`.
pub fn setup(run: &mut dyn FnMut(i64, Command) -> Result<Outcome, Refusal>, now: i64) {
    let l = |s: &str| Label::parse(s).unwrap();
    let insee = |s: &str| InseeCode::parse(s).unwrap();
    run(now, Command::RegisterCommanditaire { name: l("Gironde") }).unwrap();
    let payee = PayeeId::parse("21330063500017").unwrap();
    run(
        now,
        Command::RegisterStructure {
            name: l("S"),
            payee,
            iban: None,
        },
    )
    .unwrap();
    for commune in ["33063", "75056"] {
        let kind = SiteKind::Fixed {
            commune: insee(commune),
        };
        run(
            now,
            Command::RegisterSite {
                structure: StructureId(1),
                name: l(commune),
                kind,
            },
        )
        .unwrap();
    }
    for device in 0..DEVICES {
        for generation in 0..GENERATIONS {
            let issue = Command::IssueCredential {
                token_hash: credential(device, generation),
                role: Role::Site(SiteId(1 + device % 2)),
                lifetime: Lifetime::Longest,
            };
            run(now, issue).unwrap();
        }
    }
    for o in 0..ORDERS {
        let new = NewOrder {
            commanditaire: CommanditaireId(1),
            pass_count: PASSES_PER_ORDER as u32,
            carnet_size: 5,
            face_value: Cents(1000),
            valid_from: Timestamp(T0),
            valid_until: Timestamp(T0 + VALID_MS),
            grace_days: GRACE_DAYS,
            perimeter: Perimeter {
                departements: [Departement::parse("33").unwrap()].into(),
                ..Default::default()
            },
            services: Default::default(),
            programme: l("p"),
        };
        run(now, Command::CreateOrder(new)).unwrap();
        let serials = (o * PASSES_PER_ORDER..(o + 1) * PASSES_PER_ORDER)
            .map(serial)
            .collect();
        run(
            now,
            Command::Mint {
                order: OrderId(o + 1),
                serials,
            },
        )
        .unwrap();
    }
}

/// The request `op` is sent as, made from the model as it stands before `op`: a
/// redemption carries its tablet's credential and a new request id, a retry an old one's.
pub fn envelope(op: &Op, model: &Model) -> Option<Envelope> {
    let keyed = |credential: [u8; 32], id: u64, pass: u64, site: u64| {
        let scope: String = credential[..8].iter().map(|b| format!("{b:02x}")).collect();
        let mut fingerprint = [0; 32];
        fingerprint[..8].copy_from_slice(&pass.to_le_bytes());
        fingerprint[8..16].copy_from_slice(&site.to_le_bytes());
        Some(RequestKey {
            scope,
            id: format!("r{id}"),
            fingerprint,
        })
    };
    let (request, op) = match *op {
        Op::Redeem { pass, site } => {
            let device = pass % DEVICES;
            let credential = credential(device, model.generations[device as usize]);
            (keyed(credential, model.sent, pass, site), op.clone())
        }
        Op::Retry { nth } => {
            let sent = model.retry(nth)?;
            let request = keyed(sent.credential, sent.id, sent.pass, sent.site);
            (
                request,
                Op::Redeem {
                    pass: sent.pass,
                    site: sent.site,
                },
            )
        }
        Op::Faulted { ref inner, .. } => return envelope(inner, model),
        _ => (None, op.clone()),
    };
    let command = command(&op, model)?;
    Some(Envelope { request, command })
}

/// The command for `op`, made from the model as it stands before `op`.
fn command(op: &Op, model: &Model) -> Option<Command> {
    let now = model.now;
    let svc = ServiceCode::parse("aide").unwrap();
    Some(match *op {
        Op::Redeem { pass, site } => Command::Redeem {
            serial: serial(pass),
            site: SiteId(site),
            place: Place::Site,
            service: svc,
            scanned_at: None,
        },
        Op::RedeemOffline { pass, site, ago_ms } => Command::Redeem {
            serial: serial(pass),
            site: SiteId(site),
            place: Place::Site,
            service: svc,
            scanned_at: Some(Timestamp(now - ago_ms)),
        },
        Op::Workshop {
            ref passes,
            site,
            ago_ms,
        } => {
            let held_at = ago_ms.map(|ago| Timestamp(now - ago));
            let day = held_at.map_or(now, |t| t.0).div_euclid(24 * HOUR);
            Command::RedeemWorkshop {
                workshop: NewWorkshop {
                    site: SiteId(site),
                    place: Place::Site,
                    date_days: day as i32,
                    start_minute: 14 * 60,
                    duration_minutes: 120,
                    themes: vec![svc],
                    participants: passes.len() as u16,
                    mediator: Label::parse("CNFS-0042").unwrap(),
                },
                serials: passes.iter().map(|p| serial(*p)).collect(),
                held_at,
            }
        }
        Op::Reverse { pass, site } => Command::Reverse {
            serial: serial(pass),
            site: SiteId(site),
        },
        Op::Cancel { pass } => Command::Cancel {
            target: CancelTarget::Passes(vec![serial(pass)]),
        },
        Op::Fund { order } => Command::RecordFunding {
            order: OrderId(order + 1),
            amount: Cents(1000 * PASSES_PER_ORDER as i64),
            reference: Label::parse("r").unwrap(),
        },
        Op::Sweep => Command::ExpireSweep,
        Op::Clear => Command::RunClearing {
            cut_off: Timestamp(now),
        },
        Op::Pay { settlement, whole } => {
            let lines = model
                .settlements
                .get((settlement as usize).wrapping_sub(1))
                .map_or(0, |s| s.passes.len() as i64);
            Command::RecordPayment {
                settlement: SettlementId(settlement),
                bank_reference: Label::parse("BANK-1").unwrap(),
                executed_on_days: now.div_euclid(24 * HOUR) as i32,
                amount: Cents(1000 * lines - i64::from(!whole)),
            }
        }
        Op::Reject { settlement } => Command::RecordRejection {
            settlement: SettlementId(settlement),
            reason: Label::parse("compte clos").unwrap(),
        },
        Op::Retire { device } => {
            let generation = model.generations[device as usize];
            if generation + 1 >= GENERATIONS {
                return None;
            }
            Command::RevokeCredential {
                token_hash: credential(device, generation),
            }
        }
        Op::Forget => Command::ForgetRequests,
        Op::ReturnCredit { cents } => Command::ReturnCredit {
            commanditaire: CommanditaireId(1),
            amount: Cents(cents),
            reference: Label::parse("VIR-AVOIR").unwrap(),
        },
        Op::Advance { .. } | Op::Restart { .. } | Op::Retry { .. } => return None,
        Op::Faulted { ref inner, .. } => return command(inner, model),
    })
}

/// The ledger's answer in the model's words: a reason, "OK", or a workshop's list.
pub fn reason(answer: &Result<Outcome, Refusal>) -> String {
    match answer {
        Err(refusal) => refusal.reason().into(),
        Ok(Outcome::Workshop { passes, .. }) => {
            let each: Vec<&str> = passes
                .iter()
                .map(|p| p.as_ref().map_or_else(|r| r.reason(), |_| "OK"))
                .collect();
            workshop_reasons(&each)
        }
        Ok(Outcome::RequestsForgotten { credentials }) => forgot(*credentials),
        Ok(_) => "OK".into(),
    }
}

fn forgot(credentials: u32) -> String {
    format!("FORGOT[{credentials}]")
}

fn workshop_reasons(each: &[&str]) -> String {
    format!("WORKSHOP[{}]", each.join(","))
}

impl Model {
    pub fn new() -> Model {
        Model {
            passes: vec![MStatus::Minted; (ORDERS * PASSES_PER_ORDER) as usize],
            settlements: vec![],
            funded: vec![false; ORDERS as usize],
            swept: vec![false; ORDERS as usize],
            now: T0 + HOUR,
            generations: vec![0; DEVICES as usize],
            retired: vec![],
            remembered: vec![],
            sent: 0,
            returned: 0,
        }
    }
}

/// A small deterministic generator: a run is replayed from its seed.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }

    /// How long before it is sent an offline scan was made: mostly inside the window,
    /// sometimes past it, or ahead of the server's clock (within the skew, or beyond).
    pub fn scan_age(&mut self) -> i64 {
        match self.below(8) {
            0 => -2 * HOUR,
            1 => -60_000,
            2 => OFFLINE_WINDOW_MS + HOUR,
            _ => HOUR * (1 + self.below(300) as i64),
        }
    }

    /// A settlement a run may have made (runs are few: mostly the first two), or one past
    /// them (unknown).
    pub fn settlement(&mut self) -> u64 {
        match self.below(4) {
            0 => 3 + self.below(2),
            _ => 1 + self.below(2),
        }
    }

    /// Up to four passes, one of them perhaps twice; a third of them held offline.
    pub fn workshop(&mut self, site: u64) -> Op {
        let passes = (0..1 + self.below(4))
            .map(|_| self.below(ORDERS * PASSES_PER_ORDER))
            .collect();
        let ago_ms = (self.below(3) == 0).then(|| self.scan_age());
        Op::Workshop {
            passes,
            site,
            ago_ms,
        }
    }

    pub fn op(&mut self) -> Op {
        let pass = self.below(ORDERS * PASSES_PER_ORDER);
        let site = 1 + self.below(2);
        match self.below(31) {
            0..=5 => Op::Redeem { pass, site },
            6..=7 => Op::Reverse { pass, site },
            8 => Op::Cancel { pass },
            9..=10 => Op::Fund {
                order: self.below(ORDERS),
            },
            11..=12 => Op::Advance {
                hours: 1 + self.below(71) as i64,
            },
            13 => Op::Sweep,
            14..=15 => Op::Clear,
            16 => Op::Restart {
                drop_index: self.below(2) == 0,
            },
            17..=18 => Op::RedeemOffline {
                pass,
                site,
                ago_ms: self.scan_age(),
            },
            19..=20 => self.workshop(site),
            21 => Op::Pay {
                settlement: self.settlement(),
                whole: self.below(4) != 0,
            },
            22 => Op::Reject {
                settlement: self.settlement(),
            },
            23 => Op::Retire {
                device: self.below(DEVICES),
            },
            24 => Op::Forget,
            25 => Op::Retry {
                nth: self.below(1_000),
            },
            // Mostly within what is due (a pass or two), sometimes more, or nothing.
            26 => Op::ReturnCredit {
                cents: [500, 1000, 2000, 0, 1_000_000][self.below(5) as usize],
            },
            _ => {
                let inner = Box::new(self.op());
                let keep = self.below(200) as usize;
                let fault = match self.below(3) {
                    0 => Fault::TornWrite { keep },
                    1 => Fault::NoSpace { keep },
                    _ => Fault::SyncFails,
                };
                if matches!(*inner, Op::Faulted { .. }) {
                    *inner
                } else {
                    Op::Faulted { inner, fault }
                }
            }
        }
    }
}
