//! The stored form of a device: what the partner last reported of a Mac.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::*;
use crate::domain::Timestamp;

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct PasswordFacts {
    #[serde(rename = "req", alias = "required", default, skip_serializing_if = "Option::is_none")]
    required: Option<bool>,
    #[serde(rename = "simple", alias = "simple_blocked", default, skip_serializing_if = "Option::is_none")]
    simple_blocked: Option<bool>,
    #[serde(rename = "min_len", alias = "min_length", default, skip_serializing_if = "Option::is_none")]
    min_length: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kind: Option<PasswordType>,
    #[serde(rename = "sets", alias = "min_character_sets", default, skip_serializing_if = "Option::is_none")]
    min_character_sets: Option<u32>,
    #[serde(
        rename = "lock_after",
        alias = "minutes_of_inactivity_before_lock",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    minutes_of_inactivity_before_lock: Option<u32>,
    #[serde(rename = "expiry", alias = "expiry_days", default, skip_serializing_if = "Option::is_none")]
    expiry_days: Option<u32>,
    #[serde(
        rename = "history",
        alias = "previous_passwords_blocked",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    previous_passwords_blocked: Option<u32>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct SecurityFacts {
    #[serde(rename = "sip", alias = "system_integrity_protection", default, skip_serializing_if = "Option::is_none")]
    system_integrity_protection: Option<Sip>,
    #[serde(rename = "fv", alias = "file_vault", default, skip_serializing_if = "Option::is_none")]
    file_vault: Option<FileVault>,
    #[serde(rename = "gk", alias = "gatekeeper", default, skip_serializing_if = "Option::is_none")]
    gatekeeper: Option<Gatekeeper>,
    #[serde(rename = "fw", alias = "firewall_enabled", default, skip_serializing_if = "Option::is_none")]
    firewall_enabled: Option<bool>,
    #[serde(
        rename = "fw_block",
        alias = "firewall_block_all_incoming",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    firewall_block_all_incoming: Option<bool>,
    #[serde(rename = "fw_stealth", alias = "firewall_stealth_mode", default, skip_serializing_if = "Option::is_none")]
    firewall_stealth_mode: Option<bool>,
    #[serde(rename = "pw", alias = "password", default)]
    password: PasswordFacts,
    #[serde(rename = "threat", alias = "threat_level", default, skip_serializing_if = "Option::is_none")]
    threat_level: Option<ThreatLevel>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct PartnerVerdict {
    compliant: bool,
    decided_at: i64,
}

/// Version 2 writes short keys and leaves out what was not reported: it halves a device's row
/// and its change-log entries. Version 1 rows, with their long keys, still read.
const DEVICE_VERSION: u32 = 2;

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Device<'a> {
    #[serde(default = "version")]
    v: u32,
    id: Cow<'a, str>,
    #[serde(rename = "pid", alias = "partner_device_id")]
    partner_device_id: Cow<'a, str>,
    #[serde(rename = "sn", alias = "serial_number")]
    serial_number: Cow<'a, str>,
    name: Cow<'a, str>,
    model: Cow<'a, str>,
    #[serde(rename = "user", alias = "user_id")]
    user_id: Cow<'a, str>,
    #[serde(rename = "os", alias = "os_version")]
    os_version: Cow<'a, str>,
    #[serde(rename = "build", alias = "os_build", default, skip_serializing_if = "Option::is_none")]
    os_build: Option<Cow<'a, str>>,
    #[serde(rename = "reg", alias = "registration")]
    registration: Registration,
    #[serde(rename = "seen", alias = "last_check_in")]
    last_check_in: i64,
    #[serde(rename = "token", alias = "last_token_renewal")]
    last_token_renewal: i64,
    #[serde(rename = "refresh", alias = "refresh_token_issued", default, skip_serializing_if = "Option::is_none")]
    refresh_token_issued: Option<i64>,
    #[serde(rename = "f", alias = "facts")]
    facts: SecurityFacts,
    #[serde(rename = "verdict", alias = "partner_verdict", default, skip_serializing_if = "Option::is_none")]
    partner_verdict: Option<PartnerVerdict>,
}

impl<'a> From<&'a m::Device> for Device<'a> {
    fn from(d: &'a m::Device) -> Self {
        let f = &d.facts;
        let p = &f.password;
        Device {
            v: DEVICE_VERSION,
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
        if d.v != 1 {
            known_as(d.v, DEVICE_VERSION, "device")?;
        }
        let f = d.facts;
        Ok(m::Device {
            id: d.id.into(),
            partner_device_id: d.partner_device_id.into(),
            serial_number: d.serial_number.into(),
            name: d.name.into(),
            model: d.model.into(),
            user_id: d.user_id.into(),
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
