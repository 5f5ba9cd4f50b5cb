//! The gRPC edge: one file per service; each handler converts, delegates to the engine and
//! converts back. Validation lives in `convert`; status mapping in `crate::error`.

use std::sync::Arc;

use crate::engine::Engine;

pub mod admin;
pub mod compliance;
pub mod convert;
pub mod inventory;
pub mod targeting;

/// The handlers' shared state: the engine.
#[derive(Clone)]
pub struct Handlers {
    pub engine: Arc<Engine>,
}
