//! Parsing of ElizaOS character files (JSON or JSON5, with or without a UTF-8 byte-order mark).

use serde::de::IgnoredAny;

use crate::error::{CharacterError, CharacterErrorKind};
use crate::model::{Character, ExampleMessage, KnowledgeEntry, Style};
use crate::position::{offset_at, position_at, value_kind_at};
use crate::raw::{RawCharacter, RawMessage, RawQuestionAnswer, TextList};
use crate::scan::{scan_structure, MAX_DEPTH};

const BYTE_ORDER_MARK: &[u8] = b"\xEF\xBB\xBF";

/// Speaker recorded for the question of an `examples` entry, which names no user.
const EXAMPLE_USER: &str = "{{user1}}";

/// Parses an ElizaOS character file (v0 or v1 layout, JSON or JSON5).
///
/// # Errors
///
/// Returns a [`CharacterError`] with the line and column of the problem when the bytes are not
/// UTF-8, the text is not JSON5, nesting exceeds 64 levels, a known field has the wrong type, or
/// `name` is missing or blank. Type errors also name the field's JSON path.
pub fn parse_character(source: &[u8]) -> Result<Character, CharacterError> {
    let source = source.strip_prefix(BYTE_ORDER_MARK).unwrap_or(source);
    let text = std::str::from_utf8(source).map_err(|error| {
        let valid = &source[..error.valid_up_to()];
        // The prefix up to `valid_up_to` is UTF-8 by definition, so this never falls back.
        let position =
            std::str::from_utf8(valid).map_or((1, 1), |prefix| position_at(prefix, prefix.len()));
        CharacterError::new(
            CharacterErrorKind::Encoding,
            None,
            position,
            "file is not valid UTF-8",
        )
    })?;

    let scan = scan_structure(text);
    if let Some(offset) = scan.too_deep_at {
        return Err(CharacterError::new(
            CharacterErrorKind::TooDeep,
            None,
            position_at(text, offset),
            format!("arrays and objects are nested deeper than {MAX_DEPTH} levels"),
        ));
    }

    // A first pass over the syntax alone, so that every error of the typed pass below is a type
    // error with a field path. This pass also rejects trailing characters.
    json5::from_str::<IgnoredAny>(text).map_err(|error| {
        let (position, reason) = split_json5_error(text, &error);
        CharacterError::new(CharacterErrorKind::Syntax, None, position, reason)
    })?;

    let mut deserializer = json5::Deserializer::from_str(text);
    let raw: RawCharacter =
        serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
            let path = error.path().to_string();
            let field = (path != ".").then_some(path);
            let (position, reason) = split_json5_error(text, error.inner());
            let reason = describe_type_error(text, error.inner()).unwrap_or(reason);
            CharacterError::new(CharacterErrorKind::Type, field, position, reason)
        })?;

    let value_start = scan
        .first_value_at
        .map_or((1, 1), |offset| position_at(text, offset));
    into_character(raw, value_start)
}

fn into_character(
    raw: RawCharacter,
    value_start: (usize, usize),
) -> Result<Character, CharacterError> {
    let name = raw.name.as_deref().map(str::trim).unwrap_or_default();
    if name.is_empty() {
        let reason = if raw.name.is_some() {
            "`name` is blank; set it to the character's display name"
        } else {
            "`name` is missing; set it to the character's display name"
        };
        return Err(CharacterError::new(
            CharacterErrorKind::MissingName,
            Some("name".to_owned()),
            value_start,
            reason,
        ));
    }

    let mut character = Character {
        name: name.to_owned(),
        username: raw
            .username
            .map(|username| username.trim().to_owned())
            .filter(|username| !username.is_empty()),
        bio: clean_list(raw.bio),
        lore: clean_list(raw.lore),
        message_examples: Vec::new(),
        post_examples: clean_list(raw.post_examples),
        topics: clean_list(raw.topics),
        adjectives: clean_list(raw.adjectives),
        knowledge: raw
            .knowledge
            .unwrap_or_default()
            .into_iter()
            .filter_map(|entry| clean_knowledge(entry.0))
            .collect(),
        style: raw.style.map_or_else(Style::default, |style| Style {
            all: clean_list(style.all),
            chat: clean_list(style.chat),
            post: clean_list(style.post),
        }),
    };

    let mut conversations = Vec::new();
    for raw_conversation in raw.message_examples.unwrap_or_default() {
        let conversation = convert_conversation(&character, raw_conversation);
        if !conversation.is_empty() {
            conversations.push(conversation);
        }
    }
    for pair in raw.examples.unwrap_or_default() {
        if let Some(conversation) = convert_question_answer(&character, pair) {
            conversations.push(conversation);
        }
    }
    character.message_examples = conversations;
    Ok(character)
}

fn clean_list(list: TextList) -> Vec<String> {
    list.0
        .into_iter()
        .map(|item| item.trim().to_owned())
        .filter(|item| !item.is_empty())
        .collect()
}

fn clean_knowledge(entry: KnowledgeEntry) -> Option<KnowledgeEntry> {
    match entry {
        KnowledgeEntry::Text(text) => {
            let text = text.trim();
            (!text.is_empty()).then(|| KnowledgeEntry::Text(text.to_owned()))
        }
        KnowledgeEntry::Path { path, shared } => {
            let path = path.trim();
            (!path.is_empty()).then(|| KnowledgeEntry::Path {
                path: path.to_owned(),
                shared,
            })
        }
        KnowledgeEntry::Directory { directory, shared } => {
            let directory = directory.trim();
            (!directory.is_empty()).then(|| KnowledgeEntry::Directory {
                directory: directory.to_owned(),
                shared,
            })
        }
    }
}

/// Converts one example conversation. A message is the character's when its speaker names the
/// character. When no speaker does (a renamed character, say), turns alternate starting with
/// the user.
fn convert_conversation(character: &Character, raw: Vec<RawMessage>) -> Vec<ExampleMessage> {
    let mut messages: Vec<ExampleMessage> = raw
        .into_iter()
        .map(|message| {
            let speaker = message.user.or(message.name).unwrap_or_default();
            let text = message
                .content
                .and_then(|content| content.text)
                .map(|text| text.trim().to_owned())
                .unwrap_or_default();
            let from_agent = character.is_agent_speaker(&speaker);
            ExampleMessage {
                speaker,
                text,
                from_agent,
            }
        })
        .collect();
    if !messages.iter().any(|message| message.from_agent) {
        for (index, message) in messages.iter_mut().enumerate() {
            message.from_agent = index % 2 == 1;
        }
    }
    messages
}

fn convert_question_answer(
    character: &Character,
    pair: RawQuestionAnswer,
) -> Option<Vec<ExampleMessage>> {
    let question = pair.user?.trim().to_owned();
    let answer = pair.assistant?.trim().to_owned();
    if question.is_empty() || answer.is_empty() {
        return None;
    }
    Some(vec![
        ExampleMessage {
            speaker: EXAMPLE_USER.to_owned(),
            text: question,
            from_agent: false,
        },
        ExampleMessage {
            speaker: character.name.clone(),
            text: answer,
            from_agent: true,
        },
    ])
}

/// Splits a json5 error into a 1-based position and its message without the position suffix.
/// json5 1.3 places an end-of-input error at the start of the enclosing value, or nowhere, so
/// such errors are moved to the end of the text, where the parser stopped.
fn split_json5_error(text: &str, error: &json5::Error) -> ((usize, usize), String) {
    if let Some(reason) = error.code().and_then(end_of_input_reason) {
        return (position_at(text, text.len()), reason.to_owned());
    }
    let message = error.to_string();
    match error.position() {
        Some(position) => {
            let suffix = format!(" at {position}");
            let reason = message
                .strip_suffix(&suffix)
                .map_or_else(|| message.clone(), str::to_owned);
            ((position.line + 1, position.column + 1), reason)
        }
        None => (position_at(text, text.len()), message),
    }
}

fn end_of_input_reason(code: json5::ErrorCode) -> Option<&'static str> {
    use json5::ErrorCode;
    let reason = match code {
        ErrorCode::EofParsingArray => "file ends inside a list",
        ErrorCode::EofParsingObject => "file ends inside an object",
        ErrorCode::EofParsingString | ErrorCode::EofParsingEscapeSequence => {
            "file ends inside a string"
        }
        ErrorCode::EofParsingComment => "file ends inside a comment",
        ErrorCode::EofParsingBool
        | ErrorCode::EofParsingIdentifier
        | ErrorCode::EofParsingNull
        | ErrorCode::EofParsingNumber
        | ErrorCode::EofParsingValue => "file ends before the value is complete",
        _ => return None,
    };
    Some(reason)
}

/// Rewrites json5's terse type errors ("expected string") as "expected a string, found a
/// number". Serde's own type errors already name both sides and are kept as they are.
fn describe_type_error(text: &str, error: &json5::Error) -> Option<String> {
    use json5::ErrorCode;
    let expected = match error.code()? {
        ErrorCode::ExpectedString => "a string",
        ErrorCode::ExpectedBool => "true or false",
        ErrorCode::ExpectedNull => "null",
        ErrorCode::ExpectedNumber => "a number",
        ErrorCode::ExpectedOpeningBrace => "an object",
        ErrorCode::ExpectedOpeningBracket => "a list",
        ErrorCode::ExpectedStringOrObject => "a string or an object",
        _ => return None,
    };
    let position = error.position()?;
    let found = offset_at(text, position.line, position.column)
        .and_then(|offset| value_kind_at(text, offset))
        .unwrap_or("another type");
    Some(format!("invalid type: expected {expected}, found {found}"))
}
