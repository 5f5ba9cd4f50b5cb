//! Failing closed, through the real server and a real gRPC client, on a clock the test moves:
//! an edit never restarts a grace period that ended, a policy that starts to apply counts its
//! grace from then, the connector's heartbeat outlives a restart, and a terminated
//! connector's Macs are denied at once and removed at the removal date.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use pb::{ComplianceState as S, Decision as D};
use posture::clock::{Clock, ManualClock};
use posture::domain::Timestamp;
use posture::proto as pb;
use tonic::Code;

const T0: i64 = 1_800_000_000;

async fn server_at_t0() -> (TestServer, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(Timestamp(T0)));
    (TestServer::start_at(clock.clone()).await, clock)
}

fn without_file_vault(mut r: pb::DeviceReport) -> pb::DeviceReport {
    r.file_vault = pb::FileVaultState::NotEncrypted as i32;
    r
}

async fn grace_ends(server: &TestServer, device_id: &str) -> Option<i64> {
    let req = pb::EvaluateDeviceRequest { device_id: device_id.into(), ..Default::default() };
    let r = server.compliance().evaluate_device(req).await.unwrap().into_inner();
    r.policies.iter().find_map(|p| p.grace_period_ends).map(|t| t.seconds)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_a_policy_does_not_restart_a_grace_period_that_ended() {
    let (server, clock) = server_at_t0().await;
    seed_org_with(&server, 72).await;
    // Bob's Mac fails from T0 on and keeps checking in: 100 hours later it is noncompliant.
    for hours in (0..=100).step_by(10) {
        clock.set(Timestamp(T0 + hours * HOUR));
        server.report(vec![without_file_vault(mac_at("mac-bob", "bob", "C02BOB0001", server.now_secs()))]).await;
    }
    let failed_at = T0 - 10 * MINUTE; // the first failing check-in
    assert_eq!(grace_ends(&server, "mac-bob").await, Some(failed_at + 72 * HOUR));
    assert_decision(&server.check("bob", "mac-bob").await, D::Deny, S::Noncompliant, &["NONCOMPLIANT"]);

    // A rename, then a longer grace period and another setting: the grace period stays ended.
    let mut admin = server.admin();
    let mut policy = baseline_policy(72);
    policy.name = "macOS baseline (renamed)".into();
    admin.update_policy(pb::UpdatePolicyRequest { policy: Some(policy.clone()) }).await.unwrap();
    assert_decision(&server.check("bob", "mac-bob").await, D::Deny, S::Noncompliant, &["NONCOMPLIANT"]);
    policy.settings.as_mut().unwrap().firewall_stealth_mode = Some(true);
    admin.update_policy(pb::UpdatePolicyRequest { policy: Some(policy) }).await.unwrap();
    assert_decision(&server.check("bob", "mac-bob").await, D::Deny, S::Noncompliant, &["NONCOMPLIANT"]);
    assert_eq!(grace_ends(&server, "mac-bob").await, Some(failed_at + 72 * HOUR));
    // So does it across a restart.
    let server = server.restart().await;
    assert_decision(&server.check("bob", "mac-bob").await, D::Deny, S::Noncompliant, &["NONCOMPLIANT"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_that_starts_to_apply_counts_its_grace_from_then() {
    let (server, clock) = server_at_t0().await;
    seed_org(&server).await;
    let mut admin = server.admin();
    let mut stealth = baseline_policy(12);
    stealth.id = "stealth".into();
    stealth.settings = Some(pb::PolicySettings { firewall_stealth_mode: Some(true), ..Default::default() });
    create_policy(&mut admin, stealth).await;
    assign(&mut admin, "stealth", &["engineering"], &[]).await;
    let mut dan = mac_at("mac-dan", "dan", "C02DAN0001", T0);
    dan.firewall_stealth_mode = Some(false);
    server.report(vec![dan.clone()]).await;
    assert_decision(&server.check("dan", "mac-dan").await, D::Allow, S::Compliant, &["COMPLIANT"]);

    // Dan joins engineering an hour later: from then, 12 hours of grace.
    clock.set(Timestamp(T0 + HOUR));
    let engineering = user_group("engineering", &["cara", "dan"]);
    sync_directory(&mut admin, vec![], vec![engineering]).await;
    assert_decision(&server.check("dan", "mac-dan").await, D::Allow, S::InGracePeriod, &["IN_GRACE_PERIOD"]);
    assert_eq!(grace_ends(&server, "mac-dan").await, Some(T0 + 13 * HOUR));
    // At its end, noncompliant; his next report, still failing, does not start it afresh.
    clock.set(Timestamp(T0 + 13 * HOUR));
    server
        .report(vec![{
            let mut later = mac_at("mac-dan", "dan", "C02DAN0001", server.now_secs());
            later.firewall_stealth_mode = Some(false);
            later
        }])
        .await;
    assert_decision(&server.check("dan", "mac-dan").await, D::Deny, S::Noncompliant, &["NONCOMPLIANT"]);
    assert_eq!(grace_ends(&server, "mac-dan").await, Some(T0 + 13 * HOUR));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connectors_heartbeat_is_stored_and_outlives_a_restart() {
    let (server, clock) = server_at_t0().await;
    seed_org(&server).await;
    let connector = |server: &TestServer| {
        let mut admin = server.admin();
        async move { admin.get_connector(pb::GetConnectorRequest::default()).await.unwrap().into_inner().connector.unwrap() }
    };
    assert_eq!(connector(&server).await.last_heartbeat, None);
    server.report(vec![mac_at("mac-ada", "ada", "C02ADA0001", T0)]).await;
    let c = connector(&server).await;
    assert_eq!((c.state, c.last_heartbeat.map(|t| t.seconds)), (pb::ConnectorState::Enabled as i32, Some(T0)));
    let server = server.restart().await;
    assert_eq!(connector(&server).await.last_heartbeat.map(|t| t.seconds), Some(T0));
    clock.set(Timestamp(T0 + 24 * HOUR));
    assert_eq!(connector(&server).await.state, pb::ConnectorState::Unresponsive as i32);
    server.report(vec![mac_at("mac-ada", "ada", "C02ADA0001", server.now_secs())]).await;
    assert_eq!(connector(&server).await.state, pb::ConnectorState::Enabled as i32);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_stale_duplicate_record_lets_the_mac_in() {
    let server = TestServer::start().await;
    seed_org(&server).await;
    server.report(vec![mac("mac-erin-1", "erin", "C02ERIN001"), mac("mac-erin-2", "erin", "C02ERIN001")]).await;
    let r = server.check("erin", "mac-erin-1").await;
    assert_decision(&r, D::Deny, S::Compliant, &["DUPLICATE_REGISTRATION"]);
    // DiagnoseDevice's remedy is to delete the stale record; an admin can.
    let delete = |id: &str| pb::DeleteDeviceRequest { device_id: id.into() };
    for secret in [GATEWAY_SECRET, PARTNER_SECRET] {
        let err = server.admin_as(Some(secret)).delete_device(delete("mac-erin-2")).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);
    }
    let mut admin = server.admin();
    let revision = admin.delete_device(delete("mac-erin-2")).await.unwrap().into_inner().revision;
    assert_decision(&server.check("erin", "mac-erin-1").await, D::Allow, S::Compliant, &["COMPLIANT"]);
    assert_decision(&server.check("erin", "mac-erin-2").await, D::Deny, S::Unknown, &["DEVICE_UNKNOWN"]);
    let err = admin.delete_device(delete("mac-erin-2")).await.unwrap_err();
    assert_status(&err, Code::NotFound, &["no device mac-erin-2"]);
    let err = admin.delete_device(delete("")).await.unwrap_err();
    assert_status(&err, Code::InvalidArgument, &["device_id: is required"]);
    assert_eq!(server.revision().await, revision, "refusals write nothing");
    let server = server.restart().await;
    assert_decision(&server.check("erin", "mac-erin-2").await, D::Deny, S::Unknown, &["DEVICE_UNKNOWN"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_connectors_macs_are_denied_at_once_and_removed_at_the_removal_date() {
    let (server, clock) = server_at_t0().await;
    seed_org(&server).await;
    let macs = ["mac-ada", "mac-bob"];
    let reported = server
        .report(vec![mac_at("mac-ada", "ada", "C02ADA0001", T0), mac_at("mac-bob", "bob", "C02BOB0001", T0)])
        .await
        .revision;
    // Once the watcher has decided the reports (the summary counts them), watch from now on.
    let counted = pb::GetComplianceSummaryRequest { min_revision: reported };
    assert_eq!(server.compliance().get_compliance_summary(counted).await.unwrap().into_inner().allowed, 2);
    let mut events =
        server.compliance().watch_compliance(pb::WatchComplianceRequest::default()).await.unwrap().into_inner();
    let next = async |events: &mut tonic::Streaming<pb::ComplianceEvent>| {
        tokio::time::timeout(Duration::from_secs(10), events.message()).await.unwrap().unwrap().unwrap()
    };

    server.admin().terminate_connector(pb::TerminateConnectorRequest {}).await.unwrap();
    for device in macs {
        let e = next(&mut events).await;
        assert_eq!((e.device_id.as_str(), e.decision, e.state), (device, D::Deny as i32, S::Noncompliant as i32));
        assert_eq!(codes(&e.reasons), ["INTEGRATION_DISABLED"]);
    }
    let summary = server.compliance().get_compliance_summary(pb::GetComplianceSummaryRequest::default()).await;
    let summary = summary.unwrap().into_inner();
    assert_eq!((summary.devices, summary.allowed, summary.denied), (2, 0, 2));
    assert_eq!(
        summary.by_state.iter().map(|s| (s.state, s.devices)).collect::<Vec<_>>(),
        [(S::Noncompliant as i32, 2)]
    );

    // Ninety days on, the records are removed (the server sweeps within a second or so).
    clock.set(Timestamp(T0 + 90 * DAY));
    let mut last = std::collections::BTreeMap::new();
    while last.len() < macs.len() || last.values().any(|codes: &Vec<String>| codes != &["DEVICE_UNKNOWN"]) {
        let e = next(&mut events).await;
        last.insert(e.device_id.clone(), e.reasons.iter().map(|r| r.code.clone()).collect::<Vec<_>>());
    }
    let summary = server.compliance().get_compliance_summary(pb::GetComplianceSummaryRequest::default()).await;
    assert_eq!(summary.unwrap().into_inner().devices, 0);
    let req = pb::EvaluateDeviceRequest { device_id: "mac-ada".into(), ..Default::default() };
    assert_eq!(server.compliance().evaluate_device(req).await.unwrap_err().code(), Code::NotFound);
    // Removed for good: a restart does not bring them back.
    let server = server.restart().await;
    assert_decision(&server.check("ada", "mac-ada").await, D::Deny, S::Unknown, &["DEVICE_UNKNOWN"]);
    assert_eq!(clock.now(), Timestamp(T0 + 90 * DAY));
    server.stop().await;
}
