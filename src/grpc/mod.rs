//! The gRPC edge: one file per service; each handler converts, delegates to the engine and
//! converts back. Validation of what comes in lives in `incoming`, rendering of what goes out
//! in `outgoing`; status mapping in `crate::error`.

use std::sync::Arc;
use std::time::Duration;

use tonic::Request;

use crate::engine::{Engine, Watcher};
use crate::error::Result;

pub mod admin;
pub mod compliance;
pub mod ext_authz;
pub mod incoming;
pub mod inventory;
pub mod outgoing;
pub mod targeting;

/// The handlers' shared state: the engine, and the watcher of its decisions.
#[derive(Clone)]
pub struct Handlers {
    pub engine: Arc<Engine>,
    pub watcher: Arc<Watcher>,
}

const DEFAULT_WAIT: Duration = Duration::from_secs(5);
const MAX_WAIT: Duration = Duration::from_secs(30);

impl Handlers {
    /// Before a read other than a decision: refuses it while this replica cannot vouch for its
    /// data (decisions deny instead), then waits for `min_revision` as [`Handlers::at_least`].
    async fn readable<T>(&self, req: &Request<T>, min_revision: u64) -> Result<()> {
        self.engine.check_available()?;
        self.at_least(req, min_revision).await
    }

    /// Read your writes: waits until this replica has applied `min_revision`, for as long as
    /// the call's deadline allows.
    async fn at_least<T>(&self, req: &Request<T>, min_revision: u64) -> Result<()> {
        if min_revision == 0 {
            return Ok(());
        }
        self.engine.wait_for(min_revision, self.wait_budget(req)).await
    }

    /// How long a read may wait for a revision: the call's deadline, within bounds.
    fn wait_budget<T>(&self, req: &Request<T>) -> Duration {
        req.metadata()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(crate::layers::parse_grpc_timeout)
            .unwrap_or(DEFAULT_WAIT)
            .min(MAX_WAIT)
    }
}
