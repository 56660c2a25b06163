//! Keep-alive HTTP/1.1 connections to one upstream address, driven by the requests that use
//! them.
//!
//! hyper's client connection is two halves: a `SendRequest` handle and the `Connection` future
//! that does the socket I/O, usually spawned as a task of its own. Here no task is spawned: an
//! [`Upconn`] carries both halves, and whoever holds it drives the I/O from its own task: the
//! request's task while the request is sent and its response head awaited, then the client
//! connection's task while the response body streams out ([`super::body::ProxyBody`]). A
//! proxied request then wakes one task per socket event instead of handing every message to
//! another task (possibly on another worker thread) through channels. Against the demo app
//! behind Docker's published port that measured 17% less CPU per request (59.8 against 72.2
//! ms per 1000 requests, medians of 5 interleaved wrk -c64 rounds of the `bare_proxy`
//! example; nginx 56.6 in the same rounds). An idle connection is driven by no one; a close
//! by the upstream meanwhile is noticed when it is next checked out (and a request that
//! finds it closed before it was written goes on another connection), and a connection idle
//! past the idle timeout is closed by [`Pool::close_expired`], which the server calls every
//! second, so no socket lingers half-closed on a service that gets no traffic.
//!
//! Why not `hyper_util`'s pooled client: it is built for arbitrary URIs (a pool keyed by
//! scheme and authority, a resolver, proxy support), and to re-pool an HTTP/1 connection
//! whose response body is still streaming it spawns one extra task per request. Here the
//! pool belongs to the [`Upstream`](super::registry::Upstream) (no key to hash: the address
//! is the pool), and a connection goes back when the proxy has passed its response body on in
//! full, which it learns anyway for the in-flight count. On loopback with a multi-threaded
//! runtime that measured 5–15% less CPU per proxied request. The pool also dies with its
//! upstream: once a switched-out address is no longer listed nor in flight, its idle
//! connections close.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use hyper::Request;
use hyper::body::Incoming;
use hyper::client::conn::TrySendError;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::body::RequestBody;

/// Idle connections kept per upstream: enough for any concurrency a single app instance
/// sustains; beyond it connections close after their response.
const MAX_IDLE: usize = 1024;

/// A connection just back from a response may not be ready for the next request yet (it is
/// still sending a request body the upstream answered without reading in full); this bounds
/// how long a checkout drives it toward ready before trying another one. A connection still
/// busy past it is dropped: it would only hold the next request up.
const READY_WAIT: Duration = Duration::from_millis(250);

pub(crate) struct Pool {
    /// One list per shard (see [`shard`]); in each, oldest at the front, most recently used
    /// at the back.
    shards: Box<[Mutex<VecDeque<Idle>>]>,
}

/// Lists per pool. A thread uses the one [`shard`] gives it, so the requests of a thread
/// reuse connections whose tasks run on that same thread.
const SHARDS: usize = 8;

/// This thread's shard: threads are numbered in the order they first ask.
fn shard() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|s| *s)
}

struct Idle {
    conn: Upconn,
    since: Instant,
}

/// The I/O half of a connection: reads responses into their bodies, writes requests. With
/// upgrades, so that a 101 can hand the socket over. (Boxed as a trait object: hyper does not
/// export the type's name.)
type Driver = Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>;

/// One HTTP/1.1 connection to an upstream: the handle requests are sent on, and the I/O that
/// the holder drives (see the module docs).
pub(crate) struct Upconn {
    sender: SendRequest<RequestBody>,
    /// `None` once the connection ended (closed, failed, or handed over by an upgrade).
    driver: Option<Driver>,
}

impl Upconn {
    /// Does the connection's pending I/O, registering `cx`'s task for what comes next.
    /// Returns whether the connection is over.
    pub(crate) fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(driver) = self.driver.as_mut() else {
            return true;
        };
        match driver.as_mut().poll(cx) {
            Poll::Pending => false,
            // An error reaches the request or body it concerns; the connection is gone
            // either way.
            Poll::Ready(_) => {
                self.driver = None;
                true
            }
        }
    }

    /// [`Upconn::drive`] without a task to wake: what the socket has now (a close by the
    /// upstream, the end of a response) is taken in.
    pub(crate) fn drive_now(&mut self) -> bool {
        self.drive(&mut Context::from_waker(Waker::noop()))
    }

    /// Sends `req` and waits for the response head, driving the connection meanwhile. A
    /// request that was not written (the connection was closed) comes back in the error.
    pub(crate) async fn send(
        &mut self,
        req: Request<RequestBody>,
    ) -> Result<hyper::Response<Incoming>, TrySendError<Request<RequestBody>>> {
        let mut response = std::pin::pin!(self.sender.try_send_request(req));
        poll_fn(|cx| {
            if let Poll::Ready(r) = response.as_mut().poll(cx) {
                return Poll::Ready(r);
            }
            if self.drive(cx) {
                // The connection ended: dropping it failed the request's callback, which
                // this poll of `response` reports (with the request if it was never written).
                return response.as_mut().poll(cx);
            }
            Poll::Pending
        })
        .await
    }

    /// The I/O half, to be driven to its end elsewhere: after a 101, until it hands the
    /// socket to the upgrade.
    pub(crate) fn into_driver(self) -> Option<Driver> {
        self.driver
    }

    fn is_open(&self) -> bool {
        self.driver.is_some() && !self.sender.is_closed()
    }
}

/// Why no connection could be had.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error("connecting to the upstream timed out")]
    Timeout,
    /// Refused, unreachable, …
    #[error("connecting to the upstream")]
    Io(#[source] std::io::Error),
    /// The HTTP/1 handshake failed (it does no I/O; not expected).
    #[error("HTTP/1 handshake with the upstream")]
    Handshake(#[source] hyper::Error),
}

/// A connection checked out for one request.
pub(crate) struct Checkout {
    pub(crate) conn: Upconn,
    /// It served a request before: if it fails before the request is written, the request
    /// may go on a fresh connection (the upstream closed this one while it was idle).
    pub(crate) reused: bool,
}

impl Pool {
    pub(crate) fn new() -> Pool {
        Pool {
            shards: (0..SHARDS).map(|_| Mutex::new(VecDeque::new())).collect(),
        }
    }

    fn lock(&self, shard: usize) -> std::sync::MutexGuard<'_, VecDeque<Idle>> {
        // The list is valid after any panic in push or pop.
        self.shards[shard]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The most recently used idle connection that is still open and ready, else a new one.
    ///
    /// Most recent first (LIFO) keeps the busy set warm and lets the surplus of a burst age
    /// out: [`Pool::close_expired`] closes those idle past `idle_timeout` from the old end.
    pub(crate) async fn checkout(
        &self,
        addr: SocketAddr,
        connect_timeout: Duration,
        idle_timeout: Duration,
    ) -> Result<Checkout, ConnectError> {
        let home = shard();
        // This thread's list first, then the others' before connecting anew.
        let mut shards = (0..SHARDS).map(|i| (home + i) % SHARDS);
        let mut current = shards.next();
        while let Some(shard) = current {
            let popped = self.lock(shard).pop_back();
            let Some(mut idle) = popped else {
                current = shards.next();
                continue;
            };
            // Takes in what happened while it sat idle: a close shows here. One expired since
            // the last sweep is not reused either.
            if idle.conn.drive_now() || !idle.conn.is_open() || idle.since.elapsed() > idle_timeout
            {
                continue;
            }
            if idle.conn.sender.is_ready() {
                return Ok(Checkout {
                    conn: idle.conn,
                    reused: true,
                });
            }
            // Boxed, as the connect below: rare paths, kept out of the size of every
            // request's future.
            let mut conn = idle.conn;
            let ready = poll_fn(|cx| {
                if conn.drive(cx) {
                    return Poll::Ready(false);
                }
                conn.sender.poll_ready(cx).map(|r| r.is_ok())
            });
            if let Ok(true) = Box::pin(tokio::time::timeout(READY_WAIT, ready)).await {
                return Ok(Checkout { conn, reused: true });
            }
        }
        Ok(Checkout {
            conn: Box::pin(connect(addr, connect_timeout)).await?,
            reused: false,
        })
    }

    /// A connection whose response was passed on in full, back for the next request.
    pub(crate) fn put(&self, mut conn: Upconn) {
        // Lets it finish the response it just read and become ready for the next request.
        if conn.drive_now() || !conn.is_open() {
            return;
        }
        let mut idle = self.lock(shard());
        if idle.len() < MAX_IDLE {
            idle.push_back(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }

    /// Closes the connections idle for longer than `idle_timeout` (they would not be reused).
    pub(crate) fn close_expired(&self, idle_timeout: Duration) {
        let now = Instant::now();
        for shard in 0..SHARDS {
            let expired: Vec<Idle> = {
                let mut idle = self.lock(shard);
                let mut expired = Vec::new();
                while idle
                    .front()
                    .is_some_and(|i| now.duration_since(i.since) > idle_timeout)
                {
                    expired.extend(idle.pop_front());
                }
                expired
            };
            // Closed outside the lock.
            drop(expired);
        }
    }

    /// Idle connections now (for the metrics).
    pub(crate) fn idle_count(&self) -> usize {
        (0..SHARDS).map(|s| self.lock(s).len()).sum()
    }
}

/// A new connection: TCP with `TCP_NODELAY` and the HTTP/1 handshake (which does no I/O).
pub(crate) async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Upconn, ConnectError> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_elapsed) => return Err(ConnectError::Timeout),
        Ok(Err(e)) => return Err(ConnectError::Io(e)),
        Ok(Ok(stream)) => stream,
    };
    let _ = stream.set_nodelay(true);
    let (sender, connection) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(ConnectError::Handshake)?;
    Ok(Upconn {
        sender,
        driver: Some(Box::pin(connection.with_upgrades())),
    })
}
