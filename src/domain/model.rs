//! The entities of the domain, as plain data. No I/O, no clock, no gRPC or SQL types.

use super::version::{OsBuild, OsVersion};

/// Seconds since the Unix epoch. Time enters the core only as a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

/// RFC 3339 in UTC, e.g. 2026-11-23T18:09:26Z.
impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let days = self.0.div_euclid(Self::DAY);
        let secs = self.0.rem_euclid(Self::DAY);
        // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        write!(f, "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs % 3600 / 60, secs % 60)
    }
}

impl Timestamp {
    pub const HOUR: i64 = 3600;
    pub const DAY: i64 = 24 * Self::HOUR;

    pub fn plus_secs(self, secs: i64) -> Timestamp {
        Timestamp(self.0.saturating_add(secs))
    }
    pub fn plus_hours(self, hours: i64) -> Timestamp {
        self.plus_secs(hours.saturating_mul(Self::HOUR))
    }
    pub fn plus_days(self, days: i64) -> Timestamp {
        self.plus_secs(days.saturating_mul(Self::DAY))
    }
}

/// A directory identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub user_principal_name: String,
    /// Holds a device-management licence (Intune).
    pub device_management_licence: bool,
    /// Holds a premium identity licence (Entra ID P1 or better).
    pub premium_identity_licence: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupKind {
    User,
    Device,
}

/// A directory group. Members are user ids for user groups, device ids for device groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub id: String,
    pub name: String,
    pub kind: GroupKind,
    pub members: Vec<String>,
}

/// How a Mac was registered with the directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    /// Through the partner's flow (Self Service launching the Company Portal).
    Partner,
    /// Directly, bypassing the partner: "not registered" for the partner (cause 4).
    Direct,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FileVault {
    NotApplicable,
    NotEncrypted,
    BootVolumeOnly,
    SomeEncrypted,
    /// The only state that counts as encrypted.
    AllEncrypted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Gatekeeper {
    /// Apps from anywhere.
    Disabled,
    AppStoreAndIdentifiedDevelopers,
    AppStore,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sip {
    Enabled,
    Disabled,
    NotCollected,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ThreatLevel {
    Secured,
    Low,
    Medium,
    High,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordType {
    DeviceDefault,
    Alphanumeric,
    Numeric,
}

/// Password facts as the partner reports them. `None` = not reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PasswordFacts {
    pub required: Option<bool>,
    pub simple_blocked: Option<bool>,
    pub min_length: Option<u32>,
    pub kind: Option<PasswordType>,
    pub min_character_sets: Option<u32>,
    pub minutes_of_inactivity_before_lock: Option<u32>,
    pub expiry_days: Option<u32>,
    pub previous_passwords_blocked: Option<u32>,
}

/// The security facts a policy checks. `None` = the partner did not report it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecurityFacts {
    pub system_integrity_protection: Option<Sip>,
    pub file_vault: Option<FileVault>,
    pub gatekeeper: Option<Gatekeeper>,
    pub firewall_enabled: Option<bool>,
    pub firewall_block_all_incoming: Option<bool>,
    pub firewall_stealth_mode: Option<bool>,
    pub password: PasswordFacts,
    pub threat_level: Option<ThreatLevel>,
}

/// The partner's own verdict (the 2024 mode): it decided compliance itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartnerVerdict {
    pub compliant: bool,
    pub decided_at: Timestamp,
}

/// A Mac as last reported by the partner. Its texts are boxed strings, not `String`s: a
/// replica holds every Mac, and a capacity per text is 48 MB at a million Macs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Directory device id: the key.
    pub id: Box<str>,
    pub partner_device_id: Box<str>,
    pub serial_number: Box<str>,
    pub name: Box<str>,
    pub model: Box<str>,
    /// Directory id of the primary user.
    pub user_id: Box<str>,
    pub os_version: OsVersion,
    pub os_build: Option<OsBuild>,
    pub registration: Registration,
    pub last_check_in: Timestamp,
    pub last_token_renewal: Timestamp,
    /// When the last refresh token was issued; `None` when the partner does not report it.
    pub refresh_token_issued: Option<Timestamp>,
    pub facts: SecurityFacts,
    pub partner_verdict: Option<PartnerVerdict>,
}

impl Device {
    /// Where this report stands in the order of reports for its Mac: a report is older than
    /// another when its check-in, or its partner verdict, is older.
    pub fn is_older_than(&self, other: &Device) -> bool {
        let verdict_older = match (self.partner_verdict, other.partner_verdict) {
            (Some(a), Some(b)) => a.decided_at < b.decided_at,
            _ => false,
        };
        self.last_check_in < other.last_check_in || verdict_older
    }

    /// Whether `other` says the same of the Mac as this, but for when it checked in: such a
    /// report is stored as a check-in, not as the whole device again.
    pub fn same_but_check_in(&self, other: &Device) -> bool {
        // Every field named, so that a new one must be considered here.
        let Device {
            id,
            partner_device_id,
            serial_number,
            name,
            model,
            user_id,
            os_version,
            os_build,
            registration,
            last_check_in: _,
            last_token_renewal,
            refresh_token_issued,
            facts,
            partner_verdict,
        } = self;
        *id == other.id
            && *partner_device_id == other.partner_device_id
            && *serial_number == other.serial_number
            && *name == other.name
            && *model == other.model
            && *user_id == other.user_id
            && *os_version == other.os_version
            && *os_build == other.os_build
            && *registration == other.registration
            && *last_token_renewal == other.last_token_renewal
            && *refresh_token_issued == other.refresh_token_issued
            && *facts == other.facts
            && *partner_verdict == other.partner_verdict
    }
}

/// Gatekeeper's allowed app sources a policy requires (at least this strict).
pub type RequiredGatekeeper = Gatekeeper;

/// The password rules of a macOS compliance policy. `None` = not configured, not evaluated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PasswordRules {
    pub required: Option<bool>,
    pub block_simple: Option<bool>,
    /// 4..=14
    pub min_length: Option<u32>,
    pub kind: Option<PasswordType>,
    /// 1..=4
    pub min_character_sets: Option<u32>,
    pub max_minutes_of_inactivity_before_lock: Option<u32>,
    /// 1..=65535
    pub max_expiry_days: Option<u32>,
    /// 1..=24
    pub min_previous_passwords_blocked: Option<u32>,
}

/// Required settings of a macOS compliance policy. `None` = not configured, not evaluated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicySettings {
    pub os_minimum_version: Option<OsVersion>,
    pub os_maximum_version: Option<OsVersion>,
    pub os_minimum_build: Option<OsBuild>,
    pub os_maximum_build: Option<OsBuild>,
    pub system_integrity_protection_required: Option<bool>,
    pub storage_encryption_required: Option<bool>,
    pub firewall_enabled: Option<bool>,
    pub firewall_block_all_incoming: Option<bool>,
    pub firewall_stealth_mode: Option<bool>,
    pub gatekeeper_minimum: Option<RequiredGatekeeper>,
    pub password: PasswordRules,
    /// The highest threat level still compliant.
    pub max_threat_level: Option<ThreatLevel>,
}

/// A macOS compliance policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub id: String,
    pub name: String,
    pub settings: PolicySettings,
    /// "Mark noncompliant after N hours" (0..=8760; 0 = at once).
    pub grace_period_hours: u32,
    /// When the policy last changed (shown to admins; grace periods do not depend on it).
    pub updated_at: Timestamp,
}

/// A device's failure of one policy, as the write that first saw it recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// When the failure began to count.
    pub since: Timestamp,
    /// When its grace period ends (or ended): `since` plus the policy's grace period, moved
    /// only by a change of the grace period while it is still running, or by a shorter one.
    pub grace_ends: Timestamp,
}

/// One device's failures, by policy id: a list in id order, as most Macs fail one policy or
/// two (a map a device cost ten times the memory; 100,000 failing Macs held 45 MB).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Failures(Vec<(Box<str>, Failure)>);

impl Failures {
    fn find(&self, policy_id: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(p, _)| (**p).cmp(policy_id))
    }
    pub fn get(&self, policy_id: &str) -> Option<Failure> {
        self.find(policy_id).ok().map(|i| self.0[i].1)
    }
    pub fn contains(&self, policy_id: &str) -> bool {
        self.find(policy_id).is_ok()
    }
    pub fn insert(&mut self, policy_id: &str, failure: Failure) {
        match self.find(policy_id) {
            Ok(i) => self.0[i].1 = failure,
            Err(i) => self.0.insert(i, (policy_id.into(), failure)),
        }
    }
    pub fn remove(&mut self, policy_id: &str) {
        if let Ok(i) = self.find(policy_id) {
            self.0.remove(i);
        }
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// In policy id order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Failure)> {
        self.0.iter().map(|(p, f)| (&**p, *f))
    }
}

/// A policy's targets: include and exclude groups.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Assignment {
    pub policy_id: String,
    pub include_group_ids: Vec<String>,
    pub exclude_group_ids: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConnectorState {
    #[default]
    NotConfigured,
    Enabled,
    Terminated,
}

/// The link to the partner, with the user groups that decide partner enrollment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Connector {
    pub state: ConnectorState,
    pub partner_app_id: String,
    /// The partner product's version, e.g. 10.1.0.
    pub partner_version: Option<OsVersion>,
    pub include_group_ids: Vec<String>,
    pub exclude_group_ids: Vec<String>,
    pub enabled_at: Option<Timestamp>,
    pub terminated_at: Option<Timestamp>,
    /// Set on termination: its Macs are removed 90 days later.
    pub removal_at: Option<Timestamp>,
}

/// How a device that no policy applies to counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NoPolicyTreatment {
    /// Intune's default.
    #[default]
    Compliant,
    Noncompliant,
}

/// Tenant-wide compliance settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantSettings {
    pub no_policy: NoPolicyTreatment,
    /// 1..=120; a device that has not reported within it is noncompliant.
    pub validity_days: u32,
}

impl Default for TenantSettings {
    fn default() -> Self {
        TenantSettings { no_policy: NoPolicyTreatment::Compliant, validity_days: 30 }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::{Failure, Failures, Timestamp};

    proptest! {
        /// A device's failures answer as a map by policy id would, over any inserts and removals.
        #[test]
        fn failures_behave_as_a_map_by_policy_id(ops in prop::collection::vec((0u8..6, 0i64..100, any::<bool>()), 0..40)) {
            let (mut list, mut map) = (Failures::default(), BTreeMap::new());
            for (policy, at, insert) in ops {
                let (policy, failure) = (format!("policy-{policy}"), Failure { since: Timestamp(at), grace_ends: Timestamp(at + 1) });
                if insert {
                    list.insert(&policy, failure);
                    map.insert(policy, failure);
                } else {
                    list.remove(&policy);
                    map.remove(&policy);
                }
                prop_assert_eq!(list.iter().map(|(p, f)| (p.to_owned(), f)).collect::<Vec<_>>(), map.clone().into_iter().collect::<Vec<_>>());
                prop_assert_eq!(list.is_empty(), map.is_empty());
                for p in 0..6 {
                    let p = format!("policy-{p}");
                    prop_assert_eq!(list.get(&p), map.get(&p).copied());
                    prop_assert_eq!(list.contains(&p), map.contains_key(&p));
                }
            }
        }
    }

    #[test]
    fn timestamps_print_as_rfc3339_utc() {
        assert_eq!(Timestamp(0).to_string(), "1970-01-01T00:00:00Z");
        assert_eq!(Timestamp(951_782_400).to_string(), "2000-02-29T00:00:00Z");
        assert_eq!(Timestamp(1_795_716_586).to_string(), "2026-11-26T18:09:46Z");
    }
}
