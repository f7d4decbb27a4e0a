//! Splitting of knowledge text into passages of bounded size.
//!
//! Markdown is split at headings and each chunk keeps the path of headings above it. Inside a
//! section, paragraphs are packed together up to [`MAX_CHUNK_CHARS`]. A longer paragraph is
//! split at line ends, then at spaces.

/// Maximum length of a chunk body in characters (Unicode scalar values).
pub(crate) const MAX_CHUNK_CHARS: usize = 800;

/// A passage of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Chunk {
    /// Headings above the passage, outermost first. Empty for text before any heading.
    pub headings: Vec<String>,
    /// Passage text, trimmed and at most [`MAX_CHUNK_CHARS`] characters long.
    pub body: String,
}

/// Splits a Markdown or plain-text document into chunks. Headings inside fenced code blocks are
/// treated as text.
pub(crate) fn chunk_document(text: &str) -> Vec<Chunk> {
    let mut chunks = Vec::new();
    let mut headings: Vec<(usize, String)> = Vec::new();
    let mut section = String::new();
    let mut in_fence = false;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            in_fence = !in_fence;
        }
        let heading = if in_fence {
            None
        } else {
            parse_heading(trimmed)
        };
        match heading {
            Some((level, title)) => {
                flush_section(&headings, &section, &mut chunks);
                section.clear();
                while headings.last().is_some_and(|(open, _)| *open >= level) {
                    headings.pop();
                }
                headings.push((level, title.to_owned()));
            }
            None => {
                section.push_str(line);
                section.push('\n');
            }
        }
    }
    flush_section(&headings, &section, &mut chunks);
    chunks
}

/// Splits plain text into paragraphs packed up to [`MAX_CHUNK_CHARS`].
pub(crate) fn split_passages(text: &str) -> Vec<String> {
    let mut passages = Vec::new();
    let mut current = String::new();
    for paragraph in paragraphs(text) {
        for piece in split_long(&paragraph, MAX_CHUNK_CHARS) {
            let joined_len = char_len(&current) + 2 + char_len(&piece);
            if !current.is_empty() && joined_len > MAX_CHUNK_CHARS {
                passages.push(std::mem::take(&mut current));
            }
            if !current.is_empty() {
                current.push_str("\n\n");
            }
            current.push_str(&piece);
        }
    }
    if !current.is_empty() {
        passages.push(current);
    }
    passages
}

fn flush_section(headings: &[(usize, String)], section: &str, chunks: &mut Vec<Chunk>) {
    let titles: Vec<String> = headings.iter().map(|(_, title)| title.clone()).collect();
    for body in split_passages(section) {
        chunks.push(Chunk {
            headings: titles.clone(),
            body,
        });
    }
}

/// Parses an ATX heading (`#` to `######` followed by a space) into its level and title.
fn parse_heading(line: &str) -> Option<(usize, &str)> {
    let level = line
        .chars()
        .take_while(|character| *character == '#')
        .count();
    if level == 0 || level > 6 {
        return None;
    }
    let rest = &line[level..];
    if !rest.is_empty() && !rest.starts_with([' ', '\t']) {
        return None;
    }
    let title = rest.trim().trim_end_matches('#').trim();
    (!title.is_empty()).then_some((level, title))
}

fn paragraphs(text: &str) -> Vec<String> {
    let mut paragraphs = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !current.is_empty() {
                paragraphs.push(current.join("\n"));
                current.clear();
            }
        } else {
            current.push(line.trim_end());
        }
    }
    if !current.is_empty() {
        paragraphs.push(current.join("\n"));
    }
    paragraphs
}

/// Splits text longer than `max_chars` at line ends, then at the last space before the limit,
/// then anywhere.
fn split_long(text: &str, max_chars: usize) -> Vec<String> {
    if char_len(text) <= max_chars {
        return vec![text.to_owned()];
    }
    let mut pieces = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let mut rest = line;
        while char_len(rest) > max_chars {
            let cut = cut_offset(rest, max_chars);
            let (head, tail) = rest.split_at(cut);
            if !current.is_empty() {
                pieces.push(std::mem::take(&mut current));
            }
            pieces.push(head.trim_end().to_owned());
            rest = tail.trim_start();
        }
        if !current.is_empty() && char_len(&current) + 1 + char_len(rest) > max_chars {
            pieces.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push('\n');
        }
        current.push_str(rest);
    }
    if !current.is_empty() {
        pieces.push(current);
    }
    pieces.retain(|piece| !piece.trim().is_empty());
    pieces
}

/// Returns a byte offset at most `max_chars` characters into `text`, preferring the last
/// whitespace. The offset is always past the first character, so splitting makes progress.
fn cut_offset(text: &str, max_chars: usize) -> usize {
    let limit = text
        .char_indices()
        .nth(max_chars)
        .map_or(text.len(), |(offset, _)| offset);
    let head = &text[..limit];
    match head.rfind(char::is_whitespace) {
        Some(space) if space > 0 => space,
        _ => limit,
    }
}

fn char_len(text: &str) -> usize {
    text.chars().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headings_stay_with_chunks() {
        let chunks = chunk_document("# Guide\n\nIntro line.\n\n## Pricing\n\n- Basic: $5\n");
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0].headings, vec!["Guide"]);
        assert_eq!(chunks[0].body, "Intro line.");
        assert_eq!(chunks[1].headings, vec!["Guide", "Pricing"]);
        assert_eq!(chunks[1].body, "- Basic: $5");
    }

    #[test]
    fn sibling_heading_replaces_previous() {
        let chunks = chunk_document("# A\n## B\nb\n## C\nc\n");
        assert_eq!(chunks[1].headings, vec!["A", "C"]);
    }

    #[test]
    fn long_text_is_bounded() {
        let word = "lorem ";
        let text = word.repeat(1000);
        let passages = split_passages(&text);
        assert!(passages.len() > 1);
        for passage in &passages {
            assert!(
                passage.chars().count() <= MAX_CHUNK_CHARS,
                "{}",
                passage.len()
            );
        }
    }

    #[test]
    fn unspaced_text_is_bounded() {
        let text = "字".repeat(2000);
        let passages = split_passages(&text);
        assert_eq!(passages.len(), 3);
        assert!(passages
            .iter()
            .all(|p| p.chars().count() <= MAX_CHUNK_CHARS));
    }

    #[test]
    fn fenced_hash_is_not_heading() {
        let chunks = chunk_document("```\n# not a heading\n```\n");
        assert_eq!(chunks.len(), 1);
        assert!(chunks[0].headings.is_empty());
    }
}
