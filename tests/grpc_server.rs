//! The server as a whole: health, reflection (v1 and v1alpha), durability across a restart,
//! bad input at the edge, graceful shutdown, and the `--demo` organisation.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use pb::{ComplianceState as S, Decision as D};
use posture::proto as pb;
use prost::Message;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

const EXPECTED_SERVICES: [&str; 8] = [
    "envoy.service.auth.v3.Authorization",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
    "posture.v1.AdminService",
    "posture.v1.ComplianceService",
    "posture.v1.InventoryService",
    "posture.v1.TargetingService",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_serving_for_the_server_and_each_service() {
    let server = TestServer::start().await;
    let mut health = HealthClient::new(server.channel());
    for service in [
        "",
        "posture.v1.ComplianceService",
        "posture.v1.TargetingService",
        "posture.v1.InventoryService",
        "posture.v1.AdminService",
        "envoy.service.auth.v3.Authorization",
    ] {
        let r = health.check(HealthCheckRequest { service: service.into() }).await.unwrap().into_inner();
        assert_eq!(r.status, ServingStatus::Serving as i32, "{service:?}");
    }
    let err = health.check(HealthCheckRequest { service: "posture.v1.NoSuchService".into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_v1_lists_every_service_and_describes_them() {
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let server = TestServer::start().await;
    let ask = async |m: MessageRequest| reflect(server.channel(), m).await;
    let MessageResponse::ListServicesResponse(list) = ask(MessageRequest::ListServices(String::new())).await else {
        panic!("not a service list");
    };
    let mut names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    names.sort();
    assert_eq!(names, EXPECTED_SERVICES);

    // What grpcurl's `describe` does: the file holding a service, then each file it imports.
    let file = async |m: MessageRequest| match ask(m).await {
        MessageResponse::FileDescriptorResponse(f) => {
            assert_eq!(f.file_descriptor_proto.len(), 1);
            prost_types::FileDescriptorProto::decode(f.file_descriptor_proto[0].as_slice()).unwrap()
        }
        other => panic!("not a file descriptor: {other:?}"),
    };
    let admin = file(MessageRequest::FileContainingSymbol("posture.v1.AdminService".into())).await;
    assert_eq!(admin.name(), "posture/v1/admin.proto");
    let service = admin.service.iter().find(|s| s.name() == "AdminService").unwrap();
    let methods: Vec<&str> = service.method.iter().map(|m| m.name()).collect();
    for rpc in ["CreatePolicy", "AssignPolicy", "EnableConnector", "SyncDirectory", "DeleteDevice", "PreviewPolicy"] {
        assert!(methods.contains(&rpc), "{rpc} in {methods:?}");
    }
    let compliance = file(MessageRequest::FileContainingSymbol("posture.v1.ComplianceService".into())).await;
    let mut pending: Vec<String> = admin.dependency.iter().chain(&compliance.dependency).cloned().collect();
    let mut seen = std::collections::BTreeSet::new();
    while let Some(name) = pending.pop() {
        if seen.insert(name.clone()) {
            let f = file(MessageRequest::FileByFilename(name.clone())).await;
            assert_eq!(f.name(), name);
            pending.extend(f.dependency.iter().cloned());
        }
    }
    assert_eq!(
        seen.iter().map(String::as_str).collect::<Vec<_>>(),
        [
            "google/protobuf/timestamp.proto",
            "posture/v1/compliance.proto",
            "posture/v1/inventory.proto",
            "posture/v1/types.proto"
        ]
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_v1alpha_lists_every_service() {
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;

    let server = TestServer::start().await;
    let mut client = ServerReflectionClient::new(server.channel());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = client.server_reflection_info(tokio_stream::iter(vec![request])).await.unwrap().into_inner();
    let answer = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("not a service list");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    assert_eq!(names, EXPECTED_SERVICES);
    server.stop().await;
}

/// Everything a client can read back about the organisation.
#[derive(Debug, PartialEq)]
struct Snapshot {
    revision: u64,
    policies: pb::ListPoliciesResponse,
    baseline: pb::PolicyResponse,
    connector: pb::ConnectorResponse,
    settings: pb::SettingsResponse,
    decisions: Vec<pb::CheckAccessResponse>,
    evaluations: Vec<pb::EvaluateDeviceResponse>,
    summary: pb::GetComplianceSummaryResponse,
    enrollment: pb::ResolveEnrollmentResponse,
}

const DEVICES: [(&str, &str); 6] = [
    ("ada", "mac-ada"),
    ("bob", "mac-bob"),
    ("cara", "mac-cara"),
    ("dan", "mac-dan"),
    ("erin", "mac-erin-1"),
    ("erin", "mac-erin-2"),
];

async fn snapshot(server: &TestServer) -> Snapshot {
    let mut admin = server.admin();
    let mut compliance = server.compliance();
    let mut connector = admin.get_connector(pb::GetConnectorRequest::default()).await.unwrap().into_inner();
    // The partner's last heartbeat is kept in memory only, since the process started.
    connector.connector.as_mut().unwrap().last_heartbeat = None;
    let mut decisions = Vec::new();
    let mut evaluations = Vec::new();
    for (user, device) in DEVICES {
        decisions.push(server.check(user, device).await);
        let e = compliance
            .evaluate_device(pb::EvaluateDeviceRequest { device_id: device.into(), ..Default::default() })
            .await
            .unwrap();
        evaluations.push(e.into_inner());
    }
    Snapshot {
        revision: server.revision().await,
        policies: admin.list_policies(pb::ListPoliciesRequest::default()).await.unwrap().into_inner(),
        baseline: admin
            .get_policy(pb::GetPolicyRequest { policy_id: "baseline".into(), ..Default::default() })
            .await
            .unwrap()
            .into_inner(),
        connector,
        settings: admin.get_settings(pb::GetSettingsRequest::default()).await.unwrap().into_inner(),
        decisions,
        evaluations,
        summary: compliance
            .get_compliance_summary(pb::GetComplianceSummaryRequest::default())
            .await
            .unwrap()
            .into_inner(),
        enrollment: server
            .targeting()
            .resolve_enrollment(pb::ResolveEnrollmentRequest { user_id: "gus".into(), ..Default::default() })
            .await
            .unwrap()
            .into_inner(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_write_survives_a_restart() {
    let server = TestServer::start().await;
    seed_org_with(&server, 72).await;
    let mut admin = server.admin();
    let mut strict = baseline_policy(0);
    strict.id = "strict".into();
    strict.name = "Strict".into();
    let settings = strict.settings.as_mut().unwrap();
    settings.os_maximum_version = "15.9".into();
    settings.os_minimum_build = "22A100".into();
    settings.firewall_stealth_mode = Some(true);
    settings.max_threat_level = pb::ThreatLevel::Low as i32;
    settings.password = Some(pb::PasswordRules {
        required: Some(true),
        min_length: Some(8),
        r#type: pb::PasswordType::Alphanumeric as i32,
        max_expiry_days: Some(90),
        ..Default::default()
    });
    create_policy(&mut admin, strict).await;
    assign(&mut admin, "strict", &["engineering"], &["contractors"]).await;
    let settings = pb::Settings { no_policy: pb::NoPolicyTreatment::Noncompliant as i32, validity_days: 45 };
    admin.update_settings(pb::UpdateSettingsRequest { settings: Some(settings) }).await.unwrap();

    let mut bob = mac("mac-bob", "bob", "C02BOB0001");
    bob.file_vault = pb::FileVaultState::NotEncrypted as i32;
    let mut dan = mac("mac-dan", "dan", "C02DAN0001");
    dan.last_check_in = Some(ago(25 * HOUR));
    let devices = vec![
        mac("mac-ada", "ada", "C02ADA0001"),
        bob,
        mac("mac-cara", "cara", "C02CARA001"),
        dan,
        mac("mac-erin-1", "erin", "C02ERIN001"),
        mac("mac-erin-2", "erin", "C02ERIN001"),
    ];
    let reported = server.report(devices.clone()).await;
    let before = snapshot(&server).await;
    assert_eq!(before.revision, reported.revision);
    assert_eq!(decision(before.decisions[0].decision), D::Allow);
    assert_eq!(state(before.decisions[1].state), S::InGracePeriod);

    let server = server.restart().await;
    let after = snapshot(&server).await;
    assert_eq!(after, before);

    // The same batch again is a retry of stored reports: nothing changes.
    let retry = server.report(devices).await;
    assert_eq!(retry.revision, reported.revision);
    assert!(retry.results.iter().all(|r| !r.changed), "{:?}", retry.results);
    // New writes continue the revisions.
    let r = server.admin().delete_policy(pb::DeletePolicyRequest { policy_id: "strict".into() }).await;
    assert_eq!(r.unwrap().into_inner().revision, reported.revision + 1);

    // Deleted with its assignment: gone after a restart too, and made again it is unassigned.
    let server = server.restart().await;
    let names: Vec<String> = server
        .admin()
        .list_policies(pb::ListPoliciesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .policies
        .into_iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(names, ["baseline", "engineering-passwords"]);
    let mut strict = baseline_policy(0);
    strict.id = "strict".into();
    let made = create_policy(&mut server.admin(), strict).await;
    assert_eq!(made.policy.unwrap().assignment, Some(pb::Assignment::default()));

    // Terminated, then restarted: still terminated, with the same removal date.
    let terminated = server.admin().terminate_connector(pb::TerminateConnectorRequest {}).await.unwrap().into_inner();
    let server = server.restart().await;
    let read = server.admin().get_connector(pb::GetConnectorRequest::default()).await.unwrap().into_inner();
    assert_eq!(read.connector.as_ref().unwrap().removal_at, terminated.connector.as_ref().unwrap().removal_at);
    assert_eq!(read.connector.unwrap().state, pb::ConnectorState::Terminated as i32);
    assert_eq!(read.revision, terminated.revision);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_identifiers_are_invalid_arguments_naming_the_field() {
    let server = TestServer::start().await;
    seed_org(&server).await;
    let mut compliance = server.compliance();
    let long = "x".repeat(129);
    let cases = [
        ("", "mac-ada", "user_id: is required"),
        (long.as_str(), "mac-ada", "user_id: is longer than 128 characters"),
        ("ada", "", "device_id: is required"),
        ("ada", long.as_str(), "device_id: is longer than 128 characters"),
        ("ada", "mac\u{7}", "device_id: contains control characters"),
    ];
    for (user_id, device_id, message) in cases {
        let req = pb::CheckAccessRequest { user_id: user_id.into(), device_id: device_id.into(), ..Default::default() };
        let err = compliance.check_access(req).await.unwrap_err();
        assert_eq!((err.code(), err.message()), (Code::InvalidArgument, message));
    }
    // 128 characters is the longest id.
    let longest = "x".repeat(128);
    assert_decision(&server.check("ada", &longest).await, D::Deny, S::Unknown, &["DEVICE_UNKNOWN"]);

    let err = compliance
        .evaluate_device(pb::EvaluateDeviceRequest { device_id: String::new(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::InvalidArgument, "device_id: is required"));
    let err = compliance
        .diagnose_device(pb::DiagnoseDeviceRequest { device_id: long.clone(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::InvalidArgument, "device_id: is longer than 128 characters"));
    let err = server
        .targeting()
        .resolve_enrollment(pb::ResolveEnrollmentRequest { user_id: String::new(), ..Default::default() })
        .await;
    let err = err.unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::InvalidArgument, "user_id: is required"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_closes_the_port_even_with_a_client_connected() {
    let server = TestServer::start().await;
    seed_org(&server).await;
    let mut compliance = server.compliance();
    compliance
        .check_access(pb::CheckAccessRequest { user_id: "ada".into(), device_id: "m".into(), ..Default::default() })
        .await
        .unwrap();
    let addr = server.addr;
    let started = std::time::Instant::now();
    server.stop().await;
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "stopped in {:?}", started.elapsed());
    let err = compliance
        .check_access(pb::CheckAccessRequest { user_id: "ada".into(), device_id: "m".into(), ..Default::default() })
        .await;
    // The connection is gone: refused (UNAVAILABLE), or cut as the call went out (CANCELLED),
    // depending on when the client notices.
    let code = err.unwrap_err().code();
    assert!(matches!(code, Code::Unavailable | Code::Cancelled), "{code:?}");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "nothing listens on {addr} any more");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_organisation_shows_every_outcome() {
    let server = TestServer::start_demo().await;
    let gateway = Some("demo-gateway");
    let mut compliance = server.compliance_as(gateway);
    let cases: [(&str, &str, D, S, &[&str]); 10] = [
        ("ada", "mac-ada", D::Allow, S::Compliant, &["COMPLIANT"]),
        ("bob", "mac-bob", D::Deny, S::Noncompliant, &["NONCOMPLIANT"]),
        ("cara", "mac-cara", D::Allow, S::InGracePeriod, &["IN_GRACE_PERIOD"]),
        ("dan", "mac-dan", D::Deny, S::Unknown, &["UNRESPONSIVE"]),
        ("erin", "mac-erin-1", D::Deny, S::Compliant, &["DUPLICATE_REGISTRATION"]),
        ("finn", "mac-finn", D::Deny, S::Compliant, &["NOT_REGISTERED_THROUGH_PARTNER"]),
        ("gus", "mac-gus", D::Deny, S::Compliant, &["USER_NOT_TARGETED"]),
        ("hal", "mac-hal", D::Deny, S::Compliant, &["LICENCE_MISSING"]),
        ("bob", "mac-ada", D::Deny, S::Compliant, &["DEVICE_REGISTERED_TO_ANOTHER_USER"]),
        ("ada", "no-such-mac", D::Deny, S::Unknown, &["DEVICE_UNKNOWN"]),
    ];
    for (user_id, device_id, d, s, reasons) in cases {
        let req = pb::CheckAccessRequest { user_id: user_id.into(), device_id: device_id.into(), ..Default::default() };
        let r = compliance.check_access(req).await.unwrap().into_inner();
        assert_decision(&r, d, s, reasons);
        assert_eq!(r.revision, 7, "{device_id}");
    }
    let summary =
        compliance.get_compliance_summary(pb::GetComplianceSummaryRequest::default()).await.unwrap().into_inner();
    assert_eq!((summary.devices, summary.allowed, summary.denied), (9, 2, 7));
    let preview = pb::PreviewTargetingRequest {
        include_group_ids: strings(&["mac-users"]),
        exclude_group_ids: strings(&["contractors", "engineering"]),
        ..Default::default()
    };
    let p = server.targeting_as(gateway).preview_targeting(preview).await.unwrap().into_inner();
    assert_eq!(
        (p.users_to_partner, p.devices_to_partner, p.users_excluded, p.devices_excluded, p.users_not_targeted),
        (5, 6, 3, 3, 0)
    );

    // The demo secrets: the partner may report (and nothing else), the admin may administer.
    let ada_now = pb::CheckAccessRequest { user_id: "ada".into(), device_id: "mac-ada".into(), ..Default::default() };
    let err = server.compliance_as(Some("demo-partner")).check_access(ada_now).await.unwrap_err();
    assert_status(&err, Code::PermissionDenied, &["jamf-demo"]);
    let report = pb::ReportInventoryRequest { devices: vec![mac("mac-bob", "bob", "C02BOB0001")] };
    let r = server.inventory_as(Some("demo-partner")).report_inventory(report).await.unwrap();
    assert_eq!(r.into_inner().revision, 8);
    let bob_now = pb::CheckAccessRequest { user_id: "bob".into(), device_id: "mac-bob".into(), ..Default::default() };
    assert_decision(
        &compliance.check_access(bob_now.clone()).await.unwrap().into_inner(),
        D::Allow,
        S::Compliant,
        &["COMPLIANT"],
    );
    let connector =
        server.admin_as(Some("demo-admin")).get_connector(pb::GetConnectorRequest::default()).await.unwrap();
    assert_eq!(connector.into_inner().connector.unwrap().partner_app_id, "jamf-demo");

    // Restarted with --demo on the same data: not seeded again, the partner's report kept.
    let server = server.restart().await;
    let mut compliance = server.compliance_as(gateway);
    let r = compliance.check_access(bob_now).await.unwrap().into_inner();
    assert_decision(&r, D::Allow, S::Compliant, &["COMPLIANT"]);
    assert_eq!(r.revision, 8);
    server.stop().await;
}
