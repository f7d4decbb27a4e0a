//! The pool node's internal gRPC service.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::future::Cache;

use tonic::{Request, Response, Status};
use voca_character::{Prompt, Responder};
use voca_common::input;
use voca_common::RingHandle;
use voca_proto::v1::pool_node_server::PoolNode;
use voca_proto::v1::{OwnerRequest, OwnerResponse, ProcessRequest, ProcessResponse};

use crate::agents::{Agents, LoadError};
use crate::history::{Conversations, DEFAULT_HISTORY_BYTES};
use crate::hot::{HotState, MessageClaim, StoredReply, REPLY_TTL};

/// Time a retry waits for another attempt at the same message to finish.
const IN_PROGRESS_WAIT: Duration = Duration::from_secs(3);
/// Time between checks of a message another attempt is answering.
const IN_PROGRESS_POLL: Duration = Duration::from_millis(50);
/// Replies this node keeps for retries, at most.
const MAX_LOCAL_REPLIES: u64 = 100_000;

/// Replies to messages for the vendors routed to this node.
pub struct PoolNodeService {
    node_id: String,
    agents: Arc<Agents>,
    hot: Arc<dyn HotState>,
    conversations: Conversations,
    /// Replies by vendor and message id, so that a retry reaching this node
    /// gets the same reply even when the shared state is unreachable.
    replies: Cache<String, Arc<ProcessResponse>>,
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
            replies: Cache::builder()
                .max_capacity(MAX_LOCAL_REPLIES)
                .time_to_live(REPLY_TTL)
                .build(),
            responder,
            ring,
        }
    }
}

impl PoolNodeService {
    /// Answers a message with a message id once across the mesh: returns
    /// the stored reply of an attempt that finished, waits up to
    /// [`IN_PROGRESS_WAIT`] for one still running, or claims the message and
    /// answers it.
    async fn answer_once(&self, request: &ProcessRequest) -> Result<Arc<ProcessResponse>, Status> {
        let (vendor_id, message_id) = (&request.vendor_id, &request.message_id);
        let deadline = Instant::now() + IN_PROGRESS_WAIT;
        loop {
            match self.hot.claim_message(vendor_id, message_id).await {
                MessageClaim::Finished(reply) => {
                    tracing::debug!(%message_id, "answered before; returning the stored reply");
                    return Ok(Arc::new(ProcessResponse {
                        text: reply.text,
                        pool_id: reply.pool_id,
                        character_name: reply.character_name,
                    }));
                }
                MessageClaim::InProgress if Instant::now() < deadline => {
                    tokio::time::sleep(IN_PROGRESS_POLL).await;
                }
                MessageClaim::InProgress => {
                    return Err(Status::aborted(format!(
                        "message {message_id:?} for vendor {vendor_id:?} is still being answered by another attempt; retry it with the same message id later"
                    )));
                }
                MessageClaim::Claimed => {
                    return match self.answer(request, true).await {
                        Ok(reply) => Ok(Arc::new(reply)),
                        Err(status) => {
                            self.hot.release_message(vendor_id, message_id).await;
                            Err(status)
                        }
                    };
                }
                MessageClaim::Untracked => return self.answer(request, false).await.map(Arc::new),
            }
        }
    }

    /// Loads the vendor's agent, answers the message and records the
    /// exchange, with the reply stored under the message id when the
    /// message was `claimed`.
    async fn answer(
        &self,
        request: &ProcessRequest,
        claimed: bool,
    ) -> Result<ProcessResponse, Status> {
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
        let character_name = agent.name().to_owned();
        if claimed {
            let stored = StoredReply {
                text: reply.text.clone(),
                pool_id: self.node_id.clone(),
                character_name: character_name.clone(),
            };
            self.hot
                .finish_message(
                    &request.vendor_id,
                    &request.user_id,
                    &request.message_id,
                    &request.text,
                    &stored,
                )
                .await;
        } else {
            self.hot
                .append_exchange(
                    &request.vendor_id,
                    &request.user_id,
                    &request.text,
                    &reply.text,
                )
                .await;
        }
        drop(turns);
        self.hot.count_message(&self.node_id).await;
        self.conversations
            .reweigh(&request.vendor_id, &request.user_id, conversation)
            .await;
        tracing::debug!(message_id = %request.message_id, "answered");

        Ok(ProcessResponse {
            text: reply.text,
            pool_id: self.node_id.clone(),
            character_name,
        })
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

        if request.message_id.is_empty() {
            return self.answer(&request, false).await.map(Response::new);
        }
        // Retries of one message that reach this node while it works on the
        // first attempt wait for that attempt and get its reply.
        let key = format!("{}\u{0}{}", request.vendor_id, request.message_id);
        let reply = self
            .replies
            .try_get_with(key, self.answer_once(&request))
            .await
            .map_err(|status| (*status).clone())?;
        Ok(Response::new((*reply).clone()))
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
