//! Detection of messages that are only a greeting.

use unicode_segmentation::UnicodeSegmentation;

/// Words allowed in an English greeting besides [`GREETING_WORDS`], of which at least one must
/// occur.
const GREETING_FILLER: &[&str] = &[
    "good",
    "morning",
    "afternoon",
    "evening",
    "day",
    "there",
    "all",
];

const GREETING_WORDS: &[&str] = &[
    "hi",
    "hello",
    "hey",
    "hiya",
    "howdy",
    "greetings",
    "yo",
    "morning",
    "afternoon",
    "evening",
    "hola",
    "bonjour",
    "hallo",
    "ciao",
];

/// Whole-message greetings in scripts without spaces, after punctuation is removed.
const CJK_GREETINGS: &[&str] = &[
    "你好",
    "您好",
    "你们好",
    "大家好",
    "嗨",
    "哈喽",
    "早上好",
    "晚上好",
    "下午好",
    "早安",
    "こんにちは",
    "こんにちわ",
    "こんばんは",
    "おはよう",
    "おはようございます",
    "やあ",
    "もしもし",
    "はじめまして",
];

/// Reports whether `text` is only a greeting, optionally naming the character, as in
/// "Hello Kermit!" or "你好".
pub(crate) fn is_greeting(text: &str, agent_name: &str) -> bool {
    let compact: String = text
        .chars()
        .filter(|character| character.is_alphanumeric())
        .collect();
    let compact_name: String = agent_name
        .chars()
        .filter(|character| character.is_alphanumeric())
        .collect();
    let without_name = compact.replace(&compact_name, "");
    if CJK_GREETINGS
        .iter()
        .any(|greeting| compact == *greeting || without_name == *greeting)
    {
        return true;
    }

    let name_words: Vec<String> = agent_name.unicode_words().map(str::to_lowercase).collect();
    let words: Vec<String> = text.unicode_words().map(str::to_lowercase).collect();
    let mut has_greeting = false;
    for word in &words {
        if GREETING_WORDS.contains(&word.as_str()) {
            has_greeting = true;
        } else if !GREETING_FILLER.contains(&word.as_str()) && !name_words.contains(word) {
            return false;
        }
    }
    has_greeting
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greetings_are_detected() {
        for text in [
            "hi",
            "Hello!",
            "hey there",
            "Good morning, Kermit",
            "你好",
            "こんにちは！",
        ] {
            assert!(is_greeting(text, "Kermit"), "{text}");
        }
    }

    #[test]
    fn questions_are_not_greetings() {
        for text in [
            "Hey Kermit, how's life?",
            "hello, what are your hours?",
            "good",
            "",
        ] {
            assert!(!is_greeting(text, "Kermit"), "{text}");
        }
    }
}
