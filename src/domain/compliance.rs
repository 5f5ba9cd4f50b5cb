//! Compliance evaluation: every policy that applies to a device's user, every configured
//! setting, the most severe result wins, grace periods and the validity period.

use super::model::{
    Device, FileVault, GroupKind, NoPolicyTreatment, PasswordType, Policy, PolicySettings, Sip, Timestamp,
};
use super::state::State;

/// Result of one setting or policy, and the device's overall state. Ordered by severity:
/// with several results, the most severe (the greatest) wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ComplianceState {
    NotAssigned,
    NotApplicable,
    Compliant,
    Remediated,
    /// Noncompliant, but the policy's grace period has not ended: still allowed in.
    InGracePeriod,
    Unknown,
    Conflict,
    Error,
    Noncompliant,
}

impl ComplianceState {
    pub fn allows_access(self) -> bool {
        matches!(self, ComplianceState::Compliant | ComplianceState::Remediated | ComplianceState::InGracePeriod)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            ComplianceState::NotAssigned => "not assigned",
            ComplianceState::NotApplicable => "not applicable",
            ComplianceState::Compliant => "compliant",
            ComplianceState::Remediated => "remediated",
            ComplianceState::InGracePeriod => "in grace period",
            ComplianceState::Unknown => "unknown",
            ComplianceState::Conflict => "conflict",
            ComplianceState::Error => "error",
            ComplianceState::Noncompliant => "noncompliant",
        }
    }
}

/// One configured setting checked against the device's facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingResult {
    /// Stable name of the setting, e.g. `os_minimum_version`.
    pub setting: &'static str,
    pub expected: String,
    pub actual: String,
    pub state: ComplianceState,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyResult {
    pub policy_id: String,
    pub policy_name: String,
    pub state: ComplianceState,
    pub settings: Vec<SettingResult>,
    /// Set when the policy fails: when its grace period ends (ended, if in the past).
    pub grace_period_ends: Option<Timestamp>,
}

/// Why a device's compliance state is what it is, beyond its policy results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateCause {
    /// Policies were evaluated against the reported inventory.
    Policies,
    /// No policy applies; the tenant setting decided.
    NoPolicy(NoPolicyTreatment),
    /// The partner decided compliance itself (the 2024 mode).
    PartnerVerdict(bool),
    /// Nothing reported within the validity period.
    ValidityExpired { reported_at: Timestamp, valid_until: Timestamp },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    pub state: ComplianceState,
    pub cause: StateCause,
    pub policies: Vec<PolicyResult>,
    /// The earliest grace period end still in the future, if the device is in grace.
    pub grace_period_ends: Option<Timestamp>,
    /// Policies assigned to device groups this device is in: they do not evaluate it.
    pub device_group_policies: Vec<(String, String)>,
    /// The next instant at which time alone changes this evaluation.
    pub next_change: Option<Timestamp>,
}

/// Does `policy_id`'s assignment reach `user_id`? Exclude wins; only user groups count.
pub fn policy_applies(state: &State, policy_id: &str, user_id: &str) -> bool {
    let Some(a) = state.assignment(policy_id) else { return false };
    let groups = state.groups_of(user_id);
    let is_user_group = |g: &String| state.group(g).is_some_and(|g| g.kind == GroupKind::User);
    let member = |ids: &[String]| ids.iter().any(|id| groups.contains(id) && is_user_group(id));
    member(&a.include_group_ids) && !member(&a.exclude_group_ids)
}

/// Policies that apply to the user of `device`.
pub fn applicable_policies<'s>(state: &'s State, user_id: &str) -> impl Iterator<Item = &'s Policy> {
    let user_id = user_id.to_string();
    state.policies().filter(move |p| policy_applies(state, &p.id, &user_id))
}

/// Evaluates a device at `now`.
pub fn evaluate(state: &State, device: &Device, now: Timestamp) -> Evaluation {
    let device_group_policies = device_group_policies(state, device);
    let settings = state.settings();
    let reported_at = match device.partner_verdict {
        Some(v) => v.decided_at,
        None => device.last_check_in,
    };
    let valid_until = reported_at.plus_days(i64::from(settings.validity_days));
    if now >= valid_until {
        return Evaluation {
            state: ComplianceState::Noncompliant,
            cause: StateCause::ValidityExpired { reported_at, valid_until },
            policies: Vec::new(),
            grace_period_ends: None,
            device_group_policies,
            next_change: None,
        };
    }
    if let Some(v) = device.partner_verdict {
        let state = if v.compliant { ComplianceState::Compliant } else { ComplianceState::Noncompliant };
        return Evaluation {
            state,
            cause: StateCause::PartnerVerdict(v.compliant),
            policies: Vec::new(),
            grace_period_ends: None,
            device_group_policies,
            next_change: Some(valid_until),
        };
    }
    let mut next_change = Some(valid_until);
    let mut grace_period_ends: Option<Timestamp> = None;
    let policies: Vec<PolicyResult> = applicable_policies(state, &device.user_id)
        .map(|p| {
            let settings = check_settings(&p.settings, device);
            let worst = settings.iter().map(|s| s.state).max().unwrap_or(ComplianceState::Compliant);
            let mut result = PolicyResult {
                policy_id: p.id.clone(),
                policy_name: p.name.clone(),
                state: worst.max(ComplianceState::Compliant),
                settings,
                grace_period_ends: None,
            };
            if worst == ComplianceState::Noncompliant {
                let since = noncompliant_since_for(device, p);
                let ends = since.plus_hours(i64::from(p.grace_period_hours));
                result.grace_period_ends = Some(ends);
                if now < ends {
                    // Grace covers the failing settings only: an unreported (error) setting
                    // still denies, as it would if no setting failed.
                    let others =
                        result.settings.iter().map(|s| s.state).filter(|s| *s != ComplianceState::Noncompliant);
                    result.state =
                        others.max().unwrap_or(ComplianceState::Compliant).max(ComplianceState::InGracePeriod);
                    next_change = min_opt(next_change, Some(ends));
                    grace_period_ends = min_opt(grace_period_ends, Some(ends));
                }
            }
            result
        })
        .collect();
    if policies.is_empty() {
        let state = match settings.no_policy {
            NoPolicyTreatment::Compliant => ComplianceState::Compliant,
            NoPolicyTreatment::Noncompliant => ComplianceState::Noncompliant,
        };
        return Evaluation {
            state,
            cause: StateCause::NoPolicy(settings.no_policy),
            policies,
            grace_period_ends: None,
            device_group_policies,
            next_change,
        };
    }
    let state = policies.iter().map(|p| p.state).max().unwrap_or(ComplianceState::Compliant);
    Evaluation {
        state,
        cause: StateCause::Policies,
        grace_period_ends: if state == ComplianceState::InGracePeriod { grace_period_ends } else { None },
        policies,
        device_group_policies,
        next_change,
    }
}

/// When the grace period of `policy` started for `device`: the first failing check-in, but
/// never before the policy last changed (a changed policy starts a fresh grace period).
fn noncompliant_since_for(device: &Device, policy: &Policy) -> Timestamp {
    device.noncompliant_since.unwrap_or(device.last_check_in).max(policy.updated_at)
}

/// The `noncompliant_since` to store with a newly reported `device` (whose previous record
/// was `previous`): kept while it keeps failing, set at this check-in when it starts
/// failing, cleared once it meets every policy.
pub fn noncompliant_since(state: &State, previous: Option<&Device>, device: &Device) -> Option<Timestamp> {
    if device.partner_verdict.is_some() {
        return None;
    }
    let failing = applicable_policies(state, &device.user_id)
        .any(|p| check_settings(&p.settings, device).iter().any(|s| s.state == ComplianceState::Noncompliant));
    if !failing {
        return None;
    }
    Some(previous.and_then(|p| p.noncompliant_since).unwrap_or(device.last_check_in))
}

fn device_group_policies(state: &State, device: &Device) -> Vec<(String, String)> {
    let groups = state.groups_of(&device.id);
    if groups.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for p in state.policies() {
        let Some(a) = state.assignment(&p.id) else { continue };
        for g in a.include_group_ids.iter().filter(|g| groups.contains(g)) {
            if state.group(g).is_some_and(|g| g.kind == GroupKind::Device) {
                out.push((p.id.clone(), g.clone()));
            }
        }
    }
    out
}

fn min_opt(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

const NOT_REPORTED: &str = "not reported";

fn result(setting: &'static str, expected: String, actual: Option<String>, ok: Option<bool>) -> SettingResult {
    let (actual, state) = match (actual, ok) {
        (Some(a), Some(true)) => (a, ComplianceState::Compliant),
        (Some(a), Some(false)) => (a, ComplianceState::Noncompliant),
        // A configured setting the partner did not report cannot be judged: an error, which denies.
        _ => (NOT_REPORTED.to_string(), ComplianceState::Error),
    };
    SettingResult { setting, expected, actual, state }
}

/// Checks each configured setting; a setting that is not configured is not evaluated.
pub fn check_settings(s: &PolicySettings, d: &Device) -> Vec<SettingResult> {
    let f = &d.facts;
    let pw = &f.password;
    let mut out = Vec::new();
    let os = d.os_version.to_string();
    if let Some(min) = &s.os_minimum_version {
        out.push(result("os_minimum_version", format!(">= {min}"), Some(os.clone()), Some(d.os_version >= *min)));
    }
    if let Some(max) = &s.os_maximum_version {
        out.push(result("os_maximum_version", format!("<= {max}"), Some(os), Some(d.os_version <= *max)));
    }
    if let Some(min) = &s.os_minimum_build {
        let ok = d.os_build.as_ref().map(|b| b >= min);
        out.push(result("os_minimum_build", format!(">= {min}"), d.os_build.as_ref().map(|b| b.to_string()), ok));
    }
    if let Some(max) = &s.os_maximum_build {
        let ok = d.os_build.as_ref().map(|b| b <= max);
        out.push(result("os_maximum_build", format!("<= {max}"), d.os_build.as_ref().map(|b| b.to_string()), ok));
    }
    if s.system_integrity_protection_required == Some(true) {
        let actual = f.system_integrity_protection.filter(|s| *s != Sip::NotCollected);
        let ok = actual.map(|s| s == Sip::Enabled);
        out.push(result(
            "system_integrity_protection",
            "enabled".into(),
            actual.map(|s| format!("{s:?}").to_lowercase()),
            ok,
        ));
    }
    if s.storage_encryption_required == Some(true) {
        let ok = f.file_vault.map(|v| v == FileVault::AllEncrypted);
        out.push(result("storage_encryption", "all volumes encrypted".into(), f.file_vault.map(file_vault_str), ok));
    }
    bool_setting(&mut out, "firewall_enabled", s.firewall_enabled, f.firewall_enabled);
    bool_setting(&mut out, "firewall_block_all_incoming", s.firewall_block_all_incoming, f.firewall_block_all_incoming);
    bool_setting(&mut out, "firewall_stealth_mode", s.firewall_stealth_mode, f.firewall_stealth_mode);
    if let Some(min) = s.gatekeeper_minimum {
        let ok = f.gatekeeper.map(|g| g >= min);
        out.push(result(
            "gatekeeper",
            format!("at least {}", gatekeeper_str(min)),
            f.gatekeeper.map(gatekeeper_str),
            ok,
        ));
    }
    let p = &s.password;
    bool_setting(&mut out, "password_required", p.required, pw.required);
    bool_setting(&mut out, "password_block_simple", p.block_simple, pw.simple_blocked);
    if let Some(min) = p.min_length {
        out.push(result(
            "password_minimum_length",
            format!(">= {min}"),
            pw.min_length.map(|v| v.to_string()),
            pw.min_length.map(|v| v >= min),
        ));
    }
    if let Some(kind) = p.kind.filter(|k| *k != PasswordType::DeviceDefault) {
        let ok = pw.kind.map(|k| k == kind);
        out.push(result(
            "password_type",
            format!("{kind:?}").to_lowercase(),
            pw.kind.map(|k| format!("{k:?}").to_lowercase()),
            ok,
        ));
    }
    if let Some(min) = p.min_character_sets {
        let a = pw.min_character_sets;
        out.push(result(
            "password_minimum_character_sets",
            format!(">= {min}"),
            a.map(|v| v.to_string()),
            a.map(|v| v >= min),
        ));
    }
    if let Some(max) = p.max_minutes_of_inactivity_before_lock {
        let a = pw.minutes_of_inactivity_before_lock;
        out.push(result(
            "password_minutes_of_inactivity_before_lock",
            format!("<= {max}"),
            a.map(|v| v.to_string()),
            a.map(|v| v <= max),
        ));
    }
    if let Some(max) = p.max_expiry_days {
        let a = pw.expiry_days;
        // A password that never expires (0) does not meet an expiry rule.
        out.push(result(
            "password_expiry_days",
            format!("<= {max}"),
            a.map(|v| v.to_string()),
            a.map(|v| v > 0 && v <= max),
        ));
    }
    if let Some(min) = p.min_previous_passwords_blocked {
        let a = pw.previous_passwords_blocked;
        out.push(result(
            "password_previous_passwords_blocked",
            format!(">= {min}"),
            a.map(|v| v.to_string()),
            a.map(|v| v >= min),
        ));
    }
    if let Some(max) = s.max_threat_level {
        let a = f.threat_level;
        out.push(result(
            "device_threat_level",
            format!("at most {}", format!("{max:?}").to_lowercase()),
            a.map(|t| format!("{t:?}").to_lowercase()),
            a.map(|t| t <= max),
        ));
    }
    out
}

fn bool_setting(out: &mut Vec<SettingResult>, name: &'static str, required: Option<bool>, actual: Option<bool>) {
    // Only "required: true" is a requirement; "false" means not configured.
    if required == Some(true) {
        out.push(result(name, "true".into(), actual.map(|a| a.to_string()), actual));
    }
}

pub fn file_vault_str(v: FileVault) -> String {
    match v {
        FileVault::NotApplicable => "not applicable",
        FileVault::NotEncrypted => "not encrypted",
        FileVault::BootVolumeOnly => "boot volume only",
        FileVault::SomeEncrypted => "some volumes encrypted",
        FileVault::AllEncrypted => "all volumes encrypted",
    }
    .to_string()
}

pub fn gatekeeper_str(g: super::model::Gatekeeper) -> String {
    use super::model::Gatekeeper::*;
    match g {
        Disabled => "anywhere",
        AppStoreAndIdentifiedDevelopers => "Mac App Store and identified developers",
        AppStore => "Mac App Store",
    }
    .to_string()
}
