//! While a large state loads, the real binary's port already answers: health NOT_SERVING for
//! the server and its services, SERVING for `liveness`, every other call UNAVAILABLE saying it
//! is loading; then SERVING on the same port, with every call served.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::binary::{Served, free_port};
use common::domain::healthy_mac;
use common::*;
use posture::domain::model::User;
use posture::domain::{Change, Timestamp};
use posture::proto::{self as pb, compliance_service_client::ComplianceServiceClient};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// Enough Macs that loading them takes a few seconds in a debug build.
const MACS: usize = 30_000;

async fn health(channel: tonic::transport::Channel, service: &str) -> Option<i32> {
    let mut health = HealthClient::new(channel);
    health.check(HealthCheckRequest { service: service.into() }).await.ok().map(|r| r.get_ref().status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_port_says_not_serving_while_the_state_loads() {
    let files = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let db = data.path().join("posture.db");
    {
        let store = posture::store::open(&format!("sqlite://{}", db.display())).await.unwrap();
        let now = Timestamp(now_secs());
        let user = |id: &str| User {
            id: id.into(),
            user_principal_name: format!("{id}@example.com"),
            device_management_licence: true,
            premium_identity_licence: true,
        };
        store.commit(0, &[Change::PutUser(user("ada"))], now.0).await.unwrap();
        let ids: Vec<usize> = (0..MACS).collect();
        for (head, chunk) in (1..).zip(ids.chunks(10_000)) {
            let changes: Vec<Change> = chunk
                .iter()
                .map(|i| Change::PutDevice(healthy_mac(&format!("mac-{i}"), "ada", &format!("SN{i}"), now)))
                .collect();
            store.commit(head, &changes, now.0).await.unwrap();
        }
    }
    let config = write_credentials(files.path(), &default_credentials());
    let args = ["--config", config.to_str().unwrap(), "--data-dir", data.path().to_str().unwrap()];
    let addr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let started = Instant::now();
    let served = Served::spawn_at(addr, &args, "info", None);
    let channel = served.channel();

    // The port answers before the state is loaded; once it does, it says it is loading.
    let mut seen_loading = false;
    let mut compliance = ComplianceServiceClient::with_interceptor(channel.clone(), Bearer::new(Some(GATEWAY_SECRET)));
    let check = pb::CheckAccessRequest { user_id: "ada".into(), device_id: "mac-1".into(), min_revision: 0 };
    loop {
        assert!(started.elapsed() < Duration::from_secs(120), "not serving after 2 minutes:\n{}", served.log());
        match health(channel.clone(), "").await {
            Some(s) if s == ServingStatus::Serving as i32 => break,
            Some(s) if s == ServingStatus::NotServing as i32 && !seen_loading => {
                assert_eq!(
                    health(channel.clone(), posture::server::LIVENESS).await,
                    Some(ServingStatus::Serving as i32)
                );
                let ready = health(channel.clone(), "posture.v1.ComplianceService").await;
                // The load may just have ended between the two calls.
                if ready == Some(ServingStatus::NotServing as i32) {
                    let status = compliance.check_access(check.clone()).await.unwrap_err();
                    if status.code() == Code::Unavailable {
                        assert!(status.message().contains("loading its state"), "{status:?}");
                        seen_loading = true;
                    }
                }
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen_loading, "the port said NOT_SERVING while loading; log:\n{}", served.log());
    let answer = compliance.check_access(check).await.unwrap().into_inner();
    assert_eq!(decision(answer.decision), pb::Decision::Deny, "no policy or connector: {answer:?}");
    let log = served.stop().await;
    assert!(log.contains("loading the state"), "{log}");
    eprintln!("{MACS} Macs loaded and serving after {:?}", started.elapsed());
}
