//! The protocol layer: tonic services that authenticate, validate, translate to commands,
//! and translate answers back. Only this module (and the CLI) knows protobuf.

pub mod auth;
pub mod budget;
pub mod clearing;
pub mod context;
pub mod convert;
pub mod errors;
pub mod feed;
pub mod issuance;
pub mod ledger;
pub mod pb;
pub mod redemption;
pub mod registry;
pub mod reports;
pub mod sites;
