//! The files administrators keep their configuration in, for `posture apply` and
//! `posture export`: YAML documents, one per policy (its settings, grace period and
//! assignment), one for the tenant settings and one for the connector's targeting. Each
//! converts to and from the AdminService messages that write it; the server's own validation
//! (grpc/incoming) checks them before anything is sent.

use serde::{Deserialize, Serialize};

use crate::proto as pb;

pub mod apply;
pub mod client;
pub mod files;

/// One document of a file.
#[derive(Debug, Clone, PartialEq)]
pub enum Document {
    Policy(PolicyDoc),
    Settings(SettingsDoc),
    Connector(ConnectorDoc),
}

/// What a document is: its `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum Kind {
    Policy,
    Settings,
    Connector,
}

/// A policy and the user groups it applies to (exclude wins); an omitted `assignment` is none.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyDoc {
    /// The document's `kind`, read before the rest (and written by [`to_yaml`]).
    #[serde(default, skip_serializing)]
    pub kind: Option<Kind>,
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub grace_period_hours: u32,
    #[serde(default)]
    pub settings: PolicySettingsDoc,
    #[serde(default, skip_serializing_if = "AssignmentDoc::is_empty")]
    pub assignment: AssignmentDoc,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AssignmentDoc {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include_groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_groups: Vec<String>,
}

impl AssignmentDoc {
    fn is_empty(&self) -> bool {
        self.include_groups.is_empty() && self.exclude_groups.is_empty()
    }
}

/// A policy's settings; an omitted one is not checked.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySettingsDoc {
    #[serde(default, deserialize_with = "quoted", skip_serializing_if = "Option::is_none")]
    pub os_minimum_version: Option<String>,
    #[serde(default, deserialize_with = "quoted", skip_serializing_if = "Option::is_none")]
    pub os_maximum_version: Option<String>,
    #[serde(default, deserialize_with = "quoted", skip_serializing_if = "Option::is_none")]
    pub os_minimum_build: Option<String>,
    #[serde(default, deserialize_with = "quoted", skip_serializing_if = "Option::is_none")]
    pub os_maximum_build: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_integrity_protection_required: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_encryption_required: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firewall_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firewall_block_all_incoming: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firewall_stealth_mode: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gatekeeper: Option<Gatekeeper>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<PasswordDoc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_threat_level: Option<ThreatLevel>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordDoc {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_simple: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_length: Option<u32>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<PasswordType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_character_sets: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_minutes_of_inactivity_before_lock: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_expiry_days: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_previous_passwords_blocked: Option<u32>,
}

/// The tenant's settings: how a Mac no policy applies to counts, and how long a compliance
/// result stays valid without a new report.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsDoc {
    /// The document's `kind`, read before the rest (and written by [`to_yaml`]).
    #[serde(default, skip_serializing)]
    pub kind: Option<Kind>,
    pub no_policy: NoPolicy,
    pub validity_days: u32,
}

/// The connector's partner and the user groups it enrolls (exclude wins).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorDoc {
    /// The document's `kind`, read before the rest (and written by [`to_yaml`]).
    #[serde(default, skip_serializing)]
    pub kind: Option<Kind>,
    pub partner_app_id: String,
    #[serde(deserialize_with = "quoted_required")]
    pub partner_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include_groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_groups: Vec<String>,
}

/// A version or build: text, never a number, which YAML would read `14.10` as (14.1).
struct Quoted;

impl serde::de::Visitor<'_> for Quoted {
    type Value = String;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a version in quotes, e.g. '14.2'")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<String, E> {
        Err(E::custom(format!("{v} is a number to YAML: write the version in quotes, e.g. '14.10'")))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<String, E> {
        Err(E::custom(format!("{v} is a number to YAML: write the version in quotes, e.g. '{v}.0'")))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<String, E> {
        Err(E::custom(format!("{v} is a number to YAML: write the version in quotes")))
    }
}

fn quoted<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    d.deserialize_any(Quoted).map(Some)
}

fn quoted_required<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    d.deserialize_any(Quoted)
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The enums of the format: the protobuf enum's values without their prefix, in lower case.
macro_rules! named {
    ($name:ident, $pb:ty, { $($variant:ident),+ $(,)? }) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            fn to_pb(self) -> i32 {
                match self { $($name::$variant => <$pb>::$variant as i32),+ }
            }
            /// `None` for the unspecified value (or one this build does not know).
            fn from_pb(value: i32) -> Option<Self> {
                match <$pb>::try_from(value).ok()? {
                    $(<$pb>::$variant => Some($name::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

named!(Gatekeeper, pb::GatekeeperRequirement, { AppStore, AppStoreAndIdentifiedDevelopers, Anywhere });
named!(ThreatLevel, pb::ThreatLevel, { Secured, Low, Medium, High });
named!(PasswordType, pb::PasswordType, { DeviceDefault, Alphanumeric, Numeric });
named!(NoPolicy, pb::NoPolicyTreatment, { Compliant, Noncompliant });

fn text(value: &Option<String>) -> String {
    value.clone().unwrap_or_default()
}

fn some_text(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_string())
}

impl PolicyDoc {
    /// The policy as CreatePolicy and UpdatePolicy take it, with its assignment.
    pub fn to_pb(&self) -> pb::Policy {
        let s = &self.settings;
        let password = s.password.as_ref().map(|p| pb::PasswordRules {
            required: p.required,
            block_simple: p.block_simple,
            min_length: p.min_length,
            r#type: p.kind.map_or(0, PasswordType::to_pb),
            min_character_sets: p.min_character_sets,
            max_minutes_of_inactivity_before_lock: p.max_minutes_of_inactivity_before_lock,
            max_expiry_days: p.max_expiry_days,
            min_previous_passwords_blocked: p.min_previous_passwords_blocked,
        });
        pb::Policy {
            id: self.id.clone(),
            name: self.name.clone(),
            settings: Some(pb::PolicySettings {
                os_minimum_version: text(&s.os_minimum_version),
                os_maximum_version: text(&s.os_maximum_version),
                os_minimum_build: text(&s.os_minimum_build),
                os_maximum_build: text(&s.os_maximum_build),
                system_integrity_protection_required: s.system_integrity_protection_required,
                storage_encryption_required: s.storage_encryption_required,
                firewall_enabled: s.firewall_enabled,
                firewall_block_all_incoming: s.firewall_block_all_incoming,
                firewall_stealth_mode: s.firewall_stealth_mode,
                gatekeeper: s.gatekeeper.map_or(0, Gatekeeper::to_pb),
                password,
                max_threat_level: s.max_threat_level.map_or(0, ThreatLevel::to_pb),
            }),
            grace_period_hours: self.grace_period_hours,
            assignment: Some(pb::Assignment {
                include_group_ids: self.assignment.include_groups.clone(),
                exclude_group_ids: self.assignment.exclude_groups.clone(),
            }),
            updated_at: None,
        }
    }

    pub fn from_pb(p: &pb::Policy) -> Self {
        let s = p.settings.clone().unwrap_or_default();
        // The server answers empty rules for none.
        let password = s.password.filter(|p| *p != pb::PasswordRules::default()).map(|p| PasswordDoc {
            required: p.required,
            block_simple: p.block_simple,
            min_length: p.min_length,
            kind: PasswordType::from_pb(p.r#type),
            min_character_sets: p.min_character_sets,
            max_minutes_of_inactivity_before_lock: p.max_minutes_of_inactivity_before_lock,
            max_expiry_days: p.max_expiry_days,
            min_previous_passwords_blocked: p.min_previous_passwords_blocked,
        });
        let a = p.assignment.clone().unwrap_or_default();
        PolicyDoc {
            kind: None,
            id: p.id.clone(),
            name: p.name.clone(),
            grace_period_hours: p.grace_period_hours,
            settings: PolicySettingsDoc {
                os_minimum_version: some_text(&s.os_minimum_version),
                os_maximum_version: some_text(&s.os_maximum_version),
                os_minimum_build: some_text(&s.os_minimum_build),
                os_maximum_build: some_text(&s.os_maximum_build),
                system_integrity_protection_required: s.system_integrity_protection_required,
                storage_encryption_required: s.storage_encryption_required,
                firewall_enabled: s.firewall_enabled,
                firewall_block_all_incoming: s.firewall_block_all_incoming,
                firewall_stealth_mode: s.firewall_stealth_mode,
                gatekeeper: Gatekeeper::from_pb(s.gatekeeper),
                password,
                max_threat_level: ThreatLevel::from_pb(s.max_threat_level),
            },
            assignment: AssignmentDoc { include_groups: a.include_group_ids, exclude_groups: a.exclude_group_ids },
        }
    }
}

impl SettingsDoc {
    pub fn to_pb(&self) -> pb::Settings {
        pb::Settings { no_policy: self.no_policy.to_pb(), validity_days: self.validity_days }
    }

    /// `None` when the server's answer names no treatment this build knows.
    pub fn from_pb(s: &pb::Settings) -> Option<Self> {
        Some(SettingsDoc { kind: None, no_policy: NoPolicy::from_pb(s.no_policy)?, validity_days: s.validity_days })
    }
}

impl ConnectorDoc {
    pub fn to_pb(&self) -> pb::EnableConnectorRequest {
        pb::EnableConnectorRequest {
            partner_app_id: self.partner_app_id.clone(),
            partner_version: self.partner_version.clone(),
            include_group_ids: self.include_groups.clone(),
            exclude_group_ids: self.exclude_groups.clone(),
        }
    }

    /// The connector's targeting, while it is enabled (or enabled and unresponsive).
    pub fn from_pb(c: &pb::Connector) -> Option<Self> {
        let on = matches!(
            pb::ConnectorState::try_from(c.state),
            Ok(pb::ConnectorState::Enabled | pb::ConnectorState::Unresponsive)
        );
        on.then(|| ConnectorDoc {
            kind: None,
            partner_app_id: c.partner_app_id.clone(),
            partner_version: c.partner_version.clone(),
            include_groups: c.include_group_ids.clone(),
            exclude_groups: c.exclude_group_ids.clone(),
        })
    }
}

/// One document as YAML, `kind` first.
pub fn to_yaml(doc: &Document) -> String {
    #[derive(Serialize)]
    struct Tagged<'a, T: Serialize> {
        kind: Kind,
        #[serde(flatten)]
        body: &'a T,
    }
    let yaml = match doc {
        Document::Policy(p) => serde_yaml_ng::to_string(&Tagged { kind: Kind::Policy, body: p }),
        Document::Settings(s) => serde_yaml_ng::to_string(&Tagged { kind: Kind::Settings, body: s }),
        Document::Connector(c) => serde_yaml_ng::to_string(&Tagged { kind: Kind::Connector, body: c }),
    };
    yaml.unwrap_or_else(|e| format!("# not representable: {e}\n"))
}
