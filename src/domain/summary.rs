//! Counts of devices by compliance state and by reason: how many users and devices a
//! problem affects, answered by the service itself (DOMAIN rule 11).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::Hash;

use foldhash::fast::RandomState;

use super::access::{self, DeviceDecision, Reason, ReasonCode};
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

/// Counts of decisions, kept up to date one decision at a time: what a summary says without
/// deciding every device again. Users are told apart by `U`: their ids, or the numbers a
/// caller gave them (a million Macs' counts then hold numbers, not copies of ids).
#[derive(Debug, Clone)]
pub struct Tally<U = String> {
    devices: u64,
    allowed: u64,
    by_state: BTreeMap<ComplianceState, u64>,
    /// reason → (devices, how many of those devices each user has)
    by_reason: BTreeMap<ReasonCode, (u64, HashMap<U, u32, RandomState>)>,
}

impl<U> Default for Tally<U> {
    fn default() -> Self {
        Tally { devices: 0, allowed: 0, by_state: BTreeMap::new(), by_reason: BTreeMap::new() }
    }
}

/// What a tally counts of one decision: its user (`None`: an unknown device, which counts for
/// nothing), outcome, state and reasons.
#[derive(Debug, Clone, Copy)]
pub struct Counted<'a, U = String> {
    pub user: Option<&'a U>,
    pub allow: bool,
    pub state: ComplianceState,
    pub reasons: &'a [Reason],
}

impl<'a> From<&'a DeviceDecision> for Counted<'a> {
    fn from(d: &'a DeviceDecision) -> Self {
        Counted { user: d.primary_user_id.as_ref(), allow: d.allow, state: d.state, reasons: &d.reasons }
    }
}

impl<U: Eq + Hash + Clone> Tally<U> {
    /// Counts a device's decision (an unknown device's counts for nothing).
    pub fn add<'a>(&mut self, d: impl Into<Counted<'a, U>>)
    where
        U: 'a,
    {
        let d = d.into();
        let Some(user) = d.user else { return };
        self.devices += 1;
        self.allowed += u64::from(d.allow);
        *self.by_state.entry(d.state).or_default() += 1;
        for code in distinct_codes(d.reasons) {
            let (devices, users) = self.by_reason.entry(code).or_default();
            *devices += 1;
            match users.get_mut(user) {
                Some(n) => *n += 1,
                None => {
                    users.insert(user.clone(), 1);
                }
            }
        }
    }

    /// Takes back a decision counted before.
    pub fn remove<'a>(&mut self, d: impl Into<Counted<'a, U>>)
    where
        U: 'a,
    {
        let d = d.into();
        let Some(user) = d.user else { return };
        self.devices -= 1;
        self.allowed -= u64::from(d.allow);
        decrement(&mut self.by_state, d.state);
        for code in distinct_codes(d.reasons) {
            if let Some((devices, users)) = self.by_reason.get_mut(&code) {
                *devices -= 1;
                if let Some(n) = users.get_mut(user) {
                    *n -= 1;
                    if *n == 0 {
                        users.remove(user);
                    }
                }
                if *devices == 0 {
                    self.by_reason.remove(&code);
                }
            }
        }
    }

    pub fn summary(&self) -> Summary {
        Summary {
            devices: self.devices,
            allowed: self.allowed,
            denied: self.devices - self.allowed,
            by_state: self.by_state.clone(),
            by_reason: self.by_reason.iter().map(|(code, (d, users))| (*code, (*d, users.len() as u64))).collect(),
        }
    }
}

/// A decision's reason codes, each once.
fn distinct_codes(reasons: &[Reason]) -> BTreeSet<ReasonCode> {
    reasons.iter().map(|r| r.code).collect()
}

fn decrement<K: Ord>(map: &mut BTreeMap<K, u64>, key: K) {
    if let Some(n) = map.get_mut(&key) {
        *n -= 1;
        if *n == 0 {
            map.remove(&key);
        }
    }
}

/// Every device decided afresh, and counted.
pub fn summarize(state: &State, now: Timestamp) -> Summary {
    let mut tally: Tally = Tally::default();
    for device in state.devices() {
        tally.add(&access::decide(state, &device.id, now));
    }
    tally.summary()
}
