//! Several replicas on one PostgreSQL database: read your writes through another replica,
//! live following, and catching up after a restart. Skipped (and says so) without
//! POSTURE_TEST_DATABASE_URL.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use posture::proto as pb;
use tonic::Code;

/// A fresh schema per test, so runs and tests cannot collide.
fn store_url(test: &str) -> Option<String> {
    let Ok(base) = std::env::var("POSTURE_TEST_DATABASE_URL") else {
        // Written to the terminal directly: the test harness captures `eprintln!`.
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "skipped: replica tests need PostgreSQL (set POSTURE_TEST_DATABASE_URL)");
        return None;
    };
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let schema = format!("posture_replicas_{test}_{}_{nanos}", std::process::id());
    let sep = if base.contains('?') { '&' } else { '?' };
    Some(format!("{base}{sep}posture_schema={schema}"))
}

/// Drops the test's schema (the URL's `posture_schema`).
async fn drop_schema(url: &str) {
    let (base, query) = url.split_once('?').unwrap();
    let schema = query.split('&').find_map(|kv| kv.strip_prefix("posture_schema=")).unwrap();
    let rest: Vec<&str> = query.split('&').filter(|kv| !kv.starts_with("posture_")).collect();
    let base = if rest.is_empty() { base.to_string() } else { format!("{base}?{}", rest.join("&")) };
    let pool = sqlx::PgPool::connect(&base).await.unwrap();
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).execute(&pool).await.unwrap();
}

async fn replica(url: &str) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_for(dir.path(), default_credentials(), false);
    config.store = url.to_string();
    TestServer::launch(config, dir).await
}

async fn check_at(server: &TestServer, user: &str, device: &str, min_revision: u64) -> pb::CheckAccessResponse {
    let req = pb::CheckAccessRequest { user_id: user.into(), device_id: device.into(), min_revision };
    server.compliance().check_access(req).await.unwrap().into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_one_replica_is_read_through_another_with_its_revision() {
    let Some(url) = store_url("ryw") else { return };
    let a = replica(&url).await;
    let b = replica(&url).await;
    seed_org_with(&a, 0).await;
    let written = a.report(vec![mac("mac-ada", "ada", "C02ADA0001")]).await.revision;

    let r = check_at(&b, "ada", "mac-ada", written).await;
    assert!(r.revision >= written, "B answered at {} before the write at {written}", r.revision);
    assert_eq!(r.decision, pb::Decision::Allow as i32, "{r:?}");

    // A change that denies, written through B, is read through A.
    let mut bad = mac("mac-ada", "ada", "C02ADA0001");
    bad.file_vault = pb::FileVaultState::NotEncrypted as i32;
    let written = b.report(vec![bad]).await.revision;
    let r = check_at(&a, "ada", "mac-ada", written).await;
    assert_eq!(r.decision, pb::Decision::Deny as i32, "{r:?}");
    assert!(r.reasons.iter().any(|x| x.code == "NONCOMPLIANT"), "{r:?}");

    // Both agree on the revision once caught up.
    assert_eq!(a.revision().await, b.revision().await);
    a.stop().await;
    b.stop().await;
    drop_schema(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_follows_writes_without_being_asked() {
    let Some(url) = store_url("follow") else { return };
    let a = replica(&url).await;
    let b = replica(&url).await;
    seed_org_with(&a, 0).await;
    let written = a.report(vec![mac("mac-bob", "bob", "C02BOB0001")]).await.revision;
    // No min_revision: B must get there by itself (NOTIFY, or polling as a fallback).
    let started = Instant::now();
    loop {
        let r = check_at(&b, "bob", "mac-bob", 0).await;
        if r.revision >= written {
            assert_eq!(r.decision, pb::Decision::Allow as i32, "{r:?}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "B did not follow A within 10 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    a.stop().await;
    b.stop().await;
    drop_schema(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_replica_catches_up_when_restarted() {
    let Some(url) = store_url("restart") else { return };
    let a = replica(&url).await;
    let b = replica(&url).await;
    seed_org_with(&a, 0).await;
    let b_dir = b.stop().await;

    let mut written = 0;
    for (device, user, serial) in
        [("mac-ada", "ada", "S-ADA"), ("mac-bob", "bob", "S-BOB"), ("mac-cara", "cara", "S-CARA")]
    {
        written = a.report(vec![mac(device, user, serial)]).await.revision;
    }
    let mut admin = a.admin();
    let written_policy = create_policy(&mut admin, {
        let mut p = baseline_policy(0);
        p.id = "late-policy".into();
        p
    })
    .await
    .revision;
    assert!(written_policy > written);

    let mut config = config_for(b_dir.path(), default_credentials(), false);
    config.store = url.clone();
    let b = TestServer::launch(config, b_dir).await;
    assert_eq!(b.revision().await, written_policy, "B starts at the latest revision");
    for device in ["mac-ada", "mac-bob"] {
        let user = device.trim_start_matches("mac-");
        assert_eq!(check_at(&b, user, device, 0).await.decision, pb::Decision::Allow as i32);
    }
    let got = b
        .admin()
        .get_policy(pb::GetPolicyRequest { policy_id: "late-policy".into(), min_revision: written_policy })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.policy.unwrap().id, "late-policy");
    a.stop().await;
    b.stop().await;
    drop_schema(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revision_that_never_arrives_fails_at_the_deadline() {
    let Some(url) = store_url("deadline") else { return };
    let a = replica(&url).await;
    let current = a.revision().await;
    let mut req = tonic::Request::new(pb::CheckAccessRequest {
        user_id: "ada".into(),
        device_id: "mac-ada".into(),
        min_revision: current + 1_000,
    });
    req.set_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let err = a.compliance().check_access(req).await.unwrap_err();
    assert!(matches!(err.code(), Code::DeadlineExceeded | Code::Cancelled), "{err:?}");
    if err.code() == Code::DeadlineExceeded {
        assert!(err.message().contains("did not arrive"), "{}", err.message());
    }
    assert!(started.elapsed() < Duration::from_secs(5), "the wait is bounded by the deadline");
    a.stop().await;
    drop_schema(&url).await;
}

/// The next event on a watch stream, within 10 s.
async fn next_event(events: &mut tonic::Streaming<pb::ComplianceEvent>) -> pb::ComplianceEvent {
    tokio::time::timeout(Duration::from_secs(10), events.message())
        .await
        .expect("an event within 10 s")
        .unwrap()
        .expect("the stream is still open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_on_one_replica_streams_writes_made_through_another_once_and_in_order() {
    let Some(url) = store_url("watch") else { return };
    let a = replica(&url).await;
    let b = replica(&url).await;
    seed_org_with(&a, 0).await;
    let mut events = b.compliance().watch_compliance(pb::WatchComplianceRequest::default()).await.unwrap().into_inner();

    let mut failing = mac("mac-bob", "bob", "C02BOB0001");
    failing.file_vault = pb::FileVaultState::NotEncrypted as i32;
    let first = a.report(vec![failing]).await.revision;
    let e = next_event(&mut events).await;
    assert_eq!((e.device_id.as_str(), e.decision, e.revision), ("mac-bob", pb::Decision::Deny as i32, first));
    let cursor = e.cursor;
    drop(events);

    // While nobody watches, two more changes; a reconnect with the last cursor gets exactly them.
    let second = a.report(vec![mac("mac-bob", "bob", "C02BOB0001")]).await.revision;
    let third = a.report(vec![mac("mac-ada", "ada", "C02ADA0001")]).await.revision;
    let req = pb::WatchComplianceRequest { after_cursor: cursor, ..Default::default() };
    let mut events = b.compliance().watch_compliance(req).await.unwrap().into_inner();
    let e2 = next_event(&mut events).await;
    let e3 = next_event(&mut events).await;
    assert_eq!((e2.device_id.as_str(), e2.decision, e2.revision), ("mac-bob", pb::Decision::Allow as i32, second));
    assert_eq!((e3.device_id.as_str(), e3.decision, e3.revision), ("mac-ada", pb::Decision::Allow as i32, third));
    assert_eq!((e2.cursor, e3.cursor), (cursor + 1, cursor + 2), "consecutive, none repeated");
    let quiet = tokio::time::timeout(Duration::from_millis(300), events.message()).await;
    assert!(quiet.is_err(), "nothing else arrives: {quiet:?}");
    drop(events);
    a.stop().await;
    b.stop().await;
    drop_schema(&url).await;
}
