//! The pure domain core: commands in, ledger records out. No I/O, no clock, no randomness:
//! time, serials and request identities are arguments, so every rule can be tested
//! exhaustively and every run replayed from a seed.

pub mod clearing;
pub mod command;
pub mod decide;
pub mod entities;
pub mod import;
pub mod merkle;
pub mod proof;
pub mod record;
pub mod refusal;
pub mod reports;
pub mod retention;
pub mod rules;
pub mod serial;
pub mod sharded;
pub mod state;
pub mod types;

pub use clearing::{Settlement, SettlementLine, SettlementStatus};
pub use command::*;
pub use decide::{decide, Decision, Rules, CARNET_SIZE_MAX};
pub use entities::*;
pub use record::*;
pub use refusal::Refusal;
pub use serial::Serial;
pub use sharded::ShardedMap;
pub use state::{Changes, Key, Remembered, State};
pub use types::*;
