//! Repeated log lines, counted instead of written again: a client retrying a denied sign-in in
//! a loop, or sending a revoked secret a thousand times a second, gets its line once and then
//! one line a window saying how many more times it happened. Metrics still count every call.
//!
//! A line is the same as an earlier one when everything it says but its timing, trace id and
//! revision is (see `Subject` in the parent module). Each key is remembered for at least a
//! window after its last line; at most [`MAX_KEYS`] at once, beyond which every line is
//! written (so a flood of distinct calls costs log lines, not memory).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// How long a line stands for its repeats.
pub(super) const WINDOW: Duration = Duration::from_secs(10);
/// The most keys remembered at once, over every shard.
pub(super) const MAX_KEYS: usize = 65_536;
const SHARDS: usize = 16;

struct Count {
    /// When the key was last written (first, or as a count of repeats).
    since: Instant,
    /// Repeats since then, not yet written.
    repeats: u64,
}

pub(super) struct Repeats<K> {
    hasher: foldhash::fast::RandomState,
    shards: Box<[Mutex<HashMap<K, Count, foldhash::fast::RandomState>>]>,
}

impl<K: Hash + Eq> Default for Repeats<K> {
    fn default() -> Self {
        let shard = || Mutex::new(HashMap::with_hasher(foldhash::fast::RandomState::default()));
        Repeats { hasher: foldhash::fast::RandomState::default(), shards: (0..SHARDS).map(|_| shard()).collect() }
    }
}

impl<K: Hash + Eq> Repeats<K> {
    /// Calls `write` with `key` unless the same key was written within the last window, in
    /// which case the call is counted for [`Repeats::flush`] to write.
    pub(super) fn note(&self, key: K, now: Instant, write: impl FnOnce(&K)) {
        let shard = &self.shards[self.hasher.hash_one(&key) as usize % SHARDS];
        let mut counts = shard.lock();
        if let Some(count) = counts.get_mut(&key)
            && now.saturating_duration_since(count.since) < WINDOW
        {
            count.repeats += 1;
            return;
        }
        // Written under the shard's lock, so that two threads cannot both write a key first.
        write(&key);
        if counts.len() < MAX_KEYS / SHARDS || counts.contains_key(&key) {
            counts.insert(key, Count { since: now, repeats: 0 });
        }
    }

    /// Writes each key's repeats not yet written (`write(key, repeats)`), and forgets the keys
    /// that had none for a window. Called every [`WINDOW`], and once at shutdown.
    pub(super) fn flush(&self, now: Instant, mut write: impl FnMut(&K, u64)) {
        for shard in &self.shards {
            shard.lock().retain(|key, count| {
                if count.repeats > 0 {
                    write(key, count.repeats);
                    *count = Count { since: now, repeats: 0 };
                    true
                } else {
                    now.saturating_duration_since(count.since) < WINDOW
                }
            });
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(repeats: &Repeats<u32>, key: u32, at: Instant) -> usize {
        let mut written = 0;
        repeats.note(key, at, |_| written += 1);
        written
    }

    #[test]
    fn a_repeat_within_the_window_is_counted_and_written_by_the_flush() {
        let repeats = Repeats::default();
        let t0 = Instant::now();
        assert_eq!(lines(&repeats, 1, t0), 1, "the first is written at once");
        assert_eq!(lines(&repeats, 1, t0 + Duration::from_secs(1)), 0);
        assert_eq!(lines(&repeats, 1, t0 + Duration::from_secs(2)), 0);
        assert_eq!(lines(&repeats, 2, t0 + Duration::from_secs(2)), 1, "another key is written");
        let mut flushed = Vec::new();
        repeats.flush(t0 + WINDOW, |k, n| flushed.push((*k, n)));
        assert_eq!(flushed, [(1, 2)], "key 2 had no repeats");
        // Still counted after the flush; forgotten a window after its last line.
        assert_eq!(lines(&repeats, 1, t0 + WINDOW + Duration::from_secs(1)), 0);
        let mut flushed = Vec::new();
        repeats.flush(t0 + WINDOW * 2, |k, n| flushed.push((*k, n)));
        assert_eq!(flushed, [(1, 1)]);
        repeats.flush(t0 + WINDOW * 3, |_, _| panic!("nothing repeated"));
        assert_eq!(repeats.len(), 0, "keys without repeats for a window are forgotten");
        assert_eq!(lines(&repeats, 1, t0 + WINDOW * 3), 1);
    }

    #[test]
    fn a_key_not_flushed_is_written_again_after_its_window() {
        let repeats = Repeats::default();
        let t0 = Instant::now();
        assert_eq!(lines(&repeats, 7, t0), 1);
        assert_eq!(lines(&repeats, 7, t0 + WINDOW), 1);
        assert_eq!(lines(&repeats, 7, t0 + WINDOW + Duration::from_secs(1)), 0);
    }

    #[test]
    fn beyond_the_bound_every_line_is_written() {
        let repeats = Repeats::default();
        let t0 = Instant::now();
        let keys = u32::try_from(MAX_KEYS * 2).unwrap_or(u32::MAX);
        let written: usize = (0..keys).map(|k| lines(&repeats, k, t0)).sum();
        assert_eq!(written, MAX_KEYS * 2, "every first line is written");
        assert!(repeats.len() <= MAX_KEYS, "{} keys remembered", repeats.len());
        let again: usize = (0..keys).map(|k| lines(&repeats, k, t0)).sum();
        assert_eq!(again, MAX_KEYS * 2 - repeats.len(), "only the keys remembered are counted");
    }
}
