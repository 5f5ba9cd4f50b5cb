//! The stored forms of the directory (users and groups), the connector and the tenant settings.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::*;
use crate::domain::Timestamp;

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct User<'a> {
    #[serde(default = "version")]
    v: u32,
    id: Cow<'a, str>,
    user_principal_name: Cow<'a, str>,
    device_management_licence: bool,
    premium_identity_licence: bool,
}

impl<'a> From<&'a m::User> for User<'a> {
    fn from(u: &'a m::User) -> Self {
        User {
            v: VERSION,
            id: text(&u.id),
            user_principal_name: text(&u.user_principal_name),
            device_management_licence: u.device_management_licence,
            premium_identity_licence: u.premium_identity_licence,
        }
    }
}

impl TryFrom<User<'_>> for m::User {
    type Error = Error;
    fn try_from(u: User<'_>) -> Result<Self> {
        known(u.v, "user")?;
        Ok(m::User {
            id: u.id.into_owned(),
            user_principal_name: u.user_principal_name.into_owned(),
            device_management_licence: u.device_management_licence,
            premium_identity_licence: u.premium_identity_licence,
        })
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Group<'a> {
    #[serde(default = "version")]
    v: u32,
    id: Cow<'a, str>,
    name: Cow<'a, str>,
    kind: GroupKind,
    members: Vec<Cow<'a, str>>,
}

impl<'a> From<&'a m::Group> for Group<'a> {
    fn from(g: &'a m::Group) -> Self {
        Group { v: VERSION, id: text(&g.id), name: text(&g.name), kind: g.kind.into(), members: texts(&g.members) }
    }
}

impl TryFrom<Group<'_>> for m::Group {
    type Error = Error;
    fn try_from(g: Group<'_>) -> Result<Self> {
        known(g.v, "group")?;
        Ok(m::Group {
            id: g.id.into_owned(),
            name: g.name.into_owned(),
            kind: g.kind.into(),
            members: owned(g.members),
        })
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Connector<'a> {
    #[serde(default = "version")]
    v: u32,
    state: ConnectorState,
    partner_app_id: Cow<'a, str>,
    partner_version: Option<Cow<'a, str>>,
    include_group_ids: Vec<Cow<'a, str>>,
    exclude_group_ids: Vec<Cow<'a, str>>,
    enabled_at: Option<i64>,
    terminated_at: Option<i64>,
    removal_at: Option<i64>,
}

impl<'a> From<&'a m::Connector> for Connector<'a> {
    fn from(c: &'a m::Connector) -> Self {
        Connector {
            v: VERSION,
            state: c.state.into(),
            partner_app_id: text(&c.partner_app_id),
            partner_version: shown(&c.partner_version),
            include_group_ids: texts(&c.include_group_ids),
            exclude_group_ids: texts(&c.exclude_group_ids),
            enabled_at: c.enabled_at.map(|t| t.0),
            terminated_at: c.terminated_at.map(|t| t.0),
            removal_at: c.removal_at.map(|t| t.0),
        }
    }
}

impl TryFrom<Connector<'_>> for m::Connector {
    type Error = Error;
    fn try_from(c: Connector<'_>) -> Result<Self> {
        known(c.v, "connector")?;
        Ok(m::Connector {
            state: c.state.into(),
            partner_app_id: c.partner_app_id.into_owned(),
            partner_version: c.partner_version.as_deref().map(os_version).transpose()?,
            include_group_ids: owned(c.include_group_ids),
            exclude_group_ids: owned(c.exclude_group_ids),
            enabled_at: c.enabled_at.map(Timestamp),
            terminated_at: c.terminated_at.map(Timestamp),
            removal_at: c.removal_at.map(Timestamp),
        })
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Settings {
    #[serde(default = "version")]
    v: u32,
    no_policy: NoPolicyTreatment,
    validity_days: u32,
}

impl From<&m::TenantSettings> for Settings {
    fn from(s: &m::TenantSettings) -> Self {
        Settings { v: VERSION, no_policy: s.no_policy.into(), validity_days: s.validity_days }
    }
}

impl TryFrom<Settings> for m::TenantSettings {
    type Error = Error;
    fn try_from(s: Settings) -> Result<Self> {
        known(s.v, "settings")?;
        Ok(m::TenantSettings { no_policy: s.no_policy.into(), validity_days: s.validity_days })
    }
}
