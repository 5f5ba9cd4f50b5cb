//! Counts of devices by compliance state and by reason: how many users and devices a
//! problem affects, answered by the service itself (DOMAIN rule 11).

use std::collections::{BTreeMap, HashSet};

use super::access::{self, ReasonCode};
use super::compliance::ComplianceState;
use super::model::Timestamp;
use super::state::State;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub devices: u64,
    pub allowed: u64,
    pub denied: u64,
    pub by_state: BTreeMap<ComplianceState, u64>,
    /// reason → (devices, distinct users)
    pub by_reason: BTreeMap<ReasonCode, (u64, u64)>,
}

pub fn summarize(state: &State, now: Timestamp) -> Summary {
    let mut s = Summary::default();
    let mut users: BTreeMap<ReasonCode, HashSet<&str>> = BTreeMap::new();
    for device in state.devices() {
        let d = access::decide(state, &device.id, now);
        s.devices += 1;
        if d.allow {
            s.allowed += 1;
        } else {
            s.denied += 1;
        }
        *s.by_state.entry(d.state).or_default() += 1;
        let mut seen = HashSet::new();
        for r in &d.reasons {
            if seen.insert(r.code) {
                s.by_reason.entry(r.code).or_default().0 += 1;
                users.entry(r.code).or_default().insert(device.user_id.as_str());
            }
        }
    }
    for (code, u) in users {
        if let Some(e) = s.by_reason.get_mut(&code) {
            e.1 = u.len() as u64;
        }
    }
    s
}
