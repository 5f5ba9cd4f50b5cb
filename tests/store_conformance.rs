//! One conformance suite for every `Store` backend: each test is an async function of the
//! store under test, run for the memory store and SQLite (a temporary directory) always, and
//! for PostgreSQL when `POSTURE_TEST_DATABASE_URL` is set (e.g.
//! `postgres://postgres@127.0.0.1:5432/test`), each PostgreSQL test in a fresh schema of its
//! own that is dropped at the end. PostgreSQL-only behaviour (concurrent migrations, the URL
//! options, the listener's reconnection, commits without advisory locks) is at the end.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::hash::BuildHasher;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use posture::domain::model::{
    Assignment, Connector, ConnectorState, Device, Gatekeeper, Group, GroupKind, NoPolicyTreatment, PasswordFacts,
    PasswordRules, PasswordType, Policy, PolicySettings, TenantSettings, ThreatLevel, User,
};
use posture::domain::{Change, State, Timestamp};
use posture::store::postgres::{PostgresOptions, PostgresStore};
use posture::store::sqlite::SqliteStore;
use posture::store::{Store, memory::MemoryStore};
use sqlx::Connection;
use tempfile::TempDir;
use tokio::sync::mpsc::Receiver;

const DATABASE_URL: &str = "POSTURE_TEST_DATABASE_URL";
/// Says so on the terminal even though the test harness captures `eprintln!`.
fn skipped(why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{why}");
}

const SKIPPED: &str = "skipped: PostgreSQL conformance (set POSTURE_TEST_DATABASE_URL)";
const NOTIFICATION_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// The backends under test

/// One database, of one backend, that tests can open handles on.
enum Db {
    /// The "database" is the one in-process store: every handle is the same.
    Memory(Arc<dyn Store>),
    Sqlite {
        _dir: TempDir,
        path: PathBuf,
    },
    Postgres {
        url: String,
        schema: String,
    },
}

impl Db {
    /// Opens another handle on the same database (for memory: the same store).
    async fn open(&self) -> Arc<dyn Store> {
        match self {
            Db::Memory(store) => store.clone(),
            Db::Sqlite { path, .. } => Arc::new(SqliteStore::open(path).await.expect("open sqlite")),
            Db::Postgres { url, schema } => {
                Arc::new(PostgresStore::open_in_schema(url, schema).await.expect("open postgres"))
            }
        }
    }

    /// Whether what is committed survives dropping every handle.
    fn durable(&self) -> bool {
        !matches!(self, Db::Memory(_))
    }

    fn is_postgres(&self) -> bool {
        matches!(self, Db::Postgres { .. })
    }
}

/// A schema name no other run or test uses: pid, a counter and per-process randomness.
fn fresh_schema() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let random = std::collections::hash_map::RandomState::new().hash_one((n, std::time::SystemTime::now()));
    format!("posture_test_{}_{n}_{:08x}", std::process::id(), random as u32)
}

fn database_url() -> Option<String> {
    std::env::var(DATABASE_URL).ok().filter(|url| !url.is_empty())
}

async fn drop_schema(url: &str, schema: &str) {
    let mut conn = sqlx::PgConnection::connect(url).await.expect("connect to drop the test schema");
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).execute(&mut conn).await.expect("drop schema");
}

/// Runs `test` against a fresh database; for PostgreSQL, drops the schema afterwards even if
/// the test panicked (the test body runs as a task, so its panic arrives as a `JoinError`).
async fn run<F, Fut>(db: Db, test: F)
where
    F: FnOnce(Arc<dyn Store>, Arc<Db>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let db = Arc::new(db);
    let store = db.open().await;
    let outcome = tokio::spawn(test(store, db.clone())).await;
    if let Db::Postgres { url, schema } = &*db {
        drop_schema(url, schema).await;
    }
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn memory() -> Db {
    Db::Memory(Arc::new(MemoryStore::default()))
}

async fn sqlite() -> Db {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("posture.db");
    Db::Sqlite { _dir: dir, path }
}

async fn postgres() -> Option<Db> {
    let Some(url) = database_url() else {
        skipped(SKIPPED);
        return None;
    };
    Some(Db::Postgres { url, schema: fresh_schema() })
}

/// Each test function, once per backend: `memory::NAME`, `sqlite::NAME`, `postgres::NAME`.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::run(super::memory().await, super::$name).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::run(super::sqlite().await, super::$name).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(db) = super::postgres().await {
                        super::run(db, super::$name).await;
                    }
                }
            )*
        }
    };
}

conformance!(
    empty_store_loads_empty,
    commits_number_revisions_from_one,
    load_reproduces_the_applied_state,
    deletes_persist,
    changes_since_returns_later_revisions_in_order,
    reopened_store_keeps_everything,
    concurrent_commits_get_consecutive_revisions,
    notifications_follow_commits_or_are_absent,
);

// ---------------------------------------------------------------------------------------------
// Data and comparison

const NOW: Timestamp = Timestamp(1_800_000_000);

fn user_id(i: usize) -> String {
    format!("user-{i:02}")
}
fn device_id(i: usize) -> String {
    format!("mac-{i:02}")
}
fn group_id(i: usize) -> String {
    format!("group-{i}")
}

/// A small organisation (users, groups, policies with assignments, the connector, devices)
/// in eight batches.
fn organisation() -> Vec<Vec<Change>> {
    let users: Vec<Change> =
        (0..12).map(|i| Change::PutUser(User { premium_identity_licence: i % 5 != 0, ..user(&user_id(i)) })).collect();
    let groups = (0..4)
        .map(|g| {
            Change::PutGroup(Group {
                members: (0..12).filter(|u| u % 4 != g).map(user_id).collect(),
                ..group(&group_id(g), &[])
            })
        })
        .collect();
    let policies = (0..3)
        .flat_map(|p| {
            let policy = full_policy(p);
            let a = assignment(&policy.id, &[&group_id(p), &group_id(3)]);
            [Change::PutPolicy(policy), Change::PutAssignment(a)]
        })
        .collect();
    let connector = Connector {
        state: ConnectorState::Enabled,
        partner_app_id: "jamf-test".into(),
        partner_version: Some("11.4.0".parse().unwrap()),
        include_group_ids: vec![group_id(0), group_id(1)],
        exclude_group_ids: vec![group_id(2)],
        enabled_at: Some(NOW.plus_days(-60)),
        terminated_at: None,
        removal_at: None,
    };
    let devices: Vec<Change> = (0..20).map(|i| Change::PutDevice(device(i, i % 12))).collect();
    let mut batches =
        vec![users[..8].to_vec(), users[8..].to_vec(), groups, policies, vec![Change::PutConnector(connector)]];
    batches.extend(devices.chunks(8).map(<[Change]>::to_vec));
    batches
}

fn user(id: &str) -> User {
    User {
        id: id.to_string(),
        user_principal_name: format!("{id}@example.com"),
        device_management_licence: true,
        premium_identity_licence: false,
    }
}

/// A Mac reporting every fact, so that every field goes through the store.
fn device(i: usize, user: usize) -> Device {
    let mut d = posture::demo::healthy_mac(&device_id(i), &user_id(user), &format!("C02{i:09}"), NOW);
    d.facts.password = PasswordFacts {
        required: Some(true),
        simple_blocked: Some(true),
        min_length: Some(12),
        kind: Some(PasswordType::Alphanumeric),
        min_character_sets: Some(3),
        minutes_of_inactivity_before_lock: Some(5),
        expiry_days: Some(90),
        previous_passwords_blocked: Some(10),
    };
    d.facts.threat_level = Some(ThreatLevel::Secured);
    d
}

/// A policy configuring every setting, so that every field goes through the store.
fn full_policy(i: usize) -> Policy {
    Policy {
        id: format!("policy-{i}"),
        name: format!("Full policy {i}"),
        settings: PolicySettings {
            os_minimum_version: Some("13.0".parse().unwrap()),
            os_maximum_version: Some("15.9".parse().unwrap()),
            os_minimum_build: Some("22A380".parse().unwrap()),
            os_maximum_build: Some("24Z999".parse().unwrap()),
            system_integrity_protection_required: Some(true),
            storage_encryption_required: Some(true),
            firewall_enabled: Some(true),
            firewall_block_all_incoming: Some(true),
            firewall_stealth_mode: Some(true),
            gatekeeper_minimum: Some(Gatekeeper::AppStoreAndIdentifiedDevelopers),
            password: PasswordRules {
                required: Some(true),
                block_simple: Some(true),
                min_length: Some(8),
                kind: Some(PasswordType::Alphanumeric),
                min_character_sets: Some(2),
                max_minutes_of_inactivity_before_lock: Some(15),
                max_expiry_days: Some(365),
                min_previous_passwords_blocked: Some(5),
            },
            max_threat_level: Some(ThreatLevel::Low),
        },
        grace_period_hours: 24 * i as u32,
        updated_at: NOW.plus_days(-30),
    }
}

fn group(id: &str, members: &[&str]) -> Group {
    Group {
        id: id.to_string(),
        name: format!("Group {id}"),
        kind: GroupKind::User,
        members: members.iter().map(|m| m.to_string()).collect(),
    }
}

fn assignment(policy_id: &str, include: &[&str]) -> Assignment {
    Assignment {
        policy_id: policy_id.to_string(),
        include_group_ids: include.iter().map(|g| g.to_string()).collect(),
        exclude_group_ids: vec![],
    }
}

fn settings() -> TenantSettings {
    TenantSettings { no_policy: NoPolicyTreatment::Noncompliant, validity_days: 7 }
}

/// Everything a state holds, through its public accessors, in a comparable order. The ids
/// whose assignments and group memberships to read are the ones `changes` mention.
/// A member's groups, a user's devices and a serial's devices, each sorted.
type Indexes = (Vec<String>, Vec<String>, Vec<String>);

#[derive(Debug, PartialEq)]
struct Contents {
    users: Vec<User>,
    groups: Vec<Group>,
    devices: Vec<Device>,
    policies: Vec<Policy>,
    assignments: Vec<Assignment>,
    connector: Connector,
    settings: TenantSettings,
    /// member → its groups; user → its devices; serial → its devices (all sorted).
    indexes: BTreeMap<String, Indexes>,
}

fn contents(state: &State, changes: &[Change]) -> Contents {
    fn sorted<T>(items: impl Iterator<Item = T>, key: impl Fn(&T) -> String) -> Vec<T> {
        let mut v: Vec<T> = items.collect();
        v.sort_by_key(|t| key(t));
        v
    }
    fn sorted_ids(ids: &[String]) -> Vec<String> {
        let mut v = ids.to_vec();
        v.sort();
        v
    }
    let mut policy_ids = BTreeSet::new();
    let mut keys = BTreeSet::new();
    for change in changes {
        match change {
            Change::PutPolicy(p) => policy_ids.extend([p.id.clone()]),
            Change::DeletePolicy(id) => policy_ids.extend([id.clone()]),
            Change::PutAssignment(a) => policy_ids.extend([a.policy_id.clone()]),
            Change::PutUser(u) => keys.extend([u.id.clone()]),
            Change::DeleteUser(id) | Change::DeleteDevice(id) => keys.extend([id.clone()]),
            Change::PutDevice(d) => {
                keys.extend([d.id.clone(), d.user_id.clone(), d.serial_number.clone()]);
            }
            Change::PutGroup(g) => keys.extend(g.members.iter().cloned()),
            _ => {}
        }
    }
    Contents {
        users: sorted(state.users().cloned(), |u| u.id.clone()),
        groups: sorted(state.groups().cloned(), |g| g.id.clone()),
        devices: sorted(state.devices().cloned(), |d| d.id.clone()),
        policies: sorted(state.policies().cloned(), |p| p.id.clone()),
        assignments: policy_ids.iter().filter_map(|id| state.assignment(id).cloned()).collect(),
        connector: state.connector().clone(),
        settings: *state.settings(),
        indexes: keys
            .into_iter()
            .map(|k| {
                let entry = (
                    sorted_ids(state.groups_of(&k)),
                    sorted_ids(state.devices_of_user(&k)),
                    sorted_ids(state.devices_with_serial(&k)),
                );
                (k, entry)
            })
            .collect(),
    }
}

/// The state the changes make when applied in memory, in order.
fn applied(batches: &[Vec<Change>]) -> State {
    let mut state = State::default();
    for change in batches.iter().flatten() {
        state.apply(change.clone());
    }
    state
}

async fn commit_all(store: &dyn Store, batches: &[Vec<Change>]) -> Vec<u64> {
    let mut revisions = Vec::new();
    for (i, batch) in batches.iter().enumerate() {
        revisions.push(store.commit(batch, NOW.0 + i as i64).await.expect("commit"));
    }
    revisions
}

/// The next value on a notification receiver, or a panic after [`NOTIFICATION_TIMEOUT`].
async fn next_notification(rx: &mut Receiver<u64>) -> u64 {
    tokio::time::timeout(NOTIFICATION_TIMEOUT, rx.recv())
        .await
        .expect("a notification in time")
        .expect("the notification feed is open")
}

/// Waits until the receiver reports `revision` (skipping older values, which mean "re-check").
async fn wait_for_revision(rx: &mut Receiver<u64>, revision: u64) {
    loop {
        let got = next_notification(rx).await;
        assert!(got <= revision, "notified of revision {got}, beyond the {revision} committed");
        if got == revision {
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The conformance tests

async fn empty_store_loads_empty(store: Arc<dyn Store>, _db: Arc<Db>) {
    let snapshot = store.load().await.expect("load");
    assert_eq!(snapshot.revision, 0);
    assert_eq!(contents(&snapshot.state, &[]), contents(&State::default(), &[]));
    assert_eq!(snapshot.state.user_count(), 0);
    assert_eq!(snapshot.state.device_count(), 0);
    assert!(store.changes_since(0, 100).await.expect("changes_since").is_empty());
}

async fn commits_number_revisions_from_one(store: Arc<dyn Store>, _db: Arc<Db>) {
    let batches: Vec<Vec<Change>> = (0..5).map(|i| vec![Change::PutUser(user(&format!("user-{i}")))]).collect();
    assert_eq!(commit_all(&*store, &batches).await, vec![1, 2, 3, 4, 5]);
    assert_eq!(store.load().await.expect("load").revision, 5);
    // An empty commit is still a revision.
    assert_eq!(store.commit(&[], NOW.0).await.expect("empty commit"), 6);
    assert_eq!(store.load().await.expect("load").revision, 6);
}

async fn load_reproduces_the_applied_state(store: Arc<dyn Store>, _db: Arc<Db>) {
    let mut batches = organisation();
    batches.push(vec![Change::PutSettings(settings())]);
    // Rewrites of entities already stored, and a device moving to another user and serial.
    batches.push(vec![
        Change::PutUser(User { premium_identity_licence: true, ..user(&user_id(3)) }),
        Change::PutGroup(group(&group_id(1), &[&user_id(0), &user_id(5)])),
        Change::PutDevice(Device { serial_number: "MOVED-SERIAL".into(), ..device(4, 9) }),
    ]);
    let revisions = commit_all(&*store, &batches).await;
    assert_eq!(revisions, (1..=batches.len() as u64).collect::<Vec<_>>());

    let snapshot = store.load().await.expect("load");
    assert_eq!(snapshot.revision, batches.len() as u64);
    let all: Vec<Change> = batches.concat();
    let expected = applied(&batches);
    assert_eq!(contents(&snapshot.state, &all), contents(&expected, &all));
    assert_eq!(snapshot.state.device_count(), 20);
    assert_eq!(snapshot.state.user_count(), 12);
    assert_eq!(*snapshot.state.settings(), settings());
    assert_eq!(snapshot.state.connector(), expected.connector());
}

async fn deletes_persist(store: Arc<dyn Store>, _db: Arc<Db>) {
    let policy = full_policy(1);
    let kept_policy = full_policy(2);
    let puts = vec![
        Change::PutUser(user("alice")),
        Change::PutUser(user("bob")),
        Change::PutGroup(group("g-1", &["alice", "bob"])),
        Change::PutGroup(group("g-2", &["bob"])),
        Change::PutDevice(device(1, 0)),
        Change::PutDevice(device(2, 0)),
        Change::PutPolicy(policy.clone()),
        Change::PutPolicy(kept_policy.clone()),
        Change::PutAssignment(assignment(&policy.id, &["g-1"])),
        Change::PutAssignment(assignment(&kept_policy.id, &["g-2"])),
    ];
    let deletes = vec![
        Change::DeleteUser("alice".into()),
        Change::DeleteGroup("g-1".into()),
        Change::DeleteDevice(device(1, 0).id),
        // Deleting a policy deletes its assignment; an assignment with no groups is removed.
        Change::DeletePolicy(policy.id.clone()),
        Change::PutAssignment(assignment(&kept_policy.id, &[])),
        // Deleting what does not exist is not an error.
        Change::DeleteUser("nobody".into()),
        Change::DeleteDevice("no-such-device".into()),
    ];
    let batches = vec![puts, deletes];
    assert_eq!(commit_all(&*store, &batches).await, vec![1, 2]);

    let state = store.load().await.expect("load").state;
    assert!(state.user("alice").is_none());
    assert!(state.user("bob").is_some());
    assert!(state.group("g-1").is_none());
    assert!(state.group("g-2").is_some());
    assert!(state.device(&device(1, 0).id).is_none());
    assert!(state.device(&device(2, 0).id).is_some());
    assert!(state.policy(&policy.id).is_none());
    assert!(state.assignment(&policy.id).is_none());
    assert!(state.policy(&kept_policy.id).is_some());
    assert!(state.assignment(&kept_policy.id).is_none());
    let all = batches.concat();
    assert_eq!(contents(&state, &all), contents(&applied(&batches), &all));

    // Put back after a delete.
    store.commit(&[Change::PutUser(user("alice"))], NOW.0).await.expect("commit");
    assert!(store.load().await.expect("load").state.user("alice").is_some());
}

async fn changes_since_returns_later_revisions_in_order(store: Arc<dyn Store>, _db: Arc<Db>) {
    let mut batches = organisation();
    batches.truncate(6);
    batches.push(vec![Change::DeleteUser(user_id(0)), Change::PutSettings(settings())]);
    batches.push(vec![]);
    let n = batches.len() as u64;
    commit_all(&*store, &batches).await;
    let expected: Vec<(u64, Vec<Change>)> =
        batches.iter().cloned().enumerate().map(|(i, c)| (i as u64 + 1, c)).collect();

    assert_eq!(store.changes_since(0, 1000).await.expect("all"), expected);
    assert_eq!(store.changes_since(2, 1000).await.expect("after 2"), expected[2..].to_vec());
    assert_eq!(store.changes_since(2, 3).await.expect("limit 3"), expected[2..5].to_vec());
    assert_eq!(store.changes_since(0, 1).await.expect("limit 1"), expected[..1].to_vec());
    assert_eq!(store.changes_since(n - 1, 10).await.expect("last"), expected[n as usize - 1..].to_vec());
    assert!(store.changes_since(n, 10).await.expect("none after the last").is_empty());
    assert!(store.changes_since(n + 100, 10).await.expect("none beyond").is_empty());
    assert!(store.changes_since(0, 0).await.expect("limit 0").is_empty());
    assert!(store.changes_since(u64::MAX, 10).await.expect("u64::MAX").is_empty());

    // Paging through the log in small pages gives the whole log.
    let mut paged = Vec::new();
    let mut after = 0;
    loop {
        let page = store.changes_since(after, 3).await.expect("page");
        let Some((last, _)) = page.last() else { break };
        after = *last;
        paged.extend(page);
    }
    assert_eq!(paged, expected);
}

async fn reopened_store_keeps_everything(store: Arc<dyn Store>, db: Arc<Db>) {
    if !db.durable() {
        eprintln!("skipped: the memory store is not durable");
        return;
    }
    let mut batches = organisation();
    batches.push(vec![Change::PutSettings(settings()), Change::DeleteDevice(device_id(3))]);
    commit_all(&*store, &batches).await;
    let before = store.load().await.expect("load");
    let log = store.changes_since(0, 1000).await.expect("log");
    drop(store);

    let reopened = db.open().await;
    let after = reopened.load().await.expect("load after reopening");
    let all = batches.concat();
    assert_eq!(after.revision, before.revision);
    assert_eq!(contents(&after.state, &all), contents(&before.state, &all));
    assert_eq!(contents(&after.state, &all), contents(&applied(&batches), &all));
    assert_eq!(reopened.changes_since(0, 1000).await.expect("log after reopening"), log);
    // Numbering carries on.
    let next = reopened.commit(&[Change::PutUser(user("after-reopen"))], NOW.0).await.expect("commit");
    assert_eq!(next, before.revision + 1);
    drop(reopened);
    // Opening again (migrations already applied) is fine too.
    assert_eq!(db.open().await.load().await.expect("load").revision, next);
}

async fn concurrent_commits_get_consecutive_revisions(store: Arc<dyn Store>, db: Arc<Db>) {
    const PER_HANDLE: usize = 15;
    let other = db.open().await;
    let writer = |handle: Arc<dyn Store>, name: &'static str| {
        tokio::spawn(async move {
            let mut committed = Vec::new();
            for i in 0..PER_HANDLE {
                let changes = vec![Change::PutUser(user(&format!("{name}-{i}")))];
                let revision = handle.commit(&changes, NOW.0).await.expect("concurrent commit");
                committed.push((revision, changes));
            }
            committed
        })
    };
    let (a, b) = tokio::join!(writer(store.clone(), "a"), writer(other.clone(), "b"));
    let (a, b) = (a.expect("writer a"), b.expect("writer b"));
    // Each handle sees its own commits in increasing order.
    for committed in [&a, &b] {
        assert!(committed.windows(2).all(|w| w[0].0 < w[1].0), "{committed:?}");
    }
    let mut all: Vec<(u64, Vec<Change>)> = a.into_iter().chain(b).collect();
    all.sort_by_key(|(revision, _)| *revision);
    let revisions: Vec<u64> = all.iter().map(|(r, _)| *r).collect();
    assert_eq!(revisions, (1..=2 * PER_HANDLE as u64).collect::<Vec<_>>());

    // The log, read from either handle, is exactly those commits in order.
    assert_eq!(store.changes_since(0, 1000).await.expect("log"), all);
    assert_eq!(other.changes_since(0, 1000).await.expect("log from the other handle"), all);
    let snapshot = other.load().await.expect("load");
    assert_eq!(snapshot.revision, 2 * PER_HANDLE as u64);
    assert_eq!(snapshot.state.user_count(), 2 * PER_HANDLE);
}

async fn notifications_follow_commits_or_are_absent(store: Arc<dyn Store>, db: Arc<Db>) {
    let feed = store.notifications().await.expect("notifications");
    if !db.is_postgres() {
        assert!(feed.is_none(), "only PostgreSQL has a change feed");
        return;
    }
    let mut rx = feed.expect("PostgreSQL has a change feed");
    // From another handle, as another replica would.
    let other = db.open().await;
    let first = other.commit(&[Change::PutUser(user("notified"))], NOW.0).await.expect("commit");
    wait_for_revision(&mut rx, first).await;
    // And its own commits.
    let second = store.commit(&[Change::DeleteUser("notified".into())], NOW.0).await.expect("commit");
    wait_for_revision(&mut rx, second).await;
    // Several receivers at once each get every revision.
    let mut rx2 = other.notifications().await.expect("notifications").expect("a feed");
    let third = other.commit(&[], NOW.0).await.expect("commit");
    wait_for_revision(&mut rx, third).await;
    wait_for_revision(&mut rx2, third).await;
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL only

mod postgres_only {
    use super::*;

    /// Runs `test(url, schema)` in a fresh schema that is dropped afterwards.
    async fn with_schema<F, Fut>(test: F)
    where
        F: FnOnce(String, String) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Some(url) = database_url() else {
            skipped(SKIPPED);
            return;
        };
        let schema = fresh_schema();
        let outcome = tokio::spawn(test(url.clone(), schema.clone())).await;
        drop_schema(&url, &schema).await;
        if let Err(e) = outcome {
            std::panic::resume_unwind(e.into_panic());
        }
    }

    fn with_query(url: &str, query: &str) -> String {
        format!("{url}{}{query}", if url.contains('?') { '&' } else { '?' })
    }

    /// Replicas starting together on an empty schema: the migration lock lets one apply the
    /// migrations and the others find them applied.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replicas_migrating_together() {
        with_schema(|url, schema| async move {
            let opens = (0..4).map(|_| {
                let (url, schema) = (url.clone(), schema.clone());
                tokio::spawn(async move { PostgresStore::open_in_schema(&url, &schema).await })
            });
            let mut stores = Vec::new();
            for open in opens {
                stores.push(open.await.expect("task").expect("open"));
            }
            let mut revisions = Vec::new();
            for store in &stores {
                assert_eq!(store.schema(), schema);
                revisions.push(store.commit(&[], NOW.0).await.expect("commit"));
            }
            assert_eq!(revisions, vec![1, 2, 3, 4]);
            let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
            let applied: Vec<i64> =
                sqlx::query_scalar(&format!("SELECT version FROM {schema}.schema_migrations ORDER BY version"))
                    .fetch_all(&mut conn)
                    .await
                    .expect("schema_migrations");
            assert_eq!(applied, vec![1]);
        })
        .await;
    }

    /// `store::open` takes postgres:// and postgresql:// URLs; the schema can come from
    /// sqlx's `options=-c search_path=NAME` (for a schema that exists) or `posture_schema`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn store_open_takes_postgres_urls() {
        with_schema(|url, schema| async move {
            let created = PostgresStore::open_in_schema(&url, &schema).await.expect("create the schema");
            assert_eq!(created.commit(&[Change::PutUser(user("u"))], NOW.0).await.expect("commit"), 1);

            let search_path = with_query(&url, &format!("options=-c%20search_path%3D{schema}"));
            let by_search_path = posture::store::open(&search_path).await.expect("open with search_path");
            assert_eq!(by_search_path.load().await.expect("load").revision, 1);

            let other_scheme = url.replacen("postgres://", "postgresql://", 1);
            let by_parameter = posture::store::open(&with_query(&other_scheme, &format!("posture_schema={schema}")))
                .await
                .expect("open with posture_schema");
            assert_eq!(by_parameter.commit(&[], NOW.0).await.expect("commit"), 2);
            assert_eq!(by_search_path.changes_since(0, 10).await.expect("log").len(), 2);

            let missing = with_query(&url, "options=-c%20search_path%3Dposture_no_such_schema");
            let error = posture::store::open(&missing).await.err().expect("no schema to use");
            assert!(error.to_string().contains("search_path"), "{error}");
            assert!(posture::store::open(&with_query(&url, "posture_schema=Bad-Name")).await.is_err());
        })
        .await;
    }

    /// Without advisory locks (for engines that lack them) racing commits collide on the
    /// revision and are retried: revisions stay distinct and consecutive.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commits_without_advisory_locks_stay_consecutive() {
        with_schema(|url, schema| async move {
            let options = PostgresOptions { schema: Some(schema), advisory_locks: false, ..PostgresOptions::default() };
            let a = Arc::new(PostgresStore::open_with(&url, options.clone()).await.expect("open a"));
            let b = Arc::new(PostgresStore::open_with(&url, options).await.expect("open b"));
            let writer = |store: Arc<PostgresStore>| {
                tokio::spawn(async move {
                    let mut revisions = Vec::new();
                    for i in 0..20 {
                        revisions.push(
                            store.commit(&[Change::PutUser(user(&format!("u{i}")))], NOW.0).await.expect("commit"),
                        );
                    }
                    revisions
                })
            };
            let (ra, rb) = tokio::join!(writer(a.clone()), writer(b));
            let mut revisions: Vec<u64> = ra.expect("a").into_iter().chain(rb.expect("b")).collect();
            revisions.sort();
            assert_eq!(revisions, (1..=40).collect::<Vec<_>>());
            let log: Vec<u64> = a.changes_since(0, 100).await.expect("log").into_iter().map(|(r, _)| r).collect();
            assert_eq!(log, revisions);
        })
        .await;
    }

    /// When the listener's connection is killed, the feed reconnects, says "re-check" with the
    /// last revision it knew, and goes on delivering.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn notifications_survive_a_lost_connection() {
        with_schema(|url, schema| async move {
            let store = PostgresStore::open_in_schema(&url, &schema).await.expect("open");
            let mut rx = store.notifications().await.expect("notifications").expect("a feed");
            let first = store.commit(&[], NOW.0).await.expect("commit");
            wait_for_revision(&mut rx, first).await;

            let mut admin = sqlx::PgConnection::connect(&url).await.expect("connect");
            let killed: Vec<bool> = sqlx::query_scalar(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE query = 'LISTEN \"' || $1 || '\"' AND pid <> pg_backend_pid()",
            )
            .bind(store.channel())
            .fetch_all(&mut admin)
            .await
            .expect("terminate the listener");
            assert_eq!(killed, vec![true], "exactly the one listener was connected");

            // The feed notices, reconnects and sends the last revision it knew: re-check.
            assert_eq!(next_notification(&mut rx).await, first);
            let second = store.commit(&[], NOW.0).await.expect("commit");
            wait_for_revision(&mut rx, second).await;
        })
        .await;
    }

    /// With `posture_notify=off` commits publish nothing and there is no feed: callers poll.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn notify_can_be_turned_off() {
        with_schema(|url, schema| async move {
            let store = PostgresStore::open(&with_query(&url, &format!("posture_schema={schema}&posture_notify=off")))
                .await
                .expect("open");
            assert!(store.notifications().await.expect("notifications").is_none());
            assert_eq!(store.commit(&[], NOW.0).await.expect("commit"), 1);
        })
        .await;
    }
}
