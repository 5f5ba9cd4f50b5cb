//! Which users' Macs enroll through the partner: include and exclude *user* groups,
//! exclude always wins (DOMAIN rule 1).

use std::collections::HashSet;

use foldhash::fast::RandomState;

use super::model::GroupKind;
use super::state::{State, Targets};

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
    /// The include groups the user is in, sorted.
    pub include_group_ids: Vec<String>,
    /// The exclude groups the user is in, sorted.
    pub exclude_group_ids: Vec<String>,
}

/// The user groups (only those: a device group never targets anyone) of `user_id` in `set`.
fn matching<'s>(
    state: &'s State,
    user_id: &str,
    set: &'s HashSet<String, RandomState>,
) -> impl Iterator<Item = &'s str> + 's {
    state
        .groups_of(user_id)
        .filter(move |g| set.contains(*g) && state.group(g).is_some_and(|g| g.kind == GroupKind::User))
}

/// Where `user_id` enrolls under `targets`, without saying why (the decision's fast path).
pub fn target(state: &State, user_id: &str, targets: &Targets) -> EnrollmentTarget {
    if matching(state, user_id, &targets.exclude).next().is_some() {
        EnrollmentTarget::Direct
    } else if matching(state, user_id, &targets.include).next().is_some() {
        EnrollmentTarget::Partner
    } else {
        EnrollmentTarget::NotTargeted
    }
}

/// Where `user_id` enrolls under `targets`, and the groups that decided it.
pub fn resolve(state: &State, user_id: &str, targets: &Targets) -> Enrollment {
    let sorted = |set| {
        let mut v: Vec<String> = matching(state, user_id, set).map(str::to_string).collect();
        v.sort();
        v
    };
    Enrollment {
        target: target(state, user_id, targets),
        include_group_ids: sorted(&targets.include),
        exclude_group_ids: sorted(&targets.exclude),
    }
}

/// Resolves a user's enrollment against the saved connector configuration.
pub fn resolve_saved(state: &State, user_id: &str) -> Enrollment {
    resolve(state, user_id, state.connector_targets())
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

/// Counts over every known user: excluded are the users in an exclude group (whether or not
/// also included), to the partner those in an include group and no exclude group.
pub fn preview(state: &State, include: &[String], exclude: &[String]) -> Preview {
    let (is_user, devices) = state.slots();
    let mark = |ids: &[String]| {
        let mut set = vec![false; is_user.len()];
        for id in ids {
            for s in state.group_member_slots(id) {
                set[*s as usize] = true;
            }
        }
        set
    };
    let (excluded, included) = (mark(exclude), mark(include));
    let mut p = Preview::default();
    for slot in (0..is_user.len()).filter(|s| is_user[*s]) {
        let n = u64::from(devices[slot]);
        if excluded[slot] {
            p.users_excluded += 1;
            p.devices_excluded += n;
        } else if included[slot] {
            p.users_to_partner += 1;
            p.devices_to_partner += n;
        }
    }
    p.users_not_targeted = state.user_count() as u64 - p.users_to_partner - p.users_excluded;
    p.devices_not_targeted = state.device_count() as u64 - p.devices_to_partner - p.devices_excluded;
    p
}
