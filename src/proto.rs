//! Generated code for `posture.v1`, and the descriptor set that reflection serves.
#![allow(missing_docs, unreachable_pub, clippy::all)]

tonic::include_proto!("posture.v1");

/// The encoded `FileDescriptorSet` of every posture proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/posture_descriptor.bin"));
