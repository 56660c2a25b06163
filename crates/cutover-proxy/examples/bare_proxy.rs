//! The data plane alone, for profiling and A/B measurements of the proxy's CPU cost:
//! `bare_proxy LISTEN UPSTREAM` proxies every request on LISTEN to UPSTREAM, with the
//! allocator and runtime `cutover serve` uses, and nothing else (no stack, store or admin
//! socket; access log off). Runs until Ctrl-C.
//!
//! ```text
//! cargo build --release -p cutover-proxy --example bare_proxy
//! target/release/examples/bare_proxy 127.0.0.1:8081 127.0.0.1:8080
//! ```

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
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let ctrl_c = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        proxy.serve(listener, ctrl_c).await
    })?;
    Ok(())
}
