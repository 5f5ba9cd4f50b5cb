//! The stored form of every entity and change: types of the store's own, apart from the
//! domain's, so that renaming a domain field or variant is a compile error here instead of a
//! data migration by accident. Rows carry a version (`"v": 1`; rows written before versions
//! were kept have none and are version 1); a version this build does not know is refused as
//! corrupt rather than misread.
//!
//! Strings are `Cow`s, so that encoding borrows from the domain value instead of copying it.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::domain::model as m;
use crate::domain::version::{OsBuild, OsVersion};
use crate::domain::{Change, Timestamp};
use crate::error::{Error, Result};

/// The version this build writes and reads.
const VERSION: u32 = 1;

fn version() -> u32 {
    VERSION
}

fn known(v: u32, what: &str) -> Result<()> {
    if v == VERSION {
        Ok(())
    } else {
        Err(Error::Storage(format!("corrupt row: {what} record version {v} is unknown")))
    }
}

fn text(s: &str) -> Cow<'_, str> {
    Cow::Borrowed(s)
}

fn texts(v: &[String]) -> Vec<Cow<'_, str>> {
    v.iter().map(|s| text(s)).collect()
}

fn owned(v: Vec<Cow<'_, str>>) -> Vec<String> {
    v.into_iter().map(Cow::into_owned).collect()
}

fn os_version(s: &str) -> Result<OsVersion> {
    s.parse().map_err(|e| Error::Storage(format!("corrupt row: {e}")))
}

fn os_build(s: &str) -> Result<OsBuild> {
    s.parse().map_err(|e| Error::Storage(format!("corrupt row: {e}")))
}

/// A unit-only enum of the store's, and its conversions to and from the domain's.
macro_rules! stored_enum {
    ($stored:ident <=> $domain:path { $($variant:ident),* $(,)? }) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
        pub(crate) enum $stored { $($variant),* }

        impl From<$domain> for $stored {
            fn from(d: $domain) -> Self {
                use $domain as D;
                match d { $(D::$variant => $stored::$variant),* }
            }
        }

        impl From<$stored> for $domain {
            fn from(s: $stored) -> Self {
                use $domain as D;
                match s { $($stored::$variant => D::$variant),* }
            }
        }
    };
}

stored_enum!(GroupKind <=> m::GroupKind { User, Device });
stored_enum!(Registration <=> m::Registration { Partner, Direct });
stored_enum!(FileVault <=> m::FileVault { NotApplicable, NotEncrypted, BootVolumeOnly, SomeEncrypted, AllEncrypted });
stored_enum!(Gatekeeper <=> m::Gatekeeper { Disabled, AppStoreAndIdentifiedDevelopers, AppStore });
stored_enum!(Sip <=> m::Sip { Enabled, Disabled, NotCollected });
stored_enum!(ThreatLevel <=> m::ThreatLevel { Secured, Low, Medium, High });
stored_enum!(PasswordType <=> m::PasswordType { DeviceDefault, Alphanumeric, Numeric });
stored_enum!(ConnectorState <=> m::ConnectorState { NotConfigured, Enabled, Terminated });
stored_enum!(NoPolicyTreatment <=> m::NoPolicyTreatment { Compliant, Noncompliant });

// ---- the directory ----

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct User<'a> {
    #[serde(default = "version")]
    v: u32,
    id: Cow<'a, str>,
    user_principal_name: Cow<'a, str>,
    device_management_licence: bool,
    premium_identity_licence: bool,
}

impl<'a> From<&'a m::User> for User<'a> {
    fn from(u: &'a m::User) -> Self {
        User {
            v: VERSION,
            id: text(&u.id),
            user_principal_name: text(&u.user_principal_name),
            device_management_licence: u.device_management_licence,
            premium_identity_licence: u.premium_identity_licence,
        }
    }
}

impl TryFrom<User<'_>> for m::User {
    type Error = Error;
    fn try_from(u: User<'_>) -> Result<Self> {
        known(u.v, "user")?;
        Ok(m::User {
            id: u.id.into_owned(),
            user_principal_name: u.user_principal_name.into_owned(),
            device_management_licence: u.device_management_licence,
            premium_identity_licence: u.premium_identity_licence,
        })
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Group<'a> {
    #[serde(default = "version")]
    v: u32,
    id: Cow<'a, str>,
    name: Cow<'a, str>,
    kind: GroupKind,
    members: Vec<Cow<'a, str>>,
}

impl<'a> From<&'a m::Group> for Group<'a> {
    fn from(g: &'a m::Group) -> Self {
        Group { v: VERSION, id: text(&g.id), name: text(&g.name), kind: g.kind.into(), members: texts(&g.members) }
    }
}

impl TryFrom<Group<'_>> for m::Group {
    type Error = Error;
    fn try_from(g: Group<'_>) -> Result<Self> {
        known(g.v, "group")?;
        Ok(m::Group {
            id: g.id.into_owned(),
            name: g.name.into_owned(),
            kind: g.kind.into(),
            members: owned(g.members),
        })
    }
}

// ---- devices ----

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct PasswordFacts {
    required: Option<bool>,
    simple_blocked: Option<bool>,
    min_length: Option<u32>,
    kind: Option<PasswordType>,
    min_character_sets: Option<u32>,
    minutes_of_inactivity_before_lock: Option<u32>,
    expiry_days: Option<u32>,
    previous_passwords_blocked: Option<u32>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct SecurityFacts {
    system_integrity_protection: Option<Sip>,
    file_vault: Option<FileVault>,
    gatekeeper: Option<Gatekeeper>,
    firewall_enabled: Option<bool>,
    firewall_block_all_incoming: Option<bool>,
    firewall_stealth_mode: Option<bool>,
    password: PasswordFacts,
    threat_level: Option<ThreatLevel>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct PartnerVerdict {
    compliant: bool,
    decided_at: i64,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Device<'a> {
    #[serde(default = "version")]
    v: u32,
    id: Cow<'a, str>,
    partner_device_id: Cow<'a, str>,
    serial_number: Cow<'a, str>,
    name: Cow<'a, str>,
    model: Cow<'a, str>,
    user_id: Cow<'a, str>,
    os_version: Cow<'a, str>,
    os_build: Option<Cow<'a, str>>,
    registration: Registration,
    last_check_in: i64,
    last_token_renewal: i64,
    refresh_token_issued: Option<i64>,
    facts: SecurityFacts,
    partner_verdict: Option<PartnerVerdict>,
}

impl<'a> From<&'a m::Device> for Device<'a> {
    fn from(d: &'a m::Device) -> Self {
        let f = &d.facts;
        let p = &f.password;
        Device {
            v: VERSION,
            id: text(&d.id),
            partner_device_id: text(&d.partner_device_id),
            serial_number: text(&d.serial_number),
            name: text(&d.name),
            model: text(&d.model),
            user_id: text(&d.user_id),
            os_version: Cow::Owned(d.os_version.to_string()),
            os_build: d.os_build.as_ref().map(|b| Cow::Owned(b.to_string())),
            registration: d.registration.into(),
            last_check_in: d.last_check_in.0,
            last_token_renewal: d.last_token_renewal.0,
            refresh_token_issued: d.refresh_token_issued.map(|t| t.0),
            facts: SecurityFacts {
                system_integrity_protection: f.system_integrity_protection.map(Into::into),
                file_vault: f.file_vault.map(Into::into),
                gatekeeper: f.gatekeeper.map(Into::into),
                firewall_enabled: f.firewall_enabled,
                firewall_block_all_incoming: f.firewall_block_all_incoming,
                firewall_stealth_mode: f.firewall_stealth_mode,
                password: PasswordFacts {
                    required: p.required,
                    simple_blocked: p.simple_blocked,
                    min_length: p.min_length,
                    kind: p.kind.map(Into::into),
                    min_character_sets: p.min_character_sets,
                    minutes_of_inactivity_before_lock: p.minutes_of_inactivity_before_lock,
                    expiry_days: p.expiry_days,
                    previous_passwords_blocked: p.previous_passwords_blocked,
                },
                threat_level: f.threat_level.map(Into::into),
            },
            partner_verdict: d
                .partner_verdict
                .map(|v| PartnerVerdict { compliant: v.compliant, decided_at: v.decided_at.0 }),
        }
    }
}

impl TryFrom<Device<'_>> for m::Device {
    type Error = Error;
    fn try_from(d: Device<'_>) -> Result<Self> {
        known(d.v, "device")?;
        let f = d.facts;
        Ok(m::Device {
            id: d.id.into_owned(),
            partner_device_id: d.partner_device_id.into_owned(),
            serial_number: d.serial_number.into_owned(),
            name: d.name.into_owned(),
            model: d.model.into_owned(),
            user_id: d.user_id.into_owned(),
            os_version: os_version(&d.os_version)?,
            os_build: d.os_build.as_deref().map(os_build).transpose()?,
            registration: d.registration.into(),
            last_check_in: Timestamp(d.last_check_in),
            last_token_renewal: Timestamp(d.last_token_renewal),
            refresh_token_issued: d.refresh_token_issued.map(Timestamp),
            facts: m::SecurityFacts {
                system_integrity_protection: f.system_integrity_protection.map(Into::into),
                file_vault: f.file_vault.map(Into::into),
                gatekeeper: f.gatekeeper.map(Into::into),
                firewall_enabled: f.firewall_enabled,
                firewall_block_all_incoming: f.firewall_block_all_incoming,
                firewall_stealth_mode: f.firewall_stealth_mode,
                password: m::PasswordFacts {
                    required: f.password.required,
                    simple_blocked: f.password.simple_blocked,
                    min_length: f.password.min_length,
                    kind: f.password.kind.map(Into::into),
                    min_character_sets: f.password.min_character_sets,
                    minutes_of_inactivity_before_lock: f.password.minutes_of_inactivity_before_lock,
                    expiry_days: f.password.expiry_days,
                    previous_passwords_blocked: f.password.previous_passwords_blocked,
                },
                threat_level: f.threat_level.map(Into::into),
            },
            partner_verdict: d
                .partner_verdict
                .map(|v| m::PartnerVerdict { compliant: v.compliant, decided_at: Timestamp(v.decided_at) }),
        })
    }
}

// ---- policies ----

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct PasswordRules {
    required: Option<bool>,
    block_simple: Option<bool>,
    min_length: Option<u32>,
    kind: Option<PasswordType>,
    min_character_sets: Option<u32>,
    max_minutes_of_inactivity_before_lock: Option<u32>,
    max_expiry_days: Option<u32>,
    min_previous_passwords_blocked: Option<u32>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct PolicySettings<'a> {
    os_minimum_version: Option<Cow<'a, str>>,
    os_maximum_version: Option<Cow<'a, str>>,
    os_minimum_build: Option<Cow<'a, str>>,
    os_maximum_build: Option<Cow<'a, str>>,
    system_integrity_protection_required: Option<bool>,
    storage_encryption_required: Option<bool>,
    firewall_enabled: Option<bool>,
    firewall_block_all_incoming: Option<bool>,
    firewall_stealth_mode: Option<bool>,
    gatekeeper_minimum: Option<Gatekeeper>,
    password: PasswordRules,
    max_threat_level: Option<ThreatLevel>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Policy<'a> {
    #[serde(default = "version")]
    v: u32,
    id: Cow<'a, str>,
    name: Cow<'a, str>,
    settings: PolicySettings<'a>,
    grace_period_hours: u32,
    updated_at: i64,
}

fn shown<T: ToString>(v: &Option<T>) -> Option<Cow<'static, str>> {
    v.as_ref().map(|v| Cow::Owned(v.to_string()))
}

impl<'a> From<&'a m::Policy> for Policy<'a> {
    fn from(p: &'a m::Policy) -> Self {
        let s = &p.settings;
        let pw = &s.password;
        Policy {
            v: VERSION,
            id: text(&p.id),
            name: text(&p.name),
            settings: PolicySettings {
                os_minimum_version: shown(&s.os_minimum_version),
                os_maximum_version: shown(&s.os_maximum_version),
                os_minimum_build: shown(&s.os_minimum_build),
                os_maximum_build: shown(&s.os_maximum_build),
                system_integrity_protection_required: s.system_integrity_protection_required,
                storage_encryption_required: s.storage_encryption_required,
                firewall_enabled: s.firewall_enabled,
                firewall_block_all_incoming: s.firewall_block_all_incoming,
                firewall_stealth_mode: s.firewall_stealth_mode,
                gatekeeper_minimum: s.gatekeeper_minimum.map(Into::into),
                password: PasswordRules {
                    required: pw.required,
                    block_simple: pw.block_simple,
                    min_length: pw.min_length,
                    kind: pw.kind.map(Into::into),
                    min_character_sets: pw.min_character_sets,
                    max_minutes_of_inactivity_before_lock: pw.max_minutes_of_inactivity_before_lock,
                    max_expiry_days: pw.max_expiry_days,
                    min_previous_passwords_blocked: pw.min_previous_passwords_blocked,
                },
                max_threat_level: s.max_threat_level.map(Into::into),
            },
            grace_period_hours: p.grace_period_hours,
            updated_at: p.updated_at.0,
        }
    }
}

impl TryFrom<Policy<'_>> for m::Policy {
    type Error = Error;
    fn try_from(p: Policy<'_>) -> Result<Self> {
        known(p.v, "policy")?;
        let s = p.settings;
        let pw = s.password;
        Ok(m::Policy {
            id: p.id.into_owned(),
            name: p.name.into_owned(),
            settings: m::PolicySettings {
                os_minimum_version: s.os_minimum_version.as_deref().map(os_version).transpose()?,
                os_maximum_version: s.os_maximum_version.as_deref().map(os_version).transpose()?,
                os_minimum_build: s.os_minimum_build.as_deref().map(os_build).transpose()?,
                os_maximum_build: s.os_maximum_build.as_deref().map(os_build).transpose()?,
                system_integrity_protection_required: s.system_integrity_protection_required,
                storage_encryption_required: s.storage_encryption_required,
                firewall_enabled: s.firewall_enabled,
                firewall_block_all_incoming: s.firewall_block_all_incoming,
                firewall_stealth_mode: s.firewall_stealth_mode,
                gatekeeper_minimum: s.gatekeeper_minimum.map(Into::into),
                password: m::PasswordRules {
                    required: pw.required,
                    block_simple: pw.block_simple,
                    min_length: pw.min_length,
                    kind: pw.kind.map(Into::into),
                    min_character_sets: pw.min_character_sets,
                    max_minutes_of_inactivity_before_lock: pw.max_minutes_of_inactivity_before_lock,
                    max_expiry_days: pw.max_expiry_days,
                    min_previous_passwords_blocked: pw.min_previous_passwords_blocked,
                },
                max_threat_level: s.max_threat_level.map(Into::into),
            },
            grace_period_hours: p.grace_period_hours,
            updated_at: Timestamp(p.updated_at),
        })
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Assignment<'a> {
    #[serde(default = "version")]
    v: u32,
    policy_id: Cow<'a, str>,
    include_group_ids: Vec<Cow<'a, str>>,
    exclude_group_ids: Vec<Cow<'a, str>>,
}

impl<'a> From<&'a m::Assignment> for Assignment<'a> {
    fn from(a: &'a m::Assignment) -> Self {
        Assignment {
            v: VERSION,
            policy_id: text(&a.policy_id),
            include_group_ids: texts(&a.include_group_ids),
            exclude_group_ids: texts(&a.exclude_group_ids),
        }
    }
}

impl TryFrom<Assignment<'_>> for m::Assignment {
    type Error = Error;
    fn try_from(a: Assignment<'_>) -> Result<Self> {
        known(a.v, "assignment")?;
        Ok(m::Assignment {
            policy_id: a.policy_id.into_owned(),
            include_group_ids: owned(a.include_group_ids),
            exclude_group_ids: owned(a.exclude_group_ids),
        })
    }
}

// ---- the connector and the tenant ----

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Connector<'a> {
    #[serde(default = "version")]
    v: u32,
    state: ConnectorState,
    partner_app_id: Cow<'a, str>,
    partner_version: Option<Cow<'a, str>>,
    include_group_ids: Vec<Cow<'a, str>>,
    exclude_group_ids: Vec<Cow<'a, str>>,
    enabled_at: Option<i64>,
    terminated_at: Option<i64>,
    removal_at: Option<i64>,
}

impl<'a> From<&'a m::Connector> for Connector<'a> {
    fn from(c: &'a m::Connector) -> Self {
        Connector {
            v: VERSION,
            state: c.state.into(),
            partner_app_id: text(&c.partner_app_id),
            partner_version: shown(&c.partner_version),
            include_group_ids: texts(&c.include_group_ids),
            exclude_group_ids: texts(&c.exclude_group_ids),
            enabled_at: c.enabled_at.map(|t| t.0),
            terminated_at: c.terminated_at.map(|t| t.0),
            removal_at: c.removal_at.map(|t| t.0),
        }
    }
}

impl TryFrom<Connector<'_>> for m::Connector {
    type Error = Error;
    fn try_from(c: Connector<'_>) -> Result<Self> {
        known(c.v, "connector")?;
        Ok(m::Connector {
            state: c.state.into(),
            partner_app_id: c.partner_app_id.into_owned(),
            partner_version: c.partner_version.as_deref().map(os_version).transpose()?,
            include_group_ids: owned(c.include_group_ids),
            exclude_group_ids: owned(c.exclude_group_ids),
            enabled_at: c.enabled_at.map(Timestamp),
            terminated_at: c.terminated_at.map(Timestamp),
            removal_at: c.removal_at.map(Timestamp),
        })
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Settings {
    #[serde(default = "version")]
    v: u32,
    no_policy: NoPolicyTreatment,
    validity_days: u32,
}

impl From<&m::TenantSettings> for Settings {
    fn from(s: &m::TenantSettings) -> Self {
        Settings { v: VERSION, no_policy: s.no_policy.into(), validity_days: s.validity_days }
    }
}

impl TryFrom<Settings> for m::TenantSettings {
    type Error = Error;
    fn try_from(s: Settings) -> Result<Self> {
        known(s.v, "settings")?;
        Ok(m::TenantSettings { no_policy: s.no_policy.into(), validity_days: s.validity_days })
    }
}

// ---- the change log ----

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Failure {
    since: i64,
    grace_ends: i64,
}

/// One change as the log keeps it.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum LoggedChange<'a> {
    PutUser(User<'a>),
    DeleteUser(Cow<'a, str>),
    PutGroup(Group<'a>),
    DeleteGroup(Cow<'a, str>),
    PutDevice(Device<'a>),
    DeleteDevice(Cow<'a, str>),
    PutPolicy(Policy<'a>),
    DeletePolicy(Cow<'a, str>),
    PutAssignment(Assignment<'a>),
    PutConnector(Connector<'a>),
    PutSettings(Settings),
    PutFailing { device_id: Cow<'a, str>, policy_id: Cow<'a, str>, failure: Failure },
    DeleteFailing { device_id: Cow<'a, str>, policy_id: Cow<'a, str> },
    PutHeartbeat(i64),
}

impl<'a> From<&'a Change> for LoggedChange<'a> {
    fn from(c: &'a Change) -> Self {
        match c {
            Change::PutUser(u) => LoggedChange::PutUser(u.into()),
            Change::DeleteUser(id) => LoggedChange::DeleteUser(text(id)),
            Change::PutGroup(g) => LoggedChange::PutGroup(g.into()),
            Change::DeleteGroup(id) => LoggedChange::DeleteGroup(text(id)),
            Change::PutDevice(d) => LoggedChange::PutDevice(d.into()),
            Change::DeleteDevice(id) => LoggedChange::DeleteDevice(text(id)),
            Change::PutPolicy(p) => LoggedChange::PutPolicy(p.into()),
            Change::DeletePolicy(id) => LoggedChange::DeletePolicy(text(id)),
            Change::PutAssignment(a) => LoggedChange::PutAssignment(a.into()),
            Change::PutConnector(c) => LoggedChange::PutConnector(c.into()),
            Change::PutSettings(s) => LoggedChange::PutSettings(s.into()),
            Change::PutFailing { device_id, policy_id, failure } => LoggedChange::PutFailing {
                device_id: text(device_id),
                policy_id: text(policy_id),
                failure: Failure { since: failure.since.0, grace_ends: failure.grace_ends.0 },
            },
            Change::DeleteFailing { device_id, policy_id } => {
                LoggedChange::DeleteFailing { device_id: text(device_id), policy_id: text(policy_id) }
            }
            Change::PutHeartbeat(t) => LoggedChange::PutHeartbeat(t.0),
        }
    }
}

impl TryFrom<LoggedChange<'_>> for Change {
    type Error = Error;
    fn try_from(c: LoggedChange<'_>) -> Result<Self> {
        Ok(match c {
            LoggedChange::PutUser(u) => Change::PutUser(u.try_into()?),
            LoggedChange::DeleteUser(id) => Change::DeleteUser(id.into_owned()),
            LoggedChange::PutGroup(g) => Change::PutGroup(g.try_into()?),
            LoggedChange::DeleteGroup(id) => Change::DeleteGroup(id.into_owned()),
            LoggedChange::PutDevice(d) => Change::PutDevice(d.try_into()?),
            LoggedChange::DeleteDevice(id) => Change::DeleteDevice(id.into_owned()),
            LoggedChange::PutPolicy(p) => Change::PutPolicy(p.try_into()?),
            LoggedChange::DeletePolicy(id) => Change::DeletePolicy(id.into_owned()),
            LoggedChange::PutAssignment(a) => Change::PutAssignment(a.try_into()?),
            LoggedChange::PutConnector(c) => Change::PutConnector(c.try_into()?),
            LoggedChange::PutSettings(s) => Change::PutSettings(s.try_into()?),
            LoggedChange::PutFailing { device_id, policy_id, failure } => Change::PutFailing {
                device_id: device_id.into_owned(),
                policy_id: policy_id.into_owned(),
                failure: m::Failure { since: Timestamp(failure.since), grace_ends: Timestamp(failure.grace_ends) },
            },
            LoggedChange::DeleteFailing { device_id, policy_id } => {
                Change::DeleteFailing { device_id: device_id.into_owned(), policy_id: policy_id.into_owned() }
            }
            LoggedChange::PutHeartbeat(t) => Change::PutHeartbeat(Timestamp(t)),
        })
    }
}

// ---- encoding and decoding ----

fn to_json<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::Storage(e.to_string()))
}

/// A stored row's JSON body of the entity `value`.
pub(crate) fn encode<'a, D: 'a, R: From<&'a D> + Serialize>(value: &'a D) -> Result<String> {
    to_json(&R::from(value))
}

/// The entity a stored JSON body holds.
pub(crate) fn decode<'de, R: Deserialize<'de>, D: TryFrom<R, Error = Error>>(body: &'de str) -> Result<D> {
    let record: R = serde_json::from_str(body).map_err(|e| Error::Storage(format!("corrupt row: {e}")))?;
    D::try_from(record)
}

/// A change-log row's JSON body.
pub(crate) fn encode_changes(changes: &[Change]) -> Result<String> {
    to_json(&changes.iter().map(LoggedChange::from).collect::<Vec<_>>())
}

pub(crate) fn decode_changes(body: &str) -> Result<Vec<Change>> {
    let logged: Vec<LoggedChange<'_>> =
        serde_json::from_str(body).map_err(|e| Error::Storage(format!("corrupt change log: {e}")))?;
    logged.into_iter().map(Change::try_from).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn device() -> m::Device {
        m::Device {
            id: "mac-ada".into(),
            partner_device_id: "jamf-1".into(),
            serial_number: "C02".into(),
            name: "Ada's".into(),
            model: "MacBookPro18,3".into(),
            user_id: "ada".into(),
            os_version: "14.2.1".parse().unwrap(),
            os_build: Some("23C71".parse().unwrap()),
            registration: m::Registration::Partner,
            last_check_in: Timestamp(100),
            last_token_renewal: Timestamp(90),
            refresh_token_issued: None,
            facts: m::SecurityFacts {
                file_vault: Some(m::FileVault::AllEncrypted),
                password: m::PasswordFacts { min_length: Some(12), ..Default::default() },
                ..Default::default()
            },
            partner_verdict: Some(m::PartnerVerdict { compliant: true, decided_at: Timestamp(80) }),
        }
    }

    /// The stored form is a format: what a store holds today must read back tomorrow. A
    /// change to it needs a new version and a migration, not a rename.
    #[test]
    fn a_device_is_stored_in_its_version_1_form_and_reads_back() {
        let body = encode::<_, Device>(&device()).unwrap();
        assert_eq!(
            body,
            r#"{"v":1,"id":"mac-ada","partner_device_id":"jamf-1","serial_number":"C02","name":"Ada's","model":"MacBookPro18,3","user_id":"ada","os_version":"14.2.1","os_build":"23C71","registration":"Partner","last_check_in":100,"last_token_renewal":90,"refresh_token_issued":null,"facts":{"system_integrity_protection":null,"file_vault":"AllEncrypted","gatekeeper":null,"firewall_enabled":null,"firewall_block_all_incoming":null,"firewall_stealth_mode":null,"password":{"required":null,"simple_blocked":null,"min_length":12,"kind":null,"min_character_sets":null,"minutes_of_inactivity_before_lock":null,"expiry_days":null,"previous_passwords_blocked":null},"threat_level":null},"partner_verdict":{"compliant":true,"decided_at":80}}"#
        );
        assert_eq!(decode::<Device, m::Device>(&body).unwrap(), device());
        // Written before rows had versions: version 1.
        let unversioned = body.replacen(r#""v":1,"#, "", 1);
        assert_eq!(decode::<Device, m::Device>(&unversioned).unwrap(), device());
    }

    #[test]
    fn a_record_of_an_unknown_version_is_refused_not_misread() {
        let body = encode::<_, Device>(&device()).unwrap().replacen(r#""v":1"#, r#""v":2"#, 1);
        let err = decode::<Device, m::Device>(&body).unwrap_err();
        assert!(err.to_string().contains("device record version 2 is unknown"), "{err}");
    }

    #[test]
    fn every_change_survives_the_log() {
        let policy = m::Policy {
            id: "p".into(),
            name: "P".into(),
            settings: m::PolicySettings {
                os_minimum_version: Some("13.0".parse().unwrap()),
                os_maximum_build: Some("24A1".parse().unwrap()),
                gatekeeper_minimum: Some(m::Gatekeeper::AppStore),
                ..Default::default()
            },
            grace_period_hours: 24,
            updated_at: Timestamp(5),
        };
        let changes = vec![
            Change::PutUser(m::User {
                id: "u".into(),
                user_principal_name: "u@x".into(),
                device_management_licence: true,
                premium_identity_licence: false,
            }),
            Change::DeleteUser("u".into()),
            Change::PutGroup(m::Group {
                id: "g".into(),
                name: "G".into(),
                kind: m::GroupKind::Device,
                members: vec!["d".into()],
            }),
            Change::DeleteGroup("g".into()),
            Change::PutDevice(device()),
            Change::DeleteDevice("d".into()),
            Change::PutPolicy(policy),
            Change::DeletePolicy("p".into()),
            Change::PutAssignment(m::Assignment {
                policy_id: "p".into(),
                include_group_ids: vec!["a".into()],
                exclude_group_ids: vec!["b".into()],
            }),
            Change::PutConnector(m::Connector {
                state: m::ConnectorState::Terminated,
                partner_app_id: "jamf".into(),
                partner_version: Some("11.0.0".parse().unwrap()),
                include_group_ids: vec!["a".into()],
                exclude_group_ids: vec![],
                enabled_at: Some(Timestamp(1)),
                terminated_at: Some(Timestamp(2)),
                removal_at: Some(Timestamp(3)),
            }),
            Change::PutSettings(m::TenantSettings { no_policy: m::NoPolicyTreatment::Noncompliant, validity_days: 7 }),
            Change::PutFailing {
                device_id: "d".into(),
                policy_id: "p".into(),
                failure: m::Failure { since: Timestamp(10), grace_ends: Timestamp(20) },
            },
            Change::DeleteFailing { device_id: "d".into(), policy_id: "p".into() },
            Change::PutHeartbeat(Timestamp(30)),
        ];
        assert_eq!(decode_changes(&encode_changes(&changes).unwrap()).unwrap(), changes);
    }
}
