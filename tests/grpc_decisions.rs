//! Decisions through the real server: CheckAccess with every reason, EvaluateDevice,
//! DiagnoseDevice, GetComplianceSummary, ResolveEnrollment, PreviewTargeting, and the cache
//! following every write.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use pb::{ComplianceState as S, Decision as D};
use posture::proto as pb;
use tonic::Code;

/// A server with the standard organisation (baseline grace 0) and these reports.
async fn server_with(devices: Vec<pb::DeviceReport>) -> (TestServer, u64) {
    let server = TestServer::start().await;
    seed_org(&server).await;
    let revision = server.report(devices).await.revision;
    (server, revision)
}

fn without_file_vault(mut r: pb::DeviceReport) -> pb::DeviceReport {
    r.file_vault = pb::FileVaultState::NotEncrypted as i32;
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_partner_mac_is_allowed_as_compliant() {
    let ada = mac("mac-ada", "ada", "C02ADA0001");
    let (server, written) = server_with(vec![ada.clone()]).await;
    let r = server.check("ada", "mac-ada").await;
    assert_decision(&r, D::Allow, S::Compliant, &["COMPLIANT"]);
    assert_eq!(r.reasons[0].message, "the device meets every policy that applies");
    assert!(r.revision >= written, "decision at {} is before the write at {written}", r.revision);
    // The token renewal (an hour ago) goes stale first: over 24 hours after it.
    let renewal = ada.last_token_renewal.unwrap().seconds;
    assert_eq!(r.valid_until, Some(prost_types::Timestamp { seconds: renewal + DAY + 1, nanos: 0 }));
    // Asked again, the cached answer is the same.
    assert_eq!(server.check("ada", "mac-ada").await, r);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_mac_without_grace_is_denied_as_noncompliant() {
    let (server, _) = server_with(vec![without_file_vault(mac("mac-bob", "bob", "C02BOB0001"))]).await;
    let r = server.check("bob", "mac-bob").await;
    assert_decision(&r, D::Deny, S::Noncompliant, &["NONCOMPLIANT"]);
    assert_eq!(r.reasons[0].message, "fails policy macOS baseline: storage_encryption");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_mac_within_72_hours_grace_is_allowed_in_grace_period() {
    let server = TestServer::start().await;
    seed_org_with(&server, 72).await;
    let report = without_file_vault(mac("mac-bob", "bob", "C02BOB0001"));
    // The grace period runs for 72 hours from the check-in that first showed the failure:
    // the one this report carries (a second report built later could be a second later).
    let checked_in = report.last_check_in.as_ref().unwrap().seconds;
    server.report(vec![report]).await;
    let r = server.check("bob", "mac-bob").await;
    assert_decision(&r, D::Allow, S::InGracePeriod, &["IN_GRACE_PERIOD"]);
    let ends = posture::domain::Timestamp(checked_in + 72 * HOUR);
    assert_eq!(
        r.reasons[0].message,
        format!("fails policy macOS baseline but its grace period ends at {ends}: storage_encryption")
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_device_is_a_deny_not_an_error() {
    let (server, _) = server_with(vec![mac("mac-ada", "ada", "C02ADA0001")]).await;
    let r = server.check("ada", "no-such-mac").await;
    assert_decision(&r, D::Deny, S::Unknown, &["DEVICE_UNKNOWN"]);
    assert_eq!(r.reasons[0].message, "no device no-such-mac has been reported by the partner");
    assert_eq!(r.valid_until, None);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_registered_to_another_user_is_denied() {
    let (server, _) = server_with(vec![mac("mac-ada", "ada", "C02ADA0001")]).await;
    let r = server.check("bob", "mac-ada").await;
    // The device itself is compliant; the caller is not its user.
    // Only deny reasons follow the mismatch: no COMPLIANT in a denial.
    assert_decision(&r, D::Deny, S::Compliant, &["DEVICE_REGISTERED_TO_ANOTHER_USER"]);
    assert_eq!(r.reasons[0].message, "device mac-ada is registered to another user, not to bob");
    // Its own user is still let in (the cached device decision is not changed by the other caller).
    assert_decision(&server.check("ada", "mac-ada").await, D::Allow, S::Compliant, &["COMPLIANT"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mac_that_has_not_checked_in_for_25_hours_is_unresponsive() {
    let mut dan = mac("mac-dan", "dan", "C02DAN0001");
    dan.last_check_in = Some(ago(25 * HOUR));
    let (server, _) = server_with(vec![dan]).await;
    let r = server.check("dan", "mac-dan").await;
    // Old data is not compliant data (rule 5): the state is UNKNOWN.
    assert_decision(&r, D::Deny, S::Unknown, &["UNRESPONSIVE"]);
    assert!(r.reasons[0].message.starts_with("no check-in with the partner since "), "{:?}", r.reasons);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mac_whose_token_was_not_renewed_for_25_hours_is_denied_token_stale() {
    let mut bob = mac("mac-bob", "bob", "C02BOB0001");
    bob.last_token_renewal = Some(ago(25 * HOUR));
    let (server, _) = server_with(vec![bob]).await;
    assert_decision(&server.check("bob", "mac-bob").await, D::Deny, S::Unknown, &["TOKEN_STALE"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lapsed_refresh_token_requires_a_new_sign_in() {
    let mut bob = mac("mac-bob", "bob", "C02BOB0001");
    bob.refresh_token_issued = Some(ago(8 * DAY));
    let (server, _) = server_with(vec![bob]).await;
    assert_decision(&server.check("bob", "mac-bob").await, D::Deny, S::Compliant, &["SIGN_IN_REQUIRED"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_records_with_one_serial_are_a_duplicate_registration() {
    let (server, _) =
        server_with(vec![mac("mac-erin-1", "erin", "C02ERIN001"), mac("mac-erin-2", "erin", "C02ERIN001")]).await;
    for (device, other) in [("mac-erin-1", "mac-erin-2"), ("mac-erin-2", "mac-erin-1")] {
        let r = server.check("erin", device).await;
        assert_decision(&r, D::Deny, S::Compliant, &["DUPLICATE_REGISTRATION"]);
        assert_eq!(r.reasons[0].message, format!("serial C02ERIN001 is also registered as {other}"));
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directly_registered_mac_is_not_registered_through_the_partner() {
    let mut finn = mac("mac-finn", "finn", "C02FINN001");
    finn.registration = pb::Registration::Direct as i32;
    let (server, _) = server_with(vec![finn]).await;
    let r = server.check("finn", "mac-finn").await;
    assert_decision(&r, D::Deny, S::Compliant, &["NOT_REGISTERED_THROUGH_PARTNER"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_in_an_exclude_group_is_not_targeted_even_when_also_included() {
    // gus is in mac-users (included) and contractors (excluded): exclude wins.
    let (server, _) = server_with(vec![mac("mac-gus", "gus", "C02GUS0001")]).await;
    let r = server.check("gus", "mac-gus").await;
    assert_decision(&r, D::Deny, S::Compliant, &["USER_NOT_TARGETED"]);
    assert_eq!(
        r.reasons[0].message,
        "user gus is excluded from partner enrollment by group contractors; the Mac must enroll directly"
    );
    // zed is in no group at all.
    server.report(vec![mac("mac-zed", "zed", "C02ZED0001")]).await;
    let r = server.check("zed", "mac-zed").await;
    assert_decision(&r, D::Deny, S::Compliant, &["USER_NOT_TARGETED"]);
    assert_eq!(r.reasons[0].message, "user zed is in no include group of the partner connector");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_without_the_licences_is_denied_licence_missing() {
    let (server, _) = server_with(vec![mac("mac-hal", "hal", "C02HAL0001")]).await;
    let r = server.check("hal", "mac-hal").await;
    assert_decision(&r, D::Deny, S::Compliant, &["LICENCE_MISSING"]);
    assert_eq!(r.reasons[0].message, "user hal@example.com has no premium identity licence");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mac_older_than_macos_10_12_is_unsupported() {
    // ivy is enrolled through the partner and no policy reaches her: only the OS gate speaks.
    let mut ivy = mac("mac-ivy", "ivy", "C02IVY0001");
    ivy.os_version = "10.11.6".into();
    ivy.os_build = "15G31".into();
    let (server, _) = server_with(vec![ivy]).await;
    let r = server.check("ivy", "mac-ivy").await;
    assert_decision(&r, D::Deny, S::Compliant, &["UNSUPPORTED_OS"]);
    assert_eq!(r.reasons[0].message, "macOS 10.11.6 is older than the supported 10.12");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mac_whose_user_is_not_in_the_directory_is_denied() {
    let (server, _) = server_with(vec![mac("mac-x", "stranger", "C02X000001")]).await;
    let r = server.check("stranger", "mac-x").await;
    assert_decision(&r, D::Deny, S::Compliant, &["USER_UNKNOWN", "USER_NOT_TARGETED"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_problems_give_every_reason_in_order() {
    let mut hal = mac("mac-hal", "hal", "C02HAL0001");
    hal.registration = pb::Registration::Direct as i32;
    hal.last_check_in = Some(ago(2 * DAY));
    hal.file_vault = pb::FileVaultState::SomeEncrypted as i32;
    let (server, _) = server_with(vec![hal]).await;
    let r = server.check("hal", "mac-hal").await;
    assert_decision(
        &r,
        D::Deny,
        S::Noncompliant,
        &["LICENCE_MISSING", "NOT_REGISTERED_THROUGH_PARTNER", "UNRESPONSIVE", "NONCOMPLIANT"],
    );
    server.stop().await;
}

/// A policy of `mac-users` that requires FileVault alone.
fn disk_policy(id: &str, grace_period_hours: u32) -> pb::Policy {
    pb::Policy {
        id: id.into(),
        name: format!("Disk {id}"),
        settings: Some(pb::PolicySettings { storage_encryption_required: Some(true), ..Default::default() }),
        grace_period_hours,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_access_answers_each_code_once_and_a_denial_with_what_denies() {
    let server = TestServer::start().await;
    seed_org_with(&server, 72).await;
    let mut admin = server.admin();
    for (id, grace) in [("a", 0), ("b", 0), ("c", 72)] {
        create_policy(&mut admin, disk_policy(id, grace)).await;
        assign(&mut admin, id, &["mac-users"], &[]).await;
    }
    server.report(vec![without_file_vault(mac("mac-bob", "bob", "C02BOB0001"))]).await;

    // Two policies deny, two (the baseline and c) are in their grace period: the answer is
    // the denial, once, saying how many more policies it stands for.
    let r = server.check("bob", "mac-bob").await;
    assert_decision(&r, D::Deny, S::Noncompliant, &["NONCOMPLIANT"]);
    let message = &r.reasons[0].message;
    assert!(
        message.starts_with("fails policy Disk ") && message.ends_with(": storage_encryption (and 1 more)"),
        "{message}"
    );
    assert!(r.reasons[0].denies);
    // EvaluateDevice still explains every policy.
    let req = pb::EvaluateDeviceRequest { device_id: "mac-bob".into(), ..Default::default() };
    let e = server.compliance().evaluate_device(req).await.unwrap().into_inner();
    let failing = e.policies.iter().filter(|p| p.state != S::Compliant as i32).count();
    assert_eq!(failing, 4, "{:?}", e.policies);

    // Without the two policies that deny, the Mac is let in, for two grace periods at once.
    for id in ["a", "b"] {
        let req = pb::AssignPolicyRequest { policy_id: id.into(), assignment: Some(pb::Assignment::default()) };
        admin.assign_policy(req).await.unwrap();
    }
    let r = server.check("bob", "mac-bob").await;
    assert_decision(&r, D::Allow, S::InGracePeriod, &["IN_GRACE_PERIOD"]);
    assert!(r.reasons[0].message.ends_with(": storage_encryption (and 1 more)"), "{:?}", r.reasons);
    assert!(!r.reasons[0].denies);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evaluate_device_returns_every_configured_setting() {
    let mut cara = mac("mac-cara", "cara", "C02CARA001");
    cara.password.as_mut().unwrap().min_length = Some(8);
    let bob = without_file_vault(mac("mac-bob", "bob", "C02BOB0001"));
    // Both failures began to count at the check-in that showed them (grace 0 for baseline).
    let (baseline_at, passwords_at) = (bob.last_check_in.unwrap(), cara.last_check_in.unwrap());
    let (server, written) = server_with(vec![bob, cara]).await;
    let setting = |setting: &str, expected: &str, actual: &str, state: S| pb::SettingResult {
        setting: setting.into(),
        expected: expected.into(),
        actual: actual.into(),
        state: state as i32,
    };
    let baseline_settings = |encryption: &str, encryption_state: S| {
        vec![
            setting("os_minimum_version", ">= 13.0", "14.2.1", S::Compliant),
            setting("system_integrity_protection", "enabled", "enabled", S::Compliant),
            setting("storage_encryption", "all volumes encrypted", encryption, encryption_state),
            setting("firewall_enabled", "true", "true", S::Compliant),
            setting(
                "gatekeeper",
                "at least Mac App Store and identified developers",
                "Mac App Store and identified developers",
                S::Compliant,
            ),
        ]
    };
    let mut compliance = server.compliance();
    let evaluate = |id: &str| pb::EvaluateDeviceRequest { device_id: id.into(), ..Default::default() };

    // Bob: baseline fails on FileVault, at once (grace 0, so it ended when the policy was made).
    let r = compliance.evaluate_device(evaluate("mac-bob")).await.unwrap().into_inner();
    assert!(r.revision >= written);
    let expected = pb::EvaluateDeviceResponse {
        device_id: "mac-bob".into(),
        user_id: "bob".into(),
        state: S::Noncompliant as i32,
        policies: vec![pb::PolicyResult {
            policy_id: "baseline".into(),
            policy_name: "macOS baseline".into(),
            state: S::Noncompliant as i32,
            settings: baseline_settings("not encrypted", S::Noncompliant),
            grace_period_ends: Some(baseline_at),
        }],
        grace_period_ends: None,
        reasons: vec![],
        revision: r.revision,
    };
    assert_eq!(r, expected);

    // Cara: baseline met; the password policy failed, within its 72 hours.
    let r = compliance.evaluate_device(evaluate("mac-cara")).await.unwrap().into_inner();
    let grace_ends = prost_types::Timestamp { seconds: passwords_at.seconds + 72 * HOUR, nanos: 0 };
    let expected = pb::EvaluateDeviceResponse {
        device_id: "mac-cara".into(),
        user_id: "cara".into(),
        state: S::InGracePeriod as i32,
        policies: vec![
            pb::PolicyResult {
                policy_id: "baseline".into(),
                policy_name: "macOS baseline".into(),
                state: S::Compliant as i32,
                settings: baseline_settings("all volumes encrypted", S::Compliant),
                grace_period_ends: None,
            },
            pb::PolicyResult {
                policy_id: "engineering-passwords".into(),
                policy_name: "Engineering passwords".into(),
                state: S::InGracePeriod as i32,
                settings: vec![
                    setting("password_required", "true", "true", S::Compliant),
                    setting("password_minimum_length", ">= 14", "8", S::Noncompliant),
                ],
                grace_period_ends: Some(grace_ends),
            },
        ],
        grace_period_ends: Some(grace_ends),
        reasons: vec![],
        revision: r.revision,
    };
    assert_eq!(r, expected);
    assert_decision(&server.check("cara", "mac-cara").await, D::Allow, S::InGracePeriod, &["IN_GRACE_PERIOD"]);

    // An unknown device is NOT_FOUND here.
    let err = compliance.evaluate_device(evaluate("no-such-mac")).await.unwrap_err();
    assert_status(&err, Code::NotFound, &["no-such-mac"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_setting_the_partner_did_not_report_is_an_error_that_denies() {
    let mut ada = mac("mac-ada", "ada", "C02ADA0001");
    ada.gatekeeper = pb::GatekeeperState::Unspecified as i32;
    let (server, _) = server_with(vec![ada]).await;
    let r = server
        .compliance()
        .evaluate_device(pb::EvaluateDeviceRequest { device_id: "mac-ada".into(), ..Default::default() })
        .await;
    let r = r.unwrap().into_inner();
    assert_eq!(state(r.state), S::Error);
    let gatekeeper = r.policies[0].settings.iter().find(|s| s.setting == "gatekeeper").unwrap();
    assert_eq!((gatekeeper.actual.as_str(), state(gatekeeper.state)), ("not reported", S::Error));
    assert_decision(&server.check("ada", "mac-ada").await, D::Deny, S::Error, &["COMPLIANCE_ERROR"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diagnose_device_explains_a_denial_with_cause_codes_and_remediation() {
    let mut finn = mac("mac-finn", "finn", "C02FINN001");
    finn.registration = pb::Registration::Direct as i32;
    let mut dan = mac("mac-dan", "dan", "C02DAN0001");
    dan.last_check_in = Some(ago(25 * HOUR));
    let (server, _) = server_with(vec![
        mac("mac-ada", "ada", "C02ADA0001"),
        finn,
        dan,
        mac("mac-hal", "hal", "C02HAL0001"),
        mac("mac-erin-1", "erin", "C02ERIN001"),
        mac("mac-erin-2", "erin", "C02ERIN001"),
    ])
    .await;
    let mut compliance = server.compliance();
    let diagnose = |id: &str| pb::DiagnoseDeviceRequest { device_id: id.into(), ..Default::default() };
    let mut findings = async |id: &str| {
        let r = compliance.diagnose_device(diagnose(id)).await.unwrap().into_inner();
        assert_eq!(r.device_id, id);
        let causes: Vec<(String, String)> =
            r.findings.iter().map(|f| (f.cause.clone(), f.remediation.clone())).collect();
        (decision(r.decision), causes, r.findings)
    };

    let (d, causes, _) = findings("mac-ada").await;
    assert_eq!((d, causes), (D::Allow, vec![]));

    let (d, causes, _) = findings("mac-finn").await;
    assert_eq!(d, D::Deny);
    assert_eq!(
        causes,
        vec![(
            "NOT_REGISTERED_THROUGH_PARTNER".to_string(),
            "Remove the direct registration and register the Mac again by launching the Company Portal from the \
             partner's Self Service."
                .to_string()
        )]
    );

    let (d, causes, f) = findings("mac-erin-1").await;
    assert_eq!(d, D::Deny);
    assert_eq!(
        causes,
        vec![(
            "DUPLICATE_REGISTRATION".to_string(),
            "Delete the stale device records that share this serial number, then have the user register the Mac once \
             through the partner."
                .to_string()
        )]
    );
    assert_eq!(f[0].detail, "serial C02ERIN001 is also registered as mac-erin-2");

    let (d, causes, _) = findings("mac-hal").await;
    assert_eq!(d, D::Deny);
    assert_eq!(
        causes,
        vec![(
            "LICENCE_MISSING".to_string(),
            "Assign the user both a device-management licence and a premium identity licence, then sync the \
             directory."
                .to_string()
        )]
    );

    let (d, causes, _) = findings("mac-dan").await;
    assert_eq!(d, D::Deny);
    assert_eq!(causes.iter().map(|c| c.0.as_str()).collect::<Vec<_>>(), ["UNRESPONSIVE"]);

    // Terminated: the integration is disabled for every Mac.
    server.admin().terminate_connector(pb::TerminateConnectorRequest {}).await.unwrap();
    let (d, causes, _) = findings("mac-ada").await;
    assert_eq!((d, causes.iter().map(|c| c.0.as_str()).collect::<Vec<_>>()), (D::Deny, vec!["INTEGRATION_DISABLED"]));

    let err = compliance.diagnose_device(diagnose("no-such-mac")).await.unwrap_err();
    assert_status(&err, Code::NotFound, &["no-such-mac"]);
    server.stop().await;
}

/// The partner's credential is checked when the connector is enabled; should the credentials
/// change afterwards (a new configuration file), diagnosis says what is wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_partner_credential_is_checked_when_enabling_and_diagnosed_after() {
    let (server, _) = server_with(vec![mac("mac-ada", "ada", "C02ADA0001")]).await;
    let findings = |server: &TestServer| {
        let mut compliance = server.compliance();
        async move {
            let req = pb::DiagnoseDeviceRequest { device_id: "mac-ada".into(), ..Default::default() };
            compliance.diagnose_device(req).await.unwrap().into_inner().findings
        }
    };
    assert_eq!(findings(&server).await, vec![]);
    // Enabling it for a credential with more than the partner role, or for none, is refused.
    let mut admin = server.admin();
    let revision = server.revision().await;
    for (app, fragment) in [("test-gateway", "does not have the partner role"), ("nobody", "no credential nobody")] {
        let mut req = enable_request(&["mac-users", "kiosk-users"], &["contractors"]);
        req.partner_app_id = app.into();
        let err = admin.enable_connector(req).await.unwrap_err();
        assert_status(&err, Code::FailedPrecondition, &["partner_app_id", fragment]);
    }
    assert_eq!(server.revision().await, revision, "nothing was written");

    // Restarted with the partner's credential turned into a gateway's: diagnosis tells.
    let config = server.config.clone();
    let dir = server.stop().await;
    let mut credentials = config.credentials.clone();
    credentials.iter_mut().filter(|c| c.id == PARTNER_APP).for_each(|c| c.role = posture::auth::Role::Gateway);
    let server = TestServer::launch(config_for(dir.path(), credentials.clone(), false), dir).await;
    let f = findings(&server).await;
    assert_eq!(f.iter().map(|f| f.cause.as_str()).collect::<Vec<_>>(), ["WRONG_PARTNER_PERMISSIONS"]);
    assert_eq!(f[0].detail, format!("the credential of partner app {PARTNER_APP} holds more than the partner role"));
    // And with it gone altogether.
    let dir = server.stop().await;
    credentials.retain(|c| c.id != PARTNER_APP);
    let server = TestServer::launch(config_for(dir.path(), credentials, false), dir).await;
    let f = findings(&server).await;
    assert_eq!(f.iter().map(|f| f.cause.as_str()).collect::<Vec<_>>(), ["WRONG_PARTNER_PERMISSIONS"]);
    assert_eq!(f[0].detail, format!("no credential is configured for partner app {PARTNER_APP}"));
    server.stop().await;
}

/// A group that a policy or the connector uses may not change kind: a user group turned into
/// a device group would silently stop the policy, or turn an excluded user's DENY into ALLOW.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_in_use_may_not_change_kind() {
    let mut cara = mac("mac-cara", "cara", "C02CARA001");
    cara.password.as_mut().unwrap().min_length = Some(8);
    let (server, _) = server_with(vec![cara, mac("mac-gus", "gus", "C02GUS0001")]).await;
    let mut admin = server.admin();
    let revision = server.revision().await;
    let cases = [
        ("engineering", "mac-cara", "the assignment of policy engineering-passwords"),
        ("contractors", "mac-gus", "the partner connector"),
    ];
    for (group, device, user) in cases {
        let req = pb::SyncDirectoryRequest { groups: vec![device_group(group, &[device])], ..Default::default() };
        let err = admin.sync_directory(req).await.unwrap_err();
        assert_status(&err, Code::FailedPrecondition, &["groups[0]", group, user, "device group"]);
    }
    assert_eq!(server.revision().await, revision, "nothing was written");
    assert_decision(&server.check("cara", "mac-cara").await, D::Allow, S::InGracePeriod, &["IN_GRACE_PERIOD"]);
    assert_decision(&server.check("gus", "mac-gus").await, D::Deny, S::Compliant, &["USER_NOT_TARGETED"]);
    // A group nothing uses may change kind.
    sync_directory(&mut admin, vec![], vec![user_group("lab-macs", &["ada"])]).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compliance_summary_counts_devices_and_users_by_state_and_reason() {
    let mut cara = mac("mac-cara", "cara", "C02CARA001");
    cara.password.as_mut().unwrap().min_length = Some(8);
    let mut finn = mac("mac-finn", "finn", "C02FINN001");
    finn.registration = pb::Registration::Direct as i32;
    let (server, written) = server_with(vec![
        mac("mac-ada", "ada", "C02ADA0001"),
        without_file_vault(mac("mac-bob", "bob", "C02BOB0001")),
        cara,
        finn,
        mac("mac-erin-1", "erin", "C02ERIN001"),
        mac("mac-erin-2", "erin", "C02ERIN001"),
    ])
    .await;
    let r = server.compliance().get_compliance_summary(pb::GetComplianceSummaryRequest::default()).await.unwrap();
    let r = r.into_inner();
    assert!(r.revision >= written);
    let by_state: Vec<(S, u64)> = r.by_state.iter().map(|c| (state(c.state), c.devices)).collect();
    let by_reason: Vec<(&str, u64, u64)> = r.by_reason.iter().map(|c| (c.code.as_str(), c.devices, c.users)).collect();
    assert_eq!((r.devices, r.allowed, r.denied), (6, 2, 4));
    assert_eq!(by_state, [(S::Compliant, 4), (S::InGracePeriod, 1), (S::Noncompliant, 1)]);
    assert_eq!(
        by_reason,
        [
            ("COMPLIANT", 1, 1),
            ("IN_GRACE_PERIOD", 1, 1),
            ("NOT_REGISTERED_THROUGH_PARTNER", 1, 1),
            ("DUPLICATE_REGISTRATION", 2, 1),
            ("NONCOMPLIANT", 1, 1),
        ]
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolve_enrollment_names_the_target_and_the_deciding_groups() {
    let server = TestServer::start().await;
    let seeded = seed_org(&server).await;
    let mut targeting = server.targeting();
    let cases = [
        ("ada", pb::EnrollmentTarget::Partner, vec!["mac-users"], vec![]),
        ("ivy", pb::EnrollmentTarget::Partner, vec!["kiosk-users"], vec![]),
        ("gus", pb::EnrollmentTarget::Direct, vec!["mac-users"], vec!["contractors"]),
        ("zed", pb::EnrollmentTarget::NotTargeted, vec![], vec![]),
        ("not-in-the-directory", pb::EnrollmentTarget::NotTargeted, vec![], vec![]),
    ];
    for (user_id, target, include, exclude) in cases {
        let r = targeting
            .resolve_enrollment(pb::ResolveEnrollmentRequest { user_id: user_id.into(), ..Default::default() })
            .await;
        let r = r.unwrap().into_inner();
        assert_eq!(
            r,
            pb::ResolveEnrollmentResponse {
                user_id: user_id.into(),
                target: target as i32,
                include_group_ids: strings(&include),
                exclude_group_ids: strings(&exclude),
                revision: seeded,
            },
            "{user_id}"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_targeting_counts_an_unsaved_configuration() {
    let devices = ["ada", "bob", "cara", "gus", "ivy", "zed"]
        .iter()
        .map(|u| mac(&format!("mac-{u}"), u, &format!("C02{}", u.to_uppercase())))
        .collect();
    let (server, written) = server_with(devices).await;
    let connector_before = server.admin().get_connector(pb::GetConnectorRequest::default()).await.unwrap().into_inner();
    let mut targeting = server.targeting();
    let preview = |include: &[&str], exclude: &[&str]| pb::PreviewTargetingRequest {
        include_group_ids: strings(include),
        exclude_group_ids: strings(exclude),
        ..Default::default()
    };
    // Ten users; mac-users minus contractors (gus) and engineering (cara) leaves six.
    let r = targeting.preview_targeting(preview(&["mac-users"], &["contractors", "engineering"])).await.unwrap();
    assert_eq!(
        r.into_inner(),
        pb::PreviewTargetingResponse {
            users_to_partner: 6,
            devices_to_partner: 2,
            users_excluded: 2,
            devices_excluded: 2,
            users_not_targeted: 2,
            devices_not_targeted: 2,
            revision: written,
        }
    );
    // A user in an included and an excluded group (cara: engineering, mac-users) counts once,
    // as excluded.
    let r = targeting.preview_targeting(preview(&["engineering"], &["mac-users"])).await.unwrap();
    let r = r.into_inner();
    assert_eq!(
        (r.users_to_partner, r.devices_to_partner, r.users_excluded, r.devices_excluded, r.users_not_targeted),
        (0, 0, 8, 4, 2)
    );
    // One group both included and excluded is refused, as is a group listed twice.
    let err =
        targeting.preview_targeting(preview(&["contractors", "engineering"], &["contractors"])).await.unwrap_err();
    assert_status(&err, Code::InvalidArgument, &["exclude_group_ids[0]", "also in include_group_ids[0]"]);
    let err = targeting.preview_targeting(preview(&["engineering", "engineering"], &[])).await.unwrap_err();
    assert_status(&err, Code::InvalidArgument, &["include_group_ids[1]", "repeats include_group_ids[0]"]);
    // Nothing was saved.
    let connector_after = server.admin().get_connector(pb::GetConnectorRequest::default()).await.unwrap().into_inner();
    assert_eq!(connector_after, connector_before);

    let err = targeting.preview_targeting(preview(&["mac-users", "lab-macs"], &[])).await.unwrap_err();
    assert_status(&err, Code::InvalidArgument, &["include_group_ids[1]", "lab-macs is a device group"]);
    let err = targeting.preview_targeting(preview(&["mac-users"], &["lab-macs"])).await.unwrap_err();
    assert_status(&err, Code::InvalidArgument, &["exclude_group_ids[0]", "lab-macs is a device group"]);
    let err = targeting.preview_targeting(preview(&["no-such-group"], &[])).await.unwrap_err();
    assert_status(&err, Code::FailedPrecondition, &["include_group_ids[0]", "no-such-group"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_check_after_a_write_sees_it() {
    let ada = mac("mac-ada", "ada", "C02ADA0001");
    let (server, _) = server_with(vec![ada.clone(), mac("mac-bob", "bob", "C02BOB0001")]).await;
    for _ in 0..3 {
        assert_decision(&server.check("ada", "mac-ada").await, D::Allow, S::Compliant, &["COMPLIANT"]);
    }

    // The partner reports FileVault off: the very next check denies.
    let written = server.report(vec![without_file_vault(ada.clone())]).await.revision;
    let r = server.check("ada", "mac-ada").await;
    assert_decision(&r, D::Deny, S::Noncompliant, &["NONCOMPLIANT"]);
    assert!(r.revision >= written);
    // And back on again.
    server.report(vec![ada]).await;
    assert_decision(&server.check("ada", "mac-ada").await, D::Allow, S::Compliant, &["COMPLIANT"]);

    // A policy made stricter.
    assert_decision(&server.check("bob", "mac-bob").await, D::Allow, S::Compliant, &["COMPLIANT"]);
    let mut admin = server.admin();
    let mut baseline = baseline_policy(0);
    baseline.settings.as_mut().unwrap().os_minimum_version = "15.0".into();
    let written = admin.update_policy(pb::UpdatePolicyRequest { policy: Some(baseline) }).await.unwrap();
    let r = server.check("bob", "mac-bob").await;
    assert_decision(&r, D::Deny, S::Noncompliant, &["NONCOMPLIANT"]);
    assert!(r.revision >= written.into_inner().revision);
    admin.update_policy(pb::UpdatePolicyRequest { policy: Some(baseline_policy(0)) }).await.unwrap();
    assert_decision(&server.check("bob", "mac-bob").await, D::Allow, S::Compliant, &["COMPLIANT"]);

    // A licence taken away in the directory.
    sync_directory(&mut admin, vec![user("bob", false)], vec![]).await;
    assert_decision(&server.check("bob", "mac-bob").await, D::Deny, S::Compliant, &["LICENCE_MISSING"]);

    // A group membership changed: ada joins the contractors.
    assert_decision(&server.check("ada", "mac-ada").await, D::Allow, S::Compliant, &["COMPLIANT"]);
    sync_directory(&mut admin, vec![], vec![user_group("contractors", &["gus", "ada"])]).await;
    assert_decision(&server.check("ada", "mac-ada").await, D::Deny, S::Compliant, &["USER_NOT_TARGETED"]);

    // A second record with ada's serial appears.
    sync_directory(&mut admin, vec![], vec![user_group("contractors", &["gus"])]).await;
    assert_decision(&server.check("ada", "mac-ada").await, D::Allow, S::Compliant, &["COMPLIANT"]);
    server.report(vec![mac("mac-ada-2", "ada", "C02ADA0001")]).await;
    assert_decision(&server.check("ada", "mac-ada").await, D::Deny, S::Compliant, &["DUPLICATE_REGISTRATION"]);

    // A device first unknown, then reported.
    assert_decision(&server.check("ivy", "mac-ivy").await, D::Deny, S::Unknown, &["DEVICE_UNKNOWN"]);
    server.report(vec![mac("mac-ivy", "ivy", "C02IVY0001")]).await;
    assert_decision(&server.check("ivy", "mac-ivy").await, D::Allow, S::Compliant, &["COMPLIANT"]);

    // The policy deleted: bob's failing Mac is reached by no policy any more.
    server.report(vec![without_file_vault(mac("mac-bob", "bob", "C02BOB0001"))]).await;
    sync_directory(&mut admin, vec![user("bob", true)], vec![]).await;
    assert_decision(&server.check("bob", "mac-bob").await, D::Deny, S::Noncompliant, &["NONCOMPLIANT"]);
    admin.delete_policy(pb::DeletePolicyRequest { policy_id: "baseline".into() }).await.unwrap();
    assert_decision(&server.check("bob", "mac-bob").await, D::Allow, S::Compliant, &["COMPLIANT"]);
    // A user removed from the directory (the groups still list bob).
    let remove = pb::SyncDirectoryRequest { removed_user_ids: strings(&["bob"]), ..Default::default() };
    admin.sync_directory(remove).await.unwrap();
    assert_decision(&server.check("bob", "mac-bob").await, D::Deny, S::Compliant, &["USER_UNKNOWN"]);

    // The connector terminated: its Macs are denied and noncompliant at once.
    admin.terminate_connector(pb::TerminateConnectorRequest {}).await.unwrap();
    assert_decision(&server.check("ivy", "mac-ivy").await, D::Deny, S::Noncompliant, &["INTEGRATION_DISABLED"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_always_read_their_own_writes() {
    let server = std::sync::Arc::new(TestServer::start().await);
    seed_org(&server).await;
    let users = ["ada", "bob", "dan", "erin"];
    let mut tasks = Vec::new();
    for (n, user) in users.into_iter().enumerate() {
        let server = server.clone();
        tasks.push(tokio::spawn(async move {
            let device = format!("mac-{user}");
            let healthy = mac(&device, user, &format!("SERIAL{n}"));
            for i in 0..12 {
                let failing = i % 2 == 1;
                let report = if failing { without_file_vault(healthy.clone()) } else { healthy.clone() };
                let written = server.report(vec![report]).await.revision;
                // Another task's reader, at the same moment, must not disturb this one.
                let r = server.check(user, &device).await;
                assert!(r.revision >= written);
                if failing {
                    assert_decision(&r, D::Deny, S::Noncompliant, &["NONCOMPLIANT"]);
                } else {
                    assert_decision(&r, D::Allow, S::Compliant, &["COMPLIANT"]);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let server = std::sync::Arc::into_inner(server).unwrap();
    server.stop().await;
}
