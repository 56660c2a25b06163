//! Bodies in both directions, and the per-request record that rides along with the response
//! body until its last byte.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use hyper::Request;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::Instant;

use super::ProxyConfig;
use super::log::{self, LogFields};
use super::metrics::ErrorKind;
use super::pool::Upconn;
use super::registry::{Service, Upstream};
use super::sweep::Active;

/// One request, from its arrival to the end of its response (last body byte handed to the
/// client, client gone, or tunnel closed): on drop it releases the upstream's in-flight count
/// and records the metrics and the access-log line.
pub(crate) struct Exchange {
    service: Arc<Service>,
    upstream: Option<Arc<Upstream>>,
    start: Instant,
    /// The status sent to the client; 0 while none was (a drop at 0 means the client left
    /// before its response began).
    pub(crate) status: u16,
    /// Response body bytes sent (upstream → client for a tunnel).
    pub(crate) bytes: u64,
    error: Option<ErrorKind>,
    /// Only allocated when the access log is on.
    log: Option<Box<LogFields>>,
}

impl Exchange {
    pub(crate) fn start(
        config: &ProxyConfig,
        service: Arc<Service>,
        start: Instant,
        req: &Request<Incoming>,
    ) -> Exchange {
        Exchange {
            service,
            upstream: None,
            start,
            status: 0,
            bytes: 0,
            error: None,
            log: config.access_log.then(|| Box::new(LogFields::of(req))),
        }
    }

    /// The request went to `upstream`, already counted in flight by
    /// [`Service::acquire_upstream`]; released on drop.
    pub(crate) fn dispatched(&mut self, upstream: Arc<Upstream>) {
        self.upstream = Some(upstream);
    }

    pub(crate) fn fail(&mut self, kind: ErrorKind) {
        self.error = Some(kind);
    }

    /// [`Exchange::fail`], with the error's text for the access log.
    pub(crate) fn fail_because(&mut self, kind: ErrorKind, detail: String) {
        self.error = Some(kind);
        if let Some(log) = self.log.as_mut() {
            log.detail = Some(detail);
        }
    }

    pub(crate) fn upstream(&self) -> Option<&Arc<Upstream>> {
        self.upstream.as_ref()
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        let upstream = self.upstream.take();
        if let Some(upstream) = &upstream {
            self.service.in_flight.fetch_sub(1, Ordering::Relaxed);
            upstream.release();
        }
        let elapsed = self.start.elapsed();
        let metrics = &self.service.metrics;
        let error = match (self.error, self.status) {
            (Some(kind), _) => Some(kind),
            (None, 0) => Some(ErrorKind::ClientClosed),
            (None, _) => None,
        };
        if let Some(kind) = error {
            metrics.error(kind);
        }
        if self.status != 0 {
            metrics.response(self.status);
            // A tunnel's lifetime is not a request's latency.
            if self.status != 101 {
                metrics.observe(elapsed);
            }
        }
        if let Some(fields) = self.log.take() {
            log::write(
                &fields,
                // nginx's code for "client closed the request before the response".
                if self.status == 0 { 499 } else { self.status },
                &self.service.name,
                upstream.as_ref().map(|u| u.addr),
                elapsed,
                self.bytes,
                error,
            );
        }
    }
}

/// The response body sent to clients: the upstream's, streamed frame by frame, or a small one
/// of the proxy's own.
///
/// It carries the exchange, ended when the body is (see [`Exchange`]), and the upstream
/// connection the body comes from: polling the body drives that connection's I/O (see
/// [`super::pool`]), and the connection goes back to the upstream's pool when the body was
/// read to its end, and is closed otherwise (an upstream body cut short leaves the
/// connection in the middle of a message).
pub(crate) struct ProxyBody {
    kind: Kind,
    exchange: Option<Exchange>,
    connection: Option<Upconn>,
    /// Keeps the request counted in progress on its client connection (for the idle
    /// timeout) until hyper drops the body; see [`ProxyBody::counted`].
    active: Option<Active>,
}

enum Kind {
    Full(Option<Bytes>),
    Stream(Incoming),
}

impl ProxyBody {
    pub(crate) fn full(bytes: Bytes) -> ProxyBody {
        ProxyBody {
            kind: Kind::Full((!bytes.is_empty()).then_some(bytes)),
            exchange: None,
            connection: None,
            active: None,
        }
    }

    pub(crate) fn empty() -> ProxyBody {
        ProxyBody {
            kind: Kind::Full(None),
            exchange: None,
            connection: None,
            active: None,
        }
    }

    pub(crate) fn stream(body: Incoming, exchange: Exchange, connection: Upconn) -> ProxyBody {
        ProxyBody {
            kind: Kind::Stream(body),
            exchange: Some(exchange),
            connection: Some(connection),
            active: None,
        }
    }

    /// The body keeps `active` until hyper is done with it (sent in full or the client gone).
    pub(crate) fn counted(mut self, active: Active) -> ProxyBody {
        self.active = Some(active);
        self
    }

    pub(crate) fn with_exchange(mut self, exchange: Exchange) -> ProxyBody {
        self.exchange = Some(exchange);
        self
    }

    /// The body is done: end the exchange now rather than when hyper drops the body, so a
    /// drain does not wait on a body that was sent in full. `complete`: the upstream's body
    /// was read to its end, so its connection can serve another request.
    fn finish(&mut self, complete: bool) {
        if let Some(connection) = self.connection.take()
            && complete
            && let Some(upstream) = self.exchange.as_ref().and_then(Exchange::upstream)
        {
            upstream.pool.put(connection);
        }
        self.exchange = None;
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        // hyper drops a body without polling it when it has nothing to send (HEAD, 204, 304,
        // `Content-Length: 0`), and when the client goes away.
        let complete = match &self.kind {
            Kind::Full(_) => true,
            Kind::Stream(body) => body.is_end_stream(),
        };
        self.finish(complete);
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = match &mut this.kind {
            Kind::Full(bytes) => bytes.take().map(|b| Ok(Frame::data(b))),
            Kind::Stream(body) => match this.connection.as_mut() {
                // Reads what the upstream sent into `body` (or the end of the connection,
                // which `body` then reports), and registers this task for more.
                Some(connection) => {
                    ready!(
                        connection.poll_driven(cx, |quiet| Pin::new(&mut *body).poll_frame(quiet))
                    )
                }
                None => ready!(Pin::new(body).poll_frame(cx)),
            },
        };
        match &polled {
            Some(Ok(frame)) => {
                if let (Some(data), Some(ex)) = (frame.data_ref(), this.exchange.as_mut()) {
                    ex.bytes += data.len() as u64;
                }
                if this.is_end_stream() {
                    this.finish(true);
                }
            }
            Some(Err(_)) => {
                if let Some(ex) = this.exchange.as_mut() {
                    ex.fail(ErrorKind::UpstreamBody);
                }
                this.finish(false);
            }
            None => this.finish(true),
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Stream(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Stream(body) => body.size_hint(),
        }
    }
}

/// The request body sent upstream: the client's, streamed, and cut off with [`BodyTooLarge`]
/// past the limit.
pub(crate) struct RequestBody {
    inner: Incoming,
    remaining: u64,
}

impl RequestBody {
    pub(crate) fn new(inner: Incoming, limit: u64) -> RequestBody {
        RequestBody {
            inner,
            remaining: limit,
        }
    }
}

/// The client's request body passed [`super::ProxyConfig::max_request_body`] while streaming.
#[derive(Debug, thiserror::Error)]
#[error("request body larger than the limit")]
pub(crate) struct BodyTooLarge;

/// Reading the client's request body failed (the client went away mid-upload, bad chunked
/// encoding, …): the fault is on the client's side, not the upstream's.
#[derive(Debug, thiserror::Error)]
#[error("reading the request body: {0}")]
pub(crate) struct ClientBodyError(#[source] hyper::Error);

impl Body for RequestBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > this.remaining {
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge))));
                    }
                    this.remaining -= len;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => Poll::Ready(Some(Err(Box::new(ClientBodyError(e))))),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
