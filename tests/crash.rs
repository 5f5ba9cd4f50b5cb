//! Crash safety: callers write continuously (reports and admin writes) while the real server
//! is killed with SIGKILL at random moments and restarted on the same store. Afterwards every
//! write it acknowledged is in the store, the store passes its integrity check, and its tables
//! agree with its change log replayed from the start.
//!
//! `POSTURE_CRASH_KILLS` sets the number of kills (default 5; `deploy/reliability/run.sh`
//! runs 20). The PostgreSQL run is ignored unless asked for (`cargo test -- --ignored`).
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::binary::Served;
use common::writers::Writers;
use common::*;
use posture::domain::State;
use posture::proto::admin_service_client::AdminServiceClient;
use posture::store::Store;

fn kills() -> usize {
    std::env::var("POSTURE_CRASH_KILLS").ok().and_then(|k| k.parse().ok()).unwrap_or(5)
}

/// A pause of 100–1,100 ms, different each time.
fn random_pause() -> Duration {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos();
    Duration::from_millis(100 + u64::from(nanos.wrapping_mul(2_654_435_761) % 1_000))
}

/// Runs the writers against a server on `store_args` that is killed `kills()` times, and
/// returns what they were told was done, after a clean stop.
async fn write_through_kills(files: &Path, store_args: &[&str]) -> common::writers::Outcome {
    let config = write_credentials(files, &default_credentials());
    let mut args = vec!["--config", config.to_str().unwrap()];
    args.extend_from_slice(store_args);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut served = Served::start_at(addr, &args, "warn", None).await;
    seed_org_through(&mut AdminServiceClient::with_interceptor(served.channel(), Bearer::new(Some(ADMIN_SECRET))), 0)
        .await;

    let writers = Writers::start(served.channel(), 3, "ada", "crash");
    for kill in 0..kills() {
        writers.wait_for_more(10).await;
        tokio::time::sleep(random_pause()).await;
        let before = writers.acknowledged();
        served.kill().await;
        eprintln!("kill {}: {before} writes acknowledged so far", kill + 1);
        served = Served::start_at(addr, &args, "warn", None).await;
    }
    writers.wait_for_more(10).await;
    let outcome = writers.stop().await;
    served.stop().await;
    eprintln!(
        "{} kills; acknowledged: {} reports, {} policies; failed calls: {:?}",
        kills(),
        outcome.devices.len(),
        outcome.policies.len(),
        outcome.failed
    );
    assert!(!outcome.failed.contains_key("refused"), "no report was refused: {:?}", outcome.failed);
    outcome
}

/// Every acknowledged write is in the store, and the tables agree with the change log.
async fn assert_everything_kept(store: &dyn Store, outcome: &common::writers::Outcome) {
    let snapshot = store.load().await.unwrap();
    let tables = snapshot.state;
    let lost: Vec<&String> = outcome.devices.iter().filter(|id| tables.device(id).is_none()).collect();
    assert!(lost.is_empty(), "{} acknowledged reports are missing: {:?}", lost.len(), &lost[..lost.len().min(5)]);
    let lost: Vec<&String> = outcome.policies.iter().filter(|id| tables.policy(id).is_none()).collect();
    assert!(lost.is_empty(), "{} acknowledged policies are missing: {:?}", lost.len(), &lost[..lost.len().min(5)]);

    let mut log = State::default();
    let mut revision = 0;
    loop {
        let batch = store.changes_since(revision, 1_000).await.unwrap();
        let Some(&(last, _)) = batch.last() else { break };
        for (r, changes) in batch {
            assert_eq!(r, revision + 1, "the change log has no gaps");
            revision = r;
            for change in changes {
                log.apply(change);
            }
        }
        assert_eq!(last, revision);
    }
    assert_eq!(revision, snapshot.revision, "the change log ends at the store's revision");
    assert_same(&tables, &log);
}

fn sorted<T: Clone, K: Ord>(items: impl Iterator<Item = T>, key: impl Fn(&T) -> K) -> Vec<T> {
    let mut items: Vec<T> = items.collect();
    items.sort_by_key(|t| key(t));
    items
}

/// The tables' state and the replayed log's hold the same organisation.
fn assert_same(tables: &State, log: &State) {
    assert_eq!(sorted(tables.users(), |u| u.id.clone()), sorted(log.users(), |u| u.id.clone()), "users");
    let groups = |s: &State| sorted(s.groups().map(|g| g.to_group()), |g| g.id.clone());
    assert_eq!(groups(tables), groups(log), "groups");
    assert_eq!(sorted(tables.policies(), |p| p.id.clone()), sorted(log.policies(), |p| p.id.clone()), "policies");
    for policy in tables.policies() {
        assert_eq!(tables.assignment(&policy.id), log.assignment(&policy.id), "the assignment of {}", policy.id);
    }
    assert_eq!(tables.device_count(), log.device_count(), "devices");
    for device in tables.devices() {
        assert_eq!(Some(device), log.device(&device.id), "device {}", device.id);
        let failures = |s: &State| sorted(s.failures_of(&device.id).map(|(p, f)| (p.to_string(), f)), |f| f.0.clone());
        assert_eq!(failures(tables), failures(log), "the failures of {}", device.id);
    }
    assert_eq!(tables.connector(), log.connector(), "the connector");
    assert_eq!(tables.settings(), log.settings(), "the tenant settings");
    assert_eq!(tables.heartbeat(), log.heartbeat(), "the heartbeat");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_keeps_every_acknowledged_write_through_kills() {
    let files = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let outcome = write_through_kills(files.path(), &["--data-dir", data.path().to_str().unwrap()]).await;
    assert!(outcome.acknowledged() > 0);

    let db = data.path().join("posture.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", db.display())).await.unwrap();
    let checks: Vec<(String,)> = sqlx::query_as("PRAGMA integrity_check").fetch_all(&pool).await.unwrap();
    assert_eq!(checks, [("ok".to_string(),)], "SQLite's integrity check");
    pool.close().await;

    let store = posture::store::open(&format!("sqlite://{}", db.display())).await.unwrap();
    assert_everything_kept(&*store, &outcome).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set POSTURE_TEST_DATABASE_URL and run with --ignored"]
async fn postgres_keeps_every_acknowledged_write_through_kills() {
    let files = tempfile::tempdir().unwrap();
    let url = common::postgres::store_url("crash");
    let outcome = write_through_kills(files.path(), &["--store", &url]).await;
    assert!(outcome.acknowledged() > 0);
    let store = posture::store::open(&url).await.unwrap();
    assert_everything_kept(&*store, &outcome).await;
    drop(store);
    common::postgres::drop_schema(&url).await;
}
