//! Every rule of the core, as a table: each line is a command and the answer it must get.
//! The core runs without tokio or disk; invariants are checked after every step.

use passnum::domain::merkle;
use passnum::domain::*;
use std::collections::BTreeSet;

const DAY: i64 = Timestamp::MS_PER_DAY;
const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

struct World {
    state: State,
    rules: Rules,
    now: Timestamp,
    /// The facts of the last record appended.
    last_facts: Vec<Fact>,
}

fn label(s: &str) -> Label {
    Label::parse(s).unwrap()
}
fn insee(s: &str) -> InseeCode {
    InseeCode::parse(s).unwrap()
}
fn svc(s: &str) -> ServiceCode {
    ServiceCode::parse(s).unwrap()
}
fn serial(n: u64) -> Serial {
    Serial::from_random(n)
}

impl World {
    fn run(&mut self, command: Command) -> Result<Outcome, Refusal> {
        self.run_as(None, command)
    }

    fn run_as(
        &mut self,
        request: Option<RequestKey>,
        command: Command,
    ) -> Result<Outcome, Refusal> {
        let envelope = Envelope { request, command };
        match decide(&self.state, &self.rules, self.now, &envelope) {
            Decision::Answer(a) => a,
            Decision::Record(body) => {
                assert!(body.postings_balance());
                self.state.apply(self.state.seq + 1, self.now, &body);
                self.state.check_invariants().unwrap();
                self.last_facts = body.facts;
                body.result
            }
        }
    }

    fn order(&mut self, pass_count: u32, perimeter: Perimeter, services: &[&str]) -> OrderId {
        let new = NewOrder {
            commanditaire: CommanditaireId(1),
            pass_count,
            carnet_size: 5.min(pass_count),
            face_value: Cents(1000),
            valid_from: Timestamp(T0),
            valid_until: Timestamp(T0 + 365 * DAY),
            grace_days: 31,
            perimeter,
            services: services.iter().map(|s| svc(s)).collect(),
            programme: label("AAP 2026"),
        };
        match self.run(Command::CreateOrder(new)).unwrap() {
            Outcome::OrderCreated(id) => id,
            o => panic!("{o:?}"),
        }
    }

    fn mint(&mut self, order: OrderId, first_serial: u64, count: u64) {
        let serials = (first_serial..first_serial + count).map(serial).collect();
        self.run(Command::Mint { order, serials }).unwrap();
    }

    fn fund(&mut self, order: OrderId) {
        let amount = self.state.orders[&order].total();
        self.run(Command::RecordFunding {
            order,
            amount,
            reference: label("virement 1"),
        })
        .unwrap();
    }
}

fn dept(d: &str) -> Perimeter {
    Perimeter {
        departements: [Departement::parse(d).unwrap()].into(),
        ..Default::default()
    }
}

/// A world with one commanditaire, one structure, four sites and four orders:
/// - site 1: fixed, Bordeaux (33); site 2: bus, stops Bordeaux (33) and Périgueux (24);
/// - site 3: workshop, home Bordeaux; site 4: fixed in Bordeaux, inactive;
/// - order 1: Gironde, serials 1–10, funded; order 2: Gironde, serials 101–105, not funded;
/// - order 3: Gironde, only `demarches-en-ligne`, serials 201–205, funded;
/// - order 4: only site 1 explicitly, serials 301–305, funded.
fn world() -> World {
    let mut w = World {
        state: State::default(),
        rules: Rules::default(),
        now: Timestamp(T0 + DAY),
        last_facts: vec![],
    };
    w.run(Command::RegisterCommanditaire {
        name: label("Département de la Gironde"),
    })
    .unwrap();
    let payee = PayeeId::parse("21330063500017").unwrap();
    w.run(Command::RegisterStructure {
        name: label("Médiathèque"),
        payee,
        iban: None,
    })
    .unwrap();
    let kinds = [
        SiteKind::Fixed {
            commune: insee("33063"),
        },
        SiteKind::Itinerant {
            stops: vec![
                Stop {
                    label: label("Place de la mairie"),
                    commune: insee("33063"),
                },
                Stop {
                    label: label("Marché"),
                    commune: insee("24322"),
                },
            ],
        },
        SiteKind::Workshop {
            home: insee("33063"),
        },
        SiteKind::Fixed {
            commune: insee("33063"),
        },
    ];
    for (i, kind) in kinds.into_iter().enumerate() {
        let name = label(&format!("site {i}"));
        w.run(Command::RegisterSite {
            structure: StructureId(1),
            name,
            kind,
        })
        .unwrap();
    }
    w.run(Command::SetSiteActive {
        site: SiteId(4),
        active: false,
    })
    .unwrap();
    let o1 = w.order(10, dept("33"), &[]);
    w.mint(o1, 1, 10);
    w.fund(o1);
    let o2 = w.order(5, dept("33"), &[]);
    w.mint(o2, 101, 5);
    let o3 = w.order(5, dept("33"), &["demarches-en-ligne"]);
    w.mint(o3, 201, 5);
    w.fund(o3);
    let sites = Perimeter {
        sites: [SiteId(1)].into(),
        ..Default::default()
    };
    let o4 = w.order(5, sites, &[]);
    w.mint(o4, 301, 5);
    w.fund(o4);
    w
}

/// An expiry sweep now finds no order to sweep.
#[track_caller]
fn sweeps_nothing(w: &mut World) {
    assert_eq!(
        w.run(Command::ExpireSweep).unwrap(),
        Outcome::Expired {
            passes: 0,
            credited: Cents(0)
        }
    );
}

fn redeem(n: u64, site: u64, place: Place, service: &str) -> Command {
    Command::Redeem {
        serial: serial(n),
        site: SiteId(site),
        place,
        service: svc(service),
        scanned_at: None,
    }
}

enum Expect {
    Ok,
    Refused(&'static str),
}

/// Runs each line in order on one world; a line is (what it shows, command, expected).
fn check(w: &mut World, lines: Vec<(&str, Command, Expect)>) {
    for (what, command, expect) in lines {
        let got = w.run(command);
        match (&expect, &got) {
            (Expect::Ok, Ok(_)) => {}
            (Expect::Refused(reason), Err(r)) if r.reason() == *reason => {}
            _ => panic!(
                "{what}: expected {}, got {got:?}",
                match expect {
                    Expect::Ok => "success".to_string(),
                    Expect::Refused(r) => r.to_string(),
                }
            ),
        }
    }
}

#[test]
fn redemption_rules_in_order_of_precedence() {
    use Expect::*;
    let mut w = world();
    check(
        &mut w,
        vec![
            (
                "unknown site",
                redeem(1, 99, Place::Site, "x"),
                Refused("UNKNOWN_SITE"),
            ),
            (
                "a bus must name a stop",
                redeem(1, 2, Place::Site, "x"),
                Refused("PLACE_DOES_NOT_FIT_SITE"),
            ),
            (
                "a bus stop that does not exist",
                redeem(1, 2, Place::Stop(7), "x"),
                Refused("UNKNOWN_STOP"),
            ),
            (
                "a fixed site names no commune",
                redeem(1, 1, Place::Commune(insee("33063")), "x"),
                Refused("PLACE_DOES_NOT_FIT_SITE"),
            ),
            (
                "unknown pass",
                redeem(999, 1, Place::Site, "x"),
                Refused("UNKNOWN_PASS"),
            ),
            (
                "order not funded",
                redeem(101, 1, Place::Site, "x"),
                Refused("NOT_ACTIVATED"),
            ),
            ("redeem at a fixed site", redeem(1, 1, Place::Site, "x"), Ok),
            (
                "second redemption",
                redeem(1, 1, Place::Site, "x"),
                Refused("ALREADY_REDEEMED"),
            ),
            (
                "inactive site",
                redeem(2, 4, Place::Site, "x"),
                Refused("SITE_INACTIVE"),
            ),
            (
                "bus stop outside Gironde",
                redeem(2, 2, Place::Stop(1), "x"),
                Refused("OUTSIDE_PERIMETER"),
            ),
            (
                "bus stop inside Gironde",
                redeem(2, 2, Place::Stop(0), "x"),
                Ok,
            ),
            (
                "workshop commune outside",
                redeem(3, 3, Place::Commune(insee("75056")), "x"),
                Refused("OUTSIDE_PERIMETER"),
            ),
            (
                "workshop commune inside",
                redeem(3, 3, Place::Commune(insee("33281")), "x"),
                Ok,
            ),
            (
                "service not in the order",
                redeem(201, 1, Place::Site, "x"),
                Refused("SERVICE_NOT_ALLOWED"),
            ),
            (
                "service in the order",
                redeem(201, 1, Place::Site, "demarches-en-ligne"),
                Ok,
            ),
            (
                "explicit site list: other site",
                redeem(301, 2, Place::Stop(0), "x"),
                Refused("OUTSIDE_PERIMETER"),
            ),
            (
                "explicit site list: listed site",
                redeem(301, 1, Place::Site, "x"),
                Ok,
            ),
        ],
    );
    let Err(Refusal::AlreadyRedeemed { at, site }) = w.run(redeem(1, 2, Place::Stop(0), "x"))
    else {
        panic!()
    };
    assert_eq!(
        (at, site),
        (Timestamp(T0 + DAY), SiteId(1)),
        "the refusal names when and where"
    );
}

#[test]
fn validity_window_and_expiry() {
    use Expect::*;
    let mut w = world();
    w.now = Timestamp(T0 - 1);
    check(
        &mut w,
        vec![(
            "before validity",
            redeem(1, 1, Place::Site, "x"),
            Refused("NOT_YET_VALID"),
        )],
    );
    w.now = Timestamp(T0 + 365 * DAY + 30 * DAY);
    check(
        &mut w,
        vec![("in the grace month", redeem(1, 1, Place::Site, "x"), Ok)],
    );
    w.now = Timestamp(T0 + 365 * DAY + 31 * DAY);
    check(
        &mut w,
        vec![(
            "after grace, before the sweep",
            redeem(2, 1, Place::Site, "x"),
            Refused("EXPIRED"),
        )],
    );
    // The sweep waits out the offline window: a scan made in time may still arrive.
    sweeps_nothing(&mut w);
    w.now = Timestamp(T0 + 396 * DAY + w.rules.offline_window_ms);
    let swept = w.run(Command::ExpireSweep).unwrap();
    // Orders 1, 3, 4 are funded: 9 + 5 + 5 live activated passes; order 2's 5 passes have no value.
    assert_eq!(
        swept,
        Outcome::Expired {
            passes: 24,
            credited: Cents(19 * 1000)
        }
    );
    sweeps_nothing(&mut w);
    check(
        &mut w,
        vec![(
            "swept pass",
            redeem(2, 1, Place::Site, "x"),
            Refused("EXPIRED"),
        )],
    );
    assert_eq!(
        w.state.balance(Account::CreditDue(CommanditaireId(1))),
        -19_000
    );
}

#[test]
fn reversal_rules() {
    use Expect::*;
    let mut w = world();
    let rev = |n, site| Command::Reverse {
        serial: serial(n),
        site: SiteId(site),
    };
    check(
        &mut w,
        vec![
            ("not redeemed", rev(1, 1), Refused("NOT_REDEEMED")),
            ("redeem", redeem(1, 1, Place::Site, "x"), Ok),
            ("other site", rev(1, 2), Refused("WRONG_SITE")),
            ("unknown pass", rev(999, 1), Refused("UNKNOWN_PASS")),
            ("same site, in the window", rev(1, 1), Ok),
            (
                "redeem again after reversal",
                redeem(1, 1, Place::Site, "x"),
                Ok,
            ),
        ],
    );
    w.now = Timestamp(w.now.0 + w.rules.reversal_window_ms);
    check(
        &mut w,
        vec![(
            "window closed",
            rev(1, 1),
            Refused("REVERSAL_WINDOW_CLOSED"),
        )],
    );
    assert_eq!(w.state.balance(Account::Payable(StructureId(1))), -1000);
}

#[test]
fn orders_mint_funding_distribution_cancellation() {
    use Expect::*;
    let mut w = world();
    let new = |perimeter: Perimeter, carnet_size, from, until| {
        Command::CreateOrder(NewOrder {
            commanditaire: CommanditaireId(1),
            pass_count: 10,
            carnet_size,
            face_value: Cents(1000),
            valid_from: Timestamp(from),
            valid_until: Timestamp(until),
            grace_days: 0,
            perimeter,
            services: BTreeSet::new(),
            programme: label("p"),
        })
    };
    let fund = |order, cents| Command::RecordFunding {
        order: OrderId(order),
        amount: Cents(cents),
        reference: label("r"),
    };
    let cancel = |serials: Vec<u64>| Command::Cancel {
        target: CancelTarget::Passes(serials.into_iter().map(serial).collect()),
    };
    check(
        &mut w,
        vec![
            (
                "empty perimeter",
                new(Perimeter::default(), 5, T0, T0 + DAY),
                Refused("EMPTY_PERIMETER"),
            ),
            (
                "inverted window",
                new(dept("33"), 5, T0, T0),
                Refused("VALIDITY_WINDOW_INVERTED"),
            ),
            (
                "carnet of 0",
                new(dept("33"), 0, T0, T0 + DAY),
                Refused("CARNET_SIZE_INVALID"),
            ),
            (
                "carnet of 21",
                new(dept("33"), 21, T0, T0 + DAY),
                Refused("CARNET_SIZE_INVALID"),
            ),
            ("order 5", new(dept("33"), 5, T0, T0 + 10 * DAY), Ok),
            ("fund before mint", fund(5, 10_000), Refused("NOT_MINTED")),
            (
                "mint too few",
                Command::Mint {
                    order: OrderId(5),
                    serials: vec![serial(500)],
                },
                Refused("MINT_COUNT_MISMATCH"),
            ),
            (
                "mint over an existing serial",
                Command::Mint {
                    order: OrderId(5),
                    serials: (1..=10).map(serial).collect(),
                },
                Refused("SERIAL_COLLISION"),
            ),
            (
                "mint",
                Command::Mint {
                    order: OrderId(5),
                    serials: (500..510).map(serial).collect(),
                },
                Ok,
            ),
            (
                "mint again is idempotent",
                Command::Mint {
                    order: OrderId(5),
                    serials: vec![],
                },
                Ok,
            ),
            ("cancel before funding", cancel(vec![500]), Ok),
            (
                "fund the wrong amount",
                fund(5, 9_000),
                Refused("FUNDING_MISMATCH"),
            ),
            ("fund", fund(5, 10_000), Ok),
            ("fund twice", fund(5, 10_000), Refused("ALREADY_FUNDED")),
            ("unknown order", fund(77, 1), Refused("UNKNOWN_ORDER")),
            (
                "distribute carnet 1",
                Command::MarkDistributed {
                    order: OrderId(5),
                    carnet: 1,
                },
                Ok,
            ),
            (
                "distribute it again",
                Command::MarkDistributed {
                    order: OrderId(5),
                    carnet: 1,
                },
                Refused("ALREADY_DISTRIBUTED"),
            ),
            (
                "no carnet 2 in 10 passes of 5",
                Command::MarkDistributed {
                    order: OrderId(5),
                    carnet: 2,
                },
                Refused("UNKNOWN_CARNET"),
            ),
            (
                "cancelled pass",
                redeem(500, 1, Place::Site, "x"),
                Refused("CANCELLED"),
            ),
            (
                "cancel a cancelled pass",
                cancel(vec![500]),
                Refused("NOT_CANCELLABLE"),
            ),
            (
                "cancel an unknown pass",
                cancel(vec![9999]),
                Refused("UNKNOWN_PASS"),
            ),
            ("redeem 501", redeem(501, 1, Place::Site, "x"), Ok),
            (
                "cancel carnet 0: skips redeemed and cancelled",
                Command::Cancel {
                    target: CancelTarget::Carnet {
                        order: OrderId(5),
                        carnet: 0,
                    },
                },
                Ok,
            ),
            (
                "carnet 0 has nothing live",
                Command::Cancel {
                    target: CancelTarget::Carnet {
                        order: OrderId(5),
                        carnet: 0,
                    },
                },
                Refused("NOT_CANCELLABLE"),
            ),
        ],
    );
    // Pass 500 cancelled before funding and 502–504 after: 4 passes owed back.
    assert_eq!(
        w.state.balance(Account::CreditDue(CommanditaireId(1))),
        -4000
    );
}

#[test]
fn registry_rules() {
    use Expect::*;
    let mut w = world();
    let payee = PayeeId::parse("21330063500017").unwrap();
    check(
        &mut w,
        vec![
            (
                "same SIRET twice",
                Command::RegisterStructure {
                    name: label("x"),
                    payee,
                    iban: None,
                },
                Refused("PAYEE_ALREADY_REGISTERED"),
            ),
            (
                "site of an unknown structure",
                Command::RegisterSite {
                    structure: StructureId(9),
                    name: label("x"),
                    kind: SiteKind::Workshop {
                        home: insee("33063"),
                    },
                },
                Refused("UNKNOWN_STRUCTURE"),
            ),
            (
                "credential",
                Command::IssueCredential {
                    token_hash: [1; 32],
                    role: Role::Operator,
                    lifetime: Lifetime::Longest,
                },
                Ok,
            ),
            (
                "same credential",
                Command::IssueCredential {
                    token_hash: [1; 32],
                    role: Role::Operator,
                    lifetime: Lifetime::Longest,
                },
                Refused("CREDENTIAL_EXISTS"),
            ),
            (
                "credential for an unknown site",
                Command::IssueCredential {
                    token_hash: [2; 32],
                    role: Role::Site(SiteId(99)),
                    lifetime: Lifetime::Longest,
                },
                Refused("UNKNOWN_SITE"),
            ),
            (
                "revoke the credential",
                Command::RevokeCredential {
                    token_hash: [1; 32],
                },
                Ok,
            ),
            (
                "revoke it again",
                Command::RevokeCredential {
                    token_hash: [1; 32],
                },
                Refused("CREDENTIAL_ALREADY_REVOKED"),
            ),
            (
                "revoke a credential never issued",
                Command::RevokeCredential {
                    token_hash: [3; 32],
                },
                Refused("UNKNOWN_CREDENTIAL"),
            ),
            (
                "a revoked credential's hash is not issued again",
                Command::IssueCredential {
                    token_hash: [1; 32],
                    role: Role::Operator,
                    lifetime: Lifetime::Longest,
                },
                Refused("CREDENTIAL_EXISTS"),
            ),
            (
                "reactivate site 4",
                Command::SetSiteActive {
                    site: SiteId(4),
                    active: true,
                },
                Ok,
            ),
            ("redeem at it", redeem(5, 4, Place::Site, "x"), Ok),
        ],
    );
}

/// A credential lives at most the rules' longest, from its issue; asked for nothing, it
/// gets the longest. Only a ledger's first credential, the operator's, may never expire.
#[test]
fn a_credential_expires_within_the_longest_lifetime_and_only_the_first_never_does() {
    use Expect::*;
    let issue = |n: u8, role: Role, lifetime: Lifetime| Command::IssueCredential {
        token_hash: [n; 32],
        role,
        lifetime,
    };
    let site = || Role::Site(SiteId(1));
    let mut w = world();
    let longest = w.rules.credential_lifetime_ms;
    assert_eq!(longest, 400 * DAY);
    check(
        &mut w,
        vec![
            (
                "a site's may not be endless",
                issue(1, site(), Lifetime::Never),
                Refused("CREDENTIAL_LIFETIME_OUT_OF_RANGE"),
            ),
            (
                "the first, the operator's, may",
                issue(1, Role::Operator, Lifetime::Never),
                Ok,
            ),
            (
                "a second operator's may not",
                issue(2, Role::Operator, Lifetime::Never),
                Refused("CREDENTIAL_LIFETIME_OUT_OF_RANGE"),
            ),
            (
                "no time at all",
                issue(2, site(), Lifetime::Ms(0)),
                Refused("CREDENTIAL_LIFETIME_OUT_OF_RANGE"),
            ),
            (
                "longer than the longest",
                issue(2, site(), Lifetime::Ms(longest + 1)),
                Refused("CREDENTIAL_LIFETIME_OUT_OF_RANGE"),
            ),
            ("the longest", issue(2, site(), Lifetime::Ms(longest)), Ok),
            ("a day", issue(3, site(), Lifetime::Ms(DAY)), Ok),
            ("unnamed", issue(4, Role::Operator, Lifetime::Longest), Ok),
        ],
    );
    let now = w.now;
    let expires = |n: u8| w.state.credentials[&[n; 32]].expires_at;
    assert_eq!(expires(1), None);
    assert_eq!(expires(2), Some(Timestamp(now.0 + longest)));
    assert_eq!(expires(3), Some(Timestamp(now.0 + DAY)));
    assert_eq!(expires(4), Some(Timestamp(now.0 + longest)));
    let a_day = &w.state.credentials[&[3; 32]];
    assert_eq!(a_day.expired(Timestamp(now.0 + DAY - 1)), None);
    let end = Timestamp(now.0 + DAY);
    assert_eq!(a_day.expired(end), Some(end));
    assert_eq!(
        w.state.credentials[&[1; 32]].expired(Timestamp(i64::MAX)),
        None
    );

    // The expiry is a fact of the record that issues the credential, so a later change of
    // the rules does not move it.
    let body = match decide(
        &w.state,
        &w.rules,
        now,
        &Envelope {
            request: None,
            command: issue(5, site(), Lifetime::Ms(DAY)),
        },
    ) {
        Decision::Record(body) => body,
        d => panic!("{d:?}"),
    };
    assert_eq!(
        body.facts,
        [
            Fact::CredentialIssued {
                token_hash: [5; 32],
                role: site()
            },
            Fact::CredentialExpires {
                token_hash: [5; 32],
                at: Timestamp(now.0 + DAY)
            },
        ]
    );

    // The rules' longest is the server's to set.
    w.rules.credential_lifetime_ms = 30 * DAY;
    check(
        &mut w,
        vec![(
            "past the new longest",
            issue(6, site(), Lifetime::Ms(31 * DAY)),
            Refused("CREDENTIAL_LIFETIME_OUT_OF_RANGE"),
        )],
    );
    w.run(issue(6, site(), Lifetime::Longest)).unwrap();
    assert_eq!(expires_of(&w, 6), Some(Timestamp(now.0 + 30 * DAY)));
    assert_eq!(expires_of(&w, 2), Some(Timestamp(now.0 + longest)));
}

fn expires_of(w: &World, n: u8) -> Option<Timestamp> {
    w.state.credentials[&[n; 32]].expires_at
}

#[test]
fn only_the_operators_iban_is_verified() {
    let mut w = world();
    let iban = Iban::parse("FR7630006000011234567890189").unwrap();
    let set = |verified| Command::SetStructureIban {
        structure: StructureId(1),
        iban: iban.clone(),
        verified,
    };
    w.run(set(false)).unwrap();
    assert!(
        !w.state.structures[&StructureId(1)].iban_verified,
        "a structure's own IBAN waits for the operator"
    );
    w.run(set(true)).unwrap();
    assert!(w.state.structures[&StructureId(1)].iban_verified);
}

/// A two-hour session at the workshop site (3) in Bordeaux.
fn session() -> NewWorkshop {
    NewWorkshop {
        site: SiteId(3),
        place: Place::Commune(insee("33063")),
        date_days: 20_455,
        start_minute: 14 * 60,
        duration_minutes: 120,
        themes: vec![svc("demarches-en-ligne")],
        participants: 5,
        mediator: label("CNFS-0042"),
    }
}

fn outcome_reasons(passes: &[Result<Redeemed, Refusal>]) -> Vec<&'static str> {
    passes
        .iter()
        .map(|p| p.as_ref().map_or_else(|r| r.reason(), |_| "OK"))
        .collect()
}

#[test]
fn workshop_gives_one_outcome_per_pass() {
    let mut w = world();
    w.run(redeem(4, 1, Place::Site, "x")).unwrap();
    let serials = [5, 6, 6, 4, 101, 999, 201].map(serial).to_vec();
    let Outcome::Workshop {
        workshop: id,
        passes,
    } = w
        .run(Command::RedeemWorkshop {
            workshop: session(),
            serials,
            held_at: None,
        })
        .unwrap()
    else {
        panic!()
    };
    let reasons = outcome_reasons(&passes);
    assert_eq!(
        reasons,
        [
            "OK",
            "OK",
            "ALREADY_REDEEMED",
            "ALREADY_REDEEMED",
            "NOT_ACTIVATED",
            "UNKNOWN_PASS",
            "OK"
        ]
    );
    assert_eq!(id, WorkshopId(1));
    assert_eq!(
        w.state.passes[&serial(201)].redemption().unwrap().workshop,
        Some(id)
    );
    assert_eq!(w.state.balance(Account::Payable(StructureId(1))), -4000);
}

/// Storage writes what `take_changes` hands it: the values after each record, each key
/// that changed, and nothing twice.
#[test]
fn changes_carry_each_value_as_the_record_left_it() {
    let mut w = world();
    let all = w.state.take_changes();
    assert_eq!(
        all.passes.len(),
        25 + 20,
        "minted, then activated (order 2 is not funded)"
    );
    assert!(w.state.take_changes().is_empty(), "taken once");
    let key = RequestKey {
        scope: "site:1".into(),
        id: "scan-1".into(),
        fingerprint: [1; 32],
    };
    w.run_as(Some(key.clone()), redeem(1, 1, Place::Site, "x"))
        .unwrap();
    let changes = w.state.take_changes();
    assert_eq!(changes.passes, vec![w.state.passes[&serial(1)].clone()]);
    assert_eq!(changes.passes[0].status, PassStatus::Redeemed);
    assert_eq!(
        changes.requests,
        vec![(key.digest(), Some(w.state.requests[&key.digest()].clone()))]
    );
    let mut keys = changes.keys.clone();
    keys.dedup();
    assert_eq!(keys, changes.keys, "each key once");
    assert!(changes.keys.iter().all(|k| matches!(k, Key::Balance(_))));
    w.run(Command::Reverse {
        serial: serial(1),
        site: SiteId(1),
    })
    .unwrap();
    let changes = w.state.take_changes();
    assert_eq!(changes.passes.len(), 1);
    assert_eq!(changes.passes[0].status, PassStatus::Active);
    assert!(changes.keys.contains(&Key::Reversal(0)));
}

#[test]
fn request_ids_replay_answers_and_refuse_reuse() {
    let mut w = world();
    let key = |fp: u8| {
        Some(RequestKey {
            scope: "site:1".into(),
            id: "scan-1".into(),
            fingerprint: [fp; 32],
        })
    };
    let first = w.run_as(key(1), redeem(1, 1, Place::Site, "x"));
    assert!(first.is_ok());
    let seq = w.state.seq;
    assert_eq!(
        w.run_as(key(1), redeem(1, 1, Place::Site, "x")),
        first,
        "a retry gets the first answer"
    );
    assert_eq!(w.state.seq, seq, "and adds no record");
    assert_eq!(
        w.run_as(key(2), redeem(2, 1, Place::Site, "x")),
        Err(Refusal::RequestIdReused)
    );
    // A refusal is remembered too: funding the order later does not change the answer.
    let k2 = Some(RequestKey {
        scope: "site:1".into(),
        id: "scan-2".into(),
        fingerprint: [3; 32],
    });
    let refused = w.run_as(k2.clone(), redeem(101, 1, Place::Site, "x"));
    assert_eq!(refused, Err(Refusal::NotActivated));
    w.fund(OrderId(2));
    assert_eq!(w.run_as(k2, redeem(101, 1, Place::Site, "x")), refused);
}

/// A credential refused for good (revoked or expired) can send nothing more, so the
/// answers remembered for its requests go: at the first sweep of the second day after its
/// end (once a day at most). Everyone else's stay, and their retries get their first answer.
#[test]
fn a_credential_refused_for_good_has_its_requests_forgotten_two_days_on() {
    let mut w = world();
    let issue = |b: u8, role: Role, lifetime: Lifetime| Command::IssueCredential {
        token_hash: [b; 32],
        role,
        lifetime,
    };
    let site = || Role::Site(SiteId(1));
    w.run(issue(0x44, Role::Operator, Lifetime::Never)).unwrap();
    w.run(issue(0x11, site(), Lifetime::Longest)).unwrap();
    w.run(issue(0x22, site(), Lifetime::Ms(DAY))).unwrap();
    w.run(issue(0x33, site(), Lifetime::Longest)).unwrap();
    let key = |scope: String, id: &str| RequestKey {
        scope,
        id: id.into(),
        fingerprint: [9; 32],
    };
    let of = |b: u8, id: &str| key(format!("{b:02x}").repeat(8), id);
    // Each credential (and a scope that names none) redeems a pass and is refused once.
    let scopes = [
        of(0x11, ""),
        of(0x22, ""),
        of(0x33, ""),
        of(0x44, ""),
        key("site:1".into(), ""),
    ];
    for (n, scope) in (1..).zip(&scopes) {
        let ok = RequestKey {
            id: "ok".into(),
            ..scope.clone()
        };
        let no = RequestKey {
            id: "no".into(),
            ..scope.clone()
        };
        w.run_as(Some(ok), redeem(n, 1, Place::Site, "x")).unwrap();
        w.run_as(Some(no), redeem(n, 1, Place::Site, "x"))
            .unwrap_err();
    }
    assert_eq!(w.state.requests.len(), 10);
    w.run(Command::RevokeCredential {
        token_hash: [0x11; 32],
    })
    .unwrap();
    w.state.take_changes();

    let forget = |w: &mut World, at: i64| {
        w.now = Timestamp(at);
        let seq = w.state.seq;
        match w.run(Command::ForgetRequests) {
            Ok(Outcome::RequestsForgotten { credentials }) => {
                assert_eq!(
                    w.state.seq - seq,
                    u64::from(credentials.min(1)),
                    "a record if any"
                );
                credentials
            }
            other => panic!("{other:?}"),
        }
    };
    // Revoked at the start of day 1; expired at the start of day 2.
    assert_eq!(forget(&mut w, T0 + DAY), 0, "revoked today");
    assert_eq!(
        forget(&mut w, T0 + 3 * DAY - 1),
        0,
        "and to the end of the next day"
    );
    assert_eq!(forget(&mut w, T0 + 3 * DAY), 1, "the revoked one, on day 3");
    assert_eq!(
        w.last_facts,
        [Fact::RequestsForgotten {
            token_hashes: vec![[0x11; 32]]
        }]
    );
    assert_eq!(w.state.requests.len(), 8);
    let changes = w.state.take_changes();
    let gone: Vec<_> = changes
        .requests
        .iter()
        .filter(|(_, r)| r.is_none())
        .collect();
    assert_eq!(gone.len(), 2, "storage is told of both");
    assert!(changes.keys.contains(&Key::Credential([0x11; 32])));
    assert_eq!(forget(&mut w, T0 + 3 * DAY + 1), 0, "once only");
    assert_eq!(forget(&mut w, T0 + 4 * DAY), 1, "the expired one, on day 4");
    assert_eq!(w.state.requests.len(), 6);
    assert!(w.state.credentials[&[0x22; 32]].requests_forgotten);
    assert_eq!(forget(&mut w, T0 + 300 * DAY), 0, "the live ones stay");
    for scope in &scopes[2..] {
        let retry = RequestKey {
            id: "ok".into(),
            ..scope.clone()
        };
        let seq = w.state.seq;
        assert!(w
            .run_as(Some(retry), redeem(99, 1, Place::Site, "x"))
            .is_ok());
        assert_eq!(
            w.state.seq, seq,
            "{}: a retry, answered from memory",
            scope.scope
        );
    }
    assert_eq!(
        forget(&mut w, T0 + 1000 * DAY),
        1,
        "the third, once expired"
    );
    let kept: BTreeSet<bool> = w
        .state
        .requests
        .values()
        .map(|r| r.credential.is_some())
        .collect();
    assert_eq!(w.state.requests.len(), 4);
    assert_eq!(
        kept,
        BTreeSet::from([true, false]),
        "the operator's never expires; site:1 names none"
    );
}

#[test]
fn reversal_after_sweep_expires_the_pass() {
    let mut w = world();
    // Offline scans off: the sweep comes at expiry, inside the reversal window.
    w.rules.offline_window_ms = 0;
    w.now = Timestamp(T0 + 396 * DAY - 1000);
    w.run(redeem(1, 1, Place::Site, "x")).unwrap();
    w.now = Timestamp(T0 + 396 * DAY);
    w.run(Command::ExpireSweep).unwrap();
    w.run(Command::Reverse {
        serial: serial(1),
        site: SiteId(1),
    })
    .unwrap();
    assert_eq!(w.state.passes[&serial(1)].status, PassStatus::Expired);
}

fn clearing_world() -> World {
    let mut w = world();
    let payee = PayeeId::parse("11000201100044").unwrap();
    w.run(Command::RegisterStructure {
        name: label("Asso"),
        payee,
        iban: None,
    })
    .unwrap();
    let kind = SiteKind::Fixed {
        commune: insee("33281"),
    };
    w.run(Command::RegisterSite {
        structure: StructureId(2),
        name: label("Mérignac"),
        kind,
    })
    .unwrap();
    // Day 1: passes 1, 2 at structure 1; pass 3 at structure 2; pass 201 (order 3) at structure 1.
    for (n, site) in [(1, 1), (2, 1), (3, 5)] {
        w.run(redeem(n, site, Place::Site, "x")).unwrap();
    }
    w.run(redeem(201, 1, Place::Site, "demarches-en-ligne"))
        .unwrap();
    // Day 2, one hour before the cut-off: still inside its reversal window at the cut-off.
    w.now = Timestamp(T0 + 2 * DAY - 3_600_000);
    w.run(redeem(4, 1, Place::Site, "x")).unwrap();
    w.now = Timestamp(T0 + 3 * DAY);
    w
}

fn cleared(o: Outcome) -> (Vec<SettlementId>, u32, Cents, bool) {
    let Outcome::Cleared {
        settlements,
        lines,
        total,
        remaining,
        ..
    } = o
    else {
        panic!("{o:?}")
    };
    (settlements, lines, total, remaining)
}

#[test]
fn clearing_settles_each_redemption_once_with_proofs() {
    use Expect::*;
    let mut w = clearing_world();
    let cut_off = Timestamp(T0 + 2 * DAY);
    check(
        &mut w,
        vec![(
            "cut-off after now",
            Command::RunClearing {
                cut_off: Timestamp(T0 + 4 * DAY),
            },
            Refused("CUT_OFF_IN_FUTURE"),
        )],
    );
    let (ids, lines, total, remaining) = cleared(w.run(Command::RunClearing { cut_off }).unwrap());
    assert_eq!(
        (ids.clone(), lines, total, remaining),
        (
            vec![SettlementId(1), SettlementId(2)],
            4,
            Cents(4000),
            false
        )
    );
    let s1 = w.state.settlements[&SettlementId(1)].clone();
    assert_eq!(
        (s1.structure, s1.reference.as_str(), s1.total),
        (StructureId(1), "PN-20260103-S1-R1", Cents(3000))
    );
    assert_eq!(
        s1.lines.iter().map(|l| l.serial).collect::<Vec<_>>(),
        [serial(1), serial(2), serial(201)]
    );
    assert_eq!(
        s1.by_commanditaire(),
        [(CommanditaireId(1), Cents(3000))].into()
    );
    let leaves = s1.leaves();
    for (i, leaf) in leaves.iter().enumerate() {
        assert!(merkle::verify(
            *leaf,
            &merkle::path(&leaves, i),
            &s1.merkle_root
        ));
    }
    let mut forged = s1.lines[0].clone();
    forged.amount = Cents(100_000);
    assert!(
        !merkle::verify(forged.leaf(), &merkle::path(&leaves, 0), &s1.merkle_root),
        "a tampered line is refused"
    );
    assert_eq!(
        w.state.balance(Account::Payable(StructureId(1))),
        -1000,
        "pass 4 waits for its window to close"
    );
    assert_eq!(w.state.balance(Account::InPayment(StructureId(1))), -3000);

    let seq = w.state.seq;
    assert_eq!(
        cleared(w.run(Command::RunClearing { cut_off }).unwrap()).0,
        vec![],
        "the same cut-off again settles nothing"
    );
    assert_eq!(w.state.seq, seq, "and records nothing");

    let pay = |id, r: &str, cents| Command::RecordPayment {
        settlement: SettlementId(id),
        bank_reference: label(r),
        executed_on_days: 20_460,
        amount: Cents(cents),
    };
    let reject = |id| Command::RecordRejection {
        settlement: SettlementId(id),
        reason: label("IBAN clôturé"),
    };
    check(
        &mut w,
        vec![
            (
                "a settled pass cannot be reversed",
                Command::Reverse {
                    serial: serial(1),
                    site: SiteId(1),
                },
                Refused("ALREADY_SETTLED"),
            ),
            (
                "the bank executed another amount",
                pay(1, "BANK-1", 2999),
                Refused("PAYMENT_AMOUNT_MISMATCH"),
            ),
            ("pay settlement 1", pay(1, "BANK-1", 3000), Ok),
            (
                "pay it twice",
                pay(1, "BANK-1", 3000),
                Refused("SETTLEMENT_NOT_OPEN"),
            ),
            (
                "unknown settlement",
                pay(9, "x", 1),
                Refused("UNKNOWN_SETTLEMENT"),
            ),
            ("the bank returns settlement 2", reject(2), Ok),
            ("reject it twice", reject(2), Refused("SETTLEMENT_NOT_OPEN")),
        ],
    );
    assert_eq!(
        w.state.balance(Account::Funds(CommanditaireId(1))),
        20_000 - 3000,
        "paid out of the commanditaire's funds (orders 1, 3, 4 funded)"
    );
    assert_eq!(
        w.state.balance(Account::Payable(StructureId(2))),
        -1000,
        "a rejected settlement's lines are payable again"
    );

    // The next month: the rejected line and pass 4 go into new settlements.
    w.now = Timestamp(T0 + 40 * DAY);
    let (ids, lines, total, _) = cleared(
        w.run(Command::RunClearing {
            cut_off: Timestamp(T0 + 31 * DAY),
        })
        .unwrap(),
    );
    assert_eq!(
        (ids, lines, total),
        (vec![SettlementId(3), SettlementId(4)], 2, Cents(2000))
    );
    assert_eq!(
        w.state.passes[&serial(3)].redemption().unwrap().settlement,
        Some(SettlementId(4))
    );
}

#[test]
fn a_large_run_resumes_and_settles_each_redemption_exactly_once() {
    let mut w = clearing_world();
    w.rules.clearing_lines_max = 1;
    let cut_off = Timestamp(T0 + 2 * DAY);
    let mut settled = vec![];
    loop {
        let (ids, _, _, remaining) = cleared(w.run(Command::RunClearing { cut_off }).unwrap());
        for id in &ids {
            settled.extend(w.state.settlements[id].lines.iter().map(|l| l.serial));
        }
        if !remaining {
            break;
        }
    }
    settled.sort();
    let mut expected = vec![serial(1), serial(2), serial(3), serial(201)];
    expected.sort();
    assert_eq!(
        settled, expected,
        "every eligible redemption once, none twice"
    );
    assert_eq!(
        w.state.settlements.len(),
        4,
        "a structure with more lines than the budget gets one settlement per budget"
    );
    assert!(w.state.settlements.values().all(|s| s.lines.len() == 1));
}

#[test]
fn reconciliation_flags_what_does_not_add_up() {
    use passnum::domain::reports::{reconcile, Discrepancy};
    let mut w = clearing_world();
    w.run(Command::RunClearing {
        cut_off: Timestamp(T0 + 2 * DAY),
    })
    .unwrap();
    let all = |_: InseeCode| true;
    let period = (Timestamp(T0), Timestamp(T0 + 3 * DAY));
    let clean = reconcile(&w.state, all, period.0, period.1);
    assert!(clean.discrepancies.is_empty());
    assert_eq!(clean.totals.redeemed.count, 5);
    assert_eq!(clean.totals.settled.count, 4, "pass 4 waits for its window");
    assert_eq!(
        clean.totals.settled.cents,
        w.state.settlements.values().map(|s| s.total.0).sum::<i64>()
    );

    // Tampered: a total that is not its lines, a payment that is not the total, and a
    // redemption in two settlements. Each is named.
    let mut bad = w.state.clone();
    let mut copy = bad.settlements[&SettlementId(1)].clone();
    bad.settlements.get_mut(&SettlementId(1)).unwrap().total.0 += 1;
    let s2 = bad.settlements.get_mut(&SettlementId(2)).unwrap();
    s2.status = SettlementStatus::Paid {
        at: Timestamp(T0),
        bank_reference: label("B"),
        executed_on_days: 0,
        amount: Cents(s2.total.0 - 1),
    };
    copy.id = SettlementId(3);
    let twice = copy.lines[0].serial;
    bad.settlements.insert(copy.id, copy);
    let found = reconcile(&bad, all, period.0, period.1).discrepancies;
    assert!(found.contains(&Discrepancy::SettlementTotal {
        settlement: SettlementId(1),
        total: Cents(bad.settlements[&SettlementId(1)].total.0),
        lines: bad.settlements[&SettlementId(1)].lines_total(),
    }));
    assert!(found
        .iter()
        .any(|d| matches!(d, Discrepancy::PaidAmount { settlement, .. } if *settlement == SettlementId(2))));
    assert!(found.iter().any(
        |d| matches!(d, Discrepancy::SettledTwice { serial, settlements }
        if *serial == twice && settlements.len() == 2)
    ));
    // Outside the hub's communes, nothing is found (and nothing counted).
    let none = reconcile(&bad, |_| false, period.0, period.1);
    assert!(none.discrepancies.is_empty() && none.rows.is_empty());
}

#[test]
fn a_proof_holds_for_every_line_and_a_forged_one_does_not() {
    use passnum::domain::proof::{prove, verify, ProofError};
    let mut w = clearing_world();
    w.run(Command::RunClearing {
        cut_off: Timestamp(T0 + 2 * DAY),
    })
    .unwrap();
    for s in w.state.settlements.values() {
        for l in s.lines.iter() {
            let p = prove(&w.state, l.serial).unwrap();
            assert_eq!(verify(&p, Some(&s.merkle_root)), Ok(()));
            assert_eq!(verify(&p, Some(&[0; 32])), Err(ProofError::UntrustedRoot));
            let mut forged = p.clone();
            forged.line.site = SiteId(99);
            assert_eq!(verify(&forged, None), Err(ProofError::RootMismatch));
        }
    }
    assert_eq!(
        prove(&w.state, serial(4)).unwrap_err().reason(),
        "NOT_SETTLED"
    );
}

/// A redemption scanned offline (`scanned_at`) at site 1, Bordeaux.
fn scanned(n: u64, at: i64) -> Command {
    Command::Redeem {
        serial: serial(n),
        site: SiteId(1),
        place: Place::Site,
        service: svc("x"),
        scanned_at: Some(Timestamp(at)),
    }
}

/// A bus holds a workshop in a village without a network ten days before its passes
/// expire, and syncs it a fortnight later: the session is judged when it was held.
#[test]
fn a_workshop_held_offline_is_judged_when_it_was_held() {
    let mut w = world();
    let (window, skew) = (w.rules.offline_window_ms, w.rules.scan_clock_skew_ms);
    // Order 1 expires at T0 + 396 days.
    let expiry = T0 + 396 * DAY;
    let held = expiry - 10 * DAY;
    let sync = held + 14 * DAY;
    w.now = Timestamp(sync);
    let offline = |serials: &[u64], at: i64| Command::RedeemWorkshop {
        workshop: session(),
        serials: serials.iter().map(|p| serial(*p)).collect(),
        held_at: Some(Timestamp(at)),
    };
    assert_eq!(
        w.run(offline(&[1], sync - window - 1))
            .unwrap_err()
            .reason(),
        "SCAN_TOO_OLD"
    );
    assert_eq!(
        w.run(offline(&[1], sync + skew + 1)).unwrap_err().reason(),
        "SCAN_IN_FUTURE"
    );
    assert!(
        w.state.workshops.is_empty(),
        "a refused sync records no session"
    );
    let Outcome::Workshop { passes, .. } = w.run(offline(&[2], sync)).unwrap() else {
        panic!()
    };
    assert_eq!(
        outcome_reasons(&passes),
        ["EXPIRED"],
        "the same session held at the sync is too late"
    );
    let Outcome::Workshop { passes, .. } = w.run(offline(&[1, 2, 2], held)).unwrap() else {
        panic!()
    };
    assert_eq!(outcome_reasons(&passes), ["OK", "OK", "ALREADY_REDEEMED"]);
    assert_eq!(
        passes[2],
        Err(Refusal::AlreadyRedeemed {
            at: Timestamp(held),
            site: SiteId(3)
        }),
        "a pass scanned twice in the session names the session's time"
    );
    for p in [1, 2] {
        let live = w.state.passes[&serial(p)].redeemed.clone().unwrap();
        assert_eq!(live.redemption.at, Timestamp(held), "dated by the session");
        assert_eq!(
            live.recorded_at,
            Timestamp(sync),
            "reversible from the sync"
        );
    }
    w.now = Timestamp(sync + w.rules.reversal_window_ms - 1);
    w.run(Command::Reverse {
        serial: serial(1),
        site: SiteId(3),
    })
    .unwrap();
}

#[test]
fn an_offline_scan_is_judged_at_its_scan_time_within_the_window() {
    use Expect::*;
    let mut w = world();
    let (window, skew) = (w.rules.offline_window_ms, w.rules.scan_clock_skew_ms);
    let now = T0 + 10 * DAY;
    w.now = Timestamp(now);
    check(
        &mut w,
        vec![
            (
                "older than the window",
                scanned(1, now - window - 1),
                Refused("SCAN_TOO_OLD"),
            ),
            (
                "ahead of the clock past the skew",
                scanned(1, now + skew + 1),
                Refused("SCAN_IN_FUTURE"),
            ),
            (
                "before the order's validity",
                scanned(1, T0 - DAY),
                Refused("NOT_YET_VALID"),
            ),
        ],
    );
    let Outcome::Redeemed(r) = w.run(scanned(1, now - 3 * DAY)).unwrap() else {
        panic!()
    };
    assert_eq!(
        r.at,
        Timestamp(now - 3 * DAY),
        "the redemption is dated by its scan"
    );
    let kept = w.state.passes[&serial(1)].redemption().cloned().unwrap();
    assert_eq!(kept.at, Timestamp(now - 3 * DAY));
    let reverse = Command::Reverse {
        serial: serial(1),
        site: SiteId(1),
    };
    check(
        &mut w,
        vec![(
            "the reversal window counts from the scan's arrival, not from the scan",
            reverse,
            Ok,
        )],
    );
    let Outcome::Redeemed(r) = w.run(scanned(2, now + skew)).unwrap() else {
        panic!()
    };
    assert_eq!(
        r.at,
        Timestamp(now),
        "a clock a little ahead is taken as now, never later"
    );
    // The pass was redeemed online meanwhile: the first to reach the ledger wins, and the
    // refusal names it.
    w.run(redeem(3, 1, Place::Site, "x")).unwrap();
    assert_eq!(
        w.run(scanned(3, now - DAY)),
        Err(Refusal::AlreadyRedeemed {
            at: Timestamp(now),
            site: SiteId(1)
        })
    );

    // Order 1 expires at T0 + 396 days. Four days later, a scan from the day before it
    // expired still redeems; a scan from after, and a scan made now, do not.
    let expiry = T0 + 396 * DAY;
    w.now = Timestamp(expiry + 4 * DAY);
    check(
        &mut w,
        vec![
            ("scanned in time, sent late", scanned(4, expiry - DAY), Ok),
            (
                "scanned after expiry",
                scanned(5, expiry + DAY),
                Refused("EXPIRED"),
            ),
            (
                "redeemed now",
                redeem(5, 1, Place::Site, "x"),
                Refused("EXPIRED"),
            ),
        ],
    );
    // The sweep waits until no scan made in time can still arrive.
    w.now = Timestamp(expiry + window - 1);
    sweeps_nothing(&mut w);
    check(
        &mut w,
        vec![("the last scan in time", scanned(5, expiry - 1), Ok)],
    );
    w.now = Timestamp(expiry + window);
    let Outcome::Expired { passes, .. } = w.run(Command::ExpireSweep).unwrap() else {
        panic!()
    };
    assert!(passes > 0);
    check(
        &mut w,
        vec![(
            "a scan after the sweep",
            scanned(6, expiry - 1),
            Refused("SCAN_TOO_OLD"),
        )],
    );
}

#[test]
fn a_scan_that_arrives_after_its_month_was_cleared_is_settled_by_the_next_run() {
    let mut w = clearing_world();
    let cut_off = w.now.0;
    w.now = Timestamp(cut_off + 2 * DAY);
    let (ids, ..) = cleared(
        w.run(Command::RunClearing {
            cut_off: Timestamp(cut_off),
        })
        .unwrap(),
    );
    assert_eq!(
        ids.len(),
        2,
        "the month is cleared: one settlement per structure"
    );
    // A bus's scan from two days before the cut-off arrives after the run.
    let late = serial(7);
    w.run(scanned(7, cut_off - 2 * DAY)).unwrap();
    assert!(w.state.passes[&late]
        .redemption()
        .unwrap()
        .settlement
        .is_none());
    let (ids, ..) = cleared(
        w.run(Command::RunClearing {
            cut_off: Timestamp(cut_off),
        })
        .unwrap(),
    );
    assert!(
        ids.is_empty(),
        "the same cut-off again finds nothing: the scan reached the ledger after it"
    );
    let next_month = cut_off + 30 * DAY;
    w.now = Timestamp(next_month + DAY);
    let (ids, lines, total, remaining) = cleared(
        w.run(Command::RunClearing {
            cut_off: Timestamp(next_month),
        })
        .unwrap(),
    );
    assert_eq!(
        (ids.len(), lines, total, remaining),
        (1, 1, Cents(1000), false)
    );
    let s = &w.state.settlements[&ids[0]];
    assert_eq!(
        (s.lines[0].serial, s.lines[0].redeemed_at),
        (late, Timestamp(cut_off - 2 * DAY)),
        "settled by the next month's run, dated by its scan"
    );
    let settled = w.state.passes[&late].redemption().unwrap().settlement;
    assert_eq!(settled, Some(ids[0]), "settled once");
}

/// A bus syncs a fortnight of scans at once: each may still be reversed for the whole window
/// after it reached the ledger, and no clearing run takes it before that window closes.
#[test]
fn a_late_scan_can_be_reversed_for_a_window_after_it_arrives_and_is_cleared_after_it() {
    use Expect::*;
    let mut w = world();
    let window = w.rules.reversal_window_ms;
    let arrival = T0 + 20 * DAY;
    w.now = Timestamp(arrival);
    for (n, days_ago) in [(1, 14), (2, 14), (3, 10)] {
        w.run(scanned(n, arrival - days_ago * DAY)).unwrap();
    }
    let reverse = |n| Command::Reverse {
        serial: serial(n),
        site: SiteId(1),
    };
    let clear = |cut_off| Command::RunClearing {
        cut_off: Timestamp(cut_off),
    };
    w.now = Timestamp(arrival + window - 1);
    let (ids, ..) = cleared(w.run(clear(arrival + window - 1)).unwrap());
    assert!(
        ids.is_empty(),
        "no run takes a scan whose reversal window is open, however old the scan"
    );
    check(&mut w, vec![("the last ms of the window", reverse(1), Ok)]);
    w.now = Timestamp(arrival + window);
    check(
        &mut w,
        vec![(
            "the window closed",
            reverse(2),
            Refused("REVERSAL_WINDOW_CLOSED"),
        )],
    );
    assert_eq!(
        w.run(reverse(3)),
        Err(Refusal::ReversalWindowClosed {
            until: Timestamp(arrival + window)
        }),
        "the refusal says when the window closed"
    );
    let (ids, lines, total, _) = cleared(w.run(clear(arrival + window)).unwrap());
    assert_eq!((ids.len(), lines, total), (1, 2, Cents(2000)));
    let settled: Vec<(Serial, Timestamp)> = w.state.settlements[&ids[0]]
        .lines
        .iter()
        .map(|l| (l.serial, l.redeemed_at))
        .collect();
    assert_eq!(
        settled,
        vec![
            (serial(2), Timestamp(arrival - 14 * DAY)),
            (serial(3), Timestamp(arrival - 10 * DAY)),
        ],
        "the reversed scan is not paid; the others are, dated by their scans"
    );
    // Clearing relies on no redemption being dated after its record: the state checks it.
    let mut broken = w.state.clone();
    let live = broken.passes.get_mut(&serial(3)).unwrap();
    live.redeemed.as_mut().unwrap().recorded_at = Timestamp(arrival - 11 * DAY);
    let e = broken.check_invariants().unwrap_err();
    assert!(e.contains("redeemed after its record was written"), "{e}");
}

/// The operator's fee is a rule, recorded with each order when it is created: the joint
/// statement bills it on the order's face value, and a later rule moves no order's fee.
#[test]
fn an_orders_fee_is_the_rule_in_force_at_its_creation() {
    let mut w = world();
    let before = w.state.orders.keys().copied().collect::<Vec<_>>();
    w.rules.order_fee = FeeRate(400);
    let four = w.order(2_000, dept("33"), &[]);
    assert!(
        w.last_facts.contains(&Fact::OrderFee {
            order: four,
            rate: FeeRate(400)
        }),
        "the fee is in the record that creates the order: {:?}",
        w.last_facts
    );
    w.rules.order_fee = FeeRate(250);
    let two_and_a_half = w.order(3, dept("33"), &[]);
    w.rules.order_fee = FeeRate(0);
    let none = w.order(10, dept("33"), &[]);
    let fee = |w: &World, o: OrderId| {
        let st = passnum::domain::reports::order_statement(&w.state, &w.state.orders[&o]);
        (st.fee_rate, st.fees)
    };
    assert_eq!(
        fee(&w, four),
        (Some(FeeRate(400)), Cents(80_000)),
        "4 % of 2 000 passes of 10 EUR: 800 EUR, before VAT"
    );
    assert_eq!(
        fee(&w, two_and_a_half),
        (Some(FeeRate(250)), Cents(75)),
        "a later rule moves no earlier order"
    );
    assert_eq!(fee(&w, none), (Some(FeeRate(0)), Cents(0)));
    for o in before {
        assert_eq!(
            fee(&w, o),
            (Some(FeeRate(0)), Cents(0)),
            "by default no fee: no rate is a fact of the scheme"
        );
    }
    let mut old = w.state.clone();
    old.order_fees.remove(&four);
    let st = passnum::domain::reports::order_statement(&old, &old.orders[&four]);
    assert_eq!(
        (st.fee_rate, st.fees),
        (None, Cents(0)),
        "an order created before fees were recorded bills none"
    );
}

/// A way to break a state, for `check_invariants` to find.
type Breakage<'a> = Box<dyn Fn(&mut State) + 'a>;

/// `check_invariants` (run at start-up and by `verify`) finds each way the state can be
/// broken, and names it: money created, an account that disagrees with the passes, a
/// redemption clearing would miss, a pass whose status and redemption disagree.
#[test]
fn the_state_check_names_each_broken_invariant() {
    let mut w = world();
    w.run(redeem(1, 1, Place::Site, "aide")).unwrap();
    w.state.check_invariants().unwrap();
    let (gironde, library) = (CommanditaireId(1), StructureId(1));
    let broken = |change: &dyn Fn(&mut State)| {
        let mut state = w.state.clone();
        change(&mut state);
        state.check_invariants().unwrap_err()
    };
    let moved = |from: Account, to: Account| {
        move |s: &mut State| {
            *s.balances.entry(from).or_default() -= 100;
            *s.balances.entry(to).or_default() += 100;
        }
    };
    let cases: Vec<(Breakage, &str)> = vec![
        (
            Box::new(|s: &mut State| *s.balances.entry(Account::Funds(gironde)).or_default() += 1),
            "money is not conserved: balances sum to 1 cents",
        ),
        (
            Box::new(moved(
                Account::Outstanding(gironde),
                Account::Funds(gironde),
            )),
            "funds of ",
        ),
        (
            Box::new(moved(
                Account::CreditDue(gironde),
                Account::Outstanding(gironde),
            )),
            "outstanding of ",
        ),
        (
            Box::new(moved(
                Account::InPayment(library),
                Account::Payable(library),
            )),
            "payable of ",
        ),
        (
            Box::new(|s: &mut State| s.unsettled.clear()),
            "is unsettled but not tracked",
        ),
        (
            Box::new(|s: &mut State| {
                s.passes.get_mut(&serial(2)).unwrap().status = PassStatus::Minted
            }),
            "of a funded order is not activated",
        ),
        (
            Box::new(|s: &mut State| {
                s.passes.get_mut(&serial(3)).unwrap().status = PassStatus::Redeemed
            }),
            "has a redemption that does not match its status",
        ),
    ];
    for (change, named) in cases {
        let e = broken(&*change);
        assert!(e.contains(named), "{named:?} not in {e:?}");
    }
}

#[test]
fn credit_due_goes_back_to_its_commanditaire_never_more_than_is_due() {
    let mut w = world();
    let gironde = CommanditaireId(1);
    let give_back = |cents: i64| Command::ReturnCredit {
        commanditaire: gironde,
        amount: Cents(cents),
        reference: label("VIR-2027-02 avoir"),
    };
    let balance = |w: &World, a: Account| w.state.balance(a);
    assert_eq!(
        w.run(give_back(1)),
        Err(Refusal::CreditExceeded {
            due: Cents(0),
            asked: Cents(1)
        }),
        "nothing is due before a pass is cancelled"
    );
    // A lost carnet of order 1 (funded, 10 € passes): 5 × 10 € due back.
    w.run(Command::Cancel {
        target: CancelTarget::Carnet {
            order: OrderId(1),
            carnet: 0,
        },
    })
    .unwrap();
    assert_eq!(balance(&w, Account::CreditDue(gironde)), -5000);
    let funds = balance(&w, Account::Funds(gironde));

    assert_eq!(
        w.run(give_back(3000)),
        Ok(Outcome::CreditReturned {
            commanditaire: gironde,
            remaining: Cents(2000)
        })
    );
    assert_eq!(
        w.last_facts,
        [Fact::CreditReturned {
            commanditaire: gironde,
            amount: Cents(3000),
            reference: label("VIR-2027-02 avoir"),
        }]
    );
    assert_eq!(balance(&w, Account::CreditDue(gironde)), -2000);
    assert_eq!(balance(&w, Account::Funds(gironde)), funds - 3000);
    assert_eq!(w.state.credit_returned[&gironde], Cents(3000));
    let b = &reports::balances(&w.state)[&gironde];
    assert_eq!(
        (b.credited.cents, b.credit_returned, b.credit_due),
        (5000, Cents(3000), Cents(2000)),
        "what was credited, given back, still due"
    );
    assert_eq!(b.funds_held, Cents(funds - 3000));

    for (cents, due) in [(2001, 2000), (0, 2000), (-5, 2000)] {
        assert_eq!(
            w.run(give_back(cents)),
            Err(Refusal::CreditExceeded {
                due: Cents(due),
                asked: Cents(cents)
            })
        );
    }
    assert_eq!(
        w.run(Command::ReturnCredit {
            commanditaire: CommanditaireId(9),
            amount: Cents(1),
            reference: label("x"),
        }),
        Err(Refusal::UnknownCommanditaire(CommanditaireId(9)))
    );
    w.run(give_back(2000)).unwrap();
    assert_eq!(balance(&w, Account::CreditDue(gironde)), 0);

    // The state check holds the returns to account: a return it did not see breaks it.
    let mut forgot = w.state.clone();
    forgot.credit_returned.clear();
    let e = forgot.check_invariants().unwrap_err();
    assert!(e.contains("funds of "), "{e}");
}
