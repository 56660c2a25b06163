//! Redaction: every known secret value, replaced by its `${NAME}` reference in any text
//! cutover prints or stores.
//!
//! `Value::Secret` keeps secrets out of what cutover writes itself (plans, release records).
//! Text that comes from elsewhere — a container's log lines quoted in a health failure, a
//! command's output, a driver's error message — may carry a secret too: an app that logs its
//! database URL does. A [`Redactor`] knows the values and scrubs such text before it reaches
//! the terminal, the journal or the store.

use std::borrow::Cow;

/// Secrets shorter than this are not redacted: replacing every `1` or `ab` in an output would
/// garble it and protect nothing (such a value is no secret). `validate` warns about them.
pub const MIN_REDACTED_LEN: usize = 4;

/// The secret values of one loaded stack and what replaces each.
#[derive(Clone, Debug, Default)]
pub struct Redactor {
    /// (value, replacement), the longest value first, so a secret that contains another is
    /// replaced whole.
    pairs: Vec<(String, String)>,
}

impl Redactor {
    /// A redactor for `secrets`: (name, value). Each value is also redacted in the forms a
    /// program is likely to print it in: percent-encoded (in a URL) and JSON-escaped.
    pub fn new<'a>(secrets: impl IntoIterator<Item = (&'a str, &'a str)>) -> Redactor {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (name, value) in secrets {
            let shown = format!("${{{name}}}");
            for form in [value.to_string(), percent_encode(value), json_escape(value)] {
                if form.len() >= MIN_REDACTED_LEN && !pairs.iter().any(|(v, _)| *v == form) {
                    pairs.push((form, shown.clone()));
                }
            }
        }
        pairs.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        Redactor { pairs }
    }

    /// No secrets known.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// `text` with every known secret value replaced by its reference.
    pub fn redact<'t>(&self, text: &'t str) -> Cow<'t, str> {
        let mut out = Cow::Borrowed(text);
        for (value, shown) in &self.pairs {
            if out.contains(value.as_str()) {
                out = Cow::Owned(out.replace(value.as_str(), shown));
            }
        }
        out
    }

    /// Adds the secrets of `other` (a command that loads a second stack: the live release's).
    pub fn extend(&mut self, other: &Redactor) {
        for p in &other.pairs {
            if !self.pairs.iter().any(|(v, _)| *v == p.0) {
                self.pairs.push(p.clone());
            }
        }
        self.pairs
            .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
    }
}

/// RFC 3986 percent-encoding of everything but the unreserved characters: how a password
/// appears in a connection URL.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The value inside a JSON string, as a structured logger writes it.
fn json_escape(s: &str) -> String {
    let quoted = serde_json::to_string(s).unwrap_or_default();
    quoted
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix('"'))
        .unwrap_or(s)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_in_a_quoted_log_line_becomes_its_reference() {
        let r = Redactor::new([("DB_PASSWORD", "s3cr3t-pw")]);
        assert_eq!(
            r.redact("connecting to postgres://app:s3cr3t-pw@db/app (try 2)"),
            "connecting to postgres://app:${DB_PASSWORD}@db/app (try 2)"
        );
        assert!(matches!(r.redact("nothing here"), Cow::Borrowed(_)));
    }

    #[test]
    fn url_encoded_and_json_escaped_forms_are_redacted_too() {
        let r = Redactor::new([("PW", "p@ss/w\"rd")]);
        let logged =
            "url=postgres://u:p%40ss%2Fw%22rd@db json={\"pw\":\"p@ss/w\\\"rd\"} raw=p@ss/w\"rd";
        let out = r.redact(logged);
        assert!(!out.contains("p%40ss"), "{out}");
        assert!(!out.contains("p@ss"), "{out}");
        assert_eq!(out.matches("${PW}").count(), 3, "{out}");
    }

    #[test]
    fn the_longer_of_two_overlapping_secrets_is_replaced_whole() {
        let r = Redactor::new([("SHORT", "abcd"), ("LONG", "abcdefgh")]);
        assert_eq!(r.redact("x abcdefgh y abcd"), "x ${LONG} y ${SHORT}");
    }

    #[test]
    fn values_too_short_to_be_secrets_are_left_alone() {
        let r = Redactor::new([("N", "1"), ("E", "")]);
        assert!(r.is_empty());
        assert_eq!(r.redact("10 1 1"), "10 1 1");
    }
}
