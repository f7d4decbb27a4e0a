//! The pool node's internal gRPC service.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moka::future::Cache;
use tonic::metadata::MetadataMap;
use tonic::{Code, Request, Response, Status};
use voca_character::{Prompt, Responder, Turn};
use voca_common::grpc::redirect;
use voca_common::input;
use voca_common::{Ring, RingHandle};
use voca_proto::v1::pool_node_server::PoolNode;
use voca_proto::v1::{OwnerRequest, OwnerResponse, ProcessRequest, ProcessResponse};

use crate::agents::{Agents, LoadError};
use crate::history::{Conversations, DEFAULT_HISTORY_BYTES};
use crate::hot::{
    holder_process, Attempt, Finish, HotState, MessageClaim, StoredReply, CLAIM_TTL, REPLY_TTL,
};

/// Time a message waits for another attempt at it, or at an earlier message
/// of its conversation on another pool node, before it gets ABORTED.
const IN_PROGRESS_WAIT: Duration = Duration::from_secs(3);
/// Time between checks of a message or conversation another attempt holds.
const IN_PROGRESS_POLL: Duration = Duration::from_millis(20);
/// Replies this node keeps for retries, at most.
const MAX_LOCAL_REPLIES: u64 = 100_000;

/// Replies to messages for the vendors routed to this node.
pub struct PoolNodeService {
    node_id: String,
    agents: Arc<Agents>,
    hot: Arc<dyn HotState>,
    conversations: Conversations,
    /// Replies by vendor, user and message id, so that a retry reaching this
    /// node gets the same reply even when the shared state is unreachable.
    replies: Cache<String, Arc<ProcessResponse>>,
    responder: Arc<dyn Responder>,
    ring: RingHandle,
    /// This process's random id, part of every attempt token, so that a
    /// restarted node can tell its own earlier claims from current ones.
    incarnation: String,
    attempts: AtomicU64,
    /// False until the node is registered, and while its etcd lease is known
    /// to have expired.
    lease_live: Arc<AtomicBool>,
    /// The last ring with nodes left out that a request asked for.
    reduced: Mutex<Option<ReducedRing>>,
    /// Attempts answered while the shared state was unreachable.
    unsettled: Arc<Unsettled>,
}

impl PoolNodeService {
    pub fn new(
        node_id: String,
        agents: Arc<Agents>,
        hot: Arc<dyn HotState>,
        responder: Arc<dyn Responder>,
        ring: RingHandle,
        incarnation: String,
        lease_live: Arc<AtomicBool>,
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
            incarnation,
            attempts: AtomicU64::new(0),
            lease_live,
            reduced: Mutex::new(None),
            unsettled: Arc::new(Unsettled::default()),
        }
    }

    /// Starts the task that settles attempts answered while the shared
    /// state was unreachable; see [`Unsettled`].
    pub fn spawn_settler(&self) -> tokio::task::JoinHandle<()> {
        let (unsettled, hot) = (self.unsettled.clone(), self.hot.clone());
        tokio::spawn(async move { unsettled.settle(hot.as_ref()).await })
    }

    /// Returns `ring` without the nodes in `left_out`, reusing the last one
    /// built when a request asks for the same.
    fn without(&self, ring: &Arc<Ring>, left_out: &[String]) -> Arc<Ring> {
        let mut left_out = left_out.to_vec();
        left_out.sort();
        left_out.dedup();
        let mut reduced = self.reduced.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((version, nodes, built)) = reduced.as_ref() {
            if *version == ring.version() && *nodes == left_out {
                return built.clone();
            }
        }
        let built = Arc::new(ring.without(&left_out));
        *reduced = Some((ring.version(), left_out, built.clone()));
        built
    }

    /// Refuses a message that this node's ring, newer than the one the
    /// gateway routed it on, gives to another node: the answer names the
    /// owner so that the gateway can send it there. A request routed on
    /// ring version 0 was not routed on a ring and is not checked.
    fn check_owner(&self, request: &ProcessRequest) -> Result<(), Status> {
        let ring = self.ring.load();
        if request.ring_version == 0 || ring.version() <= request.ring_version || ring.is_empty() {
            return Ok(());
        }
        let effective = if request.left_out.is_empty() {
            ring.clone()
        } else {
            self.without(&ring, &request.left_out)
        };
        match effective.owner(&request.vendor_id) {
            Some(owner) if owner.id != self.node_id => {
                let mut trailers = MetadataMap::new();
                for (key, value) in [
                    (redirect::OWNER_ID, owner.id.clone()),
                    (redirect::OWNER_ADDRESS, owner.address.clone()),
                    (redirect::RING_VERSION, ring.version().to_string()),
                ] {
                    if let Ok(value) = value.parse() {
                        trailers.insert(key, value);
                    }
                }
                Err(Status::with_metadata(
                    Code::FailedPrecondition,
                    format!(
                        "vendor {:?} belongs to pool node {} at {} on ring version {}, newer than the request's {}; send it there",
                        request.vendor_id, owner.id, owner.address, ring.version(), request.ring_version
                    ),
                    trailers,
                ))
            }
            _ => Ok(()),
        }
    }

    /// Returns whether the shared-state claims of process `incarnation` of
    /// `pool_id` may be taken over: the gateway left the node out as
    /// unreachable, or on a ring at least as new as the gateway's the node
    /// is no longer registered or another process of it is.
    fn is_gone(&self, pool_id: &str, incarnation: &str, request: &ProcessRequest) -> bool {
        if request.left_out.iter().any(|id| id == pool_id) {
            return true;
        }
        let ring = self.ring.load();
        if ring.version() < request.ring_version || ring.is_empty() {
            return false;
        }
        match ring.incarnation(pool_id) {
            None => true,
            Some(registered) => !registered.is_empty() && registered != incarnation,
        }
    }

    /// Claims the message and its conversation in the shared state, taking
    /// over from pool nodes that are gone, and waiting up to
    /// [`IN_PROGRESS_WAIT`] for attempts that are still running.
    async fn claim(
        &self,
        attempt: &Attempt,
        request: &ProcessRequest,
    ) -> Result<MessageClaim, Status> {
        // A claim by any process of this node id is taken over: an earlier
        // process has stopped, and an attempt of this process that still
        // holds the message or the conversation ended without releasing it.
        // This attempt holds the conversation's local lock, and the replies
        // cache lets one attempt at a time work on a message.
        let mut take_over = vec![format!("{}/", self.node_id)];
        take_over.extend(request.left_out.iter().map(|id| format!("{id}/")));
        let deadline = Instant::now() + IN_PROGRESS_WAIT;
        loop {
            let claim = self.hot.claim_message(attempt, &take_over).await;
            let (holder, what) = match &claim {
                MessageClaim::InProgress(holder) => (holder, "message"),
                MessageClaim::ConversationBusy(holder) => (holder, "the conversation of message"),
                _ => return Ok(claim),
            };
            let (pool, incarnation) = holder_process(holder);
            let prefix = format!("{pool}/{incarnation}/");
            if !take_over.iter().any(|p| prefix.starts_with(p.as_str()))
                && self.is_gone(pool, incarnation, request)
            {
                tracing::info!(holder = %holder, "taking over from a pool node that is gone");
                take_over.push(prefix);
                continue;
            }
            if Instant::now() >= deadline {
                return Err(Status::aborted(format!(
                    "{what} {:?} of vendor {:?} is claimed by pool node {pool}, which is still answering it or stopped without releasing it (claims expire after {} s); retry with the same message id shortly",
                    request.message_id,
                    request.vendor_id,
                    CLAIM_TTL.as_secs()
                )));
            }
            tokio::time::sleep(IN_PROGRESS_POLL).await;
        }
    }

    /// Answers a message: once across the mesh when it has a message id and
    /// the shared state tracks messages, after the earlier messages of its
    /// conversation, and recording the exchange.
    async fn answer(&self, request: &ProcessRequest) -> Result<ProcessResponse, Status> {
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
        // node; the conversation lease in the shared state keeps them in
        // order across pool nodes.
        let mut turns = conversation.lock().await;
        let attempt = (!request.message_id.is_empty()).then(|| Attempt {
            vendor_id: request.vendor_id.clone(),
            user_id: request.user_id.clone(),
            message_id: request.message_id.clone(),
            token: Attempt::token(
                &self.node_id,
                &self.incarnation,
                self.attempts.fetch_add(1, Ordering::Relaxed),
            ),
        });
        let (attempt, shared) = match attempt {
            Some(attempt) => match self.claim(&attempt, request).await? {
                MessageClaim::Finished(reply) => {
                    tracing::debug!(message_id = %request.message_id, "answered before; returning the stored reply");
                    return stored_response(request, reply);
                }
                MessageClaim::Claimed(history) => (Tracking::Claimed(attempt), Some(history)),
                MessageClaim::Uncertain => (Tracking::Uncertain(attempt), None),
                _ => (Tracking::None, None),
            },
            None => (
                Tracking::None,
                self.hot.history(&request.vendor_id, &request.user_id).await,
            ),
        };
        let history: &[Turn] = match &shared {
            Some(history) => history,
            None => turns.make_contiguous(),
        };
        let prompt = Prompt {
            user_id: &request.user_id,
            text: &request.text,
            history,
        };
        let reply = match self.responder.respond(&agent, &prompt).await {
            Ok(reply) => reply,
            Err(error) => {
                tracing::error!(%error, "responder failed");
                if let Tracking::Claimed(attempt) | Tracking::Uncertain(attempt) = &attempt {
                    self.hot.release_message(attempt).await;
                }
                return Err(Status::internal(format!(
                    "the responder failed for vendor {:?}: {error}",
                    request.vendor_id
                )));
            }
        };
        let mut response = ProcessResponse {
            text: reply.text,
            pool_id: self.node_id.clone(),
            character_name: agent.name().to_owned(),
            deduplicated_locally: !matches!(attempt, Tracking::Claimed(_)),
        };
        let stored = StoredReply {
            text: response.text.clone(),
            pool_id: self.node_id.clone(),
            character_name: response.character_name.clone(),
            user_id: request.user_id.clone(),
        };
        match attempt {
            Tracking::Uncertain(attempt) => self.unsettled.push(attempt, &request.text, stored),
            Tracking::Claimed(attempt) => {
                match self.hot.finish_message(&attempt, &request.text, &stored).await {
                    Finish::Saved | Finish::Erased => {}
                    Finish::Untracked => {
                        response.deduplicated_locally = true;
                        self.unsettled.push(attempt, &request.text, stored);
                    }
                    Finish::AnsweredBefore(first) => return stored_response(request, first),
                    Finish::TakenOver => {
                        return Err(Status::aborted(format!(
                            "another pool node took over message {:?} of vendor {:?} while this one answered it; retry with the same message id",
                            request.message_id, request.vendor_id
                        )))
                    }
                }
            }
            Tracking::None => {
                self.hot
                    .append_exchange(
                        &request.vendor_id,
                        &request.user_id,
                        &request.text,
                        &response.text,
                    )
                    .await
            }
        }
        conversation.record(&mut turns, &request.text, &response.text);
        drop(turns);
        self.hot.count_message(&self.node_id).await;
        self.conversations
            .reweigh(&request.vendor_id, &request.user_id, conversation)
            .await;
        tracing::debug!(message_id = %request.message_id, "answered");
        Ok(response)
    }
}

/// A ring without some nodes: the version of the full ring, the sorted ids
/// left out, and the ring.
type ReducedRing = (u64, Vec<String>, Arc<Ring>);

/// The record of an attempt in the shared state.
enum Tracking {
    /// It holds the message and the conversation's lease.
    Claimed(Attempt),
    /// Its claim may or may not have reached the shared state.
    Uncertain(Attempt),
    /// The shared state does not track it.
    None,
}

/// Returns the stored reply to an earlier attempt at `request`'s message,
/// unless another customer of the vendor sent that message.
fn stored_response(
    request: &ProcessRequest,
    reply: StoredReply,
) -> Result<ProcessResponse, Status> {
    if !reply.user_id.is_empty() && reply.user_id != request.user_id {
        return Err(Status::already_exists(format!(
            "message id {:?} of vendor {:?} was already used by another customer; give each message of a vendor its own id",
            request.message_id, request.vendor_id
        )));
    }
    Ok(ProcessResponse {
        text: reply.text,
        pool_id: reply.pool_id,
        character_name: reply.character_name,
        deduplicated_locally: false,
    })
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
        for node_id in &request.left_out {
            input::check_node_id(node_id).map_err(|error| {
                Status::invalid_argument(format!("invalid left_out entry: {error}"))
            })?;
        }
        if !self.lease_live.load(Ordering::Relaxed) {
            return Err(Status::unavailable(format!(
                "pool node {} is not registered in etcd (it is starting, or its lease expired and it is registering again) and takes no messages until it is; retry through a gateway",
                self.node_id
            )));
        }
        self.check_owner(&request)?;

        if request.message_id.is_empty() {
            return self.answer(&request).await.map(Response::new);
        }
        // Retries of one message that reach this node while it works on the
        // first attempt wait for that attempt and get its reply.
        let key = format!(
            "{}\u{0}{}\u{0}{}",
            request.vendor_id, request.user_id, request.message_id
        );
        let reply = self
            .replies
            .try_get_with(key, async { self.answer(&request).await.map(Arc::new) })
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

/// Attempts answered while the shared state was unreachable, each with its
/// message and reply. A claim sent just before an outage can take effect
/// after it, when the server runs the commands it had queued, and then
/// blocks the message and its conversation until the claim expires. Once
/// the state is reachable again, each attempt is finished, which records
/// the reply if the attempt still holds its claims, and then released.
#[derive(Default)]
struct Unsettled {
    queue: Mutex<VecDeque<(Attempt, String, StoredReply)>>,
}

/// Attempts kept for settling, at most; the oldest are dropped first and
/// their claims expire by themselves.
const MAX_UNSETTLED: usize = 100_000;
/// Time between tries to settle attempts.
const SETTLE_INTERVAL: Duration = Duration::from_millis(500);

impl Unsettled {
    /// Locks the queue. No code panics while holding the lock, so a poisoned
    /// lock still holds a consistent queue.
    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<(Attempt, String, StoredReply)>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, attempt: Attempt, message: &str, reply: StoredReply) {
        let mut queue = self.queue();
        if queue.len() >= MAX_UNSETTLED {
            queue.pop_front();
        }
        queue.push_back((attempt, message.to_owned(), reply));
    }

    fn pop(&self) -> Option<(Attempt, String, StoredReply)> {
        self.queue().pop_front()
    }

    fn push_front(&self, entry: (Attempt, String, StoredReply)) {
        self.queue().push_front(entry);
    }

    async fn settle(&self, hot: &dyn HotState) {
        loop {
            tokio::time::sleep(SETTLE_INTERVAL).await;
            let mut settled = 0_usize;
            while let Some((attempt, message, reply)) = self.pop() {
                match hot.finish_message(&attempt, &message, &reply).await {
                    Finish::Untracked => {
                        self.push_front((attempt, message, reply));
                        break;
                    }
                    outcome => {
                        if outcome != Finish::Saved {
                            hot.release_message(&attempt).await;
                        }
                        settled += 1;
                    }
                }
            }
            if settled > 0 {
                tracing::info!(
                    settled,
                    "settled messages answered while the shared state was unreachable"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hot::MemoryState;

    fn attempt(message_id: &str, token: &str) -> Attempt {
        Attempt {
            vendor_id: "v1".to_owned(),
            user_id: "u1".to_owned(),
            message_id: message_id.to_owned(),
            token: token.to_owned(),
        }
    }

    fn reply(text: &str) -> StoredReply {
        StoredReply {
            text: text.to_owned(),
            pool_id: "pool-a".to_owned(),
            character_name: "Rosie".to_owned(),
            user_id: "u1".to_owned(),
        }
    }

    #[tokio::test]
    async fn settling_records_held_claims_and_releases_the_rest() {
        let state = Arc::new(MemoryState::new());
        // A claim that reached the state while the node believed it lost.
        let held = attempt("m1", "pool-a/01/1");
        assert!(matches!(
            state.claim_message(&held, &[]).await,
            MessageClaim::Claimed(_)
        ));
        // A claim that never reached it.
        let lost = attempt("m2", "pool-a/01/2");
        let unsettled = Arc::new(Unsettled::default());
        unsettled.push(held.clone(), "When do you open?", reply("At nine."));
        unsettled.push(lost.clone(), "And close?", reply("At six."));
        let settler = {
            let (unsettled, state) = (unsettled.clone(), state.clone());
            tokio::spawn(async move { unsettled.settle(state.as_ref()).await })
        };
        tokio::time::sleep(SETTLE_INTERVAL * 3).await;
        settler.abort();

        assert!(unsettled.pop().is_none(), "every attempt is settled");
        let retry = attempt("m1", "pool-b/02/1");
        assert_eq!(
            state.claim_message(&retry, &[]).await,
            MessageClaim::Finished(reply("At nine.")),
            "the held claim's reply is recorded"
        );
        let next = attempt("m3", "pool-b/02/2");
        match state.claim_message(&next, &[]).await {
            MessageClaim::Claimed(turns) => assert_eq!(turns.len(), 2),
            other => panic!("the conversation is free and holds one exchange: {other:?}"),
        }
    }
}
