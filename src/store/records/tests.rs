//! The stored formats: pinned, versioned, and every change round trip.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::domain::Timestamp;

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
fn a_device_is_stored_in_its_version_2_form_and_reads_back() {
    let body = encode::<_, Device>(&device()).unwrap();
    assert_eq!(
        body,
        r#"{"v":2,"id":"mac-ada","pid":"jamf-1","sn":"C02","name":"Ada's","model":"MacBookPro18,3","user":"ada","os":"14.2.1","build":"23C71","reg":"Partner","seen":100,"token":90,"f":{"fv":"AllEncrypted","pw":{"min_len":12}},"verdict":{"compliant":true,"decided_at":80}}"#
    );
    assert_eq!(decode::<Device, m::Device>(&body).unwrap(), device());
}

/// Devices written by earlier builds: version 1's long keys, with or without the version.
#[test]
fn a_device_in_its_version_1_form_still_reads() {
    let body = r#"{"v":1,"id":"mac-ada","partner_device_id":"jamf-1","serial_number":"C02","name":"Ada's","model":"MacBookPro18,3","user_id":"ada","os_version":"14.2.1","os_build":"23C71","registration":"Partner","last_check_in":100,"last_token_renewal":90,"refresh_token_issued":null,"facts":{"system_integrity_protection":null,"file_vault":"AllEncrypted","gatekeeper":null,"firewall_enabled":null,"firewall_block_all_incoming":null,"firewall_stealth_mode":null,"password":{"required":null,"simple_blocked":null,"min_length":12,"kind":null,"min_character_sets":null,"minutes_of_inactivity_before_lock":null,"expiry_days":null,"previous_passwords_blocked":null},"threat_level":null},"partner_verdict":{"compliant":true,"decided_at":80}}"#;
    assert_eq!(decode::<Device, m::Device>(body).unwrap(), device());
    let unversioned = body.replacen(r#""v":1,"#, "", 1);
    assert_eq!(decode::<Device, m::Device>(&unversioned).unwrap(), device());
}

#[test]
fn a_record_of_an_unknown_version_is_refused_not_misread() {
    let body = encode::<_, Device>(&device()).unwrap().replacen(r#""v":2"#, r#""v":3"#, 1);
    let err = decode::<Device, m::Device>(&body).unwrap_err();
    assert!(err.to_string().contains("device record version 3 is unknown"), "{err}");
    let policy = m::Policy {
        id: "p".into(),
        name: "P".into(),
        settings: m::PolicySettings::default(),
        grace_period_hours: 0,
        updated_at: Timestamp(0),
    };
    let body = encode::<_, Policy>(&policy).unwrap().replacen(r#""v":1"#, r#""v":2"#, 1);
    let err = decode::<Policy, m::Policy>(&body).unwrap_err();
    assert!(err.to_string().contains("policy record version 2 is unknown"), "{err}");
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
