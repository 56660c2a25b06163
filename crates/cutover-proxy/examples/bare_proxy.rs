//! The data plane alone, for profiling and A/B measurements of the proxy's CPU cost:
//! `bare_proxy LISTEN UPSTREAM` proxies every request on LISTEN to UPSTREAM, with the
//! allocator and runtime `cutover serve` uses, and nothing else (no stack, store or admin
//! socket; access log off). Runs until Ctrl-C.
//!
//! ```text
//! cargo build --release -p cutover-proxy --example bare_proxy
//! target/release/examples/bare_proxy 127.0.0.1:8081 127.0.0.1:8080
//! ```
//!
//! `BARE_MODE` picks the runtime's shape, to compare them: `mt` (the default, as `cutover
//! serve`: tokio's multi-threaded runtime, a worker per core), `mt1` (the same with one
//! worker), `percore` (one current-thread runtime per core, each accepting on a copy of the
//! listening socket, like nginx's worker processes). `percore` does not stop on Ctrl-C.

use std::net::SocketAddr;

use cutover_proxy::proxy::{Proxy, ProxyConfig, RouteSpec};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream), None) = (args.next(), args.next(), args.next()) else {
        return Err("usage: bare_proxy LISTEN UPSTREAM".into());
    };
    let listen: SocketAddr = listen.parse()?;
    let upstream: SocketAddr = upstream.parse()?;
    let proxy = Proxy::new(ProxyConfig {
        access_log: false,
        ..ProxyConfig::default()
    });
    proxy.set_routes(vec![RouteSpec {
        host: None,
        path_prefix: None,
        service: "app".to_string(),
    }]);
    proxy.switch("app", vec![upstream]);
    let mode = std::env::var("BARE_MODE").unwrap_or_else(|_| "mt".to_string());
    if mode == "percore" {
        let listener = std::net::TcpListener::bind(listen)?;
        listener.set_nonblocking(true)?;
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let mut threads = Vec::new();
        for _ in 0..cores {
            let (listener, proxy) = (listener.try_clone()?, proxy.clone());
            threads.push(std::thread::spawn(move || -> std::io::Result<()> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async {
                    let listener = tokio::net::TcpListener::from_std(listener)?;
                    proxy.serve(listener, std::future::pending()).await
                })
            }));
        }
        for t in threads {
            t.join().map_err(|_| "a runtime thread panicked")??;
        }
        return Ok(());
    }
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if mode == "mt1" {
        b.worker_threads(1);
    }
    let rt = b.enable_all().build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let ctrl_c = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        proxy.serve(listener, ctrl_c).await
    })?;
    Ok(())
}
