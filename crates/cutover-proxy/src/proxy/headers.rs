//! Header handling: the request's host for routing, hop-by-hop headers, `X-Forwarded-*`.

use bytes::{BufMut, BytesMut};
use hyper::body::Incoming;
use hyper::header::{
    CONNECTION, EXPECT, HOST, HeaderMap, HeaderName, HeaderValue, PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
};
use hyper::{Request, Uri, Version};

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The host a request is for, without port, for routing: the URI's authority when the request
/// has one (HTTP/2's `:authority`, an HTTP/1 absolute-form target, which RFC 9112 §3.2.2 says
/// wins over `Host`), else the `Host` header; `""` when there is neither.
pub(crate) fn route_host(req: &Request<Incoming>) -> &str {
    if let Some(authority) = req.uri().authority() {
        return authority.host();
    }
    req.headers()
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .map_or("", strip_port)
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // An IPv6 literal: keep the brackets, as `Authority::host` does.
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    host.split_once(':').map_or(host, |(name, _)| name)
}

/// Whether the request asks to switch protocols (WebSocket and the like): HTTP/1.1 with an
/// `Upgrade` header and `upgrade` among the `Connection` tokens.
pub(crate) fn is_upgrade(req: &Request<Incoming>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(UPGRADE)
        && connection_tokens(req.headers()).any(|t| t.eq_ignore_ascii_case("upgrade"))
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Removes the hop-by-hop headers (RFC 9110 §7.6.1): those that describe one connection, not
/// the message, and so must not be forwarded: `Connection` and the headers it names,
/// `Keep-Alive`, `Proxy-Connection`, `Proxy-Authenticate`, `Proxy-Authorization`, `TE`,
/// `Trailer`, `Transfer-Encoding` (hyper frames each side itself) and `Upgrade`.
///
/// With `upgrade`, `Upgrade` is kept and `Connection: upgrade` put back: forwarding the
/// handshake is the point.
///
/// `Host` is never removed even when `Connection` names it: the upstream needs it to route
/// virtual hosts, and a client should not be able to take it away.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // Most messages carry none of these. One pass over their few names finds that out for
    // less than the lookups below (one hash and probe per name, for both the request and
    // the response: 9 % of the proxy's instructions per request under callgrind).
    if headers
        .keys()
        .any(|name| is_hop_by_hop(name.as_str(), upgrade))
    {
        remove_hop_by_hop(headers, upgrade);
    } else if upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// [`strip_hop_by_hop`] once a hop-by-hop header was seen.
fn remove_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    if headers.contains_key(CONNECTION) {
        // Only names beyond the usual ones allocate; `Vec::new` does not.
        let mut named: Vec<HeaderName> = Vec::new();
        for token in connection_tokens(headers) {
            let usual = ["keep-alive", "close", "upgrade", "host"]
                .iter()
                .any(|u| token.eq_ignore_ascii_case(u));
            if !usual && let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                named.push(name);
            }
        }
        for name in named {
            headers.remove(name);
        }
        headers.remove(CONNECTION);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    if upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(UPGRADE);
    }
}

/// What [`strip_hop_by_hop`] removes besides `Connection`, the names it lists and `Upgrade`.
static HOP_BY_HOP: [HeaderName; 7] = [
    KEEP_ALIVE,
    PROXY_CONNECTION,
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
    TE,
    TRAILER,
    TRANSFER_ENCODING,
];

/// Whether [`strip_hop_by_hop`] removes a header, by its (lowercase) name: `Connection`, one
/// of [`HOP_BY_HOP`], or `Upgrade` unless `upgrade`. A match on the string costs a length
/// switch and a compare, where comparing `HeaderName`s one by one costs more.
fn is_hop_by_hop(name: &str, upgrade: bool) -> bool {
    match name {
        "upgrade" => !upgrade,
        "connection"
        | "keep-alive"
        | "proxy-connection"
        | "proxy-authenticate"
        | "proxy-authorization"
        | "te"
        | "trailer"
        | "transfer-encoding" => true,
        _ => false,
    }
}

/// Who sent a request, for its `X-Forwarded-*` headers.
pub(crate) struct Client<'a> {
    /// As `X-Forwarded-For` writes it.
    pub(crate) ip: &'a HeaderValue,
    /// Came over TLS: `X-Forwarded-Proto: https`.
    pub(crate) https: bool,
    /// Keep `X-Forwarded-Proto` and `X-Forwarded-Host` as received.
    pub(crate) trust_forwarded: bool,
}

/// Makes a client's request headers fit to send upstream.
///
/// - hop-by-hop headers go ([`strip_hop_by_hop`]), and `Expect`: hyper answered
///   `100 Continue` to the client already when the body was first read;
/// - `Host` is the authority when the request had one (HTTP/2 carries no `Host`), else
///   `fallback_host` when the request has none (HTTP/1.0 may send none; HTTP/1.1 requires one);
/// - `X-Forwarded-For` gets the client's address appended (after any values received, joined
///   into one header so that no upstream reads only the first line);
/// - `X-Forwarded-Proto` is `http` (`https` behind TLS) and `X-Forwarded-Host` the original
///   `Host`, unless `client.trust_forwarded` and the client sent them.
pub(crate) fn prepare_request(
    headers: &mut HeaderMap,
    uri: &Uri,
    upgrade: bool,
    client: &Client<'_>,
    fallback_host: Option<&HeaderValue>,
) {
    // One pass over the names finds what the lookups below would look for (each a hash and a
    // probe): most requests carry none of the headers this removes or extends.
    let mut seen = Seen::default();
    for (name, value) in headers.iter() {
        match name.as_str() {
            "host" => {
                if seen.host.is_none() {
                    seen.host = Some(value.clone());
                }
            }
            "expect" => seen.expect = true,
            "x-forwarded-for" => seen.forwarded_for = true,
            "x-forwarded-proto" => seen.forwarded_proto = true,
            "x-forwarded-host" => seen.forwarded_host = true,
            other => seen.hop_by_hop |= is_hop_by_hop(other, upgrade),
        }
    }
    if seen.hop_by_hop {
        remove_hop_by_hop(headers, upgrade);
        // `Connection` may have named any of them.
        seen.expect = headers.contains_key(EXPECT);
        seen.forwarded_for = headers.contains_key(X_FORWARDED_FOR);
        seen.forwarded_proto = headers.contains_key(X_FORWARDED_PROTO);
        seen.forwarded_host = headers.contains_key(X_FORWARDED_HOST);
    } else if upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    }
    if seen.expect {
        headers.remove(EXPECT);
    }
    if let Some(authority) = uri.authority()
        && let Ok(value) = HeaderValue::from_str(authority.as_str())
    {
        headers.insert(HOST, value.clone());
        seen.host = Some(value);
    }

    let forwarded_for = if seen.forwarded_for {
        let mut joined = BytesMut::with_capacity(64);
        for value in headers.get_all(X_FORWARDED_FOR) {
            joined.put_slice(value.as_bytes());
            joined.put_slice(b", ");
        }
        joined.put_slice(client.ip.as_bytes());
        HeaderValue::from_maybe_shared(joined.freeze()).unwrap_or_else(|_| client.ip.clone())
    } else {
        client.ip.clone()
    };
    headers.insert(X_FORWARDED_FOR, forwarded_for);

    if !(client.trust_forwarded && seen.forwarded_proto) {
        let proto = if client.https { "https" } else { "http" };
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
    if !(client.trust_forwarded && seen.forwarded_host) {
        match &seen.host {
            Some(host) => {
                headers.insert(X_FORWARDED_HOST, host.clone());
            }
            None if seen.forwarded_host => {
                headers.remove(X_FORWARDED_HOST);
            }
            None => {}
        }
    }
    if seen.host.is_none()
        && let Some(host) = fallback_host
    {
        headers.insert(HOST, host.clone());
    }
}

/// What [`prepare_request`]'s pass over the header names found.
#[derive(Default)]
struct Seen {
    host: Option<HeaderValue>,
    hop_by_hop: bool,
    expect: bool,
    forwarded_for: bool,
    forwarded_proto: bool,
    forwarded_host: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (k, v) in pairs {
            headers.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        headers
    }

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers_but_not_host() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Secret, host"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "basic x"),
            ("host", "example.com"),
            ("content-length", "3"),
        ]);
        strip_hop_by_hop(&mut h, false);
        let left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["host", "content-length"]);
    }

    #[test]
    fn a_message_without_hop_by_hop_headers_keeps_all_of_them_and_a_lone_upgrade_goes() {
        let pairs = [
            ("host", "example.com"),
            ("accept", "*/*"),
            ("x-custom", "1"),
        ];
        let mut h = map(&pairs);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h, map(&pairs));

        // `Upgrade` without `Connection: upgrade` is not a handshake: it is not forwarded.
        let mut h = map(&[("upgrade", "websocket"), ("accept", "*/*")]);
        strip_hop_by_hop(&mut h, false);
        let left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["accept"]);

        // A lone custom hop-by-hop name is found by the first pass too.
        let mut h = map(&[("accept", "*/*"), ("keep-alive", "timeout=5")]);
        strip_hop_by_hop(&mut h, false);
        let left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["accept"]);
    }

    #[test]
    fn each_hop_by_hop_header_alone_is_found_and_removed() {
        // The first pass matches names as strings, the removal goes by `HOP_BY_HOP`: every
        // name of either, and of RFC 9110 §7.6.1's list, must be found and removed.
        let rfc = [
            "connection",
            "keep-alive",
            "proxy-connection",
            "proxy-authenticate",
            "proxy-authorization",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
        ];
        let names = HOP_BY_HOP.iter().map(HeaderName::as_str).chain(rfc);
        for name in names {
            assert!(is_hop_by_hop(name, false), "{name}");
            let mut h = map(&[("accept", "*/*"), (name, "x")]);
            strip_hop_by_hop(&mut h, false);
            let left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
            assert_eq!(left, ["accept"], "{name}");
        }
    }

    #[test]
    fn keeps_the_upgrade_handshake() {
        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        strip_hop_by_hop(&mut h, true);
        assert_eq!(
            h.get(CONNECTION).map(|v| v.as_bytes()),
            Some(&b"upgrade"[..])
        );
        assert_eq!(
            h.get(UPGRADE).map(|v| v.as_bytes()),
            Some(&b"websocket"[..])
        );
    }

    #[test]
    fn forwarded_headers() {
        let ip = HeaderValue::from_static("10.0.0.9");
        let plain = Client {
            ip: &ip,
            https: false,
            trust_forwarded: false,
        };
        let uri: Uri = "/x".parse().expect("uri");
        let mut h = map(&[
            ("host", "app.example:8080"),
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
            ("x-forwarded-proto", "https"),
            ("expect", "100-continue"),
        ]);
        prepare_request(&mut h, &uri, false, &plain, None);
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 10.0.0.9");
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "app.example:8080");
        assert!(!h.contains_key("expect"));

        let trusting = Client {
            ip: &ip,
            https: false,
            trust_forwarded: true,
        };
        let mut h = map(&[("x-forwarded-proto", "https"), ("x-forwarded-host", "a")]);
        let uri: Uri = "http://b.example/x".parse().expect("uri");
        prepare_request(&mut h, &uri, false, &trusting, None);
        assert_eq!(h["x-forwarded-for"], "10.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "a");
        assert_eq!(h["host"], "b.example");

        // Over TLS, with no Host (HTTP/1.0): the upstream's name as Host, no X-Forwarded-Host
        // (not even the client's, which is not trusted).
        let tls = Client {
            ip: &ip,
            https: true,
            trust_forwarded: false,
        };
        let mut h = map(&[("x-forwarded-host", "spoofed")]);
        let fallback = HeaderValue::from_static("upstream:8080");
        prepare_request(
            &mut h,
            &"/".parse().expect("uri"),
            false,
            &tls,
            Some(&fallback),
        );
        assert_eq!(h["host"], "upstream:8080");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert!(!h.contains_key("x-forwarded-host"));
    }

    #[test]
    fn headers_named_by_connection_are_gone_before_forwarding() {
        // A client naming X-Forwarded-Proto in Connection removes what it sent; the proxy's
        // own value is still set even when forwarded headers are trusted.
        let ip = HeaderValue::from_static("10.0.0.9");
        let trusting = Client {
            ip: &ip,
            https: false,
            trust_forwarded: true,
        };
        let mut h = map(&[
            ("host", "app"),
            ("connection", "x-forwarded-proto, x-forwarded-for"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-for", "6.6.6.6"),
        ]);
        prepare_request(&mut h, &"/".parse().expect("uri"), false, &trusting, None);
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-for"], "10.0.0.9");
        assert!(!h.contains_key("connection"));
    }

    #[test]
    fn host_without_port() {
        assert_eq!(strip_port("example.com:80"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:8080"), "[::1]");
        assert_eq!(strip_port("[::1"), "[::1");
    }
}
