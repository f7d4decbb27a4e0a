//! An agent: a character with its search index, ready to reply.

use crate::chunk::{chunk_document, split_passages};
use crate::index::{Passage, PassageIndex, Source};
use crate::model::{Character, KnowledgeDocument};
use crate::placeholder::fill_placeholders;
use crate::voice::Voice;

/// A character together with a BM25 index over its bio, lore, knowledge, knowledge-base
/// documents and message examples. [`Agent::approx_heap_bytes`] gives a weight for caching it.
pub struct Agent {
    character: Character,
    index: PassageIndex,
    voice: Voice,
}

impl Agent {
    /// Builds an agent. `documents` are the vendor's knowledge-base files, already read. They are
    /// split at Markdown headings and paragraphs into passages of at most 800 characters.
    pub fn new(character: Character, documents: Vec<KnowledgeDocument>) -> Self {
        let voice = Voice::from_character(&character);
        let mut passages = Vec::new();
        push_lines(&mut passages, &character.bio, &Source::Bio);
        push_lines(&mut passages, &character.lore, &Source::Lore);
        let knowledge: Vec<String> = character.knowledge_texts().map(str::to_owned).collect();
        push_lines(&mut passages, &knowledge, &Source::Knowledge);
        for document in &documents {
            push_document(&mut passages, document);
        }
        push_examples(&mut passages, &character, &voice);
        Self {
            character,
            index: PassageIndex::new(passages),
            voice,
        }
    }

    /// Returns the character's name.
    pub fn name(&self) -> &str {
        &self.character.name
    }

    /// Returns the parsed character.
    pub fn character(&self) -> &Character {
        &self.character
    }

    /// Returns the number of indexed passages.
    pub fn passage_count(&self) -> usize {
        self.index.passages().len()
    }

    /// Estimates the heap memory held by this agent in bytes, for use as a cache weight. It
    /// counts string capacities exactly and hash-map overheads by a fixed per-entry figure.
    pub fn approx_heap_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + character_heap_bytes(&self.character)
            + self.index.approx_heap_bytes()
            + voice_heap_bytes(&self.voice)
    }

    pub(crate) fn index(&self) -> &PassageIndex {
        &self.index
    }

    pub(crate) fn voice(&self) -> &Voice {
        &self.voice
    }
}

fn push_lines(passages: &mut Vec<Passage>, lines: &[String], source: &Source) {
    for line in lines {
        for text in split_passages(line) {
            passages.push(Passage {
                source: source.clone(),
                search_text: text.clone(),
                text,
            });
        }
    }
}

/// Adds the chunks of a document. The search text also contains the document title and the
/// heading path, so a question naming the topic finds every chunk of that document.
fn push_document(passages: &mut Vec<Passage>, document: &KnowledgeDocument) {
    let title = document_title(&document.name);
    for chunk in chunk_document(&document.text) {
        let mut search_text = title.clone();
        for heading in &chunk.headings {
            search_text.push('\n');
            search_text.push_str(heading);
        }
        search_text.push('\n');
        search_text.push_str(&chunk.body);
        passages.push(Passage {
            source: Source::Document {
                heading: chunk.headings.last().cloned(),
            },
            text: chunk.body,
            search_text,
        });
    }
}

/// Turns a file name such as `knowledge/pitch_deck_guide.md` into `pitch deck guide`.
fn document_title(name: &str) -> String {
    let file = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let stem = file.rsplit_once('.').map_or(file, |(stem, _)| stem);
    stem.replace(['_', '-'], " ")
}

/// Adds one passage per user line that the character replies to in the next message.
fn push_examples(passages: &mut Vec<Passage>, character: &Character, voice: &Voice) {
    for conversation in &character.message_examples {
        for pair in conversation.windows(2) {
            let [question, answer] = pair else { continue };
            if question.from_agent || !answer.from_agent {
                continue;
            }
            let question_text = fill_placeholders(&question.text, &character.name, "");
            if question_text.is_empty() || answer.text.is_empty() {
                continue;
            }
            passages.push(Passage {
                source: Source::Example {
                    answer: voice.fill(&answer.text),
                },
                search_text: question_text.clone(),
                text: question_text,
            });
        }
    }
}

fn strings_heap_bytes(strings: &Vec<String>) -> usize {
    strings.capacity() * std::mem::size_of::<String>()
        + strings.iter().map(String::capacity).sum::<usize>()
}

fn character_heap_bytes(character: &Character) -> usize {
    let examples: usize = character
        .message_examples
        .iter()
        .flatten()
        .map(|message| {
            std::mem::size_of_val(message) + message.speaker.capacity() + message.text.capacity()
        })
        .sum();
    let knowledge = character.knowledge.iter().map(|entry| match entry {
        crate::KnowledgeEntry::Text(text) => text.capacity(),
        crate::KnowledgeEntry::Path { path, .. } => path.capacity(),
        crate::KnowledgeEntry::Directory { directory, .. } => directory.capacity(),
    });
    character.name.capacity()
        + character.username.as_ref().map_or(0, String::capacity)
        + strings_heap_bytes(&character.bio)
        + strings_heap_bytes(&character.lore)
        + strings_heap_bytes(&character.post_examples)
        + strings_heap_bytes(&character.topics)
        + strings_heap_bytes(&character.adjectives)
        + strings_heap_bytes(&character.style.all)
        + strings_heap_bytes(&character.style.chat)
        + strings_heap_bytes(&character.style.post)
        + examples
        + knowledge.sum::<usize>()
        + character.knowledge.capacity() * std::mem::size_of::<crate::KnowledgeEntry>()
}

fn voice_heap_bytes(voice: &Voice) -> usize {
    voice.name.capacity()
        + voice.honorific.as_ref().map_or(0, String::capacity)
        + strings_heap_bytes(&voice.openers)
        + strings_heap_bytes(&voice.closers)
        + strings_heap_bytes(&voice.topics)
}
