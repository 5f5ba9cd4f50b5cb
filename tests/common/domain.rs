//! Builders of domain values, for the tests that work below the gRPC edge.

use posture::domain::Timestamp;
use posture::domain::model::{Device, FileVault, Gatekeeper, PasswordFacts, Registration, SecurityFacts, Sip};

/// A healthy Mac registered through the partner: macOS 14.2.1 (23C71), SIP on, FileVault on
/// all volumes, Gatekeeper App Store and identified developers, firewall on with stealth mode,
/// a 12-character password; checked in ten minutes before `now`, token renewed an hour
/// before, refresh token a day old.
pub fn healthy_mac(id: &str, user_id: &str, serial: &str, now: Timestamp) -> Device {
    Device {
        id: id.into(),
        partner_device_id: format!("jamf-{id}").into(),
        serial_number: serial.into(),
        name: format!("{user_id}'s MacBook").into(),
        model: "MacBookPro18,3".into(),
        user_id: user_id.into(),
        os_version: "14.2.1".parse().unwrap(),
        os_build: Some("23C71".parse().unwrap()),
        registration: Registration::Partner,
        last_check_in: now.plus_secs(-600),
        last_token_renewal: now.plus_secs(-3600),
        refresh_token_issued: Some(now.plus_days(-1)),
        facts: SecurityFacts {
            system_integrity_protection: Some(Sip::Enabled),
            file_vault: Some(FileVault::AllEncrypted),
            gatekeeper: Some(Gatekeeper::AppStoreAndIdentifiedDevelopers),
            firewall_enabled: Some(true),
            firewall_block_all_incoming: Some(false),
            firewall_stealth_mode: Some(true),
            password: PasswordFacts { required: Some(true), min_length: Some(12), ..Default::default() },
            threat_level: None,
        },
        partner_verdict: None,
    }
}
