//! The proxy end to end, on loopback: real upstream servers, real clients, real sockets.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use cutover_proxy::proxy::{
    MaintenancePage, Proxy, ProxyConfig, ProxyState, RouteSpec, ServiceState,
};
use futures_util::stream;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{CONNECTION, HOST, HeaderMap, RETRY_AFTER, UPGRADE};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::time::Instant;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type TestBody = BoxBody<Bytes, BoxError>;
type TestClient = Client<HttpConnector, TestBody>;

const BIG: usize = 5 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Upstreams

/// An upstream answering its name, with a few special paths:
/// `/slow?ms=N` (answers after N ms), `/headers` (the request's headers, as JSON),
/// `/count` (the request body's length), `/close` (answers, then closes the connection), `/big` (5 MiB, streamed in 64 KiB chunks),
/// `/drip?ms=N` (the head and `a` at once, `b` after N ms),
/// and `Upgrade: echo` (101, then echoes bytes).
async fn upstream(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let addr = listener.local_addr().expect("upstream addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = service_fn(move |req| upstream_answer(name, req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

fn big_byte(i: usize) -> u8 {
    (i * 31 % 251) as u8
}

/// The `ms=N` of a request's query, 1000 without one.
fn query_ms(req: &Request<Incoming>) -> u64 {
    req.uri()
        .query()
        .and_then(|q| q.strip_prefix("ms="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

async fn upstream_answer(
    name: &'static str,
    mut req: Request<Incoming>,
) -> Result<Response<BoxBody<Bytes, Infallible>>, Infallible> {
    let text = |s: String| Response::new(Full::new(Bytes::from(s)).boxed());
    if req.headers().get(UPGRADE).is_some_and(|v| v == "echo") {
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(upgraded) = on.await {
                let (mut r, mut w) = tokio::io::split(TokioIo::new(upgraded));
                let _ = tokio::io::copy(&mut r, &mut w).await;
            }
        });
        let mut resp = Response::new(Empty::new().boxed());
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        resp.headers_mut()
            .insert(CONNECTION, "upgrade".parse().expect("value"));
        resp.headers_mut()
            .insert(UPGRADE, "echo".parse().expect("value"));
        return Ok(resp);
    }
    match req.uri().path() {
        "/slow" => {
            let ms = query_ms(&req);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(text(name.to_string()))
        }
        "/headers" => {
            let map: BTreeMap<String, String> = req
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").to_string()))
                .collect();
            Ok(text(serde_json::to_string(&map).expect("json")))
        }
        "/close" => {
            let mut resp = text(name.to_string());
            resp.headers_mut()
                .insert(CONNECTION, "close".parse().expect("value"));
            Ok(resp)
        }
        "/count" => {
            let body = req.into_body().collect().await.map(|b| b.to_bytes());
            Ok(text(body.map_or(-1, |b| b.len() as i64).to_string()))
        }
        "/drip" => {
            let ms = query_ms(&req);
            let first = stream::once(async { Ok::<_, Infallible>(Frame::data(Bytes::from("a"))) });
            let second = stream::once(async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok::<_, Infallible>(Frame::data(Bytes::from("b")))
            });
            Ok(Response::new(
                StreamBody::new(futures_util::StreamExt::chain(first, second)).boxed(),
            ))
        }
        "/big" => {
            let chunks = (0..BIG).step_by(64 * 1024).map(|start| {
                let end = (start + 64 * 1024).min(BIG);
                let chunk: Vec<u8> = (start..end).map(big_byte).collect();
                Ok::<_, Infallible>(Frame::data(Bytes::from(chunk)))
            });
            let body: Vec<_> = chunks.collect();
            Ok(Response::new(StreamBody::new(stream::iter(body)).boxed()))
        }
        _ => Ok(text(name.to_string())),
    }
}

/// A bare HTTP/1.1 upstream that keeps a connection alive after each answer (`ok`) but
/// closes it when no request follows within `idle`, as Node.js (5 s) or gunicorn (2 s) do.
async fn closes_idle_connections(idle: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut seen = Vec::new();
                loop {
                    let n = match tokio::time::timeout(idle, stream.read(&mut buf)).await {
                        Ok(Ok(n)) if n > 0 => n,
                        // Idle too long, closed, or failed: close (the drop).
                        _ => return,
                    };
                    seen.extend_from_slice(&buf[..n]);
                    // GETs without bodies: one answer per complete head.
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if stream.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

/// An address nothing listens on.
async fn dead_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr")
}

// ---------------------------------------------------------------------------------------------
// The proxy and clients

fn test_config() -> ProxyConfig {
    ProxyConfig {
        upstream_connect_timeout: Duration::from_secs(2),
        upstream_response_timeout: Duration::from_secs(10),
        max_request_body: 1024 * 1024,
        default_max_hold: Duration::from_secs(10),
        access_log: false,
        shutdown_grace: Duration::from_secs(2),
        ..ProxyConfig::default()
    }
}

struct Running {
    proxy: Proxy,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Running {
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(served) = self.served.take() {
            served.await.expect("serve task").expect("serve");
        }
    }
}

async fn start(config: ProxyConfig) -> Running {
    let proxy = Proxy::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let addr = listener.local_addr().expect("proxy addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn({
        let proxy = proxy.clone();
        async move {
            proxy
                .serve(listener, async {
                    let _ = stopped.await;
                })
                .await
        }
    });
    Running {
        proxy,
        addr,
        stop: Some(stop),
        served: Some(served),
    }
}

/// A proxy on `config` that sends every request to `upstream`, as service `web`.
async fn start_web(config: ProxyConfig, upstream: SocketAddr) -> Running {
    let p = start(config).await;
    p.proxy.set_routes(vec![route(None, None, "web")]);
    p.proxy.switch("web", vec![upstream]);
    p
}

fn route(host: Option<&str>, prefix: Option<&str>, service: &str) -> RouteSpec {
    RouteSpec {
        host: host.map(str::to_string),
        path_prefix: prefix.map(str::to_string),
        service: service.to_string(),
    }
}

fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

fn h2_client() -> TestClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

fn empty() -> TestBody {
    Empty::new().map_err(|e: Infallible| match e {}).boxed()
}

fn full(bytes: impl Into<Bytes>) -> TestBody {
    Full::new(bytes.into())
        .map_err(|e: Infallible| match e {})
        .boxed()
}

/// A body of `chunks` × `size` bytes, without a Content-Length (sent chunked).
fn chunked(chunks: usize, size: usize) -> TestBody {
    let frames =
        (0..chunks).map(move |_| Ok::<_, BoxError>(Frame::data(Bytes::from(vec![b'x'; size]))));
    StreamBody::new(stream::iter(frames)).boxed()
}

fn request(proxy: SocketAddr, host: &str, path: &str, body: TestBody) -> Request<TestBody> {
    Request::builder()
        .uri(format!("http://{proxy}{path}"))
        .header(HOST, host)
        .body(body)
        .expect("request")
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("utf-8 body")
    }
}

async fn send(client: &TestClient, req: Request<TestBody>) -> Answer {
    let resp = client.request(req).await.expect("response");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

async fn get(client: &TestClient, proxy: SocketAddr, host: &str, path: &str) -> Answer {
    send(client, request(proxy, host, path, empty())).await
}

/// A gauge from the exposition, e.g. `cutover_proxy_held_requests{service="web"}`.
fn gauge(proxy: &Proxy, series: &str) -> Option<u64> {
    proxy.metrics().lines().find_map(|line| {
        line.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
    })
}

async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Routing and forwarded headers

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_host_and_longest_prefix_and_forwards_headers() {
    let v1 = upstream("v1").await;
    let v2 = upstream("v2").await;
    let p = start(test_config()).await;
    p.proxy.set_routes(vec![
        route(Some("A.test"), None, "a"),
        route(None, Some("/api"), "b"),
        route(None, Some("/api/v2/"), "a"),
    ]);
    p.proxy.switch("a", vec![v1]);
    p.proxy.switch("b", vec![v2]);
    let c = client();

    assert_eq!(get(&c, p.addr, "a.test", "/").await.text(), "v1");
    assert_eq!(get(&c, p.addr, "a.TEST:8080", "/x").await.text(), "v1");
    assert_eq!(get(&c, p.addr, "other", "/api").await.text(), "v2");
    assert_eq!(get(&c, p.addr, "other", "/api/users").await.text(), "v2");
    assert_eq!(get(&c, p.addr, "other", "/api/v2/users").await.text(), "v1");
    // On a.test, /api is a longer match than a.test's own route (no prefix).
    assert_eq!(get(&c, p.addr, "a.test", "/api/x").await.text(), "v2");
    // Whole segments only.
    let none = get(&c, p.addr, "other", "/apis").await;
    assert_eq!(none.status, StatusCode::NOT_FOUND);
    assert_eq!(none.text(), "no route\n");
    assert_eq!(
        get(&c, p.addr, "other", "/").await.status,
        StatusCode::NOT_FOUND
    );

    let mut req = request(p.addr, "a.test:8080", "/headers", empty());
    req.headers_mut()
        .insert("x-forwarded-for", "203.0.113.7".parse().expect("value"));
    req.headers_mut()
        .insert("x-forwarded-proto", "https".parse().expect("value"));
    req.headers_mut()
        .insert(CONNECTION, "keep-alive, x-private".parse().expect("value"));
    req.headers_mut()
        .insert("x-private", "secret".parse().expect("value"));
    let seen = send(&c, req).await;
    assert_eq!(seen.status, StatusCode::OK);
    let seen: BTreeMap<String, String> = serde_json::from_slice(&seen.body).expect("json");
    assert_eq!(seen["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-host"], "a.test:8080");
    assert_eq!(seen["host"], "a.test:8080");
    assert!(!seen.contains_key("x-private"), "{seen:?}");

    // An HTTP/1.0 request without Host goes to a route without host and reaches the
    // upstream as HTTP/1.1 with a Host.
    p.proxy.set_routes(vec![route(None, None, "b")]);
    let mut tcp = TcpStream::connect(p.addr).await.expect("connect");
    tcp.write_all(b"GET /headers HTTP/1.0\r\n\r\n")
        .await
        .expect("write");
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).await.expect("read");
    let raw = String::from_utf8(raw).expect("utf-8");
    assert!(raw.starts_with("HTTP/1.0 200"), "{raw}");
    assert!(raw.contains(&format!("\"host\":\"{v2}\"")), "{raw}");

    p.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 2. Atomic switch under load

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_under_load_is_atomic_and_loses_nothing() {
    let v1 = upstream("v1").await;
    let v2 = upstream("v2").await;
    let p = start_web(test_config(), v1).await;

    let begin = Instant::now();
    let end = begin + Duration::from_secs(2);
    let mut workers = Vec::new();
    for _ in 0..8 {
        let addr = p.addr;
        workers.push(tokio::spawn(async move {
            let c = client();
            let mut seen = Vec::new();
            while Instant::now() < end {
                let started = Instant::now();
                let result = c.request(request(addr, "app", "/", empty())).await;
                let answer = match result {
                    Ok(resp) => {
                        let status = resp.status();
                        match resp.into_body().collect().await {
                            Ok(body) => Ok((status, body.to_bytes())),
                            Err(e) => Err(e.to_string()),
                        }
                    }
                    Err(e) => Err(e.to_string()),
                };
                seen.push((started, Instant::now(), answer));
            }
            seen
        }));
    }
    tokio::time::sleep_until(begin + Duration::from_secs(1)).await;
    let previous = p.proxy.switch("web", vec![v2]);
    let switched = Instant::now();
    assert_eq!(previous, vec![v1]);

    let mut total = 0;
    let (mut on_v1, mut on_v2) = (0, 0);
    for worker in workers {
        for (started, _done, answer) in worker.await.expect("worker") {
            total += 1;
            let (status, body) = answer.expect("no request may fail");
            assert_eq!(status, StatusCode::OK);
            match &body[..] {
                b"v1" => {
                    on_v1 += 1;
                    assert!(
                        started < switched,
                        "a request started after the switch went to v1"
                    );
                }
                b"v2" => on_v2 += 1,
                other => panic!("unexpected body {other:?}"),
            }
        }
    }
    eprintln!("switch under load: {total} requests, {on_v1} to v1, {on_v2} to v2");
    assert!(on_v1 > 0 && on_v2 > 0, "v1 {on_v1}, v2 {on_v2}");
    p.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 3. Drain

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_waits_for_requests_to_the_old_upstream() {
    let v1 = upstream("v1").await;
    let v2 = upstream("v2").await;
    let p = start_web(test_config(), v1).await;

    let addr = p.addr;
    let slow = tokio::spawn(async move { get(&client(), addr, "app", "/slow?ms=1000").await });
    eventually("the slow request to be in flight", || {
        p.proxy.state().services["web"].in_flight == 1
    })
    .await;
    let began = Instant::now();
    p.proxy.switch("web", vec![v2]);
    // New requests go to v2 while the slow one still runs on v1.
    assert_eq!(get(&client(), addr, "app", "/").await.text(), "v2");
    let report = p.proxy.drain(&[v1], Duration::from_secs(5)).await;
    assert!(report.drained(), "{report:?}");
    assert!(
        began.elapsed() >= Duration::from_millis(800),
        "drained after {:?}",
        began.elapsed()
    );
    assert!(report.elapsed >= Duration::from_millis(700), "{report:?}");
    let slow = slow.await.expect("slow request");
    assert_eq!((slow.status, slow.text()), (StatusCode::OK, "v1"));
    assert_eq!(
        gauge(
            &p.proxy,
            &format!("cutover_proxy_upstream_in_flight{{upstream=\"{v1}\"}}")
        ),
        None,
        "an address no set lists and nothing is in flight to is forgotten"
    );

    let report = p.proxy.drain(&[v1], Duration::MAX).await;
    assert!(report.drained());

    // An address the proxy never sent to is drained at once.
    let report = p
        .proxy
        .drain(&[dead_addr().await], Duration::from_secs(5))
        .await;
    assert_eq!(report.in_flight, 0);
    assert!(report.elapsed < Duration::from_millis(100));
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_gives_up_at_its_timeout_and_says_what_is_left() {
    let v1 = upstream("v1").await;
    let v2 = upstream("v2").await;
    let p = start_web(test_config(), v1).await;

    let addr = p.addr;
    let slow = tokio::spawn(async move { get(&client(), addr, "app", "/slow?ms=1000").await });
    eventually("the slow request to be in flight", || {
        p.proxy.state().services["web"].in_flight == 1
    })
    .await;
    p.proxy.switch("web", vec![v2]);
    let report = p.proxy.drain(&[v1], Duration::from_millis(100)).await;
    assert_eq!(report.in_flight, 1, "{report:?}");
    assert!(
        report.elapsed >= Duration::from_millis(100) && report.elapsed < Duration::from_millis(600),
        "{report:?}"
    );
    assert_eq!(slow.await.expect("slow").text(), "v1");
    p.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 4. Hold

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_requests_wait_and_go_to_the_new_upstream_on_release() {
    let v1 = upstream("v1").await;
    let v2 = upstream("v2").await;
    let p = start_web(test_config(), v1).await;
    p.proxy.hold("web", Duration::from_secs(10));
    assert!(p.proxy.state().services["web"].held);

    let mut waiting = Vec::new();
    for _ in 0..20 {
        let addr = p.addr;
        waiting.push(tokio::spawn(async move {
            get(&client(), addr, "app", "/").await
        }));
    }
    eventually("20 held requests", || {
        gauge(&p.proxy, "cutover_proxy_held_requests{service=\"web\"}") == Some(20)
    })
    .await;
    // The proxy's own health answers while everything waits.
    let health = get(&client(), p.addr, "app", "/_cutover/health").await;
    assert_eq!(health.status, StatusCode::OK);

    p.proxy.switch("web", vec![v2]);
    p.proxy.release("web");
    for answer in waiting {
        let answer = answer.await.expect("held request");
        assert_eq!((answer.status, answer.text()), (StatusCode::OK, "v2"));
    }
    assert_eq!(
        gauge(&p.proxy, "cutover_proxy_held_requests{service=\"web\"}"),
        Some(0)
    );
    assert!(!p.proxy.state().services["web"].held);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_never_released_answers_503_after_max_hold() {
    let v1 = upstream("v1").await;
    let p = start_web(test_config(), v1).await;
    p.proxy.hold("web", Duration::from_millis(200));

    let c = client();
    let began = Instant::now();
    let answer = get(&c, p.addr, "app", "/").await;
    let waited = began.elapsed();
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(answer.headers.contains_key(RETRY_AFTER));
    assert!(
        waited >= Duration::from_millis(190) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
    assert_eq!(
        get(&c, p.addr, "app", "/_cutover/health").await.status,
        StatusCode::OK
    );
    assert!(
        p.proxy
            .metrics()
            .contains("cutover_proxy_errors_total{service=\"web\",kind=\"hold_timeout\"} 1")
    );
    p.proxy.release("web");
    assert_eq!(get(&c, p.addr, "app", "/").await.text(), "v1");
    p.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 5. Maintenance

fn page(message: &str) -> MaintenancePage {
    MaintenancePage {
        html: "<h1>Down</h1><p>{{message}}</p><p>until {{until}}</p>".to_string(),
        retry_after_secs: 120,
        message: Some(message.to_string()),
        until: Some("14:00".to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_per_service_and_stack_wide() {
    let v1 = upstream("v1").await;
    let v2 = upstream("v2").await;
    let p = start(test_config()).await;
    p.proxy.set_routes(vec![
        route(Some("web.test"), None, "web"),
        route(Some("api.test"), None, "api"),
    ]);
    p.proxy.switch("web", vec![v1]);
    p.proxy.switch("api", vec![v2]);
    let c = client();

    p.proxy
        .maintenance(Some("web"), Some(page("Upgrading <db> & \"app\"")));
    let down = get(&c, p.addr, "web.test", "/").await;
    assert_eq!(down.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(down.headers[RETRY_AFTER], "120");
    assert_eq!(
        down.headers[hyper::header::CONTENT_TYPE],
        "text/html; charset=utf-8"
    );
    assert_eq!(
        down.text(),
        "<h1>Down</h1><p>Upgrading &lt;db&gt; &amp; &quot;app&quot;</p><p>until 14:00</p>"
    );
    assert_eq!(get(&c, p.addr, "api.test", "/").await.text(), "v2");

    p.proxy.maintenance(None, Some(page("whole stack")));
    let api = get(&c, p.addr, "api.test", "/").await;
    assert_eq!(api.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(api.text().contains("whole stack"));
    // The service's own page is more specific.
    assert!(
        get(&c, p.addr, "web.test", "/")
            .await
            .text()
            .contains("Upgrading")
    );
    assert_eq!(
        get(&c, p.addr, "x", "/_cutover/health").await.status,
        StatusCode::OK
    );
    assert_eq!(
        p.proxy.state().maintenance.map(|m| m.message),
        Some(Some("whole stack".to_string()))
    );

    p.proxy.maintenance(None, None);
    assert_eq!(get(&c, p.addr, "api.test", "/").await.text(), "v2");
    assert_eq!(
        get(&c, p.addr, "web.test", "/").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    p.proxy.maintenance(Some("web"), None);
    assert_eq!(get(&c, p.addr, "web.test", "/").await.text(), "v1");
    p.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 6. Limits, failures, streaming

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_over_the_limit_get_413() {
    let v1 = upstream("v1").await;
    let p = start_web(
        ProxyConfig {
            max_request_body: 1024,
            ..test_config()
        },
        v1,
    )
    .await;
    let c = client();

    let post = |body| {
        let mut req = request(p.addr, "app", "/count", body);
        *req.method_mut() = hyper::Method::POST;
        req
    };
    // Declared too large: refused before anything goes upstream.
    let answer = send(&c, post(full(vec![b'x'; 2048]))).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    // Chunked, found too large while streaming.
    let answer = send(&c, post(chunked(3, 1000))).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    // Under the limit, both ways.
    assert_eq!(send(&c, post(full(vec![b'x'; 1024]))).await.text(), "1024");
    assert_eq!(send(&c, post(chunked(2, 500))).await.text(), "1000");
    let metrics = p.proxy.metrics();
    assert!(
        metrics.contains("cutover_proxy_errors_total{service=\"web\",kind=\"body_too_large\"} 2"),
        "{metrics}"
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_is_down_gets_502_quickly_and_no_upstream_503() {
    let dead = dead_addr().await;
    // With the access log on, for once: failures write their cause to it.
    let p = start(ProxyConfig {
        access_log: true,
        ..test_config()
    })
    .await;
    p.proxy.set_routes(vec![
        route(None, Some("/dead"), "dead"),
        route(None, None, "empty"),
    ]);
    p.proxy.switch("dead", vec![dead]);
    let c = client();

    let began = Instant::now();
    let answer = get(&c, p.addr, "app", "/dead").await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert!(
        began.elapsed() < Duration::from_millis(500),
        "{:?}",
        began.elapsed()
    );
    assert!(!answer.body.is_empty());

    let answer = get(&c, p.addr, "app", "/").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.headers[RETRY_AFTER], "1");
    let metrics = p.proxy.metrics();
    assert!(metrics.contains("cutover_proxy_errors_total{service=\"dead\",kind=\"connect\"} 1"));
    assert!(
        metrics.contains("cutover_proxy_errors_total{service=\"empty\",kind=\"no_upstream\"} 1")
    );
    // Nothing stays counted in flight after a failure.
    assert_eq!(p.proxy.state().services["dead"].in_flight, 0);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upstream_gets_504_after_the_response_timeout() {
    let v1 = upstream("v1").await;
    let p = start_web(
        ProxyConfig {
            upstream_response_timeout: Duration::from_millis(200),
            ..test_config()
        },
        v1,
    )
    .await;
    let answer = get(&client(), p.addr, "app", "/slow?ms=2000").await;
    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(p.proxy.state().services["web"].in_flight, 0);
    p.stop().await;
}

/// A proxy in front of a `v1` upstream whose client connections close after `timeout` idle.
async fn start_idle_timeout(timeout: Duration) -> Running {
    let config = ProxyConfig {
        client_idle_timeout: timeout,
        ..test_config()
    };
    start_web(config, upstream("v1").await).await
}

/// Reads from `tcp` until the proxy closes it (EOF or reset); how long that took.
async fn closed_after(tcp: &mut (impl tokio::io::AsyncRead + Unpin), limit: Duration) -> Duration {
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(limit, tcp.read(&mut buf)).await {
            Err(_) => panic!("the connection was still open after {limit:?}"),
            Ok(Ok(0) | Err(_)) => return start.elapsed(),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_headers_is_cut_off_after_the_idle_timeout() {
    let timeout = Duration::from_millis(400);
    let p = start_idle_timeout(timeout).await;
    let connected = Instant::now();
    let mut tcp = TcpStream::connect(p.addr).await.expect("connect");
    let (mut rd, mut wr) = tcp.split();
    // Slowloris: part of a head, then a byte every 50 ms, never the blank line; the reading
    // side notices the close.
    wr.write_all(b"GET / HTTP/1.1\r\nHost: app\r\n")
        .await
        .expect("write");
    let trickle = async {
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if wr.write_all(b"X").await.is_err() {
                // Closed: the reader sees it too.
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = trickle => unreachable!(),
        _ = closed_after(&mut rd, Duration::from_secs(5)) => {}
    }
    let waited = connected.elapsed();
    assert!(waited >= timeout, "closed after {waited:?}");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_closes_but_a_long_request_is_not_idle() {
    let timeout = Duration::from_millis(300);
    let p = start_idle_timeout(timeout).await;
    let mut tcp = TcpStream::connect(p.addr).await.expect("connect");
    // A request that takes three times the idle timeout is answered on the same connection…
    tcp.write_all(b"GET /slow?ms=900 HTTP/1.1\r\nHost: app\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.ends_with(b"v1") {
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
            .await
            .expect("the slow answer in time")
            .expect("read");
        assert_ne!(n, 0, "closed while the request was in progress: {answer:?}");
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
    // …and then, with nothing more asked, the connection is closed after the timeout. The
    // proxy counts idle time from the end of its response; this client sees that end a
    // little later (seen: 0.2 ms), so its own count may fall short by the delivery time.
    let idle = closed_after(&mut tcp, Duration::from_secs(5)).await;
    assert!(
        idle + Duration::from_millis(25) >= timeout,
        "closed after {idle:?} idle"
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_body_slower_than_the_idle_timeout_is_not_cut() {
    let p = start_idle_timeout(Duration::from_millis(200)).await;
    // The head and the first byte come at once; the rest 3x the idle timeout later.
    let answer = get(&client(), p.addr, "app", "/drip?ms=600").await;
    assert_eq!((answer.status, answer.text()), (StatusCode::OK, "ab"));
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serve_dropped_unfinished_closes_its_connections() {
    let v1 = upstream("v1").await;
    let mut p = start_web(test_config(), v1).await;
    let mut tcp = TcpStream::connect(p.addr).await.expect("connect");
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 1024];
    let n = tcp.read(&mut buf).await.expect("read");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    // The keep-alive connection is idle; the serve is aborted rather than shut down.
    p.served.take().expect("serve task").abort();
    closed_after(&mut tcp, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_response_streams_through_intact() {
    let v1 = upstream("v1").await;
    let p = start_web(test_config(), v1).await;

    for c in [client(), h2_client()] {
        let answer = get(&c, p.addr, "app", "/big").await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.body.len(), BIG);
        let mismatch = answer
            .body
            .iter()
            .enumerate()
            .position(|(i, b)| *b != big_byte(i));
        assert_eq!(mismatch, None);
    }
    eventually("the big responses to finish", || {
        p.proxy.state().services["web"].in_flight == 0
    })
    .await;
    assert!(
        p.proxy
            .metrics()
            .contains("cutover_proxy_requests_total{service=\"web\",code=\"2xx\"} 2")
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_reused_and_closed_ones_are_not() {
    let v1 = upstream("v1").await;
    let p = start_web(test_config(), v1).await;
    let c = client();
    let idle = format!("cutover_proxy_upstream_idle_connections{{upstream=\"{v1}\"}}");

    for _ in 0..20 {
        assert_eq!(get(&c, p.addr, "app", "/").await.text(), "v1");
    }
    assert_eq!(gauge(&p.proxy, &idle), Some(1), "one connection, reused");
    // The upstream closes after each of these: every request still gets its answer.
    for _ in 0..20 {
        assert_eq!(get(&c, p.addr, "app", "/close").await.text(), "v1");
    }
    eventually("the closed connections to leave the pool", || {
        gauge(&p.proxy, &idle) == Some(0)
    })
    .await;
    assert_eq!(get(&c, p.addr, "app", "/").await.text(), "v1");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_closing_idle_connections_costs_no_request() {
    let up = closes_idle_connections(Duration::from_millis(100)).await;
    let p = start_web(test_config(), up).await;
    let c = client();
    for round in 0..5 {
        // Two on the same pooled connection, then a pause past the upstream's idle limit:
        // the next request finds that connection closed by the upstream.
        for _ in 0..2 {
            let a = get(&c, p.addr, "app", "/").await;
            assert_eq!(
                (a.status, a.text()),
                (StatusCode::OK, "ok"),
                "round {round}"
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let errors: u64 = p
        .proxy
        .metrics()
        .lines()
        .filter(|l| l.starts_with("cutover_proxy_errors_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(errors, 0, "no request failed:\n{}", p.proxy.metrics());
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_upstream_connections_close_after_the_idle_timeout_without_traffic() {
    let v1 = upstream("v1").await;
    let p = start_web(
        ProxyConfig {
            upstream_idle_timeout: Duration::from_millis(200),
            ..test_config()
        },
        v1,
    )
    .await;
    let idle = format!("cutover_proxy_upstream_idle_connections{{upstream=\"{v1}\"}}");
    assert_eq!(get(&client(), p.addr, "app", "/").await.text(), "v1");
    assert_eq!(gauge(&p.proxy, &idle), Some(1), "kept for reuse");
    // No request comes to pass by the pool: the sweep closes it.
    eventually("the idle connection to close", || {
        gauge(&p.proxy, &idle) == Some(0)
    })
    .await;
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_leaves_nothing_in_flight() {
    let v1 = upstream("v1").await;
    let p = start_web(test_config(), v1).await;

    let mut tcp = TcpStream::connect(p.addr).await.expect("connect");
    tcp.write_all(b"GET /slow?ms=300 HTTP/1.1\r\nHost: app\r\n\r\n")
        .await
        .expect("write");
    eventually("the request to be in flight", || {
        p.proxy.state().services["web"].in_flight == 1
    })
    .await;
    drop(tcp);
    eventually("the request to end", || {
        p.proxy.state().services["web"].in_flight == 0
    })
    .await;
    let report = p.proxy.drain(&[v1], Duration::from_secs(1)).await;
    assert!(report.drained());
    p.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 7. Upgrade

/// Opens an `Upgrade: echo` tunnel through the proxy at `addr`; the 101's head, lowercased.
async fn open_echo_tunnel(addr: SocketAddr) -> (TcpStream, String) {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(b"GET /ws HTTP/1.1\r\nHost: app\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
        .await
        .expect("write");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tcp.read_exact(&mut byte).await.expect("read head");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).expect("utf-8").to_ascii_lowercase();
    (tcp, head)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_are_tunnelled_and_counted_in_flight_until_closed() {
    let v1 = upstream("v1").await;
    let p = start_web(test_config(), v1).await;

    let (mut tcp, head) = open_echo_tunnel(p.addr).await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");

    for message in [&b"hello"[..], b"through the proxy"] {
        tcp.write_all(message).await.expect("write");
        let mut echoed = vec![0u8; message.len()];
        tcp.read_exact(&mut echoed).await.expect("echo");
        assert_eq!(echoed, message);
    }
    assert_eq!(p.proxy.state().services["web"].in_flight, 1);
    // A drain waits on the open tunnel.
    let report = p.proxy.drain(&[v1], Duration::from_millis(50)).await;
    assert_eq!(report.in_flight, 1);
    drop(tcp);
    let report = p.proxy.drain(&[v1], Duration::from_secs(5)).await;
    assert!(report.drained(), "{report:?}");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_tunnel_is_cut_when_the_shutdown_grace_runs_out() {
    let v1 = upstream("v1").await;
    let grace = Duration::from_millis(300);
    let p = start_web(
        ProxyConfig {
            shutdown_grace: grace,
            ..test_config()
        },
        v1,
    )
    .await;
    let (mut tcp, head) = open_echo_tunnel(p.addr).await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    let stopping = Instant::now();
    p.stop().await;
    // The tunnel was waited on for the grace period, then closed.
    let waited = stopping.elapsed();
    assert!(waited >= grace, "stopped after {waited:?}");
    closed_after(&mut tcp, Duration::from_secs(5)).await;
}

// ---------------------------------------------------------------------------------------------
// 8. HTTP/2

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_prior_knowledge_clients_are_served() {
    let v1 = upstream("v1").await;
    let v2 = upstream("v2").await;
    let p = start(test_config()).await;
    p.proxy.set_routes(vec![
        route(None, None, "web"),
        route(Some("api.test"), None, "api"),
    ]);
    p.proxy.switch("web", vec![v1]);
    p.proxy.switch("api", vec![v2]);
    let c = h2_client();

    let answer = get(&c, p.addr, "app", "/").await;
    assert_eq!((answer.status, answer.text()), (StatusCode::OK, "v1"));
    // HTTP/2 routes on :authority. api.test does not resolve: connect to the proxy by hand.
    let stream = TcpStream::connect(p.addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let req = Request::builder()
        .uri(format!("http://api.test:{}/headers", p.addr.port()))
        .body(empty())
        .expect("request");
    let resp = sender.send_request(req).await.expect("h2 response");
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    let seen: BTreeMap<String, String> = serde_json::from_slice(&body).expect("json");
    assert_eq!(seen["host"], format!("api.test:{}", p.addr.port()));
    assert_eq!(
        seen["x-forwarded-host"],
        format!("api.test:{}", p.addr.port())
    );

    // Many streams on one connection at once.
    let mut many = Vec::new();
    for _ in 0..50 {
        let c = c.clone();
        let addr = p.addr;
        many.push(tokio::spawn(async move {
            get(&c, addr, "app", "/slow?ms=50").await
        }));
    }
    for answer in many {
        assert_eq!(answer.await.expect("stream").text(), "v1");
    }
    p.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 9. State and metrics

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_round_trips_and_metrics_count() {
    let v1 = upstream("v1").await;
    let v2 = upstream("v2").await;
    let p = start(test_config()).await;
    p.proxy.set_routes(vec![
        route(Some("web.test"), Some("/"), "web"),
        route(None, Some("/api"), "api"),
    ]);
    p.proxy.switch("web", vec![v1, v2]);
    p.proxy.switch("api", vec![v2]);
    p.proxy.hold("api", Duration::from_secs(1));
    p.proxy.maintenance(Some("web"), Some(page("soon")));
    p.proxy.maintenance(None, Some(page("stack")));

    let state = p.proxy.state();
    let expected = ProxyState {
        routes: vec![
            route(Some("web.test"), Some("/"), "web"),
            route(None, Some("/api"), "api"),
        ],
        services: BTreeMap::from([
            (
                "api".to_string(),
                ServiceState {
                    upstreams: vec![v2],
                    held: true,
                    maintenance: None,
                    in_flight: 0,
                },
            ),
            (
                "web".to_string(),
                ServiceState {
                    upstreams: vec![v1, v2],
                    held: false,
                    maintenance: Some(page("soon")),
                    in_flight: 0,
                },
            ),
        ]),
        maintenance: Some(page("stack")),
    };
    assert_eq!(state, expected);
    let json = serde_json::to_string(&state).expect("serialize");
    let back: ProxyState = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(back, state);

    let restored = start(test_config()).await;
    restored.proxy.restore_state(back);
    assert_eq!(restored.proxy.state(), state);

    // Restoring replaces: what the new state does not name is gone.
    restored.proxy.restore_state(ProxyState {
        routes: vec![route(None, None, "web")],
        services: BTreeMap::from([(
            "web".to_string(),
            ServiceState {
                upstreams: vec![v1],
                ..ServiceState::default()
            },
        )]),
        maintenance: None,
    });
    let now = restored.proxy.state();
    assert_eq!(now.services.keys().collect::<Vec<_>>(), ["web"]);
    assert_eq!(now.maintenance, None);
    let c = client();
    for _ in 0..3 {
        assert_eq!(get(&c, restored.addr, "any", "/").await.text(), "v1");
    }
    restored
        .proxy
        .set_routes(vec![route(Some("only.test"), None, "web")]);
    assert_eq!(
        get(&c, restored.addr, "else", "/").await.status,
        StatusCode::NOT_FOUND
    );

    let metrics = restored.proxy.metrics();
    for line in [
        "# TYPE cutover_proxy_requests_total counter",
        "cutover_proxy_requests_total{service=\"web\",code=\"2xx\"} 3",
        "cutover_proxy_unrouted_requests_total 1",
        "cutover_proxy_errors_total{service=\"web\",kind=\"connect\"} 0",
        "# TYPE cutover_proxy_request_duration_seconds histogram",
        "cutover_proxy_request_duration_seconds_count{service=\"web\"} 3",
        "cutover_proxy_held_requests{service=\"web\"} 0",
        "cutover_proxy_in_flight{service=\"web\"} 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing `{line}` in\n{metrics}"
        );
    }
    assert!(
        metrics.contains(
            "cutover_proxy_request_duration_seconds_bucket{service=\"web\",le=\"+Inf\"} 3"
        )
    );

    p.stop().await;
    restored.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Shutdown

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_in_flight_requests_finish() {
    let v1 = upstream("v1").await;
    let p = start_web(test_config(), v1).await;
    let addr = p.addr;
    let slow = tokio::spawn(async move { get(&client(), addr, "app", "/slow?ms=500").await });
    let proxy = p.proxy.clone();
    eventually("the slow request to be in flight", || {
        proxy.state().services["web"].in_flight == 1
    })
    .await;
    let began = Instant::now();
    p.stop().await;
    // It waited for the slow request, and no longer: the idle keep-alive connection it left
    // was closed, not waited on for the whole grace period (2 s here).
    let waited = began.elapsed();
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_millis(1500),
        "{waited:?}"
    );
    assert_eq!(slow.await.expect("slow").text(), "v1");
    // The listener is closed.
    assert!(TcpStream::connect(addr).await.is_err());
}

/// TLS termination: a client that trusts the stack's certificate reaches the upstream over
/// HTTPS (HTTP/1.1 or HTTP/2 by ALPN), and the upstream learns the request was `https`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_terminated_with_the_stacks_certificate() {
    use tokio_rustls::rustls;
    let v1 = upstream("v1").await;
    let certified = rcgen::generate_simple_self_signed(vec!["app.test".to_string()]).expect("cert");
    let dir = tempfile::tempdir().expect("tmp");
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, certified.cert.pem()).expect("cert");
    std::fs::write(&key_path, certified.signing_key.serialize_pem()).expect("key");
    let acceptor = cutover_proxy::proxy::tls_acceptor(&cert_path, &key_path).expect("acceptor");
    assert!(
        cutover_proxy::proxy::tls_acceptor(&key_path, &key_path).is_err(),
        "a key is not a certificate"
    );

    let proxy = Proxy::new(test_config());
    proxy.set_routes(vec![RouteSpec {
        host: None,
        path_prefix: None,
        service: "app".into(),
    }]);
    proxy.switch("app", vec![v1]);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let served = proxy.clone();
    tokio::spawn(async move {
        let _ = served
            .serve_tls(listener, acceptor, std::future::pending::<()>())
            .await;
    });

    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).expect("root");
    for alpn in [b"http/1.1".to_vec(), b"h2".to_vec()] {
        let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
        config.alpn_protocols = vec![alpn.clone()];
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let name = rustls::pki_types::ServerName::try_from("app.test").expect("name");
        let tls = connector.connect(name, tcp).await.expect("TLS handshake");
        let req = Request::builder()
            .uri("https://app.test/headers")
            .header(HOST, "app.test")
            .body(Empty::<Bytes>::new())
            .expect("request");
        let resp = if alpn == b"h2" {
            let (mut send, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                    .await
                    .expect("h2");
            tokio::spawn(conn);
            send.send_request(req).await.expect("response")
        } else {
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .expect("http/1.1");
            tokio::spawn(conn);
            send.send_request(req).await.expect("response")
        };
        assert_eq!(resp.status(), StatusCode::OK);
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("\"x-forwarded-proto\":\"https\""), "{text}");
    }
}
