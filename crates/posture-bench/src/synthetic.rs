//! Synthetic organisations of any size, deterministic from a seed, as the requests an
//! administrator and the partner would send: for `posture-bench generate`, the benchmarks and
//! the load tests. Users are in `groups_per_user` user groups each plus the `all-users`
//! group, which the connector includes and every policy is assigned to; every policy
//! configures every macOS setting; most Macs are compliant. [`crate::load`] writes them
//! through posture's own validation.

use posture::proto as pb;

#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub users: usize,
    pub devices: usize,
    pub groups: usize,
    pub groups_per_user: usize,
    pub policies: usize,
    pub seed: u64,
}

impl Default for Spec {
    fn default() -> Self {
        Spec { users: 1_000, devices: 1_000, groups: 100, groups_per_user: 5, policies: 10, seed: 1 }
    }
}

/// `all-users` lists every user, and posture takes at most 1,000,000 members per group.
pub const MAX_USERS: usize = 1_000_000;

/// Users per directory sync: each sync is one durable commit.
const USERS_PER_SYNC: usize = 10_000;
/// Groups per directory sync (tens of members each, `all-users` every user).
const GROUPS_PER_SYNC: usize = 1_000;
/// Reports per inventory batch: ReportInventory's maximum.
const REPORTS_PER_BATCH: usize = 1_000;

/// One write, as the request of its RPC.
#[derive(Debug)]
pub enum Write {
    SyncDirectory(pb::SyncDirectoryRequest),
    CreatePolicy(pb::CreatePolicyRequest),
    AssignPolicy(pb::AssignPolicyRequest),
    EnableConnector(pb::EnableConnectorRequest),
    ReportInventory(pb::ReportInventoryRequest),
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

fn at(seconds: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds, nanos: 0 })
}

/// A policy that configures every macOS setting.
pub fn full_policy(i: usize) -> pb::Policy {
    pb::Policy {
        id: format!("policy-{i:02}"),
        name: format!("Full macOS policy {i}"),
        settings: Some(pb::PolicySettings {
            os_minimum_version: "13.0".into(),
            os_maximum_version: "15.9".into(),
            os_minimum_build: "22A380".into(),
            os_maximum_build: "24Z999".into(),
            system_integrity_protection_required: Some(true),
            storage_encryption_required: Some(true),
            firewall_enabled: Some(true),
            firewall_block_all_incoming: Some(true),
            firewall_stealth_mode: Some(true),
            gatekeeper: pb::GatekeeperRequirement::AppStoreAndIdentifiedDevelopers as i32,
            password: Some(pb::PasswordRules {
                required: Some(true),
                block_simple: Some(true),
                min_length: Some(8 + (i % 4) as u32),
                r#type: pb::PasswordType::Alphanumeric as i32,
                min_character_sets: Some(2),
                max_minutes_of_inactivity_before_lock: Some(15),
                max_expiry_days: Some(365),
                min_previous_passwords_blocked: Some(5),
            }),
            max_threat_level: pb::ThreatLevel::Low as i32,
        }),
        grace_period_hours: (i as u32 % 3) * 24,
        ..Default::default()
    }
}

/// Mac `i` of `user`: partner-registered, checked in and renewed at `now`, with SIP,
/// FileVault, Gatekeeper and the firewall on. The load generators' reports.
pub fn healthy_mac(i: usize, user: usize, now: i64) -> pb::DeviceReport {
    pb::DeviceReport {
        device_id: device_id(i),
        partner_device_id: format!("jamf-{i}"),
        serial_number: format!("C02{i:09}"),
        name: format!("Mac {i}"),
        model: "MacBookPro18,3".into(),
        user_id: user_id(user),
        os_version: "14.2.1".into(),
        os_build: "23C71".into(),
        registration: pb::Registration::Partner as i32,
        last_check_in: at(now),
        last_token_renewal: at(now),
        system_integrity_protection: pb::SipState::Enabled as i32,
        file_vault: pb::FileVaultState::AllEncrypted as i32,
        gatekeeper: pb::GatekeeperState::AppStore as i32,
        firewall_enabled: Some(true),
        firewall_block_all_incoming: Some(true),
        firewall_stealth_mode: Some(true),
        ..Default::default()
    }
}

/// A Mac that meets `full_policy`, unless `seed` makes it fail one setting (1 in 10), with
/// its check-in and token renewal spread over the last minutes and hours.
pub fn mac(i: usize, user: usize, seed: u64, now: i64) -> pb::DeviceReport {
    let r = mix(seed ^ (i as u64).wrapping_mul(31));
    let file_vault =
        if r.is_multiple_of(10) { pb::FileVaultState::BootVolumeOnly } else { pb::FileVaultState::AllEncrypted };
    pb::DeviceReport {
        last_check_in: at(now - (r % 900) as i64),
        last_token_renewal: at(now - (r % 40_000) as i64),
        refresh_token_issued: at(now - 86_400),
        file_vault: file_vault as i32,
        password: Some(pb::PasswordFacts {
            required: Some(true),
            simple_blocked: Some(true),
            min_length: Some(12),
            r#type: pb::PasswordType::Alphanumeric as i32,
            min_character_sets: Some(3),
            minutes_of_inactivity_before_lock: Some(5),
            expiry_days: Some(90),
            previous_passwords_blocked: Some(10),
        }),
        threat_level: pb::ThreatLevel::Secured as i32,
        ..healthy_mac(i, user, now)
    }
}

fn user(i: usize, seed: u64) -> pb::User {
    pb::User {
        id: user_id(i),
        user_principal_name: format!("user{i}@example.com"),
        device_management_licence: true,
        premium_identity_licence: !mix(seed ^ i as u64).is_multiple_of(50),
    }
}

fn user_group(id: String, member_ids: Vec<String>) -> pb::Group {
    pb::Group { name: id.clone(), id, kind: pb::GroupKind::User as i32, member_ids }
}

/// The user groups, each user in `groups_per_user` of them (drawn from the seed), then
/// `all-users`. Member lists go unsorted: the directory sync sorts and deduplicates them.
fn groups(spec: Spec) -> Vec<pb::Group> {
    let mut members: Vec<Vec<String>> = vec![Vec::new(); spec.groups];
    if spec.groups > 0 {
        for u in 0..spec.users {
            for k in 0..spec.groups_per_user {
                let g = (mix(spec.seed ^ ((u * 131 + k) as u64)) % spec.groups as u64) as usize;
                members[g].push(user_id(u));
            }
        }
    }
    let all = user_group(ALL_USERS.into(), (0..spec.users).map(user_id).collect());
    members.into_iter().enumerate().map(|(i, m)| user_group(group_id(i), m)).chain([all]).collect()
}

fn connector(spec: Spec) -> pb::EnableConnectorRequest {
    pb::EnableConnectorRequest {
        partner_app_id: "jamf-load".into(),
        partner_version: "11.4.0".into(),
        include_group_ids: vec![ALL_USERS.into()],
        exclude_group_ids: if spec.groups > 0 { vec![group_id(0)] } else { vec![] },
    }
}

/// `items` in vectors of at most `n`.
fn batched<T>(mut items: impl Iterator<Item = T>, n: usize) -> impl Iterator<Item = Vec<T>> {
    std::iter::from_fn(move || {
        let batch: Vec<T> = items.by_ref().take(n).collect();
        (!batch.is_empty()).then_some(batch)
    })
}

/// The organisation as writes, in an order each can be validated in (the directory, then
/// policies and the connector that name its groups, then the reports the connector admits),
/// produced as they are taken. Reports are relative to `now`, in seconds.
pub fn organisation(spec: Spec, now: i64) -> impl Iterator<Item = Write> {
    let users = batched((0..spec.users).map(move |i| user(i, spec.seed)), USERS_PER_SYNC)
        .map(|users| Write::SyncDirectory(pb::SyncDirectoryRequest { users, ..Default::default() }));
    let groups = std::iter::once_with(move || groups(spec))
        .flat_map(|groups| batched(groups.into_iter(), GROUPS_PER_SYNC))
        .map(|groups| Write::SyncDirectory(pb::SyncDirectoryRequest { groups, ..Default::default() }));
    let policies = (0..spec.policies).flat_map(|i| {
        let policy = full_policy(i);
        let policy_id = policy.id.clone();
        let assignment = pb::Assignment { include_group_ids: vec![ALL_USERS.into()], exclude_group_ids: vec![] };
        [
            Write::CreatePolicy(pb::CreatePolicyRequest { policy: Some(policy) }),
            Write::AssignPolicy(pb::AssignPolicyRequest { policy_id, assignment: Some(assignment) }),
        ]
    });
    let owner = move |i: usize| if spec.users == 0 { 0 } else { i % spec.users };
    let reports = batched((0..spec.devices).map(move |i| mac(i, owner(i), spec.seed, now)), REPORTS_PER_BATCH)
        .map(|devices| Write::ReportInventory(pb::ReportInventoryRequest { devices }));
    users.chain(groups).chain(policies).chain([Write::EnableConnector(connector(spec))]).chain(reports)
}
