//! Compliance evaluation: every policy that applies to a device's user, every configured
//! setting, the most severe result wins, grace periods, freshness and the validity period.

use super::model::{
    ConnectorState, Device, FileVault, Gatekeeper, GroupKind, NoPolicyTreatment, PasswordType, Policy, PolicySettings,
    Sip, Timestamp,
};
use super::state::State;

/// The partner expects a check-in every 15 minutes; none for 24 hours is unresponsive.
pub const UNRESPONSIVE_AFTER_SECS: i64 = 24 * Timestamp::HOUR;
/// The directory token is renewed every 12 hours; not renewed for over 24 is unresponsive.
pub const TOKEN_STALE_AFTER_SECS: i64 = 24 * Timestamp::HOUR;
/// A partner verdict is as old as the data it was made from: after 24 hours it is not trusted.
pub const VERDICT_STALE_AFTER_SECS: i64 = 24 * Timestamp::HOUR;

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
    /// Cannot be known now, e.g. the device stopped checking in: never compliant on old data.
    Unknown,
    Conflict,
    Error,
    Noncompliant,
}

impl ComplianceState {
    pub fn allows_access(self) -> bool {
        matches!(self, ComplianceState::Compliant | ComplianceState::Remediated | ComplianceState::InGracePeriod)
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
pub struct PolicyResult<'a> {
    pub policy: &'a Policy,
    pub state: ComplianceState,
    /// Every configured setting with [`Detail::All`]; the failing ones with [`Detail::Failing`].
    pub settings: Vec<SettingResult>,
    /// Set when the policy fails: when its grace period ends (ended, if in the past).
    pub grace_period_ends: Option<Timestamp>,
}

/// How many setting results to spell out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// The failing settings by name, their `expected` and `actual` left empty: all a decision
    /// says of them (the values are EvaluateDevice's to spell out).
    Names,
    /// The failing settings with their values.
    Failing,
    /// Every configured setting with its values.
    All,
}

/// Why a device's compliance state is what it is, beyond its policy results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateCause {
    /// Policies were evaluated against the reported inventory.
    Policies,
    /// No policy applies; the tenant setting decided.
    NoPolicy(NoPolicyTreatment),
    /// The partner decided compliance itself (the 2024 mode).
    PartnerVerdict { compliant: bool, decided_at: Timestamp },
    /// Nothing reported within the validity period.
    ValidityExpired { reported_at: Timestamp, valid_until: Timestamp },
}

/// Whether the device's data is fresh (DOMAIN rule 5), and until when that holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    /// No check-in for 24 hours.
    pub unresponsive: bool,
    /// Directory token not renewed for over 24 hours.
    pub token_stale: bool,
    /// The partner's verdict was decided 24 hours ago or more.
    pub verdict_stale: bool,
    /// The next instant at which any of them changes.
    pub next_change: Option<Timestamp>,
}

impl Freshness {
    pub fn of(device: &Device, now: Timestamp) -> Freshness {
        let unresponsive_at = device.last_check_in.plus_secs(UNRESPONSIVE_AFTER_SECS);
        let stale_at = device.last_token_renewal.plus_secs(TOKEN_STALE_AFTER_SECS + 1);
        let verdict_stale_at = device.partner_verdict.map(|v| v.decided_at.plus_secs(VERDICT_STALE_AFTER_SECS));
        let next =
            [Some(unresponsive_at), Some(stale_at), verdict_stale_at].into_iter().flatten().filter(|t| *t > now).min();
        Freshness {
            unresponsive: now >= unresponsive_at,
            token_stale: now >= stale_at,
            verdict_stale: verdict_stale_at.is_some_and(|t| now >= t),
            next_change: next,
        }
    }
    pub fn fresh(&self) -> bool {
        !self.unresponsive && !self.token_stale && !self.verdict_stale
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation<'a> {
    pub state: ComplianceState,
    pub cause: StateCause,
    pub freshness: Freshness,
    pub policies: Vec<PolicyResult<'a>>,
    /// The earliest grace period end still in the future, if the device is in grace.
    pub grace_period_ends: Option<Timestamp>,
    /// (policy id, device group id): policies aimed at device groups this device is in that
    /// do not reach its user, so they do not evaluate it (DOMAIN rule 2).
    pub device_group_policies: Vec<(&'a str, &'a str)>,
    /// The next instant at which time alone changes this evaluation.
    pub next_change: Option<Timestamp>,
}

/// Does `policy_id`'s assignment reach `user_id`? Exclude wins; only user groups count.
pub fn policy_applies(state: &State, policy_id: &str, user_id: &str) -> bool {
    let Some(a) = state.assignment(policy_id) else { return false };
    let is_user_group = |g: &str| state.group(g).is_some_and(|g| g.kind == GroupKind::User);
    let member = |ids: &[String]| ids.iter().any(|id| state.in_group(user_id, id) && is_user_group(id));
    member(&a.include_group_ids) && !member(&a.exclude_group_ids)
}

/// Policies that apply to a user.
pub fn applicable_policies<'s>(state: &'s State, user_id: &'s str) -> impl Iterator<Item = &'s Policy> {
    state.policies().filter(move |p| policy_applies(state, &p.id, user_id))
}

fn min_opt(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// Evaluates a device at `now`.
pub fn evaluate<'a>(state: &'a State, device: &'a Device, now: Timestamp, detail: Detail) -> Evaluation<'a> {
    let freshness = Freshness::of(device, now);
    let mut eval = evaluate_policies(state, device, now, detail);
    eval.freshness = freshness;
    eval.next_change = min_opt(eval.next_change, freshness.next_change);
    if !freshness.fresh() {
        eval.state = eval.state.max(ComplianceState::Unknown);
    }
    // A terminated connector's Macs are marked noncompliant at once (and removed later).
    if state.connector().state == ConnectorState::Terminated {
        eval.state = ComplianceState::Noncompliant;
    }
    eval
}

fn evaluate_policies<'a>(state: &'a State, device: &'a Device, now: Timestamp, detail: Detail) -> Evaluation<'a> {
    let device_group_policies = device_group_policies(state, device);
    let settings = state.settings();
    let reported_at = device.partner_verdict.map_or(device.last_check_in, |v| v.decided_at);
    let valid_until = reported_at.plus_days(i64::from(settings.validity_days));
    let mut eval = Evaluation {
        state: ComplianceState::Compliant,
        cause: StateCause::Policies,
        freshness: Freshness { unresponsive: false, token_stale: false, verdict_stale: false, next_change: None },
        policies: Vec::new(),
        grace_period_ends: None,
        device_group_policies,
        next_change: Some(valid_until),
    };
    if now >= valid_until {
        eval.state = ComplianceState::Noncompliant;
        eval.cause = StateCause::ValidityExpired { reported_at, valid_until };
        eval.next_change = None;
        return eval;
    }
    if let Some(v) = device.partner_verdict {
        eval.state = if v.compliant { ComplianceState::Compliant } else { ComplianceState::Noncompliant };
        eval.cause = StateCause::PartnerVerdict { compliant: v.compliant, decided_at: v.decided_at };
        return eval;
    }
    let mut grace_period_ends: Option<Timestamp> = None;
    for p in applicable_policies(state, &device.user_id) {
        let outcome = Outcome::of(&p.settings, device);
        let mut result =
            PolicyResult { policy: p, state: outcome.others, settings: Vec::new(), grace_period_ends: None };
        if outcome.failing {
            let ends = grace_ends(state, device, p);
            result.grace_period_ends = Some(ends);
            if now < ends {
                // Grace covers the failing settings only: an unreported (error) setting
                // still denies, as it would if no setting failed.
                result.state = outcome.others.max(ComplianceState::InGracePeriod);
                eval.next_change = min_opt(eval.next_change, Some(ends));
                grace_period_ends = min_opt(grace_period_ends, Some(ends));
            } else {
                result.state = ComplianceState::Noncompliant;
            }
        }
        match detail {
            Detail::All => result.settings = check_settings(&p.settings, device),
            _ if result.state <= ComplianceState::Compliant => {}
            Detail::Failing => result.settings = spell_settings(&p.settings, device, false),
            Detail::Names => result.settings = name_failing(&p.settings, device),
        }
        eval.policies.push(result);
    }
    if eval.policies.is_empty() {
        eval.state = match settings.no_policy {
            NoPolicyTreatment::Compliant => ComplianceState::Compliant,
            NoPolicyTreatment::Noncompliant => ComplianceState::Noncompliant,
        };
        eval.cause = StateCause::NoPolicy(settings.no_policy);
        return eval;
    }
    eval.state = eval.policies.iter().map(|p| p.state).max().unwrap_or(ComplianceState::Compliant);
    if eval.state == ComplianceState::InGracePeriod {
        eval.grace_period_ends = grace_period_ends;
    }
    eval
}

/// When the grace period of `policy` ends for `device`, as the write that first saw the failure
/// recorded it (see `grace`). A failure with no record (which no write leaves behind) has no
/// grace left: fail closed.
fn grace_ends(state: &State, device: &Device, policy: &Policy) -> Timestamp {
    state.failure(&device.id, &policy.id).map_or(Timestamp(0), |f| f.grace_ends)
}

/// Does the device fail some configured setting of `settings`? (An unreported setting is an
/// error, not a failure: grace does not apply to it.)
pub fn fails(settings: &PolicySettings, device: &Device) -> bool {
    Outcome::of(settings, device).failing
}

fn device_group_policies<'a>(state: &'a State, device: &'a Device) -> Vec<(&'a str, &'a str)> {
    if state.groups_of(&device.id).next().is_none() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for p in state.policies() {
        let Some(a) = state.assignment(&p.id) else { continue };
        if policy_applies(state, &p.id, &device.user_id) {
            continue;
        }
        for g in a.include_group_ids.iter().filter(|g| state.in_group(&device.id, g)) {
            if state.group(g).is_some_and(|g| g.kind == GroupKind::Device) {
                out.push((p.id.as_str(), g.as_str()));
            }
        }
    }
    out
}

/// A policy's settings summed up without spelling them out: the decision's fast path.
struct Outcome {
    /// Some setting is not met.
    failing: bool,
    /// The worst of the other settings: COMPLIANT, or ERROR when one was not reported.
    others: ComplianceState,
}

impl Outcome {
    fn of(s: &PolicySettings, d: &Device) -> Outcome {
        let mut o = Outcome { failing: false, others: ComplianceState::Compliant };
        visit_settings(s, d, &mut |_, ok, _, _| match ok {
            Some(true) => {}
            Some(false) => o.failing = true,
            None => o.others = ComplianceState::Error,
        });
        o
    }
}

/// Checks each configured setting; a setting that is not configured is not evaluated.
pub fn check_settings(s: &PolicySettings, d: &Device) -> Vec<SettingResult> {
    spell_settings(s, d, true)
}

/// The configured settings with expected and actual values: all, or only those not met.
fn spell_settings(s: &PolicySettings, d: &Device, met_too: bool) -> Vec<SettingResult> {
    let mut out = Vec::new();
    visit_settings(s, d, &mut |setting, ok, expected, actual| {
        if ok == Some(true) && !met_too {
            return;
        }
        let (actual, state) = match ok {
            Some(true) => (actual(), ComplianceState::Compliant),
            Some(false) => (actual(), ComplianceState::Noncompliant),
            // A configured setting the partner did not report cannot be judged: an error, which denies.
            None => ("not reported".to_string(), ComplianceState::Error),
        };
        out.push(SettingResult { setting, expected: expected(), actual, state });
    });
    out
}

/// The settings not met, by name only.
fn name_failing(s: &PolicySettings, d: &Device) -> Vec<SettingResult> {
    let mut out = Vec::new();
    visit_settings(s, d, &mut |setting, ok, _, _| {
        let state = match ok {
            Some(true) => return,
            Some(false) => ComplianceState::Noncompliant,
            None => ComplianceState::Error,
        };
        out.push(SettingResult { setting, expected: String::new(), actual: String::new(), state });
    });
    out
}

type Text<'x> = &'x dyn Fn() -> String;

/// The one definition of every setting: its name, whether the device meets it (`None`: the
/// fact was not reported), and how to spell out what is expected and what was found (only
/// called when someone reads them).
fn visit_settings(s: &PolicySettings, d: &Device, f: &mut Visitor<'_>) {
    let facts = &d.facts;
    let pw = &facts.password;
    let os = || d.os_version.to_string();
    let build = || d.os_build.as_ref().map(ToString::to_string).unwrap_or_default();
    if let Some(min) = &s.os_minimum_version {
        f("os_minimum_version", Some(d.os_version >= *min), &|| format!(">= {min}"), &os);
    }
    if let Some(max) = &s.os_maximum_version {
        f("os_maximum_version", Some(d.os_version <= *max), &|| format!("<= {max}"), &os);
    }
    if let Some(min) = &s.os_minimum_build {
        f("os_minimum_build", d.os_build.as_ref().map(|b| b >= min), &|| format!(">= {min}"), &build);
    }
    if let Some(max) = &s.os_maximum_build {
        f("os_maximum_build", d.os_build.as_ref().map(|b| b <= max), &|| format!("<= {max}"), &build);
    }
    if s.system_integrity_protection_required == Some(true) {
        let sip = facts.system_integrity_protection.filter(|s| *s != Sip::NotCollected);
        let actual = || match sip {
            Some(Sip::Enabled) => "enabled".to_string(),
            _ => "disabled".to_string(),
        };
        f("system_integrity_protection", sip.map(|s| s == Sip::Enabled), &|| "enabled".into(), &actual);
    }
    if s.storage_encryption_required == Some(true) {
        let v = facts.file_vault;
        let ok = v.map(|v| v == FileVault::AllEncrypted);
        f("storage_encryption", ok, &|| "all volumes encrypted".into(), &|| v.map(file_vault_str).unwrap_or_default());
    }
    required_true(f, "firewall_enabled", s.firewall_enabled, facts.firewall_enabled);
    required_true(f, "firewall_block_all_incoming", s.firewall_block_all_incoming, facts.firewall_block_all_incoming);
    required_true(f, "firewall_stealth_mode", s.firewall_stealth_mode, facts.firewall_stealth_mode);
    if let Some(min) = s.gatekeeper_minimum {
        let g = facts.gatekeeper;
        let expected = || format!("at least {}", gatekeeper_str(min));
        f("gatekeeper", g.map(|g| g >= min), &expected, &|| g.map(gatekeeper_str).unwrap_or_default());
    }
    let p = &s.password;
    required_true(f, "password_required", p.required, pw.required);
    required_true(f, "password_block_simple", p.block_simple, pw.simple_blocked);
    at_least(f, "password_minimum_length", p.min_length, pw.min_length);
    if let Some(kind) = p.kind.filter(|k| *k != PasswordType::DeviceDefault) {
        let actual = || pw.kind.map(password_type_str).unwrap_or_default();
        f("password_type", pw.kind.map(|k| k == kind), &|| password_type_str(kind), &actual);
    }
    at_least(f, "password_minimum_character_sets", p.min_character_sets, pw.min_character_sets);
    if let Some(max) = p.max_minutes_of_inactivity_before_lock {
        let a = pw.minutes_of_inactivity_before_lock;
        let actual = || a.map(|v| v.to_string()).unwrap_or_default();
        f("password_minutes_of_inactivity_before_lock", a.map(|v| v <= max), &|| format!("<= {max}"), &actual);
    }
    if let Some(max) = p.max_expiry_days {
        let a = pw.expiry_days;
        let actual = || a.map(|v| v.to_string()).unwrap_or_default();
        // A password that never expires (0) does not meet an expiry rule.
        f("password_expiry_days", a.map(|v| v > 0 && v <= max), &|| format!("<= {max}"), &actual);
    }
    at_least(f, "password_previous_passwords_blocked", p.min_previous_passwords_blocked, pw.previous_passwords_blocked);
    if let Some(max) = s.max_threat_level {
        let a = facts.threat_level;
        let name = |t: super::model::ThreatLevel| format!("{t:?}").to_lowercase();
        let actual = || a.map(name).unwrap_or_default();
        f("device_threat_level", a.map(|t| t <= max), &|| format!("at most {}", name(max)), &actual);
    }
}

type Visitor<'f> = dyn FnMut(&'static str, Option<bool>, Text<'_>, Text<'_>) + 'f;

/// Only "required: true" is a requirement; "false" means not configured.
fn required_true(f: &mut Visitor<'_>, name: &'static str, required: Option<bool>, actual: Option<bool>) {
    if required == Some(true) {
        f(name, actual, &|| "true".into(), &|| actual.map(|a| a.to_string()).unwrap_or_default());
    }
}

fn at_least(f: &mut Visitor<'_>, name: &'static str, min: Option<u32>, actual: Option<u32>) {
    if let Some(min) = min {
        f(name, actual.map(|v| v >= min), &|| format!(">= {min}"), &|| {
            actual.map(|v| v.to_string()).unwrap_or_default()
        });
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

pub fn gatekeeper_str(g: Gatekeeper) -> String {
    match g {
        Gatekeeper::Disabled => "anywhere",
        Gatekeeper::AppStoreAndIdentifiedDevelopers => "Mac App Store and identified developers",
        Gatekeeper::AppStore => "Mac App Store",
    }
    .to_string()
}

fn password_type_str(k: PasswordType) -> String {
    format!("{k:?}").to_lowercase()
}
