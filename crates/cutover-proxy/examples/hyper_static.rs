//! The floor under `bare_proxy`: hyper's HTTP/1 server alone, on the runtime and allocator
//! `cutover serve` uses, answering every request itself with `200 v1\n` (no upstream). Set
//! against nginx answering the same with `return 200`, it shows what hyper and tokio cost per
//! request next to nginx's event loop, before any proxying. Runs until killed.
//!
//! ```text
//! cargo build --release -p cutover-proxy --example hyper_static
//! target/release/examples/hyper_static 127.0.0.1:8082
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), None) = (args.next(), args.next()) else {
        return Err("usage: hyper_static LISTEN".into());
    };
    let listen: SocketAddr = listen.parse()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = service_fn(|_req: Request<hyper::body::Incoming>| async {
                    let mut response = Response::new(Full::new(Bytes::from_static(b"v1\n")));
                    response.headers_mut().insert(
                        hyper::header::CONTENT_TYPE,
                        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
                    );
                    Ok::<_, Infallible>(response)
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}
