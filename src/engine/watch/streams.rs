//! The WatchCompliance streams open, and the limits on how many.

use std::sync::Arc;

use super::{HashMap, Watcher};
use crate::error::{Error, Result};

/// The streams open now, in all and per credential (`""` when authentication is off).
#[derive(Debug, Default)]
pub(super) struct OpenStreams {
    pub(super) total: usize,
    per_credential: HashMap<String, usize>,
}

/// A stream's place among the open ones, given back when the stream ends.
pub(super) struct StreamSlot {
    pub(super) watcher: Arc<Watcher>,
    credential: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.watcher.open.lock();
        open.total -= 1;
        if let Some(n) = open.per_credential.get_mut(&self.credential) {
            *n -= 1;
            if *n == 0 {
                open.per_credential.remove(&self.credential);
            }
        }
    }
}

impl Watcher {
    /// Takes a place for a new stream of `credential`, or says which limit is reached.
    pub(super) fn open_stream(self: &Arc<Self>, credential: &str) -> Result<StreamSlot> {
        let limits = self.config.limits;
        let mut open = self.open.lock();
        if open.total >= limits.streams {
            return Err(Error::ResourceExhausted(format!(
                "this server has {} WatchCompliance streams open, its limit: retry later or watch through another replica",
                open.total
            )));
        }
        let mine = open.per_credential.get(credential).copied().unwrap_or(0);
        if mine >= limits.streams_per_credential {
            return Err(Error::ResourceExhausted(format!(
                "credential {credential} has {mine} WatchCompliance streams open, its limit: close one first (one \
                 stream can watch every device)"
            )));
        }
        open.total += 1;
        *open.per_credential.entry(credential.to_string()).or_default() += 1;
        Ok(StreamSlot { watcher: self.clone(), credential: credential.to_string() })
    }
}
