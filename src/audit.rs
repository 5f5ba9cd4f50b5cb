//! The audit trail: one structured event, as a JSON document on the log target
//! `posture::audit`, for every administrative change (who, what, the revision, before and after
//! in short) and for every refused call (which credential or none, which RPC, the peer). Refused
//! calls are rate-limited, so a flood cannot fill the disk; what was left out is counted in the
//! next event. No event carries a secret: refusals never quote the authorization header.

use std::net::SocketAddr;
use std::time::Instant;

use parking_lot::Mutex;
use serde::Serialize;

use crate::domain::model::{Assignment, Connector, Group, Policy, TenantSettings, User};
use crate::domain::{Change, State};

/// The log target audit events are written to.
pub const TARGET: &str = "posture::audit";

/// Refusals recorded per second at most, and in a burst.
const REFUSALS_PER_SECOND: f64 = 20.0;
const REFUSAL_BURST: f64 = 200.0;

#[derive(Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum Event<'a> {
    AdminChange {
        who: &'a str,
        rpc: &'a str,
        revision: u64,
        changes: &'a [String],
    },
    Refused {
        credential: Option<&'a str>,
        rpc: &'a str,
        peer: Option<String>,
        code: &'a str,
        reason: &'a str,
        /// Refusals left out since the last one recorded (the rate limit).
        #[serde(skip_serializing_if = "is_zero")]
        suppressed: u64,
    },
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn emit(event: &Event<'_>) {
    match serde_json::to_string(event) {
        Ok(json) => tracing::info!(target: TARGET, "{json}"),
        Err(e) => tracing::error!(target: TARGET, error = %e, "an audit event could not be written"),
    }
}

tokio::task_local! {
    /// Who is writing, and through which RPC, for the writes `by` runs.
    static ACTOR: (String, String);
}

/// Runs `write` as `who`'s call of `rpc`: the administrative changes it commits are recorded
/// as theirs. (Writes outside one, such as the demo's seeding or the removal of a terminated
/// connector's Macs, are recorded as posture's own.)
pub async fn by<F: std::future::Future>(who: String, rpc: String, write: F) -> F::Output {
    ACTOR.scope((who, rpc), write).await
}

/// Records a committed administrative write: `changes` as [`describe`] puts them.
pub fn admin_change(revision: u64, changes: &[String]) {
    let (who, rpc) = ACTOR
        .try_with(|(who, rpc)| (who.clone(), rpc.clone()))
        .unwrap_or_else(|_| ("posture".into(), "internal".into()));
    emit(&Event::AdminChange { who: &who, rpc: &rpc, revision, changes });
}

/// A token bucket for refusals, and how many it left out.
struct Bucket {
    tokens: f64,
    at: Instant,
    suppressed: u64,
}

static REFUSALS: Mutex<Option<Bucket>> = Mutex::new(None);

/// Records a refused call, unless the rate limit leaves it out.
pub fn refused(credential: Option<&str>, rpc: &str, peer: Option<SocketAddr>, code: tonic::Code, reason: &str) {
    let suppressed = {
        let mut bucket = REFUSALS.lock();
        let now = Instant::now();
        let b = bucket.get_or_insert(Bucket { tokens: REFUSAL_BURST, at: now, suppressed: 0 });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * REFUSALS_PER_SECOND).min(REFUSAL_BURST);
        b.at = now;
        if b.tokens < 1.0 {
            b.suppressed += 1;
            return;
        }
        b.tokens -= 1.0;
        std::mem::take(&mut b.suppressed)
    };
    let code = crate::error::code_name(code);
    emit(&Event::Refused { credential, rpc, peer: peer.map(|p| p.to_string()), code, reason, suppressed });
}

/// What a write changes, before and after in short, one line per entity it writes (the grace
/// bookkeeping a write derives is counted, not listed).
pub fn describe(state: &State, changes: &[Change]) -> Vec<String> {
    let mut out = Vec::new();
    let (mut failing_set, mut failing_cleared) = (0, 0);
    for change in changes {
        let line = match change {
            Change::PutUser(u) => user(state.user(&u.id), u),
            Change::DeleteUser(id) => format!("user {id} removed"),
            Change::PutGroup(g) => group(state.group(&g.id).map(|old| old.to_group()).as_ref(), g),
            Change::DeleteGroup(id) => format!("group {id} removed"),
            Change::PutDevice(d) => format!("device {} reported", d.id),
            Change::CheckIn { device_id, .. } => format!("device {device_id} checked in"),
            Change::DeleteDevice(id) => format!("device {id} deleted"),
            Change::PutPolicy(p) => policy(state.policy(&p.id), p),
            Change::DeletePolicy(id) => format!("policy {id} deleted, with its assignment"),
            Change::PutAssignment(a) => assignment(state.assignment(&a.policy_id), a),
            Change::PutConnector(c) => connector(state.connector(), c),
            Change::PutSettings(s) => settings(state.settings(), s),
            Change::PutHeartbeat(_) => continue,
            Change::PutFailing { .. } => {
                failing_set += 1;
                continue;
            }
            Change::DeleteFailing { .. } => {
                failing_cleared += 1;
                continue;
            }
        };
        out.push(line);
    }
    if failing_set + failing_cleared > 0 {
        out.push(format!("grace bookkeeping: {failing_set} failures recorded, {failing_cleared} cleared"));
    }
    out
}

/// `name: before → after` for each field that differs, compared by their debug form.
macro_rules! diffs {
    ($old:expr, $new:expr, [$($field:ident).+ $(, $($more:ident).+)*]) => {{
        let mut d: Vec<String> = Vec::new();
        diffs!(@one d, $old, $new, $($field).+);
        $(diffs!(@one d, $old, $new, $($more).+);)*
        d
    }};
    (@one $d:ident, $old:expr, $new:expr, $($field:ident).+) => {
        if $old.$($field).+ != $new.$($field).+ {
            $d.push(format!("{} {:?} → {:?}", stringify!($($field).+), $old.$($field).+, $new.$($field).+));
        }
    };
}

fn changed(what: String, diffs: Vec<String>) -> String {
    if diffs.is_empty() { format!("{what} rewritten unchanged") } else { format!("{what}: {}", diffs.join("; ")) }
}

fn user(old: Option<&User>, new: &User) -> String {
    match old {
        None => format!("user {} added", new.id),
        Some(old) => changed(
            format!("user {}", new.id),
            diffs!(old, new, [user_principal_name, device_management_licence, premium_identity_licence]),
        ),
    }
}

fn group(old: Option<&Group>, new: &Group) -> String {
    let kind = |g: &Group| format!("{:?}", g.kind).to_lowercase();
    match old {
        None => format!("group {} ({} group, {} members) added", new.id, kind(new), new.members.len()),
        Some(old) => {
            let mut d = diffs!(old, new, [name, kind]);
            if old.members != new.members {
                d.push(format!("members {} → {}", old.members.len(), new.members.len()));
            }
            changed(format!("group {}", new.id), d)
        }
    }
}

fn policy(old: Option<&Policy>, new: &Policy) -> String {
    match old {
        None => format!("policy {} created (grace period {} hours)", new.id, new.grace_period_hours),
        Some(old) => changed(
            format!("policy {}", new.id),
            diffs!(
                old,
                new,
                [
                    name,
                    grace_period_hours,
                    settings.os_minimum_version,
                    settings.os_maximum_version,
                    settings.os_minimum_build,
                    settings.os_maximum_build,
                    settings.system_integrity_protection_required,
                    settings.storage_encryption_required,
                    settings.firewall_enabled,
                    settings.firewall_block_all_incoming,
                    settings.firewall_stealth_mode,
                    settings.gatekeeper_minimum,
                    settings.password,
                    settings.max_threat_level
                ]
            ),
        ),
    }
}

fn assignment(old: Option<&Assignment>, new: &Assignment) -> String {
    let none = Assignment { policy_id: new.policy_id.clone(), ..Assignment::default() };
    let old = old.unwrap_or(&none);
    changed(format!("assignment of policy {}", new.policy_id), diffs!(old, new, [include_group_ids, exclude_group_ids]))
}

fn connector(old: &Connector, new: &Connector) -> String {
    changed(
        "connector".to_string(),
        diffs!(old, new, [state, partner_app_id, partner_version, include_group_ids, exclude_group_ids, removal_at]),
    )
}

fn settings(old: &TenantSettings, new: &TenantSettings) -> String {
    changed("tenant settings".to_string(), diffs!(old, new, [no_policy, validity_days]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::model::{GroupKind, PolicySettings};

    #[test]
    fn changes_are_told_before_and_after_in_short() {
        let mut state = State::default();
        let old = Policy {
            id: "baseline".into(),
            name: "Baseline".into(),
            settings: PolicySettings { storage_encryption_required: Some(true), ..Default::default() },
            grace_period_hours: 24,
            updated_at: crate::domain::Timestamp(0),
        };
        state.apply(Change::PutPolicy(old.clone()));
        let group = Group { id: "g".into(), name: "g".into(), kind: GroupKind::User, members: vec!["a".into()] };
        let mut new = old.clone();
        new.grace_period_hours = 72;
        new.settings.firewall_enabled = Some(true);
        let lines = describe(
            &state,
            &[
                Change::PutPolicy(new),
                Change::PutGroup(group),
                Change::DeletePolicy("old".into()),
                Change::DeleteFailing { device_id: "d".into(), policy_id: "baseline".into() },
            ],
        );
        assert_eq!(
            lines,
            [
                "policy baseline: grace_period_hours 24 → 72; settings.firewall_enabled None → Some(true)",
                "group g (user group, 1 members) added",
                "policy old deleted, with its assignment",
                "grace bookkeeping: 0 failures recorded, 1 cleared",
            ]
        );
    }
}
