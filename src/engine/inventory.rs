//! The partner's inventory reports: refused whole while the integration is off, judged item
//! by item otherwise, stored in one durable transaction, idempotent on retry. The newest
//! report per Mac wins: one older than what is stored is acknowledged and not applied.

use std::collections::HashMap;

use super::Engine;
use crate::auth::Caller;
use crate::domain::connector::heartbeat_due;
use crate::domain::model::{ConnectorState, Device};
use crate::domain::{Change, Timestamp};
use crate::error::{Error, Result};

/// Clock skew tolerated on reported timestamps (they are then taken as `now`).
const MAX_FUTURE_SECS: i64 = 300;

/// What happened to one report of a batch.
#[derive(Debug)]
pub enum ItemOutcome {
    /// Stored; `changed` is false when it repeated what was already stored.
    Accepted {
        changed: bool,
    },
    /// Acknowledged but not applied: a newer report of this Mac is already stored.
    Stale(String),
    Rejected(Error),
}

#[derive(Debug)]
pub struct ReportOutcome {
    pub items: Vec<(String, ItemOutcome)>,
    pub revision: u64,
}

impl Engine {
    /// Stores a batch of reports. `items` hold each report already checked at the edge, or
    /// the error that refused it.
    pub async fn report_inventory(
        &self,
        caller: Option<&Caller>,
        items: Vec<(String, Result<Device>)>,
    ) -> Result<ReportOutcome> {
        let mut outcomes: Vec<(String, ItemOutcome)> = Vec::with_capacity(items.len());
        let revision = self
            .write(|state, now| {
                outcomes.clear();
                let connector = state.connector();
                if connector.state != ConnectorState::Enabled {
                    return Err(Error::FailedPrecondition(format!(
                        "the partner integration is {}: partner reports are refused until the connector is enabled \
                         (AdminService/EnableConnector)",
                        match connector.state {
                            ConnectorState::Terminated => "terminated",
                            _ => "not enabled",
                        }
                    )));
                }
                if let Some(caller) = caller
                    && *caller.id != *connector.partner_app_id
                {
                    return Err(Error::PermissionDenied(format!(
                        "credential {} is not the connector's partner app ({}): only it may report inventory",
                        caller.id, connector.partner_app_id
                    )));
                }
                // Later items of the batch see earlier ones, so a repeated device is idempotent
                // too, and the newer of two reports of one Mac wins.
                let mut batch: HashMap<&str, Device> = HashMap::new();
                for (index, (id, item)) in items.iter().enumerate() {
                    let outcome = match item.as_ref().map_err(Clone::clone).and_then(|d| check_times(d, now, index)) {
                        Err(e) => ItemOutcome::Rejected(e),
                        Ok(device) => {
                            let previous = batch.get(&*device.id).or_else(|| state.device(&device.id));
                            match previous {
                                Some(previous) if device.is_older_than(previous) => {
                                    ItemOutcome::Stale(stale_note(&device, previous))
                                }
                                Some(previous) if *previous == device => ItemOutcome::Accepted { changed: false },
                                _ => {
                                    batch.insert(id.as_str(), device);
                                    ItemOutcome::Accepted { changed: true }
                                }
                            }
                        }
                    };
                    outcomes.push((id.clone(), outcome));
                }
                // A Mac whose report differs from the stored one only in its check-in is stored
                // as a check-in: a few bytes in the log and one column, not the whole device.
                let mut changes: Vec<Change> = batch
                    .into_values()
                    .map(|device| match state.device(&device.id) {
                        Some(stored) if stored.same_but_check_in(&device) => {
                            Change::CheckIn { device_id: device.id.into(), at: device.last_check_in }
                        }
                        _ => Change::PutDevice(device),
                    })
                    .collect();
                // Every report is a heartbeat; one write a minute records it.
                if heartbeat_due(state.heartbeat(), now) {
                    changes.push(Change::PutHeartbeat(now));
                }
                Ok(changes)
            })
            .await?;
        Ok(ReportOutcome { items: outcomes, revision })
    }
}

/// Why a report was not applied.
fn stale_note(report: &Device, stored: &Device) -> String {
    match (report.partner_verdict, stored.partner_verdict) {
        (Some(r), Some(s)) if r.decided_at < s.decided_at => format!(
            "not applied: its partner verdict (decided at {}) is older than the stored one (decided at {})",
            r.decided_at, s.decided_at
        ),
        _ => format!(
            "not applied: its check-in ({}) is older than the stored report's ({})",
            report.last_check_in, stored.last_check_in
        ),
    }
}

/// Refuses timestamps ahead of `now` beyond the tolerated skew, naming the field as the edge
/// does (`devices[<index>].<field>`), and takes those within it as `now`: no bookkeeping may
/// run ahead of the server's clock (a check-in "in the future" would buy freshness and grace).
fn check_times(device: &Device, now: Timestamp, index: usize) -> Result<Device> {
    let limit = now.plus_secs(MAX_FUTURE_SECS);
    let stamps = [
        ("last_check_in", Some(device.last_check_in)),
        ("last_token_renewal", Some(device.last_token_renewal)),
        ("refresh_token_issued", device.refresh_token_issued),
        ("partner_verdict.decided_at", device.partner_verdict.map(|v| v.decided_at)),
    ];
    for (field, t) in stamps {
        if t.is_some_and(|t| t > limit) {
            return Err(Error::invalid(
                format!("devices[{index}].{field}"),
                "is in the future; check the partner's clock",
            ));
        }
    }
    let mut device = device.clone();
    device.last_check_in = device.last_check_in.min(now);
    device.last_token_renewal = device.last_token_renewal.min(now);
    device.refresh_token_issued = device.refresh_token_issued.map(|t| t.min(now));
    if let Some(v) = &mut device.partner_verdict {
        v.decided_at = v.decided_at.min(now);
    }
    Ok(device)
}
