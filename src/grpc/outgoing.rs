//! What goes out: domain values rendered as wire messages. No rule is decided here; what a
//! message says comes from the domain (`access::seen_by`, `connector::status`, …).

use std::borrow::Cow;

use envoy_types::ext_authz::v3::pb as ext_authz;

use crate::domain::access::{self, Brief, DeviceDecision, Explanation, Reason, ReasonCode, SeenBy};
use crate::domain::compliance::{ComplianceState, PolicyResult, SettingResult};
use crate::domain::connector::ConnectorStatus;
use crate::domain::diagnosis::Finding;
use crate::domain::model::{self as m, Timestamp};
use crate::domain::preview::{PolicyPreview, Previewed};
use crate::domain::summary::Summary;
use crate::domain::targeting::{Enrollment, EnrollmentTarget, Preview};
use crate::engine::watch::{Cause, WatchEvent};
use crate::proto as pb;

pub fn timestamp(t: Timestamp) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.0, nanos: 0 }
}

fn opt_str<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map(ToString::to_string).unwrap_or_default()
}

impl From<ComplianceState> for pb::ComplianceState {
    fn from(s: ComplianceState) -> Self {
        match s {
            ComplianceState::NotAssigned => pb::ComplianceState::NotAssigned,
            ComplianceState::NotApplicable => pb::ComplianceState::NotApplicable,
            ComplianceState::Compliant => pb::ComplianceState::Compliant,
            ComplianceState::Remediated => pb::ComplianceState::Remediated,
            ComplianceState::InGracePeriod => pb::ComplianceState::InGracePeriod,
            ComplianceState::Unknown => pb::ComplianceState::Unknown,
            ComplianceState::Conflict => pb::ComplianceState::Conflict,
            ComplianceState::Error => pb::ComplianceState::Error,
            ComplianceState::Noncompliant => pb::ComplianceState::Noncompliant,
        }
    }
}

fn state(s: ComplianceState) -> i32 {
    pb::ComplianceState::from(s) as i32
}

impl From<&Reason> for pb::Reason {
    fn from(r: &Reason) -> Self {
        pb::Reason { code: r.code.as_str().to_string(), message: r.message.to_string(), denies: r.code.denies() }
    }
}

fn decision(allow: bool) -> i32 {
    (if allow { pb::Decision::Allow } else { pb::Decision::Deny }) as i32
}

// ---- decisions ----

impl From<Brief<'_>> for pb::Reason {
    fn from(b: Brief<'_>) -> Self {
        let code = b.reason.code;
        pb::Reason { code: code.as_str().to_string(), message: b.message().into_owned(), denies: code.denies() }
    }
}

/// The decision as its caller sees it, in short, rendered straight from the cached value.
pub fn check_access(seen: &SeenBy<'_>, revision: u64) -> pb::CheckAccessResponse {
    let d = seen.decision();
    pb::CheckAccessResponse {
        decision: decision(seen.allow),
        state: state(d.state),
        reasons: seen.brief().map(pb::Reason::from).collect(),
        revision,
        valid_until: d.valid_until.map(timestamp),
    }
}

impl From<&SettingResult> for pb::SettingResult {
    fn from(s: &SettingResult) -> Self {
        pb::SettingResult {
            setting: s.setting.to_string(),
            expected: s.expected.clone(),
            actual: s.actual.clone(),
            state: state(s.state),
        }
    }
}

impl From<&PolicyResult<'_>> for pb::PolicyResult {
    fn from(p: &PolicyResult<'_>) -> Self {
        pb::PolicyResult {
            policy_id: p.policy.id.clone(),
            policy_name: p.policy.name.clone(),
            state: state(p.state),
            settings: p.settings.iter().map(pb::SettingResult::from).collect(),
            grace_period_ends: p.grace_period_ends.map(timestamp),
        }
    }
}

/// A device's evaluation, with the reasons that explain its state beyond the policies (the
/// caller sets the revision).
pub fn evaluation(e: &Explanation<'_>) -> pb::EvaluateDeviceResponse {
    pb::EvaluateDeviceResponse {
        device_id: e.device.id.to_string(),
        user_id: e.device.user_id.to_string(),
        state: state(e.evaluation.state),
        policies: e.evaluation.policies.iter().map(pb::PolicyResult::from).collect(),
        grace_period_ends: e.evaluation.grace_period_ends.map(timestamp),
        reasons: e.reasons.iter().map(pb::Reason::from).collect(),
        revision: 0,
    }
}

fn previewed_decision(d: &DeviceDecision) -> pb::PreviewedDecision {
    pb::PreviewedDecision {
        decision: decision(d.allow),
        state: state(d.state),
        reasons: d.reasons.iter().map(pb::Reason::from).collect(),
    }
}

impl From<&Previewed<'_>> for pb::PreviewedDevice {
    fn from(p: &Previewed<'_>) -> Self {
        pb::PreviewedDevice {
            device_id: p.after.device_id.clone(),
            user_id: opt_str(&p.after.primary_user_id),
            before: Some(previewed_decision(&p.before)),
            after: Some(previewed_decision(&p.after)),
            policies: p.policies.iter().map(pb::PolicyResult::from).collect(),
        }
    }
}

/// Devices and users by reason code.
fn reason_counts(by_reason: &std::collections::BTreeMap<access::ReasonCode, (u64, u64)>) -> Vec<pb::ReasonCount> {
    let count = |(code, (devices, users)): (&access::ReasonCode, &(u64, u64))| pb::ReasonCount {
        code: code.as_str().to_string(),
        devices: *devices,
        users: *users,
    };
    by_reason.iter().map(count).collect()
}

/// PreviewPolicy's answer (the caller sets the revision).
pub fn preview_policy(p: &PolicyPreview<'_>) -> pb::PreviewPolicyResponse {
    let list = |l: &[Previewed<'_>]| l.iter().map(pb::PreviewedDevice::from).collect();
    pb::PreviewPolicyResponse {
        allow_to_deny: p.allow_to_deny,
        deny_to_allow: p.deny_to_allow,
        into_grace: p.into_grace,
        unchanged: p.unchanged,
        by_reason: reason_counts(&p.by_reason),
        locked_out: list(&p.locked_out),
        let_in: list(&p.let_in),
        entering_grace: list(&p.entering_grace),
        revision: 0,
    }
}

impl From<&Finding> for pb::Finding {
    fn from(f: &Finding) -> Self {
        pb::Finding {
            cause: f.cause.as_str().to_string(),
            detail: f.detail.clone(),
            remediation: f.remediation().to_string(),
        }
    }
}

pub fn diagnosis(
    device_id: String,
    d: &crate::domain::diagnosis::Diagnosis,
    revision: u64,
) -> pb::DiagnoseDeviceResponse {
    pb::DiagnoseDeviceResponse {
        device_id,
        decision: decision(d.decision.allow),
        findings: d.findings.iter().map(pb::Finding::from).collect(),
        revision,
    }
}

pub fn summary(s: &Summary, revision: u64) -> pb::GetComplianceSummaryResponse {
    pb::GetComplianceSummaryResponse {
        devices: s.devices,
        allowed: s.allowed,
        denied: s.denied,
        by_state: s.by_state.iter().map(|(st, n)| pb::StateCount { state: state(*st), devices: *n }).collect(),
        by_reason: reason_counts(&s.by_reason),
        revision,
    }
}

/// A watch event, for its device's primary user.
impl From<&WatchEvent> for pb::ComplianceEvent {
    fn from(e: &WatchEvent) -> Self {
        let d = &e.decision;
        pb::ComplianceEvent {
            cursor: e.cursor,
            revision: e.revision,
            device_id: d.device_id.clone(),
            user_id: e.user_id.clone(),
            decision: decision(d.allow),
            state: state(d.state),
            reasons: d.reasons.iter().map(pb::Reason::from).collect(),
            at: Some(timestamp(e.at)),
            cause: (match e.cause {
                Cause::DataChanged => pb::compliance_event::Cause::DataChanged,
                Cause::TimePassed => pb::compliance_event::Cause::TimePassed,
                Cause::Snapshot => pb::compliance_event::Cause::Snapshot,
            }) as i32,
            snapshot: e.snapshot,
        }
    }
}

// ---- targeting ----

pub fn enrollment(user_id: String, e: Enrollment, revision: u64) -> pb::ResolveEnrollmentResponse {
    let target = match e.target {
        EnrollmentTarget::Partner => pb::EnrollmentTarget::Partner,
        EnrollmentTarget::Direct => pb::EnrollmentTarget::Direct,
        EnrollmentTarget::NotTargeted => pb::EnrollmentTarget::NotTargeted,
    };
    pb::ResolveEnrollmentResponse {
        user_id,
        target: target as i32,
        include_group_ids: e.include_group_ids,
        exclude_group_ids: e.exclude_group_ids,
        revision,
    }
}

pub fn preview(p: &Preview, revision: u64) -> pb::PreviewTargetingResponse {
    pb::PreviewTargetingResponse {
        users_to_partner: p.users_to_partner,
        devices_to_partner: p.devices_to_partner,
        users_excluded: p.users_excluded,
        devices_excluded: p.devices_excluded,
        users_not_targeted: p.users_not_targeted,
        devices_not_targeted: p.devices_not_targeted,
        revision,
    }
}

// ---- administration ----

fn threat(v: Option<m::ThreatLevel>) -> i32 {
    (match v {
        None => pb::ThreatLevel::Unspecified,
        Some(m::ThreatLevel::Secured) => pb::ThreatLevel::Secured,
        Some(m::ThreatLevel::Low) => pb::ThreatLevel::Low,
        Some(m::ThreatLevel::Medium) => pb::ThreatLevel::Medium,
        Some(m::ThreatLevel::High) => pb::ThreatLevel::High,
    }) as i32
}

impl From<&m::PolicySettings> for pb::PolicySettings {
    fn from(s: &m::PolicySettings) -> Self {
        let pw = &s.password;
        pb::PolicySettings {
            os_minimum_version: opt_str(&s.os_minimum_version),
            os_maximum_version: opt_str(&s.os_maximum_version),
            os_minimum_build: opt_str(&s.os_minimum_build),
            os_maximum_build: opt_str(&s.os_maximum_build),
            system_integrity_protection_required: s.system_integrity_protection_required,
            storage_encryption_required: s.storage_encryption_required,
            firewall_enabled: s.firewall_enabled,
            firewall_block_all_incoming: s.firewall_block_all_incoming,
            firewall_stealth_mode: s.firewall_stealth_mode,
            gatekeeper: (match s.gatekeeper_minimum {
                None => pb::GatekeeperRequirement::Unspecified,
                Some(m::Gatekeeper::AppStore) => pb::GatekeeperRequirement::AppStore,
                Some(m::Gatekeeper::AppStoreAndIdentifiedDevelopers) => {
                    pb::GatekeeperRequirement::AppStoreAndIdentifiedDevelopers
                }
                Some(m::Gatekeeper::Disabled) => pb::GatekeeperRequirement::Anywhere,
            }) as i32,
            password: Some(pb::PasswordRules {
                required: pw.required,
                block_simple: pw.block_simple,
                min_length: pw.min_length,
                r#type: (match pw.kind {
                    None => pb::PasswordType::Unspecified,
                    Some(m::PasswordType::DeviceDefault) => pb::PasswordType::DeviceDefault,
                    Some(m::PasswordType::Alphanumeric) => pb::PasswordType::Alphanumeric,
                    Some(m::PasswordType::Numeric) => pb::PasswordType::Numeric,
                }) as i32,
                min_character_sets: pw.min_character_sets,
                max_minutes_of_inactivity_before_lock: pw.max_minutes_of_inactivity_before_lock,
                max_expiry_days: pw.max_expiry_days,
                min_previous_passwords_blocked: pw.min_previous_passwords_blocked,
            }),
            max_threat_level: threat(s.max_threat_level),
        }
    }
}

/// A policy with its assignment.
pub fn policy(p: &m::Policy, a: Option<&m::Assignment>) -> pb::Policy {
    pb::Policy {
        id: p.id.clone(),
        name: p.name.clone(),
        settings: Some(pb::PolicySettings::from(&p.settings)),
        grace_period_hours: p.grace_period_hours,
        assignment: Some(pb::Assignment {
            include_group_ids: a.map(|a| a.include_group_ids.clone()).unwrap_or_default(),
            exclude_group_ids: a.map(|a| a.exclude_group_ids.clone()).unwrap_or_default(),
        }),
        updated_at: Some(timestamp(p.updated_at)),
    }
}

/// The connector with the status the domain gives it.
pub fn connector(c: &m::Connector, heartbeat: Option<Timestamp>, status: ConnectorStatus) -> pb::Connector {
    let state = match status {
        ConnectorStatus::NotConfigured => pb::ConnectorState::NotConfigured,
        ConnectorStatus::Enabled => pb::ConnectorState::Enabled,
        ConnectorStatus::Unresponsive => pb::ConnectorState::Unresponsive,
        ConnectorStatus::Terminated => pb::ConnectorState::Terminated,
    };
    pb::Connector {
        state: state as i32,
        partner_app_id: c.partner_app_id.clone(),
        partner_version: opt_str(&c.partner_version),
        include_group_ids: c.include_group_ids.clone(),
        exclude_group_ids: c.exclude_group_ids.clone(),
        enabled_at: c.enabled_at.map(timestamp),
        terminated_at: c.terminated_at.map(timestamp),
        removal_at: c.removal_at.map(timestamp),
        last_heartbeat: heartbeat.map(timestamp),
    }
}

impl From<&m::TenantSettings> for pb::Settings {
    fn from(s: &m::TenantSettings) -> Self {
        pb::Settings {
            no_policy: (match s.no_policy {
                m::NoPolicyTreatment::Compliant => pb::NoPolicyTreatment::Compliant,
                m::NoPolicyTreatment::Noncompliant => pb::NoPolicyTreatment::Noncompliant,
            }) as i32,
            validity_days: s.validity_days,
        }
    }
}

// ---- Envoy ext_authz ----

/// The decision as its caller sees it, in short, as Envoy's ext_authz answer.
pub fn ext_authz(seen: &SeenBy<'_>, revision: u64) -> ext_authz::CheckResponse {
    ext_authz_answer(seen.allow, seen.brief().map(|b| (b.reason.code, b.message())), Some(revision))
}

/// The answer to a request that names no valid user or device: a deny, made at no revision.
pub fn ext_authz_refused(reasons: &[Reason]) -> ext_authz::CheckResponse {
    ext_authz_answer(false, reasons.iter().map(|r| (r.code, Cow::Borrowed(&*r.message))), None)
}

/// ALLOW: OK, and headers for the upstream. DENY: PERMISSION_DENIED, and a 403 whose JSON body
/// lists the reasons.
fn ext_authz_answer<'a>(
    allow: bool,
    reasons: impl Iterator<Item = (ReasonCode, Cow<'a, str>)>,
    revision: Option<u64>,
) -> ext_authz::CheckResponse {
    let mut headers = vec![ext_authz_header("x-posture-decision", if allow { "allow" } else { "deny" })];
    headers.extend(revision.map(|r| ext_authz_header("x-posture-revision", &r.to_string())));
    let (code, message, http_response) = if allow {
        let ok = ext_authz::OkHttpResponse { headers, ..Default::default() };
        (tonic::Code::Ok, "allow".to_string(), ext_authz::HttpResponse::OkResponse(ok))
    } else {
        let reasons: Vec<_> = reasons.collect();
        let codes: Vec<&str> = reasons.iter().map(|(code, _)| code.as_str()).collect();
        let listed: Vec<_> = reasons
            .iter()
            .map(|(code, message)| serde_json::json!({ "code": code.as_str(), "message": message }))
            .collect();
        let mut body = serde_json::json!({ "decision": "deny", "reasons": listed });
        if let Some(r) = revision {
            body["revision"] = r.into();
        }
        headers.push(ext_authz_header("content-type", "application/json"));
        let denied = ext_authz::DeniedHttpResponse {
            status: Some(ext_authz::HttpStatus { code: ext_authz::HttpStatusCode::Forbidden as i32 }),
            headers,
            body: body.to_string(),
        };
        let message = format!("deny: {}", codes.join(", "));
        (tonic::Code::PermissionDenied, message, ext_authz::HttpResponse::DeniedResponse(denied))
    };
    ext_authz::CheckResponse {
        status: Some(envoy_types::pb::google::rpc::Status { code: code as i32, message, details: vec![] }),
        http_response: Some(http_response),
        dynamic_metadata: None,
    }
}

/// Set, replacing any the client sent: an upstream must not see a forged decision.
fn ext_authz_header(key: &str, value: &str) -> ext_authz::HeaderValueOption {
    ext_authz::HeaderValueOption {
        header: Some(ext_authz::HeaderValue { key: key.into(), value: value.into(), raw_value: vec![] }),
        append_action: ext_authz::HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}
