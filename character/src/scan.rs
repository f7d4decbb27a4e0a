//! A lexical pass over JSON5 text that finds the first value and measures nesting depth.

/// Maximum nesting of arrays and objects. Character files need about six levels, and the limit
/// keeps the recursive JSON5 parser far from the end of a thread's stack.
pub(crate) const MAX_DEPTH: usize = 64;

/// Byte offsets found by [`scan_structure`].
#[derive(Debug, Default)]
pub(crate) struct Structure {
    /// Offset of the first value character, after whitespace and comments.
    pub first_value_at: Option<usize>,
    /// Offset of the first bracket that exceeds [`MAX_DEPTH`].
    pub too_deep_at: Option<usize>,
}

#[derive(Clone, Copy)]
enum ScanState {
    Code,
    Text { quote: char, escaped: bool },
    LineComment,
    BlockComment { star: bool },
}

/// Measures bracket nesting outside strings and comments, without validating syntax.
pub(crate) fn scan_structure(text: &str) -> Structure {
    let mut structure = Structure::default();
    let mut depth = 0usize;
    let mut state = ScanState::Code;
    let mut chars = text.char_indices().peekable();
    while let Some((offset, character)) = chars.next() {
        state = match state {
            ScanState::Code => match character {
                '/' if chars.peek().is_some_and(|(_, next)| *next == '/') => ScanState::LineComment,
                '/' if chars.peek().is_some_and(|(_, next)| *next == '*') => {
                    chars.next();
                    ScanState::BlockComment { star: false }
                }
                _ if character.is_whitespace() || character == '\u{FEFF}' => ScanState::Code,
                _ => {
                    structure.first_value_at.get_or_insert(offset);
                    match character {
                        '"' | '\'' => ScanState::Text {
                            quote: character,
                            escaped: false,
                        },
                        '[' | '{' => {
                            depth += 1;
                            if depth > MAX_DEPTH {
                                structure.too_deep_at = Some(offset);
                                return structure;
                            }
                            ScanState::Code
                        }
                        ']' | '}' => {
                            depth = depth.saturating_sub(1);
                            ScanState::Code
                        }
                        _ => ScanState::Code,
                    }
                }
            },
            ScanState::Text { quote, escaped } => match character {
                _ if escaped => ScanState::Text {
                    quote,
                    escaped: false,
                },
                '\\' => ScanState::Text {
                    quote,
                    escaped: true,
                },
                _ if character == quote => ScanState::Code,
                _ => ScanState::Text { quote, escaped },
            },
            ScanState::LineComment => match character {
                '\n' | '\r' | '\u{2028}' | '\u{2029}' => ScanState::Code,
                _ => ScanState::LineComment,
            },
            ScanState::BlockComment { star } => match character {
                '/' if star => ScanState::Code,
                _ => ScanState::BlockComment {
                    star: character == '*',
                },
            },
        };
    }
    structure
}
