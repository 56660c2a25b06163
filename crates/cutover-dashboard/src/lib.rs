//! The dashboard: a web control plane for a team over the stacks of one host.
//!
//! Pages (server-rendered with maud, a little hand-written JS for live updates) and an HTTP
//! API under `/api/v1` (documented by an OpenAPI file generated from the code, [`api::ApiDoc`])
//! over the same actions ([`actions`]): plan, apply, rollback with or without data,
//! maintenance, abort, resume, approvals, restore points, history and the audit log.
//!
//! Who may do what is [`auth`]: local users with argon2 password hashes, API tokens, or a
//! trusted proxy's header, each with a role; sessions are HttpOnly SameSite cookies and every
//! state-changing request with ambient credentials carries its CSRF token. People, tokens,
//! sessions and the audit log live in the dashboard's own directory ([`home`]).
//!
//! Reads come from each stack's store; changes are the `cutover` binary run with the person
//! as its actor ([`stacks::Cutover`]), so an operation started here is the same as one
//! started at a terminal, and one started at a terminal is followed here the same way
//! ([`events`]).

pub mod actions;
pub mod api;
pub mod auth;
pub mod events;
pub mod home;
pub mod pages;
pub mod stacks;
pub mod timeline;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::auth::{Denied, LoginLimiter, TrustedHeader};
use crate::home::Home;
use crate::stacks::{Cutover, StackRef};

/// Everything a request can reach.
pub struct App {
    pub home: Mutex<Home>,
    pub stacks: Vec<StackRef>,
    pub cutover: Cutover,
    pub trusted: Option<TrustedHeader>,
    /// Cookies are `Secure` when the dashboard serves TLS.
    pub tls: bool,
    pub limiter: Mutex<LoginLimiter>,
}

impl App {
    pub fn home(&self) -> MutexGuard<'_, Home> {
        self.home.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn stack(&self, name: &str) -> Result<&StackRef, Failure> {
        self.stacks.iter().find(|s| s.name == name).ok_or_else(|| {
            Failure::new(
                StatusCode::NOT_FOUND,
                format!("no stack named `{name}` is served here"),
            )
        })
    }
}

/// Why a request failed: the status and a message for a person.
#[derive(Debug, Clone)]
pub struct Failure {
    pub status: StatusCode,
    pub message: String,
}

impl Failure {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Failure {
        Failure {
            status,
            message: message.into(),
        }
    }

    pub fn internal(message: impl Into<String>) -> Failure {
        Failure::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl From<Denied> for Failure {
    fn from(d: Denied) -> Failure {
        match d {
            Denied::Unauthenticated(m) => Failure::new(StatusCode::UNAUTHORIZED, m),
            Denied::Forbidden(m) => Failure::new(StatusCode::FORBIDDEN, m),
            Denied::Csrf => Failure::new(
                StatusCode::FORBIDDEN,
                "the request has no valid CSRF token: reload the page and try again",
            ),
        }
    }
}

impl From<home::HomeError> for Failure {
    fn from(e: home::HomeError) -> Failure {
        Failure::internal(e.to_string())
    }
}

/// The API's error body: `{"error": {"status": 403, "message": "…"}}`.
impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            axum::Json(serde_json::json!({
                "error": { "status": self.status.as_u16(), "message": self.message }
            })),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"cutover\""),
            );
        }
        r
    }
}

/// The whole site: pages and the API.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .merge(pages::routes())
        .nest("/api/v1", api::routes())
        .with_state(app)
}

/// How the dashboard listens.
pub struct Listen {
    pub addr: SocketAddr,
    /// TLS certificate chain and key (PEM files); plain HTTP without.
    pub tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

/// Serves until `shutdown` resolves; `ready` gets the bound address.
pub async fn serve(
    app: Arc<App>,
    listen: Listen,
    ready: impl FnOnce(SocketAddr),
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), String> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto::Builder;
    use tower::ServiceExt;

    let acceptor = match &listen.tls {
        // The same TLS setup as the proxy's (rustls, ring, safe defaults).
        Some((cert, key)) => Some(cutover_proxy::proxy::tls_acceptor(cert, key)?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(listen.addr)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", listen.addr))?;
    let bound = listener
        .local_addr()
        .map_err(|e| format!("cannot read the bound address: {e}"))?;
    ready(bound);
    let router = router(app);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                // A full file table or an aborted handshake: the next accept may succeed.
                Err(_) => { tokio::time::sleep(std::time::Duration::from_millis(50)).await; continue; }
            },
        };
        let service =
            router
                .clone()
                .map_request(move |req: axum::http::Request<hyper::body::Incoming>| {
                    let mut req = req.map(axum::body::Body::new);
                    req.extensions_mut().insert(ConnectInfo(peer));
                    req
                });
        let service = hyper_util::service::TowerToHyperService::new(service);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let builder = Builder::new(TokioExecutor::new());
            match acceptor {
                Some(acceptor) => {
                    // A handshake gets 10 s.
                    let Ok(Ok(tls)) = tokio::time::timeout(
                        std::time::Duration::from_secs(10),
                        acceptor.accept(tcp),
                    )
                    .await
                    else {
                        return;
                    };
                    let _ = builder
                        .serve_connection_with_upgrades(TokioIo::new(tls), service)
                        .await;
                }
                None => {
                    let _ = builder
                        .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                        .await;
                }
            }
        });
    }
}
