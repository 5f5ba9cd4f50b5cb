//! AdminService through the real server: policies, assignments, the connector, tenant
//! settings and the directory. A refused call writes nothing: the revision does not move.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use pb::{ComplianceState as S, Decision as D};
use posture::proto as pb;
use tonic::Code;

fn get(id: &str) -> pb::GetPolicyRequest {
    pb::GetPolicyRequest { policy_id: id.into(), ..Default::default() }
}

/// A policy as the server returns it: every settings message present, the assignment given.
fn stored(
    mut policy: pb::Policy,
    include: &[&str],
    exclude: &[&str],
    updated_at: prost_types::Timestamp,
) -> pb::Policy {
    let settings = policy.settings.get_or_insert_with(Default::default);
    settings.password.get_or_insert_with(Default::default);
    policy.assignment =
        Some(pb::Assignment { include_group_ids: strings(include), exclude_group_ids: strings(exclude) });
    policy.updated_at = Some(updated_at);
    policy
}

async fn list(admin: &mut Admin) -> pb::ListPoliciesResponse {
    admin.list_policies(pb::ListPoliciesRequest::default()).await.unwrap().into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_are_created_read_listed_updated_and_deleted() {
    let server = TestServer::start().await;
    let mut admin = server.admin();
    assert_eq!(list(&mut admin).await, pb::ListPoliciesResponse { policies: vec![], revision: 0 });

    let before = now_secs();
    let created = create_policy(&mut admin, passwords_policy()).await;
    let created_at = created.policy.as_ref().unwrap().updated_at.unwrap();
    assert!((before..=now_secs()).contains(&created_at.seconds));
    assert_eq!(created.policy, Some(stored(passwords_policy(), &[], &[], created_at)));
    assert_eq!(created.revision, 1);

    let read = admin.get_policy(get("engineering-passwords")).await.unwrap().into_inner();
    assert_eq!(read, created);

    let baseline = create_policy(&mut admin, baseline_policy(24)).await;
    assert_eq!(baseline.revision, 2);
    let baseline_at = baseline.policy.as_ref().unwrap().updated_at.unwrap();
    assert_eq!(
        list(&mut admin).await,
        pb::ListPoliciesResponse {
            policies: vec![
                stored(baseline_policy(24), &[], &[], baseline_at),
                stored(passwords_policy(), &[], &[], created_at),
            ],
            revision: 2,
        }
    );

    // Update: a new name, settings and grace period.
    let mut changed = baseline_policy(48);
    changed.name = "macOS baseline v2".into();
    changed.settings.as_mut().unwrap().os_minimum_version = "14.0".into();
    changed.settings.as_mut().unwrap().firewall_stealth_mode = Some(true);
    let updated = admin.update_policy(pb::UpdatePolicyRequest { policy: Some(changed.clone()) }).await.unwrap();
    let updated = updated.into_inner();
    assert_eq!(updated.revision, 3);
    let updated_at = updated.policy.as_ref().unwrap().updated_at.unwrap();
    assert!(updated_at.seconds >= baseline_at.seconds);
    assert_eq!(updated.policy, Some(stored(changed.clone(), &[], &[], updated_at)));
    assert_eq!(admin.get_policy(get("baseline")).await.unwrap().into_inner(), updated);

    // The same update again changes nothing: the revision stays.
    let again = admin.update_policy(pb::UpdatePolicyRequest { policy: Some(changed) }).await.unwrap().into_inner();
    assert_eq!(again, updated);

    // Delete, with its assignment.
    sync_directory(&mut admin, vec![user("ada", true)], vec![user_group("mac-users", &["ada"])]).await;
    assert_eq!(assign(&mut admin, "baseline", &["mac-users"], &[]).await, 5);
    let deleted = admin.delete_policy(pb::DeletePolicyRequest { policy_id: "baseline".into() }).await.unwrap();
    assert_eq!(deleted.into_inner().revision, 6);
    let err = admin.get_policy(get("baseline")).await.unwrap_err();
    assert_status(&err, Code::NotFound, &["no policy baseline"]);
    assert_eq!(
        list(&mut admin).await.policies.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
        ["engineering-passwords"]
    );
    // Created again, it has no assignment.
    let recreated = create_policy(&mut admin, baseline_policy(0)).await;
    assert_eq!(recreated.policy.unwrap().assignment, Some(pb::Assignment::default()));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_and_missing_policies_are_refused_without_writing() {
    let server = TestServer::start().await;
    let mut admin = server.admin();
    let revision = create_policy(&mut admin, baseline_policy(0)).await.revision;

    let err = admin.create_policy(pb::CreatePolicyRequest { policy: Some(baseline_policy(5)) }).await.unwrap_err();
    assert_status(&err, Code::AlreadyExists, &["policy baseline already exists"]);
    let mut unknown = baseline_policy(0);
    unknown.id = "nope".into();
    let err = admin.update_policy(pb::UpdatePolicyRequest { policy: Some(unknown) }).await.unwrap_err();
    assert_status(&err, Code::NotFound, &["no policy nope"]);
    let err = admin.get_policy(get("nope")).await.unwrap_err();
    assert_status(&err, Code::NotFound, &["no policy nope"]);
    let err = admin.delete_policy(pb::DeletePolicyRequest { policy_id: "nope".into() }).await.unwrap_err();
    assert_status(&err, Code::NotFound, &["no policy nope"]);
    let req = pb::AssignPolicyRequest { policy_id: "nope".into(), assignment: None };
    assert_status(&admin.assign_policy(req).await.unwrap_err(), Code::NotFound, &["no policy nope"]);

    // Malformed policies name the field.
    let bad = |f: fn(&mut pb::Policy)| {
        let mut p = baseline_policy(0);
        p.id = "new".into();
        f(&mut p);
        pb::CreatePolicyRequest { policy: Some(p) }
    };
    let cases: Vec<(pb::CreatePolicyRequest, &str)> = vec![
        (pb::CreatePolicyRequest { policy: None }, "policy: is required"),
        (bad(|p| p.id = "has space".into()), "policy.id: may hold only"),
        (bad(|p| p.id = String::new()), "policy.id: is required"),
        (bad(|p| p.name = String::new()), "policy.name: is required"),
        (bad(|p| p.grace_period_hours = 8761), "policy.grace_period_hours: 8761 is outside 0..=8760"),
        (
            bad(|p| p.settings.as_mut().unwrap().os_minimum_version = "14.x".into()),
            "policy.settings.os_minimum_version",
        ),
        (
            bad(|p| p.settings.as_mut().unwrap().os_maximum_version = "12.0".into()),
            "policy.settings.os_maximum_version: 12.0 is below the minimum 13.0",
        ),
        (
            bad(|p| {
                p.settings.as_mut().unwrap().password =
                    Some(pb::PasswordRules { min_length: Some(3), ..Default::default() })
            }),
            "policy.settings.password.min_length: 3 is outside 4..=14",
        ),
        (bad(|p| p.settings.as_mut().unwrap().gatekeeper = 9), "policy.settings.gatekeeper: 9 is not a known value"),
    ];
    for (req, message) in cases {
        let err = admin.create_policy(req).await.unwrap_err();
        assert_status(&err, Code::InvalidArgument, &[message]);
    }
    assert_eq!(list(&mut admin).await.revision, revision);
    assert_eq!(list(&mut admin).await.policies.len(), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_assigned_to_a_device_group_is_refused_and_nothing_changes() {
    let server = TestServer::start().await;
    let seeded = seed_org(&server).await;
    let mut admin = server.admin();
    let before = admin.get_policy(get("baseline")).await.unwrap().into_inner();
    assert_eq!(before.revision, seeded);
    assert_eq!(
        before.policy.as_ref().unwrap().assignment,
        Some(pb::Assignment { include_group_ids: strings(&["mac-users"]), exclude_group_ids: vec![] })
    );
    let listed = list(&mut admin).await;

    let assign_req = |include: &[&str], exclude: &[&str]| pb::AssignPolicyRequest {
        policy_id: "baseline".into(),
        assignment: Some(pb::Assignment { include_group_ids: strings(include), exclude_group_ids: strings(exclude) }),
    };
    let err = admin.assign_policy(assign_req(&["mac-users", "lab-macs"], &[])).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.message(),
        "assignment.include_group_ids[1]: group lab-macs is a device group; only user groups can be targeted: a \
         compliance policy aimed at a device group does not evaluate partner-managed Macs"
    );
    let err = admin.assign_policy(assign_req(&["mac-users"], &["lab-macs"])).await.unwrap_err();
    assert_status(&err, Code::InvalidArgument, &["assignment.exclude_group_ids[0]", "lab-macs is a device group"]);
    let err = admin.assign_policy(assign_req(&["no-such-group"], &[])).await.unwrap_err();
    assert_status(
        &err,
        Code::FailedPrecondition,
        &["assignment.include_group_ids[0]", "no-such-group", "SyncDirectory"],
    );
    let err = admin.assign_policy(assign_req(&[""], &[])).await.unwrap_err();
    assert_status(&err, Code::InvalidArgument, &["assignment.include_group_ids[0]: is required"]);

    // Nothing was written: the same policy, assignment and revision.
    assert_eq!(admin.get_policy(get("baseline")).await.unwrap().into_inner(), before);
    assert_eq!(list(&mut admin).await, listed);
    assert_eq!(server.revision().await, seeded);

    // A valid assignment is written and returned; assigning nothing removes it.
    let r = admin.assign_policy(assign_req(&["mac-users"], &["contractors"])).await.unwrap().into_inner();
    assert_eq!(r.revision, seeded + 1);
    assert_eq!(
        r.policy.unwrap().assignment,
        Some(pb::Assignment {
            include_group_ids: strings(&["mac-users"]),
            exclude_group_ids: strings(&["contractors"])
        })
    );
    let r = admin.assign_policy(assign_req(&[], &[])).await.unwrap().into_inner();
    assert_eq!((r.revision, r.policy.unwrap().assignment), (seeded + 2, Some(pb::Assignment::default())));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connector_needs_partner_version_10_1_0_and_user_groups() {
    let server = TestServer::start().await;
    let mut admin = server.admin();
    let synced = seed_directory(&mut admin).await;
    let not_configured = admin.get_connector(pb::GetConnectorRequest::default()).await.unwrap().into_inner();
    assert_eq!(
        not_configured,
        pb::ConnectorResponse {
            connector: Some(pb::Connector { state: pb::ConnectorState::NotConfigured as i32, ..Default::default() }),
            revision: synced,
        }
    );

    let with_version = |v: &str| {
        let mut r = enable_request(&["mac-users"], &["contractors"]);
        r.partner_version = v.into();
        r
    };
    let err = admin.enable_connector(with_version("10.0.5")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.message(), "partner_version: 10.0.5 is older than 10.1.0, the oldest supported partner version");
    let err = admin.enable_connector(with_version("")).await.unwrap_err();
    assert_status(&err, Code::InvalidArgument, &["partner_version: is required"]);
    let err = admin.enable_connector(with_version("eleven")).await.unwrap_err();
    assert_status(&err, Code::InvalidArgument, &["partner_version: \"eleven\" is not a version"]);
    let err = admin.enable_connector(enable_request(&["lab-macs"], &[])).await.unwrap_err();
    assert_status(&err, Code::InvalidArgument, &["include_group_ids[0]: group lab-macs is a device group"]);
    let err = admin.enable_connector(enable_request(&["mac-users"], &["ghosts"])).await.unwrap_err();
    assert_status(&err, Code::FailedPrecondition, &["exclude_group_ids[0]: group ghosts is not in the directory"]);
    let mut no_app = enable_request(&["mac-users"], &[]);
    no_app.partner_app_id = String::new();
    let err = admin.enable_connector(no_app).await.unwrap_err();
    assert_status(&err, Code::InvalidArgument, &["partner_app_id: is required"]);
    assert_eq!(admin.get_connector(pb::GetConnectorRequest::default()).await.unwrap().into_inner(), not_configured);

    // 10.1.0 is the oldest that works.
    let before = now_secs();
    let r = admin.enable_connector(with_version("10.1.0")).await.unwrap().into_inner();
    assert_eq!(r.revision, synced + 1);
    let c = r.connector.unwrap();
    let enabled_at = c.enabled_at.unwrap();
    assert!((before..=now_secs()).contains(&enabled_at.seconds));
    assert_eq!(
        c,
        pb::Connector {
            state: pb::ConnectorState::Enabled as i32,
            partner_app_id: PARTNER_APP.into(),
            partner_version: "10.1.0".into(),
            include_group_ids: strings(&["mac-users"]),
            exclude_group_ids: strings(&["contractors"]),
            enabled_at: Some(enabled_at),
            terminated_at: None,
            removal_at: None,
            last_heartbeat: None,
        }
    );
    // The same configuration again writes nothing.
    let again = admin.enable_connector(with_version("10.1.0")).await.unwrap().into_inner();
    assert_eq!(again.revision, synced + 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminating_the_connector_schedules_removal_90_days_later() {
    let server = TestServer::start().await;
    let seeded = seed_org(&server).await;
    let mut admin = server.admin();
    let r = admin.terminate_connector(pb::TerminateConnectorRequest {}).await.unwrap().into_inner();
    assert_eq!(r.revision, seeded + 1);
    let c = r.connector.unwrap();
    assert_eq!(c.state, pb::ConnectorState::Terminated as i32);
    let terminated = c.terminated_at.unwrap().seconds;
    assert_eq!(c.removal_at.unwrap().seconds - terminated, 90 * DAY);
    assert_eq!(c.removal_at.unwrap().nanos, 0);
    // Its configuration is kept, for a re-enable.
    assert_eq!((c.partner_app_id.as_str(), c.partner_version.as_str()), (PARTNER_APP, PARTNER_VERSION));
    let read = admin.get_connector(pb::GetConnectorRequest::default()).await.unwrap().into_inner();
    assert_eq!(read.connector.unwrap(), c);

    let err = admin.terminate_connector(pb::TerminateConnectorRequest {}).await.unwrap_err();
    assert_status(&err, Code::FailedPrecondition, &["nothing to terminate"]);
    assert_eq!(server.revision().await, seeded + 1);

    // Enabled again: the dates are cleared.
    let c = enable_connector(&mut admin, &["mac-users"], &[]).await.connector.unwrap();
    assert_eq!(c.state, pb::ConnectorState::Enabled as i32);
    assert_eq!((c.terminated_at, c.removal_at), (None, None));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_settings_are_validated_and_decide_devices_without_a_policy() {
    let server = TestServer::start().await;
    seed_org(&server).await;
    // ivy's Mac is enrolled through the partner but no policy reaches her.
    server.report(vec![mac("mac-ivy", "ivy", "C02IVY0001")]).await;
    let mut admin = server.admin();
    let defaults = admin.get_settings(pb::GetSettingsRequest::default()).await.unwrap().into_inner();
    let revision = defaults.revision;
    assert_eq!(
        defaults.settings,
        Some(pb::Settings { no_policy: pb::NoPolicyTreatment::Compliant as i32, validity_days: 30 })
    );
    assert_decision(&server.check("ivy", "mac-ivy").await, D::Allow, S::Compliant, &["COMPLIANT"]);

    let update = |no_policy: pb::NoPolicyTreatment, validity_days: u32| pb::UpdateSettingsRequest {
        settings: Some(pb::Settings { no_policy: no_policy as i32, validity_days }),
    };
    let err = admin.update_settings(update(pb::NoPolicyTreatment::Noncompliant, 0)).await.unwrap_err();
    assert_status(&err, Code::InvalidArgument, &["settings.validity_days: 0 is outside 1..=120"]);
    let err = admin.update_settings(update(pb::NoPolicyTreatment::Noncompliant, 121)).await.unwrap_err();
    assert_status(&err, Code::InvalidArgument, &["settings.validity_days: 121 is outside 1..=120"]);
    let err = admin.update_settings(update(pb::NoPolicyTreatment::Unspecified, 30)).await.unwrap_err();
    assert_status(&err, Code::InvalidArgument, &["settings.no_policy: is required"]);
    let err = admin.update_settings(pb::UpdateSettingsRequest { settings: None }).await.unwrap_err();
    assert_status(&err, Code::InvalidArgument, &["settings: is required"]);
    let odd = pb::UpdateSettingsRequest { settings: Some(pb::Settings { no_policy: 7, validity_days: 30 }) };
    let err = admin.update_settings(odd).await.unwrap_err();
    assert_status(&err, Code::InvalidArgument, &["settings.no_policy: 7 is not a known value"]);
    assert_eq!(admin.get_settings(pb::GetSettingsRequest::default()).await.unwrap().into_inner(), defaults);
    assert_eq!(server.revision().await, revision);

    // Devices with no policy now count as noncompliant.
    let r = admin.update_settings(update(pb::NoPolicyTreatment::Noncompliant, 30)).await.unwrap().into_inner();
    assert_eq!(
        r,
        pb::SettingsResponse {
            settings: Some(pb::Settings { no_policy: pb::NoPolicyTreatment::Noncompliant as i32, validity_days: 30 }),
            revision: revision + 1,
        }
    );
    let d = server.check("ivy", "mac-ivy").await;
    assert_decision(&d, D::Deny, S::Noncompliant, &["NO_POLICY"]);
    assert_eq!(d.reasons[0].message, "no compliance policy applies and the tenant counts such devices as noncompliant");
    let e = server
        .compliance()
        .evaluate_device(pb::EvaluateDeviceRequest { device_id: "mac-ivy".into(), ..Default::default() })
        .await;
    let e = e.unwrap().into_inner();
    assert_eq!((state(e.state), e.policies.len(), codes(&e.reasons)), (S::Noncompliant, 0, vec!["NO_POLICY"]));
    // A Mac a policy reaches is not affected.
    server.report(vec![mac("mac-ada", "ada", "C02ADA0001")]).await;
    assert_decision(&server.check("ada", "mac-ada").await, D::Allow, S::Compliant, &["COMPLIANT"]);

    // A validity period of one day: a Mac last seen two days ago is noncompliant on old data.
    admin.update_settings(update(pb::NoPolicyTreatment::Compliant, 1)).await.unwrap();
    let mut bob = mac("mac-bob", "bob", "C02BOB0001");
    bob.last_check_in = Some(ago(2 * DAY));
    server.report(vec![bob]).await;
    assert_decision(
        &server.check("bob", "mac-bob").await,
        D::Deny,
        S::Noncompliant,
        &["UNRESPONSIVE", "VALIDITY_EXPIRED"],
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_sync_may_not_remove_a_group_in_use() {
    let server = TestServer::start().await;
    let seeded = seed_org(&server).await;
    let mut admin = server.admin();
    let remove = |groups: &[&str]| pb::SyncDirectoryRequest {
        users: vec![user("newcomer", true)],
        removed_group_ids: strings(groups),
        ..Default::default()
    };
    let err = admin.sync_directory(remove(&["contractors"])).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(
        err.message(),
        "removed_group_ids[0]: group contractors is used by the partner connector; remove it from there first"
    );
    let err = admin.sync_directory(remove(&["lab-macs", "engineering"])).await.unwrap_err();
    assert_status(
        &err,
        Code::FailedPrecondition,
        &["removed_group_ids[1]: group engineering is used by the assignment of policy engineering-passwords"],
    );
    // Malformed entries name the field.
    let bad_kind =
        pb::SyncDirectoryRequest { groups: vec![group("odd", pb::GroupKind::Unspecified, &[])], ..Default::default() };
    assert_status(&admin.sync_directory(bad_kind).await.unwrap_err(), Code::InvalidArgument, &["groups[0].kind"]);
    let bad_user = pb::SyncDirectoryRequest { users: vec![user("ok", true), user("", true)], ..Default::default() };
    assert_status(
        &admin.sync_directory(bad_user).await.unwrap_err(),
        Code::InvalidArgument,
        &["users[1].id: is required"],
    );

    // Nothing was written, not even the newcomer of the refused requests.
    assert_eq!(server.revision().await, seeded);
    let r = server.targeting().preview_targeting(pb::PreviewTargetingRequest::default()).await.unwrap();
    assert_eq!(r.into_inner().users_not_targeted, 10);

    // An unused group can go; a sync that changes nothing writes nothing.
    let r = admin.sync_directory(remove(&["lab-macs"])).await.unwrap().into_inner();
    assert_eq!(r.revision, seeded + 1);
    let r = admin.sync_directory(remove(&["lab-macs"])).await.unwrap().into_inner();
    assert_eq!(r.revision, seeded + 1);
    let err = admin.assign_policy(pb::AssignPolicyRequest {
        policy_id: "baseline".into(),
        assignment: Some(pb::Assignment { include_group_ids: strings(&["lab-macs"]), exclude_group_ids: vec![] }),
    });
    assert_status(&err.await.unwrap_err(), Code::FailedPrecondition, &["lab-macs is not in the directory"]);

    // Once unassigned, a group can be removed.
    assign(&mut admin, "engineering-passwords", &[], &[]).await;
    admin.sync_directory(remove(&["engineering"])).await.unwrap();
    server.stop().await;
}
