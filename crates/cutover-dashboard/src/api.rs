//! The HTTP API under `/api/v1`: JSON in the shapes `-o json` prints (docs/json.md), errors
//! as `{"error": {"status", "message"}}`, an operation's journal as Server-Sent Events.
//! [`ApiDoc`] is the OpenAPI description, generated from these handlers; `docs/openapi.json`
//! is it, checked by a test.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::actions::{self, DataChoice, PlanFormat};
use crate::auth::{Principal, authenticate, check_csrf};
use crate::{App, Failure};

type Shared = Arc<App>;

/// The person behind an API request; a request that changes something with a session
/// cookie must send `X-CSRF-Token` (a bearer token needs none).
pub struct Who(pub Principal);

impl FromRequestParts<Shared> for Who {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, app: &Shared) -> Result<Who, Failure> {
        let who = principal(parts, app)?;
        check_csrf(&app.home(), &who, &parts.method, &parts.headers, None)?;
        Ok(Who(who))
    }
}

/// Who is asking, without the CSRF check (pages check their form's token).
pub fn principal(parts: &Parts, app: &App) -> Result<Principal, Failure> {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    Ok(authenticate(
        &app.home(),
        app.trusted.as_ref(),
        &parts.headers,
        peer,
    )?)
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "cutover dashboard API",
        description = "The stacks of one host: plans, upgrades, rollbacks with data, approvals, restore points, history and the audit log. Authenticate with `Authorization: Bearer TOKEN` (`cutover token create`), or a session cookie plus `X-CSRF-Token` on every POST.",
        version = "1"
    ),
    servers((url = "/api/v1")),
    paths(
        me, stacks, stack, releases, operations, operation, events, plan, checklist, apply,
        rollback, resume, abort, maintenance, approve, reject, restore_points, verify, audit
    ),
    components(schemas(
        Changes, RollbackRequest, MaintenanceRequest, DecisionRequest, OperationStarted,
        Message, ErrorBody, ErrorDetail, Me, crate::home::AuditEntry, crate::auth::Role,
        DataChoice
    )),
    modifiers(&Security),
    security(("bearer" = []), ("session" = []))
)]
pub struct ApiDoc;

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme,
        };
        let c = api.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        c.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(
                crate::auth::SESSION_COOKIE,
            ))),
        );
    }
}

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/openapi.json", get(openapi))
        .route("/me", get(me))
        .route("/stacks", get(stacks))
        .route("/stacks/{stack}", get(stack))
        .route("/stacks/{stack}/releases", get(releases))
        .route("/stacks/{stack}/operations", get(operations))
        .route("/stacks/{stack}/operations/{id}", get(operation))
        .route("/stacks/{stack}/operations/{id}/events", get(events))
        .route("/stacks/{stack}/operations/{id}/approve", post(approve))
        .route("/stacks/{stack}/operations/{id}/reject", post(reject))
        .route("/stacks/{stack}/plan", post(plan))
        .route("/stacks/{stack}/checklist", post(checklist))
        .route("/stacks/{stack}/apply", post(apply))
        .route("/stacks/{stack}/rollback", post(rollback))
        .route("/stacks/{stack}/resume", post(resume))
        .route("/stacks/{stack}/abort", post(abort))
        .route("/stacks/{stack}/maintenance", post(maintenance))
        .route("/stacks/{stack}/restore-points", get(restore_points))
        .route("/stacks/{stack}/restore-points/verify", post(verify))
        .route("/audit", get(audit))
}

async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        ApiDoc::openapi().to_pretty_json().unwrap_or_default(),
    )
        .into_response()
}

/// The error body.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    pub status: u16,
    pub message: String,
}

/// Changes to plan or apply: `--set` values.
#[derive(Deserialize, Serialize, ToSchema, Default)]
pub struct Changes {
    /// `SERVICE.image=REF`, `SERVICE.env.KEY=VALUE`, `vars.NAME=VALUE`, …
    #[serde(default)]
    #[schema(example = json!(["app.image=cutover-demo:v2"]))]
    pub set: Vec<String>,
}

#[derive(Deserialize, Serialize, ToSchema)]
pub struct RollbackRequest {
    /// The release to go back to.
    pub revision: u64,
    /// `restore` puts the data back as it was in that release too; `keep` (the default)
    /// changes images only.
    #[serde(default = "keep")]
    pub data: DataChoice,
}

fn keep() -> DataChoice {
    DataChoice::Keep
}

#[derive(Deserialize, Serialize, ToSchema)]
pub struct MaintenanceRequest {
    pub on: bool,
    /// The message on the maintenance page.
    pub message: Option<String>,
}

#[derive(Deserialize, Serialize, ToSchema, Default)]
pub struct DecisionRequest {
    pub comment: Option<String>,
}

/// An operation began: follow it at `events`.
#[derive(Serialize, ToSchema)]
pub struct OperationStarted {
    pub operation: u64,
    /// Its object (`GET`).
    pub url: String,
    /// Its journal as Server-Sent Events.
    pub events: String,
}

impl OperationStarted {
    fn of(stack: &str, op: u64) -> (StatusCode, Json<OperationStarted>) {
        let url = format!("/api/v1/stacks/{stack}/operations/{op}");
        (
            StatusCode::ACCEPTED,
            Json(OperationStarted {
                operation: op,
                events: format!("{url}/events"),
                url,
            }),
        )
    }
}

#[derive(Serialize, ToSchema)]
pub struct Message {
    pub ok: bool,
    pub message: String,
}

/// Who is asking.
#[derive(Serialize, ToSchema)]
pub struct Me {
    pub name: String,
    pub role: crate::auth::Role,
    /// `session`, `token` or `header`.
    pub via: String,
    /// The token a session's POSTs carry in `X-CSRF-Token` (empty for a bearer token).
    pub csrf_token: String,
}

#[derive(Deserialize, IntoParams)]
pub struct Limit {
    /// How many, newest first (default 100, at most 10000).
    pub limit: Option<usize>,
}

impl Limit {
    fn get(&self) -> usize {
        self.limit.unwrap_or(100).clamp(1, 10_000)
    }
}

#[utoipa::path(get, path = "/me", responses((status = 200, body = Me), (status = 401, body = ErrorBody)))]
async fn me(State(app): State<Shared>, Who(who): Who) -> Json<Me> {
    let csrf = who.csrf(&app.home());
    Json(Me {
        name: who.name.clone(),
        role: who.role,
        via: who.via.as_str().into(),
        csrf_token: csrf,
    })
}

/// A stack's summary from its store: the live release, the lease, unfinished operations and
/// what they wait for.
pub fn summary(app: &App, name: &str) -> Result<Value, Failure> {
    let s = app.stack(name)?;
    let read = s
        .with_store(|st| {
            let release = st.current_release()?;
            let lease = st.live_lease()?;
            let unfinished = st.unfinished_operations()?;
            let mut ops = Vec::new();
            for o in &unfinished {
                let journal = st.journal(o.id)?;
                let pending = st.pending_approvals(o.id)?;
                let mut v = cutover_ops::shapes::operation(o, None, journal.last());
                v["pending_approvals"] = json!(
                    pending
                        .iter()
                        .map(|a| json!({"step": a.step_id, "text": a.text}))
                        .collect::<Vec<_>>()
                );
                ops.push(v);
            }
            Ok((release, lease, ops))
        })
        .map_err(Failure::internal)?;
    let (release, lease, ops) = read.unwrap_or((None, None, Vec::new()));
    Ok(json!({
        "name": s.name,
        "file": s.file.display().to_string(),
        "release": release.as_ref().map(|r| cutover_ops::shapes::release(r, None)),
        "lease": lease.as_ref().map(cutover_ops::shapes::lease),
        "unfinished_operations": ops,
    }))
}

#[utoipa::path(get, path = "/stacks", responses((status = 200, description = "Each stack's summary: name, file, live release, lease, unfinished operations with their pending approvals", body = Object)))]
async fn stacks(State(app): State<Shared>, Who(_): Who) -> Result<Json<Value>, Failure> {
    let all: Result<Vec<Value>, Failure> =
        app.stacks.iter().map(|s| summary(&app, &s.name)).collect();
    Ok(Json(Value::Array(all?)))
}

#[utoipa::path(get, path = "/stacks/{stack}", params(("stack" = String, Path)), responses((status = 200, description = "`cutover status -o json`: the release, each service's containers (image, health, slot), the lease, unfinished operations", body = Object), (status = 404, body = ErrorBody)))]
async fn stack(
    State(app): State<Shared>,
    Who(who): Who,
    Path(stack): Path<String>,
) -> Result<Json<Value>, Failure> {
    Ok(Json(actions::status(&app, &who, &stack).await?))
}

#[utoipa::path(get, path = "/stacks/{stack}/releases", params(("stack" = String, Path), Limit), responses((status = 200, description = "Releases, newest first, each with the operation that last worked on it", body = Object)))]
async fn releases(
    State(app): State<Shared>,
    Who(_): Who,
    Path(stack): Path<String>,
    Query(l): Query<Limit>,
) -> Result<Json<Value>, Failure> {
    Ok(Json(Value::Array(history(&app, &stack, l.get())?)))
}

/// Releases, newest first, with the operation that last worked on each.
pub fn history(app: &App, stack: &str, limit: usize) -> Result<Vec<Value>, Failure> {
    let s = app.stack(stack)?;
    let rows = s
        .with_store(|st| {
            let releases = st.releases(limit)?;
            let ops = st.operations(limit.saturating_mul(2).max(50))?;
            Ok(releases
                .iter()
                .map(|r| {
                    let op = ops.iter().find(|o| o.release == Some(r.revision));
                    cutover_ops::shapes::release(
                        r,
                        op.map(|o| cutover_ops::shapes::operation(o, None, None)),
                    )
                })
                .collect::<Vec<_>>())
        })
        .map_err(Failure::internal)?;
    Ok(rows.unwrap_or_default())
}

#[utoipa::path(get, path = "/stacks/{stack}/operations", params(("stack" = String, Path), Limit), responses((status = 200, description = "Operations, newest first", body = Object)))]
async fn operations(
    State(app): State<Shared>,
    Who(_): Who,
    Path(stack): Path<String>,
    Query(l): Query<Limit>,
) -> Result<Json<Value>, Failure> {
    let s = app.stack(&stack)?;
    let ops = s
        .with_store(|st| st.operations(l.get()))
        .map_err(Failure::internal)?
        .unwrap_or_default();
    Ok(Json(Value::Array(
        ops.iter()
            .map(|o| cutover_ops::shapes::operation(o, None, None))
            .collect(),
    )))
}

/// One operation with its journal and approvals.
pub fn operation_json(app: &App, stack: &str, id: u64) -> Result<Value, Failure> {
    let s = app.stack(stack)?;
    let found = s
        .with_store(|st| {
            let Some(o) = st.operation(id)? else { return Ok(None) };
            let journal = st.journal(id)?;
            let pending = st.pending_approvals(id)?;
            let decisions: Vec<Value> = journal
                .iter()
                .filter(|r| r.step_id.contains("approval"))
                .filter_map(|r| st.decision(id, &r.step_id).ok().flatten().map(|d| json!({"step": r.step_id, "by": d.by, "approved": d.approved, "comment": d.comment})))
                .collect();
            let failed = journal.iter().rev().find(|s| s.status == cutover_store::StepStatus::Failed);
            let mut v = cutover_ops::shapes::operation(&o, failed, journal.last());
            v["journal"] = Value::Array(journal.iter().map(cutover_ops::shapes::step).collect());
            v["pending_approvals"] = json!(pending.iter().map(|a| json!({"step": a.step_id, "text": a.text})).collect::<Vec<_>>());
            v["decisions"] = Value::Array(decisions);
            Ok(Some(v))
        })
        .map_err(Failure::internal)?
        .flatten();
    found.ok_or_else(|| {
        Failure::new(
            StatusCode::NOT_FOUND,
            format!("operation {id} is not in stack `{stack}`"),
        )
    })
}

#[utoipa::path(get, path = "/stacks/{stack}/operations/{id}", params(("stack" = String, Path), ("id" = u64, Path)), responses((status = 200, description = "The operation, its journal, pending approvals and decisions", body = Object), (status = 404, body = ErrorBody)))]
async fn operation(
    State(app): State<Shared>,
    Who(_): Who,
    Path((stack, id)): Path<(String, u64)>,
) -> Result<Json<Value>, Failure> {
    Ok(Json(operation_json(&app, &stack, id)?))
}

#[utoipa::path(get, path = "/stacks/{stack}/operations/{id}/events", params(("stack" = String, Path), ("id" = u64, Path)), responses((status = 200, description = "Server-Sent Events: each `data:` one JSON object as `-o json` prints it (`step_started`, `step_finished`), then `finished` (outcome, exit code, summary)", content_type = "text/event-stream", body = String)))]
async fn events(
    State(app): State<Shared>,
    Who(_): Who,
    Path((stack, id)): Path<(String, u64)>,
) -> Result<Response, Failure> {
    let s = app.stack(&stack)?;
    if s.with_store(|st| st.operation(id))
        .map_err(Failure::internal)?
        .flatten()
        .is_none()
    {
        return Err(Failure::new(
            StatusCode::NOT_FOUND,
            format!("operation {id} is not in stack `{stack}`"),
        ));
    }
    let rx = crate::events::follow(s.state_dir.clone(), s.name.clone(), id);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|v| {
            (
                Ok::<_, Infallible>(Event::default().data(v.to_string())),
                rx,
            )
        })
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

#[utoipa::path(post, path = "/stacks/{stack}/plan", params(("stack" = String, Path)), request_body = Changes, responses((status = 200, description = "The plan as `cutover plan -o json` prints it (docs/plan-json.md)", body = Object), (status = 422, body = ErrorBody)))]
async fn plan(
    State(app): State<Shared>,
    Who(who): Who,
    Path(stack): Path<String>,
    Json(c): Json<Changes>,
) -> Result<Json<Value>, Failure> {
    let text = actions::plan(&app, &who, &stack, &c.set, PlanFormat::Json).await?;
    serde_json::from_str(&text)
        .map(Json)
        .map_err(|e| Failure::internal(format!("the plan is not JSON: {e}")))
}

#[utoipa::path(post, path = "/stacks/{stack}/checklist", params(("stack" = String, Path)), request_body = Changes, responses((status = 200, description = "The plan as a markdown checklist to paste into a ticket", content_type = "text/markdown", body = String)))]
async fn checklist(
    State(app): State<Shared>,
    Who(who): Who,
    Path(stack): Path<String>,
    Json(c): Json<Changes>,
) -> Result<Response, Failure> {
    let text = actions::plan(&app, &who, &stack, &c.set, PlanFormat::Markdown).await?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/markdown; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

#[utoipa::path(post, path = "/stacks/{stack}/apply", params(("stack" = String, Path)), request_body = Changes, responses((status = 202, body = OperationStarted), (status = 403, body = ErrorBody), (status = 409, description = "Another operation holds the stack", body = ErrorBody), (status = 422, description = "Invalid, or refused before its operation began", body = ErrorBody)))]
async fn apply(
    State(app): State<Shared>,
    Who(who): Who,
    Path(stack): Path<String>,
    Json(c): Json<Changes>,
) -> Result<impl IntoResponse, Failure> {
    let op = actions::apply(&app, &who, &stack, &c.set).await?;
    Ok(OperationStarted::of(&stack, op))
}

#[utoipa::path(post, path = "/stacks/{stack}/rollback", params(("stack" = String, Path)), request_body = RollbackRequest, responses((status = 202, body = OperationStarted), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn rollback(
    State(app): State<Shared>,
    Who(who): Who,
    Path(stack): Path<String>,
    Json(r): Json<RollbackRequest>,
) -> Result<impl IntoResponse, Failure> {
    let op = actions::rollback(&app, &who, &stack, r.revision, r.data).await?;
    Ok(OperationStarted::of(&stack, op))
}

#[utoipa::path(post, path = "/stacks/{stack}/resume", params(("stack" = String, Path)), responses((status = 202, body = OperationStarted), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn resume(
    State(app): State<Shared>,
    Who(who): Who,
    Path(stack): Path<String>,
) -> Result<impl IntoResponse, Failure> {
    let op = actions::resume(&app, &who, &stack).await?;
    Ok(OperationStarted::of(&stack, op))
}

#[utoipa::path(post, path = "/stacks/{stack}/abort", params(("stack" = String, Path)), responses((status = 202, body = OperationStarted), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn abort(
    State(app): State<Shared>,
    Who(who): Who,
    Path(stack): Path<String>,
) -> Result<impl IntoResponse, Failure> {
    let op = actions::abort(&app, &who, &stack).await?;
    Ok(OperationStarted::of(&stack, op))
}

#[utoipa::path(post, path = "/stacks/{stack}/maintenance", params(("stack" = String, Path)), request_body = MaintenanceRequest, responses((status = 200, body = Message), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn maintenance(
    State(app): State<Shared>,
    Who(who): Who,
    Path(stack): Path<String>,
    Json(m): Json<MaintenanceRequest>,
) -> Result<Json<Message>, Failure> {
    let message = actions::maintenance(&app, &who, &stack, m.on, m.message.as_deref()).await?;
    Ok(Json(Message { ok: true, message }))
}

#[utoipa::path(post, path = "/stacks/{stack}/operations/{id}/approve", params(("stack" = String, Path), ("id" = u64, Path)), request_body = DecisionRequest, responses((status = 200, body = Message), (status = 403, description = "Not an approver, or the operation's own starter", body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn approve(
    State(app): State<Shared>,
    Who(who): Who,
    Path((stack, id)): Path<(String, u64)>,
    body: Option<Json<DecisionRequest>>,
) -> Result<Json<Message>, Failure> {
    let d = body.map(|b| b.0).unwrap_or_default();
    let message = actions::decide(&app, &who, &stack, id, true, d.comment.as_deref()).await?;
    Ok(Json(Message { ok: true, message }))
}

#[utoipa::path(post, path = "/stacks/{stack}/operations/{id}/reject", params(("stack" = String, Path), ("id" = u64, Path)), request_body = DecisionRequest, responses((status = 200, body = Message), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn reject(
    State(app): State<Shared>,
    Who(who): Who,
    Path((stack, id)): Path<(String, u64)>,
    body: Option<Json<DecisionRequest>>,
) -> Result<Json<Message>, Failure> {
    let d = body.map(|b| b.0).unwrap_or_default();
    let message = actions::decide(&app, &who, &stack, id, false, d.comment.as_deref()).await?;
    Ok(Json(Message { ok: true, message }))
}

#[utoipa::path(get, path = "/stacks/{stack}/restore-points", params(("stack" = String, Path)), responses((status = 200, description = "`cutover restore-points list -o json`", body = Object)))]
async fn restore_points(
    State(app): State<Shared>,
    Who(who): Who,
    Path(stack): Path<String>,
) -> Result<Json<Value>, Failure> {
    Ok(Json(actions::restore_points(&app, &who, &stack).await?))
}

#[utoipa::path(post, path = "/stacks/{stack}/restore-points/verify", params(("stack" = String, Path)), responses((status = 200, description = "`ok` false when a restore point does not match its manifest; `message` says which", body = Message), (status = 403, body = ErrorBody)))]
async fn verify(
    State(app): State<Shared>,
    Who(who): Who,
    Path(stack): Path<String>,
) -> Result<Json<Message>, Failure> {
    let v = actions::verify(&app, &who, &stack).await?;
    Ok(Json(Message {
        ok: v.ok,
        message: v.report,
    }))
}

#[utoipa::path(get, path = "/audit", params(Limit), responses((status = 200, body = [crate::home::AuditEntry])))]
async fn audit(
    State(app): State<Shared>,
    Who(_): Who,
    Query(l): Query<Limit>,
) -> Result<Json<Vec<crate::home::AuditEntry>>, Failure> {
    Ok(Json(app.home().audit_log(l.get())?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `docs/openapi.json` is the API as the code describes it: regenerate it with
    /// `CUTOVER_UPDATE_OPENAPI=1 cargo test -p cutover-dashboard openapi`.
    #[test]
    fn the_checked_in_openapi_file_is_what_the_code_generates() {
        let generated = ApiDoc::openapi().to_pretty_json().expect("json") + "\n";
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
        if std::env::var_os("CUTOVER_UPDATE_OPENAPI").is_some() {
            std::fs::write(&path, &generated).expect("write docs/openapi.json");
        }
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            checked_in == generated,
            "docs/openapi.json is not what the code generates: run \
             CUTOVER_UPDATE_OPENAPI=1 cargo test -p cutover-dashboard openapi"
        );
        let v: Value = serde_json::from_str(&generated).expect("parse");
        for p in [
            "/stacks/{stack}/apply",
            "/stacks/{stack}/operations/{id}/events",
            "/audit",
        ] {
            assert!(v["paths"][p].is_object(), "{p} is documented");
        }
    }
}
