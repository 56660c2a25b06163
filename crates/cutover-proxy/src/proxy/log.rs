//! The access log: one JSON object per request, one line on stderr.

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use hyper::body::Incoming;
use hyper::{Method, Request};
use serde::Serialize;

use super::headers;
use super::metrics::ErrorKind;

/// What the log line needs from the request, taken when it arrives (the request itself is
/// consumed by forwarding).
pub(crate) struct LogFields {
    method: Method,
    host: String,
    /// Without the query string: queries carry tokens and other secrets, which must not end
    /// up in logs.
    path: String,
    /// Why the request failed, when it did.
    pub(crate) detail: Option<String>,
}

impl LogFields {
    pub(crate) fn of(req: &Request<Incoming>) -> LogFields {
        LogFields {
            method: req.method().clone(),
            host: headers::route_host(req).to_string(),
            path: req.uri().path().to_string(),
            detail: None,
        }
    }
}

#[derive(Serialize)]
struct Line<'a> {
    ts: String,
    method: &'a str,
    host: &'a str,
    path: &'a str,
    status: u16,
    service: &'a str,
    upstream: Option<SocketAddr>,
    duration_ms: f64,
    bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
}

pub(crate) fn write(
    fields: &LogFields,
    status: u16,
    service: &str,
    upstream: Option<SocketAddr>,
    elapsed: Duration,
    bytes: u64,
    error: Option<ErrorKind>,
) {
    let line = Line {
        ts: rfc3339(SystemTime::now()),
        method: fields.method.as_str(),
        host: &fields.host,
        path: &fields.path,
        status,
        service,
        upstream,
        // Microsecond precision, written as milliseconds.
        duration_ms: elapsed.as_micros() as f64 / 1000.0,
        bytes,
        error: error.map(ErrorKind::label),
        detail: fields.detail.as_deref(),
    };
    let Ok(mut buf) = serde_json::to_vec(&line) else {
        return;
    };
    buf.push(b'\n');
    // One write per line: stderr is unbuffered, and lines from concurrent requests must not
    // interleave. A failed write (closed stderr) is not a reason to fail a request.
    let _ = std::io::stderr().lock().write_all(&buf);
}

/// `2026-11-22T14:03:07.123Z`.
fn rfc3339(t: SystemTime) -> String {
    jiff::Timestamp::try_from(t)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_709_210_096_789);
        assert_eq!(rfc3339(t), "2024-02-29T12:34:56.789Z");
        let t = UNIX_EPOCH + Duration::from_secs(4_102_444_800);
        assert_eq!(rfc3339(t), "2100-01-01T00:00:00.000Z");
    }
}
