//! Group-commit figures: how many fsyncs the sync stage made, how many requests they
//! acknowledged, and how long each took. The sync stage adds to atomics; anyone reads a
//! snapshot at any time, and two snapshots give a phase's figures (the load bench prints
//! them, the writer logs them when it stops). They tell a slow disk from a slow engine
//! without a tracer on the machine.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Buckets per doubling of a duration: a quantile is known within 25 %, enough to tell a
/// 0.3 ms flush from a 3 ms one, and recording one costs three relaxed adds.
const STEPS: u32 = 4;
/// Bucket 4k + q starts at 2^k × (1 + q/4) µs. The last starts at 117 s and also holds
/// anything longer (its bound then understates it: such a sync is a broken disk anyway).
const BUCKETS: usize = 27 * STEPS as usize;

/// Kept by the sync stage for the engine's whole life, across reopens.
pub struct SyncStats {
    syncs: AtomicU64,
    requests: AtomicU64,
    micros: [AtomicU64; BUCKETS],
}

impl Default for SyncStats {
    fn default() -> Self {
        SyncStats {
            syncs: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            micros: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl SyncStats {
    /// One fsync that worked, and the requests it acknowledged.
    pub(super) fn record(&self, took: Duration, requests: usize) {
        self.syncs.fetch_add(1, Relaxed);
        self.requests.fetch_add(requests as u64, Relaxed);
        self.micros[bucket(took)].fetch_add(1, Relaxed);
    }

    pub fn snapshot(&self) -> GroupCommits {
        GroupCommits {
            syncs: self.syncs.load(Relaxed),
            requests: self.requests.load(Relaxed),
            micros: std::array::from_fn(|i| self.micros[i].load(Relaxed)),
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
}

impl GroupCommits {
    /// What happened after `earlier`, a snapshot of the same engine.
    pub fn since(&self, earlier: &GroupCommits) -> GroupCommits {
        GroupCommits {
            syncs: self.syncs.saturating_sub(earlier.syncs),
            requests: self.requests.saturating_sub(earlier.requests),
            micros: std::array::from_fn(|i| self.micros[i].saturating_sub(earlier.micros[i])),
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
    fn since_keeps_only_what_came_after() {
        let stats = SyncStats::default();
        stats.record(Duration::from_micros(50), 1);
        let before = stats.snapshot();
        stats.record(Duration::from_millis(5), 20);
        let phase = stats.snapshot().since(&before);
        assert_eq!((phase.syncs, phase.requests), (1, 20));
        assert!(phase.quantile(0.01).unwrap() >= Duration::from_millis(5));
    }
}
