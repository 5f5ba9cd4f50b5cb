//! Several replicas on one PostgreSQL database: read your writes through another replica,
//! live following, catching up after a restart, conflicting writes, and a replica cut off from
//! the database. Ignored unless asked for (`cargo test -- --ignored`); then they need
//! POSTURE_TEST_DATABASE_URL.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::postgres::{base_url, drop_schema, schema_of, store_url};
use common::*;
use posture::proto as pb;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

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
#[ignore = "needs PostgreSQL: set POSTURE_TEST_DATABASE_URL and run with --ignored"]
async fn a_write_through_one_replica_is_read_through_another_with_its_revision() {
    let url = store_url("ryw");
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
#[ignore = "needs PostgreSQL: set POSTURE_TEST_DATABASE_URL and run with --ignored"]
async fn a_replica_follows_writes_without_being_asked() {
    let url = store_url("follow");
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
#[ignore = "needs PostgreSQL: set POSTURE_TEST_DATABASE_URL and run with --ignored"]
async fn a_stopped_replica_catches_up_when_restarted() {
    let url = store_url("restart");
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
#[ignore = "needs PostgreSQL: set POSTURE_TEST_DATABASE_URL and run with --ignored"]
async fn a_revision_that_never_arrives_fails_at_the_deadline() {
    let url = store_url("deadline");
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
#[ignore = "needs PostgreSQL: set POSTURE_TEST_DATABASE_URL and run with --ignored"]
async fn a_watch_on_one_replica_streams_writes_made_through_another_once_and_in_order() {
    let url = store_url("watch");
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

/// A revision resumes a stream on any replica: a client that watched through A resumes
/// through B, started after its last event, from that event's revision, and gets the devices
/// that changed since, not the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set POSTURE_TEST_DATABASE_URL and run with --ignored"]
async fn a_stream_watched_through_one_replica_resumes_by_revision_through_another() {
    let url = store_url("resume");
    let a = replica(&url).await;
    seed_org_with(&a, 0).await;
    let mut events = a.compliance().watch_compliance(pb::WatchComplianceRequest::default()).await.unwrap().into_inner();
    a.report(vec![mac("mac-ada", "ada", "C02ADA0001"), mac("mac-bob", "bob", "C02BOB0001")]).await;
    let mut last = next_event(&mut events).await;
    last = if last.device_id == "mac-ada" { next_event(&mut events).await } else { last };
    drop(events);

    // While the client is away: Bob's FileVault goes off; then replica B starts and Cara's Mac
    // is reported through it.
    let mut failing = mac("mac-bob", "bob", "C02BOB0001");
    failing.file_vault = pb::FileVaultState::NotEncrypted as i32;
    a.report(vec![failing]).await;
    let b = replica(&url).await;
    let cara = b.report(vec![mac("mac-cara", "cara", "C02CARA001")]).await.revision;
    let req = pb::WatchComplianceRequest { from_revision: last.revision, ..Default::default() };
    let mut events = b.compliance().watch_compliance(req).await.unwrap().into_inner();
    let mut seen = [next_event(&mut events).await, next_event(&mut events).await];
    seen.sort_by(|x, y| x.device_id.cmp(&y.device_id));
    let seen: Vec<_> = seen.iter().map(|e| (e.device_id.as_str(), e.decision, e.snapshot)).collect();
    assert_eq!(seen, [("mac-bob", pb::Decision::Deny as i32, true), ("mac-cara", pb::Decision::Allow as i32, true)]);
    let quiet = tokio::time::timeout(Duration::from_millis(300), events.message()).await;
    assert!(quiet.is_err(), "Ada's Mac has not changed since: {quiet:?}");
    assert!(b.revision().await >= cara);
    drop(events);
    a.stop().await;
    b.stop().await;
    drop_schema(&url).await;
}

/// Admin writes through two replicas at once are validated against each other: of two
/// creates of one policy exactly one wins and the other is told it exists (or to retry), and a
/// policy deleted through one while the other assigns it leaves no orphaned assignment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set POSTURE_TEST_DATABASE_URL and run with --ignored"]
async fn conflicting_admin_writes_through_two_replicas_leave_one_winner_and_no_orphan() {
    let url = store_url("conflict");
    let a = replica(&url).await;
    let b = replica(&url).await;
    seed_org_with(&a, 0).await;
    let (mut admin_a, mut admin_b) = (a.admin(), b.admin());
    for i in 0..15 {
        let mut policy = baseline_policy(0);
        policy.id = format!("race-{i}");
        let create = |p: &pb::Policy| pb::CreatePolicyRequest { policy: Some(p.clone()) };
        let (ra, rb) = tokio::join!(admin_a.create_policy(create(&policy)), admin_b.create_policy(create(&policy)));
        let outcomes = [ra.map(|r| r.into_inner().revision), rb.map(|r| r.into_inner().revision)];
        assert_eq!(outcomes.iter().filter(|r| r.is_ok()).count(), 1, "one create wins: {outcomes:?}");
        for r in &outcomes {
            if let Err(e) = r {
                assert!(matches!(e.code(), Code::AlreadyExists | Code::Aborted), "{e:?}");
            }
        }
        // Deleted through A while B assigns it.
        let assign = pb::AssignPolicyRequest {
            policy_id: policy.id.clone(),
            assignment: Some(pb::Assignment { include_group_ids: strings(&["mac-users"]), exclude_group_ids: vec![] }),
        };
        let (deleted, assigned) = tokio::join!(
            admin_a.delete_policy(pb::DeletePolicyRequest { policy_id: policy.id.clone() }),
            admin_b.assign_policy(assign)
        );
        deleted.unwrap();
        if let Err(e) = assigned {
            assert!(matches!(e.code(), Code::NotFound | Code::Aborted), "{e:?}");
        }
    }
    // Both replicas, at the latest revision, hold the two seeded policies and nothing else.
    let head = a.revision().await.max(b.revision().await);
    for server in [&a, &b] {
        let req = pb::ListPoliciesRequest { min_revision: head };
        let listed = server.admin().list_policies(req).await.unwrap().into_inner();
        let ids: Vec<&str> = listed.policies.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["baseline", "engineering-passwords"]);
    }
    let pool = sqlx::PgPool::connect(&base_url(&url)).await.unwrap();
    let orphans: i64 = sqlx::query_scalar(&format!(
        "SELECT COUNT(*) FROM {schema}.assignments a WHERE NOT EXISTS \
         (SELECT 1 FROM {schema}.policies p WHERE p.id = a.policy_id)",
        schema = schema_of(&url)
    ))
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(orphans, 0, "no assignment without its policy");
    a.stop().await;
    b.stop().await;
    drop_schema(&url).await;
}

/// A replica that loses its PostgreSQL connection (through a proxy the test cuts) answers from
/// memory within --max-staleness, then turns NOT_SERVING and denies with STORE_UNAVAILABLE;
/// when the link returns it catches up on what was written meanwhile and serves again, with
/// no restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set POSTURE_TEST_DATABASE_URL and run with --ignored"]
async fn a_replica_cut_off_from_postgresql_denies_past_its_max_staleness_and_recovers() {
    let url = store_url("outage");
    let direct = replica(&url).await;
    seed_org_with(&direct, 0).await;
    direct.report(vec![mac("mac-ada", "ada", "C02ADA0001")]).await;

    let proxy = common::proxy::Proxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let through_proxy = url.replacen("127.0.0.1:5432", &proxy.addr.to_string(), 1);
    assert_ne!(through_proxy, url, "the test database URL names 127.0.0.1:5432");
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_for(dir.path(), default_credentials(), false);
    config.store = through_proxy;
    config.max_staleness = Duration::from_secs(2);
    let cut_off = TestServer::launch(config, dir).await;
    assert_eq!(check_at(&cut_off, "ada", "mac-ada", 0).await.decision, pb::Decision::Allow as i32);

    proxy.cut();
    let cut_at = Instant::now();
    // Within the allowed staleness it answers from memory.
    let r = check_at(&cut_off, "ada", "mac-ada", 0).await;
    assert_eq!(r.decision, pb::Decision::Allow as i32, "{r:?}");
    // Past it: NOT_SERVING, and every access denied, saying why.
    wait_for_health(&cut_off, ServingStatus::NotServing).await;
    assert!(cut_at.elapsed() >= Duration::from_secs(2), "not before the maximum staleness");
    // Not ready, but alive: a liveness probe does not restart a replica that is merely stale.
    let mut health = HealthClient::new(cut_off.channel());
    let live = health.check(HealthCheckRequest { service: posture::server::LIVENESS.into() }).await.unwrap();
    assert_eq!(live.into_inner().status, ServingStatus::Serving as i32);
    let r = check_at(&cut_off, "ada", "mac-ada", 0).await;
    assert_eq!((r.decision, codes(&r.reasons)), (pb::Decision::Deny as i32, vec!["STORE_UNAVAILABLE"]));
    let err = cut_off
        .compliance()
        .evaluate_device(pb::EvaluateDeviceRequest { device_id: "mac-ada".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    let write_started = Instant::now();
    let err = cut_off
        .inventory()
        .report_inventory(pb::ReportInventoryRequest { devices: vec![mac("mac-bob", "bob", "C02BOB0001")] })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(write_started.elapsed() < Duration::from_secs(1), "writes fail fast: {:?}", write_started.elapsed());
    // Meanwhile another replica writes.
    let mut off = mac("mac-ada", "ada", "C02ADA0001");
    off.file_vault = pb::FileVaultState::NotEncrypted as i32;
    let written = direct.report(vec![off]).await.revision;
    // For the rest of the outage (POSTURE_OUTAGE_SECS, default 20 s), never an ALLOW.
    let outage =
        Duration::from_secs(std::env::var("POSTURE_OUTAGE_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(20));
    let mut checks = 0;
    while cut_at.elapsed() < outage {
        let r = check_at(&cut_off, "ada", "mac-ada", 0).await;
        assert_eq!((r.decision, codes(&r.reasons)), (pb::Decision::Deny as i32, vec!["STORE_UNAVAILABLE"]));
        checks += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("{checks} decisions during the {outage:?} outage, every one DENY STORE_UNAVAILABLE");

    proxy.restore();
    wait_for_health(&cut_off, ServingStatus::Serving).await;
    let r = check_at(&cut_off, "ada", "mac-ada", written).await;
    assert_eq!((r.decision, codes(&r.reasons)), (pb::Decision::Deny as i32, vec!["NONCOMPLIANT"]), "{r:?}");
    assert!(r.revision >= written);
    cut_off.stop().await;
    direct.stop().await;
    drop_schema(&url).await;
}

/// Waits (up to 20 s) until the server's overall health is `status`.
async fn wait_for_health(server: &TestServer, status: ServingStatus) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut health = HealthClient::new(server.channel());
        let now = health.check(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner().status;
        if now == status as i32 {
            return;
        }
        assert!(Instant::now() < deadline, "health did not become {status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
