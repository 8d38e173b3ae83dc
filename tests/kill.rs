//! A child process appends under load and is SIGKILLed at a random moment; after restart,
//! everything it acknowledged is there, the chain verifies and the invariants hold.

use passnum::domain::*;
use passnum::engine::Ledger;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Kill cycles in one test run: enough to land kills in different phases of a batch.
const CYCLES: u32 = 6;

#[test]
fn everything_acknowledged_before_sigkill_survives() {
    let dir = tempfile::tempdir().unwrap();
    let mut acked_seq = 0u64;
    for cycle in 0..CYCLES {
        let mut child = Command::new(env!("CARGO_BIN_EXE_passnum"))
            .args(["stress-append", "--data"])
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // Wait for the first acknowledgement, then let it run a varying while.
        let first = lines.next().unwrap().unwrap();
        let run_for = Duration::from_millis(20 + 37 * u64::from(cycle % 5));
        let started = Instant::now();
        let mut last = first;
        while started.elapsed() < run_for {
            match lines.next() {
                Some(Ok(l)) => last = l,
                _ => break,
            }
        }
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
        // Lines already written before the kill were acknowledged too.
        for l in lines.map_while(Result::ok) {
            last = l;
        }
        let seq: u64 = last.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!(seq > acked_seq, "cycle {cycle} made progress");
        acked_seq = seq;

        let ledger = Ledger::open(dir.path(), Rules::default()).unwrap();
        assert!(
            ledger.head().seq >= acked_seq,
            "cycle {cycle}: acknowledged record {acked_seq} lost; head is {}",
            ledger.head().seq
        );
        assert_eq!(
            ledger.state().commanditaires.len() as u64,
            ledger.head().seq,
            "one registration per record"
        );
        ledger.state().check_invariants().unwrap();
        drop(ledger);
        passnum::storage::verify_log(&passnum::storage::log_path(dir.path())).unwrap();
    }
}
