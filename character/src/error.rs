//! The error returned for a character file that cannot be used.

use std::fmt;

/// Category of the problem that made a character file unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CharacterErrorKind {
    /// The bytes are not UTF-8.
    Encoding,
    /// The text is not valid JSON5.
    Syntax,
    /// Arrays and objects are nested deeper than the parser accepts.
    TooDeep,
    /// A field has the wrong type or shape.
    Type,
    /// The required `name` is missing, `null` or blank.
    MissingName,
}

/// A character file that failed to parse, with the field and the 1-based line and column of the
/// problem.
///
/// The [`Display`](fmt::Display) form is one line meant for a gRPC status message, for example
/// ``invalid character file at line 4, column 12, field `bio[2]`: invalid type: integer `5`,
/// expected a string``.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct CharacterError {
    kind: CharacterErrorKind,
    field: Option<String>,
    line: usize,
    column: usize,
    reason: String,
}

impl CharacterError {
    pub(crate) fn new(
        kind: CharacterErrorKind,
        field: Option<String>,
        (line, column): (usize, usize),
        reason: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            field,
            line,
            column,
            reason: reason.into(),
        }
    }

    /// Returns what kind of problem this is.
    pub fn kind(&self) -> CharacterErrorKind {
        self.kind
    }

    /// Returns the JSON path of the offending field, such as `bio[2]` or
    /// `messageExamples[0][1].content.text`, or `None` for syntax and encoding errors.
    pub fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }

    /// Returns the 1-based line of the problem.
    pub fn line(&self) -> usize {
        self.line
    }

    /// Returns the 1-based column of the problem, counted in Unicode scalar values.
    pub fn column(&self) -> usize {
        self.column
    }

    /// Returns the short reason, without position or field.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for CharacterError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "invalid character file at line {}, column {}",
            self.line, self.column
        )?;
        if let Some(field) = &self.field {
            write!(formatter, ", field `{field}`")?;
        }
        write!(formatter, ": {}", self.reason)
    }
}
