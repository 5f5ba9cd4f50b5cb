//! The engine: the in-memory state, the store behind it and the decision cache in front of
//! it. Reads answer from memory; writes validate, commit durably, then apply and invalidate.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::RwLock;

use crate::audit;
use crate::auth::{Credentials, CredentialsHandle};
use crate::cache::DecisionCache;
use crate::clock::Clock;
use crate::domain::access::{self, AccessDecision, DeviceDecision};
use crate::domain::preview::{self, PolicyPreview};
use crate::domain::{Change, State, Timestamp, Touched, grace};
use crate::error::{Error, Result};
use crate::store::{Commit, Store};
use crate::telemetry::metrics::StoreMetrics;

mod admin;
mod compaction;
mod inventory;
pub mod watch;

pub use admin::{Draft, GroupTargets, check_user_groups};
pub use compaction::Retention;
pub use inventory::{ItemOutcome, ReportOutcome};
pub use watch::{WatchConfig, WatchLimits, Watcher};

/// What `apply` tells a watcher: the revision just applied and the decisions it can have changed.
pub type Applied = (u64, Touched);

/// How long a replica may serve without confirming the store's latest revision, by default.
pub const DEFAULT_MAX_STALENESS: Duration = Duration::from_secs(30);

/// How often a write that lost the race to other replicas is validated and tried again.
const WRITE_ATTEMPTS: u32 = 5;
/// How often the follower reads the change log when the store notifies it of commits, and
/// when it does not (both at most a quarter of the allowed staleness).
const POLL_NOTIFIED: Duration = Duration::from_secs(2);
const POLL_UNNOTIFIED: Duration = Duration::from_millis(250);

pub struct Engine {
    store: Arc<dyn Store>,
    state: RwLock<State>,
    /// The revision `state` reflects (read on the hot path).
    revision: AtomicU64,
    /// The same, for readers waiting for a revision to arrive.
    applied: tokio::sync::watch::Sender<u64>,
    cache: DecisionCache,
    /// Commit latencies and cache evictions, for the metrics.
    metrics: StoreMetrics,
    /// Serializes writes so that commit order is apply order.
    writes: tokio::sync::Mutex<()>,
    clock: Arc<dyn Clock>,
    credentials: CredentialsHandle,
    /// Where `apply` sends what it applied, when a watcher listens (see [`Engine::watch_applied`]).
    applied_hook: parking_lot::Mutex<Option<tokio::sync::mpsc::Sender<Applied>>>,
    /// Set when the watcher's channel was full and what an applied revision touched was not
    /// sent: the watcher then decides every device again.
    applied_missed: AtomicBool,
    /// How long this replica may go without confirming the store's head before it denies.
    max_staleness: Duration,
    /// When the store's head was last confirmed, as nanoseconds since `started`.
    confirmed: AtomicU64,
    started: Instant,
    /// Set once the head has gone unconfirmed for longer than `max_staleness` (read on the
    /// hot path); `available` carries the same for health and watchers.
    stale: AtomicBool,
    available: tokio::sync::watch::Sender<bool>,
    /// Held while `stale` changes, so that a confirmation and the watchdog cannot interleave.
    transition: parking_lot::Mutex<()>,
    /// Set when the server shuts down: reads waiting for a revision stop waiting.
    shutting_down: tokio::sync::watch::Sender<bool>,
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
        let metrics = StoreMetrics::default();
        Ok(Engine {
            store,
            state: RwLock::new(snapshot.state),
            revision: AtomicU64::new(snapshot.revision),
            applied: tokio::sync::watch::Sender::new(snapshot.revision),
            cache: DecisionCache::new(cache_capacity, metrics.cache_evictions.clone()),
            metrics,
            writes: tokio::sync::Mutex::new(()),
            clock,
            credentials: CredentialsHandle::new(credentials),
            applied_hook: parking_lot::Mutex::new(None),
            applied_missed: AtomicBool::new(false),
            max_staleness: DEFAULT_MAX_STALENESS,
            confirmed: AtomicU64::new(0),
            started: Instant::now(),
            stale: AtomicBool::new(false),
            available: tokio::sync::watch::Sender::new(true),
            transition: parking_lot::Mutex::new(()),
            shutting_down: tokio::sync::watch::Sender::new(false),
        })
    }

    /// Sets how long this replica may go without confirming the store's latest revision
    /// before it turns NOT_SERVING and denies every access (`--max-staleness`).
    pub fn with_max_staleness(mut self, max_staleness: Duration) -> Self {
        self.max_staleness = max_staleness.max(Duration::from_millis(100));
        self
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    pub fn revision(&self) -> u64 {
        self.revision.load(Ordering::Acquire)
    }

    /// The credentials in force now (they may be reloaded while serving).
    pub fn credentials(&self) -> Arc<Credentials> {
        self.credentials.current()
    }

    /// Where the credentials in force are kept, for the server's authorization and reloads.
    pub fn credentials_handle(&self) -> &CredentialsHandle {
        &self.credentials
    }

    pub fn metrics(&self) -> &StoreMetrics {
        &self.metrics
    }

    pub fn cached_decisions(&self) -> u64 {
        self.cache.entry_count()
    }

    /// The hot path: memory and cache only. The decision is the device's, for its primary
    /// user; apply the caller with `access::for_user` or `access::other_user_reason`.
    pub fn check_access(&self, device_id: &str) -> (Arc<DeviceDecision>, u64) {
        let (decision, revision, _) = self.decide(device_id);
        (decision, revision)
    }

    /// As [`Engine::check_access`], and whether the cache answered.
    pub fn decide(&self, device_id: &str) -> (Arc<DeviceDecision>, u64, bool) {
        // A write invalidates before it publishes its revision, so reading the revision
        // first makes a hit answer "as of that revision" truthfully, without the state lock.
        let revision = self.revision();
        if self.stale.load(Ordering::Relaxed) {
            return (Arc::new(access::store_unavailable(device_id, self.unavailable_message())), revision, false);
        }
        let now = self.now();
        if let Some(hit) = self.cache.get(device_id, now) {
            return (hit, revision, true);
        }
        // Held across the cache insert so that no write can slip between evaluation and insert.
        let state = self.state.read();
        let decision = self.cache.get_or_compute(device_id, now, || access::decide(&state, device_id, now));
        (decision, self.revision(), false)
    }

    /// The same decision, evaluated afresh without the cache (for tests and comparisons).
    pub fn check_access_uncached(&self, user_id: &str, device_id: &str) -> AccessDecision {
        let now = self.now();
        let state = self.state.read();
        access::for_user(&access::decide(&state, device_id, now), user_id)
    }

    /// From now on, every applied revision that can change a decision is sent, in order, to
    /// the returned receiver (replacing any earlier one), which holds at most `capacity`. For
    /// the watcher; sending never blocks: what does not fit is noted (see
    /// [`Engine::take_missed`]), not queued without bound.
    pub fn watch_applied(&self, capacity: usize) -> tokio::sync::mpsc::Receiver<Applied> {
        let (tx, rx) = tokio::sync::mpsc::channel(capacity.max(1));
        *self.applied_hook.lock() = Some(tx);
        rx
    }

    /// Whether applied revisions were left out of the watcher's channel since the last call.
    pub fn take_missed(&self) -> bool {
        self.applied_missed.swap(false, Ordering::AcqRel)
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
        let mut shutting_down = self.shutting_down.subscribe();
        let arrived = tokio::select! {
            arrived = tokio::time::timeout(within, applied.wait_for(|r| *r >= revision)) => arrived,
            _ = shutting_down.wait_for(|stopping| *stopping) => {
                return Err(Error::Unavailable(format!(
                    "this server is shutting down at revision {}; read revision {revision} from another replica",
                    self.revision()
                )));
            }
        };
        match arrived {
            Ok(Ok(_)) => Ok(()),
            _ => Err(Error::DeadlineExceeded(format!(
                "this replica has applied revision {}; revision {revision} did not arrive within {within:?}",
                self.revision()
            ))),
        }
    }

    /// The server is shutting down: reads waiting for a revision are answered at once.
    pub fn shut_down(&self) {
        self.shutting_down.send_replace(true);
    }

    /// Applies every change other writers committed since this replica's revision.
    pub async fn catch_up(&self) -> Result<u64> {
        let _serial = self.writes.lock().await;
        self.catch_up_locked().await
    }

    async fn catch_up_locked(&self) -> Result<u64> {
        // Bounded, so that a store that stops answering fails the caller instead of holding it.
        let limit = self.max_staleness.min(Duration::from_secs(10));
        loop {
            let batch = match tokio::time::timeout(limit, self.store.changes_since(self.revision(), 1_000))
                .await
                .map_err(|_| Error::Storage(format!("the change log did not answer within {limit:?}")))?
            {
                Err(Error::LogCompacted { oldest }) => {
                    tracing::warn!(
                        revision = self.revision(),
                        oldest,
                        "this replica fell behind what the change log keeps: reloading the whole state"
                    );
                    self.reload(limit).await?;
                    continue;
                }
                batch => batch?,
            };
            if batch.is_empty() {
                self.confirm();
                return Ok(self.revision());
            }
            for (revision, changes) in batch {
                self.apply(revision, changes);
            }
        }
    }

    /// The store's head is confirmed as of now.
    fn confirm(&self) {
        let _transition = self.transition.lock();
        self.confirmed.store(self.started.elapsed().as_nanos() as u64, Ordering::Release);
        if self.stale.swap(false, Ordering::AcqRel) {
            tracing::info!(revision = self.revision(), "the store is reachable again: serving");
            self.available.send_replace(true);
        }
    }

    /// How long since the store's head was last confirmed.
    /// How long since this replica last confirmed it holds the store's latest revision.
    pub fn unconfirmed_for(&self) -> Duration {
        let confirmed = Duration::from_nanos(self.confirmed.load(Ordering::Acquire));
        self.started.elapsed().saturating_sub(confirmed)
    }

    fn unavailable_message(&self) -> String {
        format!(
            "this replica has not reached its store for {} s (it may serve without for at most {} s): it denies \
             until the store is reachable; ask another replica",
            self.unconfirmed_for().as_secs(),
            self.max_staleness.as_secs_f64()
        )
    }

    /// `true` while this replica can vouch for its data; `false` once it has gone without
    /// confirming the store's head for longer than its maximum staleness.
    pub fn available(&self) -> tokio::sync::watch::Receiver<bool> {
        self.available.subscribe()
    }

    /// Refuses a read this replica cannot vouch for.
    pub fn check_available(&self) -> Result<()> {
        if self.stale.load(Ordering::Relaxed) {
            return Err(Error::Unavailable(self.unavailable_message()));
        }
        Ok(())
    }

    /// Follows the store's change log until `shutdown`: woken by its notifications where it
    /// has them, and polling as well, so that a lost notification only delays a change.
    /// Meanwhile it marks the replica stale once the head has gone unconfirmed for longer
    /// than the maximum staleness, and removes a terminated connector's Macs when their
    /// removal date comes.
    pub async fn follow(self: Arc<Self>, shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut shutdown = shutdown;
        let watchdog = tokio::spawn(self.clone().watch_staleness(shutdown.clone()));
        let mut notes = match self.store.notifications().await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "no change notifications; polling only");
                None
            }
        };
        let quarter = self.max_staleness / 4;
        let poll = if notes.is_some() { POLL_NOTIFIED.min(quarter) } else { POLL_UNNOTIFIED.min(quarter) };
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
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
                continue;
            }
            if let Err(e) = self.remove_terminated_devices().await {
                tracing::warn!(error = %e, "cannot remove the terminated connector's Macs; retrying");
            }
        }
        let _ = watchdog.await;
    }

    /// Marks the replica stale (and available again is up to `confirm`) until `shutdown`.
    async fn watch_staleness(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let tick = (self.max_staleness / 10).clamp(Duration::from_millis(10), Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(tick) => {}
            }
            let _transition = self.transition.lock();
            let unconfirmed = self.unconfirmed_for();
            if unconfirmed > self.max_staleness && !self.stale.swap(true, Ordering::AcqRel) {
                tracing::error!(
                    unconfirmed = ?unconfirmed,
                    max_staleness = ?self.max_staleness,
                    revision = self.revision(),
                    "the store has not been reachable for longer than the maximum staleness: NOT_SERVING, every access denied"
                );
                self.available.send_replace(false);
            }
        }
    }

    /// An administrative write: as [`Engine::write`], and recorded in the audit trail.
    async fn write_admin(&self, build: impl FnMut(&State, Timestamp) -> Result<Vec<Change>>) -> Result<u64> {
        self.write_as(true, build).await
    }

    /// Builds changes from the current state, commits them durably, then applies them.
    /// Nothing to change commits nothing and returns the current revision. The changes are
    /// validated against the latest revision and committed only if it is still the latest;
    /// when another replica committed in between, they are validated again.
    async fn write(&self, build: impl FnMut(&State, Timestamp) -> Result<Vec<Change>>) -> Result<u64> {
        self.write_as(false, build).await
    }

    async fn write_as(
        &self,
        audited: bool,
        mut build: impl FnMut(&State, Timestamp) -> Result<Vec<Change>>,
    ) -> Result<u64> {
        let _serial = self.writes.lock().await;
        for attempt in 1..=WRITE_ATTEMPTS {
            // Validate against everything committed so far, by any replica.
            self.catch_up_locked().await?;
            let now = self.now();
            let expected = self.revision();
            let (changes, described) = {
                let state = self.state.read();
                let changes = with_bookkeeping(&state, now, build(&state, now)?);
                let described = audited.then(|| audit::describe(&state, &changes));
                (changes, described)
            };
            if changes.is_empty() {
                return Ok(expected);
            }
            let committing = Instant::now();
            let committed = self.store.commit(expected, &changes, now.0).await;
            self.metrics.commit_seconds.observe(committing.elapsed().as_secs_f64());
            match committed? {
                // Nothing was committed in between: our changes are the next revision.
                Commit::Done(revision) => {
                    self.apply(revision, changes);
                    if let Some(described) = described {
                        audit::admin_change(revision, &described);
                    }
                    return Ok(revision);
                }
                Commit::Conflict => {
                    tracing::debug!(attempt, expected, "another replica committed first; validating again")
                }
            }
        }
        Err(Error::Aborted(format!(
            "other replicas kept committing while this write was being validated ({WRITE_ATTEMPTS} attempts): \
             nothing was written; retry it"
        )))
    }

    /// PreviewPolicy: every Mac decided as it is and as it would be once `draft` is saved, at
    /// this replica's revision, writing nothing. The draft is validated and turned into changes
    /// as its write would do it, grace bookkeeping included; `render` gets the answer.
    /// `examples`: how many Macs of each kind to list.
    pub fn preview<T>(
        &self,
        draft: &Draft,
        examples: usize,
        render: impl FnOnce(&PolicyPreview<'_>) -> T,
    ) -> Result<(T, u64)> {
        let now = self.now();
        // Only the copy is made under the lock; deciding every Mac twice is done outside it.
        let (mut copy, changes, revision) = {
            let state = self.state.read();
            let changes = with_bookkeeping(&state, now, draft.changes(&state, now)?);
            (state.clone(), changes, self.revision())
        };
        let preview = preview::preview(&mut copy, changes, now, examples);
        Ok((render(&preview), revision))
    }

    /// Applies committed changes and drops the cached decisions they touch, atomically for readers.
    fn apply(&self, revision: u64, changes: Vec<Change>) {
        let mut state = self.state.write();
        let mut touched = Touched::default();
        for c in changes {
            touched.merge(state.apply(c));
        }
        self.cache.invalidate(&touched);
        self.published(revision, touched);
    }

    /// `revision` is applied. Called under the state's write lock: the watcher sees revisions
    /// in order, each already applied (those that touch no decision too, so that it knows its
    /// decisions reflect them).
    fn published(&self, revision: u64, touched: Touched) {
        self.revision.store(revision, Ordering::Release);
        self.applied.send_replace(revision);
        if let Some(hook) = &*self.applied_hook.lock()
            && let Err(tokio::sync::mpsc::error::TrySendError::Full(_)) = hook.try_send((revision, touched))
        {
            self.applied_missed.store(true, Ordering::Release);
        }
    }
}

/// A write's changes, and the grace bookkeeping they imply (see `domain::grace`).
fn with_bookkeeping(state: &State, now: Timestamp, mut changes: Vec<Change>) -> Vec<Change> {
    let bookkeeping = grace::derive(state, &changes, now);
    changes.extend(bookkeeping);
    changes
}
