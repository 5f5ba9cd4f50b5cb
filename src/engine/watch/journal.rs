//! The journal of decision changes: per device the decision last seen, the ring of the latest
//! events with consecutive cursors, and the live streams events are pushed to, all under one
//! lock so that a stream sees each event once, in order.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::mpsc;

use super::schedule::Schedule;
use super::{Cause, SCAN, WatchConfig, WatchEvent};
use crate::domain::Timestamp;
use crate::domain::access::{DeviceDecision, Reason};
use crate::domain::summary::Tally;

type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// A live stream's slot: its filter and its bounded buffer.
pub(super) struct Live {
    filter: Option<Arc<HashSet<String>>>,
    tx: mpsc::Sender<Arc<WatchEvent>>,
    overflowed: Arc<AtomicBool>,
}

/// The watcher's record of decisions and the journal of their changes.
pub(super) struct Journal {
    /// Per device, its current decision and when (revision, instant, cursor) it last changed.
    /// A deleted device stays as a DEVICE_UNKNOWN decision, so snapshots can say it is gone.
    pub(super) devices: HashMap<String, Arc<WatchEvent>>,
    /// The instants at which time alone changes a device's decision.
    pub(super) schedule: Schedule,
    /// The last `retain` events, in cursor order.
    pub(super) ring: VecDeque<Arc<WatchEvent>>,
    /// The cursor of `ring[0]`; `head + 1` when the ring is empty.
    pub(super) first: u64,
    /// The cursor of the last event appended (the base when there is none).
    pub(super) head: u64,
    pub(super) live: Vec<Live>,
    pub(super) closed: bool,
    /// The counts of `devices`' decisions, kept in step with it (GetComplianceSummary).
    pub(super) tally: Tally,
    /// One copy of each list of reasons the journal holds.
    pub(super) reasons: SharedReasons,
}

/// The lists of reasons in the journal, each kept once: most Macs that fail, fail in the same
/// words, and a fleet's decisions and events would otherwise hold a copy per Mac and per event.
#[derive(Default)]
pub(super) struct SharedReasons {
    lists: HashSet<Arc<[Reason]>, foldhash::fast::RandomState>,
    /// How many lists were left by the last sweep.
    swept: usize,
}

impl SharedReasons {
    /// Points `reasons` at the copy already kept (the device's previous decision's, or any).
    pub(super) fn share(&mut self, reasons: &mut Arc<[Reason]>, previous: Option<&Arc<[Reason]>>) {
        if let Some(previous) = previous.filter(|p| ***p == **reasons) {
            *reasons = previous.clone();
        } else if let Some(kept) = self.lists.get(&**reasons) {
            *reasons = kept.clone();
        } else {
            self.lists.insert(reasons.clone());
            // Drop the lists nothing else holds any more, once the set has doubled: amortised
            // O(1) a decision, and never more than twice the lists in use.
            if self.lists.len() > 2 * self.swept.max(1024) {
                self.lists.retain(|l| Arc::strong_count(l) > 1);
                self.swept = self.lists.len();
            }
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.lists.len()
    }
}

impl Journal {
    /// Records a fresh decision; appends an event when (allow, state, reason codes) changed.
    pub(super) fn record(
        &mut self,
        mut d: DeviceDecision,
        revision: u64,
        now: Timestamp,
        cause: Cause,
        config: &WatchConfig,
    ) -> bool {
        let prev = self.devices.get(&d.device_id).cloned();
        self.reasons.share(&mut d.reasons, prev.as_ref().map(|p| &p.decision.reasons));
        let prev_until = prev.as_ref().and_then(|p| p.decision.valid_until);
        self.schedule.reschedule(&d.device_id, prev_until, d.valid_until);
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
            self.append(event.clone(), config.limits.retained_events);
            self.set_current(event);
        } else if let Some(p) = prev
            && *p.decision != d
        {
            // The same decision in other words or with another valid_until: keep it current
            // for snapshots, without an event.
            self.set_current(Arc::new(WatchEvent { decision: Arc::new(d), ..(*p).clone() }));
        }
        changed
    }

    /// Makes `current` its device's current decision, keeping the tally in step.
    pub(super) fn set_current(&mut self, current: Arc<WatchEvent>) {
        self.tally.add(&current.decision);
        if let Some(prev) = self.devices.insert(current.decision.device_id.clone(), current) {
            self.tally.remove(&prev.decision);
        }
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

    /// The next events after `after` for a catching-up stream, or its registration for live
    /// events once it has caught up: under the lock that appends, so none is missed or repeated.
    pub(super) fn fetch(
        &mut self,
        after: u64,
        filter: &Option<Arc<HashSet<String>>>,
        buffer: usize,
        out: &mut VecDeque<Arc<WatchEvent>>,
    ) -> Fetch {
        if self.closed {
            return Fetch::Closed;
        }
        if after < self.first - 1 {
            return Fetch::Evicted { oldest: self.first };
        }
        let start = (after + 1 - self.first) as usize;
        if start >= self.ring.len() {
            let (tx, rx) = mpsc::channel(buffer);
            let overflowed = Arc::new(AtomicBool::new(false));
            self.live.push(Live { filter: filter.clone(), tx, overflowed: overflowed.clone() });
            return Fetch::Live { rx, overflowed };
        }
        let end = (start + SCAN).min(self.ring.len());
        out.extend(self.ring.range(start..end).filter(|e| matches(filter, e)).cloned());
        Fetch::Scanned { through: self.first + end as u64 - 1 }
    }
}

fn same_summary(a: &DeviceDecision, b: &DeviceDecision) -> bool {
    a.allow == b.allow && a.state == b.state && a.reasons.iter().map(|r| r.code).eq(b.reasons.iter().map(|r| r.code))
}

pub(super) fn matches(filter: &Option<Arc<HashSet<String>>>, event: &WatchEvent) -> bool {
    filter.as_ref().is_none_or(|ids| ids.contains(&event.decision.device_id))
}

/// What a catching-up stream gets from the journal.
pub(super) enum Fetch {
    Scanned { through: u64 },
    Live { rx: mpsc::Receiver<Arc<WatchEvent>>, overflowed: Arc<AtomicBool> },
    Evicted { oldest: u64 },
    Closed,
}
