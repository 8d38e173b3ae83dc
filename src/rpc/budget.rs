//! The refusal budget: how many refusals one credential may earn before its requests are
//! turned away for a while. Two things make refusals worth bounding:
//! - a verification code carries 35 bits of MAC, and a pass must resist guessing
//!   (DOMAIN.md): unbounded, one credential could try every tag of a serial it has seen in
//!   about two weeks at this server's speed;
//! - a refusal the engine decides is a ledger record and a remembered request for ever, so a
//!   leaked credential sending fresh request ids would grow the ledger without end.
//!
//! Kept per credential as one time (GCRA, a token bucket stored as the moment it would be
//! full again): `burst` refusals at once, then one each `interval`. Pure: the caller gives
//! the time. Requests are turned away before anything is checked, so a guess past the
//! budget learns nothing.

use std::collections::HashMap;
use std::sync::Mutex;

/// Credentials tracked before those whose debt has run out are forgotten.
const TRACKED_MAX: usize = 4_096;

pub struct RefusalBudget {
    interval_ms: i64,
    /// How far ahead of now a credential's debt may run: `burst` refusals' worth, less one.
    tolerance_ms: i64,
    /// Per credential scope: when its debt is paid off (the GCRA's theoretical arrival time).
    paid_off_at: Mutex<HashMap<String, i64>>,
}

impl RefusalBudget {
    pub fn new(burst: u32, per_hour: u32) -> RefusalBudget {
        let interval_ms = 3_600_000 / i64::from(per_hour.max(1));
        RefusalBudget {
            interval_ms,
            tolerance_ms: interval_ms * i64::from(burst.max(1) - 1),
            paid_off_at: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(ms)`: the credential has spent its budget; it may try again in `ms`.
    pub fn check(&self, scope: &str, now_ms: i64) -> Result<(), i64> {
        let paid_off_at = self.lock().get(scope).copied().unwrap_or(now_ms);
        let wait = paid_off_at - now_ms - self.tolerance_ms;
        if wait > 0 {
            Err(wait)
        } else {
            Ok(())
        }
    }

    /// Records `n` refusals earned by the credential.
    pub fn spend(&self, scope: &str, now_ms: i64, n: u32) {
        if n == 0 {
            return;
        }
        let mut paid_off_at = self.lock();
        if paid_off_at.len() >= TRACKED_MAX && !paid_off_at.contains_key(scope) {
            paid_off_at.retain(|_, at| *at > now_ms);
        }
        let at = paid_off_at.entry(scope.to_owned()).or_insert(now_ms);
        *at = (*at).max(now_ms) + self.interval_ms * i64::from(n);
    }

    /// Credentials tracked: some may have paid off their debt since.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, i64>> {
        // The map holds plain times: one left by a panicking thread is still right.
        self.paid_off_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    #[test]
    fn a_burst_then_one_refusal_per_interval() {
        let budget = RefusalBudget::new(3, 60); // one a minute after three at once
        for _ in 0..3 {
            assert_eq!(budget.check("a", 0), Ok(()));
            budget.spend("a", 0, 1);
        }
        assert_eq!(
            budget.check("a", 0),
            Err(60_000),
            "the fourth waits a minute"
        );
        assert_eq!(budget.check("a", 59_999), Err(1));
        assert_eq!(budget.check("a", 60_000), Ok(()));
        budget.spend("a", 60_000, 1);
        assert_eq!(
            budget.check("a", 60_000),
            Err(60_000),
            "one more, then wait again"
        );
        assert_eq!(budget.check("b", 0), Ok(()), "each credential has its own");
    }

    #[test]
    fn an_idle_credential_gets_its_whole_burst_back_and_no_more() {
        let budget = RefusalBudget::new(5, 600);
        budget.spend("a", 0, 5);
        assert!(budget.check("a", 0).is_err());
        // A day later the debt is long paid: five at once again, not a day's worth.
        let later = 24 * HOUR;
        budget.spend("a", later, 5);
        assert!(budget.check("a", later).is_err());
        budget.spend("b", later, 4);
        assert_eq!(budget.check("b", later), Ok(()));
    }

    #[test]
    fn a_workshops_refusals_count_one_each() {
        let budget = RefusalBudget::new(10, 3_600);
        budget.spend("a", 0, 10);
        assert_eq!(budget.check("a", 0), Err(1_000));
        budget.spend("a", 0, 0);
        assert_eq!(
            budget.check("a", 0),
            Err(1_000),
            "nothing refused spends nothing"
        );
    }

    #[test]
    fn paid_off_credentials_are_forgotten_when_the_map_is_full() {
        let budget = RefusalBudget::new(1, 3_600);
        for i in 0..TRACKED_MAX {
            budget.spend(&format!("c{i}"), 0, 1);
        }
        assert_eq!(budget.tracked(), TRACKED_MAX);
        budget.spend("late", 10_000, 1);
        assert_eq!(
            budget.tracked(),
            1,
            "only the credential still in debt is kept"
        );
        assert!(budget.check("late", 10_000).is_err());
    }
}
