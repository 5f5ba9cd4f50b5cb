//! Hostile bytes through a real client: arbitrary bytes, and arbitrary field values (arbitrary
//! bytes that happen to decode as the request), into every RPC. posture must answer each with
//! a status that blames the request or the state — never INTERNAL or UNKNOWN — and stay
//! healthy. (A coverage-guided fuzzer needs a nightly toolchain; proptest runs on stable.)
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use posture::proto as pb;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use prost::Message;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// Every unary RPC, the secret that may call it, and how to turn bytes into one of its
/// requests when they decode as one.
type Reencode = fn(&[u8]) -> Option<Vec<u8>>;

fn as_request<M: Message + Default>(bytes: &[u8]) -> Option<Vec<u8>> {
    M::decode(bytes).ok().map(|m| m.encode_to_vec())
}

const RPCS: &[(&str, &str, Reencode)] = &[
    ("/posture.v1.ComplianceService/CheckAccess", GATEWAY_SECRET, as_request::<pb::CheckAccessRequest>),
    ("/posture.v1.ComplianceService/EvaluateDevice", GATEWAY_SECRET, as_request::<pb::EvaluateDeviceRequest>),
    ("/posture.v1.ComplianceService/DiagnoseDevice", GATEWAY_SECRET, as_request::<pb::DiagnoseDeviceRequest>),
    (
        "/posture.v1.ComplianceService/GetComplianceSummary",
        GATEWAY_SECRET,
        as_request::<pb::GetComplianceSummaryRequest>,
    ),
    ("/posture.v1.TargetingService/ResolveEnrollment", GATEWAY_SECRET, as_request::<pb::ResolveEnrollmentRequest>),
    ("/posture.v1.TargetingService/PreviewTargeting", GATEWAY_SECRET, as_request::<pb::PreviewTargetingRequest>),
    ("/posture.v1.InventoryService/ReportInventory", PARTNER_SECRET, as_request::<pb::ReportInventoryRequest>),
    ("/posture.v1.AdminService/CreatePolicy", ADMIN_SECRET, as_request::<pb::CreatePolicyRequest>),
    ("/posture.v1.AdminService/UpdatePolicy", ADMIN_SECRET, as_request::<pb::UpdatePolicyRequest>),
    ("/posture.v1.AdminService/GetPolicy", ADMIN_SECRET, as_request::<pb::GetPolicyRequest>),
    ("/posture.v1.AdminService/ListPolicies", ADMIN_SECRET, as_request::<pb::ListPoliciesRequest>),
    ("/posture.v1.AdminService/DeletePolicy", ADMIN_SECRET, as_request::<pb::DeletePolicyRequest>),
    ("/posture.v1.AdminService/AssignPolicy", ADMIN_SECRET, as_request::<pb::AssignPolicyRequest>),
    ("/posture.v1.AdminService/EnableConnector", ADMIN_SECRET, as_request::<pb::EnableConnectorRequest>),
    ("/posture.v1.AdminService/GetConnector", ADMIN_SECRET, as_request::<pb::GetConnectorRequest>),
    ("/posture.v1.AdminService/SyncDirectory", ADMIN_SECRET, as_request::<pb::SyncDirectoryRequest>),
    ("/posture.v1.AdminService/GetSettings", ADMIN_SECRET, as_request::<pb::GetSettingsRequest>),
    ("/posture.v1.AdminService/UpdateSettings", ADMIN_SECRET, as_request::<pb::UpdateSettingsRequest>),
    ("/posture.v1.AdminService/DeleteDevice", ADMIN_SECRET, as_request::<pb::DeleteDeviceRequest>),
    (
        "/envoy.service.auth.v3.Authorization/Check",
        GATEWAY_SECRET,
        as_request::<envoy_types::ext_authz::v3::pb::CheckRequest>,
    ),
    ("/grpc.health.v1.Health/Check", GATEWAY_SECRET, as_request::<HealthCheckRequest>),
];

/// The codes no request may get: they would say the server broke.
fn server_fault(code: Code) -> bool {
    matches!(code, Code::Internal | Code::Unknown | Code::DataLoss)
}

/// Bytes shaped like protobuf more often than uniform noise would be: a field tag and a
/// length-delimited value, repeated, with noise between.
fn bytes() -> impl Strategy<Value = Vec<u8>> {
    let field = (1u8..24, prop::collection::vec(any::<u8>(), 0..40)).prop_map(|(n, v)| {
        let mut out = vec![(n << 3) | 2, v.len() as u8];
        out.extend(v);
        out
    });
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        prop::collection::vec(field, 0..8).prop_map(|fields| fields.concat()),
    ]
}

#[test]
fn arbitrary_bytes_and_field_values_never_break_the_server() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let server = TestServer::start().await;
        seed_org(&server).await;
        server.report(vec![mac("mac-ada", "ada", "C02ADA0001")]).await;
        let channel = server.channel();
        let handle = tokio::runtime::Handle::current();
        tokio::task::block_in_place(|| {
            let mut runner = TestRunner::new(Config { cases: 600, failure_persistence: None, ..Config::default() });
            let case = (0..RPCS.len(), bytes(), any::<bool>());
            runner
                .run(&case, |(rpc, bytes, decoded)| {
                    let (path, secret, reencode) = RPCS[rpc];
                    // Half the time the bytes as a request (arbitrary field values), else as sent.
                    let payload = if decoded { reencode(&bytes).unwrap_or(bytes) } else { bytes };
                    let answer = handle.block_on(raw::call(channel.clone(), path, payload.clone(), Some(secret)));
                    if let Err(status) = answer {
                        prop_assert!(
                            !server_fault(status.code()),
                            "{path} with {payload:?}: {:?} {}",
                            status.code(),
                            status.message()
                        );
                        prop_assert!(
                            status.message().len() <= 1100,
                            "{path}: a {} byte message",
                            status.message().len()
                        );
                    }
                    Ok(())
                })
                .unwrap();
        });
        let mut health = HealthClient::new(server.channel());
        let status = health.check(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner().status;
        assert_eq!(status, ServingStatus::Serving as i32, "healthy after it all");
        server.stop().await;
    });
}

#[test]
fn arbitrary_bytes_to_the_watch_stream_never_break_it() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let server = TestServer::start().await;
        seed_org(&server).await;
        let channel = server.channel();
        let handle = tokio::runtime::Handle::current();
        tokio::task::block_in_place(|| {
            let mut runner = TestRunner::new(Config { cases: 100, failure_persistence: None, ..Config::default() });
            runner
                .run(&(bytes(), any::<bool>()), |(bytes, decoded)| {
                    let payload =
                        if decoded { as_request::<pb::WatchComplianceRequest>(&bytes).unwrap_or(bytes) } else { bytes };
                    let first = handle.block_on(async {
                        let mut grpc = tonic::client::Grpc::new(channel.clone());
                        grpc.ready().await.unwrap();
                        let mut req = tonic::Request::new(payload.clone());
                        req.metadata_mut().insert("authorization", format!("Bearer {GATEWAY_SECRET}").parse().unwrap());
                        req.set_timeout(std::time::Duration::from_millis(200));
                        let path =
                            http::uri::PathAndQuery::from_static("/posture.v1.ComplianceService/WatchCompliance");
                        match grpc.server_streaming(req, path, raw::Raw).await {
                            Ok(stream) => {
                                let mut stream = stream.into_inner();
                                // The first event (a snapshot) or the deadline: either is fine.
                                match tokio::time::timeout(std::time::Duration::from_millis(300), stream.message())
                                    .await
                                {
                                    Ok(Err(status)) => Err(status),
                                    _ => Ok(()),
                                }
                            }
                            Err(status) => Err(status),
                        }
                    });
                    if let Err(status) = first {
                        prop_assert!(
                            !server_fault(status.code()),
                            "{payload:?}: {:?} {}",
                            status.code(),
                            status.message()
                        );
                    }
                    Ok(())
                })
                .unwrap();
        });
        let mut health = HealthClient::new(server.channel());
        let status = health.check(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner().status;
        assert_eq!(status, ServingStatus::Serving as i32);
        server.stop().await;
    });
}
