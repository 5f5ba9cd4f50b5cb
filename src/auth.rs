//! Who may call what. Each credential has one role; a role reaches a fixed set of services.
//! The partner's role may report inventory and nothing else (least privilege, DOMAIN rule 8).
//! A credential may list several secrets, so old and new are valid side by side during a
//! rotation (rule 9). Secrets are configured as SHA-256 digests, never in clear.

use std::collections::HashMap;
use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tonic::body::Body;
use tonic::transport::server::TcpConnectInfo;
use tonic::{Request, Status};
use tower::{Layer, Service};

use crate::audit;
use crate::domain::diagnosis::PartnerCredential;
use crate::error::Error;
use crate::telemetry;
use crate::tls::TlsPeer;

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
#[serde(deny_unknown_fields)]
pub struct CredentialConfig {
    /// The client's id; for the partner, the connector's `partner_app_id`. A client
    /// certificate that names it (see [`crate::tls`]) authenticates as this credential.
    pub id: String,
    pub role: Role,
    /// Hex SHA-256 digests of the valid secrets (two during a rotation); none for a
    /// credential that authenticates by client certificate only.
    #[serde(default)]
    pub secret_sha256: Vec<String>,
}

/// The authenticated caller, put in each request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Shared, so that noting it for telemetry and audit copies no string.
    pub id: Arc<str>,
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
            anyhow::ensure!(
                c.roles.insert(cfg.id.clone(), cfg.role).is_none(),
                "credential {} is listed twice",
                cfg.id
            );
            for hex in &cfg.secret_sha256 {
                let digest = parse_digest(hex)
                    .ok_or_else(|| anyhow::anyhow!("credential {}: {hex:?} is not a hex SHA-256 digest", cfg.id))?;
                let caller = Caller { id: cfg.id.as_str().into(), role: cfg.role };
                anyhow::ensure!(
                    c.by_digest.insert(digest, caller).is_none(),
                    "credential {}: a secret is reused",
                    cfg.id
                );
            }
        }
        Ok(c)
    }

    /// The ids of the credentials (no secrets), for logs.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        let mut ids: Vec<&str> = self.roles.keys().map(String::as_str).collect();
        ids.sort_unstable();
        ids.into_iter()
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

    /// The ids of the credentials that have no secret: they can authenticate only by a client
    /// certificate.
    pub fn certificate_only(&self) -> impl Iterator<Item = &str> {
        let with_secret: std::collections::HashSet<&str> = self.by_digest.values().map(|c| &*c.id).collect();
        self.roles.keys().map(String::as_str).filter(move |id| !with_secret.contains(id))
    }

    /// The caller a request is from: by its bearer secret when it sends one, else by the
    /// client certificate of its connection.
    fn authenticate(&self, header: Option<&str>, certificate: Option<&[String]>) -> Result<Caller, Error> {
        match (header, certificate) {
            (Some(header), _) => self.by_bearer(header),
            (None, Some(names)) => self.by_certificate(names),
            (None, None) => Err(Error::Unauthenticated(
                "missing authorization metadata: send \"authorization: Bearer <secret>\"".into(),
            )),
        }
    }

    fn by_certificate(&self, names: &[String]) -> Result<Caller, Error> {
        let mut named = names.iter().filter_map(|n| self.roles.get_key_value(n));
        let Some((id, role)) = named.next() else {
            let names = names.iter().take(4).map(|n| format!("\"{}\"", crate::domain::quote(n))).collect::<Vec<_>>();
            let names = names.join(", ");
            return Err(Error::Unauthenticated(format!(
                "the client certificate names [{names}], and no credential has any of those ids; \
                 send \"authorization: Bearer <secret>\" or use a certificate that names a credential"
            )));
        };
        if let Some((other, _)) = named.find(|(other, _)| *other != id) {
            return Err(Error::Unauthenticated(format!(
                "the client certificate names two credentials, {id} and {other}: it must name one"
            )));
        }
        Ok(Caller { id: id.as_str().into(), role: *role })
    }

    fn by_bearer(&self, header: &str) -> Result<Caller, Error> {
        // The scheme is case-insensitive (RFC 7235): "Bearer", "bearer", "BEARER".
        let secret = header
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, secret)| secret)
            .ok_or_else(|| Error::Unauthenticated("authorization must be \"Bearer <secret>\"".into()))?;
        let digest: [u8; 32] = Sha256::digest(secret.trim().as_bytes()).into();
        self.by_digest.get(&digest).cloned().ok_or_else(|| Error::Unauthenticated("unknown or revoked secret".into()))
    }

    /// The id of the credential `header` names, when it names one (for the audit trail: a
    /// refusal for the wrong role says whose; an unknown secret names nobody).
    fn known_id(&self, header: Option<&str>, certificate: Option<&[String]>) -> Option<&str> {
        let caller = self.authenticate(header, certificate).ok()?;
        self.roles.get_key_value(&*caller.id).map(|(id, _)| id.as_str())
    }

    /// The caller a request is from, if its role may call `service`.
    fn admit(
        &self,
        header: Option<&str>,
        certificate: Option<&[String]>,
        service: &str,
        roles: &[Role],
    ) -> Result<Caller, Error> {
        let caller = self.authenticate(header, certificate)?;
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

/// The credentials in force, swapped whole when they are reloaded (a rotation needs no
/// restart): every call reads the set current when it arrives.
#[derive(Debug, Clone, Default)]
pub struct CredentialsHandle(Arc<ArcSwap<Credentials>>);

impl CredentialsHandle {
    pub fn new(credentials: Arc<Credentials>) -> Self {
        CredentialsHandle(Arc::new(ArcSwap::new(credentials)))
    }
    pub fn current(&self) -> Arc<Credentials> {
        self.0.load_full()
    }
    /// The same for the length of one call, without counting a reference.
    fn guard(&self) -> arc_swap::Guard<Arc<Credentials>> {
        self.0.load()
    }
    pub fn replace(&self, credentials: Credentials) {
        self.0.store(Arc::new(credentials));
    }
}

/// Which roles may call the services under a path prefix.
#[derive(Debug, Clone, Copy)]
pub struct Access {
    /// e.g. `/posture.v1.AdminService/`
    pub prefix: &'static str,
    /// The service's name, as refusals say it.
    pub service: &'static str,
    pub roles: &'static [Role],
    /// Whether the writes its calls make are recorded in the audit trail as the caller's.
    pub audited: bool,
}

/// The tower layer that admits each call by its path: the caller's credential must have a
/// role the path's service allows (paths no [`Access`] names — health, public reflection —
/// need none). An admitted caller is put in the request's extensions; a refusal is answered
/// at once, and recorded in the audit trail.
#[derive(Clone)]
pub struct Authorize {
    credentials: CredentialsHandle,
    access: Arc<[Access]>,
}

impl Authorize {
    pub fn new(credentials: CredentialsHandle, access: Vec<Access>) -> Self {
        Authorize { credentials, access: access.into() }
    }
}

impl<S> Layer<S> for Authorize {
    type Service = Authorized<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Authorized { inner, layer: self.clone() }
    }
}

#[derive(Clone)]
pub struct Authorized<S> {
    inner: S,
    layer: Authorize,
}

use crate::layers::BoxFuture;

impl<S> Service<http::Request<Body>> for Authorized<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<http::Response<Body>, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        let path = req.uri().path();
        let Some(access) = self.layer.access.iter().find(|a| path.starts_with(a.prefix)).copied() else {
            return Box::pin(self.inner.call(req));
        };
        let credentials = self.layer.credentials.guard();
        let mut who = None;
        let mut credential = None;
        if credentials.enabled() {
            let header = req.headers().get("authorization").and_then(|v| v.to_str().ok());
            let tls = req.extensions().get::<TlsPeer>();
            let certificate = tls.and_then(|t| t.certificate_names.as_deref());
            match credentials.admit(header, certificate, access.service, access.roles) {
                Ok(caller) => {
                    who = access.audited.then(|| caller.id.to_string());
                    credential = Some(caller.id.clone());
                    req.extensions_mut().insert(caller);
                }
                Err(e) => {
                    let tcp = req.extensions().get::<TcpConnectInfo>().and_then(TcpConnectInfo::remote_addr);
                    let peer = tcp.or(tls.and_then(|t| t.remote));
                    let status = Status::from(e);
                    let credential = credentials.known_id(header, certificate);
                    audit::refused(
                        credential,
                        req.uri().path().trim_start_matches('/'),
                        peer,
                        status.code(),
                        status.message(),
                    );
                    return Box::pin(std::future::ready(Ok(status.into_http())));
                }
            }
        } else if access.audited {
            who = Some(OPEN.to_string());
        }
        match who {
            Some(who) => {
                let rpc = req.uri().path().trim_start_matches('/').to_string();
                Box::pin(telemetry::as_credential(credential, audit::by(who, rpc, self.inner.call(req))))
            }
            None => Box::pin(telemetry::as_credential(credential, self.inner.call(req))),
        }
    }
}

/// The caller a request was admitted as (`None` when authentication is off).
pub fn caller<T>(req: &Request<T>) -> Option<&Caller> {
    req.extensions().get::<Caller>()
}

/// Who the audit trail says wrote, when authentication is off.
const OPEN: &str = "anyone (authentication is off)";
