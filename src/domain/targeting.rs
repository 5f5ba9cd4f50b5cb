//! Which users' Macs enroll through the partner: include and exclude *user* groups,
//! exclude always wins (DOMAIN rule 1).

use std::collections::HashSet;

use super::model::GroupKind;
use super::state::State;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnrollmentTarget {
    /// In an include group and in no exclude group.
    Partner,
    /// In an exclude group (whatever else): enrolls directly with the engine.
    Direct,
    /// In neither.
    NotTargeted,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrollment {
    pub target: EnrollmentTarget,
    /// The include groups the user is in.
    pub include_group_ids: Vec<String>,
    /// The exclude groups the user is in.
    pub exclude_group_ids: Vec<String>,
}

/// Resolves a user's enrollment against the given include and exclude groups.
pub fn resolve(state: &State, user_id: &str, include: &[String], exclude: &[String]) -> Enrollment {
    let groups = state.groups_of(user_id);
    let matched = |ids: &[String]| -> Vec<String> {
        ids.iter()
            .filter(|id| groups.contains(id) && state.group(id).is_some_and(|g| g.kind == GroupKind::User))
            .cloned()
            .collect()
    };
    let include_group_ids = matched(include);
    let exclude_group_ids = matched(exclude);
    let target = if !exclude_group_ids.is_empty() {
        EnrollmentTarget::Direct
    } else if !include_group_ids.is_empty() {
        EnrollmentTarget::Partner
    } else {
        EnrollmentTarget::NotTargeted
    };
    Enrollment { target, include_group_ids, exclude_group_ids }
}

/// Resolves a user's enrollment against the saved connector configuration.
pub fn resolve_saved(state: &State, user_id: &str) -> Enrollment {
    let c = state.connector();
    resolve(state, user_id, &c.include_group_ids, &c.exclude_group_ids)
}

/// What a targeting configuration would do if saved (the "Evaluate" button).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Preview {
    pub users_to_partner: u64,
    pub devices_to_partner: u64,
    pub users_excluded: u64,
    pub devices_excluded: u64,
    pub users_not_targeted: u64,
    pub devices_not_targeted: u64,
}

/// Counts over every known user. Groups must be user groups (checked by the caller).
pub fn preview(state: &State, include: &[String], exclude: &[String]) -> Preview {
    let members = |ids: &[String]| -> HashSet<&str> {
        ids.iter()
            .filter_map(|id| state.group(id))
            .filter(|g| g.kind == GroupKind::User)
            .flat_map(|g| g.members.iter().map(String::as_str))
            .filter(|u| state.user(u).is_some())
            .collect()
    };
    let excluded = members(exclude);
    let included = members(include);
    let devices = |u: &str| state.devices_of_user(u).len() as u64;
    let mut p = Preview::default();
    for u in &excluded {
        p.users_excluded += 1;
        p.devices_excluded += devices(u);
    }
    for u in included.iter().filter(|u| !excluded.contains(*u)) {
        p.users_to_partner += 1;
        p.devices_to_partner += devices(u);
    }
    p.users_not_targeted = state.user_count() as u64 - p.users_to_partner - p.users_excluded;
    p.devices_not_targeted = state.device_count() as u64 - p.devices_to_partner - p.devices_excluded;
    p
}
