//! WatchCompliance: a journal of decision changes that streams replay and follow.
//!
//! The [`Watcher`] keeps, per device, the decision it last saw and when that decision last
//! changed, and a schedule of the instants at which time alone changes a decision
//! (`valid_until`). It re-decides devices in two cases, and appends an event for each whose
//! (allow, state, reason codes) differ from what it had:
//! - every revision `Engine::apply` applies (local writes and changes followed from other
//!   replicas alike) arrives through a bounded channel with what it touched (when the watcher
//!   falls that far behind, it is told only that it missed some, and decides every device); the watcher
//!   re-decides those devices (all of them, and the deleted ones, for a global change):
//!   cause DATA_CHANGED;
//! - a ticker (each second, every 50 ms in the last second before a scheduled instant, and
//!   on [`Watcher::tick_now`]) re-decides the devices whose `valid_until` has come, reading
//!   the time from the engine's clock: cause TIME_PASSED.
//!
//! Decisions are made under the state's read lock, a bounded chunk of devices at a time, on
//! a blocking thread; the hot path is untouched and `apply` only sends on a channel.
//! Events are level-triggered: the watcher compares the decision now with the one it last
//! recorded, so a change undone before the watcher gets to it (typically within
//! milliseconds) produces no event, and two changes of one device in quick succession may
//! arrive as one. An event's revision is the revision its decision was made at, which is at
//! least the revision of the write that caused it.
//!
//! Events get consecutive cursors and go into a ring of the last `retain` events. A stream
//! reads the ring from its start cursor until it has caught up, then is registered, under
//! the same lock that appends, for live events pushed into its own bounded buffer: each
//! event once, in cursor order. A stream whose buffer fills is ended as too slow.
//! Cursors start at a random base per process, so a cursor from another process (a restart,
//! another replica) is, but for a negligible chance, outside this one's window. The position
//! every process shares is a revision: a stream resumes from one on any replica and across
//! restarts, for as far back as the store's change log reaches (see `resume`).

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};

use super::{Applied, Engine};
use crate::domain::access::{self, DeviceDecision};
use crate::domain::summary::{Summary, Tally};
use crate::domain::{Timestamp, Touched};
use crate::error::{Error, Result};
use journal::{Current, Journal, SharedReasons};
use schedule::Schedule;
use streams::{OpenStreams, StreamSlot};
use subscription::Phase;
pub use subscription::Subscription;

mod journal;
mod resume;
mod schedule;
mod streams;
mod subscription;
#[cfg(test)]
mod tests;

type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Applied revisions the watcher may be behind by before it stops being told what each touched
/// and decides every device again instead.
const APPLIED_BACKLOG: usize = 4096;
/// Devices decided per hold of the state's read lock.
const CHUNK: usize = 512;
/// Ring entries a catching-up stream scans per hold of the journal's lock.
const SCAN: usize = 4096;
/// The poll interval in the last second before a scheduled instant (the clock counts seconds).
const FINE_TICK: Duration = Duration::from_millis(50);

const RESYNC: &str = "resubscribe with after_cursor 0 and from_revision set to one less than the revision of the \
                      last event you processed, to receive first the current decision of every device that changed \
                      since";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchConfig {
    /// How many live events one stream may have waiting; when it has more, it is too slow.
    pub buffer: usize,
    /// The longest the ticker sleeps between looks at the schedule.
    pub tick: Duration,
    pub limits: WatchLimits,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig { buffer: 1024, tick: Duration::from_secs(1), limits: WatchLimits::default() }
    }
}

/// How many streams may be open at once (each holds a buffer and is pushed every event), and
/// how many of the latest events are kept for streams to resume from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchLimits {
    pub streams: usize,
    pub streams_per_credential: usize,
    pub retained_events: usize,
}

impl Default for WatchLimits {
    fn default() -> Self {
        WatchLimits { streams: 1000, streams_per_credential: 100, retained_events: 100_000 }
    }
}

/// Why an event was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    DataChanged,
    TimePassed,
    Snapshot,
}

/// One change of one device's decision (or, in a snapshot, its current decision).
#[derive(Debug, Clone, PartialEq)]
pub struct WatchEvent {
    /// The position in this process's journal (0 for a snapshot event that is not the last).
    pub cursor: u64,
    /// The revision the decision was made at; in a snapshot, the revision it last changed at.
    pub revision: u64,
    /// When the change happened (see the proto).
    pub at: Timestamp,
    pub cause: Cause,
    pub snapshot: bool,
    /// The primary user; for a deleted device, the last known one.
    pub user_id: String,
    pub decision: Arc<DeviceDecision>,
}

/// Where a subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Only events appended from now on.
    Now,
    /// Events with a cursor strictly greater than this one.
    AfterCursor(u64),
    /// A snapshot of every device whose decision last changed after this revision, then live:
    /// on any replica, across restarts, from the oldest revision the change log keeps.
    FromRevision(u64),
    /// A snapshot of every known device, then live.
    EveryDevice,
}

pub struct Watcher {
    engine: Arc<Engine>,
    config: WatchConfig,
    journal: Mutex<Journal>,
    /// Serializes evaluations, so that decisions are recorded in the order they were made.
    eval: Mutex<()>,
    /// True once every device's decision at start is recorded (or the watcher is closed).
    ready: watch::Sender<bool>,
    open: Mutex<OpenStreams>,
    /// The revision every recorded decision reflects: the last one whose changes were decided.
    settled: watch::Sender<u64>,
    /// What the change log tells of the time before the start: read on the first resume from
    /// a revision before it.
    history: tokio::sync::OnceCell<resume::History>,
}

impl Watcher {
    /// Hooks a new watcher to `engine` (no revision applied from now on is missed) and spawns
    /// its task, which records every device's current decision, then follows until `shutdown`.
    pub fn spawn(
        engine: Arc<Engine>,
        config: WatchConfig,
        shutdown: watch::Receiver<bool>,
    ) -> (Arc<Watcher>, tokio::task::JoinHandle<()>) {
        let applied = engine.watch_applied(APPLIED_BACKLOG);
        let watcher = Arc::new(Watcher::new(engine, config));
        let task = tokio::spawn(watcher.clone().run(applied, shutdown));
        (watcher, task)
    }

    fn new(engine: Arc<Engine>, config: WatchConfig) -> Watcher {
        let limits = WatchLimits { retained_events: config.limits.retained_events.max(1), ..config.limits };
        let config = WatchConfig { buffer: config.buffer.max(1), limits, ..config };
        let base = cursor_base();
        Watcher {
            engine,
            config,
            journal: Mutex::new(Journal {
                devices: Default::default(),
                schedule: Schedule::default(),
                ring: VecDeque::new(),
                first: base + 1,
                head: base,
                live: Vec::new(),
                closed: false,
                tally: Tally::default(),
                users: Default::default(),
                reasons: SharedReasons::default(),
                started: None,
            }),
            eval: Mutex::new(()),
            ready: watch::Sender::new(false),
            open: Mutex::new(OpenStreams::default()),
            settled: watch::Sender::new(0),
            history: tokio::sync::OnceCell::new(),
        }
    }

    pub fn config(&self) -> &WatchConfig {
        &self.config
    }

    /// The cursor of the newest event.
    pub fn head(&self) -> u64 {
        self.journal.lock().head
    }

    async fn run(self: Arc<Self>, mut applied: mpsc::Receiver<Applied>, mut shutdown: watch::Receiver<bool>) {
        let start = self.engine.revision();
        let stop = shutdown.clone();
        let floor = self.floor().await;
        self.blocking(move |w| w.record_all(&stop, floor)).await;
        if *shutdown.borrow() {
            self.close();
            return;
        }
        self.mark_start().await;
        self.settled.send_replace(start);
        self.ready.send_replace(true);
        tracing::info!(devices = self.journal.lock().devices.len(), "watching decisions");
        loop {
            let wait = self.next_wake();
            tokio::select! {
                _ = shutdown.changed() => break,
                batch = applied.recv() => {
                    let Some((mut revision, mut touched)) = batch else { break };
                    while let Ok((later, more)) = applied.try_recv() {
                        revision = later;
                        touched.merge(more);
                    }
                    if self.engine.take_missed() {
                        touched.all = true;
                        revision = self.engine.revision();
                    }
                    self.blocking(move |w| {
                        w.on_touched(touched);
                    })
                    .await;
                    self.settled.send_modify(|settled| *settled = (*settled).max(revision));
                }
                _ = tokio::time::sleep(wait) => {}
            }
            if self.due() {
                self.blocking(|w| {
                    w.tick_now();
                })
                .await;
            }
        }
        self.close();
    }

    /// Runs CPU-bound work off the async workers.
    async fn blocking(self: &Arc<Self>, f: impl FnOnce(&Watcher) + Send + 'static) {
        let me = self.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || f(&me)).await {
            tracing::error!(error = %e, "the watcher's evaluation failed");
        }
    }

    /// How long the ticker may sleep: until the next second of the engine's clock could
    /// make something due, as far as the schedule tells.
    fn next_wake(&self) -> Duration {
        let now = self.engine.now();
        match self.journal.lock().schedule.next() {
            Some(t) if t <= now => Duration::ZERO,
            // Due within the next second: the clock counts whole seconds, so look often.
            Some(t) if t.0 - now.0 == 1 => FINE_TICK.min(self.config.tick),
            _ => self.config.tick,
        }
    }

    fn due(&self) -> bool {
        let now = self.engine.now();
        self.journal.lock().schedule.next().is_some_and(|t| t <= now)
    }

    /// Records every device's current decision, emitting nothing; gives up when `stop` turns
    /// true (a million devices take seconds, which a shutdown should not wait for). A decision
    /// that time alone has changed since `floor` (the oldest revision kept) is not `recalled`:
    /// it may have changed after any revision before the start (see `resume`).
    fn record_all(&self, stop: &watch::Receiver<bool>, floor: Option<Timestamp>) {
        let _eval = self.eval.lock();
        // The ids in one buffer, not a million strings: memory the pass gives back at once.
        let ((text, ends), _) = self.engine.read(|state, _| {
            let (mut text, mut ends) = (String::new(), Vec::with_capacity(state.devices().size_hint().0));
            for d in state.devices() {
                text.push_str(&d.id);
                ends.push(text.len());
            }
            (text, ends)
        });
        let mut start = 0;
        for chunk in ends.chunks(CHUNK) {
            if *stop.borrow() {
                return;
            }
            let chunk: Vec<String> =
                chunk.iter().map(|&end| text[std::mem::replace(&mut start, end)..end].to_owned()).collect();
            let ((decisions, now), revision) = self.engine.read(|state, now| {
                let both = chunk
                    .iter()
                    .map(|id| (access::decide(state, id, now), floor.map(|t| access::decide(state, id, t))));
                (both.collect::<Vec<_>>(), now)
            });
            let mut inner = self.journal.lock();
            for (mut d, then) in decisions {
                if d.primary_user_id.is_none() {
                    continue;
                }
                inner.reasons.share(&mut d.reasons, None);
                let mut current = Current::new(d, None, revision, now, &mut inner.users);
                current.recalled = then.is_some_and(|then| journal::same_summary(&current, &then));
                inner.set_current(current);
            }
        }
    }

    /// Re-decides what a batch of applied revisions touched; returns the events appended.
    fn on_touched(&self, touched: Touched) -> usize {
        let _eval = self.eval.lock();
        let ids: Vec<String> = if touched.all {
            let (mut ids, _) =
                self.engine.read(|state, _| state.devices().map(|d| d.id.to_string()).collect::<Vec<_>>());
            // Devices that disappeared are re-decided too (they become DEVICE_UNKNOWN).
            ids.extend(self.journal.lock().devices.iter().map(|c| c.id.to_string()));
            ids
        } else {
            touched.devices.into_iter().collect()
        };
        let mut ids = ids;
        ids.sort_unstable();
        ids.dedup();
        self.evaluate(&ids, Cause::DataChanged)
    }

    /// Re-decides, now, every device whose decision time alone has changed by the engine's
    /// clock; returns the events appended. The ticker calls it; a test may call it after
    /// advancing a manual clock.
    pub fn tick_now(&self) -> usize {
        let _eval = self.eval.lock();
        let now = self.engine.now();
        let mut due: Vec<(Timestamp, String)> = {
            let inner = self.journal.lock();
            inner.schedule.due(now).into_iter().map(|(t, p)| (t, inner.devices.at(p).id.to_string())).collect()
        };
        // In instant then id order (positions follow the order devices were first seen).
        due.sort_unstable();
        let ids: Vec<String> = due.into_iter().map(|(_, id)| id).collect();
        self.evaluate(&ids, Cause::TimePassed)
    }

    fn decide(&self, ids: &[String]) -> ((Vec<DeviceDecision>, Timestamp), u64) {
        self.engine.read(|state, now| (ids.iter().map(|id| access::decide(state, id, now)).collect(), now))
    }

    /// Decides `ids` a chunk at a time and records the results. Call with `eval` held.
    fn evaluate(&self, ids: &[String], cause: Cause) -> usize {
        let mut appended = 0;
        for chunk in ids.chunks(CHUNK) {
            let ((decisions, now), revision) = self.decide(chunk);
            let mut inner = self.journal.lock();
            for d in decisions {
                appended += usize::from(inner.record(d, revision, now, cause, &self.config));
            }
        }
        appended
    }

    /// Every device's current decision, counted (GetComplianceSummary), and the revision they
    /// all reflect. Time-driven changes are counted within a tick (a second) of happening.
    pub fn summary(&self) -> (Summary, u64) {
        let settled = *self.settled.borrow();
        (self.journal.lock().tally.summary(), settled)
    }

    /// Waits until the recorded decisions reflect `revision`, or fails once `within` has passed.
    pub async fn wait_settled(&self, revision: u64, within: Duration) -> Result<()> {
        let mut settled = self.settled.subscribe();
        match tokio::time::timeout(within, settled.wait_for(|r| *r >= revision)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(Error::DeadlineExceeded(format!(
                "the decisions are counted as of revision {}; revision {revision} did not arrive within {within:?}",
                *self.settled.borrow()
            ))),
        }
    }

    /// How many WatchCompliance streams are open.
    pub fn open_streams(&self) -> usize {
        self.open.lock().total
    }

    /// Starts a subscription for `credential` (the caller's id; `""` when authentication is
    /// off). Waits until the decisions at start are recorded.
    pub async fn subscribe(
        self: &Arc<Self>,
        credential: &str,
        start: Start,
        device_ids: Vec<String>,
    ) -> Result<Subscription> {
        let slot = self.open_stream(credential)?;
        let _ = self.ready.subscribe().wait_for(|ready| *ready).await;
        let resume_at = match start {
            Start::FromRevision(revision) => self.resume_point(revision).await?,
            _ => Timestamp(i64::MAX),
        };
        let filter = (!device_ids.is_empty()).then(|| Arc::new(device_ids.into_iter().collect::<HashSet<_>>()));
        self.engine.check_available()?;
        let inner = self.journal.lock();
        if inner.closed {
            return Err(Error::Unavailable("the server is shutting down; resubscribe to another server".into()));
        }
        let (phase, position) = match start {
            Start::Now => (Phase::CatchUp { after: inner.head }, Some(inner.head)),
            Start::AfterCursor(cursor) => {
                if cursor > inner.head || cursor < inner.first - 1 {
                    return Err(Error::OutOfRange(format!(
                        "after_cursor {cursor} is not in this server's window of resumable cursors ({}..={}): {}; \
                         {RESYNC}",
                        inner.first - 1,
                        inner.head,
                        if cursor > inner.head {
                            "it was issued by another server process (cursors survive neither a restart nor a move \
                             to another replica)"
                        } else {
                            "it is older than the events this server retains, or was issued by another server \
                             process"
                        }
                    )));
                }
                (Phase::CatchUp { after: cursor }, Some(cursor))
            }
            Start::FromRevision(_) | Start::EveryDevice => {
                let changed = |c: &&Current| match start {
                    // A change observed here after the resume point's time counts too: another
                    // replica may have sent it at a later revision than this one saw it at.
                    Start::FromRevision(revision) => c.revision > revision || (!c.recalled && c.at > resume_at),
                    _ => c.known,
                };
                let mut items: Vec<&Current> = match &filter {
                    Some(ids) => ids.iter().filter_map(|id| inner.devices.get(id)).filter(changed).collect(),
                    None => inner.devices.iter().filter(changed).collect(),
                };
                items.sort_unstable_by(|a, b| (a.revision, &a.id).cmp(&(b.revision, &b.id)));
                let items: Vec<Arc<WatchEvent>> = items.into_iter().map(|c| Arc::new(c.event(&inner.users))).collect();
                if items.is_empty() {
                    (Phase::CatchUp { after: inner.head }, Some(inner.head))
                } else {
                    (Phase::Snapshot { items: items.into_iter(), head: inner.head }, None)
                }
            }
        };
        drop(inner);
        let snapshot = matches!(start, Start::FromRevision(_) | Start::EveryDevice);
        Ok(Subscription::new(slot, filter, phase, position, snapshot))
    }

    /// Ends every stream (cleanly) and refuses new ones: the server is shutting down.
    pub fn close(&self) {
        let mut inner = self.journal.lock();
        inner.closed = true;
        inner.live.clear();
        drop(inner);
        self.ready.send_replace(true);
    }
}

/// A random start for this process's cursors, in [2^51, 2^52): far from any other process's
/// (a collision needs two processes within a few billion events of each other out of 2^51),
/// and every cursor stays below 2^53, exact in JSON numbers.
fn cursor_base() -> u64 {
    // RandomState's keys are drawn from the OS's randomness once per process.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    (1 << 51) | (h.finish() & ((1 << 51) - 1))
}
