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
use crate::domain::compliance::ComplianceState;
use crate::domain::summary::{Counted, Tally};
use crate::domain::table::{Ids, Record, Table};

/// A live stream's slot: its filter and its bounded buffer.
pub(super) struct Live {
    filter: Option<Arc<HashSet<String>>>,
    tx: mpsc::Sender<Arc<WatchEvent>>,
    overflowed: Arc<AtomicBool>,
}

/// The watcher's record of decisions and the journal of their changes.
pub(super) struct Journal {
    /// Per device, its current decision and when it last changed. A deleted device stays as a
    /// DEVICE_UNKNOWN decision, so snapshots can say it is gone; so no record is ever removed,
    /// and a device's position here is its number for good (the schedule's).
    pub(super) devices: Table<Current>,
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
    /// The counts of `devices`' decisions, kept in step with it (GetComplianceSummary), users
    /// told apart by their numbers in `users`.
    pub(super) tally: Tally<u32>,
    /// The users of `devices`, numbered: each id stored once however many Macs it has.
    pub(super) users: Ids,
    /// One copy of each list of reasons the journal holds.
    pub(super) reasons: SharedReasons,
    /// The revision the watcher started at, once its decisions at start are recorded, and that
    /// revision's commit time.
    pub(super) started: Option<(u64, Timestamp)>,
}

/// A device's current decision as the journal keeps it: one record, its id stored once, its
/// user a number, its reasons shared; an event (or a decision) is made of it only when one is
/// sent. A million devices cost about a hundred megabytes so, not half a gigabyte.
#[derive(Debug, Clone)]
pub(super) struct Current {
    pub(super) id: Box<str>,
    /// The primary user's number in the journal's `users`; for a deleted device, the last one
    /// known ("" if none ever was).
    pub(super) user: u32,
    /// Whether the device is known (`user` is its primary user), or gone (DEVICE_UNKNOWN).
    pub(super) known: bool,
    pub(super) allow: bool,
    pub(super) state: ComplianceState,
    pub(super) reasons: Arc<[Reason]>,
    pub(super) valid_until: Option<Timestamp>,
    /// The revision and the instant of the decision's last change.
    pub(super) revision: u64,
    pub(super) at: Timestamp,
    /// Decided at start, and time alone has not changed it since the oldest revision kept: the
    /// change log tells when it last changed (see `resume`). Its instant is the start's.
    pub(super) recalled: bool,
}

impl Record for Current {
    const KEYS: usize = 1;
    fn key(&self, _: usize) -> &str {
        &self.id
    }
}

impl<'a> From<&'a Current> for Counted<'a, u32> {
    fn from(c: &'a Current) -> Self {
        Counted { user: c.known.then_some(&c.user), allow: c.allow, state: c.state, reasons: &c.reasons }
    }
}

impl Current {
    /// `d` as changed at `revision` and `at`, its user numbered in `users`; a decision with no
    /// primary user keeps `user`.
    pub(super) fn new(d: DeviceDecision, user: Option<u32>, revision: u64, at: Timestamp, users: &mut Ids) -> Self {
        let known = d.primary_user_id.is_some();
        let user = match d.primary_user_id {
            Some(id) => users.intern(&id),
            None => user.unwrap_or_else(|| users.intern("")),
        };
        Current {
            id: d.device_id.into_boxed_str(),
            user,
            known,
            allow: d.allow,
            state: d.state,
            reasons: d.reasons,
            valid_until: d.valid_until,
            revision,
            at,
            recalled: false,
        }
    }

    pub(super) fn decision(&self, users: &Ids) -> DeviceDecision {
        DeviceDecision {
            device_id: self.id.to_string(),
            primary_user_id: self.known.then(|| users.name(self.user).to_string()),
            allow: self.allow,
            state: self.state,
            reasons: self.reasons.clone(),
            valid_until: self.valid_until,
        }
    }

    /// The device's current decision as a snapshot event (the subscription sets its cursor).
    pub(super) fn event(&self, users: &Ids) -> WatchEvent {
        WatchEvent {
            cursor: 0,
            revision: self.revision,
            at: self.at,
            cause: Cause::Snapshot,
            snapshot: true,
            user_id: users.name(self.user).to_string(),
            decision: Arc::new(self.decision(users)),
        }
    }

    /// Whether `d` says the same as this record, word for word.
    fn same_as(&self, d: &DeviceDecision, users: &Ids) -> bool {
        self.known == d.primary_user_id.is_some()
            && d.primary_user_id.as_deref().is_none_or(|u| u == users.name(self.user))
            && self.allow == d.allow
            && self.state == d.state
            && self.valid_until == d.valid_until
            && *self.reasons == *d.reasons
    }
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
        let prev = self.devices.get(&d.device_id);
        self.reasons.share(&mut d.reasons, prev.map(|p| &p.reasons));
        let prev_until = prev.and_then(|p| p.valid_until);
        let changed = match prev {
            Some(p) => !same_summary(p, &d),
            // Never seen (or unknown all along): a change unless it is still unknown.
            None => d.primary_user_id.is_some(),
        };
        if changed {
            let user_id = d.primary_user_id.clone().or_else(|| prev.map(|p| self.users.name(p.user).to_string()));
            let user = prev.map(|p| p.user);
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
                user_id: user_id.clone().unwrap_or_default(),
                decision: Arc::new(d.clone()),
            });
            self.append(event, config.limits.retained_events);
            let current = Current::new(d, user, revision, at, &mut self.users);
            self.set_current(current);
        } else if let Some(p) = prev
            && !p.same_as(&d, &self.users)
        {
            // The same decision in other words or with another valid_until: keep it current
            // for snapshots, without an event.
            let (user, revision, at, recalled) = (p.user, p.revision, p.at, p.recalled);
            let mut current = Current::new(d, Some(user), revision, at, &mut self.users);
            current.recalled = recalled;
            self.set_current(current);
        }
        changed
    }

    /// Makes `current` its device's current decision, keeping the tally and the schedule in
    /// step.
    pub(super) fn set_current(&mut self, current: Current) {
        let valid_until = current.valid_until;
        self.tally.add(&current);
        let (position, prev) = self.devices.insert(current);
        if let Some(prev) = &prev {
            self.tally.remove(prev);
        }
        self.schedule.reschedule(position, prev.and_then(|p| p.valid_until), valid_until);
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

pub(super) fn same_summary(a: &Current, b: &DeviceDecision) -> bool {
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
