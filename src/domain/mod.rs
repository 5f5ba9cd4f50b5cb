//! The pure core: evaluation, access decisions, targeting and diagnosis as functions of
//! (state, device, now). No I/O, no clock, no gRPC or SQL types.

pub mod access;
pub mod compliance;
pub mod connector;
pub mod diagnosis;
pub mod grace;
pub mod model;
pub mod parallel;
pub mod preview;
pub mod state;
pub mod summary;
pub(crate) mod table;
pub mod targeting;
pub mod version;

pub use model::Timestamp;
pub use state::{Change, State, Touched};

/// At most the first 40 characters of what was sent, for an error message: a message that
/// echoes a huge value would not fit in a gRPC status.
pub fn quote(s: &str) -> String {
    match s.char_indices().nth(40) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_string(),
    }
}
