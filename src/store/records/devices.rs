//! The stored form of a device: what the partner last reported of a Mac.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::*;
use crate::domain::Timestamp;

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
