//! passnum: the voucher ledger and clearing engine of the Pass numérique.
//!
//! See ARCHITECTURE.md for the map, the invariants and the on-disk format.

pub mod cli;
pub mod cli_clearing;
pub mod cli_mirror;
pub mod cli_scans;
pub mod client;
pub mod code;
pub mod config;
pub mod demo;
pub mod directory;
pub mod domain;
pub mod engine;
pub mod export;
pub mod gate;
pub mod opendata;
pub mod render;
pub mod rpc;
pub mod server;
pub mod signed_head;
pub mod storage;
pub mod stress;
pub mod tls;
