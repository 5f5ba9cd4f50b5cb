//! The decision cache: one entry per device, holding the decision for its primary user.
//!
//! Never stale, by construction:
//! - the engine inserts only while holding the state's read lock and invalidates while
//!   holding its write lock, so no decision computed before a write lands after it;
//! - every write drops exactly the devices it touched (or everything, for global changes);
//! - each entry holds only until `valid_until`, the next instant at which time alone would
//!   change it, checked on every hit (moka's own expiry just frees the memory).

use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;

use crate::domain::access::DeviceDecision;
use crate::domain::{Timestamp, Touched};

#[derive(Clone)]
pub struct DecisionCache {
    inner: Cache<String, Arc<DeviceDecision>, foldhash::fast::RandomState>,
}

struct UntilTimeChangesIt;

impl moka::Expiry<String, Arc<DeviceDecision>> for UntilTimeChangesIt {
    fn expire_after_create(&self, _: &String, d: &Arc<DeviceDecision>, _: std::time::Instant) -> Option<Duration> {
        let until = d.valid_until?;
        let now = crate::clock::Clock::now(&crate::clock::SystemClock);
        Some(Duration::from_secs(until.0.saturating_sub(now.0).max(0) as u64))
    }
}

impl DecisionCache {
    pub fn new(capacity: u64) -> Self {
        let builder = Cache::builder().max_capacity(capacity).expire_after(UntilTimeChangesIt);
        DecisionCache { inner: builder.build_with_hasher(foldhash::fast::RandomState::default()) }
    }

    /// The cached decision for `device_id` if it still holds at `now`; otherwise computes it
    /// once (concurrent misses on one key wait for a single evaluation) and caches it.
    pub fn get_or_compute(
        &self,
        device_id: &str,
        now: Timestamp,
        compute: impl Fn() -> DeviceDecision,
    ) -> Arc<DeviceDecision> {
        if let Some(d) = self.inner.get(device_id) {
            if d.valid_until.is_none_or(|t| now < t) {
                return d;
            }
            self.inner.invalidate(device_id);
        }
        let d = self.inner.get_with_by_ref(device_id, || Arc::new(compute()));
        if d.valid_until.is_some_and(|t| now >= t) {
            // Another caller's entry, made at an earlier instant, that no longer holds.
            self.inner.invalidate(device_id);
            return Arc::new(compute());
        }
        d
    }

    pub fn invalidate(&self, touched: &Touched) {
        if touched.all {
            self.inner.invalidate_all();
        } else {
            for d in &touched.devices {
                self.inner.invalidate(d);
            }
        }
    }

    pub fn entry_count(&self) -> u64 {
        self.inner.entry_count()
    }
}
