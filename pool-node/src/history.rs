//! Conversation history per (vendor, user), bounded and kept in memory.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;
use tokio::sync::Mutex;
use voca_character::Turn;

/// Turns kept per conversation; older turns are dropped first.
pub const MAX_TURNS: usize = 20;
/// Conversations kept in memory.
pub const MAX_CONVERSATIONS: u64 = 100_000;
/// A conversation idle this long is forgotten.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// One conversation's turns. Holding its lock serializes the messages of
/// one (vendor, user) pair, so they are answered in the order they arrive.
pub type Conversation = Arc<Mutex<VecDeque<Turn>>>;

/// Every conversation of this node.
pub struct Conversations {
    cache: Cache<(String, String), Conversation>,
}

impl Default for Conversations {
    fn default() -> Self {
        Self {
            cache: Cache::builder()
                .max_capacity(MAX_CONVERSATIONS)
                .time_to_idle(IDLE_TIMEOUT)
                .build(),
        }
    }
}

impl Conversations {
    /// Returns the conversation of `user_id` with `vendor_id`, creating it.
    pub async fn get(&self, vendor_id: &str, user_id: &str) -> Conversation {
        self.cache
            .get_with((vendor_id.to_owned(), user_id.to_owned()), async {
                Conversation::default()
            })
            .await
    }
}

/// Appends a customer's message and the reply, dropping the oldest turns
/// past [`MAX_TURNS`].
pub fn record(turns: &mut VecDeque<Turn>, text: &str, reply: &str) {
    turns.push_back(Turn {
        from_user: true,
        text: text.to_owned(),
    });
    turns.push_back(Turn {
        from_user: false,
        text: reply.to_owned(),
    });
    while turns.len() > MAX_TURNS {
        turns.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn history_is_bounded_and_per_user() {
        let conversations = Conversations::default();
        let alice = conversations.get("shop", "alice").await;
        for i in 0..30 {
            record(&mut *alice.lock().await, &format!("q{i}"), &format!("a{i}"));
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
}
