//! Failing closed, at the engine: property tests over random organisations and random change
//! sequences, and the paths where a store that misbehaves (stops answering, races another
//! replica, fails after a commit) must not turn a DENY into an ALLOW or report a write wrongly.
//! Time is a manual clock; stores are in memory (or SQLite, for restarts), wrapped where a
//! test needs a fault.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::faulty::Faulty;
use posture::auth::Credentials;
use posture::clock::ManualClock;
use posture::domain::access::{self, ReasonCode};
use posture::domain::compliance::ComplianceState;
use posture::domain::model::{
    Device, FileVault, Gatekeeper, Group, GroupKind, NoPolicyTreatment, PartnerVerdict, PasswordFacts, Policy,
    PolicySettings, Registration, SecurityFacts, Sip, TenantSettings, User,
};
use posture::domain::{Change, Timestamp, grace};
use posture::engine::watch::Start;
use posture::engine::{Draft, Engine, GroupTargets, WatchConfig, Watcher};
use posture::error::Error;
use posture::store::Store;
use posture::store::memory::MemoryStore;
use proptest::prelude::*;

const T0: Timestamp = Timestamp(1_800_000_000);
const HOUR: i64 = Timestamp::HOUR;
const USERS: usize = 5;
const DEVICES: usize = 5;

// ---------------------------------------------------------------------------------------------
// Builders

fn user_id(i: usize) -> String {
    format!("u{i}")
}
fn device_id(i: usize) -> String {
    format!("d{i}")
}
/// Groups the policies are assigned to, and (disjoint) groups the connector targets.
fn policy_group(i: usize) -> String {
    format!("pg{i}")
}
fn connector_group(i: usize) -> String {
    format!("cg{i}")
}
fn policy_id(i: usize) -> String {
    format!("p{i}")
}

fn members(mask: u8) -> Vec<String> {
    (0..USERS).filter(|u| mask & (1 << u) != 0).map(user_id).collect()
}

fn user(i: usize, licensed: bool) -> User {
    User {
        id: user_id(i),
        user_principal_name: format!("{}@example.com", user_id(i)),
        device_management_licence: true,
        premium_identity_licence: licensed,
    }
}

fn group(id: String, mask: u8) -> Group {
    Group { name: id.clone(), id, kind: GroupKind::User, members: members(mask) }
}

/// A Mac that meets every rule the generators can make, checked in at `at`.
fn healthy(device: usize, user: usize, at: Timestamp) -> Device {
    Device {
        id: device_id(device).into(),
        partner_device_id: format!("jamf-{device}").into(),
        serial_number: format!("S{device}").into(),
        name: format!("Mac {device}").into(),
        model: "MacBookPro18,3".into(),
        user_id: user_id(user).into(),
        os_version: "15.1".parse().unwrap(),
        os_build: None,
        registration: Registration::Partner,
        last_check_in: at,
        last_token_renewal: at,
        refresh_token_issued: None,
        facts: SecurityFacts {
            system_integrity_protection: Some(Sip::Enabled),
            file_vault: Some(FileVault::AllEncrypted),
            gatekeeper: Some(Gatekeeper::AppStore),
            firewall_enabled: Some(true),
            password: PasswordFacts { min_length: Some(16), ..Default::default() },
            ..Default::default()
        },
        partner_verdict: None,
    }
}

async fn engine_on(store: Arc<dyn Store>, clock: Arc<ManualClock>) -> Arc<Engine> {
    Arc::new(Engine::open(store, clock, 1_000, Arc::new(Credentials::default())).await.unwrap())
}

async fn report(engine: &Engine, devices: Vec<Device>) -> posture::engine::ReportOutcome {
    let items = devices.into_iter().map(|d| (d.id.to_string(), Ok(d))).collect();
    engine.report_inventory(None, items).await.unwrap()
}

fn targets(include: Vec<String>, exclude: Vec<String>) -> GroupTargets {
    GroupTargets { include, exclude }
}

// ---------------------------------------------------------------------------------------------
// Random organisations

#[derive(Debug, Clone)]
struct PolicySpec {
    min_os: Option<u32>,
    encryption: bool,
    firewall: bool,
    min_password: Option<u32>,
    grace_hours: u32,
    /// Over the two policy groups.
    include: u8,
    exclude: u8,
}

#[derive(Debug, Clone)]
struct DeviceSpec {
    user: usize,
    /// Shares the serial of another device (a duplicate registration), or has its own.
    serial: Option<usize>,
    os_major: u32,
    encrypted: bool,
    firewall: Option<bool>,
    password: Option<u32>,
    check_in_ago: i64,
    token_ago: i64,
    direct: bool,
    verdict: Option<(bool, i64)>,
    /// The same facts were reported this much earlier too (0: only once).
    reported_before: i64,
}

#[derive(Debug, Clone)]
struct OrgSpec {
    licensed: Vec<bool>,
    policy_groups: [u8; 2],
    connector_groups: [u8; 2],
    connector_include: u8,
    connector_exclude: u8,
    policies: Vec<PolicySpec>,
    devices: Vec<DeviceSpec>,
    noncompliant_without_policy: bool,
    /// How long after the reports the change comes (grace periods may have ended by then).
    later: i64,
}

fn policy_spec() -> impl Strategy<Value = PolicySpec> {
    (
        prop::option::of(12..16u32),
        any::<bool>(),
        any::<bool>(),
        prop::option::of(8..15u32),
        prop_oneof![Just(0u32), Just(1), Just(24), Just(72)],
        1..4u8,
        0..4u8,
    )
        .prop_map(|(min_os, encryption, firewall, min_password, grace_hours, include, exclude)| PolicySpec {
            min_os,
            encryption,
            firewall,
            min_password,
            grace_hours,
            include,
            exclude,
        })
}

fn device_spec() -> impl Strategy<Value = DeviceSpec> {
    (
        (0..USERS, prop::option::weighted(0.1, 0..DEVICES), 10..16u32, prop::bool::weighted(0.7)),
        (prop::option::of(any::<bool>()), prop::option::of(6..18u32)),
        (
            prop_oneof![4 => 0..20 * HOUR, 1 => 0..30 * HOUR],
            prop_oneof![4 => 0..20 * HOUR, 1 => 0..30 * HOUR],
            prop::bool::weighted(0.1),
        ),
        prop::option::weighted(0.2, (any::<bool>(), 0..30 * HOUR)),
        prop_oneof![Just(0i64), 1..80 * HOUR],
    )
        .prop_map(
            |(
                (user, serial, os_major, encrypted),
                (firewall, password),
                (check_in_ago, token_ago, direct),
                verdict,
                reported_before,
            )| DeviceSpec {
                user,
                serial,
                os_major,
                encrypted,
                firewall,
                password,
                check_in_ago,
                token_ago,
                direct,
                verdict,
                reported_before,
            },
        )
}

fn org_spec() -> impl Strategy<Value = OrgSpec> {
    (
        prop::collection::vec(prop::bool::weighted(0.9), USERS),
        (any::<[u8; 2]>(), any::<[u8; 2]>(), 1..4u8, prop_oneof![3 => Just(0u8), 1 => 1..4u8]),
        prop::collection::vec(policy_spec(), 1..4),
        prop::collection::vec(device_spec(), DEVICES),
        (prop::bool::weighted(0.3), prop_oneof![Just(0i64), 1..100 * HOUR, 1..4 * HOUR]),
    )
        .prop_map(
            |(
                licensed,
                (policy_groups, connector_groups, connector_include, connector_exclude),
                policies,
                devices,
                (n, later),
            )| {
                OrgSpec {
                    licensed,
                    policy_groups,
                    connector_groups,
                    connector_include,
                    connector_exclude,
                    policies,
                    devices,
                    noncompliant_without_policy: n,
                    later,
                }
            },
        )
}

fn mask_ids(mask: u8, id: fn(usize) -> String) -> Vec<String> {
    (0..2).filter(|i| mask & (1 << i) != 0).map(id).collect()
}

fn policy_of(i: usize, p: &PolicySpec) -> Policy {
    Policy {
        id: policy_id(i),
        name: format!("policy {i}"),
        settings: PolicySettings {
            os_minimum_version: p.min_os.map(|m| format!("{m}.0").parse().unwrap()),
            storage_encryption_required: p.encryption.then_some(true),
            firewall_enabled: p.firewall.then_some(true),
            password: posture::domain::model::PasswordRules { min_length: p.min_password, ..Default::default() },
            ..Default::default()
        },
        grace_period_hours: p.grace_hours,
        updated_at: Timestamp(0),
    }
}

fn device_of(i: usize, d: &DeviceSpec, now: Timestamp) -> Device {
    let mut device = healthy(i, d.user, now.plus_secs(-d.check_in_ago));
    device.serial_number = format!("S{}", d.serial.unwrap_or(i)).into();
    device.os_version = format!("{}.1", d.os_major).parse().unwrap();
    device.facts.file_vault = Some(if d.encrypted { FileVault::AllEncrypted } else { FileVault::NotEncrypted });
    device.facts.firewall_enabled = d.firewall;
    device.facts.password.min_length = d.password;
    device.last_token_renewal = now.plus_secs(-d.token_ago);
    if d.direct {
        device.registration = Registration::Direct;
    }
    device.partner_verdict =
        d.verdict.map(|(compliant, ago)| PartnerVerdict { compliant, decided_at: now.plus_secs(-ago) });
    device
}

/// The organisation, written through the engine as admins and the partner would, at T0;
/// then the clock moves on by `later`.
async fn build(spec: &OrgSpec, store: Arc<dyn Store>) -> (Arc<Engine>, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(T0));
    let engine = engine_on(store, clock.clone()).await;
    let users = spec.licensed.iter().enumerate().map(|(i, l)| user(i, *l)).collect();
    let mut groups: Vec<Group> = (0..2).map(|i| group(policy_group(i), spec.policy_groups[i])).collect();
    groups.extend((0..2).map(|i| group(connector_group(i), spec.connector_groups[i])));
    engine.sync_directory(users, groups, vec![], vec![]).await.unwrap();
    for (i, p) in spec.policies.iter().enumerate() {
        engine.create_policy(policy_of(i, p)).await.unwrap();
        let t = targets(mask_ids(p.include, policy_group), mask_ids(p.exclude, policy_group));
        engine.assign_policy(&policy_id(i), t).await.unwrap();
    }
    let t =
        targets(mask_ids(spec.connector_include, connector_group), mask_ids(spec.connector_exclude, connector_group));
    engine.enable_connector("jamf".into(), "11.0.0".parse().unwrap(), t).await.unwrap();
    let no_policy =
        if spec.noncompliant_without_policy { NoPolicyTreatment::Noncompliant } else { NoPolicyTreatment::Compliant };
    engine.update_settings(TenantSettings { no_policy, validity_days: 30 }).await.unwrap();
    // Each Mac's history: the same facts an earlier time too, where it has one.
    let earlier = spec.devices.iter().enumerate().filter(|(_, d)| d.reported_before > 0);
    let earlier: Vec<Device> = earlier
        .map(|(i, d)| {
            let mut device = device_of(i, d, T0);
            device.last_check_in = device.last_check_in.plus_secs(-d.reported_before);
            device
        })
        .collect();
    report(&engine, earlier).await;
    report(&engine, spec.devices.iter().enumerate().map(|(i, d)| device_of(i, d, T0)).collect()).await;
    clock.advance(spec.later);
    (engine, clock)
}

/// Every device's decision for its primary user, now; and the invariant of every decision:
/// an ALLOW has a state that lets in and no reason that denies.
fn decisions(engine: &Engine) -> BTreeMap<String, (bool, ComplianceState, Vec<ReasonCode>)> {
    (0..DEVICES)
        .map(|i| {
            let (d, _) = engine.check_access(&device_id(i));
            let fresh = engine.read(|state, now| access::decide(state, &device_id(i), now)).0;
            assert_eq!(*d, fresh, "the cached decision is the fresh one");
            if d.allow {
                assert!(d.state.allows_access(), "{d:?}");
                assert!(d.reasons.iter().all(|r| !r.code.denies()), "{d:?}");
            }
            (device_id(i), (d.allow, d.state, d.reasons.iter().map(|r| r.code).collect()))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Changes that only tighten

#[derive(Debug, Clone)]
enum Tighten {
    /// A higher minimum macOS.
    StricterOs {
        policy: usize,
        major: u32,
    },
    RequireEncryption {
        policy: usize,
    },
    RequireFirewall {
        policy: usize,
    },
    LongerPassword {
        policy: usize,
        length: u32,
    },
    ShorterGrace {
        policy: usize,
        hours: u32,
    },
    /// Another connector group excluded from partner enrollment.
    ExcludeGroup {
        group: usize,
    },
    RemoveLicence {
        user: usize,
    },
    /// A member removed from a group the connector includes.
    RemoveFromInclude {
        group: usize,
        user: usize,
    },
    /// A report older than the stored one (late, retried or reordered), with any content.
    OlderReport {
        device: usize,
        older_by: i64,
        healthy: bool,
    },
    /// Not a tightening, but no Mac is better off for it: a longer grace period (one that has
    /// ended stays ended).
    LongerGrace {
        policy: usize,
        hours: u32,
    },
    /// Nor this: a device record deleted, then reported again exactly as before (its failures
    /// continue; deleting the record buys no grace).
    DeleteAndReportAgain {
        device: usize,
    },
}

fn tighten() -> impl Strategy<Value = Tighten> {
    prop_oneof![
        (0..3usize, 12..17u32).prop_map(|(policy, major)| Tighten::StricterOs { policy, major }),
        (0..3usize).prop_map(|policy| Tighten::RequireEncryption { policy }),
        (0..3usize).prop_map(|policy| Tighten::RequireFirewall { policy }),
        (0..3usize, 8..15u32).prop_map(|(policy, length)| Tighten::LongerPassword { policy, length }),
        (0..3usize, 0..72u32).prop_map(|(policy, hours)| Tighten::ShorterGrace { policy, hours }),
        (0..2usize).prop_map(|group| Tighten::ExcludeGroup { group }),
        (0..USERS).prop_map(|user| Tighten::RemoveLicence { user }),
        (0..2usize, 0..USERS).prop_map(|(group, user)| Tighten::RemoveFromInclude { group, user }),
        (0..DEVICES, 1..10 * HOUR, any::<bool>()).prop_map(|(device, older_by, healthy)| Tighten::OlderReport {
            device,
            older_by,
            healthy
        }),
        (0..3usize, 0..200u32).prop_map(|(policy, hours)| Tighten::LongerGrace { policy, hours }),
        (0..DEVICES).prop_map(|device| Tighten::DeleteAndReportAgain { device }),
    ]
}

/// Applies a tightening change through the engine (a change that does not apply to this
/// organisation, such as a policy it lacks, is skipped).
async fn apply_tightening(engine: &Engine, change: &Tighten) {
    let (state_policy, state_user, state_group, state_device, connector) = engine
        .read(|s, _| {
            let policy = |i: usize| s.policy(&policy_id(i)).cloned();
            let p: Vec<Option<Policy>> = (0..3).map(policy).collect();
            let u: Vec<Option<User>> = (0..USERS).map(|i| s.user(&user_id(i)).cloned()).collect();
            let g: Vec<Option<Group>> = (0..2).map(|i| s.group(&connector_group(i)).map(|g| g.to_group())).collect();
            let d: Vec<Option<Device>> = (0..DEVICES).map(|i| s.device(&device_id(i)).cloned()).collect();
            (p, u, g, d, s.connector().clone())
        })
        .0;
    let update = |policy: usize, edit: &dyn Fn(&mut Policy)| {
        state_policy[policy].clone().map(|mut p| {
            edit(&mut p);
            p
        })
    };
    let result = match change.clone() {
        Tighten::StricterOs { policy, major } => match update(policy, &|p| {
            let raised: posture::domain::version::OsVersion = format!("{major}.0").parse().unwrap();
            let current = p.settings.os_minimum_version;
            p.settings.os_minimum_version = Some(current.map_or(raised, |c| c.max(raised)));
        }) {
            Some(p) => engine.update_policy(p).await.map(drop),
            None => Ok(()),
        },
        Tighten::RequireEncryption { policy } => {
            match update(policy, &|p| p.settings.storage_encryption_required = Some(true)) {
                Some(p) => engine.update_policy(p).await.map(drop),
                None => Ok(()),
            }
        }
        Tighten::RequireFirewall { policy } => match update(policy, &|p| p.settings.firewall_enabled = Some(true)) {
            Some(p) => engine.update_policy(p).await.map(drop),
            None => Ok(()),
        },
        Tighten::LongerPassword { policy, length } => match update(policy, &|p| {
            p.settings.password.min_length = Some(p.settings.password.min_length.map_or(length, |l| l.max(length)))
        }) {
            Some(p) => engine.update_policy(p).await.map(drop),
            None => Ok(()),
        },
        Tighten::ShorterGrace { policy, hours } => {
            match update(policy, &|p| p.grace_period_hours = p.grace_period_hours.min(hours)) {
                Some(p) => engine.update_policy(p).await.map(drop),
                None => Ok(()),
            }
        }
        Tighten::ExcludeGroup { group } => {
            let mut exclude = connector.exclude_group_ids.clone();
            if !exclude.contains(&connector_group(group)) {
                exclude.push(connector_group(group));
            }
            let t = targets(connector.include_group_ids.clone(), exclude);
            engine.enable_connector(connector.partner_app_id.clone(), "11.0.0".parse().unwrap(), t).await.map(drop)
        }
        Tighten::RemoveLicence { user } => match state_user[user].clone() {
            Some(mut u) => {
                u.premium_identity_licence = false;
                engine.sync_directory(vec![u], vec![], vec![], vec![]).await.map(drop)
            }
            None => Ok(()),
        },
        Tighten::RemoveFromInclude { group, user } => match state_group[group].clone() {
            Some(mut g)
                if connector.include_group_ids.contains(&g.id) && !connector.exclude_group_ids.contains(&g.id) =>
            {
                g.members.retain(|m| *m != user_id(user));
                engine.sync_directory(vec![], vec![g], vec![], vec![]).await.map(drop)
            }
            _ => Ok(()),
        },
        Tighten::OlderReport { device, older_by, healthy: is_healthy } => match state_device[device].clone() {
            Some(stored) => {
                let mut old =
                    if is_healthy { healthy(device, USERS - 1, stored.last_check_in) } else { stored.clone() };
                old.last_check_in = stored.last_check_in.plus_secs(-older_by);
                old.partner_verdict = None;
                let outcome = report(engine, vec![old]).await;
                assert!(matches!(outcome.items[0].1, posture::engine::ItemOutcome::Stale(_)), "{outcome:?}");
                Ok(())
            }
            None => Ok(()),
        },
        Tighten::LongerGrace { policy, hours } => {
            match update(policy, &|p| p.grace_period_hours = p.grace_period_hours.max(hours)) {
                Some(p) => engine.update_policy(p).await.map(drop),
                None => Ok(()),
            }
        }
        Tighten::DeleteAndReportAgain { device } => match state_device[device].clone() {
            Some(stored) => {
                engine.delete_device(&stored.id).await.unwrap();
                report(engine, vec![stored]).await;
                Ok(())
            }
            None => Ok(()),
        },
    };
    result.unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1_000, max_shrink_iters: 2_000, ..ProptestConfig::default() })]

    /// A change that only tightens (or otherwise leaves no Mac better off) never turns any
    /// decision from DENY to ALLOW at the same now.
    #[test]
    fn a_change_that_only_tightens_never_turns_a_deny_into_an_allow(
        spec in org_spec(),
        changes in prop::collection::vec(tighten(), 1..6),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let (engine, _clock) = build(&spec, Arc::new(MemoryStore::default())).await;
            let mut before = decisions(&engine);
            for change in &changes {
                apply_tightening(&engine, change).await;
                let after = decisions(&engine);
                for (device, (allowed, ..)) in &after {
                    let was = &before[device];
                    assert!(was.0 || !allowed, "{device}: {was:?} became {:?} after {change:?}\n{spec:#?}", after[device]);
                }
                before = after;
            }
        });
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// A report that changes only a Mac's check-in is stored as a check-in: the state, the
    /// grace bookkeeping derived, what it touches and every decision after it are those of
    /// storing the whole report again.
    #[test]
    fn a_check_in_is_the_whole_report_with_its_new_time(
        spec in org_spec(),
        device in 0..DEVICES,
        later in 1..40 * HOUR,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let state = rt.block_on(async {
            let (engine, _clock) = build(&spec, Arc::new(MemoryStore::default())).await;
            engine.read(|state, _| state.clone()).0
        });
        let now = T0.plus_secs(spec.later);
        let stored = state.device(&device_id(device)).unwrap().clone();
        let at = stored.last_check_in.plus_secs(later).min(now);
        let check_in = vec![Change::CheckIn { device_id: device_id(device), at }];
        let whole = vec![Change::PutDevice(Device { last_check_in: at, ..stored })];
        let outcome = |changes: Vec<Change>| {
            let mut state = state.clone();
            let bookkeeping = grace::derive(&state, &changes, now);
            let mut touched = posture::domain::Touched::default();
            for change in changes.into_iter().chain(bookkeeping.clone()) {
                touched.merge(state.apply(change));
            }
            let devices: Vec<Device> = state.devices().cloned().collect();
            let failures: Vec<_> = (0..DEVICES)
                .map(|i| state.failures_of(&device_id(i)).map(|(p, f)| (p.to_string(), f)).collect::<Vec<_>>())
                .collect();
            let decided: Vec<_> = (0..DEVICES).map(|i| access::decide(&state, &device_id(i), now)).collect();
            (bookkeeping, touched, devices, failures, decided)
        };
        prop_assert_eq!(outcome(check_in), outcome(whole));
    }
}

// ---------------------------------------------------------------------------------------------
// Reports in any order

/// For each device, reports at distinct check-ins (seconds before T0), each with its own facts.
fn report_history() -> impl Strategy<Value = Vec<(usize, i64, bool, Option<bool>)>> {
    let per_device = (0..DEVICES).map(|d| {
        prop::collection::btree_set(1..10_000i64, 1..5).prop_flat_map(move |agos| {
            let n = agos.len();
            (Just(agos), prop::collection::vec((any::<bool>(), prop::option::weighted(0.3, any::<bool>())), n))
                .prop_map(move |(agos, facts)| {
                    agos.into_iter().zip(facts).map(|(ago, (enc, verdict))| (d, ago, enc, verdict)).collect::<Vec<_>>()
                })
        })
    });
    per_device.collect::<Vec<_>>().prop_map(|all| all.concat()).prop_shuffle()
}

fn reported(device: usize, ago: i64, encrypted: bool, verdict: Option<bool>) -> Device {
    let mut d = healthy(device, device % USERS, T0.plus_secs(-ago));
    d.facts.file_vault = Some(if encrypted { FileVault::AllEncrypted } else { FileVault::NotEncrypted });
    // A verdict is decided a minute before the check-in that carries it: verdicts and
    // check-ins are in the same order.
    d.partner_verdict =
        verdict.map(|compliant| PartnerVerdict { compliant, decided_at: d.last_check_in.plus_secs(-60) });
    d
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Whatever order reports arrive in, and however they are batched, each Mac ends holding
    /// its newest report.
    #[test]
    fn reports_applied_in_any_order_leave_each_mac_with_its_newest(
        history in report_history(),
        cuts in prop::collection::vec(1..6usize, 1..20),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let spec = OrgSpec {
                licensed: vec![true; USERS],
                policy_groups: [0b11111, 0],
                connector_groups: [0b11111, 0],
                connector_include: 1,
                connector_exclude: 0,
                policies: vec![],
                devices: vec![],
                noncompliant_without_policy: false,
                later: 0,
            };
            let (engine, _) = build(&spec, Arc::new(MemoryStore::default())).await;
            let mut rest = history.as_slice();
            let mut cut = cuts.iter().cycle();
            while !rest.is_empty() {
                let n = (*cut.next().unwrap()).min(rest.len());
                let (batch, tail) = rest.split_at(n);
                report(&engine, batch.iter().map(|(d, ago, enc, v)| reported(*d, *ago, *enc, *v)).collect()).await;
                rest = tail;
            }
            for d in 0..DEVICES {
                let (_, ago, enc, verdict) = *history.iter().filter(|r| r.0 == d).min_by_key(|r| r.1).unwrap();
                let stored = engine.read(|s, _| s.device(&device_id(d)).cloned()).0.unwrap();
                assert_eq!(stored, reported(d, ago, enc, verdict), "{history:?}");
            }
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Exclude beats include

#[derive(Debug, Clone)]
enum TargetingOp {
    Members { group: usize, mask: u8, device_group: bool },
    Connector { include: u8, exclude: u8 },
}

fn targeting_op() -> impl Strategy<Value = TargetingOp> {
    prop_oneof![
        (0..3usize, any::<u8>(), prop::bool::weighted(0.15))
            .prop_map(|(group, mask, device_group)| TargetingOp::Members { group, mask, device_group }),
        (0..8u8, 0..8u8).prop_map(|(include, exclude)| TargetingOp::Connector { include, exclude }),
    ]
}

fn targeting_group(i: usize) -> String {
    format!("tg{i}")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// After any sequence of group and connector changes, a user in an exclude group enrolls
    /// directly and is denied, whatever include groups they are in.
    #[test]
    fn exclude_beats_include_across_any_sequence_of_changes(ops in prop::collection::vec(targeting_op(), 1..25)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let clock = Arc::new(ManualClock::new(T0));
            let engine = engine_on(Arc::new(MemoryStore::default()), clock).await;
            let users = (0..USERS).map(|i| user(i, true)).collect();
            let groups = (0..3).map(|i| group(targeting_group(i), 0)).collect();
            engine.sync_directory(users, groups, vec![], vec![]).await.unwrap();
            engine.enable_connector("jamf".into(), "11.0.0".parse().unwrap(), GroupTargets::default()).await.unwrap();
            report(&engine, (0..USERS).map(|u| healthy(u, u, T0.plus_secs(-60))).collect()).await;
            let pick = |mask: u8| (0..3).filter(|g| mask & (1 << g) != 0).map(targeting_group).collect::<Vec<_>>();
            for op in &ops {
                // Refusals (a device group targeted, a group in use changing kind) change nothing.
                let _ = match op.clone() {
                    TargetingOp::Members { group: g, mask, device_group } => {
                        let mut group = group(targeting_group(g), mask);
                        if device_group {
                            group.kind = GroupKind::Device;
                            group.members = (0..DEVICES).filter(|d| mask & (1 << d) != 0).map(device_id).collect();
                        }
                        engine.sync_directory(vec![], vec![group], vec![], vec![]).await.map(drop)
                    }
                    TargetingOp::Connector { include, exclude } => engine
                        .enable_connector("jamf".into(), "11.0.0".parse().unwrap(), targets(pick(include), pick(exclude)))
                        .await
                        .map(drop),
                };
                let (expected, _) = engine.read(|s, _| {
                    let c = s.connector();
                    let in_any = |u: &str, ids: &[String]| {
                        ids.iter().any(|g| s.group(g).is_some_and(|g| g.kind == GroupKind::User && g.members().any(|m| m == u)))
                    };
                    (0..USERS)
                        .map(|u| {
                            let id = user_id(u);
                            (in_any(&id, &c.exclude_group_ids), in_any(&id, &c.include_group_ids))
                        })
                        .collect::<Vec<_>>()
                });
                for (u, (excluded, included)) in expected.into_iter().enumerate() {
                    let resolved = engine.read(|s, _| posture::domain::targeting::resolve_saved(s, &user_id(u))).0;
                    let target = match (excluded, included) {
                        (true, _) => posture::domain::targeting::EnrollmentTarget::Direct,
                        (false, true) => posture::domain::targeting::EnrollmentTarget::Partner,
                        (false, false) => posture::domain::targeting::EnrollmentTarget::NotTargeted,
                    };
                    assert_eq!(resolved.target, target, "u{u} after {op:?}");
                    let (d, _) = engine.check_access(&device_id(u));
                    let not_targeted = d.reasons.iter().any(|r| r.code == ReasonCode::UserNotTargeted);
                    assert_eq!(not_targeted, target != posture::domain::targeting::EnrollmentTarget::Partner, "{d:?}");
                    if excluded {
                        assert!(!d.allow, "an excluded user is denied: {d:?}");
                    }
                }
            }
        });
    }
}

// ---------------------------------------------------------------------------------------------
// PreviewPolicy: what a draft's preview says is what saving it does

/// A draft of one admin write. Policies, groups and ids may be ones the organisation lacks: the
/// preview must then refuse it exactly as the write does.
#[derive(Debug, Clone)]
enum DraftSpec {
    /// Policy `i` as `spec` (an update when the organisation has it, else a create), and
    /// with include and exclude masks (as `Assign`'s), assigned as well.
    Policy {
        policy: usize,
        spec: PolicySpec,
        assign: Option<(u8, u8)>,
    },
    /// Policy `i`'s assignment: include and exclude masks over the two policy groups and the
    /// first connector group (an empty pair removes it).
    Assign {
        policy: usize,
        include: u8,
        exclude: u8,
    },
    Delete {
        policy: usize,
    },
    Settings {
        noncompliant_without_policy: bool,
        validity_days: u32,
    },
}

fn draft_spec() -> impl Strategy<Value = DraftSpec> {
    prop_oneof![
        3 => (0..4usize, policy_spec(), proptest::option::of((0..8u8, 0..8u8)))
            .prop_map(|(policy, spec, assign)| DraftSpec::Policy { policy, spec, assign }),
        2 => (0..4usize, 0..8u8, 0..8u8).prop_map(|(policy, include, exclude)| DraftSpec::Assign { policy, include, exclude }),
        1 => (0..4usize).prop_map(|policy| DraftSpec::Delete { policy }),
        1 => (any::<bool>(), prop_oneof![Just(1u32), Just(2), Just(30), Just(120)])
            .prop_map(|(n, validity_days)| DraftSpec::Settings { noncompliant_without_policy: n, validity_days }),
    ]
}

fn draft_groups(mask: u8) -> Vec<String> {
    let mut ids = mask_ids(mask & 0b11, policy_group);
    if mask & 0b100 != 0 {
        ids.push(connector_group(0));
    }
    ids
}

fn draft_of(d: &DraftSpec) -> Draft {
    match d {
        DraftSpec::Policy { policy, spec, assign } => Draft::Policy {
            policy: policy_of(*policy, spec),
            assignment: assign
                .map(|(include, exclude)| targets(draft_groups(include), draft_groups(exclude & !include))),
        },
        DraftSpec::Assign { policy, include, exclude } => Draft::Assignment {
            policy_id: policy_id(*policy),
            targets: targets(draft_groups(*include), draft_groups(*exclude & !*include)),
        },
        DraftSpec::Delete { policy } => Draft::DeletePolicy(policy_id(*policy)),
        DraftSpec::Settings { noncompliant_without_policy, validity_days } => Draft::Settings(TenantSettings {
            no_policy: if *noncompliant_without_policy {
                NoPolicyTreatment::Noncompliant
            } else {
                NoPolicyTreatment::Compliant
            },
            validity_days: *validity_days,
        }),
    }
}

/// Saves a draft through its own write.
async fn save(engine: &Engine, draft: &Draft) -> Result<u64, Error> {
    match draft.clone() {
        Draft::Policy { policy, assignment } => {
            let id = policy.id.clone();
            let saved = if engine.read(|s, _| s.policy(&id).is_some()).0 {
                engine.update_policy(policy).await
            } else {
                engine.create_policy(policy).await
            };
            match assignment {
                Some(targets) => {
                    saved?;
                    engine.assign_policy(&id, targets).await
                }
                None => saved,
            }
        }
        Draft::Assignment { policy_id, targets } => engine.assign_policy(&policy_id, targets).await,
        Draft::DeletePolicy(id) => engine.delete_policy(&id).await,
        Draft::Settings(s) => engine.update_settings(s).await,
    }
}

/// A Mac whose decision changes, as the preview lists it or as saving shows it.
type Moved = (access::DeviceDecision, access::DeviceDecision);

/// How a decision changes: locked out, let in, into grace, or neither (the test's own reading
/// of the RPC's definition).
fn kind_of(before: &access::DeviceDecision, after: &access::DeviceDecision) -> usize {
    match (before.allow, after.allow) {
        (true, false) => 0,
        (false, true) => 1,
        _ if after.state == ComplianceState::InGracePeriod && before.state != ComplianceState::InGracePeriod => 2,
        _ => 3,
    }
}

fn every_decision(engine: &Engine) -> Vec<access::DeviceDecision> {
    engine.read(|s, now| (0..DEVICES).map(|i| access::decide(s, &device_id(i), now)).collect()).0
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Over random organisations and random drafts, PreviewPolicy's answer is what saving the
    /// draft then does (the same counts, the same Macs with the same decisions before and
    /// after, the same reasons counted), or the same refusal; and the preview writes nothing.
    #[test]
    fn a_preview_says_what_saving_the_draft_does_and_writes_nothing(spec in org_spec(), draft in draft_spec()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let store = Arc::new(MemoryStore::default());
            let (engine, _clock) = build(&spec, store.clone()).await;
            let draft = draft_of(&draft);
            let log = store.changes_since(0, 100_000).await.unwrap();
            let revision = engine.revision();
            let before = every_decision(&engine);

            let previewed = engine.preview(&draft, 1_000, |p| {
                let list = |l: &[posture::domain::preview::Previewed<'_>]| -> Vec<Moved> {
                    l.iter().map(|m| (m.before.clone(), m.after.clone())).collect()
                };
                (
                    [p.allow_to_deny, p.deny_to_allow, p.into_grace, p.unchanged],
                    [list(&p.locked_out), list(&p.let_in), list(&p.entering_grace)],
                    p.by_reason.clone(),
                )
            });

            // Nothing written: the same revision, the same log, the same decisions.
            assert_eq!(engine.revision(), revision);
            assert_eq!(store.changes_since(0, 100_000).await.unwrap(), log, "the preview wrote to the store");
            assert_eq!(every_decision(&engine), before, "the preview changed the state");

            let saved = save(&engine, &draft).await;
            let (previewed, preview_revision) = match (previewed, saved) {
                (Ok(p), Ok(_)) => p,
                (Err(p), Err(s)) => {
                    assert_eq!(p.to_string(), s.to_string(), "refused as the write is");
                    assert_eq!(engine.revision(), revision);
                    return;
                }
                (p, s) => panic!("the preview answered {p:?} and the write {s:?}: {draft:?}"),
            };
            assert_eq!(preview_revision, revision);
            let after = every_decision(&engine);
            let mut counts = [0u64; 4];
            let mut lists: [Vec<Moved>; 3] = Default::default();
            let mut by_reason: BTreeMap<ReasonCode, (u64, std::collections::BTreeSet<String>)> = BTreeMap::new();
            for (b, a) in before.iter().zip(&after) {
                let kind = kind_of(b, a);
                counts[kind] += 1;
                if kind < 3 {
                    lists[kind].push((b.clone(), a.clone()));
                    let codes: std::collections::BTreeSet<ReasonCode> = a.reasons.iter().map(|r| r.code).collect();
                    for code in codes {
                        let (devices, users) = by_reason.entry(code).or_default();
                        *devices += 1;
                        users.insert(a.primary_user_id.clone().unwrap());
                    }
                }
            }
            let by_reason: BTreeMap<ReasonCode, (u64, u64)> =
                by_reason.into_iter().map(|(c, (d, u))| (c, (d, u.len() as u64))).collect();
            assert_eq!(previewed.0, counts, "counts: {draft:?}");
            assert_eq!(previewed.1, lists, "Macs: {draft:?}");
            assert_eq!(previewed.2, by_reason, "reasons: {draft:?}");
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Restarts and replicas decide as the writer did

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// A replica that loads the store (SQLite: from its tables, after a restart) or follows
    /// its log decides every Mac exactly as the engine that wrote it.
    #[test]
    fn a_restarted_or_following_replica_decides_as_the_writer(
        spec in org_spec(),
        changes in prop::collection::vec(tighten(), 0..4),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}", dir.path().join("posture.db").display());
            let store = posture::store::open(&url).await.unwrap();
            let (writer, clock) = build(&spec, store.clone()).await;
            let follower = engine_on(store, clock.clone()).await;
            for change in &changes {
                apply_tightening(&writer, change).await;
            }
            follower.catch_up().await.unwrap();
            let restarted = engine_on(posture::store::open(&url).await.unwrap(), clock).await;
            let expected = decisions(&writer);
            assert_eq!(decisions(&follower), expected, "the follower");
            assert_eq!(decisions(&restarted), expected, "after a restart");
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Stores that misbehave

async fn small_org(engine: &Engine) {
    let users = (0..USERS).map(|i| user(i, true)).collect();
    engine.sync_directory(users, vec![group(connector_group(0), 0b11111)], vec![], vec![]).await.unwrap();
    let t = targets(vec![connector_group(0)], vec![]);
    engine.enable_connector("jamf".into(), "11.0.0".parse().unwrap(), t).await.unwrap();
    report(engine, (0..DEVICES).map(|d| healthy(d, d, T0.plus_secs(-60))).collect()).await;
}

/// A replica cut off from its store answers from memory up to its maximum staleness, then
/// denies every access with STORE_UNAVAILABLE, refuses other reads and writes, and recovers
/// by itself when the store is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_cut_off_from_its_store_denies_past_its_maximum_staleness_and_recovers() {
    let store = Faulty::new(Arc::new(MemoryStore::default()));
    let clock = Arc::new(ManualClock::new(T0));
    let engine = Engine::open(store.clone(), clock, 1_000, Arc::new(Credentials::default())).await.unwrap();
    let engine = Arc::new(engine.with_max_staleness(Duration::from_millis(400)));
    small_org(&engine).await;
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let following = tokio::spawn(engine.clone().follow(shutdown.clone()));
    let (watcher, _watching) = Watcher::spawn(engine.clone(), WatchConfig::default(), shutdown);
    let mut stream = watcher.subscribe("", Start::Now, vec![]).await.unwrap();
    let mut available = engine.available();
    assert!(engine.check_access("d0").0.allow);

    store.down.store(true, Ordering::SeqCst);
    // Within the staleness allowed, still answering from memory.
    assert!(engine.check_access("d0").0.allow);
    tokio::time::timeout(Duration::from_secs(5), available.wait_for(|a| !*a)).await.unwrap().unwrap();
    let (d, _) = engine.check_access("d0");
    assert!(!d.allow);
    assert_eq!(d.reasons.iter().map(|r| r.code).collect::<Vec<_>>(), [ReasonCode::StoreUnavailable]);
    assert!(d.reasons[0].message.contains("has not reached its store"), "{}", d.reasons[0].message);
    assert!(matches!(engine.check_available(), Err(Error::Unavailable(_))));
    let write = engine.sync_directory(vec![user(0, false)], vec![], vec![], vec![]).await;
    assert!(matches!(write, Err(Error::Storage(_))), "{write:?}");
    // Watch streams end, telling the client to go elsewhere; new ones are refused.
    let ended = tokio::time::timeout(Duration::from_secs(5), stream.next()).await.unwrap();
    assert!(matches!(&ended, Some(Err(Error::Unavailable(m))) if m.contains("another replica")), "{ended:?}");
    assert!(matches!(watcher.subscribe("", Start::Now, vec![]).await, Err(Error::Unavailable(_))));

    store.down.store(false, Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(5), available.wait_for(|a| *a)).await.unwrap().unwrap();
    assert!(engine.check_access("d0").0.allow);
    assert!(engine.check_available().is_ok());
    let _ = stop.send(true);
    following.await.unwrap();
}

/// Two replicas writing at once: each write is validated again when the other committed
/// first, so two creates of one policy give one policy and one ALREADY_EXISTS, and a policy
/// deleted on one while the other assigns it leaves no orphaned assignment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_through_two_replicas_are_validated_against_each_other() {
    let shared: Arc<dyn Store> = Arc::new(MemoryStore::default());
    let (store_a, store_b) = (Faulty::new(shared.clone()), Faulty::new(shared.clone()));
    let clock = Arc::new(ManualClock::new(T0));
    let a = engine_on(store_a.clone(), clock.clone()).await;
    let b = engine_on(store_b.clone(), clock.clone()).await;
    small_org(&a).await;
    b.catch_up().await.unwrap();
    let policy = |i: usize| {
        policy_of(
            i,
            &PolicySpec {
                min_os: None,
                encryption: true,
                firewall: false,
                min_password: None,
                grace_hours: 0,
                include: 1,
                exclude: 0,
            },
        )
    };
    for i in 0..20 {
        let (ra, rb) = tokio::join!(a.create_policy(policy(i)), b.create_policy(policy(i)));
        let outcomes = [&ra, &rb];
        assert_eq!(outcomes.iter().filter(|r| r.is_ok()).count(), 1, "exactly one create wins: {outcomes:?}");
        for r in outcomes {
            assert!(matches!(r, Ok(_) | Err(Error::AlreadyExists(_)) | Err(Error::Aborted(_))), "{r:?}");
        }
        // Deleted on A while B assigns it.
        let assign = targets(vec![connector_group(0)], vec![]);
        let id = policy_id(i);
        let (_, _) = tokio::join!(a.delete_policy(&id), b.assign_policy(&id, assign));
    }
    assert!(store_a.conflicts.load(Ordering::SeqCst) + store_b.conflicts.load(Ordering::SeqCst) > 0, "raced");
    a.catch_up().await.unwrap();
    b.catch_up().await.unwrap();
    let loaded = shared.load().await.unwrap().state;
    for state in [&loaded] {
        assert_eq!(state.policies().count(), 0, "every policy was deleted");
        for i in 0..20 {
            assert!(state.assignment(&policy_id(i)).is_none(), "no orphaned assignment of p{i}");
        }
    }
    for engine in [&a, &b] {
        let (orphans, _) = engine.read(|s, _| (0..20).filter(|i| s.assignment(&policy_id(*i)).is_some()).count());
        assert_eq!(orphans, 0);
    }
}

/// An error from a write means it was not written; success means it was, at that revision.
/// Here another replica commits just before this one, and the store fails right after: the
/// commit must not land on top (it was validated at an older revision), and the caller must
/// hear that nothing was written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_reports_an_error_was_not_written_and_one_that_succeeds_was() {
    let shared: Arc<dyn Store> = Arc::new(MemoryStore::default());
    let store = Faulty::new(shared.clone());
    let clock = Arc::new(ManualClock::new(T0));
    let engine = engine_on(store.clone(), clock).await;
    small_org(&engine).await;

    // Another replica's write lands first; then the store goes down.
    *store.commit_first.lock() = Some(vec![Change::PutUser(user(1, false))]);
    store.fail_reads_after_commit.store(true, Ordering::SeqCst);
    let result = engine.sync_directory(vec![user(0, false)], vec![], vec![], vec![]).await;
    assert!(matches!(result, Err(Error::Storage(_))), "{result:?}");
    let stored = shared.load().await.unwrap().state;
    assert!(stored.user(&user_id(1)).is_some_and(|u| !u.premium_identity_licence), "the other replica's write");
    assert!(stored.user(&user_id(0)).is_some_and(|u| u.premium_identity_licence), "ours was not written");

    // A commit that succeeds is applied at once, even if the store fails right after.
    store.down.store(false, Ordering::SeqCst);
    engine.catch_up().await.unwrap();
    store.fail_reads_after_commit.store(true, Ordering::SeqCst);
    let revision = engine.sync_directory(vec![user(2, false)], vec![], vec![], vec![]).await.unwrap();
    assert_eq!(shared.load().await.unwrap().revision, revision);
    let (u, applied) = engine.read(|s, _| s.user(&user_id(2)).cloned());
    assert_eq!((u.map(|u| u.premium_identity_licence), applied), (Some(false), revision));
}

// ---------------------------------------------------------------------------------------------
// The heartbeat and the removal of a terminated connector's Macs

/// Every report is a heartbeat, recorded at most once a minute and stored: a restart (or
/// another replica) knows it; a connector with no report for 24 hours is unresponsive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_heartbeat_is_stored_at_most_once_a_minute() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
    let clock = Arc::new(ManualClock::new(T0));
    let engine = engine_on(store.clone(), clock.clone()).await;
    small_org(&engine).await;
    let heartbeat = |e: &Engine| e.read(|s, _| s.heartbeat()).0;
    assert_eq!(heartbeat(&engine), Some(T0));
    let revision = engine.revision();
    // Thirty seconds later the same reports change nothing and write nothing.
    clock.advance(30);
    let again: Vec<Device> = (0..DEVICES).map(|d| healthy(d, d, T0.plus_secs(-60))).collect();
    assert_eq!(report(&engine, again.clone()).await.revision, revision);
    // A minute after the last one, the heartbeat alone is written.
    clock.advance(30);
    let r = report(&engine, again).await.revision;
    assert_eq!((r, heartbeat(&engine)), (revision + 1, Some(T0.plus_secs(60))));
    // Another replica (or a restart) knows it.
    let other = engine_on(store, clock.clone()).await;
    assert_eq!(heartbeat(&other), Some(T0.plus_secs(60)));
    let status = |e: &Engine| e.read(|s, now| posture::domain::connector::status(s.connector(), s.heartbeat(), now)).0;
    assert_eq!(status(&other), posture::domain::connector::ConnectorStatus::Enabled);
    clock.advance(24 * HOUR);
    assert_eq!(status(&other), posture::domain::connector::ConnectorStatus::Unresponsive);
    assert_eq!(status(&engine), posture::domain::connector::ConnectorStatus::Unresponsive);
}

/// A terminated connector's Macs are denied and counted noncompliant at once, and at the
/// removal date their records are removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_connectors_macs_are_noncompliant_at_once_and_removed_at_the_removal_date() {
    let clock = Arc::new(ManualClock::new(T0));
    let engine = engine_on(Arc::new(MemoryStore::default()), clock.clone()).await;
    small_org(&engine).await;
    engine.terminate_connector().await.unwrap();
    let summary = engine.read(posture::domain::summary::summarize).0;
    assert_eq!((summary.allowed, summary.denied), (0, DEVICES as u64));
    assert_eq!(summary.by_state.get(&ComplianceState::Noncompliant), Some(&(DEVICES as u64)));
    assert_eq!(summary.by_state.get(&ComplianceState::Compliant), None);
    // Not before the removal date...
    clock.advance(90 * 24 * HOUR - 1);
    assert_eq!(engine.remove_terminated_devices().await.unwrap(), 0);
    // ...and at it.
    clock.advance(1);
    assert_eq!(engine.remove_terminated_devices().await.unwrap(), DEVICES);
    let (count, _) = engine.read(|s, _| s.device_count());
    assert_eq!(count, 0);
    let (d, _) = engine.check_access("d0");
    assert_eq!(d.reasons.iter().map(|r| r.code).collect::<Vec<_>>(), [ReasonCode::DeviceUnknown]);
    assert_eq!(engine.remove_terminated_devices().await.unwrap(), 0, "nothing left to remove");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// GetComplianceSummary counts from the watcher's running tally, not a pass over the state:
    /// after any changes it says what deciding every device afresh would.
    #[test]
    fn the_running_tally_equals_a_fresh_count(spec in org_spec(), changes in prop::collection::vec(tighten(), 0..6)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let (engine, _clock) = build(&spec, Arc::new(MemoryStore::default())).await;
            let (_stop, shutdown) = tokio::sync::watch::channel(false);
            let (watcher, _task) = Watcher::spawn(engine.clone(), WatchConfig::default(), shutdown);
            for change in &changes {
                apply_tightening(&engine, change).await;
            }
            watcher.wait_settled(engine.revision(), Duration::from_secs(10)).await.unwrap();
            let (counted, revision) = watcher.summary();
            assert_eq!(revision, engine.revision());
            assert_eq!(counted, engine.read(posture::domain::summary::summarize).0, "{spec:#?} {changes:?}");
        });
    }
}
