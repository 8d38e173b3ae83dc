//! The ledger as one synchronous object: the batch step (`stage`) and its durability.

use super::{read_state, Answer, Head, SharedState};
use crate::directory::Directory;
use crate::domain::{decide, Decision, Envelope, Refusal, Rules, State, Timestamp};
use crate::storage::{Indexer, Mark, Marks, Store};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

/// The ledger as one synchronous object: state, log and index, and the batch step.
/// The writer thread owns one; tests and the simulator drive one directly.
pub struct Ledger {
    pub store: Store,
    state: SharedState,
    pub rules: Rules,
    indexer: Indexer,
    durability: Durability,
    /// Set when the disk refused a batch: memory is then ahead of the disk, so the ledger
    /// refuses every later batch until it is reopened (fail-stop).
    failed: Option<String>,
    /// Record times never go backwards, even if the system clock does.
    last_at: Timestamp,
}

/// A batch decided, applied and appended to the log, not yet durable: its answers may be
/// sent once `end` is (`Durability::make_durable`), and not before, refusals included,
/// since they may rest on records of earlier batches still being synced.
pub struct Staged {
    pub answers: Vec<Answer>,
    /// Where the log ended after the batch: its last record, and the byte after it.
    pub end: Mark,
    /// The credentials and sites after the batch, when it changed them.
    pub directory: Option<Directory>,
}

/// Makes the log's appends durable and moves the durable point the indexer waits on; a
/// clone goes to the writer's sync thread. It never takes the state's lock: a sync does
/// not wait for a checkpoint or a batch.
#[derive(Clone)]
pub struct Durability {
    log: Arc<crate::storage::LogSyncer>,
    /// The last record known durable; the state's `seq` runs ahead while batches sync.
    durable: Arc<AtomicU64>,
    /// Where readers of the log may start: durable record boundaries only.
    marks: Arc<Marks>,
}

impl Durability {
    /// Makes every record up to `end` durable; true if that took an fsync, false if they
    /// already were. An error means the disk did not take them: the ledger must stop
    /// (fail-stop).
    pub fn make_durable(&self, end: Mark) -> Result<bool, String> {
        let synced = self.durable.load(Ordering::Acquire) < end.seq;
        if synced {
            self.log.sync().map_err(|e| format!("log sync: {e}"))?;
            self.durable.fetch_max(end.seq, Ordering::AcqRel);
        }
        self.marks.note(end);
        Ok(synced)
    }
}

impl Ledger {
    pub fn open(dir: &std::path::Path, rules: Rules) -> Result<Ledger, crate::storage::StoreError> {
        let shared = (Arc::new(RwLock::new(State::default())), Arc::default());
        Self::open_into(dir, rules, shared)
    }

    /// Opens the ledger and puts the recovered state and the log's marks into `shared`,
    /// which readers already hold (the writer reopening after a storage failure).
    pub fn open_into(
        dir: &std::path::Path,
        rules: Rules,
        (shared, marks): (SharedState, Arc<Marks>),
    ) -> Result<Ledger, crate::storage::StoreError> {
        let (mut store, state, recovery) = Store::open(dir)?;
        marks.replace_with(std::mem::take(&mut store.marks));
        tracing::info!(
            records = recovery.records,
            replayed = recovery.replayed,
            torn_bytes = recovery.torn_bytes,
            "ledger opened"
        );
        let durability = Durability {
            log: Arc::new(store.log.syncer().map_err(crate::storage::StoreError::Io)?),
            durable: Arc::new(AtomicU64::new(store.log.mark().seq)),
            marks,
        };
        // A poisoned lock is taken over: the state it guarded is replaced whole.
        *shared.write().unwrap_or_else(|p| p.into_inner()) = state;
        let state = shared;
        let indexer = Indexer::spawn(
            store.index.clone(),
            state.clone(),
            durability.durable.clone(),
        );
        Ok(Ledger {
            store,
            state,
            rules,
            indexer,
            durability,
            last_at: Timestamp(i64::MIN),
            failed: None,
        })
    }

    /// The last record appended (durable once `Durability::make_durable` says so).
    pub fn head(&self) -> Head {
        Head::from(self.store.log.mark())
    }

    /// The state as of the last batch applied.
    pub fn state(&self) -> RwLockReadGuard<'_, State> {
        read_state(&self.state).expect("the writer did not panic")
    }

    /// Arms storage faults for the log's next appends (deterministic simulation).
    pub fn inject_faults(&mut self, faults: crate::storage::Faults) {
        self.store.log.set_faults(faults);
    }

    pub fn shared_state(&self) -> SharedState {
        self.state.clone()
    }

    /// Where readers of the log may start (see `Marks`); the same across reopens.
    pub fn marks(&self) -> Arc<Marks> {
        self.durability.marks.clone()
    }

    pub fn durability(&self) -> Durability {
        self.durability.clone()
    }

    /// The whole write path for one batch: stage it, make it durable; returns one answer
    /// per envelope, in order. An error means the disk did not take the batch: the ledger
    /// must not be used again.
    pub fn execute_batch(
        &mut self,
        clock_now: Timestamp,
        envelopes: &[&Envelope],
    ) -> Result<Vec<Answer>, String> {
        let staged = self.stage(clock_now, envelopes)?;
        if let Err(why) = self.durability.make_durable(staged.end) {
            self.failed = Some(why.clone());
            return Err(why);
        }
        Ok(staged.answers)
    }

    /// Steps 1–3 of the write path for one batch: decides and applies each command, checks
    /// that money balances, appends the records to the log (not yet durable).
    pub fn stage(
        &mut self,
        clock_now: Timestamp,
        envelopes: &[&Envelope],
    ) -> Result<Staged, String> {
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
        let mut directory_changed = false;
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
                    directory_changed |= Directory::changed_by(&body);
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
        let directory = directory_changed.then(|| Directory::of(&state));
        if !bodies.is_empty() {
            let refs: Vec<_> = bodies.iter().map(|b| (now, b)).collect();
            let (buf, appended) = self.store.log.encode_batch(&refs);
            let last = appended.last().expect("non-empty batch");
            assert_eq!(last.seq, state.seq, "log and state agree on the sequence");
            state.head_hash = last.hash;
            // Readers may look while the disk works: replies built on what they read wait
            // until it is durable (EngineHandle::wait_durable), and the indexer writes a
            // checkpoint to sled only once it is. Holding the lock through the write would
            // stall them.
            drop(state);
            if let Err(e) = self.store.log.append(&buf, &appended) {
                let why = format!("log append: {e}");
                self.failed = Some(why.clone());
                return Err(why);
            }
            self.indexer.nudge()?;
        } else {
            drop(state);
        }
        let mut bodies: Vec<Option<_>> = bodies.into_iter().map(Some).collect();
        let answers = pending
            .into_iter()
            .map(|p| match p {
                Pending::Now(a) => a,
                Pending::Recorded(i) => bodies[i].take().expect("each record answers once").result,
            })
            .collect();
        Ok(Staged {
            answers,
            end: self.store.log.mark(),
            directory,
        })
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

enum Pending {
    Now(Answer),
    Recorded(usize),
}
