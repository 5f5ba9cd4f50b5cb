//! `posture.v1.TargetingService`.

use tonic::{Request, Response, Status};

use super::incoming::{self, id};
use super::{Handlers, outgoing};
use crate::domain::targeting;
use crate::engine::check_user_groups;
use crate::error::Error;
use crate::proto::{self as pb, targeting_service_server::TargetingService};

#[tonic::async_trait]
impl TargetingService for Handlers {
    async fn resolve_enrollment(
        &self,
        req: Request<pb::ResolveEnrollmentRequest>,
    ) -> Result<Response<pb::ResolveEnrollmentResponse>, Status> {
        let user_id = id("user_id", &req.get_ref().user_id)?;
        self.readable(&req, req.get_ref().min_revision).await?;
        let (e, revision) = self.engine.read(|state, _| targeting::resolve_saved(state, &user_id));
        Ok(Response::new(outgoing::enrollment(user_id, e, revision)))
    }

    async fn preview_targeting(
        &self,
        req: Request<pb::PreviewTargetingRequest>,
    ) -> Result<Response<pb::PreviewTargetingResponse>, Status> {
        let r = req.get_ref();
        let targets = incoming::targets(&r.include_group_ids, &r.exclude_group_ids)?;
        self.readable(&req, r.min_revision).await?;
        let (p, revision) = self.engine.read(|state, _| {
            check_user_groups(state, "", &targets)?;
            Ok::<_, Error>(targeting::preview(state, &targets.include, &targets.exclude))
        });
        Ok(Response::new(outgoing::preview(&p?, revision)))
    }
}
