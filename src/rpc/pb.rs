//! Generated protobuf and gRPC code. Only `rpc` and the CLI see these types.
#![allow(clippy::all, clippy::pedantic)]

tonic::include_proto!("passnum.v1");

pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("passnum_descriptor");
