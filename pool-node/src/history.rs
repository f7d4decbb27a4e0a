//! Conversation history per (vendor, user), bounded and kept in memory.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;
use tokio::sync::{Mutex, MutexGuard};
use voca_character::Turn;

/// Turns kept per conversation; older turns are dropped first.
pub const MAX_TURNS: usize = voca_storage::hot::MAX_SESSION_TURNS;
/// Bytes of a message or reply kept in the history; the rest is cut.
pub const MAX_TURN_BYTES: usize = 4 * 1024;
/// Memory budget of all conversations of a node, in bytes of kept text.
pub const DEFAULT_HISTORY_BYTES: u64 = 256 * 1024 * 1024;
/// A conversation idle this long is forgotten.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// One conversation. Holding its lock serializes the messages of one
/// (vendor, user) pair, so they are answered in the order they arrive.
#[derive(Default)]
pub struct Conversation {
    turns: Mutex<VecDeque<Turn>>,
    /// Bytes of text in `turns`, read by the cache's weigher.
    bytes: AtomicU32,
}

impl Conversation {
    pub async fn lock(&self) -> MutexGuard<'_, VecDeque<Turn>> {
        self.turns.lock().await
    }

    /// Appends a customer's message and the reply, each cut to
    /// [`MAX_TURN_BYTES`], dropping the oldest turns past [`MAX_TURNS`].
    pub fn record(&self, turns: &mut VecDeque<Turn>, text: &str, reply: &str) {
        turns.push_back(Turn {
            from_user: true,
            text: cut(text, MAX_TURN_BYTES).to_owned(),
        });
        turns.push_back(Turn {
            from_user: false,
            text: cut(reply, MAX_TURN_BYTES).to_owned(),
        });
        while turns.len() > MAX_TURNS {
            turns.pop_front();
        }
        let bytes: usize = turns.iter().map(|t| t.text.len()).sum();
        self.bytes
            .store(u32::try_from(bytes).unwrap_or(u32::MAX), Ordering::Relaxed);
    }
}

/// Every conversation of this node, under a memory budget.
pub struct Conversations {
    cache: Cache<(String, String), Arc<Conversation>>,
}

impl Conversations {
    /// Creates an empty set that keeps at most about `budget_bytes` of text.
    pub fn new(budget_bytes: u64) -> Self {
        const ENTRY_OVERHEAD: u32 = 256;
        Self {
            cache: Cache::builder()
                .max_capacity(budget_bytes)
                .weigher(|key: &(String, String), conversation: &Arc<Conversation>| {
                    let text = conversation.bytes.load(Ordering::Relaxed);
                    let key = u32::try_from(key.0.len() + key.1.len()).unwrap_or(u32::MAX);
                    text.saturating_add(key).saturating_add(ENTRY_OVERHEAD)
                })
                .time_to_idle(IDLE_TIMEOUT)
                .build(),
        }
    }

    /// Returns the conversation of `user_id` with `vendor_id`, creating it.
    pub async fn get(&self, vendor_id: &str, user_id: &str) -> Arc<Conversation> {
        self.cache
            .get_with((vendor_id.to_owned(), user_id.to_owned()), async {
                Arc::default()
            })
            .await
    }

    /// Stores a conversation again after it grew, so that the cache weighs
    /// it by its current size.
    pub async fn reweigh(&self, vendor_id: &str, user_id: &str, conversation: Arc<Conversation>) {
        self.cache
            .insert((vendor_id.to_owned(), user_id.to_owned()), conversation)
            .await;
    }

    /// Estimated bytes of all kept conversations.
    pub fn weighted_size(&self) -> u64 {
        self.cache.weighted_size()
    }

    #[cfg(test)]
    async fn settle(&self) {
        self.cache.run_pending_tasks().await;
    }
}

/// Returns the longest prefix of `text` of at most `max_bytes` that ends on a
/// character boundary.
fn cut(text: &str, max_bytes: usize) -> &str {
    &text[..text.floor_char_boundary(max_bytes)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn history_is_bounded_and_per_user() {
        let conversations = Conversations::new(DEFAULT_HISTORY_BYTES);
        let alice = conversations.get("shop", "alice").await;
        for i in 0..30 {
            let mut turns = alice.lock().await;
            alice.record(&mut turns, &format!("q{i}"), &format!("a{i}"));
        }
        let turns = alice.lock().await;
        assert_eq!(turns.len(), MAX_TURNS);
        assert_eq!(turns.back().unwrap().text, "a29");
        drop(turns);
        let bob = conversations.get("shop", "bob").await;
        assert!(bob.lock().await.is_empty());
        let again = conversations.get("shop", "alice").await;
        assert!(Arc::ptr_eq(&alice, &again));
    }

    #[tokio::test]
    async fn long_turns_are_cut_and_weighed() {
        let conversations = Conversations::new(1024 * 1024);
        let long = "é".repeat(MAX_TURN_BYTES);
        for user in 0..100 {
            let user = format!("user-{user}");
            let conversation = conversations.get("shop", &user).await;
            {
                let mut turns = conversation.lock().await;
                conversation.record(&mut turns, &long, "ok");
                assert!(turns[0].text.len() <= MAX_TURN_BYTES);
            }
            conversations.reweigh("shop", &user, conversation).await;
        }
        conversations.settle().await;
        assert!(
            conversations.weighted_size() <= 1024 * 1024,
            "{} bytes kept over a 1 MiB budget",
            conversations.weighted_size()
        );
    }
}
