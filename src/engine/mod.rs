//! The engine: the in-memory state, the store behind it and the decision cache in front of
//! it. Reads answer from memory; writes validate, commit durably, then apply and invalidate.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::RwLock;

use crate::auth::Credentials;
use crate::cache::DecisionCache;
use crate::clock::Clock;
use crate::domain::access::{self, AccessDecision, DeviceDecision};
use crate::domain::{Change, State, Timestamp, Touched};
use crate::error::{Error, Result};
use crate::store::Store;

mod admin;
mod inventory;
pub mod watch;

pub use admin::{GroupTargets, check_user_groups};
pub use inventory::{ItemOutcome, ReportOutcome};
pub use watch::{WatchConfig, Watcher};

/// What `apply` tells a watcher: the revision just applied and the decisions it can have changed.
pub type Applied = (u64, Touched);

pub struct Engine {
    store: Arc<dyn Store>,
    state: RwLock<State>,
    /// The revision `state` reflects (read on the hot path).
    revision: AtomicU64,
    /// The same, for readers waiting for a revision to arrive.
    applied: tokio::sync::watch::Sender<u64>,
    cache: DecisionCache,
    /// Serializes writes so that commit order is apply order.
    writes: tokio::sync::Mutex<()>,
    clock: Arc<dyn Clock>,
    credentials: Arc<Credentials>,
    /// The partner's last report, in seconds (0: none since start). Not a decision input.
    last_heartbeat: AtomicI64,
    /// Where `apply` sends what it applied, when a watcher listens (see [`Engine::watch_applied`]).
    applied_hook: parking_lot::Mutex<Option<tokio::sync::mpsc::UnboundedSender<Applied>>>,
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
            applied: tokio::sync::watch::Sender::new(snapshot.revision),
            cache: DecisionCache::new(cache_capacity),
            writes: tokio::sync::Mutex::new(()),
            clock,
            credentials,
            last_heartbeat: AtomicI64::new(0),
            applied_hook: parking_lot::Mutex::new(None),
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

    /// From now on, every applied revision that can change a decision is sent, in order, to
    /// the returned receiver (replacing any earlier one). For the watcher; sending never blocks.
    pub fn watch_applied(&self) -> tokio::sync::mpsc::UnboundedReceiver<Applied> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        *self.applied_hook.lock() = Some(tx);
        rx
    }

    /// Runs a read against the state at `now`, returning the revision it saw.
    pub fn read<T>(&self, f: impl FnOnce(&State, Timestamp) -> T) -> (T, u64) {
        let now = self.now();
        let state = self.state.read();
        (f(&state, now), self.revision())
    }

    /// Waits until this replica has applied `revision` (read your writes through any
    /// replica), or fails once `within` has passed.
    pub async fn wait_for(&self, revision: u64, within: Duration) -> Result<()> {
        if self.revision() >= revision {
            return Ok(());
        }
        let mut applied = self.applied.subscribe();
        match tokio::time::timeout(within, applied.wait_for(|r| *r >= revision)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(Error::DeadlineExceeded(format!(
                "this replica has applied revision {}; revision {revision} did not arrive within {within:?}",
                self.revision()
            ))),
        }
    }

    /// Applies every change other writers committed since this replica's revision.
    pub async fn catch_up(&self) -> Result<u64> {
        let _serial = self.writes.lock().await;
        self.catch_up_locked().await
    }

    async fn catch_up_locked(&self) -> Result<u64> {
        loop {
            let batch = self.store.changes_since(self.revision(), 1_000).await?;
            if batch.is_empty() {
                return Ok(self.revision());
            }
            for (revision, changes) in batch {
                self.apply(revision, changes);
            }
        }
    }

    /// Follows the store's change log until `shutdown`: woken by its notifications where it
    /// has them, and polling as well, so that a lost notification only delays a change.
    pub async fn follow(self: Arc<Self>, shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut shutdown = shutdown;
        let mut notes = match self.store.notifications().await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "no change notifications; polling only");
                None
            }
        };
        let poll = if notes.is_some() { Duration::from_secs(2) } else { Duration::from_millis(250) };
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                note = async { match notes.as_mut() { Some(n) => n.recv().await, None => std::future::pending().await } } => {
                    if note.is_none() {
                        tracing::warn!("change notifications ended; polling only");
                        notes = None;
                    }
                }
                _ = tokio::time::sleep(poll) => {}
            }
            if let Err(e) = self.catch_up().await {
                tracing::warn!(error = %e, revision = self.revision(), "cannot read the change log; retrying");
            }
        }
    }

    /// Builds changes from the current state, commits them durably, then applies them.
    /// Nothing to change commits nothing and returns the current revision.
    async fn write(&self, build: impl FnOnce(&State, Timestamp) -> Result<Vec<Change>>) -> Result<u64> {
        let _serial = self.writes.lock().await;
        // Validate against everything committed so far, by any replica.
        self.catch_up_locked().await?;
        let now = self.now();
        let changes = {
            let state = self.state.read();
            build(&state, now)?
        };
        if changes.is_empty() {
            return Ok(self.revision());
        }
        let revision = self.store.commit(&changes, now.0).await?;
        if revision == self.revision() + 1 {
            self.apply(revision, changes);
        } else {
            // Another replica committed in between: take the log in order, ours included.
            self.catch_up_locked().await?;
        }
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
        self.applied.send_replace(revision);
        // Still under the write lock: the watcher sees revisions in order, each already applied.
        if (touched.all || !touched.devices.is_empty())
            && let Some(hook) = &*self.applied_hook.lock()
        {
            let _ = hook.send((revision, touched));
        }
    }
}
