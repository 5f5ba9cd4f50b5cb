//! Who may call what, through the real server: bearer secrets, roles, the partner's least
//! privilege, secret rotation, and authentication off when no credentials are configured.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use pb::{ComplianceState as S, Decision as D};
use posture::auth::Role;
use posture::proto as pb;
use tonic::Code;

fn check_req() -> pb::CheckAccessRequest {
    pb::CheckAccessRequest { user_id: "ada".into(), device_id: "mac-ada".into(), ..Default::default() }
}

fn report_req() -> pb::ReportInventoryRequest {
    pb::ReportInventoryRequest { devices: vec![mac("mac-ada", "ada", "C02ADA0001")] }
}

/// The status code each service answers `secret` with (`Ok` as `Code::Ok`).
async fn codes_for(server: &TestServer, secret: Option<&str>) -> [Code; 5] {
    let code = |r: Result<(), tonic::Status>| r.err().map_or(Code::Ok, |s| s.code());
    [
        code(server.compliance_as(secret).check_access(check_req()).await.map(drop)),
        code(
            server
                .targeting_as(secret)
                .resolve_enrollment(pb::ResolveEnrollmentRequest { user_id: "ada".into(), ..Default::default() })
                .await
                .map(drop),
        ),
        code(server.admin_as(secret).get_settings(pb::GetSettingsRequest::default()).await.map(drop)),
        code(server.admin_as(secret).list_policies(pb::ListPoliciesRequest::default()).await.map(drop)),
        code(server.inventory_as(secret).report_inventory(report_req()).await.map(drop)),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_reaches_exactly_its_services() {
    let server = TestServer::start().await;
    seed_org(&server).await;
    use Code::{Ok, PermissionDenied as Denied, Unauthenticated as Unauth};
    //                                         Compliance, Targeting, Admin,  Admin,  Inventory
    assert_eq!(codes_for(&server, None).await, [Unauth, Unauth, Unauth, Unauth, Unauth]);
    assert_eq!(codes_for(&server, Some("not-a-secret")).await, [Unauth, Unauth, Unauth, Unauth, Unauth]);
    assert_eq!(codes_for(&server, Some(PARTNER_SECRET)).await, [Denied, Denied, Denied, Denied, Ok]);
    assert_eq!(codes_for(&server, Some(GATEWAY_SECRET)).await, [Ok, Ok, Denied, Denied, Denied]);
    assert_eq!(codes_for(&server, Some(ADMIN_SECRET)).await, [Ok, Ok, Ok, Ok, Denied]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_say_what_is_wrong() {
    let server = TestServer::start().await;
    seed_org(&server).await;
    let err = server.compliance_as(None).check_access(check_req()).await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::Unauthenticated, "missing authorization metadata: send \"authorization: Bearer <secret>\"")
    );
    let err = server.compliance_as(Some("nope")).check_access(check_req()).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::Unauthenticated, "unknown or revoked secret"));

    // A raw header without the Bearer scheme.
    let mut req = tonic::Request::new(check_req());
    req.metadata_mut().insert("authorization", GATEWAY_SECRET.parse().unwrap());
    let err = server.compliance_as(None).check_access(req).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::Unauthenticated, "authorization must be \"Bearer <secret>\""));

    let err = server.compliance_as(Some(PARTNER_SECRET)).check_access(check_req()).await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::PermissionDenied, "credential jamf-test has the Partner role, which may not call ComplianceService")
    );
    let err = server.admin_as(Some(GATEWAY_SECRET)).get_settings(pb::GetSettingsRequest::default()).await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::PermissionDenied, "credential test-gateway has the Gateway role, which may not call AdminService")
    );
    let err = server.inventory_as(Some(GATEWAY_SECRET)).report_inventory(report_req()).await.unwrap_err();
    assert_status(&err, Code::PermissionDenied, &["InventoryService"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_caller_writes_nothing() {
    let server = TestServer::start().await;
    let seeded = seed_org(&server).await;
    let policy = pb::CreatePolicyRequest { policy: Some(pb::Policy { id: "x".into(), ..baseline_policy(0) }) };
    for secret in [None, Some(PARTNER_SECRET), Some(GATEWAY_SECRET)] {
        assert!(server.admin_as(secret).create_policy(policy.clone()).await.is_err());
        let terminate = server.admin_as(secret).terminate_connector(pb::TerminateConnectorRequest {}).await;
        assert!(terminate.is_err());
    }
    for secret in [None, Some(ADMIN_SECRET), Some(GATEWAY_SECRET)] {
        assert!(server.inventory_as(secret).report_inventory(report_req()).await.is_err());
    }
    assert_eq!(server.revision().await, seeded);
    assert_decision(&server.check("ada", "mac-ada").await, D::Deny, S::Unknown, &["DEVICE_UNKNOWN"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_connectors_partner_app_may_report() {
    let mut credentials = default_credentials();
    credentials.push(credential("other-partner", Role::Partner, &["other-partner-secret"]));
    let server = TestServer::start_with(credentials).await;
    let seeded = seed_org(&server).await;
    let err = server.inventory_as(Some("other-partner-secret")).report_inventory(report_req()).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(
        err.message(),
        "credential other-partner is not the connector's partner app (jamf-test): only it may report inventory"
    );
    assert_eq!(server.revision().await, seeded);
    // The connector's own partner may.
    let r = server.report(report_req().devices).await;
    assert_eq!(r.accepted, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_and_new_secrets_are_both_valid_during_a_rotation() {
    let credentials = vec![
        credential("test-admin", Role::Admin, &[ADMIN_SECRET]),
        credential("test-gateway", Role::Gateway, &["gateway-old", "gateway-new"]),
        credential(PARTNER_APP, Role::Partner, &["partner-old", "partner-new"]),
    ];
    let server = TestServer::start_with(credentials.clone()).await;
    seed_org(&server).await;
    for secret in ["partner-old", "partner-new"] {
        let r = server.inventory_as(Some(secret)).report_inventory(report_req()).await.unwrap();
        assert_eq!(r.into_inner().accepted, 1, "{secret}");
    }
    for secret in ["gateway-old", "gateway-new"] {
        let r = server.compliance_as(Some(secret)).check_access(check_req()).await.unwrap().into_inner();
        assert_decision(&r, D::Allow, S::Compliant, &["COMPLIANT"]);
    }
    let err = server.compliance_as(Some("gateway-older")).check_access(check_req()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    // The rotation ends: a restart with only the new secret revokes the old one.
    let mut config = server.config.clone();
    config.credentials = vec![
        credential("test-admin", Role::Admin, &[ADMIN_SECRET]),
        credential("test-gateway", Role::Gateway, &["gateway-new"]),
        credential(PARTNER_APP, Role::Partner, &["partner-new"]),
    ];
    let dir = server.stop().await;
    let server = TestServer::launch(config, dir).await;
    let err = server.compliance_as(Some("gateway-old")).check_access(check_req()).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::Unauthenticated, "unknown or revoked secret"));
    let err = server.inventory_as(Some("partner-old")).report_inventory(report_req()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(server.compliance_as(Some("gateway-new")).check_access(check_req()).await.is_ok());
    assert!(server.inventory_as(Some("partner-new")).report_inventory(report_req()).await.is_ok());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_credentials_configured_every_call_is_allowed() {
    let server = TestServer::start_without_auth().await;
    // The harness sends no token at all to a server without credentials.
    seed_org(&server).await;
    let r = server.inventory_as(None).report_inventory(report_req()).await.unwrap().into_inner();
    assert_eq!(r.accepted, 1);
    let r = server.compliance_as(None).check_access(check_req()).await.unwrap().into_inner();
    assert_decision(&r, D::Allow, S::Compliant, &["COMPLIANT"]);
    assert!(
        server
            .targeting_as(None)
            .resolve_enrollment(pb::ResolveEnrollmentRequest { user_id: "ada".into(), ..Default::default() })
            .await
            .is_ok()
    );
    // Any token is ignored too.
    assert!(server.admin_as(Some("whatever")).get_settings(pb::GetSettingsRequest::default()).await.is_ok());
    assert_eq!(codes_for(&server, None).await, [Code::Ok; 5]);
    // The partner check is off: diagnosis does not flag the partner's permissions.
    let mut compliance = server.compliance_as(None);
    let d = compliance
        .diagnose_device(pb::DiagnoseDeviceRequest { device_id: "mac-ada".into(), ..Default::default() })
        .await;
    assert_eq!(d.unwrap().into_inner().findings, vec![]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_needs_no_token() {
    let server = TestServer::start().await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel());
    let r = health.check(tonic_health::pb::HealthCheckRequest { service: "posture.v1.ComplianceService".into() });
    assert_eq!(
        r.await.unwrap().into_inner().status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    server.stop().await;
}
