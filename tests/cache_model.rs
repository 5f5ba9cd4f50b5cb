//! The cache's proof: random sequences of writes, reads and clock advances, and after every
//! step every cached CheckAccess answer equals a fresh, uncached evaluation at that moment.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use posture::auth::Credentials;
use posture::clock::{Clock, ManualClock};
use posture::domain::Timestamp;
use posture::domain::model::{
    FileVault, Group, GroupKind, NoPolicyTreatment, Policy, PolicySettings, Registration, TenantSettings, User,
};
use posture::engine::{Engine, GroupTargets};
use posture::store::memory::MemoryStore;
use proptest::prelude::*;

const USERS: usize = 4;
const DEVICES: usize = 5;
const GROUPS: usize = 3;
const T0: i64 = 1_800_000_000;

#[derive(Debug, Clone)]
enum Op {
    Report {
        device: usize,
        user: usize,
        serial: usize,
        encrypted: bool,
        os_major: u32,
        check_in_ago: i64,
        token_ago: i64,
        direct: bool,
    },
    Members {
        group: usize,
        members: u8,
        device_group: bool,
    },
    Licence {
        user: usize,
        licensed: bool,
    },
    Grace {
        policy: usize,
        hours: u32,
    },
    Assign {
        policy: usize,
        include: u8,
        exclude: u8,
    },
    EnableConnector {
        include: u8,
        exclude: u8,
    },
    TerminateConnector,
    Settings {
        noncompliant_without_policy: bool,
        validity_days: u32,
    },
    Advance(i64),
    Check {
        user: usize,
        device: usize,
    },
}

/// Time steps that land on and around the interesting boundaries (hours, days, 90 days).
fn step() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(1),
        Just(59),
        Just(3_599),
        Just(3_600),
        Just(86_399),
        Just(86_400),
        1..200_000i64,
        Just(90 * 86_400),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..DEVICES, 0..USERS, 0..3usize, any::<bool>(), 10..16u32, 0..120_000i64, 0..120_000i64, prop::bool::weighted(0.15))
            .prop_map(|(device, user, serial, encrypted, os_major, check_in_ago, token_ago, direct)| Op::Report {
                device, user, serial, encrypted, os_major, check_in_ago, token_ago, direct
            }),
        2 => (0..GROUPS, any::<u8>(), prop::bool::weighted(0.2))
            .prop_map(|(group, members, device_group)| Op::Members { group, members, device_group }),
        2 => (0..USERS, any::<bool>()).prop_map(|(user, licensed)| Op::Licence { user, licensed }),
        1 => (0..2usize, 0..4u32).prop_map(|(policy, hours)| Op::Grace { policy, hours }),
        1 => (0..2usize, 0..8u8, 0..8u8).prop_map(|(policy, include, exclude)| Op::Assign { policy, include, exclude }),
        1 => (0..8u8, 0..8u8).prop_map(|(include, exclude)| Op::EnableConnector { include, exclude }),
        1 => Just(Op::TerminateConnector),
        1 => (any::<bool>(), 1..4u32).prop_map(|(n, validity_days)| Op::Settings { noncompliant_without_policy: n, validity_days }),
        5 => step().prop_map(Op::Advance),
        4 => (0..USERS, 0..DEVICES).prop_map(|(user, device)| Op::Check { user, device }),
    ]
}

fn user_id(i: usize) -> String {
    format!("u{i}")
}
fn device_id(i: usize) -> String {
    format!("d{i}")
}
fn group_id(i: usize) -> String {
    format!("g{i}")
}
fn groups_in(mask: u8) -> Vec<String> {
    (0..GROUPS).filter(|g| mask & (1 << g) != 0).map(group_id).collect()
}

fn policy(i: usize, grace: u32) -> Policy {
    let mut settings = PolicySettings::default();
    if i == 0 {
        settings.storage_encryption_required = Some(true);
    } else {
        settings.os_minimum_version = Some("13.0".parse().unwrap());
    }
    Policy {
        id: format!("p{i}"),
        name: format!("policy {i}"),
        settings,
        grace_period_hours: grace,
        updated_at: Timestamp(0),
    }
}

struct Model {
    engine: Engine,
    clock: Arc<ManualClock>,
}

impl Model {
    async fn new() -> Model {
        let clock = Arc::new(ManualClock::new(Timestamp(T0)));
        let engine =
            Engine::open(Arc::new(MemoryStore::default()), clock.clone(), 1_000, Arc::new(Credentials::default()))
                .await
                .unwrap();
        let users = (0..USERS)
            .map(|i| User {
                id: user_id(i),
                user_principal_name: format!("u{i}@example.com"),
                device_management_licence: true,
                premium_identity_licence: true,
            })
            .collect();
        let groups = (0..GROUPS)
            .map(|g| Group {
                id: group_id(g),
                name: group_id(g),
                kind: GroupKind::User,
                members: (0..USERS).filter(|u| u % GROUPS == g || *u == 0).map(user_id).collect(),
            })
            .collect();
        engine.sync_directory(users, groups, vec![], vec![]).await.unwrap();
        for i in 0..2 {
            engine.create_policy(policy(i, i as u32 * 2)).await.unwrap();
            engine
                .assign_policy(&format!("p{i}"), GroupTargets { include: groups_in(0b011), exclude: groups_in(0b100) })
                .await
                .unwrap();
        }
        let targets = GroupTargets { include: groups_in(0b011), exclude: groups_in(0b100) };
        engine.enable_connector("jamf".into(), "11.0.0".parse().unwrap(), targets).await.unwrap();
        Model { engine, clock }
    }

    /// Applies one op. Writes the engine refuses (a device group in an assignment, reports
    /// while the connector is terminated) belong to the model too: they must change nothing.
    async fn apply(&self, op: &Op) {
        let e = &self.engine;
        let now = self.clock.now();
        let _ = match op.clone() {
            Op::Report { device, user, serial, encrypted, os_major, check_in_ago, token_ago, direct } => {
                let mut d = common::domain::healthy_mac(&device_id(device), &user_id(user), &format!("S{serial}"), now);
                d.facts.file_vault = Some(if encrypted { FileVault::AllEncrypted } else { FileVault::NotEncrypted });
                d.os_version = format!("{os_major}.1").parse().unwrap();
                d.last_check_in = now.plus_secs(-check_in_ago);
                d.last_token_renewal = now.plus_secs(-token_ago);
                d.refresh_token_issued = None;
                if direct {
                    d.registration = Registration::Direct;
                }
                e.report_inventory(None, vec![(d.id.to_string(), Ok(d))]).await.map(|_| ())
            }
            Op::Members { group, members, device_group } => {
                let g = Group {
                    id: group_id(group),
                    name: group_id(group),
                    kind: if device_group { GroupKind::Device } else { GroupKind::User },
                    members: if device_group {
                        (0..DEVICES).filter(|d| members & (1 << d) != 0).map(device_id).collect()
                    } else {
                        (0..USERS).filter(|u| members & (1 << u) != 0).map(user_id).collect()
                    },
                };
                e.sync_directory(vec![], vec![g], vec![], vec![]).await.map(|_| ())
            }
            Op::Licence { user, licensed } => {
                let u = User {
                    id: user_id(user),
                    user_principal_name: format!("u{user}@example.com"),
                    device_management_licence: true,
                    premium_identity_licence: licensed,
                };
                e.sync_directory(vec![u], vec![], vec![], vec![]).await.map(|_| ())
            }
            Op::Grace { policy: p, hours } => e.update_policy(policy(p, hours)).await.map(|_| ()),
            Op::Assign { policy, include, exclude } => e
                .assign_policy(
                    &format!("p{policy}"),
                    GroupTargets { include: groups_in(include), exclude: groups_in(exclude) },
                )
                .await
                .map(|_| ()),
            Op::EnableConnector { include, exclude } => e
                .enable_connector(
                    "jamf".into(),
                    "11.0.0".parse().unwrap(),
                    GroupTargets { include: groups_in(include), exclude: groups_in(exclude) },
                )
                .await
                .map(|_| ()),
            Op::TerminateConnector => e.terminate_connector().await.map(|_| ()),
            Op::Settings { noncompliant_without_policy, validity_days } => e
                .update_settings(TenantSettings {
                    no_policy: if noncompliant_without_policy {
                        NoPolicyTreatment::Noncompliant
                    } else {
                        NoPolicyTreatment::Compliant
                    },
                    validity_days,
                })
                .await
                .map(|_| ()),
            Op::Advance(secs) => {
                self.clock.advance(secs);
                Ok(())
            }
            Op::Check { user, device } => {
                let _ = user;
                self.engine.check_access(&device_id(device));
                Ok(())
            }
        };
    }

    /// Every (user, device) pair: the cached answer equals a fresh evaluation.
    fn assert_cache_agrees(&self, history: &[Op]) {
        for d in 0..DEVICES {
            for u in 0..USERS {
                let (cached, _) = self.engine.check_access(&device_id(d));
                let cached = posture::domain::access::for_user(&cached, &user_id(u));
                let fresh = self.engine.check_access_uncached(&user_id(u), &device_id(d));
                assert_eq!(cached, fresh, "u{u} on d{d} at {:?} after {history:#?}", self.clock.now());
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, max_shrink_iters: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn cached_decisions_equal_fresh_evaluations(ops in prop::collection::vec(op(), 1..60)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let model = Model::new().await;
            model.assert_cache_agrees(&[]);
            for (i, op) in ops.iter().enumerate() {
                model.apply(op).await;
                model.assert_cache_agrees(&ops[..=i]);
            }
        });
    }
}
