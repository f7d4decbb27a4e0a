//! ElizaOS characters and the offline responder.
//!
//! [`parse_character`] reads an ElizaOS character file (v0 or v1, JSON or JSON5). [`Agent`]
//! indexes the character and its knowledge-base documents with BM25, and a [`Responder`] replies to
//! user messages as the agent. [`OfflineResponder`] needs no network and no model weights.

mod agent;
mod chunk;
mod compose;
mod error;
mod focus;
mod greeting;
mod index;
mod model;
mod parse;
mod placeholder;
mod position;
mod raw;
mod responder;
mod scan;
mod tokenize;
mod voice;

pub use agent::Agent;
pub use error::{CharacterError, CharacterErrorKind};
pub use model::{Character, ExampleMessage, KnowledgeDocument, KnowledgeEntry, Style};
pub use parse::parse_character;
pub use responder::{
    OfflineResponder, Prompt, Reply, Responder, ResponderError, Turn, MAX_QUERY_BYTES,
};
pub use tokenize::{tokenize, MultilingualTokenizer};
