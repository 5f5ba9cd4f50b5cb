//! Shutting down under load, through the real binary: on SIGTERM readiness turns NOT_SERVING
//! at once while the server serves on for `--shutdown-delay`; a read parked on a revision is
//! released at once; then Watch streams end with UNAVAILABLE naming the last cursor, calls in
//! flight finish, and the process exits well within `--drain-timeout`. No write it
//! acknowledged is lost, and no call is cut off half-way: every failed call failed to reach it.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::binary::Served;
use common::writers::Writers;
use common::*;
use posture::proto::{
    self as pb, admin_service_client::AdminServiceClient, compliance_service_client::ComplianceServiceClient,
};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

const DELAY: Duration = Duration::from_secs(2);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

async fn health(channel: tonic::transport::Channel) -> Option<i32> {
    let mut health = HealthClient::new(channel);
    health.check(HealthCheckRequest { service: String::new() }).await.ok().map(|r| r.get_ref().status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_without_losing_or_cutting_off_anything() {
    let files = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let config = write_credentials(files.path(), &default_credentials());
    let (delay, drain) = (format!("{}s", DELAY.as_secs()), format!("{}s", DRAIN_TIMEOUT.as_secs()));
    let args = [
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        data.path().to_str().unwrap(),
        "--shutdown-delay",
        &delay,
        "--drain-timeout",
        &drain,
    ];
    let served = Served::start(&args, "info").await;
    let channel = served.channel();
    let revision = seed_org_through(
        &mut AdminServiceClient::with_interceptor(channel.clone(), Bearer::new(Some(ADMIN_SECRET))),
        0,
    )
    .await;
    let compliance = || ComplianceServiceClient::with_interceptor(channel.clone(), Bearer::new(Some(GATEWAY_SECRET)));

    // A Watch stream with an event delivered, a read parked on a revision that will not come,
    // and writers in full flow.
    let watch = pb::WatchComplianceRequest { from_revision: 1, ..Default::default() };
    let mut events = compliance().watch_compliance(watch).await.unwrap().into_inner();
    let writers = Writers::start(channel.clone(), 2, "ada", "drain");
    writers.wait_for_more(20).await;
    assert!(events.message().await.unwrap().is_some());
    let parked = {
        let mut compliance = compliance();
        tokio::spawn(async move {
            let check = pb::CheckAccessRequest {
                user_id: "ada".into(),
                device_id: "mac-drain-0-0".into(),
                min_revision: revision + 1_000_000,
            };
            let mut request = tonic::Request::new(check);
            request.set_timeout(Duration::from_secs(30));
            let answer = compliance.check_access(request).await;
            (answer, Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;

    let signalled = Instant::now();
    served.signal("TERM");

    // Not ready at once, but still serving, even on a new connection, until the delay ends.
    let mut not_serving = false;
    while signalled.elapsed() < DELAY / 2 {
        if health(channel.clone()).await == Some(ServingStatus::NotServing as i32) {
            not_serving = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(not_serving, "health turns NOT_SERVING as soon as SIGTERM arrives");
    eprintln!("NOT_SERVING {:?} after SIGTERM", signalled.elapsed());
    let fresh = channel_to(served.addr, None);
    let mut late = ComplianceServiceClient::with_interceptor(fresh, Bearer::new(Some(GATEWAY_SECRET)));
    let check = pb::CheckAccessRequest { user_id: "ada".into(), device_id: "mac-drain-0-0".into(), min_revision: 0 };
    late.check_access(check).await.expect("a new connection is still served during the delay");
    assert!(signalled.elapsed() < DELAY, "that was within the delay");

    // The parked read was told at once to read elsewhere.
    let (answer, answered) = parked.await.unwrap();
    let status = answer.expect_err("the revision never came");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("shutting down"), "{status:?}");
    assert!(answered - signalled < Duration::from_secs(1), "released after {:?}", answered - signalled);

    // The stream ends after the delay, with a status that sends its client elsewhere.
    let end = loop {
        match tokio::time::timeout(DELAY + DRAIN_TIMEOUT, events.message()).await.expect("the stream ends") {
            Ok(Some(_)) => continue,
            end => break end,
        }
    };
    assert!(signalled.elapsed() >= DELAY - Duration::from_millis(100), "streams end after the delay");
    let status = end.expect_err("not a clean end: a status");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("every event up to cursor"), "{status:?}");

    let (status, log) = served.exit().await;
    let took = signalled.elapsed();
    assert!(status.success(), "exited with {status}:\n{log}");
    assert!(took < DELAY + DRAIN_TIMEOUT, "exited {took:?} after SIGTERM");
    assert!(!log.contains("after the drain timeout"), "nothing was left in flight:\n{log}");

    // Every call the writers made either was acknowledged or never reached a handler: refused
    // at connect (UNAVAILABLE), or sent after the server's GOAWAY and so never started, which
    // the client reports as CANCELLED. A call cut off in its handler would be anything else.
    let outcome = writers.stop().await;
    eprintln!(
        "parked read released after {:?}; exited after {took:?}; {} writes acknowledged, failed calls {:?}",
        answered - signalled,
        outcome.acknowledged(),
        outcome.failed
    );
    let cut_off: Vec<_> =
        outcome.failed.iter().filter(|(code, _)| !["Unavailable", "Cancelled"].contains(&code.as_str())).collect();
    assert!(cut_off.is_empty(), "calls cut off half-way: {cut_off:?} {:?}", outcome.messages);

    // And every acknowledged write is there after a restart.
    let restarted = Served::start(&args, "warn").await;
    let mut compliance =
        ComplianceServiceClient::with_interceptor(restarted.channel(), Bearer::new(Some(GATEWAY_SECRET)));
    for id in &outcome.devices {
        let evaluate = pb::EvaluateDeviceRequest { device_id: id.clone(), ..Default::default() };
        compliance.evaluate_device(evaluate).await.unwrap_or_else(|s| panic!("acknowledged {id} is gone: {s:?}"));
    }
    let mut admin = AdminServiceClient::with_interceptor(restarted.channel(), Bearer::new(Some(ADMIN_SECRET)));
    let listed = admin.list_policies(pb::ListPoliciesRequest::default()).await.unwrap().into_inner();
    for id in &outcome.policies {
        assert!(listed.policies.iter().any(|p| &p.id == id), "acknowledged policy {id} is gone");
    }
    restarted.stop().await;
}
