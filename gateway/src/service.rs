//! The public `voca.v1.Gateway` service.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};
use voca_common::grpc::redirect;
use voca_common::input::{self, InvalidInput};
use voca_proto::v1::gateway_server::Gateway;
use voca_proto::v1::pool_node_client::PoolNodeClient;
use voca_proto::v1::{
    ProcessRequest, ProcessResponse, RouteRequest, RouteResponse, SendMessageRequest,
    SendMessageResponse,
};

use crate::deadline::grpc_timeout;
use crate::routes::{dial, is_unreachable, RouteTable, Router};

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

fn no_pool_nodes(table: &RouteTable) -> Status {
    if table.ring().version() == 0 {
        return Status::unavailable(
            "the gateway has not read the pool nodes from etcd yet; etcd may be unreachable (the gateway's log says so); retry shortly",
        );
    }
    if !table.left_out().is_empty() {
        return Status::unavailable(format!(
            "no pool node is reachable: {} registered but failed to connect; retry shortly",
            table.left_out().join(", ")
        ));
    }
    Status::unavailable("no pool nodes are registered; start at least one voca-pool-node against the same etcd prefix")
}

/// Calls to pool nodes one message may take: the first, one to the next
/// node when the first was unreachable, and one redirect.
const MAX_CALLS: usize = 3;

/// The pool node a call goes to, and the ring version it is routed on.
struct Target {
    node_id: String,
    address: String,
    channel: Channel,
    ring_version: u64,
}

/// The failure of one call to a pool node.
enum Failure {
    /// The node could not be reached, or the connection broke.
    Unreachable(Status),
    /// The node's newer ring names another owner.
    Redirect(Target),
    /// Any other status, returned to the client as it is.
    Final(Status),
}

fn classify(target: &Target, status: Status) -> Failure {
    if is_unreachable(&status) {
        return Failure::Unreachable(status);
    }
    if status.code() == Code::FailedPrecondition {
        let trailer = |key| {
            status
                .metadata()
                .get(key)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        if let (Some(node_id), Some(address), Some(version)) = (
            trailer(redirect::OWNER_ID),
            trailer(redirect::OWNER_ADDRESS),
            trailer(redirect::RING_VERSION).and_then(|v| v.parse().ok()),
        ) {
            if let Some(channel) = dial(&address) {
                tracing::debug!(from = %target.node_id, to = %node_id, ring_version = version, "redirected");
                return Failure::Redirect(Target {
                    node_id,
                    address,
                    channel,
                    ring_version: version,
                });
            }
        }
    }
    if status.code() == Code::Unavailable {
        tracing::warn!(pool_id = %target.node_id, address = %target.address, error = %status, "pool node unavailable");
    }
    Failure::Final(status)
}

fn unreachable_status(target: &Target, status: &Status) -> Status {
    tracing::warn!(pool_id = %target.node_id, address = %target.address, error = %status, "pool node unreachable");
    Status::unavailable(format!(
        "pool node {} at {} is unavailable: {}; retry shortly",
        target.node_id,
        target.address,
        status.message()
    ))
}

fn deadline_passed(target: &Target, limit: Duration) -> Status {
    Status::deadline_exceeded(format!(
        "pool node {} did not answer within the {} ms deadline",
        target.node_id,
        limit.as_millis()
    ))
}

impl GatewayService {
    /// Finds the owner of `vendor_id` on `table` and the channel to it.
    fn target(table: &RouteTable, vendor_id: &str) -> Result<Target, Status> {
        let route = table.route(vendor_id).ok_or_else(|| no_pool_nodes(table))?;
        let channel = route.channel.ok_or_else(|| {
            Status::unavailable(format!(
                "pool node {} advertises address {:?}, which cannot be dialed; fix its --advertise",
                route.member.id, route.member.address
            ))
        })?;
        Ok(Target {
            node_id: route.member.id.clone(),
            address: route.member.address.clone(),
            channel: channel.clone(),
            ring_version: table.ring().version(),
        })
    }

    /// Sends the message to its owner. A node that cannot be reached is
    /// left out and the message goes to the next node on the ring; a node
    /// whose newer ring names another owner sends it there, once. Every
    /// message carries a message id, so a retry after a broken connection
    /// is answered once even if the first call reached processing.
    async fn forward(
        &self,
        mut message: ProcessRequest,
        timeout: Option<Duration>,
    ) -> Result<(ProcessResponse, u64), Status> {
        let started = Instant::now();
        let mut table = self.router.load();
        let mut target = Self::target(&table, &message.vendor_id)?;
        let mut redirected = false;
        // Nodes this call found unreachable, named in the next request even
        // when the gateway's own ring does not list them, as after a
        // redirect to a node that joined after the gateway last read etcd.
        let mut unreachable: Vec<String> = Vec::new();
        let mut calls = 0;
        loop {
            calls += 1;
            message.ring_version = target.ring_version;
            message.left_out = table.left_out().to_vec();
            for node_id in &unreachable {
                if !message.left_out.contains(node_id) {
                    message.left_out.push(node_id.clone());
                }
            }
            let mut outbound = Request::new(message.clone());
            if let Some(limit) = timeout {
                let left = limit.saturating_sub(started.elapsed());
                if left.is_zero() {
                    return Err(deadline_passed(&target, limit));
                }
                outbound.set_timeout(left);
            }
            let status = match PoolNodeClient::new(target.channel.clone())
                .process(outbound)
                .await
            {
                Ok(reply) => return Ok((reply.into_inner(), target.ring_version)),
                Err(status) => status,
            };
            if let Some(limit) = timeout {
                // The channel ends a call whose deadline passed with CANCELLED.
                if status.code() == Code::Cancelled && started.elapsed() >= limit {
                    return Err(deadline_passed(&target, limit));
                }
            }
            match classify(&target, status) {
                Failure::Final(status) => return Err(status),
                Failure::Unreachable(status) if calls < MAX_CALLS => {
                    unreachable.push(target.node_id.clone());
                    table = self.router.leave_out(&target.node_id).await;
                    let next = Self::target(&table, &message.vendor_id)?;
                    if next.node_id == target.node_id {
                        return Err(unreachable_status(&target, &status));
                    }
                    tracing::info!(from = %target.node_id, to = %next.node_id, "pool node unreachable; sending to the next node");
                    target = next;
                }
                Failure::Unreachable(status) => return Err(unreachable_status(&target, &status)),
                Failure::Redirect(owner) if !redirected && calls < MAX_CALLS => {
                    redirected = true;
                    target = owner;
                }
                Failure::Redirect(owner) => {
                    return Err(Status::unavailable(format!(
                        "the ring is changing: pool node {} redirected vendor {:?} to {} again; retry shortly",
                        target.node_id, message.vendor_id, owner.node_id
                    )))
                }
            }
        }
    }
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
        let message = ProcessRequest {
            vendor_id: request.vendor_id,
            user_id: request.user_id,
            text: request.text,
            message_id: message_id.clone(),
            platform: request.platform,
            ring_version: 0,
            left_out: Vec::new(),
        };
        let (reply, ring_version) = self.forward(message, timeout).await?;
        Ok(Response::new(SendMessageResponse {
            text: reply.text,
            pool_id: reply.pool_id,
            ring_version,
            message_id,
            character_name: reply.character_name,
            deduplicated_locally: reply.deduplicated_locally,
        }))
    }

    async fn route(
        &self,
        request: Request<RouteRequest>,
    ) -> Result<Response<RouteResponse>, Status> {
        let vendor_id = &request.get_ref().vendor_id;
        input::check_vendor_id(vendor_id).map_err(invalid)?;
        let table = self.router.load();
        let route = table
            .route(vendor_id)
            .ok_or_else(|| no_pool_nodes(&table))?;
        Ok(Response::new(RouteResponse {
            pool_id: route.member.id.clone(),
            address: route.member.address.clone(),
            ring_version: table.ring().version(),
            ring_size: u32::try_from(table.ring().len()).unwrap_or(u32::MAX),
        }))
    }
}
