//! The floor under `bare_proxy`'s proxying: hyper's HTTP/1 server and client joined with
//! nothing of ours between them, on the runtime and allocator `cutover serve` uses. Each
//! client connection gets its own upstream connection (opened on accept, driven by a task of
//! its own as hyper's documentation does it); each request goes to it as it came (no routing,
//! no header rewriting, no timers, no metrics) and its response comes back as it came. What
//! this costs per request against nginx is what any hyper-based proxy starts from.
//!
//! ```text
//! cargo build --release -p cutover-proxy --example hyper_floor
//! target/release/examples/hyper_floor 127.0.0.1:8083 127.0.0.1:8080
//! ```

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use hyper::Request;
use hyper::body::Incoming;
use hyper::client::conn::http1 as client;
use hyper::server::conn::http1 as server;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Sender = client::SendRequest<Incoming>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream), None) = (args.next(), args.next(), args.next()) else {
        return Err("usage: hyper_floor LISTEN UPSTREAM".into());
    };
    let listen: SocketAddr = listen.parse()?;
    let upstream: SocketAddr = upstream.parse()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let Ok(up) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = up.set_nodelay(true);
                let Ok((sender, connection)) = client::handshake(TokioIo::new(up)).await else {
                    return;
                };
                tokio::spawn(connection);
                // HTTP/1 answers one request at a time, so the sender is only ever taken by
                // one request; the mutex is never contended.
                let sender: Arc<Mutex<Option<Sender>>> = Arc::new(Mutex::new(Some(sender)));
                let service = service_fn(move |req: Request<Incoming>| {
                    let sender = sender.clone();
                    async move {
                        let taken = sender.lock().unwrap_or_else(PoisonError::into_inner).take();
                        let Some(mut s) = taken else {
                            return Err("no upstream connection");
                        };
                        if s.ready().await.is_err() {
                            return Err("upstream connection closed");
                        }
                        let response = s.send_request(req);
                        *sender.lock().unwrap_or_else(PoisonError::into_inner) = Some(s);
                        response.await.map_err(|_| "upstream failed")
                    }
                });
                let _ = server::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}
