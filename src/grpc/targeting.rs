//! `posture.v1.TargetingService`.

use tonic::{Request, Response, Status};

use super::Handlers;
use super::convert::{MAX_GROUP_LIST, id, ids};
use crate::domain::targeting::{self, EnrollmentTarget};
use crate::engine::{GroupTargets, check_user_groups};
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
        let target = match e.target {
            EnrollmentTarget::Partner => pb::EnrollmentTarget::Partner,
            EnrollmentTarget::Direct => pb::EnrollmentTarget::Direct,
            EnrollmentTarget::NotTargeted => pb::EnrollmentTarget::NotTargeted,
        };
        Ok(Response::new(pb::ResolveEnrollmentResponse {
            user_id,
            target: target as i32,
            include_group_ids: e.include_group_ids,
            exclude_group_ids: e.exclude_group_ids,
            revision,
        }))
    }

    async fn preview_targeting(
        &self,
        req: Request<pb::PreviewTargetingRequest>,
    ) -> Result<Response<pb::PreviewTargetingResponse>, Status> {
        let r = req.get_ref();
        let targets = GroupTargets {
            include: ids("include_group_ids", &r.include_group_ids, MAX_GROUP_LIST)?,
            exclude: ids("exclude_group_ids", &r.exclude_group_ids, MAX_GROUP_LIST)?,
        };
        self.readable(&req, r.min_revision).await?;
        let (p, revision) = self.engine.read(|state, _| {
            check_user_groups(state, "", &targets)?;
            Ok::<_, crate::error::Error>(targeting::preview(state, &targets.include, &targets.exclude))
        });
        let p = p?;
        Ok(Response::new(pb::PreviewTargetingResponse {
            users_to_partner: p.users_to_partner,
            devices_to_partner: p.devices_to_partner,
            users_excluded: p.users_excluded,
            devices_excluded: p.devices_excluded,
            users_not_targeted: p.users_not_targeted,
            devices_not_targeted: p.devices_not_targeted,
            revision,
        }))
    }
}
