//! Read queries over stored CloudTrail events and flow records: the audit-trail search and the
//! network investigation, each a filter and its SQL, returning rows as the API shows them.
//! Nothing here knows HTTP; the API and the query benchmark call the same functions.
//!
//! Imports `db`, `geo`, `model` and `net` at most; never the pipeline above them.

pub mod entities;
pub mod events;
pub mod flows;
pub mod index;

/// An `ILIKE` pattern that finds `text` anywhere, its own `%`, `_` and `\` taken literally.
pub fn contains_pattern(text: &str) -> String {
    format!("%{}%", text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"))
}

/// A principal as the columns it is matched on, lower-cased (matching ignores case): an ARN, or
/// else a user name.
fn principal_columns(principal: &str) -> (Option<String>, Option<String>) {
    let lower = principal.to_lowercase();
    if lower.starts_with("arn:") { (Some(lower), None) } else { (None, Some(lower)) }
}

#[cfg(test)]
mod tests {
    #[test]
    fn wildcards_in_the_text_are_literal() {
        assert_eq!(super::contains_pattern(r"50%_a\b"), r"%50\%\_a\\b%");
    }
}
