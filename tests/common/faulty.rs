//! A store that passes everything to another, with faults a test can switch on.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;
use posture::domain::Change;
use posture::error::Error;
use posture::store::{Commit, Snapshot, Store};

/// A store that passes everything to another, with faults a test can switch on: every call
/// fails while `down`; each call yields first (so concurrent writers interleave); before its
/// next commit it can let "another replica" commit first; conflicts are counted.
pub struct Faulty {
    inner: Arc<dyn Store>,
    pub down: AtomicBool,
    pub commit_first: parking_lot::Mutex<Option<Vec<Change>>>,
    pub fail_reads_after_commit: AtomicBool,
    pub conflicts: AtomicU64,
}

impl Faulty {
    pub fn new(inner: Arc<dyn Store>) -> Arc<Faulty> {
        Arc::new(Faulty {
            inner,
            down: AtomicBool::new(false),
            commit_first: parking_lot::Mutex::new(None),
            fail_reads_after_commit: AtomicBool::new(false),
            conflicts: AtomicU64::new(0),
        })
    }
    fn check(&self) -> posture::error::Result<()> {
        if self.down.load(Ordering::SeqCst) {
            return Err(Error::Storage("the test cut the store off".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl Store for Faulty {
    async fn load(&self) -> posture::error::Result<Snapshot> {
        self.check()?;
        self.inner.load().await
    }
    async fn commit(&self, expected: u64, changes: &[Change], at: i64) -> posture::error::Result<Commit> {
        tokio::task::yield_now().await;
        self.check()?;
        let first = self.commit_first.lock().take();
        if let Some(other) = first {
            let head = self.inner.load().await?.revision;
            assert!(matches!(self.inner.commit(head, &other, at).await?, Commit::Done(_)));
        }
        let outcome = self.inner.commit(expected, changes, at).await?;
        if outcome == Commit::Conflict {
            self.conflicts.fetch_add(1, Ordering::SeqCst);
        }
        if self.fail_reads_after_commit.load(Ordering::SeqCst) {
            self.down.store(true, Ordering::SeqCst);
        }
        Ok(outcome)
    }
    async fn changes_since(&self, after: u64, limit: u32) -> posture::error::Result<Vec<(u64, Vec<Change>)>> {
        tokio::task::yield_now().await;
        self.check()?;
        self.inner.changes_since(after, limit).await
    }

    async fn committed_at(&self, revision: u64) -> posture::error::Result<Option<i64>> {
        self.check()?;
        self.inner.committed_at(revision).await
    }

    async fn compact(&self, keep_from: u64, older_than: i64) -> posture::error::Result<posture::store::Compaction> {
        self.check()?;
        self.inner.compact(keep_from, older_than).await
    }
    async fn notifications(&self) -> posture::error::Result<Option<tokio::sync::mpsc::Receiver<u64>>> {
        Ok(None)
    }
}
