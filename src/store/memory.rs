//! A store that keeps the change log in memory: nothing survives the process. For tests,
//! simulations and benchmarks that must not measure a disk.

use async_trait::async_trait;
use parking_lot::Mutex;

use super::{Commit, Snapshot, Store};
use crate::domain::{Change, State};
use crate::error::Result;

#[derive(Default)]
pub struct MemoryStore {
    /// Each revision's commit time and changes.
    log: Mutex<Vec<(i64, Vec<Change>)>>,
}

#[async_trait]
impl Store for MemoryStore {
    async fn load(&self) -> Result<Snapshot> {
        let log = self.log.lock();
        let mut state = State::default();
        for change in log.iter().flat_map(|(_, changes)| changes) {
            state.apply(change.clone());
        }
        Ok(Snapshot { state, revision: log.len() as u64 })
    }

    async fn commit(&self, expected: u64, changes: &[Change], committed_at: i64) -> Result<Commit> {
        let mut log = self.log.lock();
        if log.len() as u64 != expected {
            return Ok(Commit::Conflict);
        }
        log.push((committed_at, changes.to_vec()));
        Ok(Commit::Done(log.len() as u64))
    }

    async fn changes_since(&self, after: u64, limit: u32) -> Result<Vec<(u64, Vec<Change>)>> {
        let log = self.log.lock();
        Ok(log
            .iter()
            .enumerate()
            .skip(after as usize)
            .take(limit as usize)
            .map(|(i, (_, c))| (i as u64 + 1, c.clone()))
            .collect())
    }

    async fn committed_at(&self, revision: u64) -> Result<Option<i64>> {
        let index = usize::try_from(revision).ok().and_then(|r| r.checked_sub(1));
        Ok(index.and_then(|i| self.log.lock().get(i).map(|(at, _)| *at)))
    }

    /// The log is this store's state (`load` replays it): nothing is compacted.
    async fn compact(&self, _keep_from: u64, _older_than: i64) -> Result<super::Compaction> {
        let oldest = u64::from(!self.log.lock().is_empty());
        Ok(super::Compaction { deleted: 0, oldest })
    }

    /// Nothing else shares a memory store; callers that want to follow it poll.
    async fn notifications(&self) -> Result<Option<tokio::sync::mpsc::Receiver<u64>>> {
        Ok(None)
    }
}
