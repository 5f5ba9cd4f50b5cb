//! TLS and mutual TLS, with rustls. The server's certificate and key, and the CA that client
//! certificates must chain to, are read from files; [`TlsServer::reload`] swaps in new ones
//! without a restart (each new connection uses the set current when it arrives).
//!
//! A client certificate authenticates its holder as the credential whose id it names: one of
//! its subject alternative names (DNS, URI or e-mail) or, after them, its subject's common
//! name. The names are read once per connection, at the handshake.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use crate::audit;

/// How long a client may take over its handshake before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections accepted but not yet through their handshake, at most (beyond it, new
/// connections wait in the listen queue).
const HANDSHAKES_IN_FLIGHT: usize = 256;

/// Where the TLS files are (`--tls-cert`, `--tls-key`, `--tls-client-ca`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// With it, every client must present a certificate that chains to one of these CAs.
    pub client_ca: Option<PathBuf>,
}

/// The files' contents as last loaded: a reload that finds the same bytes does nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Contents {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

impl TlsFiles {
    fn read(&self) -> anyhow::Result<Contents> {
        let read = |path: &PathBuf| std::fs::read(path).with_context(|| format!("cannot read {}", path.display()));
        Ok(Contents {
            cert: read(&self.cert)?,
            key: read(&self.key)?,
            client_ca: self.client_ca.as_ref().map(read).transpose()?,
        })
    }

    fn server_config(&self, contents: &Contents) -> anyhow::Result<ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs = CertificateDer::pem_slice_iter(&contents.cert)
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("{}: not a PEM certificate chain", self.cert.display()))?;
        anyhow::ensure!(!certs.is_empty(), "{}: no certificate in it", self.cert.display());
        let key = PrivateKeyDer::from_pem_slice(&contents.key)
            .with_context(|| format!("{}: not a PEM private key", self.key.display()))?;
        let builder = ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
        let builder = match (&self.client_ca, &contents.client_ca) {
            (Some(path), Some(pem)) => {
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(pem) {
                    let cert = cert.with_context(|| format!("{}: not a PEM certificate", path.display()))?;
                    roots.add(cert).with_context(|| format!("{}: not a CA certificate", path.display()))?;
                }
                anyhow::ensure!(!roots.is_empty(), "{}: no certificate in it", path.display());
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .with_context(|| format!("{}: cannot verify client certificates with it", path.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
            _ => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(certs, key).with_context(|| {
            format!("{} and {} do not make a certificate and its key", self.cert.display(), self.key.display())
        })?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }
}

/// The TLS set-up in force, and the files it came from.
pub struct TlsServer {
    files: TlsFiles,
    config: ArcSwap<ServerConfig>,
    loaded: parking_lot::Mutex<Contents>,
}

impl TlsServer {
    /// Reads the files; fails, saying which file and why, when they do not make a set-up.
    pub fn load(files: TlsFiles) -> anyhow::Result<Self> {
        let contents = files.read()?;
        let config = files.server_config(&contents)?;
        Ok(TlsServer { files, config: ArcSwap::from_pointee(config), loaded: parking_lot::Mutex::new(contents) })
    }

    pub fn requires_client_certificates(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// Reads the files again and, when they changed, swaps the new set-up in: `Ok(true)`. When
    /// they do not make a set-up (a certificate written before its key, say), the one in force
    /// stays, and the error says why.
    pub fn reload(&self) -> anyhow::Result<bool> {
        let contents = self.files.read()?;
        let mut loaded = self.loaded.lock();
        if *loaded == contents {
            return Ok(false);
        }
        let config = self.files.server_config(&contents)?;
        self.config.store(Arc::new(config));
        *loaded = contents;
        Ok(true)
    }

    /// The connections `listener` accepts, each through its TLS handshake. A failed handshake
    /// (a client certificate from an unknown CA, say) is recorded in the audit trail and the
    /// connection dropped; it never stops the listener.
    pub fn incoming(self: Arc<Self>, listener: TcpListener) -> ReceiverStream<io::Result<TlsConnection>> {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let handshakes = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES_IN_FLIGHT));
        tokio::spawn(async move {
            loop {
                let Ok(permit) = handshakes.clone().acquire_owned().await else { return };
                let (tcp, remote) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(e) => {
                            // Out of file descriptors, say: wait a moment rather than spin.
                            tracing::warn!(error = %e, "accepting a connection failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                    () = tx.closed() => return,
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = tokio_rustls::TlsAcceptor::from(self.config.load_full());
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let names = stream.get_ref().1.peer_certificates().and_then(|c| c.first()).map(names_of);
                            let peer = TlsPeer { remote: Some(remote), certificate_names: names.map(Into::into) };
                            let _ = tx.send(Ok(TlsConnection { stream, peer })).await;
                        }
                        Ok(Err(e)) => audit::refused(
                            None,
                            "TLS handshake",
                            Some(remote),
                            tonic::Code::Unauthenticated,
                            &e.to_string(),
                        ),
                        Err(_) => tracing::debug!(%remote, "a TLS handshake timed out"),
                    }
                });
            }
        });
        ReceiverStream::new(rx)
    }
}

/// What a client certificate names, in the order they are matched to credentials: its subject
/// alternative names, then its common name.
pub fn names_of(cert: &CertificateDer<'_>) -> Vec<String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let Ok((_, cert)) = X509Certificate::from_der(cert.as_ref()) else { return vec![] };
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(n) | GeneralName::URI(n) | GeneralName::RFC822Name(n) => names.push(n.to_string()),
                _ => {}
            }
        }
    }
    names.extend(cert.subject().iter_common_name().filter_map(|cn| cn.as_str().ok()).map(str::to_string));
    names
}

/// Who is at the other end of a TLS connection: put in each of its requests' extensions.
#[derive(Debug, Clone)]
pub struct TlsPeer {
    pub remote: Option<SocketAddr>,
    /// What the client's certificate names ([`names_of`]); `None` without a certificate.
    pub certificate_names: Option<Arc<[String]>>,
}

/// A connection through its handshake.
pub struct TlsConnection {
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    peer: TlsPeer,
}

impl Connected for TlsConnection {
    type ConnectInfo = TlsPeer;
    fn connect_info(&self) -> TlsPeer {
        self.peer.clone()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
