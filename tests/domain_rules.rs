//! One or more tests per rule of DOMAIN.md, through the public `posture::domain` API only.
//! Time is always passed explicitly as `now`; states are built with `State::apply`.

#![allow(clippy::unwrap_used)]

mod common;

use common::domain::healthy_mac;
use posture::domain::access::{self, DeviceDecision, ReasonCode};
use posture::domain::compliance::{self, ComplianceState, SettingResult, StateCause};
use posture::domain::diagnosis::{self, Cause, PartnerCredential};
use posture::domain::model::{
    Connector, ConnectorState, Device, FileVault, Group, GroupKind, NoPolicyTreatment, PartnerVerdict, Policy,
    PolicySettings, Registration, TenantSettings, User,
};
use posture::domain::summary;
use posture::domain::targeting::{self, EnrollmentTarget, Preview};
use posture::domain::version::OsVersion;
use posture::domain::{Change, State, Timestamp, grace};
use posture::engine::{GroupTargets, check_user_groups};
use posture::error::Error;

// ---------------------------------------------------------------------------------------------
// Builders
// ---------------------------------------------------------------------------------------------

/// A fixed "now" (2027-01-15T08:00:00Z); every test drives time from here.
const T0: Timestamp = Timestamp(1_799_985_600);
const H: i64 = Timestamp::HOUR;
const D: i64 = Timestamp::DAY;

/// The user group every test org puts its users in, and the connector includes.
const MAC_USERS: &str = "mac-users";

fn ids(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn v(s: &str) -> OsVersion {
    s.parse().unwrap()
}

/// A user holding both licences.
fn licensed_user(id: &str) -> User {
    User {
        id: id.to_string(),
        user_principal_name: format!("{id}@example.com"),
        device_management_licence: true,
        premium_identity_licence: true,
    }
}

fn user_group(id: &str, members: &[&str]) -> Group {
    Group { id: id.to_string(), name: id.to_string(), kind: GroupKind::User, members: ids(members) }
}

fn device_group(id: &str, members: &[&str]) -> Group {
    Group { id: id.to_string(), name: id.to_string(), kind: GroupKind::Device, members: ids(members) }
}

/// An enabled connector with the given include and exclude user groups.
fn enabled_connector(include: &[&str], exclude: &[&str]) -> Connector {
    Connector {
        state: ConnectorState::Enabled,
        partner_app_id: "jamf-test".to_string(),
        partner_version: Some(v("11.4.0")),
        include_group_ids: ids(include),
        exclude_group_ids: ids(exclude),
        enabled_at: Some(T0.plus_days(-100)),
        terminated_at: None,
        removal_at: None,
    }
}

/// A policy last changed long before any test's "now".
fn policy(id: &str, settings: PolicySettings, grace_period_hours: u32) -> Policy {
    Policy {
        id: id.to_string(),
        name: format!("policy {id}"),
        settings,
        grace_period_hours,
        updated_at: T0.plus_days(-60),
    }
}

fn encryption_required() -> PolicySettings {
    PolicySettings { storage_encryption_required: Some(true), ..Default::default() }
}

fn assign(policy_id: &str, include: &[&str], exclude: &[&str]) -> Change {
    Change::PutAssignment(posture::domain::model::Assignment {
        policy_id: policy_id.to_string(),
        include_group_ids: ids(include),
        exclude_group_ids: ids(exclude),
    })
}

/// Licensed `users`, all in [`MAC_USERS`], with an enabled connector including that group.
fn org(users: &[&str]) -> State {
    let mut state = State::default();
    for u in users {
        state.apply(Change::PutUser(licensed_user(u)));
    }
    state.apply(Change::PutGroup(user_group(MAC_USERS, users)));
    state.apply(Change::PutConnector(enabled_connector(&[MAC_USERS], &[])));
    state
}

/// Adds `policy` and assigns it to [`MAC_USERS`], at the policy's `updated_at`.
fn add_policy(state: &mut State, p: Policy) {
    let (id, at) = (p.id.clone(), p.updated_at);
    write(state, vec![Change::PutPolicy(p), assign(&id, &[MAC_USERS], &[])], at);
}

/// A healthy partner-registered Mac as of [`T0`].
fn mac(id: &str, user: &str, serial: &str) -> Device {
    healthy_mac(id, user, serial, T0)
}

/// Applies `changes` as the engine's write at `now` would: with the grace-period bookkeeping
/// they imply.
fn write(state: &mut State, changes: Vec<Change>, now: Timestamp) {
    let bookkeeping = grace::derive(state, &changes, now);
    for change in changes.into_iter().chain(bookkeeping) {
        state.apply(change);
    }
}

/// When `device`'s failure of `policy` began to count, if it fails it.
fn since_of(state: &State, device: &str, policy: &str) -> Option<Timestamp> {
    state.failure(device, policy).map(|f| f.since)
}

/// The partner's report of `device`, received at its check-in.
fn put(state: &mut State, device: Device) {
    let now = device.last_check_in;
    write(state, vec![Change::PutDevice(device)], now);
}

fn codes(d: &DeviceDecision) -> Vec<ReasonCode> {
    d.reasons.iter().map(|r| r.code).collect()
}

fn decide(state: &State, device_id: &str, now: Timestamp) -> DeviceDecision {
    access::decide(state, device_id, now)
}

fn causes(state: &State, device_id: &str, credential: PartnerCredential, now: Timestamp) -> Vec<Cause> {
    diagnosis::diagnose(state, device_id, credential, now).unwrap().findings.iter().map(|f| f.cause).collect()
}

// ---------------------------------------------------------------------------------------------
// The builders themselves
// ---------------------------------------------------------------------------------------------

#[test]
fn a_healthy_mac_in_a_targeted_org_is_allowed_with_only_the_compliant_reason() {
    let mut state = org(&["ada"]);
    put(&mut state, mac("mac-ada", "ada", "C02ADA"));
    let d = decide(&state, "mac-ada", T0);
    assert!(d.allow);
    assert_eq!(d.state, ComplianceState::Compliant);
    assert_eq!(codes(&d), vec![ReasonCode::Compliant]);
    assert_eq!(d.primary_user_id.as_deref(), Some("ada"));
    assert_eq!(d.device_id, "mac-ada");
}

#[test]
fn an_unknown_device_is_denied_as_unknown() {
    let state = org(&["ada"]);
    let d = decide(&state, "nope", T0);
    assert!(!d.allow);
    assert_eq!(d.state, ComplianceState::Unknown);
    assert_eq!(codes(&d), vec![ReasonCode::DeviceUnknown]);
    assert_eq!(d.primary_user_id, None);
    assert_eq!(d.valid_until, None);
    assert_eq!(diagnosis::diagnose(&state, "nope", PartnerCredential::LeastPrivilege, T0), None);
}

// ---------------------------------------------------------------------------------------------
// Rule 1: exclude beats include
// ---------------------------------------------------------------------------------------------

/// ada: include and exclude; bob: include only; cara: neither.
fn rule1_org() -> State {
    let mut state = State::default();
    for u in ["ada", "bob", "cara"] {
        state.apply(Change::PutUser(licensed_user(u)));
    }
    state.apply(Change::PutGroup(user_group("mac-users", &["ada", "bob"])));
    state.apply(Change::PutGroup(user_group("engineering", &["ada", "bob"])));
    state.apply(Change::PutGroup(user_group("contractors", &["ada"])));
    state.apply(Change::PutGroup(user_group("sales", &["cara"])));
    state.apply(Change::PutConnector(enabled_connector(&["mac-users", "engineering"], &["contractors"])));
    put(&mut state, mac("mac-ada", "ada", "S-ADA"));
    put(&mut state, mac("mac-bob", "bob", "S-BOB"));
    put(&mut state, mac("mac-cara", "cara", "S-CARA"));
    state
}

#[test]
fn rule1_a_user_in_include_and_exclude_groups_enrolls_directly() {
    let state = rule1_org();
    let e = targeting::resolve_saved(&state, "ada");
    assert_eq!(e.target, EnrollmentTarget::Direct);
    assert_eq!(e.include_group_ids, ids(&["engineering", "mac-users"]), "sorted");
    assert_eq!(e.exclude_group_ids, ids(&["contractors"]));
}

#[test]
fn rule1_a_user_only_in_include_groups_enrolls_through_the_partner() {
    let state = rule1_org();
    let e = targeting::resolve_saved(&state, "bob");
    assert_eq!(e.target, EnrollmentTarget::Partner);
    assert_eq!(e.include_group_ids, ids(&["engineering", "mac-users"]), "sorted");
    assert!(e.exclude_group_ids.is_empty());
}

#[test]
fn rule1_a_user_in_neither_is_not_targeted() {
    let state = rule1_org();
    let e = targeting::resolve_saved(&state, "cara");
    assert_eq!(e.target, EnrollmentTarget::NotTargeted);
    assert!(e.include_group_ids.is_empty());
    assert!(e.exclude_group_ids.is_empty());
    // A user the directory does not know is in no group either.
    assert_eq!(targeting::resolve_saved(&state, "ghost").target, EnrollmentTarget::NotTargeted);
}

#[test]
fn rule1_only_user_groups_count_for_enrollment() {
    let mut state = rule1_org();
    // A device group listing a user id (a mistake) neither includes nor excludes that user.
    state.apply(Change::PutGroup(device_group("odd-devices", &["cara", "bob"])));
    let e = targeting::resolve(&state, "cara", &posture::domain::state::Targets::new(&ids(&["odd-devices"]), &[]));
    assert_eq!(e.target, EnrollmentTarget::NotTargeted);
    let e = targeting::resolve(
        &state,
        "bob",
        &posture::domain::state::Targets::new(&ids(&["mac-users"]), &ids(&["odd-devices"])),
    );
    assert_eq!(e.target, EnrollmentTarget::Partner);
    assert!(e.exclude_group_ids.is_empty());
}

#[test]
fn rule1_access_is_denied_to_an_excluded_users_mac() {
    let state = rule1_org();
    let d = decide(&state, "mac-ada", T0);
    assert!(!d.allow);
    assert_eq!(codes(&d), vec![ReasonCode::UserNotTargeted]);
    assert!(d.reasons[0].message.contains("contractors"), "{}", d.reasons[0].message);
    // The device itself is compliant: only targeting denies it.
    assert_eq!(d.state, ComplianceState::Compliant);
}

#[test]
fn rule1_access_is_denied_to_an_untargeted_users_mac_and_allowed_to_an_included_one() {
    let state = rule1_org();
    let d = decide(&state, "mac-cara", T0);
    assert!(!d.allow);
    assert_eq!(codes(&d), vec![ReasonCode::UserNotTargeted]);
    let d = decide(&state, "mac-bob", T0);
    assert!(d.allow);
    assert_eq!(codes(&d), vec![ReasonCode::Compliant]);
}

#[test]
fn rule1_removing_the_exclusion_lets_the_user_in() {
    let mut state = rule1_org();
    state.apply(Change::PutConnector(enabled_connector(&["mac-users"], &[])));
    assert_eq!(targeting::resolve_saved(&state, "ada").target, EnrollmentTarget::Partner);
    assert!(decide(&state, "mac-ada", T0).allow);
}

// ---------------------------------------------------------------------------------------------
// Rule 3: preview before saving
// ---------------------------------------------------------------------------------------------

/// u1: include and exclude (1 Mac); u2: include (2 Macs); u3: include (no Mac);
/// u4: exclude only (1 Mac); u5: neither (1 Mac); plus one Mac of a user the directory lacks.
fn preview_org() -> State {
    let mut state = State::default();
    for u in ["u1", "u2", "u3", "u4", "u5"] {
        state.apply(Change::PutUser(licensed_user(u)));
    }
    // "ghost" is a member but not a user: it counts nowhere.
    state.apply(Change::PutGroup(user_group("inc", &["u1", "u2", "u3", "ghost"])));
    state.apply(Change::PutGroup(user_group("exc", &["u1", "u4"])));
    state.apply(Change::PutGroup(device_group("lab", &["m-u5"])));
    put(&mut state, mac("m-u1", "u1", "S1"));
    put(&mut state, mac("m-u2a", "u2", "S2A"));
    put(&mut state, mac("m-u2b", "u2", "S2B"));
    put(&mut state, mac("m-u4", "u4", "S4"));
    put(&mut state, mac("m-u5", "u5", "S5"));
    put(&mut state, mac("m-ghost", "ghost", "S6"));
    state
}

#[test]
fn rule3_preview_counts_users_and_devices_with_exclude_winning() {
    let state = preview_org();
    let p = targeting::preview(&state, &ids(&["inc"]), &ids(&["exc"]));
    assert_eq!(
        p,
        Preview {
            users_to_partner: 2,     // u2, u3
            devices_to_partner: 2,   // m-u2a, m-u2b
            users_excluded: 2,       // u1 (also included), u4
            devices_excluded: 2,     // m-u1, m-u4
            users_not_targeted: 1,   // u5
            devices_not_targeted: 2, // m-u5, m-ghost
        }
    );
}

#[test]
fn rule3_preview_without_exclusions_and_with_device_groups_ignored() {
    let state = preview_org();
    let p = targeting::preview(&state, &ids(&["inc", "lab"]), &[]);
    assert_eq!(
        p,
        Preview {
            users_to_partner: 3,
            devices_to_partner: 3,
            users_excluded: 0,
            devices_excluded: 0,
            users_not_targeted: 2,
            devices_not_targeted: 3,
        }
    );
    // Unknown groups count as empty; nothing is targeted.
    let p = targeting::preview(&state, &ids(&["missing"]), &ids(&["missing-too"]));
    assert_eq!(p.users_not_targeted, 5);
    assert_eq!(p.devices_not_targeted, 6);
    assert_eq!(p.users_to_partner + p.users_excluded + p.devices_to_partner + p.devices_excluded, 0);
}

#[test]
fn rule3_preview_does_not_change_the_saved_configuration() {
    let mut state = preview_org();
    state.apply(Change::PutConnector(enabled_connector(&["inc"], &[])));
    let _ = targeting::preview(&state, &ids(&["inc"]), &ids(&["exc"]));
    assert_eq!(targeting::resolve_saved(&state, "u1").target, EnrollmentTarget::Partner);
    assert_eq!(state.connector().exclude_group_ids, Vec::<String>::new());
}

// ---------------------------------------------------------------------------------------------
// Rule 2: user groups only
// ---------------------------------------------------------------------------------------------

/// ada's Mac is in device group "lab-macs"; policy "disk" (encryption) is aimed at that group.
fn device_group_org() -> State {
    let mut state = org(&["ada", "bob"]);
    state.apply(Change::PutGroup(device_group("lab-macs", &["mac-ada"])));
    state.apply(Change::PutPolicy(policy("disk", encryption_required(), 0)));
    state.apply(assign("disk", &["lab-macs"], &[]));
    let mut ada = mac("mac-ada", "ada", "S-ADA");
    ada.facts.file_vault = Some(FileVault::NotEncrypted);
    put(&mut state, ada);
    let mut bob = mac("mac-bob", "bob", "S-BOB");
    bob.facts.file_vault = Some(FileVault::NotEncrypted);
    put(&mut state, bob);
    state
}

#[test]
fn rule2_a_policy_aimed_at_a_device_group_does_not_evaluate_the_mac() {
    let state = device_group_org();
    let ada = state.device("mac-ada").unwrap();
    assert!(!compliance::policy_applies(&state, "disk", "ada"));
    let eval = compliance::evaluate(&state, ada, T0, compliance::Detail::All);
    assert!(eval.policies.is_empty(), "{:?}", eval.policies);
    assert_eq!(eval.cause, StateCause::NoPolicy(NoPolicyTreatment::Compliant));
    assert_eq!(eval.state, ComplianceState::Compliant);
    assert_eq!(eval.device_group_policies, vec![("disk", "lab-macs")]);
}

#[test]
fn rule2_the_unevaluated_mac_gets_a_non_denying_device_group_reason() {
    let state = device_group_org();
    let d = decide(&state, "mac-ada", T0);
    assert!(d.allow, "{:?}", d.reasons);
    assert_eq!(codes(&d), vec![ReasonCode::Compliant, ReasonCode::PolicyTargetsDeviceGroup]);
    assert!(!ReasonCode::PolicyTargetsDeviceGroup.denies());
    let msg = &d.reasons[1].message;
    assert!(msg.contains("disk") && msg.contains("lab-macs"), "{msg}");
    // bob's Mac is in no device group: no such reason.
    assert_eq!(codes(&decide(&state, "mac-bob", T0)), vec![ReasonCode::Compliant]);
}

#[test]
fn rule2_diagnosis_explains_the_device_group_assignment() {
    let state = device_group_org();
    let findings = diagnosis::diagnose(&state, "mac-ada", PartnerCredential::LeastPrivilege, T0).unwrap().findings;
    assert_eq!(findings.iter().map(|f| f.cause).collect::<Vec<_>>(), vec![Cause::PolicyTargetsDeviceGroup]);
    assert!(!findings[0].remediation().is_empty());
    assert!(findings[0].remediation().contains("user groups"));
    assert_eq!(causes(&state, "mac-bob", PartnerCredential::LeastPrivilege, T0), vec![]);
}

#[test]
fn rule2_the_same_policy_aimed_at_a_user_group_does_evaluate_the_mac() {
    let mut state = device_group_org();
    state.apply(assign("disk", &[MAC_USERS], &[]));
    let d = decide(&state, "mac-ada", T0);
    assert!(!d.allow);
    assert_eq!(codes(&d), vec![ReasonCode::Noncompliant]);
    assert_eq!(d.state, ComplianceState::Noncompliant);
}

#[test]
fn rule2_check_user_groups_refuses_device_groups_and_unknown_groups() {
    let mut state = org(&["ada"]);
    state.apply(Change::PutGroup(device_group("lab-macs", &["mac-ada"])));
    let targets = |include: &[&str], exclude: &[&str]| GroupTargets { include: ids(include), exclude: ids(exclude) };

    assert!(check_user_groups(&state, "", &targets(&[MAC_USERS], &[])).is_ok());
    assert!(check_user_groups(&state, "", &targets(&[], &[])).is_ok());

    match check_user_groups(&state, "", &targets(&[MAC_USERS, "lab-macs"], &[])) {
        Err(Error::InvalidArgument { field, message }) => {
            assert_eq!(field, "include_group_ids[1]");
            assert!(message.contains("device group"), "{message}");
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    match check_user_groups(&state, "", &targets(&[MAC_USERS], &["lab-macs"])) {
        Err(Error::InvalidArgument { field, .. }) => assert_eq!(field, "exclude_group_ids[0]"),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    match check_user_groups(&state, "", &targets(&["nowhere"], &[])) {
        Err(Error::FailedPrecondition(msg)) => assert!(msg.contains("nowhere"), "{msg}"),
        other => panic!("expected FailedPrecondition, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Rule 4: compliance combines all assigned policies; grace periods
// ---------------------------------------------------------------------------------------------

fn baseline_settings() -> PolicySettings {
    PolicySettings { os_minimum_version: Some(v("13.0")), firewall_enabled: Some(true), ..Default::default() }
}

#[test]
fn rule4_every_applicable_policy_must_pass() {
    let mut state = org(&["ada"]);
    add_policy(&mut state, policy("baseline", baseline_settings(), 0));
    add_policy(&mut state, policy("disk", encryption_required(), 0));
    put(&mut state, mac("mac-ada", "ada", "S"));

    let eval = compliance::evaluate(&state, state.device("mac-ada").unwrap(), T0, compliance::Detail::All);
    assert_eq!(eval.state, ComplianceState::Compliant);
    assert_eq!(eval.cause, StateCause::Policies);
    let results: Vec<_> = eval.policies.iter().map(|p| (p.policy.id.as_str(), p.state)).collect();
    assert_eq!(results, vec![("baseline", ComplianceState::Compliant), ("disk", ComplianceState::Compliant)]);
    assert!(decide(&state, "mac-ada", T0).allow);

    // Failing only the second policy is enough to deny.
    let mut ada = mac("mac-ada", "ada", "S");
    ada.facts.file_vault = Some(FileVault::SomeEncrypted);
    put(&mut state, ada);
    let eval = compliance::evaluate(&state, state.device("mac-ada").unwrap(), T0, compliance::Detail::All);
    assert_eq!(eval.state, ComplianceState::Noncompliant);
    let results: Vec<_> = eval.policies.iter().map(|p| (p.policy.id.as_str(), p.state)).collect();
    assert_eq!(results, vec![("baseline", ComplianceState::Compliant), ("disk", ComplianceState::Noncompliant)]);
    let d = decide(&state, "mac-ada", T0);
    assert!(!d.allow);
    assert_eq!(d.state, ComplianceState::Noncompliant);
    assert_eq!(codes(&d), vec![ReasonCode::Noncompliant]);
    assert!(d.reasons[0].message.contains("policy disk"), "{}", d.reasons[0].message);
    assert!(!d.reasons[0].message.contains("policy baseline"), "{}", d.reasons[0].message);
}

#[test]
fn rule4_a_policy_not_assigned_to_the_user_does_not_count() {
    let mut state = org(&["ada"]);
    state.apply(Change::PutGroup(user_group("others", &["bob"])));
    state.apply(Change::PutPolicy(policy("disk", encryption_required(), 0)));
    state.apply(assign("disk", &["others"], &[]));
    // Assigned to ada's group but with ada excluded: exclude wins here too.
    state.apply(Change::PutGroup(user_group("no-disk", &["ada"])));
    state.apply(Change::PutPolicy(policy("disk2", encryption_required(), 0)));
    state.apply(assign("disk2", &[MAC_USERS], &["no-disk"]));
    let mut ada = mac("mac-ada", "ada", "S");
    ada.facts.file_vault = Some(FileVault::NotEncrypted);
    put(&mut state, ada);
    let eval = compliance::evaluate(&state, state.device("mac-ada").unwrap(), T0, compliance::Detail::All);
    assert!(eval.policies.is_empty());
    assert_eq!(eval.state, ComplianceState::Compliant);
    assert!(decide(&state, "mac-ada", T0).allow);
}

#[test]
fn rule4_each_failing_setting_is_reported_with_expected_and_actual_values() {
    let mut state = org(&["ada"]);
    let settings = PolicySettings {
        os_minimum_version: Some(v("15.0")),
        storage_encryption_required: Some(true),
        firewall_enabled: Some(true),
        system_integrity_protection_required: Some(true),
        ..Default::default()
    };
    add_policy(&mut state, policy("strict", settings, 0));
    let mut ada = mac("mac-ada", "ada", "S");
    ada.facts.file_vault = Some(FileVault::BootVolumeOnly);
    ada.facts.firewall_enabled = Some(false);
    put(&mut state, ada);

    let eval = compliance::evaluate(&state, state.device("mac-ada").unwrap(), T0, compliance::Detail::All);
    let nc = ComplianceState::Noncompliant;
    let s = |setting, expected: &str, actual: &str, state| SettingResult {
        setting,
        expected: expected.to_string(),
        actual: actual.to_string(),
        state,
    };
    assert_eq!(
        eval.policies[0].settings,
        vec![
            s("os_minimum_version", ">= 15.0", "14.2.1", nc),
            s("system_integrity_protection", "enabled", "enabled", ComplianceState::Compliant),
            s("storage_encryption", "all volumes encrypted", "boot volume only", nc),
            s("firewall_enabled", "true", "false", nc),
        ]
    );
    let d = decide(&state, "mac-ada", T0);
    assert_eq!(codes(&d), vec![ReasonCode::Noncompliant]);
    // The decision names each failing setting; the evaluation above has their values.
    let msg = &d.reasons[0].message;
    assert_eq!(msg, "fails policy policy strict: os_minimum_version, storage_encryption, firewall_enabled");
}

#[test]
fn rule4_a_setting_not_configured_is_not_evaluated() {
    let mut state = org(&["ada"]);
    // Only the firewall is required; "false" for stealth/block-all means not configured.
    let settings = PolicySettings {
        firewall_enabled: Some(true),
        firewall_stealth_mode: Some(false),
        firewall_block_all_incoming: Some(false),
        ..Default::default()
    };
    add_policy(&mut state, policy("fw", settings, 0));
    let mut ada = mac("mac-ada", "ada", "S");
    ada.facts.file_vault = Some(FileVault::NotEncrypted); // not configured: irrelevant
    ada.facts.firewall_stealth_mode = Some(false);
    ada.facts.firewall_block_all_incoming = None;
    put(&mut state, ada);
    let eval = compliance::evaluate(&state, state.device("mac-ada").unwrap(), T0, compliance::Detail::All);
    let names: Vec<_> = eval.policies[0].settings.iter().map(|s| s.setting).collect();
    assert_eq!(names, vec!["firewall_enabled"]);
    assert_eq!(eval.state, ComplianceState::Compliant);

    // A policy with nothing configured is met by any Mac.
    let empty = compliance::check_settings(&PolicySettings::default(), state.device("mac-ada").unwrap());
    assert!(empty.is_empty());
}

#[test]
fn rule4_a_configured_setting_the_partner_did_not_report_is_an_error_that_denies() {
    let mut state = org(&["ada"]);
    add_policy(&mut state, policy("disk", encryption_required(), 48));
    let mut ada = mac("mac-ada", "ada", "S");
    ada.facts.file_vault = None;
    put(&mut state, ada);
    let eval = compliance::evaluate(&state, state.device("mac-ada").unwrap(), T0, compliance::Detail::All);
    assert_eq!(eval.policies[0].settings[0].actual, "not reported");
    assert_eq!(eval.policies[0].state, ComplianceState::Error);
    // No grace for an error: the grace period covers failing settings only.
    assert_eq!(eval.policies[0].grace_period_ends, None);
    let d = decide(&state, "mac-ada", T0);
    assert!(!d.allow);
    assert_eq!(d.state, ComplianceState::Error);
    assert_eq!(codes(&d), vec![ReasonCode::ComplianceError]);
}

#[test]
fn rule4_the_most_severe_policy_result_wins() {
    let mut state = org(&["ada"]);
    // "a-grace": fails, in a 48h grace period; "b-now": fails with no grace; "c-ok" passes.
    add_policy(&mut state, policy("a-grace", encryption_required(), 48));
    add_policy(&mut state, policy("b-now", PolicySettings { firewall_enabled: Some(true), ..Default::default() }, 0));
    let os_only = PolicySettings { os_minimum_version: Some(v("13.0")), ..Default::default() };
    add_policy(&mut state, policy("c-ok", os_only, 0));
    let mut ada = mac("mac-ada", "ada", "S");
    ada.facts.file_vault = Some(FileVault::NotEncrypted);
    ada.facts.firewall_enabled = Some(false);
    put(&mut state, ada.clone());
    let eval = compliance::evaluate(&state, state.device("mac-ada").unwrap(), T0, compliance::Detail::All);
    let results: Vec<_> = eval.policies.iter().map(|p| p.state).collect();
    assert_eq!(
        results,
        vec![ComplianceState::InGracePeriod, ComplianceState::Noncompliant, ComplianceState::Compliant]
    );
    assert_eq!(eval.state, ComplianceState::Noncompliant);
    assert_eq!(eval.grace_period_ends, None, "not in grace overall");
    let d = decide(&state, "mac-ada", T0);
    assert!(!d.allow);
    assert_eq!(codes(&d), vec![ReasonCode::InGracePeriod, ReasonCode::Noncompliant]);

    // Fix the firewall: only the grace-period failure is left, and that still lets it in.
    ada.facts.firewall_enabled = Some(true);
    put(&mut state, ada.clone());
    let d = decide(&state, "mac-ada", T0);
    assert!(d.allow);
    assert_eq!(d.state, ComplianceState::InGracePeriod);
    assert_eq!(codes(&d), vec![ReasonCode::InGracePeriod]);

    // An error outranks a grace period.
    ada.facts.firewall_enabled = None;
    put(&mut state, ada);
    let d = decide(&state, "mac-ada", T0);
    assert!(!d.allow);
    assert_eq!(d.state, ComplianceState::Error);
    assert_eq!(codes(&d), vec![ReasonCode::InGracePeriod, ReasonCode::ComplianceError]);
}

#[test]
fn rule4_severity_order_of_compliance_states() {
    use ComplianceState::*;
    let order =
        [NotAssigned, NotApplicable, Compliant, Remediated, InGracePeriod, Unknown, Conflict, Error, Noncompliant];
    for w in order.windows(2) {
        assert!(w[0] < w[1], "{:?} < {:?}", w[0], w[1]);
    }
    let allowed: Vec<_> = order.iter().copied().filter(|s| s.allows_access()).collect();
    assert_eq!(allowed, vec![Compliant, Remediated, InGracePeriod]);
}

/// A Mac failing a policy with a `grace_hours` grace period since `since` (the report that
/// first showed it), checking in regularly since: last check-in and token renewal at
/// `since + 23h`.
fn grace_org(grace_hours: u32, since: Timestamp) -> State {
    let mut state = org(&["ada"]);
    add_policy(&mut state, policy("disk", encryption_required(), grace_hours));
    let mut ada = mac("mac-ada", "ada", "S");
    ada.facts.file_vault = Some(FileVault::NotEncrypted);
    ada.last_check_in = since;
    ada.last_token_renewal = since;
    ada.refresh_token_issued = Some(since);
    put(&mut state, ada.clone());
    ada.last_check_in = since.plus_hours(23);
    ada.last_token_renewal = since.plus_hours(23);
    put(&mut state, ada);
    assert_eq!(since_of(&state, "mac-ada", "disk"), Some(since), "a failure that continues keeps its start");
    state
}

#[test]
fn rule4_grace_period_boundary() {
    let t = T0;
    let state = grace_org(24, t);
    let ends = t.plus_hours(24);

    let just_before = ends.plus_secs(-1);
    let eval = compliance::evaluate(&state, state.device("mac-ada").unwrap(), just_before, compliance::Detail::All);
    assert_eq!(eval.state, ComplianceState::InGracePeriod);
    assert_eq!(eval.grace_period_ends, Some(ends));
    assert_eq!(eval.policies[0].grace_period_ends, Some(ends));
    let d = decide(&state, "mac-ada", just_before);
    assert!(d.allow);
    assert_eq!(d.state, ComplianceState::InGracePeriod);
    assert_eq!(codes(&d), vec![ReasonCode::InGracePeriod]);
    assert!(d.reasons[0].message.contains(&ends.to_string()), "{}", d.reasons[0].message);
    // The allow holds exactly until the grace period ends.
    assert_eq!(d.valid_until, Some(ends));

    for now in [ends, ends.plus_secs(1)] {
        let eval = compliance::evaluate(&state, state.device("mac-ada").unwrap(), now, compliance::Detail::All);
        assert_eq!(eval.state, ComplianceState::Noncompliant, "at {now}");
        assert_eq!(eval.grace_period_ends, None);
        assert_eq!(eval.policies[0].grace_period_ends, Some(ends), "the ended grace period is still shown");
        let d = decide(&state, "mac-ada", now);
        assert!(!d.allow, "at {now}");
        assert_eq!(d.state, ComplianceState::Noncompliant);
        assert_eq!(codes(&d), vec![ReasonCode::Noncompliant]);
    }
}

#[test]
fn rule4_grace_zero_is_noncompliant_at_once() {
    let state = grace_org(0, T0);
    for now in [T0, T0.plus_secs(1), T0.plus_hours(1)] {
        let d = decide(&state, "mac-ada", now);
        assert!(!d.allow);
        assert_eq!(d.state, ComplianceState::Noncompliant);
        assert_eq!(codes(&d), vec![ReasonCode::Noncompliant]);
    }
}

#[test]
fn rule4_grace_starts_at_the_check_in_that_first_shows_the_failure() {
    let mut state = org(&["ada"]);
    add_policy(&mut state, policy("disk", encryption_required(), 1));
    let mut ada = mac("mac-ada", "ada", "S"); // checked in at T0 - 600s
    ada.facts.file_vault = Some(FileVault::NotEncrypted);
    put(&mut state, ada);
    let ends = T0.plus_secs(-600).plus_hours(1);
    let d = decide(&state, "mac-ada", ends.plus_secs(-1));
    assert_eq!(codes(&d), vec![ReasonCode::InGracePeriod]);
    assert_eq!(d.valid_until, Some(ends));
    assert_eq!(codes(&decide(&state, "mac-ada", ends)), vec![ReasonCode::Noncompliant]);
}

#[test]
fn rule12_editing_a_policy_does_not_restart_a_grace_period_that_ended() {
    // 100 hours into failing a policy with 72 hours' grace: noncompliant.
    let since = T0.plus_hours(-100);
    let mut state = grace_org(72, since);
    // Still checking in, still failing.
    let mut ada = state.device("mac-ada").unwrap().clone();
    (ada.last_check_in, ada.last_token_renewal) = (T0.plus_secs(-600), T0.plus_secs(-600));
    put(&mut state, ada);
    assert_eq!(codes(&decide(&state, "mac-ada", T0)), vec![ReasonCode::Noncompliant]);
    // A rename, a longer grace period, another setting added: the failure continues, and so
    // does its start.
    let mut edited = state.policy("disk").unwrap().clone();
    edited.name = "Disk encryption (renamed)".into();
    write(&mut state, vec![Change::PutPolicy(edited.clone())], T0);
    edited.settings.firewall_enabled = Some(true);
    write(&mut state, vec![Change::PutPolicy(edited)], T0);
    assert_eq!(since_of(&state, "mac-ada", "disk"), Some(since));
    let d = decide(&state, "mac-ada", T0);
    assert!(!d.allow);
    assert_eq!(codes(&d), vec![ReasonCode::Noncompliant]);
}

#[test]
fn rule12_a_longer_grace_period_extends_only_the_grace_periods_still_running() {
    // Ada failing since 30 hours ago, Bob since 10, under a 24-hour grace period.
    let mut state = org(&["ada", "bob"]);
    add_policy(&mut state, policy("disk", encryption_required(), 24));
    for (device, user, ago) in [("mac-ada", "ada", 30), ("mac-bob", "bob", 10)] {
        let mut mac = mac(device, user, device);
        mac.facts.file_vault = Some(FileVault::NotEncrypted);
        mac.last_check_in = T0.plus_hours(-ago);
        put(&mut state, mac.clone());
        (mac.last_check_in, mac.last_token_renewal) = (T0.plus_secs(-60), T0.plus_secs(-60));
        put(&mut state, mac);
    }
    assert_eq!(codes(&decide(&state, "mac-ada", T0)), vec![ReasonCode::Noncompliant]);
    assert_eq!(codes(&decide(&state, "mac-bob", T0)), vec![ReasonCode::InGracePeriod]);
    // 72 hours: Bob's running grace period now ends 72 hours after his failure began; Ada's
    // ended, and stays ended.
    let mut longer = state.policy("disk").unwrap().clone();
    longer.grace_period_hours = 72;
    write(&mut state, vec![Change::PutPolicy(longer)], T0);
    assert_eq!(codes(&decide(&state, "mac-ada", T0)), vec![ReasonCode::Noncompliant]);
    assert_eq!(state.failure("mac-bob", "disk").unwrap().grace_ends, T0.plus_hours(-10 + 72));
    // Shorter again, to 5 hours: applies at once, to both.
    let mut shorter = state.policy("disk").unwrap().clone();
    shorter.grace_period_hours = 5;
    write(&mut state, vec![Change::PutPolicy(shorter)], T0);
    assert_eq!(codes(&decide(&state, "mac-bob", T0)), vec![ReasonCode::Noncompliant]);
    assert_eq!(state.failure("mac-ada", "disk").unwrap().grace_ends, T0.plus_hours(-30 + 5));
}

#[test]
fn rule12_a_deleted_device_record_keeps_its_failures_for_the_macs_next_report() {
    let mut state = org(&["ada"]);
    add_policy(&mut state, policy("disk", encryption_required(), 24));
    let mut ada = mac("mac-ada", "ada", "S");
    ada.facts.file_vault = Some(FileVault::NotEncrypted);
    ada.last_check_in = T0.plus_hours(-30);
    put(&mut state, ada.clone());
    ada.last_check_in = T0.plus_secs(-60);
    put(&mut state, ada.clone());
    assert_eq!(codes(&decide(&state, "mac-ada", T0)), vec![ReasonCode::Noncompliant]);
    write(&mut state, vec![Change::DeleteDevice("mac-ada".into())], T0);
    assert_eq!(codes(&decide(&state, "mac-ada", T0)), vec![ReasonCode::DeviceUnknown]);
    // Reported again, still failing: the failure continues from 30 hours ago.
    ada.last_check_in = T0;
    put(&mut state, ada);
    assert_eq!(since_of(&state, "mac-ada", "disk"), Some(T0.plus_hours(-30)));
    assert_eq!(codes(&decide(&state, "mac-ada", T0)), vec![ReasonCode::Noncompliant]);
}

#[test]
fn rule12_a_requirement_made_stricter_starts_grace_for_the_macs_it_newly_fails() {
    let mut state = org(&["ada", "bob"]);
    add_policy(
        &mut state,
        policy("baseline", PolicySettings { firewall_enabled: Some(true), ..Default::default() }, 24),
    );
    put(&mut state, mac("mac-ada", "ada", "A"));
    let mut bob = mac("mac-bob", "bob", "B");
    bob.facts.firewall_enabled = Some(false);
    put(&mut state, bob);
    let bob_since = since_of(&state, "mac-bob", "baseline").unwrap();
    // Ada's Mac has FileVault on, Bob's too; both pass a new encryption rule except... make it
    // stricter on the OS: Ada (14.2.1) newly fails a 15.0 minimum, Bob already failed.
    let mut stricter = state.policy("baseline").unwrap().clone();
    stricter.settings.os_minimum_version = Some(v("15.0"));
    let edited_at = T0.plus_hours(1);
    write(&mut state, vec![Change::PutPolicy(stricter)], edited_at);
    assert_eq!(since_of(&state, "mac-ada", "baseline"), Some(edited_at), "a new failure starts at the edit");
    assert_eq!(since_of(&state, "mac-bob", "baseline"), Some(bob_since), "a continuing one keeps its start");
    let d = decide(&state, "mac-ada", edited_at);
    assert_eq!(codes(&d), vec![ReasonCode::InGracePeriod]);
    let eval = compliance::evaluate(&state, state.device("mac-ada").unwrap(), edited_at, compliance::Detail::All);
    assert_eq!(eval.grace_period_ends, Some(edited_at.plus_hours(24)));
    // Loosened again: Ada passes, and her record goes; Bob still fails the firewall rule.
    let mut loosened = state.policy("baseline").unwrap().clone();
    loosened.settings.os_minimum_version = None;
    write(&mut state, vec![Change::PutPolicy(loosened)], edited_at.plus_hours(1));
    assert_eq!(since_of(&state, "mac-ada", "baseline"), None);
    assert_eq!(since_of(&state, "mac-bob", "baseline"), Some(bob_since));
}

#[test]
fn rule12_a_policy_that_starts_to_apply_records_when_the_failure_began_to_count() {
    let mut state = org(&["ada"]);
    state.apply(Change::PutGroup(user_group("finance", &[])));
    let p = policy("disk", encryption_required(), 12);
    write(&mut state, vec![Change::PutPolicy(p.clone()), assign("disk", &["finance"], &[])], T0.plus_days(-60));
    // Ada's Mac checked in with FileVault off; the policy does not reach her.
    let mut ada = mac("mac-ada", "ada", "S");
    ada.facts.file_vault = Some(FileVault::NotEncrypted);
    put(&mut state, ada.clone());
    assert_eq!(since_of(&state, "mac-ada", "disk"), None);
    // She joins finance at T0: her failure begins to count now.
    write(&mut state, vec![Change::PutGroup(user_group("finance", &["ada"]))], T0);
    assert_eq!(since_of(&state, "mac-ada", "disk"), Some(T0));
    let ends = T0.plus_hours(12);
    assert_eq!(codes(&decide(&state, "mac-ada", ends.plus_secs(-1))), vec![ReasonCode::InGracePeriod]);
    assert_eq!(codes(&decide(&state, "mac-ada", ends)), vec![ReasonCode::Noncompliant]);
    // Her next report, still failing, does not start it afresh.
    ada.last_check_in = ends.plus_secs(60);
    ada.last_token_renewal = ends;
    put(&mut state, ada.clone());
    assert_eq!(since_of(&state, "mac-ada", "disk"), Some(T0));
    assert_eq!(codes(&decide(&state, "mac-ada", ends.plus_secs(120))), vec![ReasonCode::Noncompliant]);
    // The same through the assignment: another policy assigned to mac-users.
    write(
        &mut state,
        vec![Change::PutPolicy(policy(
            "fw",
            PolicySettings { firewall_enabled: Some(true), ..Default::default() },
            12,
        ))],
        T0,
    );
    ada.facts.firewall_enabled = Some(false);
    ada.last_check_in = ends.plus_secs(180);
    put(&mut state, ada);
    assert_eq!(since_of(&state, "mac-ada", "fw"), None, "not assigned yet");
    let assigned_at = ends.plus_secs(200);
    write(&mut state, vec![assign("fw", &[MAC_USERS], &[])], assigned_at);
    assert_eq!(since_of(&state, "mac-ada", "fw"), Some(assigned_at));
    // Leaving the group drops the record; the policy no longer applies.
    write(&mut state, vec![Change::PutGroup(user_group("finance", &[]))], assigned_at);
    assert_eq!(since_of(&state, "mac-ada", "disk"), None);
}

#[test]
fn rule4_failures_on_record_are_kept_set_and_cleared_by_reports() {
    let mut state = org(&["ada"]);
    add_policy(&mut state, policy("disk", encryption_required(), 24));
    let earlier = T0.plus_hours(-5);
    let mut failing = mac("mac-ada", "ada", "S");
    failing.facts.file_vault = Some(FileVault::NotEncrypted);
    failing.last_check_in = earlier;
    let mut passing = failing.clone();
    passing.facts.file_vault = Some(FileVault::AllEncrypted);

    // First report, failing: set to this check-in.
    put(&mut state, failing.clone());
    assert_eq!(since_of(&state, "mac-ada", "disk"), Some(earlier));
    // Still failing: the earlier value is kept.
    failing.last_check_in = T0;
    put(&mut state, failing.clone());
    assert_eq!(since_of(&state, "mac-ada", "disk"), Some(earlier));
    // Compliant again: cleared; failing again: a new start.
    passing.last_check_in = T0.plus_hours(1);
    put(&mut state, passing);
    assert_eq!(since_of(&state, "mac-ada", "disk"), None);
    failing.last_check_in = T0.plus_hours(2);
    put(&mut state, failing.clone());
    assert_eq!(since_of(&state, "mac-ada", "disk"), Some(T0.plus_hours(2)));
    // A check-in after the server's now starts no later than now.
    let mut future = failing.clone();
    future.facts.file_vault = Some(FileVault::AllEncrypted);
    write(&mut state, vec![Change::PutDevice(future.clone())], T0.plus_hours(3));
    future.facts.file_vault = Some(FileVault::NotEncrypted);
    future.last_check_in = T0.plus_hours(4);
    write(&mut state, vec![Change::PutDevice(future)], T0.plus_hours(3));
    assert_eq!(since_of(&state, "mac-ada", "disk"), Some(T0.plus_hours(3)));
    // The partner's own verdict: policies are not evaluated, and the record waits unchanged.
    let mut verdict = failing.clone();
    verdict.last_check_in = T0.plus_hours(5);
    verdict.partner_verdict = Some(PartnerVerdict { compliant: true, decided_at: T0.plus_hours(5) });
    put(&mut state, verdict.clone());
    assert_eq!(since_of(&state, "mac-ada", "disk"), Some(T0.plus_hours(3)));
    // Back in inventory mode, still failing: the failure continues.
    failing.last_check_in = T0.plus_hours(6);
    put(&mut state, failing.clone());
    assert_eq!(since_of(&state, "mac-ada", "disk"), Some(T0.plus_hours(3)));
    // No applicable policy: nothing fails.
    let mut other = failing;
    other.last_check_in = T0.plus_hours(7);
    other.user_id = "stranger".into();
    put(&mut state, other);
    assert_eq!(since_of(&state, "mac-ada", "disk"), None);
}

#[test]
fn rule12_a_mac_back_from_a_noncompliant_verdict_fails_from_the_verdicts_time() {
    let mut state = org(&["ada"]);
    add_policy(&mut state, policy("disk", encryption_required(), 24));
    let mut ada = mac("mac-ada", "ada", "S");
    ada.facts.file_vault = Some(FileVault::NotEncrypted);
    // The partner judged it noncompliant 30 hours ago, and says so again now.
    ada.last_check_in = T0.plus_secs(-60);
    ada.partner_verdict = Some(PartnerVerdict { compliant: false, decided_at: T0.plus_hours(-30) });
    put(&mut state, ada.clone());
    ada.partner_verdict = Some(PartnerVerdict { compliant: false, decided_at: T0.plus_secs(-60) });
    ada.last_check_in = T0.plus_secs(-30);
    put(&mut state, ada.clone());
    assert_eq!(codes(&decide(&state, "mac-ada", T0)), vec![ReasonCode::PartnerVerdictNoncompliant]);
    // Back to inventory mode, failing the policy: it was already known noncompliant, so no
    // grace period starts.
    ada.partner_verdict = None;
    ada.last_check_in = T0;
    put(&mut state, ada.clone());
    assert_eq!(since_of(&state, "mac-ada", "disk"), Some(T0.plus_secs(-60)));
    assert_eq!(codes(&decide(&state, "mac-ada", T0)), vec![ReasonCode::Noncompliant]);
    // From a compliant verdict, a failure is new and gets its grace period.
    let mut bob = mac("mac-bob", "bob", "B");
    state.apply(Change::PutUser(licensed_user("bob")));
    state.apply(Change::PutGroup(user_group(MAC_USERS, &["ada", "bob"])));
    bob.partner_verdict = Some(PartnerVerdict { compliant: true, decided_at: T0.plus_secs(-60) });
    put(&mut state, bob.clone());
    (bob.partner_verdict, bob.facts.file_vault, bob.last_check_in) = (None, Some(FileVault::NotEncrypted), T0);
    put(&mut state, bob);
    assert_eq!(codes(&decide(&state, "mac-bob", T0)), vec![ReasonCode::InGracePeriod]);
}

#[test]
fn rule12_a_failure_with_no_record_has_no_grace_left() {
    // No write leaves one behind; should one appear (a bug, a hand-edited store), fail closed.
    let mut state = org(&["ada"]);
    add_policy(&mut state, policy("disk", encryption_required(), 72));
    let mut ada = mac("mac-ada", "ada", "S");
    ada.facts.file_vault = Some(FileVault::NotEncrypted);
    state.apply(Change::PutDevice(ada));
    assert_eq!(codes(&decide(&state, "mac-ada", T0)), vec![ReasonCode::Noncompliant]);
}

// ---------------------------------------------------------------------------------------------
// Rule 5: freshness
// ---------------------------------------------------------------------------------------------

/// A Mac that checked in at `c`, renewed its token an hour later and got a refresh token a day before.
fn checked_in_at(c: Timestamp) -> Device {
    let mut d = mac("mac-ada", "ada", "S");
    d.last_check_in = c;
    d.last_token_renewal = c.plus_hours(1);
    d.refresh_token_issued = Some(c.plus_days(-1));
    d
}

#[test]
fn rule5_no_check_in_for_24_hours_is_unresponsive() {
    let c = T0;
    let mut state = org(&["ada"]);
    put(&mut state, checked_in_at(c));

    let d = decide(&state, "mac-ada", c.plus_secs(24 * H - 1));
    assert!(d.allow);
    assert_eq!(codes(&d), vec![ReasonCode::Compliant]);
    assert_eq!(d.valid_until, Some(c.plus_hours(24)), "the allow ends when the Mac becomes unresponsive");

    for now in [c.plus_hours(24), c.plus_secs(24 * H + 1)] {
        let d = decide(&state, "mac-ada", now);
        assert!(!d.allow, "at {now}");
        assert_eq!(codes(&d), vec![ReasonCode::Unresponsive]);
        // The next boundary is now the token going stale (over 24 hours after its renewal).
        assert_eq!(d.valid_until, Some(c.plus_hours(25).plus_secs(1)));
    }
}

#[test]
fn rule5_a_directory_token_not_renewed_for_24_hours_is_stale() {
    let mut state = org(&["ada"]);
    let mut ada = mac("mac-ada", "ada", "S");
    let renewed = T0.plus_hours(-30);
    ada.last_token_renewal = renewed;
    put(&mut state, ada.clone());
    let d = decide(&state, "mac-ada", T0);
    assert!(!d.allow);
    assert_eq!(codes(&d), vec![ReasonCode::TokenStale]);

    // "Over 24 hours": exactly 24 hours is still fresh; one second more is stale.
    ada.last_token_renewal = T0.plus_secs(-24 * H);
    put(&mut state, ada.clone());
    let d = decide(&state, "mac-ada", T0);
    assert!(d.allow);
    assert_eq!(d.valid_until, Some(T0.plus_secs(1)));
    assert_eq!(codes(&decide(&state, "mac-ada", T0.plus_secs(1))), vec![ReasonCode::TokenStale]);

    ada.last_token_renewal = T0.plus_secs(-24 * H - 1);
    put(&mut state, ada);
    assert_eq!(codes(&decide(&state, "mac-ada", T0)), vec![ReasonCode::TokenStale]);
}

#[test]
fn rule5_a_lapsed_refresh_token_requires_sign_in() {
    let mut state = org(&["ada"]);
    let mut ada = mac("mac-ada", "ada", "S");
    ada.refresh_token_issued = Some(T0.plus_secs(-7 * D - 1));
    put(&mut state, ada.clone());
    let d = decide(&state, "mac-ada", T0);
    assert!(!d.allow);
    assert_eq!(codes(&d), vec![ReasonCode::SignInRequired]);

    ada.refresh_token_issued = Some(T0.plus_secs(-7 * D + 1));
    put(&mut state, ada.clone());
    let d = decide(&state, "mac-ada", T0);
    assert!(d.allow);
    assert_eq!(codes(&d), vec![ReasonCode::Compliant]);
    assert_eq!(d.valid_until, Some(T0.plus_secs(1)));

    // Not reported: no refresh-token gate at all.
    ada.refresh_token_issued = None;
    put(&mut state, ada);
    assert!(decide(&state, "mac-ada", T0).allow);
}

#[test]
fn rule5_valid_until_is_the_earliest_time_boundary() {
    let mut state = org(&["ada"]);
    let c = T0.plus_hours(-2);

    // Check-in + 24h is earliest.
    put(&mut state, checked_in_at(c));
    assert_eq!(decide(&state, "mac-ada", T0).valid_until, Some(c.plus_hours(24)));

    // Token renewal + 24h is earliest.
    let mut ada = checked_in_at(c);
    ada.last_token_renewal = c.plus_hours(-1);
    put(&mut state, ada);
    assert_eq!(decide(&state, "mac-ada", T0).valid_until, Some(c.plus_hours(23).plus_secs(1)));

    // Refresh-token lapse is earliest.
    let mut ada = checked_in_at(c);
    ada.refresh_token_issued = Some(T0.plus_days(-7).plus_hours(3));
    put(&mut state, ada);
    assert_eq!(decide(&state, "mac-ada", T0).valid_until, Some(T0.plus_hours(3)));

    // A grace period ending first is earliest (see also the validity-period tests below).
    add_policy(&mut state, policy("disk", encryption_required(), 1));
    let mut ada = checked_in_at(c);
    ada.facts.file_vault = Some(FileVault::NotEncrypted);
    ada.last_check_in = T0.plus_secs(-10);
    put(&mut state, ada);
    assert_eq!(decide(&state, "mac-ada", T0).valid_until, Some(T0.plus_secs(H - 10)));
}

#[test]
fn rule5_an_unresponsive_mac_is_never_allowed_on_old_data() {
    let mut state = org(&["ada"]);
    add_policy(&mut state, policy("disk", encryption_required(), 0));
    // The last inventory says compliant, but it is 25 hours old.
    let mut ada = mac("mac-ada", "ada", "S");
    ada.last_check_in = T0.plus_hours(-25);
    put(&mut state, ada);
    let d = decide(&state, "mac-ada", T0);
    assert!(!d.allow);
    assert!(codes(&d).contains(&ReasonCode::Unresponsive));
    assert!(!codes(&d).contains(&ReasonCode::Compliant));
}

// ---------------------------------------------------------------------------------------------
// Rule 6: registration through the partner, duplicates
// ---------------------------------------------------------------------------------------------

#[test]
fn rule6_a_mac_registered_directly_is_not_registered_for_the_partner() {
    let mut state = org(&["ada"]);
    let mut ada = mac("mac-ada", "ada", "S");
    ada.registration = Registration::Direct;
    put(&mut state, ada);
    let d = decide(&state, "mac-ada", T0);
    assert!(!d.allow);
    assert_eq!(codes(&d), vec![ReasonCode::NotRegisteredThroughPartner]);
}

#[test]
fn rule6_duplicate_registrations_are_both_denied_until_one_is_deleted() {
    let mut state = org(&["ada"]);
    add_policy(&mut state, policy("disk", encryption_required(), 0));
    put(&mut state, mac("mac-a", "ada", "C02DUP"));
    // The second record even looks noncompliant: neither may be merged into an allow.
    let mut second = mac("mac-b", "ada", "C02DUP");
    second.facts.file_vault = Some(FileVault::NotEncrypted);
    let touched = state.apply(Change::PutDevice(second));
    assert!(touched.devices.contains("mac-a") && touched.devices.contains("mac-b"), "{touched:?}");
    assert_eq!(state.devices_with_serial("C02DUP").count(), 2);

    let a = decide(&state, "mac-a", T0);
    assert!(!a.allow);
    assert_eq!(a.state, ComplianceState::Compliant);
    assert_eq!(codes(&a), vec![ReasonCode::DuplicateRegistration]);
    assert!(a.reasons[0].message.contains("mac-b"), "{}", a.reasons[0].message);
    let b = decide(&state, "mac-b", T0);
    assert!(!b.allow);
    assert_eq!(codes(&b), vec![ReasonCode::DuplicateRegistration, ReasonCode::Noncompliant]);
    assert!(b.reasons[0].message.contains("mac-a"), "{}", b.reasons[0].message);

    let touched = state.apply(Change::DeleteDevice("mac-b".into()));
    assert!(touched.devices.contains("mac-a"), "deleting a duplicate touches the survivor: {touched:?}");
    assert_eq!(state.devices_with_serial("C02DUP").collect::<Vec<_>>(), ["mac-a"]);
    let a = decide(&state, "mac-a", T0);
    assert!(a.allow);
    assert_eq!(codes(&a), vec![ReasonCode::Compliant]);
}

#[test]
fn rule6_duplicates_across_users_are_denied_and_reregistering_with_another_serial_clears_them() {
    let mut state = org(&["ada", "bob"]);
    put(&mut state, mac("mac-a", "ada", "C02DUP"));
    put(&mut state, mac("mac-b", "bob", "C02DUP"));
    assert_eq!(codes(&decide(&state, "mac-a", T0)), vec![ReasonCode::DuplicateRegistration]);
    assert_eq!(codes(&decide(&state, "mac-b", T0)), vec![ReasonCode::DuplicateRegistration]);
    let touched = state.apply(Change::PutDevice(mac("mac-b", "bob", "C02OTHER")));
    assert!(touched.devices.contains("mac-a"), "{touched:?}");
    assert!(decide(&state, "mac-a", T0).allow);
    assert!(decide(&state, "mac-b", T0).allow);
}

// ---------------------------------------------------------------------------------------------
// Rule 7: the integration must be on
// ---------------------------------------------------------------------------------------------

#[test]
fn rule7_a_connector_that_is_not_configured_disables_the_integration() {
    let mut state = org(&["ada"]);
    put(&mut state, mac("mac-ada", "ada", "S"));
    let mut c = enabled_connector(&[MAC_USERS], &[]);
    c.state = ConnectorState::NotConfigured;
    state.apply(Change::PutConnector(c));
    let d = decide(&state, "mac-ada", T0);
    assert!(!d.allow);
    assert_eq!(codes(&d), vec![ReasonCode::IntegrationDisabled]);

    // A fresh state has no connector at all: disabled, and nobody is targeted.
    let mut fresh = State::default();
    fresh.apply(Change::PutUser(licensed_user("ada")));
    put(&mut fresh, mac("mac-ada", "ada", "S"));
    assert_eq!(fresh.connector().state, ConnectorState::NotConfigured);
    assert_eq!(
        codes(&decide(&fresh, "mac-ada", T0)),
        vec![ReasonCode::IntegrationDisabled, ReasonCode::UserNotTargeted]
    );
}

fn terminated(removal_at: Option<Timestamp>) -> Connector {
    let mut c = enabled_connector(&[MAC_USERS], &[]);
    c.state = ConnectorState::Terminated;
    c.terminated_at = Some(T0.plus_days(-1));
    c.removal_at = removal_at;
    c
}

#[test]
fn rule7_a_terminated_connector_disables_then_removes() {
    let mut state = org(&["ada"]);
    put(&mut state, mac("mac-ada", "ada", "S"));

    // Removal far away: disabled; the decision never outlives the removal date.
    let far = T0.plus_days(89);
    state.apply(Change::PutConnector(terminated(Some(far))));
    let d = decide(&state, "mac-ada", T0);
    assert!(!d.allow);
    assert_eq!(codes(&d), vec![ReasonCode::IntegrationDisabled]);
    assert!(d.valid_until.unwrap() <= far);

    // Removal soon: the decision holds exactly until then.
    let soon = T0.plus_secs(60);
    state.apply(Change::PutConnector(terminated(Some(soon))));
    let d = decide(&state, "mac-ada", T0);
    assert_eq!(codes(&d), vec![ReasonCode::IntegrationDisabled]);
    assert_eq!(d.valid_until, Some(soon));

    for now in [soon, soon.plus_secs(1)] {
        let d = decide(&state, "mac-ada", now);
        assert!(!d.allow);
        assert_eq!(codes(&d), vec![ReasonCode::DeviceRemoved], "at {now}");
        assert!(d.reasons[0].message.contains(&soon.to_string()), "{}", d.reasons[0].message);
    }
    assert_eq!(causes(&state, "mac-ada", PartnerCredential::LeastPrivilege, soon), vec![Cause::IntegrationDisabled]);

    // Terminated without a removal date: still disabled.
    state.apply(Change::PutConnector(terminated(None)));
    assert_eq!(codes(&decide(&state, "mac-ada", T0)), vec![ReasonCode::IntegrationDisabled]);
}

// ---------------------------------------------------------------------------------------------
// Rule 8 (as far as diagnosis goes): least privilege for the partner
// ---------------------------------------------------------------------------------------------

#[test]
fn rule8_diagnosis_reports_wrong_partner_permissions() {
    let mut state = org(&["ada"]);
    put(&mut state, mac("mac-ada", "ada", "S"));
    for credential in [PartnerCredential::ExtraPermissions, PartnerCredential::Missing] {
        let findings = diagnosis::diagnose(&state, "mac-ada", credential, T0).unwrap().findings;
        assert_eq!(findings.iter().map(|f| f.cause).collect::<Vec<_>>(), vec![Cause::WrongPartnerPermissions]);
        assert!(findings[0].detail.contains("jamf-test"), "{}", findings[0].detail);
        assert!(findings[0].remediation().contains("update device attributes"));
    }
    for credential in [PartnerCredential::LeastPrivilege, PartnerCredential::NotChecked] {
        assert_eq!(causes(&state, "mac-ada", credential, T0), vec![], "{credential:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Rule 10: prerequisites
// ---------------------------------------------------------------------------------------------

#[test]
fn rule10_macs_before_10_12_are_unsupported() {
    let mut state = org(&["ada"]);
    for (os, supported) in [("10.11", false), ("10.11.6", false), ("10.12", true), ("10.12.6", true), ("14.2.1", true)]
    {
        let mut ada = mac("mac-ada", "ada", "S");
        ada.os_version = v(os);
        put(&mut state, ada);
        let d = decide(&state, "mac-ada", T0);
        assert_eq!(d.allow, supported, "macOS {os}");
        let expected = if supported { ReasonCode::Compliant } else { ReasonCode::UnsupportedOs };
        assert_eq!(codes(&d), vec![expected], "macOS {os}");
    }
    assert_eq!(access::minimum_macos(), v("10.12"));
}

// ---------------------------------------------------------------------------------------------
// Rule 11: counts by state and by reason; causes with remediations
// ---------------------------------------------------------------------------------------------

/// ada: healthy; bob, ivy: unencrypted (noncompliant); cara: one healthy Mac and one
/// registered directly; dan: unresponsive; erin: two records with one serial; gus: excluded;
/// hal: no premium identity licence.
fn troubled_org() -> State {
    let users = ["ada", "bob", "cara", "dan", "erin", "gus", "hal", "ivy"];
    let mut state = org(&users);
    state.apply(Change::PutUser(User { premium_identity_licence: false, ..licensed_user("hal") }));
    state.apply(Change::PutGroup(user_group("contractors", &["gus"])));
    state.apply(Change::PutConnector(enabled_connector(&[MAC_USERS], &["contractors"])));
    add_policy(&mut state, policy("disk", encryption_required(), 0));

    put(&mut state, mac("mac-ada", "ada", "S-ADA"));
    for (id, user, serial) in [("mac-bob", "bob", "S-BOB"), ("mac-ivy", "ivy", "S-IVY")] {
        let mut m = mac(id, user, serial);
        m.facts.file_vault = Some(FileVault::NotEncrypted);
        put(&mut state, m);
    }
    put(&mut state, mac("mac-cara-1", "cara", "S-CARA-1"));
    let mut direct = mac("mac-cara-2", "cara", "S-CARA-2");
    direct.registration = Registration::Direct;
    put(&mut state, direct);
    let mut dan = mac("mac-dan", "dan", "S-DAN");
    dan.last_check_in = T0.plus_hours(-30);
    put(&mut state, dan);
    put(&mut state, mac("mac-erin-1", "erin", "S-ERIN"));
    put(&mut state, mac("mac-erin-2", "erin", "S-ERIN"));
    put(&mut state, mac("mac-gus", "gus", "S-GUS"));
    put(&mut state, mac("mac-hal", "hal", "S-HAL"));
    state
}

#[test]
fn rule11_summary_counts_devices_by_state_and_by_reason() {
    let state = troubled_org();
    let s = summary::summarize(&state, T0);
    assert_eq!(s.devices, 10);
    assert_eq!(s.allowed, 2); // mac-ada, mac-cara-1
    assert_eq!(s.denied, 8);
    let by_state: Vec<_> = s.by_state.iter().map(|(k, v)| (*k, *v)).collect();
    // The unresponsive Mac's old data no longer counts as compliant (rule 5).
    let expected = [(ComplianceState::Compliant, 7), (ComplianceState::Unknown, 1), (ComplianceState::Noncompliant, 2)];
    assert_eq!(by_state, expected);
    let by_reason: Vec<_> = s.by_reason.iter().map(|(k, v)| (*k, *v)).collect();
    assert_eq!(
        by_reason,
        vec![
            (ReasonCode::Compliant, (2, 2)),
            (ReasonCode::LicenceMissing, (1, 1)),
            (ReasonCode::NotRegisteredThroughPartner, (1, 1)),
            (ReasonCode::UserNotTargeted, (1, 1)),
            (ReasonCode::DuplicateRegistration, (2, 1)),
            (ReasonCode::Unresponsive, (1, 1)),
            (ReasonCode::Noncompliant, (2, 2)),
        ]
    );
    // Every device is counted once per distinct reason.
    assert_eq!(summary::summarize(&State::default(), T0), summary::Summary::default());
}

#[test]
fn rule11_a_device_with_the_same_reason_twice_counts_once() {
    let mut state = org(&["ada"]);
    add_policy(&mut state, policy("disk", encryption_required(), 0));
    add_policy(&mut state, policy("fw", PolicySettings { firewall_enabled: Some(true), ..Default::default() }, 0));
    let mut ada = mac("mac-ada", "ada", "S");
    ada.facts.file_vault = Some(FileVault::NotEncrypted);
    ada.facts.firewall_enabled = Some(false);
    put(&mut state, ada);
    assert_eq!(codes(&decide(&state, "mac-ada", T0)), vec![ReasonCode::Noncompliant, ReasonCode::Noncompliant]);
    let s = summary::summarize(&state, T0);
    assert_eq!(s.by_reason.get(&ReasonCode::Noncompliant), Some(&(1, 1)));
}

#[test]
fn rule11_diagnosis_gives_the_troubleshooting_cause_with_a_remediation() {
    let state = troubled_org();
    let lp = PartnerCredential::LeastPrivilege;
    for (device, expected) in [
        ("mac-hal", vec![Cause::LicenceMissing]),
        ("mac-cara-2", vec![Cause::NotRegisteredThroughPartner]),
        ("mac-erin-1", vec![Cause::DuplicateRegistration]),
        ("mac-erin-2", vec![Cause::DuplicateRegistration]),
        ("mac-dan", vec![Cause::Unresponsive]),
        ("mac-ada", vec![]),
    ] {
        let findings = diagnosis::diagnose(&state, device, lp, T0).unwrap().findings;
        assert_eq!(findings.iter().map(|f| f.cause).collect::<Vec<_>>(), expected, "{device}");
        for f in &findings {
            assert!(!f.remediation().is_empty());
            assert!(!f.detail.is_empty());
        }
    }

    let mut disabled = troubled_org();
    let mut c = enabled_connector(&[MAC_USERS], &["contractors"]);
    c.state = ConnectorState::NotConfigured;
    disabled.apply(Change::PutConnector(c));
    assert_eq!(causes(&disabled, "mac-ada", lp, T0), vec![Cause::IntegrationDisabled]);

    // A stale token is also the "unresponsive" cause.
    let mut stale = troubled_org();
    let mut ada = mac("mac-ada", "ada", "S-ADA");
    ada.last_token_renewal = T0.plus_hours(-25);
    put(&mut stale, ada);
    assert_eq!(causes(&stale, "mac-ada", lp, T0), vec![Cause::Unresponsive]);
}

#[test]
fn rule11_every_cause_has_a_code_and_a_remediation() {
    let all = [
        Cause::WrongPartnerPermissions,
        Cause::LicenceMissing,
        Cause::NotRegisteredThroughPartner,
        Cause::IntegrationDisabled,
        Cause::DuplicateRegistration,
        Cause::PolicyTargetsDeviceGroup,
        Cause::Unresponsive,
    ];
    let mut names: Vec<_> = all.iter().map(|c| c.as_str()).collect();
    assert!(all.iter().all(|c| !c.remediation().is_empty()));
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), all.len());
}

#[test]
fn rule12_allow_needs_a_state_that_lets_in_and_no_reason_that_denies() {
    let reason = |code| access::Reason::new(code, "…");
    let compliant = [reason(ReasonCode::Compliant)];
    assert!(access::allows(ComplianceState::Compliant, &compliant));
    assert!(access::allows(ComplianceState::InGracePeriod, &[reason(ReasonCode::InGracePeriod)]));
    // A state that does not let in denies even when no reason does (a state added later, or a
    // gate that forgot its reason).
    for state in [ComplianceState::Unknown, ComplianceState::Error, ComplianceState::NotAssigned] {
        assert!(!access::allows(state, &compliant), "{state:?}");
    }
    // A denying reason denies whatever the state.
    assert!(!access::allows(
        ComplianceState::Compliant,
        &[reason(ReasonCode::Compliant), reason(ReasonCode::Unresponsive)]
    ));
}

#[test]
fn reason_codes_have_distinct_wire_names_and_only_four_do_not_deny() {
    let mut names: Vec<_> = ReasonCode::ALL.iter().map(|c| c.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), ReasonCode::ALL.len());
    let non_denying: Vec<_> = ReasonCode::ALL.iter().copied().filter(|c| !c.denies()).collect();
    assert_eq!(
        non_denying,
        vec![
            ReasonCode::Compliant,
            ReasonCode::InGracePeriod,
            ReasonCode::PolicyTargetsDeviceGroup,
            ReasonCode::PartnerVerdictCompliant
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Rule 3 (licences, cause 3) and unknown users
// ---------------------------------------------------------------------------------------------

#[test]
fn a_user_missing_either_licence_or_unknown_to_the_directory_is_denied() {
    let mut state = org(&["ada"]);
    put(&mut state, mac("mac-ada", "ada", "S"));
    for (dm, premium) in [(false, true), (true, false), (false, false)] {
        state.apply(Change::PutUser(User {
            device_management_licence: dm,
            premium_identity_licence: premium,
            ..licensed_user("ada")
        }));
        let d = decide(&state, "mac-ada", T0);
        assert!(!d.allow);
        assert_eq!(codes(&d), vec![ReasonCode::LicenceMissing], "{dm} {premium}");
    }
    state.apply(Change::DeleteUser("ada".into()));
    let d = decide(&state, "mac-ada", T0);
    assert!(!d.allow);
    assert_eq!(codes(&d), vec![ReasonCode::UserUnknown]);
}

// ---------------------------------------------------------------------------------------------
// Tenant settings: devices with no policy, validity period, the partner's own verdict
// ---------------------------------------------------------------------------------------------

#[test]
fn tenant_no_policy_treatment() {
    let mut state = org(&["ada"]);
    put(&mut state, mac("mac-ada", "ada", "S"));

    // Default: compliant.
    assert_eq!(state.settings().no_policy, NoPolicyTreatment::Compliant);
    let eval = compliance::evaluate(&state, state.device("mac-ada").unwrap(), T0, compliance::Detail::All);
    assert_eq!(eval.cause, StateCause::NoPolicy(NoPolicyTreatment::Compliant));
    let d = decide(&state, "mac-ada", T0);
    assert!(d.allow);
    assert_eq!(d.state, ComplianceState::Compliant);
    assert_eq!(codes(&d), vec![ReasonCode::Compliant]);

    state.apply(Change::PutSettings(TenantSettings { no_policy: NoPolicyTreatment::Noncompliant, validity_days: 30 }));
    let eval = compliance::evaluate(&state, state.device("mac-ada").unwrap(), T0, compliance::Detail::All);
    assert_eq!(eval.cause, StateCause::NoPolicy(NoPolicyTreatment::Noncompliant));
    let d = decide(&state, "mac-ada", T0);
    assert!(!d.allow);
    assert_eq!(d.state, ComplianceState::Noncompliant);
    assert_eq!(codes(&d), vec![ReasonCode::NoPolicy]);

    // Once a policy applies, the tenant setting no longer decides.
    add_policy(&mut state, policy("disk", encryption_required(), 0));
    let d = decide(&state, "mac-ada", T0);
    assert!(d.allow);
    assert_eq!(codes(&d), vec![ReasonCode::Compliant]);
}

#[test]
fn tenant_validity_period_is_30_days_unless_set() {
    let mut state = org(&["ada"]);
    let mut ada = mac("mac-ada", "ada", "S");
    ada.last_check_in = T0.plus_days(-30).plus_secs(1);
    put(&mut state, ada.clone());
    assert!(!codes(&decide(&state, "mac-ada", T0)).contains(&ReasonCode::ValidityExpired));
    ada.last_check_in = T0.plus_days(-30);
    state.apply(Change::PutDevice(ada));
    assert!(codes(&decide(&state, "mac-ada", T0)).contains(&ReasonCode::ValidityExpired));
}

#[test]
fn tenant_validity_period_expires_a_device_that_has_not_reported() {
    let mut state = org(&["ada"]);
    state.apply(Change::PutSettings(TenantSettings { validity_days: 1, ..Default::default() }));
    let mut ada = mac("mac-ada", "ada", "S");
    let reported = T0.plus_hours(-25);
    ada.last_check_in = reported;
    put(&mut state, ada);
    let eval = compliance::evaluate(&state, state.device("mac-ada").unwrap(), T0, compliance::Detail::All);
    assert_eq!(eval.state, ComplianceState::Noncompliant);
    assert_eq!(eval.cause, StateCause::ValidityExpired { reported_at: reported, valid_until: reported.plus_days(1) });
    let d = decide(&state, "mac-ada", T0);
    assert!(!d.allow);
    assert_eq!(d.state, ComplianceState::Noncompliant);
    assert_eq!(codes(&d), vec![ReasonCode::Unresponsive, ReasonCode::ValidityExpired]);

    // Exactly at the boundary it has expired; a second before, it has not.
    let at = reported.plus_days(1);
    let eval =
        compliance::evaluate(&state, state.device("mac-ada").unwrap(), at.plus_secs(-1), compliance::Detail::All);
    assert_eq!(eval.state, ComplianceState::Compliant);
    assert_eq!(eval.next_change, Some(at));
    let eval = compliance::evaluate(&state, state.device("mac-ada").unwrap(), at, compliance::Detail::All);
    assert!(matches!(eval.cause, StateCause::ValidityExpired { .. }));
}

/// ada's Mac fails an assigned policy, but the partner reports its own verdict.
fn verdict_org(compliant: bool, decided_at: Timestamp) -> State {
    let mut state = org(&["ada"]);
    add_policy(&mut state, policy("disk", encryption_required(), 0));
    let mut ada = mac("mac-ada", "ada", "S");
    ada.facts.file_vault = Some(FileVault::NotEncrypted);
    ada.partner_verdict = Some(PartnerVerdict { compliant, decided_at });
    put(&mut state, ada);
    state
}

#[test]
fn tenant_partner_verdict_mode_skips_policies() {
    let state = verdict_org(true, T0.plus_hours(-1));
    let eval = compliance::evaluate(&state, state.device("mac-ada").unwrap(), T0, compliance::Detail::All);
    assert!(eval.policies.is_empty());
    assert_eq!(eval.cause, StateCause::PartnerVerdict { compliant: true, decided_at: T0.plus_hours(-1) });
    assert_eq!(eval.state, ComplianceState::Compliant);
    let d = decide(&state, "mac-ada", T0);
    assert!(d.allow);
    // The reason says that the partner decided, not that the Mac meets every policy.
    assert_eq!(codes(&d), vec![ReasonCode::PartnerVerdictCompliant]);
    assert!(d.reasons[0].message.contains("the partner decided"), "{}", d.reasons[0].message);

    let state = verdict_org(false, T0.plus_hours(-1));
    let d = decide(&state, "mac-ada", T0);
    assert!(!d.allow);
    assert_eq!(d.state, ComplianceState::Noncompliant);
    assert_eq!(codes(&d), vec![ReasonCode::PartnerVerdictNoncompliant]);
}

#[test]
fn rule12_a_partner_verdict_is_trusted_for_24_hours_from_its_own_time() {
    // A fresh check-in does not make an old verdict fresh: 25 hours old, the verdict is stale.
    let state = verdict_org(true, T0.plus_hours(-25));
    let d = decide(&state, "mac-ada", T0);
    assert!(!d.allow);
    assert_eq!(d.state, ComplianceState::Unknown);
    assert_eq!(codes(&d), vec![ReasonCode::PartnerVerdictStale]);
    // One second short of 24 hours it holds, until exactly then.
    let decided = T0.plus_secs(-24 * H + 1);
    let state = verdict_org(true, decided);
    let d = decide(&state, "mac-ada", T0);
    assert!(d.allow);
    assert_eq!(d.valid_until, Some(decided.plus_hours(24)));
    assert_eq!(codes(&decide(&state, "mac-ada", decided.plus_hours(24))), vec![ReasonCode::PartnerVerdictStale]);
}

#[test]
fn tenant_partner_verdict_validity_runs_from_the_decision_time() {
    let validity = TenantSettings { validity_days: 1, ..Default::default() };
    // The Mac checked in ten minutes ago; the verdict is exactly a day old: expired (and stale).
    let decided = T0.plus_days(-1);
    let mut state = verdict_org(true, decided);
    state.apply(Change::PutSettings(validity));
    let eval = compliance::evaluate(&state, state.device("mac-ada").unwrap(), T0, compliance::Detail::All);
    assert_eq!(eval.cause, StateCause::ValidityExpired { reported_at: decided, valid_until: T0 });
    let d = decide(&state, "mac-ada", T0);
    assert!(!d.allow);
    assert_eq!(codes(&d), vec![ReasonCode::PartnerVerdictStale, ReasonCode::ValidityExpired]);
}

// OS versions and builds in policies, and every other setting: tests/data/settings.toml.

// ---------------------------------------------------------------------------------------------
// The decision for another user
// ---------------------------------------------------------------------------------------------

#[test]
fn for_user_denies_another_user_first_whatever_the_device_decision() {
    let mut state = org(&["ada", "bob"]);
    add_policy(&mut state, policy("disk", encryption_required(), 48));
    put(&mut state, mac("mac-allowed", "ada", "S1"));
    let mut grace = mac("mac-grace", "ada", "S2");
    grace.facts.file_vault = Some(FileVault::NotEncrypted);
    put(&mut state, grace);
    let mut denied = mac("mac-denied", "ada", "S3");
    denied.registration = Registration::Direct;
    put(&mut state, denied);

    for device in ["mac-allowed", "mac-grace", "mac-denied"] {
        let decision = decide(&state, device, T0);
        // The primary user gets the device decision unchanged.
        let own = access::for_user(&decision, "ada");
        assert_eq!(own.allow, decision.allow, "{device}");
        assert_eq!(own.reasons, &decision.reasons[..]);
        assert_eq!(own.state, decision.state);
        assert_eq!(own.valid_until, decision.valid_until);

        for other in ["bob", "", "ADA", "ada ", "stranger"] {
            let d = access::for_user(&decision, other);
            assert!(!d.allow, "{device} for {other:?}");
            assert_eq!(d.reasons[0].code, ReasonCode::DeviceRegisteredToAnotherUser, "{device} for {other:?}");
            assert!(d.reasons[0].message.contains(device), "{}", d.reasons[0].message);
            let denials: Vec<_> = decision.reasons.iter().filter(|r| r.code.denies()).cloned().collect();
            assert_eq!(d.reasons[1..], denials[..], "{device}: the device's own deny reasons follow, no COMPLIANT");
            assert_eq!(d.state, decision.state);
            assert_eq!(d.valid_until, decision.valid_until);
        }
    }

    // An unknown device has no primary user: denied as unknown, not as someone else's.
    let unknown = decide(&state, "mac-none", T0);
    let d = access::for_user(&unknown, "bob");
    assert!(!d.allow);
    assert_eq!(d.reasons.iter().map(|r| r.code).collect::<Vec<_>>(), vec![ReasonCode::DeviceUnknown]);
}

proptest::proptest! {
    /// The short answer (CheckAccess, Envoy's) over any list of reasons and any caller: each
    /// code once, in the order codes first appear, standing for every reason with that code;
    /// a DENY names only what denies, and at least one thing; the decision itself unchanged.
    #[test]
    fn the_short_answer_names_each_code_once_and_a_denial_only_what_denies(
        listed in proptest::collection::vec((0..ReasonCode::ALL.len(), 0..3usize), 0..12),
        another_user in proptest::bool::ANY,
    ) {
        let reasons: Vec<_> = listed
            .iter()
            .map(|&(code, m)| access::Reason::new(ReasonCode::ALL[code], format!("message {m}")))
            .collect();
        let allow = !reasons.is_empty() && reasons.iter().all(|r| !r.code.denies());
        let decision = DeviceDecision {
            device_id: "mac".into(),
            primary_user_id: Some("ada".into()),
            allow,
            state: ComplianceState::Compliant,
            reasons: reasons.into(),
            valid_until: None,
        };
        let seen = access::seen_by(&decision, if another_user { "bob" } else { "ada" });
        let full = access::for_user(&decision, if another_user { "bob" } else { "ada" });
        proptest::prop_assert_eq!(seen.allow, full.allow);
        let answered: Vec<_> = full.reasons.iter().filter(|r| full.allow || r.code.denies()).collect();
        let mut codes: Vec<ReasonCode> = Vec::new();
        for r in &answered {
            if !codes.contains(&r.code) {
                codes.push(r.code);
            }
        }
        let brief: Vec<_> = seen.brief().collect();
        proptest::prop_assert_eq!(brief.iter().map(|b| b.reason.code).collect::<Vec<_>>(), codes);
        for b in &brief {
            let first = answered.iter().find(|r| r.code == b.reason.code).unwrap();
            proptest::prop_assert_eq!(&b.reason.message, &first.message);
            let with_code = answered.iter().filter(|r| r.code == b.reason.code).count();
            proptest::prop_assert_eq!(b.more + 1, with_code);
            proptest::prop_assert_eq!(b.message().ends_with(&format!(" (and {} more)", b.more)), b.more > 0);
        }
        if !seen.allow {
            proptest::prop_assert!(brief.iter().all(|b| b.reason.code.denies()));
            let any_denies = another_user || decision.reasons.iter().any(|r| r.code.denies());
            proptest::prop_assert_eq!(!brief.is_empty(), any_denies);
        }
    }
}

#[test]
fn rule4_a_grace_period_does_not_excuse_an_unreported_setting() {
    // Regression: failing one more setting must never turn a deny into an allow. A policy
    // with an unreported (error) setting denies; adding a failing setting within the grace
    // period used to make the whole policy "in grace period" and let the Mac in.
    let mut state = org(&["ada"]);
    let settings =
        PolicySettings { storage_encryption_required: Some(true), firewall_enabled: Some(true), ..Default::default() };
    add_policy(&mut state, policy("p", settings, 48));
    let mut ada = mac("mac-ada", "ada", "S");
    ada.facts.file_vault = None;
    put(&mut state, ada.clone());
    let d = decide(&state, "mac-ada", T0);
    assert!(!d.allow);
    assert_eq!((d.state, codes(&d)), (ComplianceState::Error, vec![ReasonCode::ComplianceError]));

    ada.facts.firewall_enabled = Some(false);
    put(&mut state, ada.clone());
    let eval = compliance::evaluate(&state, state.device("mac-ada").unwrap(), T0, compliance::Detail::All);
    assert_eq!(eval.policies[0].state, ComplianceState::Error);
    assert_eq!(eval.grace_period_ends, None);
    let d = decide(&state, "mac-ada", T0);
    assert!(!d.allow, "{:?}", d.reasons);
    assert_eq!((d.state, codes(&d)), (ComplianceState::Error, vec![ReasonCode::ComplianceError]));
    assert!(d.reasons[0].message.contains("firewall_enabled"), "{}", d.reasons[0].message);
    assert!(d.reasons[0].message.contains("storage_encryption"), "{}", d.reasons[0].message);

    // Once the grace period is over the failure itself is the most severe result.
    let ends = T0.plus_secs(-600).plus_hours(48);
    assert_eq!(eval.policies[0].grace_period_ends, Some(ends));
    let after = compliance::evaluate(&state, state.device("mac-ada").unwrap(), ends, compliance::Detail::All);
    assert_eq!((after.state, after.policies[0].state), (ComplianceState::Noncompliant, ComplianceState::Noncompliant));
    let fresh_until = eval.freshness.next_change.expect("fresh for a while");
    assert_eq!(eval.next_change, Some(ends.min(fresh_until)), "the evaluation changes when the grace period ends");

    // With the encryption state reported and met, the failing firewall is simply in grace.
    ada.facts.file_vault = Some(FileVault::AllEncrypted);
    put(&mut state, ada);
    let d = decide(&state, "mac-ada", T0);
    assert!(d.allow);
    assert_eq!((d.state, codes(&d)), (ComplianceState::InGracePeriod, vec![ReasonCode::InGracePeriod]));
}
