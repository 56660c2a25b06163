//! The traffic layer: a reverse proxy in front of a stack's routed services.
//!
//! Routes (host and/or path prefix → service) lead to each service's current upstream set.
//! The engine drives it through a few verbs, each atomic for new requests:
//! - [`Proxy::switch`]: replace a service's upstreams in one step (each new request goes
//!   entirely to the old set or the new one);
//! - [`Proxy::drain`]: wait until requests in flight to given upstreams have finished;
//! - [`Proxy::hold`] / [`Proxy::release`]: new requests for a service wait (up to a limit)
//!   while it is recreated, then flow to the new upstream; past the limit, 503 + Retry-After;
//! - [`Proxy::maintenance`]: 503 + Retry-After with an HTML page, per service or stack-wide.
//!
//! `admin` is the local control API (`cutover serve` exposes it on a unix socket) and
//! `client` the engine's side of it.
//!
//! [`Proxy::switch`]: proxy::Proxy::switch
//! [`Proxy::drain`]: proxy::Proxy::drain
//! [`Proxy::hold`]: proxy::Proxy::hold
//! [`Proxy::release`]: proxy::Proxy::release
//! [`Proxy::maintenance`]: proxy::Proxy::maintenance

pub mod admin;
pub mod client;
pub mod proxy;
