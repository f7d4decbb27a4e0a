//! [`MemoryState`]: the shared state in this process's memory.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use voca_character::Turn;

use super::{
    may_take_over, Attempt, Finish, HotState, MessageClaim, SharedStateError, StoredReply,
    VendorChanges, VendorFiles, ACTIVE_TTL, CHARACTER_TTL, CLAIM_TTL, ERASED_VERSION,
    MAX_SESSION_TURNS, REPLY_TTL, SESSION_TTL, TOMBSTONE_TTL,
};

/// Changes announced but not yet taken by a slow listener, at most; a
/// listener that falls further behind relies on the version check.
const CHANGES_BUFFER: usize = 1024;

/// State shared by the pool nodes and the registry of one process, with
/// the same behaviour as [`RedisState`](super::RedisState): entries expire
/// after the same TTLs, versions rise on every change, and a tombstone
/// rejects writes for an erased vendor. It replaces Redis in the
/// quickstart, where every server runs in one process.
pub struct MemoryState {
    entries: Mutex<Entries>,
    changes: broadcast::Sender<String>,
}

#[derive(Default)]
struct Entries {
    characters: HashMap<String, Expiring<VendorFiles>>,
    versions: HashMap<String, u64>,
    /// Conversations by vendor, then by user.
    sessions: HashMap<String, HashMap<String, Expiring<VecDeque<Turn>>>>,
    /// Active vendors by pool id.
    active: HashMap<String, HashMap<String, Instant>>,
    /// Expiry of each vendor's tombstone.
    tombstones: HashMap<String, Instant>,
    /// Messages by vendor, then by message id.
    messages: HashMap<String, HashMap<String, Expiring<MessageState>>>,
    /// Conversation leases by vendor, then by user: the token of the attempt
    /// that holds each.
    leases: HashMap<String, HashMap<String, Expiring<String>>>,
}

enum MessageState {
    /// Claimed by the attempt with this token.
    Claimed(String),
    Answered(StoredReply),
}

struct Expiring<T> {
    value: T,
    expires: Instant,
}

impl<T> Expiring<T> {
    fn new(value: T, ttl: Duration) -> Self {
        Self {
            value,
            expires: Instant::now() + ttl,
        }
    }

    fn live(&self) -> Option<&T> {
        (Instant::now() < self.expires).then_some(&self.value)
    }
}

impl Entries {
    /// Returns whether the vendor has a tombstone, dropping an expired one.
    fn is_erased(&mut self, vendor_id: &str) -> bool {
        match self.tombstones.get(vendor_id) {
            Some(expires) if Instant::now() < *expires => true,
            Some(_) => {
                self.tombstones.remove(vendor_id);
                false
            }
            None => false,
        }
    }
}

impl Default for MemoryState {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryState {
    pub fn new() -> Self {
        let (changes, _) = broadcast::channel(CHANGES_BUFFER);
        Self {
            entries: Mutex::default(),
            changes,
        }
    }

    /// Locks the entries. No code panics while holding the lock, so a
    /// poisoned lock still holds consistent entries.
    fn entries(&self) -> MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl HotState for MemoryState {
    async fn vendor_files(&self, vendor_id: &str) -> Option<VendorFiles> {
        self.entries()
            .characters
            .get(vendor_id)
            .and_then(Expiring::live)
            .cloned()
    }

    async fn store_vendor_files(&self, vendor_id: &str, files: &VendorFiles) {
        let mut entries = self.entries();
        if !entries.is_erased(vendor_id) {
            entries.characters.insert(
                vendor_id.to_owned(),
                Expiring::new(files.clone(), CHARACTER_TTL),
            );
        }
    }

    async fn history(&self, vendor_id: &str, user_id: &str) -> Option<Vec<Turn>> {
        let entries = self.entries();
        let turns = entries
            .sessions
            .get(vendor_id)
            .and_then(|users| users.get(user_id))
            .and_then(Expiring::live)
            .map(|turns| turns.iter().cloned().collect())
            .unwrap_or_default();
        Some(turns)
    }

    async fn append_exchange(&self, vendor_id: &str, user_id: &str, message: &str, reply: &str) {
        let mut entries = self.entries();
        if entries.is_erased(vendor_id) {
            return;
        }
        let users = entries.sessions.entry(vendor_id.to_owned()).or_default();
        let session = users
            .entry(user_id.to_owned())
            .or_insert_with(|| Expiring::new(VecDeque::new(), SESSION_TTL));
        if session.live().is_none() {
            session.value.clear();
        }
        session.value.push_back(Turn {
            from_user: true,
            text: message.to_owned(),
        });
        session.value.push_back(Turn {
            from_user: false,
            text: reply.to_owned(),
        });
        while session.value.len() > MAX_SESSION_TURNS {
            session.value.pop_front();
        }
        session.expires = Instant::now() + SESSION_TTL;
    }

    async fn mark_active(&self, pool_id: &str, vendor_id: &str) {
        let mut entries = self.entries();
        if !entries.is_erased(vendor_id) {
            entries
                .active
                .entry(pool_id.to_owned())
                .or_default()
                .insert(vendor_id.to_owned(), Instant::now() + ACTIVE_TTL);
        }
    }

    async fn count_message(&self, _pool_id: &str) {}

    async fn active_vendors(&self, pool_id: &str) -> Vec<String> {
        let now = Instant::now();
        let mut vendors: Vec<String> = self
            .entries()
            .active
            .get(pool_id)
            .map(|active| {
                active
                    .iter()
                    .filter(|(_, expires)| now < **expires)
                    .map(|(vendor, _)| vendor.clone())
                    .collect()
            })
            .unwrap_or_default();
        vendors.sort();
        vendors
    }

    async fn vendor_version(&self, vendor_id: &str) -> Option<u64> {
        let mut entries = self.entries();
        if entries.is_erased(vendor_id) {
            return Some(ERASED_VERSION);
        }
        Some(entries.versions.get(vendor_id).copied().unwrap_or(0))
    }

    async fn claim_message(&self, attempt: &Attempt, take_over: &[String]) -> MessageClaim {
        let mut entries = self.entries();
        let message = entries
            .messages
            .get(&attempt.vendor_id)
            .and_then(|messages| messages.get(&attempt.message_id))
            .and_then(Expiring::live);
        match message {
            Some(MessageState::Answered(reply)) => return MessageClaim::Finished(reply.clone()),
            Some(MessageState::Claimed(holder)) if !may_take_over(holder, take_over) => {
                return MessageClaim::InProgress(holder.clone())
            }
            _ => {}
        }
        let lease = entries
            .leases
            .get(&attempt.vendor_id)
            .and_then(|leases| leases.get(&attempt.user_id))
            .and_then(Expiring::live);
        if let Some(holder) = lease {
            if *holder != attempt.token && !may_take_over(holder, take_over) {
                return MessageClaim::ConversationBusy(holder.clone());
            }
        }
        entries
            .messages
            .entry(attempt.vendor_id.clone())
            .or_default()
            .insert(
                attempt.message_id.clone(),
                Expiring::new(MessageState::Claimed(attempt.token.clone()), CLAIM_TTL),
            );
        entries
            .leases
            .entry(attempt.vendor_id.clone())
            .or_default()
            .insert(
                attempt.user_id.clone(),
                Expiring::new(attempt.token.clone(), CLAIM_TTL),
            );
        let turns = entries
            .sessions
            .get(&attempt.vendor_id)
            .and_then(|users| users.get(&attempt.user_id))
            .and_then(Expiring::live)
            .map(|turns| turns.iter().cloned().collect())
            .unwrap_or_default();
        MessageClaim::Claimed(turns)
    }

    async fn finish_message(
        &self,
        attempt: &Attempt,
        message: &str,
        reply: &StoredReply,
    ) -> Finish {
        {
            let mut entries = self.entries();
            let held = entries
                .messages
                .get(&attempt.vendor_id)
                .and_then(|messages| messages.get(&attempt.message_id))
                .and_then(Expiring::live);
            match held {
                Some(MessageState::Answered(first)) => {
                    return Finish::AnsweredBefore(first.clone())
                }
                Some(MessageState::Claimed(holder)) if *holder == attempt.token => {}
                _ => return Finish::TakenOver,
            }
            let leases = entries.leases.entry(attempt.vendor_id.clone()).or_default();
            if leases.get(&attempt.user_id).and_then(Expiring::live) != Some(&attempt.token) {
                return Finish::TakenOver;
            }
            leases.remove(&attempt.user_id);
            if entries.is_erased(&attempt.vendor_id) {
                return Finish::Erased;
            }
            entries
                .messages
                .entry(attempt.vendor_id.clone())
                .or_default()
                .insert(
                    attempt.message_id.clone(),
                    Expiring::new(MessageState::Answered(reply.clone()), REPLY_TTL),
                );
        }
        self.append_exchange(&attempt.vendor_id, &attempt.user_id, message, &reply.text)
            .await;
        Finish::Saved
    }

    async fn release_message(&self, attempt: &Attempt) {
        let mut entries = self.entries();
        if let Some(messages) = entries.messages.get_mut(&attempt.vendor_id) {
            if matches!(
                messages.get(&attempt.message_id).map(|m| &m.value),
                Some(MessageState::Claimed(holder)) if *holder == attempt.token
            ) {
                messages.remove(&attempt.message_id);
            }
        }
        if let Some(leases) = entries.leases.get_mut(&attempt.vendor_id) {
            if leases.get(&attempt.user_id).map(|l| &l.value) == Some(&attempt.token) {
                leases.remove(&attempt.user_id);
            }
        }
    }

    fn watch_changes(&self) -> Option<mpsc::Receiver<String>> {
        let mut changes = self.changes.subscribe();
        let (sender, receiver) = mpsc::channel(CHANGES_BUFFER);
        tokio::spawn(async move {
            loop {
                match changes.recv().await {
                    Ok(vendor_id) => {
                        if sender.send(vendor_id).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(
                            missed,
                            "missed vendor changes; the version check catches them"
                        );
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Some(receiver)
    }
}

#[async_trait]
impl VendorChanges for MemoryState {
    async fn announce_change(&self, vendor_id: &str) -> Result<u64, SharedStateError> {
        let version = {
            let mut entries = self.entries();
            entries.characters.remove(vendor_id);
            let version = entries.versions.entry(vendor_id.to_owned()).or_insert(0);
            *version += 1;
            *version
        };
        // No listener is not an error: pool nodes may not have started yet.
        let _ = self.changes.send(vendor_id.to_owned());
        Ok(version)
    }

    async fn tombstone(&self, vendor_id: &str) -> Result<Option<Duration>, SharedStateError> {
        let mut entries = self.entries();
        if !entries.is_erased(vendor_id) {
            return Ok(None);
        }
        Ok(entries
            .tombstones
            .get(vendor_id)
            .map(|expires| expires.saturating_duration_since(Instant::now())))
    }

    async fn set_tombstone(&self, vendor_id: &str) -> Result<(), SharedStateError> {
        self.entries()
            .tombstones
            .insert(vendor_id.to_owned(), Instant::now() + TOMBSTONE_TTL);
        Ok(())
    }

    async fn erase_vendor(&self, vendor_id: &str) -> Result<usize, SharedStateError> {
        let deleted = {
            let mut entries = self.entries();
            entries
                .tombstones
                .insert(vendor_id.to_owned(), Instant::now() + TOMBSTONE_TTL);
            let mut deleted = 0;
            deleted += usize::from(entries.characters.remove(vendor_id).is_some());
            deleted += usize::from(entries.versions.remove(vendor_id).is_some());
            deleted += entries
                .sessions
                .remove(vendor_id)
                .map_or(0, |users| users.len());
            deleted += entries
                .messages
                .remove(vendor_id)
                .map_or(0, |messages| messages.len());
            entries.leases.remove(vendor_id);
            for active in entries.active.values_mut() {
                active.remove(vendor_id);
            }
            deleted
        };
        let _ = self.changes.send(vendor_id.to_owned());
        Ok(deleted)
    }

    fn describe(&self) -> String {
        "memory of this process".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(version: u64) -> VendorFiles {
        VendorFiles {
            version,
            character: r#"{"name": "V"}"#.to_owned(),
            documents: Vec::new(),
            suspended: false,
        }
    }

    #[tokio::test]
    async fn changes_raise_versions_and_reach_listeners() {
        let state = MemoryState::new();
        let mut changes = state.watch_changes().unwrap();
        state.store_vendor_files("v1", &files(0)).await;
        assert_eq!(state.vendor_version("v1").await, Some(0));
        assert_eq!(state.announce_change("v1").await.unwrap(), 1);
        assert_eq!(state.announce_change("v1").await.unwrap(), 2);
        assert_eq!(state.vendor_version("v1").await, Some(2));
        assert!(
            state.vendor_files("v1").await.is_none(),
            "the cached copy is dropped"
        );
        assert_eq!(changes.recv().await.as_deref(), Some("v1"));
        assert_eq!(changes.recv().await.as_deref(), Some("v1"));
    }

    fn attempt(vendor_id: &str, user_id: &str, message_id: &str, token: &str) -> Attempt {
        Attempt {
            vendor_id: vendor_id.to_owned(),
            user_id: user_id.to_owned(),
            message_id: message_id.to_owned(),
            token: token.to_owned(),
        }
    }

    /// Returns a reply of pool-a to user u1.
    fn reply_of_u1(text: &str) -> StoredReply {
        StoredReply {
            text: text.to_owned(),
            pool_id: "pool-a".to_owned(),
            character_name: "Rosie".to_owned(),
            user_id: "u1".to_owned(),
        }
    }

    fn claimed(claim: MessageClaim) -> Vec<Turn> {
        match claim {
            MessageClaim::Claimed(turns) => turns,
            other => panic!("expected a claim, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn messages_are_claimed_once_per_vendor() {
        let state = MemoryState::new();
        let reply = reply_of_u1("£4.20");
        let first = attempt("v1", "u1", "m1", "pool-a/01/1");
        assert!(claimed(state.claim_message(&first, &[]).await).is_empty());
        let retry = attempt("v1", "u1", "m1", "pool-b/02/1");
        assert_eq!(
            state.claim_message(&retry, &[]).await,
            MessageClaim::InProgress(first.token.clone())
        );
        let other_vendor = attempt("v2", "u1", "m1", "pool-b/02/2");
        claimed(state.claim_message(&other_vendor, &[]).await);
        state.release_message(&other_vendor).await;
        claimed(state.claim_message(&other_vendor, &[]).await);

        assert_eq!(
            state.finish_message(&first, "How much?", &reply).await,
            Finish::Saved
        );
        assert_eq!(
            state.claim_message(&retry, &[]).await,
            MessageClaim::Finished(reply.clone())
        );
        state.release_message(&first).await;
        assert_eq!(
            state.claim_message(&retry, &[]).await,
            MessageClaim::Finished(reply.clone()),
            "releasing keeps a finished reply"
        );
        assert_eq!(
            state.finish_message(&retry, "How much?", &reply).await,
            Finish::AnsweredBefore(reply.clone())
        );
        assert_eq!(state.history("v1", "u1").await.unwrap().len(), 2);
        let next = attempt("v1", "u1", "m2", "pool-a/01/2");
        assert_eq!(claimed(state.claim_message(&next, &[]).await).len(), 2);
        state.release_message(&next).await;
        assert_eq!(
            state.erase_vendor("v1").await.unwrap(),
            2,
            "the conversation and the answered message; the released one is gone"
        );
        claimed(state.claim_message(&first, &[]).await);
    }

    #[tokio::test]
    async fn one_attempt_holds_a_conversation_until_taken_over() {
        let state = MemoryState::new();
        let reply = reply_of_u1("Open at nine.");
        let on_a = attempt("v1", "u1", "m1", "pool-a/01/1");
        claimed(state.claim_message(&on_a, &[]).await);
        let on_b = attempt("v1", "u1", "m2", "pool-b/02/1");
        assert_eq!(
            state.claim_message(&on_b, &[]).await,
            MessageClaim::ConversationBusy(on_a.token.clone())
        );
        let other_user = attempt("v1", "u2", "m3", "pool-b/02/2");
        claimed(state.claim_message(&other_user, &[]).await);

        // pool-b is told that pool-a is unreachable and takes over.
        let take_over = ["pool-a/".to_owned()];
        claimed(state.claim_message(&on_b, &take_over).await);
        assert_eq!(
            state
                .finish_message(&on_a, "When do you open?", &reply)
                .await,
            Finish::TakenOver,
            "the attempt that lost its lease saves nothing"
        );
        assert_eq!(
            state.finish_message(&on_b, "Hello?", &reply).await,
            Finish::Saved
        );
        assert_eq!(state.history("v1", "u1").await.unwrap().len(), 2);

        // Only the processes named are taken over.
        let earlier = attempt("v1", "u3", "m4", "pool-a/01/3");
        claimed(state.claim_message(&earlier, &[]).await);
        let restarted = attempt("v1", "u3", "m5", "pool-a/03/1");
        assert_eq!(
            state
                .claim_message(&restarted, &["pool-a/02/".to_owned()])
                .await,
            MessageClaim::ConversationBusy(earlier.token.clone())
        );
        claimed(
            state
                .claim_message(&restarted, &["pool-a/01/".to_owned()])
                .await,
        );
    }

    #[tokio::test]
    async fn conversations_are_capped_and_shared() {
        let state = MemoryState::new();
        for i in 0..MAX_SESSION_TURNS {
            state
                .append_exchange("v1", "u1", &format!("q{i}"), &format!("a{i}"))
                .await;
        }
        let turns = state.history("v1", "u1").await.unwrap();
        assert_eq!(turns.len(), MAX_SESSION_TURNS);
        assert_eq!(
            turns.last().unwrap().text,
            format!("a{}", MAX_SESSION_TURNS - 1)
        );
        assert!(turns[0].from_user);
        assert_eq!(state.history("v1", "u2").await.unwrap().len(), 0);
    }

    #[tokio::test]
    async fn erasure_removes_everything_and_refuses_later_writes() {
        let state = MemoryState::new();
        let mut changes = state.watch_changes().unwrap();
        state.store_vendor_files("v1", &files(1)).await;
        state.announce_change("v1").await.unwrap();
        state.store_vendor_files("v1", &files(1)).await;
        state.append_exchange("v1", "u1", "hi", "hello").await;
        state.append_exchange("v1", "u2", "hi", "hello").await;
        state.mark_active("pool-a", "v1").await;
        state.mark_active("pool-a", "v2").await;
        assert_eq!(changes.recv().await.as_deref(), Some("v1"));

        // Cached files, version and two conversations.
        assert_eq!(state.erase_vendor("v1").await.unwrap(), 4);
        assert_eq!(changes.recv().await.as_deref(), Some("v1"));
        assert_eq!(state.active_vendors("pool-a").await, ["v2"]);
        assert_eq!(state.vendor_version("v1").await, Some(ERASED_VERSION));
        let left = state.tombstone("v1").await.unwrap().unwrap();
        assert!(left > TOMBSTONE_TTL - Duration::from_secs(5), "{left:?}");

        // Writes in flight after the erasure are refused.
        state.store_vendor_files("v1", &files(1)).await;
        state.append_exchange("v1", "u1", "again", "no").await;
        state.mark_active("pool-a", "v1").await;
        assert!(state.vendor_files("v1").await.is_none());
        assert_eq!(state.history("v1", "u1").await.unwrap().len(), 0);
        assert_eq!(state.active_vendors("pool-a").await, ["v2"]);
        assert_eq!(state.erase_vendor("v1").await.unwrap(), 0, "erasing twice");
        assert!(state.tombstone("v2").await.unwrap().is_none());
    }
}
