//! Every ElizaOS fixture parses and answers questions from its own knowledge.

mod common;

use common::{fixtures_dir, load_character, load_documents, reply};
use voca_character::{Agent, Character, KnowledgeEntry};

/// Character files, their knowledge folder, a question about their own knowledge and text the
/// reply must contain.
const CASES: &[(&str, Option<&str>, &str, &str)] = &[
    (
        "alfred.character.json",
        None,
        "Do you have medical training?",
        "Former British intelligence agent with medical training",
    ),
    (
        "c3po.character.json",
        None,
        "Who is your best friend?",
        "Best friends with R2-D2",
    ),
    (
        "dobby.character.json",
        None,
        "Do you know Harry Potter?",
        "Famous for his dedication to helping Harry Potter",
    ),
    (
        "jarvis.character.json",
        None,
        "Who created you?",
        "Created by Tony Stark",
    ),
    (
        "kermit.character.json",
        None,
        "Can you play the banjo?",
        "banjo",
    ),
    (
        "edriziai-info/edrizi.json",
        Some("edriziai-info/knowledge"),
        "What metrics should I track before fundraising?",
        "Customer Acquisition Cost (CAC)",
    ),
    (
        "edriziai-info/edrizi.json",
        Some("edriziai-info/knowledge"),
        "How should I structure my pitch deck story?",
        "Personal connection to problem",
    ),
];

/// Questions none of the fixtures can answer.
const UNKNOWN_QUESTIONS: &[&str] = &[
    "What is the capital of France?",
    "How do I repair a dishwasher pump?",
    "What is the boiling point of mercury?",
];

fn agent_for(file: &str, knowledge_dir: Option<&str>) -> Agent {
    let documents = knowledge_dir.map(load_documents).unwrap_or_default();
    Agent::new(load_character(file), documents)
}

/// Collects every fact of the character: bio, lore and inline knowledge.
fn facts(character: &Character) -> Vec<String> {
    let knowledge = character.knowledge.iter().filter_map(|entry| match entry {
        KnowledgeEntry::Text(text) => Some(text.clone()),
        _ => None,
    });
    character
        .bio
        .iter()
        .chain(&character.lore)
        .cloned()
        .chain(knowledge)
        .collect()
}

#[test]
fn fixture_folder_has_all_characters() {
    let dir = fixtures_dir();
    for (file, knowledge_dir, _, _) in CASES {
        assert!(
            dir.join(file).is_file(),
            "missing fixture {file} in {}",
            dir.display()
        );
        if let Some(knowledge_dir) = knowledge_dir {
            assert!(dir.join(knowledge_dir).is_dir(), "missing {knowledge_dir}");
        }
    }
}

#[test]
fn fixtures_parse_with_content() {
    for (file, _, _, _) in CASES {
        let character = load_character(file);
        assert!(!character.name.is_empty(), "{file}");
        assert!(!character.bio.is_empty(), "{file} has no bio");
        assert!(
            !character.message_examples.is_empty(),
            "{file} has no examples"
        );
    }
    let kermit = load_character("kermit.character.json");
    assert_eq!(kermit.name, "kermit");
    assert_eq!(kermit.bio.len(), 20);
    assert_eq!(kermit.knowledge.len(), 20);
    assert_eq!(kermit.style.chat.len(), 10);
    let edrizi = load_character("edriziai-info/edrizi.json");
    assert_eq!(
        edrizi.message_examples.len(),
        3,
        "examples key becomes conversations"
    );
    assert_eq!(edrizi.username.as_deref(), Some("edriziai-info"));
}

#[test]
fn fixtures_answer_from_own_knowledge() {
    for (file, knowledge_dir, question, expected) in CASES {
        let agent = agent_for(file, *knowledge_dir);
        let answer = reply(&agent, question);
        assert!(
            answer.contains(expected),
            "{file}: reply to {question:?} lacks {expected:?}: {answer}"
        );
    }
}

#[test]
fn matching_example_returns_its_answer() {
    let agent = agent_for("jarvis.character.json", None);
    let answer = reply(&agent, "What's happening with Stark Industries stock?");
    assert!(
        answer.starts_with("Stark Industries is currently trading at $247.83"),
        "{answer}"
    );

    let edrizi = agent_for("edriziai-info/edrizi.json", Some("edriziai-info/knowledge"));
    let answer = reply(&edrizi, "/mentor fundraising");
    assert!(
        answer.starts_with("Having raised over $25M for Arcus"),
        "{answer}"
    );
}

#[test]
fn unknown_questions_get_honest_reply() {
    for (file, knowledge_dir, _, _) in CASES {
        let agent = agent_for(file, *knowledge_dir);
        let facts = facts(agent.character());
        for question in UNKNOWN_QUESTIONS {
            let answer = reply(&agent, question);
            let admits = ["not sure", "don't know", "does not know"]
                .iter()
                .any(|phrase| answer.contains(phrase));
            assert!(admits, "{file}: {question:?} got {answer}");
            for fact in &facts {
                assert!(
                    !answer.contains(fact.as_str()),
                    "{file}: {answer} contains {fact}"
                );
            }
        }
    }
}

#[test]
fn replies_have_no_placeholders_or_system_text() {
    let questions = [
        "hello",
        "Can you help me with this task?",
        "This is a difficult problem.",
        "Tell me about yourself",
        "What is the capital of France?",
        "/startup team",
    ];
    for (file, knowledge_dir, question, _) in CASES {
        let agent = agent_for(file, *knowledge_dir);
        for question in questions.iter().chain([question]) {
            let answer = reply(&agent, question);
            assert!(!answer.contains("{{"), "{file}: {answer}");
            assert!(!answer.contains("}}"), "{file}: {answer}");
            assert!(
                !answer.contains("You are "),
                "{file}: system prompt in {answer}"
            );
            assert!(!answer.contains("en_GB-"), "{file}: settings in {answer}");
            assert!(
                !answer.contains("A0B9YQOKJTW"),
                "{file}: settings in {answer}"
            );
        }
    }
}

#[test]
fn replies_are_deterministic() {
    for (file, knowledge_dir, question, _) in CASES {
        let first = reply(&agent_for(file, *knowledge_dir), question);
        let second = reply(&agent_for(file, *knowledge_dir), question);
        assert_eq!(first, second, "{file}");
    }
}

#[test]
fn heap_estimate_grows_with_documents() {
    let bare = agent_for("edriziai-info/edrizi.json", None);
    let full = agent_for("edriziai-info/edrizi.json", Some("edriziai-info/knowledge"));
    let documents_bytes: usize = load_documents("edriziai-info/knowledge")
        .iter()
        .map(|document| document.text.len())
        .sum();
    assert!(
        bare.approx_heap_bytes() > 4_000,
        "{}",
        bare.approx_heap_bytes()
    );
    assert!(
        full.approx_heap_bytes() > bare.approx_heap_bytes() + documents_bytes,
        "documents are stored and indexed: {} vs {}",
        full.approx_heap_bytes(),
        bare.approx_heap_bytes()
    );
}
