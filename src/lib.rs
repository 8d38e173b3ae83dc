//! passnum: the voucher ledger and clearing engine of the Pass numérique.
//!
//! See ARCHITECTURE.md for the map, the invariants and the on-disk format.

pub mod domain;
pub mod storage;
pub mod engine;
pub mod rpc;
pub mod code;
pub mod render;
pub mod config;
pub mod server;
pub mod cli;
pub mod client;
pub mod demo;
pub mod stress;
