//! `cutover serve`: the stack's traffic proxy, in the foreground (run it under systemd or
//! a container restart policy). Routes come from the stack file's `traffic:`; upstreams and
//! holds from the store, where every change the engine makes is saved before it is
//! acknowledged. On start, saved upstreams are checked (TCP connect) before traffic flows;
//! a service with none left answering gets its running containers from the engine.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, anyhow};
use cutover_proxy::admin;
use cutover_proxy::proxy::{Proxy, ProxyConfig, ProxyState, RouteSpec};

use crate::cli::Cli;
use crate::commands;
use crate::exit::{self, with_code};
use crate::traffic;

pub fn run(cli: &Cli, access_log: bool, metrics_listen: Option<SocketAddr>) -> anyhow::Result<u8> {
    let loaded = commands::load(cli, &[])?;
    let stack = loaded.stack;
    let Some(t) = stack.traffic.clone() else {
        return Err(with_code(
            exit::INVALID,
            anyhow!(
                "stack `{}` has no `traffic:` section: there is nothing to serve",
                stack.name
            ),
        ));
    };
    let store = commands::open_store(cli, &stack.name)?;
    let saved: Option<ProxyState> = store
        .proxy_state()?
        .map(|j| serde_json::from_str(&j))
        .transpose()
        .context("the saved proxy state is unreadable")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;

    let proxy = Proxy::new(ProxyConfig {
        access_log,
        ..ProxyConfig::default()
    });
    let routes: Vec<RouteSpec> = t
        .routes
        .iter()
        .map(|r| RouteSpec {
            host: r.host.clone(),
            path_prefix: r.path.clone(),
            service: r.service.clone(),
        })
        .collect();
    if let Some(mut state) = saved {
        // Routes are the stack file's; upstreams, holds and pages are what was saved.
        state.routes = routes.clone();
        proxy.restore_state(state);
    }
    proxy.set_routes(routes.clone());

    rt.block_on(async {
        // Upstreams must answer before traffic goes to them.
        let state = proxy.state();
        let docker = cutover_docker::Runtime::connect().await.ok();
        for r in &routes {
            let saved = state
                .services
                .get(&r.service)
                .map(|s| s.upstreams.clone())
                .unwrap_or_default();
            let mut alive = Vec::new();
            for a in saved {
                if answers(a).await {
                    alive.push(a);
                } else {
                    eprintln!(
                        "cutover serve: `{}`: saved upstream {a} does not answer; dropped",
                        r.service
                    );
                }
            }
            if alive.is_empty()
                && let Some(d) = &docker
            {
                let port = stack.services.get(&r.service).and_then(|s| s.port);
                for c in d.containers(&stack.name).await.unwrap_or_default() {
                    if c.service == r.service && c.running() {
                        for (p, a) in &c.published {
                            if port.is_none_or(|want| *p == want) && answers(*a).await {
                                alive.push(*a);
                            }
                        }
                    }
                }
            }
            eprintln!(
                "cutover serve: `{}` → {}",
                r.service,
                if alive.is_empty() {
                    "no upstream yet".to_string()
                } else {
                    format!("{alive:?}")
                }
            );
            proxy.switch(&r.service, alive);
        }
    });

    let store = Arc::new(Mutex::new(store));
    let save = {
        let store = Arc::clone(&store);
        move |state: &ProxyState| -> Result<(), String> {
            let json = serde_json::to_string(state).map_err(|e| e.to_string())?;
            let store = store
                .lock()
                .map_err(|_| "the store lock is poisoned".to_string())?;
            store.set_proxy_state(&json).map_err(|e| e.to_string())
        }
    };
    save(&proxy.state()).map_err(|e| anyhow!(e))?;
    let on_change: admin::OnChange = Arc::new(save);

    let listen: SocketAddr = t
        .listen
        .parse()
        .with_context(|| format!("traffic.listen `{}` is not an address:port", t.listen))?;
    let socket = traffic::socket_path(&commands::state_dir(cli));
    // A certificate that cannot be read is bad input, found before anything listens.
    let tls = t
        .tls
        .as_ref()
        .map(|tls| {
            cutover_proxy::proxy::tls_acceptor(
                std::path::Path::new(&tls.cert),
                std::path::Path::new(&tls.key),
            )
        })
        .transpose()
        .map_err(|e| with_code(exit::INVALID, anyhow!("traffic.tls: {e}")))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let metrics_listener = match metrics_listen {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} for the metrics"))?,
            ),
            None => None,
        };
        eprintln!(
            "cutover serve: stack `{}` on {scheme}://{listen}, control socket {}",
            stack.name,
            socket.display()
        );
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let metrics_task = metrics_listener.map(|l| {
            if let Ok(addr) = l.local_addr() {
                eprintln!("cutover serve: metrics on http://{addr}/metrics");
            }
            let (proxy, mut stop) = (proxy.clone(), stop_rx.clone());
            tokio::spawn(admin::serve_metrics(l, proxy, async move {
                let _ = stop.changed().await;
            }))
        });
        let admin_proxy = proxy.clone();
        let admin_socket = socket.clone();
        let mut admin_stop = stop_rx.clone();
        let admin_task = tokio::spawn(async move {
            admin::serve(&admin_socket, admin_proxy, on_change, async move {
                let _ = admin_stop.changed().await;
            })
            .await
        });
        let mut serve_stop = stop_rx.clone();
        let stop = async move {
            let _ = serve_stop.changed().await;
        };
        let serving = async {
            match tls {
                Some(acceptor) => proxy.serve_tls(listener, acceptor, stop).await,
                None => proxy.serve(listener, stop).await,
            }
        };
        tokio::pin!(serving);
        tokio::select! {
            r = &mut serving => r.context("the proxy stopped")?,
            _ = shutdown_signal() => {
                eprintln!("cutover serve: stopping, letting requests in flight finish");
                let _ = stop_tx.send(true);
                let _ = tokio::time::timeout(Duration::from_secs(30), &mut serving).await;
            }
        }
        let _ = stop_tx.send(true);
        let _ = admin_task.await;
        if let Some(task) = metrics_task {
            let _ = task.await;
        }
        let _ = std::fs::remove_file(&socket);
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(exit::OK)
}

async fn answers(addr: SocketAddr) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
