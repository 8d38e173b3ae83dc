//! The writer's pipeline under fire: the writer appends batches while the sync stage
//! fsyncs earlier ones, and the disk fails in the middle of it (injected: a failed fsync,
//! a torn write, a full disk). Whatever was
//! acknowledged, before or after the failure, is in the ledger reopened from disk; the
//! requests that failed, retried with their ids, are applied once; and the writer reopened
//! the ledger by itself and kept answering.

use passnum::domain::{Command, Envelope, Label, Outcome, RequestKey};
use passnum::engine::{self, EngineConfig, EngineError, Ledger};
use passnum::storage::{Fault, Faults};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

const CALLERS: usize = 64;
const REQUESTS_PER_CALLER: usize = 40;
/// The disk fails once this many requests were acknowledged.
const FAIL_AFTER_ACKS: usize = 600;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_loses_nothing_acknowledged_and_applies_nothing_twice() {
    survives(Fault::SyncFails, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_write_loses_nothing_acknowledged_and_applies_nothing_twice() {
    survives(Fault::TornWrite { keep: 100 }, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_loses_nothing_acknowledged_and_applies_nothing_twice() {
    survives(Fault::NoSpace { keep: 100 }, true).await;
}

fn envelope(n: usize) -> Envelope {
    let id = format!("r{n}");
    Envelope {
        request: Some(RequestKey {
            scope: "pipeline".into(),
            fingerprint: *blake3::hash(id.as_bytes()).as_bytes(),
            id,
        }),
        command: Command::RegisterCommanditaire {
            name: Label::parse(&format!("Commune {n}")).unwrap(),
        },
    }
}

#[derive(Default)]
struct Tally {
    /// (request number, answer) of every acknowledged request.
    acked: Vec<(usize, Outcome)>,
    /// Request numbers answered "storage failed".
    failed: Vec<usize>,
    /// Acknowledgements received after this caller saw a failure.
    acked_after_failure: usize,
}

/// `CALLERS` submit at once; `fault` hits the disk after `FAIL_AFTER_ACKS`.
async fn survives(fault: Fault, disk_full: bool) {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::open(dir.path(), Default::default()).unwrap();
    let faults = Faults::default();
    ledger.inject_faults(faults.clone());
    let (engine, writer) = engine::start(ledger, &EngineConfig::default(), engine::system_clock());

    let acks = Arc::new(AtomicUsize::new(0));
    let mut callers = vec![];
    for c in 0..CALLERS {
        let (engine, acks, faults) = (engine.clone(), acks.clone(), faults.clone());
        callers.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            for k in 0..REQUESTS_PER_CALLER {
                let n = c * REQUESTS_PER_CALLER + k;
                match engine.submit(envelope(n)).await {
                    Ok(answer) => {
                        tally.acked.push((n, answer.expect("a new commanditaire")));
                        tally.acked_after_failure += usize::from(!tally.failed.is_empty());
                        if acks.fetch_add(1, Ordering::Relaxed) + 1 == FAIL_AFTER_ACKS {
                            faults.arm(fault);
                        }
                    }
                    Err(EngineError::StorageFailed { disk_full: d }) if d == disk_full => {
                        tally.failed.push(n)
                    }
                    Err(e) => panic!("request {n}: unexpected {e}"),
                }
            }
            tally
        }));
    }
    let mut tally = Tally::default();
    for caller in callers {
        let t = caller.await.unwrap();
        tally.acked.extend(t.acked);
        tally.failed.extend(t.failed);
        tally.acked_after_failure += t.acked_after_failure;
    }
    assert!(!tally.failed.is_empty(), "the injected failure hit a batch");
    assert!(
        tally.acked_after_failure > 0,
        "the writer reopened the ledger and went on acknowledging"
    );

    // Retried with their ids, the failed requests are applied once: those whose batch
    // reached the disk whole answer from the ledger, the others are applied now.
    let mut retried = vec![];
    for n in &tally.failed {
        let answer = engine
            .submit(envelope(*n))
            .await
            .expect("the disk works again");
        retried.push((*n, answer.expect("a commanditaire")));
    }
    // Every first answer came from a sync that worked and was counted once there; a retry
    // answered from memory appended nothing and needed no sync.
    let syncs = engine.sync_stats().snapshot();
    let counted = syncs.requests as usize;
    assert!(
        (tally.acked.len()..=CALLERS * REQUESTS_PER_CALLER).contains(&counted),
        "{counted} acknowledged by syncs, {} at the first try",
        tally.acked.len()
    );
    assert!(syncs.syncs >= 1 && syncs.syncs <= syncs.requests);
    assert!(syncs.quantile(1.0).is_some());
    // Every answer the engine gave was timed once, failures not at all.
    assert_eq!(syncs.answered as usize, tally.acked.len() + retried.len());
    drop(engine);
    tokio::task::spawn_blocking(move || writer.join().unwrap())
        .await
        .unwrap();

    let ledger = Ledger::open(dir.path(), Default::default()).unwrap();
    let state = ledger.state();
    state.check_invariants().unwrap();
    let answered: Vec<_> = tally.acked.iter().chain(&retried).collect();
    assert_eq!(answered.len(), CALLERS * REQUESTS_PER_CALLER);
    for (n, outcome) in &answered {
        let key = envelope(*n).request.unwrap().digest();
        let remembered = state
            .requests
            .get(&key)
            .expect("an answered request is on disk");
        assert_eq!(remembered.result.as_ref(), Ok(outcome), "request {n}");
        let Outcome::CommanditaireRegistered(id) = outcome else {
            panic!("request {n} answered {outcome:?}");
        };
        assert!(state.commanditaires.contains_key(id), "request {n}");
    }
    assert_eq!(
        state.commanditaires.len(),
        CALLERS * REQUESTS_PER_CALLER,
        "each request applied exactly once"
    );
}
