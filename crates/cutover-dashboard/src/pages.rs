//! The pages, rendered on the server with maud; the only script is the live view of an
//! operation (an `EventSource` on the API's event stream). Every form that changes
//! something carries the session's CSRF token.

// A handler's error is the page it answers with: axum's Response, moved once.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde_json::Value;

use crate::actions::{self, DataChoice, PlanFormat};
use crate::auth::{Permission, Principal, SESSION_COOKIE, Via, check_csrf};
use crate::{App, Failure};

type Shared = Arc<App>;
type Fields = Vec<(String, String)>;

/// A signed-in person; anyone else is sent to the login page.
pub struct Person(pub Principal);

impl FromRequestParts<Shared> for Person {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &Shared) -> Result<Person, Response> {
        match crate::api::principal(parts, app) {
            Ok(p) => Ok(Person(p)),
            Err(f) if f.status == StatusCode::UNAUTHORIZED => {
                let next = parts
                    .uri
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or("/");
                Err(Redirect::to(&format!("/login?next={}", encode(next))).into_response())
            }
            Err(f) => Err(page_error(None, f)),
        }
    }
}

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/", get(overview))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/audit", get(audit))
        .route("/stacks/{stack}", get(stack))
        .route("/stacks/{stack}/plan", get(plan))
        .route("/stacks/{stack}/checklist", get(checklist))
        .route("/stacks/{stack}/apply", post(apply))
        .route("/stacks/{stack}/rollback", post(rollback))
        .route("/stacks/{stack}/resume", post(resume))
        .route("/stacks/{stack}/abort", post(abort))
        .route("/stacks/{stack}/maintenance", post(maintenance))
        .route("/stacks/{stack}/history", get(history))
        .route("/stacks/{stack}/restore-points", get(restore_points))
        .route("/stacks/{stack}/restore-points/verify", post(verify))
        .route("/stacks/{stack}/operations/{id}", get(operation))
        .route(
            "/stacks/{stack}/operations/{id}/timeline.svg",
            get(timeline),
        )
        .route("/stacks/{stack}/operations/{id}/approve", post(approve))
        .route("/stacks/{stack}/operations/{id}/reject", post(reject))
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn field<'a>(f: &'a Fields, name: &str) -> Option<&'a str> {
    f.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn sets_of(f: &Fields) -> Vec<String> {
    f.iter()
        .filter(|(k, v)| k == "set" && !v.trim().is_empty())
        .map(|(_, v)| v.trim().to_string())
        .collect()
}

const STYLE: &str = r#"
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#111827;background:#f9fafb}
header{background:#111827;color:#f9fafb;padding:8px 20px;display:flex;gap:18px;align-items:center}
header a{color:#f9fafb;text-decoration:none;font-weight:600}header .who{margin-left:auto;font-weight:400}
main{padding:16px 20px;max-width:1200px}
table{border-collapse:collapse;width:100%;background:#fff;margin:8px 0 16px}
th,td{border-bottom:1px solid #e5e7eb;padding:5px 8px;text-align:left;vertical-align:top}
th{background:#f3f4f6;font-weight:600}
pre{background:#fff;border:1px solid #e5e7eb;padding:10px;overflow:auto;white-space:pre-wrap}
.status{display:inline-block;padding:1px 7px;border-radius:9px;font-size:12px;font-weight:600;background:#e5e7eb}
.succeeded,.deployed,.ok{background:#dcfce7;color:#166534}.failed,.revert_failed,.refused{background:#fee2e2;color:#991b1b}
.reverted,.aborted{background:#fef3c7;color:#92400e}.running,.started,.pending{background:#dbeafe;color:#1e40af}
.superseded{background:#f3f4f6;color:#374151}
.box{background:#fff;border:1px solid #e5e7eb;padding:12px;margin:10px 0}
.warn{border-color:#f59e0b;background:#fffbeb}.err{border-color:#dc2626;background:#fef2f2}
form.inline{display:inline}button{cursor:pointer}
input[type=text],input[type=password],textarea{padding:4px 6px;border:1px solid #d1d5db;border-radius:3px}
"#;

fn layout(title: &str, who: Option<&Principal>, csrf: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " — cutover" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    a href="/" { "cutover" }
                    a href="/" { "Stacks" }
                    a href="/audit" { "Audit log" }
                    @if let Some(w) = who {
                        span.who { (w.name) " · " (w.role.as_str()) }
                        @if matches!(w.via, Via::Session(_)) {
                            form.inline method="post" action="/logout" {
                                input type="hidden" name="csrf" value=(csrf);
                                button type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

fn render(app: &App, who: &Principal, title: &str, body: Markup) -> Response {
    let csrf = who.csrf(&app.home());
    html_response(StatusCode::OK, layout(title, Some(who), &csrf, body))
}

fn html_response(status: StatusCode, m: Markup) -> Response {
    let mut r = (status, m.into_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // Pages are never framed (clickjacking) and carry no third-party anything.
    r.headers_mut()
        .insert("x-frame-options", HeaderValue::from_static("DENY"));
    r.headers_mut().insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'self'; style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'"),
    );
    r
}

fn page_error(who: Option<&Principal>, f: Failure) -> Response {
    let body = html! { div.box.err #error { pre { (f.message) } } p { a href="javascript:history.back()" { "Back" } } };
    html_response(
        f.status,
        layout(
            &format!(
                "{} {}",
                f.status.as_u16(),
                f.status.canonical_reason().unwrap_or("")
            ),
            who,
            "",
            body,
        ),
    )
}

/// A page handler's result: the page, or an error page.
type Page = Result<Response, Response>;

fn fail(who: &Principal) -> impl Fn(Failure) -> Response + '_ {
    move |f| page_error(Some(who), f)
}

fn csrf_ok(app: &App, who: &Principal, form: &Fields) -> Result<(), Response> {
    check_csrf(
        &app.home(),
        who,
        &Method::POST,
        &HeaderMap::new(),
        field(form, "csrf"),
    )
    .map_err(|d| page_error(Some(who), d.into()))
}

fn status_badge(s: &str) -> Markup {
    html! { span class={"status " (s)} { (s) } }
}

fn csrf_input(app: &App, who: &Principal) -> Markup {
    html! { input type="hidden" name="csrf" value=(who.csrf(&app.home())); }
}

// ---------------------------------------------------------------------------------------
// Signing in and out.

#[derive(serde::Deserialize)]
struct Next {
    next: Option<String>,
}

fn safe_next(next: Option<&str>) -> String {
    next.filter(|n| n.starts_with('/') && !n.starts_with("//") && !n.contains('\\'))
        .unwrap_or("/")
        .to_string()
}

fn login_page(status: StatusCode, next: &str, error: Option<&str>) -> Response {
    let body = html! {
        @if let Some(e) = error { div.box.err #error { (e) } }
        form.box method="post" action="/login" {
            input type="hidden" name="next" value=(next);
            p { label { "Name " input type="text" name="name" autofocus autocomplete="username"; } }
            p { label { "Password " input type="password" name="password" autocomplete="current-password"; } }
            button type="submit" #login { "Sign in" }
        }
    };
    html_response(status, layout("Sign in", None, "", body))
}

async fn login_form(Query(n): Query<Next>) -> Response {
    login_page(StatusCode::OK, &safe_next(n.next.as_deref()), None)
}

async fn login(
    State(app): State<Shared>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    Form(f): Form<Fields>,
) -> Response {
    let name = field(&f, "name").unwrap_or("").trim().to_string();
    let password = field(&f, "password").unwrap_or("");
    let next = safe_next(field(&f, "next"));
    let remote = peer.ip().to_string();
    let now = std::time::Instant::now();
    let wait = app
        .limiter
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .wait(&remote, &name, now);
    if let Some(wait) = wait {
        let _ = app.home().audit(
            &name,
            "session",
            &remote,
            "login",
            None,
            None,
            "refused: too many failed attempts",
        );
        let mut r = login_page(
            StatusCode::TOO_MANY_REQUESTS,
            &next,
            Some(&format!(
                "Too many failed attempts: try again in {} s.",
                wait.as_secs() + 1
            )),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(wait.as_secs() + 1));
        return r;
    }
    let checked = app.home().check_password(&name, password);
    match checked {
        Ok(Some(_role)) => {
            app.limiter
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .succeeded(&remote, &name);
            let session = match app.home().start_session(&name) {
                Ok(s) => s,
                Err(e) => return page_error(None, e.into()),
            };
            let _ = app
                .home()
                .audit(&name, "session", &remote, "login", None, None, "ok");
            let secure = if app.tls { "; Secure" } else { "" };
            let cookie = format!(
                "{SESSION_COOKIE}={session}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
                crate::home::SESSION_TTL_MS / 1000
            );
            let mut r = Redirect::to(&next).into_response();
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Ok(None) => {
            app.limiter
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .failed(&remote, &name, now);
            let _ = app.home().audit(
                &name,
                "session",
                &remote,
                "login",
                None,
                None,
                "refused: wrong name or password",
            );
            login_page(
                StatusCode::UNAUTHORIZED,
                &next,
                Some("Wrong name or password."),
            )
        }
        Err(e) => page_error(None, e.into()),
    }
}

async fn logout(State(app): State<Shared>, Person(who): Person, Form(f): Form<Fields>) -> Page {
    csrf_ok(&app, &who, &f)?;
    if let Via::Session(id) = &who.via {
        app.home()
            .end_session(id)
            .map_err(|e| page_error(Some(&who), e.into()))?;
    }
    let _ = app.home().audit(
        &who.name,
        who.via.as_str(),
        &who.remote,
        "logout",
        None,
        None,
        "ok",
    );
    let mut r = Redirect::to("/login").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("cutover_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    Ok(r)
}

// ---------------------------------------------------------------------------------------
// Stacks.

fn release_cell(r: &Value) -> Markup {
    html! {
        @if r.is_null() { "none deployed" } @else {
            "release " (r["revision"]) " " (status_badge(r["status"].as_str().unwrap_or("")))
        }
    }
}

fn images_of(release: &Value) -> Vec<(String, String)> {
    release["images"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(s, i)| (s.clone(), i["reference"].as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// Service → image reference of a plan (`cutover plan -o json`).
fn planned_images(plan: &Value) -> Vec<(String, String)> {
    plan["services"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            (
                s["service"].as_str().unwrap_or("").to_string(),
                s["image_to"]["reference"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect()
}

fn holder_text(h: &Value) -> String {
    format!(
        "{}@{} (pid {})",
        h["user"].as_str().unwrap_or("?"),
        h["host"].as_str().unwrap_or("?"),
        h["pid"]
    )
}

async fn overview(State(app): State<Shared>, Person(who): Person) -> Page {
    let mut rows = Vec::new();
    for s in &app.stacks {
        rows.push(crate::api::summary(&app, &s.name).map_err(fail(&who))?);
    }
    let body = html! {
        table #stacks {
            tr { th { "Stack" } th { "Live release" } th { "Services" } th { "Lease" } th { "Unfinished" } }
            @for r in &rows {
                tr {
                    td { a href={"/stacks/" (r["name"].as_str().unwrap_or(""))} { (r["name"].as_str().unwrap_or("")) } }
                    td { (release_cell(&r["release"])) }
                    td { @for (s, img) in images_of(&r["release"]) { div { b { (s) } " " code { (img) } } } }
                    td { @if r["lease"].is_null() { "free" } @else { "held by " (holder_text(&r["lease"]["holder"])) } }
                    td {
                        @for o in r["unfinished_operations"].as_array().into_iter().flatten() {
                            div {
                                a href={"/stacks/" (r["name"].as_str().unwrap_or("")) "/operations/" (o["id"])} { (o["kind"].as_str().unwrap_or("")) " " (o["id"]) }
                                @if o["pending_approvals"].as_array().is_some_and(|a| !a.is_empty()) { " — waits for approval" }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(render(&app, &who, "Stacks", body))
}

async fn stack(State(app): State<Shared>, Person(who): Person, Path(name): Path<String>) -> Page {
    let summary = crate::api::summary(&app, &name).map_err(fail(&who))?;
    let status = actions::status(&app, &who, &name).await;
    let recent = {
        let s = app.stack(&name).map_err(fail(&who))?;
        s.with_store(|st| st.operations(10))
            .map_err(|e| fail(&who)(Failure::internal(e)))?
            .unwrap_or_default()
    };
    let mut services: Vec<(String, String)> = match &status {
        Ok(v) => v["services"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                (
                    s["service"].as_str().unwrap_or("").to_string(),
                    s["image"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect(),
        Err(_) => images_of(&summary["release"]),
    };
    if services.is_empty() {
        // Nothing deployed yet: the services the stack file would create.
        let plan = actions::plan(&app, &who, &name, &[], PlanFormat::Json).await;
        if let Ok(v) = plan.as_deref().map(serde_json::from_str::<Value>) {
            services = v.ok().map(|v| planned_images(&v)).unwrap_or_default();
        }
    }
    let change = who.role.may(Permission::Change);
    let body = html! {
        p { "Stack file " code { (summary["file"].as_str().unwrap_or("")) } " · "
            a href={"/stacks/" (name) "/history"} { "History" } " · "
            a href={"/stacks/" (name) "/restore-points"} { "Restore points" } " · "
            a href={"/stacks/" (name) "/checklist"} { "Checklist" } }
        div.box { (release_cell(&summary["release"])) " · lease: "
            @if summary["lease"].is_null() { "free" } @else { "held by " (holder_text(&summary["lease"]["holder"])) } }
        @for o in summary["unfinished_operations"].as_array().into_iter().flatten() {
            div.box.warn {
                "Unfinished: " a href={"/stacks/" (name) "/operations/" (o["id"])} { (o["kind"].as_str().unwrap_or("")) " " (o["id"]) }
                " started by " (holder_text(&o["started_by"]))
                @if let Some(step) = o["last_step"]["id"].as_str() { ", at " code { (step) } }
                @if change {
                    " "
                    form.inline method="post" action={"/stacks/" (name) "/resume"} { (csrf_input(&app, &who)) button #resume { "Resume" } }
                    " "
                    form.inline method="post" action={"/stacks/" (name) "/abort"} { (csrf_input(&app, &who)) button #abort { "Abort" } }
                }
            }
        }
        h2 { "Services" }
        @match &status {
            Ok(v) => {
                @if let Some(e) = v["engine_error"].as_str() { div.box.err { "Docker: " (e) } }
                table #services {
                    tr { th { "Service" } th { "Image" } th { "Containers (state · health · slot)" } th { "" } }
                    @for s in v["services"].as_array().into_iter().flatten() {
                        tr {
                            td { (s["service"].as_str().unwrap_or("")) }
                            td { code { (s["image"].as_str().unwrap_or("")) } br; small { (s["image_id"].as_str().unwrap_or("").chars().take(19).collect::<String>()) } }
                            td { @for c in s["containers"].as_array().into_iter().flatten() {
                                div { code { (c["name"].as_str().unwrap_or("")) } " " (c["state"].as_str().unwrap_or("")) " · " (c["health"].as_str().unwrap_or("-")) " · " (c["slot"].as_str().unwrap_or("-")) }
                            } }
                            td { @if s["drift"] == true { span.status.failed { "drift" } } @if s["pending_upgrade"] == true { span.status.pending { "pending upgrade" } } }
                        }
                    }
                }
            }
            Err(f) => { div.box.err { "Status unavailable: " (f.message) } }
        }
        h2 { "Propose a change" }
        form.box method="get" action={"/stacks/" (name) "/plan"} #propose {
            @for (svc, img) in &services {
                p { label { b { (svc) } ".image = " input type="text" name={"image." (svc)} value=(img) size="40"; } }
            }
            p { label { "Other --set (KEY=VALUE) " input type="text" name="set" size="40"; } }
            button type="submit" #preview { "Preview the plan" }
        }
        @if change {
            h2 { "Maintenance" }
            form.inline method="post" action={"/stacks/" (name) "/maintenance"} {
                (csrf_input(&app, &who)) input type="hidden" name="on" value="1";
                input type="text" name="message" placeholder="message on the page" size="30"; " "
                button { "Maintenance on" }
            }
            " "
            form.inline method="post" action={"/stacks/" (name) "/maintenance"} {
                (csrf_input(&app, &who)) input type="hidden" name="on" value="0"; button { "Maintenance off" }
            }
        }
        h2 { "Recent operations" }
        table #operations {
            tr { th { "#" } th { "Kind" } th { "Release" } th { "Status" } th { "Started" } th { "By" } }
            @for o in &recent {
                tr {
                    td { a href={"/stacks/" (name) "/operations/" (o.id)} { (o.id) } }
                    td { (o.kind) } td { (o.release.map(|r| r.to_string()).unwrap_or_default()) }
                    td { (status_badge(o.status.as_str())) }
                    td { (cutover_ops::shapes::when(o.started_at)) } td { (o.holder.user) }
                }
            }
        }
    };
    Ok(render(&app, &who, &format!("Stack {name}"), body))
}

/// The `--set` values of the plan form: `image.SERVICE` fields that differ from the live
/// image, and free `set` fields.
fn proposed(app: &App, stack: &str, q: &Fields) -> Vec<String> {
    let live: Vec<(String, String)> = crate::api::summary(app, stack)
        .map(|s| images_of(&s["release"]))
        .unwrap_or_default();
    let mut sets: Vec<String> = q
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("image.")?, v.trim())))
        .filter(|(svc, v)| !v.is_empty() && !live.iter().any(|(s, img)| s == svc && img == v))
        .map(|(svc, v)| format!("{svc}.image={v}"))
        .collect();
    sets.extend(sets_of(q));
    sets
}

async fn plan(
    State(app): State<Shared>,
    Person(who): Person,
    Path(name): Path<String>,
    Query(q): Query<Fields>,
) -> Page {
    let sets = proposed(&app, &name, &q);
    let text = actions::plan(&app, &who, &name, &sets, PlanFormat::Text)
        .await
        .map_err(fail(&who))?;
    let query: String = sets
        .iter()
        .map(|s| format!("set={}", encode(s)))
        .collect::<Vec<_>>()
        .join("&");
    let body = html! {
        p { "Changes: " @if sets.is_empty() { "none (the stack file as it is)" } @for s in &sets { code { (s) } " " } }
        pre #plan { (text) }
        @if who.role.may(Permission::Change) {
            form method="post" action={"/stacks/" (name) "/apply"} {
                (csrf_input(&app, &who))
                @for s in &sets { input type="hidden" name="set" value=(s); }
                button type="submit" #apply { "Apply this plan" }
            }
        }
        p { a href={"/stacks/" (name) "/checklist?" (query)} { "As a checklist for a ticket" } }
    };
    Ok(render(&app, &who, &format!("Plan for {name}"), body))
}

async fn checklist(
    State(app): State<Shared>,
    Person(who): Person,
    Path(name): Path<String>,
    Query(q): Query<Fields>,
) -> Page {
    let sets = proposed(&app, &name, &q);
    let md = actions::plan(&app, &who, &name, &sets, PlanFormat::Markdown)
        .await
        .map_err(fail(&who))?;
    let body = html! {
        textarea #checklist rows="30" cols="110" readonly { (md) }
        p { button type="button" onclick="navigator.clipboard.writeText(document.getElementById('checklist').value)" { "Copy" } }
    };
    Ok(render(&app, &who, &format!("Checklist for {name}"), body))
}

fn to_operation(stack: &str, op: u64) -> Response {
    Redirect::to(&format!("/stacks/{stack}/operations/{op}")).into_response()
}

async fn apply(
    State(app): State<Shared>,
    Person(who): Person,
    Path(name): Path<String>,
    Form(f): Form<Fields>,
) -> Page {
    csrf_ok(&app, &who, &f)?;
    let op = actions::apply(&app, &who, &name, &sets_of(&f))
        .await
        .map_err(fail(&who))?;
    Ok(to_operation(&name, op))
}

async fn rollback(
    State(app): State<Shared>,
    Person(who): Person,
    Path(name): Path<String>,
    Form(f): Form<Fields>,
) -> Page {
    csrf_ok(&app, &who, &f)?;
    let revision = field(&f, "revision")
        .and_then(|r| r.parse().ok())
        .ok_or_else(|| {
            page_error(
                Some(&who),
                Failure::new(StatusCode::UNPROCESSABLE_ENTITY, "which release?"),
            )
        })?;
    let data = if field(&f, "data") == Some("restore") {
        DataChoice::Restore
    } else {
        DataChoice::Keep
    };
    let op = actions::rollback(&app, &who, &name, revision, data)
        .await
        .map_err(fail(&who))?;
    Ok(to_operation(&name, op))
}

async fn resume(
    State(app): State<Shared>,
    Person(who): Person,
    Path(name): Path<String>,
    Form(f): Form<Fields>,
) -> Page {
    csrf_ok(&app, &who, &f)?;
    let op = actions::resume(&app, &who, &name)
        .await
        .map_err(fail(&who))?;
    Ok(to_operation(&name, op))
}

async fn abort(
    State(app): State<Shared>,
    Person(who): Person,
    Path(name): Path<String>,
    Form(f): Form<Fields>,
) -> Page {
    csrf_ok(&app, &who, &f)?;
    let op = actions::abort(&app, &who, &name)
        .await
        .map_err(fail(&who))?;
    Ok(to_operation(&name, op))
}

async fn maintenance(
    State(app): State<Shared>,
    Person(who): Person,
    Path(name): Path<String>,
    Form(f): Form<Fields>,
) -> Page {
    csrf_ok(&app, &who, &f)?;
    let on = field(&f, "on") == Some("1");
    let said = actions::maintenance(&app, &who, &name, on, field(&f, "message"))
        .await
        .map_err(fail(&who))?;
    let body = html! { div.box #result { pre { (said) } } p { a href={"/stacks/" (name)} { "Back to the stack" } } };
    Ok(render(&app, &who, &format!("Maintenance of {name}"), body))
}

// ---------------------------------------------------------------------------------------
// History and restore points.

async fn history(
    State(app): State<Shared>,
    Person(who): Person,
    Path(name): Path<String>,
    Query(l): Query<Fields>,
) -> Page {
    let limit = field(&l, "limit")
        .and_then(|v| v.parse().ok())
        .unwrap_or(200usize)
        .clamp(1, 10_000);
    let rows = crate::api::history(&app, &name, limit).map_err(fail(&who))?;
    Ok(render(
        &app,
        &who,
        &format!("History of {name}"),
        history_table(&app, &who, &name, &rows),
    ))
}

/// The history table; rollback forms for releases that once ran.
pub fn history_table(app: &App, who: &Principal, name: &str, rows: &[Value]) -> Markup {
    let change = who.role.may(Permission::Change);
    let csrf = csrf_input(app, who);
    html! {
        table #history {
            tr { th { "Release" } th { "Status" } th { "Images" } th { "By" } th { "When" } th { "Source" } th { "Operation" } th { "" } }
            @for r in rows {
                tr id={"release-" (r["revision"])} {
                    td { (r["revision"]) }
                    td { (status_badge(r["status"].as_str().unwrap_or(""))) }
                    td { @for (s, img) in images_of(r) { div { (s) " " code { (img) } } } }
                    td { (r["created_by"].as_str().unwrap_or("")) }
                    td { (r["created_at"].as_str().unwrap_or("")) }
                    td { @if let Some(c) = r["source"]["commit"].as_str() { "commit " code { (c.chars().take(8).collect::<String>()) } } }
                    td { @if let Some(id) = r["operation"]["id"].as_u64() { a href={"/stacks/" (name) "/operations/" (id)} { (r["operation"]["kind"].as_str().unwrap_or("")) " " (id) } } }
                    td {
                        @if change && r["status"] == "superseded" {
                            form.inline method="post" action={"/stacks/" (name) "/rollback"} {
                                (csrf)
                                input type="hidden" name="revision" value=(r["revision"]);
                                select name="data" { option value="keep" { "images only" } option value="restore" { "with its data" } }
                                " " button class="rollback" { "Roll back to " (r["revision"]) }
                            }
                        }
                    }
                }
            }
        }
    }
}

async fn restore_points(
    State(app): State<Shared>,
    Person(who): Person,
    Path(name): Path<String>,
) -> Page {
    let list = actions::restore_points(&app, &who, &name)
        .await
        .map_err(fail(&who))?;
    let body = restore_points_body(&app, &who, &name, &list, None);
    Ok(render(
        &app,
        &who,
        &format!("Restore points of {name}"),
        body,
    ))
}

fn restore_points_body(
    app: &App,
    who: &Principal,
    name: &str,
    list: &Value,
    verified: Option<&actions::Verified>,
) -> Markup {
    html! {
        @if let Some(v) = verified {
            div class={"box " (if v.ok { "" } else { "err" })} #verified { b { (if v.ok { "Every restore point matches its manifest." } else { "A restore point does not match its manifest." }) } pre { (v.report) } }
        }
        table #restore-points {
            tr { th { "Release" } th { "Data" } th { "Kind" } th { "Status" } th { "Size" } th { "Taken" } th { "Schema" } }
            @for p in list.as_array().into_iter().flatten() {
                tr {
                    td { (p["release"]) } td { (p["data"].as_str().unwrap_or("")) } td { (p["kind"].as_str().unwrap_or("")) }
                    td { (status_badge(p["status"].as_str().unwrap_or(""))) } td { (p["size_bytes"]) }
                    td { (p["created_at"].as_str().unwrap_or("")) } td { (p["schema_version"].as_str().map(String::from).unwrap_or_else(|| p["schema_version"].to_string())) }
                }
            }
        }
        @if who.role.may(Permission::Change) {
            form method="post" action={"/stacks/" (name) "/restore-points/verify"} { (csrf_input(app, who)) button #verify { "Verify all" } }
        }
    }
}

async fn verify(
    State(app): State<Shared>,
    Person(who): Person,
    Path(name): Path<String>,
    Form(f): Form<Fields>,
) -> Page {
    csrf_ok(&app, &who, &f)?;
    let v = actions::verify(&app, &who, &name)
        .await
        .map_err(fail(&who))?;
    let list = actions::restore_points(&app, &who, &name)
        .await
        .map_err(fail(&who))?;
    let body = restore_points_body(&app, &who, &name, &list, Some(&v));
    Ok(render(
        &app,
        &who,
        &format!("Restore points of {name}"),
        body,
    ))
}

// ---------------------------------------------------------------------------------------
// One operation, live.

const LIVE_JS: &str = r#"
(function(){
  const root = document.getElementById('operation');
  if (!root || root.dataset.running !== 'true') return;
  const es = new EventSource(root.dataset.events);
  const steps = document.getElementById('steps');
  function svg(){ fetch(root.dataset.timeline).then(r => r.text()).then(t => { document.getElementById('timeline').innerHTML = t; }); }
  es.onmessage = function(m){
    const e = JSON.parse(m.data);
    if (e.event === 'finished') { es.close(); setTimeout(function(){ location.reload(); }, 200); return; }
    if (e.event !== 'step_started' && e.event !== 'step_finished') return;
    let row = document.getElementById('step-' + e.step);
    const fresh = !row;
    if (!row) {
      row = document.createElement('tr'); row.id = 'step-' + e.step;
      for (let i = 0; i < 5; i++) row.appendChild(document.createElement('td'));
      steps.appendChild(row);
    }
    const c = row.children, st = e.status || 'started';
    c[0].textContent = e.phase; c[1].textContent = e.title;
    c[2].innerHTML = ''; const b = document.createElement('span'); b.className = 'status ' + st; b.textContent = st; c[2].appendChild(b);
    c[3].textContent = e.at;
    if (e.output) { c[4].innerHTML = ''; const p = document.createElement('pre'); p.textContent = e.output; c[4].appendChild(p); }
    row.className = 'step ' + st;
    // A new approval step: reload for its form (a replayed one is on the page already).
    if (fresh && e.event === 'step_started' && e.step.indexOf('approval') >= 0) { setTimeout(function(){ location.reload(); }, 400); }
    svg();
  };
})();
"#;

async fn operation(
    State(app): State<Shared>,
    Person(who): Person,
    Path((name, id)): Path<(String, u64)>,
) -> Page {
    let op = crate::api::operation_json(&app, &name, id).map_err(fail(&who))?;
    let s = app.stack(&name).map_err(fail(&who))?;
    let journal = s
        .with_store(|st| st.journal(id))
        .map_err(|e| fail(&who)(Failure::internal(e)))?
        .unwrap_or_default();
    let status = op["status"].as_str().unwrap_or("");
    let running = status == "running";
    let pending = op["pending_approvals"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let base = format!("/stacks/{name}/operations/{id}");
    let svg = crate::timeline::svg(&journal, crate::home::now_ms());
    let body = html! {
        div #operation data-running=(running) data-events={"/api/v1" (base) "/events"} data-timeline={(base) "/timeline.svg"} {
            p {
                (op["kind"].as_str().unwrap_or("")) " of release " (op["release"]) " · "
                span #op-status class={"status " (status)} { (status) }
                " · started by " (holder_text(&op["started_by"])) " at " (op["started_at"].as_str().unwrap_or(""))
                @if let Some(f) = op["finished_at"].as_str() { " · finished " (f) }
            }
            @if let Some(fs) = op["failed_step"]["id"].as_str() {
                div.box.err #failed { "Failed at " code { (fs) } ": " pre { (op["failed_step"]["output"].as_str().unwrap_or("")) } }
            }
            @for d in op["decisions"].as_array().into_iter().flatten() {
                div.box { (if d["approved"] == true { "Approved" } else { "Refused" }) " by " (d["by"].as_str().unwrap_or(""))
                    @if let Some(c) = d["comment"].as_str() { ": " i { (c) } } }
            }
            @if running && !pending.is_empty() {
                div.box.warn #approval {
                    b { "Waiting for approval: " }
                    @for a in &pending { code { (a["text"].as_str().unwrap_or("")) } " " }
                    @if who.role.may(Permission::Approve) {
                        form method="post" action={(base) "/approve"} {
                            (csrf_input(&app, &who))
                            input type="text" name="comment" placeholder="comment" size="40"; " "
                            button #approve { "Approve" } " "
                            button #reject formaction={(base) "/reject"} { "Reject" }
                        }
                    } @else { p { "An approver or admin decides." } }
                }
            }
            @if running && who.role.may(Permission::Change) {
                form.inline method="post" action={"/stacks/" (name) "/abort"} { (csrf_input(&app, &who)) button #abort { "Abort (stop at the next step and revert)" } }
            }
            h2 { "Timeline" }
            div #timeline { (PreEscaped(svg)) }
            h2 { "Steps" }
            table {
                thead { tr { th { "Phase" } th { "Step" } th { "Status" } th { "At" } th { "Output" } } }
                tbody #steps {
                    @for st in &journal {
                        tr id={"step-" (st.step_id)} class={"step " (st.status.as_str())} {
                            td { (st.phase) } td { (st.title) } td { (status_badge(st.status.as_str())) }
                            td { (cutover_ops::shapes::when(st.finished_at.unwrap_or(st.started_at))) }
                            td { @if !st.output_tail.is_empty() { pre { (st.output_tail) } } }
                        }
                    }
                }
            }
            p { a href={"/stacks/" (name)} { "Back to " (name) } " · " a href={"/api/v1" (base)} { "As JSON" } }
        }
        script { (PreEscaped(LIVE_JS)) }
    };
    Ok(render(
        &app,
        &who,
        &format!("Operation {id} of {name}"),
        body,
    ))
}

async fn timeline(
    State(app): State<Shared>,
    Person(who): Person,
    Path((name, id)): Path<(String, u64)>,
) -> Page {
    let s = app.stack(&name).map_err(fail(&who))?;
    let journal = s
        .with_store(|st| st.journal(id))
        .map_err(|e| fail(&who)(Failure::internal(e)))?
        .unwrap_or_default();
    let svg = crate::timeline::svg(&journal, crate::home::now_ms());
    Ok(([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response())
}

async fn decide(
    app: Shared,
    who: Principal,
    name: String,
    id: u64,
    f: Fields,
    approve: bool,
) -> Page {
    csrf_ok(&app, &who, &f)?;
    actions::decide(&app, &who, &name, id, approve, field(&f, "comment"))
        .await
        .map_err(fail(&who))?;
    Ok(to_operation(&name, id))
}

async fn approve(
    State(app): State<Shared>,
    Person(who): Person,
    Path((name, id)): Path<(String, u64)>,
    Form(f): Form<Fields>,
) -> Page {
    decide(app, who, name, id, f, true).await
}

async fn reject(
    State(app): State<Shared>,
    Person(who): Person,
    Path((name, id)): Path<(String, u64)>,
    Form(f): Form<Fields>,
) -> Page {
    decide(app, who, name, id, f, false).await
}

// ---------------------------------------------------------------------------------------
// The audit log.

async fn audit(State(app): State<Shared>, Person(who): Person) -> Page {
    let log = app
        .home()
        .audit_log(500)
        .map_err(|e| page_error(Some(&who), e.into()))?;
    let body = html! {
        table #audit {
            tr { th { "When" } th { "Who" } th { "From" } th { "Action" } th { "Stack" } th { "Target" } th { "Outcome" } }
            @for e in &log {
                tr { td { (e.at) } td { (e.actor) " (" (e.via) ")" } td { (e.remote) } td { (e.action) }
                     td { (e.stack.clone().unwrap_or_default()) } td { (e.target.clone().unwrap_or_default()) } td { (e.outcome) } }
            }
        }
    };
    Ok(render(&app, &who, "Audit log", body))
}
