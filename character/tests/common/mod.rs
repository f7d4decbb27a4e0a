//! Helpers shared by the integration tests.

#![allow(dead_code)]

use std::path::PathBuf;

use voca_character::{parse_character, Agent, Character, KnowledgeDocument, OfflineResponder};

/// Returns the folder of the ElizaOS fixture characters: `VOCA_FIXTURES` if set, else
/// `shared/fixtures/characters/elizaos` beside the repository checkout. Panics naming every path
/// tried when none exists.
pub fn fixtures_dir() -> PathBuf {
    let candidates: Vec<PathBuf> = std::env::var_os("VOCA_FIXTURES")
        .map(PathBuf::from)
        .into_iter()
        .chain([PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/fixtures/characters/elizaos"
        ))])
        .collect();
    candidates
        .iter()
        .find(|dir| dir.is_dir())
        .cloned()
        .unwrap_or_else(|| {
            panic!("ElizaOS fixtures not found; set VOCA_FIXTURES to the folder. Tried: {candidates:?}")
        })
}

pub fn read_fixture(relative: &str) -> Vec<u8> {
    let path = fixtures_dir().join(relative);
    std::fs::read(&path).unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
}

pub fn load_character(relative: &str) -> Character {
    parse_character(&read_fixture(relative))
        .unwrap_or_else(|error| panic!("{relative} does not parse: {error}"))
}

/// Reads every `.md` and `.txt` file of a fixture folder as knowledge documents, sorted by name.
pub fn load_documents(relative_dir: &str) -> Vec<KnowledgeDocument> {
    let dir = fixtures_dir().join(relative_dir);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("cannot list {}: {error}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| {
            path.extension()
                .is_some_and(|ext| ext == "md" || ext == "txt")
        })
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("knowledge file is UTF-8");
            let name = path
                .file_name()
                .expect("file name")
                .to_string_lossy()
                .into_owned();
            KnowledgeDocument::new(format!("{relative_dir}/{name}"), text)
        })
        .collect()
}

pub fn reply(agent: &Agent, text: &str) -> String {
    OfflineResponder::new()
        .reply(agent, text)
        .unwrap_or_else(|error| panic!("no reply to {text:?}: {error}"))
        .text
}
