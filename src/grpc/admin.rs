//! `posture.v1.AdminService`.

use tonic::{Request, Response, Status};

use super::incoming::{self, id};
use super::{Handlers, outgoing};
use crate::domain::connector;
use crate::engine::Draft;
use crate::error::Error;
use crate::proto::{self as pb, admin_service_server::AdminService};

impl Handlers {
    fn policy_response(&self, policy_id: &str) -> Result<pb::PolicyResponse, Error> {
        let (policy, revision) = self
            .engine
            .read(|state, _| state.policy(policy_id).map(|p| outgoing::policy(p, state.assignment(policy_id))));
        let policy = policy.ok_or_else(|| Error::NotFound(format!("no policy {policy_id}")))?;
        Ok(pb::PolicyResponse { policy: Some(policy), revision })
    }

    fn connector_response(&self, revision: Option<u64>) -> pb::ConnectorResponse {
        let (connector, current) = self.engine.read(|state, now| {
            let (c, heartbeat) = (state.connector(), state.heartbeat());
            outgoing::connector(c, heartbeat, connector::status(c, heartbeat, now))
        });
        pb::ConnectorResponse { connector: Some(connector), revision: revision.unwrap_or(current) }
    }

    fn settings_response(&self, revision: Option<u64>) -> pb::SettingsResponse {
        let (settings, current) = self.engine.read(|state, _| pb::Settings::from(state.settings()));
        pb::SettingsResponse { settings: Some(settings), revision: revision.unwrap_or(current) }
    }
}

/// A write's answer: the entity as now stored, with the write's own revision.
fn written(mut resp: pb::PolicyResponse, revision: u64) -> Response<pb::PolicyResponse> {
    resp.revision = revision;
    Response::new(resp)
}

#[tonic::async_trait]
impl AdminService for Handlers {
    async fn create_policy(
        &self,
        req: Request<pb::CreatePolicyRequest>,
    ) -> Result<Response<pb::PolicyResponse>, Status> {
        let policy = incoming::policy(req.get_ref().policy.as_ref())?;
        let policy_id = policy.id.clone();
        let revision = self.engine.create_policy(policy).await?;
        Ok(written(self.policy_response(&policy_id)?, revision))
    }

    async fn update_policy(
        &self,
        req: Request<pb::UpdatePolicyRequest>,
    ) -> Result<Response<pb::PolicyResponse>, Status> {
        let policy = incoming::policy(req.get_ref().policy.as_ref())?;
        let policy_id = policy.id.clone();
        let revision = self.engine.update_policy(policy).await?;
        Ok(written(self.policy_response(&policy_id)?, revision))
    }

    async fn get_policy(&self, req: Request<pb::GetPolicyRequest>) -> Result<Response<pb::PolicyResponse>, Status> {
        let policy_id = id("policy_id", &req.get_ref().policy_id)?;
        self.readable(&req, req.get_ref().min_revision).await?;
        Ok(Response::new(self.policy_response(&policy_id)?))
    }

    async fn list_policies(
        &self,
        req: Request<pb::ListPoliciesRequest>,
    ) -> Result<Response<pb::ListPoliciesResponse>, Status> {
        self.readable(&req, req.get_ref().min_revision).await?;
        let (policies, revision) = self
            .engine
            .read(|state, _| state.policies().map(|p| outgoing::policy(p, state.assignment(&p.id))).collect());
        Ok(Response::new(pb::ListPoliciesResponse { policies, revision }))
    }

    async fn delete_policy(
        &self,
        req: Request<pb::DeletePolicyRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let policy_id = id("policy_id", &req.get_ref().policy_id)?;
        let revision = self.engine.delete_policy(&policy_id).await?;
        Ok(Response::new(pb::WriteResponse { revision }))
    }

    async fn assign_policy(
        &self,
        req: Request<pb::AssignPolicyRequest>,
    ) -> Result<Response<pb::AssignPolicyResponse>, Status> {
        let (policy_id, targets) = incoming::assignment(req.get_ref())?;
        let revision = self.engine.assign_policy(&policy_id, targets).await?;
        let policy = self.policy_response(&policy_id)?.policy;
        Ok(Response::new(pb::AssignPolicyResponse { policy, revision }))
    }

    async fn enable_connector(
        &self,
        req: Request<pb::EnableConnectorRequest>,
    ) -> Result<Response<pb::ConnectorResponse>, Status> {
        let (app_id, version, targets) = incoming::connector(req.get_ref())?;
        let revision = self.engine.enable_connector(app_id, version, targets).await?;
        Ok(Response::new(self.connector_response(Some(revision))))
    }

    async fn terminate_connector(
        &self,
        _req: Request<pb::TerminateConnectorRequest>,
    ) -> Result<Response<pb::ConnectorResponse>, Status> {
        let revision = self.engine.terminate_connector().await?;
        Ok(Response::new(self.connector_response(Some(revision))))
    }

    async fn get_connector(
        &self,
        req: Request<pb::GetConnectorRequest>,
    ) -> Result<Response<pb::ConnectorResponse>, Status> {
        self.readable(&req, req.get_ref().min_revision).await?;
        Ok(Response::new(self.connector_response(None)))
    }

    async fn sync_directory(
        &self,
        req: Request<pb::SyncDirectoryRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let d = incoming::directory(req.get_ref())?;
        let revision = self.engine.sync_directory(d.users, d.groups, d.removed_user_ids, d.removed_group_ids).await?;
        Ok(Response::new(pb::WriteResponse { revision }))
    }

    async fn get_settings(
        &self,
        req: Request<pb::GetSettingsRequest>,
    ) -> Result<Response<pb::SettingsResponse>, Status> {
        self.readable(&req, req.get_ref().min_revision).await?;
        Ok(Response::new(self.settings_response(None)))
    }

    async fn update_settings(
        &self,
        req: Request<pb::UpdateSettingsRequest>,
    ) -> Result<Response<pb::SettingsResponse>, Status> {
        let settings = incoming::settings(req.get_ref().settings.as_ref())?;
        let revision = self.engine.update_settings(settings).await?;
        Ok(Response::new(self.settings_response(Some(revision))))
    }

    async fn delete_device(
        &self,
        req: Request<pb::DeleteDeviceRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let device_id = id("device_id", &req.get_ref().device_id)?;
        let revision = self.engine.delete_device(&device_id).await?;
        Ok(Response::new(pb::WriteResponse { revision }))
    }

    async fn preview_policy(
        &self,
        req: Request<pb::PreviewPolicyRequest>,
    ) -> Result<Response<pb::PreviewPolicyResponse>, Status> {
        let (draft, max_devices) = incoming::preview(req.get_ref())?;
        self.readable(&req, req.get_ref().min_revision).await?;
        // The assignment's groups are checked against the directory by the engine, as
        // AssignPolicy's are: the field is within the draft's.
        let within = match draft {
            Draft::Assignment { .. } => Some("assign_policy"),
            Draft::Policy { .. } => Some("policy"),
            _ => None,
        };
        // Deciding every Mac twice takes a while: off the runtime's threads, so that the calls
        // beside it are not held up.
        let engine = self.engine.clone();
        let previewed =
            tokio::task::spawn_blocking(move || engine.preview(&draft, max_devices, outgoing::preview_policy)).await;
        let previewed = previewed.map_err(|e| Error::Unavailable(format!("the preview did not finish: {e}")))?;
        let (mut resp, revision) = previewed.map_err(|e| match within {
            Some(field) => e.within(field),
            None => e,
        })?;
        resp.revision = revision;
        Ok(Response::new(resp))
    }
}
