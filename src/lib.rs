//! posture: device-compliance and access decisions for partner-managed Macs, over gRPC.
pub mod domain;
