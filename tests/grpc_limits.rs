//! What bounds a caller: calls in flight (the excess shed at once), deadlines, message size,
//! requests that are no message, Watch streams; no open default; reflection behind a
//! credential; the bearer scheme in any case; secrets never on the command line.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use posture::config::Reflection;
use posture::proto as pb;
use prost::Message;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

async fn server_with(configure: impl FnOnce(&mut posture::config::Config)) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_for(dir.path(), default_credentials(), false);
    configure(&mut config);
    TestServer::launch(config, dir).await
}

/// A CheckAccess that waits for a revision that has not come: it holds its call open.
fn waiting_check(revision: u64, wait: Duration) -> tonic::Request<pb::CheckAccessRequest> {
    let mut req = tonic::Request::new(pb::CheckAccessRequest {
        user_id: "ada".into(),
        device_id: "mac-ada".into(),
        min_revision: revision,
    });
    req.set_timeout(wait);
    req
}

/// `count` calls through `client` waiting for `revision`, each on a task of its own.
fn hold(
    client: &Compliance,
    count: usize,
    revision: u64,
) -> Vec<tokio::task::JoinHandle<Result<tonic::Response<pb::CheckAccessResponse>, tonic::Status>>> {
    (0..count)
        .map(|_| {
            let mut compliance = client.clone();
            tokio::spawn(async move { compliance.check_access(waiting_check(revision, Duration::from_secs(20))).await })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beyond_the_limit_are_shed_at_once_and_health_still_answers() {
    let server = server_with(|c| c.limits.max_concurrent_calls = 4).await;
    seed_org(&server).await;
    let written = server.report(vec![mac("mac-ada", "ada", "C02ADA0001")]).await.revision;
    // Four calls take the four places, waiting for a revision that has not come yet.
    let held = hold(&server.compliance(), 4, written + 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The excess is refused at once, saying why; health answers throughout.
    let started = Instant::now();
    for _ in 0..40 {
        let err = server.compliance().check_access(waiting_check(0, Duration::from_secs(20))).await.unwrap_err();
        assert_status(&err, Code::ResourceExhausted, &["limit of 4 calls at once"]);
        let mut health = HealthClient::new(server.channel());
        let status = health.check(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner().status;
        assert_eq!(status, ServingStatus::Serving as i32);
    }
    assert!(started.elapsed() < Duration::from_secs(5), "shed at once, not queued: {:?}", started.elapsed());
    // Another writer commits the revision they wait for (straight to the store, as another
    // process on the same file would): the accepted calls finish, and answer.
    commit_elsewhere(&server, written).await;
    for held in held {
        let r = held.await.unwrap().unwrap().into_inner();
        assert_eq!((r.decision, r.revision), (pb::Decision::Allow as i32, written + 1));
    }
    // The load gone, calls are served again.
    assert_decision(
        &server.check("ada", "mac-ada").await,
        pb::Decision::Allow,
        pb::ComplianceState::Compliant,
        &["COMPLIANT"],
    );
    server.stop().await;
}

/// Another writer commits revision `written + 1` straight to the store, as another process on
/// the same file would.
async fn commit_elsewhere(server: &TestServer, written: u64) {
    let store = posture::store::sqlite::SqliteStore::open(&server.data_dir().join("posture.db")).await.unwrap();
    let user = posture::domain::model::User {
        id: "zoe".into(),
        user_principal_name: "zoe@example.com".into(),
        device_management_licence: true,
        premium_identity_licence: true,
    };
    let committed = posture::store::Store::commit(&store, written, &[posture::domain::Change::PutUser(user)], 0).await;
    assert_eq!(committed.unwrap(), posture::store::Commit::Done(written + 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beyond_a_connections_stream_limit_wait_in_its_client_and_are_not_shed() {
    let server = server_with(|c| {
        c.limits.max_concurrent_calls = 20;
        c.limits.max_streams_per_connection = 10;
    })
    .await;
    seed_org(&server).await;
    let written = server.report(vec![mac("mac-ada", "ada", "C02ADA0001")]).await.revision;
    // Thirty waiting calls over one connection: the server lets ten open at once, so the
    // others wait in the client and never count against the server's limit of twenty.
    let one_connection = server.compliance();
    let held = hold(&one_connection, 30, written + 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Ten places of twenty are left for other connections.
    let elsewhere = channel_to(server.addr, None);
    let mut other = pb::compliance_service_client::ComplianceServiceClient::with_interceptor(
        elsewhere,
        Bearer::new(Some(GATEWAY_SECRET)),
    );
    let answer = other.check_access(waiting_check(0, Duration::from_secs(5))).await;
    assert!(answer.is_ok(), "another connection is served: {answer:?}");
    commit_elsewhere(&server, written).await;
    for held in held {
        let r = held.await.unwrap().expect("a call queued in its client is served, not shed").into_inner();
        assert_eq!((r.decision, r.revision), (pb::Decision::Allow as i32, written + 1));
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_without_a_deadline_gets_the_default_one() {
    let server = server_with(|c| c.limits.default_deadline = Duration::from_millis(300)).await;
    let written = seed_org(&server).await;
    // No deadline from the caller: the wait for a revision that never comes ends at the default.
    let started = Instant::now();
    let req =
        pb::CheckAccessRequest { user_id: "ada".into(), device_id: "mac-ada".into(), min_revision: written + 100 };
    let err = server.compliance().check_access(req).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    // A caller's own, shorter deadline is honoured too.
    let started = Instant::now();
    let err = server.compliance().check_access(waiting_check(written + 100, Duration::from_millis(100))).await;
    assert!(matches!(err.unwrap_err().code(), Code::DeadlineExceeded | Code::Cancelled));
    assert!(started.elapsed() < Duration::from_secs(2));
    // A stream outlives the deadline: it is only the time to answer.
    let mut events =
        server.compliance().watch_compliance(pb::WatchComplianceRequest::default()).await.unwrap().into_inner();
    tokio::time::sleep(Duration::from_millis(600)).await;
    server.report(vec![mac("mac-ada", "ada", "C02ADA0001")]).await;
    let e = tokio::time::timeout(Duration::from_secs(5), events.message()).await.unwrap().unwrap().unwrap();
    assert_eq!(e.device_id, "mac-ada");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_are_no_message_or_too_large_say_so() {
    let server = TestServer::start().await;
    seed_org(&server).await;
    let check = "/posture.v1.ComplianceService/CheckAccess";
    // Bytes that are no protobuf message: the caller's fault, not the server's.
    let err = raw::call(server.channel(), check, vec![0xff, 0xff, 0xff, 0xff, 0x0f], Some(GATEWAY_SECRET)).await;
    let err = err.unwrap_err();
    assert_status(&err, Code::InvalidArgument, &["not a valid message"]);
    // A message larger than the server takes (4 MiB).
    let huge = pb::CheckAccessRequest { user_id: "u".repeat(5 << 20), device_id: "d".into(), min_revision: 0 };
    let err = raw::call(server.channel(), check, huge.encode_to_vec(), Some(GATEWAY_SECRET)).await.unwrap_err();
    assert_status(&err, Code::ResourceExhausted, &["larger than this server accepts"]);
    assert!(err.message().len() < 300, "{}", err.message());
    // A valid one still works.
    assert_decision(
        &server.check("ada", "mac-ada").await,
        pb::Decision::Deny,
        pb::ComplianceState::Unknown,
        &["DEVICE_UNKNOWN"],
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_are_limited_in_all_and_per_credential() {
    let server = server_with(|c| {
        c.watch.streams = 3;
        c.watch.streams_per_credential = 2;
    })
    .await;
    seed_org(&server).await;
    let watch = |secret| {
        let mut c = server.compliance_as(Some(secret));
        async move { c.watch_compliance(pb::WatchComplianceRequest::default()).await }
    };
    let first = watch(GATEWAY_SECRET).await.unwrap();
    let _second = watch(GATEWAY_SECRET).await.unwrap();
    let err = watch(GATEWAY_SECRET).await.unwrap_err();
    assert_status(&err, Code::ResourceExhausted, &["credential test-gateway has 2 WatchCompliance streams open"]);
    let _third = watch(ADMIN_SECRET).await.unwrap();
    let err = watch(ADMIN_SECRET).await.unwrap_err();
    assert_status(&err, Code::ResourceExhausted, &["3 WatchCompliance streams open, its limit"]);
    // A stream that ends gives its place back.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match watch(GATEWAY_SECRET).await {
            Ok(_) => break,
            Err(e) => assert!(Instant::now() < deadline, "the place did not come back: {e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_can_require_a_credential() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::{ServerReflectionRequest, server_reflection_request::MessageRequest};
    let server = server_with(|c| c.reflection = Reflection::Authenticated).await;
    let list = |secret: Option<&str>| {
        let channel = server.channel();
        let bearer = Bearer::new(secret);
        async move {
            let mut client = ServerReflectionClient::with_interceptor(channel, bearer);
            let req = ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            };
            let mut stream = client.server_reflection_info(tokio_stream::iter([req])).await?.into_inner();
            stream.message().await.map(|m| m.is_some())
        }
    };
    assert_eq!(list(None).await.unwrap_err().code(), Code::Unauthenticated);
    assert!(list(Some(PARTNER_SECRET)).await.unwrap());
    assert!(list(Some(GATEWAY_SECRET)).await.unwrap());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bearer_scheme_is_case_insensitive() {
    let server = TestServer::start().await;
    seed_org(&server).await;
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let mut req = tonic::Request::new(pb::CheckAccessRequest {
            user_id: "ada".into(),
            device_id: "m".into(),
            min_revision: 0,
        });
        req.metadata_mut().insert("authorization", format!("{scheme} {GATEWAY_SECRET}").parse().unwrap());
        let mut client = pb::compliance_service_client::ComplianceServiceClient::new(server.channel());
        assert!(client.check_access(req).await.is_ok(), "{scheme}");
    }
    server.stop().await;
}

#[test]
fn serving_open_beyond_loopback_needs_insecure() {
    use posture::auth::Credentials;
    let open = Credentials::default();
    let any: std::net::SocketAddr = "0.0.0.0:50051".parse().unwrap();
    let err = posture::reload::check_exposure(any, &open, false).unwrap_err().to_string();
    assert!(
        err.contains("refusing to listen on 0.0.0.0:50051 with no credentials") && err.contains("--insecure"),
        "{err}"
    );
    assert!(posture::reload::check_exposure(any, &open, true).is_ok());
    assert!(posture::reload::check_exposure("127.0.0.1:50051".parse().unwrap(), &open, false).is_ok());
    assert!(posture::reload::check_exposure("[::1]:50051".parse().unwrap(), &open, false).is_ok());
    let configured = Credentials::new(&default_credentials()).unwrap();
    assert!(posture::reload::check_exposure(any, &configured, false).is_ok());
}

#[test]
fn hash_secret_reads_the_secret_from_standard_input_only() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let run = |args: &[&str], input: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_posture"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    let out = run(&["hash-secret"], "s3cret\n");
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), posture::auth::sha256_hex("s3cret"));
    let out = run(&["hash-secret", "s3cret"], "");
    assert!(!out.status.success(), "a secret on the command line is refused");
    let out = run(&["hash-secret"], "");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no secret on standard input"));
}
