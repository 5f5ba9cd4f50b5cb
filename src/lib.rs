//! posture: device-compliance and access decisions for partner-managed Macs, over gRPC.

pub mod audit;
pub mod auth;
pub mod cache;
pub mod clock;
pub mod config;
pub mod demo;
pub mod domain;
pub mod engine;
pub mod error;
pub mod grpc;
pub mod layers;
pub mod loading;
pub mod manifest;
pub mod probe;
pub mod proto;
pub mod reload;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod tls;
