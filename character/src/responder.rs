//! The responder interface and the offline responder.

use async_trait::async_trait;

use crate::agent::Agent;
use crate::compose::{stable_hash, Composer, Language};
use crate::focus::focus;
use crate::greeting::is_greeting;
use crate::index::{query_terms, Hit, Source};

/// Length of the start of a message that [`OfflineResponder`] searches, in
/// bytes; the rest of a longer message is ignored.
pub const MAX_QUERY_BYTES: usize = 8 * 1024;

/// Number of top BM25 hits considered when choosing a passage.
const CANDIDATE_HITS: usize = 8;

/// Minimum share of the question's IDF weight a passage must contain to be used. Below it the
/// passage shares only minor words with the question, and the reply states that the agent does not know.
const MIN_COVERAGE: f32 = 0.5;

/// Minimum BM25 score a passage must reach to be used.
const MIN_SCORE: f32 = 0.3;

/// One earlier message of the conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    /// Whether the user sent this message (otherwise the agent did).
    pub from_user: bool,
    /// Message text.
    pub text: String,
}

/// A user's message with its context.
#[derive(Debug, Clone, Copy)]
pub struct Prompt<'a> {
    /// Id of the user, for backends that keep per-user state.
    pub user_id: &'a str,
    /// The message to reply to.
    pub text: &'a str,
    /// Earlier messages, oldest first.
    pub history: &'a [Turn],
}

/// The agent's reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Reply text.
    pub text: String,
}

/// Failure to produce a reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponderError {
    /// The prompt cannot be answered as given (for example, it is empty or too long).
    #[error("invalid prompt: {0}")]
    InvalidPrompt(String),
    /// The backend failed. The message gives the cause.
    #[error("responder backend failed: {0}")]
    Backend(String),
}

/// Produces replies for an agent. Implementations must be deterministic or document otherwise,
/// and must not put the character's settings, secrets or system prompt into a reply.
#[async_trait]
pub trait Responder: Send + Sync + 'static {
    /// Produces the agent's reply to `prompt`.
    async fn respond(&self, agent: &Agent, prompt: &Prompt<'_>) -> Result<Reply, ResponderError>;
}

/// A responder that needs no network and no model: it retrieves the best passage from the
/// agent's BM25 index and phrases it in the character's voice. The same agent and prompt text
/// always give the same reply.
///
/// NOTE: the prompt history is not used, so a follow-up such as "tell me more" gets the
/// "don't know" reply.
#[derive(Debug, Clone, Copy, Default)]
pub struct OfflineResponder;

impl OfflineResponder {
    /// Creates the responder.
    pub fn new() -> Self {
        Self
    }

    /// Produces a reply synchronously. [`Responder::respond`] calls this.
    ///
    /// # Errors
    ///
    /// Returns [`ResponderError::InvalidPrompt`] when the text is blank. Only the first
    /// [`MAX_QUERY_BYTES`] of the text are searched.
    pub fn reply(&self, agent: &Agent, text: &str) -> Result<Reply, ResponderError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(ResponderError::InvalidPrompt(
                "prompt text is empty; send the user's message".to_owned(),
            ));
        }
        let text = truncate_at_char(text, MAX_QUERY_BYTES);
        let composer = Composer {
            voice: agent.voice(),
            language: Language::detect(text),
            seed: stable_hash(text),
        };
        if is_greeting(text, agent.name()) {
            return Ok(Reply {
                text: composer.greeting(),
            });
        }
        let index = agent.index();
        let reply = match best_hit(agent, text).and_then(|hit| index.passage(hit.passage)) {
            Some(passage) if matches!(passage.source, Source::Document { .. }) => {
                let terms = query_terms(text);
                match focus(&passage.text, |unit| index.coverage(&terms, unit)) {
                    Some(focused) => composer.excerpt(&focused),
                    None => composer.passage(passage),
                }
            }
            Some(passage) => composer.passage(passage),
            None => composer.unknown(),
        };
        Ok(Reply { text: reply })
    }
}

#[async_trait]
impl Responder for OfflineResponder {
    async fn respond(&self, agent: &Agent, prompt: &Prompt<'_>) -> Result<Reply, ResponderError> {
        self.reply(agent, prompt.text)
    }
}

/// Returns the highest-scoring hit that covers enough of the question, if any.
fn best_hit(agent: &Agent, text: &str) -> Option<Hit> {
    agent
        .index()
        .search(text, CANDIDATE_HITS)
        .into_iter()
        .find(|hit| hit.score >= MIN_SCORE && hit.coverage >= MIN_COVERAGE)
}

/// Returns the longest prefix of `text` of at most `max_bytes` that ends on a
/// character boundary.
fn truncate_at_char(text: &str, max_bytes: usize) -> &str {
    &text[..text.floor_char_boundary(max_bytes)]
}
