//! WatchCompliance through the real server and a real tonic client: data-driven and
//! time-driven changes, resumption by cursor, snapshots by revision, the errors that tell a
//! client to resume or resync, slow clients and shutdown.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use pb::compliance_event::Cause;
use pb::{ComplianceState as S, Decision as D};
use posture::clock::ManualClock;
use posture::domain::Timestamp;
use posture::proto::{self as pb, compliance_service_client::ComplianceServiceClient};
use tonic::Code;
use tonic::transport::Endpoint;

type Events = tonic::Streaming<pb::ComplianceEvent>;

/// How long any one expected event may take.
const WAIT: Duration = Duration::from_secs(5);

fn from_now() -> pb::WatchComplianceRequest {
    pb::WatchComplianceRequest::default()
}

fn after(cursor: u64) -> pb::WatchComplianceRequest {
    pb::WatchComplianceRequest { after_cursor: cursor, ..Default::default() }
}

fn from_revision(revision: u64) -> pb::WatchComplianceRequest {
    pb::WatchComplianceRequest { from_revision: revision, ..Default::default() }
}

fn only(mut req: pb::WatchComplianceRequest, devices: &[&str]) -> pb::WatchComplianceRequest {
    req.device_ids = strings(devices);
    req
}

async fn watch(server: &TestServer, req: pb::WatchComplianceRequest) -> Events {
    server.compliance().watch_compliance(req).await.unwrap().into_inner()
}

async fn watch_err(server: &TestServer, req: pb::WatchComplianceRequest) -> tonic::Status {
    server.compliance().watch_compliance(req).await.expect_err("the call is refused")
}

/// The next event, within `within`.
async fn next_within(events: &mut Events, within: Duration) -> pb::ComplianceEvent {
    tokio::time::timeout(within, events.message())
        .await
        .unwrap_or_else(|_| panic!("no event within {within:?}"))
        .unwrap()
        .expect("the stream is still open")
}

async fn next(events: &mut Events) -> pb::ComplianceEvent {
    next_within(events, WAIT).await
}

async fn take(events: &mut Events, n: usize) -> Vec<pb::ComplianceEvent> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(next(events).await);
    }
    out
}

/// Asserts that nothing more arrives for a while.
async fn assert_quiet(events: &mut Events) {
    if let Ok(more) = tokio::time::timeout(Duration::from_millis(300), events.message()).await {
        panic!("expected no more events, got {more:?}");
    }
}

/// What an event says about its device.
fn seen(e: &pb::ComplianceEvent) -> (&str, D, S, Vec<&str>) {
    (e.device_id.as_str(), decision(e.decision), state(e.state), codes(&e.reasons))
}

fn cause(e: &pb::ComplianceEvent) -> Cause {
    Cause::try_from(e.cause).unwrap()
}

fn without_file_vault(mut r: pb::DeviceReport) -> pb::DeviceReport {
    r.file_vault = pb::FileVaultState::NotEncrypted as i32;
    r
}

fn unresponsive(mut r: pb::DeviceReport) -> pb::DeviceReport {
    r.last_check_in = Some(ago(25 * HOUR));
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_changes_a_decision_is_streamed_with_its_revision_and_one_that_does_not_is_not() {
    let server = TestServer::start().await;
    seed_org(&server).await;
    let mut events = watch(&server, from_now()).await;

    let written = server.report(vec![mac("mac-ada", "ada", "C02ADA0001")]).await.revision;
    let e = next(&mut events).await;
    assert_eq!(seen(&e), ("mac-ada", D::Allow, S::Compliant, vec!["COMPLIANT"]));
    assert_eq!((e.revision, cause(&e), e.snapshot, e.user_id.as_str()), (written, Cause::DataChanged, false, "ada"));
    assert!(e.cursor > 0);
    let at = e.at.unwrap().seconds;
    assert!((now_secs() - at).abs() <= 5, "the change happened just now, not at {at}");

    // A newer check-in is a write, but Ada's decision stays what it was: no event. The next
    // event is Bob's, with the very next cursor.
    let mut again = mac("mac-ada", "ada", "C02ADA0001");
    again.last_check_in = Some(ago(MINUTE));
    let quiet = server.report(vec![again]).await.revision;
    assert!(quiet > written, "the check-in was stored");
    let failing = server.report(vec![without_file_vault(mac("mac-bob", "bob", "C02BOB0001"))]).await.revision;
    let e2 = next(&mut events).await;
    assert_eq!(seen(&e2), ("mac-bob", D::Deny, S::Noncompliant, vec!["NONCOMPLIANT"]));
    assert_eq!((e2.revision, e2.cursor, cause(&e2)), (failing, e.cursor + 1, Cause::DataChanged));
    // The event says what CheckAccess says.
    let r = server.check("bob", "mac-bob").await;
    assert_eq!((r.decision, r.state, &r.reasons), (e2.decision, e2.state, &e2.reasons));
    assert_quiet(&mut events).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_arrives_once_and_in_order_across_a_reconnect() {
    let server = TestServer::start().await;
    seed_org(&server).await;
    // The witness stays connected throughout; each write waits for its events there, so the
    // watcher sees the writes one at a time and every event carries its write's revision.
    let mut witness = watch(&server, from_now()).await;
    let mut events = watch(&server, from_now()).await;
    let mut expected = Vec::new();
    let mut step = async |revision: u64, changes: Vec<(&'static str, D, S, Vec<&'static str>)>| {
        for change in changes {
            let e = next(&mut witness).await;
            assert_eq!(seen(&e), change);
            assert_eq!((e.revision, cause(&e)), (revision, Cause::DataChanged), "{e:?}");
            expected.push(e);
        }
    };

    let r = server.report(vec![mac("mac-ada", "ada", "C02ADA0001")]).await.revision;
    step(r, vec![("mac-ada", D::Allow, S::Compliant, vec!["COMPLIANT"])]).await;
    let r = server.report(vec![without_file_vault(mac("mac-bob", "bob", "C02BOB0001"))]).await.revision;
    step(r, vec![("mac-bob", D::Deny, S::Noncompliant, vec!["NONCOMPLIANT"])]).await;
    let r = server.report(vec![mac("mac-cara", "cara", "C02CARA001")]).await.revision;
    step(r, vec![("mac-cara", D::Allow, S::Compliant, vec!["COMPLIANT"])]).await;

    // Two events, then the connection drops (Cara's may already be in flight: it is lost).
    let mut got = take(&mut events, 2).await;
    drop(events);

    let r = server.report(vec![mac("mac-bob", "bob", "C02BOB0001")]).await.revision;
    step(r, vec![("mac-bob", D::Allow, S::Compliant, vec!["COMPLIANT"])]).await;
    let r = server.report(vec![unresponsive(mac("mac-dan", "dan", "C02DAN0001"))]).await.revision;
    step(r, vec![("mac-dan", D::Deny, S::Unknown, vec!["UNRESPONSIVE"])]).await;
    // A global change re-decides every device: one event each, in device order.
    let r = server.admin().terminate_connector(pb::TerminateConnectorRequest {}).await.unwrap().into_inner().revision;
    let disabled = |device, state, extra: &[&'static str]| {
        // The connector's gate comes before the freshness gates.
        let codes = ["INTEGRATION_DISABLED"].iter().chain(extra).copied().collect();
        (device, D::Deny, state, codes)
    };
    step(
        r,
        vec![
            // Terminated: noncompliant at once.
            disabled("mac-ada", S::Noncompliant, &[]),
            disabled("mac-bob", S::Noncompliant, &[]),
            disabled("mac-cara", S::Noncompliant, &[]),
            disabled("mac-dan", S::Noncompliant, &["UNRESPONSIVE"]),
        ],
    )
    .await;

    // Resume after the last event processed: the rest, and nothing twice.
    let mut resumed = watch(&server, after(got[1].cursor)).await;
    got.extend(take(&mut resumed, expected.len() - 2).await);
    assert_eq!(got, expected);
    assert!(got.windows(2).all(|w| w[1].cursor == w[0].cursor + 1), "consecutive cursors: {got:?}");
    assert_quiet(&mut resumed).await;
    assert_quiet(&mut witness).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_passing_of_time_is_streamed_when_it_changes_a_decision() {
    let server = TestServer::start().await;
    seed_org(&server).await;
    let mut events = watch(&server, only(from_now(), &["mac-dan"])).await;
    // Dan's Mac last checked in 24 hours less 3 seconds ago: unresponsive 3 seconds from now.
    let mut dan = mac("mac-dan", "dan", "C02DAN0001");
    dan.last_check_in = Some(ago(DAY - 3));
    let unresponsive_at = dan.last_check_in.unwrap().seconds + DAY;
    let reported = Instant::now();
    server.report(vec![mac("mac-ada", "ada", "C02ADA0001")]).await; // filtered out
    let written = server.report(vec![dan]).await.revision;

    let e = next(&mut events).await;
    assert_eq!(seen(&e), ("mac-dan", D::Allow, S::Compliant, vec!["COMPLIANT"]));
    assert_eq!((e.revision, cause(&e)), (written, Cause::DataChanged));

    let e = next_within(&mut events, Duration::from_secs(5).saturating_sub(reported.elapsed())).await;
    assert_eq!(seen(&e), ("mac-dan", D::Deny, S::Unknown, vec!["UNRESPONSIVE"]));
    assert_eq!((cause(&e), e.revision, e.snapshot), (Cause::TimePassed, written, false));
    assert_eq!(e.at.unwrap().seconds, unresponsive_at, "at the instant the decision stopped holding");
    assert!(now_secs() >= unresponsive_at, "not before its time");
    // CheckAccess agrees.
    assert_decision(&server.check("dan", "mac-dan").await, D::Deny, S::Unknown, &["UNRESPONSIVE"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_revision_starts_with_a_snapshot_of_the_devices_changed_since() {
    let server = TestServer::start().await;
    seed_org(&server).await;
    let mut witness = watch(&server, from_now()).await;
    let mut write = async |report: pb::DeviceReport| {
        let revision = server.report(vec![report]).await.revision;
        let e = next(&mut witness).await;
        assert_eq!(e.revision, revision);
        e
    };
    write(mac("mac-ada", "ada", "C02ADA0001")).await;
    let bob_failing = write(without_file_vault(mac("mac-bob", "bob", "C02BOB0001"))).await;
    let cara = write(mac("mac-cara", "cara", "C02CARA001")).await;
    let bob_fixed = write(mac("mac-bob", "bob", "C02BOB0001")).await;

    // Since Bob's failure: Cara, then Bob as he is now, oldest change first. Only the last
    // snapshot event is a resume point: the journal position the snapshot reflects.
    let mut events = watch(&server, from_revision(bob_failing.revision)).await;
    let snapshot = take(&mut events, 2).await;
    for (s, live) in snapshot.iter().zip([&cara, &bob_fixed]) {
        assert_eq!(seen(s), seen(live));
        assert_eq!((s.revision, s.at, &s.user_id), (live.revision, live.at, &live.user_id));
        assert_eq!((cause(s), s.snapshot), (Cause::Snapshot, true));
    }
    assert_eq!((snapshot[0].cursor, snapshot[1].cursor), (0, bob_fixed.cursor));

    // Then live events.
    server.report(vec![unresponsive(mac("mac-dan", "dan", "C02DAN0001"))]).await;
    let e = next(&mut events).await;
    assert_eq!(seen(&e), ("mac-dan", D::Deny, S::Unknown, vec!["UNRESPONSIVE"]));
    assert_eq!((e.cursor, e.snapshot, cause(&e)), (bob_fixed.cursor + 1, false, Cause::DataChanged));
    let dan = next(&mut witness).await;
    assert_eq!(e, dan);

    // With a filter, only those devices; from the latest revision, no snapshot at all.
    let mut bob = watch(&server, only(from_revision(1), &["mac-bob"])).await;
    let s = next(&mut bob).await;
    assert_eq!(seen(&s), seen(&bob_fixed));
    assert_eq!((s.snapshot, s.cursor), (true, dan.cursor));
    let mut latest = watch(&server, from_revision(dan.revision)).await;
    server.report(vec![without_file_vault(mac("mac-ada", "ada", "C02ADA0001"))]).await;
    let e = next(&mut latest).await;
    assert_eq!((e.device_id.as_str(), e.snapshot, e.cursor), ("mac-ada", false, dan.cursor + 1));
    assert_quiet(&mut bob).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_this_server_did_not_issue_or_no_longer_holds_is_out_of_range() {
    let server = TestServer::start().await;
    seed_org(&server).await;
    let mut events = watch(&server, from_now()).await;
    let written = server.report(vec![mac("mac-ada", "ada", "C02ADA0001")]).await.revision;
    let e = next(&mut events).await;

    let status = watch_err(&server, after(e.cursor + 1_000)).await;
    assert_status(&status, Code::OutOfRange, &["another server process", "from_revision"]);
    let status = watch_err(&server, after(1)).await;
    assert_status(&status, Code::OutOfRange, &["older than the events this server retains", "from_revision"]);
    // The newest cursor itself is a fine place to resume from.
    let mut resumed = watch(&server, after(e.cursor)).await;
    assert_quiet(&mut resumed).await;
    drop((events, resumed));

    // Cursors do not survive a restart: resume by revision instead, which sends Ada's Mac (the
    // change log says it changed at that revision).
    let server = server.restart().await;
    let status = watch_err(&server, after(e.cursor)).await;
    assert_status(&status, Code::OutOfRange, &["from_revision"]);
    let mut resync = watch(&server, from_revision(e.revision - 1)).await;
    let s = next(&mut resync).await;
    assert_eq!(seen(&s), seen(&e));
    assert!(s.snapshot && s.revision >= written, "{s:?}");
    server.stop().await;
}

/// A revision is a position every process shares: after a restart, a stream resumed from one
/// gets the devices whose decisions changed since (in the change log before the restart, by
/// time alone while the server was down, and after it), and not the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_revision_resumes_across_a_restart_with_only_the_devices_that_changed() {
    let clock = Arc::new(ManualClock::new(Timestamp(now_secs())));
    let server = TestServer::start_at(clock.clone()).await;
    seed_org(&server).await;
    let now = server.now_secs();
    let mut dan = mac_at("mac-dan", "dan", "C02DAN0001", now);
    dan.last_check_in = Some(prost_types::Timestamp { seconds: now - 23 * HOUR, nanos: 0 });
    let macs = [mac_at("mac-ada", "ada", "C02ADA0001", now), mac_at("mac-bob", "bob", "C02BOB0001", now)];
    server.report(vec![macs[0].clone(), macs[1].clone(), mac_at("mac-cara", "cara", "C02CARA001", now), dan]).await;
    let position = server.revision().await;
    assert_decision(&server.check("dan", "mac-dan").await, D::Allow, S::Compliant, &["COMPLIANT"]);

    // Bob's FileVault goes off and Cara's record is deleted; two hours pass (Dan's last
    // check-in is then 25 hours old); the server restarts; then Erin's Mac is reported.
    server.report(vec![without_file_vault(macs[1].clone())]).await;
    let req = pb::DeleteDeviceRequest { device_id: "mac-cara".into() };
    server.admin().delete_device(req).await.unwrap();
    clock.advance(2 * HOUR);
    let server = server.restart().await;
    server.report(vec![mac_at("mac-erin", "erin", "C02ERIN001", server.now_secs())]).await;

    let mut events = watch(&server, from_revision(position)).await;
    let mut snapshot = take(&mut events, 4).await;
    assert!(snapshot.iter().all(|e| e.snapshot && cause(e) == Cause::Snapshot), "{snapshot:?}");
    assert_ne!(snapshot[3].cursor, 0, "the last snapshot event is a resume point");
    snapshot.sort_by(|a, b| a.device_id.cmp(&b.device_id));
    let decided: Vec<_> = snapshot.iter().map(seen).collect();
    assert_eq!(
        decided,
        [
            ("mac-bob", D::Deny, S::Noncompliant, vec!["NONCOMPLIANT"]),
            ("mac-cara", D::Deny, S::Unknown, vec!["DEVICE_UNKNOWN"]),
            ("mac-dan", D::Deny, S::Unknown, vec!["UNRESPONSIVE"]),
            ("mac-erin", D::Allow, S::Compliant, vec!["COMPLIANT"]),
        ]
    );
    assert!(snapshot.iter().all(|e| e.revision > position), "{snapshot:?}");
    // Ada's Mac has not changed: not in the snapshot.
    assert_quiet(&mut events).await;

    // From the latest revision: nothing; a device filter keeps to its devices.
    let mut latest = watch(&server, from_revision(server.revision().await)).await;
    assert_quiet(&mut latest).await;
    let mut bob = watch(&server, only(from_revision(position), &["mac-bob", "mac-ada"])).await;
    assert_eq!(seen(&next(&mut bob).await).0, "mac-bob");
    assert_quiet(&mut bob).await;
    // Every device, when asked: the four known ones.
    let every = pb::WatchComplianceRequest { every_device: true, ..Default::default() };
    let mut all = watch(&server, every).await;
    let mut ids: Vec<String> = take(&mut all, 4).await.into_iter().map(|e| e.device_id).collect();
    ids.sort();
    assert_eq!(ids, ["mac-ada", "mac-bob", "mac-dan", "mac-erin"]);
    assert_quiet(&mut all).await;
    let both = pb::WatchComplianceRequest { every_device: true, from_revision: position, ..Default::default() };
    assert_status(&watch_err(&server, both).await, Code::InvalidArgument, &["every_device"]);
    let ahead = from_revision(server.revision().await + 10);
    assert_status(&watch_err(&server, ahead).await, Code::InvalidArgument, &["ahead of the latest revision"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_too_slow_to_keep_up_is_told_where_to_resume() {
    let server = TestServer::start().await;
    seed_org(&server).await;
    // A client with a 16 KiB HTTP/2 window that reads nothing: the server can send it little,
    // and its stream's buffer of 1024 events fills.
    let channel = Endpoint::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .initial_stream_window_size(16 * 1024)
        .connect()
        .await
        .unwrap();
    let mut slow_client = ComplianceServiceClient::with_interceptor(channel, Bearer::new(Some(GATEWAY_SECRET)));
    let mut slow = slow_client.watch_compliance(from_now()).await.unwrap().into_inner();
    // The last device of each write tells when all its events are in.
    let mut last = watch(&server, only(from_now(), &["mac-0999"])).await;

    let macs = |failing: bool| -> Vec<pb::DeviceReport> {
        (0..1000)
            .map(|i| {
                let m = mac(&format!("mac-{i:04}"), "ada", &format!("C02SLOW{i:04}"));
                if failing { without_file_vault(m) } else { m }
            })
            .collect()
    };
    let mut expected = Vec::new();
    for failing in [false, true, false] {
        server.report(macs(failing)).await;
        let e = next_within(&mut last, Duration::from_secs(30)).await;
        assert_eq!(decision(e.decision), if failing { D::Deny } else { D::Allow });
        expected.extend((0..1000).map(|i| (format!("mac-{i:04}"), failing)));
    }

    // The slow client gets what was in flight, then RESOURCE_EXHAUSTED naming its last cursor.
    let mut got = Vec::new();
    let status = loop {
        match tokio::time::timeout(WAIT, slow.message()).await.expect("the stream moves") {
            Ok(Some(e)) => got.push(e),
            Ok(None) => panic!("the stream ended without an error after {} events", got.len()),
            Err(status) => break status,
        }
    };
    assert!(!got.is_empty() && got.len() < 2000, "{} events reached the slow client", got.len());
    let last_cursor = got.last().unwrap().cursor;
    assert_status(&status, Code::ResourceExhausted, &["1024 events behind", &format!("after_cursor {last_cursor} ")]);

    // Resuming there gives the rest: every event once, in order.
    let mut resumed = watch(&server, after(last_cursor)).await;
    let rest = expected.len() - got.len();
    for _ in 0..rest {
        got.push(next(&mut resumed).await);
    }
    assert_quiet(&mut resumed).await;
    assert!(got.windows(2).all(|w| w[1].cursor == w[0].cursor + 1), "consecutive cursors");
    let got: Vec<(String, bool)> = got.iter().map(|e| (e.device_id.clone(), decision(e.decision) == D::Deny)).collect();
    assert_eq!(got, expected);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_end_with_unavailable_when_the_server_shuts_down() {
    let server = TestServer::start().await;
    seed_org(&server).await;
    let mut events = watch(&server, from_now()).await;
    server.report(vec![mac("mac-ada", "ada", "C02ADA0001")]).await;
    next(&mut events).await;
    // stop() fails if the server does not finish within 20 s: an open stream must not hold it.
    let stopped = Instant::now();
    server.stop().await;
    assert!(stopped.elapsed() < Duration::from_secs(5), "stopping took {:?}", stopped.elapsed());
    let end = tokio::time::timeout(WAIT, events.message()).await.expect("the stream ends");
    let status = end.expect_err("a status that sends the client elsewhere");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("shutting down"), "{status:?}");
    assert!(status.message().contains("every event up to cursor"), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_holds_shutdown_no_longer_than_the_drain_limit() {
    let server = TestServer::start().await;
    seed_org(&server).await;
    // A full 16 KiB window: the server cannot send this stream even its end.
    let channel = Endpoint::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .initial_stream_window_size(16 * 1024)
        .connect()
        .await
        .unwrap();
    let mut client = ComplianceServiceClient::with_interceptor(channel, Bearer::new(Some(GATEWAY_SECRET)));
    let _stalled = client.watch_compliance(from_now()).await.unwrap().into_inner();
    let mut last = watch(&server, only(from_now(), &["mac-0499"])).await;
    let macs = (0..500).map(|i| mac(&format!("mac-{i:04}"), "ada", &format!("C02STAL{i:04}"))).collect();
    server.report(macs).await;
    next_within(&mut last, Duration::from_secs(30)).await;
    let stopped = Instant::now();
    server.stop().await;
    let took = stopped.elapsed();
    assert!(took >= posture::server::Drain::default().timeout - Duration::from_secs(1), "stopped after {took:?}");
    assert!(took < posture::server::Drain::default().timeout + Duration::from_secs(5), "stopped after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watching_is_for_admins_and_gateways_and_the_filter_is_bounded() {
    let server = TestServer::start().await;
    let status = server.compliance_as(Some(PARTNER_SECRET)).watch_compliance(from_now()).await.err().unwrap();
    assert_status(&status, Code::PermissionDenied, &["ComplianceService"]);
    let status = server.compliance_as(None).watch_compliance(from_now()).await.err().unwrap();
    assert_eq!(status.code(), Code::Unauthenticated);
    let mut admin = server.compliance_as(Some(ADMIN_SECRET));
    admin.watch_compliance(from_now()).await.unwrap();

    let many: Vec<String> = (0..1001).map(|i| format!("mac-{i}")).collect();
    let status = watch_err(&server, pb::WatchComplianceRequest { device_ids: many, ..Default::default() }).await;
    assert_status(&status, Code::InvalidArgument, &["device_ids", "at most 1000"]);
    let status = watch_err(&server, only(from_now(), &[""])).await;
    assert_status(&status, Code::InvalidArgument, &["device_ids[0]"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_followed_from_another_replica_are_streamed_too() {
    // Two servers on one SQLite file: B applies A's writes by following the change log.
    let a = TestServer::start().await;
    seed_org(&a).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_for(dir.path(), default_credentials(), false);
    config.store = a.config.store.clone();
    let b = TestServer::launch(config, dir).await;
    let mut events = watch(&b, from_now()).await;
    let written = a.report(vec![without_file_vault(mac("mac-bob", "bob", "C02BOB0001"))]).await.revision;
    let e = next(&mut events).await;
    assert_eq!(seen(&e), ("mac-bob", D::Deny, S::Noncompliant, vec!["NONCOMPLIANT"]));
    assert_eq!((e.revision, cause(&e)), (written, Cause::DataChanged));
    b.stop().await;
    a.stop().await;
}
