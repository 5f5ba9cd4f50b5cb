//! `posture.v1.ComplianceService`.

use std::pin::Pin;

use futures_util::Stream;
use tonic::{Request, Response, Status};

use super::incoming::{self, id};
use super::{Handlers, outgoing};
use crate::domain::access;
use crate::domain::diagnosis::{self, PartnerCredential};
use crate::domain::model::ConnectorState;
use crate::engine::watch::Start;
use crate::error::Error;
use crate::proto::{self as pb, compliance_service_server::ComplianceService};

#[tonic::async_trait]
impl ComplianceService for Handlers {
    type WatchComplianceStream = Pin<Box<dyn Stream<Item = Result<pb::ComplianceEvent, Status>> + Send>>;

    async fn check_access(
        &self,
        req: Request<pb::CheckAccessRequest>,
    ) -> Result<Response<pb::CheckAccessResponse>, Status> {
        let r = req.get_ref();
        let user_id = id("user_id", &r.user_id)?;
        let device_id = id("device_id", &r.device_id)?;
        // A replica that cannot vouch for its data denies at once (in check_access) rather
        // than wait for a revision that cannot come.
        if self.engine.check_available().is_ok() {
            self.at_least(&req, r.min_revision).await?;
        }
        let (decision, revision, cache_hit) = self.engine.decide(&device_id);
        let seen = access::seen_by(&decision, &user_id);
        crate::telemetry::decided(&seen, &user_id, revision, cache_hit);
        Ok(Response::new(outgoing::check_access(&seen, revision)))
    }

    async fn evaluate_device(
        &self,
        req: Request<pb::EvaluateDeviceRequest>,
    ) -> Result<Response<pb::EvaluateDeviceResponse>, Status> {
        let device_id = id("device_id", &req.get_ref().device_id)?;
        self.readable(&req, req.get_ref().min_revision).await?;
        let (resp, revision) =
            self.engine.read(|state, now| access::explain(state, &device_id, now).map(|e| outgoing::evaluation(&e)));
        let mut resp = resp.ok_or_else(|| not_reported(&device_id))?;
        resp.revision = revision;
        Ok(Response::new(resp))
    }

    async fn diagnose_device(
        &self,
        req: Request<pb::DiagnoseDeviceRequest>,
    ) -> Result<Response<pb::DiagnoseDeviceResponse>, Status> {
        let device_id = id("device_id", &req.get_ref().device_id)?;
        self.readable(&req, req.get_ref().min_revision).await?;
        let engine = &self.engine;
        let (found, revision) = engine.read(|state, now| {
            // A connector never enabled names no partner app: there is no credential to check.
            let connector = state.connector();
            let credential = match connector.state {
                ConnectorState::NotConfigured => PartnerCredential::NotChecked,
                _ => engine.credentials().partner_credential(&connector.partner_app_id),
            };
            diagnosis::diagnose(state, &device_id, credential, now)
        });
        let found = found.ok_or_else(|| not_reported(&device_id))?;
        Ok(Response::new(outgoing::diagnosis(device_id, &found, revision)))
    }

    async fn get_compliance_summary(
        &self,
        req: Request<pb::GetComplianceSummaryRequest>,
    ) -> Result<Response<pb::GetComplianceSummaryResponse>, Status> {
        // From the watcher's running count of every device's decision: no pass over the state
        // under its lock, which any gateway could otherwise make every decision wait behind.
        // The count is never behind this replica's own writes, as no read is.
        self.engine.check_available()?;
        let revision = req.get_ref().min_revision.max(self.engine.revision());
        self.watcher.wait_settled(revision, self.wait_budget(&req)).await?;
        let (s, revision) = self.watcher.summary();
        Ok(Response::new(outgoing::summary(&s, revision)))
    }

    async fn watch_compliance(
        &self,
        req: Request<pb::WatchComplianceRequest>,
    ) -> Result<Response<Self::WatchComplianceStream>, Status> {
        let credential = crate::auth::caller(&req).map_or_else(String::new, |c| c.id.to_string());
        let r = req.into_inner();
        let device_ids = incoming::ids("device_ids", &r.device_ids, incoming::MAX_BATCH)?;
        let start = match (r.after_cursor, r.from_revision, r.every_device) {
            (0, 0, false) => Start::Now,
            (0, 0, true) => Start::EveryDevice,
            (_, _, true) => {
                return Err(Error::invalid(
                    "every_device",
                    "is a start of its own: leave after_cursor and from_revision 0 with it",
                )
                .into());
            }
            (0, revision, false) => Start::FromRevision(revision),
            (cursor, _, false) => Start::AfterCursor(cursor),
        };
        let subscription = self.watcher.subscribe(&credential, start, device_ids).await?;
        let events = futures_util::stream::unfold(subscription, |mut s| async move {
            let item = s.next().await?;
            Some((item.map(|e| pb::ComplianceEvent::from(&*e)).map_err(Status::from), s))
        });
        Ok(Response::new(Box::pin(events)))
    }
}

fn not_reported(device_id: &str) -> Error {
    Error::NotFound(format!("no device {device_id} has been reported by the partner"))
}
