//! Storage: the log (truth) and the sled index (derived, rebuildable). Only this module
//! knows sled and the file layout.
//!
//! Start-up, in order:
//! 1. open the index and load the state it holds, with the sequence number it reached;
//! 2. scan the log from the start, checking every frame and the hash chain; check that the
//!    index's position names a record the log really has, with the same hash;
//! 3. replay the records beyond that position into the state and the index;
//! 4. cut a torn tail back to the last whole record;
//! 5. check every invariant of the state before serving.

pub mod blob;
pub mod frame;
pub mod index;
pub mod indexer;
pub mod log;
pub mod mirror;
pub mod runs;

pub use frame::LedgerRecord;
pub use index::{Index, IndexBatch, IndexError};
pub use indexer::Indexer;
pub use log::{Appended, Fault, Faults, Log, LogError, LogSyncer, Mark, Marks, Scan};

use crate::domain::State;
use std::path::{Path, PathBuf};

/// How many replayed records go into one index batch during start-up.
const REPLAY_BATCH_RECORDS: u64 = 1024;

#[derive(Debug)]
pub enum StoreError {
    Io(std::io::Error),
    Log(LogError),
    Index(IndexError),
    /// The index says it applied records the log does not have: wrong directory, or a log
    /// restored from an older copy. Rebuild the index from the log if the log is right.
    IndexAhead {
        index_seq: u64,
        log_seq: u64,
    },
    /// The index's position names a record whose hash differs: it belongs to another log.
    IndexMismatch {
        seq: u64,
    },
    /// The state rebuilt from the log breaks an invariant of the money.
    Invariant(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Io(e) => write!(f, "data directory: {e}"),
            StoreError::Log(e) => write!(f, "{e}"),
            StoreError::Index(e) => write!(f, "{e}"),
            StoreError::IndexAhead { index_seq, log_seq } => write!(
                f,
                "the index has applied record {index_seq} but the log ends at {log_seq}: run `passnum rebuild-index` if the log is the right one"
            ),
            StoreError::IndexMismatch { seq } => write!(
                f,
                "the index's record {seq} has another hash than the log's: run `passnum rebuild-index`"
            ),
            StoreError::Invariant(e) => write!(f, "ledger invariant broken after replay: {e}"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<LogError> for StoreError {
    fn from(e: LogError) -> Self {
        StoreError::Log(e)
    }
}
impl From<IndexError> for StoreError {
    fn from(e: IndexError) -> Self {
        StoreError::Index(e)
    }
}
impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        StoreError::Io(e)
    }
}

pub struct Store {
    pub log: Log,
    pub index: Index,
    pub dir: PathBuf,
    /// The log's record boundaries the start-up scan passed (see `Marks`).
    pub marks: Marks,
}

/// What start-up did, for the logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovery {
    pub records: u64,
    pub replayed: u64,
    pub torn_bytes: u64,
}

pub fn log_path(dir: &Path) -> PathBuf {
    dir.join(log::LOG_FILE)
}

impl Store {
    pub fn open(dir: &Path) -> Result<(Store, State, Recovery), StoreError> {
        std::fs::create_dir_all(dir)?;
        let index = Index::open(&dir.join(index::INDEX_DIR))?;
        let mut state = index.load_state()?;
        let (applied_seq, applied_head) = index.applied()?;
        let mut replayed = 0u64;
        let marks = Marks::default();
        let scan = log::scan_from(&log_path(dir), Mark::START, u64::MAX, Some(&marks), |rec| {
            if rec.seq == applied_seq && rec.hash != applied_head {
                return Err(LogError::Corrupt {
                    seq: rec.seq,
                    offset: 0,
                    what: "index mismatch".into(),
                });
            }
            if rec.seq <= applied_seq {
                return Ok(());
            }
            state.apply(rec.seq, rec.at, &rec.body);
            replayed += 1;
            if replayed.is_multiple_of(REPLAY_BATCH_RECORDS) {
                let changes = state.take_changes();
                index
                    .write(&state, &changes, rec.seq, rec.hash)
                    .and_then(|()| index.compact_if_due().map(drop))
                    .map_err(|e| LogError::Io(std::io::Error::other(e.to_string())))?;
            }
            Ok(())
        })
        .map_err(|e| match e {
            LogError::Corrupt { seq, what, .. } if what == "index mismatch" => {
                StoreError::IndexMismatch { seq }
            }
            e => StoreError::Log(e),
        })?;
        if scan.records < applied_seq {
            return Err(StoreError::IndexAhead {
                index_seq: applied_seq,
                log_seq: scan.records,
            });
        }
        let changes = state.take_changes();
        index.write(&state, &changes, scan.records, scan.head_hash)?;
        state.head_hash = scan.head_hash;
        index.compact_if_due()?;
        index.flush()?;
        let log = Log::open(&log_path(dir), &scan)?;
        state.check_invariants().map_err(StoreError::Invariant)?;
        let recovery = Recovery {
            records: scan.records,
            replayed,
            torn_bytes: scan.torn_bytes,
        };
        Ok((
            Store {
                log,
                index,
                dir: dir.to_owned(),
                marks,
            },
            state,
            recovery,
        ))
    }

    /// Drops the whole index and rebuilds it from the log.
    pub fn rebuild_index(dir: &Path) -> Result<Recovery, StoreError> {
        let index_dir = dir.join(index::INDEX_DIR);
        if index_dir.exists() {
            std::fs::remove_dir_all(&index_dir)?;
        }
        let (_, _, recovery) = Store::open(dir)?;
        Ok(recovery)
    }
}

/// A record whose postings do not sum to zero is damage, whatever its hash says. (A scan
/// fills in where the record lies.)
pub fn balanced(rec: &LedgerRecord) -> Result<(), LogError> {
    if rec.body.postings_balance() {
        return Ok(());
    }
    Err(LogError::Corrupt {
        seq: rec.seq,
        offset: 0,
        what: "postings do not balance".into(),
    })
}

/// Checks a log file on its own: every frame, the chain, and the money invariants of the
/// state it rebuilds. Needs nothing but the file, so anyone holding a copy can run it.
pub fn verify_log(path: &Path) -> Result<(Scan, State), StoreError> {
    verify_log_upto(path, u64::MAX)
}

/// `verify_log` up to record `last`: for a log being written (see `log::scan_upto`).
pub fn verify_log_upto(path: &Path, last: u64) -> Result<(Scan, State), StoreError> {
    verify_log_visiting(path, last, |_| {})
}

/// `verify_log_upto`, showing each record to `visit` on the way (one scan for a caller
/// that checks something of its own in the records).
pub fn verify_log_visiting(
    path: &Path,
    last: u64,
    mut visit: impl FnMut(&LedgerRecord),
) -> Result<(Scan, State), StoreError> {
    let mut state = State::default();
    let scan = log::scan_upto(path, last, |rec| {
        visit(rec);
        balanced(rec)?;
        state.apply(rec.seq, rec.at, &rec.body);
        if rec.seq % REPLAY_BATCH_RECORDS == 0 {
            // Nothing is written: the changes are dropped, not kept for the whole log.
            state.take_changes();
        }
        Ok(())
    })?;
    state.take_changes();
    state.check_invariants().map_err(StoreError::Invariant)?;
    Ok((scan, state))
}
