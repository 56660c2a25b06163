//! Services, upstream addresses and the compiled routing table.
//!
//! The data plane reads these through `Arc`s and atomics; the control plane changes them under
//! the [`Registry`] mutex, which also remembers the route specs as given (for `state()`).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use hyper::header::HeaderValue;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::metrics::ServiceMetrics;
use super::page::Page;
use super::pool::Pool;
use super::{RouteSpec, ServiceState};

/// One upstream address, shared by every service whose set lists it, so that requests in
/// flight are counted per address: what [`super::Proxy::drain`] waits on before the container
/// behind it is stopped.
pub(crate) struct Upstream {
    pub(crate) addr: SocketAddr,
    /// `addr` as a `Host` header, for requests that came without one (HTTP/1.0).
    pub(crate) host: Option<HeaderValue>,
    /// Its idle keep-alive connections; they close when the last `Arc` goes.
    pub(crate) pool: Pool,
    in_flight: AtomicU64,
    /// How many `drain`s wait on this address: the last request out only notifies when
    /// someone listens, so the hot path does not take `Notify`'s lock.
    drainers: AtomicUsize,
    idle: Notify,
}

impl Upstream {
    fn new(addr: SocketAddr) -> Upstream {
        Upstream {
            addr,
            host: HeaderValue::from_str(&addr.to_string()).ok(),
            pool: Pool::new(),
            in_flight: AtomicU64::new(0),
            drainers: AtomicUsize::new(0),
            idle: Notify::new(),
        }
    }

    pub(crate) fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::SeqCst)
    }

    fn acquire(&self) {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn release(&self) {
        // SeqCst on both sides (here and in `wait_idle`) makes this a Dekker pair: either this
        // load sees the drainer, or the drainer's load of `in_flight` sees 0.
        if self.in_flight.fetch_sub(1, Ordering::SeqCst) == 1
            && self.drainers.load(Ordering::SeqCst) > 0
        {
            self.idle.notify_waiters();
        }
    }

    /// Waits until nothing is in flight or `deadline`.
    pub(crate) async fn wait_idle(&self, deadline: Instant) {
        struct Listening<'a>(&'a AtomicUsize);
        impl Drop for Listening<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.drainers.fetch_add(1, Ordering::SeqCst);
        let _listening = Listening(&self.drainers);
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            // Registered before the check, so a release between the check and the await is
            // not missed.
            notified.as_mut().enable();
            if self.in_flight.load(Ordering::SeqCst) == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }
}

/// The state of a hold, published to waiting requests.
#[derive(Clone, Copy, Debug)]
struct HoldState {
    held: bool,
    max_hold: Duration,
}

/// A routed service: its upstream set, hold, page and counters.
pub(crate) struct Service {
    pub(crate) name: String,
    upstreams: ArcSwap<Vec<Arc<Upstream>>>,
    next: AtomicUsize,
    /// Fast path of `hold`: requests only subscribe to the watch when this is set.
    held: AtomicBool,
    hold: watch::Sender<HoldState>,
    page: ArcSwapOption<Page>,
    pub(crate) in_flight: AtomicU64,
    pub(crate) metrics: ServiceMetrics,
}

impl Service {
    pub(crate) fn new(name: String) -> Service {
        Service {
            name,
            upstreams: ArcSwap::from_pointee(Vec::new()),
            next: AtomicUsize::new(0),
            held: AtomicBool::new(false),
            hold: watch::Sender::new(HoldState {
                held: false,
                max_hold: Duration::ZERO,
            }),
            page: ArcSwapOption::empty(),
            in_flight: AtomicU64::new(0),
            metrics: ServiceMetrics::default(),
        }
    }

    /// Replaces the set; returns the previous addresses.
    pub(crate) fn set_upstreams(&self, set: Vec<Arc<Upstream>>) -> Vec<SocketAddr> {
        let previous = self.upstreams.swap(Arc::new(set));
        previous.iter().map(|u| u.addr).collect()
    }

    /// Picks the next upstream round-robin and counts the request in flight to it.
    ///
    /// The pick and the count are not one atomic step, so a [`super::Proxy::switch`] followed
    /// by a `drain` could slip between them: the drain would see the old upstream idle while
    /// this request is about to go there. Re-reading the set after counting closes that gap:
    /// if the set changed, the request lets go and picks again from the new one; if it did
    /// not, the switch (and so the drain) comes after the count and the drain waits for it.
    pub(crate) fn acquire_upstream(&self) -> Option<Arc<Upstream>> {
        loop {
            let set = self.upstreams.load_full();
            if set.is_empty() {
                return None;
            }
            let i = self.next.fetch_add(1, Ordering::Relaxed) % set.len();
            let upstream = set.get(i)?.clone();
            upstream.acquire();
            fence(Ordering::SeqCst);
            if Arc::ptr_eq(&set, &self.upstreams.load()) {
                self.in_flight.fetch_add(1, Ordering::Relaxed);
                return Some(upstream);
            }
            upstream.release();
        }
    }

    pub(crate) fn hold(&self, max_hold: Duration) {
        self.hold.send_replace(HoldState {
            held: true,
            max_hold,
        });
        self.held.store(true, Ordering::SeqCst);
    }

    pub(crate) fn release(&self) {
        self.held.store(false, Ordering::SeqCst);
        self.hold.send_replace(HoldState {
            held: false,
            max_hold: Duration::ZERO,
        });
    }

    pub(crate) fn is_held(&self) -> bool {
        self.held.load(Ordering::Acquire)
    }

    /// Waits while the service is held, at most the hold's `max_hold`; true when released
    /// (or never held after all), false when the limit passed.
    pub(crate) async fn wait_released(&self) -> bool {
        let mut rx = self.hold.subscribe();
        let state = *rx.borrow_and_update();
        if !state.held {
            return true;
        }
        self.metrics.held.fetch_add(1, Ordering::Relaxed);
        // Decrements when the wait ends, and when the client goes away mid-wait.
        let _waiting = Gauge(&self.metrics.held);
        match tokio::time::timeout(state.max_hold, rx.wait_for(|s| !s.held)).await {
            Ok(Ok(_)) => true,
            // The sender lives as long as the service, which outlives this borrow.
            Ok(Err(_)) => true,
            Err(_elapsed) => false,
        }
    }

    pub(crate) fn page(&self) -> Option<Arc<Page>> {
        self.page.load_full()
    }

    pub(crate) fn set_page(&self, page: Option<Arc<Page>>) {
        self.page.store(page);
    }

    pub(crate) fn state(&self) -> ServiceState {
        ServiceState {
            upstreams: self.upstreams.load().iter().map(|u| u.addr).collect(),
            held: self.held.load(Ordering::SeqCst),
            maintenance: self.page.load().as_ref().map(|p| p.spec.clone()),
            in_flight: self.in_flight.load(Ordering::Relaxed),
        }
    }

    /// Nothing to remember: no upstreams, hold, page or request in flight.
    fn is_idle(&self) -> bool {
        self.upstreams.load().is_empty()
            && !self.held.load(Ordering::SeqCst)
            && self.page.load().is_none()
            && self.in_flight.load(Ordering::Relaxed) == 0
    }
}

struct Gauge<'a>(&'a AtomicU64);

impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The control plane's view of services and upstream addresses.
#[derive(Default)]
pub(crate) struct Registry {
    routes: Vec<RouteSpec>,
    services: BTreeMap<String, Arc<Service>>,
    /// Weak: an address lives while a set lists it or a request to it is in flight (the
    /// request holds an `Arc`), which is exactly as long as `drain` may need its counter.
    upstreams: HashMap<SocketAddr, Weak<Upstream>>,
}

impl Registry {
    /// The service called `name`, created empty if unknown.
    pub(crate) fn service(&mut self, name: &str) -> Arc<Service> {
        if let Some(svc) = self.services.get(name) {
            return svc.clone();
        }
        let svc = Arc::new(Service::new(name.to_string()));
        self.services.insert(name.to_string(), svc.clone());
        svc
    }

    pub(crate) fn get(&self, name: &str) -> Option<Arc<Service>> {
        self.services.get(name).cloned()
    }

    pub(crate) fn services(&self) -> impl Iterator<Item = (&String, &Arc<Service>)> {
        self.services.iter()
    }

    pub(crate) fn routes(&self) -> &[RouteSpec] {
        &self.routes
    }

    pub(crate) fn set_routes(&mut self, routes: Vec<RouteSpec>) {
        self.routes = routes;
    }

    /// The counter for `addr`, shared with every set and request that has it.
    pub(crate) fn upstream(&mut self, addr: SocketAddr) -> Arc<Upstream> {
        if let Some(live) = self.live_upstream(&addr) {
            return live;
        }
        let upstream = Arc::new(Upstream::new(addr));
        self.upstreams.insert(addr, Arc::downgrade(&upstream));
        upstream
    }

    pub(crate) fn live_upstream(&self, addr: &SocketAddr) -> Option<Arc<Upstream>> {
        self.upstreams.get(addr).and_then(Weak::upgrade)
    }

    pub(crate) fn live_upstreams(&self) -> Vec<Arc<Upstream>> {
        let mut live: Vec<Arc<Upstream>> =
            self.upstreams.values().filter_map(Weak::upgrade).collect();
        live.sort_by_key(|u| u.addr);
        live
    }

    pub(crate) fn forget_unused_upstreams(&mut self) {
        self.upstreams.retain(|_, u| u.strong_count() > 0);
    }

    /// Drops services no route names that have nothing to remember, so that a renamed
    /// service does not linger in `state()` and the metrics forever.
    pub(crate) fn forget_unused_services(&mut self) {
        let routed: std::collections::HashSet<&str> =
            self.routes.iter().map(|r| r.service.as_str()).collect();
        self.services
            .retain(|name, svc| routed.contains(name.as_str()) || !svc.is_idle());
    }
}

/// One compiled route.
struct Route {
    /// Lowercase, without a trailing dot; `None` matches any host.
    host: Option<String>,
    /// With a leading `/` and without a trailing one; `""` matches every path.
    prefix: String,
    service: Arc<Service>,
}

/// The routing table as the data plane reads it: most specific route first.
#[derive(Default)]
pub(crate) struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    pub(crate) fn compile(
        specs: &[RouteSpec],
        mut service: impl FnMut(&str) -> Arc<Service>,
    ) -> RouteTable {
        let mut routes: Vec<Route> = specs
            .iter()
            .map(|spec| Route {
                host: spec
                    .host
                    .as_deref()
                    .map(|h| normalize_host(h).to_ascii_lowercase()),
                prefix: normalize_prefix(spec.path_prefix.as_deref().unwrap_or("")),
                service: service(&spec.service),
            })
            .collect();
        // Stable: at equal specificity the earlier route wins.
        routes.sort_by(|a, b| {
            b.prefix
                .len()
                .cmp(&a.prefix.len())
                .then_with(|| b.host.is_some().cmp(&a.host.is_some()))
        });
        RouteTable { routes }
    }

    /// The service for a request's host (without port) and path.
    pub(crate) fn find(&self, host: &str, path: &str) -> Option<&Arc<Service>> {
        let host = normalize_host(host);
        self.routes
            .iter()
            .find(|r| {
                r.host
                    .as_deref()
                    .is_none_or(|h| h.eq_ignore_ascii_case(host))
                    && prefix_matches(&r.prefix, path)
            })
            .map(|r| &r.service)
    }
}

fn normalize_host(host: &str) -> &str {
    host.strip_suffix('.').unwrap_or(host)
}

fn normalize_prefix(prefix: &str) -> String {
    let trimmed = prefix.trim_end_matches('/');
    if trimmed.is_empty() {
        String::new()
    } else if trimmed.starts_with('/') {
        trimmed.to_string()
    } else {
        format!("/{trimmed}")
    }
}

/// Whole-segment prefix match; `prefix` is normalized.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(specs: &[(Option<&str>, Option<&str>, &str)]) -> RouteTable {
        let specs: Vec<RouteSpec> = specs
            .iter()
            .map(|(h, p, s)| RouteSpec {
                host: h.map(str::to_string),
                path_prefix: p.map(str::to_string),
                service: (*s).to_string(),
            })
            .collect();
        RouteTable::compile(&specs, |name| Arc::new(Service::new(name.to_string())))
    }

    fn find<'a>(t: &'a RouteTable, host: &str, path: &str) -> Option<&'a str> {
        t.find(host, path).map(|s| s.name.as_str())
    }

    #[test]
    fn longest_prefix_wins_on_whole_segments() {
        let t = table(&[
            (None, None, "root"),
            (None, Some("/api"), "api"),
            (None, Some("api/v2/"), "v2"),
        ]);
        assert_eq!(find(&t, "x", "/"), Some("root"));
        assert_eq!(find(&t, "x", "/api"), Some("api"));
        assert_eq!(find(&t, "x", "/api/v1/users"), Some("api"));
        assert_eq!(find(&t, "x", "/api/v2"), Some("v2"));
        assert_eq!(find(&t, "x", "/api/v2/users"), Some("v2"));
        assert_eq!(find(&t, "x", "/apis"), Some("root"));
    }

    #[test]
    fn host_is_case_insensitive_and_host_routes_win_ties() {
        let t = table(&[
            (None, Some("/"), "any"),
            (Some("App.Example.com."), None, "app"),
            (Some("other.example"), Some("/x"), "other"),
        ]);
        assert_eq!(find(&t, "app.example.COM", "/x"), Some("app"));
        assert_eq!(find(&t, "app.example.com.", "/"), Some("app"));
        assert_eq!(find(&t, "else", "/x"), Some("any"));
        assert_eq!(find(&t, "other.example", "/x/y"), Some("other"));
        assert_eq!(find(&t, "other.example", "/y"), Some("any"));
        let none = table(&[(Some("only.example"), None, "only")]);
        assert_eq!(find(&none, "else", "/"), None);
    }
}
