//! The proxy's control API, on a unix socket only its owner may open (mode 0600): the
//! engine switches, drains, holds and turns maintenance on and off through it. JSON in,
//! JSON out; every change is handed to `on_change` (which persists it) before it is
//! acknowledged, so an acknowledged switch survives a restart of the proxy.
//!
//! [`serve_metrics`] offers the one read-only route a Prometheus server needs, `GET /metrics`,
//! on a TCP address, since a scraper cannot open a unix socket.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::proxy::{MaintenancePage, Proxy, ProxyState};

/// Called with the new state after every change; an error fails the request.
pub type OnChange = Arc<dyn Fn(&ProxyState) -> Result<(), String> + Send + Sync>;

#[derive(Clone)]
struct Ctx {
    proxy: Proxy,
    on_change: OnChange,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SwitchRequest {
    pub upstreams: Vec<SocketAddr>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SwitchResponse {
    pub previous: Vec<SocketAddr>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DrainRequest {
    pub upstreams: Vec<SocketAddr>,
    pub timeout_ms: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DrainResponse {
    /// Requests still in flight when the drain ended (0: drained).
    pub in_flight: u64,
    pub waited_ms: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct HoldRequest {
    pub max_hold_ms: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct MaintenanceRequest {
    /// `None`: every route of the stack.
    pub service: Option<String>,
    /// `None`: off.
    pub page: Option<MaintenancePage>,
}

struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

fn persist(ctx: &Ctx) -> Result<(), ApiError> {
    (ctx.on_change)(&ctx.proxy.state()).map_err(|e| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot persist: {e}"),
        )
    })
}

async fn state(State(ctx): State<Ctx>) -> Json<ProxyState> {
    Json(ctx.proxy.state())
}

/// The Prometheus text exposition format's media type.
const EXPOSITION: &str = "text/plain; version=0.0.4; charset=utf-8";

async fn metrics(State(ctx): State<Ctx>) -> impl IntoResponse {
    exposition(&ctx.proxy)
}

fn exposition(proxy: &Proxy) -> impl IntoResponse + use<> {
    (
        [(axum::http::header::CONTENT_TYPE, EXPOSITION)],
        proxy.metrics(),
    )
}

async fn switch(
    State(ctx): State<Ctx>,
    UrlPath(service): UrlPath<String>,
    Json(req): Json<SwitchRequest>,
) -> Result<Json<SwitchResponse>, ApiError> {
    let previous = ctx.proxy.switch(&service, req.upstreams);
    persist(&ctx)?;
    Ok(Json(SwitchResponse { previous }))
}

async fn drain(State(ctx): State<Ctx>, Json(req): Json<DrainRequest>) -> Json<DrainResponse> {
    let report = ctx
        .proxy
        .drain(&req.upstreams, Duration::from_millis(req.timeout_ms))
        .await;
    Json(DrainResponse {
        in_flight: report.in_flight,
        waited_ms: u64::try_from(report.elapsed.as_millis()).unwrap_or(u64::MAX),
    })
}

async fn hold(
    State(ctx): State<Ctx>,
    UrlPath(service): UrlPath<String>,
    Json(req): Json<HoldRequest>,
) -> Result<StatusCode, ApiError> {
    ctx.proxy
        .hold(&service, Duration::from_millis(req.max_hold_ms));
    persist(&ctx)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn release(
    State(ctx): State<Ctx>,
    UrlPath(service): UrlPath<String>,
) -> Result<StatusCode, ApiError> {
    ctx.proxy.release(&service);
    persist(&ctx)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn maintenance(
    State(ctx): State<Ctx>,
    Json(req): Json<MaintenanceRequest>,
) -> Result<StatusCode, ApiError> {
    ctx.proxy.maintenance(req.service.as_deref(), req.page);
    persist(&ctx)?;
    Ok(StatusCode::NO_CONTENT)
}

/// The control API's routes.
pub fn router(proxy: Proxy, on_change: OnChange) -> Router {
    Router::new()
        .route("/state", get(state))
        .route("/metrics", get(metrics))
        .route("/services/{service}/upstreams", put(switch))
        .route("/services/{service}/hold", post(hold))
        .route("/services/{service}/release", post(release))
        .route("/drain", post(drain))
        .route("/maintenance", put(maintenance))
        .with_state(Ctx { proxy, on_change })
}

/// Serves `GET /metrics` alone (plain HTTP/1.1) on `listener` until `shutdown`: nothing that
/// reads the routes' state in detail or changes the proxy is reachable this way.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    proxy: Proxy,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let proxy = proxy.clone();
            async move { exposition(&proxy) }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Serves the control API on `socket` (replacing a stale socket file) until `shutdown`.
pub async fn serve(
    socket: &Path,
    proxy: Proxy,
    on_change: OnChange,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = tokio::net::UnixListener::bind(socket)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    axum::serve(listener, router(proxy, on_change))
        .with_graceful_shutdown(shutdown)
        .await
}
