//! Reply texts in a character's voice: greetings, retrieved passages and "don't know" replies.

use crate::index::{Passage, Source};
use crate::tokenize::is_cjk;
use crate::voice::Voice;

/// Language of the user's message, which decides the language of fixed phrases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Language {
    English,
    Chinese,
    Japanese,
}

impl Language {
    /// Detects Japanese by kana and Chinese by Han characters without kana. Anything else is
    /// treated as English.
    pub fn detect(text: &str) -> Self {
        let has_kana = text
            .chars()
            .any(|c| matches!(c, '\u{3040}'..='\u{30FF}' | '\u{31F0}'..='\u{31FF}'));
        if has_kana {
            Language::Japanese
        } else if text.chars().any(is_cjk) {
            Language::Chinese
        } else {
            Language::English
        }
    }
}

/// Builds replies for one character. `seed` comes from the prompt text, so the same prompt
/// always picks the same opener and closer.
pub(crate) struct Composer<'a> {
    pub voice: &'a Voice,
    pub language: Language,
    pub seed: u64,
}

impl Composer<'_> {
    pub fn greeting(&self) -> String {
        let voice = self.voice;
        let name = &voice.name;
        match self.language {
            Language::Chinese => format!("你好！我是{name}。有什么可以帮你的吗？"),
            Language::Japanese => {
                format!("こんにちは！{name}です。何かお手伝いできることはありますか？")
            }
            Language::English if voice.third_person => {
                let offer = self.topic_offer(&format!("{name} can talk about"));
                format!("{name} says hello! {name} is happy to help.{offer}")
            }
            Language::English if voice.formal => {
                let address = self.address_suffix();
                let stop = full_stop(name);
                format!("Good day{address}. I am {name}{stop} How may I be of assistance?")
            }
            Language::English => {
                let offer = self.topic_offer("Ask me about");
                let stop = full_stop(name);
                format!("Hello! I'm {name}{stop}{offer}")
            }
        }
    }

    pub fn unknown(&self) -> String {
        let voice = self.voice;
        let name = &voice.name;
        match self.language {
            Language::Chinese => "抱歉，我不太清楚这个问题，我的资料里没有相关内容。".to_owned(),
            Language::Japanese => {
                "すみません、それについてはよくわかりません。私の資料には載っていません。"
                    .to_owned()
            }
            Language::English if voice.third_person => {
                let offer = self.topic_offer(&format!("{name} can help with"));
                format!("{name} is not sure about that — {name} does not know.{offer}")
            }
            Language::English if voice.formal => {
                let address = self.address_suffix();
                let offer = self.topic_offer("I can assist with");
                format!("I'm afraid I don't know that{address}.{offer}")
            }
            Language::English => {
                let offer = self.topic_offer("I can help with");
                format!("I'm not sure about that — it's not something I know.{offer}")
            }
        }
    }

    /// Presents a retrieved passage. An example's answer is returned as written, with its
    /// placeholders filled. Other passages are quoted after a lead-in.
    pub fn passage(&self, passage: &Passage) -> String {
        let voice = self.voice;
        if let Source::Example { answer } = &passage.source {
            return voice.fill(answer);
        }
        let text = voice.fill(&passage.text);
        let lead_in = self.lead_in(&passage.source);
        if self.language != Language::English {
            return format!("{lead_in}{text}");
        }
        let opener = pick(&voice.openers, self.seed);
        let closer = pick(&voice.closers, self.seed.rotate_left(17));
        let mut reply = String::new();
        if let Some(opener) = opener {
            reply.push_str(opener);
            reply.push(' ');
        }
        reply.push_str(&lead_in);
        reply.push_str(&text);
        if let Some(closer) = closer {
            if !text.ends_with(['.', '!', '?']) {
                reply.push('.');
            }
            reply.push(if text.contains('\n') { '\n' } else { ' ' });
            reply.push_str(closer);
        }
        reply
    }

    /// Presents the lines of a document chunk that answer the question, with
    /// the character's opener and closer but without the chunk's heading.
    pub fn excerpt(&self, text: &str) -> String {
        let excerpt = Passage {
            source: Source::Knowledge,
            text: text.to_owned(),
            search_text: String::new(),
        };
        self.passage(&excerpt)
    }

    fn lead_in(&self, source: &Source) -> String {
        let voice = self.voice;
        let name = &voice.name;
        let heading = match source {
            Source::Document {
                heading: Some(heading),
            } => Some(voice.fill(heading)),
            _ => None,
        };
        match (self.language, source) {
            (Language::Chinese, _) => "根据我的资料：".to_owned(),
            (Language::Japanese, _) => "私の資料によると：".to_owned(),
            (_, Source::Bio | Source::Lore) if voice.third_person => format!("About {name}: "),
            (_, Source::Bio | Source::Lore) => "A little about me: ".to_owned(),
            (_, _) if voice.third_person => match heading {
                Some(heading) => format!("{name} knows this about {heading}:\n"),
                None => format!("{name} knows this: "),
            },
            (_, _) if voice.formal => {
                let address = self.address_suffix();
                match heading {
                    Some(heading) => format!("If I may{address}, on {heading}:\n"),
                    None => format!("If I may{address}: "),
                }
            }
            (_, _) => match heading {
                Some(heading) => format!("From my notes on {heading}:\n"),
                None => "Here's what I know: ".to_owned(),
            },
        }
    }

    fn address_suffix(&self) -> String {
        self.voice
            .honorific
            .as_deref()
            .map_or_else(String::new, |honorific| format!(", {honorific}"))
    }

    fn topic_offer(&self, lead: &str) -> String {
        // A topic that is only a placeholder fills to nothing and is left out.
        let topics: Vec<String> = self
            .voice
            .topics
            .iter()
            .map(|topic| self.voice.fill(topic).trim().to_owned())
            .filter(|topic| !topic.is_empty())
            .collect();
        match topics.as_slice() {
            [] => String::new(),
            [only] => format!(" {lead} {only}."),
            [rest @ .., last] => format!(" {lead} {} or {last}.", rest.join(", ")),
        }
    }
}

/// Returns the period that ends a sentence after `word`, or nothing when `word` already ends
/// with one (as in "J.A.R.V.I.S.").
fn full_stop(word: &str) -> &'static str {
    if word.ends_with('.') {
        ""
    } else {
        "."
    }
}

fn pick(options: &[String], seed: u64) -> Option<&str> {
    if options.is_empty() {
        return None;
    }
    let index = usize::try_from(seed % options.len() as u64).unwrap_or(0);
    options.get(index).map(String::as_str)
}

/// Hashes text with 64-bit FNV-1a. Unlike the standard library's hasher, FNV-1a has a fixed
/// definition, so replies stay the same across builds and processes.
pub(crate) fn stable_hash(text: &str) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    text.bytes().fold(OFFSET_BASIS, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    })
}
