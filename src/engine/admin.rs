//! Administrative writes: each validates against the current state, then commits.

use super::Engine;
use crate::domain::access::{REMOVAL_AFTER_DAYS, minimum_partner_version};
use crate::domain::diagnosis::PartnerCredential;
use crate::domain::model::{Assignment, Connector, ConnectorState, Group, GroupKind, Policy, TenantSettings, User};
use crate::domain::version::OsVersion;
use crate::domain::{Change, State, Timestamp};
use crate::error::{Error, Result};

/// Devices removed per commit when a terminated connector's removal date comes.
const REMOVAL_BATCH: usize = 1_000;

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
    pub async fn create_policy(&self, policy: Policy) -> Result<u64> {
        self.write_admin(|state, now| create_policy_changes(state, now, &policy)).await
    }

    pub async fn update_policy(&self, policy: Policy) -> Result<u64> {
        self.write_admin(|state, now| update_policy_changes(state, now, &policy)).await
    }

    pub async fn delete_policy(&self, id: &str) -> Result<u64> {
        self.write_admin(|state, _| delete_policy_changes(state, id)).await
    }

    pub async fn assign_policy(&self, policy_id: &str, targets: GroupTargets) -> Result<u64> {
        self.write_admin(|state, _| assign_policy_changes(state, policy_id, &targets)).await
    }

    pub async fn enable_connector(
        &self,
        partner_app_id: String,
        partner_version: OsVersion,
        targets: GroupTargets,
    ) -> Result<u64> {
        if partner_version < minimum_partner_version() {
            return Err(Error::invalid(
                "partner_version",
                format!(
                    "{partner_version} is older than {}, the oldest supported partner version",
                    minimum_partner_version()
                ),
            ));
        }
        // The partner's credential may report inventory and nothing else (DOMAIN rule 8).
        match self.credentials().partner_credential(&partner_app_id) {
            PartnerCredential::LeastPrivilege | PartnerCredential::NotChecked => {}
            PartnerCredential::Missing => {
                return Err(Error::FailedPrecondition(format!(
                    "partner_app_id: no credential {partner_app_id} is configured; the partner reports with its own \
                     credential, which must have the partner role: configure it first"
                )));
            }
            PartnerCredential::ExtraPermissions => {
                return Err(Error::FailedPrecondition(format!(
                    "partner_app_id: credential {partner_app_id} does not have the partner role; the partner's \
                     credential must have the partner role and nothing more"
                )));
            }
        }
        self.write_admin(|state, now| {
            check_user_groups(state, "", &targets)?;
            let old = state.connector();
            let enabled_at = match old.state {
                ConnectorState::Enabled => old.enabled_at.or(Some(now)),
                _ => Some(now),
            };
            let c = Connector {
                state: ConnectorState::Enabled,
                partner_app_id: partner_app_id.clone(),
                partner_version: Some(partner_version),
                include_group_ids: targets.include.clone(),
                exclude_group_ids: targets.exclude.clone(),
                enabled_at,
                terminated_at: None,
                removal_at: None,
            };
            Ok(if *old == c { vec![] } else { vec![Change::PutConnector(c)] })
        })
        .await
    }

    pub async fn terminate_connector(&self) -> Result<u64> {
        self.write_admin(|state, now| {
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
        self.write_admin(|state, _| {
            for (i, id) in removed_group_ids.iter().enumerate() {
                if let Some(users) = group_users(state, id) {
                    return Err(Error::FailedPrecondition(format!(
                        "removed_group_ids[{i}]: group {id} is used by {users}; remove it from there first"
                    )));
                }
            }
            // A group in use that changed kind would silently stop a policy or an exclusion.
            for (i, g) in groups.iter().enumerate() {
                if let Some(old) = state.group(&g.id)
                    && old.kind != g.kind
                    && let Some(users) = group_users(state, &g.id)
                {
                    return Err(Error::FailedPrecondition(format!(
                        "groups[{i}]: group {} is a {} group used by {users}; it may not become a {} group while \
                         in use: remove it from there first",
                        g.id,
                        kind_name(old.kind),
                        kind_name(g.kind)
                    )));
                }
            }
            let mut changes = Vec::new();
            changes.extend(users.iter().filter(|u| state.user(&u.id) != Some(*u)).cloned().map(Change::PutUser));
            changes.extend(
                groups
                    .iter()
                    .filter(|g| state.group(&g.id).is_none_or(|old| old != **g))
                    .cloned()
                    .map(Change::PutGroup),
            );
            changes
                .extend(removed_user_ids.iter().filter(|id| state.user(id).is_some()).cloned().map(Change::DeleteUser));
            changes.extend(
                removed_group_ids.iter().filter(|id| state.group(id).is_some()).cloned().map(Change::DeleteGroup),
            );
            Ok(changes)
        })
        .await
    }

    pub async fn update_settings(&self, settings: TenantSettings) -> Result<u64> {
        self.write_admin(|state, _| Ok(settings_changes(state, &settings))).await
    }

    /// Deletes a device record (the remedy for a duplicate registration). Its failures stay on
    /// record: the Mac's next report continues them, so deleting a record buys no grace.
    pub async fn delete_device(&self, id: &str) -> Result<u64> {
        self.write_admin(|state, _| {
            if state.device(id).is_none() {
                return Err(Error::NotFound(format!("no device {id}")));
            }
            Ok(vec![Change::DeleteDevice(id.to_string())])
        })
        .await
    }

    /// Once a terminated connector's removal date has come, removes its Macs (every device the
    /// partner reported), a batch per commit. Returns how many were removed.
    pub async fn remove_terminated_devices(&self) -> Result<usize> {
        let mut removed = 0;
        loop {
            let due = |state: &State, now: Timestamp| {
                let c = state.connector();
                c.state == ConnectorState::Terminated && c.removal_at.is_some_and(|r| now >= r)
            };
            let (pending, _) = self.read(|state, now| due(state, now) && state.device_count() > 0);
            if !pending {
                return Ok(removed);
            }
            let mut batch = 0;
            self.write_admin(|state, now| {
                if !due(state, now) {
                    return Ok(vec![]);
                }
                let mut changes = Vec::new();
                for d in state.devices().take(REMOVAL_BATCH) {
                    changes.push(Change::DeleteDevice(d.id.to_string()));
                    // Removed with its connector, a Mac's failures go too (a deleted record's stay).
                    changes.extend(state.failures_of(&d.id).map(|(policy_id, _)| Change::DeleteFailing {
                        device_id: d.id.to_string(),
                        policy_id: policy_id.to_string(),
                    }));
                }
                batch = changes.iter().filter(|c| matches!(c, Change::DeleteDevice(_))).count();
                Ok(changes)
            })
            .await?;
            removed += batch;
            tracing::info!(removed, "removing the terminated connector's Macs");
        }
    }
}

/// A draft of one administrative write, for PreviewPolicy: what it would change is what the
/// write itself would change (the same validation, the same changes).
#[derive(Debug, Clone)]
pub enum Draft {
    /// A new policy (CreatePolicy) or, when its id is stored, a changed one (UpdatePolicy);
    /// with `assignment`, assigned to those groups too (AssignPolicy after it), so that a new
    /// policy can be previewed as it will apply.
    Policy { policy: Policy, assignment: Option<GroupTargets> },
    /// A policy's new assignment (AssignPolicy).
    Assignment { policy_id: String, targets: GroupTargets },
    /// A policy's deletion (DeletePolicy).
    DeletePolicy(String),
    /// New tenant settings (UpdateSettings).
    Settings(TenantSettings),
}

impl Draft {
    /// The changes its write would make to `state` at `now`, validated as that write
    /// validates them (grace bookkeeping not included: the write derives it from these).
    pub fn changes(&self, state: &State, now: Timestamp) -> Result<Vec<Change>> {
        match self {
            Draft::Policy { policy, assignment } => {
                let mut changes = match state.policy(&policy.id) {
                    Some(_) => update_policy_changes(state, now, policy)?,
                    None => create_policy_changes(state, now, policy)?,
                };
                if let Some(targets) = assignment {
                    changes.extend(assignment_changes(state, &policy.id, targets)?);
                }
                Ok(changes)
            }
            Draft::Assignment { policy_id, targets } => assign_policy_changes(state, policy_id, targets),
            Draft::DeletePolicy(id) => delete_policy_changes(state, id),
            Draft::Settings(s) => Ok(settings_changes(state, s)),
        }
    }
}

// ---- each write's validation and changes, shared by the write and its preview ----

fn create_policy_changes(state: &State, now: Timestamp, policy: &Policy) -> Result<Vec<Change>> {
    if state.policy(&policy.id).is_some() {
        return Err(Error::AlreadyExists(format!("policy {} already exists; use UpdatePolicy", policy.id)));
    }
    Ok(vec![Change::PutPolicy(Policy { updated_at: now, ..policy.clone() })])
}

fn update_policy_changes(state: &State, now: Timestamp, policy: &Policy) -> Result<Vec<Change>> {
    let Some(old) = state.policy(&policy.id) else {
        return Err(Error::NotFound(format!("no policy {}; use CreatePolicy", policy.id)));
    };
    if *old == (Policy { updated_at: old.updated_at, ..policy.clone() }) {
        return Ok(vec![]);
    }
    Ok(vec![Change::PutPolicy(Policy { updated_at: now, ..policy.clone() })])
}

fn delete_policy_changes(state: &State, id: &str) -> Result<Vec<Change>> {
    if state.policy(id).is_none() {
        return Err(Error::NotFound(format!("no policy {id}")));
    }
    Ok(vec![Change::DeletePolicy(id.to_string())])
}

fn assign_policy_changes(state: &State, policy_id: &str, targets: &GroupTargets) -> Result<Vec<Change>> {
    if state.policy(policy_id).is_none() {
        return Err(Error::NotFound(format!("no policy {policy_id}")));
    }
    assignment_changes(state, policy_id, targets)
}

/// A policy's assignment to `targets`, of a policy that exists or is made with it.
fn assignment_changes(state: &State, policy_id: &str, targets: &GroupTargets) -> Result<Vec<Change>> {
    check_user_groups(state, "assignment.", targets)?;
    let a = Assignment {
        policy_id: policy_id.to_string(),
        include_group_ids: targets.include.clone(),
        exclude_group_ids: targets.exclude.clone(),
    };
    let unchanged = match state.assignment(policy_id) {
        Some(old) => *old == a,
        None => a.include_group_ids.is_empty() && a.exclude_group_ids.is_empty(),
    };
    Ok(if unchanged { vec![] } else { vec![Change::PutAssignment(a)] })
}

fn settings_changes(state: &State, settings: &TenantSettings) -> Vec<Change> {
    if *state.settings() == *settings { vec![] } else { vec![Change::PutSettings(*settings)] }
}

fn kind_name(kind: GroupKind) -> &'static str {
    match kind {
        GroupKind::User => "user",
        GroupKind::Device => "device",
    }
}

/// What uses a group, if anything: the connector and the policy assignments that name it.
fn group_users(state: &State, id: &str) -> Option<String> {
    let uses = |a: &[String], b: &[String]| a.iter().chain(b).any(|g| g == id);
    let c = state.connector();
    let mut users = Vec::new();
    if uses(&c.include_group_ids, &c.exclude_group_ids) {
        users.push("the partner connector".to_string());
    }
    users.extend(
        state
            .policies()
            .filter_map(|p| state.assignment(&p.id))
            .filter(|a| uses(&a.include_group_ids, &a.exclude_group_ids))
            .map(|a| format!("the assignment of policy {}", a.policy_id)),
    );
    (!users.is_empty()).then(|| users.join(" and "))
}
