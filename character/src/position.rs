//! Conversions between byte offsets and the line and column positions JSON5 reports.

/// Returns the 1-based line and column of a byte offset, counting columns in Unicode scalar
/// values and line terminators as JSON5 does (LF, CR, CRLF, U+2028, U+2029).
pub(crate) fn position_at(text: &str, offset: usize) -> (usize, usize) {
    let mut line = 1;
    let mut column = 1;
    let mut chars = text
        .char_indices()
        .take_while(|(index, _)| *index < offset)
        .peekable();
    while let Some((_, character)) = chars.next() {
        if is_line_break(character) {
            if character == '\r' && chars.peek().is_some_and(|(_, next)| *next == '\n') {
                chars.next();
            }
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    (line, column)
}

/// Returns the byte offset of a 0-based line and column as json5 1.3 reports them, or `None`
/// when the text has no such position.
pub(crate) fn offset_at(text: &str, line: usize, column: usize) -> Option<usize> {
    let (mut current_line, mut current_column) = (0, 0);
    let mut chars = text.char_indices().peekable();
    while let Some((offset, character)) = chars.next() {
        if (current_line, current_column) == (line, column) {
            return Some(offset);
        }
        if is_line_break(character) {
            if character == '\r' && chars.peek().is_some_and(|(_, next)| *next == '\n') {
                chars.next();
            }
            current_line += 1;
            current_column = 0;
        } else {
            current_column += 1;
        }
    }
    None
}

/// Names the kind of JSON5 value that starts at `offset`, for error messages.
pub(crate) fn value_kind_at(text: &str, offset: usize) -> Option<&'static str> {
    let first = text.get(offset..)?.chars().next()?;
    let kind = match first {
        '"' | '\'' => "a string",
        '[' => "a list",
        '{' => "an object",
        't' | 'f' => "a boolean",
        'n' => "null",
        '0'..='9' | '-' | '+' | '.' | 'I' | 'N' => "a number",
        _ => return None,
    };
    Some(kind)
}

fn is_line_break(character: char) -> bool {
    matches!(character, '\n' | '\r' | '\u{2028}' | '\u{2029}')
}
