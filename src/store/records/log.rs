//! One change as the change log keeps it.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::*;
use crate::domain::Timestamp;

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Failure {
    since: i64,
    grace_ends: i64,
}

/// One change as the log keeps it.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum LoggedChange<'a> {
    PutUser(User<'a>),
    DeleteUser(Cow<'a, str>),
    PutGroup(Group<'a>),
    DeleteGroup(Cow<'a, str>),
    PutDevice(Device<'a>),
    CheckIn { id: Cow<'a, str>, at: i64 },
    DeleteDevice(Cow<'a, str>),
    PutPolicy(Policy<'a>),
    DeletePolicy(Cow<'a, str>),
    PutAssignment(Assignment<'a>),
    PutConnector(Connector<'a>),
    PutSettings(Settings),
    PutFailing { device_id: Cow<'a, str>, policy_id: Cow<'a, str>, failure: Failure },
    DeleteFailing { device_id: Cow<'a, str>, policy_id: Cow<'a, str> },
    PutHeartbeat(i64),
}

impl<'a> From<&'a Change> for LoggedChange<'a> {
    fn from(c: &'a Change) -> Self {
        match c {
            Change::PutUser(u) => LoggedChange::PutUser(u.into()),
            Change::DeleteUser(id) => LoggedChange::DeleteUser(text(id)),
            Change::PutGroup(g) => LoggedChange::PutGroup(g.into()),
            Change::DeleteGroup(id) => LoggedChange::DeleteGroup(text(id)),
            Change::PutDevice(d) => LoggedChange::PutDevice(d.into()),
            Change::CheckIn { device_id, at } => LoggedChange::CheckIn { id: text(device_id), at: at.0 },
            Change::DeleteDevice(id) => LoggedChange::DeleteDevice(text(id)),
            Change::PutPolicy(p) => LoggedChange::PutPolicy(p.into()),
            Change::DeletePolicy(id) => LoggedChange::DeletePolicy(text(id)),
            Change::PutAssignment(a) => LoggedChange::PutAssignment(a.into()),
            Change::PutConnector(c) => LoggedChange::PutConnector(c.into()),
            Change::PutSettings(s) => LoggedChange::PutSettings(s.into()),
            Change::PutFailing { device_id, policy_id, failure } => LoggedChange::PutFailing {
                device_id: text(device_id),
                policy_id: text(policy_id),
                failure: Failure { since: failure.since.0, grace_ends: failure.grace_ends.0 },
            },
            Change::DeleteFailing { device_id, policy_id } => {
                LoggedChange::DeleteFailing { device_id: text(device_id), policy_id: text(policy_id) }
            }
            Change::PutHeartbeat(t) => LoggedChange::PutHeartbeat(t.0),
        }
    }
}

impl TryFrom<LoggedChange<'_>> for Change {
    type Error = Error;
    fn try_from(c: LoggedChange<'_>) -> Result<Self> {
        Ok(match c {
            LoggedChange::PutUser(u) => Change::PutUser(u.try_into()?),
            LoggedChange::DeleteUser(id) => Change::DeleteUser(id.into_owned()),
            LoggedChange::PutGroup(g) => Change::PutGroup(g.try_into()?),
            LoggedChange::DeleteGroup(id) => Change::DeleteGroup(id.into_owned()),
            LoggedChange::PutDevice(d) => Change::PutDevice(d.try_into()?),
            LoggedChange::CheckIn { id, at } => Change::CheckIn { device_id: id.into_owned(), at: Timestamp(at) },
            LoggedChange::DeleteDevice(id) => Change::DeleteDevice(id.into_owned()),
            LoggedChange::PutPolicy(p) => Change::PutPolicy(p.try_into()?),
            LoggedChange::DeletePolicy(id) => Change::DeletePolicy(id.into_owned()),
            LoggedChange::PutAssignment(a) => Change::PutAssignment(a.try_into()?),
            LoggedChange::PutConnector(c) => Change::PutConnector(c.try_into()?),
            LoggedChange::PutSettings(s) => Change::PutSettings(s.try_into()?),
            LoggedChange::PutFailing { device_id, policy_id, failure } => Change::PutFailing {
                device_id: device_id.into_owned(),
                policy_id: policy_id.into_owned(),
                failure: m::Failure { since: Timestamp(failure.since), grace_ends: Timestamp(failure.grace_ends) },
            },
            LoggedChange::DeleteFailing { device_id, policy_id } => {
                Change::DeleteFailing { device_id: device_id.into_owned(), policy_id: policy_id.into_owned() }
            }
            LoggedChange::PutHeartbeat(t) => Change::PutHeartbeat(Timestamp(t)),
        })
    }
}
