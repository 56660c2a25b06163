//! A serve's coarse deadlines, kept by one periodic sweep instead of a timer per request.
//!
//! The proxy's deadlines are seconds long and need no precision finer than a fraction of
//! themselves: a client connection idle for [`ProxyConfig::client_idle_timeout`], a request
//! whose upstream has not answered within [`ProxyConfig::upstream_response_timeout`]. A tokio
//! timer per request for each (hyper's header-read timeout, a `tokio::time::timeout` around the
//! upstream's answer) cost 7 % of the instructions of a proxied request (bench/README). Here
//! a request costs two counter increments on its connection, and a request waiting on an
//! upstream one entry in a slab; the serve's sweep task calls [`Sweep::tick`] every
//! [`Sweep::period`] and closes or fails what is past its deadline, at most two periods late
//! (an idle connection that does not close when asked is cut two periods after that).
//!
//! [`ProxyConfig::client_idle_timeout`]: super::ProxyConfig::client_idle_timeout
//! [`ProxyConfig::upstream_response_timeout`]: super::ProxyConfig::upstream_response_timeout

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Poll, Waker};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use slab::Slab;
use tokio::time::Instant;

/// The shortest and longest sweep period: short deadlines (tests) are swept often enough to
/// keep their precision; long ones are not swept more than once a second.
const MIN_PERIOD: Duration = Duration::from_millis(10);
const MAX_PERIOD: Duration = Duration::from_secs(1);

/// What one serve's sweep keeps: its open client connections and its requests waiting on an
/// upstream's answer.
pub(crate) struct Sweep {
    period: Duration,
    /// Sweeps a connection must be seen idle in a row before it is asked to close.
    idle_sweeps: u32,
    conns: Mutex<Slab<Tracked>>,
    /// The least signal of every connection, tracked now or later: what [`Sweep::signal_all`]
    /// raised (a connection whose task starts after a shutdown began gets it too). Written
    /// under the `conns` lock.
    floor: AtomicU8,
    waiting: Mutex<Slab<Waiting>>,
}

/// A client connection as the sweep sees it.
struct Tracked {
    activity: Arc<Activity>,
    /// `finished` when last swept; [`UNSEEN`] until the first sweep.
    seen: u64,
    /// Sweeps in a row that found it idle with no request ended since the one before.
    idle_sweeps: u32,
}

/// [`Tracked::seen`] of a connection no sweep has looked at: the first sweep only takes note,
/// as it does after a request, so that idle time counts from a sweep in both cases.
const UNSEEN: u64 = u64::MAX;

/// A request waiting for its upstream's response head.
struct Waiting {
    deadline: Instant,
    waker: Waker,
    expired: bool,
}

/// What a client connection's task is asked to do, set by the sweep or by the serve's
/// shutdown and read by the task each time it is polled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Signal {
    Run = 0,
    /// Idle past the timeout: close, gracefully (HTTP/2: GOAWAY), unless a request began
    /// since the sweep looked, in which case the task lowers it back to `Run`.
    Idle = 1,
    /// Finish the request in progress and close (HTTP/2: GOAWAY).
    Drain = 2,
    /// Close now: the shutdown's grace period is over, the serve is gone, or the connection
    /// stayed open two periods after `Idle`.
    Close = 3,
}

/// A client connection's requests in progress, counted by the requests themselves and read by
/// the sweep; and the signal from the sweep back to the connection's task.
#[derive(Default)]
pub(crate) struct Activity {
    started: AtomicU64,
    finished: AtomicU64,
    signal: AtomicU8,
    waker: AtomicWaker,
}

impl Activity {
    /// A request has begun (its head is in); it lasts until the guard drops, which the
    /// response body carries until hyper is done with it. Called on the connection's task
    /// (hyper calls the service there, for HTTP/2 too), so a task that finds no request in
    /// progress knows none is being started.
    pub(crate) fn begin(self: &Arc<Self>) -> Active {
        self.started.fetch_add(1, Ordering::Release);
        Active(self.clone())
    }

    /// The signal, with the task's waker registered first so that a later signal wakes it.
    pub(crate) fn signal(&self, waker: &Waker) -> Signal {
        self.waker.register(waker);
        match self.signal.load(Ordering::Acquire) {
            0 => Signal::Run,
            1 => {
                if self.in_progress() {
                    // A request began after the sweep looked: not idle. Lowered only from
                    // `Idle`, never from a shutdown's signal.
                    let _ = self.signal.compare_exchange(
                        Signal::Idle as u8,
                        Signal::Run as u8,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    );
                    return self.signal(waker);
                }
                Signal::Idle
            }
            2 => Signal::Drain,
            _ => Signal::Close,
        }
    }

    /// Resolves once the signal is [`Signal::Close`].
    pub(crate) async fn closed(&self) {
        poll_fn(|cx| match self.signal(cx.waker()) {
            Signal::Close => Poll::Ready(()),
            _ => Poll::Pending,
        })
        .await;
    }

    fn in_progress(&self) -> bool {
        self.finished.load(Ordering::Acquire) != self.started.load(Ordering::Acquire)
    }

    /// Raises the signal (never lowers it: a closing connection does not go back to
    /// draining); whether it rose, so the task needs waking.
    fn raise(&self, to: Signal) -> bool {
        self.signal.fetch_max(to as u8, Ordering::AcqRel) < to as u8
    }

    fn wake(&self) {
        self.waker.wake();
    }

    /// `Ok` when no request is in progress and none ended since the sweep saw `seen`
    /// finished; else `Err` with the count to remember. Idle time then counts from the sweep
    /// after a request's end, never from before it.
    fn idle_since_seen(&self, seen: u64) -> Result<(), u64> {
        // `finished` first: a request that ends between the two loads then shows as still
        // in progress, never the other way round.
        let finished = self.finished.load(Ordering::Acquire);
        let started = self.started.load(Ordering::Acquire);
        if started == finished && finished == seen {
            Ok(())
        } else {
            Err(finished)
        }
    }
}

/// One request in progress on a client connection; see [`Activity::begin`].
pub(crate) struct Active(Arc<Activity>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.finished.fetch_add(1, Ordering::Release);
    }
}

/// A client connection on the sweep's list, taken off when dropped.
pub(crate) struct TrackedGuard<'a> {
    sweep: &'a Sweep,
    key: usize,
}

impl Drop for TrackedGuard<'_> {
    fn drop(&mut self) {
        lock(&self.sweep.conns).remove(self.key);
    }
}

/// A waiting request's entry, removed when dropped (answered, failed or cancelled).
struct WaitingGuard<'a> {
    sweep: &'a Sweep,
    key: usize,
}

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        lock(&self.sweep.waiting).remove(self.key);
    }
}

/// A [`Sweep::within`] whose deadline passed first.
#[derive(Debug)]
pub(crate) struct Elapsed;

impl Sweep {
    /// A sweep for deadlines no shorter than `shortest`: its period is an eighth of that,
    /// within 10 ms and 1 s. Connections are closed after `client_idle_timeout` idle.
    pub(crate) fn new(shortest: Duration, client_idle_timeout: Duration) -> Sweep {
        let period = (shortest / 8).clamp(MIN_PERIOD, MAX_PERIOD);
        // A connection first seen idle anywhere within a period has been idle for more than
        // (n - 1) periods when seen idle the n-th time in a row.
        // Idle time counts from a sweep that saw the connection's last change, so n idle
        // sweeps in a row are at least n periods; the `as` saturates for absurd timeouts.
        let idle_sweeps = (client_idle_timeout.div_duration_f64(period).ceil() as u32).max(1);
        Sweep {
            period,
            idle_sweeps,
            conns: Mutex::new(Slab::new()),
            floor: AtomicU8::new(Signal::Run as u8),
            waiting: Mutex::new(Slab::new()),
        }
    }

    pub(crate) fn period(&self) -> Duration {
        self.period
    }

    /// Puts a client connection on the list until the guard drops.
    /// Puts a client connection on the list until the guard drops. It starts with what
    /// [`Sweep::signal_all`] raised so far.
    pub(crate) fn track(&self, activity: Arc<Activity>) -> TrackedGuard<'_> {
        let mut conns = lock(&self.conns);
        let floor = self.floor.load(Ordering::Acquire);
        activity.signal.fetch_max(floor, Ordering::AcqRel);
        let key = conns.insert(Tracked {
            activity,
            seen: UNSEEN,
            idle_sweeps: 0,
        });
        TrackedGuard { sweep: self, key }
    }

    /// Raises `signal` on every client connection, and on those tracked from now on.
    pub(crate) fn signal_all(&self, signal: Signal) {
        let raised: Vec<Arc<Activity>> = {
            let conns = lock(&self.conns);
            self.floor.fetch_max(signal as u8, Ordering::AcqRel);
            conns
                .iter()
                .filter(|(_, t)| t.activity.raise(signal))
                .map(|(_, t)| t.activity.clone())
                .collect()
        };
        // Woken outside the lock: a woken task may end and take it to leave the list.
        for activity in raised {
            activity.wake();
        }
    }

    /// Awaits `fut` until `deadline`; past it (by at most two periods), [`Elapsed`]. A future
    /// that is ready on its first poll costs no entry.
    pub(crate) async fn within<F: Future>(
        &self,
        deadline: Instant,
        fut: F,
    ) -> Result<F::Output, Elapsed> {
        let mut fut = pin!(fut);
        let mut entry: Option<WaitingGuard<'_>> = None;
        poll_fn(|cx| {
            if let Poll::Ready(out) = fut.as_mut().poll(cx) {
                return Poll::Ready(Ok(out));
            }
            match &entry {
                None => {
                    let key = lock(&self.waiting).insert(Waiting {
                        deadline,
                        waker: cx.waker().clone(),
                        expired: false,
                    });
                    entry = Some(WaitingGuard { sweep: self, key });
                }
                Some(guard) => {
                    let mut waiting = lock(&self.waiting);
                    let w = &mut waiting[guard.key];
                    if w.expired {
                        return Poll::Ready(Err(Elapsed));
                    }
                    if !w.waker.will_wake(cx.waker()) {
                        w.waker = cx.waker().clone();
                    }
                }
            }
            Poll::Pending
        })
        .await
    }

    /// One sweep at `now`: wakes the waiting requests past their deadline (they end with
    /// [`Elapsed`]) and tells the connections idle past the timeout to close.
    pub(crate) fn tick(&self, now: Instant) {
        let mut wake = Vec::new();
        for (_, w) in lock(&self.waiting).iter_mut() {
            if !w.expired && w.deadline <= now {
                w.expired = true;
                wake.push(w.waker.clone());
            }
        }
        // Woken outside the lock: the woken tasks take it.
        for waker in wake {
            waker.wake();
        }
        let mut raised = Vec::new();
        for (_, t) in lock(&self.conns).iter_mut() {
            match t.activity.idle_since_seen(t.seen) {
                Ok(()) => {
                    t.idle_sweeps = t.idle_sweeps.saturating_add(1);
                    // Asked to close; cut two sweeps later if it is still there and idle
                    // (a client that ignores a GOAWAY, a head hyper is still reading).
                    let signal = if t.idle_sweeps >= self.idle_sweeps.saturating_add(2) {
                        Signal::Close
                    } else if t.idle_sweeps >= self.idle_sweeps {
                        Signal::Idle
                    } else {
                        continue;
                    };
                    if t.activity.raise(signal) {
                        raised.push(t.activity.clone());
                    }
                }
                Err(finished) => {
                    t.seen = finished;
                    t.idle_sweeps = 0;
                }
            }
        }
        for activity in raised {
            activity.wake();
        }
    }
}

/// The lists are left consistent by every operation on them, so a panic elsewhere while one
/// was held does not make them unusable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Context;

    fn noop() -> Waker {
        Waker::noop().clone()
    }

    #[test]
    fn the_period_is_an_eighth_of_the_shortest_deadline_within_bounds() {
        let s = |ms| Sweep::new(Duration::from_millis(ms), Duration::from_secs(30)).period();
        assert_eq!(s(800), Duration::from_millis(100));
        assert_eq!(s(8), MIN_PERIOD);
        assert_eq!(s(60_000), MAX_PERIOD);
    }

    /// `n` sweeps at one instant (the idle count does not look at the clock).
    fn ticks(sweep: &Sweep, n: usize) {
        let now = Instant::now();
        for _ in 0..n {
            sweep.tick(now);
        }
    }

    #[test]
    fn an_idle_connection_is_asked_to_close_after_the_timeout_then_cut() {
        // 1 s at 100 ms periods: the first sweep takes note, the next ten count it idle.
        let sweep = Sweep::new(Duration::from_millis(800), Duration::from_secs(1));
        let activity = Arc::new(Activity::default());
        let _tracked = sweep.track(activity.clone());
        ticks(&sweep, 10);
        assert_eq!(activity.signal(&noop()), Signal::Run);
        ticks(&sweep, 1);
        assert_eq!(activity.signal(&noop()), Signal::Idle);
        ticks(&sweep, 1);
        assert_eq!(activity.signal(&noop()), Signal::Idle);
        ticks(&sweep, 1);
        assert_eq!(activity.signal(&noop()), Signal::Close);
    }

    #[test]
    fn a_request_in_progress_is_not_idle_and_its_end_starts_the_count_again() {
        let sweep = Sweep::new(Duration::from_millis(800), Duration::from_secs(1));
        let activity = Arc::new(Activity::default());
        let _tracked = sweep.track(activity.clone());
        let active = activity.begin();
        ticks(&sweep, 30);
        assert_eq!(activity.signal(&noop()), Signal::Run);
        drop(active);
        ticks(&sweep, 10);
        assert_eq!(activity.signal(&noop()), Signal::Run);
        ticks(&sweep, 1);
        assert_eq!(activity.signal(&noop()), Signal::Idle);
    }

    #[test]
    fn a_request_that_starts_and_ends_between_sweeps_resets_the_count() {
        let sweep = Sweep::new(Duration::from_millis(800), Duration::from_secs(1));
        let activity = Arc::new(Activity::default());
        let _tracked = sweep.track(activity.clone());
        for _ in 0..10 {
            ticks(&sweep, 1);
            drop(activity.begin());
        }
        ticks(&sweep, 10);
        assert_eq!(activity.signal(&noop()), Signal::Run);
    }

    #[test]
    fn a_request_begun_after_the_sweep_looked_keeps_the_connection() {
        let sweep = Sweep::new(Duration::from_millis(800), Duration::from_secs(1));
        let activity = Arc::new(Activity::default());
        let _tracked = sweep.track(activity.clone());
        ticks(&sweep, 11);
        // The sweep raised `Idle`; the task finds a request in progress before acting on it.
        let active = activity.begin();
        assert_eq!(activity.signal(&noop()), Signal::Run);
        drop(active);
        assert_eq!(activity.signal(&noop()), Signal::Run);
        ticks(&sweep, 10);
        assert_eq!(activity.signal(&noop()), Signal::Run);
    }

    #[test]
    fn a_connection_tracked_after_a_shutdown_signal_gets_it() {
        let sweep = Sweep::new(Duration::from_millis(800), Duration::from_secs(1));
        let early = Arc::new(Activity::default());
        let _early = sweep.track(early.clone());
        sweep.signal_all(Signal::Drain);
        let late = Arc::new(Activity::default());
        let _late = sweep.track(late.clone());
        assert_eq!(early.signal(&noop()), Signal::Drain);
        assert_eq!(late.signal(&noop()), Signal::Drain);
        // Nor does an idle sweep lower a shutdown's signal.
        ticks(&sweep, 11);
        assert_eq!(late.signal(&noop()), Signal::Drain);
    }

    #[test]
    fn signals_only_rise_and_wake_the_connection() {
        let sweep = Sweep::new(Duration::from_millis(800), Duration::from_secs(1));
        let activity = Arc::new(Activity::default());
        let _tracked = sweep.track(activity.clone());
        let woken = Arc::new(Flag::default());
        let waker = Waker::from(woken.clone());
        assert_eq!(activity.signal(&waker), Signal::Run);
        sweep.signal_all(Signal::Close);
        assert!(woken.0.load(Ordering::SeqCst));
        sweep.signal_all(Signal::Drain);
        assert_eq!(activity.signal(&waker), Signal::Close);
    }

    #[derive(Default)]
    struct Flag(std::sync::atomic::AtomicBool);

    impl std::task::Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn within_fails_a_pending_future_once_swept_past_its_deadline_and_forgets_it() {
        let sweep = Sweep::new(Duration::from_millis(800), Duration::from_secs(1));
        let start = Instant::now();
        let deadline = start + Duration::from_secs(5);
        let mut fut = Box::pin(sweep.within(deadline, std::future::pending::<()>()));
        let woken = Arc::new(Flag::default());
        let waker = Waker::from(woken.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        assert_eq!(lock(&sweep.waiting).len(), 1);

        sweep.tick(start + Duration::from_secs(4));
        assert!(!woken.0.load(Ordering::SeqCst));
        assert!(fut.as_mut().poll(&mut cx).is_pending());

        sweep.tick(deadline);
        assert!(woken.0.load(Ordering::SeqCst));
        assert!(matches!(
            fut.as_mut().poll(&mut cx),
            Poll::Ready(Err(Elapsed))
        ));
        drop(fut);
        assert_eq!(lock(&sweep.waiting).len(), 0);
    }

    #[test]
    fn within_passes_on_a_ready_future_without_an_entry() {
        let sweep = Sweep::new(Duration::from_millis(800), Duration::from_secs(1));
        let mut fut = Box::pin(sweep.within(Instant::now(), std::future::ready(7)));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(matches!(fut.as_mut().poll(&mut cx), Poll::Ready(Ok(7))));
        assert_eq!(lock(&sweep.waiting).len(), 0);
    }

    #[test]
    fn a_cancelled_wait_leaves_no_entry() {
        let sweep = Sweep::new(Duration::from_millis(800), Duration::from_secs(1));
        let mut fut = Box::pin(sweep.within(Instant::now(), std::future::pending::<()>()));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        assert_eq!(lock(&sweep.waiting).len(), 1);
        drop(fut);
        assert_eq!(lock(&sweep.waiting).len(), 0);
    }
}
