//! `posture probe`, the built binary, against a real server, a server that is NOT_SERVING, a
//! closed port and a port that never answers.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::process::Output;
use std::time::{Duration, Instant};

use common::*;
use tonic_health::ServingStatus;

/// Runs `posture probe --addr ADDR ARGS…` and waits for it (off the runtime's threads, which
/// serve the server under test).
async fn probe(addr: SocketAddr, args: &[&str]) -> Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_posture"));
    command.arg("probe").arg("--addr").arg(addr.to_string()).args(args);
    tokio::task::spawn_blocking(move || command.output()).await.unwrap().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Fails unless the probe exited 1 with exactly one line that contains `expected`.
fn assert_fails_saying(out: &Output, expected: &str) {
    let text = stderr(out);
    assert_eq!(out.status.code(), Some(1), "exit code; stderr: {text}");
    assert_eq!(text.lines().count(), 1, "one line: {text:?}");
    assert!(text.contains(expected), "{expected:?} in {text:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serving_server_and_each_of_its_services_pass() {
    let server = TestServer::start().await;
    let out = probe(server.addr, &[]).await;
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "SERVING");
    for service in posture::server::SERVICES.iter().chain(&[posture::server::LIVENESS]) {
        let out = probe(server.addr, &["--service", service]).await;
        assert!(out.status.success(), "{service}: {}", stderr(&out));
    }
    let out = probe(server.addr, &["--service", "posture.v1.NoSuchService"]).await;
    assert_fails_saying(&out, "unknown service");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_not_serving_fails() {
    // The standard health service, set as posture sets it while it drains or is past its
    // maximum staleness.
    let (health, service) = tonic_health::server::health_reporter();
    health.set_service_status("", ServingStatus::NotServing).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let serving = tokio::spawn(tonic::transport::Server::builder().add_service(service).serve_with_incoming(incoming));

    assert_fails_saying(&probe(addr, &[]).await, "NOT_SERVING");
    health.set_service_status("", ServingStatus::Serving).await;
    assert!(probe(addr, &[]).await.status.success());
    serving.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_port_is_unreachable() {
    // A port just freed: nothing listens there.
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    assert_fails_saying(&probe(addr, &[]).await, "unreachable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_times_out() {
    // The kernel completes the TCP handshake, but nobody reads or answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let started = Instant::now();
    let out = probe(silent.local_addr().unwrap(), &["--timeout", "300ms"]).await;
    assert_fails_saying(&out, "no answer within 300ms");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    drop(silent);
}
