//! Who may call what. Each credential has one role; a role reaches a fixed set of services.
//! The partner's role may report inventory and nothing else (least privilege, DOMAIN rule 8).
//! A credential may list several secrets, so old and new are valid side by side during a
//! rotation (rule 9). Secrets are configured as SHA-256 digests, never in clear.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tonic::Request;

use crate::domain::diagnosis::PartnerCredential;
use crate::error::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Administration, decisions and targeting.
    Admin,
    /// Decisions and targeting (sign-in gateways, proxies).
    Gateway,
    /// Inventory reports only.
    Partner,
}

/// One configured credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialConfig {
    /// The client's id; for the partner, the connector's `partner_app_id`.
    pub id: String,
    pub role: Role,
    /// Hex SHA-256 digests of the valid secrets (two during a rotation).
    pub secret_sha256: Vec<String>,
}

/// The authenticated caller, put in each request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub id: String,
    pub role: Role,
}

#[derive(Debug, Default)]
pub struct Credentials {
    by_digest: HashMap<[u8; 32], Caller>,
    roles: HashMap<String, Role>,
}

pub fn sha256_hex(secret: &str) -> String {
    Sha256::digest(secret.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

impl Credentials {
    pub fn new(configs: &[CredentialConfig]) -> anyhow::Result<Self> {
        let mut c = Credentials::default();
        for cfg in configs {
            anyhow::ensure!(!cfg.id.is_empty(), "a credential has an empty id");
            anyhow::ensure!(!cfg.secret_sha256.is_empty(), "credential {} has no secret_sha256", cfg.id);
            anyhow::ensure!(
                c.roles.insert(cfg.id.clone(), cfg.role).is_none(),
                "credential {} is listed twice",
                cfg.id
            );
            for hex in &cfg.secret_sha256 {
                let digest = parse_digest(hex)
                    .ok_or_else(|| anyhow::anyhow!("credential {}: {hex:?} is not a hex SHA-256 digest", cfg.id))?;
                let caller = Caller { id: cfg.id.clone(), role: cfg.role };
                anyhow::ensure!(
                    c.by_digest.insert(digest, caller).is_none(),
                    "credential {}: a secret is reused",
                    cfg.id
                );
            }
        }
        Ok(c)
    }

    /// With no credentials configured, authentication is off (a warning is logged at start).
    pub fn enabled(&self) -> bool {
        !self.roles.is_empty()
    }

    /// Checks the least-privilege set-up of the partner app the connector names.
    pub fn partner_credential(&self, partner_app_id: &str) -> PartnerCredential {
        if !self.enabled() {
            return PartnerCredential::NotChecked;
        }
        match self.roles.get(partner_app_id) {
            None => PartnerCredential::Missing,
            Some(Role::Partner) => PartnerCredential::LeastPrivilege,
            Some(_) => PartnerCredential::ExtraPermissions,
        }
    }

    fn authenticate(&self, header: Option<&str>) -> Result<Caller, Error> {
        let header = header.ok_or_else(|| {
            Error::Unauthenticated("missing authorization metadata: send \"authorization: Bearer <secret>\"".into())
        })?;
        // The scheme is case-insensitive (RFC 7235): "Bearer", "bearer", "BEARER".
        let secret = header
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, secret)| secret)
            .ok_or_else(|| Error::Unauthenticated("authorization must be \"Bearer <secret>\"".into()))?;
        let digest: [u8; 32] = Sha256::digest(secret.trim().as_bytes()).into();
        self.by_digest.get(&digest).cloned().ok_or_else(|| Error::Unauthenticated("unknown or revoked secret".into()))
    }

    /// The caller behind `header`, if its role may call `service`.
    fn admit(&self, header: Option<&str>, service: &str, roles: &[Role]) -> Result<Caller, Error> {
        let caller = self.authenticate(header)?;
        if !roles.contains(&caller.role) {
            return Err(Error::PermissionDenied(format!(
                "credential {} has the {:?} role, which may not call {service}",
                caller.id, caller.role
            )));
        }
        Ok(caller)
    }
}

fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in hex.as_bytes().chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(chunk).ok()?, 16).ok()?;
    }
    Some(out)
}

/// An interceptor admitting only the given roles to a service.
pub fn require(
    credentials: Arc<Credentials>,
    service: &'static str,
    roles: &'static [Role],
) -> impl tonic::service::Interceptor + Clone {
    move |mut req: Request<()>| {
        if !credentials.enabled() {
            return Ok(req);
        }
        let header = req.metadata().get("authorization").and_then(|v| v.to_str().ok());
        let caller = credentials.admit(header, service, roles)?;
        req.extensions_mut().insert(caller);
        Ok(req)
    }
}

/// The caller a request was admitted as (`None` when authentication is off).
pub fn caller<T>(req: &Request<T>) -> Option<&Caller> {
    req.extensions().get::<Caller>()
}
