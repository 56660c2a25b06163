//! The HTTP side: routes, handlers and the request log.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use rusqlite::Connection;
use serde::Serialize;

use crate::log::log;
use crate::migrate;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

struct Shared {
    /// `DEMO_VERSION`, e.g. `v2`.
    version: String,
    /// The schema version this app version was written for: it decides which columns the app
    /// reads and writes, whatever newer schema the database may have.
    schema: u32,
    /// `DEMO_FAIL_HEALTH`.
    fail_health: bool,
    /// One connection, used from blocking tasks; SQLite serializes writers anyway.
    db: Mutex<Connection>,
}

impl AppState {
    pub fn new(version: String, schema: u32, fail_health: bool, db: Connection) -> AppState {
        AppState(Arc::new(Shared {
            version,
            schema,
            fail_health,
            db: Mutex::new(db),
        }))
    }

    /// Runs `f` on the database connection in a blocking task, off the async threads.
    async fn with_db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection, &Shared) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, AppError> {
        let shared = Arc::clone(&self.0);
        tokio::task::spawn_blocking(move || {
            let conn = shared
                .db
                .lock()
                .map_err(|_| AppError("the database lock is poisoned".to_owned()))?;
            f(&conn, &shared).map_err(|e| AppError(format!("database: {e}")))
        })
        .await
        .map_err(|e| AppError(format!("database task: {e}")))?
    }
}

/// The app's routes, with every request logged.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/version", get(version))
        .route("/health", get(health))
        .route("/schema", get(schema))
        .route("/items", get(list_items).post(create_item))
        .with_state(state)
        .layer(middleware::from_fn(log_request))
}

/// Logs one line per request (method, path, status) once it is answered.
async fn log_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    log!("{method} {path} {}", response.status().as_u16());
    response
}

/// `GET /version`: the app version, e.g. `v2\n`.
async fn version(State(state): State<AppState>) -> String {
    format!("{}\n", state.0.version)
}

/// `GET /health`: `ok`, unless `DEMO_FAIL_HEALTH` is on.
async fn health(State(state): State<AppState>) -> (StatusCode, &'static str) {
    if state.0.fail_health {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "unhealthy (DEMO_FAIL_HEALTH)\n",
        )
    } else {
        (StatusCode::OK, "ok\n")
    }
}

/// `GET /schema`: the highest schema version applied to the database (which may be newer
/// than this app's own).
async fn schema(State(state): State<AppState>) -> Result<String, AppError> {
    let version = state
        .with_db(|conn, _| migrate::current_version(conn))
        .await?;
    Ok(format!("{version}\n"))
}

/// One row of `items`, as JSON.
#[derive(Serialize)]
struct Item {
    id: i64,
    name: String,
    /// Only from schema 2 on; an app at schema 1 does not know the column.
    #[serde(skip_serializing_if = "Option::is_none")]
    created_at: Option<String>,
}

/// `GET /items`: every item, oldest first, as a JSON list.
async fn list_items(State(state): State<AppState>) -> Result<Json<Vec<Item>>, AppError> {
    let items = state
        .with_db(|conn, shared| {
            let sql = if shared.schema >= 2 {
                "SELECT id, name, created_at FROM items ORDER BY id"
            } else {
                "SELECT id, name, NULL FROM items ORDER BY id"
            };
            let mut stmt = conn.prepare_cached(sql)?;
            let rows = stmt.query_map([], |row| {
                Ok(Item {
                    id: row.get(0)?,
                    name: row.get(1)?,
                    created_at: row.get(2)?,
                })
            })?;
            rows.collect()
        })
        .await?;
    Ok(Json(items))
}

/// `POST /items` with the item's name as a plain-text body: `201` and the new id.
async fn create_item(State(state): State<AppState>, body: String) -> Response {
    let name = body.trim().to_owned();
    if name.is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            "the body must be the item's name\n",
        )
            .into_response();
    }
    let inserted = state
        .with_db(move |conn, shared| {
            if shared.schema >= 2 {
                conn.execute(
                    "INSERT INTO items (name, created_at) \
                     VALUES (?1, strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))",
                    [&name],
                )?;
            } else {
                conn.execute("INSERT INTO items (name) VALUES (?1)", [&name])?;
            }
            Ok(conn.last_insert_rowid())
        })
        .await;
    match inserted {
        Ok(id) => (StatusCode::CREATED, format!("{id}\n")).into_response(),
        Err(e) => e.into_response(),
    }
}

/// A failed request: logged, and answered with a 500 and the message.
struct AppError(String);

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        log!("error: {}", self.0);
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("error: {}\n", self.0),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    /// Serves the app on a free local port until the test's runtime ends.
    async fn serve(
        version: &str,
        schema: u32,
        fail_health: bool,
    ) -> (tempfile::TempDir, SocketAddr) {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut conn = migrate::open(&dir.path().join("demo.sqlite")).expect("open");
        migrate::migrate(&mut conn, schema, false, |_| {}).expect("migrate");
        let app = router(AppState::new(version.to_owned(), schema, fail_health, conn));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        (dir, addr)
    }

    /// Sends one HTTP/1.0 request and answers (status, body).
    async fn request(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let head = format!(
            "{method} {path} HTTP/1.0\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read");
        let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("a status");
        (status, body.to_owned())
    }

    #[tokio::test]
    async fn endpoints() {
        let (_dir, addr) = serve("v2", 2, false).await;
        assert_eq!(
            request(addr, "GET", "/version", "").await,
            (200, "v2\n".into())
        );
        assert_eq!(
            request(addr, "GET", "/health", "").await,
            (200, "ok\n".into())
        );
        assert_eq!(
            request(addr, "GET", "/schema", "").await,
            (200, "2\n".into())
        );
        assert_eq!(
            request(addr, "POST", "/items", "apple").await,
            (201, "1\n".into())
        );
        assert_eq!(request(addr, "POST", "/items", " \n").await.0, 400);
        let (status, body) = request(addr, "GET", "/items", "").await;
        assert_eq!(status, 200);
        assert!(
            body.starts_with(r#"[{"id":1,"name":"apple","created_at":"20"#),
            "{body}"
        );
        assert_eq!(request(addr, "GET", "/nope", "").await.0, 404);
    }

    #[tokio::test]
    async fn failing_health() {
        let (_dir, addr) = serve("v3", 3, true).await;
        assert_eq!(
            request(addr, "GET", "/health", "").await,
            (500, "unhealthy (DEMO_FAIL_HEALTH)\n".into())
        );
    }
}
