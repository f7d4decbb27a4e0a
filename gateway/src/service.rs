//! The public `voca.v1.Gateway` service.

use std::sync::Arc;
use std::time::Instant;

use tonic::{Code, Request, Response, Status};
use voca_common::input::{self, InvalidInput};
use voca_proto::v1::gateway_server::Gateway;
use voca_proto::v1::pool_node_client::PoolNodeClient;
use voca_proto::v1::{
    ProcessRequest, RouteRequest, RouteResponse, SendMessageRequest, SendMessageResponse,
};

use crate::deadline::grpc_timeout;
use crate::routes::{Route, Router};

/// Routes each call to the pool node that owns its vendor.
pub struct GatewayService {
    router: Arc<Router>,
}

impl GatewayService {
    pub fn new(router: Arc<Router>) -> Self {
        Self { router }
    }
}

fn invalid(error: InvalidInput) -> Status {
    Status::invalid_argument(error.to_string())
}

fn no_pool_nodes() -> Status {
    Status::unavailable("no pool nodes are registered; start at least one voca-pool-node against the same etcd prefix")
}

/// Maps a failed call to a pool node to the status the client gets. When
/// the pool node could not be reached or could not reach its storage, that
/// is UNAVAILABLE naming the pool node. Any other status passes through.
///
/// A connection that breaks under a call (the pool node was killed) fails
/// with UNKNOWN, INTERNAL or CANCELLED from the channel itself; such a
/// status carries the transport error as its source, which a status sent
/// by the pool node never does.
fn pool_status(route: &Route<'_>, status: Status) -> Status {
    let broken_connection = matches!(
        status.code(),
        Code::Unknown | Code::Internal | Code::Cancelled
    ) && std::error::Error::source(&status).is_some();
    if !broken_connection && status.code() != Code::Unavailable {
        return status;
    }
    tracing::warn!(pool_id = %route.member.id, address = %route.member.address, error = %status, "pool node unavailable");
    Status::unavailable(format!(
        "pool node {} at {} is unavailable: {}; retry shortly",
        route.member.id,
        route.member.address,
        status.message()
    ))
}

#[tonic::async_trait]
impl Gateway for GatewayService {
    #[tracing::instrument(skip_all, fields(vendor_id = %request.get_ref().vendor_id))]
    async fn send_message(
        &self,
        request: Request<SendMessageRequest>,
    ) -> Result<Response<SendMessageResponse>, Status> {
        let timeout = grpc_timeout(request.metadata());
        let request = request.into_inner();
        input::check_vendor_id(&request.vendor_id).map_err(invalid)?;
        input::check_user_id(&request.user_id).map_err(invalid)?;
        input::check_text(&request.text).map_err(invalid)?;
        input::check_message_id(&request.message_id).map_err(invalid)?;
        if let Some(platform) = &request.platform {
            input::check_platform(platform).map_err(invalid)?;
        }
        let message_id = if request.message_id.is_empty() {
            uuid::Uuid::new_v4().to_string()
        } else {
            request.message_id
        };

        let table = self.router.load();
        let route = table.route(&request.vendor_id).ok_or_else(no_pool_nodes)?;
        let ring_version = table.ring().version();
        let channel = route.channel.ok_or_else(|| {
            Status::unavailable(format!(
                "pool node {} advertises address {:?}, which cannot be dialed; fix its --advertise",
                route.member.id, route.member.address
            ))
        })?;
        let mut outbound = Request::new(ProcessRequest {
            vendor_id: request.vendor_id,
            user_id: request.user_id,
            text: request.text,
            message_id: message_id.clone(),
            platform: request.platform,
            ring_version,
        });
        if let Some(timeout) = timeout {
            outbound.set_timeout(timeout);
        }
        let started = Instant::now();
        let reply = PoolNodeClient::new(channel.clone())
            .process(outbound)
            .await
            .map_err(|status| match timeout {
                // The channel ends a call whose deadline passed with CANCELLED.
                Some(limit) if status.code() == Code::Cancelled && started.elapsed() >= limit => {
                    Status::deadline_exceeded(format!(
                        "pool node {} did not answer within the {} ms deadline",
                        route.member.id,
                        limit.as_millis()
                    ))
                }
                _ => pool_status(&route, status),
            })?
            .into_inner();
        Ok(Response::new(SendMessageResponse {
            text: reply.text,
            pool_id: reply.pool_id,
            ring_version,
            message_id,
            character_name: reply.character_name,
        }))
    }

    async fn route(
        &self,
        request: Request<RouteRequest>,
    ) -> Result<Response<RouteResponse>, Status> {
        let vendor_id = &request.get_ref().vendor_id;
        input::check_vendor_id(vendor_id).map_err(invalid)?;
        let table = self.router.load();
        let route = table.route(vendor_id).ok_or_else(no_pool_nodes)?;
        Ok(Response::new(RouteResponse {
            pool_id: route.member.id.clone(),
            address: route.member.address.clone(),
            ring_version: table.ring().version(),
            ring_size: u32::try_from(table.ring().len()).unwrap_or(u32::MAX),
        }))
    }
}
