//! What every receiver accepts, and the helpers that keep messages inside it.
//!
//! Alert fields come from attacker-controlled logs (a principal name, a user agent, a resource
//! id), so every channel applies the same two rules:
//! - a one-line field (a title, a ticket summary, an email subject) has no CR, LF or other
//!   control characters: they would forge header or body lines, or make the receiver refuse it;
//! - a field is cut to the receiver's limit *after* escaping (escaping lengthens text), never in
//!   the middle of an escape sequence, and the cut is visible ([`MARKER`]); a list is cut at
//!   item boundaries and ends with "…and N more".
//!
//! The limits each service publishes are constants here, next to where they are documented.

/// Ends a field that was cut.
pub const MARKER: &str = "…(truncated)";

/// Slack Block Kit (https://api.slack.com/reference/block-kit/blocks): a section's text is at
/// most 3,000 characters, each of its (at most 10) fields 2,000, a header's plain text 150.
pub const SLACK_SECTION_TEXT: usize = 3000;
pub const SLACK_FIELD_TEXT: usize = 2000;
pub const SLACK_FIELDS: usize = 10;
pub const SLACK_HEADER_TEXT: usize = 150;
/// Slack truncates a message's top-level `text` past 40,000 characters (chat.postMessage).
pub const SLACK_TEXT: usize = 40_000;

/// Teams incoming webhooks and Workflows refuse a message over 28 KB; the budget keeps a margin
/// for what Teams adds around the card.
pub const TEAMS_PAYLOAD_BYTES: usize = 26 * 1024;

/// Jira: a summary is one line of at most 255 characters; a text field (the description, a
/// comment) at most 32,767 characters.
pub const JIRA_SUMMARY: usize = 255;
pub const JIRA_TEXT: usize = 32_767;

/// ServiceNow's incident dictionary: `short_description` 160, `description`, `work_notes` and
/// `close_notes` 4,000 characters.
pub const SERVICENOW_SHORT_DESCRIPTION: usize = 160;
pub const SERVICENOW_TEXT: usize = 4000;

/// PagerDuty Events API v2: `payload.summary` is at most 1,024 characters.
pub const PAGERDUTY_SUMMARY: usize = 1024;

/// RFC 5322 allows 998 octets on a header line; lettre folds words but never splits one, so a
/// subject stays far below that even as a single word.
pub const EMAIL_SUBJECT: usize = 250;
/// An email digest lists whole alerts up to this many characters.
pub const EMAIL_DIGEST_BODY: usize = 100_000;

/// OCSF `string_t` is at most 65,535 characters.
pub const OCSF_STRING: usize = 65_535;

/// `text` as one line: CR, LF and the Unicode line separators become spaces; other control
/// characters and the bidirectional overrides (which reorder what a reader sees) are removed.
pub fn single_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\r' | '\n' | '\t' | '\u{85}' | '\u{2028}' | '\u{2029}' => out.push(' '),
            c if is_hidden_control(c) => {}
            c => out.push(c),
        }
    }
    out.trim().to_string()
}

fn is_hidden_control(c: char) -> bool {
    c.is_control() || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` cut to at most `max` characters, ending with [`MARKER`] when cut.
pub fn truncate(text: &str, max: usize) -> String {
    escape_within(text, max, |c, out| out.push(c))
}

/// `text` escaped character by character with `escape`, then cut to at most `max` characters of
/// escaped text: an escape sequence is kept whole or left out, and a cut ends with [`MARKER`].
pub fn escape_within(text: &str, max: usize, escape: impl Fn(char, &mut String)) -> String {
    let mut out = String::with_capacity(text.len().min(max.saturating_mul(4)));
    let mut piece = String::new();
    let mut count = 0;
    let marker = MARKER.chars().count();
    // Where the text would end if a cut comes: the last point with room for the marker.
    let mut cut_at: Option<usize> = None;
    for c in text.chars() {
        piece.clear();
        escape(c, &mut piece);
        let length = piece.chars().count();
        if count + length > max {
            let end = cut_at.unwrap_or(out.len());
            out.truncate(end);
            if marker <= max {
                out.push_str(MARKER);
            }
            return out;
        }
        if count + length + marker <= max {
            cut_at = Some(out.len() + piece.len());
        } else if cut_at.is_none() {
            cut_at = Some(out.len());
        }
        out.push_str(&piece);
        count += length;
    }
    out
}

/// "…and N more", the last line of a cut list.
pub fn and_more(hidden: usize) -> String {
    format!("…and {hidden} more")
}

/// At most `max_items` of `items` joined with `separator`, whole items only, within `max`
/// characters; when some are left out, the last line says how many ([`and_more`]). Items are
/// expected to be short (callers cut each one first).
pub fn join_within(items: &[String], max_items: usize, separator: &str, max: usize) -> String {
    let separator_length = separator.chars().count();
    let mut out = String::new();
    let mut length = 0;
    let mut shown = 0;
    for (index, item) in items.iter().take(max_items).enumerate() {
        let added = if index == 0 { 0 } else { separator_length } + item.chars().count();
        let hidden_after = items.len() - index - 1;
        let tail = if hidden_after == 0 { 0 } else { separator_length + and_more(hidden_after).chars().count() };
        if length + added + tail > max {
            break;
        }
        if index > 0 {
            out.push_str(separator);
        }
        out.push_str(item);
        length += added;
        shown += 1;
    }
    if shown < items.len() {
        if shown > 0 {
            out.push_str(separator);
        }
        out.push_str(&and_more(items.len() - shown));
    }
    out
}

/// Whether `text` is a ServiceNow `sys_id`: 32 hexadecimal characters.
pub fn is_sys_id(text: &str) -> bool {
    text.len() == 32 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chars(text: &str) -> usize {
        text.chars().count()
    }

    #[test]
    fn single_line_fields_lose_line_breaks_and_control_characters() {
        assert_eq!(single_line("alice\r\nSeverity: low\u{7}"), "alice  Severity: low");
        assert_eq!(single_line("a\u{2028}b\u{202e}c\u{0}d\te"), "a bcd e");
        assert_eq!(single_line("  plain  "), "plain");
        assert_eq!(single_line("one\r\ntwo\u{1b}[31m"), "one  two[31m");
    }

    #[test]
    fn truncation_is_marked_and_within_the_limit() {
        assert_eq!(truncate("short", 10), "short");
        let cut = truncate(&"x".repeat(100), 20);
        assert_eq!(chars(&cut), 20);
        assert!(cut.ends_with(MARKER) && cut.starts_with("xxxxxxxx"));
        // Exactly at the limit: not cut.
        assert_eq!(truncate(&"y".repeat(20), 20), "y".repeat(20));
        // Multi-byte characters are counted as characters and never split.
        let cut = truncate(&"é".repeat(50), 15);
        assert_eq!(chars(&cut), 15);
        // A limit below the marker's length still holds.
        assert!(chars(&truncate("abcdefghijklmnopqrstuvwxyz", 5)) <= 5);
    }

    #[test]
    fn escaping_comes_before_the_cut_and_is_never_split() {
        let amp = |c: char, out: &mut String| if c == '&' { out.push_str("&amp;") } else { out.push(c) };
        // 10 characters of text, 50 once escaped: the limit applies to the escaped text.
        let cut = escape_within(&"&".repeat(10), 20, amp);
        assert!(chars(&cut) <= 20, "{cut}");
        assert_eq!(cut, format!("&amp;{MARKER}"));
        assert_eq!(escape_within("a&b", 20, amp), "a&amp;b");
        // A hostile 10 KB value gives at most the limit, escape sequences whole.
        let cut = escape_within(&"<&>".repeat(3400), 3000, amp);
        assert!(chars(&cut) <= 3000 && cut.ends_with(MARKER));
        assert!(!cut.trim_end_matches(MARKER).ends_with("&am"));
    }

    #[test]
    fn lists_are_cut_at_item_boundaries_with_a_count() {
        let items: Vec<String> = (0..500).map(|i| format!("item {i} <https://x.example/{i}|link>")).collect();
        let joined = join_within(&items, 25, "\n", 300);
        assert!(chars(&joined) <= 300, "{joined}");
        let lines: Vec<&str> = joined.lines().collect();
        let hidden = 500 - (lines.len() - 1);
        assert_eq!(*lines.last().unwrap(), and_more(hidden));
        assert!(lines[..lines.len() - 1].iter().all(|l| items.iter().any(|i| i == l)), "no item is cut");
        // The item cap applies too.
        let joined = join_within(&items, 3, "\n", 100_000);
        assert_eq!(joined.lines().count(), 4);
        assert!(joined.ends_with("…and 497 more"));
        // Everything fits: no count.
        assert_eq!(join_within(&items[..2], 25, ", ", 1000), format!("{}, {}", items[0], items[1]));
        // Nothing fits: only the count.
        assert_eq!(join_within(&items, 25, "\n", 20), "…and 500 more");
    }

    #[test]
    fn sys_ids_are_32_hex_characters() {
        assert!(is_sys_id("9d385017c611228701d22104cc95c371"));
        assert!(!is_sys_id("SOC"));
        assert!(!is_sys_id("9d385017c611228701d22104cc95c37z"));
    }
}
