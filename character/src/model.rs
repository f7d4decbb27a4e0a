//! The parsed form of an ElizaOS character file.
//!
//! Only the parts that shape replies are kept. `settings` (including `secrets`), `system`,
//! `templates`, `plugins`, `clients` and `modelProvider` are read for syntax and then dropped, so
//! nothing a reply is built from can contain them.

/// An ElizaOS character: the persona one vendor's agent speaks as.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Character {
    /// Display name, required and never empty.
    pub name: String,
    /// Optional handle (`username`), also accepted as the agent's speaker name in examples.
    pub username: Option<String>,
    /// Background lines about the character, in file order (`bio` may be a string or a list).
    pub bio: Vec<String>,
    /// Backstory lines (`lore`).
    pub lore: Vec<String>,
    /// Example conversations from `messageExamples`, plus one two-message conversation for each
    /// entry of the non-standard `examples` list.
    pub message_examples: Vec<Vec<ExampleMessage>>,
    /// Example social media posts (`postExamples`).
    pub post_examples: Vec<String>,
    /// Subjects the character can talk about (`topics`), empty strings removed.
    pub topics: Vec<String>,
    /// Personality adjectives (`adjectives`).
    pub adjectives: Vec<String>,
    /// Knowledge entries: inline facts and references to knowledge-base files.
    pub knowledge: Vec<KnowledgeEntry>,
    /// Style directions (`style.all`, `style.chat`, `style.post`).
    pub style: Style,
}

impl Character {
    /// Reports whether `speaker` names this character in a message example: its name or username
    /// (ignoring case and surrounding spaces), or the agent placeholders `{{agentName}}` and
    /// `{{char}}`.
    pub fn is_agent_speaker(&self, speaker: &str) -> bool {
        let speaker = speaker.trim();
        if speaker.eq_ignore_ascii_case("{{agentName}}") || speaker.eq_ignore_ascii_case("{{char}}")
        {
            return true;
        }
        let matches_name = speaker.to_lowercase() == self.name.trim().to_lowercase();
        let matches_username = self
            .username
            .as_deref()
            .is_some_and(|username| speaker.to_lowercase() == username.trim().to_lowercase());
        matches_name || matches_username
    }

    /// Returns the inline knowledge strings, skipping file and directory references.
    pub fn knowledge_texts(&self) -> impl Iterator<Item = &str> {
        self.knowledge.iter().filter_map(|entry| match entry {
            KnowledgeEntry::Text(text) => Some(text.as_str()),
            KnowledgeEntry::Path { .. } | KnowledgeEntry::Directory { .. } => None,
        })
    }
}

/// One message of an example conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExampleMessage {
    /// Speaker as written in the file (`user` or `name` key), often a placeholder such as
    /// `{{user1}}`.
    pub speaker: String,
    /// Message text (`content.text`), empty when the file gives none.
    pub text: String,
    /// Whether the character itself speaks this message. Resolved at parse time from the speaker
    /// name, or by turn order when no speaker in the conversation names the character.
    pub from_agent: bool,
}

/// One `knowledge` entry of a character file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KnowledgeEntry {
    /// An inline fact.
    Text(String),
    /// A file in the vendor's knowledge base, relative to its `knowledge-base/` folder.
    Path {
        /// File path as written in the character file.
        path: String,
        /// Whether ElizaOS shares the file between agents.
        shared: bool,
    },
    /// A folder in the vendor's knowledge base, relative to its `knowledge-base/` folder.
    Directory {
        /// Folder path as written in the character file.
        directory: String,
        /// Whether ElizaOS shares the folder between agents.
        shared: bool,
    },
}

/// Style directions of a character.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Style {
    /// Directions for every kind of output.
    pub all: Vec<String>,
    /// Directions for chat replies.
    pub chat: Vec<String>,
    /// Directions for social media posts.
    pub post: Vec<String>,
}

impl Style {
    /// Returns the directions that apply to chat replies: `all` followed by `chat`.
    pub fn chat_directions(&self) -> impl Iterator<Item = &str> {
        self.all.iter().chain(&self.chat).map(String::as_str)
    }
}

/// A knowledge-base file of a vendor, loaded by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnowledgeDocument {
    /// File name or relative path, used as the document's title when it has no heading.
    pub name: String,
    /// File contents, Markdown or plain text.
    pub text: String,
}

impl KnowledgeDocument {
    /// Creates a document from a name and its text.
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            text: text.into(),
        }
    }
}
