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
//! The holder also must not wake itself. hyper's connection hands the response head and
//! body chunks over through channels whose wakes, here, come from the holder's own task while
//! it runs; tokio then polls the task again after it returns, through the run queue, and a
//! worker with nothing to do steals it: a futex wake-up and a change of thread per request.
//! [`Io::poll_driven`] drives the I/O with a waker that, during the holder's poll, only
//! notes a wake and drives again (see [`DriveWake`]). One connection, one request at a time
//! (wrk -c1): 0 futex calls per request, from about 1 (strace); at 4000 requests/s, 43 ms
//! of proxy CPU per 1000 requests, from 49 (nginx: 31–34).
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
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use futures_util::task::AtomicWaker;
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
    io: Io,
}

/// The I/O half of a connection, with the waker it is driven with.
struct Io {
    /// `None` once the connection ended (closed, failed, or handed over by an upgrade).
    driver: Option<Driver>,
    /// What [`Io::poll_driven`] polls `driver` with, and the same as a [`Waker`].
    wake: Arc<DriveWake>,
    waker: Waker,
}

/// The waker of a connection's I/O during [`Io::poll_driven`].
///
/// hyper's connection registers it for socket events, which the runtime's I/O driver
/// signals, and on its own channels: the response head's, the body's, the request queue's.
/// The channel wakes come from the task that holds the connection, while that task runs
/// (taking a body chunk wakes the connection so it reads the next). Passed on as they are,
/// each makes the runtime poll the task again once it returns, for nothing, and on whichever
/// worker thread steals it: a futex wake-up and a switch of thread per request. So while the
/// holder polls, a wake is only noted, and the holder drives the connection again before it
/// returns; at other times it wakes the holder's task.
struct DriveWake {
    task: AtomicWaker,
    state: AtomicU8,
}

/// [`DriveWake::state`]: the holder is not polling; it is; it is and was woken meanwhile.
const IDLE: u8 = 0;
const POLLING: u8 = 1;
const WOKEN: u8 = 2;

/// Rounds of driving one [`Io::poll_driven`] does for wakes of its own before it lets the
/// runtime poll the task again (other tasks of its worker get a turn).
const MAX_ROUNDS: usize = 8;

impl DriveWake {
    /// Whether a wake was noted since the last look (and the note is taken).
    fn take_woken(&self) -> bool {
        self.state
            .compare_exchange(WOKEN, POLLING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

impl Wake for DriveWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        match self
            .state
            .compare_exchange(POLLING, WOKEN, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) | Err(WOKEN) => {}
            Err(_) => self.task.wake(),
        }
    }
}

impl Io {
    fn new(driver: Driver) -> Io {
        let wake = Arc::new(DriveWake {
            task: AtomicWaker::new(),
            state: AtomicU8::new(IDLE),
        });
        Io {
            driver: Some(driver),
            waker: Waker::from(wake.clone()),
            wake,
        }
    }

    /// Does the pending I/O, registering `cx`'s task for what comes next. Returns whether
    /// the connection is over.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
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

    /// Polls `consumer`, something only this I/O feeds (a response head, a response body),
    /// driving the I/O as needed, with no wake-up of the running task by itself (see
    /// [`DriveWake`]): `consumer` gets a context that wakes no one and is polled again after
    /// each drive; socket events wake `cx`'s task.
    fn poll_driven<T>(
        &mut self,
        cx: &mut Context<'_>,
        mut consumer: impl FnMut(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        let Some(driver) = self.driver.as_mut() else {
            // The connection ended: what it fed has ended too, or fails now.
            return consumer(cx);
        };
        let mut quiet = Context::from_waker(Waker::noop());
        let mut io = Context::from_waker(&self.waker);
        let wake = &*self.wake;
        wake.task.register(cx.waker());
        wake.state.store(POLLING, Ordering::Release);
        let mut rounds = 0;
        let outcome = loop {
            if let Poll::Ready(t) = consumer(&mut quiet) {
                // Taking what it delivered may have woken the connection: it goes on now.
                if wake.take_woken() && driver.as_mut().poll(&mut io).is_ready() {
                    self.driver = None;
                }
                break Poll::Ready(t);
            }
            // Drive once, then again only while there is news.
            if rounds == MAX_ROUNDS || (rounds > 0 && !wake.take_woken()) {
                break Poll::Pending;
            }
            rounds += 1;
            if driver.as_mut().poll(&mut io).is_ready() {
                // An error reaches the request or body it concerns; the connection is gone
                // either way, and dropping it ends or fails what it fed.
                self.driver = None;
                wake.state.store(IDLE, Ordering::Release);
                return consumer(cx);
            }
        };
        if wake.state.swap(IDLE, Ordering::AcqRel) == WOKEN {
            // Woken after the last look, or past the rounds: the runtime polls again.
            cx.waker().wake_by_ref();
        }
        outcome
    }
}

impl Upconn {
    /// Does the connection's pending I/O without a task to wake: what the socket has now (a
    /// close by the upstream, the end of a response) is taken in. Returns whether the
    /// connection is over.
    fn drive_now(&mut self) -> bool {
        self.io.drive(&mut Context::from_waker(Waker::noop()))
    }

    /// Polls `consumer`, which this connection's I/O alone feeds (the response body),
    /// driving the I/O: see [`Io::poll_driven`].
    pub(crate) fn poll_driven<T>(
        &mut self,
        cx: &mut Context<'_>,
        consumer: impl FnMut(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        self.io.poll_driven(cx, consumer)
    }

    /// Sends `req` and waits for the response head, driving the connection meanwhile. A
    /// request that was not written (the connection was closed) comes back in the error.
    pub(crate) async fn send(
        &mut self,
        req: Request<RequestBody>,
    ) -> Result<hyper::Response<Incoming>, TrySendError<Request<RequestBody>>> {
        let mut response = std::pin::pin!(self.sender.try_send_request(req));
        // When the connection ended, dropping it failed the request's callback, which the
        // last poll of `response` reports (with the request if it was never written).
        poll_fn(|cx| {
            self.io
                .poll_driven(cx, |quiet| response.as_mut().poll(quiet))
        })
        .await
    }

    /// The I/O half, to be driven to its end elsewhere: after a 101, until it hands the
    /// socket to the upgrade.
    pub(crate) fn into_driver(self) -> Option<Driver> {
        self.io.driver
    }

    fn is_open(&self) -> bool {
        self.io.driver.is_some() && !self.sender.is_closed()
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
                if conn.io.drive(cx) {
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
    ///
    /// It is not driven here: the body's last poll drove it past the end of the response
    /// already (see [`Io::poll_driven`]), and [`Pool::checkout`] drives it before use, which
    /// is where a close meanwhile shows. (Driving it here too cost 2 % of the proxy's
    /// instructions per request.) A close while it sits idle may wake its last holder's task
    /// once, for nothing.
    pub(crate) fn put(&self, conn: Upconn) {
        if !conn.is_open() {
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
        io: Io::new(Box::pin(connection.with_upgrades())),
    })
}

#[cfg(test)]
mod tests {
    //! [`Io::poll_driven`] with a stand-in for hyper's connection: a driver that puts items
    //! into a one-slot channel and a consumer that takes them and, as hyper's body channel
    //! does, wakes the driver when it takes one. The real connection is exercised by the
    //! proxy's integration tests.

    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicBool, AtomicUsize};

    use super::*;

    #[derive(Default)]
    struct Feed {
        /// The channel between the driver and the consumer (one slot).
        slot: VecDeque<u32>,
        /// What the "socket" still holds for the driver to read.
        unread: VecDeque<u32>,
        /// The waker the driver registered last (for the slot and the socket alike).
        driver_waker: Option<Waker>,
        driver_polls: usize,
        /// The driver wakes itself on each poll (it always has more to do).
        restless: bool,
        /// The connection is over once the socket is empty.
        ends: bool,
    }

    type Shared = Arc<Mutex<Feed>>;

    fn lock(feed: &Shared) -> std::sync::MutexGuard<'_, Feed> {
        feed.lock().unwrap_or_else(PoisonError::into_inner)
    }

    struct FakeDriver(Shared);

    impl Future for FakeDriver {
        type Output = hyper::Result<()>;

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<hyper::Result<()>> {
            let mut feed = lock(&self.0);
            feed.driver_polls += 1;
            feed.driver_waker = Some(cx.waker().clone());
            if feed.slot.is_empty()
                && let Some(item) = feed.unread.pop_front()
            {
                feed.slot.push_back(item);
            }
            if feed.ends && feed.unread.is_empty() && feed.slot.is_empty() {
                return Poll::Ready(Ok(()));
            }
            if feed.restless {
                cx.waker().wake_by_ref();
            }
            Poll::Pending
        }
    }

    /// Takes an item, waking the driver as hyper's body channel does; `None` at the end.
    fn take(feed: &Shared) -> Poll<Option<u32>> {
        let mut feed = lock(feed);
        match feed.slot.pop_front() {
            Some(item) => {
                let waker = feed.driver_waker.clone();
                drop(feed);
                if let Some(w) = waker {
                    w.wake();
                }
                Poll::Ready(Some(item))
            }
            None if feed.ends && feed.unread.is_empty() => Poll::Ready(None),
            None => Poll::Pending,
        }
    }

    /// The holder's task: counts its wake-ups, and those that came while it was running.
    #[derive(Default)]
    struct Task {
        running: AtomicBool,
        wakes: AtomicUsize,
        wakes_while_running: AtomicUsize,
    }

    impl Wake for Task {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.wakes.fetch_add(1, Ordering::SeqCst);
            if self.running.load(Ordering::SeqCst) {
                self.wakes_while_running.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    fn setup(unread: &[u32]) -> (Io, Shared, Arc<Task>) {
        let feed: Shared = Arc::new(Mutex::new(Feed {
            unread: unread.iter().copied().collect(),
            ..Feed::default()
        }));
        let io = Io::new(Box::pin(FakeDriver(feed.clone())));
        (io, feed, Arc::new(Task::default()))
    }

    fn poll_as(task: &Arc<Task>, io: &mut Io, feed: &Shared) -> Poll<Option<u32>> {
        let waker = Waker::from(task.clone());
        task.running.store(true, Ordering::SeqCst);
        let polled = io.poll_driven(&mut Context::from_waker(&waker), |_| take(feed));
        task.running.store(false, Ordering::SeqCst);
        polled
    }

    #[test]
    fn what_the_holder_takes_wakes_the_connection_but_never_the_running_task() {
        let (mut io, feed, task) = setup(&[1, 2, 3, 4, 5]);
        for expected in 1..=5 {
            assert_eq!(poll_as(&task, &mut io, &feed), Poll::Ready(Some(expected)));
        }
        // Each take woke the driver; it read the next item at once, in the same poll.
        assert_eq!(task.wakes.load(Ordering::SeqCst), 0);
        assert_eq!(task.wakes_while_running.load(Ordering::SeqCst), 0);
        // Nothing more to read: pending, and still no wake-up of its own.
        assert_eq!(poll_as(&task, &mut io, &feed), Poll::Pending);
        assert_eq!(task.wakes.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_socket_event_after_the_poll_wakes_the_task() {
        let (mut io, feed, task) = setup(&[]);
        assert_eq!(poll_as(&task, &mut io, &feed), Poll::Pending);
        // The runtime's I/O driver signals the socket: data came.
        let waker = {
            let mut feed = lock(&feed);
            feed.unread.push_back(7);
            feed.driver_waker.clone()
        };
        waker.expect("the driver registered a waker").wake();
        assert_eq!(task.wakes.load(Ordering::SeqCst), 1);
        assert_eq!(task.wakes_while_running.load(Ordering::SeqCst), 0);
        assert_eq!(poll_as(&task, &mut io, &feed), Poll::Ready(Some(7)));
    }

    #[test]
    fn a_connection_with_endless_work_yields_to_the_runtime_and_loses_no_wake() {
        let (mut io, feed, task) = setup(&[]);
        lock(&feed).restless = true;
        assert_eq!(poll_as(&task, &mut io, &feed), Poll::Pending);
        // Driven MAX_ROUNDS times in one poll, then the task is woken to come back.
        assert_eq!(lock(&feed).driver_polls, MAX_ROUNDS);
        assert_eq!(task.wakes.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn the_end_of_the_connection_reaches_the_consumer() {
        let (mut io, feed, task) = setup(&[9]);
        lock(&feed).ends = true;
        assert_eq!(poll_as(&task, &mut io, &feed), Poll::Ready(Some(9)));
        assert_eq!(poll_as(&task, &mut io, &feed), Poll::Ready(None));
        assert!(io.driver.is_none(), "the ended driver is dropped");
    }
}
