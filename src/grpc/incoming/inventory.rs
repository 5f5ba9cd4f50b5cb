//! Partner reports: each report checked on its own, so one bad report refuses only itself.

use super::*;

impl TryFrom<&pb::DeviceReport> for m::Device {
    type Error = Error;

    fn try_from(r: &pb::DeviceReport) -> Result<m::Device> {
        let registration = match known::<pb::Registration>("registration", r.registration)? {
            pb::Registration::Unspecified => {
                return Err(Error::invalid("registration", "is required (PARTNER or DIRECT)"));
            }
            pb::Registration::Partner => m::Registration::Partner,
            pb::Registration::Direct => m::Registration::Direct,
        };
        if r.os_version.is_empty() {
            return Err(Error::invalid("os_version", "is required, e.g. 14.2.1"));
        }
        if r.serial_number.is_empty() {
            return Err(Error::invalid("serial_number", "is required"));
        }
        let partner_verdict = match &r.partner_verdict {
            None => None,
            Some(v) => Some(m::PartnerVerdict {
                compliant: v.compliant,
                decided_at: time("partner_verdict.decided_at", v.decided_at.as_ref())?,
            }),
        };
        Ok(m::Device {
            id: id("device_id", &r.device_id)?.into(),
            partner_device_id: text("partner_device_id", &r.partner_device_id, MAX_ID_LEN)?.into(),
            serial_number: text("serial_number", &r.serial_number, 64)?.into(),
            name: text("name", &r.name, 256)?.into(),
            model: text("model", &r.model, MAX_ID_LEN)?.into(),
            user_id: id("user_id", &r.user_id)?.into(),
            os_version: version("os_version", &r.os_version)?,
            os_build: opt_build("os_build", &r.os_build)?,
            registration,
            last_check_in: time("last_check_in", r.last_check_in.as_ref())?,
            last_token_renewal: time("last_token_renewal", r.last_token_renewal.as_ref())?,
            refresh_token_issued: match &r.refresh_token_issued {
                None => None,
                Some(t) => Some(time("refresh_token_issued", Some(t))?),
            },
            facts: facts(r)?,
            partner_verdict,
        })
    }
}

fn facts(r: &pb::DeviceReport) -> Result<m::SecurityFacts> {
    let pw = r.password.unwrap_or_default();
    Ok(m::SecurityFacts {
        system_integrity_protection: match known::<pb::SipState>(
            "system_integrity_protection",
            r.system_integrity_protection,
        )? {
            pb::SipState::Unspecified => None,
            pb::SipState::Enabled => Some(m::Sip::Enabled),
            pb::SipState::Disabled => Some(m::Sip::Disabled),
            pb::SipState::NotCollected => Some(m::Sip::NotCollected),
        },
        file_vault: match known::<pb::FileVaultState>("file_vault", r.file_vault)? {
            pb::FileVaultState::Unspecified => None,
            pb::FileVaultState::NotApplicable => Some(m::FileVault::NotApplicable),
            pb::FileVaultState::NotEncrypted => Some(m::FileVault::NotEncrypted),
            pb::FileVaultState::BootVolumeOnly => Some(m::FileVault::BootVolumeOnly),
            pb::FileVaultState::SomeEncrypted => Some(m::FileVault::SomeEncrypted),
            pb::FileVaultState::AllEncrypted => Some(m::FileVault::AllEncrypted),
        },
        gatekeeper: match known::<pb::GatekeeperState>("gatekeeper", r.gatekeeper)? {
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
            kind: password_type("password.type", pw.r#type)?,
            min_character_sets: pw.min_character_sets,
            minutes_of_inactivity_before_lock: pw.minutes_of_inactivity_before_lock,
            expiry_days: pw.expiry_days,
            previous_passwords_blocked: pw.previous_passwords_blocked,
        },
        threat_level: threat("threat_level", r.threat_level)?,
    })
}

/// A batch of reports: the batch itself must be 1 to [`MAX_BATCH`] reports; each report is
/// checked on its own (its error names `devices[i]`), so one bad report refuses only itself.
pub fn reports(r: &pb::ReportInventoryRequest) -> Result<Vec<(String, Result<m::Device>)>> {
    let devices = &r.devices;
    if devices.is_empty() {
        return Err(Error::invalid("devices", format!("is empty: send 1 to {MAX_BATCH} reports")));
    }
    if devices.len() > MAX_BATCH {
        let msg = format!("has {} reports; send at most {MAX_BATCH} per batch", devices.len());
        return Err(Error::invalid("devices", msg));
    }
    let mut first: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    Ok(devices
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let checked = m::Device::try_from(d).map_err(|e| e.within(&format!("devices[{i}]")));
            // A Mac reported twice in one batch: which report is meant? Refuse the repeat.
            let checked = checked.and_then(|device| match first.insert(&d.device_id, i) {
                Some(j) => Err(Error::invalid(
                    format!("devices[{i}].device_id"),
                    format!("repeats devices[{j}].device_id: report each Mac once per batch"),
                )),
                None => Ok(device),
            });
            (short(&d.device_id), checked)
        })
        .collect())
}
