//! `--demo`: a small sample organisation, written through the engine like any other data,
//! so that the README's examples show every outcome.

use crate::auth::{CredentialConfig, Role, sha256_hex};
use crate::domain::Timestamp;
use crate::domain::model::{
    Device, FileVault, Gatekeeper, Group, GroupKind, PasswordFacts, PasswordRules, Policy, PolicySettings,
    Registration, SecurityFacts, Sip, User,
};
use crate::engine::{Engine, GroupTargets};

/// Demo secrets: `demo-admin`, `demo-gateway`, and `demo-partner` for partner app `jamf-demo`.
pub fn credentials() -> Vec<CredentialConfig> {
    let cred = |id: &str, role, secret: &str| CredentialConfig {
        id: id.to_string(),
        role,
        secret_sha256: vec![sha256_hex(secret)],
    };
    vec![
        cred("demo-admin", Role::Admin, "demo-admin"),
        cred("demo-gateway", Role::Gateway, "demo-gateway"),
        cred("jamf-demo", Role::Partner, "demo-partner"),
    ]
}

fn user(id: &str, licensed: bool) -> User {
    User {
        id: id.to_string(),
        user_principal_name: format!("{id}@example.com"),
        device_management_licence: true,
        premium_identity_licence: licensed,
    }
}

fn group(id: &str, kind: GroupKind, members: &[&str]) -> Group {
    Group { id: id.to_string(), name: id.to_string(), kind, members: members.iter().map(|m| m.to_string()).collect() }
}

/// A healthy, partner-registered Mac that checked in ten minutes ago.
fn healthy_mac(id: &str, user_id: &str, serial: &str, now: Timestamp) -> Device {
    Device {
        id: id.into(),
        partner_device_id: format!("jamf-{id}").into(),
        serial_number: serial.into(),
        name: format!("{user_id}'s MacBook").into(),
        model: "MacBookPro18,3".into(),
        user_id: user_id.into(),
        os_version: "14.2.1".parse().expect("valid version"),
        os_build: Some("23C71".parse().expect("valid build")),
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

/// Loads the sample organisation into an empty store; leaves a store with data alone.
pub async fn seed(engine: &Engine) -> anyhow::Result<()> {
    if engine.revision() > 0 {
        tracing::info!("--demo: the store already holds data; not seeding");
        return Ok(());
    }
    let now = engine.now();
    let users = ["ada", "bob", "cara", "dan", "erin", "finn", "gus"].map(|u| user(u, true));
    let mut users = users.to_vec();
    users.push(user("hal", false));
    let groups = vec![
        group("mac-users", GroupKind::User, &["ada", "bob", "cara", "dan", "erin", "finn", "gus", "hal"]),
        group("contractors", GroupKind::User, &["gus"]),
        group("engineering", GroupKind::User, &["cara", "ada"]),
        group("lab-macs", GroupKind::Device, &["mac-lab-1"]),
    ];
    engine.sync_directory(users, groups, vec![], vec![]).await?;

    let baseline = Policy {
        id: "baseline".into(),
        name: "macOS baseline".into(),
        settings: PolicySettings {
            os_minimum_version: Some("13.0".parse()?),
            system_integrity_protection_required: Some(true),
            storage_encryption_required: Some(true),
            firewall_enabled: Some(true),
            gatekeeper_minimum: Some(Gatekeeper::AppStoreAndIdentifiedDevelopers),
            ..Default::default()
        },
        grace_period_hours: 0,
        updated_at: now,
    };
    let passwords = Policy {
        id: "engineering-passwords".into(),
        name: "Engineering passwords".into(),
        settings: PolicySettings {
            password: PasswordRules { required: Some(true), min_length: Some(14), ..Default::default() },
            ..Default::default()
        },
        grace_period_hours: 72,
        updated_at: now,
    };
    engine.create_policy(baseline).await?;
    engine.create_policy(passwords).await?;
    let to =
        |include: &[&str]| GroupTargets { include: include.iter().map(|s| s.to_string()).collect(), exclude: vec![] };
    engine.assign_policy("baseline", to(&["mac-users"])).await?;
    engine.assign_policy("engineering-passwords", to(&["engineering"])).await?;
    let targets = GroupTargets { include: vec!["mac-users".into()], exclude: vec!["contractors".into()] };
    engine.enable_connector("jamf-demo".into(), "11.4.0".parse()?, targets).await?;

    let mut ada = healthy_mac("mac-ada", "ada", "C02ADA0001", now);
    ada.facts.password.min_length = Some(16);
    let mut bob = healthy_mac("mac-bob", "bob", "C02BOB0001", now);
    bob.facts.file_vault = Some(FileVault::NotEncrypted);
    let cara = healthy_mac("mac-cara", "cara", "C02CARA001", now);
    let mut dan = healthy_mac("mac-dan", "dan", "C02DAN0001", now);
    dan.last_check_in = now.plus_hours(-30);
    let erin_1 = healthy_mac("mac-erin-1", "erin", "C02ERIN001", now);
    let erin_2 = healthy_mac("mac-erin-2", "erin", "C02ERIN001", now);
    let mut finn = healthy_mac("mac-finn", "finn", "C02FINN001", now);
    finn.registration = Registration::Direct;
    let gus = healthy_mac("mac-gus", "gus", "C02GUS0001", now);
    let hal = healthy_mac("mac-hal", "hal", "C02HAL0001", now);
    let devices = [ada, bob, cara, dan, erin_1, erin_2, finn, gus, hal];
    let items = devices.into_iter().map(|d| (d.id.to_string(), Ok(d))).collect();
    engine.report_inventory(None, items).await?;
    tracing::info!(revision = engine.revision(), "--demo: sample organisation loaded");
    Ok(())
}
