//! The dashboard's own directory: its people (local users with argon2 password hashes),
//! API tokens, sessions and the audit log, in `dashboard.db` (0600, in a 0700 directory).
//! Only hashes are kept: a password, a token or a session id is never stored or shown.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::auth::Role;

/// Something went wrong with the dashboard's own records.
#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    #[error("cannot use {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the dashboard's records in {path}: {source}")]
    Sql {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS users (
    name          TEXT PRIMARY KEY,
    role          TEXT NOT NULL,
    password_hash TEXT,
    created_at    INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS tokens (
    name       TEXT PRIMARY KEY,
    role       TEXT NOT NULL,
    hash       TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    last_used  INTEGER
) STRICT;
CREATE TABLE IF NOT EXISTS sessions (
    hash       TEXT PRIMARY KEY,
    user       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS audit (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    at       INTEGER NOT NULL,
    actor    TEXT NOT NULL,
    via      TEXT NOT NULL,
    remote   TEXT NOT NULL,
    action   TEXT NOT NULL,
    stack    TEXT,
    target   TEXT,
    outcome  TEXT NOT NULL
) STRICT;
"#;

/// A session lasts this long after login.
pub const SESSION_TTL_MS: i64 = 12 * 3600 * 1000;

/// The dashboard's directory and its records.
pub struct Home {
    dir: PathBuf,
    db: PathBuf,
    conn: Connection,
    /// The key CSRF tokens are derived with (random, kept in `secret`, 0600).
    secret: [u8; 32],
    /// An argon2 hash checked when a name has none, made once.
    dummy: std::sync::OnceLock<String>,
}

/// One line of the audit log.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: u64,
    /// RFC 3339.
    pub at: String,
    /// Who: a user, `token:NAME`, or a name a trusted proxy sent.
    pub actor: String,
    /// How they were known: `session`, `token` or `header`.
    pub via: String,
    /// The address the request came from.
    pub remote: String,
    /// What they did: `login`, `apply`, `rollback`, `approve`, …
    pub action: String,
    pub stack: Option<String>,
    /// What it was done to (an operation, a release, the images asked for).
    pub target: Option<String>,
    /// `ok`, `refused: …`, `started operation 12`, then how that ended.
    pub outcome: String,
}

/// A user as listed (never with the hash).
#[derive(Debug, Clone, Serialize)]
pub struct User {
    pub name: String,
    pub role: Role,
}

pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// Random bytes as URL-safe base64: session ids and API tokens.
pub fn random_token(bytes: usize) -> Result<String, HomeError> {
    use base64::Engine;
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf)
        .map_err(|e| HomeError::Invalid(format!("no randomness from the system: {e}")))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf))
}

/// A fresh salt for a password hash.
fn salt() -> Result<SaltString, HomeError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|e| HomeError::Invalid(format!("no randomness from the system: {e}")))?;
    SaltString::encode_b64(&bytes).map_err(|e| HomeError::Invalid(format!("salt: {e}")))
}

fn digest(secret: &str) -> String {
    blake3::hash(secret.as_bytes()).to_hex().to_string()
}

impl Home {
    /// The default home: `$XDG_STATE_HOME/cutover/dashboard`, else
    /// `~/.local/state/cutover/dashboard`.
    pub fn default_dir() -> PathBuf {
        std::env::var_os("XDG_STATE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
            .unwrap_or_else(|| PathBuf::from("."))
            .join("cutover/dashboard")
    }

    /// Opens (creating) the home in `dir`: the directory 0700, the files 0600.
    pub fn open(dir: &Path) -> Result<Home, HomeError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| HomeError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io(dir))?;
        let db = dir.join("dashboard.db");
        if !db.exists() {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&db)
                .map_err(io(&db))?;
        }
        let sql = |path: &Path| {
            let path = path.to_path_buf();
            move |source| HomeError::Sql { path, source }
        };
        let conn = Connection::open(&db).map_err(sql(&db))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(sql(&db))?;
        conn.execute_batch("PRAGMA journal_mode = WAL;")
            .map_err(sql(&db))?;
        conn.execute_batch(SCHEMA).map_err(sql(&db))?;
        let secret_path = dir.join("secret");
        let secret = match std::fs::read(&secret_path) {
            Ok(b) if b.len() == 32 => {
                let mut s = [0u8; 32];
                s.copy_from_slice(&b);
                s
            }
            _ => {
                let mut s = [0u8; 32];
                getrandom::fill(&mut s).map_err(|e| {
                    HomeError::Invalid(format!("no randomness from the system: {e}"))
                })?;
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .write(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&secret_path)
                    .map_err(io(&secret_path))?;
                std::io::Write::write_all(&mut f, &s).map_err(io(&secret_path))?;
                s
            }
        };
        Ok(Home {
            dir: dir.to_path_buf(),
            db,
            conn,
            secret,
            dummy: std::sync::OnceLock::new(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn sql(&self) -> impl Fn(rusqlite::Error) -> HomeError + '_ {
        |source| HomeError::Sql {
            path: self.db.clone(),
            source,
        }
    }

    /// Adds a user, or changes an existing one's role and password. `password` `None`: a
    /// user who signs in only through a trusted proxy.
    pub fn put_user(
        &self,
        name: &str,
        role: Role,
        password: Option<&str>,
    ) -> Result<(), HomeError> {
        valid_name(name)?;
        let hash = match password {
            Some("") => {
                return Err(HomeError::Invalid("the password is empty".into()));
            }
            Some(p) => Some(
                Argon2::default()
                    .hash_password(p.as_bytes(), &salt()?)
                    .map_err(|e| HomeError::Invalid(format!("cannot hash the password: {e}")))?
                    .to_string(),
            ),
            None => None,
        };
        self.conn
            .execute(
                "INSERT INTO users (name, role, password_hash, created_at) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (name) DO UPDATE SET role = ?2, password_hash = ?3",
                params![name, role.as_str(), hash, now_ms()],
            )
            .map_err(self.sql())?;
        Ok(())
    }

    pub fn remove_user(&self, name: &str) -> Result<bool, HomeError> {
        self.conn
            .execute("DELETE FROM sessions WHERE user = ?1", params![name])
            .map_err(self.sql())?;
        Ok(self
            .conn
            .execute("DELETE FROM users WHERE name = ?1", params![name])
            .map_err(self.sql())?
            > 0)
    }

    pub fn users(&self) -> Result<Vec<User>, HomeError> {
        let mut stmt = self
            .conn
            .prepare("SELECT name, role FROM users ORDER BY name")
            .map_err(self.sql())?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(self.sql())?;
        let mut out = Vec::new();
        for row in rows {
            let (name, role) = row.map_err(self.sql())?;
            out.push(User {
                name,
                role: role.parse().unwrap_or(Role::Viewer),
            });
        }
        Ok(out)
    }

    /// A user's role, when the user exists.
    pub fn role_of(&self, name: &str) -> Result<Option<Role>, HomeError> {
        Ok(self
            .conn
            .query_row(
                "SELECT role FROM users WHERE name = ?1",
                params![name],
                |r| r.get::<_, String>(0),
            )
            .optional()
            .map_err(self.sql())?
            .map(|r| r.parse().unwrap_or(Role::Viewer)))
    }

    /// The user's role when the password is theirs. The hash is checked even for an unknown
    /// name, so the time taken does not tell which names exist.
    pub fn check_password(&self, name: &str, password: &str) -> Result<Option<Role>, HomeError> {
        let found: Option<(String, Option<String>)> = self
            .conn
            .query_row(
                "SELECT role, password_hash FROM users WHERE name = ?1",
                params![name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(self.sql())?;
        // The hash of a random password stands in for a missing one.
        let dummy = self.dummy.get_or_init(|| {
            let pw = random_token(16).unwrap_or_default();
            salt()
                .ok()
                .and_then(|salt| {
                    Argon2::default()
                        .hash_password(pw.as_bytes(), &salt)
                        .map(|h| h.to_string())
                        .ok()
                })
                .unwrap_or_default()
        });
        let (role, hash) = match &found {
            Some((role, Some(hash))) => (Some(role.clone()), hash.as_str()),
            _ => (None, dummy.as_str()),
        };
        let ok = PasswordHash::new(hash)
            .map(|h| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false);
        Ok(match (ok, role) {
            (true, Some(r)) => Some(r.parse().unwrap_or(Role::Viewer)),
            _ => None,
        })
    }

    /// Creates an API token named `name` with `role`; the token is returned once and only
    /// its hash is kept.
    pub fn create_token(&self, name: &str, role: Role) -> Result<String, HomeError> {
        valid_name(name)?;
        let token = format!("cutover_{}", random_token(32)?);
        let inserted = self
            .conn
            .execute(
                "INSERT INTO tokens (name, role, hash, created_at) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (name) DO NOTHING",
                params![name, role.as_str(), digest(&token), now_ms()],
            )
            .map_err(self.sql())?;
        if inserted == 0 {
            return Err(HomeError::Invalid(format!(
                "a token named `{name}` exists: revoke it first (`cutover token revoke {name}`)"
            )));
        }
        Ok(token)
    }

    pub fn revoke_token(&self, name: &str) -> Result<bool, HomeError> {
        Ok(self
            .conn
            .execute("DELETE FROM tokens WHERE name = ?1", params![name])
            .map_err(self.sql())?
            > 0)
    }

    /// The name and role of the token, when it is one.
    pub fn check_token(&self, token: &str) -> Result<Option<(String, Role)>, HomeError> {
        let hash = digest(token);
        let found: Option<(String, String)> = self
            .conn
            .query_row(
                "SELECT name, role FROM tokens WHERE hash = ?1",
                params![hash],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(self.sql())?;
        if found.is_some() {
            self.conn
                .execute(
                    "UPDATE tokens SET last_used = ?2 WHERE hash = ?1",
                    params![hash, now_ms()],
                )
                .map_err(self.sql())?;
        }
        Ok(found.map(|(n, r)| (n, r.parse().unwrap_or(Role::Viewer))))
    }

    /// Starts a session for `user`; the session id is returned once (for the cookie).
    pub fn start_session(&self, user: &str) -> Result<String, HomeError> {
        let id = random_token(32)?;
        let now = now_ms();
        self.conn
            .execute("DELETE FROM sessions WHERE expires_at < ?1", params![now])
            .map_err(self.sql())?;
        self.conn
            .execute(
                "INSERT INTO sessions (hash, user, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
                params![digest(&id), user, now, now + SESSION_TTL_MS],
            )
            .map_err(self.sql())?;
        Ok(id)
    }

    /// The user of a live session.
    pub fn session_user(&self, id: &str) -> Result<Option<String>, HomeError> {
        self.conn
            .query_row(
                "SELECT user FROM sessions WHERE hash = ?1 AND expires_at > ?2",
                params![digest(id), now_ms()],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.sql())
    }

    pub fn end_session(&self, id: &str) -> Result<(), HomeError> {
        self.conn
            .execute("DELETE FROM sessions WHERE hash = ?1", params![digest(id)])
            .map_err(self.sql())?;
        Ok(())
    }

    /// The CSRF token of a session (or of a trusted proxy's user): derived from it with the
    /// home's secret, so nothing more is stored and another session's token does not fit.
    pub fn csrf_token(&self, session: &str) -> String {
        let mut h = blake3::Hasher::new_keyed(&self.secret);
        h.update(b"csrf:");
        h.update(session.as_bytes());
        h.finalize().to_hex()[..32].to_string()
    }

    /// Appends to the audit log; returns the entry's id (its outcome can be completed later).
    #[allow(clippy::too_many_arguments)]
    pub fn audit(
        &self,
        actor: &str,
        via: &str,
        remote: &str,
        action: &str,
        stack: Option<&str>,
        target: Option<&str>,
        outcome: &str,
    ) -> Result<u64, HomeError> {
        self.conn
            .execute(
                "INSERT INTO audit (at, actor, via, remote, action, stack, target, outcome) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![now_ms(), actor, via, remote, action, stack, target, outcome],
            )
            .map_err(self.sql())?;
        Ok(self.conn.last_insert_rowid() as u64)
    }

    /// Completes an entry's outcome (an operation that ended after the request).
    pub fn audit_outcome(&self, id: u64, outcome: &str) -> Result<(), HomeError> {
        self.conn
            .execute(
                "UPDATE audit SET outcome = ?2 WHERE id = ?1",
                params![id as i64, outcome],
            )
            .map_err(self.sql())?;
        Ok(())
    }

    /// The newest `limit` entries, newest first.
    pub fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>, HomeError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, at, actor, via, remote, action, stack, target, outcome FROM audit \
                 ORDER BY id DESC LIMIT ?1",
            )
            .map_err(self.sql())?;
        let rows = stmt
            .query_map(params![limit as i64], |r| {
                Ok(AuditEntry {
                    id: r.get::<_, i64>(0)? as u64,
                    at: cutover_ops::shapes::when(r.get(1)?),
                    actor: r.get(2)?,
                    via: r.get(3)?,
                    remote: r.get(4)?,
                    action: r.get(5)?,
                    stack: r.get(6)?,
                    target: r.get(7)?,
                    outcome: r.get(8)?,
                })
            })
            .map_err(self.sql())?;
        rows.collect::<Result<_, _>>().map_err(self.sql())
    }
}

fn valid_name(name: &str) -> Result<(), HomeError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c));
    if ok {
        Ok(())
    } else {
        Err(HomeError::Invalid(format!(
            "`{name}` is not a name: 1 to 64 letters, digits, `.`, `_`, `-` or `@`"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn home() -> (tempfile::TempDir, Home) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let home = Home::open(&tmp.path().join("home")).expect("home");
        (tmp, home)
    }

    #[test]
    fn a_password_is_kept_as_an_argon2_hash_and_checked() {
        let (_t, home) = home();
        home.put_user("alice", Role::Operator, Some("correct horse"))
            .expect("add");
        assert_eq!(
            home.check_password("alice", "correct horse")
                .expect("check"),
            Some(Role::Operator)
        );
        assert_eq!(home.check_password("alice", "wrong").expect("check"), None);
        assert_eq!(home.check_password("nobody", "x").expect("check"), None);
        let stored: String = home
            .conn
            .query_row("SELECT password_hash FROM users", [], |r| r.get(0))
            .expect("row");
        assert!(stored.starts_with("$argon2id$"), "{stored}");
        assert!(!stored.contains("correct horse"));
        // A user without a password cannot sign in with one.
        home.put_user("sso", Role::Viewer, None).expect("add");
        assert_eq!(home.check_password("sso", "").expect("check"), None);
    }

    #[test]
    fn a_token_is_shown_once_and_only_its_hash_is_kept() {
        let (_t, home) = home();
        let token = home.create_token("ci", Role::Operator).expect("token");
        assert_eq!(
            home.check_token(&token).expect("check"),
            Some(("ci".into(), Role::Operator))
        );
        assert_eq!(home.check_token("cutover_nope").expect("check"), None);
        let err = home.create_token("ci", Role::Viewer).expect_err("twice");
        assert!(err.to_string().contains("revoke it first"), "{err}");
        assert!(home.revoke_token("ci").expect("revoke"));
        assert_eq!(home.check_token(&token).expect("check"), None);
        let db = std::fs::read(home.dir().join("dashboard.db")).expect("db");
        assert!(
            !String::from_utf8_lossy(&db).contains(&token),
            "the token itself is not stored"
        );
    }

    #[test]
    fn files_are_private_and_csrf_tokens_differ_per_session() {
        let (_t, home) = home();
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(home.dir()), 0o700);
        assert_eq!(mode(&home.dir().join("dashboard.db")), 0o600);
        assert_eq!(mode(&home.dir().join("secret")), 0o600);
        let a = home.start_session("alice").expect("session");
        let b = home.start_session("alice").expect("session");
        assert_eq!(
            home.session_user(&a).expect("user").as_deref(),
            Some("alice")
        );
        assert_ne!(home.csrf_token(&a), home.csrf_token(&b));
        home.end_session(&a).expect("end");
        assert_eq!(home.session_user(&a).expect("user"), None);
        // The same home opened again derives the same token: the secret is kept.
        let again = Home::open(home.dir()).expect("reopen");
        assert_eq!(again.csrf_token(&b), home.csrf_token(&b));
    }

    #[test]
    fn the_audit_log_keeps_an_outcome_completed_later() {
        let (_t, home) = home();
        let id = home
            .audit(
                "alice",
                "session",
                "127.0.0.1",
                "apply",
                Some("demo"),
                Some("app.image=v2"),
                "started operation 3",
            )
            .expect("audit");
        home.audit_outcome(id, "started operation 3: reverted (exit 1)")
            .expect("outcome");
        let log = home.audit_log(10).expect("log");
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].outcome, "started operation 3: reverted (exit 1)");
        assert_eq!(log[0].actor, "alice");
    }
}
