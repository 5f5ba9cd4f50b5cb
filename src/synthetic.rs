//! Synthetic organisations of any size, deterministic from a seed: for `posture generate`,
//! the benchmarks and the load tests. Users are in `groups_per_user` user groups each plus the
//! `all-users` group, which the connector includes and every policy is assigned to; every
//! policy configures every macOS setting; most Macs are compliant.

use crate::domain::Change;
use crate::domain::Timestamp;
use crate::domain::model::{
    Assignment, Connector, ConnectorState, Device, FileVault, Gatekeeper, Group, GroupKind, PasswordFacts,
    PasswordRules, PasswordType, Policy, PolicySettings, Registration, SecurityFacts, Sip, ThreatLevel, User,
};

#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub users: usize,
    pub devices: usize,
    pub groups: usize,
    pub groups_per_user: usize,
    pub policies: usize,
    pub seed: u64,
    pub now: Timestamp,
}

impl Default for Spec {
    fn default() -> Self {
        Spec { users: 1_000, devices: 1_000, groups: 100, groups_per_user: 5, policies: 10, seed: 1, now: Timestamp(0) }
    }
}

/// splitmix64: a tiny, good-enough deterministic generator.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

pub fn user_id(i: usize) -> String {
    format!("user-{i:07}")
}
pub fn device_id(i: usize) -> String {
    format!("mac-{i:07}")
}
pub fn group_id(i: usize) -> String {
    format!("group-{i:06}")
}
pub const ALL_USERS: &str = "all-users";

/// A policy that configures every macOS setting of the reference model.
pub fn full_policy(i: usize, now: Timestamp) -> Policy {
    Policy {
        id: format!("policy-{i:02}"),
        name: format!("Full macOS policy {i}"),
        settings: PolicySettings {
            os_minimum_version: Some("13.0".parse().expect("valid")),
            os_maximum_version: Some("15.9".parse().expect("valid")),
            os_minimum_build: Some("22A380".parse().expect("valid")),
            os_maximum_build: Some("24Z999".parse().expect("valid")),
            system_integrity_protection_required: Some(true),
            storage_encryption_required: Some(true),
            firewall_enabled: Some(true),
            firewall_block_all_incoming: Some(true),
            firewall_stealth_mode: Some(true),
            gatekeeper_minimum: Some(Gatekeeper::AppStoreAndIdentifiedDevelopers),
            password: PasswordRules {
                required: Some(true),
                block_simple: Some(true),
                min_length: Some(8 + (i % 4) as u32),
                kind: Some(PasswordType::Alphanumeric),
                min_character_sets: Some(2),
                max_minutes_of_inactivity_before_lock: Some(15),
                max_expiry_days: Some(365),
                min_previous_passwords_blocked: Some(5),
            },
            max_threat_level: Some(ThreatLevel::Low),
        },
        grace_period_hours: (i as u32 % 3) * 24,
        updated_at: now.plus_days(-30),
    }
}

/// A Mac that meets `full_policy`, unless `seed` makes it fail one setting (1 in 10).
pub fn mac(i: usize, user: usize, seed: u64, now: Timestamp) -> Device {
    let r = mix(seed ^ (i as u64).wrapping_mul(31));
    let mut d = Device {
        id: device_id(i),
        partner_device_id: format!("jamf-{i}"),
        serial_number: format!("C02{i:09}"),
        name: format!("Mac {i}"),
        model: "MacBookPro18,3".to_string(),
        user_id: user_id(user),
        os_version: "14.2.1".parse().expect("valid"),
        os_build: Some("23C71".parse().expect("valid")),
        registration: Registration::Partner,
        last_check_in: now.plus_secs(-((r % 900) as i64)),
        last_token_renewal: now.plus_secs(-((r % 40_000) as i64)),
        refresh_token_issued: Some(now.plus_days(-1)),
        facts: SecurityFacts {
            system_integrity_protection: Some(Sip::Enabled),
            file_vault: Some(FileVault::AllEncrypted),
            gatekeeper: Some(Gatekeeper::AppStore),
            firewall_enabled: Some(true),
            firewall_block_all_incoming: Some(true),
            firewall_stealth_mode: Some(true),
            password: PasswordFacts {
                required: Some(true),
                simple_blocked: Some(true),
                min_length: Some(12),
                kind: Some(PasswordType::Alphanumeric),
                min_character_sets: Some(3),
                minutes_of_inactivity_before_lock: Some(5),
                expiry_days: Some(90),
                previous_passwords_blocked: Some(10),
            },
            threat_level: Some(ThreatLevel::Secured),
        },
        partner_verdict: None,
    };
    if r.is_multiple_of(10) {
        d.facts.file_vault = Some(FileVault::BootVolumeOnly);
    }
    d
}

/// The organisation as changes, in an order that can be applied or committed as it comes.
/// `batch` bounds the devices per yielded chunk.
pub fn organisation(spec: Spec, mut emit: impl FnMut(Vec<Change>), batch: usize) {
    let users: Vec<Change> = (0..spec.users)
        .map(|i| {
            Change::PutUser(User {
                id: user_id(i),
                user_principal_name: format!("user{i}@example.com"),
                device_management_licence: true,
                premium_identity_licence: !mix(spec.seed ^ i as u64).is_multiple_of(50),
            })
        })
        .collect();
    for chunk in users.chunks(batch.max(1)) {
        emit(chunk.to_vec());
    }
    drop(users);
    let mut members: Vec<Vec<String>> = vec![Vec::new(); spec.groups];
    if spec.groups > 0 {
        for u in 0..spec.users {
            for k in 0..spec.groups_per_user {
                let g = (mix(spec.seed ^ ((u * 131 + k) as u64)) % spec.groups as u64) as usize;
                members[g].push(user_id(u));
            }
        }
    }
    let mut groups: Vec<Change> = members
        .into_iter()
        .enumerate()
        .map(|(i, mut m)| {
            m.sort();
            m.dedup();
            Change::PutGroup(Group { id: group_id(i), name: group_id(i), kind: GroupKind::User, members: m })
        })
        .collect();
    groups.push(Change::PutGroup(Group {
        id: ALL_USERS.into(),
        name: ALL_USERS.into(),
        kind: GroupKind::User,
        members: (0..spec.users).map(user_id).collect(),
    }));
    for chunk in groups.chunks(batch.max(1) / 10 + 1) {
        emit(chunk.to_vec());
    }
    drop(groups);
    let mut admin = Vec::new();
    for p in 0..spec.policies {
        let policy = full_policy(p, spec.now);
        admin.push(Change::PutAssignment(Assignment {
            policy_id: policy.id.clone(),
            include_group_ids: vec![ALL_USERS.into()],
            exclude_group_ids: vec![],
        }));
        admin.insert(0, Change::PutPolicy(policy));
    }
    admin.push(Change::PutConnector(Connector {
        state: ConnectorState::Enabled,
        partner_app_id: "jamf-load".into(),
        partner_version: Some("11.4.0".parse().expect("valid")),
        include_group_ids: vec![ALL_USERS.into()],
        exclude_group_ids: if spec.groups > 0 { vec![group_id(0)] } else { vec![] },
        enabled_at: Some(spec.now.plus_days(-60)),
        terminated_at: None,
        removal_at: None,
    }));
    emit(admin);
    let mut chunk = Vec::with_capacity(batch);
    for i in 0..spec.devices {
        let user = if spec.users == 0 { 0 } else { i % spec.users };
        chunk.push(Change::PutDevice(mac(i, user, spec.seed, spec.now)));
        if chunk.len() == batch {
            emit(std::mem::take(&mut chunk));
        }
    }
    if !chunk.is_empty() {
        emit(chunk);
    }
}

/// The organisation as an in-memory state (for benchmarks).
pub fn state(spec: Spec) -> crate::domain::State {
    let mut state = crate::domain::State::default();
    organisation(spec, |changes| changes.into_iter().for_each(|c| drop(state.apply(c))), 10_000);
    state
}
