//! Grace-period bookkeeping: for each device and each policy it fails, when its failure began
//! to count. Every write derives it from the state before the write and the changes the write
//! makes, and logs it with them, so that:
//! - a Mac's grace period runs from the first moment it was known to fail the policy — at the
//!   check-in that showed it, or at the write that made a requirement stricter or made the
//!   policy apply to it (an assignment, a group's members);
//! - a failure that continues keeps its start, whatever else is edited: a grace period that
//!   has ended stays ended;
//! - a Mac that stops failing (or that the policy stops applying to) loses its record, so a
//!   later failure is a new one; a deleted device record keeps its failures, so the Mac's next
//!   report continues them; so does a Mac while the partner reports verdicts for it, and one
//!   back from a noncompliant verdict gets no grace for what it fails;
//! - a grace period's end is recorded with it: a longer grace period extends the ones still
//!   running, a shorter one applies at once, and one that has ended stays ended.
//!
//! Every replica applies the same logged records; nothing here depends on when a report
//! arrives or which replica computes a decision.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::compliance;
use super::model::{Assignment, Device, Failure, Group, GroupKind, Policy, Timestamp};
use super::parallel;
use super::state::{Change, State};

/// The bookkeeping changes (`PutFailing`, `DeleteFailing`) that `changes` imply when applied
/// to `state` at `now`. A failure that a report shows starts at that report's check-in (never
/// after `now`); one that an edit causes starts at `now`. Its grace period ends the policy's
/// grace period later.
pub fn derive(state: &State, changes: &[Change], now: Timestamp) -> Vec<Change> {
    let after = After::new(state, changes);
    let policies = after.policies();
    // Each Mac's bookkeeping reads the state and the changes alone: spread over the cores.
    let affected = after.affected_devices();
    let per_device = parallel::map(&affected, parallel::PER_THREAD, |device_id| {
        let mut out = Vec::new();
        let Some(device) = after.device(device_id) else { return out };
        if device.partner_verdict.is_some() {
            // The partner decides compliance itself: policies are not evaluated, and the
            // failures on record wait, unchanged, for its return to inventory mode.
            return out;
        }
        let failing: BTreeMap<&str, &Policy> = policies
            .iter()
            .filter(|p| after.applies(&p.id, &device.user_id) && compliance::fails(&p.settings, device))
            .map(|p| (p.id.as_str(), *p))
            .collect();
        let reported = match after.check_ins.get(device_id) {
            Some(at) => Some(*at),
            None => after.devices.get(device_id).copied().flatten().map(|d| d.last_check_in),
        };
        let since = reported.map_or(now, |at| at.min(now));
        // Back from a noncompliant partner verdict, the Mac was already known to fail: a change
        // of mode buys no grace.
        let was_noncompliant = state.device(device_id).and_then(|d| d.partner_verdict).filter(|v| !v.compliant);
        let new_failure = |policy: &Policy| match was_noncompliant {
            Some(v) => Failure { since: since.min(v.decided_at), grace_ends: since.min(v.decided_at) },
            None => Failure { since, grace_ends: since.plus_hours(grace_hours(policy)) },
        };
        for (policy_id, policy) in &failing {
            let failure = match state.failure(device_id, policy_id) {
                None => Some(new_failure(policy)),
                Some(old) => regraced(old, state.policy(policy_id), policy, now),
            };
            if let Some(failure) = failure {
                out.push(Change::PutFailing {
                    device_id: device_id.to_string(),
                    policy_id: policy_id.to_string(),
                    failure,
                });
            }
        }
        for (policy_id, _) in state.failures_of(device_id) {
            // A deleted policy's records go with it.
            if !failing.contains_key(policy_id) && after.policy(policy_id).is_some() {
                out.push(Change::DeleteFailing { device_id: device_id.to_string(), policy_id: policy_id.to_string() });
            }
        }
        out
    });
    per_device.into_iter().flatten().collect()
}

fn grace_hours(policy: &Policy) -> i64 {
    i64::from(policy.grace_period_hours)
}

/// A continuing failure once its policy's grace period changed (`None`: no change). A shorter
/// grace period applies at once; a longer one extends a grace period still running; one that
/// has ended stays ended.
fn regraced(old: Failure, before: Option<&Policy>, after: &Policy, now: Timestamp) -> Option<Failure> {
    if before.map(grace_hours) == Some(grace_hours(after)) {
        return None;
    }
    let wanted = old.since.plus_hours(grace_hours(after));
    let grace_ends = if wanted < old.grace_ends || now < old.grace_ends { wanted } else { old.grace_ends };
    (grace_ends != old.grace_ends).then_some(Failure { grace_ends, ..old })
}

/// The state as it will be once `changes` are applied, for the entities bookkeeping reads.
struct After<'a> {
    state: &'a State,
    policies: HashMap<&'a str, Option<&'a Policy>>,
    assignments: HashMap<&'a str, Option<&'a Assignment>>,
    /// Changed groups, with their new members as a set.
    groups: HashMap<&'a str, Option<(&'a Group, HashSet<&'a str>)>>,
    devices: HashMap<&'a str, Option<&'a Device>>,
    /// Reports that changed only a Mac's check-in: its facts stand, the report's time is new.
    check_ins: HashMap<&'a str, Timestamp>,
}

impl<'a> After<'a> {
    fn new(state: &'a State, changes: &'a [Change]) -> Self {
        let mut after = After {
            state,
            policies: HashMap::new(),
            assignments: HashMap::new(),
            groups: HashMap::new(),
            devices: HashMap::new(),
            check_ins: HashMap::new(),
        };
        for change in changes {
            match change {
                Change::PutPolicy(p) => {
                    after.policies.insert(&p.id, Some(p));
                }
                Change::DeletePolicy(id) => {
                    after.policies.insert(id, None);
                    after.assignments.insert(id, None);
                }
                Change::PutAssignment(a) => {
                    let empty = a.include_group_ids.is_empty() && a.exclude_group_ids.is_empty();
                    after.assignments.insert(&a.policy_id, (!empty).then_some(a));
                }
                Change::PutGroup(g) => {
                    after.groups.insert(&g.id, Some((g, g.members.iter().map(String::as_str).collect())));
                }
                Change::DeleteGroup(id) => {
                    after.groups.insert(id, None);
                }
                Change::PutDevice(d) => {
                    after.devices.insert(&d.id, Some(d));
                }
                Change::CheckIn { device_id, at } => {
                    after.check_ins.insert(device_id, *at);
                }
                Change::DeleteDevice(id) => {
                    after.devices.insert(id, None);
                }
                Change::PutUser(_)
                | Change::DeleteUser(_)
                | Change::PutConnector(_)
                | Change::PutSettings(_)
                | Change::PutFailing { .. }
                | Change::DeleteFailing { .. }
                | Change::PutHeartbeat(_) => {}
            }
        }
        after
    }

    fn policy(&self, id: &str) -> Option<&'a Policy> {
        match self.policies.get(id) {
            Some(p) => *p,
            None => self.state.policy(id),
        }
    }

    fn policies(&self) -> Vec<&'a Policy> {
        let kept = self.state.policies().filter(|p| !self.policies.contains_key(p.id.as_str()));
        kept.chain(self.policies.values().flatten().copied()).collect()
    }

    fn assignment(&self, policy_id: &str) -> Option<&'a Assignment> {
        match self.assignments.get(policy_id) {
            Some(a) => *a,
            None => self.state.assignment(policy_id),
        }
    }

    fn is_user_group(&self, id: &str) -> bool {
        match self.groups.get(id) {
            Some(g) => g.as_ref().is_some_and(|(g, _)| g.kind == GroupKind::User),
            None => self.state.group(id).is_some_and(|g| g.kind == GroupKind::User),
        }
    }

    fn is_member(&self, group_id: &str, member_id: &str) -> bool {
        match self.groups.get(group_id) {
            Some(g) => g.as_ref().is_some_and(|(_, members)| members.contains(member_id)),
            None => self.state.in_group(member_id, group_id),
        }
    }

    /// Does the policy's assignment reach the user? Exclude wins; only user groups count.
    fn applies(&self, policy_id: &str, user_id: &str) -> bool {
        let Some(a) = self.assignment(policy_id) else { return false };
        let reaches = |ids: &[String]| ids.iter().any(|g| self.is_user_group(g) && self.is_member(g, user_id));
        reaches(&a.include_group_ids) && !reaches(&a.exclude_group_ids)
    }

    fn device(&self, id: &str) -> Option<&'a Device> {
        match self.devices.get(id) {
            Some(d) => *d,
            None => self.state.device(id),
        }
    }

    /// Every device whose failures the changes can alter, sorted.
    fn affected_devices(&self) -> Vec<&'a str> {
        let mut affected: HashSet<&'a str> = self.devices.keys().chain(self.check_ins.keys()).copied().collect();
        let mut users: HashSet<&'a str> = HashSet::new();
        // A policy whose settings or assignment change: the devices it fails now, and those
        // of every user it will reach.
        let rules: HashSet<&str> = self.policies.keys().chain(self.assignments.keys()).copied().collect();
        for policy_id in rules {
            affected.extend(self.state.devices_failing(policy_id));
            if let Some(a) = self.assignment(policy_id) {
                for g in &a.include_group_ids {
                    users.extend(self.members_after(g));
                }
            }
        }
        // A group whose members change, when an assignment names it: the users who join or leave.
        if !self.groups.is_empty() {
            let named: HashSet<&str> = self
                .state
                .policies()
                .map(|p| p.id.as_str())
                .chain(self.assignments.keys().copied())
                .filter_map(|id| self.assignment(id))
                .flat_map(|a| a.include_group_ids.iter().chain(&a.exclude_group_ids))
                .map(String::as_str)
                .collect();
            for (id, new) in &self.groups {
                if !named.contains(id) {
                    continue;
                }
                let old: HashSet<&str> = self.state.group(id).map(|g| g.members().collect()).unwrap_or_default();
                let new = new.as_ref().map(|(_, members)| members.clone()).unwrap_or_default();
                users.extend(old.symmetric_difference(&new).copied());
            }
        }
        for user in users {
            affected.extend(self.state.devices_of_user(user));
        }
        let mut affected: Vec<&str> = affected.into_iter().collect();
        affected.sort_unstable();
        affected
    }

    /// The members of a group as it will be.
    fn members_after(&self, group_id: &str) -> Vec<&'a str> {
        match self.groups.get(group_id) {
            Some(g) => g.as_ref().map(|(g, _)| g.members.iter().map(String::as_str).collect()).unwrap_or_default(),
            None => self.state.group(group_id).map(|g| g.members().collect()).unwrap_or_default(),
        }
    }
}
