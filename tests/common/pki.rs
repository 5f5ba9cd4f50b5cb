//! Certificates made for the test: CAs, server certificates for 127.0.0.1, and client
//! certificates naming whatever the test says.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// A certificate authority.
#[derive(Clone)]
pub struct Ca {
    pub pem: String,
    issuer: std::sync::Arc<Issuer<'static, KeyPair>>,
}

/// A certificate and its key, both PEM.
#[derive(Clone)]
pub struct Leaf {
    pub cert: String,
    pub key: String,
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Ca { pem, issuer: std::sync::Arc::new(Issuer::new(params, key)) }
    }

    /// A certificate for `sans` (DNS names, IP addresses, or URIs) and, when given, with the
    /// common name `cn`.
    pub fn issue(&self, sans: &[&str], cn: Option<&str>) -> Leaf {
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        for san in sans {
            let name = if san.contains("://") {
                rcgen::SanType::URI(san.to_string().try_into().unwrap())
            } else if let Ok(ip) = san.parse() {
                rcgen::SanType::IpAddress(ip)
            } else {
                rcgen::SanType::DnsName(san.to_string().try_into().unwrap())
            };
            params.subject_alt_names.push(name);
        }
        if let Some(cn) = cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap().pem();
        Leaf { cert, key: key.serialize_pem() }
    }

    /// The server's certificate: for localhost and 127.0.0.1.
    pub fn server(&self) -> Leaf {
        self.issue(&["localhost", "127.0.0.1"], None)
    }
}

/// Writes `text` to `dir/name`, whole (a rename, as a Secret volume or an editor does, so a
/// reload never reads half a file).
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path
}

/// A client's TLS: trusting `roots`, presenting `identity` when given.
pub fn client_tls(roots: &[&Ca], identity: Option<&Leaf>) -> ClientTlsConfig {
    let mut tls = ClientTlsConfig::new().domain_name("localhost");
    for ca in roots {
        tls = tls.ca_certificate(Certificate::from_pem(&ca.pem));
    }
    if let Some(leaf) = identity {
        tls = tls.identity(Identity::from_pem(&leaf.cert, &leaf.key));
    }
    tls
}
