//! A multilingual tokenizer for the BM25 index.
//!
//! Spaced scripts are split into Unicode words (UAX #29), lowercased, stripped of English stop
//! words and stemmed with the English Snowball stemmer when the word is ASCII. Han, Hiragana and
//! Katakana have no spaces between words, so each run of them becomes overlapping character
//! bigrams, and a run of one character becomes a unigram.

use std::collections::HashSet;
use std::sync::LazyLock;

use rust_stemmers::{Algorithm, Stemmer};
use unicode_segmentation::UnicodeSegmentation;

/// Conversational words that carry no topic, on top of the NLTK English stop words.
const CHAT_STOP_WORDS: &[&str] = &[
    "tell",
    "please",
    "hey",
    "hi",
    "hello",
    "know",
    "explain",
    "thanks",
    "thank",
    "anything",
    "something",
    "let",
    "us",
    "give",
    "want",
    "like",
    "would",
    "could",
    "shall",
    "may",
    "might",
    "much",
    "many",
    "also",
    "get",
    "got",
];

static STOP_WORDS: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    stop_words::get(stop_words::LANGUAGE::English)
        .iter()
        .copied()
        .chain(CHAT_STOP_WORDS.iter().copied())
        .collect()
});

static STEMMER: LazyLock<Stemmer> = LazyLock::new(|| Stemmer::create(Algorithm::English));

/// Tokenizer used for both passages and queries, so both sides produce the same terms.
#[derive(Debug, Clone, Copy, Default)]
pub struct MultilingualTokenizer;

impl bm25::Tokenizer for MultilingualTokenizer {
    fn tokenize(&self, input_text: &str) -> Vec<String> {
        tokenize(input_text)
    }
}

/// Splits text into index terms. See the module documentation for the rules.
pub fn tokenize(text: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut spaced_start = 0;
    let mut cjk_run: Vec<char> = Vec::new();
    for (offset, character) in text.char_indices() {
        if is_cjk(character) {
            if cjk_run.is_empty() {
                push_word_tokens(&text[spaced_start..offset], &mut tokens);
            }
            cjk_run.push(character);
        } else if !cjk_run.is_empty() {
            push_cjk_tokens(&cjk_run, &mut tokens);
            cjk_run.clear();
            spaced_start = offset;
        }
    }
    if cjk_run.is_empty() {
        push_word_tokens(&text[spaced_start..], &mut tokens);
    } else {
        push_cjk_tokens(&cjk_run, &mut tokens);
    }
    tokens
}

fn push_word_tokens(segment: &str, tokens: &mut Vec<String>) {
    for word in segment.unicode_words() {
        let lower = word.to_lowercase().replace('\u{2019}', "'");
        if STOP_WORDS.contains(lower.as_str()) {
            continue;
        }
        // "founder's" and "founders" index as the same term.
        let base = lower
            .strip_suffix("'s")
            .or_else(|| lower.strip_suffix('\''))
            .unwrap_or(&lower);
        if base.is_empty() || STOP_WORDS.contains(base) {
            continue;
        }
        if base.is_ascii()
            && base
                .chars()
                .any(|character| character.is_ascii_alphabetic())
        {
            tokens.push(STEMMER.stem(base).into_owned());
        } else {
            tokens.push(base.to_owned());
        }
    }
}

fn push_cjk_tokens(run: &[char], tokens: &mut Vec<String>) {
    if let [single] = run {
        tokens.push(single.to_string());
        return;
    }
    for pair in run.windows(2) {
        tokens.push(pair.iter().collect());
    }
}

/// Reports whether a character belongs to the Han, Hiragana or Katakana scripts (including the
/// iteration and prolonged sound marks), which are written without spaces between words.
pub(crate) fn is_cjk(character: char) -> bool {
    matches!(character,
        '\u{3005}' | '\u{3007}'            // ideographic iteration mark and number zero
        | '\u{3040}'..='\u{309F}'          // Hiragana
        | '\u{30A0}'..='\u{30FF}'          // Katakana, including the prolonged sound mark
        | '\u{31F0}'..='\u{31FF}'          // Katakana phonetic extensions
        | '\u{3400}'..='\u{4DBF}'          // CJK unified ideographs extension A
        | '\u{4E00}'..='\u{9FFF}'          // CJK unified ideographs
        | '\u{F900}'..='\u{FAFF}'          // CJK compatibility ideographs
        | '\u{FF66}'..='\u{FF9F}'          // halfwidth Katakana
        | '\u{20000}'..='\u{2FA1F}'        // supplementary ideographic plane
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn english_words_are_stemmed_without_stop_words() {
        assert_eq!(
            tokenize("What are the founders' fundraising strategies?"),
            vec!["founder", "fundrais", "strategi"]
        );
    }

    #[test]
    fn chinese_run_becomes_bigrams() {
        assert_eq!(tokenize("营业时间"), vec!["营业", "业时", "时间"]);
    }

    #[test]
    fn single_cjk_character_is_unigram() {
        assert_eq!(tokenize("猫 cat"), vec!["猫", "cat"]);
    }

    #[test]
    fn mixed_scripts_split_at_boundaries() {
        assert_eq!(
            tokenize("Open 東京の店 daily"),
            vec!["open", "東京", "京の", "の店", "daili"]
        );
    }

    #[test]
    fn other_scripts_are_lowercased_words() {
        assert_eq!(tokenize("Привет Мир"), vec!["привет", "мир"]);
    }
}
