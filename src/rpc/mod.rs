//! The protocol layer: tonic services that authenticate, validate, translate to commands,
//! and translate answers back. Only this module (and the CLI) knows protobuf.

pub mod errors;
pub mod pb;
pub mod auth;
pub mod context;
pub mod convert;
pub mod registry;
pub mod issuance;
pub mod ledger;
pub mod redemption;
