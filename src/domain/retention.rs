//! How long the ledger remembers a request's answer: as long as its credential may ask
//! again. A retry is told the first answer (`decide`), so each answer is kept for every
//! request that carried an id; at national scale that is millions of entries a year
//! (`cargo bench --bench growth`). A credential refused for good (revoked, or expired)
//! can send nothing more: authentication refuses its token before any command is decided.
//! So its answers can go, and the map holds at most a credential lifetime of requests
//! instead of every request ever made.

use super::record::{Fact, Outcome};
use super::state::State;
use super::types::Timestamp;

/// Most credentials one record forgets (32 bytes each): any left over go at the next
/// sweep.
pub const FORGET_CREDENTIALS_MAX: usize = 10_000;

/// The credentials whose requests to forget now: those refused for good before the day
/// before today (UTC), not forgotten yet, in hash order. Forgetting reads every remembered
/// request, so it happens at most once a day: the set grows only when a day begins. The
/// day's margin keeps a token refused even if the server's clock is set back by a day.
pub fn due(state: &State, now: Timestamp) -> Vec<[u8; 32]> {
    let today = now.0 - now.0.rem_euclid(Timestamp::MS_PER_DAY);
    let before = Timestamp(today - Timestamp::MS_PER_DAY);
    let mut due: Vec<[u8; 32]> = state
        .credentials
        .iter()
        .filter(|(_, c)| !c.requests_forgotten && c.refused_from().is_some_and(|at| at < before))
        .map(|(hash, _)| *hash)
        .collect();
    due.sort_unstable();
    due.truncate(FORGET_CREDENTIALS_MAX);
    due
}

/// The fact and answer of forgetting `due`'s credentials; None when there are none.
pub fn forget(due: Vec<[u8; 32]>) -> Option<(Fact, Outcome)> {
    if due.is_empty() {
        return None;
    }
    let credentials = u32::try_from(due.len()).expect("at most FORGET_CREDENTIALS_MAX");
    Some((
        Fact::RequestsForgotten { token_hashes: due },
        Outcome::RequestsForgotten { credentials },
    ))
}
