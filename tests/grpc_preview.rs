//! AdminService/PreviewPolicy through the real server: a draft's effect on every Mac, before
//! saving it; invalid drafts refused naming the field; only admins may ask; nothing written.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use pb::preview_policy_request::Draft;
use pb::{ComplianceState as S, Decision as D};
use posture::proto as pb;
use tonic::Code;

fn draft(d: Draft) -> pb::PreviewPolicyRequest {
    pb::PreviewPolicyRequest { draft: Some(d), ..Default::default() }
}

/// `baseline` with a higher minimum macOS.
fn raised_baseline(min: &str, grace_period_hours: u32) -> pb::Policy {
    let mut p = baseline_policy(grace_period_hours);
    p.settings.as_mut().unwrap().os_minimum_version = min.into();
    p
}

fn ids(list: &[pb::PreviewedDevice]) -> Vec<&str> {
    list.iter().map(|d| d.device_id.as_str()).collect()
}

/// The standard organisation with five Macs: ada and cara on macOS 14.2.1, bob and dan on 15.1,
/// erin on 15.0 without FileVault (denied already).
async fn org(server: &TestServer) -> u64 {
    seed_org(server).await;
    let at = |id: &str, user: &str, os: &str| {
        let mut m = mac(id, user, &format!("S-{id}"));
        m.os_version = os.into();
        m.os_build = String::new();
        m
    };
    let mut erin = at("mac-erin", "erin", "15.0");
    erin.file_vault = pb::FileVaultState::NotEncrypted as i32;
    let macs = vec![
        at("mac-ada", "ada", "14.2.1"),
        at("mac-bob", "bob", "15.1"),
        at("mac-cara", "cara", "14.2.1"),
        at("mac-dan", "dan", "15.1"),
        erin,
    ];
    server.report(macs).await.revision
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tightening_draft_lists_the_macs_it_locks_out_and_writes_nothing() {
    let server = TestServer::start().await;
    let revision = org(&server).await;
    let mut admin = server.admin();

    let raised = admin.preview_policy(draft(Draft::Policy(raised_baseline("15.0", 0)))).await.unwrap().into_inner();
    assert_eq!(
        (raised.allow_to_deny, raised.deny_to_allow, raised.into_grace, raised.unchanged),
        (2, 0, 0, 3),
        "{raised:?}"
    );
    assert_eq!(raised.revision, revision);
    assert_eq!(ids(&raised.locked_out), ["mac-ada", "mac-cara"]);
    assert!(raised.let_in.is_empty() && raised.entering_grace.is_empty());
    let ada = &raised.locked_out[0];
    assert_eq!(ada.user_id, "ada");
    let (before, after) = (ada.before.as_ref().unwrap(), ada.after.as_ref().unwrap());
    assert_eq!((decision(before.decision), state(before.state)), (D::Allow, S::Compliant));
    assert_eq!((decision(after.decision), state(after.state)), (D::Deny, S::Noncompliant));
    assert_eq!(codes(&before.reasons), ["COMPLIANT"]);
    assert_eq!(codes(&after.reasons), ["NONCOMPLIANT"]);
    let baseline = ada.policies.iter().find(|p| p.policy_id == "baseline").unwrap();
    assert_eq!(state(baseline.state), S::Noncompliant);
    let failing: Vec<&str> = baseline.settings.iter().map(|s| s.setting.as_str()).collect();
    assert_eq!(failing, ["os_minimum_version"], "{baseline:?}");
    assert_eq!(baseline.settings[0].actual, "14.2.1");
    // cara is in engineering too: both her policies apply.
    assert_eq!(raised.locked_out[1].policies.len(), 2);
    let noncompliant = raised.by_reason.iter().find(|r| r.code == "NONCOMPLIANT").unwrap();
    assert_eq!((noncompliant.devices, noncompliant.users), (2, 2));
    assert_eq!(raised.by_reason.len(), 1, "{:?}", raised.by_reason);

    // Nothing was saved: same revision, same policy, same decisions.
    assert_eq!(server.revision().await, revision);
    let stored = admin.get_policy(pb::GetPolicyRequest { policy_id: "baseline".into(), min_revision: 0 }).await;
    assert_eq!(stored.unwrap().into_inner().policy.unwrap().settings.unwrap().os_minimum_version, "13.0");
    assert_decision(&server.check("ada", "mac-ada").await, D::Allow, S::Compliant, &["COMPLIANT"]);

    // With a grace period, the same Macs enter it instead: still allowed, for now.
    let graced = admin.preview_policy(draft(Draft::Policy(raised_baseline("15.0", 48)))).await.unwrap().into_inner();
    assert_eq!((graced.allow_to_deny, graced.into_grace, graced.unchanged), (0, 2, 3), "{graced:?}");
    assert_eq!(ids(&graced.entering_grace), ["mac-ada", "mac-cara"]);
    let after = graced.entering_grace[0].after.as_ref().unwrap();
    assert_eq!((decision(after.decision), state(after.state)), (D::Allow, S::InGracePeriod));
    let ends = graced.entering_grace[0].policies[0].grace_period_ends.unwrap().seconds;
    assert!((ends - (server.now_secs() + 48 * HOUR)).abs() < 60, "grace ends 48 h from now: {ends}");

    // max_devices caps each list, not the counts.
    let mut one = draft(Draft::Policy(raised_baseline("15.0", 0)));
    one.max_devices = 1;
    let one = admin.preview_policy(one).await.unwrap().into_inner();
    assert_eq!((one.allow_to_deny, ids(&one.locked_out)), (2, vec!["mac-ada"]));

    // Deleting the baseline lets erin in (the passwords policy only reaches cara).
    let deleted = admin.preview_policy(draft(Draft::DeletePolicyId("baseline".into()))).await.unwrap().into_inner();
    assert_eq!((deleted.allow_to_deny, deleted.deny_to_allow), (0, 1), "{deleted:?}");
    assert_eq!(ids(&deleted.let_in), ["mac-erin"]);

    // Counting Macs without a policy as noncompliant: kiosk-style Macs are none here, so
    // nothing changes.
    let settings = pb::Settings { no_policy: pb::NoPolicyTreatment::Noncompliant as i32, validity_days: 30 };
    let same = admin.preview_policy(draft(Draft::Settings(settings))).await.unwrap().into_inner();
    assert_eq!((same.allow_to_deny, same.deny_to_allow, same.into_grace, same.unchanged), (0, 0, 0, 5));

    // Taking mac-users off the baseline's assignment lets erin in as well.
    let assign = pb::AssignPolicyRequest {
        policy_id: "baseline".into(),
        assignment: Some(pb::Assignment { include_group_ids: strings(&["engineering"]), exclude_group_ids: vec![] }),
    };
    let narrowed = admin.preview_policy(draft(Draft::AssignPolicy(assign))).await.unwrap().into_inner();
    assert_eq!(ids(&narrowed.let_in), ["mac-erin"], "{narrowed:?}");

    // Saving the first draft does what its preview said.
    admin.update_policy(pb::UpdatePolicyRequest { policy: Some(raised_baseline("15.0", 0)) }).await.unwrap();
    for (user, device) in [("ada", "mac-ada"), ("cara", "mac-cara")] {
        assert_eq!(decision(server.check(user, device).await.decision), D::Deny);
    }
    assert_eq!(decision(server.check("bob", "mac-bob").await.decision), D::Allow);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_drafts_are_refused_naming_the_field_and_only_admins_may_preview() {
    let server = TestServer::start().await;
    let revision = org(&server).await;
    let mut admin = server.admin();
    let refused = async |admin: &mut Admin, req: pb::PreviewPolicyRequest| admin.preview_policy(req).await.unwrap_err();

    let none = refused(&mut admin, pb::PreviewPolicyRequest::default()).await;
    assert_status(&none, Code::InvalidArgument, &["draft", "is required"]);

    let unknown = refused(&mut admin, draft(Draft::DeletePolicyId("no-such-policy".into()))).await;
    assert_status(&unknown, Code::NotFound, &["no-such-policy"]);

    let empty_id = refused(&mut admin, draft(Draft::DeletePolicyId(String::new()))).await;
    assert_status(&empty_id, Code::InvalidArgument, &["delete_policy_id"]);

    let bad = refused(&mut admin, draft(Draft::Policy(raised_baseline("fifteen", 0)))).await;
    assert_status(&bad, Code::InvalidArgument, &["policy.settings.os_minimum_version"]);

    let bad_settings = pb::Settings { no_policy: pb::NoPolicyTreatment::Compliant as i32, validity_days: 0 };
    let bad = refused(&mut admin, draft(Draft::Settings(bad_settings))).await;
    assert_status(&bad, Code::InvalidArgument, &["settings.validity_days"]);

    let device_group = pb::AssignPolicyRequest {
        policy_id: "baseline".into(),
        assignment: Some(pb::Assignment { include_group_ids: strings(&["lab-macs"]), exclude_group_ids: vec![] }),
    };
    let bad = refused(&mut admin, draft(Draft::AssignPolicy(device_group))).await;
    assert_status(&bad, Code::InvalidArgument, &["assign_policy.assignment.include_group_ids[0]", "device group"]);

    let unknown_policy =
        pb::AssignPolicyRequest { policy_id: "nope".into(), assignment: Some(pb::Assignment::default()) };
    let bad = refused(&mut admin, draft(Draft::AssignPolicy(unknown_policy))).await;
    assert_status(&bad, Code::NotFound, &["nope"]);

    let mut too_many = draft(Draft::Policy(raised_baseline("15.0", 0)));
    too_many.max_devices = 1001;
    let bad = refused(&mut admin, too_many).await;
    assert_status(&bad, Code::InvalidArgument, &["max_devices"]);

    // A new policy is previewed as CreatePolicy would take it: it applies to no one yet.
    let mut new = passwords_policy();
    new.id = "new-policy".into();
    let created = admin.preview_policy(draft(Draft::Policy(new.clone()))).await.unwrap().into_inner();
    assert_eq!((created.allow_to_deny, created.unchanged), (0, 5));
    // With its assignment, as it will apply once created and assigned: macOS 15.0 for the Mac
    // users locks out ada and cara (on 14.2.1).
    let strict = pb::Policy {
        id: "strict".into(),
        assignment: Some(pb::Assignment { include_group_ids: vec!["mac-users".into()], ..Default::default() }),
        ..raised_baseline("15.0", 0)
    };
    let assigned = admin.preview_policy(draft(Draft::Policy(strict.clone()))).await.unwrap().into_inner();
    assert_eq!(ids(&assigned.locked_out), ["mac-ada", "mac-cara"], "{assigned:?}");
    let mut lab = strict;
    lab.assignment = Some(pb::Assignment { include_group_ids: vec!["lab-macs".into()], ..Default::default() });
    let bad = refused(&mut admin, draft(Draft::Policy(lab))).await;
    assert_status(&bad, Code::InvalidArgument, &["policy.assignment.include_group_ids[0]", "device group"]);

    // Read-your-writes: a revision not yet applied is waited for, up to the deadline.
    let mut ahead = draft(Draft::Policy(raised_baseline("15.0", 0)));
    ahead.min_revision = revision + 1_000;
    let mut timed = tonic::Request::new(ahead);
    timed.set_timeout(std::time::Duration::from_millis(300));
    let err = admin.preview_policy(timed).await.unwrap_err();
    assert!(matches!(err.code(), Code::DeadlineExceeded | Code::Cancelled), "{err:?}");

    let req = || draft(Draft::Policy(raised_baseline("15.0", 0)));
    for (secret, code) in [
        (Some(GATEWAY_SECRET), Code::PermissionDenied),
        (Some(PARTNER_SECRET), Code::PermissionDenied),
        (None, Code::Unauthenticated),
        (Some("not-a-secret"), Code::Unauthenticated),
    ] {
        let err = server.admin_as(secret).preview_policy(req()).await.unwrap_err();
        assert_eq!(err.code(), code, "{secret:?}: {err:?}");
    }
    assert_eq!(server.revision().await, revision, "nothing was written");
    server.stop().await;
}
