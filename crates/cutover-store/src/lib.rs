//! Durable state of cutover: releases, operations, the step journal and the
//! per-stack lease, kept in an embedded SQLite database (`state.db`) under a
//! state directory.
//!
//! The store knows nothing about containers or databases: specs and image
//! lists are opaque JSON text, a few columns are typed so they can be queried.
//! Every read-modify-write happens in one `BEGIN IMMEDIATE` transaction, so
//! several processes (or several [`Store`]s in one process) can share a file
//! safely; SQLite's busy timeout makes them wait for each other instead of
//! failing with `SQLITE_BUSY`.

#![warn(missing_docs)]

mod approvals;
mod context;
mod error;
mod lease;
mod model;
mod operations;
mod proc;
mod proxy;
mod releases;
mod schema;
mod time;

pub use time::format_millis;

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, Row, Transaction, TransactionBehavior};

pub use approvals::{Approval, Decision};
pub use error::StoreError;
pub use model::{
    Holder, Lease, LeaseEvent, LeaseGrant, NewRelease, Operation, OperationStatus,
    ParseStatusError, Release, ReleaseStatus, StepRecord, StepStatus,
};

/// A point in time as milliseconds since the Unix epoch (UTC); used for every
/// timestamp the store records.
pub type Millis = i64;

/// File name of the database inside the state directory.
const DB_FILE: &str = "state.db";

/// How long a connection waits for another writer before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Handle on the state database, scoped to one stack.
///
/// All queries and updates only see and touch rows of [`Store::stack`]; one
/// database file can hold any number of stacks. A `Store` is `Send` but not
/// `Sync`: give each thread its own (they may share the file).
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    stack: String,
    path: PathBuf,
    /// Replaces the wall clock in tests (expiry, timestamps).
    #[cfg(test)]
    now_override: std::cell::Cell<Option<Millis>>,
}

impl Store {
    /// Opens (creating if needed) `<state_dir>/state.db` for `stack`.
    ///
    /// Creates `state_dir` if it is missing, sets `journal_mode=WAL`,
    /// `synchronous=FULL`, `foreign_keys=ON` and a 5 s busy timeout, then
    /// brings the schema up to date (tracked in `PRAGMA user_version`). A
    /// database written by a newer cutover (higher schema version than this
    /// build knows) is refused with [`StoreError::SchemaTooNew`] and left
    /// untouched.
    pub fn open(state_dir: &Path, stack: &str) -> Result<Store, StoreError> {
        if stack.is_empty() {
            return Err(StoreError::InvalidArgument {
                what: "the stack name must not be empty".to_owned(),
            });
        }
        let dir_err = |source| StoreError::CreateDir {
            path: state_dir.to_path_buf(),
            source,
        };
        // The state (and the restore points kept beside it) is the operator's alone.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .map_err(dir_err)?;
        let path = state_dir.join(DB_FILE);
        private_file(&path).map_err(|source| StoreError::CreateDir {
            path: path.clone(),
            source,
        })?;
        let open_err = |source| StoreError::Open {
            path: path.clone(),
            source,
        };
        let conn = Connection::open(&path).map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        // Switching the journal mode needs an exclusive lock and SQLite does
        // not run the busy handler for it, so several processes opening a new
        // file at once must retry by hand. Returns the resulting mode; a file
        // system without WAL support keeps the rollback journal, which is
        // slower but just as safe.
        let _mode: String = retry_busy(BUSY_TIMEOUT, || {
            conn.pragma_update_and_check(None, "journal_mode", "wal", |row| row.get(0))
        })
        .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_err)?;
        schema::migrate(&conn, &path)?;
        Ok(Store {
            conn,
            stack: stack.to_owned(),
            path,
            #[cfg(test)]
            now_override: std::cell::Cell::new(None),
        })
    }

    /// Whether `state_dir` holds a state database (read-only verbs create none).
    pub fn exists(state_dir: &Path) -> bool {
        state_dir.join(DB_FILE).exists()
    }

    /// The stack this handle reads and writes.
    pub fn stack(&self) -> &str {
        &self.stack
    }

    /// Path of the database file (`<state_dir>/state.db`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current time; tests may pin it.
    fn now(&self) -> Millis {
        #[cfg(test)]
        if let Some(now) = self.now_override.get() {
            return now;
        }
        time::now_millis()
    }

    /// Pins the clock used for new timestamps and lease expiry (tests only).
    #[cfg(test)]
    fn set_now(&self, now: Millis) {
        self.now_override.set(Some(now));
    }

    /// Starts a write transaction right away (`BEGIN IMMEDIATE`), so that a
    /// read followed by a write cannot interleave with another writer.
    fn immediate(&self) -> Result<Transaction<'_>, StoreError> {
        Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)
            .map_err(sql("cannot start a write transaction"))
    }
}

/// Whether SQLite gave up because another connection holds a lock.
fn is_busy(err: &rusqlite::Error) -> bool {
    matches!(
        err.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// Runs `f` until it does not fail with "database is locked" or `patience`
/// has passed, sleeping a little longer between attempts each time.
fn retry_busy<T>(
    patience: Duration,
    mut f: impl FnMut() -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    let deadline = std::time::Instant::now() + patience;
    let mut pause = Duration::from_millis(1);
    loop {
        match f() {
            Err(e) if is_busy(&e) && std::time::Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            result => return result,
        }
    }
}

/// Maps a rusqlite error to a [`StoreError`]: values that cannot be decoded
/// (unknown status strings, negative counters, wrong types) mean the file holds
/// data this code never writes, i.e. [`StoreError::Corrupt`]; everything else
/// is [`StoreError::Sql`] with `context`.
fn sql(context: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| match source {
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::IntegralValueOutOfRange(..)
        | rusqlite::Error::InvalidColumnType(..) => StoreError::Corrupt {
            what: format!("{context}: {source}"),
        },
        source => StoreError::Sql { context, source },
    }
}

/// Converts an id/revision/counter to SQLite's signed integer.
fn int(value: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::InvalidArgument {
        what: format!("{what} {value} is out of range"),
    })
}

/// Reads a non-negative integer column as `u64`; a negative value is an
/// `IntegralValueOutOfRange` error, which [`sql`] reports as corruption.
fn get_u64(row: &Row<'_>, col: &str) -> rusqlite::Result<u64> {
    let idx = row.as_ref().column_index(col)?;
    let value: i64 = row.get(idx)?;
    u64::try_from(value).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(idx, value))
}

/// Like [`get_u64`] for a nullable column.
fn get_opt_u64(row: &Row<'_>, col: &str) -> rusqlite::Result<Option<u64>> {
    let idx = row.as_ref().column_index(col)?;
    match row.get::<_, Option<i64>>(idx)? {
        None => Ok(None),
        Some(v) => u64::try_from(v)
            .map(Some)
            .map_err(|_| rusqlite::Error::IntegralValueOutOfRange(idx, v)),
    }
}

/// Converts a `limit` argument to SQLite's signed integer (saturating).
fn limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// Creates `path` empty with mode 0600 when it does not exist, and takes group and other
/// access away when it does (a state file made by an older cutover). SQLite gives the
/// `-wal` and `-shm` files it creates beside a database the database file's mode.
fn private_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            for p in [
                path.to_path_buf(),
                path.with_extension("db-wal"),
                path.with_extension("db-shm"),
            ] {
                match std::fs::metadata(&p) {
                    Ok(m) if m.permissions().mode() & 0o077 != 0 => {
                        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))?;
                    }
                    _ => {}
                }
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}
#[cfg(test)]
pub(crate) mod testutil {
    use super::*;

    /// Opens `stack` in `dir`, panicking with context on failure.
    pub(crate) fn open(dir: &Path, stack: &str) -> Store {
        Store::open(dir, stack).expect("open store")
    }

    /// A holder on another machine (its liveness cannot be checked from here).
    pub(crate) fn remote(user: &str) -> Holder {
        Holder {
            user: user.to_owned(),
            host: "elsewhere.example".to_owned(),
            pid: 4242,
            pid_start: Some(77),
        }
    }

    /// A release with recognisable field values.
    pub(crate) fn new_release(status: ReleaseStatus) -> NewRelease<'static> {
        NewRelease {
            spec_json: r#"{"app":"paperless","version":"2.1"}"#,
            images_json: r#"["ghcr.io/x/y@sha256:abc"]"#,
            created_by: "alice",
            host: "box1",
            reason: Some("monthly upgrade"),
            status,
            source_json: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;

    fn pragma_i64(store: &Store, name: &str) -> i64 {
        store
            .conn
            .pragma_query_value(None, name, |row| row.get(0))
            .expect("pragma")
    }

    #[test]
    fn open_creates_missing_dir_and_sets_pragmas() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("a/b/state");
        let store = open(&dir, "web");
        assert_eq!(store.path(), dir.join("state.db"));
        assert!(store.path().is_file());
        assert_eq!(store.stack(), "web");
        let mode: String = store
            .conn
            .pragma_query_value(None, "journal_mode", |row| row.get(0))
            .expect("journal_mode");
        assert_eq!(mode, "wal");
        assert_eq!(pragma_i64(&store, "synchronous"), 2, "FULL");
        assert_eq!(pragma_i64(&store, "foreign_keys"), 1);
        assert_eq!(pragma_i64(&store, "busy_timeout"), 5000);
        assert_eq!(
            pragma_i64(&store, "user_version"),
            i64::try_from(schema::MIGRATIONS.len()).expect("len")
        );
    }

    #[test]
    fn retry_busy_retries_only_busy_errors_and_gives_up() {
        let busy = || {
            rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                None,
            )
        };
        let mut calls = 0;
        let result = retry_busy(Duration::from_secs(5), || {
            calls += 1;
            if calls < 3 { Err(busy()) } else { Ok(calls) }
        });
        assert_eq!(result.expect("third call succeeds"), 3);

        let mut calls = 0;
        let result: rusqlite::Result<()> = retry_busy(Duration::from_secs(5), || {
            calls += 1;
            Err(rusqlite::Error::InvalidQuery)
        });
        assert!(matches!(result, Err(rusqlite::Error::InvalidQuery)));
        assert_eq!(calls, 1, "other errors are not retried");

        let result: rusqlite::Result<()> = retry_busy(Duration::from_millis(20), || Err(busy()));
        assert!(result.as_ref().is_err_and(is_busy), "{result:?}");
    }

    #[test]
    fn empty_stack_name_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let err = Store::open(tmp.path(), "").expect_err("empty stack");
        assert!(matches!(err, StoreError::InvalidArgument { .. }), "{err:?}");
    }

    #[test]
    fn data_survives_reopen() -> Result<(), StoreError> {
        let tmp = tempfile::tempdir().expect("tempdir");
        let holder = remote("alice");
        let (op_id, token) = {
            let store = open(tmp.path(), "web");
            store.insert_release(&new_release(ReleaseStatus::Deployed))?;
            let op = store.begin_operation("apply", Some(1), &holder)?;
            store.step_started(op.id, "pull", "upgrade", "Pull images")?;
            let grant = store.acquire_lease(&holder, "apply", Duration::from_secs(60))?;
            (op.id, grant.lease.token)
        };
        let store = open(tmp.path(), "web");
        let current = store.current_release()?.expect("release survives");
        assert_eq!(current.revision, 1);
        let op = store.operation(op_id)?.expect("operation survives");
        assert_eq!(op.status, OperationStatus::Running);
        assert_eq!(store.journal(op_id)?.len(), 1);
        let lease = store.current_lease()?.expect("lease survives");
        assert_eq!(lease.token, token);
        assert_eq!(lease.holder, holder);
        Ok(())
    }

    #[test]
    fn newer_schema_is_refused_without_touching_the_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = open(tmp.path(), "web").path().to_path_buf();
        {
            let conn = Connection::open(&path).expect("raw open");
            conn.pragma_update(None, "user_version", 99)
                .expect("bump version");
        }
        let err = Store::open(tmp.path(), "web").expect_err("newer schema");
        match &err {
            StoreError::SchemaTooNew {
                path: p,
                found,
                supported,
            } => {
                assert_eq!(p, &path);
                assert_eq!(*found, 99);
                assert_eq!(*supported, crate::schema::MIGRATIONS.len() as i64);
            }
            other => panic!("expected SchemaTooNew, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains("99") && msg.contains("newer"), "{msg}");
        let conn = Connection::open(&path).expect("raw open");
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .expect("user_version");
        assert_eq!(version, 99);
    }

    #[test]
    fn the_state_is_private_to_its_owner_also_when_an_older_version_made_it_readable() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("state");
        let store = open(&dir, "web");
        store
            .insert_release(&new_release(ReleaseStatus::Pending))
            .expect("write");
        assert_eq!(mode(&dir), 0o700);
        for f in ["state.db", "state.db-wal"] {
            assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
        }
        drop(store);
        std::fs::set_permissions(dir.join(DB_FILE), std::fs::Permissions::from_mode(0o644))
            .expect("chmod");
        let _store = open(&dir, "web");
        assert_eq!(mode(&dir.join(DB_FILE)), 0o600);
    }

    #[test]
    fn a_file_that_is_not_a_database_is_an_open_error() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::write(tmp.path().join(DB_FILE), vec![b'x'; 4096]).expect("write junk");
        let err = Store::open(tmp.path(), "web").expect_err("junk file");
        assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
        assert!(err.to_string().contains("state.db"), "{err}");
    }

    #[test]
    fn undecodable_values_are_reported_as_corrupt() -> Result<(), StoreError> {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = open(tmp.path(), "web");
        store.insert_release(&new_release(ReleaseStatus::Pending))?;
        store
            .conn
            .execute("UPDATE releases SET status = 'exploded'", [])
            .expect("tamper");
        let err = store.release(1).expect_err("bad status");
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
        assert!(err.to_string().contains("exploded"), "{err}");
        Ok(())
    }
}
