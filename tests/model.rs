//! Random command sequences against a small reference model, through the real ledger
//! (log file and sled index in a temp dir). After every step: the answer matches the
//! model, every invariant holds; restarts (with and without the index) lose nothing.
//!
//! Two drivers share the checks: proptest (shrinks a failure to a minimal sequence), and a
//! deterministic simulation from seeds that also injects storage faults (torn write, disk
//! full, failed fsync): the ledger must stop, and after a restart hold exactly the state
//! before the failed batch (or, when the whole batch reached the file, the state after it).
//! A failing seed is printed; `SIM_SEED=n cargo test --test model simulation` replays it,
//! `SIM_SEEDS=n` runs seeds 0..n (CI runs 48).

use passnum::domain::*;
use passnum::engine::Ledger;
use passnum::storage::{Fault, Faults};

#[path = "support/model.rs"]
mod model;
use model::*;
use proptest::prelude::*;
use std::collections::HashMap;

fn op() -> impl Strategy<Value = Op> {
    let pass = 0..ORDERS * PASSES_PER_ORDER;
    prop_oneof![
        6 => (pass.clone(), 1..=2u64).prop_map(|(pass, site)| Op::Redeem { pass, site }),
        2 => (pass.clone(), 1..=2u64, any::<u64>()).prop_map(|(pass, site, seed)| {
            Op::RedeemOffline { pass, site, ago_ms: Lcg(seed).scan_age() }
        }),
        2 => (1..=2u64, any::<u64>()).prop_map(|(site, seed)| Lcg(seed).workshop(site)),
        2 => (pass.clone(), 1..=2u64).prop_map(|(pass, site)| Op::Reverse { pass, site }),
        1 => (1..=4u64, any::<bool>()).prop_map(|(settlement, whole)| Op::Pay { settlement, whole }),
        1 => (1..=4u64).prop_map(|settlement| Op::Reject { settlement }),
        1 => pass.prop_map(|pass| Op::Cancel { pass }),
        2 => (0..ORDERS).prop_map(|order| Op::Fund { order }),
        2 => (1..72i64).prop_map(|hours| Op::Advance { hours }),
        1 => Just(Op::Sweep),
        1 => Just(Op::Clear),
        1 => any::<bool>().prop_map(|drop_index| Op::Restart { drop_index }),
        1 => (0..DEVICES).prop_map(|device| Op::Retire { device }),
        1 => Just(Op::Forget),
        1 => (0..1_000u64).prop_map(|nth| Op::Retry { nth }),
        1 => prop::sample::select(vec![500i64, 1000, 2000, 0, 1_000_000])
            .prop_map(|cents| Op::ReturnCredit { cents }),
    ]
}

fn run(ledger: &mut Ledger, now: i64, command: Command) -> Result<Outcome, Refusal> {
    let env = Envelope {
        request: None,
        command,
    };
    send(ledger, now, env)
}

fn send(ledger: &mut Ledger, now: i64, env: Envelope) -> Result<Outcome, Refusal> {
    ledger
        .execute_batch(Timestamp(now), &[&env])
        .expect("disk takes the batch")
        .remove(0)
}

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

/// Compacts the index once its deltas pass 2 000 bytes: restarts then load a base and
/// deltas in every mix, and compactions run all along. (Process-wide, and harmless to the
/// other tests: any threshold must give the same state.)
fn small_index_compactions() {
    std::env::set_var("PASSNUM_INDEX_COMPACT_BYTES", "300");
}

fn reopen(ledger: Ledger, dir: &std::path::Path, drop_index: bool) -> Ledger {
    drop(ledger);
    if drop_index {
        std::fs::remove_dir_all(dir.join("index")).unwrap();
    }
    Ledger::open(dir, Rules::default()).unwrap()
}

/// Runs `ops` against a fresh ledger and the model; the first disagreement is the error.
fn check_run(ops: &[Op]) -> Result<(), String> {
    small_index_compactions();
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::open(dir.path(), Rules::default()).unwrap();
    let mut model = Model::new();
    setup(&mut |now, c| run(&mut ledger, now, c), model.now);
    for (i, op) in ops.iter().enumerate() {
        match op {
            Op::Advance { hours } => model.now += hours * HOUR,
            Op::Restart { drop_index } => {
                let (state, head) = (ledger.state().clone(), ledger.head());
                ledger = reopen(ledger, dir.path(), *drop_index);
                ensure!(
                    *ledger.state() == state,
                    "step {i}: state changed across a restart"
                );
                ensure!(
                    ledger.head() == head,
                    "step {i}: head changed across a restart"
                );
            }
            Op::Faulted { fault, .. } => {
                ledger = faulted(ledger, dir.path(), &mut model, op, *fault)
                    .map_err(|e| format!("step {i} {op:?}: {e}"))?;
                continue;
            }
            _ => {}
        }
        let env = envelope(op, &model);
        let expected = model.step(op);
        if let Some(env) = env {
            let answer = send(&mut ledger, model.now, env);
            ensure!(
                reason(&answer) == expected,
                "step {i} {op:?}: got {}, model says {expected}",
                reason(&answer)
            );
        }
        check_state(&ledger, &model).map_err(|e| format!("step {i} {op:?}: {e}"))?;
    }
    Ok(())
}

fn check_state(ledger: &Ledger, model: &Model) -> Result<(), String> {
    let state = ledger.state();
    state.check_invariants()?;
    ensure!(
        state.requests.len() == model.remembered.len(),
        "{} requests remembered, the model says {}",
        state.requests.len(),
        model.remembered.len()
    );
    let (payable, in_payment) = model.payable_and_in_payment();
    ensure!(
        state.balance(Account::Payable(StructureId(1))) == -payable,
        "payable differs from the model"
    );
    ensure!(
        state.balance(Account::InPayment(StructureId(1))) == -in_payment,
        "in payment differs from the model"
    );
    let paid: i64 = model
        .settlements
        .iter()
        .filter(|s| s.status == SStatus::Paid)
        .map(|s| 1000 * s.passes.len() as i64)
        .sum();
    let funded = model.funded.iter().filter(|f| **f).count() as i64;
    ensure!(
        state.balance(Account::Funds(CommanditaireId(1)))
            == 1000 * PASSES_PER_ORDER as i64 * funded - paid - model.returned,
        "the commanditaire's funds differ from the model"
    );
    ensure!(
        -state.balance(Account::CreditDue(CommanditaireId(1))) == model.credit_due(),
        "the credit due differs from the model"
    );
    Ok(())
}

/// Whether the bytes of record `seq` past the first `keep` (those a torn write left
/// unwritten) are zeros: the log's reserve already held them, so the record on disk is the
/// one meant, byte for byte, and recovery rightly keeps it.
fn unwritten_bytes_were_zeros(dir: &std::path::Path, seq: u64, keep: usize) -> bool {
    let mut frame = vec![];
    passnum::storage::log::scan(&passnum::storage::log_path(dir), |r| {
        if r.seq == seq {
            frame = passnum::storage::frame::encode(r.seq, r.at, &r.prev_hash, &r.body).0;
        }
        Ok(())
    })
    .expect("the reopened log scans");
    let keep = keep.min(frame.len().saturating_sub(1));
    !frame.is_empty() && frame[keep..].iter().all(|b| *b == 0)
}

/// Faults that actually hit a write (an operation that records nothing meets none).
static FIRED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The operation's batch meets `fault`. The ledger must refuse it and everything after it;
/// reopened, it holds the state before the batch, or after it when the whole batch reached
/// the file (a failed fsync whose data the kernel kept).
fn faulted(
    mut ledger: Ledger,
    dir: &std::path::Path,
    model: &mut Model,
    op: &Op,
    fault: Fault,
) -> Result<Ledger, String> {
    let (before, head) = (ledger.state().clone(), ledger.head());
    let mut after = model.clone();
    let expected = after.step(op);
    let Some(env) = envelope(op, model) else {
        *model = after;
        return Ok(ledger);
    };
    let faults = Faults::default();
    faults.arm(fault);
    ledger.inject_faults(faults.clone());
    let result = ledger.execute_batch(Timestamp(model.now), &[&env]);
    faults.clear();
    match result {
        // Nothing to write (an answer without a record): no fault could fire.
        Ok(mut answers) => {
            let answer = answers.remove(0);
            ensure!(
                reason(&answer) == expected,
                "got {}, model says {expected}",
                reason(&answer)
            );
            *model = after;
            return Ok(ledger);
        }
        Err(_) => {
            FIRED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let again = ledger.execute_batch(Timestamp(model.now), &[&env]);
            ensure!(
                again.is_err(),
                "a ledger that failed a write accepted another batch"
            );
        }
    }
    let ledger = reopen(ledger, dir, false);
    let kept = ledger.head().seq > head.seq;
    match fault {
        Fault::SyncFails => ensure!(kept, "a batch written whole was lost"),
        Fault::TornWrite { keep } | Fault::NoSpace { keep } => ensure!(
            !kept || unwritten_bytes_were_zeros(dir, head.seq + 1, keep),
            "a torn batch survived recovery"
        ),
    }
    if kept {
        ensure!(
            ledger.head().seq == head.seq + 1,
            "more than the failed batch appeared"
        );
        *model = after;
    } else {
        ensure!(
            *ledger.state() == before,
            "the state is not the one before the failed batch"
        );
        ensure!(ledger.head() == head, "the head moved");
    }
    check_state(&ledger, model)?;
    Ok(ledger)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn ledger_matches_model(ops in proptest::collection::vec(op(), 1..60)) {
        check_run(&ops).map_err(TestCaseError::fail)?;
    }
}

#[test]
fn simulation() {
    let seeds: Vec<u64> = match std::env::var("SIM_SEED") {
        Ok(s) => vec![s.parse().expect("SIM_SEED is a number")],
        Err(_) => {
            let n = std::env::var("SIM_SEEDS")
                .map_or(48, |s| s.parse().expect("SIM_SEEDS is a number"));
            (0..n).collect()
        }
    };
    let mut faults = 0;
    for seed in seeds {
        let mut g = Lcg(seed);
        let ops: Vec<Op> = (0..80).map(|_| g.op()).collect();
        faults += ops
            .iter()
            .filter(|o| matches!(o, Op::Faulted { .. }))
            .count();
        if let Err(e) = check_run(&ops) {
            panic!("seed {seed}: {e}\nreplay: SIM_SEED={seed} cargo test --test model simulation");
        }
    }
    let fired = FIRED.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("simulation: {faults} faults armed, {fired} hit a write");
    assert!(fired > 0, "no injected fault hit a write");
}

#[test]
fn model_serials_are_distinct() {
    let all: HashMap<Serial, u64> = (0..ORDERS * PASSES_PER_ORDER)
        .map(|p| (serial(p), p))
        .collect();
    assert_eq!(all.len() as u64, ORDERS * PASSES_PER_ORDER);
}
