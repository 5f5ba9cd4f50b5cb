//! How `posture apply` and `posture export` reach a running server: its URL, the admin
//! credential's secret (from `POSTURE_TOKEN` or a file, never the command line), and TLS when
//! the URL is https.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::proto::{self as pb, admin_service_client::AdminServiceClient};

#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// The server, e.g. http://127.0.0.1:50051 or https://posture.example.com
    #[arg(long, env = "POSTURE_SERVER", default_value = "http://127.0.0.1:50051")]
    pub server: String,
    /// A file holding the admin credential's secret [default: the POSTURE_TOKEN variable]
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// The CA certificate (PEM) that signed an https server's certificate
    #[arg(long)]
    pub ca_cert: Option<PathBuf>,
    /// This client's certificate (PEM), for a server that asks for one (with --client-key)
    #[arg(long, requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    #[arg(long, requires = "client_cert")]
    pub client_key: Option<PathBuf>,
}

/// The bearer secret on every call.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<tonic::metadata::Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

pub type Admin = AdminServiceClient<InterceptedService<Channel, Bearer>>;

/// A connected AdminService client.
pub async fn connect(args: &ServerArgs) -> anyhow::Result<Admin> {
    let token = match &args.token_file {
        Some(file) => {
            Some(std::fs::read_to_string(file).with_context(|| format!("reading the token file {}", file.display()))?)
        }
        None => std::env::var("POSTURE_TOKEN").ok(),
    };
    let bearer = match token.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
        Some(t) => Some(format!("Bearer {t}").parse().context("the token is not valid in a header")?),
        None => None,
    };
    let mut endpoint = Endpoint::from_shared(args.server.clone())
        .with_context(|| format!("--server {} is not a URL", args.server))?
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60));
    if args.server.starts_with("https://") {
        let ca =
            args.ca_cert.as_ref().context("an https server needs --ca-cert: the CA that signed its certificate")?;
        let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem));
        if let (Some(cert), Some(key)) = (&args.client_cert, &args.client_key) {
            let cert = std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?;
            let key = std::fs::read(key).with_context(|| format!("reading {}", key.display()))?;
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        endpoint = endpoint.tls_config(tls)?;
    }
    let channel = endpoint.connect().await.with_context(|| format!("connecting to {}", args.server))?;
    Ok(AdminServiceClient::with_interceptor(channel, Bearer(bearer)))
}

/// What the server holds that the files describe, at one revision.
#[derive(Debug, Clone)]
pub struct Current {
    pub policies: Vec<pb::Policy>,
    pub settings: pb::Settings,
    pub connector: pb::Connector,
    pub revision: u64,
}

/// Reads the policies, the settings and the connector, each at least at the revision the
/// first was read at.
pub async fn current(admin: &mut Admin) -> anyhow::Result<Current> {
    let listed = admin.list_policies(pb::ListPoliciesRequest { min_revision: 0 }).await.map_err(refused)?;
    let listed = listed.into_inner();
    let at = listed.revision;
    let settings = admin.get_settings(pb::GetSettingsRequest { min_revision: at }).await.map_err(refused)?;
    let connector = admin.get_connector(pb::GetConnectorRequest { min_revision: at }).await.map_err(refused)?;
    Ok(Current {
        policies: listed.policies,
        settings: settings.into_inner().settings.unwrap_or_default(),
        connector: connector.into_inner().connector.unwrap_or_default(),
        revision: at,
    })
}

/// A refused call as an error a person can act on: the status, and for a broken connection
/// what broke it (a TLS alert, say).
pub fn refused(status: tonic::Status) -> anyhow::Error {
    let code = crate::error::code_name(status.code());
    match std::error::Error::source(&status) {
        Some(cause) => {
            let chain = crate::probe::error_chain(cause);
            match chain.starts_with(status.message()) {
                true => anyhow::anyhow!("{code}: {chain}"),
                false => anyhow::anyhow!("{code}: {}: {chain}", status.message()),
            }
        }
        None => anyhow::anyhow!("{code}: {}", status.message()),
    }
}
