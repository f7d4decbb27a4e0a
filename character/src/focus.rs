//! Narrowing a retrieved document chunk to the lines that answer a question.
//!
//! A chunk holds up to a few paragraphs, such as a whole price list. The
//! reply quotes only the units (lines, or sentences of a one-paragraph
//! chunk) that carry the most of the question's weight, so that "how much
//! is a sourdough loaf?" gets the sourdough line rather than the list.

use unicode_segmentation::UnicodeSegmentation;

/// Units kept at most when several cover the question equally well.
const MAX_UNITS: usize = 3;

/// Returns the part of `text` that answers the question best, scoring each
/// unit with `coverage` (the share of the question's weight it contains,
/// from 0 to 1). Returns `None` when no unit covers more than the others,
/// so that the whole text is quoted.
pub(crate) fn focus(text: &str, coverage: impl Fn(&str) -> f32) -> Option<String> {
    let units = units(text);
    if units.len() < 2 {
        return None;
    }
    let scores: Vec<f32> = units.iter().map(|unit| coverage(unit)).collect();
    let best = scores.iter().copied().fold(0.0_f32, f32::max);
    if best <= 0.0 {
        return None;
    }
    let chosen: Vec<usize> = (0..units.len())
        .filter(|&i| scores[i] >= best - f32::EPSILON)
        .collect();
    if chosen.len() > MAX_UNITS || chosen.len() == units.len() {
        return None;
    }
    let mut lines: Vec<&str> = Vec::new();
    for &i in &chosen {
        lines.push(units[i]);
        // A unit that introduces a list ("Key metrics:") is quoted with it.
        if units[i].trim_end().ends_with(':') {
            lines.extend(units[i + 1..].iter().take_while(|u| is_list_item(u)));
        }
    }
    lines.dedup();
    let lines: Vec<String> = lines.iter().map(|line| strip_bullet(line)).collect();
    Some(lines.join("\n"))
}

/// Splits text into lines, or into sentences when it is one paragraph.
fn units(text: &str) -> Vec<&str> {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if lines.len() > 1 {
        return lines;
    }
    text.unicode_sentences()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

fn is_list_item(line: &str) -> bool {
    let line = line.trim_start();
    line.starts_with("- ")
        || line.starts_with("* ")
        || line
            .split_once(". ")
            .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Drops a Markdown bullet (`- `, `* `) from a single quoted line.
fn strip_bullet(line: &str) -> String {
    let trimmed = line.trim_start();
    trimmed
        .strip_prefix("- ")
        .or_else(|| trimmed.strip_prefix("* "))
        .unwrap_or(trimmed)
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words_covered(question: &'static str) -> impl Fn(&str) -> f32 {
        move |unit: &str| {
            let unit = unit.to_lowercase();
            let words: Vec<&str> = question.split_whitespace().collect();
            let hits = words.iter().filter(|w| unit.contains(*w)).count();
            hits as f32 / words.len() as f32
        }
    }

    #[test]
    fn picks_the_matching_line() {
        let text =
            "- Sourdough loaf (800 g): £4.20.\n- Seeded rye loaf: £3.80.\n- Baguette: £1.90.";
        assert_eq!(
            focus(text, words_covered("sourdough")).as_deref(),
            Some("Sourdough loaf (800 g): £4.20.")
        );
    }

    #[test]
    fn picks_the_matching_sentence() {
        let text = "You can return any item within 30 days. Refunds take 5 working days.";
        assert_eq!(
            focus(text, words_covered("refunds")).as_deref(),
            Some("Refunds take 5 working days.")
        );
    }

    #[test]
    fn keeps_a_list_with_its_introduction() {
        let text = "Track these metrics:\n1. CAC\n2. LTV\nThen raise.";
        assert_eq!(
            focus(text, words_covered("metrics")).as_deref(),
            Some("Track these metrics:\n1. CAC\n2. LTV")
        );
    }

    #[test]
    fn quotes_everything_when_nothing_stands_out() {
        let text = "Open daily.\nClosed on holidays.";
        assert_eq!(focus(text, words_covered("parking")), None);
        assert_eq!(focus("Open daily.", words_covered("open")), None);
    }
}
