//! Parsing of character files in the shapes people write, and errors for malformed ones.

use voca_character::{parse_character, CharacterErrorKind, KnowledgeEntry};

#[test]
fn byte_order_mark_is_accepted() {
    let mut source = b"\xEF\xBB\xBF".to_vec();
    source.extend_from_slice(br#"{"name": "Ada", "bio": "Bakes bread."}"#);
    let character = parse_character(&source).expect("BOM file parses");
    assert_eq!(character.name, "Ada");
    assert_eq!(character.bio, vec!["Bakes bread."]);
}

#[test]
fn json5_comments_and_trailing_commas_are_accepted() {
    let source = r#"
        // line comment
        {
            /* block comment */
            name: 'Ada',
            "bio": ["Bakes bread.", "Opens at 7.",],
            topics: ["bread",],
        }
    "#;
    let character = parse_character(source.as_bytes()).expect("JSON5 file parses");
    assert_eq!(character.name, "Ada");
    assert_eq!(character.bio, vec!["Bakes bread.", "Opens at 7."]);
    assert_eq!(character.topics, vec!["bread"]);
}

#[test]
fn v1_shapes_are_accepted() {
    let source = r#"{
        "name": "Ada",
        "username": "ada_bakery",
        "bio": "Runs a bakery in Lyon.",
        "system": "You are Ada.",
        "templates": {"messageHandlerTemplate": "{{agentName}} says"},
        "plugins": ["@elizaos/plugin-sql", {"name": "x"}],
        "messageExamples": [[
            {"name": "{{name1}}", "content": {"text": "Do you sell rye?"}},
            {"name": "Ada", "content": {"text": "Every Friday.", "actions": ["NONE"]}}
        ]],
        "knowledge": [
            "We close on Mondays.",
            {"path": "menu.md", "shared": false},
            {"directory": "recipes", "shared": true},
            {"path": "allergens.md"}
        ],
        "style": {"all": "Warm and short.", "chat": ["Uses French greetings"]},
        "unknownField": {"nested": [1, 2, 3]}
    }"#;

    let character = parse_character(source.as_bytes()).expect("v1 file parses");
    assert_eq!(character.username.as_deref(), Some("ada_bakery"));
    assert_eq!(character.bio, vec!["Runs a bakery in Lyon."]);
    assert!(character.lore.is_empty());

    assert_eq!(
        character.knowledge,
        vec![
            KnowledgeEntry::Text("We close on Mondays.".to_owned()),
            KnowledgeEntry::Path {
                path: "menu.md".to_owned(),
                shared: false
            },
            KnowledgeEntry::Directory {
                directory: "recipes".to_owned(),
                shared: true
            },
            KnowledgeEntry::Path {
                path: "allergens.md".to_owned(),
                shared: false
            },
        ]
    );
    assert_eq!(character.style.all, vec!["Warm and short."]);
    assert_eq!(character.style.chat, vec!["Uses French greetings"]);

    let conversation = &character.message_examples[0];
    assert_eq!(conversation[0].speaker, "{{name1}}");
    assert!(!conversation[0].from_agent);
    assert_eq!(conversation[1].text, "Every Friday.");
    assert!(conversation[1].from_agent);
}

#[test]
fn examples_key_becomes_message_examples() {
    let source = r#"{"name": "Coach", "examples": [
        {"user": "/startup team", "assistant": "Hire people who could take your job."},
        {"user": "", "assistant": "dropped"}
    ]}"#;
    let character = parse_character(source.as_bytes()).expect("examples parse");
    assert_eq!(character.message_examples.len(), 1);
    let conversation = &character.message_examples[0];
    assert_eq!(conversation[0].text, "/startup team");
    assert!(!conversation[0].from_agent);
    assert_eq!(conversation[1].text, "Hire people who could take your job.");
    assert!(conversation[1].from_agent);
}

#[test]
fn unnamed_speakers_alternate_turns() {
    let source = r#"{"name": "Ada", "messageExamples": [[
        {"user": "Bob", "content": {"text": "q"}},
        {"user": "Eliza", "content": {"text": "a"}}
    ]]}"#;
    let character = parse_character(source.as_bytes()).expect("parses");
    let roles: Vec<bool> = character.message_examples[0]
        .iter()
        .map(|message| message.from_agent)
        .collect();
    assert_eq!(roles, vec![false, true]);
}

#[test]
fn nulls_and_blank_entries_are_dropped() {
    let source = r#"{"name": " Ada ", "bio": null, "lore": ["", "  "], "topics": [""],
        "knowledge": null, "style": null, "messageExamples": null}"#;
    let character = parse_character(source.as_bytes()).expect("parses");
    assert_eq!(character.name, "Ada");
    assert!(character.bio.is_empty());
    assert!(character.lore.is_empty());
    assert!(character.topics.is_empty());
}

#[test]
fn wrong_type_in_list_names_field_and_position() {
    let source = "{\n  \"name\": \"Ada\",\n  \"bio\": [\"a\", \"b\", 5]\n}";
    let error = parse_character(source.as_bytes()).expect_err("integer in bio");
    assert_eq!(error.kind(), CharacterErrorKind::Type);
    assert_eq!(error.field(), Some("bio[2]"));
    assert_eq!(error.line(), 3);
    assert_eq!(error.column(), 21);
    assert_eq!(
        error.reason(),
        "invalid type: expected a string, found a number"
    );
}

#[test]
fn scalar_where_list_expected_names_both_types() {
    let source = r#"{"name": "Ada", "bio": 5}"#;
    let error = parse_character(source.as_bytes()).expect_err("number as bio");
    assert_eq!(error.field(), Some("bio"));
    assert_eq!(
        error.reason(),
        "invalid type: integer `5`, expected a string or a list of strings"
    );
}

#[test]
fn wrong_type_in_message_names_nested_path() {
    let source = r#"{
  "name": "Ada",
  "messageExamples": [
    [
      {"user": "{{user1}}", "content": {"text": "hi"}},
      {"user": "Ada", "content": {"text": ["not", "a", "string"]}}
    ]
  ]
}"#;
    let error = parse_character(source.as_bytes()).expect_err("list as text");
    assert_eq!(error.field(), Some("messageExamples[0][1].content.text"));
    assert_eq!(error.line(), 6);
    assert_eq!(error.column(), 43);
    assert_eq!(
        error.reason(),
        "invalid type: expected a string, found a list"
    );
}

#[test]
fn knowledge_object_without_path_is_rejected() {
    let source = "{\"name\": \"Ada\",\n\"knowledge\": [\"x\", {\"shared\": true}]}";
    let error = parse_character(source.as_bytes()).expect_err("no path");
    assert_eq!(error.field(), Some("knowledge[1]"));
    assert_eq!(error.line(), 2);
    assert_eq!(error.column(), 20);
    assert!(
        error.reason().contains("`path` or `directory`"),
        "{}",
        error.reason()
    );
}

#[test]
fn syntax_error_has_position_but_no_field() {
    let source = "{\n  \"name\": \"Ada\"\n  \"bio\": []\n}";
    let error = parse_character(source.as_bytes()).expect_err("missing comma");
    assert_eq!(error.kind(), CharacterErrorKind::Syntax);
    assert_eq!(error.field(), None);
    assert_eq!(error.line(), 3);
    assert_eq!(error.column(), 3);
}

#[test]
fn truncated_list_points_at_end() {
    let source = "{\n  \"name\": \"Ada\",\n  \"bio\": [\"a\"";
    let error = parse_character(source.as_bytes()).expect_err("truncated");
    assert_eq!(error.kind(), CharacterErrorKind::Syntax);
    assert_eq!(error.line(), 3);
    assert_eq!(error.column(), 14);
    assert_eq!(error.reason(), "file ends inside a list");
}

#[test]
fn truncated_string_points_past_end() {
    let source = "{\n  \"name\": \"Ad";
    let error = parse_character(source.as_bytes()).expect_err("truncated");
    assert_eq!(error.kind(), CharacterErrorKind::Syntax);
    assert_eq!((error.line(), error.column()), (2, 14));
    assert_eq!(error.reason(), "file ends inside a string");
}

#[test]
fn missing_name_is_rejected() {
    let error = parse_character(b"\n  {\"bio\": \"x\"}").expect_err("no name");
    assert_eq!(error.kind(), CharacterErrorKind::MissingName);
    assert_eq!(error.field(), Some("name"));
    assert_eq!((error.line(), error.column()), (2, 3));

    let blank = parse_character(br#"{"name": "  "}"#).expect_err("blank name");
    assert_eq!(blank.kind(), CharacterErrorKind::MissingName);
    assert!(blank.reason().contains("blank"), "{}", blank.reason());
}

#[test]
fn non_string_name_is_type_error() {
    let error = parse_character(br#"{"name": 42}"#).expect_err("numeric name");
    assert_eq!(error.kind(), CharacterErrorKind::Type);
    assert_eq!(error.field(), Some("name"));
    assert_eq!((error.line(), error.column()), (1, 10));
}

#[test]
fn top_level_array_is_rejected() {
    let error = parse_character(b"[1, 2]").expect_err("array");
    assert_eq!(error.kind(), CharacterErrorKind::Type);
    assert_eq!(error.field(), None);
}

#[test]
fn invalid_utf8_is_rejected_with_position() {
    let error = parse_character(b"{\"name\": \"A\xFFda\"}").expect_err("bad byte");
    assert_eq!(error.kind(), CharacterErrorKind::Encoding);
    assert_eq!((error.line(), error.column()), (1, 12));
}

#[test]
fn deep_nesting_is_rejected() {
    let source = format!(
        "{{\"name\": \"Ada\", \"x\": {}{}}}",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let error = parse_character(source.as_bytes()).expect_err("too deep");
    assert_eq!(error.kind(), CharacterErrorKind::TooDeep);
    assert_eq!(error.line(), 1);
}

#[test]
fn nesting_at_limit_parses() {
    let depth = 63;
    let source = format!(
        "{{\"name\": \"Ada\", \"extra\": {}{}}}",
        "[".repeat(depth),
        "]".repeat(depth)
    );
    let character = parse_character(source.as_bytes()).expect("64 levels parse");
    assert_eq!(character.name, "Ada");
}

#[test]
fn brackets_inside_strings_do_not_count_as_nesting() {
    let source = format!("{{\"name\": \"Ada\", \"bio\": \"{}\"}}", "[".repeat(500));
    let character = parse_character(source.as_bytes()).expect("brackets in a string");
    assert_eq!(character.bio[0].len(), 500);
}

#[test]
fn display_reads_as_one_status_line() {
    let source = "{\n  \"name\": \"Ada\",\n  \"topics\": [true]\n}";
    let error = parse_character(source.as_bytes()).expect_err("bool topic");
    assert_eq!(
        error.to_string(),
        "invalid character file at line 3, column 14, field `topics[0]`: \
         invalid type: expected a string, found a boolean"
    );
}
