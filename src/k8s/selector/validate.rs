//! Validation of label keys and values, as
//! k8s.io/apimachinery/pkg/util/validation does it.

use std::fmt;

use super::Operator;

pub(super) const NAME_MAX_LEN: usize = 63;
pub(super) const PREFIX_MAX_LEN: usize = 253;
pub(super) const NAME_RULE: &str =
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
pub(super) const PREFIX_RULE: &str = "must be a lowercase RFC 1123 subdomain: lowercase alphanumeric characters, '-' or '.', each dot-separated part starting and ending with an alphanumeric character";

/// A label key is a qualified name: `[prefix/]name`, the prefix a DNS-1123 subdomain of at most
/// 253 characters, the name 1..=63 characters of `[-A-Za-z0-9_.]` with alphanumeric ends.
pub(super) fn validate_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let problem = if name.contains('/') {
        Some("a qualified name must be a name with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')")
    } else if let Some(problem) = prefix.and_then(prefix_problem) {
        Some(problem)
    } else {
        name_problem(name)
    };
    match problem {
        Some(problem) => Err(format!("invalid label key {}: {problem}", Quoted(key))),
        None => Ok(()),
    }
}

pub(super) fn prefix_problem(prefix: &str) -> Option<&'static str> {
    if prefix.is_empty() {
        Some("prefix part must be non-empty")
    } else if prefix.len() > PREFIX_MAX_LEN {
        Some("prefix part must be no more than 253 characters")
    } else if !prefix.split('.').all(is_dns_label) {
        Some(PREFIX_RULE)
    } else {
        None
    }
}

pub(super) fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("name part must be non-empty")
    } else if name.len() > NAME_MAX_LEN {
        Some("name part must be no more than 63 characters")
    } else if !is_name(name) {
        Some(NAME_RULE)
    } else {
        None
    }
}

/// One dot-separated part of a DNS-1123 subdomain: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`.
pub(super) fn is_dns_label(label: &str) -> bool {
    let bytes = label.as_bytes();
    let lower_alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            lower_alnum(first)
                && lower_alnum(last)
                && bytes.iter().all(|b| lower_alnum(b) || *b == b'-')
        }
        _ => false,
    }
}

/// Non-empty `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, the rule shared by key names and values.
pub(super) fn is_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// Kubernetes' `NewRequirement` checks: value count per operator, integers for `>`/`<`, and
/// every value a valid label value (empty, or a name of at most 63 characters).
pub(super) fn validate_values(
    key: &str,
    operator: &Operator,
    values: &[&str],
) -> Result<(), String> {
    match (operator, values) {
        (Operator::In | Operator::NotIn, []) => {
            return Err(format!(
                "for 'in' and 'notin' on key {} the set of values can't be empty",
                Quoted(key)
            ))
        }
        (Operator::GreaterThan | Operator::LessThan, [value]) if value.parse::<i64>().is_err() => {
            return Err(format!(
                "for '>' and '<' on key {} the value must be a 64-bit integer, found {}",
                Quoted(key),
                Quoted(value)
            ))
        }
        _ => {}
    }
    for value in values {
        if let Some(problem) = value_problem(value) {
            return Err(format!(
                "invalid label value {} for key {}: {problem}",
                Quoted(value),
                Quoted(key)
            ));
        }
    }
    Ok(())
}

pub(super) fn value_problem(value: &str) -> Option<&'static str> {
    if value.is_empty() {
        None
    } else if value.len() > NAME_MAX_LEN {
        Some("must be no more than 63 characters")
    } else if !is_name(value) {
        Some("must be empty or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character")
    } else {
        None
    }
}

/// Quotes user input in error messages: escapes control and quote characters and shortens very
/// long input, so a hostile selector cannot flood logs or response bodies.
pub(super) struct Quoted<'a>(pub(super) &'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN_CHARS: usize = 80;
        f.write_str("'")?;
        let mut chars = self.0.chars();
        for c in chars.by_ref().take(SHOWN_CHARS) {
            fmt::Display::fmt(&c.escape_debug(), f)?;
        }
        if chars.next().is_some() {
            write!(f, "...' ({} bytes)", self.0.len())
        } else {
            f.write_str("'")
        }
    }
}
