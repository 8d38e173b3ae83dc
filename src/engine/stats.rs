//! Group-commit figures: how many fsyncs the sync stage made, how many requests they
//! acknowledged, and how long each took; and where an answered request's time in the
//! engine went (`Stage`), as sums whose means add up to its whole time. The engine adds
//! to atomics; anyone reads a snapshot at any time, and two snapshots give a phase's
//! figures (the load bench prints them, the writer logs them when it stops). They tell a
//! slow disk from a slow engine without a tracer on the machine.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Buckets per doubling of a duration: a quantile is known within 25 %, enough to tell a
/// 0.3 ms flush from a 3 ms one, and recording one costs three relaxed adds.
const STEPS: u32 = 4;
/// Bucket 4k + q starts at 2^k × (1 + q/4) µs. The last starts at 117 s and also holds
/// anything longer (its bound then understates it: such a sync is a broken disk anyway).
const BUCKETS: usize = 27 * STEPS as usize;

/// The parts of an answered request's time in the engine, in order. Means, not
/// quantiles: means add up, so they say which part a slow request's time went to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// From its submission until the writer takes it into a batch.
    Queue,
    /// Its batch being decided, applied and appended to the log.
    Staging,
    /// Appended, waiting for the fsync that was running when it came to end.
    SyncWait,
    /// The fsync that made it durable.
    Fsync,
    /// From the end of that fsync until its caller has the answer: the hand-off to the
    /// runtime, and the batch's answers before its own.
    Answer,
}

impl Stage {
    pub const ALL: [Stage; 5] = [
        Stage::Queue,
        Stage::Staging,
        Stage::SyncWait,
        Stage::Fsync,
        Stage::Answer,
    ];
    /// The stages the sync stage times; the answer's is the rest of the caller's wait.
    const TIMED: usize = 4;

    pub fn name(self) -> &'static str {
        match self {
            Stage::Queue => "queue",
            Stage::Staging => "staging",
            Stage::SyncWait => "sync wait",
            Stage::Fsync => "fsync",
            Stage::Answer => "answer",
        }
    }
}

/// Kept by the engine for its whole life, across reopens.
pub struct SyncStats {
    syncs: AtomicU64,
    requests: AtomicU64,
    micros: [AtomicU64; BUCKETS],
    /// Requests whose first `Stage::TIMED` stages were summed, and the sums in ns.
    timed: AtomicU64,
    stage_nanos: [AtomicU64; Stage::TIMED],
    /// Requests that got an answer from the engine, and their whole time in it, in ns.
    answered: AtomicU64,
    engine_nanos: AtomicU64,
}

impl Default for SyncStats {
    fn default() -> Self {
        SyncStats {
            syncs: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            micros: std::array::from_fn(|_| AtomicU64::new(0)),
            timed: AtomicU64::new(0),
            stage_nanos: std::array::from_fn(|_| AtomicU64::new(0)),
            answered: AtomicU64::new(0),
            engine_nanos: AtomicU64::new(0),
        }
    }
}

/// What a batch of `requests` spent in the stages before its answer, summed over them.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct StageTimes {
    pub requests: usize,
    pub queue: Duration,
    pub staging: Duration,
    pub sync_wait: Duration,
    pub fsync: Duration,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl SyncStats {
    /// One fsync that worked, and the requests it acknowledged.
    pub(super) fn record(&self, took: Duration, requests: usize) {
        self.syncs.fetch_add(1, Relaxed);
        self.requests.fetch_add(requests as u64, Relaxed);
        self.micros[bucket(took)].fetch_add(1, Relaxed);
    }

    /// The stages a batch went through up to its fsync, once it is answered.
    pub(super) fn record_stages(&self, t: StageTimes) {
        self.timed.fetch_add(t.requests as u64, Relaxed);
        for (sum, d) in self
            .stage_nanos
            .iter()
            .zip([t.queue, t.staging, t.sync_wait, t.fsync])
        {
            sum.fetch_add(nanos(d), Relaxed);
        }
    }

    /// One request's whole time in the engine, from submission to answer.
    pub(super) fn record_answer(&self, took: Duration) {
        self.answered.fetch_add(1, Relaxed);
        self.engine_nanos.fetch_add(nanos(took), Relaxed);
    }

    pub fn snapshot(&self) -> GroupCommits {
        GroupCommits {
            syncs: self.syncs.load(Relaxed),
            requests: self.requests.load(Relaxed),
            micros: std::array::from_fn(|i| self.micros[i].load(Relaxed)),
            timed: self.timed.load(Relaxed),
            stage_nanos: std::array::from_fn(|i| self.stage_nanos[i].load(Relaxed)),
            answered: self.answered.load(Relaxed),
            engine_nanos: self.engine_nanos.load(Relaxed),
        }
    }
}

/// The figures at one moment, or between two moments (`since`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupCommits {
    pub syncs: u64,
    /// Requests acknowledged by these syncs, refusals included (not those of a batch that
    /// appended nothing, answered from memory without a sync).
    pub requests: u64,
    micros: [u64; BUCKETS],
    timed: u64,
    stage_nanos: [u64; Stage::TIMED],
    /// Requests the engine answered (refusals included, failures not).
    pub answered: u64,
    engine_nanos: u64,
}

impl GroupCommits {
    /// What happened after `earlier`, a snapshot of the same engine.
    pub fn since(&self, earlier: &GroupCommits) -> GroupCommits {
        GroupCommits {
            syncs: self.syncs.saturating_sub(earlier.syncs),
            requests: self.requests.saturating_sub(earlier.requests),
            micros: std::array::from_fn(|i| self.micros[i].saturating_sub(earlier.micros[i])),
            timed: self.timed.saturating_sub(earlier.timed),
            stage_nanos: std::array::from_fn(|i| {
                self.stage_nanos[i].saturating_sub(earlier.stage_nanos[i])
            }),
            answered: self.answered.saturating_sub(earlier.answered),
            engine_nanos: self.engine_nanos.saturating_sub(earlier.engine_nanos),
        }
    }

    /// `engine_mean` and `stage_mean` in whole µs: for logs and replies.
    pub fn engine_mean_micros(&self) -> u64 {
        self.engine_mean().as_micros() as u64
    }
    pub fn stage_mean_micros(&self, stage: Stage) -> u64 {
        self.stage_mean(stage).as_micros() as u64
    }

    /// An answered request's mean time in the engine, from submission to answer.
    pub fn engine_mean(&self) -> Duration {
        Duration::from_nanos(self.engine_nanos / self.answered.max(1))
    }

    /// The mean time an answered request spent in `stage`. The answer's is what is left of
    /// `engine_mean` (the other stages are counted at the sync stage, over nearly the same
    /// requests: not those failed by the disk).
    pub fn stage_mean(&self, stage: Stage) -> Duration {
        let mean = |i: usize| Duration::from_nanos(self.stage_nanos[i] / self.timed.max(1));
        match stage as usize {
            i if i < Stage::TIMED => mean(i),
            _ => {
                let before: Duration = (0..Stage::TIMED).map(mean).sum();
                self.engine_mean().saturating_sub(before)
            }
        }
    }

    pub fn requests_per_sync(&self) -> f64 {
        self.requests as f64 / self.syncs.max(1) as f64
    }

    /// `quantile` in whole µs, 0 before the first sync: for logs and replies.
    pub fn quantile_micros(&self, q: f64) -> u64 {
        self.quantile(q).map_or(0, |d| d.as_micros() as u64)
    }

    /// An upper bound of the `q` quantile (0 < q ≤ 1) of the syncs' durations: the end of
    /// the bucket that holds it. None before the first sync.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let total: u64 = self.micros.iter().sum();
        let rank = ((total as f64 * q).ceil() as u64).clamp(1, total.max(1));
        let mut seen = 0;
        for (i, n) in self.micros.iter().enumerate() {
            seen += n;
            if total > 0 && seen >= rank {
                return Some(Duration::from_micros(bucket_start(i + 1)));
            }
        }
        None
    }
}

/// Bucket of a duration: its octave (whole µs, floor of log2), then which quarter of it.
fn bucket(took: Duration) -> usize {
    let us = took.as_micros().clamp(1, u64::MAX as u128) as u64;
    let octave = 63 - us.leading_zeros();
    // The two bits after the leading one say which quarter of the octave.
    let quarter = if octave >= 2 {
        (us >> (octave - 2)) & 3
    } else {
        (us << (2 - octave)) & 3
    };
    ((octave * STEPS) as usize + quarter as usize).min(BUCKETS - 1)
}

/// The first whole µs of bucket `i`: 2^octave × (1 + quarter / 4), rounded up.
fn bucket_start(i: usize) -> u64 {
    let (octave, quarter) = (i as u32 / STEPS, i as u64 % STEPS as u64);
    ((1u64 << octave) * (4 + quarter)).div_ceil(4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duration_falls_in_the_bucket_that_starts_at_or_below_it() {
        for us in [
            1u64,
            2,
            3,
            4,
            5,
            7,
            8,
            100,
            300,
            1_000,
            4_096,
            65_535,
            100_000_000,
        ] {
            let i = bucket(Duration::from_micros(us));
            assert!(bucket_start(i) <= us, "{us} µs in bucket {i}");
            assert!(us < bucket_start(i + 1), "{us} µs in bucket {i}");
        }
        assert_eq!(bucket(Duration::ZERO), 0);
        assert_eq!(bucket(Duration::from_secs(3600)), BUCKETS - 1);
    }

    #[test]
    fn quantiles_bound_the_durations_recorded_within_a_quarter() {
        let stats = SyncStats::default();
        assert_eq!(stats.snapshot().quantile(0.5), None);
        for us in 1..=1000u64 {
            stats.record(Duration::from_micros(us * 10), 3);
        }
        let all = stats.snapshot();
        assert_eq!((all.syncs, all.requests), (1000, 3000));
        assert_eq!(all.requests_per_sync(), 3.0);
        for (q, exact) in [(0.5, 5_000.0), (0.99, 9_900.0), (1.0, 10_000.0)] {
            let bound = all.quantile(q).unwrap().as_micros() as f64;
            assert!(
                bound >= exact && bound <= exact * 1.25 + 1.0,
                "q {q}: {bound}"
            );
        }
    }

    #[test]
    fn stage_means_add_up_to_the_time_in_the_engine() {
        let stats = SyncStats::default();
        let us = Duration::from_micros;
        stats.record_stages(StageTimes {
            requests: 2,
            queue: us(20),
            staging: us(40),
            sync_wait: us(60),
            fsync: us(400),
        });
        stats.record_answer(us(300));
        stats.record_answer(us(340));
        let g = stats.snapshot();
        let means: Vec<Duration> = Stage::ALL.iter().map(|s| g.stage_mean(*s)).collect();
        assert_eq!(means, [us(10), us(20), us(30), us(200), us(60)]);
        assert_eq!(means.iter().sum::<Duration>(), g.engine_mean());
        // Nothing answered yet, or stages longer than the whole: no negative answer time.
        assert_eq!(
            SyncStats::default().snapshot().stage_mean(Stage::Answer),
            us(0)
        );
        stats.record_stages(StageTimes {
            requests: 1,
            fsync: us(10_000),
            ..StageTimes::default()
        });
        assert_eq!(stats.snapshot().stage_mean(Stage::Answer), us(0));
    }

    #[test]
    fn since_keeps_only_what_came_after() {
        let stats = SyncStats::default();
        stats.record(Duration::from_micros(50), 1);
        let before = stats.snapshot();
        stats.record(Duration::from_millis(5), 20);
        let phase = stats.snapshot().since(&before);
        assert_eq!((phase.syncs, phase.requests), (1, 20));
        assert!(phase.quantile(0.01).unwrap() >= Duration::from_millis(5));
        stats.record_answer(Duration::from_millis(3));
        let later = stats.snapshot();
        stats.record_answer(Duration::from_millis(1));
        let phase = stats.snapshot().since(&later);
        assert_eq!(
            (phase.answered, phase.engine_mean()),
            (1, Duration::from_millis(1))
        );
    }
}
