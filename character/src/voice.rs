//! Speaking traits derived from a character file by simple rules.

use crate::model::Character;
use crate::placeholder::fill_placeholders;

/// Word used in place of a user placeholder when the character has no form of address.
const NEUTRAL_USER_WORD: &str = "friend";

/// Words that start an interjection usable as a reply opener.
const INTERJECTIONS: &[&str] = &[
    "ah",
    "alas",
    "absolutely",
    "certainly",
    "excellent",
    "gosh",
    "hmm",
    "indeed",
    "oh",
    "of",
    "splendid",
    "well",
    "why",
    "wow",
    "yes",
    "yay",
];

/// Maximum words in an opener or closer taken from an example answer.
const MAX_OPENER_WORDS: usize = 4;
const MAX_CLOSER_WORDS: usize = 6;

/// Speaking traits of a character, derived by rules from its style, bio, adjectives and example
/// answers.
#[derive(Debug, Clone, Default)]
pub(crate) struct Voice {
    pub name: String,
    /// The character refers to itself by name ("Dobby knows this").
    pub third_person: bool,
    /// Whether the style calls for formal or British English.
    pub formal: bool,
    /// Form of address for the user taken from the style, such as "sir".
    pub honorific: Option<String>,
    /// Short interjections the character uses to start replies, such as "Oh my!".
    pub openers: Vec<String>,
    /// Short questions the character uses to end answers, such as "Shall we proceed?".
    pub closers: Vec<String>,
    /// Topics offered when no passage matches the question.
    pub topics: Vec<String>,
}

impl Voice {
    pub fn from_character(character: &Character) -> Self {
        let directions: Vec<String> = character
            .style
            .chat_directions()
            .map(str::to_lowercase)
            .collect();
        let bio: Vec<String> = character
            .bio
            .iter()
            .map(|line| line.to_lowercase())
            .collect();
        let adjectives: Vec<String> = character
            .adjectives
            .iter()
            .map(|adjective| adjective.to_lowercase())
            .collect();

        let third_person = directions
            .iter()
            .chain(&bio)
            .any(|text| text.contains("third person") || text.contains("third-person"));
        let formal = directions.iter().any(|text| {
            text.contains("formal") || text.contains("british") || text.contains("proper")
        }) || adjectives
            .iter()
            .any(|adjective| matches!(adjective.as_str(), "formal" | "proper" | "dignified"));
        let honorific = character
            .style
            .chat_directions()
            .filter(|direction| direction.to_lowercase().contains("address"))
            .find_map(quoted_word);

        let mut voice = Self {
            name: character.name.clone(),
            third_person,
            formal,
            honorific,
            openers: Vec::new(),
            closers: Vec::new(),
            topics: character.topics.iter().take(3).cloned().collect(),
        };
        voice.collect_openers_and_closers(character, &adjectives);
        voice
    }

    /// Word used in place of user placeholders.
    pub fn user_word(&self) -> &str {
        self.honorific.as_deref().unwrap_or(NEUTRAL_USER_WORD)
    }

    /// Replaces placeholders in text the character speaks.
    pub fn fill(&self, text: &str) -> String {
        fill_placeholders(text, &self.name, self.user_word())
    }

    fn collect_openers_and_closers(&mut self, character: &Character, adjectives: &[String]) {
        let answers: Vec<String> = character
            .message_examples
            .iter()
            .flatten()
            .filter(|message| message.from_agent)
            .map(|message| self.fill(&message.text))
            .collect();
        for answer in answers {
            let sentences = split_sentences(&answer);
            if let Some(first) = sentences.first() {
                if is_opener(first) && !self.openers.contains(first) {
                    self.openers.push(first.clone());
                }
            }
            for sentence in &sentences {
                if is_closer(sentence) && !self.closers.contains(sentence) {
                    self.closers.push(sentence.clone());
                }
            }
        }
        if self.openers.is_empty() {
            self.openers
                .extend(opener_for_adjectives(adjectives).map(str::to_owned));
        }
        if self.closers.is_empty() {
            self.closers
                .extend(closer_for_adjectives(adjectives).map(str::to_owned));
        }
    }
}

/// Returns the first single-quoted word of a style direction, such as `sir` in
/// "Addresses user as 'sir' or 'maam'". Bracketed or multi-word quotes are skipped.
fn quoted_word(direction: &str) -> Option<String> {
    let normalized = direction.replace(['\u{2018}', '\u{2019}'], "'");
    normalized
        .split('\'')
        .skip(1)
        .step_by(2)
        .find(|word| {
            !word.is_empty()
                && word.len() <= 12
                && word.chars().all(|character| character.is_alphabetic())
        })
        .map(str::to_owned)
}

/// Splits text into sentences ending in `.`, `!` or `?`, keeping the punctuation.
pub(crate) fn split_sentences(text: &str) -> Vec<String> {
    let mut sentences = Vec::new();
    let mut current = String::new();
    let mut characters = text.chars().peekable();
    while let Some(character) = characters.next() {
        current.push(character);
        let at_end = matches!(character, '.' | '!' | '?');
        let next_is_break = characters.peek().is_none_or(|next| next.is_whitespace());
        if at_end && next_is_break {
            let sentence = current.trim();
            if !sentence.is_empty() {
                sentences.push(sentence.to_owned());
            }
            current.clear();
        }
    }
    let rest = current.trim();
    if !rest.is_empty() {
        sentences.push(rest.to_owned());
    }
    sentences
}

fn word_count(sentence: &str) -> usize {
    sentence.split_whitespace().count()
}

fn is_plain(sentence: &str) -> bool {
    !sentence
        .chars()
        .any(|character| character.is_ascii_digit() || character == '\n')
}

fn is_opener(sentence: &str) -> bool {
    let first_word = sentence
        .split(|character: char| !character.is_alphabetic())
        .next()
        .unwrap_or_default()
        .to_lowercase();
    let interjection = INTERJECTIONS.contains(&first_word.as_str());
    let exclamation = sentence.ends_with('!');
    is_plain(sentence)
        && word_count(sentence) <= MAX_OPENER_WORDS
        && (interjection || (exclamation && word_count(sentence) <= 3))
        && (sentence.ends_with('!') || sentence.ends_with('.'))
}

fn is_closer(sentence: &str) -> bool {
    is_plain(sentence) && sentence.ends_with('?') && word_count(sentence) <= MAX_CLOSER_WORDS
}

/// Picks an opener matching the character's adjectives when its examples offer none.
fn opener_for_adjectives(adjectives: &[String]) -> Option<&'static str> {
    let has = |words: &[&str]| adjectives.iter().any(|a| words.contains(&a.as_str()));
    if has(&[
        "enthusiastic",
        "optimistic",
        "cheerful",
        "encouraging",
        "energetic",
    ]) {
        Some("Oh, happy to help!")
    } else if has(&["formal", "proper", "dignified", "polite"]) {
        Some("Certainly.")
    } else if has(&["analytical", "efficient", "technical", "precise", "logical"]) {
        Some("Understood.")
    } else {
        None
    }
}

/// Picks a closer matching the character's adjectives when its examples offer none.
fn closer_for_adjectives(adjectives: &[String]) -> Option<&'static str> {
    let has = |words: &[&str]| adjectives.iter().any(|a| words.contains(&a.as_str()));
    if has(&["supportive", "encouraging", "optimistic", "patient", "kind"]) {
        Some("Hope that helps!")
    } else if has(&["loyal", "devoted", "helpful", "resourceful"]) {
        Some("Anything else I can do?")
    } else {
        None
    }
}
