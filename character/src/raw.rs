//! Serde shapes of a character file as written, before conversion into [`crate::Character`].
//!
//! Fields that accept several shapes use hand-written visitors instead of untagged enums, so a
//! type error inside them keeps its JSON path and source position.

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::model::KnowledgeEntry;

/// Top level of a character file. Unknown fields, `settings`, `system` and `templates` are
/// skipped without being stored.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RawCharacter {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub bio: TextList,
    #[serde(default)]
    pub lore: TextList,
    #[serde(default)]
    pub message_examples: Option<Vec<Vec<RawMessage>>>,
    #[serde(default)]
    pub examples: Option<Vec<RawQuestionAnswer>>,
    #[serde(default)]
    pub post_examples: TextList,
    #[serde(default)]
    pub topics: TextList,
    #[serde(default)]
    pub adjectives: TextList,
    #[serde(default)]
    pub knowledge: Option<Vec<RawKnowledge>>,
    #[serde(default)]
    pub style: Option<RawStyle>,
}

/// One message of `messageExamples`: v0 files name the speaker `user`, v1 files `name`.
#[derive(Debug, Deserialize)]
pub(crate) struct RawMessage {
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub content: Option<RawContent>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RawContent {
    #[serde(default)]
    pub text: Option<String>,
}

/// One entry of the non-standard `examples` list: a question and the character's answer.
#[derive(Debug, Deserialize)]
pub(crate) struct RawQuestionAnswer {
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub assistant: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawStyle {
    #[serde(default)]
    pub all: TextList,
    #[serde(default)]
    pub chat: TextList,
    #[serde(default)]
    pub post: TextList,
}

/// A string or a list of strings. `null` reads as an empty list.
#[derive(Debug, Default)]
pub(crate) struct TextList(pub Vec<String>);

impl<'de> Deserialize<'de> for TextList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TextListVisitor)
    }
}

struct TextListVisitor;

impl<'de> Visitor<'de> for TextListVisitor {
    type Value = TextList;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a string or a list of strings")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<TextList, E> {
        Ok(TextList(vec![value.to_owned()]))
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<TextList, E> {
        Ok(TextList(vec![value]))
    }

    fn visit_unit<E: de::Error>(self) -> Result<TextList, E> {
        Ok(TextList::default())
    }

    fn visit_none<E: de::Error>(self) -> Result<TextList, E> {
        Ok(TextList::default())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TextList, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<String>()? {
            items.push(item);
        }
        Ok(TextList(items))
    }
}

/// A `knowledge` entry: a string, `{"path": ..., "shared": bool}` or
/// `{"directory": ..., "shared": bool}`.
#[derive(Debug)]
pub(crate) struct RawKnowledge(pub KnowledgeEntry);

impl<'de> Deserialize<'de> for RawKnowledge {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(KnowledgeVisitor)
    }
}

struct KnowledgeVisitor;

impl<'de> Visitor<'de> for KnowledgeVisitor {
    type Value = RawKnowledge;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a string or an object with `path` or `directory`")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<RawKnowledge, E> {
        Ok(RawKnowledge(KnowledgeEntry::Text(value.to_owned())))
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<RawKnowledge, E> {
        Ok(RawKnowledge(KnowledgeEntry::Text(value)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawKnowledge, A::Error> {
        let mut path = None;
        let mut directory = None;
        let mut shared = None;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "path" => path = Some(map.next_value::<String>()?),
                "directory" => directory = Some(map.next_value::<String>()?),
                "shared" => shared = map.next_value::<Option<bool>>()?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let shared = shared.unwrap_or(false);
        match (path, directory) {
            (Some(path), None) => Ok(RawKnowledge(KnowledgeEntry::Path { path, shared })),
            (None, Some(directory)) => Ok(RawKnowledge(KnowledgeEntry::Directory {
                directory,
                shared,
            })),
            (Some(_), Some(_)) => Err(de::Error::custom(
                "knowledge entry has both `path` and `directory`; keep one",
            )),
            (None, None) => Err(de::Error::custom(
                "knowledge entry object needs a `path` or `directory` string",
            )),
        }
    }
}
