//! The change log stays bounded: a day of 15-minute reports (compressed in time by a manual
//! clock) for a fleet of Macs, compacted as the server does with the default retention, leaves
//! a SQLite database within 2× the size of the state it holds. A replica that falls behind
//! what the log keeps reloads the state and ends equal to the writer, and its Watch stream
//! still ends on every Mac's true decision.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::domain::healthy_mac;
use posture::auth::Credentials;
use posture::clock::ManualClock;
use posture::domain::Change;
use posture::domain::Timestamp;
use posture::domain::model::FileVault;
use posture::engine::watch::Start;
use posture::engine::{Engine, Retention, WatchConfig, Watcher};
use posture::error::Error;
use posture::store::Commit;

const MACS: usize = 1_000;
const BATCH: usize = 100;
const ROUNDS: usize = 96;
const T0: Timestamp = Timestamp(1_800_000_000);
/// The Macs whose FileVault the fleet turns off and on again, round by round.
const FLIPPING: usize = 20;

async fn engine(url: &str, clock: Arc<ManualClock>) -> Arc<Engine> {
    let store = posture::store::open(url).await.unwrap();
    Arc::new(Engine::open(store, clock, 100_000, Arc::new(Credentials::default())).await.unwrap())
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The database's size on disk, its write-ahead log folded in first.
async fn size_on_disk(db: &Path) -> u64 {
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display())).await.unwrap();
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&pool).await.unwrap();
    pool.close().await;
    file_size(db) + file_size(&db.with_extension("db-wal"))
}

/// The size of a fresh database holding the same state and only the latest change.
async fn state_size(db: &Path, scratch: &Path) -> u64 {
    let copy = scratch.join("state.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display())).await.unwrap();
    sqlx::query(&format!("VACUUM INTO '{}'", copy.display())).execute(&pool).await.unwrap();
    pool.close().await;
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", copy.display())).await.unwrap();
    sqlx::query("DELETE FROM change_log WHERE revision < (SELECT MAX(revision) FROM change_log)")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("VACUUM").execute(&pool).await.unwrap();
    pool.close().await;
    file_size(&copy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_of_reports_stays_within_twice_the_state_and_replicas_stay_correct() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("posture.db");
    let url = format!("sqlite://{}", db.display());
    let clock = Arc::new(ManualClock::new(T0));
    let writer = engine(&url, clock.clone()).await;
    posture::demo::seed(&writer).await.unwrap();
    let store = posture::store::open(&url).await.unwrap();

    // A replica on the same file, with a watcher and a stream on the Macs that change.
    let replica = engine(&url, clock.clone()).await;
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let (watcher, _watching) = Watcher::spawn(replica.clone(), WatchConfig::default(), shutdown);
    let flipping: Vec<String> = (0..FLIPPING).map(|i| format!("mac-fleet-{i}")).collect();
    let mut stream = watcher.subscribe("", Start::Now, flipping.clone()).await.unwrap();
    let mut last_seen = HashMap::<String, bool>::new();

    let retention = Retention::default();
    let mut reloads = 0;
    for round in 0..ROUNDS {
        // The fleet reports over the quarter hour, a batch at a time.
        for batch in 0..MACS / BATCH {
            clock.advance(15 * 60 / (MACS / BATCH) as i64);
            let now = posture::clock::Clock::now(&*clock);
            let changes: Vec<Change> = (batch * BATCH..(batch + 1) * BATCH)
                .map(|i| {
                    let mut mac = healthy_mac(&format!("mac-fleet-{i}"), "ada", &format!("SNFLEET{i}"), now);
                    if i < FLIPPING && round % 2 == 1 {
                        mac.facts.file_vault = Some(FileVault::NotEncrypted);
                    }
                    Change::PutDevice(mac)
                })
                .collect();
            let head = writer.revision();
            assert_eq!(store.commit(head, &changes, now.0).await.unwrap(), Commit::Done(head + 1));
            writer.catch_up().await.unwrap();
            writer.compact(retention).await.unwrap();
        }
        // The replica looks only every eighth round: by then the log has moved on.
        if round % 8 == 7 {
            if matches!(store.changes_since(replica.revision(), 1).await, Err(Error::LogCompacted { .. })) {
                reloads += 1;
            }
            assert_eq!(replica.catch_up().await.unwrap(), writer.revision());
            watcher.wait_settled(replica.revision(), Duration::from_secs(10)).await.unwrap();
            while let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(200), stream.next()).await {
                let event = event.unwrap();
                last_seen.insert(event.decision.device_id.clone(), event.decision.allow);
            }
            for id in &flipping {
                let (now, _) = replica.check_access(id);
                assert_eq!(last_seen.get(id), Some(&now.allow), "round {round}: the stream ends on {id}'s decision");
            }
        }
    }
    assert!(reloads >= ROUNDS / 8 - 1, "the replica fell behind the log and reloaded: {reloads} times");

    // The replica holds what the writer holds.
    let (theirs, _) = writer.read(|s, _| s.devices().cloned().collect::<Vec<_>>());
    for device in theirs {
        let (ours, _) = replica.read(|s, _| s.device(&device.id).cloned());
        assert_eq!(ours.as_ref(), Some(&device));
    }

    let on_disk = size_on_disk(&db).await;
    let state = state_size(&db, dir.path()).await;
    let kept = store.changes_since(store.load().await.unwrap().revision.saturating_sub(10_000), 10_000).await;
    eprintln!(
        "{} reports in {ROUNDS} rounds: {on_disk} bytes on disk, {state} bytes of state ({:.2}×); {} reloads; log \
         from revision {:?}",
        MACS * ROUNDS,
        on_disk as f64 / state as f64,
        reloads,
        kept.as_ref().map(|k| k.first().map(|c| c.0)).map_err(|e| e.to_string())
    );
    assert!(on_disk <= 2 * state, "{on_disk} bytes on disk for {state} bytes of state");
    // The metrics say what compaction did.
    let oldest = store.changes_since(writer.revision() - 1, 1).await.map(|c| c[0].0);
    assert!(writer.metrics().log_compacted.get() > 0);
    assert!(writer.metrics().log_oldest.get() > 1);
    assert!(oldest.is_ok(), "the latest revision is kept: {oldest:?}");
}

/// The snapshot a subscription from `start` begins with: its device ids, sorted (up to the
/// event that carries a cursor, or none when nothing arrives within a moment).
async fn snapshot(watcher: &Arc<Watcher>, start: Start) -> posture::error::Result<Vec<String>> {
    let mut stream = watcher.subscribe("", start, vec![]).await?;
    let mut ids = Vec::new();
    while let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(300), stream.next()).await {
        let event = event.unwrap();
        assert!(event.snapshot, "{event:?}");
        ids.push(event.decision.device_id.clone());
        if event.cursor != 0 {
            break;
        }
    }
    ids.sort();
    Ok(ids)
}

/// A new process (a restart, another replica) resumes a stream from a revision with the devices
/// that changed since, for as long as the change log keeps that revision; past it, OUT_OF_RANGE,
/// and every device's decision on request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_resumes_from_a_revision_on_a_new_process_while_the_log_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("posture.db").display());
    let clock = Arc::new(ManualClock::new(T0));
    let writer = engine(&url, clock.clone()).await;
    posture::demo::seed(&writer).await.unwrap();
    let position = writer.revision();
    let (ada, _) = writer.read(|s, _| s.device("mac-ada").cloned());
    let mut ada = ada.expect("the demo's Mac mac-ada");
    ada.facts.file_vault = Some(FileVault::NotEncrypted);
    let store = posture::store::open(&url).await.unwrap();
    assert_eq!(store.commit(position, &[Change::PutDevice(ada)], T0.0).await.unwrap(), Commit::Done(position + 1));

    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let (watcher, _watching) =
        Watcher::spawn(engine(&url, clock.clone()).await, WatchConfig::default(), shutdown.clone());
    assert_eq!(snapshot(&watcher, Start::FromRevision(position)).await.unwrap(), ["mac-ada"]);
    assert_eq!(snapshot(&watcher, Start::FromRevision(position + 1)).await.unwrap(), Vec::<String>::new());

    // The log compacted down to its latest revision: the position is gone.
    clock.advance(60);
    writer.catch_up().await.unwrap();
    writer.compact(Retention { revisions: 0, age: Duration::ZERO }).await.unwrap();
    let restarted = engine(&url, clock.clone()).await;
    let devices = restarted.read(|s, _| s.device_count()).0;
    let (watcher, _watching) = Watcher::spawn(restarted, WatchConfig::default(), shutdown);
    let err = snapshot(&watcher, Start::FromRevision(position)).await.unwrap_err();
    assert!(matches!(&err, Error::OutOfRange(m) if m.contains("every_device")), "{err}");
    assert_eq!(snapshot(&watcher, Start::FromRevision(position + 1)).await.unwrap(), Vec::<String>::new());
    assert_eq!(snapshot(&watcher, Start::EveryDevice).await.unwrap().len(), devices);
}
