//! The pure core: evaluation, access decisions, targeting and diagnosis as functions of
//! (state, device, now). No I/O, no clock, no gRPC or SQL types.

pub mod access;
pub mod compliance;
pub mod connector;
pub mod diagnosis;
pub mod grace;
pub mod model;
pub mod state;
pub mod summary;
pub mod targeting;
pub mod version;

pub use model::Timestamp;
pub use state::{Change, State, Touched};
