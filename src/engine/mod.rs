//! The single writer. A closed set of requests arrives on a bounded queue; one thread
//! drains it in batches and, per batch:
//!
//! 1. decides each command against the state, applying each record at once so later
//!    commands in the batch see it;
//! 2. asserts every record's postings balance and money is conserved;
//! 3. appends the batch's frames to the log, and hands the batch to the sync stage.
//!
//! The sync stage (a second thread) `fdatasync`s once for every batch appended since its
//! last sync (group commit), then publishes the durable head and answers every waiter. An
//! answer therefore means durable, refusals included. The indexer checkpoints the state
//! into sled behind both.
//!
//! A failed write or sync stops the engine (fail-stop): the state in memory is then ahead
//! of the disk, and only reopening the ledger, which replays the log, makes them agree.

mod ledger;
mod poll;
mod stats;
mod writer;

pub use ledger::{Durability, Ledger, Staged};
use stats::StageTimes;
pub use stats::{GroupCommits, Stage, SyncStats};

use crate::directory::Directory;
use crate::domain::{Envelope, Outcome, Refusal, Rules, State, Timestamp};
use std::sync::Arc;
use std::sync::{RwLock, RwLockReadGuard};
use tokio::sync::{mpsc, oneshot, watch};

pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

pub fn system_clock() -> Clock {
    Arc::new(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970");
        Timestamp(now.as_millis() as i64)
    })
}

#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Most commands in one group commit: bounds a batch's latency and memory.
    pub batch_records_max: usize,
    /// Most commands waiting for the writer; past it callers get `Overloaded` at once.
    pub queue_depth_max: usize,
    /// How long the idle pollers (`poll.rs`) spin past the last answer; zero turns them off.
    pub idle_poll_us: u64,
    pub rules: Rules,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            batch_records_max: 1024,
            queue_depth_max: 8192,
            idle_poll_us: IDLE_POLL_US,
            rules: Rules::default(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EngineError {
    /// The queue is full: try again later (RESOURCE_EXHAUSTED).
    Overloaded,
    /// The engine stopped, at shutdown (UNAVAILABLE).
    Stopped,
    /// The disk refused a write (full, or failing): the request was not acknowledged and
    /// the writer is reopening the ledger from disk; retry with the same request id
    /// (UNAVAILABLE). `disk_full` tells the operator what to fix.
    StorageFailed { disk_full: bool },
}

impl std::fmt::Display for EngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EngineError::Overloaded => {
                write!(f, "the ledger writer's queue is full; retry shortly")
            }
            EngineError::Stopped => write!(f, "the ledger writer has stopped"),
            EngineError::StorageFailed { disk_full: true } => write!(
                f,
                "the disk is full: nothing was recorded; the service resumes when space is freed"
            ),
            EngineError::StorageFailed { disk_full: false } => write!(
                f,
                "the disk refused a write: nothing was acknowledged; the ledger is being reopened"
            ),
        }
    }
}

/// The pollers' default grace: a client that sends its next request within it finds the
/// cores still awake. Seastar's reactor polls 200 µs before it sleeps.
pub const IDLE_POLL_US: u64 = 500;

pub type Answer = Result<Outcome, Refusal>;

struct Submission {
    /// When it was submitted: its time in the writer's queue counts from here.
    submitted: std::time::Instant,
    envelope: Envelope,
    reply: oneshot::Sender<Result<Answer, EngineError>>,
}

/// The ledger's position: last sequence number and its hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    pub hash: [u8; 32],
}

impl From<crate::storage::Mark> for Head {
    fn from(m: crate::storage::Mark) -> Head {
        Head {
            seq: m.seq,
            hash: m.hash,
        }
    }
}

/// What the writer publishes: the durable head, and how many times the ledger was reopened
/// after a storage failure (a reader waiting on a record that was lost stops waiting).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Published {
    head: Head,
    reopened: u64,
}

#[derive(Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<Submission>,
    head: watch::Receiver<Published>,
    directory: watch::Receiver<Arc<Directory>>,
    syncs: Arc<SyncStats>,
    marks: Arc<crate::storage::Marks>,
    poll: Option<Arc<poll::IdlePoll>>,
}

impl EngineHandle {
    pub async fn submit(&self, envelope: Envelope) -> Result<Answer, EngineError> {
        let _in_flight = self.poll.as_deref().map(poll::IdlePoll::enter);
        let (reply, rx) = oneshot::channel();
        let submitted = std::time::Instant::now();
        self.tx
            .try_send(Submission {
                submitted,
                envelope,
                reply,
            })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => EngineError::Overloaded,
                mpsc::error::TrySendError::Closed(_) => EngineError::Stopped,
            })?;
        let answer = rx.await.map_err(|_| EngineError::Stopped)?;
        if answer.is_ok() {
            self.syncs.record_answer(submitted.elapsed());
        }
        answer
    }

    pub fn head(&self) -> Head {
        self.head.borrow().head
    }

    /// Where a reader of the log from record `seq` may start (`storage::Marks`).
    pub fn mark_before(&self, seq: u64) -> crate::storage::Mark {
        self.marks.before(seq)
    }

    /// The sync stage's figures (`snapshot` them): fsyncs, requests acknowledged,
    /// durations. Holding them does not keep the engine running, unlike the handle.
    pub fn sync_stats(&self) -> Arc<SyncStats> {
        self.syncs.clone()
    }

    /// The credentials and sites as of the last durable batch that changed them.
    pub fn directory(&self) -> Arc<Directory> {
        self.directory.borrow().clone()
    }

    /// Waits until record `seq` is durable. Fails if the writer stopped first, or if the
    /// ledger was reopened after a storage failure meanwhile (the record may be lost).
    pub async fn wait_durable(&self, seq: u64) -> Result<(), EngineError> {
        let mut head = self.head.clone();
        let reopened = head.borrow().reopened;
        let p = head
            .wait_for(|p| p.head.seq >= seq || p.reopened != reopened)
            .await
            .map(|p| *p)
            .map_err(|_| EngineError::Stopped)?;
        if p.reopened != reopened {
            return Err(EngineError::StorageFailed { disk_full: false });
        }
        Ok(())
    }
}

/// Starts the writer thread. It ends when every handle is dropped, or on a storage failure.
pub fn start(
    ledger: Ledger,
    config: &EngineConfig,
    clock: Clock,
) -> (EngineHandle, std::thread::JoinHandle<()>) {
    assert!(
        config.batch_records_max <= config.queue_depth_max,
        "a full batch must fit in the queue"
    );
    let (tx, rx) = mpsc::channel(config.queue_depth_max);
    assert_eq!(
        ledger.head().seq,
        ledger.state().seq,
        "the state and the log start at the same record"
    );
    let (head_tx, head) = watch::channel(Published {
        head: ledger.head(),
        reopened: 0,
    });
    let (directory_tx, directory) = watch::channel(Arc::new(Directory::of(&ledger.state())));
    let syncs = Arc::new(SyncStats::default());
    let marks = ledger.marks();
    let thread = writer::spawn(
        ledger,
        config.batch_records_max,
        clock,
        rx,
        (head_tx, directory_tx, syncs.clone()),
    );
    (
        EngineHandle {
            tx,
            head,
            directory,
            syncs,
            marks,
            poll: poll::IdlePoll::start(std::time::Duration::from_micros(config.idle_poll_us))
                .map(Arc::new),
        },
        thread,
    )
}

/// The state, shared with readers. The writer holds the write lock while it decides and
/// applies a batch; a reader may see records not yet durable, so a reply built on what it
/// read waits for them (`EngineHandle::wait_durable`).
pub type SharedState = Arc<RwLock<State>>;

/// Reads the shared state. A poisoned lock means the writer panicked mid-batch: the
/// state may be ahead of the disk, so nobody reads it again (the process must restart).
pub fn read_state(state: &SharedState) -> Result<RwLockReadGuard<'_, State>, EngineError> {
    state.read().map_err(|_| EngineError::Stopped)
}
