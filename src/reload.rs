//! The credentials and TLS files in force: loaded at start, and reloaded while serving, on
//! SIGHUP and whenever a file's contents change, so a rotation needs no restart. Files are
//! polled rather than watched: a Kubernetes Secret is updated by swapping a symlink, which
//! file-change notifications miss. A reload that does not make a valid set-up changes
//! nothing: what is in force stays, and the error is logged.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::{CredentialConfig, Credentials, CredentialsHandle};
use crate::tls::TlsServer;

/// How often the files are read for changes.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);

/// What to reload from, and how often.
#[derive(Debug, Clone)]
pub struct Reload {
    /// The configuration file; only its credentials are reloaded (other settings need a
    /// restart). `None`: the credentials never change.
    pub config_file: Option<PathBuf>,
    /// `--demo`: with no credentials configured, the demo's.
    pub demo: bool,
    /// `--insecure`: a reload may leave no credentials on a non-loopback address.
    pub insecure: bool,
    pub interval: Duration,
}

impl Default for Reload {
    fn default() -> Self {
        Reload { config_file: None, demo: false, insecure: false, interval: DEFAULT_INTERVAL }
    }
}

/// The credentials `configs` make; the demo's when there are none and `demo` is set.
pub fn credentials(configs: &[CredentialConfig], demo: bool) -> anyhow::Result<Credentials> {
    if demo && configs.is_empty() {
        return Credentials::new(&crate::demo::credentials());
    }
    Credentials::new(configs)
}

/// No open default: with no credentials, posture serves only on a loopback address, unless
/// told to serve open (`--insecure`), which it then says loudly.
pub fn check_exposure(addr: SocketAddr, credentials: &Credentials, insecure: bool) -> anyhow::Result<()> {
    if credentials.enabled() {
        return Ok(());
    }
    if addr.ip().is_loopback() {
        tracing::warn!(%addr, "no credentials configured: authentication is OFF (this address is loopback only)");
        return Ok(());
    }
    anyhow::ensure!(
        insecure,
        "refusing to listen on {addr} with no credentials configured: anyone who reaches it could call every RPC, \
         AdminService included. Configure credentials (see the README's configuration section), listen on \
         127.0.0.1, or pass --insecure to serve open on purpose"
    );
    tracing::error!(%addr, "INSECURE: no credentials configured and listening beyond loopback: every caller may call every RPC, AdminService included");
    Ok(())
}

/// A credential without a secret authenticates only by client certificate, so the server must
/// ask for them.
pub fn check_certificate_only(credentials: &Credentials, tls: Option<&TlsServer>) -> anyhow::Result<()> {
    for id in credentials.certificate_only() {
        anyhow::ensure!(
            tls.is_some_and(|t| t.requires_client_certificates()),
            "credential {id} has no secret_sha256, so only a client certificate can authenticate it, but client \
             certificates are not asked for: give tls_client_ca (--tls-client-ca), or a secret"
        );
    }
    Ok(())
}

/// How often a server open to anyone says so again.
const INSECURE_REMINDER: Duration = Duration::from_secs(300);

/// Reloads until `stop`: on SIGHUP, and every `interval` when a file changed. A server that
/// is open to anyone beyond loopback says so again every few minutes, for whoever reads its
/// logs later.
pub async fn run(
    reload: Reload,
    addr: SocketAddr,
    credentials: CredentialsHandle,
    tls: Option<Arc<TlsServer>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut hangup = hangup();
    let mut reminded = tokio::time::Instant::now();
    let mut loaded = reload.config_file.as_ref().and_then(|path| std::fs::read(path).ok());
    loop {
        let signalled = tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(reload.interval) => false,
            _ = hangup.recv() => true,
        };
        if !credentials.current().enabled() && !addr.ip().is_loopback() && reminded.elapsed() >= INSECURE_REMINDER {
            tracing::error!(%addr, "INSECURE: still serving with no credentials beyond loopback: every caller may call every RPC");
            reminded = tokio::time::Instant::now();
        }
        if signalled {
            tracing::info!("SIGHUP: reloading credentials and TLS files");
        }
        if let Some(path) = &reload.config_file {
            match std::fs::read(path) {
                Ok(text) if loaded.as_ref() == Some(&text) && !signalled => {}
                Ok(text) => {
                    match credentials_in(path, &text, &reload, addr, tls.as_deref()) {
                        Ok(c) => {
                            let ids = c.ids().collect::<Vec<_>>().join(", ");
                            tracing::info!(file = %path.display(), credentials = %ids, "credentials reloaded");
                            credentials.replace(c);
                        }
                        Err(e) => {
                            tracing::error!(error = %format!("{e:#}"), "credentials NOT reloaded: the ones in force stay");
                        }
                    }
                    loaded = Some(text);
                }
                Err(e) => {
                    tracing::error!(file = %path.display(), error = %e, "cannot read the configuration file: the credentials in force stay")
                }
            }
        }
        if let Some(tls) = &tls {
            match tls.reload() {
                Ok(true) => tracing::info!("TLS certificates reloaded"),
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "TLS certificates NOT reloaded: the ones in force stay");
                }
            }
        }
    }
}

fn credentials_in(
    path: &std::path::Path,
    text: &[u8],
    reload: &Reload,
    addr: SocketAddr,
    tls: Option<&TlsServer>,
) -> anyhow::Result<Credentials> {
    let text = std::str::from_utf8(text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let file: crate::config::FileConfig =
        toml::from_str(text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let c = credentials(&file.credentials, reload.demo)?;
    check_exposure(addr, &c, reload.insecure)?;
    check_certificate_only(&c, tls)?;
    Ok(c)
}

/// SIGHUP, where there are signals.
struct Hangup(#[cfg(unix)] Option<tokio::signal::unix::Signal>);

fn hangup() -> Hangup {
    #[cfg(unix)]
    {
        Hangup(tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok())
    }
    #[cfg(not(unix))]
    Hangup()
}

impl Hangup {
    async fn recv(&mut self) -> Option<()> {
        #[cfg(unix)]
        if let Some(signal) = &mut self.0 {
            return signal.recv().await;
        }
        std::future::pending().await
    }
}
