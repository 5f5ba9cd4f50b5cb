//! WatchCompliance: a journal of decision changes that streams replay and follow.
//!
//! The [`Watcher`] keeps, per device, the decision it last saw and when that decision last
//! changed, and a schedule of the instants at which time alone changes a decision
//! (`valid_until`). It re-decides devices in two cases, and appends an event for each whose
//! (allow, state, reason codes) differ from what it had:
//! - every revision `Engine::apply` applies (local writes and changes followed from other
//!   replicas alike) arrives through an unbounded channel with what it touched; the watcher
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
//! another replica) is, but for a negligible chance, outside this one's window.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};

use super::{Applied, Engine};
use crate::domain::access::{self, DeviceDecision};
use crate::domain::{Timestamp, Touched};
use crate::error::{Error, Result};

type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

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
    /// How many of the latest events are kept for streams to resume from.
    pub retain: usize,
    /// How many live events one stream may have waiting; when it has more, it is too slow.
    pub buffer: usize,
    /// The longest the ticker sleeps between looks at the schedule.
    pub tick: Duration,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig { retain: 100_000, buffer: 1024, tick: Duration::from_secs(1) }
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
    /// A snapshot of every device whose decision last changed after this revision, then live.
    FromRevision(u64),
}

/// A live stream's slot: its filter and its bounded buffer.
struct Live {
    filter: Option<Arc<HashSet<String>>>,
    tx: mpsc::Sender<Arc<WatchEvent>>,
    overflowed: Arc<AtomicBool>,
}

struct Inner {
    /// Per device, its current decision and when (revision, instant, cursor) it last changed.
    /// A deleted device stays as a DEVICE_UNKNOWN decision, so snapshots can say it is gone.
    devices: HashMap<String, Arc<WatchEvent>>,
    /// The instants at which time alone changes a device's decision.
    schedule: BTreeMap<Timestamp, BTreeSet<String>>,
    /// The last `retain` events, in cursor order.
    ring: VecDeque<Arc<WatchEvent>>,
    /// The cursor of `ring[0]`; `head + 1` when the ring is empty.
    first: u64,
    /// The cursor of the last event appended (the base when there is none).
    head: u64,
    live: Vec<Live>,
    closed: bool,
}

pub struct Watcher {
    engine: Arc<Engine>,
    config: WatchConfig,
    inner: Mutex<Inner>,
    /// Serializes evaluations, so that decisions are recorded in the order they were made.
    eval: Mutex<()>,
    /// True once every device's decision at start is recorded (or the watcher is closed).
    ready: watch::Sender<bool>,
}

impl Watcher {
    /// Hooks a new watcher to `engine` (no revision applied from now on is missed) and spawns
    /// its task, which records every device's current decision, then follows until `shutdown`.
    pub fn spawn(
        engine: Arc<Engine>,
        config: WatchConfig,
        shutdown: watch::Receiver<bool>,
    ) -> (Arc<Watcher>, tokio::task::JoinHandle<()>) {
        let applied = engine.watch_applied();
        let watcher = Arc::new(Watcher::new(engine, config));
        let task = tokio::spawn(watcher.clone().run(applied, shutdown));
        (watcher, task)
    }

    fn new(engine: Arc<Engine>, config: WatchConfig) -> Watcher {
        let config = WatchConfig { retain: config.retain.max(1), buffer: config.buffer.max(1), ..config };
        let base = cursor_base();
        Watcher {
            engine,
            config,
            inner: Mutex::new(Inner {
                devices: HashMap::default(),
                schedule: BTreeMap::new(),
                ring: VecDeque::new(),
                first: base + 1,
                head: base,
                live: Vec::new(),
                closed: false,
            }),
            eval: Mutex::new(()),
            ready: watch::Sender::new(false),
        }
    }

    pub fn config(&self) -> &WatchConfig {
        &self.config
    }

    /// The cursor of the newest event.
    pub fn head(&self) -> u64 {
        self.inner.lock().head
    }

    async fn run(self: Arc<Self>, mut applied: mpsc::UnboundedReceiver<Applied>, mut shutdown: watch::Receiver<bool>) {
        self.blocking(|w| w.record_all()).await;
        self.ready.send_replace(true);
        tracing::info!(devices = self.inner.lock().devices.len(), "watching decisions");
        loop {
            let wait = self.next_wake();
            tokio::select! {
                _ = shutdown.changed() => break,
                batch = applied.recv() => {
                    let Some((_, mut touched)) = batch else { break };
                    while let Ok((_, more)) = applied.try_recv() {
                        touched.merge(more);
                    }
                    self.blocking(move |w| {
                        w.on_touched(touched);
                    })
                    .await;
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
        match self.inner.lock().schedule.first_key_value() {
            Some((t, _)) if *t <= now => Duration::ZERO,
            // Due within the next second: the clock counts whole seconds, so look often.
            Some((t, _)) if t.0 - now.0 == 1 => FINE_TICK.min(self.config.tick),
            _ => self.config.tick,
        }
    }

    fn due(&self) -> bool {
        let now = self.engine.now();
        self.inner.lock().schedule.first_key_value().is_some_and(|(t, _)| *t <= now)
    }

    /// Records every device's current decision, emitting nothing.
    fn record_all(&self) {
        let _eval = self.eval.lock();
        let (ids, _) = self.engine.read(|state, _| state.devices().map(|d| d.id.clone()).collect::<Vec<_>>());
        for chunk in ids.chunks(CHUNK) {
            let ((decisions, now), revision) = self.decide(chunk);
            let mut inner = self.inner.lock();
            for d in decisions {
                let Some(user_id) = d.primary_user_id.clone() else { continue };
                if let Some(t) = d.valid_until {
                    inner.schedule.entry(t).or_default().insert(d.device_id.clone());
                }
                let current = WatchEvent {
                    cursor: 0,
                    revision,
                    at: now,
                    cause: Cause::Snapshot,
                    snapshot: false,
                    user_id,
                    decision: Arc::new(d),
                };
                inner.devices.insert(current.decision.device_id.clone(), Arc::new(current));
            }
        }
    }

    /// Re-decides what a batch of applied revisions touched; returns the events appended.
    fn on_touched(&self, touched: Touched) -> usize {
        let _eval = self.eval.lock();
        let ids: Vec<String> = if touched.all {
            let (mut ids, _) = self.engine.read(|state, _| state.devices().map(|d| d.id.clone()).collect::<Vec<_>>());
            // Devices that disappeared are re-decided too (they become DEVICE_UNKNOWN).
            ids.extend(self.inner.lock().devices.keys().cloned());
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
        let ids: Vec<String> =
            self.inner.lock().schedule.range(..=now).flat_map(|(_, ids)| ids.iter().cloned()).collect();
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
            let mut inner = self.inner.lock();
            for d in decisions {
                appended += usize::from(inner.record(d, revision, now, cause, &self.config));
            }
        }
        appended
    }

    /// Starts a subscription. Waits until the decisions at start are recorded.
    pub async fn subscribe(self: &Arc<Self>, start: Start, device_ids: Vec<String>) -> Result<Subscription> {
        let _ = self.ready.subscribe().wait_for(|ready| *ready).await;
        let filter = (!device_ids.is_empty()).then(|| Arc::new(device_ids.into_iter().collect::<HashSet<_>>()));
        self.engine.check_available()?;
        let inner = self.inner.lock();
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
            Start::FromRevision(revision) => {
                let changed = |e: &&Arc<WatchEvent>| e.revision > revision;
                let mut items: Vec<Arc<WatchEvent>> = match &filter {
                    Some(ids) => ids.iter().filter_map(|id| inner.devices.get(id)).filter(changed).cloned().collect(),
                    None => inner.devices.values().filter(changed).cloned().collect(),
                };
                items.sort_unstable_by(|a, b| {
                    (a.revision, &a.decision.device_id).cmp(&(b.revision, &b.decision.device_id))
                });
                if items.is_empty() {
                    (Phase::CatchUp { after: inner.head }, Some(inner.head))
                } else {
                    (Phase::Snapshot { items: items.into_iter(), head: inner.head }, None)
                }
            }
        };
        drop(inner);
        Ok(Subscription {
            watcher: self.clone(),
            available: self.engine.available(),
            filter,
            phase,
            pending: VecDeque::new(),
            position,
            started_from_revision: matches!(start, Start::FromRevision(_)),
        })
    }

    /// Ends every stream (cleanly) and refuses new ones: the server is shutting down.
    pub fn close(&self) {
        let mut inner = self.inner.lock();
        inner.closed = true;
        inner.live.clear();
        drop(inner);
        self.ready.send_replace(true);
    }

    /// The next events after `after` for a catching-up stream, or its registration for live
    /// events once it has caught up: under the lock that appends, so none is missed or repeated.
    fn fetch(&self, after: u64, filter: &Option<Arc<HashSet<String>>>, out: &mut VecDeque<Arc<WatchEvent>>) -> Fetch {
        let mut inner = self.inner.lock();
        if inner.closed {
            return Fetch::Closed;
        }
        if after < inner.first - 1 {
            return Fetch::Evicted { oldest: inner.first };
        }
        let start = (after + 1 - inner.first) as usize;
        if start >= inner.ring.len() {
            let (tx, rx) = mpsc::channel(self.config.buffer);
            let overflowed = Arc::new(AtomicBool::new(false));
            inner.live.push(Live { filter: filter.clone(), tx, overflowed: overflowed.clone() });
            return Fetch::Live { rx, overflowed };
        }
        let end = (start + SCAN).min(inner.ring.len());
        out.extend(inner.ring.range(start..end).filter(|e| matches(filter, e)).cloned());
        Fetch::Scanned { through: inner.first + end as u64 - 1 }
    }
}

impl Inner {
    /// Records a fresh decision; appends an event when (allow, state, reason codes) changed.
    fn record(&mut self, d: DeviceDecision, revision: u64, now: Timestamp, cause: Cause, config: &WatchConfig) -> bool {
        let prev = self.devices.get(&d.device_id).cloned();
        let prev_until = prev.as_ref().and_then(|p| p.decision.valid_until);
        if let Some(t) = prev_until
            && let Some(ids) = self.schedule.get_mut(&t)
        {
            ids.remove(&d.device_id);
            if ids.is_empty() {
                self.schedule.remove(&t);
            }
        }
        if let Some(t) = d.valid_until {
            self.schedule.entry(t).or_default().insert(d.device_id.clone());
        }
        let changed = match &prev {
            Some(p) => !same_summary(&p.decision, &d),
            // Never seen (or unknown all along): a change unless it is still unknown.
            None => d.primary_user_id.is_some(),
        };
        if changed {
            let user_id = d.primary_user_id.clone().or_else(|| prev.as_ref().map(|p| p.user_id.clone()));
            let at = match cause {
                Cause::TimePassed => prev_until.map_or(now, |t| t.min(now)),
                _ => now,
            };
            let event = Arc::new(WatchEvent {
                cursor: self.head + 1,
                revision,
                at,
                cause,
                snapshot: false,
                user_id: user_id.unwrap_or_default(),
                decision: Arc::new(d),
            });
            self.append(event.clone(), config.retain);
            self.devices.insert(event.decision.device_id.clone(), event);
        } else if let Some(p) = prev
            && *p.decision != d
        {
            // The same decision in other words or with another valid_until: keep it current
            // for snapshots, without an event.
            let current = WatchEvent { decision: Arc::new(d), ..(*p).clone() };
            self.devices.insert(current.decision.device_id.clone(), Arc::new(current));
        }
        changed
    }

    fn append(&mut self, event: Arc<WatchEvent>, retain: usize) {
        self.head = event.cursor;
        self.live.retain(|live| {
            if !matches(&live.filter, &event) {
                return true;
            }
            match live.tx.try_send(event.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    live.overflowed.store(true, Ordering::Release);
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
        self.ring.push_back(event);
        while self.ring.len() > retain {
            self.ring.pop_front();
        }
        self.first = self.head + 1 - self.ring.len() as u64;
    }
}

fn same_summary(a: &DeviceDecision, b: &DeviceDecision) -> bool {
    a.allow == b.allow && a.state == b.state && a.reasons.iter().map(|r| r.code).eq(b.reasons.iter().map(|r| r.code))
}

fn matches(filter: &Option<Arc<HashSet<String>>>, event: &WatchEvent) -> bool {
    filter.as_ref().is_none_or(|ids| ids.contains(&event.decision.device_id))
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

enum Fetch {
    Scanned { through: u64 },
    Live { rx: mpsc::Receiver<Arc<WatchEvent>>, overflowed: Arc<AtomicBool> },
    Evicted { oldest: u64 },
    Closed,
}

enum Phase {
    /// The snapshot's events, then catching up from `head`, the position they reflect.
    Snapshot {
        items: std::vec::IntoIter<Arc<WatchEvent>>,
        head: u64,
    },
    /// Reading the ring after `after`.
    CatchUp {
        after: u64,
    },
    /// Registered: live events arrive in the bounded buffer.
    Live {
        rx: mpsc::Receiver<Arc<WatchEvent>>,
        overflowed: Arc<AtomicBool>,
    },
    Done,
}

/// One stream's position: yields its events in cursor order, each once.
pub struct Subscription {
    watcher: Arc<Watcher>,
    /// False once this replica cannot vouch for its data: the stream ends, to resume elsewhere.
    available: watch::Receiver<bool>,
    filter: Option<Arc<HashSet<String>>>,
    phase: Phase,
    /// Events read from the ring, not yet yielded.
    pending: VecDeque<Arc<WatchEvent>>,
    /// The cursor up to which every event for this stream has been yielded: where a client
    /// can resume. `None` while a snapshot is incomplete.
    position: Option<u64>,
    started_from_revision: bool,
}

impl Subscription {
    /// The next event; an error ends the stream; `None` when the server shuts down.
    pub async fn next(&mut self) -> Option<Result<Arc<WatchEvent>>> {
        loop {
            if !matches!(self.phase, Phase::Done) && !*self.available.borrow_and_update() {
                self.phase = Phase::Done;
                return Some(Err(self.unavailable()));
            }
            match &mut self.phase {
                Phase::Done => return None,
                Phase::Snapshot { items, head } => {
                    let head = *head;
                    match items.next() {
                        Some(current) => {
                            // Only the last snapshot event is a resume point.
                            let cursor = if items.len() == 0 { head } else { 0 };
                            if cursor != 0 {
                                self.position = Some(cursor);
                            }
                            return Some(Ok(Arc::new(WatchEvent {
                                cursor,
                                cause: Cause::Snapshot,
                                snapshot: true,
                                ..(*current).clone()
                            })));
                        }
                        None => self.phase = Phase::CatchUp { after: head },
                    }
                }
                Phase::CatchUp { after } => {
                    if let Some(event) = self.pending.pop_front() {
                        self.position = Some(event.cursor);
                        return Some(Ok(event));
                    }
                    match self.watcher.fetch(*after, &self.filter, &mut self.pending) {
                        Fetch::Scanned { through } => *after = through,
                        Fetch::Live { rx, overflowed } => self.phase = Phase::Live { rx, overflowed },
                        Fetch::Evicted { oldest } => {
                            self.phase = Phase::Done;
                            return Some(Err(Error::OutOfRange(format!(
                                "this stream fell behind the events this server retains (the oldest is now cursor \
                                 {oldest}) and was ended; {RESYNC}"
                            ))));
                        }
                        Fetch::Closed => self.phase = Phase::Done,
                    }
                }
                Phase::Live { rx, overflowed } => {
                    let next = tokio::select! {
                        next = rx.recv() => next,
                        // Looked at again at the top of the loop.
                        changed = self.available.changed() => match changed {
                            Ok(()) => continue,
                            Err(_) => None, // the engine is gone: shutting down
                        },
                    };
                    if !overflowed.load(Ordering::Acquire)
                        && let Some(event) = next
                    {
                        self.position = Some(event.cursor);
                        return Some(Ok(event));
                    }
                    let overflowed = overflowed.load(Ordering::Acquire);
                    self.phase = Phase::Done;
                    if !overflowed {
                        return None; // closed: the server is shutting down
                    }
                    return Some(Err(self.too_slow()));
                }
            }
        }
    }

    fn unavailable(&self) -> Error {
        let resume = match self.position {
            Some(cursor) => format!("every event up to cursor {cursor} was delivered; "),
            None => String::new(),
        };
        let message = self.watcher.engine.check_available().err().map(|e| e.to_string()).unwrap_or_default();
        Error::Unavailable(format!("{message}; {resume}resubscribe to another replica with from_revision"))
    }

    fn too_slow(&self) -> Error {
        let behind = self.watcher.config.buffer;
        Error::ResourceExhausted(match self.position {
            Some(cursor) => format!(
                "this stream fell more than {behind} events behind and was ended; every event up to cursor {cursor} \
                 was delivered: resubscribe with after_cursor {cursor} to continue"
            ),
            None if self.started_from_revision => format!(
                "this stream fell more than {behind} events behind during its snapshot and was ended; resubscribe \
                 with the same from_revision"
            ),
            None => format!("this stream fell more than {behind} events behind and was ended"),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::auth::Credentials;
    use crate::clock::{Clock, ManualClock};
    use crate::domain::access::ReasonCode;
    use crate::domain::compliance::ComplianceState;
    use crate::store::memory::MemoryStore;

    const T0: Timestamp = Timestamp(1_800_000_000);

    async fn demo_engine() -> (Arc<Engine>, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(T0));
        let engine =
            Engine::open(Arc::new(MemoryStore::default()), clock.clone(), 1_000, Arc::new(Credentials::default()))
                .await
                .unwrap();
        crate::demo::seed(&engine).await.unwrap();
        (Arc::new(engine), clock)
    }

    fn codes(e: &WatchEvent) -> Vec<ReasonCode> {
        e.decision.reasons.iter().map(|r| r.code).collect()
    }

    async fn next(sub: &mut Subscription) -> Arc<WatchEvent> {
        tokio::time::timeout(Duration::from_secs(5), sub.next()).await.expect("an event within 5 s").unwrap().unwrap()
    }

    #[tokio::test]
    async fn time_passing_emits_time_passed_events_at_the_instant_the_decision_stopped_holding() {
        let (engine, clock) = demo_engine().await;
        let (_stop, shutdown) = watch::channel(false);
        let (watcher, _task) = Watcher::spawn(engine.clone(), WatchConfig::default(), shutdown);
        let mut sub = watcher.subscribe(Start::Now, vec!["mac-ada".into(), "mac-cara".into()]).await.unwrap();

        // The demo's healthy Macs renewed their token an hour ago: stale over 24 hours after.
        let stale_at = T0.plus_secs(-3600 + Timestamp::DAY + 1);
        clock.set(stale_at.plus_secs(-1));
        watcher.tick_now();
        clock.set(stale_at);
        watcher.tick_now();
        let mut seen = [next(&mut sub).await, next(&mut sub).await];
        seen.sort_by(|a, b| a.decision.device_id.cmp(&b.decision.device_id));
        // Cara is also within the 72 hours' grace of the engineering password policy.
        let expected = [
            ("mac-ada", vec![ReasonCode::TokenStale]),
            ("mac-cara", vec![ReasonCode::TokenStale, ReasonCode::InGracePeriod]),
        ];
        for (e, (device, reasons)) in seen.iter().zip(expected) {
            assert_eq!(e.decision.device_id, device);
            assert_eq!((e.cause, e.at, e.revision), (Cause::TimePassed, stale_at, engine.revision()));
            assert_eq!((e.decision.allow, e.decision.state), (false, ComplianceState::Unknown));
            assert_eq!(codes(e), reasons);
        }

        // Another tick at the same instant changes nothing more.
        assert_eq!(watcher.tick_now(), 0);
        // A day later the check-in is 24 hours old too: UNRESPONSIVE joins the reasons.
        clock.set(T0.plus_secs(-600 + Timestamp::DAY));
        watcher.tick_now();
        let e = next(&mut sub).await;
        assert_eq!(e.decision.device_id, "mac-ada", "devices due at one instant come in id order");
        assert_eq!(codes(&e), [ReasonCode::Unresponsive, ReasonCode::TokenStale], "{e:?}");
        assert_eq!(e.at, T0.plus_secs(-600 + Timestamp::DAY));
    }

    #[tokio::test]
    async fn writes_emit_data_changed_events_and_snapshots_start_where_asked() {
        let (engine, clock) = demo_engine().await;
        let (stop, shutdown) = watch::channel(false);
        let (watcher, task) = Watcher::spawn(engine.clone(), WatchConfig::default(), shutdown);
        let mut all = watcher.subscribe(Start::Now, vec![]).await.unwrap();
        let before = engine.revision();

        // Bob turns FileVault on: NONCOMPLIANT → COMPLIANT. A repeat of Ada's report changes nothing.
        let now = clock.now();
        let bob = crate::demo::healthy_mac("mac-bob", "bob", "C02BOB0001", now);
        let mut ada = crate::demo::healthy_mac("mac-ada", "ada", "C02ADA0001", now);
        ada.facts.password.min_length = Some(16);
        ada.last_check_in = now.plus_secs(-60);
        engine.report_inventory(None, vec![("mac-ada".into(), Ok(ada))]).await.unwrap();
        let revision = engine.report_inventory(None, vec![("mac-bob".into(), Ok(bob))]).await.unwrap().revision;
        let e = next(&mut all).await;
        assert_eq!(e.decision.device_id, "mac-bob");
        assert_eq!((e.cause, e.revision, e.user_id.as_str()), (Cause::DataChanged, revision, "bob"));
        assert_eq!(codes(&e), [ReasonCode::Compliant]);

        // A snapshot from before the write holds Bob only; from the write's revision, nothing.
        let mut snap = watcher.subscribe(Start::FromRevision(before), vec![]).await.unwrap();
        let s = next(&mut snap).await;
        assert_eq!((s.snapshot, s.cause, s.cursor, s.revision), (true, Cause::Snapshot, e.cursor, revision));
        assert_eq!(s.decision, e.decision);
        let mut none = watcher.subscribe(Start::FromRevision(revision), vec![]).await.unwrap();

        // A deleted device's users are denied: deleting Bob's user changes his Mac.
        let r = engine.sync_directory(vec![], vec![], vec!["bob".into()], vec![]).await.unwrap();
        for sub in [&mut all, &mut snap, &mut none] {
            let e = next(sub).await;
            assert_eq!((e.decision.device_id.as_str(), e.revision, e.snapshot), ("mac-bob", r, false));
            assert_eq!(codes(&e)[0], ReasonCode::UserUnknown);
        }

        let _ = stop.send(true);
        task.await.unwrap();
        assert!(all.next().await.is_none(), "the stream ends cleanly when the watcher stops");
        assert!(matches!(watcher.subscribe(Start::Now, vec![]).await, Err(Error::Unavailable(_))));
    }

    #[tokio::test]
    async fn a_full_buffer_ends_the_stream_and_the_ring_resumes_it() {
        let (engine, clock) = demo_engine().await;
        let (_stop, shutdown) = watch::channel(false);
        let config = WatchConfig { retain: 6, buffer: 2, ..WatchConfig::default() };
        let (watcher, _task) = Watcher::spawn(engine.clone(), config, shutdown);
        let mut slow = watcher.subscribe(Start::Now, vec![]).await.unwrap();
        let start = watcher.head();
        // Caught up (nothing yet), the stream waits for live events in its buffer.
        assert!(tokio::time::timeout(Duration::from_millis(50), slow.next()).await.is_err());
        // Two days on, every Mac's decision has changed by time: more than 2 events at once.
        clock.advance(2 * Timestamp::DAY);
        watcher.tick_now();
        assert!(watcher.head() - start > 6, "{} events", watcher.head() - start);
        let err = slow.next().await.unwrap().unwrap_err();
        assert!(matches!(&err, Error::ResourceExhausted(m) if m.contains(&format!("after_cursor {start} "))), "{err}");
        assert!(slow.next().await.is_none());

        // The last `retain` events can be resumed from; older cursors cannot.
        let head = watcher.head();
        let mut resumed = watcher.subscribe(Start::AfterCursor(head - 6), vec![]).await.unwrap();
        for cursor in head - 5..=head {
            assert_eq!(next(&mut resumed).await.cursor, cursor);
        }
        let err = watcher.subscribe(Start::AfterCursor(head - 7), vec![]).await.err().unwrap();
        assert!(matches!(&err, Error::OutOfRange(m) if m.contains("from_revision")), "{err}");
        let err = watcher.subscribe(Start::AfterCursor(head + 1), vec![]).await.err().unwrap();
        assert!(matches!(&err, Error::OutOfRange(m) if m.contains("another server process")), "{err}");
    }
}
