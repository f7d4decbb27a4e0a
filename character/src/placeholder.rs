//! Removal of ElizaOS template placeholders such as `{{user1}}` and `{{agentName}}`.

/// Replaces ElizaOS placeholders in `text`. Agent placeholders (`{{agentName}}`, `{{char}}`)
/// become `agent_name`, user placeholders (`{{user}}`, `{{user1}}`, `{{userName}}`) become
/// `user_word`, and any other `{{...}}` is removed, as are unmatched `{{` and `}}`. Spaces left
/// doubled by a removal are collapsed.
pub(crate) fn fill_placeholders(text: &str, agent_name: &str, user_word: &str) -> String {
    let mut output = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        output.push_str(&rest[..open]);
        let after_open = &rest[open + 2..];
        match after_open.find("}}") {
            Some(close) if !after_open[..close].contains("{{") => {
                let key = after_open[..close].trim().to_ascii_lowercase();
                output.push_str(replacement(&key, agent_name, user_word));
                rest = &after_open[close + 2..];
            }
            _ => rest = after_open,
        }
    }
    output.push_str(rest);
    // Removing one pair can join single braces into a new pair, as in `{}}{`, so repeat until
    // none is left. Each round shortens the text, so the loop ends.
    while output.contains("{{") || output.contains("}}") {
        output = output.replace("{{", "").replace("}}", "");
    }
    tidy_spaces(&output)
}

fn replacement<'a>(key: &str, agent_name: &'a str, user_word: &'a str) -> &'a str {
    match key {
        "agentname" | "char" | "agent" | "charname" | "charactername" => agent_name,
        "user" | "username" | "name" | "sender" => user_word,
        _ if is_numbered_user(key) => user_word,
        _ => "",
    }
}

/// Reports whether `key` is `user` followed by digits, as in `{{user1}}`.
fn is_numbered_user(key: &str) -> bool {
    key.strip_prefix("user")
        .is_some_and(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
}

/// Collapses runs of spaces and removes a space left before punctuation, line by line.
fn tidy_spaces(text: &str) -> String {
    let lines: Vec<String> = text
        .split('\n')
        .map(|line| {
            let mut tidy = String::with_capacity(line.len());
            for word in line.split(' ').filter(|word| !word.is_empty()) {
                let starts_with_punctuation = word.starts_with([',', '.', '!', '?', ';', ':']);
                if !tidy.is_empty() && !starts_with_punctuation {
                    tidy.push(' ');
                }
                tidy.push_str(word);
            }
            let indent_len = line.len() - line.trim_start_matches(' ').len();
            format!("{}{}", &line[..indent_len], tidy)
        })
        .collect();
    lines.join("\n").trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_and_user_placeholders_are_filled() {
        assert_eq!(
            fill_placeholders("Hi {{user1}}, I am {{agentName}}.", "Ada", "friend"),
            "Hi friend, I am Ada."
        );
    }

    #[test]
    fn unknown_placeholder_is_removed() {
        assert_eq!(
            fill_placeholders("Price {{currency}} list", "Ada", "friend"),
            "Price list"
        );
    }

    #[test]
    fn unmatched_braces_are_removed() {
        assert_eq!(fill_placeholders("a {{b c }} d }}", "Ada", "x"), "a d");
        assert_eq!(
            fill_placeholders("open {{ never closed", "Ada", "x"),
            "open never closed"
        );
    }

    #[test]
    fn removal_leaves_no_space_before_comma() {
        assert_eq!(
            fill_placeholders("Hello {{goal}}, ok", "Ada", "x"),
            "Hello, ok"
        );
    }

    #[test]
    fn nested_open_braces_are_removed() {
        let filled = fill_placeholders("{{{{user}}}}", "Ada", "x");
        assert!(!filled.contains("{{"), "{filled}");
        assert!(!filled.contains("}}"), "{filled}");
    }

    #[test]
    fn braces_joined_by_removal_are_removed() {
        assert_eq!(fill_placeholders("{}}{", "Ada", "x"), "");
    }
}
