//! Administrative writes: each validates against the current state, then commits.

use super::Engine;
use crate::domain::access::{REMOVAL_AFTER_DAYS, minimum_partner_version};
use crate::domain::model::{Assignment, Connector, ConnectorState, Group, GroupKind, Policy, TenantSettings, User};
use crate::domain::{Change, State};
use crate::error::{Error, Result};

/// The include and exclude groups of a policy assignment or of the connector.
#[derive(Debug, Clone, Default)]
pub struct GroupTargets {
    pub include: Vec<String>,
    pub exclude: Vec<String>,
}

/// Partner enrollment and compliance policies take user groups only (DOMAIN rule 2).
pub fn check_user_groups(state: &State, field: &str, targets: &GroupTargets) -> Result<()> {
    for (list, ids) in [("include_group_ids", &targets.include), ("exclude_group_ids", &targets.exclude)] {
        for (i, id) in ids.iter().enumerate() {
            let field = format!("{field}{list}[{i}]");
            match state.group(id) {
                None => {
                    return Err(Error::FailedPrecondition(format!(
                        "{field}: group {id} is not in the directory; sync it first (AdminService/SyncDirectory)"
                    )));
                }
                Some(g) if g.kind == GroupKind::Device => {
                    return Err(Error::invalid(
                        field,
                        format!(
                            "group {id} is a device group; only user groups can be targeted: a compliance policy \
                             aimed at a device group does not evaluate partner-managed Macs"
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
    }
    Ok(())
}

impl Engine {
    pub async fn create_policy(&self, mut policy: Policy) -> Result<u64> {
        self.write(|state, now| {
            if state.policy(&policy.id).is_some() {
                return Err(Error::AlreadyExists(format!("policy {} already exists; use UpdatePolicy", policy.id)));
            }
            policy.updated_at = now;
            Ok(vec![Change::PutPolicy(policy)])
        })
        .await
    }

    pub async fn update_policy(&self, mut policy: Policy) -> Result<u64> {
        self.write(|state, now| {
            let Some(old) = state.policy(&policy.id) else {
                return Err(Error::NotFound(format!("no policy {}; use CreatePolicy", policy.id)));
            };
            policy.updated_at = old.updated_at;
            if *old == policy {
                return Ok(vec![]);
            }
            policy.updated_at = now;
            Ok(vec![Change::PutPolicy(policy)])
        })
        .await
    }

    pub async fn delete_policy(&self, id: &str) -> Result<u64> {
        self.write(|state, _| {
            if state.policy(id).is_none() {
                return Err(Error::NotFound(format!("no policy {id}")));
            }
            Ok(vec![Change::DeletePolicy(id.to_string())])
        })
        .await
    }

    pub async fn assign_policy(&self, policy_id: &str, targets: GroupTargets) -> Result<u64> {
        self.write(|state, _| {
            if state.policy(policy_id).is_none() {
                return Err(Error::NotFound(format!("no policy {policy_id}")));
            }
            check_user_groups(state, "assignment.", &targets)?;
            let a = Assignment {
                policy_id: policy_id.to_string(),
                include_group_ids: targets.include,
                exclude_group_ids: targets.exclude,
            };
            let unchanged = match state.assignment(policy_id) {
                Some(old) => *old == a,
                None => a.include_group_ids.is_empty() && a.exclude_group_ids.is_empty(),
            };
            Ok(if unchanged { vec![] } else { vec![Change::PutAssignment(a)] })
        })
        .await
    }

    pub async fn enable_connector(
        &self,
        partner_app_id: String,
        partner_version: crate::domain::version::OsVersion,
        targets: GroupTargets,
    ) -> Result<u64> {
        self.write(|state, now| {
            if partner_version < minimum_partner_version() {
                return Err(Error::invalid(
                    "partner_version",
                    format!(
                        "{partner_version} is older than {}, the oldest supported partner version",
                        minimum_partner_version()
                    ),
                ));
            }
            check_user_groups(state, "", &targets)?;
            let old = state.connector();
            let enabled_at = match old.state {
                ConnectorState::Enabled => old.enabled_at.or(Some(now)),
                _ => Some(now),
            };
            let c = Connector {
                state: ConnectorState::Enabled,
                partner_app_id,
                partner_version: Some(partner_version),
                include_group_ids: targets.include,
                exclude_group_ids: targets.exclude,
                enabled_at,
                terminated_at: None,
                removal_at: None,
            };
            Ok(if *old == c { vec![] } else { vec![Change::PutConnector(c)] })
        })
        .await
    }

    pub async fn terminate_connector(&self) -> Result<u64> {
        self.write(|state, now| {
            let old = state.connector();
            if old.state != ConnectorState::Enabled {
                return Err(Error::FailedPrecondition(format!(
                    "the connector is {:?}, not enabled: there is nothing to terminate",
                    old.state
                )));
            }
            let c = Connector {
                state: ConnectorState::Terminated,
                terminated_at: Some(now),
                removal_at: Some(now.plus_days(REMOVAL_AFTER_DAYS)),
                ..old.clone()
            };
            Ok(vec![Change::PutConnector(c)])
        })
        .await
    }

    pub async fn sync_directory(
        &self,
        users: Vec<User>,
        groups: Vec<Group>,
        removed_user_ids: Vec<String>,
        removed_group_ids: Vec<String>,
    ) -> Result<u64> {
        self.write(|state, _| {
            for (i, id) in removed_group_ids.iter().enumerate() {
                if let Some(user) = group_user(state, id) {
                    return Err(Error::FailedPrecondition(format!(
                        "removed_group_ids[{i}]: group {id} is used by {user}; remove it from there first"
                    )));
                }
            }
            let mut changes = Vec::new();
            changes.extend(users.into_iter().filter(|u| state.user(&u.id) != Some(u)).map(Change::PutUser));
            changes.extend(groups.into_iter().filter(|g| state.group(&g.id) != Some(g)).map(Change::PutGroup));
            changes.extend(removed_user_ids.into_iter().filter(|id| state.user(id).is_some()).map(Change::DeleteUser));
            changes
                .extend(removed_group_ids.into_iter().filter(|id| state.group(id).is_some()).map(Change::DeleteGroup));
            Ok(changes)
        })
        .await
    }

    pub async fn update_settings(&self, settings: TenantSettings) -> Result<u64> {
        self.write(|state, _| {
            Ok(if *state.settings() == settings { vec![] } else { vec![Change::PutSettings(settings)] })
        })
        .await
    }
}

/// What uses a group, if anything: a policy assignment or the connector.
fn group_user(state: &State, id: &str) -> Option<String> {
    let uses = |a: &[String], b: &[String]| a.iter().chain(b).any(|g| g == id);
    let c = state.connector();
    if uses(&c.include_group_ids, &c.exclude_group_ids) {
        return Some("the partner connector".into());
    }
    state
        .policies()
        .filter_map(|p| state.assignment(&p.id))
        .find(|a| uses(&a.include_group_ids, &a.exclude_group_ids))
        .map(|a| format!("the assignment of policy {}", a.policy_id))
}
