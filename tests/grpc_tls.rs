//! TLS and mutual TLS through the real server: every RPC × every kind of caller (no
//! credential, a malformed header, an unknown or rotated-out secret, each role's secret, a
//! client certificate mapped to each role, a certificate from an unknown CA), certificates
//! that name credentials by DNS name, URI or common name, and files that do not make a set-up.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::pki::{self, Ca, Leaf};
use common::*;
use posture::auth::{CredentialConfig, Role};
use posture::tls::TlsFiles;
use tonic::Code;

/// Bytes that are no message of any type: a field whose length runs past the end.
const NOT_A_MESSAGE: &[u8] = &[0x0a, 0xff];

fn cert_only(id: &str, role: Role) -> CredentialConfig {
    CredentialConfig { id: id.into(), role, secret_sha256: vec![] }
}

/// Who may call each service the server lists; `None` for those anyone may call.
fn allowed(service: &str) -> Option<&'static [Role]> {
    use Role::*;
    match service {
        "posture.v1.ComplianceService" | "posture.v1.TargetingService" | "envoy.service.auth.v3.Authorization" => {
            Some(&[Admin, Gateway])
        }
        "posture.v1.InventoryService" => Some(&[Partner]),
        "posture.v1.AdminService" => Some(&[Admin]),
        "grpc.health.v1.Health"
        | "grpc.reflection.v1.ServerReflection"
        | "grpc.reflection.v1alpha.ServerReflection" => None,
        other => panic!("the server lists {other}, which this test has no expectation for: add it to `allowed`"),
    }
}

/// A kind of caller: the certificate its connection presents, the authorization header it
/// sends, and who that makes it.
struct Caller {
    name: &'static str,
    identity: Leaf,
    trusted_by_server: bool,
    authorization: Option<String>,
    /// The role the server should find, `None` when it should find no credential.
    role: Option<Role>,
}

/// What a call came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// The server answered with this status.
    Status(Code),
    /// No call was made: the connection failed (the client's own status, with the transport
    /// error as its source).
    NoConnection,
}

fn answer(result: Result<Vec<u8>, tonic::Status>) -> Answer {
    match result {
        Ok(_) => Answer::Status(Code::Ok),
        Err(s) if std::error::Error::source(&s).is_some() => Answer::NoConnection,
        Err(s) => Answer::Status(s.code()),
    }
}

/// What the matrix sends to `path`, and what a caller the service admits gets back: bytes that
/// are no message, which only the decoder behind authorization can refuse (INVALID_ARGUMENT).
/// Reflection, whose stream just ends on such bytes, gets a real question instead.
fn probe(path: &str) -> (Vec<u8>, Code) {
    use prost::Message;
    if path.starts_with("/grpc.reflection.") {
        let list = tonic_reflection::pb::v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(tonic_reflection::pb::v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            )),
        };
        return (list.encode_to_vec(), Code::Ok);
    }
    (NOT_A_MESSAGE.to_vec(), Code::InvalidArgument)
}

/// The answer a caller should get from `path`: a caller the service admits reaches the
/// service; others are refused before it.
fn expected(caller: &Caller, path: &str) -> Answer {
    if !caller.trusted_by_server {
        return Answer::NoConnection; // the handshake fails
    }
    let service = path.trim_start_matches('/').split('/').next().unwrap();
    let admitted = probe(path).1;
    Answer::Status(match (allowed(service), caller.role) {
        (None, _) => admitted,
        (Some(_), None) => Code::Unauthenticated,
        (Some(roles), Some(role)) if roles.contains(&role) => admitted,
        (Some(_), Some(_)) => Code::PermissionDenied,
    })
}

struct Pki {
    server_ca: Ca,
    client_ca: Ca,
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        Pki {
            server_ca: Ca::new("posture test server CA"),
            client_ca: Ca::new("posture test client CA"),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// TLS files for the server: its certificate, and the client CA when `mutual`.
    fn files(&self, mutual: bool) -> TlsFiles {
        let server = self.server_ca.server();
        TlsFiles {
            cert: pki::write(self.dir.path(), "server.crt", &server.cert),
            key: pki::write(self.dir.path(), "server.key", &server.key),
            client_ca: mutual.then(|| pki::write(self.dir.path(), "clients-ca.crt", &self.client_ca.pem)),
        }
    }

    fn client(&self, identity: Option<&Leaf>) -> tonic::transport::ClientTlsConfig {
        pki::client_tls(&[&self.server_ca], identity)
    }
}

async fn wait_until<F: AsyncFn() -> bool>(what: &str, condition: F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !condition().await {
        assert!(tokio::time::Instant::now() < deadline, "{what}: not within 15 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_answers_every_kind_of_caller_exactly() {
    let pki = Pki::new();
    let nobody = pki.client_ca.issue(&["nobody.certs.test"], Some("nobody"));
    let mut credentials = vec![
        credential("test-admin", Role::Admin, &[ADMIN_SECRET]),
        credential("test-gateway", Role::Gateway, &[GATEWAY_SECRET, "gateway-rotated-out"]),
        credential(PARTNER_APP, Role::Partner, &[PARTNER_SECRET]),
        cert_only("admin.certs.test", Role::Admin),
        cert_only("gateway.certs.test", Role::Gateway),
        cert_only("spiffe://posture.test/partner", Role::Partner),
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_for(dir.path(), credentials.clone(), false);
    config.tls = Some(pki.files(true));
    config.file = Some(write_credentials(pki.dir.path(), &credentials));
    config.reload_interval = Duration::from_millis(100);
    let server = TestServer::launch_tls(config, dir, pki.client(Some(&nobody))).await;

    // The rotation ends: the old gateway secret leaves the file, and is revoked without a restart.
    credentials[1] = credential("test-gateway", Role::Gateway, &[GATEWAY_SECRET]);
    write_credentials(pki.dir.path(), &credentials);
    let channel = server.channel();
    let path = "/posture.v1.ComplianceService/CheckAccess";
    wait_until("the rotated-out secret is refused", async || {
        let r = raw::call(channel.clone(), path, NOT_A_MESSAGE.to_vec(), Some("gateway-rotated-out")).await;
        r.err().map(|s| s.code()) == Some(Code::Unauthenticated)
    })
    .await;

    let bearer = |secret: &str| Some(format!("Bearer {secret}"));
    let as_nobody = |name, authorization, role| Caller {
        name,
        identity: nobody.clone(),
        trusted_by_server: true,
        authorization,
        role,
    };
    let by_certificate = |name, identity, role| Caller {
        name,
        identity,
        trusted_by_server: true,
        authorization: None,
        role: Some(role),
    };
    let strangers = Ca::new("a CA the server does not know");
    let callers = [
        as_nobody("no credential", None, None),
        as_nobody("a malformed header", Some("Basic dGVzdDp0ZXN0".into()), None),
        as_nobody("a Bearer header with no secret", Some("Bearer".into()), None),
        as_nobody("an unknown secret", bearer("not-a-secret"), None),
        as_nobody("a rotated-out secret", bearer("gateway-rotated-out"), None),
        as_nobody("the admin secret", bearer(ADMIN_SECRET), Some(Role::Admin)),
        as_nobody("the gateway secret", bearer(GATEWAY_SECRET), Some(Role::Gateway)),
        as_nobody("the partner secret", bearer(PARTNER_SECRET), Some(Role::Partner)),
        by_certificate(
            "an admin certificate (DNS name)",
            pki.client_ca.issue(&["admin.certs.test"], None),
            Role::Admin,
        ),
        by_certificate(
            "a gateway certificate (common name)",
            pki.client_ca.issue(&[], Some("gateway.certs.test")),
            Role::Gateway,
        ),
        by_certificate(
            "a partner certificate (URI)",
            pki.client_ca.issue(&["spiffe://posture.test/partner"], Some("ignored")),
            Role::Partner,
        ),
        Caller {
            name: "a certificate from an unknown CA",
            identity: strangers.issue(&["admin.certs.test"], None),
            trusted_by_server: false,
            authorization: bearer(ADMIN_SECRET),
            role: Some(Role::Admin),
        },
    ];

    let rpcs = every_rpc(server.channel()).await;
    assert!(rpcs.len() >= 25, "reflection lists every RPC: {rpcs:?}");
    let mut wrong = Vec::new();
    for caller in &callers {
        let channel = server.channel_with(pki.client(Some(&caller.identity)));
        for path in &rpcs {
            let sent = raw::call_as(channel.clone(), path, probe(path).0, caller.authorization.as_deref()).await;
            let (got, want) = (answer(sent), expected(caller, path));
            if got != want {
                wrong.push(format!("{} → {path}: {got:?}, expected {want:?}", caller.name));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} answers differ:\n{}",
        wrong.len(),
        rpcs.len() * callers.len(),
        wrong.join("\n")
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_by_certificate_say_what_is_wrong() {
    let pki = Pki::new();
    let mut credentials = default_credentials();
    credentials.push(cert_only("gateway.certs.test", Role::Gateway));
    credentials.push(cert_only("admin.certs.test", Role::Admin));
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_for(dir.path(), credentials, false);
    config.tls = Some(pki.files(true));
    let nobody = pki.client_ca.issue(&["nobody.certs.test"], Some("Nobody"));
    let server = TestServer::launch_tls(config, dir, pki.client(Some(&nobody))).await;
    let check = pb_check();

    let err = server.compliance_as(None).check_access(check.clone()).await.unwrap_err();
    assert_status(
        &err,
        Code::Unauthenticated,
        &["\"nobody.certs.test\"", "\"Nobody\"", "no credential has any of those ids"],
    );

    // A certificate naming two credentials is refused rather than guessed at.
    let two = pki.client_ca.issue(&["gateway.certs.test", "admin.certs.test"], None);
    let mut compliance = posture::proto::compliance_service_client::ComplianceServiceClient::new(
        server.channel_with(pki.client(Some(&two))),
    );
    let err = compliance.check_access(check.clone()).await.unwrap_err();
    assert_status(&err, Code::Unauthenticated, &["names two credentials", "gateway.certs.test", "admin.certs.test"]);

    // A bearer secret wins over the connection's certificate: it is what the call says it is.
    let gateway = pki.client_ca.issue(&["gateway.certs.test"], None);
    let channel = server.channel_with(pki.client(Some(&gateway)));
    let err = raw::call(channel.clone(), "/posture.v1.AdminService/GetSettings", vec![], Some(PARTNER_SECRET))
        .await
        .unwrap_err();
    assert_status(&err, Code::PermissionDenied, &["jamf-test has the Partner role"]);
    let mut compliance = posture::proto::compliance_service_client::ComplianceServiceClient::new(channel);
    compliance.check_access(check).await.unwrap();
    server.stop().await;
}

fn pb_check() -> posture::proto::CheckAccessRequest {
    posture::proto::CheckAccessRequest { user_id: "ada".into(), device_id: "mac-ada".into(), ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_without_client_certificates_serves_bearer_secrets_and_refuses_plaintext() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_for(dir.path(), default_credentials(), false);
    config.tls = Some(pki.files(false));
    let server = TestServer::launch_tls(config, dir, pki.client(None)).await;
    seed_org(&server).await;
    server.compliance().check_access(pb_check()).await.unwrap();

    // Plaintext to a TLS port is no gRPC at all.
    let plain = channel_to(server.addr, None);
    let sent = raw::call(plain, "/posture.v1.ComplianceService/CheckAccess", vec![], Some(GATEWAY_SECRET)).await;
    assert_eq!(answer(sent), Answer::NoConnection);
    // A client that does not trust the server's CA does not connect.
    let stranger = Ca::new("not the server's CA");
    let channel = server.channel_with(pki::client_tls(&[&stranger], None));
    let sent = raw::call(channel, "/grpc.health.v1.Health/Check", vec![], None).await;
    assert_eq!(answer(sent), Answer::NoConnection);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_that_do_not_make_a_tls_set_up_are_refused_at_start_naming_the_file() {
    let pki = Pki::new();
    let other = pki.server_ca.server();
    let start = async |tls: TlsFiles, credentials: Vec<CredentialConfig>| {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config_for(dir.path(), credentials, false);
        config.tls = Some(tls);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        posture::server::serve(config, listener, std::future::ready(())).await.unwrap_err().to_string()
    };
    let good = pki.files(true);
    let mismatched = TlsFiles { key: pki::write(pki.dir.path(), "other.key", &other.key), ..good.clone() };
    let err = start(mismatched, default_credentials()).await;
    assert!(
        err.contains("server.crt")
            && err.contains("other.key")
            && err.contains("do not make a certificate and its key"),
        "{err}"
    );

    let missing = TlsFiles { cert: pki.dir.path().join("missing.crt"), ..good.clone() };
    let err = start(missing, default_credentials()).await;
    assert!(err.contains("cannot read") && err.contains("missing.crt"), "{err}");

    let garbage = TlsFiles { client_ca: Some(pki::write(pki.dir.path(), "garbage.crt", "not PEM")), ..good.clone() };
    let err = start(garbage, default_credentials()).await;
    assert!(err.contains("garbage.crt"), "{err}");

    // A credential only a certificate can authenticate, on a server that asks for none.
    let err = start(pki.files(false), vec![cert_only("gateway.certs.test", Role::Gateway)]).await;
    assert!(err.contains("gateway.certs.test") && err.contains("tls_client_ca"), "{err}");
}
