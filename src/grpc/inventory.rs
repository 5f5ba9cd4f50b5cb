//! `posture.v1.InventoryService`.

use tonic::{Request, Response, Status};

use super::Handlers;
use super::incoming;
use crate::auth;
use crate::engine::ItemOutcome;
use crate::proto::{self as pb, inventory_service_server::InventoryService};

#[tonic::async_trait]
impl InventoryService for Handlers {
    async fn report_inventory(
        &self,
        req: Request<pb::ReportInventoryRequest>,
    ) -> Result<Response<pb::ReportInventoryResponse>, Status> {
        let items = incoming::reports(req.get_ref())?;
        let outcome = self.engine.report_inventory(auth::caller(&req), items).await?;
        let mut resp = pb::ReportInventoryResponse { revision: outcome.revision, ..Default::default() };
        for (index, (device_id, item)) in outcome.items.into_iter().enumerate() {
            let mut result = pb::ReportResult { index: index as u32, device_id, ..Default::default() };
            match item {
                ItemOutcome::Accepted { changed } => (result.accepted, result.changed) = (true, changed),
                ItemOutcome::Stale(note) => (result.accepted, result.stale, result.note) = (true, true, note),
                ItemOutcome::Rejected(e) => result.error = e.to_string(),
            }
            if result.accepted {
                resp.accepted += 1;
            } else {
                resp.rejected += 1;
            }
            resp.results.push(result);
        }
        Ok(Response::new(resp))
    }
}
