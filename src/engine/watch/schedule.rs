//! The instants at which time alone changes a device's decision (its `valid_until`): the
//! watcher's ticker looks here for what to decide again.

use std::collections::{BTreeMap, BTreeSet};

use crate::domain::Timestamp;

#[derive(Debug, Default)]
pub(super) struct Schedule {
    at: BTreeMap<Timestamp, BTreeSet<String>>,
}

impl Schedule {
    /// Moves `device` from `from` to `to` (either may be `None`: not scheduled).
    pub(super) fn reschedule(&mut self, device: &str, from: Option<Timestamp>, to: Option<Timestamp>) {
        if let Some(t) = from
            && let Some(ids) = self.at.get_mut(&t)
        {
            ids.remove(device);
            if ids.is_empty() {
                self.at.remove(&t);
            }
        }
        if let Some(t) = to {
            self.at.entry(t).or_default().insert(device.to_string());
        }
    }

    /// The earliest instant scheduled.
    pub(super) fn next(&self) -> Option<Timestamp> {
        self.at.first_key_value().map(|(t, _)| *t)
    }

    /// Every device scheduled at or before `now`, in instant then id order.
    pub(super) fn due(&self, now: Timestamp) -> Vec<String> {
        self.at.range(..=now).flat_map(|(_, ids)| ids.iter().cloned()).collect()
    }
}
