//! The decision cache: one entry per device, holding the decision for its primary user.
//!
//! Never stale, by construction:
//! - the engine inserts only while holding the state's read lock and invalidates while
//!   holding its write lock, so no decision computed before a write lands after it;
//! - every write drops exactly the devices it touched (or everything, for global changes);
//! - each entry holds only until `valid_until`, the next instant at which time alone would
//!   change it, checked on every hit. (An expired entry is dead weight until the capacity
//!   bound evicts it; moka's per-entry expiry would free it sooner but costs ~35 ns a hit.)

use std::sync::Arc;

use moka::notification::RemovalCause;
use moka::sync::Cache;

use crate::telemetry::metrics::Counter;

use crate::domain::access::DeviceDecision;
use crate::domain::{Timestamp, Touched};

#[derive(Clone)]
pub struct DecisionCache {
    inner: Cache<String, Arc<DeviceDecision>, foldhash::fast::RandomState>,
}

impl DecisionCache {
    /// Counts into `evictions` each entry the capacity bound evicts.
    pub fn new(capacity: u64, evictions: Counter) -> Self {
        let builder = Cache::builder().max_capacity(capacity).eviction_listener(move |_, _, cause| {
            if cause == RemovalCause::Size {
                evictions.inc();
            }
        });
        DecisionCache { inner: builder.build_with_hasher(foldhash::fast::RandomState::default()) }
    }

    /// The cached decision for `device_id`, if there is one that still holds at `now`.
    pub fn get(&self, device_id: &str, now: Timestamp) -> Option<Arc<DeviceDecision>> {
        self.inner.get(device_id).filter(|d| d.valid_until.is_none_or(|t| now < t))
    }

    /// The cached decision for `device_id` if it still holds at `now`; otherwise computes it
    /// once (concurrent misses on one key wait for a single evaluation) and caches it.
    pub fn get_or_compute(
        &self,
        device_id: &str,
        now: Timestamp,
        compute: impl Fn() -> DeviceDecision,
    ) -> Arc<DeviceDecision> {
        let holds = |d: &Arc<DeviceDecision>| d.valid_until.is_none_or(|t| now < t);
        let d = self.inner.get_with_by_ref(device_id, || Arc::new(compute()));
        if holds(&d) {
            return d;
        }
        // An entry made at an earlier instant that no longer holds: replace it.
        self.inner.invalidate(device_id);
        let d = self.inner.get_with_by_ref(device_id, || Arc::new(compute()));
        if holds(&d) { d } else { Arc::new(compute()) }
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::domain::access::DeviceDecision;
    use crate::domain::compliance::ComplianceState;

    fn decision(valid_until: Option<Timestamp>) -> DeviceDecision {
        DeviceDecision {
            device_id: "mac".into(),
            primary_user_id: Some("ada".into()),
            allow: true,
            state: ComplianceState::Compliant,
            reasons: Arc::new([]),
            valid_until,
        }
    }

    #[test]
    fn concurrent_misses_on_one_key_evaluate_once() {
        let cache = DecisionCache::new(100, Counter::default());
        let evaluations = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    cache.get_or_compute("mac", Timestamp(0), || {
                        evaluations.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(50));
                        decision(None)
                    })
                });
            }
        });
        assert_eq!(evaluations.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn an_entry_stops_holding_at_its_valid_until() {
        let cache = DecisionCache::new(100, Counter::default());
        cache.get_or_compute("mac", Timestamp(10), || decision(Some(Timestamp(20))));
        assert!(cache.get("mac", Timestamp(19)).is_some());
        assert!(cache.get("mac", Timestamp(20)).is_none(), "at valid_until the entry no longer holds");
        let evaluated = AtomicUsize::new(0);
        cache.get_or_compute("mac", Timestamp(20), || {
            evaluated.fetch_add(1, Ordering::SeqCst);
            decision(Some(Timestamp(30)))
        });
        assert_eq!(evaluated.load(Ordering::SeqCst), 1, "an expired entry is evaluated again");
    }
}
