//! One conformance suite for every `Store` backend: each test is an async function of the
//! store under test, run for the memory store (where it is not about durability) and SQLite
//! (a temporary directory), and for PostgreSQL: those are ignored unless asked for
//! (`cargo test -- --ignored`) and then need `POSTURE_TEST_DATABASE_URL` (e.g.
//! `postgres://postgres@127.0.0.1:5432/test`); each runs in a fresh schema of its own that is
//! dropped at the end. PostgreSQL-only behaviour (concurrent migrations, the URL options, the
//! listener's reconnection, commits without advisory locks) is at the end.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::hash::BuildHasher;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use posture::domain::model::{
    Assignment, Connector, ConnectorState, Device, Failure, FileVault, Gatekeeper, Group, GroupKind, NoPolicyTreatment,
    Policy, PolicySettings, Registration, SecurityFacts, Sip, TenantSettings, User,
};
use posture::domain::{Change, State, Timestamp};
use posture::store::postgres::{PostgresOptions, PostgresStore};
use posture::store::sqlite::SqliteStore;
use posture::store::{Commit, Compaction, Store, memory::MemoryStore};
use sqlx::Connection;
use tempfile::TempDir;
use tokio::sync::mpsc::Receiver;

const DATABASE_URL: &str = "POSTURE_TEST_DATABASE_URL";
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

/// The PostgreSQL the ignored tests run against: asked for, they fail without one.
fn database_url() -> String {
    match std::env::var(DATABASE_URL) {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "{DATABASE_URL} is not set: the PostgreSQL tests need a database, e.g. postgres://postgres@127.0.0.1:5432/test"
        ),
    }
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

async fn postgres() -> Db {
    Db::Postgres { url: database_url(), schema: fresh_schema() }
}

/// Each test function, once per backend: `memory::NAME` (for the tests of `all`), `sqlite::NAME`
/// and `postgres::NAME`.
macro_rules! conformance {
    (all: [$($name:ident),* $(,)?], durable: [$($durable:ident),* $(,)?] $(,)?) => {
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
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $durable() {
                    super::run(super::sqlite().await, super::$durable).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[ignore = "needs PostgreSQL: set POSTURE_TEST_DATABASE_URL and run with --ignored"]
                async fn $name() {
                    super::run(super::postgres().await, super::$name).await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[ignore = "needs PostgreSQL: set POSTURE_TEST_DATABASE_URL and run with --ignored"]
                async fn $durable() {
                    super::run(super::postgres().await, super::$durable).await;
                }
            )*
        }
    };
}

conformance!(
    all: [
        empty_store_loads_empty,
        commits_number_revisions_from_one,
        load_reproduces_the_applied_state,
        a_state_larger_than_a_chunk_loads_whole,
        deletes_persist,
        changes_since_returns_later_revisions_in_order,
        concurrent_commits_get_consecutive_revisions,
        notifications_follow_commits_or_are_absent,
        commits_land_only_on_the_head_they_expect,
        failures_on_record_go_with_their_policy_and_outlive_their_device,
        check_ins_move_only_the_check_in,
    ],
    durable: [reopened_store_keeps_everything],
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

fn policy(i: usize) -> Policy {
    Policy {
        id: format!("policy-{i}"),
        name: format!("Policy {i}"),
        settings: PolicySettings {
            os_minimum_version: Some("13.0".parse().unwrap()),
            storage_encryption_required: Some(true),
            firewall_enabled: Some(i.is_multiple_of(2)),
            gatekeeper_minimum: Some(Gatekeeper::AppStoreAndIdentifiedDevelopers),
            ..PolicySettings::default()
        },
        grace_period_hours: 24 * i as u32,
        updated_at: NOW,
    }
}

/// A small organisation (12 users, 4 groups, 3 policies with assignments, the connector, 20
/// devices, some failing) in batches of at most 8 changes, each batch applicable in order.
fn organisation() -> Vec<Vec<Change>> {
    let mut changes: Vec<Change> = (0..12).map(|i| Change::PutUser(user(&user_id(i)))).collect();
    for g in 0..4 {
        let members: Vec<String> = (0..12).filter(|u| u % 4 == g || u % 3 == 0).map(user_id).collect();
        let members: Vec<&str> = members.iter().map(String::as_str).collect();
        changes.push(Change::PutGroup(group(&group_id(g), &members)));
    }
    for p in 0..3 {
        changes.push(Change::PutPolicy(policy(p)));
        changes.push(Change::PutAssignment(assignment(&policy(p).id, &[&group_id(p)])));
    }
    changes.push(Change::PutConnector(Connector {
        state: ConnectorState::Enabled,
        partner_app_id: "jamf".into(),
        partner_version: Some("11.4.0".parse().unwrap()),
        include_group_ids: vec![group_id(0), group_id(1)],
        exclude_group_ids: vec![group_id(3)],
        enabled_at: Some(NOW.plus_days(-60)),
        terminated_at: None,
        removal_at: None,
    }));
    for i in 0..20 {
        changes.push(Change::PutDevice(device(i, i % 12)));
        if i.is_multiple_of(3) {
            let policy_id = policy(i % 3).id;
            let since = NOW.plus_secs(-(i as i64));
            let failure = Failure { since, grace_ends: since.plus_hours(24) };
            changes.push(Change::PutFailing { device_id: device_id(i), policy_id, failure });
        }
    }
    changes.push(Change::PutHeartbeat(NOW));
    changes.chunks(8).map(<[Change]>::to_vec).collect()
}

fn user(id: &str) -> User {
    User {
        id: id.to_string(),
        user_principal_name: format!("{id}@example.com"),
        device_management_licence: true,
        premium_identity_licence: false,
    }
}

/// Mac `i` of user `user`; every third one has FileVault off.
fn device(i: usize, user: usize) -> Device {
    Device {
        id: device_id(i).into(),
        partner_device_id: format!("jamf-{i}").into(),
        serial_number: format!("C02{i:09}").into(),
        name: format!("Mac {i}").into(),
        model: "MacBookPro18,3".into(),
        user_id: user_id(user).into(),
        os_version: "14.2.1".parse().unwrap(),
        os_build: Some("23C71".parse().unwrap()),
        registration: Registration::Partner,
        last_check_in: NOW.plus_secs(-(i as i64) * 60),
        last_token_renewal: NOW.plus_secs(-3600),
        refresh_token_issued: Some(NOW.plus_days(-1)),
        facts: SecurityFacts {
            system_integrity_protection: Some(Sip::Enabled),
            file_vault: Some(if i.is_multiple_of(3) { FileVault::NotEncrypted } else { FileVault::AllEncrypted }),
            gatekeeper: Some(Gatekeeper::AppStore),
            firewall_enabled: Some(true),
            ..SecurityFacts::default()
        },
        partner_verdict: None,
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
    heartbeat: Option<Timestamp>,
    /// (device, policy, failure) of every failure on record for the devices `changes` mention.
    failing: Vec<(String, String, Failure)>,
    /// member → its groups; user → its devices; serial → its devices (all sorted).
    indexes: BTreeMap<String, Indexes>,
}

fn contents(state: &State, changes: &[Change]) -> Contents {
    fn sorted<T>(items: impl Iterator<Item = T>, key: impl Fn(&T) -> String) -> Vec<T> {
        let mut v: Vec<T> = items.collect();
        v.sort_by_key(|t| key(t));
        v
    }
    fn sorted_ids<S: AsRef<str>>(ids: impl IntoIterator<Item = S>) -> Vec<String> {
        let mut v: Vec<String> = ids.into_iter().map(|s| s.as_ref().to_string()).collect();
        v.sort();
        v
    }
    let mut policy_ids = BTreeSet::new();
    let mut keys = BTreeSet::new();
    let mut device_ids = BTreeSet::new();
    for change in changes {
        match change {
            Change::PutFailing { device_id, .. } | Change::DeleteFailing { device_id, .. } => {
                device_ids.insert(device_id.clone());
            }
            Change::PutPolicy(p) => policy_ids.extend([p.id.clone()]),
            Change::DeletePolicy(id) => policy_ids.extend([id.clone()]),
            Change::PutAssignment(a) => policy_ids.extend([a.policy_id.clone()]),
            Change::PutUser(u) => keys.extend([u.id.clone()]),
            Change::DeleteUser(id) => keys.extend([id.clone()]),
            Change::DeleteDevice(id) => {
                keys.extend([id.clone()]);
                device_ids.insert(id.clone());
            }
            Change::PutDevice(d) => {
                keys.extend([&d.id, &d.user_id, &d.serial_number].map(|k| k.to_string()));
                device_ids.insert(d.id.to_string());
            }
            Change::PutGroup(g) => keys.extend(g.members.iter().cloned()),
            _ => {}
        }
    }
    Contents {
        users: sorted(state.users().cloned(), |u| u.id.clone()),
        groups: sorted(state.groups().map(|g| g.to_group()), |g| g.id.clone()),
        devices: sorted(state.devices().cloned(), |d| d.id.to_string()),
        policies: sorted(state.policies().cloned(), |p| p.id.clone()),
        assignments: policy_ids.iter().filter_map(|id| state.assignment(id).cloned()).collect(),
        connector: state.connector().clone(),
        settings: *state.settings(),
        heartbeat: state.heartbeat(),
        failing: device_ids
            .iter()
            .flat_map(|d| state.failures_of(d).map(|(p, f)| (d.clone(), p.to_string(), f)).collect::<Vec<_>>())
            .collect(),
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

/// The latest committed revision.
async fn head(store: &dyn Store) -> u64 {
    store.load().await.expect("load").revision
}

/// Commits `changes` on top of the latest revision, which nothing else is writing to.
async fn commit(store: &dyn Store, changes: &[Change]) -> u64 {
    match store.commit(head(store).await, changes, NOW.0).await.expect("commit") {
        Commit::Done(revision) => revision,
        Commit::Conflict => panic!("nothing else commits here"),
    }
}

async fn commit_all(store: &dyn Store, batches: &[Vec<Change>]) -> Vec<u64> {
    let mut revisions = Vec::new();
    for batch in batches {
        revisions.push(commit(store, batch).await);
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
    assert_eq!(commit(&*store, &[]).await, 6);
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

/// More rows than loading reads at once, in every table read in chunks (users, groups,
/// devices, and the failures of more devices than a chunk holds): every row loads, once.
async fn a_state_larger_than_a_chunk_loads_whole(store: Arc<dyn Store>, _db: Arc<Db>) {
    const USERS: usize = 11_000;
    const GROUPS: usize = 450;
    const DEVICES: usize = 11_000;
    let mut changes: Vec<Change> = (0..USERS).map(|i| Change::PutUser(user(&user_id(i)))).collect();
    for g in 0..GROUPS {
        let members: Vec<String> = (g..USERS).step_by(GROUPS).map(user_id).collect();
        let members: Vec<&str> = members.iter().map(String::as_str).collect();
        changes.push(Change::PutGroup(group(&group_id(g), &members)));
    }
    changes.extend((0..3).map(|p| Change::PutPolicy(policy(p))));
    // Three failures a device: 33,000 rows, and the 20,000th (where a chunk of failures is
    // cut) is the second of its device's, so the chunk must take the third along.
    for i in 0..DEVICES {
        changes.push(Change::PutDevice(device(i, i % USERS)));
        for p in 0..3 {
            let since = NOW.plus_secs(-(i as i64));
            let failure = Failure { since, grace_ends: since.plus_hours(24) };
            changes.push(Change::PutFailing { device_id: device_id(i), policy_id: policy(p).id, failure });
        }
    }
    let batches: Vec<Vec<Change>> = changes.chunks(1_000).map(<[Change]>::to_vec).collect();
    commit_all(&*store, &batches).await;

    let snapshot = store.load().await.expect("load");
    assert_eq!((snapshot.state.user_count(), snapshot.state.device_count()), (USERS, DEVICES));
    assert_eq!(snapshot.state.groups().count(), GROUPS);
    let failures: usize = (0..DEVICES).map(|i| snapshot.state.failures_of(&device_id(i)).count()).sum();
    assert_eq!(failures, 3 * DEVICES);
    assert_eq!(contents(&snapshot.state, &changes), contents(&applied(&batches), &changes));
}

async fn deletes_persist(store: Arc<dyn Store>, _db: Arc<Db>) {
    let kept_policy = policy(2);
    let policy = policy(1);
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
        Change::DeleteDevice(device(1, 0).id.into()),
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
    commit(&*store, &[Change::PutUser(user("alice"))]).await;
    assert!(store.load().await.expect("load").state.user("alice").is_some());
}

/// A check-in writes the time alone; loading gives the device with it, and a full report
/// afterwards stands whole (its own check-in, not the column's).
async fn check_ins_move_only_the_check_in(store: Arc<dyn Store>, _db: Arc<Db>) {
    let check_in = |i: usize, secs: i64| Change::CheckIn { device_id: device_id(i), at: NOW.plus_secs(secs) };
    let mut batches = organisation();
    batches.push(vec![
        check_in(1, 10),
        check_in(2, 20),
        // The same device twice in one commit: the later stands.
        check_in(1, 30),
        // A device with no record: nothing to move.
        check_in(99, 40),
    ]);
    let first = commit_all(&*store, &batches).await;
    let all = batches.concat();
    let loaded = store.load().await.expect("load").state;
    assert_eq!(loaded.device(&device_id(1)).expect("device 1").last_check_in, NOW.plus_secs(30));
    assert_eq!(loaded.device(&device_id(2)).expect("device 2").last_check_in, NOW.plus_secs(20));
    assert!(loaded.device(&device_id(99)).is_none());
    assert_eq!(contents(&loaded, &all), contents(&applied(&batches), &all));
    let last = *first.last().expect("revisions");
    let logged = store.changes_since(last - 1, 10).await.expect("log");
    assert_eq!(logged, vec![(last, batches.last().expect("batch").clone())]);

    // A full report, older in its body than the check-in column: the report stands.
    let report = Device { name: "renamed".into(), last_check_in: NOW.plus_secs(5), ..device(1, 1) };
    batches.push(vec![Change::PutDevice(report.clone())]);
    // And a check-in of another device after its full report, in one commit.
    let device_3 = Device { name: "renamed too".into(), ..device(3, 3) };
    batches.push(vec![Change::PutDevice(device_3), check_in(3, 50)]);
    commit_all(&*store, &batches[batches.len() - 2..]).await;
    let all = batches.concat();
    let loaded = store.load().await.expect("load").state;
    assert_eq!(loaded.device(&device_id(1)), Some(&report));
    let device_3 = loaded.device(&device_id(3)).expect("device 3");
    assert_eq!((&*device_3.name, device_3.last_check_in), ("renamed too", NOW.plus_secs(50)));
    assert_eq!(contents(&loaded, &all), contents(&applied(&batches), &all));
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
    let next = commit(&*reopened, &[Change::PutUser(user("after-reopen"))]).await;
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
            let mut expected = 0;
            for i in 0..PER_HANDLE {
                let changes = vec![Change::PutUser(user(&format!("{name}-{i}")))];
                // Behind the head: nothing written; look the head up and try again.
                let revision = loop {
                    match handle.commit(expected, &changes, NOW.0).await.expect("concurrent commit") {
                        Commit::Done(revision) => break revision,
                        Commit::Conflict => expected = head(&*handle).await,
                    }
                };
                assert_eq!(revision, expected + 1);
                expected = revision;
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
    let first = commit(&*other, &[Change::PutUser(user("notified"))]).await;
    wait_for_revision(&mut rx, first).await;
    // And its own commits.
    let second = commit(&*store, &[Change::DeleteUser("notified".into())]).await;
    wait_for_revision(&mut rx, second).await;
    // Several receivers at once each get every revision.
    let mut rx2 = other.notifications().await.expect("notifications").expect("a feed");
    let third = commit(&*other, &[]).await;
    wait_for_revision(&mut rx, third).await;
    wait_for_revision(&mut rx2, third).await;
}

async fn commits_land_only_on_the_head_they_expect(store: Arc<dyn Store>, _db: Arc<Db>) {
    let put = |id: &str| vec![Change::PutUser(user(id))];
    assert_eq!(store.commit(0, &put("first"), NOW.0).await.expect("commit"), Commit::Done(1));
    // Validated at revision 0, but 1 is the head now: nothing is written.
    assert_eq!(store.commit(0, &put("stale"), NOW.0).await.expect("commit"), Commit::Conflict);
    // Ahead of the head: nothing either.
    assert_eq!(store.commit(7, &put("ahead"), NOW.0).await.expect("commit"), Commit::Conflict);
    let snapshot = store.load().await.expect("load");
    assert_eq!(snapshot.revision, 1);
    assert!(snapshot.state.user("stale").is_none() && snapshot.state.user("ahead").is_none());
    assert_eq!(store.changes_since(0, 10).await.expect("log"), vec![(1, put("first"))]);
    assert_eq!(store.commit(1, &put("second"), NOW.0).await.expect("commit"), Commit::Done(2));
}

async fn failures_on_record_go_with_their_policy_and_outlive_their_device(store: Arc<dyn Store>, _db: Arc<Db>) {
    let failing = |d: usize, p: usize, since: i64| Change::PutFailing {
        device_id: device_id(d),
        policy_id: policy(p).id,
        failure: Failure { since: Timestamp(since), grace_ends: Timestamp(since + 10) },
    };
    let batches = vec![
        vec![
            Change::PutPolicy(policy(1)),
            Change::PutPolicy(policy(2)),
            Change::PutDevice(device(1, 0)),
            Change::PutDevice(device(2, 0)),
            failing(1, 1, 100),
            failing(1, 2, 200),
            failing(2, 1, 300),
            failing(2, 2, 400),
        ],
        // An upsert moves the times; a delete removes one record.
        vec![failing(2, 1, 250), Change::DeleteFailing { device_id: device_id(2), policy_id: policy(2).id }],
        // A deleted policy takes its records with it; a deleted device record keeps them.
        vec![Change::DeletePolicy(policy(2).id), Change::DeleteDevice(device_id(1))],
    ];
    let expected = [
        vec![(1, 1, 100), (1, 2, 200), (2, 1, 300), (2, 2, 400)],
        vec![(1, 1, 100), (1, 2, 200), (2, 1, 250)],
        vec![(1, 1, 100), (2, 1, 250)],
    ];
    for (batch, expected) in batches.iter().zip(expected) {
        commit(&*store, batch).await;
        let state = store.load().await.expect("load").state;
        let on_record: Vec<(String, String, Failure)> = [1, 2]
            .iter()
            .flat_map(|d| {
                state.failures_of(&device_id(*d)).map(|(p, f)| (device_id(*d), p.to_string(), f)).collect::<Vec<_>>()
            })
            .collect();
        let expected: Vec<(String, String, Failure)> = expected
            .iter()
            .map(|(d, p, t)| {
                (device_id(*d), policy(*p).id, Failure { since: Timestamp(*t), grace_ends: Timestamp(t + 10) })
            })
            .collect();
        assert_eq!(on_record, expected);
    }
    let all = batches.concat();
    assert_eq!(contents(&store.load().await.expect("load").state, &all), contents(&applied(&batches), &all));
}

/// A database written by a version that kept grace-period bookkeeping inside each device's
/// JSON body (schema version 1), as `old` leaves it: one device failing policy-1 since 1234.
const OLD_DEVICE_BODY: &str = r#"{"id":"mac-old","partner_device_id":"","serial_number":"C02OLD","name":"","model":"",
    "user_id":"u","os_version":"14.2.1","os_build":null,"registration":"Partner","last_check_in":1800000000,
    "last_token_renewal":1800000000,"refresh_token_issued":null,"facts":{"system_integrity_protection":null,
    "file_vault":"NotEncrypted","gatekeeper":null,"firewall_enabled":null,"firewall_block_all_incoming":null,
    "firewall_stealth_mode":null,"password":{"required":null,"simple_blocked":null,"min_length":null,"kind":null,
    "min_character_sets":null,"minutes_of_inactivity_before_lock":null,"expiry_days":null,
    "previous_passwords_blocked":null},"threat_level":null},"partner_verdict":null,
    "failing_since":{"policy-1":1234}}"#;

async fn write_version_1<DB>(conn: &mut DB::Connection, schema_1: &str)
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    use sqlx::Executor;
    conn.execute(schema_1).await.expect("schema 1");
    conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY)").await.expect("table");
    conn.execute("INSERT INTO schema_migrations (version) VALUES (1)").await.expect("version 1");
    let body = OLD_DEVICE_BODY.replace('\n', "").replace("    ", "");
    let insert =
        format!("INSERT INTO devices (id, user_id, serial_number, body) VALUES ('mac-old', 'u', 'C02OLD', '{body}')");
    conn.execute(insert.as_str()).await.expect("old device");
    let policy = r#"{"id":"policy-1","name":"Disk","settings":{"storage_encryption_required":true,"password":{}},"grace_period_hours":24,"updated_at":0}"#;
    let insert = format!("INSERT INTO policies (id, body) VALUES ('policy-1', '{policy}')");
    conn.execute(insert.as_str()).await.expect("old policy");
}

fn assert_migrated(state: &State) {
    let device = state.device("mac-old").expect("the device loads");
    assert_eq!(device.facts.file_vault, Some(FileVault::NotEncrypted));
    // policy-1 (the one the old database has) has a 24-hour grace period.
    let failure = Failure { since: Timestamp(1234), grace_ends: Timestamp(1234 + 24 * 3600) };
    assert_eq!(state.failures_of("mac-old").collect::<Vec<_>>(), vec![("policy-1", failure)]);
}

/// Compaction deletes what is both beyond the revisions kept and old enough, never the latest
/// revision; asking for revisions it deleted says so; the state does not change.
async fn compaction_keeps_the_latest_and_the_recent(store: Arc<dyn Store>, _db: Arc<Db>) {
    let batches = organisation();
    let n = commit_all(&*store, &batches).await.len() as u64;
    assert!(n > 6);
    let before = store.load().await.expect("load");

    // Everything is as young as NOW: nothing is old enough to go.
    assert_eq!(store.compact(n, NOW.0).await.expect("compact").deleted, 0);
    assert_eq!(store.changes_since(0, 1000).await.expect("all kept").len() as u64, n);
    // Old enough, but only what is before revision 6.
    assert_eq!(store.compact(6, NOW.0 + 1).await.expect("compact"), Compaction { deleted: 5, oldest: 6 });
    assert_eq!(store.compact(6, NOW.0 + 1).await.expect("compact again"), Compaction { deleted: 0, oldest: 6 });
    let kept = store.changes_since(5, 1000).await.expect("from 6");
    assert_eq!(kept.iter().map(|(r, _)| *r).collect::<Vec<_>>(), (6..=n).collect::<Vec<_>>());
    for after in [0, 3, 4] {
        match store.changes_since(after, 1000).await {
            Err(posture::error::Error::LogCompacted { oldest }) => assert_eq!(oldest, 6),
            other => panic!("after {after}: {other:?}"),
        }
    }
    // Beyond the head: everything but the latest revision goes.
    assert_eq!(store.compact(n + 100, NOW.0 + 1).await.expect("compact"), Compaction { deleted: n - 6, oldest: n });
    assert_eq!(store.changes_since(n - 1, 1000).await.expect("the latest").len(), 1);
    assert_eq!(store.changes_since(n, 1000).await.expect("nothing after the head"), vec![]);
    let after = store.load().await.expect("load");
    assert_eq!(after.revision, before.revision, "the head stays");
    let all: Vec<Change> = batches.concat();
    assert_eq!(contents(&after.state, &all), contents(&before.state, &all));
    // And the next commit follows the head.
    assert_eq!(commit(&*store, &[Change::PutSettings(settings())]).await, n + 1);
}

mod compaction {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::run(super::sqlite().await, super::compaction_keeps_the_latest_and_the_recent).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs PostgreSQL: set POSTURE_TEST_DATABASE_URL and run with --ignored"]
    async fn postgres() {
        super::run(super::postgres().await, super::compaction_keeps_the_latest_and_the_recent).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_moves_old_bookkeeping_out_of_device_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("posture.db");
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", path.display())).await.unwrap();
    write_version_1::<sqlx::Sqlite>(&mut conn, include_str!("../migrations/sqlite/0001_init.sql")).await;
    drop(conn);
    let store = SqliteStore::open(&path).await.expect("open and migrate");
    assert_migrated(&store.load().await.expect("load").state);
    // The later migrations: the device indexes nothing read are gone, and the bookkeeping
    // (its row above included) moved into a WITHOUT ROWID table with its policy index.
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display())).await.unwrap();
    let schema: Vec<(String, String)> =
        sqlx::query_as("SELECT name, sql FROM sqlite_schema WHERE sql IS NOT NULL AND tbl_name IN ('devices', 'failing') ORDER BY name")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    let names: Vec<&str> = schema.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["devices", "failing", "failing_policy_id"]);
    assert!(schema[1].1.ends_with("WITHOUT ROWID"), "{}", schema[1].1);
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
        let url = database_url();
        let schema = fresh_schema();
        let outcome = tokio::spawn(test(url.clone(), schema.clone())).await;
        drop_schema(&url, &schema).await;
        if let Err(e) = outcome {
            std::panic::resume_unwind(e.into_panic());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs PostgreSQL: set POSTURE_TEST_DATABASE_URL and run with --ignored"]
    async fn postgres_moves_old_bookkeeping_out_of_device_records() {
        with_schema(|url, schema| async move {
            let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
            sqlx::query(&format!("CREATE SCHEMA {schema}")).execute(&mut conn).await.expect("schema");
            sqlx::query(&format!("SET search_path TO {schema}")).execute(&mut conn).await.expect("search_path");
            write_version_1::<sqlx::Postgres>(&mut conn, include_str!("../migrations/postgres/0001_init.sql")).await;
            drop(conn);
            let store = PostgresStore::open_in_schema(&url, &schema).await.expect("open and migrate");
            assert_migrated(&store.load().await.expect("load").state);
        })
        .await;
    }

    fn with_query(url: &str, query: &str) -> String {
        format!("{url}{}{query}", if url.contains('?') { '&' } else { '?' })
    }

    /// Replicas starting together on an empty schema: the migration lock lets one apply the
    /// migrations and the others find them applied.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs PostgreSQL: set POSTURE_TEST_DATABASE_URL and run with --ignored"]
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
                revisions.push(commit(store, &[]).await);
            }
            assert_eq!(revisions, vec![1, 2, 3, 4]);
            let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
            let applied: Vec<i64> =
                sqlx::query_scalar(&format!("SELECT version FROM {schema}.schema_migrations ORDER BY version"))
                    .fetch_all(&mut conn)
                    .await
                    .expect("schema_migrations");
            assert_eq!(applied, vec![1, 2, 3, 4]);
        })
        .await;
    }

    /// `store::open` takes postgres:// and postgresql:// URLs; the schema can come from
    /// sqlx's `options=-c search_path=NAME` (for a schema that exists) or `posture_schema`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs PostgreSQL: set POSTURE_TEST_DATABASE_URL and run with --ignored"]
    async fn store_open_takes_postgres_urls() {
        with_schema(|url, schema| async move {
            let created = PostgresStore::open_in_schema(&url, &schema).await.expect("create the schema");
            assert_eq!(commit(&created, &[Change::PutUser(user("u"))]).await, 1);

            let search_path = with_query(&url, &format!("options=-c%20search_path%3D{schema}"));
            let by_search_path = posture::store::open(&search_path).await.expect("open with search_path");
            assert_eq!(by_search_path.load().await.expect("load").revision, 1);

            let other_scheme = url.replacen("postgres://", "postgresql://", 1);
            let by_parameter = posture::store::open(&with_query(&other_scheme, &format!("posture_schema={schema}")))
                .await
                .expect("open with posture_schema");
            assert_eq!(commit(&*by_parameter, &[]).await, 2);
            assert_eq!(by_search_path.changes_since(0, 10).await.expect("log").len(), 2);

            let missing = with_query(&url, "options=-c%20search_path%3Dposture_no_such_schema");
            let error = posture::store::open(&missing).await.err().expect("no schema to use");
            assert!(error.to_string().contains("search_path"), "{error}");
            assert!(posture::store::open(&with_query(&url, "posture_schema=Bad-Name")).await.is_err());
        })
        .await;
    }

    /// Without advisory locks (for engines that lack them) racing commits collide on the
    /// revision: the loser writes nothing and is told so; revisions stay distinct and
    /// consecutive.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs PostgreSQL: set POSTURE_TEST_DATABASE_URL and run with --ignored"]
    async fn commits_without_advisory_locks_stay_consecutive() {
        with_schema(|url, schema| async move {
            let options = PostgresOptions { schema: Some(schema), advisory_locks: false, ..PostgresOptions::default() };
            let a = Arc::new(PostgresStore::open_with(&url, options.clone()).await.expect("open a"));
            let b = Arc::new(PostgresStore::open_with(&url, options).await.expect("open b"));
            let writer = |store: Arc<PostgresStore>| {
                tokio::spawn(async move {
                    let (mut revisions, mut conflicts, mut expected) = (Vec::new(), 0, 0);
                    for i in 0..20 {
                        let changes = [Change::PutUser(user(&format!("u{i}")))];
                        loop {
                            match store.commit(expected, &changes, NOW.0).await.expect("commit") {
                                Commit::Done(revision) => {
                                    revisions.push(revision);
                                    expected = revision;
                                    break;
                                }
                                Commit::Conflict => {
                                    conflicts += 1;
                                    expected = head(&*store).await;
                                }
                            }
                        }
                    }
                    (revisions, conflicts)
                })
            };
            let (ra, rb) = tokio::join!(writer(a.clone()), writer(b));
            let ((ra, ca), (rb, cb)) = (ra.expect("a"), rb.expect("b"));
            assert!(ca + cb > 0, "two writers racing from revision 0 conflict at least once");
            let mut revisions: Vec<u64> = ra.into_iter().chain(rb).collect();
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
    #[ignore = "needs PostgreSQL: set POSTURE_TEST_DATABASE_URL and run with --ignored"]
    async fn notifications_survive_a_lost_connection() {
        with_schema(|url, schema| async move {
            let store = PostgresStore::open_in_schema(&url, &schema).await.expect("open");
            let mut rx = store.notifications().await.expect("notifications").expect("a feed");
            let first = commit(&store, &[]).await;
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
            let second = commit(&store, &[]).await;
            wait_for_revision(&mut rx, second).await;
        })
        .await;
    }

    /// With `posture_notify=off` commits publish nothing and there is no feed: callers poll.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs PostgreSQL: set POSTURE_TEST_DATABASE_URL and run with --ignored"]
    async fn notify_can_be_turned_off() {
        with_schema(|url, schema| async move {
            let store = PostgresStore::open(&with_query(&url, &format!("posture_schema={schema}&posture_notify=off")))
                .await
                .expect("open");
            assert!(store.notifications().await.expect("notifications").is_none());
            assert_eq!(commit(&store, &[]).await, 1);
        })
        .await;
    }
}
