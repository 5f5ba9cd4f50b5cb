//! Envoy's external authorization (`envoy.service.auth.v3.Authorization/Check`) through the real
//! server: the CheckAccess decision for the user and device a checked HTTP request names, in
//! request headers or in the claims of a JWT that Envoy's jwt_authn filter verified.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue, Metadata};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest, CheckResponse};
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use posture::proto as pb;
use prost::Message;
use tonic::Code;

type Authorization = AuthorizationClient<Authed>;

fn authorization(server: &TestServer, secret: Option<&str>) -> Authorization {
    AuthorizationClient::with_interceptor(server.channel(), Bearer::new(secret))
}

/// A checked HTTP request with these headers, as Envoy sends it.
fn request(headers: &[(&str, &str)]) -> CheckRequest {
    let http = HttpRequest {
        method: "GET".into(),
        path: "/app".into(),
        headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..Default::default()
    };
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request { http: Some(http), ..Default::default() }),
            ..Default::default()
        }),
    }
}

fn text(s: &str) -> Value {
    Value { kind: Some(Kind::StringValue(s.into())) }
}

/// The same request carrying what jwt_authn puts in the metadata for a verified token whose
/// payload has these claims (`payload_in_metadata: jwt_payload`).
fn with_jwt(mut req: CheckRequest, claims: &[(&str, Value)]) -> CheckRequest {
    let payload = Struct { fields: claims.iter().map(|(k, v)| (k.to_string(), v.clone())).collect() };
    let issuer = ("iss".to_string(), text("https://login.example.com"));
    let payload = Struct { fields: payload.fields.into_iter().chain([issuer]).collect() };
    let jwt_authn = Struct {
        fields: HashMap::from([("jwt_payload".to_string(), Value { kind: Some(Kind::StructValue(payload)) })]),
    };
    let metadata = Metadata {
        filter_metadata: HashMap::from([("envoy.filters.http.jwt_authn".to_string(), jwt_authn)]),
        ..Default::default()
    };
    req.attributes.as_mut().unwrap().metadata_context = Some(metadata);
    req
}

fn user_and_device(user: &str, device: &str) -> CheckRequest {
    request(&[("x-posture-user-id", user), ("x-posture-device-id", device)])
}

/// What Envoy acts on, read back: the gRPC status code, the HTTP status (200 for OK), the
/// headers posture sets and, for a deny, the JSON body.
#[derive(Debug)]
struct Answer {
    code: i32,
    http_status: i32,
    headers: HashMap<String, String>,
    body: Option<serde_json::Value>,
}

impl Answer {
    fn codes(&self) -> Vec<&str> {
        let reasons = self.body.as_ref().and_then(|b| b["reasons"].as_array());
        reasons.into_iter().flatten().map(|r| r["code"].as_str().unwrap()).collect()
    }

    fn messages(&self) -> String {
        let reasons = self.body.as_ref().and_then(|b| b["reasons"].as_array());
        reasons.into_iter().flatten().map(|r| r["message"].as_str().unwrap()).collect::<Vec<_>>().join("; ")
    }
}

fn read(r: CheckResponse) -> Answer {
    let code = r.status.unwrap().code;
    let options = |h: Vec<envoy_types::ext_authz::v3::pb::HeaderValueOption>| -> HashMap<String, String> {
        h.into_iter()
            .map(|o| {
                // Overwritten, never appended: a client cannot smuggle its own decision upstream.
                assert_eq!(o.append_action, 2, "OVERWRITE_IF_EXISTS_OR_ADD: {o:?}");
                let h = o.header.unwrap();
                (h.key, h.value)
            })
            .collect()
    };
    match r.http_response.unwrap() {
        HttpResponse::OkResponse(ok) => Answer { code, http_status: 200, headers: options(ok.headers), body: None },
        HttpResponse::DeniedResponse(denied) => Answer {
            code,
            http_status: denied.status.unwrap().code,
            headers: options(denied.headers),
            body: Some(serde_json::from_str(&denied.body).unwrap()),
        },
        HttpResponse::ErrorResponse(e) => panic!("posture answers allow or deny, not an error: {e:?}"),
    }
}

async fn check(server: &TestServer, req: CheckRequest) -> Answer {
    read(authorization(server, Some(GATEWAY_SECRET)).check(req).await.unwrap().into_inner())
}

/// Asserts a deny as Envoy gets it: PERMISSION_DENIED, HTTP 403, a JSON body with these codes.
#[track_caller]
fn assert_denied(a: &Answer, codes: &[&str]) {
    assert_eq!((a.code, a.http_status), (Code::PermissionDenied as i32, 403), "{a:?}");
    assert_eq!(a.headers["x-posture-decision"], "deny");
    assert_eq!(a.headers["content-type"], "application/json");
    assert_eq!(a.body.as_ref().unwrap()["decision"], "deny");
    assert_eq!(a.codes(), codes, "{a:?}");
}

fn without_file_vault(mut r: pb::DeviceReport) -> pb::DeviceReport {
    r.file_vault = pb::FileVaultState::NotEncrypted as i32;
    r
}

/// The standard organisation with Ada's healthy Mac and Bob's without FileVault.
async fn server() -> (TestServer, u64) {
    let server = TestServer::start().await;
    seed_org(&server).await;
    let reports = vec![mac("mac-ada", "ada", "C02ADA0001"), without_file_vault(mac("mac-bob", "bob", "C02BOB0001"))];
    let revision = server.report(reports).await.revision;
    (server, revision)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compliant_mac_is_allowed_with_the_decision_and_revision_for_the_upstream() {
    let (server, revision) = server().await;
    let a = check(&server, user_and_device("ada", "mac-ada")).await;
    assert_eq!((a.code, a.http_status), (Code::Ok as i32, 200), "{a:?}");
    assert_eq!(a.headers["x-posture-decision"], "allow");
    assert_eq!(a.headers["x-posture-revision"], revision.to_string());
    assert_eq!(a.headers.len(), 2, "{a:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_noncompliant_mac_is_denied_with_a_403_listing_the_reasons_of_check_access() {
    let (server, revision) = server().await;
    let a = check(&server, user_and_device("bob", "mac-bob")).await;
    assert_denied(&a, &["NONCOMPLIANT"]);
    assert!(a.messages().contains("storage_encryption"), "{}", a.messages());
    assert_eq!(a.body.as_ref().unwrap()["revision"], revision);
    assert_eq!(a.headers["x-posture-revision"], revision.to_string());
    // The same reasons, and messages, as CheckAccess gives.
    let r = server.check("bob", "mac-bob").await;
    assert_eq!(a.codes(), codes(&r.reasons));
    assert_eq!(a.messages(), r.reasons.iter().map(|r| r.message.as_str()).collect::<Vec<_>>().join("; "));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_user_on_a_compliant_mac_is_denied_as_check_access_denies_them() {
    let (server, _) = server().await;
    let a = check(&server, user_and_device("bob", "mac-ada")).await;
    assert_denied(&a, &["DEVICE_REGISTERED_TO_ANOTHER_USER"]);
    assert_eq!(a.codes(), codes(&server.check("bob", "mac-ada").await.reasons));
    // On a noncompliant Mac, the device's own deny reasons follow.
    let a = check(&server, user_and_device("ada", "mac-bob")).await;
    assert_denied(&a, &["DEVICE_REGISTERED_TO_ANOTHER_USER", "NONCOMPLIANT"]);
    let a = check(&server, user_and_device("ada", "no-such-mac")).await;
    assert_denied(&a, &["DEVICE_UNKNOWN"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_invalid_id_is_a_deny_that_says_which() {
    let (server, _) = server().await;
    let a = check(&server, request(&[("x-posture-user-id", "ada")])).await;
    assert_denied(&a, &["IDENTITY_MISSING"]);
    assert!(a.messages().starts_with("no device id"), "{}", a.messages());
    assert!(a.messages().contains("x-posture-device-id") && a.messages().contains("device_id"), "{}", a.messages());
    // Decided without reading the state: no revision.
    assert!(a.body.as_ref().unwrap().get("revision").is_none(), "{a:?}");
    assert!(!a.headers.contains_key("x-posture-revision"));

    let a = check(&server, request(&[("x-posture-device-id", "mac-ada"), ("x-posture-user-id", "")])).await;
    assert_denied(&a, &["IDENTITY_MISSING"]);
    assert!(a.messages().starts_with("no user id"), "{}", a.messages());
    let a = check(&server, CheckRequest::default()).await;
    assert_denied(&a, &["IDENTITY_MISSING", "IDENTITY_MISSING"]);

    let long = "m".repeat(129);
    let a = check(&server, user_and_device("ada", &long)).await;
    assert_denied(&a, &["IDENTITY_INVALID"]);
    assert!(a.messages().contains("header x-posture-device-id: is longer than 128"), "{}", a.messages());
    let a = check(&server, user_and_device("ada\u{7}", "mac-ada")).await;
    assert_denied(&a, &["IDENTITY_INVALID"]);
    assert!(a.messages().contains("control characters"), "{}", a.messages());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_headers_are_read_when_envoy_sends_them() {
    let (server, _) = server().await;
    let mut req = request(&[]);
    let header =
        |k: &str, v: &str| HeaderValue { key: k.into(), raw_value: v.as_bytes().to_vec(), ..Default::default() };
    let http = req.attributes.as_mut().unwrap().request.as_mut().unwrap().http.as_mut().unwrap();
    http.header_map =
        Some(HeaderMap { headers: vec![header("x-posture-user-id", "ada"), header("x-posture-device-id", "mac-ada")] });
    assert_eq!(check(&server, req).await.headers["x-posture-decision"], "allow");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_claims_of_a_verified_jwt_name_the_user_and_device_and_beat_the_headers() {
    let (server, revision) = server().await;
    let jwt = |claims: &[(&str, Value)]| with_jwt(request(&[]), claims);
    let a = check(&server, jwt(&[("sub", text("ada")), ("device_id", text("mac-ada"))])).await;
    assert_eq!((a.code, a.headers["x-posture-decision"].as_str()), (0, "allow"), "{a:?}");
    assert_eq!(a.headers["x-posture-revision"], revision.to_string());

    // A client's header does not override the signed claim.
    let spoofed = with_jwt(user_and_device("ada", "mac-ada"), &[("sub", text("bob"))]);
    assert_denied(&check(&server, spoofed).await, &["DEVICE_REGISTERED_TO_ANOTHER_USER"]);
    // The header serves what the token does not carry.
    let device_from_header = with_jwt(request(&[("x-posture-device-id", "mac-ada")]), &[("sub", text("ada"))]);
    assert_eq!(check(&server, device_from_header).await.headers["x-posture-decision"], "allow");

    let a = check(&server, jwt(&[("sub", text("ada"))])).await;
    assert_denied(&a, &["IDENTITY_MISSING"]);
    assert!(a.messages().contains("device_id claim"), "{}", a.messages());
    let number = Value { kind: Some(Kind::NumberValue(7.0)) };
    let a = check(&server, jwt(&[("sub", text("ada")), ("device_id", number)])).await;
    assert_denied(&a, &["IDENTITY_INVALID"]);
    assert!(a.messages().contains("claim device_id: is not a string"), "{}", a.messages());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_headers_and_claims_are_configurable() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_for(dir.path(), default_credentials(), false);
    config.ext_authz.user_header = "x-user".into();
    config.ext_authz.device_header = "x-device".into();
    config.ext_authz.jwt_payload_key = "jwt_payload".into();
    config.ext_authz.user_claim = "oid".into();
    let server = TestServer::launch(config, dir).await;
    seed_org(&server).await;
    server.report(vec![mac("mac-ada", "ada", "C02ADA0001")]).await;
    let a = check(&server, request(&[("x-user", "ada"), ("x-device", "mac-ada")])).await;
    assert_eq!(a.headers["x-posture-decision"], "allow", "{a:?}");
    let a = check(&server, with_jwt(request(&[("x-device", "mac-ada")]), &[("oid", text("ada"))])).await;
    assert_eq!(a.headers["x-posture-decision"], "allow", "{a:?}");
    // The default names mean nothing now.
    let a = check(&server, user_and_device("ada", "mac-ada")).await;
    assert_denied(&a, &["IDENTITY_MISSING", "IDENTITY_MISSING"]);
    assert!(a.messages().contains("x-user header") && a.messages().contains("oid claim"), "{}", a.messages());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_gateway_and_admin_credentials_may_ask() {
    let (server, _) = server().await;
    let err = authorization(&server, Some(PARTNER_SECRET)).check(user_and_device("ada", "mac-ada")).await.unwrap_err();
    assert_status(&err, Code::PermissionDenied, &["Partner role", "envoy.service.auth.v3.Authorization"]);
    let err = authorization(&server, None).check(user_and_device("ada", "mac-ada")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let r = authorization(&server, Some(ADMIN_SECRET)).check(user_and_device("ada", "mac-ada")).await.unwrap();
    assert_eq!(read(r.into_inner()).headers["x-posture-decision"], "allow");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_and_describes_the_authorization_service() {
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let server = TestServer::start().await;
    let ask = async |m: MessageRequest| reflect(server.channel(), m).await;
    let MessageResponse::ListServicesResponse(list) = ask(MessageRequest::ListServices(String::new())).await else {
        panic!("not a service list");
    };
    assert!(list.service.iter().any(|s| s.name == "envoy.service.auth.v3.Authorization"), "{list:?}");

    // grpcurl's `describe`: the service's file, then every file it imports, all known.
    let mut pending = vec![MessageRequest::FileContainingSymbol("envoy.service.auth.v3.Authorization".into())];
    let mut seen = std::collections::BTreeSet::new();
    while let Some(question) = pending.pop() {
        let MessageResponse::FileDescriptorResponse(f) = ask(question).await else { panic!("not a file") };
        let file = prost_types::FileDescriptorProto::decode(f.file_descriptor_proto[0].as_slice()).unwrap();
        if seen.is_empty() {
            assert_eq!(file.name(), "envoy/service/auth/v3/external_auth.proto");
            let service = file.service.iter().find(|s| s.name() == "Authorization").unwrap();
            assert_eq!(service.method.iter().map(|m| m.name()).collect::<Vec<_>>(), ["Check"]);
        }
        seen.insert(file.name().to_string());
        let new = file.dependency.into_iter().filter(|d| !seen.contains(d));
        pending.extend(new.map(MessageRequest::FileByFilename));
    }
    assert!(seen.contains("envoy/service/auth/v3/attribute_context.proto"), "{seen:?}");
    assert!(seen.contains("google/rpc/status.proto"), "{seen:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_cut_off_from_its_store_denies_with_store_unavailable() {
    let store = common::faulty::Faulty::new(Arc::new(posture::store::memory::MemoryStore::default()));
    let credentials = Arc::new(posture::auth::Credentials::new(&default_credentials()).unwrap());
    let engine =
        posture::engine::Engine::open(store.clone(), Arc::new(posture::clock::SystemClock), 1_000, credentials)
            .await
            .unwrap();
    let engine = Arc::new(engine.with_max_staleness(Duration::from_millis(200)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(posture::server::serve_engine(engine.clone(), Default::default(), listener, async {
        let _ = stopped.await;
    }));
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect_lazy();
    let mut client = AuthorizationClient::with_interceptor(channel, Bearer::new(Some(GATEWAY_SECRET)));
    let mut ask = async || loop {
        match client.check(user_and_device("ada", "mac-ada")).await {
            Ok(r) => return read(r.into_inner()),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await, // still starting
        }
    };
    assert_denied(&ask().await, &["DEVICE_UNKNOWN"]);

    store.down.store(true, Ordering::SeqCst);
    let mut available = engine.available();
    tokio::time::timeout(Duration::from_secs(5), available.wait_for(|a| !*a)).await.unwrap().unwrap();
    let a = ask().await;
    assert_denied(&a, &["STORE_UNAVAILABLE"]);
    assert!(a.messages().contains("has not reached its store"), "{}", a.messages());
    let _ = stop.send(());
    serving.await.unwrap().unwrap();
}
