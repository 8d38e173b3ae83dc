//! The single writer. A closed set of requests arrives on a bounded queue; one thread
//! drains it in batches and, per batch:
//!
//! 1. decides each command against the state, applying each record at once so later
//!    commands in the batch see it;
//! 2. asserts every record's postings balance and money is conserved;
//! 3. appends the batch's frames to the log and `fdatasync`s once (group commit);
//! 4. writes the changed state and the new position to the index;
//! 5. answers every waiter. An answer therefore means durable.
//!
//! A failed write stops the engine (fail-stop): the state in memory is then ahead of the
//! disk, and only a restart, which replays the log, makes them agree again.

use crate::directory::Directory;
use crate::domain::{decide, Decision, Envelope, Outcome, Refusal, Rules, State, Timestamp};
use crate::storage::{Indexer, Store};
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
    pub rules: Rules,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            batch_records_max: 1024,
            queue_depth_max: 8192,
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

pub type Answer = Result<Outcome, Refusal>;

struct Submission {
    envelope: Envelope,
    reply: oneshot::Sender<Result<Answer, EngineError>>,
}

/// The ledger's position: last sequence number and its hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    pub hash: [u8; 32],
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
}

impl EngineHandle {
    pub async fn submit(&self, envelope: Envelope) -> Result<Answer, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .try_send(Submission { envelope, reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => EngineError::Overloaded,
                mpsc::error::TrySendError::Closed(_) => EngineError::Stopped,
            })?;
        rx.await.map_err(|_| EngineError::Stopped)?
    }

    pub fn head(&self) -> Head {
        self.head.borrow().head
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
    let writer = Writer {
        directory: directory_tx,
        ledger: Some(ledger),
        batch_records_max: config.batch_records_max,
        clock,
        head: head_tx,
        reopened: 0,
        replies: spawn_dispatcher(),
    };
    let thread = std::thread::Builder::new()
        .name("ledger-writer".into())
        .spawn(move || writer.run(rx))
        .expect("spawn the ledger writer");
    (
        EngineHandle {
            tx,
            head,
            directory,
        },
        thread,
    )
}

/// A batch's answers, each with the channel its caller waits on.
type Replies = Vec<(
    oneshot::Sender<Result<Answer, EngineError>>,
    Result<Answer, EngineError>,
)>;

/// Inside a tokio runtime, answers go to the callers through one task on it: the writer
/// then wakes the runtime once per batch, and the task wakes each caller from inside it
/// (a local queue push) instead of the writer waking each one from outside (a locked
/// global queue and, often, a futex). Measured in the load bench: futex calls per
/// redemption went from 1.8 to 1.3.
/// The channel holds at most the queue's depth of answers: each submission is answered once.
fn spawn_dispatcher() -> Option<mpsc::UnboundedSender<Replies>> {
    let runtime = tokio::runtime::Handle::try_current().ok()?;
    let (tx, mut rx) = mpsc::unbounded_channel::<Replies>();
    runtime.spawn(async move {
        while let Some(batch) = rx.recv().await {
            for (reply, answer) in batch {
                let _ = reply.send(answer);
            }
        }
    });
    Some(tx)
}

/// The state, shared with readers. The writer holds the write lock from deciding a batch
/// until its fsync returns, so a reader never sees what is not durable.
pub type SharedState = Arc<RwLock<State>>;

/// Reads the shared state. A poisoned lock means the writer panicked mid-batch: the
/// state may be ahead of the disk, so nobody reads it again (the process must restart).
pub fn read_state(state: &SharedState) -> Result<RwLockReadGuard<'_, State>, EngineError> {
    state.read().map_err(|_| EngineError::Stopped)
}

/// The ledger as one synchronous object: state, log and index, and the batch step.
/// The writer thread owns one; tests and the simulator drive one directly.
pub struct Ledger {
    pub store: Store,
    state: SharedState,
    pub rules: Rules,
    indexer: Indexer,
    /// Set when the disk refused a batch: memory is then ahead of the disk, so the ledger
    /// refuses every later batch until it is reopened (fail-stop).
    failed: Option<String>,
    /// Record times never go backwards, even if the system clock does.
    last_at: Timestamp,
    /// A batch changed credentials or sites: the directory is to be republished.
    directory_stale: bool,
}

impl Ledger {
    pub fn open(dir: &std::path::Path, rules: Rules) -> Result<Ledger, crate::storage::StoreError> {
        Self::open_into(dir, rules, Arc::new(RwLock::new(State::default())))
    }

    /// Opens the ledger and puts the recovered state into `shared`, which readers already
    /// hold (the writer reopening after a storage failure).
    pub fn open_into(
        dir: &std::path::Path,
        rules: Rules,
        shared: SharedState,
    ) -> Result<Ledger, crate::storage::StoreError> {
        let (store, state, recovery) = Store::open(dir)?;
        tracing::info!(
            records = recovery.records,
            replayed = recovery.replayed,
            torn_bytes = recovery.torn_bytes,
            "ledger opened"
        );
        // A poisoned lock is taken over: the state it guarded is replaced whole.
        *shared.write().unwrap_or_else(|p| p.into_inner()) = state;
        let state = shared;
        let indexer = Indexer::spawn(store.index.clone(), state.clone());
        Ok(Ledger {
            store,
            state,
            rules,
            indexer,
            last_at: Timestamp(i64::MIN),
            failed: None,
            // Published once from what was opened (a reopen may follow a lost batch).
            directory_stale: true,
        })
    }

    pub fn head(&self) -> Head {
        let (seq, hash) = self.store.log.head();
        Head { seq, hash }
    }

    /// The state as of the last durable batch.
    pub fn state(&self) -> RwLockReadGuard<'_, State> {
        read_state(&self.state).expect("the writer did not panic")
    }

    /// Arms storage faults for the log's next appends (deterministic simulation).
    pub fn inject_faults(&mut self, faults: crate::storage::Faults) {
        self.store.log.set_faults(faults);
    }

    /// The directory to republish, if a batch since the last call changed it.
    pub fn take_directory(&mut self) -> Option<Directory> {
        std::mem::take(&mut self.directory_stale).then(|| Directory::of(&self.state()))
    }

    pub fn shared_state(&self) -> SharedState {
        self.state.clone()
    }

    /// Steps 1–4 of the write path for one batch; returns one answer per envelope, in order.
    /// An error means the disk did not take the batch: the ledger must not be used again.
    pub fn execute_batch(
        &mut self,
        clock_now: Timestamp,
        envelopes: &[&Envelope],
    ) -> Result<Vec<Answer>, String> {
        if let Some(why) = &self.failed {
            return Err(format!(
                "the ledger stopped after a failed write ({why}); reopen it"
            ));
        }
        let now = clock_now.max(self.last_at);
        self.last_at = now;
        let mut state = self
            .state
            .write()
            .map_err(|_| "the state lock is poisoned".to_string())?;
        let mut pending = Vec::with_capacity(envelopes.len());
        let mut bodies = Vec::new();
        for envelope in envelopes {
            match decide(&state, &self.rules, now, envelope) {
                Decision::Answer(a) => pending.push(Pending::Now(a)),
                Decision::Record(body) => {
                    let body = refuse_if_too_large(body);
                    assert!(
                        body.postings_balance(),
                        "a record's postings must balance: {body:?}"
                    );
                    let seq = state.seq + 1;
                    state.apply(seq, now, &body);
                    self.directory_stale |= Directory::changed_by(&body);
                    pending.push(Pending::Recorded(bodies.len()));
                    bodies.push(body);
                }
            }
        }
        let total: i128 = state.balances.values().map(|v| i128::from(*v)).sum();
        assert_eq!(
            total, 0,
            "money must be conserved at the end of every batch"
        );
        if !bodies.is_empty() {
            let refs: Vec<_> = bodies.iter().map(|b| (now, b)).collect();
            let (buf, appended) = self.store.log.encode_batch(&refs);
            let applied = state.seq;
            // Readers may look while the disk works: replies built on what they read wait
            // until it is durable (EngineHandle::wait_durable), and the indexer checkpoints
            // only durable states. Holding the lock through fsync would stall every reader.
            drop(state);
            if let Err(e) = self.store.log.commit(&buf, &appended) {
                let why = format!("log append: {e}");
                self.failed = Some(why.clone());
                return Err(why);
            }
            let last = appended.last().expect("non-empty batch");
            assert_eq!(last.seq, applied, "log and state agree on the sequence");
            let mut state = self
                .state
                .write()
                .map_err(|_| "the state lock is poisoned".to_string())?;
            state.head_hash = last.hash;
            state.durable_seq = last.seq;
            drop(state);
            self.indexer.nudge()?;
        }
        let mut bodies: Vec<Option<_>> = bodies.into_iter().map(Some).collect();
        Ok(pending
            .into_iter()
            .map(|p| match p {
                Pending::Now(a) => a,
                Pending::Recorded(i) => bodies[i].take().expect("each record answers once").result,
            })
            .collect())
    }

    /// Applies every queued index batch and stops the indexer (orderly shutdown).
    pub fn close(mut self) {
        self.indexer.finish();
    }
}

/// A record that would not fit in a frame becomes a refusal of its command.
fn refuse_if_too_large(body: crate::domain::RecordBody) -> crate::domain::RecordBody {
    match crate::storage::frame::check_size(&body) {
        Ok(()) => body,
        Err(bytes) => crate::domain::RecordBody {
            request: body.request,
            facts: vec![],
            postings: vec![],
            result: Err(Refusal::RecordTooLarge {
                bytes,
                max: crate::storage::frame::BODY_BYTES_MAX,
            }),
        },
    }
}

struct Writer {
    /// None while the ledger is being reopened after a storage failure.
    ledger: Option<Ledger>,
    batch_records_max: usize,
    clock: Clock,
    head: watch::Sender<Published>,
    directory: watch::Sender<Arc<Directory>>,
    reopened: u64,
    replies: Option<mpsc::UnboundedSender<Replies>>,
}

/// How often a writer whose disk failed tries to reopen the ledger.
const REOPEN_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

enum Pending {
    Now(Answer),
    Recorded(usize),
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Submission>) {
        let mut batch = Vec::with_capacity(self.batch_records_max);
        while let Some(first) = rx.blocking_recv() {
            batch.push(first);
            while batch.len() < self.batch_records_max {
                match rx.try_recv() {
                    Ok(s) => batch.push(s),
                    Err(_) => break,
                }
            }
            let ledger = self.ledger.as_mut().expect("open between batches");
            let envelopes: Vec<&Envelope> = batch.iter().map(|s| &s.envelope).collect();
            match ledger.execute_batch((self.clock)(), &envelopes) {
                Ok(answers) => {
                    self.publish();
                    let replies = batch.drain(..).zip(answers);
                    self.reply(replies.map(|(s, a)| (s.reply, Ok(a))).collect());
                }
                Err(e) => {
                    let disk_full = e.contains("os error 28") || e.contains("os error 27");
                    tracing::error!(error = %e, disk_full, "ledger write failed: nothing acknowledged; reopening the ledger from disk");
                    for s in batch.drain(..) {
                        let _ = s.reply.send(Err(EngineError::StorageFailed { disk_full }));
                    }
                    if !self.reopen(&mut rx, disk_full) {
                        return;
                    }
                }
            }
        }
        if let Some(ledger) = self.ledger.take() {
            ledger.close();
        }
    }

    fn reply(&self, replies: Replies) {
        let unsent = match &self.replies {
            Some(dispatcher) => match dispatcher.send(replies) {
                Ok(()) => return,
                Err(mpsc::error::SendError(replies)) => replies,
            },
            None => replies,
        };
        for (reply, answer) in unsent {
            let _ = reply.send(answer);
        }
    }

    fn publish(&mut self) {
        let ledger = self.ledger.as_mut().expect("open");
        if let Some(directory) = ledger.take_directory() {
            self.directory.send_replace(Arc::new(directory));
        }
        let head = ledger.head();
        self.head.send_replace(Published {
            head,
            reopened: self.reopened,
        });
    }

    /// Fail-stop, then restart in place: the failed ledger (memory ahead of the disk) is
    /// dropped, and the ledger is reopened from the disk (its torn tail cut) until that
    /// works; meanwhile every request is answered "unavailable". Returns false when every
    /// handle is gone.
    fn reopen(&mut self, rx: &mut mpsc::Receiver<Submission>, disk_full: bool) -> bool {
        let old = self.ledger.take().expect("the ledger that failed");
        let (dir, rules, shared) = (old.store.dir.clone(), old.rules.clone(), old.shared_state());
        drop(old);
        loop {
            match Ledger::open_into(&dir, rules.clone(), shared.clone()) {
                Ok(ledger) => {
                    self.ledger = Some(ledger);
                    self.reopened += 1;
                    self.publish();
                    tracing::info!(
                        reopened = self.reopened,
                        "ledger reopened after a storage failure"
                    );
                    return true;
                }
                Err(e) => tracing::warn!(error = %e, "the ledger cannot be reopened yet"),
            }
            let until = std::time::Instant::now() + REOPEN_EVERY;
            while let Some(left) = until.checked_duration_since(std::time::Instant::now()) {
                match rx.try_recv() {
                    Ok(s) => {
                        let _ = s.reply.send(Err(EngineError::StorageFailed { disk_full }));
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => return false,
                    Err(mpsc::error::TryRecvError::Empty) => {
                        std::thread::sleep(left.min(std::time::Duration::from_millis(10)))
                    }
                }
            }
        }
    }
}
