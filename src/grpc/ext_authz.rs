//! `envoy.service.auth.v3.Authorization`: Envoy's external authorization, answered with the
//! CheckAccess decision for the user and the device the checked HTTP request names.

use std::sync::Arc;

use envoy_types::ext_authz::v3::pb::{Authorization, CheckRequest, CheckResponse};
use tonic::{Request, Response, Status};

use super::{incoming, outgoing};
use crate::config::ExtAuthzConfig;
use crate::domain::access;
use crate::engine::Engine;

/// The service's full name, as Envoy calls it and reflection lists it.
pub use envoy_types::pb::envoy::service::auth::v3::authorization_server::SERVICE_NAME;

/// The encoded `FileDescriptorSet` of the service and everything it imports, compiled by
/// build.rs from `proto/third_party` (envoy-types ships the Rust types but no descriptors).
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/ext_authz_descriptor.bin"));

#[derive(Clone)]
pub struct ExtAuthz {
    engine: Arc<Engine>,
    config: Arc<ExtAuthzConfig>,
}

impl ExtAuthz {
    pub fn new(engine: Arc<Engine>, config: ExtAuthzConfig) -> Self {
        ExtAuthz { engine, config: Arc::new(config) }
    }
}

#[tonic::async_trait]
impl Authorization for ExtAuthz {
    async fn check(&self, req: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        // Envoy must get a decision, not an error: a request naming no valid user or device is
        // denied, saying why. A replica past its maximum staleness denies in check_access.
        let answer = match incoming::ext_authz_identity(req.get_ref(), &self.config) {
            Ok((user_id, device_id)) => {
                let (decision, revision, cache_hit) = self.engine.decide(&device_id);
                let seen = access::seen_by(&decision, &user_id);
                crate::telemetry::decided(&seen, &user_id, revision, cache_hit);
                outgoing::ext_authz(&seen, revision)
            }
            Err(reasons) => {
                crate::telemetry::denied_for(&reasons);
                outgoing::ext_authz_refused(&reasons)
            }
        };
        Ok(Response::new(answer))
    }
}

#[cfg(test)]
mod tests {
    /// The vendored protos describe the envoy-types version Cargo.lock pins.
    #[test]
    fn vendored_protos_match_the_locked_envoy_types() {
        let dir = env!("CARGO_MANIFEST_DIR");
        let read = |path: &str| std::fs::read_to_string(format!("{dir}/{path}")).unwrap_or_default();
        let vendored = read("proto/third_party/VERSION");
        let lock = read("Cargo.lock");
        let locked = lock
            .split("[[package]]")
            .find(|p| p.contains("name = \"envoy-types\""))
            .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = \"")))
            .map(|v| format!("envoy-types-{}", v.trim_end_matches('"')));
        assert_eq!(
            Some(vendored.trim().to_string()),
            locked,
            "run proto/third_party/refresh.sh after changing envoy-types"
        );
    }
}
