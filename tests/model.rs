//! Random command sequences against a small reference model, through the real ledger
//! (log file and sled index in a temp dir). After every step: the answer matches the
//! model, every invariant holds; restarts (with and without the index) lose nothing.

use passnum::domain::*;
use passnum::engine::Ledger;
use proptest::prelude::*;
use std::collections::HashMap;

const HOUR: i64 = 3_600_000;
const T0: i64 = 1_767_225_600_000;
const ORDERS: u64 = 3;
const PASSES_PER_ORDER: u64 = 5;
const VALID_MS: i64 = 10 * 24 * HOUR;
const GRACE_DAYS: u32 = 1;

#[derive(Clone, Debug)]
enum Op {
    Redeem {
        pass: u64,
        site: u64,
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
    Restart {
        drop_index: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let pass = 0..ORDERS * PASSES_PER_ORDER;
    prop_oneof![
        6 => (pass.clone(), 1..=2u64).prop_map(|(pass, site)| Op::Redeem { pass, site }),
        2 => (pass.clone(), 1..=2u64).prop_map(|(pass, site)| Op::Reverse { pass, site }),
        1 => pass.prop_map(|pass| Op::Cancel { pass }),
        2 => (0..ORDERS).prop_map(|order| Op::Fund { order }),
        2 => (1..72i64).prop_map(|hours| Op::Advance { hours }),
        1 => Just(Op::Sweep),
        1 => Just(Op::Clear),
        1 => any::<bool>().prop_map(|drop_index| Op::Restart { drop_index }),
    ]
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum MStatus {
    Minted,
    Active,
    Redeemed { site: u64, at: i64, settled: bool },
    Cancelled,
    Expired,
}

struct Model {
    passes: Vec<MStatus>,
    funded: Vec<bool>,
    swept: Vec<bool>,
    now: i64,
}

impl Model {
    fn expires_at() -> i64 {
        T0 + VALID_MS + i64::from(GRACE_DAYS) * 24 * HOUR
    }

    /// The reason the ledger must give, or "OK".
    fn step(&mut self, op: &Op) -> &'static str {
        match *op {
            Op::Redeem { pass, site } => self.redeem(pass as usize, site),
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
                if self.now >= Self::expires_at() {
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
                let now = self.now;
                for p in &mut self.passes {
                    if let MStatus::Redeemed { at, settled, .. } = p {
                        if *at < now && *at + 24 * HOUR <= now {
                            *settled = true;
                        }
                    }
                }
                "OK"
            }
            Op::Advance { .. } | Op::Restart { .. } => "OK",
        }
    }

    fn order_passes(&self, order: u64) -> std::ops::Range<usize> {
        let start = (order * PASSES_PER_ORDER) as usize;
        start..start + PASSES_PER_ORDER as usize
    }

    fn redeem(&mut self, p: usize, site: u64) -> &'static str {
        match self.passes[p] {
            MStatus::Minted => return "NOT_ACTIVATED",
            MStatus::Cancelled => return "CANCELLED",
            MStatus::Expired => return "EXPIRED",
            _ => {}
        }
        if self.now >= Self::expires_at() {
            return "EXPIRED";
        }
        if let MStatus::Redeemed { .. } = self.passes[p] {
            return "ALREADY_REDEEMED";
        }
        if site == 2 {
            return "OUTSIDE_PERIMETER";
        }
        self.passes[p] = MStatus::Redeemed {
            site,
            at: self.now,
            settled: false,
        };
        "OK"
    }

    fn reverse(&mut self, p: usize, site: u64) -> &'static str {
        let MStatus::Redeemed {
            site: at_site,
            at,
            settled,
        } = self.passes[p]
        else {
            return "NOT_REDEEMED";
        };
        if at_site != site {
            return "WRONG_SITE";
        }
        if settled {
            return "ALREADY_SETTLED";
        }
        if self.now >= at + 24 * HOUR {
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

fn serial(pass: u64) -> Serial {
    Serial::from_random(1000 + pass)
}

fn run(ledger: &mut Ledger, now: i64, command: Command) -> Result<Outcome, Refusal> {
    let env = Envelope {
        request: None,
        command,
    };
    ledger
        .execute_batch(Timestamp(now), &[&env])
        .expect("disk takes the batch")
        .remove(0)
}

fn setup(ledger: &mut Ledger, now: i64) {
    let l = |s: &str| Label::parse(s).unwrap();
    let insee = |s: &str| InseeCode::parse(s).unwrap();
    run(
        ledger,
        now,
        Command::RegisterCommanditaire { name: l("Gironde") },
    )
    .unwrap();
    let payee = PayeeId::parse("21330063500017").unwrap();
    run(
        ledger,
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
            ledger,
            now,
            Command::RegisterSite {
                structure: StructureId(1),
                name: l(commune),
                kind,
            },
        )
        .unwrap();
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
        run(ledger, now, Command::CreateOrder(new)).unwrap();
        let serials = (o * PASSES_PER_ORDER..(o + 1) * PASSES_PER_ORDER)
            .map(serial)
            .collect();
        run(
            ledger,
            now,
            Command::Mint {
                order: OrderId(o + 1),
                serials,
            },
        )
        .unwrap();
    }
}

fn command(op: &Op, now: i64) -> Option<Command> {
    let svc = ServiceCode::parse("aide").unwrap();
    Some(match *op {
        Op::Redeem { pass, site } => Command::Redeem {
            serial: serial(pass),
            site: SiteId(site),
            place: Place::Site,
            service: svc,
        },
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
        Op::Advance { .. } | Op::Restart { .. } => return None,
    })
}

fn reason(answer: &Result<Outcome, Refusal>) -> &'static str {
    answer.as_ref().map_or_else(|r| r.reason(), |_| "OK")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn ledger_matches_model(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open(dir.path(), Rules::default()).unwrap();
        let mut model = Model {
            passes: vec![MStatus::Minted; (ORDERS * PASSES_PER_ORDER) as usize],
            funded: vec![false; ORDERS as usize],
            swept: vec![false; ORDERS as usize],
            now: T0 + HOUR,
        };
        setup(&mut ledger, model.now);
        for op in &ops {
            match op {
                Op::Advance { hours } => model.now += hours * HOUR,
                Op::Restart { drop_index } => {
                    let (state, head) = (ledger.state().clone(), ledger.head());
                    drop(ledger);
                    if *drop_index {
                        std::fs::remove_dir_all(dir.path().join("index")).unwrap();
                    }
                    ledger = Ledger::open(dir.path(), Rules::default()).unwrap();
                    prop_assert_eq!(&*ledger.state(), &state, "state survives a restart");
                    prop_assert_eq!(ledger.head(), head);
                }
                _ => {}
            }
            let expected = model.step(op);
            if let Some(cmd) = command(op, model.now) {
                let answer = run(&mut ledger, model.now, cmd);
                prop_assert_eq!(reason(&answer), expected, "{:?}", op);
            }
            ledger.state().check_invariants().map_err(TestCaseError::fail)?;
            let count = |settled: bool| {
                model.passes.iter().filter(|p| matches!(p, MStatus::Redeemed { settled: s, .. } if *s == settled)).count() as i64
            };
            prop_assert_eq!(ledger.state().balance(Account::Payable(StructureId(1))), -1000 * count(false));
            prop_assert_eq!(ledger.state().balance(Account::InPayment(StructureId(1))), -1000 * count(true));
        }
    }
}

#[test]
fn model_serials_are_distinct() {
    let all: HashMap<Serial, u64> = (0..ORDERS * PASSES_PER_ORDER)
        .map(|p| (serial(p), p))
        .collect();
    assert_eq!(all.len() as u64, ORDERS * PASSES_PER_ORDER);
}
