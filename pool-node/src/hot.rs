//! State shared by every pool node: characters read from the store, and
//! conversation history, so that a vendor that moves to another pool node
//! keeps its conversations and need not be read from the store again.
//!
//! [`RedisState`] keeps it in Redis under these keys:
//!
//! - `voca:characters:{vendor_id}`: the vendor's files as read from the store
//!   (a [`VendorFiles`] as JSON), with a TTL;
//! - `voca:sessions:{vendor_id}:{user_id}`: the conversation, a list of turns
//!   as JSON, capped in length, with a TTL renewed on every message;
//! - `voca:active:{pool_id}`: the set of vendors a pool node has loaded;
//! - `voca:metrics:{pool_id}`: counters of a pool node;
//! - `voca:versions:{vendor_id}`: a counter raised on every change of the
//!   vendor's files, which pool nodes compare with the version they loaded;
//! - the channel `voca:invalidate`, on which each change is announced with
//!   the vendor id, so that pool nodes drop the vendor at once.
//!
//! [`LocalState`] keeps nothing, so each pool node uses only its own memory;
//! it replaces Redis where none is installed.

use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::Instrument;
use voca_character::Turn;
use voca_common::membership::Backoff;

use crate::history::MAX_TURNS;

/// Time a vendor's files stay cached in Redis.
pub const CHARACTER_TTL: Duration = Duration::from_secs(60 * 60);
/// Time an idle conversation is kept in Redis.
pub const SESSION_TTL: Duration = Duration::from_secs(30 * 60);
/// Time a vendor stays in a pool node's active set after it was loaded.
pub const ACTIVE_TTL: Duration = Duration::from_secs(10 * 60);
/// Time allowed for one Redis command, so a slow Redis cannot stall replies.
pub const REDIS_TIMEOUT: Duration = Duration::from_secs(1);

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
}

/// One turn as stored in a Redis session list.
#[derive(Serialize, Deserialize)]
struct StoredTurn {
    user: bool,
    text: String,
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
}

/// Shared state in Redis, over one multiplexed connection that reconnects
/// by itself.
pub struct RedisState {
    client: redis::Client,
    connection: ConnectionManager,
    url: String,
}

impl RedisState {
    /// Creates the state for the Redis server at `url` (`redis://host:port`).
    /// It connects on first use, so it starts while Redis is down.
    pub fn new(url: &str) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let connection = client.get_connection_manager_lazy(config)?;
        Ok(Self {
            client,
            connection,
            url: redacted(url),
        })
    }

    /// Announces that a vendor's files changed: raises its version, drops
    /// the cached copy and publishes the vendor id, in one transaction.
    /// Returns the new version.
    pub async fn announce_change(&self, vendor_id: &str) -> Result<u64, redis::RedisError> {
        let mut pipeline = redis::pipe();
        pipeline
            .atomic()
            .incr(version_key(vendor_id), 1)
            .del(character_key(vendor_id))
            .ignore()
            .publish(CHANGES_CHANNEL, vendor_id)
            .ignore();
        let mut connection = self.connection.clone();
        let (version,): (u64,) = pipeline.query_async(&mut connection).await?;
        Ok(version)
    }

    /// Returns the server's URL without a password, for logs.
    pub fn describe(&self) -> &str {
        &self.url
    }

    /// Sends a pipeline whose replies are ignored, logging a failure.
    async fn run(&self, pipeline: &redis::Pipeline, operation: &str) {
        let mut connection = self.connection.clone();
        let result: redis::RedisResult<()> = pipeline.query_async(&mut connection).await;
        if let Err(error) = result {
            self.warn(operation, &error);
        }
    }

    fn warn(&self, operation: &str, error: &redis::RedisError) {
        tracing::warn!(redis = %self.url, %error, "{operation} failed; using this node's memory");
    }
}

/// Channel on which changes of vendors' files are announced.
pub const CHANGES_CHANNEL: &str = "voca:invalidate";

/// Returns a duration in whole seconds, as Redis's EXPIRE takes it.
fn seconds(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}

fn version_key(vendor_id: &str) -> String {
    format!("voca:versions:{vendor_id}")
}

fn character_key(vendor_id: &str) -> String {
    format!("voca:characters:{vendor_id}")
}

fn session_key(vendor_id: &str, user_id: &str) -> String {
    format!("voca:sessions:{vendor_id}:{user_id}")
}

fn encode_turn(user: bool, text: &str) -> String {
    let turn = StoredTurn {
        user,
        text: text.to_owned(),
    };
    serde_json::to_string(&turn).expect("a turn always serializes")
}

/// Drops the password from a Redis URL.
fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

#[async_trait]
impl HotState for RedisState {
    async fn vendor_files(&self, vendor_id: &str) -> Option<VendorFiles> {
        let mut connection = self.connection.clone();
        let cached: Option<String> = match connection.get(character_key(vendor_id)).await {
            Ok(cached) => cached,
            Err(error) => {
                self.warn("reading a cached character", &error);
                return None;
            }
        };
        match serde_json::from_str(&cached?) {
            Ok(files) => Some(files),
            Err(error) => {
                tracing::warn!(vendor_id, %error, "cached character in Redis is malformed; reading the store");
                None
            }
        }
    }

    async fn store_vendor_files(&self, vendor_id: &str, files: &VendorFiles) {
        let value = serde_json::to_string(files).expect("vendor files always serialize");
        let mut connection = self.connection.clone();
        let result: redis::RedisResult<()> = connection
            .set_ex(character_key(vendor_id), value, CHARACTER_TTL.as_secs())
            .await;
        if let Err(error) = result {
            self.warn("caching a character", &error);
        }
    }

    async fn history(&self, vendor_id: &str, user_id: &str) -> Option<Vec<Turn>> {
        let mut connection = self.connection.clone();
        let stored: Vec<String> = match connection
            .lrange(session_key(vendor_id, user_id), 0, -1)
            .await
        {
            Ok(stored) => stored,
            Err(error) => {
                self.warn("reading a conversation", &error);
                return None;
            }
        };
        let turns = stored
            .iter()
            .filter_map(|json| serde_json::from_str::<StoredTurn>(json).ok())
            .map(|turn| Turn {
                from_user: turn.user,
                text: turn.text,
            })
            .collect();
        Some(turns)
    }

    async fn append_exchange(&self, vendor_id: &str, user_id: &str, message: &str, reply: &str) {
        let key = session_key(vendor_id, user_id);
        let keep = isize::try_from(MAX_TURNS).unwrap_or(isize::MAX);
        let mut pipeline = redis::pipe();
        pipeline
            .atomic()
            .rpush(&key, encode_turn(true, message))
            .ignore()
            .rpush(&key, encode_turn(false, reply))
            .ignore()
            .ltrim(&key, -keep, -1)
            .ignore()
            .expire(&key, seconds(SESSION_TTL))
            .ignore();
        self.run(&pipeline, "saving a conversation").await;
    }

    async fn mark_active(&self, pool_id: &str, vendor_id: &str) {
        let key = format!("voca:active:{pool_id}");
        let mut pipeline = redis::pipe();
        pipeline
            .sadd(&key, vendor_id)
            .ignore()
            .expire(&key, seconds(ACTIVE_TTL))
            .ignore();
        self.run(&pipeline, "recording an active vendor").await;
    }

    async fn count_message(&self, pool_id: &str) {
        let mut connection = self.connection.clone();
        let result: redis::RedisResult<()> = connection
            .hincr(format!("voca:metrics:{pool_id}"), "messages", 1)
            .await;
        if let Err(error) = result {
            tracing::debug!(redis = %self.url, %error, "counting a message failed");
        }
    }

    async fn vendor_version(&self, vendor_id: &str) -> Option<u64> {
        let mut connection = self.connection.clone();
        match connection
            .get::<_, Option<u64>>(version_key(vendor_id))
            .await
        {
            Ok(version) => Some(version.unwrap_or(0)),
            Err(error) => {
                self.warn("reading a vendor's version", &error);
                None
            }
        }
    }

    fn watch_changes(&self) -> Option<mpsc::Receiver<String>> {
        let (sender, receiver) = mpsc::channel(CHANGES_BUFFER);
        let span = tracing::info_span!("change_listener", redis = %self.url);
        tokio::spawn(listen_for_changes(self.client.clone(), sender).instrument(span));
        Some(receiver)
    }

    async fn active_vendors(&self, pool_id: &str) -> Vec<String> {
        let mut connection = self.connection.clone();
        match connection.smembers(format!("voca:active:{pool_id}")).await {
            Ok(vendors) => vendors,
            Err(error) => {
                self.warn("reading a pool node's active vendors", &error);
                Vec::new()
            }
        }
    }
}

/// Vendor ids received but not yet handled, at most.
const CHANGES_BUFFER: usize = 1024;

/// Forwards the vendor ids published on [`CHANGES_CHANNEL`] to `sender`,
/// subscribing again after a lost connection, until the receiver is dropped.
/// A notice missed meanwhile is caught by the version check.
async fn listen_for_changes(client: redis::Client, sender: mpsc::Sender<String>) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    while !sender.is_closed() {
        let subscribed = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(CHANGES_CHANNEL).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let mut pubsub = match subscribed.await {
            Ok(pubsub) => pubsub,
            Err(error) => {
                let delay = backoff.next_delay();
                tracing::warn!(%error, retry_in = ?delay, "subscribing to vendor changes failed");
                tokio::time::sleep(delay).await;
                continue;
            }
        };
        backoff.reset();
        tracing::debug!(channel = CHANGES_CHANNEL, "subscribed to vendor changes");
        let mut messages = pubsub.on_message();
        while let Some(message) = messages.next().await {
            let Ok(vendor_id) = message.get_payload::<String>() else {
                continue;
            };
            if sender.send(vendor_id).await.is_err() {
                return;
            }
        }
        tracing::warn!("vendor change subscription ended; subscribing again");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_layout() {
        assert_eq!(
            character_key("rosies-bakery"),
            "voca:characters:rosies-bakery"
        );
        assert_eq!(
            session_key("v1", "whatsapp:+1555"),
            "voca:sessions:v1:whatsapp:+1555"
        );
    }

    #[test]
    fn password_is_redacted() {
        assert_eq!(
            redacted("redis://:hunter2@127.0.0.1:6379"),
            "redis://:***@127.0.0.1:6379"
        );
        assert_eq!(redacted("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }

    #[test]
    fn turns_round_trip() {
        let json = encode_turn(true, "hello \"there\"");
        let turn: StoredTurn = serde_json::from_str(&json).unwrap();
        assert!(turn.user);
        assert_eq!(turn.text, "hello \"there\"");
    }
}
