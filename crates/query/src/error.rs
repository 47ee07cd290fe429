//! The one error type of the crate. Every error carries a byte offset into the query text so the
//! HTTP layer can answer 400 with "what is wrong and where" and the CLI can draw a caret.

/// A query that cannot be parsed or evaluated, or a request body of the wrong shape.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message} at position {position}{}", expected.as_ref().map(|e| format!(": expected {e}")).unwrap_or_default())]
pub struct QueryError {
    /// What was found (`unexpected ')'`, `unknown function 'foo'`, ...).
    pub message: String,
    /// Byte offset into the query string (0 for request-shape errors).
    pub position: usize,
    /// What the parser wanted instead, if it knows (`a tag filter`).
    pub expected: Option<String>,
}

impl QueryError {
    /// An error at `position` without an "expected" hint.
    pub fn new(message: impl Into<String>, position: usize) -> Self {
        Self {
            message: message.into(),
            position,
            expected: None,
        }
    }

    /// An error at `position` saying what was expected instead.
    pub fn expected(
        message: impl Into<String>,
        position: usize,
        expected: impl Into<String>,
    ) -> Self {
        Self {
            message: message.into(),
            position,
            expected: Some(expected.into()),
        }
    }

    /// The same error moved by `offset` bytes (for queries embedded in a larger text, such as a
    /// monitor query or one entry of a comma-separated list).
    pub fn shifted(mut self, offset: usize) -> Self {
        self.position += offset;
        self
    }

    /// Two lines: the query, and a caret under the offending character (columns counted in
    /// characters, so multi-byte text lines up).
    pub fn caret(&self, query: &str) -> String {
        let pos = self.position.min(query.len());
        let mut cut = pos;
        while !query.is_char_boundary(cut) {
            cut -= 1;
        }
        let col = query[..cut].chars().count();
        format!("{query}\n{}^", " ".repeat(col))
    }
}
