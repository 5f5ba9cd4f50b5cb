//! The instants at which time alone changes a device's decision (its `valid_until`): the
//! watcher's ticker looks here for what to decide again. Devices are named by their position
//! in the journal (4 bytes, for good: the journal never removes one), not by their ids.

use std::collections::BTreeSet;

use crate::domain::Timestamp;

#[derive(Debug, Default)]
pub(super) struct Schedule {
    at: BTreeSet<(Timestamp, u32)>,
}

impl Schedule {
    /// Moves `device` from `from` to `to` (either may be `None`: not scheduled).
    pub(super) fn reschedule(&mut self, device: u32, from: Option<Timestamp>, to: Option<Timestamp>) {
        if from == to {
            return;
        }
        if let Some(t) = from {
            self.at.remove(&(t, device));
        }
        if let Some(t) = to {
            self.at.insert((t, device));
        }
    }

    /// The earliest instant scheduled.
    pub(super) fn next(&self) -> Option<Timestamp> {
        self.at.first().map(|(t, _)| *t)
    }

    /// Every device scheduled at or before `now`, with its instant, by instant.
    pub(super) fn due(&self, now: Timestamp) -> Vec<(Timestamp, u32)> {
        self.at.range(..=(now, u32::MAX)).copied().collect()
    }
}
