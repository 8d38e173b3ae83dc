//! Idle polling: the cores stay awake while a request is in the engine.
//!
//! A redemption crosses four threads (a runtime worker, the writer, the sync stage, the
//! runtime again) and waits for the disk in between. On a virtual machine whose idle
//! cores halt (a KVM or Firecracker guest without guest halt polling), each of those
//! hand-offs lands on a halted virtual CPU and pays for waking it: measured in the load
//! bench, the p50 of a lone redemption went from 0.74 ms to 0.36 ms with two busy loops at
//! idle priority beside the server, the same binary.
//!
//! So, as Seastar's reactor polls before it sleeps, one thread per core spins while a few
//! submissions wait for their answer, and for a short grace after the last one (the next
//! request of a busy client arrives in it). They run under `SCHED_IDLE`: the kernel gives
//! them only a core that nothing else wants and takes it back the moment a real thread
//! wakes. Under load they nap (`BUSY_IN_FLIGHT`); with nothing in flight they sleep.
//! Load bench, alternated: a lone redemption's p50 0.42-0.45 ms with them, 0.67-0.71 ms
//! without; 64 in flight unchanged. Linux only: elsewhere no such priority exists, and a
//! spinning thread would compete.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The pollers' shared counters. `in_flight` counts submissions waiting for their answer.
struct Shared {
    in_flight: AtomicUsize,
    /// Pollers asleep on `wake`: a submission takes the lock to wake them only then.
    sleeping: AtomicUsize,
    stop: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
    grace: Duration,
}

/// Owned by the engine's handles: the pollers stop when the last handle goes.
pub(super) struct IdlePoll {
    shared: Arc<Shared>,
}

/// A submission in flight: the pollers spin until it is dropped (and the grace after). It
/// borrows the counters: a submission pays no reference count.
pub(super) struct InFlight<'a>(&'a Shared);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, SeqCst);
    }
}

impl IdlePoll {
    /// Starts one poller per core, spinning `grace` past the last answer; `None` when
    /// `grace` is zero (polling off) or the platform cannot run them at idle priority.
    pub(super) fn start(grace: Duration) -> Option<IdlePoll> {
        if grace.is_zero() || !cfg!(target_os = "linux") {
            return None;
        }
        let shared = Arc::new(Shared {
            in_flight: AtomicUsize::new(0),
            sleeping: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            grace,
        });
        // Made first, so that a failed spawn stops the pollers already started.
        let polling = IdlePoll { shared };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        for _ in 0..cores {
            let shared = polling.shared.clone();
            std::thread::Builder::new()
                .name("idle-poll".into())
                .spawn(move || poll(&shared))
                .ok()?;
        }
        Some(polling)
    }

    /// Marks a submission in flight until the guard drops, waking sleeping pollers.
    pub(super) fn enter(&self) -> InFlight<'_> {
        let s = &self.shared;
        // SeqCst on both counters: either the poller sees this submission before it
        // sleeps, or this sees the poller asleep and wakes it under the lock.
        if s.in_flight.fetch_add(1, SeqCst) == 0 && s.sleeping.load(SeqCst) > 0 {
            let _held = s.lock.lock();
            s.wake.notify_all();
        }
        InFlight(s)
    }
}

impl Drop for IdlePoll {
    fn drop(&mut self) {
        let s = &self.shared;
        s.stop.store(true, SeqCst);
        let _held = s.lock.lock();
        s.wake.notify_all();
    }
}

fn poll(s: &Shared) {
    if !at_idle_priority() {
        tracing::warn!("idle polling off: this thread cannot be given idle priority");
        return;
    }
    while sleep_until_busy(s) {
        spin_while_busy(s);
    }
}

/// Sleeps while nothing is in flight; false once the engine stops.
fn sleep_until_busy(s: &Shared) -> bool {
    let Ok(mut held) = s.lock.lock() else {
        return false;
    };
    s.sleeping.fetch_add(1, SeqCst);
    while s.in_flight.load(SeqCst) == 0 && !s.stop.load(SeqCst) {
        held = match s.wake.wait(held) {
            Ok(held) => held,
            Err(_) => break,
        };
    }
    s.sleeping.fetch_sub(1, SeqCst);
    !s.stop.load(SeqCst)
}

/// Past this many submissions in flight, batches form and share their hand-offs, the
/// cores rarely halt, and spinning only slowed the threads doing the work (load bench:
/// 17-20 k redemptions/s at 64 in flight with it, 23-28 k without): the pollers nap.
const BUSY_IN_FLIGHT: usize = 4;
const NAP: Duration = Duration::from_millis(1);

/// Spins while a few submissions are in flight, and for the grace after the last one.
fn spin_while_busy(s: &Shared) {
    let mut quiet_since: Option<Instant> = None;
    while !s.stop.load(SeqCst) {
        match s.in_flight.load(SeqCst) {
            0 => {
                if quiet_since.get_or_insert_with(Instant::now).elapsed() >= s.grace {
                    return;
                }
            }
            n => {
                quiet_since = None;
                if n > BUSY_IN_FLIGHT {
                    std::thread::sleep(NAP);
                    continue;
                }
            }
        }
        for _ in 0..64 {
            std::hint::spin_loop();
        }
    }
}

/// Puts the calling thread under `SCHED_IDLE` (no privilege needed to lower one's own).
#[cfg(target_os = "linux")]
fn at_idle_priority() -> bool {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param for the call.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) == 0 }
}

#[cfg(not(target_os = "linux"))]
fn at_idle_priority() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pollers_spin_only_while_something_is_in_flight() {
        let poll = IdlePoll::start(Duration::from_millis(1)).expect("linux");
        let s = poll.shared.clone();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let settle = |sleeping: usize| {
            let until = Instant::now() + Duration::from_secs(10);
            while s.sleeping.load(SeqCst) != sleeping && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(1));
            }
            s.sleeping.load(SeqCst)
        };
        assert_eq!(settle(cores), cores, "all asleep with nothing in flight");
        let guard = poll.enter();
        assert_eq!(settle(0), 0, "all awake while a submission is in flight");
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(s.sleeping.load(SeqCst), 0, "still awake past the grace");
        drop(guard);
        assert_eq!(s.in_flight.load(SeqCst), 0);
        assert_eq!(settle(cores), cores, "asleep again after the grace");
        drop(poll);
        let until = Instant::now() + Duration::from_secs(10);
        while Arc::strong_count(&s) > 1 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(
            Arc::strong_count(&s),
            1,
            "the pollers ended with the engine"
        );
    }

    #[test]
    fn no_grace_means_no_pollers() {
        assert!(IdlePoll::start(Duration::ZERO).is_none());
    }
}
