//! [`RedisState`]: the shared state in Redis, under these keys:
//!
//! - `voca:characters:{vendor_id}`: the vendor's files as read from the store
//!   (a [`VendorFiles`] as JSON), with a TTL;
//! - `voca:sessions:{vendor_id}:{user_id}`: the conversation, a list of turns
//!   as JSON, capped in length, with a TTL renewed on every message;
//! - `voca:session-users:{vendor_id}`: the user ids that have a conversation
//!   with the vendor, so that erasing a vendor finds every conversation
//!   without scanning the keyspace;
//! - `voca:messages:{vendor_id}:{message_id}`: a message being answered
//!   (the token of the attempt, for [`CLAIM_TTL`]) or its reply as JSON (for
//!   [`REPLY_TTL`]), written with the conversation in one script;
//! - `voca:conversation-leases:{vendor_id}:{user_id}`: the token of the
//!   attempt answering a message of the conversation, for [`CLAIM_TTL`],
//!   so that two pool nodes never answer one conversation at once;
//! - `voca:message-ids:{vendor_id}`: the message ids with such a key, so that
//!   erasing a vendor finds them;
//! - `voca:active:{pool_id}`: the set of vendors a pool node has loaded;
//! - `voca:pools`: the ids of the pool nodes that have an active set;
//! - `voca:metrics:{pool_id}`: counters of a pool node;
//! - `voca:versions:{vendor_id}`: a counter raised on every change of the
//!   vendor's files, which pool nodes compare with the version they loaded;
//! - the channel `voca:invalidate`, on which each change is announced with
//!   the vendor id, so that pool nodes drop the vendor at once;
//! - `voca:tombstones:{vendor_id}`: set for [`TOMBSTONE_TTL`] when a vendor
//!   is erased. Pool nodes write a vendor's cached files, conversations and
//!   active-set entry only while it has no tombstone, each in one script, so
//!   that a write still in flight when the vendor is erased cannot bring its
//!   data back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
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

use super::{
    Attempt, Finish, HotState, MessageClaim, SharedStateError, StoredReply, VendorChanges,
    VendorFiles, ACTIVE_TTL, CHARACTER_TTL, CLAIM_TTL, ERASED_VERSION, MAX_SESSION_TURNS,
    REPLY_TTL, SESSION_TTL, TOMBSTONE_TTL,
};

/// Time allowed for one Redis command, so a slow Redis cannot stall replies.
pub const REDIS_TIMEOUT: Duration = Duration::from_secs(1);
/// Interval of the PINGs that find Redis reachable again after a command
/// failed to reach it. Until one is answered, pool nodes skip Redis and work
/// from their own memory, so that an outage costs each message nothing
/// rather than a timeout per command.
pub const REDIS_PROBE_INTERVAL: Duration = Duration::from_millis(200);

/// One turn as stored in a Redis session list.
#[derive(Serialize, Deserialize)]
struct StoredTurn {
    user: bool,
    text: String,
    /// The message id, on a customer's turn that had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
}

/// Shared state in Redis, over one multiplexed connection that reconnects
/// by itself.
pub struct RedisState {
    client: redis::Client,
    connection: ConnectionManager,
    url: String,
    cache_files: redis::Script,
    append_exchange: redis::Script,
    mark_active: redis::Script,
    claim_message: redis::Script,
    finish_message: redis::Script,
    release_message: redis::Script,
    /// Whether the pool-node operations skip Redis: set when a command
    /// fails to reach it, cleared when a PING is answered again.
    unreachable: Arc<AtomicBool>,
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
            cache_files: redis::Script::new(CACHE_FILES_SCRIPT),
            append_exchange: redis::Script::new(APPEND_EXCHANGE_SCRIPT),
            mark_active: redis::Script::new(MARK_ACTIVE_SCRIPT),
            claim_message: redis::Script::new(CLAIM_MESSAGE_SCRIPT),
            finish_message: redis::Script::new(FINISH_MESSAGE_SCRIPT),
            release_message: redis::Script::new(RELEASE_MESSAGE_SCRIPT),
            unreachable: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Returns the server's URL without a password, for logs.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Returns the message ids of a conversation's customer turns, oldest
    /// first, as kept in its capped history: the record that audits, such
    /// as the chaos scenario's, compare with what was sent.
    pub async fn conversation_message_ids(
        &self,
        vendor_id: &str,
        user_id: &str,
    ) -> Result<Vec<String>, SharedStateError> {
        let mut connection = self.connection.clone();
        let stored: Vec<String> = connection
            .lrange(session_key(vendor_id, user_id), 0, -1)
            .await
            .map_err(|e| self.unavailable(e))?;
        Ok(stored
            .iter()
            .filter_map(|json| serde_json::from_str::<StoredTurn>(json).ok())
            .filter(|turn| turn.user)
            .filter_map(|turn| turn.id)
            .collect())
    }

    fn unavailable(&self, error: redis::RedisError) -> SharedStateError {
        SharedStateError {
            server: format!("Redis at {}", self.url),
            message: error.to_string(),
        }
    }

    /// Logs the outcome of a script that writes only while the vendor has no
    /// tombstone: a failure as a warning, a refused write at debug level.
    fn check_script(&self, result: redis::RedisResult<i64>, vendor_id: &str, operation: &str) {
        match result {
            Ok(0) => tracing::debug!(vendor_id, "{operation} skipped: the vendor was erased"),
            Ok(_) => {}
            Err(error) => self.warn(operation, &error),
        }
    }

    fn warn(&self, operation: &str, error: &redis::RedisError) {
        if error.is_timeout()
            || error.is_io_error()
            || error.is_connection_dropped()
            || error.is_connection_refusal()
        {
            tracing::warn!(redis = %self.url, %error, "{operation} failed; using this node's memory until Redis responds to PING");
            if !self.unreachable.swap(true, Ordering::AcqRel) {
                let span = tracing::info_span!("redis_probe", redis = %self.url);
                tokio::spawn(
                    probe_until_reachable(self.connection.clone(), self.unreachable.clone())
                        .instrument(span),
                );
            }
        } else {
            tracing::warn!(redis = %self.url, %error, "{operation} failed; using this node's memory");
        }
    }

    /// Returns whether pool-node operations skip Redis because a command
    /// failed to reach it and no PING has been answered since.
    fn skipping(&self) -> bool {
        self.unreachable.load(Ordering::Acquire)
    }
}

/// Sends PING every [`REDIS_PROBE_INTERVAL`] until Redis answers, then
/// clears `unreachable`.
async fn probe_until_reachable(connection: ConnectionManager, unreachable: Arc<AtomicBool>) {
    loop {
        tokio::time::sleep(REDIS_PROBE_INTERVAL).await;
        let mut connection = connection.clone();
        let pong = redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await;
        if pong.is_ok() {
            unreachable.store(false, Ordering::Release);
            tracing::info!("Redis responds again; using it");
            return;
        }
    }
}

/// Caches a vendor's files unless the vendor has a tombstone.
/// KEYS: tombstone, character. ARGV: files, TTL in seconds.
const CACHE_FILES_SCRIPT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
return 1
";

/// Lua that returns 0 when the vendor has a tombstone, and otherwise
/// appends an exchange to a conversation and records the user in the
/// vendor's session index. KEYS: tombstone, session, session index. ARGV:
/// message turn, reply turn, turns kept, TTL in seconds, user id.
macro_rules! append_exchange_lua {
    () => {
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[1], ARGV[2])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[3]), -1)
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('SADD', KEYS[3], ARGV[5])
redis.call('EXPIRE', KEYS[3], ARGV[4])
"
    };
}

/// Appends an exchange to a conversation unless the vendor has a
/// tombstone. KEYS and ARGV as in `append_exchange_lua`.
const APPEND_EXCHANGE_SCRIPT: &str = concat!(append_exchange_lua!(), "return 1\n");

/// Adds a vendor to a pool node's active set, unless the vendor has a
/// tombstone. KEYS: tombstone, active set, pool index. ARGV: vendor id, TTL
/// in seconds, pool id.
const MARK_ACTIVE_SCRIPT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[3])
return 1
";

/// Lua function `may_take_over(holder)`: whether the claim of the attempt
/// with token `holder` may be taken over, as in `hot::may_take_over`.
/// ARGV[3..] are the token prefixes that may be taken over.
macro_rules! may_take_over_lua {
    () => {
        r"
local function may_take_over(holder)
  for i = 3, #ARGV do
    if string.sub(holder, 1, #ARGV[i]) == ARGV[i] then return true end
  end
  return false
end
"
    };
}

/// Claims a message and its conversation's lease for an attempt and
/// returns `{'claimed', turns...}`, or `{'finished', reply}`,
/// `{'in-progress', holder}` or `{'busy', holder}`. A stored reply starts
/// with `{`; any other value of a message key is the token of the attempt
/// holding it. KEYS: message, conversation lease, session. ARGV: token,
/// claim TTL in seconds, then the prefixes of `may_take_over_lua`.
const CLAIM_MESSAGE_SCRIPT: &str = concat!(
    may_take_over_lua!(),
    r"
local held = redis.call('GET', KEYS[1])
if held then
  if string.sub(held, 1, 1) == '{' then return {'finished', held} end
  if not may_take_over(held) then return {'in-progress', held} end
end
local lease = redis.call('GET', KEYS[2])
if lease and lease ~= ARGV[1] and not may_take_over(lease) then return {'busy', lease} end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
local turns = redis.call('LRANGE', KEYS[3], 0, -1)
table.insert(turns, 1, 'claimed')
return turns
"
);

/// Finishes an attempt that still holds its message and its
/// conversation's lease: gives up the lease, and unless the vendor has a
/// tombstone appends the exchange and stores the reply. Returns 1 when
/// saved, 0 when the vendor was erased, 2 when another attempt took over,
/// or the reply another attempt stored first. KEYS: those of
/// `append_exchange_lua`, then message, message index and conversation
/// lease. ARGV: those of `append_exchange_lua`, then reply record, reply
/// TTL, message id and token.
const FINISH_MESSAGE_SCRIPT: &str = concat!(
    r"
local held = redis.call('GET', KEYS[4])
if held ~= ARGV[9] then
  if held and string.sub(held, 1, 1) == '{' then return held end
  return 2
end
if redis.call('GET', KEYS[6]) ~= ARGV[9] then return 2 end
redis.call('DEL', KEYS[6])
",
    append_exchange_lua!(),
    r"redis.call('SET', KEYS[4], ARGV[6], 'EX', ARGV[7])
redis.call('SADD', KEYS[5], ARGV[8])
redis.call('EXPIRE', KEYS[5], ARGV[7])
return 1
"
);

/// Gives up an attempt's message and conversation lease, each only while
/// the attempt holds it, so a stored reply is kept. KEYS: message,
/// conversation lease. ARGV: token.
const RELEASE_MESSAGE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
";

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

fn session_index_key(vendor_id: &str) -> String {
    format!("voca:session-users:{vendor_id}")
}

fn message_key(vendor_id: &str, message_id: &str) -> String {
    format!("voca:messages:{vendor_id}:{message_id}")
}

fn lease_key(vendor_id: &str, user_id: &str) -> String {
    format!("voca:conversation-leases:{vendor_id}:{user_id}")
}

fn message_index_key(vendor_id: &str) -> String {
    format!("voca:message-ids:{vendor_id}")
}

fn tombstone_key(vendor_id: &str) -> String {
    format!("voca:tombstones:{vendor_id}")
}

fn active_key(pool_id: &str) -> String {
    format!("voca:active:{pool_id}")
}

/// Set of the pool ids that have an active set.
const POOLS_KEY: &str = "voca:pools";

fn encode_turn(user: bool, text: &str, id: Option<&str>) -> String {
    let turn = StoredTurn {
        user,
        text: text.to_owned(),
        id: id.map(str::to_owned),
    };
    serde_json::to_string(&turn).expect("a turn always serializes")
}

fn decode_turn(json: &str) -> Option<Turn> {
    let turn: StoredTurn = serde_json::from_str(json).ok()?;
    Some(Turn {
        from_user: turn.user,
        text: turn.text,
    })
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
impl VendorChanges for RedisState {
    /// Announces that a vendor's files changed: raises its version, drops
    /// the cached copy and publishes the vendor id, in one transaction.
    /// Returns the new version.
    async fn announce_change(&self, vendor_id: &str) -> Result<u64, SharedStateError> {
        let mut pipeline = redis::pipe();
        pipeline
            .atomic()
            .incr(version_key(vendor_id), 1)
            .del(character_key(vendor_id))
            .ignore()
            .publish(CHANGES_CHANNEL, vendor_id)
            .ignore();
        let mut connection = self.connection.clone();
        let (version,): (u64,) = pipeline
            .query_async(&mut connection)
            .await
            .map_err(|e| self.unavailable(e))?;
        Ok(version)
    }

    /// Returns how long the vendor's tombstone has left, or `None` when the
    /// vendor has none.
    async fn tombstone(&self, vendor_id: &str) -> Result<Option<Duration>, SharedStateError> {
        let mut connection = self.connection.clone();
        let ttl: i64 = connection
            .pttl(tombstone_key(vendor_id))
            .await
            .map_err(|e| self.unavailable(e))?;
        // -2: no such key; -1: no expiry, which erase_vendor never leaves.
        Ok(match ttl {
            -2 => None,
            -1 => Some(TOMBSTONE_TTL),
            ttl => Some(Duration::from_millis(u64::try_from(ttl).unwrap_or(0))),
        })
    }

    /// Sets the vendor's tombstone for [`TOMBSTONE_TTL`]: from now on pool
    /// nodes neither cache nor load the vendor, nor save its conversations.
    async fn set_tombstone(&self, vendor_id: &str) -> Result<(), SharedStateError> {
        let mut connection = self.connection.clone();
        connection
            .set_ex(tombstone_key(vendor_id), 1, TOMBSTONE_TTL.as_secs())
            .await
            .map_err(|e| self.unavailable(e))
    }

    /// Erases everything Redis stores about a vendor: its cached files,
    /// version, conversations, session index and active-set entries. It
    /// first sets the vendor's tombstone for [`TOMBSTONE_TTL`], so that a
    /// pool node's write still in flight is refused, and last announces the
    /// change so that every pool node drops the vendor from memory. Returns
    /// the number of keys deleted. Erasing a vendor twice is harmless.
    async fn erase_vendor(&self, vendor_id: &str) -> Result<usize, SharedStateError> {
        let mut connection = self.connection.clone();
        let index = session_index_key(vendor_id);
        let messages = message_index_key(vendor_id);
        let (users, message_ids, pools): (Vec<String>, Vec<String>, Vec<String>) = redis::pipe()
            .set_ex(tombstone_key(vendor_id), 1, TOMBSTONE_TTL.as_secs())
            .ignore()
            .smembers(&index)
            .smembers(&messages)
            .smembers(POOLS_KEY)
            .query_async(&mut connection)
            .await
            .map_err(|e| self.unavailable(e))?;
        let mut keys: Vec<String> = users
            .iter()
            .flat_map(|user| [session_key(vendor_id, user), lease_key(vendor_id, user)])
            .collect();
        keys.extend(message_ids.iter().map(|id| message_key(vendor_id, id)));
        keys.extend([
            index,
            messages,
            character_key(vendor_id),
            version_key(vendor_id),
        ]);
        let mut deleted = 0;
        for chunk in keys.chunks(ERASE_BATCH) {
            let count: usize = connection
                .del(chunk)
                .await
                .map_err(|e| self.unavailable(e))?;
            deleted += count;
        }
        let mut pipeline = redis::pipe();
        for pool in &pools {
            pipeline.srem(active_key(pool), vendor_id).ignore();
        }
        pipeline.publish(CHANGES_CHANNEL, vendor_id).ignore();
        pipeline
            .query_async::<()>(&mut connection)
            .await
            .map_err(|e| self.unavailable(e))?;
        Ok(deleted)
    }

    fn describe(&self) -> String {
        format!("Redis at {}", self.url)
    }
}

#[async_trait]
impl HotState for RedisState {
    async fn vendor_files(&self, vendor_id: &str) -> Option<VendorFiles> {
        if self.skipping() {
            return None;
        }
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
        if self.skipping() {
            return;
        }
        let value = serde_json::to_string(files).expect("vendor files always serialize");
        let mut connection = self.connection.clone();
        let result: redis::RedisResult<i64> = self
            .cache_files
            .key(tombstone_key(vendor_id))
            .key(character_key(vendor_id))
            .arg(value)
            .arg(seconds(CHARACTER_TTL))
            .invoke_async(&mut connection)
            .await;
        self.check_script(result, vendor_id, "caching a character");
    }

    async fn history(&self, vendor_id: &str, user_id: &str) -> Option<Vec<Turn>> {
        if self.skipping() {
            return None;
        }
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
        Some(stored.iter().filter_map(|json| decode_turn(json)).collect())
    }

    async fn append_exchange(&self, vendor_id: &str, user_id: &str, message: &str, reply: &str) {
        if self.skipping() {
            return;
        }
        let mut connection = self.connection.clone();
        let result: redis::RedisResult<i64> = self
            .append_exchange
            .key(tombstone_key(vendor_id))
            .key(session_key(vendor_id, user_id))
            .key(session_index_key(vendor_id))
            .arg(encode_turn(true, message, None))
            .arg(encode_turn(false, reply, None))
            .arg(MAX_SESSION_TURNS)
            .arg(seconds(SESSION_TTL))
            .arg(user_id)
            .invoke_async(&mut connection)
            .await;
        self.check_script(result, vendor_id, "saving a conversation");
    }

    async fn mark_active(&self, pool_id: &str, vendor_id: &str) {
        if self.skipping() {
            return;
        }
        let mut connection = self.connection.clone();
        let result: redis::RedisResult<i64> = self
            .mark_active
            .key(tombstone_key(vendor_id))
            .key(active_key(pool_id))
            .key(POOLS_KEY)
            .arg(vendor_id)
            .arg(seconds(ACTIVE_TTL))
            .arg(pool_id)
            .invoke_async(&mut connection)
            .await;
        self.check_script(result, vendor_id, "recording an active vendor");
    }

    async fn count_message(&self, pool_id: &str) {
        if self.skipping() {
            return;
        }
        let mut connection = self.connection.clone();
        let result: redis::RedisResult<()> = connection
            .hincr(format!("voca:metrics:{pool_id}"), "messages", 1)
            .await;
        if let Err(error) = result {
            tracing::debug!(redis = %self.url, %error, "counting a message failed");
        }
    }

    async fn vendor_version(&self, vendor_id: &str) -> Option<u64> {
        if self.skipping() {
            return None;
        }
        let mut connection = self.connection.clone();
        // An erased vendor reads as a version no load ever has, so that a
        // copy loaded while it was being erased is dropped at the next check.
        match connection
            .mget::<_, (Option<u64>, Option<String>)>(&[
                version_key(vendor_id),
                tombstone_key(vendor_id),
            ])
            .await
        {
            Ok((_, Some(_))) => Some(ERASED_VERSION),
            Ok((version, None)) => Some(version.unwrap_or(0)),
            Err(error) => {
                self.warn("reading a vendor's version", &error);
                None
            }
        }
    }

    async fn claim_message(&self, attempt: &Attempt, take_over: &[String]) -> MessageClaim {
        if self.skipping() {
            return MessageClaim::Untracked;
        }
        let mut connection = self.connection.clone();
        let mut invocation = self.claim_message.prepare_invoke();
        invocation
            .key(message_key(&attempt.vendor_id, &attempt.message_id))
            .key(lease_key(&attempt.vendor_id, &attempt.user_id))
            .key(session_key(&attempt.vendor_id, &attempt.user_id))
            .arg(&attempt.token)
            .arg(seconds(CLAIM_TTL));
        for prefix in take_over {
            invocation.arg(prefix);
        }
        let result: redis::RedisResult<Vec<String>> =
            invocation.invoke_async(&mut connection).await;
        let mut values = match result {
            Ok(values) => values.into_iter(),
            Err(error) => {
                self.warn("claiming a message", &error);
                return MessageClaim::Uncertain;
            }
        };
        match (values.next().as_deref(), values.next()) {
            (Some("claimed"), first) => MessageClaim::Claimed(
                first
                    .into_iter()
                    .chain(values)
                    .filter_map(|json| decode_turn(&json))
                    .collect(),
            ),
            (Some("finished"), Some(reply)) => match serde_json::from_str(&reply) {
                Ok(reply) => MessageClaim::Finished(reply),
                Err(error) => {
                    tracing::warn!(vendor_id = %attempt.vendor_id, message_id = %attempt.message_id, %error, "stored reply is malformed; answering again");
                    MessageClaim::Untracked
                }
            },
            (Some("in-progress"), Some(holder)) => MessageClaim::InProgress(holder),
            (Some("busy"), Some(holder)) => MessageClaim::ConversationBusy(holder),
            (outcome, _) => {
                tracing::warn!(?outcome, "claim script returned an unexpected value");
                MessageClaim::Untracked
            }
        }
    }

    async fn finish_message(
        &self,
        attempt: &Attempt,
        message: &str,
        reply: &StoredReply,
    ) -> Finish {
        if self.skipping() {
            return Finish::Untracked;
        }
        let (vendor_id, user_id) = (&attempt.vendor_id, &attempt.user_id);
        let record = serde_json::to_string(reply).expect("a reply always serializes");
        let mut connection = self.connection.clone();
        let result: redis::RedisResult<redis::Value> = self
            .finish_message
            .key(tombstone_key(vendor_id))
            .key(session_key(vendor_id, user_id))
            .key(session_index_key(vendor_id))
            .key(message_key(vendor_id, &attempt.message_id))
            .key(message_index_key(vendor_id))
            .key(lease_key(vendor_id, user_id))
            .arg(encode_turn(true, message, Some(&attempt.message_id)))
            .arg(encode_turn(false, &reply.text, None))
            .arg(MAX_SESSION_TURNS)
            .arg(seconds(SESSION_TTL))
            .arg(user_id)
            .arg(record)
            .arg(seconds(REPLY_TTL))
            .arg(&attempt.message_id)
            .arg(&attempt.token)
            .invoke_async(&mut connection)
            .await;
        match result {
            Ok(redis::Value::Int(1)) => Finish::Saved,
            Ok(redis::Value::Int(0)) => {
                tracing::debug!(
                    vendor_id,
                    "saving a conversation skipped: the vendor was erased"
                );
                Finish::Erased
            }
            Ok(redis::Value::Int(_)) => Finish::TakenOver,
            Ok(redis::Value::BulkString(bytes)) => match serde_json::from_slice(&bytes) {
                Ok(first) => Finish::AnsweredBefore(first),
                Err(error) => {
                    tracing::warn!(vendor_id, %error, "stored reply is malformed");
                    Finish::TakenOver
                }
            },
            Ok(other) => {
                tracing::warn!(?other, "finish script returned an unexpected value");
                Finish::Untracked
            }
            Err(error) => {
                self.warn("saving a conversation and its reply", &error);
                Finish::Untracked
            }
        }
    }

    async fn release_message(&self, attempt: &Attempt) {
        if self.skipping() {
            return;
        }
        let mut connection = self.connection.clone();
        let result: redis::RedisResult<()> = self
            .release_message
            .key(message_key(&attempt.vendor_id, &attempt.message_id))
            .key(lease_key(&attempt.vendor_id, &attempt.user_id))
            .arg(&attempt.token)
            .invoke_async(&mut connection)
            .await;
        if let Err(error) = result {
            self.warn("releasing a message", &error);
        }
    }

    fn watch_changes(&self) -> Option<mpsc::Receiver<String>> {
        let (sender, receiver) = mpsc::channel(CHANGES_BUFFER);
        let span = tracing::info_span!("change_listener", redis = %self.url);
        tokio::spawn(listen_for_changes(self.client.clone(), sender).instrument(span));
        Some(receiver)
    }

    async fn active_vendors(&self, pool_id: &str) -> Vec<String> {
        if self.skipping() {
            return Vec::new();
        }
        let mut connection = self.connection.clone();
        match connection.smembers(active_key(pool_id)).await {
            Ok(vendors) => vendors,
            Err(error) => {
                self.warn("reading a pool node's active vendors", &error);
                Vec::new()
            }
        }
    }
}

/// Keys deleted by one DEL while erasing a vendor.
const ERASE_BATCH: usize = 512;

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
        let json = encode_turn(true, "hello \"there\"", Some("m-1"));
        let turn: StoredTurn = serde_json::from_str(&json).unwrap();
        assert!(turn.user);
        assert_eq!(turn.text, "hello \"there\"");
        assert_eq!(turn.id.as_deref(), Some("m-1"));
        let reply: StoredTurn = serde_json::from_str(&encode_turn(false, "hi", None)).unwrap();
        assert_eq!(reply.id, None);
    }
}
