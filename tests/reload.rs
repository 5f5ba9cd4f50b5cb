//! Rotations without a restart: bearer secrets, the CA client certificates chain to, and the
//! server's own certificate are swapped while calls continue, and no call fails for lack of a
//! valid credential. SIGHUP reloads at once, whatever the polling interval.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::pki::{self, Ca, Leaf};
use common::*;
use posture::auth::{CredentialConfig, Role};
use posture::proto::compliance_service_client::ComplianceServiceClient;
use posture::tls::TlsFiles;
use tonic::Code;
use tonic::transport::Endpoint;

fn check() -> posture::proto::CheckAccessRequest {
    posture::proto::CheckAccessRequest { user_id: "ada".into(), device_id: "mac-ada".into(), ..Default::default() }
}

/// One CheckAccess on a connection of its own (so each call goes through a TLS handshake with
/// the set-up in force), presenting `identity` and, when given, a bearer secret.
async fn call(
    addr: std::net::SocketAddr,
    roots: &[&Ca],
    identity: &Leaf,
    secret: Option<&str>,
) -> Result<(), tonic::Status> {
    let tls = pki::client_tls(roots, Some(identity));
    let endpoint = Endpoint::from_shared(format!("https://{addr}")).unwrap().tls_config(tls).unwrap();
    let channel = endpoint
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("no connection: {e:?}")))?;
    let mut client = ComplianceServiceClient::with_interceptor(channel, Bearer::new(secret));
    client.check_access(check()).await.map(drop)
}

async fn wait_until<F: AsyncFn() -> bool>(what: &str, condition: F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !condition().await {
        assert!(tokio::time::Instant::now() < deadline, "{what}: not within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the callers present now; the test moves them to new credentials as a rotation would.
struct Presented {
    secret: String,
    bearer_identity: Leaf,
    certificate: Leaf,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_and_certificates_rotate_while_calls_continue() {
    let (server_ca, next_server_ca) = (Ca::new("server CA"), Ca::new("next server CA"));
    let (client_ca, next_client_ca) = (Ca::new("client CA"), Ca::new("next client CA"));
    let files = tempfile::tempdir().unwrap();
    let server_cert = server_ca.server();
    let tls = TlsFiles {
        cert: pki::write(files.path(), "server.crt", &server_cert.cert),
        key: pki::write(files.path(), "server.key", &server_cert.key),
        client_ca: Some(pki::write(files.path(), "clients.crt", &client_ca.pem)),
    };
    let credentials = |gateway: &[&str]| -> Vec<CredentialConfig> {
        vec![
            credential("test-admin", Role::Admin, &[ADMIN_SECRET]),
            credential("test-gateway", Role::Gateway, gateway),
            credential(PARTNER_APP, Role::Partner, &[PARTNER_SECRET]),
            CredentialConfig { id: "gateway.certs.test".into(), role: Role::Gateway, secret_sha256: vec![] },
        ]
    };
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_for(dir.path(), credentials(&["gateway-old"]), false);
    config.file = Some(write_credentials(files.path(), &credentials(&["gateway-old"])));
    config.tls = Some(tls.clone());
    config.reload_interval = Duration::from_millis(100);
    let admin_identity = client_ca.issue(&["admin-client"], None);
    let server = TestServer::launch_tls(config, dir, pki::client_tls(&[&server_ca], Some(&admin_identity))).await;
    seed_org(&server).await;
    server.report(vec![mac("mac-ada", "ada", "C02ADA0001")]).await;

    let presented = Arc::new(Mutex::new(Presented {
        secret: "gateway-old".into(),
        bearer_identity: client_ca.issue(&["some-client"], None),
        certificate: client_ca.issue(&["gateway.certs.test"], None),
    }));
    // Callers trust both server CAs throughout, as clients are set up before a server rotation.
    let roots = Arc::new([server_ca.clone(), next_server_ca.clone()]);
    let (stop, calls, failures) =
        (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)), Arc::new(Mutex::new(Vec::new())));
    let mut callers = Vec::new();
    for by_certificate in [false, true] {
        let (presented, roots, stop, calls, failures) =
            (presented.clone(), roots.clone(), stop.clone(), calls.clone(), failures.clone());
        let addr = server.addr;
        callers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let (identity, secret) = {
                    let p = presented.lock().unwrap();
                    if by_certificate {
                        (p.certificate.clone(), None)
                    } else {
                        (p.bearer_identity.clone(), Some(p.secret.clone()))
                    }
                };
                let result = call(addr, &[&roots[0], &roots[1]], &identity, secret.as_deref()).await;
                calls.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = result {
                    failures.lock().unwrap().push(format!("by certificate: {by_certificate}: {e:?}"));
                }
            }
        }));
    }
    let progress = async || {
        let before = calls.load(Ordering::Relaxed);
        wait_until("the callers go on calling", async || calls.load(Ordering::Relaxed) >= before + 10).await;
    };
    progress().await;

    // 1. The gateway's secret: old and new side by side, the callers move, the old one goes.
    write_credentials(files.path(), &credentials(&["gateway-old", "gateway-new"]));
    let some = client_ca.issue(&["some-client"], None);
    wait_until("the new secret is valid", async || {
        call(server.addr, &[&server_ca], &some, Some("gateway-new")).await.is_ok()
    })
    .await;
    presented.lock().unwrap().secret = "gateway-new".into();
    progress().await;
    write_credentials(files.path(), &credentials(&["gateway-new"]));
    wait_until("the old secret is revoked", async || {
        let r = call(server.addr, &[&server_ca], &some, Some("gateway-old")).await;
        r.err().is_some_and(|s| s.code() == Code::Unauthenticated)
    })
    .await;
    progress().await;

    // 2. The client CA: both trusted, the callers get certificates from the new one, the old goes.
    pki::write(files.path(), "clients.crt", &format!("{}{}", client_ca.pem, next_client_ca.pem));
    let next_some = next_client_ca.issue(&["some-client"], None);
    wait_until("the next client CA is trusted", async || {
        call(server.addr, &[&server_ca], &next_some, Some("gateway-new")).await.is_ok()
    })
    .await;
    {
        let mut p = presented.lock().unwrap();
        p.bearer_identity = next_some.clone();
        p.certificate = next_client_ca.issue(&["gateway.certs.test"], None);
    }
    progress().await;
    pki::write(files.path(), "clients.crt", &next_client_ca.pem);
    wait_until("the old client CA is no longer trusted", async || {
        call(server.addr, &[&server_ca], &some, Some("gateway-new")).await.is_err()
    })
    .await;
    progress().await;

    // 3. The server's certificate, from the next server CA: key and certificate are written one
    // after the other, and a reload in between (a key that does not match) keeps the old pair.
    let next_server = next_server_ca.server();
    pki::write(files.path(), "server.key", &next_server.key);
    tokio::time::sleep(Duration::from_millis(300)).await;
    pki::write(files.path(), "server.crt", &next_server.cert);
    wait_until("the server presents its new certificate", async || {
        call(server.addr, &[&next_server_ca], &next_some, Some("gateway-new")).await.is_ok()
    })
    .await;
    progress().await;

    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        caller.await.unwrap();
    }
    let failures = std::mem::take(&mut *failures.lock().unwrap());
    assert!(
        failures.is_empty(),
        "{} of {} calls failed: {:#?}",
        failures.len(),
        calls.load(Ordering::Relaxed),
        &failures[..failures.len().min(5)]
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_at_once() {
    let files = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let config = write_credentials(files.path(), &[credential("ops", Role::Admin, &["before-secret"])]);
    let args =
        ["--config", config.to_str().unwrap(), "--data-dir", data.path().to_str().unwrap(), "--reload-interval", "1h"];
    let served = common::binary::Served::start(&args, "info").await;
    let settings = async |secret: &str| {
        let mut admin = posture::proto::admin_service_client::AdminServiceClient::with_interceptor(
            served.channel(),
            Bearer::new(Some(secret)),
        );
        admin.get_settings(posture::proto::GetSettingsRequest::default()).await.map(drop).map_err(|s| s.code())
    };
    assert_eq!(settings("before-secret").await, Ok(()));

    write_credentials(files.path(), &[credential("ops", Role::Admin, &["after-secret"])]);
    // Polled once an hour: nothing changes until the signal.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(settings("after-secret").await, Err(Code::Unauthenticated));
    served.signal("HUP");
    wait_until("SIGHUP reloads the credentials", async || settings("after-secret").await.is_ok()).await;
    assert_eq!(settings("before-secret").await, Err(Code::Unauthenticated));

    // A file that does not make credentials changes nothing, and says why.
    pki::write(files.path(), "posture.toml", "[[credentials]]\nid = \"ops\"\nrole = \"superuser\"\n");
    served.signal("HUP");
    wait_until("the refused reload is logged", async || served.log().contains("credentials NOT reloaded")).await;
    assert_eq!(settings("after-secret").await, Ok(()));

    // Nor does a credential only a client certificate could authenticate, on a server that
    // asks for none: the set-up would not have started.
    let mut certificate_only = credential("ops", Role::Admin, &["after-secret"]);
    certificate_only.secret_sha256.clear();
    write_credentials(files.path(), &[certificate_only]);
    served.signal("HUP");
    wait_until("the second refused reload is logged", async || {
        served.log().matches("credentials NOT reloaded").count() == 2
    })
    .await;
    assert_eq!(settings("after-secret").await, Ok(()));
    let log = served.stop().await;
    assert!(log.contains("superuser"), "the log says what is wrong with the file:\n{log}");
    assert!(log.contains("client certificates are not asked for"), "the log says why:\n{log}");
}
