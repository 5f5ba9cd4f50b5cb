//! `posture.v1.ComplianceService`.

use std::pin::Pin;

use futures_util::Stream;
use tonic::{Request, Response, Status};

use super::Handlers;
use super::convert::{self, id};
use crate::domain::compliance;
use crate::domain::diagnosis::PartnerCredential;
use crate::domain::model::ConnectorState;
use crate::domain::{access, diagnosis, summary};
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
        let (decision, revision) = self.engine.check_access(&device_id);
        Ok(Response::new(convert::access_out(&decision, &user_id, revision)))
    }

    async fn evaluate_device(
        &self,
        req: Request<pb::EvaluateDeviceRequest>,
    ) -> Result<Response<pb::EvaluateDeviceResponse>, Status> {
        let device_id = id("device_id", &req.get_ref().device_id)?;
        self.readable(&req, req.get_ref().min_revision).await?;
        let (resp, revision) = self.engine.read(|state, now| {
            let device = state.device(&device_id).ok_or_else(|| not_reported(&device_id))?;
            let eval = compliance::evaluate(state, device, now, compliance::Detail::All);
            let decision = access::decide_evaluated(state, device, &eval, now);
            let reasons =
                decision.reasons.iter().filter(|r| r.code.explains_state()).map(convert::reason_out).collect();
            Ok::<_, Error>(pb::EvaluateDeviceResponse {
                device_id: device.id.clone(),
                user_id: device.user_id.clone(),
                state: convert::state_out(eval.state),
                policies: eval
                    .policies
                    .iter()
                    .map(|p| pb::PolicyResult {
                        policy_id: p.policy.id.clone(),
                        policy_name: p.policy.name.clone(),
                        state: convert::state_out(p.state),
                        settings: p
                            .settings
                            .iter()
                            .map(|s| pb::SettingResult {
                                setting: s.setting.to_string(),
                                expected: s.expected.clone(),
                                actual: s.actual.clone(),
                                state: convert::state_out(s.state),
                            })
                            .collect(),
                        grace_period_ends: p.grace_period_ends.map(convert::timestamp),
                    })
                    .collect(),
                grace_period_ends: eval.grace_period_ends.map(convert::timestamp),
                reasons,
                revision: 0,
            })
        });
        let mut resp = resp?;
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
            let findings = diagnosis::diagnose(state, &device_id, credential, now)?;
            Some((findings, access::decide(state, &device_id, now).allow))
        });
        let (findings, allow) = found.ok_or_else(|| not_reported(&device_id))?;
        Ok(Response::new(pb::DiagnoseDeviceResponse {
            device_id,
            decision: convert::decision_out(allow),
            findings: findings
                .iter()
                .map(|f| pb::Finding {
                    cause: f.cause.as_str().to_string(),
                    detail: f.detail.clone(),
                    remediation: f.remediation().to_string(),
                })
                .collect(),
            revision,
        }))
    }

    async fn get_compliance_summary(
        &self,
        req: Request<pb::GetComplianceSummaryRequest>,
    ) -> Result<Response<pb::GetComplianceSummaryResponse>, Status> {
        self.readable(&req, req.get_ref().min_revision).await?;
        let (s, revision) = self.engine.read(summary::summarize);
        Ok(Response::new(pb::GetComplianceSummaryResponse {
            devices: s.devices,
            allowed: s.allowed,
            denied: s.denied,
            by_state: s
                .by_state
                .iter()
                .map(|(state, n)| pb::StateCount { state: convert::state_out(*state), devices: *n })
                .collect(),
            by_reason: s
                .by_reason
                .iter()
                .map(|(code, (devices, users))| pb::ReasonCount {
                    code: code.as_str().to_string(),
                    devices: *devices,
                    users: *users,
                })
                .collect(),
            revision,
        }))
    }

    async fn watch_compliance(
        &self,
        req: Request<pb::WatchComplianceRequest>,
    ) -> Result<Response<Self::WatchComplianceStream>, Status> {
        let r = req.into_inner();
        let device_ids = convert::ids("device_ids", &r.device_ids, convert::MAX_BATCH)?;
        let start = match (r.after_cursor, r.from_revision) {
            (0, 0) => Start::Now,
            (0, revision) => Start::FromRevision(revision),
            (cursor, _) => Start::AfterCursor(cursor),
        };
        let subscription = self.watcher.subscribe(start, device_ids).await?;
        let events = futures_util::stream::unfold(subscription, |mut s| async move {
            let item = s.next().await?;
            Some((item.map(|e| convert::event_out(&e)).map_err(Status::from), s))
        });
        Ok(Response::new(Box::pin(events)))
    }
}

fn not_reported(device_id: &str) -> Error {
    Error::NotFound(format!("no device {device_id} has been reported by the partner"))
}
