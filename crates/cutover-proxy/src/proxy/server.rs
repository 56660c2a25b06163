//! Accepting client connections, graceful shutdown, and upgraded tunnels.

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper::{Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::Notify;

use super::Inner;
use super::body::{Exchange, ProxyBody};
use super::headers;
use super::metrics::ErrorKind;
use super::pool::Upconn;
use super::sweep::{Activity, Signal, Sweep};

/// What a request handler knows about its connection.
pub(crate) struct Conn {
    inner: Arc<Inner>,
    /// The client's address as `X-Forwarded-For` writes it, made once per connection.
    pub(crate) client_ip: HeaderValue,
    /// The client came over TLS (`X-Forwarded-Proto: https`).
    pub(crate) https: bool,
    /// The serve's deadlines (the upstream response timeout is one).
    pub(crate) sweep: Arc<Sweep>,
    /// Requests in progress, for the idle timeout; the sweep's and shutdown's signals.
    activity: Arc<Activity>,
    tasks: Arc<Tasks>,
}

/// Counts a serve's connection and tunnel tasks, so shutdown can wait for them.
#[derive(Default)]
struct Tasks {
    live: AtomicUsize,
    idle: Notify,
}

struct TaskGuard(Arc<Tasks>);

impl Tasks {
    fn enter(self: &Arc<Self>) -> TaskGuard {
        self.live.fetch_add(1, Ordering::SeqCst);
        TaskGuard(self.clone())
    }

    async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.live.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        if self.0.live.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Decrements the open-connections gauge when a connection task ends.
struct Open(Arc<Inner>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How long a client gets to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the serve's [`Sweep`] every period, and closes idle upstream connections past their
/// idle timeout, for as long as the serve runs (the handle aborts it on drop).
fn run_sweep(inner: Arc<Inner>, sweep: Arc<Sweep>) -> AbortOnDrop {
    AbortOnDrop(tokio::spawn(async move {
        let mut tick = tokio::time::interval(sweep.period());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let now = tick.tick().await;
            sweep.tick(now);
            let upstreams = inner.registry().live_upstreams();
            for upstream in upstreams {
                upstream
                    .pool
                    .close_expired(inner.config.upstream_idle_timeout);
            }
        }
    }))
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

struct CloseAllOnDrop(Arc<Sweep>);

impl Drop for CloseAllOnDrop {
    fn drop(&mut self) {
        self.0.signal_all(Signal::Close);
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(crate) async fn serve(
    inner: Arc<Inner>,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // No timer for HTTP/1: hyper's header-read timeout would arm one per request. The sweep's
    // client idle timeout bounds the time to send a request's headers instead.
    builder.http1().keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);

    let tasks = Arc::new(Tasks::default());
    let config = &inner.config;
    let sweep = Arc::new(Sweep::new(
        config
            .client_idle_timeout
            .min(config.upstream_response_timeout)
            .min(config.upstream_idle_timeout),
        config.client_idle_timeout,
    ));
    let _sweeper = run_sweep(inner.clone(), sweep.clone());
    // Whichever way this ends (also dropped unfinished), no connection outlives it.
    let _close_all = CloseAllOnDrop(sweep.clone());
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, remote)) => {
                let conn = Arc::new(Conn {
                    inner: inner.clone(),
                    client_ip: client_ip(remote),
                    https: tls.is_some(),
                    sweep: sweep.clone(),
                    activity: Arc::new(Activity::default()),
                    tasks: tasks.clone(),
                });
                let guard = tasks.enter();
                // Small requests and responses must not wait for Nagle's algorithm.
                let _ = stream.set_nodelay(true);
                match &tls {
                    None => {
                        tokio::spawn(serve_connection(builder.clone(), stream, conn, guard));
                    }
                    Some(acceptor) => {
                        let (acceptor, builder) = (acceptor.clone(), builder.clone());
                        tokio::spawn(async move {
                            // A failed or stalled handshake is the client's problem, not logged.
                            if let Ok(Ok(stream)) =
                                tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                                    .await
                            {
                                serve_connection(builder, stream, conn, guard).await;
                            }
                        });
                    }
                }
            }
            Err(e) if is_per_connection(&e) => {}
            Err(e) => {
                // Out of file descriptors or memory: closing nothing frees them; pause so the
                // loop does not spin, and let in-flight requests finish and free some.
                eprintln!("cutover-proxy: accept failed: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    drop(listener);
    sweep.signal_all(Signal::Drain);
    let grace = inner.config.shutdown_grace;
    if tokio::time::timeout(grace, tasks.wait_idle())
        .await
        .is_err()
    {
        sweep.signal_all(Signal::Close);
        // Tasks cut their connections and tunnels as soon as they see `Close`; a short wait lets them
        // (and their in-flight accounting) finish before the caller moves on.
        let _ = tokio::time::timeout(Duration::from_secs(1), tasks.wait_idle()).await;
    }
    Ok(())
}

async fn serve_connection<S>(
    builder: Arc<auto::Builder<TokioExecutor>>,
    stream: S,
    conn: Arc<Conn>,
    _guard: TaskGuard,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    conn.inner.connections.fetch_add(1, Ordering::Relaxed);
    let _open = Open(conn.inner.clone());
    let sweep = conn.sweep.clone();
    let _tracked = sweep.track(conn.activity.clone());
    let activity = conn.activity.clone();
    let service = service_fn(move |req| {
        let conn = conn.clone();
        // Counted on the connection's task, before the request's future runs anywhere.
        let active = conn.activity.begin();
        async move {
            let response = conn.inner.handle(&conn, req).await;
            Ok::<_, Infallible>(response.map(|body| body.counted(active)))
        }
    });
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let mut draining = false;
    // Protocol errors and clients that vanish are routine for a server facing the internet;
    // they are not logged.
    poll_fn(|cx| {
        match activity.signal(cx.waker()) {
            // The shutdown's grace period is over, or idle and not closing when asked.
            Signal::Close => return Poll::Ready(()),
            // Shutdown, or idle past the timeout with no request in progress.
            Signal::Drain | Signal::Idle if !draining => {
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
            Signal::Drain | Signal::Idle | Signal::Run => {}
        }
        connection.as_mut().poll(cx).map(|_| ())
    })
    .await;
}

fn client_ip(remote: SocketAddr) -> HeaderValue {
    // An IPv4 client on a dual-stack socket shows as ::ffff:a.b.c.d; upstreams expect a.b.c.d.
    let ip = remote.ip().to_canonical();
    HeaderValue::from_str(&ip.to_string()).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Errors of `accept` that concern one connection only (it was reset before being accepted).
fn is_per_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        e.kind(),
        K::ConnectionAborted | K::ConnectionReset | K::Interrupted | K::WouldBlock
    )
}

/// The upstream answered 101 to an upgrade: answer the client with the same, then join the
/// two connections byte for byte until either side closes (or the serve stops). The exchange
/// (and so the in-flight count a drain waits on) lasts as long as the tunnel.
pub(crate) fn tunnel(
    conn: &Conn,
    mut ex: Exchange,
    client: OnUpgrade,
    mut response: Response<Incoming>,
    connection: Upconn,
) -> Response<ProxyBody> {
    let upstream = hyper::upgrade::on(&mut response);
    let (mut parts, _empty) = response.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers, true);
    ex.status = StatusCode::SWITCHING_PROTOCOLS.as_u16();
    let sweep = conn.sweep.clone();
    let guard = conn.tasks.enter();
    tokio::spawn(async move {
        let _guard = guard;
        // On the sweep's list like a connection, for the shutdown's `Close`; never idle.
        let activity = Arc::new(Activity::default());
        let _active = activity.begin();
        let _tracked = sweep.track(activity.clone());
        // The client side completes once hyper has written the 101 below; the upstream side
        // once its connection, driven here, hands the socket over.
        let driven = async {
            if let Some(driver) = connection.into_driver() {
                let _ = driver.await;
            }
            upstream.await
        };
        let (client, upstream) = tokio::join!(client, driven);
        let (Ok(client), Ok(upstream)) = (client, upstream) else {
            ex.fail(ErrorKind::Upgrade);
            return;
        };
        let mut client = TokioIo::new(client);
        let mut upstream = TokioIo::new(upstream);
        tokio::select! {
            copied = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
                if let Ok((_up, down)) = copied {
                    ex.bytes = down;
                }
            }
            () = activity.closed() => {}
        }
        // Ends the exchange: the in-flight count, the metrics and the log line.
        drop(ex);
    });
    Response::from_parts(parts, ProxyBody::empty())
}
