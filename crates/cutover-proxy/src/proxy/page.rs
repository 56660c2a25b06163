//! Maintenance pages, rendered once when turned on.

use bytes::Bytes;
use hyper::header::HeaderValue;

use super::MaintenancePage;

/// A page ready to serve: the body and `Retry-After` are built once, not per request.
pub(crate) struct Page {
    pub(crate) spec: MaintenancePage,
    pub(crate) html: Bytes,
    pub(crate) retry_after: HeaderValue,
}

impl Page {
    pub(crate) fn render(spec: MaintenancePage) -> Page {
        let message = escape_html(spec.message.as_deref().unwrap_or(""));
        let until = escape_html(spec.until.as_deref().unwrap_or(""));
        let html = fill(&spec.html, &message, &until);
        Page {
            retry_after: HeaderValue::from(spec.retry_after_secs),
            html: Bytes::from(html),
            spec,
        }
    }
}

/// Replaces the placeholders in one pass, so a value that contains a placeholder stays as
/// it is (escaped) instead of being filled in turn.
fn fill(html: &str, message: &str, until: &str) -> String {
    let mut out = String::with_capacity(html.len() + message.len() + until.len());
    let mut rest = html;
    while let Some(i) = rest.find("{{") {
        let (before, tail) = rest.split_at(i);
        out.push_str(before);
        if let Some(after) = tail.strip_prefix("{{message}}") {
            out.push_str(message);
            rest = after;
        } else if let Some(after) = tail.strip_prefix("{{until}}") {
            out.push_str(until);
            rest = after;
        } else {
            out.push_str("{{");
            rest = &tail[2..];
        }
    }
    out.push_str(rest);
    out
}

/// Escapes text for HTML element content and quoted attribute values.
pub(crate) fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_replaced_escaped() {
        let page = Page::render(MaintenancePage {
            html: "<p>{{message}}</p><p>{{until}}</p>".into(),
            retry_after_secs: 120,
            message: Some("<b>Tom & \"Jerry\"</b>".into()),
            until: None,
        });
        assert_eq!(
            page.html,
            "<p>&lt;b&gt;Tom &amp; &quot;Jerry&quot;&lt;/b&gt;</p><p></p>"
        );
        assert_eq!(page.retry_after, "120");
        assert_eq!(
            fill("{{until}}{{x}}{{", "m", "{{message}}"),
            "{{message}}{{x}}{{"
        );
    }
}
