//! A full disk under SQLite, on a small tmpfs the test mounts: writes fail fast with
//! RESOURCE_EXHAUSTED saying so, decisions keep coming from memory, nothing is corrupted, and
//! writes succeed again once space is freed, without a restart.
//!
//! Mounting needs root, so it is ignored unless asked for (`cargo test -- --ignored`, as CI
//! runs it).
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::binary::Served;
use common::*;
use posture::proto::{
    self as pb, admin_service_client::AdminServiceClient, compliance_service_client::ComplianceServiceClient,
    inventory_service_client::InventoryServiceClient,
};
use tonic::Code;

/// A tmpfs of `size` at `dir`, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        let status =
            Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(dir).status();
        assert!(
            status.as_ref().is_ok_and(|s| s.success()),
            "cannot mount a tmpfs at {} ({status:?}): this test needs root",
            dir.display()
        );
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the filesystem of `path` with one file, to the last byte it takes.
fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).unwrap();
    let block = vec![0u8; 64 * 1024];
    loop {
        match file.write(&block) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    let small = [0u8; 512];
    while file.write(&small).is_ok_and(|n| n > 0) {}
    let _ = file.sync_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "mounts a tmpfs, which needs root: run with --ignored"]
async fn a_full_disk_refuses_writes_clearly_and_recovers_without_a_restart() {
    let files = tempfile::tempdir().unwrap();
    let mount_point = tempfile::tempdir().unwrap();
    let _tmpfs = Tmpfs::mount(mount_point.path(), "8m");
    let data = mount_point.path().join("data");
    let config = write_credentials(files.path(), &default_credentials());
    let args = ["--config", config.to_str().unwrap(), "--data-dir", data.to_str().unwrap()];
    let served = Served::start(&args, "warn").await;
    let channel = served.channel();
    seed_org_through(&mut AdminServiceClient::with_interceptor(channel.clone(), Bearer::new(Some(ADMIN_SECRET))), 0)
        .await;
    let mut inventory = InventoryServiceClient::with_interceptor(channel.clone(), Bearer::new(Some(PARTNER_SECRET)));
    let mut compliance = ComplianceServiceClient::with_interceptor(channel.clone(), Bearer::new(Some(GATEWAY_SECRET)));
    let mut acknowledged = Vec::new();
    let mut report = async |n: usize| {
        let id = format!("mac-full-{n}");
        let devices = vec![mac(&id, "ada", &format!("SNFULL{n}"))];
        let mut request = tonic::Request::new(pb::ReportInventoryRequest { devices });
        request.set_timeout(Duration::from_secs(10));
        let answer = inventory.report_inventory(request).await.map(|r| r.into_inner().accepted == 1);
        (id, answer)
    };
    let (id, answer) = report(0).await;
    assert!(answer.unwrap());
    acknowledged.push(id);
    let check = pb::CheckAccessRequest { user_id: "ada".into(), device_id: "mac-full-0".into(), min_revision: 0 };
    let before = compliance.check_access(check.clone()).await.unwrap().into_inner();
    assert_eq!(decision(before.decision), pb::Decision::Allow, "{before:?}");

    // Fill the disk; SQLite may still have room in pages it holds, so write until refused.
    fill(&mount_point.path().join("filler"));
    let mut refused = None;
    for n in 1..2_000 {
        let started = Instant::now();
        let (id, answer) = report(n).await;
        match answer {
            Ok(accepted) => {
                assert!(accepted);
                acknowledged.push(id);
            }
            Err(status) => {
                refused = Some((status, started.elapsed(), n));
                break;
            }
        }
    }
    let (status, took, n) = refused.expect("a full disk refuses writes");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("disk is full"), "{status:?}");
    assert!(took < Duration::from_secs(2), "refused after {took:?}: fail fast");
    eprintln!(
        "full after {} acknowledged reports; the next was refused in {took:?}: {}",
        acknowledged.len(),
        status.message()
    );

    // Decisions still come from memory, and the same write is refused again, as fast.
    let during = compliance.check_access(check.clone()).await.unwrap().into_inner();
    assert_eq!(decision(during.decision), pb::Decision::Allow, "{during:?}");
    let (_, again) = report(n).await;
    let again = again.unwrap_err();
    assert_eq!(again.code(), Code::ResourceExhausted, "{again:?}\n{}", served.log());

    // Space again: writes succeed without a restart.
    std::fs::remove_file(mount_point.path().join("filler")).unwrap();
    let (id, answer) = report(n).await;
    assert!(answer.expect("writes succeed once space is freed"));
    eprintln!("space freed: the next write was acknowledged, no restart");
    acknowledged.push(id);
    for id in &acknowledged {
        let evaluate = pb::EvaluateDeviceRequest { device_id: id.clone(), ..Default::default() };
        compliance.evaluate_device(evaluate).await.unwrap_or_else(|s| panic!("{id}: {s:?}"));
    }
    served.stop().await;

    // Nothing is corrupted, and every acknowledged report is on disk.
    let db = data.join("posture.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", db.display())).await.unwrap();
    let checks: Vec<(String,)> = sqlx::query_as("PRAGMA integrity_check").fetch_all(&pool).await.unwrap();
    assert_eq!(checks, [("ok".to_string(),)], "SQLite's integrity check");
    pool.close().await;
    let store = posture::store::open(&format!("sqlite://{}", db.display())).await.unwrap();
    let state = store.load().await.unwrap().state;
    for id in &acknowledged {
        assert!(state.device(id).is_some(), "acknowledged {id} is on disk");
    }
}
