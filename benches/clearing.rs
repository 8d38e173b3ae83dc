//! Clearing benches, each with a baseline from the same run (the machine is shared):
//! - clearing 1 000 000 redemptions of 100 structures, durable, against the time the same
//!   ledger took to record those redemptions (goal: the clearing within 3 s);
//! - the pain.001 file of 10 000 settlements, against the machine CSV statement of the same
//!   settlements (the same walk over the state, a simpler format), and validated by xmllint
//!   when target/test-deps holds the XSD.
//!
//! Run with `cargo bench --bench clearing`.

use passnum::domain::*;
use passnum::engine::Ledger;
use passnum::export::{pain001, statement, Export};
use std::time::{Duration, Instant};

/// The server binary's allocator (src/main.rs), so the bench measures what runs: a run
/// allocates a line, a leaf and a pass's new value for each redemption it settles.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "support/fixture.rs"]
mod fixture;
use fixture::{gironde_order, l, T0};

const DAY: i64 = Timestamp::MS_PER_DAY;

fn run(ledger: &mut Ledger, now: i64, commands: Vec<Command>) -> Vec<Outcome> {
    let envs: Vec<Envelope> = commands
        .into_iter()
        .map(|command| Envelope {
            request: None,
            command,
        })
        .collect();
    let refs: Vec<&Envelope> = envs.iter().collect();
    let mut out = vec![];
    for chunk in refs.chunks(1000) {
        for r in ledger.execute_batch(Timestamp(now), chunk).unwrap() {
            out.push(r.unwrap_or_else(|e| panic!("refused: {e}")));
        }
    }
    out
}

/// `structures` structures with one site and a verified IBAN each, and `passes` activated
/// passes in orders of at most 100 000.
fn world(ledger: &mut Ledger, structures: u64, passes: u64) -> Vec<Serial> {
    let mut setup = vec![Command::RegisterCommanditaire { name: l("Gironde") }];
    for s in 1..=structures {
        setup.push(Command::RegisterStructure {
            name: l(&format!("Structure {s}")),
            payee: PayeeId::parse(&format!("W{:09}", 330_000_000 + s)).unwrap(),
            iban: None,
        });
        setup.push(Command::SetStructureIban {
            structure: StructureId(s),
            iban: Iban::parse("FR7630006000011234567890189").unwrap(),
            verified: true,
        });
        setup.push(Command::RegisterSite {
            structure: StructureId(s),
            name: l("site"),
            kind: SiteKind::Fixed {
                commune: InseeCode::parse("33063").unwrap(),
            },
        });
    }
    run(ledger, T0, setup);
    let mut serials = vec![];
    let mut order = 1;
    while (serials.len() as u64) < passes {
        let n = (passes - serials.len() as u64).min(100_000) as u32;
        let minted: Vec<Serial> = (0..u64::from(n))
            .map(|i| Serial::from_random(serials.len() as u64 + i + 1))
            .collect();
        run(
            ledger,
            T0,
            vec![
                gironde_order(n, 365),
                Command::Mint {
                    order: OrderId(order),
                    serials: minted.clone(),
                },
                Command::RecordFunding {
                    order: OrderId(order),
                    amount: Cents(1000 * i64::from(n)),
                    reference: l("r"),
                },
            ],
        );
        serials.extend(minted);
        order += 1;
    }
    serials
}

/// Redeems every pass, spread over the structures' sites; returns the time it took.
fn redeem_all(ledger: &mut Ledger, serials: &[Serial], structures: u64) -> Duration {
    let commands: Vec<Command> = serials
        .iter()
        .enumerate()
        .map(|(i, s)| Command::Redeem {
            serial: *s,
            site: SiteId(i as u64 % structures + 1),
            place: Place::Site,
            service: ServiceCode::parse("aide").unwrap(),
            scanned_at: None,
        })
        .collect();
    let start = Instant::now();
    run(ledger, T0 + DAY, commands);
    start.elapsed()
}

/// Runs the clearing to its end; returns the time, the records and the settlements made.
fn clear(ledger: &mut Ledger, cut_off: i64) -> (Duration, u32, usize) {
    let start = Instant::now();
    let (mut records, mut settlements) = (0, 0);
    loop {
        let o = run(
            ledger,
            cut_off + DAY,
            vec![Command::RunClearing {
                cut_off: Timestamp(cut_off),
            }],
        );
        let Outcome::Cleared {
            settlements: s,
            remaining,
            ..
        } = &o[0]
        else {
            panic!("{:?}", o[0])
        };
        records += u32::from(!s.is_empty());
        settlements += s.len();
        if !remaining {
            return (start.elapsed(), records, settlements);
        }
    }
}

fn write_all(export: &mut dyn Export, state: &State) -> (Duration, Vec<u8>) {
    let start = Instant::now();
    let mut out = Vec::new();
    while export.next(state, &mut out) {}
    (start.elapsed(), out)
}

fn clearing_a_million() {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::open(dir.path(), Rules::default()).unwrap();
    let structures = 100;
    let serials = world(&mut ledger, structures, 1_000_000);
    let recorded = redeem_all(&mut ledger, &serials, structures);
    let (took, records, settlements) = clear(&mut ledger, T0 + 3 * DAY);
    let log = std::fs::metadata(passnum::storage::log_path(dir.path()))
        .unwrap()
        .len();
    println!(
        "clearing {} redemptions, {structures} structures: {:.2} s in {records} records, {settlements} settlements ({:.0} redemptions/s; goal ≤ 3 s)",
        serials.len(),
        took.as_secs_f64(),
        serials.len() as f64 / took.as_secs_f64()
    );
    println!(
        "  baseline: recording the same redemptions took {:.2} s ({:.0}/s) → clearing costs {:.2}× the redeeming; log now {} MiB",
        recorded.as_secs_f64(),
        serials.len() as f64 / recorded.as_secs_f64(),
        took.as_secs_f64() / recorded.as_secs_f64(),
        log >> 20
    );
    let again = Instant::now();
    let (_, records, _) = clear(&mut ledger, T0 + 3 * DAY);
    assert_eq!(records, 0);
    println!(
        "  the same cut-off again: {:.1} ms, nothing recorded",
        again.elapsed().as_secs_f64() * 1e3
    );
    checkpoint_of_the_run(&ledger.state());
    ledger.state().check_invariants().unwrap();
}

/// A checkpoint after a clearing run names every new settlement (and order's serials): the
/// indexer copies their values under the state's lock, which stalls the writer, and encodes
/// them after. The baseline is the encoding, which was done under the lock before.
fn checkpoint_of_the_run(state: &State) {
    let mut keys: Vec<Key> = state
        .settlements
        .keys()
        .map(|id| Key::Settlement(*id))
        .collect();
    keys.extend(state.order_serials.keys().map(|id| Key::OrderSerials(*id)));
    let held = Instant::now();
    let read = passnum::storage::IndexBatch::read(state, &keys, state.seq, state.head_hash);
    let held = held.elapsed();
    let encoded = Instant::now();
    let batch = read.with_values(&Changes::default());
    let encoded = encoded.elapsed();
    println!(
        "  checkpoint of {} settlements and {} orders' serials: the state's lock held {:.3} ms; encoding, off the lock, {:.1} ms ({:.4}×)",
        state.settlements.len(),
        state.order_serials.len(),
        held.as_secs_f64() * 1e3,
        encoded.as_secs_f64() * 1e3,
        held.as_secs_f64() / encoded.as_secs_f64()
    );
    assert!(batch.seq == state.seq);
}

fn payment_file_of_10k() {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::open(dir.path(), Rules::default()).unwrap();
    let structures = 10_000;
    let serials = world(&mut ledger, structures, 100_000);
    redeem_all(&mut ledger, &serials, structures);
    let cut = Timestamp(T0 + 3 * DAY);
    let (_, _, settlements) = clear(&mut ledger, cut.0);
    let guard = ledger.state();
    let state: &State = &guard;
    let debtor = pain001::Debtor {
        name: "Opérateur Pass numérique".into(),
        iban: Iban::parse("FR7630004000031234567890143").unwrap(),
        bic: Some("BNPAFRPP".into()),
    };
    let mut best = (Duration::MAX, Duration::MAX);
    let mut xml = vec![];
    for _ in 0..5 {
        let mut file =
            pain001::PaymentFile::plan(state, cut, &debtor, Timestamp(T0), 20_500).unwrap();
        let (t, bytes) = write_all(&mut file, state);
        let mut csv = statement::RunStatement::new(state, cut, None, statement::Dialect::Machine);
        let (b, _) = write_all(&mut csv, state);
        best = (best.0.min(t), best.1.min(b));
        xml = bytes;
    }
    println!(
        "pain.001 of {settlements} settlements: {:.1} ms, {} KiB ({:.0} settlements/s)",
        best.0.as_secs_f64() * 1e3,
        xml.len() >> 10,
        settlements as f64 / best.0.as_secs_f64()
    );
    println!(
        "  baseline: the machine CSV of the same settlements {:.1} ms → pain.001 costs {:.2}×",
        best.1.as_secs_f64() * 1e3,
        best.0.as_secs_f64() / best.1.as_secs_f64()
    );
    let xsd = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/test-deps/pain.001.001.03.xsd");
    if xsd.exists() {
        let file = dir.path().join("pain.xml");
        std::fs::write(&file, &xml).unwrap();
        let start = Instant::now();
        let ok = std::process::Command::new("xmllint")
            .args(["--noout", "--schema"])
            .arg(&xsd)
            .arg(&file)
            .output()
            .is_ok_and(|o| o.status.success());
        println!(
            "  xmllint --schema: {} ({:.0} ms)",
            if ok { "valid" } else { "INVALID" },
            start.elapsed().as_secs_f64() * 1e3
        );
    }
}

fn main() {
    // `cargo test --benches` passes --bench-less arguments: run only under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    clearing_a_million();
    payment_file_of_10k();
}
