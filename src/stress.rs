//! Test support for the kill test: appends batches as fast as the disk allows and prints
//! one line per acknowledged batch, so a parent that SIGKILLs this process knows exactly
//! what was acknowledged.

use crate::domain::*;
use crate::engine::Ledger;
use std::io::Write;
use std::path::Path;

pub fn append(dir: &Path, batches: u64) -> Result<(), String> {
    let mut ledger = Ledger::open(dir, Rules::default()).map_err(|e| e.to_string())?;
    let mut out = std::io::stdout().lock();
    for b in 0..batches {
        let envelopes: Vec<Envelope> = (0..10)
            .map(|i| Envelope {
                request: None,
                command: Command::RegisterCommanditaire {
                    name: Label::parse(&format!("c{b}-{i}")).expect("label"),
                },
            })
            .collect();
        let refs: Vec<&Envelope> = envelopes.iter().collect();
        let answers = ledger.execute_batch(Timestamp(b as i64), &refs)?;
        let last = match answers.last() {
            Some(Ok(Outcome::CommanditaireRegistered(id))) => id.0,
            other => return Err(format!("unexpected answer {other:?}")),
        };
        writeln!(out, "acked {} {}", ledger.head().seq, last).map_err(|e| e.to_string())?;
        out.flush().map_err(|e| e.to_string())?;
    }
    Ok(())
}
