//! The stored form of every entity and change: types of the store's own, apart from the
//! domain's, so that renaming a domain field or variant is a compile error here instead of a
//! data migration by accident. Rows carry a version (`"v": 1`; rows written before versions
//! were kept have none and are version 1); a version this build does not know is refused as
//! corrupt rather than misread.
//!
//! Strings are `Cow`s, so that encoding borrows from the domain value instead of copying it.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::domain::Change;
use crate::domain::model as m;
use crate::domain::version::{OsBuild, OsVersion};
use crate::error::{Error, Result};

mod devices;
mod directory;
mod log;
mod policies;
#[cfg(test)]
mod tests;

pub(crate) use devices::Device;
pub(crate) use directory::{Connector, Group, Settings, User};
use log::LoggedChange;
pub(crate) use policies::{Assignment, Policy};

/// The version this build writes and reads.
pub(super) const VERSION: u32 = 1;

pub(super) fn version() -> u32 {
    VERSION
}

pub(super) fn known(v: u32, what: &str) -> Result<()> {
    known_as(v, VERSION, what)
}

/// `v` is `what`'s current version `current`.
pub(super) fn known_as(v: u32, current: u32, what: &str) -> Result<()> {
    if v == current {
        Ok(())
    } else {
        Err(Error::Storage(format!("corrupt row: {what} record version {v} is unknown")))
    }
}

pub(super) fn text(s: &str) -> Cow<'_, str> {
    Cow::Borrowed(s)
}

pub(super) fn texts(v: &[String]) -> Vec<Cow<'_, str>> {
    v.iter().map(|s| text(s)).collect()
}

pub(super) fn owned(v: Vec<Cow<'_, str>>) -> Vec<String> {
    v.into_iter().map(Cow::into_owned).collect()
}

pub(super) fn os_version(s: &str) -> Result<OsVersion> {
    s.parse().map_err(|e| Error::Storage(format!("corrupt row: {e}")))
}

pub(super) fn os_build(s: &str) -> Result<OsBuild> {
    s.parse().map_err(|e| Error::Storage(format!("corrupt row: {e}")))
}

/// A unit-only enum of the store's, and its conversions to and from the domain's.
macro_rules! stored_enum {
    ($stored:ident <=> $domain:path { $($variant:ident),* $(,)? }) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
        pub(crate) enum $stored { $($variant),* }

        impl From<$domain> for $stored {
            fn from(d: $domain) -> Self {
                use $domain as D;
                match d { $(D::$variant => $stored::$variant),* }
            }
        }

        impl From<$stored> for $domain {
            fn from(s: $stored) -> Self {
                use $domain as D;
                match s { $($stored::$variant => D::$variant),* }
            }
        }
    };
}

stored_enum!(GroupKind <=> m::GroupKind { User, Device });
stored_enum!(Registration <=> m::Registration { Partner, Direct });
stored_enum!(FileVault <=> m::FileVault { NotApplicable, NotEncrypted, BootVolumeOnly, SomeEncrypted, AllEncrypted });
stored_enum!(Gatekeeper <=> m::Gatekeeper { Disabled, AppStoreAndIdentifiedDevelopers, AppStore });
stored_enum!(Sip <=> m::Sip { Enabled, Disabled, NotCollected });
stored_enum!(ThreatLevel <=> m::ThreatLevel { Secured, Low, Medium, High });
stored_enum!(PasswordType <=> m::PasswordType { DeviceDefault, Alphanumeric, Numeric });
stored_enum!(ConnectorState <=> m::ConnectorState { NotConfigured, Enabled, Terminated });
stored_enum!(NoPolicyTreatment <=> m::NoPolicyTreatment { Compliant, Noncompliant });

/// A value's text, when it has one.
pub(super) fn shown<T: ToString>(v: &Option<T>) -> Option<Cow<'static, str>> {
    v.as_ref().map(|v| Cow::Owned(v.to_string()))
}

fn to_json<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::Storage(e.to_string()))
}

/// A stored row's JSON body of the entity `value`.
pub(crate) fn encode<'a, D: 'a, R: From<&'a D> + Serialize>(value: &'a D) -> Result<String> {
    to_json(&R::from(value))
}

/// The entity a stored JSON body holds.
pub(crate) fn decode<'de, R: Deserialize<'de>, D: TryFrom<R, Error = Error>>(body: &'de str) -> Result<D> {
    let record: R = serde_json::from_str(body).map_err(|e| Error::Storage(format!("corrupt row: {e}")))?;
    D::try_from(record)
}

/// A change-log row's JSON body.
pub(crate) fn encode_changes(changes: &[Change]) -> Result<String> {
    to_json(&changes.iter().map(LoggedChange::from).collect::<Vec<_>>())
}

pub(crate) fn decode_changes(body: &str) -> Result<Vec<Change>> {
    let logged: Vec<LoggedChange<'_>> =
        serde_json::from_str(body).map_err(|e| Error::Storage(format!("corrupt change log: {e}")))?;
    logged.into_iter().map(Change::try_from).collect()
}
