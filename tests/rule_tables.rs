//! The domain rules that read best as tables: every policy setting against what the partner
//! reported (`tests/data/settings.toml`), and the freshness boundaries
//! (`tests/data/freshness.toml`). Each row is one case; a failure names its row.
#![allow(clippy::unwrap_used)]

mod common;

use common::domain::healthy_mac;
use posture::domain::access::{self, ReasonCode};
use posture::domain::compliance::{self, ComplianceState};
use posture::domain::model::{
    Connector, ConnectorState, Device, FileVault, Gatekeeper, Group, GroupKind, PartnerVerdict, PasswordType,
    PolicySettings, Sip, ThreatLevel, User,
};
use posture::domain::{Change, State, Timestamp};
use serde::Deserialize;

const T0: Timestamp = Timestamp(1_799_985_600);

#[derive(Debug, Deserialize)]
struct Table<C> {
    case: Vec<C>,
}

fn read<C: serde::de::DeserializeOwned>(file: &str) -> Vec<C> {
    let path = format!("{}/tests/data/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    toml::from_str::<Table<C>>(&text).unwrap_or_else(|e| panic!("{path}: {e}")).case
}

// ---------------------------------------------------------------------------------------------
// Settings

#[derive(Debug, Deserialize)]
struct SettingCase {
    setting: String,
    requires: String,
    reported: Option<String>,
    expect: String,
    actual: Option<String>,
}

fn yes(s: &str) -> bool {
    match s {
        "true" => true,
        "false" => false,
        other => panic!("not a yes/no: {other}"),
    }
}

fn number(s: &str) -> u32 {
    s.parse().unwrap()
}

fn gatekeeper(s: &str) -> Gatekeeper {
    match s {
        "disabled" | "anywhere" => Gatekeeper::Disabled,
        "identified_developers" => Gatekeeper::AppStoreAndIdentifiedDevelopers,
        "app_store" => Gatekeeper::AppStore,
        other => panic!("not a Gatekeeper setting: {other}"),
    }
}

fn password_type(s: &str) -> PasswordType {
    match s {
        "device_default" => PasswordType::DeviceDefault,
        "alphanumeric" => PasswordType::Alphanumeric,
        "numeric" => PasswordType::Numeric,
        other => panic!("not a password type: {other}"),
    }
}

fn threat(s: &str) -> ThreatLevel {
    match s {
        "secured" => ThreatLevel::Secured,
        "low" => ThreatLevel::Low,
        "medium" => ThreatLevel::Medium,
        "high" => ThreatLevel::High,
        other => panic!("not a threat level: {other}"),
    }
}

/// The policy that configures only `case.setting`, and a healthy Mac reporting `case.reported`
/// for it (or nothing).
fn setting_case(case: &SettingCase) -> (PolicySettings, Device) {
    let mut s = PolicySettings::default();
    let mut d = healthy_mac("mac", "ada", "S", T0);
    let (req, rep) = (case.requires.as_str(), case.reported.as_deref());
    let facts = &mut d.facts;
    let pw = &mut facts.password;
    match case.setting.as_str() {
        "os_minimum_version" => {
            s.os_minimum_version = Some(req.parse().unwrap());
            d.os_version = rep.unwrap().parse().unwrap();
        }
        "os_maximum_version" => {
            s.os_maximum_version = Some(req.parse().unwrap());
            d.os_version = rep.unwrap().parse().unwrap();
        }
        "os_minimum_build" => {
            s.os_minimum_build = Some(req.parse().unwrap());
            d.os_build = rep.map(|b| b.parse().unwrap());
        }
        "os_maximum_build" => {
            s.os_maximum_build = Some(req.parse().unwrap());
            d.os_build = rep.map(|b| b.parse().unwrap());
        }
        "system_integrity_protection" => {
            s.system_integrity_protection_required = Some(yes(req));
            facts.system_integrity_protection = rep.map(|v| match v {
                "enabled" => Sip::Enabled,
                "disabled" => Sip::Disabled,
                "not_collected" => Sip::NotCollected,
                other => panic!("not a SIP state: {other}"),
            });
        }
        "storage_encryption" => {
            s.storage_encryption_required = Some(yes(req));
            facts.file_vault = rep.map(|v| match v {
                "not_applicable" => FileVault::NotApplicable,
                "not_encrypted" => FileVault::NotEncrypted,
                "boot_volume_only" => FileVault::BootVolumeOnly,
                "some_encrypted" => FileVault::SomeEncrypted,
                "all_encrypted" => FileVault::AllEncrypted,
                other => panic!("not a FileVault state: {other}"),
            });
        }
        "firewall_enabled" => (s.firewall_enabled, facts.firewall_enabled) = (Some(yes(req)), rep.map(yes)),
        "firewall_block_all_incoming" => {
            (s.firewall_block_all_incoming, facts.firewall_block_all_incoming) = (Some(yes(req)), rep.map(yes))
        }
        "firewall_stealth_mode" => {
            (s.firewall_stealth_mode, facts.firewall_stealth_mode) = (Some(yes(req)), rep.map(yes))
        }
        "gatekeeper" => (s.gatekeeper_minimum, facts.gatekeeper) = (Some(gatekeeper(req)), rep.map(gatekeeper)),
        "password_required" => (s.password.required, pw.required) = (Some(yes(req)), rep.map(yes)),
        "password_block_simple" => (s.password.block_simple, pw.simple_blocked) = (Some(yes(req)), rep.map(yes)),
        "password_minimum_length" => (s.password.min_length, pw.min_length) = (Some(number(req)), rep.map(number)),
        "password_type" => (s.password.kind, pw.kind) = (Some(password_type(req)), rep.map(password_type)),
        "password_minimum_character_sets" => {
            (s.password.min_character_sets, pw.min_character_sets) = (Some(number(req)), rep.map(number))
        }
        "password_minutes_of_inactivity_before_lock" => {
            (s.password.max_minutes_of_inactivity_before_lock, pw.minutes_of_inactivity_before_lock) =
                (Some(number(req)), rep.map(number))
        }
        "password_expiry_days" => (s.password.max_expiry_days, pw.expiry_days) = (Some(number(req)), rep.map(number)),
        "password_previous_passwords_blocked" => {
            (s.password.min_previous_passwords_blocked, pw.previous_passwords_blocked) =
                (Some(number(req)), rep.map(number))
        }
        "device_threat_level" => (s.max_threat_level, facts.threat_level) = (Some(threat(req)), rep.map(threat)),
        other => panic!("no such setting in the table's reader: {other}"),
    }
    (s, d)
}

#[test]
fn every_setting_against_what_the_partner_reported() {
    let cases: Vec<SettingCase> = read("settings.toml");
    let mut seen = std::collections::BTreeSet::new();
    for case in &cases {
        let (settings, device) = setting_case(case);
        let results = compliance::check_settings(&settings, &device);
        if case.expect == "not evaluated" {
            assert!(results.is_empty(), "{case:?}: {results:?}");
            continue;
        }
        assert_eq!(results.len(), 1, "{case:?}: {results:?}");
        let r = &results[0];
        let expected = match case.expect.as_str() {
            "COMPLIANT" => ComplianceState::Compliant,
            "NONCOMPLIANT" => ComplianceState::Noncompliant,
            "ERROR" => ComplianceState::Error,
            other => panic!("not an expected result: {other}"),
        };
        assert_eq!((r.setting, r.state), (case.setting.as_str(), expected), "{case:?}");
        if let Some(actual) = &case.actual {
            assert_eq!(&r.actual, actual, "{case:?}");
        }
        seen.insert(r.setting);
    }
    // The table covers every setting a policy can configure.
    let everything = posture_everything();
    let all: std::collections::BTreeSet<&str> =
        compliance::check_settings(&everything, &healthy_mac("mac", "ada", "S", T0))
            .iter()
            .map(|r| r.setting)
            .collect();
    assert_eq!(seen, all);
}

/// A policy configuring every setting.
fn posture_everything() -> PolicySettings {
    PolicySettings {
        os_minimum_version: Some("10.0".parse().unwrap()),
        os_maximum_version: Some("99.0".parse().unwrap()),
        os_minimum_build: Some("1A1".parse().unwrap()),
        os_maximum_build: Some("99Z999".parse().unwrap()),
        system_integrity_protection_required: Some(true),
        storage_encryption_required: Some(true),
        firewall_enabled: Some(true),
        firewall_block_all_incoming: Some(true),
        firewall_stealth_mode: Some(true),
        gatekeeper_minimum: Some(Gatekeeper::Disabled),
        password: posture::domain::model::PasswordRules {
            required: Some(true),
            block_simple: Some(true),
            min_length: Some(4),
            kind: Some(PasswordType::Alphanumeric),
            min_character_sets: Some(1),
            max_minutes_of_inactivity_before_lock: Some(60),
            max_expiry_days: Some(365),
            min_previous_passwords_blocked: Some(1),
        },
        max_threat_level: Some(ThreatLevel::High),
    }
}

// ---------------------------------------------------------------------------------------------
// Freshness

#[derive(Debug, Deserialize)]
struct FreshnessCase {
    /// Seconds before now of each timestamp the partner reported (absent: not reported).
    check_in_ago: i64,
    token_ago: i64,
    refresh_token_ago: Option<i64>,
    verdict_ago: Option<i64>,
    /// The reason codes the decision has, in order.
    reasons: Vec<String>,
}

/// An enabled connector targeting Ada, and her Mac as the case reports it.
fn freshness_state(case: &FreshnessCase) -> State {
    let mut state = State::default();
    state.apply(Change::PutUser(User {
        id: "ada".into(),
        user_principal_name: "ada@example.com".into(),
        device_management_licence: true,
        premium_identity_licence: true,
    }));
    state.apply(Change::PutGroup(Group {
        id: "g".into(),
        name: "g".into(),
        kind: GroupKind::User,
        members: vec!["ada".into()],
    }));
    state.apply(Change::PutConnector(Connector {
        state: ConnectorState::Enabled,
        partner_app_id: "jamf".into(),
        include_group_ids: vec!["g".into()],
        ..Default::default()
    }));
    let mut d = healthy_mac("mac", "ada", "S", T0);
    d.last_check_in = T0.plus_secs(-case.check_in_ago);
    d.last_token_renewal = T0.plus_secs(-case.token_ago);
    d.refresh_token_issued = case.refresh_token_ago.map(|a| T0.plus_secs(-a));
    d.partner_verdict = case.verdict_ago.map(|a| PartnerVerdict { compliant: true, decided_at: T0.plus_secs(-a) });
    state.apply(Change::PutDevice(d));
    state
}

#[test]
fn freshness_boundaries() {
    for case in read::<FreshnessCase>("freshness.toml") {
        let d = access::decide(&freshness_state(&case), "mac", T0);
        let codes: Vec<&str> = d.reasons.iter().map(|r| r.code.as_str()).collect();
        assert_eq!(codes, case.reasons, "{case:?}");
        assert_eq!(d.allow, d.reasons.iter().all(|r| !r.code.denies()), "{case:?}");
        if !d.allow {
            assert_ne!(d.reasons[0].code, ReasonCode::Compliant);
        }
    }
}
