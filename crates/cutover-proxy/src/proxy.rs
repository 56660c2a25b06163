//! The data plane: a reverse proxy on hyper 1.x whose routing table the engine changes while
//! requests flow.
//!
//! # Shape
//!
//! A request is answered in this order:
//!
//! 1. the proxy's own health path ([`ProxyConfig::health_path`]) → 200, always, before any
//!    routing, so an orchestrator never restarts the proxy because an app is held or down;
//! 2. routing: among the routes whose host matches, the longest path prefix wins → a service
//!    (no route → 404);
//! 3. maintenance: the service's page, else the stack-wide one → 503 + `Retry-After`;
//! 4. hold: while the service is held, the request waits (at most the hold's `max_hold`, then
//!    503 + `Retry-After`); on release it continues with the service's *new* upstreams;
//! 5. upstream selection: round-robin over the service's current set, taken once: a request
//!    keeps its upstream to the end, so a switch never splits one;
//! 6. forwarding over a pooled HTTP/1.1 keep-alive connection to the upstream, with streaming
//!    bodies both ways, hop-by-hop headers stripped and `X-Forwarded-*` set; an `Upgrade`
//!    answered with 101 becomes a byte tunnel.
//!
//! # Concurrency
//!
//! The per-request path shares no lock between requests of different upstreams but one: the
//! routing table is an [`ArcSwap`] replaced whole, a service's upstream set is an
//! `ArcSwap<Vec<_>>` replaced whole by [`Proxy::switch`], and the counters are atomics; it
//! takes its upstream's list of idle keep-alive connections (one pop, one push) and, while it
//! waits for the upstream's answer, the serve's list of waiting requests (`sweep.rs`: one
//! insert, one removal, a check per wake-up), each held for a few instructions. The
//! control-plane verbs serialize on another mutex (the registry of services and upstream
//! addresses), which the data plane never touches.
//!
//! In-flight requests are counted per upstream *address* (shared by every service that lists
//! it), from the moment an upstream is chosen until the response body has been handed to the
//! client in full, the client went away, or the upgraded tunnel closed. [`Proxy::drain`] waits
//! on these counters.

mod body;
mod headers;
mod log;
mod metrics;
mod page;
mod pool;
mod registry;
mod server;
mod sweep;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use hyper::body::{Body as _, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use body::{BodyTooLarge, ClientBodyError, Exchange, ProxyBody, RequestBody};
use metrics::ErrorKind;
use page::Page;
use pool::{Checkout, ConnectError, Upconn};
use registry::{Registry, RouteTable, Service, Upstream};
use server::Conn;

/// One route: requests whose host and path match go to `service`.
///
/// - `host`: compared without its port and case-insensitively (a trailing dot is ignored);
///   `None` matches any host. For HTTP/2 the `:authority` is the host.
/// - `path_prefix`: matched on whole path segments: `/api` matches `/api`, `/api/` and
///   `/api/v1`, not `/apis`. `None`, `""` and `"/"` match every path. A prefix without a
///   leading `/` is read as if it had one. The path is compared as sent (percent-encoded,
///   case-sensitive).
///
/// Among the routes whose host matches, the longest prefix wins; at equal length a route with
/// a host wins over one without, then the earlier route in the list.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RouteSpec {
    pub host: Option<String>,
    pub path_prefix: Option<String>,
    pub service: String,
}

/// A maintenance page, served with 503 while it is on.
///
/// `html` may contain `{{message}}` and `{{until}}`; they are replaced by `message` and
/// `until` (empty when absent), HTML-escaped, once when the page is turned on.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct MaintenancePage {
    pub html: String,
    pub retry_after_secs: u64,
    pub message: Option<String>,
    pub until: Option<String>,
}

/// How the proxy behaves; fixed for the life of a [`Proxy`].
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// Bound on establishing a TCP connection to an upstream; past it the request gets 504.
    /// A refused connection gets 502 at once.
    pub upstream_connect_timeout: Duration,
    /// Bound on waiting for an upstream's response *headers* (connecting included); past it,
    /// 504. The body is not bounded: a download or a stream may take as long as it takes.
    pub upstream_response_timeout: Duration,
    /// How long an idle keep-alive connection to an upstream may be reused. Keep it below the
    /// upstreams' own keep-alive timeout (Node.js: 5 s), so the proxy never sends a request
    /// on a connection the upstream is closing at that moment.
    pub upstream_idle_timeout: Duration,
    /// How long a client connection may go without a request in progress before it is
    /// closed: an idle keep-alive connection, and one still sending a request's headers
    /// (slowloris), alike. A request is in progress from its complete head until its
    /// response body has been handed to hyper in full. Enforced by a periodic sweep: closed
    /// gracefully (HTTP/2: GOAWAY) within two sweep periods past the timeout, cut two
    /// periods later if still open (a period is an eighth of the shortest timeout, at most
    /// 1 s).
    pub client_idle_timeout: Duration,
    /// Largest request body forwarded, in bytes: a larger `Content-Length` gets 413 before
    /// anything is sent upstream; a body without one (chunked, HTTP/2) is counted while it
    /// streams, and the request fails with 413 when it passes the limit.
    pub max_request_body: u64,
    /// The hold limit the control plane uses when it is not given one (and for holds restored
    /// by [`Proxy::restore_state`]).
    pub default_max_hold: Duration,
    /// The proxy's own health path, e.g. `/_cutover/health`: 200 on every host, whatever the
    /// routes, holds and maintenance pages say.
    pub health_path: String,
    /// One JSON line per request on stderr. Off for benchmarks.
    pub access_log: bool,
    /// Keep `X-Forwarded-Proto` and `X-Forwarded-Host` as received instead of overwriting
    /// them: turn on only when every client reaches the proxy through a trusted front (a TLS
    /// terminator) that sets them. `X-Forwarded-For` is always appended to.
    pub trust_forwarded_headers: bool,
    /// After [`Proxy::serve`]'s shutdown signal: how long in-flight requests, idle keep-alive
    /// connections and upgraded tunnels get to finish before they are cut.
    pub shutdown_grace: Duration,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            upstream_connect_timeout: Duration::from_secs(5),
            upstream_response_timeout: Duration::from_secs(60),
            upstream_idle_timeout: Duration::from_secs(4),
            client_idle_timeout: Duration::from_secs(30),
            max_request_body: 100 * 1024 * 1024,
            default_max_hold: Duration::from_secs(30),
            health_path: "/_cutover/health".to_string(),
            access_log: true,
            trust_forwarded_headers: false,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// A snapshot of what the proxy does: what to persist, and what the admin API shows.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProxyState {
    pub routes: Vec<RouteSpec>,
    pub services: BTreeMap<String, ServiceState>,
    /// The stack-wide maintenance page (`Proxy::maintenance(None, …)`), if on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<MaintenancePage>,
}

/// One service in a [`ProxyState`].
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServiceState {
    pub upstreams: Vec<SocketAddr>,
    pub held: bool,
    pub maintenance: Option<MaintenancePage>,
    /// Requests in flight to this service when the snapshot was taken; informational,
    /// ignored by [`Proxy::restore_state`].
    #[serde(default)]
    pub in_flight: u64,
}

/// What [`Proxy::drain`] saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DrainReport {
    /// Requests still in flight to the drained addresses when `drain` returned; 0 = drained.
    pub in_flight: u64,
    /// How long `drain` waited.
    pub elapsed: Duration,
}

impl DrainReport {
    /// Whether nothing was left in flight.
    pub fn drained(&self) -> bool {
        self.in_flight == 0
    }
}

/// The reverse proxy. Cheap to clone: clones share everything.
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    config: ProxyConfig,
    /// What the data plane reads per request.
    routes: ArcSwap<RouteTable>,
    /// The stack-wide maintenance page.
    stack_page: ArcSwapOption<Page>,
    /// Requests that matched no route are counted here (it is never routed to nor listed).
    unrouted: Arc<Service>,
    /// The control plane's view; never locked per request.
    registry: Mutex<Registry>,
    /// Accepted client connections still open (all listeners).
    connections: std::sync::atomic::AtomicU64,
}

impl Proxy {
    pub fn new(config: ProxyConfig) -> Proxy {
        Proxy {
            inner: Arc::new(Inner {
                config,
                routes: ArcSwap::from_pointee(RouteTable::default()),
                stack_page: ArcSwapOption::empty(),
                unrouted: Arc::new(Service::new(String::new())),
                registry: Mutex::new(Registry::default()),
                connections: std::sync::atomic::AtomicU64::new(0),
            }),
        }
    }

    pub fn config(&self) -> &ProxyConfig {
        &self.inner.config
    }

    /// Replaces the routing table in one step. Services named by a route are created empty
    /// (no upstreams: 503) if unknown; services no longer routed that have nothing else (no
    /// upstreams, hold, page or request in flight) are forgotten.
    pub fn set_routes(&self, routes: Vec<RouteSpec>) {
        let mut reg = self.inner.registry();
        self.inner.apply_routes(&mut reg, routes);
    }

    /// Atomically replaces the upstreams of `service` (created if unknown); returns the
    /// previous set.
    ///
    /// From the moment this returns, every new request for the service goes to the new set
    /// and every request already dispatched stays on the upstream it had. An empty set makes
    /// the service answer 503. The order is kept and duplicates count: `[a, a, b]` sends two
    /// thirds of the requests to `a`.
    pub fn switch(&self, service: &str, upstreams: Vec<SocketAddr>) -> Vec<SocketAddr> {
        let mut reg = self.inner.registry();
        let set = upstreams.iter().map(|a| reg.upstream(*a)).collect();
        let svc = reg.service(service);
        let previous = svc.set_upstreams(set);
        reg.forget_unused_services();
        reg.forget_unused_upstreams();
        previous
    }

    /// Waits until no request is in flight to any of `old`, up to `timeout`.
    ///
    /// Only requests dispatched to those addresses count, whichever service they belong to;
    /// call it after [`Proxy::switch`] has taken the addresses out of every set, or new
    /// requests keep arriving. Returns at once when nothing is in flight. An address the
    /// proxy has never sent to counts as drained.
    pub async fn drain(&self, old: &[SocketAddr], timeout: Duration) -> DrainReport {
        let start = Instant::now();
        // `Duration::MAX` means no limit; adding it to an instant would overflow.
        let deadline = start
            .checked_add(timeout)
            .unwrap_or_else(|| start + Duration::from_secs(100 * 365 * 86_400));
        let upstreams: Vec<Arc<Upstream>> = {
            let reg = self.inner.registry();
            let mut addrs = old.to_vec();
            addrs.sort_unstable();
            addrs.dedup();
            addrs.iter().filter_map(|a| reg.live_upstream(a)).collect()
        };
        for upstream in &upstreams {
            upstream.wait_idle(deadline).await;
        }
        DrainReport {
            in_flight: upstreams.iter().map(|u| u.in_flight()).sum(),
            elapsed: start.elapsed(),
        }
    }

    /// Holds `service` (created if unknown): new requests for it wait until [`Proxy::release`],
    /// each at most `max_hold` from its arrival, then get 503 with `Retry-After`. Requests
    /// already dispatched are not affected. Holding a held service changes the limit for the
    /// requests that arrive from then on.
    pub fn hold(&self, service: &str, max_hold: Duration) {
        let mut reg = self.inner.registry();
        reg.service(service).hold(max_hold);
    }

    /// Lets the requests waiting on `service` go, to the upstreams it has now. A service that
    /// is not held (or unknown) is left as it is.
    pub fn release(&self, service: &str) {
        let mut reg = self.inner.registry();
        if let Some(svc) = reg.get(service) {
            svc.release();
            reg.forget_unused_services();
        }
    }

    /// Turns a maintenance page on (`Some`) or off (`None`), for one service or, with
    /// `service: None`, for every route of the stack.
    ///
    /// A service's own page takes precedence over the stack-wide one (the more specific wins,
    /// as with routes); turning the stack-wide page off leaves the services' own pages on.
    /// Requests already dispatched are not affected.
    pub fn maintenance(&self, service: Option<&str>, page: Option<MaintenancePage>) {
        let page = page.map(|p| Arc::new(Page::render(p)));
        match service {
            None => self.inner.stack_page.store(page),
            Some(name) => {
                let mut reg = self.inner.registry();
                match (page, reg.get(name)) {
                    (None, None) => {}
                    (None, Some(svc)) => {
                        svc.set_page(None);
                        reg.forget_unused_services();
                    }
                    (page @ Some(_), _) => reg.service(name).set_page(page),
                }
            }
        }
    }

    /// A snapshot for persistence and the admin API.
    pub fn state(&self) -> ProxyState {
        let reg = self.inner.registry();
        ProxyState {
            routes: reg.routes().to_vec(),
            services: reg
                .services()
                .map(|(name, svc)| (name.clone(), svc.state()))
                .collect(),
            maintenance: self
                .inner
                .stack_page
                .load()
                .as_ref()
                .map(|p| p.spec.clone()),
        }
    }

    /// Makes the proxy do what `state` says, replacing routes, upstreams, holds and pages
    /// (the caller health-checks the upstreams first). A held service is held again with
    /// [`ProxyConfig::default_max_hold`]; `in_flight` is ignored.
    pub fn restore_state(&self, state: ProxyState) {
        let mut reg = self.inner.registry();
        let ProxyState {
            routes,
            services,
            maintenance,
        } = state;
        for (name, svc) in reg.services() {
            if !services.contains_key(name) {
                svc.set_upstreams(Vec::new());
                svc.release();
                svc.set_page(None);
            }
        }
        for (name, s) in services {
            let set = s.upstreams.iter().map(|a| reg.upstream(*a)).collect();
            let svc = reg.service(&name);
            svc.set_upstreams(set);
            svc.set_page(s.maintenance.map(|p| Arc::new(Page::render(p))));
            if s.held {
                svc.hold(self.inner.config.default_max_hold);
            } else {
                svc.release();
            }
        }
        self.inner
            .stack_page
            .store(maintenance.map(|p| Arc::new(Page::render(p))));
        self.inner.apply_routes(&mut reg, routes);
        reg.forget_unused_upstreams();
    }

    /// The counters in the Prometheus text format (version 0.0.4).
    pub fn metrics(&self) -> String {
        let (services, upstreams) = {
            let reg = self.inner.registry();
            let services: Vec<Arc<Service>> = reg.services().map(|(_, s)| s.clone()).collect();
            (services, reg.live_upstreams())
        };
        metrics::render(
            &services,
            &self.inner.unrouted,
            &upstreams,
            self.inner
                .connections
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// Serves HTTP/1.1 (keep-alive, upgrades) and HTTP/2 (prior knowledge, h2c) on
    /// `listener` until `shutdown` resolves; then stops accepting, asks every connection to
    /// finish (HTTP/1: close after the response in progress; HTTP/2: GOAWAY) and waits for
    /// them and for upgraded tunnels, at most [`ProxyConfig::shutdown_grace`], before cutting
    /// what is left.
    ///
    /// Accept errors (out of file descriptors, …) do not end it: it pauses briefly and goes
    /// on, as one bad moment must not take every app of the stack offline.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        server::serve(self.inner.clone(), listener, None, shutdown).await
    }

    /// Like [`Proxy::serve`], terminating TLS with `tls` (see [`tls_acceptor`]); clients
    /// negotiate HTTP/2 or HTTP/1.1 by ALPN.
    pub async fn serve_tls(
        &self,
        listener: tokio::net::TcpListener,
        tls: tokio_rustls::TlsAcceptor,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        server::serve(self.inner.clone(), listener, Some(tls), shutdown).await
    }
}

/// A TLS acceptor from a PEM certificate chain and private key (the stack file's
/// `traffic.tls`), offering HTTP/2 and HTTP/1.1 by ALPN.
pub fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("cannot read the certificate {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("the certificate {} is not valid PEM: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no certificate", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("cannot read the private key {}: {e}", key.display()))?;
    let mut config = tokio_rustls::rustls::ServerConfig::builder_with_provider(
        std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider()),
    )
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS setup: {e}"))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| format!("the certificate and key do not make a TLS identity: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)))
}

impl Inner {
    fn registry(&self) -> MutexGuard<'_, Registry> {
        // Registry updates are plain assignments that leave it consistent even if a panic
        // interrupted one; a poisoned lock is not a reason to stop routing.
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn apply_routes(&self, reg: &mut Registry, routes: Vec<RouteSpec>) {
        let table = RouteTable::compile(&routes, |name| reg.service(name));
        self.routes.store(Arc::new(table));
        reg.set_routes(routes);
        reg.forget_unused_services();
    }

    /// The maintenance page that applies to `service` now, if any.
    fn page_for(&self, service: &Service) -> Option<Arc<Page>> {
        service.page().or_else(|| self.stack_page.load_full())
    }

    /// Answers one request from a client connection.
    async fn handle(&self, conn: &Conn, mut req: Request<Incoming>) -> Response<ProxyBody> {
        let start = Instant::now();
        if req.uri().path() == self.config.health_path {
            return text_response(StatusCode::OK, "ok\n", None);
        }

        let service = {
            let table = self.routes.load();
            table
                .find(headers::route_host(&req), req.uri().path())
                .cloned()
        };
        let Some(service) = service else {
            let ex = Exchange::start(&self.config, self.unrouted.clone(), start, &req);
            return local(ex, StatusCode::NOT_FOUND, "no route\n", None);
        };
        let mut ex = Exchange::start(&self.config, service.clone(), start, &req);

        if req.method() == Method::CONNECT {
            return local(
                ex,
                StatusCode::METHOD_NOT_ALLOWED,
                "CONNECT is not supported\n",
                None,
            );
        }
        if let Some(page) = self.page_for(&service) {
            return maintenance_response(ex, &page);
        }
        // With a Content-Length, hyper enforces it, so a body that declares at most the
        // limit cannot exceed it; the streaming check in `RequestBody` covers the rest.
        let limit = self.config.max_request_body;
        if req.body().size_hint().lower() > limit {
            ex.fail(ErrorKind::BodyTooLarge);
            return local(
                ex,
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large\n",
                None,
            );
        }
        // The upstream's time to answer counts from here; a held request's from its release.
        let mut dispatch_at = start;
        if service.is_held() {
            // Boxed: a rare path, kept out of every request's future (hyper moves the future
            // into place per request, so its size costs on each one).
            if !Box::pin(service.wait_released()).await {
                ex.fail(ErrorKind::HoldTimeout);
                return local(
                    ex,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "service is being upgraded; retry shortly\n",
                    Some(HeaderValue::from_static("1")),
                );
            }
            // The page may have been turned on while the request waited.
            if let Some(page) = self.page_for(&service) {
                return maintenance_response(ex, &page);
            }
            dispatch_at = Instant::now();
        }
        let Some(upstream) = service.acquire_upstream() else {
            ex.fail(ErrorKind::NoUpstream);
            return local(
                ex,
                StatusCode::SERVICE_UNAVAILABLE,
                "no upstream for this service\n",
                Some(HeaderValue::from_static("1")),
            );
        };
        ex.dispatched(upstream.clone());

        let upgrade = headers::is_upgrade(&req);
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        let client = headers::Client {
            ip: &conn.client_ip,
            https: conn.https,
            trust_forwarded: self.config.trust_forwarded_headers,
        };
        headers::prepare_request(
            &mut parts.headers,
            &parts.uri,
            upgrade,
            &client,
            upstream.host.as_ref(),
        );
        // Origin-form on the wire: an HTTP/2 request (or an HTTP/1 one in absolute-form)
        // carries scheme and authority in its URI; `Host` has the authority now.
        if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
            parts.uri = origin_form(&parts.uri);
        }
        // Upstreams speak HTTP/1.1 whatever the client spoke (HTTP/1.0 or 2): keep-alive to
        // them is what makes the pool work.
        parts.version = Version::HTTP_11;
        let upstream_req = Request::from_parts(parts, RequestBody::new(body, limit));

        // A timeout too large to add is no timeout (about 30 years: tokio's own "never").
        let deadline = dispatch_at
            .checked_add(self.config.upstream_response_timeout)
            .unwrap_or_else(|| dispatch_at + Duration::from_secs(86_400 * 365 * 30));
        let sent = conn
            .sweep
            .within(deadline, self.send(&upstream, upstream_req))
            .await;
        let (response, connection) = match sent {
            Ok(Ok(sent)) => sent,
            Ok(Err(failure)) => {
                ex.fail_because(failure.kind, failure.detail);
                return local(ex, failure.status, failure.text, None);
            }
            Err(_elapsed) => {
                ex.fail(ErrorKind::Timeout);
                return local(
                    ex,
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream did not answer in time\n",
                    None,
                );
            }
        };

        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            let Some(client_upgrade) = client_upgrade else {
                // A 101 the client did not ask for cannot be passed on: the client would not
                // know what protocol follows.
                ex.fail(ErrorKind::Upstream);
                return local(
                    ex,
                    StatusCode::BAD_GATEWAY,
                    "upstream switched protocols unasked\n",
                    None,
                );
            };
            return server::tunnel(conn, ex, client_upgrade, response, connection);
        }
        let (mut parts, body) = response.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers, false);
        ex.status = parts.status.as_u16();
        Response::from_parts(parts, ProxyBody::stream(body, ex, connection))
    }

    /// Sends `req` on a pooled connection to `upstream` (a new one if none is idle) and
    /// returns the response head with the connection, which goes back to the pool when the
    /// body has been passed on.
    ///
    /// A reused connection that fails before the request was written (the upstream closed it
    /// while idle) is not the request's fault: the request goes again, on the next idle
    /// connection or a new one. Once written, a request is never sent twice.
    async fn send(
        &self,
        upstream: &Upstream,
        mut req: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, Upconn), Failure> {
        loop {
            let Checkout { mut conn, reused } = upstream
                .pool
                .checkout(
                    upstream.addr,
                    self.config.upstream_connect_timeout,
                    self.config.upstream_idle_timeout,
                )
                .await
                .map_err(|e| connect_failure(&e))?;
            match conn.send(req).await {
                Ok(response) => return Ok((response, conn)),
                Err(mut e) => match e.take_message() {
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(send_failure(&e.into_error())),
                },
            }
        }
    }
}

/// Why a request could not be sent or answered, and what its client gets.
struct Failure {
    kind: ErrorKind,
    status: StatusCode,
    text: &'static str,
    /// The error and its causes, for the access log.
    detail: String,
}

fn connect_failure(e: &ConnectError) -> Failure {
    let (kind, status, text) = match e {
        ConnectError::Timeout => (
            ErrorKind::ConnectTimeout,
            StatusCode::GATEWAY_TIMEOUT,
            "upstream connect timed out\n",
        ),
        ConnectError::Io(_) => (
            ErrorKind::Connect,
            StatusCode::BAD_GATEWAY,
            "upstream unreachable\n",
        ),
        ConnectError::Handshake(_) => (
            ErrorKind::Upstream,
            StatusCode::BAD_GATEWAY,
            "upstream failed\n",
        ),
    };
    Failure {
        kind,
        status,
        text,
        detail: error_chain(e),
    }
}

/// A failed exchange on an open connection: the request body's fault (too large, or the
/// client's upload broke) or the upstream's.
fn send_failure(e: &hyper::Error) -> Failure {
    let (kind, status, text) = if find_source::<BodyTooLarge>(e).is_some() {
        (
            ErrorKind::BodyTooLarge,
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body too large\n",
        )
    } else if find_source::<ClientBodyError>(e).is_some() {
        (
            ErrorKind::ClientBody,
            StatusCode::BAD_REQUEST,
            "request body could not be read\n",
        )
    } else {
        (
            ErrorKind::Upstream,
            StatusCode::BAD_GATEWAY,
            "upstream failed\n",
        )
    };
    Failure {
        kind,
        status,
        text,
        detail: error_chain(e),
    }
}

/// `error: cause: cause`.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The first error of type `T` in `e`'s source chain (`e` included).
fn find_source<'a, T: std::error::Error + 'static>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut current = Some(e);
    while let Some(err) = current {
        if let Some(found) = err.downcast_ref::<T>() {
            return Some(found);
        }
        current = err.source();
    }
    None
}

/// The path and query of `uri` alone.
fn origin_form(uri: &Uri) -> Uri {
    uri.path_and_query()
        .cloned()
        .map_or_else(|| Uri::from_static("/"), Uri::from)
}

/// A short plain-text answer of the proxy's own.
fn text_response(
    status: StatusCode,
    text: &'static str,
    retry_after: Option<HeaderValue>,
) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::full(bytes::Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Some(value) = retry_after {
        headers.insert(RETRY_AFTER, value);
    }
    response
}

/// [`text_response`], accounted to `ex`.
fn local(
    mut ex: Exchange,
    status: StatusCode,
    text: &'static str,
    retry_after: Option<HeaderValue>,
) -> Response<ProxyBody> {
    ex.status = status.as_u16();
    let response = text_response(status, text, retry_after);
    let (parts, body) = response.into_parts();
    Response::from_parts(parts, body.with_exchange(ex))
}

fn maintenance_response(mut ex: Exchange, page: &Page) -> Response<ProxyBody> {
    ex.status = StatusCode::SERVICE_UNAVAILABLE.as_u16();
    let mut response = Response::new(ProxyBody::full(page.html.clone()).with_exchange(ex));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(RETRY_AFTER, page.retry_after.clone());
    headers.insert(
        hyper::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    response
}
