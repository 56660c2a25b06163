//! Counters and the Prometheus text exposition.
//!
//! Every label set is known when a service is created (service × status class, service ×
//! error kind, service × bucket), so the counters are plain atomics in the service: the
//! request path never takes a lock or allocates to count. Gauges and counters for every
//! known combination are exposed from the start, zeros included, so that `rate()` and
//! absence alerts work from the first scrape.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::registry::{Service, Upstream};

/// Why a request did not get an answer from its upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    /// The upstream refused the connection or could not be reached.
    Connect,
    /// Connecting took longer than `upstream_connect_timeout`.
    ConnectTimeout,
    /// No response headers within `upstream_response_timeout`.
    Timeout,
    /// The upstream broke the exchange (reset, malformed response) before the headers.
    Upstream,
    /// The upstream's response body broke off after the headers were sent.
    UpstreamBody,
    /// The service has no upstream.
    NoUpstream,
    /// The request waited on a hold longer than its `max_hold`.
    HoldTimeout,
    /// The request body exceeded `max_request_body`.
    BodyTooLarge,
    /// The client's request body could not be read.
    ClientBody,
    /// The client went away before its response began.
    ClientClosed,
    /// A 101 was answered, but one side's connection could not be taken over.
    Upgrade,
}

impl ErrorKind {
    const ALL: [ErrorKind; 11] = [
        ErrorKind::Connect,
        ErrorKind::ConnectTimeout,
        ErrorKind::Timeout,
        ErrorKind::Upstream,
        ErrorKind::UpstreamBody,
        ErrorKind::NoUpstream,
        ErrorKind::HoldTimeout,
        ErrorKind::BodyTooLarge,
        ErrorKind::ClientBody,
        ErrorKind::ClientClosed,
        ErrorKind::Upgrade,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::ConnectTimeout => "connect_timeout",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Upstream => "upstream",
            ErrorKind::UpstreamBody => "upstream_body",
            ErrorKind::NoUpstream => "no_upstream",
            ErrorKind::HoldTimeout => "hold_timeout",
            ErrorKind::BodyTooLarge => "body_too_large",
            ErrorKind::ClientBody => "client_body",
            ErrorKind::ClientClosed => "client_closed",
            ErrorKind::Upgrade => "upgrade",
        }
    }
}

/// Upper bounds of the latency buckets, in microseconds (the exposition says seconds). Fine
/// below a millisecond, where a proxy's own overhead shows, coarse up to the 60 s default
/// response timeout.
const BUCKETS_US: [u64; 16] = [
    250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000, 30_000_000,
];

const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

/// A service's counters.
#[derive(Default)]
pub(crate) struct ServiceMetrics {
    responses: [AtomicU64; CLASSES.len()],
    errors: [AtomicU64; ErrorKind::ALL.len()],
    /// Per bucket, not cumulative (made cumulative when rendered); the last one is `+Inf`.
    buckets: [AtomicU64; BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
    /// Requests waiting on a hold now.
    pub(crate) held: AtomicU64,
}

impl ServiceMetrics {
    pub(crate) fn response(&self, status: u16) {
        let class = match status {
            100..=599 => usize::from(status / 100 - 1),
            _ => CLASSES.len() - 1,
        };
        if let Some(counter) = self.responses.get(class) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn error(&self, kind: ErrorKind) {
        // `ALL` lists the kinds in declaration order, so the discriminant is the index.
        if let Some(counter) = self.errors.get(kind as usize) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn observe(&self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let bucket = BUCKETS_US
            .iter()
            .position(|bound| us <= *bound)
            .unwrap_or(BUCKETS_US.len());
        if let Some(counter) = self.buckets.get(bucket) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }
}

/// The whole exposition.
pub(crate) fn render(
    services: &[Arc<Service>],
    unrouted: &Service,
    upstreams: &[Arc<Upstream>],
    connections: u64,
) -> String {
    let mut out = String::with_capacity(4096 + services.len() * 4096);

    header(
        &mut out,
        "cutover_proxy_requests_total",
        "counter",
        "Responses sent, by service and status class.",
    );
    for svc in services {
        let name = escape_label(&svc.name);
        for (class, counter) in CLASSES.iter().zip(&svc.metrics.responses) {
            let n = counter.load(Ordering::Relaxed);
            if n > 0 || *class != "other" {
                let _ = writeln!(
                    out,
                    "cutover_proxy_requests_total{{service=\"{name}\",code=\"{class}\"}} {n}"
                );
            }
        }
    }

    header(
        &mut out,
        "cutover_proxy_unrouted_requests_total",
        "counter",
        "Requests that matched no route (answered 404).",
    );
    let unrouted_total: u64 = unrouted
        .metrics
        .responses
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum();
    let _ = writeln!(
        out,
        "cutover_proxy_unrouted_requests_total {unrouted_total}"
    );

    header(
        &mut out,
        "cutover_proxy_errors_total",
        "counter",
        "Requests that failed, by service and kind (connect, connect_timeout, timeout, upstream, upstream_body, no_upstream, hold_timeout, body_too_large, client_body, client_closed, upgrade).",
    );
    for svc in services {
        let name = escape_label(&svc.name);
        for (kind, counter) in ErrorKind::ALL.iter().zip(&svc.metrics.errors) {
            let _ = writeln!(
                out,
                "cutover_proxy_errors_total{{service=\"{name}\",kind=\"{}\"}} {}",
                kind.label(),
                counter.load(Ordering::Relaxed)
            );
        }
    }

    header(
        &mut out,
        "cutover_proxy_request_duration_seconds",
        "histogram",
        "Time from a request's arrival to the last byte of its response (holds included; tunnels excluded).",
    );
    for svc in services {
        let name = escape_label(&svc.name);
        let m = &svc.metrics;
        let mut cumulative = 0u64;
        for (i, counter) in m.buckets.iter().enumerate() {
            cumulative += counter.load(Ordering::Relaxed);
            match BUCKETS_US.get(i) {
                Some(bound) => {
                    let _ = writeln!(
                        out,
                        "cutover_proxy_request_duration_seconds_bucket{{service=\"{name}\",le=\"{}\"}} {cumulative}",
                        seconds(*bound)
                    );
                }
                None => {
                    let _ = writeln!(
                        out,
                        "cutover_proxy_request_duration_seconds_bucket{{service=\"{name}\",le=\"+Inf\"}} {cumulative}"
                    );
                }
            }
        }
        let _ = writeln!(
            out,
            "cutover_proxy_request_duration_seconds_sum{{service=\"{name}\"}} {}",
            seconds(m.sum_us.load(Ordering::Relaxed))
        );
        // The count is the +Inf bucket as rendered, so the two agree within one scrape even
        // while requests complete during it.
        let _ = writeln!(
            out,
            "cutover_proxy_request_duration_seconds_count{{service=\"{name}\"}} {cumulative}"
        );
    }

    header(
        &mut out,
        "cutover_proxy_held_requests",
        "gauge",
        "Requests waiting on a hold now.",
    );
    for svc in services {
        let _ = writeln!(
            out,
            "cutover_proxy_held_requests{{service=\"{}\"}} {}",
            escape_label(&svc.name),
            svc.metrics.held.load(Ordering::Relaxed)
        );
    }

    header(
        &mut out,
        "cutover_proxy_in_flight",
        "gauge",
        "Requests dispatched to an upstream and not finished, by service.",
    );
    for svc in services {
        let _ = writeln!(
            out,
            "cutover_proxy_in_flight{{service=\"{}\"}} {}",
            escape_label(&svc.name),
            svc.in_flight.load(Ordering::Relaxed)
        );
    }

    header(
        &mut out,
        "cutover_proxy_upstream_in_flight",
        "gauge",
        "Requests in flight, by upstream address (what a drain waits on).",
    );
    for upstream in upstreams {
        let _ = writeln!(
            out,
            "cutover_proxy_upstream_in_flight{{upstream=\"{}\"}} {}",
            upstream.addr,
            upstream.in_flight()
        );
    }

    header(
        &mut out,
        "cutover_proxy_upstream_idle_connections",
        "gauge",
        "Idle keep-alive connections to each upstream address.",
    );
    for upstream in upstreams {
        let _ = writeln!(
            out,
            "cutover_proxy_upstream_idle_connections{{upstream=\"{}\"}} {}",
            upstream.addr,
            upstream.pool.idle_count()
        );
    }

    header(
        &mut out,
        "cutover_proxy_connections",
        "gauge",
        "Client connections open now.",
    );
    let _ = writeln!(out, "cutover_proxy_connections {connections}");
    out
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Microseconds as seconds, without float rounding noise (`0.00025`, `1`, `2.5`).
fn seconds(us: u64) -> String {
    let whole = us / 1_000_000;
    let frac = us % 1_000_000;
    if frac == 0 {
        return whole.to_string();
    }
    let digits = format!("{frac:06}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// Escapes a label value: backslash, double quote and line feed.
fn escape_label(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return std::borrow::Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 2);
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_exact() {
        assert_eq!(seconds(250), "0.00025");
        assert_eq!(seconds(1_000_000), "1");
        assert_eq!(seconds(2_500_000), "2.5");
        assert_eq!(seconds(1_234_567), "1.234567");
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(escape_label("web"), "web");
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn histogram_is_cumulative_and_counts_agree() {
        let svc = Arc::new(Service::new("web".into()));
        svc.metrics.observe(Duration::from_micros(100));
        svc.metrics.observe(Duration::from_millis(3));
        svc.metrics.observe(Duration::from_secs(100));
        svc.metrics.response(200);
        svc.metrics.response(503);
        svc.metrics.response(700);
        let text = render(&[svc], &Service::new(String::new()), &[], 0);
        for line in [
            "cutover_proxy_request_duration_seconds_bucket{service=\"web\",le=\"0.00025\"} 1",
            "cutover_proxy_request_duration_seconds_bucket{service=\"web\",le=\"0.005\"} 2",
            "cutover_proxy_request_duration_seconds_bucket{service=\"web\",le=\"30\"} 2",
            "cutover_proxy_request_duration_seconds_bucket{service=\"web\",le=\"+Inf\"} 3",
            "cutover_proxy_request_duration_seconds_count{service=\"web\"} 3",
            "cutover_proxy_requests_total{service=\"web\",code=\"2xx\"} 1",
            "cutover_proxy_requests_total{service=\"web\",code=\"5xx\"} 1",
            "cutover_proxy_requests_total{service=\"web\",code=\"other\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
    }
}
