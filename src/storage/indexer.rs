//! The indexer thread: checkpoints the state into the index (sled and its run files) behind
//! the writer, so the index's cost is off the durable path. The writer's `apply` records what changed (the new values of
//! passes and requests, the keys of the rest) and nudges; the indexer takes those changes
//! at one sequence number under the state's lock, reads the few keyed values there, encodes
//! the captured ones after letting go, waits until that record is durable (the index must
//! never hold what the log does not), and writes them as a delta (its run file, then one
//! sled batch naming it with that position), folding deltas into the base when they have grown (`Index::compact_if_due`).
//! The log is the truth: a crash loses nothing, start-up replays the log beyond the index's
//! position. The backlog is what the writer applied while the last checkpoint was written.

use super::index::{Index, IndexBatch};
use crate::domain::State;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;

/// How often a checkpoint taken ahead of the disk looks again whether it is durable (one
/// fsync, a fraction of a millisecond, is usually all it waits for).
const DURABLE_POLL: std::time::Duration = std::time::Duration::from_micros(200);
/// Least time between two checkpoints. Under load, changes coalesce (a balance touched by
/// a thousand redemptions is written once) and sled gets fewer, larger batches: measured,
/// checkpointing after every batch took a third of the CPU from the request path. The
/// cost is a longer replay after a crash: at most this long's worth of records.
const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

pub struct Indexer {
    nudge: Option<SyncSender<()>>,
    /// Set when the ledger closes: a checkpoint still waiting for its records to become
    /// durable gives up (after a failed write they never will).
    closing: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Why the index store failed, once it has.
    failed: Arc<std::sync::Mutex<Option<String>>>,
    /// Set by the first nudge after a checkpoint started, so the writer wakes the indexer
    /// once per checkpoint, not once per batch (each wake costs a context switch).
    nudged: Arc<AtomicBool>,
}

impl Indexer {
    /// `durable` is the last record the log holds durably (the writer's sync stage moves it).
    pub fn spawn(index: Index, state: Arc<RwLock<State>>, durable: Arc<AtomicU64>) -> Indexer {
        let (nudge, rx) = sync_channel(1);
        let failed = Arc::new(std::sync::Mutex::new(None));
        let nudged = Arc::new(AtomicBool::new(false));
        let closing = Arc::new(AtomicBool::new(false));
        let shared = Shared {
            failed: failed.clone(),
            nudged: nudged.clone(),
            closing: closing.clone(),
            durable,
        };
        let thread = std::thread::Builder::new()
            .name("indexer".into())
            .spawn(move || run(index, state, rx, shared))
            .expect("spawn the indexer");
        Indexer {
            nudge: Some(nudge),
            closing,
            thread: Some(thread),
            failed,
            nudged,
        }
    }

    /// Tells the indexer there is something new; never waits. Fails once the index failed.
    pub fn nudge(&self) -> Result<(), String> {
        if let Some(why) = self.failed.lock().ok().and_then(|f| f.clone()) {
            return Err(format!("the index store failed: {why}"));
        }
        if self.nudged.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        match self
            .nudge
            .as_ref()
            .expect("open until finished")
            .try_send(())
        {
            Ok(()) | Err(TrySendError::Full(())) => Ok(()),
            Err(TrySendError::Disconnected(())) => Err("the indexer stopped".into()),
        }
    }

    /// Writes a last checkpoint of what is durable, flushes and stops.
    pub fn finish(&mut self) {
        self.closing.store(true, Ordering::Release);
        drop(self.nudge.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Indexer {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Absorbs nudges for one checkpoint interval; returns early, with true, when the writer
/// closes the channel (shutdown must not wait out the interval).
fn coalesce(rx: &Receiver<()>) -> bool {
    let until = std::time::Instant::now() + CHECKPOINT_INTERVAL;
    while let Some(left) = until.checked_duration_since(std::time::Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(()) => {}
            Err(RecvTimeoutError::Timeout) => return false,
            Err(RecvTimeoutError::Disconnected) => return true,
        }
    }
    false
}

/// What the indexer thread shares with its handle.
struct Shared {
    /// Why the index store failed, once it has.
    failed: Arc<std::sync::Mutex<Option<String>>>,
    nudged: Arc<AtomicBool>,
    closing: Arc<AtomicBool>,
    durable: Arc<AtomicU64>,
}

impl Shared {
    /// Waits until record `seq` is durable; false if the ledger closes first.
    fn wait_durable(&self, seq: u64) -> bool {
        loop {
            if self.durable.load(Ordering::Acquire) >= seq {
                return true;
            }
            if self.closing.load(Ordering::Acquire) {
                return false;
            }
            std::thread::sleep(DURABLE_POLL);
        }
    }
}

fn run(index: Index, state: Arc<RwLock<State>>, rx: Receiver<()>, shared: Shared) {
    // Ok(false): the ledger closed before the checkpoint's records were durable (a failed
    // write): the checkpoint is dropped, and so is the ledger's state.
    let checkpoint = || -> Result<bool, String> {
        let (changes, batch) = {
            let mut st = state.write().map_err(|_| "the state lock is poisoned")?;
            let changes = st.take_changes();
            if changes.is_empty() {
                return Ok(true);
            }
            let batch = IndexBatch::read(&st, &changes.keys, st.seq, st.head_hash);
            (changes, batch)
        };
        // The captured values are copies: encoded off the state's lock.
        let batch = batch.with_values(&changes);
        drop(changes);
        if !shared.wait_durable(batch.seq) {
            return Ok(false);
        }
        index.apply(batch).map_err(|e| e.to_string())?;
        // The compaction runs here, off the state's lock; checkpoints wait for it, which
        // only lengthens the replay a crash would need.
        index.compact_if_due().map_err(|e| e.to_string())?;
        Ok(true)
    };
    while rx.recv().is_ok() {
        let stopping = coalesce(&rx);
        // A batch from now on nudges again: its keys are in this checkpoint or the next.
        shared.nudged.store(false, Ordering::Release);
        match checkpoint() {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::error!(error = %e, "index checkpoint failed; the log stays complete and start-up will replay it");
                if let Ok(mut f) = shared.failed.lock() {
                    *f = Some(e.to_string());
                }
                return;
            }
        }
        if stopping {
            break;
        }
    }
    if let Err(e) = checkpoint().and_then(|_| index.flush().map_err(|e| e.to_string())) {
        tracing::warn!(error = %e, "last index checkpoint failed; start-up will replay the log");
    }
}
