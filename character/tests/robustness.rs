//! Random, truncated and mutated inputs: parsing and replying never panic.

mod common;

use std::path::{Path, PathBuf};

use common::{fixtures_dir, reply};
use voca_character::{parse_character, Agent, KnowledgeDocument};

/// xorshift64* generator, seeded so every run feeds the same inputs.
struct Generator(u64);

impl Generator {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, bound: usize) -> usize {
        usize::try_from(self.next() % bound.max(1) as u64).expect("fits in usize")
    }
}

fn fixture_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("fixture folder is readable") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            files.extend(fixture_files(&path));
        } else if path.extension().is_some_and(|ext| ext == "json") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// Parses `bytes` and, when that succeeds, answers a few prompts with the result.
fn exercise(bytes: &[u8]) {
    if let Ok(character) = parse_character(bytes) {
        let document = KnowledgeDocument::new("doc.md", String::from_utf8_lossy(bytes));
        let agent = Agent::new(character, vec![document]);
        for prompt in ["hello", "what do you know?", "你好吗", "{{user1}}"] {
            let _ = reply(&agent, prompt);
        }
    }
}

#[test]
fn truncations_of_every_fixture_never_panic() {
    let files = fixture_files(&fixtures_dir());
    assert!(
        files.len() >= 6,
        "expected at least 6 fixtures, found {files:?}"
    );
    for file in files {
        let bytes = std::fs::read(&file).expect("fixture is readable");
        // Every prefix that cuts off the closing brace is incomplete JSON.
        let closing_brace = bytes
            .iter()
            .rposition(|byte| *byte == b'}')
            .expect("fixture has a closing brace");
        let step = (closing_brace / 200).max(1);
        for end in (0..=closing_brace).step_by(step) {
            let truncated = &bytes[..end];
            assert!(
                parse_character(truncated).is_err(),
                "{} truncated at {end} parsed",
                file.display()
            );
        }
        exercise(&bytes);
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut generator = Generator(0x9e37_79b9_7f4a_7c15);
    let alphabet = b"{}[]:,\"'\\/*\n tfnu0123456789.-+eE\xEF\xBB\xBF\xFFabc";
    for round in 0..400 {
        let length = generator.below(300);
        let bytes: Vec<u8> = (0..length)
            .map(|_| {
                if round % 2 == 0 {
                    alphabet[generator.below(alphabet.len())]
                } else {
                    (generator.next() & 0xFF) as u8
                }
            })
            .collect();
        exercise(&bytes);
    }
}

#[test]
fn mutated_fixtures_never_panic() {
    let mut generator = Generator(42);
    for file in fixture_files(&fixtures_dir()) {
        let original = std::fs::read(&file).expect("fixture is readable");
        for _ in 0..60 {
            let mut bytes = original.clone();
            for _ in 0..=generator.below(4) {
                let at = generator.below(bytes.len());
                match generator.below(3) {
                    0 => bytes[at] = (generator.next() & 0xFF) as u8,
                    1 => {
                        bytes.remove(at);
                    }
                    _ => bytes.insert(at, b"{[\"'/,:"[generator.below(7)]),
                }
            }
            exercise(&bytes);
        }
    }
}
