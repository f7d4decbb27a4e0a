//! The pool node's internal gRPC service.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use voca_character::{Prompt, Responder};
use voca_common::input;
use voca_common::RingHandle;
use voca_proto::v1::pool_node_server::PoolNode;
use voca_proto::v1::{OwnerRequest, OwnerResponse, ProcessRequest, ProcessResponse};

use crate::agents::{Agents, LoadError};
use crate::history::{Conversations, DEFAULT_HISTORY_BYTES};
use crate::hot::HotState;

/// Replies to messages for the vendors routed to this node.
pub struct PoolNodeService {
    node_id: String,
    agents: Arc<Agents>,
    hot: Arc<dyn HotState>,
    conversations: Conversations,
    responder: Arc<dyn Responder>,
    ring: RingHandle,
}

impl PoolNodeService {
    pub fn new(
        node_id: String,
        agents: Arc<Agents>,
        hot: Arc<dyn HotState>,
        responder: Arc<dyn Responder>,
        ring: RingHandle,
    ) -> Self {
        Self {
            node_id,
            agents,
            hot,
            conversations: Conversations::new(DEFAULT_HISTORY_BYTES),
            responder,
            ring,
        }
    }
}

/// Maps every pool node error to its gRPC status, in one place.
fn load_status(error: LoadError) -> Status {
    match &error {
        LoadError::NotFound { .. } => Status::not_found(error.to_string()),
        LoadError::Malformed { .. } | LoadError::Unusable { .. } | LoadError::Suspended { .. } => {
            Status::failed_precondition(error.to_string())
        }
        LoadError::Store { vendor_id, .. } => {
            tracing::error!(vendor_id = %vendor_id, %error, "character store failed");
            Status::unavailable(error.to_string())
        }
    }
}

fn invalid(error: input::InvalidInput) -> Status {
    Status::invalid_argument(error.to_string())
}

#[tonic::async_trait]
impl PoolNode for PoolNodeService {
    #[tracing::instrument(skip_all, fields(vendor_id = %request.get_ref().vendor_id, ring_version = request.get_ref().ring_version))]
    async fn process(
        &self,
        request: Request<ProcessRequest>,
    ) -> Result<Response<ProcessResponse>, Status> {
        let request = request.into_inner();
        input::check_vendor_id(&request.vendor_id).map_err(invalid)?;
        input::check_user_id(&request.user_id).map_err(invalid)?;
        input::check_text(&request.text).map_err(invalid)?;
        input::check_message_id(&request.message_id).map_err(invalid)?;
        if let Some(platform) = &request.platform {
            input::check_platform(platform).map_err(invalid)?;
        }

        let agent = self
            .agents
            .get(&request.vendor_id)
            .await
            .map_err(load_status)?;
        let conversation = self
            .conversations
            .get(&request.vendor_id, &request.user_id)
            .await;
        // The local lock keeps one conversation's messages in order on this
        // node. The shared history, when reachable, is the one that follows
        // the vendor to other pool nodes.
        let mut turns = conversation.lock().await;
        let shared = self.hot.history(&request.vendor_id, &request.user_id).await;
        let prompt = Prompt {
            user_id: &request.user_id,
            text: &request.text,
            history: match &shared {
                Some(history) => history,
                None => turns.make_contiguous(),
            },
        };
        let reply = self
            .responder
            .respond(&agent, &prompt)
            .await
            .map_err(|error| {
                tracing::error!(%error, "responder failed");
                Status::internal(format!(
                    "the responder failed for vendor {:?}: {error}",
                    request.vendor_id
                ))
            })?;
        conversation.record(&mut turns, &request.text, &reply.text);
        self.hot
            .append_exchange(
                &request.vendor_id,
                &request.user_id,
                &request.text,
                &reply.text,
            )
            .await;
        drop(turns);
        self.hot.count_message(&self.node_id).await;
        self.conversations
            .reweigh(&request.vendor_id, &request.user_id, conversation)
            .await;
        tracing::debug!(message_id = %request.message_id, "answered");

        Ok(Response::new(ProcessResponse {
            text: reply.text,
            pool_id: self.node_id.clone(),
            character_name: agent.name().to_owned(),
        }))
    }

    async fn owner(
        &self,
        request: Request<OwnerRequest>,
    ) -> Result<Response<OwnerResponse>, Status> {
        let vendor_id = &request.get_ref().vendor_id;
        input::check_vendor_id(vendor_id).map_err(invalid)?;
        let ring = self.ring.load();
        let owner = ring.owner(vendor_id).ok_or_else(|| {
            Status::unavailable("no pool nodes are registered on this node's ring")
        })?;
        Ok(Response::new(OwnerResponse {
            pool_id: owner.id.clone(),
            address: owner.address.clone(),
            ring_version: ring.version(),
            ring_size: u32::try_from(ring.len()).unwrap_or(u32::MAX),
        }))
    }
}
