//! Resuming from a revision on any replica and across restarts. A revision is the one position
//! every replica shares; what a process has not seen itself, it reads from the store's change
//! log when its watcher starts. Each device's decision at start is stamped with the revision
//! after which it may last have changed: the last revision in the retained log that touched
//! it (its record, its primary user, or, for a change of policies, assignments, groups,
//! connector or settings, every device), or, when time alone changed its decision since the
//! oldest revision kept, the revision the process started at. A device neither touched nor
//! changed by time keeps the oldest revision, so a stream resuming from it or later leaves the
//! device out. Before the oldest revision kept, nothing is known: OUT_OF_RANGE.

use std::collections::HashMap;
use std::sync::Arc;

use super::journal::{Current, same_summary};
use super::{CHUNK, Watcher};
use crate::domain::{Change, Timestamp, access};
use crate::error::{Error, Result};

/// From which revision this process can tell which decisions changed, and when that revision
/// was committed (a lower bound for any later one's time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct History {
    pub(super) from: u64,
    pub(super) at: Timestamp,
}

/// The most changes the watcher reads from the log at start; beyond, it takes nothing before
/// its start as known (resumes from earlier answer OUT_OF_RANGE).
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
    /// What the store's log tells of the time before this process started (at revision
    /// `started`), stamped on the decisions recorded at start. Without it (the store
    /// unreachable, the log longer than the budget), only resumes from `started` on are
    /// answered.
    pub(super) async fn recall(self: &Arc<Self>, started: u64) {
        // A compaction between two pages moves the oldest revision on: read again from it.
        let mut read = self.read_log(started).await;
        for _ in 0..3 {
            if !matches!(read, Err(Error::LogCompacted { .. })) {
                break;
            }
            read = self.read_log(started).await;
        }
        let recalled = match read {
            Ok(Some(found)) => Some(found),
            Ok(None) => {
                tracing::warn!(
                    budget = RECALL_BUDGET,
                    "the change log holds more changes than the watcher reads at start: streams resume from \
                     revisions from this start on"
                );
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "the change log could not be read: streams resume from revisions from this start on");
                None
            }
        };
        let history = match recalled {
            Some((history, touches)) => {
                self.blocking(move |w| w.stamp(&touches, history, started)).await;
                history
            }
            None => History { from: started, at: self.engine.now() },
        };
        tracing::debug!(from = history.from, "streams resume from this revision on");
        self.journal.lock().history = Some(history);
    }

    /// The oldest revision kept, its commit time and what the log touched after it, up to
    /// `started`; `None` past the budget.
    async fn read_log(&self, started: u64) -> Result<Option<(History, Touches)>> {
        let store = &self.engine.store;
        let from = match store.changes_since(0, 1).await {
            Ok(first) => first.first().map_or(0, |(revision, _)| *revision),
            Err(Error::LogCompacted { oldest }) => oldest,
            Err(e) => return Err(e),
        };
        let at = match from {
            0 => Timestamp(i64::MIN),
            _ => Timestamp(store.committed_at(from).await?.ok_or_else(|| {
                Error::Storage(format!("revision {from} was compacted away while the watcher started"))
            })?),
        };
        // What revision `from` itself changed is before any resume from it.
        let (mut touches, mut after, mut read) = (Touches::default(), from, 0);
        while after < started {
            let page = store.changes_since(after, PAGE).await?;
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
        Ok(Some((History { from, at }, touches)))
    }

    /// Stamps each decision recorded at start with the revision after which it may last have
    /// changed. Devices the log deleted get their DEVICE_UNKNOWN decision, so a resume says
    /// they are gone.
    fn stamp(&self, touches: &Touches, history: History, started: u64) {
        let _eval = self.eval.lock();
        let count = self.journal.lock().devices.len();
        for first in (0..count).step_by(CHUNK) {
            let ids: Vec<String> = {
                let inner = self.journal.lock();
                (first..count.min(first + CHUNK)).map(|p| inner.devices.at(p as u32).id.to_string()).collect()
            };
            // Each device's decision as of the oldest revision kept, from its data now: for a
            // device the log did not touch, its decision then.
            let (then, _) = self.engine.read(|state, _| {
                let then = ids.iter().map(|id| {
                    let user = state.device(id).and_then(|d| touches.users.get(&*d.user_id)).copied();
                    (access::decide(state, id, history.at), user)
                });
                then.collect::<Vec<_>>()
            });
            let mut inner = self.journal.lock();
            for (id, (decision, user)) in ids.iter().zip(then) {
                let data = touches.devices.get(id).copied().max(user).unwrap_or(0).max(touches.all);
                inner.devices.modify(id, |c| {
                    let time = if same_summary(c, &decision) { 0 } else { started };
                    c.revision = data.max(time).max(history.from);
                });
            }
        }
        // Deleted before this process started: not among the decisions recorded.
        let gone: Vec<(&String, u64)> = {
            let inner = self.journal.lock();
            touches.devices.iter().filter(|(id, _)| inner.devices.get(id).is_none()).map(|(id, r)| (id, *r)).collect()
        };
        for chunk in gone.chunks(CHUNK) {
            let ((decisions, now), _) = self.engine.read(|state, now| {
                (chunk.iter().map(|(id, _)| access::decide(state, id, now)).collect::<Vec<_>>(), now)
            });
            let mut inner = self.journal.lock();
            for (d, (_, revision)) in decisions.into_iter().zip(chunk) {
                // Reported again since: the watcher decides it with what it was told.
                if d.primary_user_id.is_some() {
                    continue;
                }
                let mut current = Current::new(d, None, (*revision).max(history.from), now, &mut inner.users);
                current.recalled = true;
                inner.set_current(current);
            }
        }
    }

    /// The instant a resume from `revision` counts from (the revision's commit time), or why
    /// this process cannot resume from it.
    pub(super) async fn resume_point(&self, revision: u64) -> Result<Timestamp> {
        let history = self.journal.lock().history.unwrap_or(History { from: u64::MAX, at: Timestamp(i64::MIN) });
        if revision < history.from {
            return Err(Error::OutOfRange(format!(
                "from_revision {revision} is older than the changes this server can account for (from revision {} \
                 on: the store's change log keeps no more); resubscribe with every_device to receive every device's \
                 current decision",
                history.from
            )));
        }
        match self.engine.store.committed_at(revision).await? {
            Some(at) => Ok(Timestamp(at)),
            None if revision > self.engine.revision() => Err(Error::invalid(
                "from_revision",
                format!("{revision} is ahead of the latest revision ({})", self.engine.revision()),
            )),
            // Compacted since this process started: its oldest revision's time comes before.
            None => Ok(history.at),
        }
    }
}
