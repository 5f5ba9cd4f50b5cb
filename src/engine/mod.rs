//! The engine: the in-memory state, the store behind it and the decision cache in front of
//! it. Reads answer from memory; writes validate, commit durably, then apply and invalidate.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use parking_lot::RwLock;

use crate::auth::Credentials;
use crate::cache::DecisionCache;
use crate::clock::Clock;
use crate::domain::access::{self, AccessDecision, DeviceDecision};
use crate::domain::{Change, State, Timestamp, Touched};
use crate::error::Result;
use crate::store::Store;

mod admin;
mod inventory;

pub use admin::{GroupTargets, check_user_groups};
pub use inventory::{ItemOutcome, ReportOutcome};

pub struct Engine {
    store: Arc<dyn Store>,
    state: RwLock<State>,
    /// The revision `state` reflects.
    revision: AtomicU64,
    cache: DecisionCache,
    /// Serializes writes so that commit order is apply order.
    writes: tokio::sync::Mutex<()>,
    clock: Arc<dyn Clock>,
    credentials: Arc<Credentials>,
    /// The partner's last report, in seconds (0: none since start). Not a decision input.
    last_heartbeat: AtomicI64,
}

impl Engine {
    /// Loads the store's state into memory.
    pub async fn open(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        cache_capacity: u64,
        credentials: Arc<Credentials>,
    ) -> Result<Self> {
        let snapshot = store.load().await?;
        Ok(Engine {
            store,
            state: RwLock::new(snapshot.state),
            revision: AtomicU64::new(snapshot.revision),
            cache: DecisionCache::new(cache_capacity),
            writes: tokio::sync::Mutex::new(()),
            clock,
            credentials,
            last_heartbeat: AtomicI64::new(0),
        })
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    pub fn revision(&self) -> u64 {
        self.revision.load(Ordering::Acquire)
    }

    pub fn credentials(&self) -> &Arc<Credentials> {
        &self.credentials
    }

    pub fn cached_decisions(&self) -> u64 {
        self.cache.entry_count()
    }

    /// The hot path: memory and cache only. The decision is the device's, for its primary
    /// user; apply the caller with `access::for_user` or `access::other_user_reason`.
    pub fn check_access(&self, device_id: &str) -> (Arc<DeviceDecision>, u64) {
        // A write invalidates before it publishes its revision, so reading the revision
        // first makes a hit answer "as of that revision" truthfully, without the state lock.
        let revision = self.revision();
        let now = self.now();
        if let Some(hit) = self.cache.get(device_id, now) {
            return (hit, revision);
        }
        // Held across the cache insert so that no write can slip between evaluation and insert.
        let state = self.state.read();
        let decision = self.cache.get_or_compute(device_id, now, || access::decide(&state, device_id, now));
        (decision, self.revision())
    }

    /// The same decision, evaluated afresh without the cache (for tests and comparisons).
    pub fn check_access_uncached(&self, user_id: &str, device_id: &str) -> AccessDecision {
        let now = self.now();
        let state = self.state.read();
        access::for_user(&access::decide(&state, device_id, now), user_id)
    }

    /// Runs a read against the state at `now`, returning the revision it saw.
    pub fn read<T>(&self, f: impl FnOnce(&State, Timestamp) -> T) -> (T, u64) {
        let now = self.now();
        let state = self.state.read();
        (f(&state, now), self.revision())
    }

    /// Builds changes from the current state, commits them durably, then applies them.
    /// Nothing to change commits nothing and returns the current revision.
    async fn write(&self, build: impl FnOnce(&State, Timestamp) -> Result<Vec<Change>>) -> Result<u64> {
        let _serial = self.writes.lock().await;
        let now = self.now();
        let changes = {
            let state = self.state.read();
            build(&state, now)?
        };
        if changes.is_empty() {
            return Ok(self.revision());
        }
        let revision = self.store.commit(&changes, now.0).await?;
        self.apply(revision, changes);
        Ok(revision)
    }

    /// Applies committed changes and drops the cached decisions they touch, atomically for readers.
    fn apply(&self, revision: u64, changes: Vec<Change>) {
        let mut state = self.state.write();
        let mut touched = Touched::default();
        for c in changes {
            touched.merge(state.apply(c));
        }
        self.cache.invalidate(&touched);
        self.revision.store(revision, Ordering::Release);
    }
}
