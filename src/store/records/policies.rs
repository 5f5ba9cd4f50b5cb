//! The stored forms of policies and their assignments.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::*;
use crate::domain::Timestamp;

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
