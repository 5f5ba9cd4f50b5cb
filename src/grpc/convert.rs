//! Conversions between the wire and the domain. Every request field is validated here,
//! once, where it enters; errors name the field.

use crate::domain::access::{self, DeviceDecision, Reason};
use crate::domain::compliance::ComplianceState;
use crate::domain::connector::{self, ConnectorStatus};
use crate::domain::model::{self as m, Timestamp};
use crate::domain::version::{OsBuild, OsVersion};
use crate::engine::watch::{Cause, WatchEvent};
use crate::error::{Error, Result};
use crate::proto as pb;

pub const MAX_ID_LEN: usize = 128;
pub const MAX_BATCH: usize = 1000;
pub const MAX_GROUP_LIST: usize = 1000;

/// A required identifier: 1 to 128 printable characters.
pub fn id(field: &str, value: &str) -> Result<String> {
    if value.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    text(field, value, MAX_ID_LEN)
}

/// Optional free text up to `max` characters, without control characters.
pub fn text(field: &str, value: &str, max: usize) -> Result<String> {
    if value.chars().count() > max {
        return Err(Error::invalid(field, format!("is longer than {max} characters")));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::invalid(field, "contains control characters"));
    }
    Ok(value.to_string())
}

pub fn ids(field: &str, values: &[String], max: usize) -> Result<Vec<String>> {
    if values.len() > max {
        return Err(Error::invalid(field, format!("has {} entries; at most {max} are allowed", values.len())));
    }
    values.iter().enumerate().map(|(i, v)| id(&format!("{field}[{i}]"), v)).collect()
}

/// A proto enum value: unknown numbers are refused, naming the field.
fn known<E: TryFrom<i32>>(field: &str, value: i32) -> Result<E> {
    E::try_from(value).map_err(|_| Error::invalid(field, format!("{value} is not a known value")))
}

fn version(field: &str, value: &str) -> Result<OsVersion> {
    value.parse().map_err(|e: crate::domain::version::BadVersion| Error::invalid(field, e.to_string()))
}

fn opt_version(field: &str, value: &str) -> Result<Option<OsVersion>> {
    if value.is_empty() { Ok(None) } else { version(field, value).map(Some) }
}

fn opt_build(field: &str, value: &str) -> Result<Option<OsBuild>> {
    if value.is_empty() {
        return Ok(None);
    }
    value.parse().map(Some).map_err(|e: crate::domain::version::BadBuild| Error::invalid(field, e.to_string()))
}

fn time(field: &str, t: Option<&prost_types::Timestamp>) -> Result<Timestamp> {
    let t = t.ok_or_else(|| Error::invalid(field, "is required"))?;
    if t.seconds < 0 {
        return Err(Error::invalid(field, "is before 1970"));
    }
    Ok(Timestamp(t.seconds))
}

pub fn timestamp(t: Timestamp) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.0, nanos: 0 }
}

fn in_range(field: &str, v: Option<u32>, lo: u32, hi: u32) -> Result<Option<u32>> {
    match v {
        Some(v) if !(lo..=hi).contains(&v) => Err(Error::invalid(field, format!("{v} is outside {lo}..={hi}"))),
        v => Ok(v),
    }
}

// ---- inventory ----

fn threat(field: &str, v: i32) -> Result<Option<m::ThreatLevel>> {
    Ok(match known::<pb::ThreatLevel>(field, v)? {
        pb::ThreatLevel::Unspecified => None,
        pb::ThreatLevel::Secured => Some(m::ThreatLevel::Secured),
        pb::ThreatLevel::Low => Some(m::ThreatLevel::Low),
        pb::ThreatLevel::Medium => Some(m::ThreatLevel::Medium),
        pb::ThreatLevel::High => Some(m::ThreatLevel::High),
    })
}

fn password_type(field: &str, v: i32) -> Result<Option<m::PasswordType>> {
    Ok(match known::<pb::PasswordType>(field, v)? {
        pb::PasswordType::Unspecified => None,
        pb::PasswordType::DeviceDefault => Some(m::PasswordType::DeviceDefault),
        pb::PasswordType::Alphanumeric => Some(m::PasswordType::Alphanumeric),
        pb::PasswordType::Numeric => Some(m::PasswordType::Numeric),
    })
}

/// One report of a batch; `at` is its field prefix, e.g. `devices[3].`.
pub fn device_report(at: &str, r: &pb::DeviceReport) -> Result<m::Device> {
    let f = |name: &str| format!("{at}{name}");
    let registration = match known::<pb::Registration>(&f("registration"), r.registration)? {
        pb::Registration::Unspecified => {
            return Err(Error::invalid(f("registration"), "is required (PARTNER or DIRECT)"));
        }
        pb::Registration::Partner => m::Registration::Partner,
        pb::Registration::Direct => m::Registration::Direct,
    };
    if r.os_version.is_empty() {
        return Err(Error::invalid(f("os_version"), "is required, e.g. 14.2.1"));
    }
    let pw = r.password.unwrap_or_default();
    let facts = m::SecurityFacts {
        system_integrity_protection: match known::<pb::SipState>(
            &f("system_integrity_protection"),
            r.system_integrity_protection,
        )? {
            pb::SipState::Unspecified => None,
            pb::SipState::Enabled => Some(m::Sip::Enabled),
            pb::SipState::Disabled => Some(m::Sip::Disabled),
            pb::SipState::NotCollected => Some(m::Sip::NotCollected),
        },
        file_vault: match known::<pb::FileVaultState>(&f("file_vault"), r.file_vault)? {
            pb::FileVaultState::Unspecified => None,
            pb::FileVaultState::NotApplicable => Some(m::FileVault::NotApplicable),
            pb::FileVaultState::NotEncrypted => Some(m::FileVault::NotEncrypted),
            pb::FileVaultState::BootVolumeOnly => Some(m::FileVault::BootVolumeOnly),
            pb::FileVaultState::SomeEncrypted => Some(m::FileVault::SomeEncrypted),
            pb::FileVaultState::AllEncrypted => Some(m::FileVault::AllEncrypted),
        },
        gatekeeper: match known::<pb::GatekeeperState>(&f("gatekeeper"), r.gatekeeper)? {
            pb::GatekeeperState::Unspecified => None,
            pb::GatekeeperState::Disabled => Some(m::Gatekeeper::Disabled),
            pb::GatekeeperState::AppStoreAndIdentifiedDevelopers => {
                Some(m::Gatekeeper::AppStoreAndIdentifiedDevelopers)
            }
            pb::GatekeeperState::AppStore => Some(m::Gatekeeper::AppStore),
        },
        firewall_enabled: r.firewall_enabled,
        firewall_block_all_incoming: r.firewall_block_all_incoming,
        firewall_stealth_mode: r.firewall_stealth_mode,
        password: m::PasswordFacts {
            required: pw.required,
            simple_blocked: pw.simple_blocked,
            min_length: pw.min_length,
            kind: password_type(&f("password.type"), pw.r#type)?,
            min_character_sets: pw.min_character_sets,
            minutes_of_inactivity_before_lock: pw.minutes_of_inactivity_before_lock,
            expiry_days: pw.expiry_days,
            previous_passwords_blocked: pw.previous_passwords_blocked,
        },
        threat_level: threat(&f("threat_level"), r.threat_level)?,
    };
    let partner_verdict = match &r.partner_verdict {
        None => None,
        Some(v) => Some(m::PartnerVerdict {
            compliant: v.compliant,
            decided_at: time(&f("partner_verdict.decided_at"), v.decided_at.as_ref())?,
        }),
    };
    Ok(m::Device {
        id: id(&f("device_id"), &r.device_id)?,
        partner_device_id: text(&f("partner_device_id"), &r.partner_device_id, MAX_ID_LEN)?,
        serial_number: {
            if r.serial_number.is_empty() {
                return Err(Error::invalid(f("serial_number"), "is required"));
            }
            text(&f("serial_number"), &r.serial_number, 64)?
        },
        name: text(&f("name"), &r.name, 256)?,
        model: text(&f("model"), &r.model, MAX_ID_LEN)?,
        user_id: id(&f("user_id"), &r.user_id)?,
        os_version: version(&f("os_version"), &r.os_version)?,
        os_build: opt_build(&f("os_build"), &r.os_build)?,
        registration,
        last_check_in: time(&f("last_check_in"), r.last_check_in.as_ref())?,
        last_token_renewal: time(&f("last_token_renewal"), r.last_token_renewal.as_ref())?,
        refresh_token_issued: match &r.refresh_token_issued {
            None => None,
            Some(t) => Some(time(&f("refresh_token_issued"), Some(t))?),
        },
        facts,
        partner_verdict,
    })
}

// ---- policies ----

pub fn policy(at: &str, p: Option<&pb::Policy>) -> Result<m::Policy> {
    let p = p.ok_or_else(|| Error::invalid(at, "is required"))?;
    let f = |name: &str| format!("{at}.{name}");
    let policy_id = id(&f("id"), &p.id)?;
    if !policy_id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        return Err(Error::invalid(f("id"), "may hold only letters, digits, '-', '_' and '.'"));
    }
    if p.name.is_empty() {
        return Err(Error::invalid(f("name"), "is required"));
    }
    let s = p.settings.clone().unwrap_or_default();
    let pw = s.password.unwrap_or_default();
    let sf = |name: &str| format!("{at}.settings.{name}");
    let settings = m::PolicySettings {
        os_minimum_version: opt_version(&sf("os_minimum_version"), &s.os_minimum_version)?,
        os_maximum_version: opt_version(&sf("os_maximum_version"), &s.os_maximum_version)?,
        os_minimum_build: opt_build(&sf("os_minimum_build"), &s.os_minimum_build)?,
        os_maximum_build: opt_build(&sf("os_maximum_build"), &s.os_maximum_build)?,
        system_integrity_protection_required: s.system_integrity_protection_required,
        storage_encryption_required: s.storage_encryption_required,
        firewall_enabled: s.firewall_enabled,
        firewall_block_all_incoming: s.firewall_block_all_incoming,
        firewall_stealth_mode: s.firewall_stealth_mode,
        gatekeeper_minimum: match known::<pb::GatekeeperRequirement>(&sf("gatekeeper"), s.gatekeeper)? {
            pb::GatekeeperRequirement::Unspecified => None,
            pb::GatekeeperRequirement::AppStore => Some(m::Gatekeeper::AppStore),
            pb::GatekeeperRequirement::AppStoreAndIdentifiedDevelopers => {
                Some(m::Gatekeeper::AppStoreAndIdentifiedDevelopers)
            }
            pb::GatekeeperRequirement::Anywhere => Some(m::Gatekeeper::Disabled),
        },
        password: m::PasswordRules {
            required: pw.required,
            block_simple: pw.block_simple,
            min_length: in_range(&sf("password.min_length"), pw.min_length, 4, 14)?,
            kind: password_type(&sf("password.type"), pw.r#type)?,
            min_character_sets: in_range(&sf("password.min_character_sets"), pw.min_character_sets, 1, 4)?,
            max_minutes_of_inactivity_before_lock: in_range(
                &sf("password.max_minutes_of_inactivity_before_lock"),
                pw.max_minutes_of_inactivity_before_lock,
                1,
                1440,
            )?,
            max_expiry_days: in_range(&sf("password.max_expiry_days"), pw.max_expiry_days, 1, 65535)?,
            min_previous_passwords_blocked: in_range(
                &sf("password.min_previous_passwords_blocked"),
                pw.min_previous_passwords_blocked,
                1,
                24,
            )?,
        },
        max_threat_level: threat(&sf("max_threat_level"), s.max_threat_level)?,
    };
    if let (Some(lo), Some(hi)) = (&settings.os_minimum_version, &settings.os_maximum_version)
        && lo > hi
    {
        return Err(Error::invalid(sf("os_maximum_version"), format!("{hi} is below the minimum {lo}")));
    }
    if let (Some(lo), Some(hi)) = (&settings.os_minimum_build, &settings.os_maximum_build)
        && lo > hi
    {
        return Err(Error::invalid(sf("os_maximum_build"), format!("{hi} is below the minimum {lo}")));
    }
    Ok(m::Policy {
        id: policy_id,
        name: text(&f("name"), &p.name, 256)?,
        settings,
        grace_period_hours: in_range(&f("grace_period_hours"), Some(p.grace_period_hours), 0, 8760)?.unwrap_or(0),
        updated_at: Timestamp(0),
    })
}

fn opt_str<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map(ToString::to_string).unwrap_or_default()
}

fn threat_out(v: Option<m::ThreatLevel>) -> i32 {
    (match v {
        None => pb::ThreatLevel::Unspecified,
        Some(m::ThreatLevel::Secured) => pb::ThreatLevel::Secured,
        Some(m::ThreatLevel::Low) => pb::ThreatLevel::Low,
        Some(m::ThreatLevel::Medium) => pb::ThreatLevel::Medium,
        Some(m::ThreatLevel::High) => pb::ThreatLevel::High,
    }) as i32
}

pub fn policy_out(p: &m::Policy, a: Option<&m::Assignment>) -> pb::Policy {
    let s = &p.settings;
    let pw = &s.password;
    pb::Policy {
        id: p.id.clone(),
        name: p.name.clone(),
        settings: Some(pb::PolicySettings {
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
            max_threat_level: threat_out(s.max_threat_level),
        }),
        grace_period_hours: p.grace_period_hours,
        assignment: Some(pb::Assignment {
            include_group_ids: a.map(|a| a.include_group_ids.clone()).unwrap_or_default(),
            exclude_group_ids: a.map(|a| a.exclude_group_ids.clone()).unwrap_or_default(),
        }),
        updated_at: Some(timestamp(p.updated_at)),
    }
}

// ---- directory, connector, settings ----

pub fn user(at: &str, u: &pb::User) -> Result<m::User> {
    Ok(m::User {
        id: id(&format!("{at}.id"), &u.id)?,
        user_principal_name: text(&format!("{at}.user_principal_name"), &u.user_principal_name, 256)?,
        device_management_licence: u.device_management_licence,
        premium_identity_licence: u.premium_identity_licence,
    })
}

pub fn group(at: &str, g: &pb::Group) -> Result<m::Group> {
    let kind = match known::<pb::GroupKind>(&format!("{at}.kind"), g.kind)? {
        pb::GroupKind::Unspecified => return Err(Error::invalid(format!("{at}.kind"), "is required (USER or DEVICE)")),
        pb::GroupKind::User => m::GroupKind::User,
        pb::GroupKind::Device => m::GroupKind::Device,
    };
    let mut members = ids(&format!("{at}.member_ids"), &g.member_ids, 1_000_000)?;
    members.sort();
    members.dedup();
    Ok(m::Group {
        id: id(&format!("{at}.id"), &g.id)?,
        name: text(&format!("{at}.name"), &g.name, 256)?,
        kind,
        members,
    })
}

pub fn connector_out(c: &m::Connector, heartbeat: Option<Timestamp>, now: Timestamp) -> pb::Connector {
    let state = match connector::status(c, heartbeat, now) {
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

pub fn settings(s: Option<&pb::Settings>) -> Result<m::TenantSettings> {
    let s = s.ok_or_else(|| Error::invalid("settings", "is required"))?;
    let no_policy = match known::<pb::NoPolicyTreatment>("settings.no_policy", s.no_policy)? {
        pb::NoPolicyTreatment::Unspecified => {
            return Err(Error::invalid("settings.no_policy", "is required (COMPLIANT or NONCOMPLIANT)"));
        }
        pb::NoPolicyTreatment::Compliant => m::NoPolicyTreatment::Compliant,
        pb::NoPolicyTreatment::Noncompliant => m::NoPolicyTreatment::Noncompliant,
    };
    let validity_days = in_range("settings.validity_days", Some(s.validity_days), 1, 120)?.unwrap_or(30);
    Ok(m::TenantSettings { no_policy, validity_days })
}

pub fn settings_out(s: &m::TenantSettings) -> pb::Settings {
    pb::Settings {
        no_policy: (match s.no_policy {
            m::NoPolicyTreatment::Compliant => pb::NoPolicyTreatment::Compliant,
            m::NoPolicyTreatment::Noncompliant => pb::NoPolicyTreatment::Noncompliant,
        }) as i32,
        validity_days: s.validity_days,
    }
}

// ---- decisions ----

pub fn state_out(s: ComplianceState) -> i32 {
    (match s {
        ComplianceState::NotAssigned => pb::ComplianceState::NotAssigned,
        ComplianceState::NotApplicable => pb::ComplianceState::NotApplicable,
        ComplianceState::Compliant => pb::ComplianceState::Compliant,
        ComplianceState::Remediated => pb::ComplianceState::Remediated,
        ComplianceState::InGracePeriod => pb::ComplianceState::InGracePeriod,
        ComplianceState::Unknown => pb::ComplianceState::Unknown,
        ComplianceState::Conflict => pb::ComplianceState::Conflict,
        ComplianceState::Error => pb::ComplianceState::Error,
        ComplianceState::Noncompliant => pb::ComplianceState::Noncompliant,
    }) as i32
}

pub fn reason_out(r: &Reason) -> pb::Reason {
    pb::Reason { code: r.code.as_str().to_string(), message: r.message.to_string(), denies: r.code.denies() }
}

pub fn decision_out(allow: bool) -> i32 {
    (if allow { pb::Decision::Allow } else { pb::Decision::Deny }) as i32
}

/// The device's decision as `user_id` sees it (the same as `access::for_user`, without
/// copying the decision on the hot path).
pub fn access_out(d: &DeviceDecision, user_id: &str, revision: u64) -> pb::CheckAccessResponse {
    let other = access::other_user_reason(d, user_id);
    let denied = other.is_some();
    let own = d.reasons.iter().filter(|r| !denied || r.code.denies());
    pb::CheckAccessResponse {
        decision: decision_out(d.allow && !denied),
        state: state_out(d.state),
        reasons: other.iter().chain(own).map(reason_out).collect(),
        revision,
        valid_until: d.valid_until.map(timestamp),
    }
}

/// A watch event, for its device's primary user.
pub fn event_out(e: &WatchEvent) -> pb::ComplianceEvent {
    let d = &e.decision;
    pb::ComplianceEvent {
        cursor: e.cursor,
        revision: e.revision,
        device_id: d.device_id.clone(),
        user_id: e.user_id.clone(),
        decision: decision_out(d.allow),
        state: state_out(d.state),
        reasons: d.reasons.iter().map(reason_out).collect(),
        at: Some(timestamp(e.at)),
        cause: (match e.cause {
            Cause::DataChanged => pb::compliance_event::Cause::DataChanged,
            Cause::TimePassed => pb::compliance_event::Cause::TimePassed,
            Cause::Snapshot => pb::compliance_event::Cause::Snapshot,
        }) as i32,
        snapshot: e.snapshot,
    }
}
