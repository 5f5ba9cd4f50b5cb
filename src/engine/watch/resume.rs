//! Resuming from a revision on any replica and across restarts. A revision is the one position
//! every process shares; what a process has not seen itself, it learns from the store's change
//! log.
//!
//! At start the watcher decides each device twice: now, and at the commit time of the oldest
//! revision the log keeps. A decision that time alone changed in between may have changed
//! after any earlier revision, and counts as changed at the start. The others are `recalled`:
//! their data tells when they last changed. On the first resume from a revision before the
//! start, the watcher reads the log once and stamps each of them with the last revision that
//! touched it (its record, its primary user, or, for a change of policies, assignments,
//! groups, connector or settings, every device); one the log did not touch keeps the oldest
//! revision, so a stream resuming from it or later leaves it out. Before the oldest revision
//! kept, nothing is known: OUT_OF_RANGE.

use std::collections::HashMap;
use std::sync::Arc;

use super::journal::Current;
use super::{CHUNK, Watcher};
use crate::domain::{Change, Timestamp};
use crate::error::{Error, Result};

/// From which revision on this process can tell which decisions changed, and when that
/// revision was committed (a lower bound for any later one's time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct History {
    pub(super) from: u64,
    pub(super) at: Timestamp,
}

/// The most changes read from the log; beyond, nothing before the start is taken as known
/// (resumes from earlier answer OUT_OF_RANGE).
const RECALL_BUDGET: usize = 1_000_000;
/// Revisions read from the log at once.
const PAGE: u32 = 100;

/// The last revision of the log that touched each device and each user, and the last that
/// touched every device.
#[derive(Default)]
struct Touches {
    devices: HashMap<String, u64>,
    users: HashMap<String, u64>,
    all: u64,
}

impl Touches {
    fn note(&mut self, revision: u64, changes: &[Change]) {
        for change in changes {
            let device = match change {
                Change::PutDevice(d) => d.id.to_string(),
                Change::CheckIn { device_id, .. }
                | Change::PutFailing { device_id, .. }
                | Change::DeleteFailing { device_id, .. }
                | Change::DeleteDevice(device_id) => device_id.clone(),
                Change::PutUser(u) => {
                    self.users.insert(u.id.clone(), revision);
                    continue;
                }
                Change::DeleteUser(id) => {
                    self.users.insert(id.clone(), revision);
                    continue;
                }
                // Members before the change are not in the log: every device.
                Change::PutGroup(_)
                | Change::DeleteGroup(_)
                | Change::PutPolicy(_)
                | Change::DeletePolicy(_)
                | Change::PutAssignment(_)
                | Change::PutConnector(_)
                | Change::PutSettings(_) => {
                    self.all = revision;
                    continue;
                }
                Change::PutHeartbeat(_) => continue,
            };
            self.devices.insert(device, revision);
        }
    }
}

impl Watcher {
    /// The commit time of the oldest revision the log keeps (`None` when the store cannot
    /// say; then no decision at start is `recalled`).
    pub(super) async fn floor(&self) -> Option<Timestamp> {
        match self.oldest().await {
            Ok((_, at)) => Some(at),
            Err(e) => {
                tracing::warn!(error = %e, "the change log could not be read: streams resume from revisions from this start on");
                None
            }
        }
    }

    /// The oldest revision the log keeps and its commit time (0 and the dawn of time for an
    /// empty log).
    async fn oldest(&self) -> Result<(u64, Timestamp)> {
        let store = &self.engine.store;
        let oldest = match store.changes_since(0, 1).await {
            Ok(first) => first.first().map_or(0, |(revision, _)| *revision),
            Err(Error::LogCompacted { oldest }) => oldest,
            Err(e) => return Err(e),
        };
        if oldest == 0 {
            return Ok((0, Timestamp(i64::MIN)));
        }
        let at = store.committed_at(oldest).await?;
        let at = at.ok_or_else(|| Error::LogCompacted { oldest: oldest + 1 })?;
        Ok((oldest, Timestamp(at)))
    }

    /// Notes the revision the decisions at start reflect, and its commit time; a decision time
    /// has changed since the oldest revision kept counts as changed at it.
    pub(super) async fn mark_start(&self) {
        let started = self.engine.revision();
        let at = match started {
            0 => None,
            r => self.engine.store.committed_at(r).await.ok().flatten(),
        };
        let mut inner = self.journal.lock();
        // Unknown: every change seen here counts as after any resume point's time.
        inner.started = Some((started, at.map_or(Timestamp(i64::MIN), Timestamp)));
        // Changed by time since the oldest revision kept: as if at the start's revision.
        inner.devices.modify_all(|c| {
            if !c.recalled {
                c.revision = c.revision.max(started);
            }
        });
    }

    /// What the log tells of the time before the start, stamped on the recalled decisions; or,
    /// when it cannot be read whole (the store unreachable, more than the budget), only the
    /// start as a resume point.
    async fn recall(self: &Arc<Self>, started: u64, started_at: Timestamp) -> History {
        // A compaction between two pages moves the oldest revision on: read again from it.
        let mut read = self.read_log(started).await;
        for _ in 0..3 {
            if !matches!(read, Err(Error::LogCompacted { .. })) {
                break;
            }
            read = self.read_log(started).await;
        }
        let fallback = History { from: started, at: started_at };
        match read {
            Ok(Some((history, touches))) => {
                self.blocking(move |w| w.stamp(&touches, history)).await;
                tracing::debug!(from = history.from, "streams resume from this revision on");
                history
            }
            Ok(None) => {
                tracing::warn!(
                    budget = RECALL_BUDGET,
                    "the change log holds more changes than a resume reads: streams resume from revisions from \
                     the watcher's start on"
                );
                fallback
            }
            Err(e) => {
                tracing::warn!(error = %e, "the change log could not be read: streams resume from revisions from the watcher's start on");
                fallback
            }
        }
    }

    /// The oldest revision kept, its commit time and what the log touched after it, up to
    /// `started`; `None` past the budget.
    async fn read_log(&self, started: u64) -> Result<Option<(History, Touches)>> {
        let (from, at) = self.oldest().await?;
        // What revision `from` itself changed is before any resume from it.
        let (mut touches, mut after, mut read) = (Touches::default(), from, 0);
        while after < started {
            let page = self.engine.store.changes_since(after, PAGE).await?;
            let Some((last, _)) = page.last() else { break };
            after = *last;
            for (revision, changes) in page.iter().filter(|(r, _)| *r <= started) {
                touches.note(*revision, changes);
                read += changes.len();
            }
            if read > RECALL_BUDGET {
                return Ok(None);
            }
        }
        Ok(Some((History { from: from.min(started), at }, touches)))
    }

    /// Stamps each decision still as recalled at start with the last revision that touched
    /// it. Devices the log deleted get their DEVICE_UNKNOWN decision, so a resume says they
    /// are gone.
    fn stamp(&self, touches: &Touches, history: History) {
        let _eval = self.eval.lock();
        let count = self.journal.lock().devices.len();
        for first in (0..count).step_by(CHUNK) {
            let ids: Vec<String> = {
                let inner = self.journal.lock();
                let recalled = (first..count.min(first + CHUNK)).map(|p| inner.devices.at(p as u32));
                recalled.filter(|c| c.recalled).map(|c| c.id.to_string()).collect()
            };
            let (users, _) = self.engine.read(|state, _| {
                let user = |id: &String| state.device(id).and_then(|d| touches.users.get(&*d.user_id)).copied();
                ids.iter().map(user).collect::<Vec<_>>()
            });
            let mut inner = self.journal.lock();
            for (id, user) in ids.iter().zip(users) {
                let data = touches.devices.get(id).copied().max(user).unwrap_or(0).max(touches.all);
                inner.devices.modify(id, |c| c.revision = data.max(history.from));
            }
        }
        // Deleted before this process started: not among the decisions recorded.
        let gone: Vec<String> = {
            let inner = self.journal.lock();
            touches.devices.keys().filter(|id| inner.devices.get(id).is_none()).cloned().collect()
        };
        for chunk in gone.chunks(CHUNK) {
            let ((decisions, now), _) = self.decide(chunk);
            let mut inner = self.journal.lock();
            for (d, id) in decisions.into_iter().zip(chunk) {
                // Reported again since: the watcher decides it with what it was told.
                if d.primary_user_id.is_some() {
                    continue;
                }
                let revision = touches.devices[id].max(history.from);
                let mut current = Current::new(d, None, revision, now, &mut inner.users);
                current.recalled = true;
                inner.set_current(current);
            }
        }
    }

    /// The instant a resume from `revision` counts from (the revision's commit time), or why
    /// this process cannot resume from it.
    pub(super) async fn resume_point(self: &Arc<Self>, revision: u64) -> Result<Timestamp> {
        let (started, started_at) = self.journal.lock().started.unwrap_or((0, Timestamp(i64::MIN)));
        // A later revision's commit time is at least this one's.
        let floor = if revision >= started {
            started_at
        } else {
            let history = *self.history.get_or_init(|| self.recall(started, started_at)).await;
            if revision < history.from {
                return Err(Error::OutOfRange(format!(
                    "from_revision {revision} is older than the changes this server can account for (from \
                     revision {} on: the store's change log keeps no more); resubscribe with every_device to \
                     receive every device's current decision",
                    history.from
                )));
            }
            history.at
        };
        match self.engine.store.committed_at(revision).await? {
            Some(at) => Ok(Timestamp(at)),
            None if revision > self.engine.revision() => Err(Error::invalid(
                "from_revision",
                format!("{revision} is ahead of the latest revision ({})", self.engine.revision()),
            )),
            // Compacted since: an earlier revision's time comes before it.
            None => Ok(floor),
        }
    }
}
