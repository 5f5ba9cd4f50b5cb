//! The one module that calls posture's engine and edge validation (`grpc::incoming`): each
//! synthetic write is converted and written as its RPC's handler does it, so a synthetic
//! organisation holds only what a real client could have written.

use std::sync::Arc;

use posture::auth::Credentials;
use posture::clock::SystemClock;
use posture::domain::access::DeviceDecision;
use posture::domain::{State, Timestamp};
use posture::engine::{Engine, ItemOutcome};
use posture::grpc::{incoming, outgoing};
use posture::proto as pb;
use posture::store::Store;
use posture::store::memory::MemoryStore;

use crate::synthetic::{Spec, Write, organisation};

/// An engine on `store`, on the wall clock, with authentication off.
async fn open(store: Arc<dyn Store>, cache_capacity: u64) -> anyhow::Result<Engine> {
    Ok(Engine::open(store, Arc::new(SystemClock), cache_capacity, Arc::new(Credentials::default())).await?)
}

/// Writes `spec`'s organisation into `store`, which must be empty; returns the last revision.
pub async fn generate(store: Arc<dyn Store>, cache_capacity: u64, spec: Spec) -> anyhow::Result<u64> {
    let engine = open(store, cache_capacity).await?;
    anyhow::ensure!(
        engine.revision() == 0,
        "the store is not empty (revision {}); generate into an empty one",
        engine.revision()
    );
    write(&engine, spec).await
}

/// `spec`'s organisation in an in-memory engine, for the benchmarks. Runs its own runtime, so
/// call it outside one.
pub fn in_memory(spec: Spec) -> anyhow::Result<Engine> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
        let engine = open(Arc::new(MemoryStore::default()), 100_000).await?;
        write(&engine, spec).await?;
        Ok(engine)
    })
}

/// Runs `f` on the engine's state at the engine's now.
pub fn read<T>(engine: &Engine, f: impl FnOnce(&State, Timestamp) -> T) -> T {
    engine.read(f).0
}

/// CheckAccess's lookup: the device's cached decision and the revision it is as of.
pub fn check_access(engine: &Engine, device_id: &str) -> (Arc<DeviceDecision>, u64) {
    engine.check_access(device_id)
}

async fn write(engine: &Engine, spec: Spec) -> anyhow::Result<u64> {
    let mut revision = engine.revision();
    for w in organisation(spec, engine.now().0) {
        revision = send(engine, w).await?;
    }
    Ok(revision)
}

/// One write, validated and applied as its handler in `posture::grpc` does it: the same
/// conversion of the request, the same engine call.
async fn send(engine: &Engine, write: Write) -> anyhow::Result<u64> {
    Ok(match write {
        Write::SyncDirectory(r) => {
            let d = incoming::directory(&r)?;
            engine.sync_directory(d.users, d.groups, d.removed_user_ids, d.removed_group_ids).await?
        }
        Write::CreatePolicy(r) => engine.create_policy(incoming::policy(r.policy.as_ref())?).await?,
        Write::AssignPolicy(r) => {
            let (policy_id, targets) = incoming::assignment(&r)?;
            engine.assign_policy(&policy_id, targets).await?
        }
        Write::EnableConnector(r) => {
            let (app_id, version, targets) = incoming::connector(&r)?;
            engine.enable_connector(app_id, version, targets).await?
        }
        Write::ReportInventory(r) => {
            let outcome = engine.report_inventory(None, incoming::reports(&r)?).await?;
            for (device_id, item) in &outcome.items {
                if let ItemOutcome::Rejected(e) = item {
                    anyhow::bail!("the report of {device_id} was rejected: {e}");
                }
            }
            outcome.revision
        }
    })
}

/// PreviewPolicy as its handler answers it: the request validated by `grpc::incoming`, the
/// preview made by the engine and rendered by `grpc::outgoing`.
pub fn preview_policy(engine: &Engine, r: &pb::PreviewPolicyRequest) -> anyhow::Result<pb::PreviewPolicyResponse> {
    let (draft, max_devices) = incoming::preview(r)?;
    let (mut resp, revision) = engine.preview(&draft, max_devices, outgoing::preview_policy)?;
    resp.revision = revision;
    Ok(resp)
}
