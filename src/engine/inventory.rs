//! The partner's inventory reports: refused whole while the integration is off, judged item
//! by item otherwise, stored in one durable transaction, idempotent on retry.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use super::Engine;
use crate::auth::Caller;
use crate::domain::compliance::next_failing_since;
use crate::domain::model::{ConnectorState, Device};
use crate::domain::{Change, Timestamp};
use crate::error::{Error, Result};

/// Clock skew tolerated on reported timestamps.
const MAX_FUTURE_SECS: i64 = 300;

/// What happened to one report of a batch.
#[derive(Debug)]
pub enum ItemOutcome {
    /// Stored; `changed` is false when it repeated what was already stored.
    Accepted {
        changed: bool,
    },
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
                    && caller.id != connector.partner_app_id
                {
                    return Err(Error::PermissionDenied(format!(
                        "credential {} is not the connector's partner app ({}): only it may report inventory",
                        caller.id, connector.partner_app_id
                    )));
                }
                // Later items of the batch see earlier ones, so a repeated device is idempotent too.
                let mut batch: HashMap<String, Device> = HashMap::new();
                for (index, (id, item)) in items.into_iter().enumerate() {
                    let outcome = match item.and_then(|d| check_times(d, now, index)) {
                        Err(e) => ItemOutcome::Rejected(e),
                        Ok(mut device) => {
                            let previous = batch.get(&device.id).or_else(|| state.device(&device.id));
                            device.failing_since = next_failing_since(state, previous, &device);
                            let changed = previous != Some(&device);
                            if changed {
                                batch.insert(device.id.clone(), device);
                            }
                            ItemOutcome::Accepted { changed }
                        }
                    };
                    outcomes.push((id, outcome));
                }
                Ok(batch.into_values().map(Change::PutDevice).collect())
            })
            .await?;
        self.last_heartbeat.store(self.now().0, Ordering::Relaxed);
        Ok(ReportOutcome { items: outcomes, revision })
    }

    /// When the partner last reported (since this process started).
    pub fn last_heartbeat(&self) -> Option<Timestamp> {
        match self.last_heartbeat.load(Ordering::Relaxed) {
            0 => None,
            t => Some(Timestamp(t)),
        }
    }
}

/// Refuses timestamps ahead of `now` (beyond the tolerated skew), naming the field as the
/// edge does: `devices[<index>].<field>`.
fn check_times(device: Device, now: Timestamp, index: usize) -> Result<Device> {
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
    Ok(device)
}
