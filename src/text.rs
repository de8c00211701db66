//! Text helpers for messages that quote user input (config keys and values, file contents):
//! the one-line error contract holds whatever the input holds.

/// `s` with control characters (a newline inside a YAML key, say) shown as escapes, so that a
/// message that quotes user input stays on one line.
pub fn escape_controls(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_become_escapes() {
        assert_eq!(escape_controls("a\nb\tc"), "a\\nb\\tc");
        assert_eq!(escape_controls("plain"), "plain");
    }
}
