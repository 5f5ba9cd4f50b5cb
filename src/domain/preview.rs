//! PreviewPolicy: "whose Macs will this lock out?" Given the state, the changes a draft's
//! write would make (its bookkeeping included) and `now`, every Mac is decided as it is and as
//! it would be once the changes are applied, and the decisions that would change are counted
//! and listed. Pure: the caller hands in its own copy of the state, which is left as it would
//! be after the changes (the listed Macs' policy results borrow from it).

use std::collections::BTreeMap;

use super::access::{self, DeviceDecision, ReasonCode};
use super::compliance::{self, ComplianceState, Detail, PolicyResult};
use super::model::Timestamp;
use super::parallel;
use super::state::{Change, State};
use super::summary::Tally;

/// How a Mac's decision would change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Shift {
    /// ALLOW now, DENY once saved: locked out.
    AllowToDeny,
    /// DENY now, ALLOW once saved.
    DenyToAllow,
    /// The same decision, and the state becomes IN_GRACE_PERIOD (it was not): the clock of a
    /// grace period starts (or goes on) for it.
    IntoGrace,
    /// The same decision, not newly in grace (its state or reasons may still differ).
    Unchanged,
}

impl Shift {
    pub fn of(before: &DeviceDecision, after: &DeviceDecision) -> Shift {
        match (before.allow, after.allow) {
            (true, false) => Shift::AllowToDeny,
            (false, true) => Shift::DenyToAllow,
            _ if after.state == ComplianceState::InGracePeriod && before.state != ComplianceState::InGracePeriod => {
                Shift::IntoGrace
            }
            _ => Shift::Unchanged,
        }
    }
}

/// One Mac whose decision would change.
#[derive(Debug, Clone)]
pub struct Previewed<'a> {
    pub before: DeviceDecision,
    pub after: DeviceDecision,
    /// The policies that apply to it once saved, with their failing settings (what decides it).
    pub policies: Vec<PolicyResult<'a>>,
}

#[derive(Debug, Clone, Default)]
pub struct PolicyPreview<'a> {
    pub allow_to_deny: u64,
    pub deny_to_allow: u64,
    pub into_grace: u64,
    pub unchanged: u64,
    /// Over the Macs whose decision would change: their new decisions' reason codes →
    /// (devices, distinct users).
    pub by_reason: BTreeMap<ReasonCode, (u64, u64)>,
    /// The first Macs (by device id) of each kind that changes, at most `examples` each.
    pub locked_out: Vec<Previewed<'a>>,
    pub let_in: Vec<Previewed<'a>>,
    pub entering_grace: Vec<Previewed<'a>>,
}

/// Decides every Mac of `state` at `now`, applies `changes` to `state`, decides them again,
/// and compares. `examples`: how many Macs of each kind to list.
pub fn preview(state: &mut State, changes: Vec<Change>, now: Timestamp, examples: usize) -> PolicyPreview<'_> {
    let mut ids: Vec<String> = state.devices().map(|d| d.id.to_string()).collect();
    ids.sort_unstable();
    let before = decide_all(state, &ids, now);
    for change in changes {
        state.apply(change);
    }
    let state: &State = state;
    let after = decide_all(state, &ids, now);
    let mut p = PolicyPreview::default();
    let mut changed: Tally = Tally::default();
    for ((id, before), after) in ids.iter().zip(before).zip(after) {
        let shift = Shift::of(&before, &after);
        let (count, list) = match shift {
            Shift::AllowToDeny => (&mut p.allow_to_deny, &mut p.locked_out),
            Shift::DenyToAllow => (&mut p.deny_to_allow, &mut p.let_in),
            Shift::IntoGrace => (&mut p.into_grace, &mut p.entering_grace),
            Shift::Unchanged => {
                p.unchanged += 1;
                continue;
            }
        };
        *count += 1;
        changed.add(&after);
        if list.len() < examples {
            let policies = match state.device(id) {
                Some(device) => compliance::evaluate(state, device, now, Detail::Failing).policies,
                None => vec![],
            };
            list.push(Previewed { before, after, policies });
        }
    }
    p.by_reason = changed.summary().by_reason;
    p
}

/// The decisions of `ids`, in order, spread over the machine's cores.
fn decide_all(state: &State, ids: &[String], now: Timestamp) -> Vec<DeviceDecision> {
    parallel::map(ids, parallel::PER_THREAD, |id| access::decide(state, id, now))
}
