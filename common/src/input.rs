//! Rules for the ids and text that enter the mesh from clients.
//!
//! Every id is checked where it enters, before it becomes part of a storage
//! path, an etcd key or a cache key.

use std::fmt;

/// Maximum length of a vendor id or node id, in bytes.
pub const MAX_ID_BYTES: usize = 128;
/// Maximum length of a user id, in bytes.
pub const MAX_USER_ID_BYTES: usize = 256;
/// Maximum length of a client-chosen message id, in bytes.
pub const MAX_MESSAGE_ID_BYTES: usize = 128;
/// Maximum length of a customer's message, in bytes of UTF-8.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;

/// An input value that breaks the rules for its field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field} {value}: {reason}")]
pub struct InvalidInput {
    /// Name of the request field, as in the proto file.
    pub field: &'static str,
    /// The value, quoted and escaped, shortened when long.
    pub value: String,
    /// What is wrong and what a valid value looks like.
    pub reason: String,
}

impl InvalidInput {
    fn new(field: &'static str, value: &str, reason: impl Into<String>) -> Self {
        Self {
            field,
            value: quote(value),
            reason: reason.into(),
        }
    }
}

/// Checks a vendor id: 1 to 128 bytes of ASCII letters, digits, `.`, `_`
/// and `-`, not starting with `.`.
pub fn check_vendor_id(value: &str) -> Result<(), InvalidInput> {
    check_id("vendor_id", value)
}

/// Checks a pool node id. Node ids follow the vendor id rules because they
/// become etcd keys and are hashed onto the ring.
pub fn check_node_id(value: &str) -> Result<(), InvalidInput> {
    check_id("node_id", value)
}

fn check_id(field: &'static str, value: &str) -> Result<(), InvalidInput> {
    const RULE: &str = "use 1 to 128 ASCII letters, digits, '.', '_' or '-', not starting with '.'";
    if value.is_empty() {
        return Err(InvalidInput::new(
            field,
            value,
            format!("it is empty; {RULE}"),
        ));
    }
    if value.len() > MAX_ID_BYTES {
        return Err(InvalidInput::new(
            field,
            value,
            format!("it is {} bytes long; {RULE}", value.len()),
        ));
    }
    if value.starts_with('.') {
        return Err(InvalidInput::new(
            field,
            value,
            format!("it starts with '.'; {RULE}"),
        ));
    }
    if let Some((offset, c)) = value
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(InvalidInput::new(
            field,
            value,
            format!("character {c:?} at byte {offset} is not allowed; {RULE}"),
        ));
    }
    Ok(())
}

/// Checks a user id: 1 to 256 bytes, not only spaces, with no control
/// characters.
pub fn check_user_id(value: &str) -> Result<(), InvalidInput> {
    const FIELD: &str = "user_id";
    if value.trim().is_empty() {
        return Err(InvalidInput::new(
            FIELD,
            value,
            "it is empty; send the customer's id on the messaging platform",
        ));
    }
    check_printable(FIELD, value, MAX_USER_ID_BYTES)
}

/// Checks a client-chosen message id: empty (the gateway assigns one) or at
/// most 128 bytes with no control characters.
pub fn check_message_id(value: &str) -> Result<(), InvalidInput> {
    check_printable("message_id", value, MAX_MESSAGE_ID_BYTES)
}

/// Checks a platform name: at most 64 bytes with no control characters.
pub fn check_platform(value: &str) -> Result<(), InvalidInput> {
    check_printable("platform", value, 64)
}

/// Checks a customer's message: not blank, at most 64 KiB, and with no
/// control characters but line breaks and tabs.
pub fn check_text(value: &str) -> Result<(), InvalidInput> {
    const FIELD: &str = "text";
    if value.trim().is_empty() {
        return Err(InvalidInput::new(
            FIELD,
            value,
            "it is empty; send the customer's message",
        ));
    }
    if let Some((offset, c)) = value
        .char_indices()
        .find(|&(_, c)| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(InvalidInput::new(
            FIELD,
            value,
            format!("control character {c:?} at byte {offset} is not allowed; send plain text"),
        ));
    }
    if value.len() > MAX_TEXT_BYTES {
        return Err(InvalidInput::new(
            FIELD,
            value,
            format!(
                "it is {} bytes long; the maximum is {MAX_TEXT_BYTES} bytes, so split the message",
                value.len()
            ),
        ));
    }
    Ok(())
}

fn check_printable(field: &'static str, value: &str, max_bytes: usize) -> Result<(), InvalidInput> {
    if value.len() > max_bytes {
        return Err(InvalidInput::new(
            field,
            value,
            format!(
                "it is {} bytes long; the maximum is {max_bytes} bytes",
                value.len()
            ),
        ));
    }
    if let Some((offset, c)) = value.char_indices().find(|(_, c)| c.is_control()) {
        return Err(InvalidInput::new(
            field,
            value,
            format!("control character {c:?} at byte {offset} is not allowed"),
        ));
    }
    Ok(())
}

/// Quotes a value for an error message, escaped and cut to 80 characters.
/// Quotes and escapes a value for an error message, shortened to 80
/// characters when longer.
pub fn quote(value: &str) -> String {
    const SHOWN_CHARS: usize = 80;
    let shown: String = value.chars().take(SHOWN_CHARS).collect();
    let cut = if shown.len() < value.len() { "..." } else { "" };
    format!("{}{cut}", QuotedDebug(&shown))
}

struct QuotedDebug<'a>(&'a str);

impl fmt::Display for QuotedDebug<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendor_id_accepts_valid() {
        for id in [
            "a",
            "rosies-bakery",
            "Vendor_01",
            "a.b-c_d",
            &"x".repeat(128),
        ] {
            assert_eq!(check_vendor_id(id), Ok(()), "{id}");
        }
    }

    #[test]
    fn vendor_id_rejects_invalid() {
        let cases = [
            ("", "empty"),
            (&"x".repeat(129) as &str, "129 bytes"),
            (".hidden", "starts with '.'"),
            ("a/b", "'/'"),
            ("../etc", "starts with '.'"),
            ("a\0b", "\\0"),
            ("a b", "' '"),
            ("café", "'é'"),
            ("a:b", "':'"),
        ];
        for (id, expected) in cases {
            let error = check_vendor_id(id).expect_err(id);
            assert_eq!(error.field, "vendor_id");
            let message = error.to_string();
            assert!(message.contains(expected), "{message:?} lacks {expected:?}");
            assert!(message.starts_with("invalid vendor_id "), "{message}");
        }
    }

    #[test]
    fn long_value_is_cut_in_message() {
        let error = check_vendor_id(&"y".repeat(10_000)).expect_err("too long");
        assert!(error.value.len() < 100, "{}", error.value);
        assert!(error.value.ends_with("..."));
    }

    #[test]
    fn text_limits() {
        assert!(check_text("hello").is_ok());
        assert!(check_text(&"a".repeat(MAX_TEXT_BYTES)).is_ok());
        let error = check_text(&"a".repeat(MAX_TEXT_BYTES + 1)).expect_err("too long");
        assert_eq!(error.field, "text");
        assert!(error.reason.contains("65537 bytes"), "{}", error.reason);
        assert_eq!(check_text("  \n").expect_err("blank").field, "text");
        assert!(check_text("line one\nline two\tend\r\n").is_ok());
        let error = check_text("a\0b").expect_err("NUL");
        assert!(error.reason.contains("'\\0' at byte 1"), "{}", error.reason);
    }

    #[test]
    fn random_input_never_panics() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..5_000 {
            let length = rng.random_range(0..300);
            let value: String = (0..length).map(|_| rng.random::<char>()).collect();
            let checks = [
                check_vendor_id(&value),
                check_user_id(&value),
                check_message_id(&value),
                check_platform(&value),
                check_text(&value),
            ];
            for result in checks {
                if let Err(error) = result {
                    assert!(error.to_string().starts_with("invalid "), "{error}");
                }
            }
        }
    }

    #[test]
    fn user_and_message_ids() {
        assert!(check_user_id("whatsapp:+15550100").is_ok());
        assert!(check_user_id("").is_err());
        assert!(check_user_id("   ").is_err());
        assert!(check_user_id("a\nb").is_err());
        assert!(check_message_id("").is_ok());
        assert!(check_message_id(&"m".repeat(129)).is_err());
    }
}
