//! What comes in: every request field is validated here, once, where it enters, into domain
//! values. Errors name the field, relative to the message they are in (`os_version: …`); the
//! caller puts the path in front (`devices[3].os_version: …`) with [`Error::within`].

use crate::domain::model::{self as m, Timestamp};
use crate::domain::version::{BadBuild, BadVersion, OsBuild, OsVersion};
use crate::engine::{Draft, GroupTargets};
use crate::error::{Error, Result};
use crate::proto as pb;

mod ext_authz;
mod inventory;

pub use ext_authz::{JWT_AUTHN_NAMESPACE, ext_authz_identity};
pub use inventory::reports;

pub const MAX_ID_LEN: usize = 128;
/// Reports per ReportInventory call, and device ids per WatchCompliance filter.
pub const MAX_BATCH: usize = 1000;
pub const MAX_GROUP_LIST: usize = 1000;
pub const MAX_GROUP_MEMBERS: usize = 1_000_000;

/// A required identifier: 1 to 128 characters that all show. An id that reads as another is a
/// second Mac or user that looks like the first (`mac-ada` followed by U+200B), so invisible
/// characters, direction overrides and surrounding spaces are refused.
pub fn id(field: &str, value: &str) -> Result<String> {
    if value.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    if value.chars().any(invisible) {
        return Err(Error::invalid(
            field,
            "contains an invisible character (zero-width, joiner or other format character)",
        ));
    }
    if value.trim() != value {
        return Err(Error::invalid(field, "starts or ends with white space"));
    }
    text(field, value, MAX_ID_LEN)
}

/// Optional free text up to `max` characters, without control characters or direction
/// overrides (which make text display as other text).
pub fn text(field: &str, value: &str, max: usize) -> Result<String> {
    if value.chars().count() > max {
        return Err(Error::invalid(field, format!("is longer than {max} characters")));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::invalid(field, "contains control characters"));
    }
    if value.chars().any(direction_control) {
        return Err(Error::invalid(field, "contains a text-direction control character"));
    }
    Ok(value.to_string())
}

/// Bidirectional formatting characters: marks, embeddings, overrides and isolates.
fn direction_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Characters that take no visible space: zero-width spaces and joiners, invisible operators,
/// variation selectors, fillers, line and paragraph separators, tags, and direction controls.
fn invisible(c: char) -> bool {
    direction_control(c)
        || matches!(
            c,
            '\u{00AD}'
                | '\u{034F}'
                | '\u{115F}'
                | '\u{1160}'
                | '\u{17B4}'
                | '\u{17B5}'
                | '\u{180B}'..='\u{180F}'
                | '\u{200B}'..='\u{200D}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{2060}'..='\u{2064}'
                | '\u{206A}'..='\u{206F}'
                | '\u{3164}'
                | '\u{FE00}'..='\u{FE0F}'
                | '\u{FEFF}'
                | '\u{FFA0}'
                | '\u{FFF0}'..='\u{FFFB}'
                | '\u{E0000}'..='\u{E007F}'
                | '\u{E0100}'..='\u{E01EF}'
        )
}

/// Refuses a value that a list holds twice, naming both places: `list[i]suffix`.
fn once<'a>(list: &str, suffix: &str, values: impl IntoIterator<Item = &'a str>) -> Result<()> {
    let mut seen: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (i, v) in values.into_iter().enumerate() {
        if let Some(first) = seen.insert(v, i) {
            return Err(Error::invalid(
                format!("{list}[{i}]{suffix}"),
                format!("repeats {list}[{first}]{suffix}; list each once"),
            ));
        }
    }
    Ok(())
}

/// At most `max` identifiers, each valid.
pub fn ids(field: &str, values: &[String], max: usize) -> Result<Vec<String>> {
    if values.len() > max {
        return Err(Error::invalid(field, format!("has {} entries; at most {max} are allowed", values.len())));
    }
    values.iter().enumerate().map(|(i, v)| id(&format!("{field}[{i}]"), v)).collect()
}

/// A message field that must be set.
pub fn required<'a, T>(field: &str, value: Option<&'a T>) -> Result<&'a T> {
    value.ok_or_else(|| Error::invalid(field, "is required"))
}

/// A targeting configuration: include and exclude group ids, each listed once, and no group
/// both included and excluded (it would be excluded: say so rather than guess what was meant).
pub fn targets(include: &[String], exclude: &[String]) -> Result<GroupTargets> {
    let include = ids("include_group_ids", include, MAX_GROUP_LIST)?;
    let exclude = ids("exclude_group_ids", exclude, MAX_GROUP_LIST)?;
    once("include_group_ids", "", include.iter().map(String::as_str))?;
    once("exclude_group_ids", "", exclude.iter().map(String::as_str))?;
    if let Some((i, g)) = exclude.iter().enumerate().find(|(_, g)| include.contains(g)) {
        let j = include.iter().position(|x| x == g).unwrap_or_default();
        return Err(Error::invalid(
            format!("exclude_group_ids[{i}]"),
            format!("group {g} is also in include_group_ids[{j}]: a group is either included or excluded"),
        ));
    }
    Ok(GroupTargets { include, exclude })
}

/// A proto enum value: unknown numbers are refused, naming the field.
fn known<E: TryFrom<i32>>(field: &str, value: i32) -> Result<E> {
    E::try_from(value).map_err(|_| Error::invalid(field, format!("{value} is not a known value")))
}

pub fn version(field: &str, value: &str) -> Result<OsVersion> {
    value.parse().map_err(|e: BadVersion| Error::invalid(field, e.to_string()))
}

fn opt_version(field: &str, value: &str) -> Result<Option<OsVersion>> {
    if value.is_empty() { Ok(None) } else { version(field, value).map(Some) }
}

fn opt_build(field: &str, value: &str) -> Result<Option<OsBuild>> {
    if value.is_empty() {
        return Ok(None);
    }
    value.parse().map(Some).map_err(|e: BadBuild| Error::invalid(field, e.to_string()))
}

fn time(field: &str, t: Option<&prost_types::Timestamp>) -> Result<Timestamp> {
    let t = t.ok_or_else(|| Error::invalid(field, "is required"))?;
    if !(0..1_000_000_000).contains(&t.nanos) {
        return Err(Error::invalid(field, format!("nanos {} is outside 0..=999999999", t.nanos)));
    }
    if t.seconds < 0 {
        return Err(Error::invalid(field, "is before 1970"));
    }
    // Year 10000: beyond any clock, and beyond what a Timestamp may hold.
    if t.seconds >= 253_402_300_800 {
        return Err(Error::invalid(field, "is after the year 9999"));
    }
    Ok(Timestamp(t.seconds))
}

fn within_range(field: &str, v: u32, lo: u32, hi: u32) -> Result<u32> {
    if (lo..=hi).contains(&v) { Ok(v) } else { Err(Error::invalid(field, format!("{v} is outside {lo}..={hi}"))) }
}

fn in_range(field: &str, v: Option<u32>, lo: u32, hi: u32) -> Result<Option<u32>> {
    v.map(|v| within_range(field, v, lo, hi)).transpose()
}

fn threat(field: &str, v: i32) -> Result<Option<m::ThreatLevel>> {
    Ok(match known::<pb::ThreatLevel>(field, v)? {
        pb::ThreatLevel::Unspecified => None,
        pb::ThreatLevel::Secured => Some(m::ThreatLevel::Secured),
        pb::ThreatLevel::Low => Some(m::ThreatLevel::Low),
        pb::ThreatLevel::Medium => Some(m::ThreatLevel::Medium),
        pb::ThreatLevel::High => Some(m::ThreatLevel::High),
    })
}

fn password_type(field: &str, v: i32) -> Result<Option<m::PasswordType>> {
    Ok(match known::<pb::PasswordType>(field, v)? {
        pb::PasswordType::Unspecified => None,
        pb::PasswordType::DeviceDefault => Some(m::PasswordType::DeviceDefault),
        pb::PasswordType::Alphanumeric => Some(m::PasswordType::Alphanumeric),
        pb::PasswordType::Numeric => Some(m::PasswordType::Numeric),
    })
}

/// An id as sent, cut to the length an id may have, to name an item in an answer.
fn short(id: &str) -> String {
    id.chars().take(MAX_ID_LEN).collect()
}

// ---- policies ----

impl TryFrom<&pb::Policy> for m::Policy {
    type Error = Error;

    fn try_from(p: &pb::Policy) -> Result<m::Policy> {
        let policy_id = id("id", &p.id)?;
        if !policy_id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
            return Err(Error::invalid("id", "may hold only letters, digits, '-', '_' and '.'"));
        }
        if p.name.is_empty() {
            return Err(Error::invalid("name", "is required"));
        }
        let settings = p.settings.as_ref().map_or_else(|| Ok(Default::default()), m::PolicySettings::try_from);
        Ok(m::Policy {
            id: policy_id,
            name: text("name", &p.name, 256)?,
            settings: settings.map_err(|e| e.within("settings"))?,
            grace_period_hours: within_range("grace_period_hours", p.grace_period_hours, 0, 8760)?,
            updated_at: Timestamp(0),
        })
    }
}

impl TryFrom<&pb::PolicySettings> for m::PolicySettings {
    type Error = Error;

    fn try_from(s: &pb::PolicySettings) -> Result<m::PolicySettings> {
        let pw = s.password.unwrap_or_default();
        let settings = m::PolicySettings {
            os_minimum_version: opt_version("os_minimum_version", &s.os_minimum_version)?,
            os_maximum_version: opt_version("os_maximum_version", &s.os_maximum_version)?,
            os_minimum_build: opt_build("os_minimum_build", &s.os_minimum_build)?,
            os_maximum_build: opt_build("os_maximum_build", &s.os_maximum_build)?,
            system_integrity_protection_required: s.system_integrity_protection_required,
            storage_encryption_required: s.storage_encryption_required,
            firewall_enabled: s.firewall_enabled,
            firewall_block_all_incoming: s.firewall_block_all_incoming,
            firewall_stealth_mode: s.firewall_stealth_mode,
            gatekeeper_minimum: match known::<pb::GatekeeperRequirement>("gatekeeper", s.gatekeeper)? {
                pb::GatekeeperRequirement::Unspecified => None,
                pb::GatekeeperRequirement::AppStore => Some(m::Gatekeeper::AppStore),
                pb::GatekeeperRequirement::AppStoreAndIdentifiedDevelopers => {
                    Some(m::Gatekeeper::AppStoreAndIdentifiedDevelopers)
                }
                pb::GatekeeperRequirement::Anywhere => Some(m::Gatekeeper::Disabled),
            },
            password: m::PasswordRules {
                required: pw.required,
                block_simple: pw.block_simple,
                min_length: in_range("password.min_length", pw.min_length, 4, 14)?,
                kind: password_type("password.type", pw.r#type)?,
                min_character_sets: in_range("password.min_character_sets", pw.min_character_sets, 1, 4)?,
                max_minutes_of_inactivity_before_lock: in_range(
                    "password.max_minutes_of_inactivity_before_lock",
                    pw.max_minutes_of_inactivity_before_lock,
                    1,
                    1440,
                )?,
                max_expiry_days: in_range("password.max_expiry_days", pw.max_expiry_days, 1, 65535)?,
                min_previous_passwords_blocked: in_range(
                    "password.min_previous_passwords_blocked",
                    pw.min_previous_passwords_blocked,
                    1,
                    24,
                )?,
            },
            max_threat_level: threat("max_threat_level", s.max_threat_level)?,
        };
        if let (Some(lo), Some(hi)) = (&settings.os_minimum_version, &settings.os_maximum_version)
            && lo > hi
        {
            return Err(Error::invalid("os_maximum_version", format!("{hi} is below the minimum {lo}")));
        }
        if let (Some(lo), Some(hi)) = (&settings.os_minimum_build, &settings.os_maximum_build)
            && lo > hi
        {
            return Err(Error::invalid("os_maximum_build", format!("{hi} is below the minimum {lo}")));
        }
        Ok(settings)
    }
}

/// The policy a CreatePolicy or UpdatePolicy carries.
pub fn policy(p: Option<&pb::Policy>) -> Result<m::Policy> {
    m::Policy::try_from(required("policy", p)?).map_err(|e| e.within("policy"))
}

/// An AssignPolicy: the policy and its groups.
pub fn assignment(r: &pb::AssignPolicyRequest) -> Result<(String, GroupTargets)> {
    let policy_id = id("policy_id", &r.policy_id)?;
    let a = r.assignment.clone().unwrap_or_default();
    let targets = targets(&a.include_group_ids, &a.exclude_group_ids).map_err(|e| e.within("assignment"))?;
    Ok((policy_id, targets))
}

// ---- directory, connector, settings ----

impl TryFrom<&pb::User> for m::User {
    type Error = Error;

    fn try_from(u: &pb::User) -> Result<m::User> {
        Ok(m::User {
            id: id("id", &u.id)?,
            user_principal_name: text("user_principal_name", &u.user_principal_name, 256)?,
            device_management_licence: u.device_management_licence,
            premium_identity_licence: u.premium_identity_licence,
        })
    }
}

impl TryFrom<&pb::Group> for m::Group {
    type Error = Error;

    fn try_from(g: &pb::Group) -> Result<m::Group> {
        let kind = match known::<pb::GroupKind>("kind", g.kind)? {
            pb::GroupKind::Unspecified => return Err(Error::invalid("kind", "is required (USER or DEVICE)")),
            pb::GroupKind::User => m::GroupKind::User,
            pb::GroupKind::Device => m::GroupKind::Device,
        };
        let mut members = ids("member_ids", &g.member_ids, MAX_GROUP_MEMBERS)?;
        members.sort();
        members.dedup();
        Ok(m::Group { id: id("id", &g.id)?, name: text("name", &g.name, 256)?, kind, members })
    }
}

/// A SyncDirectory's upserts and removals.
pub struct Directory {
    pub users: Vec<m::User>,
    pub groups: Vec<m::Group>,
    pub removed_user_ids: Vec<String>,
    pub removed_group_ids: Vec<String>,
}

pub fn directory(r: &pb::SyncDirectoryRequest) -> Result<Directory> {
    let each = |at: &str, i: usize, e: Error| e.within(&format!("{at}[{i}]"));
    once("users", ".id", r.users.iter().map(|u| u.id.as_str()))?;
    once("groups", ".id", r.groups.iter().map(|g| g.id.as_str()))?;
    once("removed_user_ids", "", r.removed_user_ids.iter().map(String::as_str))?;
    once("removed_group_ids", "", r.removed_group_ids.iter().map(String::as_str))?;
    if let Some((i, id)) = r.removed_user_ids.iter().enumerate().find(|(_, id)| r.users.iter().any(|u| &u.id == *id)) {
        return Err(Error::invalid(
            format!("removed_user_ids[{i}]"),
            format!("user {} is also upserted in users", short(id)),
        ));
    }
    if let Some((i, id)) = r.removed_group_ids.iter().enumerate().find(|(_, id)| r.groups.iter().any(|g| &g.id == *id))
    {
        return Err(Error::invalid(
            format!("removed_group_ids[{i}]"),
            format!("group {} is also upserted in groups", short(id)),
        ));
    }
    Ok(Directory {
        users: r
            .users
            .iter()
            .enumerate()
            .map(|(i, u)| m::User::try_from(u).map_err(|e| each("users", i, e)))
            .collect::<Result<_>>()?,
        groups: r
            .groups
            .iter()
            .enumerate()
            .map(|(i, g)| m::Group::try_from(g).map_err(|e| each("groups", i, e)))
            .collect::<Result<_>>()?,
        removed_user_ids: ids("removed_user_ids", &r.removed_user_ids, usize::MAX)?,
        removed_group_ids: ids("removed_group_ids", &r.removed_group_ids, usize::MAX)?,
    })
}

/// An EnableConnector: the partner app, its version and the targeting groups.
pub fn connector(r: &pb::EnableConnectorRequest) -> Result<(String, OsVersion, GroupTargets)> {
    let app_id = id("partner_app_id", &r.partner_app_id)?;
    if r.partner_version.is_empty() {
        return Err(Error::invalid("partner_version", "is required, e.g. 11.4.0"));
    }
    let version = version("partner_version", &r.partner_version)?;
    Ok((app_id, version, targets(&r.include_group_ids, &r.exclude_group_ids)?))
}

impl TryFrom<&pb::Settings> for m::TenantSettings {
    type Error = Error;

    fn try_from(s: &pb::Settings) -> Result<m::TenantSettings> {
        let no_policy = match known::<pb::NoPolicyTreatment>("no_policy", s.no_policy)? {
            pb::NoPolicyTreatment::Unspecified => {
                return Err(Error::invalid("no_policy", "is required (COMPLIANT or NONCOMPLIANT)"));
            }
            pb::NoPolicyTreatment::Compliant => m::NoPolicyTreatment::Compliant,
            pb::NoPolicyTreatment::Noncompliant => m::NoPolicyTreatment::Noncompliant,
        };
        Ok(m::TenantSettings { no_policy, validity_days: within_range("validity_days", s.validity_days, 1, 120)? })
    }
}

pub fn settings(s: Option<&pb::Settings>) -> Result<m::TenantSettings> {
    m::TenantSettings::try_from(required("settings", s)?).map_err(|e| e.within("settings"))
}

// ---- PreviewPolicy ----

/// Macs listed per kind in a PreviewPolicy answer, by default and at most.
pub const DEFAULT_PREVIEW_DEVICES: usize = 20;
pub const MAX_PREVIEW_DEVICES: usize = 1000;

/// A PreviewPolicy: the draft, each kind validated as its own write's request is, and how many
/// Macs of each kind to list.
pub fn preview(r: &pb::PreviewPolicyRequest) -> Result<(Draft, usize)> {
    use pb::preview_policy_request::Draft as D;
    let draft = match &r.draft {
        None => {
            return Err(Error::invalid(
                "draft",
                "is required: set one of policy, assign_policy, delete_policy_id or settings",
            ));
        }
        Some(D::Policy(p)) => {
            let assignment = p.assignment.as_ref().map(|a| targets(&a.include_group_ids, &a.exclude_group_ids));
            let assignment = assignment.transpose().map_err(|e| e.within("policy.assignment"))?;
            Draft::Policy { policy: policy(Some(p))?, assignment }
        }
        Some(D::AssignPolicy(a)) => {
            let (policy_id, targets) = assignment(a).map_err(|e| e.within("assign_policy"))?;
            Draft::Assignment { policy_id, targets }
        }
        Some(D::DeletePolicyId(p)) => Draft::DeletePolicy(id("delete_policy_id", p)?),
        Some(D::Settings(s)) => Draft::Settings(settings(Some(s))?),
    };
    let max = match r.max_devices as usize {
        0 => DEFAULT_PREVIEW_DEVICES,
        n if n > MAX_PREVIEW_DEVICES => {
            return Err(Error::invalid("max_devices", format!("is {n}; at most {MAX_PREVIEW_DEVICES} are listed")));
        }
        n => n,
    };
    Ok((draft, max))
}
