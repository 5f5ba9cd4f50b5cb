//! Keeping the change log bounded: what to keep, compacting it, and reloading the whole state
//! for a replica whose next revisions were compacted away.

use std::time::Duration;

use super::Engine;
use crate::domain::Touched;
use crate::error::{Error, Result};

/// How much of the change log to keep: a revision goes once it is more than `revisions` behind
/// the latest AND older than `age` (the latest always stays). Replicas behind what is kept
/// reload the whole state, so this bounds the log without bounding how far a replica may fall
/// behind; one less than `age` behind never needs to. The log's size follows the write rate
/// over `age`: at the default, a fleet reporting every 15 minutes keeps two thirds of a
/// report per Mac.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub revisions: u64,
    pub age: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention { revisions: 0, age: Duration::from_secs(600) }
    }
}

impl Engine {
    /// Replaces the state with the store's, for a replica whose next revisions the change log
    /// no longer holds. Every cached decision goes, and the watcher re-decides every device.
    pub(super) async fn reload(&self, limit: Duration) -> Result<()> {
        let snapshot = tokio::time::timeout(limit, self.store.load())
            .await
            .map_err(|_| Error::Storage(format!("the store's state did not load within {limit:?}")))??;
        let mut state = self.state.write();
        *state = snapshot.state;
        let everything = Touched { all: true, ..Touched::default() };
        self.cache.invalidate(&everything);
        self.published(snapshot.revision, everything);
        Ok(())
    }

    /// Deletes the change log's revisions that `retention` no longer asks to keep; returns how
    /// many went. Replicas behind them reload the state instead.
    pub async fn compact(&self, retention: Retention) -> Result<u64> {
        let keep_from = self.revision().saturating_sub(retention.revisions).max(1);
        let older_than = self.now().0 - i64::try_from(retention.age.as_secs()).unwrap_or(i64::MAX);
        let done = self.store.compact(keep_from, older_than).await?;
        self.metrics.log_compacted.inc_by(done.deleted);
        self.metrics.log_oldest.set(i64::try_from(done.oldest).unwrap_or(i64::MAX));
        Ok(done.deleted)
    }
}
