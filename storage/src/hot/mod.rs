//! State shared by every pool node: characters read from the store, and
//! conversation history, so that a vendor that moves to another pool node
//! keeps its conversations and need not be read from the store again. It
//! also carries the changes the registry announces, so that pool nodes drop
//! a changed or erased vendor at once.
//!
//! - [`RedisState`] keeps it in Redis, shared by every process of a mesh.
//! - [`MemoryState`] keeps it in this process's memory, shared by the pool
//!   nodes and the registry of one process: the quickstart's stand-in for
//!   Redis.
//! - [`LocalState`] keeps nothing, so each pool node uses only its own
//!   memory.

mod memory;
mod redis_state;

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use voca_character::Turn;

pub use self::memory::MemoryState;
pub use self::redis_state::{RedisState, CHANGES_CHANNEL, REDIS_TIMEOUT};

/// Turns kept per conversation in Redis; older turns are dropped first.
pub const MAX_SESSION_TURNS: usize = 20;
/// Time a vendor's files stay cached in Redis.
pub const CHARACTER_TTL: Duration = Duration::from_secs(60 * 60);
/// Time an idle conversation is kept in Redis.
pub const SESSION_TTL: Duration = Duration::from_secs(30 * 60);
/// Time a vendor stays in a pool node's active set after it was loaded.
pub const ACTIVE_TTL: Duration = Duration::from_secs(10 * 60);
/// Time an erased vendor's tombstone is kept: longer than any message can
/// stay in flight on a pool node.
pub const TOMBSTONE_TTL: Duration = Duration::from_secs(2 * 60);

/// A vendor's files as read from the character store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VendorFiles {
    /// Version of the vendor's files these were read at.
    #[serde(default)]
    pub version: u64,
    /// The `character.json` text.
    pub character: String,
    /// Knowledge files as (name relative to `knowledge-base/`, text).
    pub documents: Vec<(String, String)>,
    /// Whether the vendor is suspended, as its `metadata.json` states.
    #[serde(default)]
    pub suspended: bool,
}

/// Shared state of the pool nodes. Every method degrades instead of
/// failing: when the state cannot be reached, reads return `None` and
/// writes are dropped, and the pool node works from its own memory.
#[async_trait]
pub trait HotState: Send + Sync + 'static {
    /// Returns the cached files of a vendor.
    async fn vendor_files(&self, vendor_id: &str) -> Option<VendorFiles>;

    /// Caches the files of a vendor.
    async fn store_vendor_files(&self, vendor_id: &str, files: &VendorFiles);

    /// Returns a conversation's turns, oldest first, or `None` when the
    /// shared history cannot be read.
    async fn history(&self, vendor_id: &str, user_id: &str) -> Option<Vec<Turn>>;

    /// Appends a message and its reply to a conversation in one atomic step.
    async fn append_exchange(&self, vendor_id: &str, user_id: &str, message: &str, reply: &str);

    /// Records that `pool_id` loaded `vendor_id`.
    async fn mark_active(&self, pool_id: &str, vendor_id: &str);

    /// Counts one message that `pool_id` replied to.
    async fn count_message(&self, pool_id: &str);

    /// Returns the vendors `pool_id` has loaded recently.
    async fn active_vendors(&self, pool_id: &str) -> Vec<String>;

    /// Returns the current version of a vendor's files, or `None` when
    /// versions are not tracked or cannot be read.
    async fn vendor_version(&self, vendor_id: &str) -> Option<u64>;

    /// Starts receiving the ids of vendors whose files changed, or returns
    /// `None` when changes are not announced.
    fn watch_changes(&self) -> Option<mpsc::Receiver<String>>;

    /// Starts an attempt at a message, recorded under its vendor and
    /// message id together. In one atomic step it claims the message and
    /// the conversation's lease and returns the conversation, unless the
    /// message was answered already, another attempt holds it, or another
    /// attempt holds the conversation. A holder whose token starts with one
    /// of `take_over` is taken over.
    async fn claim_message(&self, attempt: &Attempt, take_over: &[String]) -> MessageClaim;

    /// Stores a claimed message's reply for [`REPLY_TTL`], appends the
    /// message and reply to the conversation and gives up the
    /// conversation's lease, in one atomic step, provided the attempt still
    /// holds both.
    async fn finish_message(&self, attempt: &Attempt, message: &str, reply: &StoredReply)
        -> Finish;

    /// Gives up a claimed message whose processing failed, and the
    /// conversation's lease, so a retry can claim them at once.
    async fn release_message(&self, attempt: &Attempt);
}

/// One attempt at answering a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub vendor_id: String,
    pub user_id: String,
    pub message_id: String,
    /// `{pool_id}/{incarnation}/{serial}`: unique across the mesh, and
    /// naming the pool node and the process that made the attempt.
    pub token: String,
}

impl Attempt {
    /// Makes the token of attempt `serial` of the process `incarnation`
    /// of pool node `pool_id`.
    pub fn token(pool_id: &str, incarnation: &str, serial: u64) -> String {
        format!("{pool_id}/{incarnation}/{serial}")
    }
}

/// Returns the pool node id and the process incarnation in an attempt's
/// token.
pub fn holder_process(token: &str) -> (&str, &str) {
    let mut parts = token.split('/');
    (parts.next().unwrap_or(token), parts.next().unwrap_or(""))
}

/// Returns whether the claim of the attempt with token `holder` may be
/// taken over: its token starts with one of `take_over`.
pub(crate) fn may_take_over(holder: &str, take_over: &[String]) -> bool {
    take_over
        .iter()
        .any(|prefix| holder.starts_with(prefix.as_str()))
}

/// The outcome of finishing a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    /// The reply and the conversation were saved.
    Saved,
    /// Another attempt answered the message first; this is its reply, and
    /// this attempt's reply was not saved.
    AnsweredBefore(StoredReply),
    /// Another attempt took the message or the conversation over, because
    /// this attempt's pool node was left out as unreachable or its claim
    /// expired. Nothing was saved.
    TakenOver,
    /// The vendor was erased meanwhile. Nothing was saved.
    Erased,
    /// The state does not track messages or could not be reached.
    Untracked,
}

/// Time a message and its conversation stay claimed while a pool node
/// works on the message. A node that crashes meanwhile blocks retries at
/// most this long. A node that a gateway reports unreachable, or that has
/// left the ring, does not block them at all.
pub const CLAIM_TTL: Duration = Duration::from_secs(30);
/// Time a message's reply is kept for retries.
pub const REPLY_TTL: Duration = Duration::from_secs(10 * 60);

/// A message's reply as kept for retries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredReply {
    pub text: String,
    /// The pool node that answered.
    pub pool_id: String,
    pub character_name: String,
    /// The customer who sent the message, so that a message id that another
    /// customer of the vendor reuses never gets this reply.
    #[serde(default)]
    pub user_id: String,
}

/// The state of a message when a pool node starts on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageClaim {
    /// This attempt claimed it and should process it, in the context of
    /// the conversation's turns, oldest first.
    Claimed(Vec<Turn>),
    /// It was answered already; the retry gets this reply.
    Finished(StoredReply),
    /// Another attempt, whose token this is, has the claim and has not
    /// finished.
    InProgress(String),
    /// Another attempt, whose token this is, holds the conversation's
    /// lease: an earlier message of the same conversation is being
    /// answered.
    ConversationBusy(String),
    /// The state does not track messages, or cannot be reached; the node
    /// processes the message and deduplicates it only in its own memory.
    Untracked,
    /// The claim was sent but its outcome is unknown, as when the state
    /// timed out: it may still take effect. The node processes the message
    /// as if untracked, and settles the claim once the state is reachable.
    Uncertain,
}

/// No shared state: the stand-in for Redis where none is installed.
pub struct LocalState;

#[async_trait]
impl HotState for LocalState {
    async fn vendor_files(&self, _vendor_id: &str) -> Option<VendorFiles> {
        None
    }

    async fn store_vendor_files(&self, _vendor_id: &str, _files: &VendorFiles) {}

    async fn history(&self, _vendor_id: &str, _user_id: &str) -> Option<Vec<Turn>> {
        None
    }

    async fn append_exchange(
        &self,
        _vendor_id: &str,
        _user_id: &str,
        _message: &str,
        _reply: &str,
    ) {
    }

    async fn mark_active(&self, _pool_id: &str, _vendor_id: &str) {}

    async fn count_message(&self, _pool_id: &str) {}

    async fn active_vendors(&self, _pool_id: &str) -> Vec<String> {
        Vec::new()
    }

    async fn vendor_version(&self, _vendor_id: &str) -> Option<u64> {
        None
    }

    fn watch_changes(&self) -> Option<mpsc::Receiver<String>> {
        None
    }

    async fn claim_message(&self, _attempt: &Attempt, _take_over: &[String]) -> MessageClaim {
        MessageClaim::Untracked
    }

    async fn finish_message(
        &self,
        _attempt: &Attempt,
        _message: &str,
        _reply: &StoredReply,
    ) -> Finish {
        Finish::Untracked
    }

    async fn release_message(&self, _attempt: &Attempt) {}
}

/// Version reported for a vendor with a tombstone.
pub const ERASED_VERSION: u64 = u64::MAX;

/// Shared state that could not be reached.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{server} is unavailable: {message}")]
pub struct SharedStateError {
    /// The server, such as `Redis at redis://10.0.0.7:6379`.
    pub server: String,
    pub message: String,
}

/// The registry's side of the shared state: it announces changes and
/// erases vendors, and pool nodes follow.
#[async_trait]
pub trait VendorChanges: Send + Sync + 'static {
    /// Announces that a vendor's files changed: raises its version, drops
    /// the cached copy and notifies every pool node. Returns the new version.
    async fn announce_change(&self, vendor_id: &str) -> Result<u64, SharedStateError>;

    /// Returns how long the vendor's tombstone has left, or `None` when the
    /// vendor has none.
    async fn tombstone(&self, vendor_id: &str) -> Result<Option<Duration>, SharedStateError>;

    /// Sets the vendor's tombstone for [`TOMBSTONE_TTL`]: from then on pool
    /// nodes neither cache nor load the vendor, nor save its conversations.
    async fn set_tombstone(&self, vendor_id: &str) -> Result<(), SharedStateError>;

    /// Erases everything the state stores about a vendor (cached files,
    /// version, conversations, active-set entries), sets its tombstone, and
    /// notifies every pool node to drop it. Returns the number of entries
    /// deleted. Erasing a vendor twice is harmless.
    async fn erase_vendor(&self, vendor_id: &str) -> Result<usize, SharedStateError>;

    /// Names the state for logs and errors.
    fn describe(&self) -> String;
}
