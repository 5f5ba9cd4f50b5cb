//! The partner connector as admins see it, and when its heartbeat is worth recording.

use super::model::{Connector, ConnectorState, Timestamp};

/// A connector that has not heard from the partner for this long is unresponsive.
pub const UNRESPONSIVE_AFTER_SECS: i64 = 24 * Timestamp::HOUR;
/// The heartbeat is written at most this often: every report is a heartbeat, but one write a
/// minute tells every replica as much as one a report would.
pub const HEARTBEAT_EVERY_SECS: i64 = 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectorStatus {
    NotConfigured,
    Enabled,
    /// Enabled, but the partner has not reported for 24 hours (heartbeats stopped).
    Unresponsive,
    Terminated,
}

/// The connector's status at `now`, given when the partner was last heard from.
pub fn status(connector: &Connector, heartbeat: Option<Timestamp>, now: Timestamp) -> ConnectorStatus {
    match connector.state {
        ConnectorState::NotConfigured => ConnectorStatus::NotConfigured,
        ConnectorState::Terminated => ConnectorStatus::Terminated,
        ConnectorState::Enabled => {
            // A heartbeat from before the connector was (re-)enabled does not count.
            let since = heartbeat.max(connector.enabled_at).unwrap_or(now);
            if now.0.saturating_sub(since.0) >= UNRESPONSIVE_AFTER_SECS {
                ConnectorStatus::Unresponsive
            } else {
                ConnectorStatus::Enabled
            }
        }
    }
}

/// Whether a report at `now` should record the heartbeat, given the last one recorded.
pub fn heartbeat_due(last: Option<Timestamp>, now: Timestamp) -> bool {
    last.is_none_or(|t| now.0.saturating_sub(t.0) >= HEARTBEAT_EVERY_SECS)
}
