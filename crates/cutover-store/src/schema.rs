//! The schema and its migrations, tracked in `PRAGMA user_version`.

use std::path::Path;

use rusqlite::{Connection, Transaction, TransactionBehavior};

use crate::StoreError;

/// Migration `i` (0-based) brings the schema from version `i` to `i + 1`.
/// Append only: never edit a migration that has shipped.
pub(crate) const MIGRATIONS: &[&str] = &[V1, V2, V3, V4, V5, V6];

/// An approval can be refused as well as given, each with a comment (the dashboard's
/// approve/reject).
const V6: &str = r#"
ALTER TABLE approvals ADD COLUMN rejected INTEGER NOT NULL DEFAULT 0;
ALTER TABLE approvals ADD COLUMN comment TEXT;
"#;

/// Where a release came from, when not from a person's `apply`: a git commit that
/// `cutover watch` applied (id, author, subject), as JSON.
const V5: &str = r#"
ALTER TABLE releases ADD COLUMN source_json TEXT;
"#;

/// Approval steps: a second person approves a waiting operation with `cutover approve`.
const V4: &str = r#"
CREATE TABLE approvals (
    op           INTEGER NOT NULL REFERENCES operations (id),
    step_id      TEXT    NOT NULL,
    text         TEXT    NOT NULL,
    requested_at INTEGER NOT NULL,
    approved_by  TEXT,
    approved_at  INTEGER,
    PRIMARY KEY (op, step_id)
) STRICT;
"#;

/// What `resume` needs to finish an interrupted operation (its plan and the containers that
/// ran before it), and the emergency stop `abort` asks for.
const V3: &str = r#"
CREATE TABLE operation_context (
    op                 INTEGER PRIMARY KEY REFERENCES operations (id),
    context_json       TEXT    NOT NULL,
    abort_requested_by TEXT
) STRICT;
"#;

/// The traffic proxy's routes and upstreams, so they survive its restart.
const V2: &str = r#"
CREATE TABLE proxy_state (
    stack      TEXT    PRIMARY KEY,
    state_json TEXT    NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;
"#;

const V1: &str = r#"
CREATE TABLE releases (
    stack       TEXT    NOT NULL,
    revision    INTEGER NOT NULL CHECK (revision >= 1),
    spec_json   TEXT    NOT NULL,
    images_json TEXT    NOT NULL,
    created_by  TEXT    NOT NULL,
    host        TEXT    NOT NULL,
    reason      TEXT,
    status      TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (stack, revision)
) STRICT;
CREATE INDEX releases_by_status ON releases (stack, status, revision);

CREATE TABLE operations (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    stack            TEXT    NOT NULL,
    kind             TEXT    NOT NULL,
    release_revision INTEGER,
    status           TEXT    NOT NULL,
    holder_user      TEXT    NOT NULL,
    holder_host      TEXT    NOT NULL,
    holder_pid       INTEGER NOT NULL,
    holder_pid_start INTEGER,
    started_at       INTEGER NOT NULL,
    finished_at      INTEGER,
    error            TEXT,
    FOREIGN KEY (stack, release_revision) REFERENCES releases (stack, revision)
) STRICT;
CREATE INDEX operations_by_stack ON operations (stack, id);
CREATE INDEX operations_by_status ON operations (stack, status, id);

CREATE TABLE journal (
    op          INTEGER NOT NULL REFERENCES operations (id),
    seq         INTEGER NOT NULL CHECK (seq >= 1),
    step_id     TEXT    NOT NULL,
    phase       TEXT    NOT NULL,
    title       TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,
    output_tail TEXT    NOT NULL DEFAULT '',
    PRIMARY KEY (op, seq)
) STRICT;

CREATE TABLE leases (
    stack            TEXT    PRIMARY KEY,
    token            TEXT    NOT NULL,
    holder_user      TEXT    NOT NULL,
    holder_host      TEXT    NOT NULL,
    holder_pid       INTEGER NOT NULL,
    holder_pid_start INTEGER,
    operation        TEXT    NOT NULL,
    acquired_at      INTEGER NOT NULL,
    renewed_at       INTEGER NOT NULL,
    expires_at       INTEGER NOT NULL
) STRICT;

CREATE TABLE lease_events (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    at               INTEGER NOT NULL,
    kind             TEXT    NOT NULL,
    stack            TEXT    NOT NULL,
    holder_user      TEXT    NOT NULL,
    holder_host      TEXT    NOT NULL,
    holder_pid       INTEGER NOT NULL,
    holder_pid_start INTEGER,
    prev_user        TEXT,
    prev_host        TEXT,
    prev_pid         INTEGER,
    prev_pid_start   INTEGER
) STRICT;
CREATE INDEX lease_events_by_stack ON lease_events (stack, id);
"#;

/// The schema version this build writes.
pub(crate) fn latest() -> i64 {
    i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX)
}

fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
}

/// Brings the schema up to [`latest`], one migration per transaction. Each
/// step re-reads the version inside its `BEGIN IMMEDIATE` transaction, so two
/// processes opening a fresh file at once do not both apply it.
pub(crate) fn migrate(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let found =
        crate::retry_busy(crate::BUSY_TIMEOUT, || user_version(conn)).map_err(|source| {
            StoreError::Open {
                path: path.to_path_buf(),
                source,
            }
        })?;
    if found > latest() {
        return Err(StoreError::SchemaTooNew {
            path: path.to_path_buf(),
            found,
            supported: latest(),
        });
    }
    for (index, migration) in MIGRATIONS.iter().enumerate() {
        let version = i64::try_from(index + 1).unwrap_or(i64::MAX);
        if version <= found {
            continue;
        }
        let err = |source| StoreError::Migrate {
            path: path.to_path_buf(),
            version,
            source,
        };
        let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate).map_err(err)?;
        let now = user_version(&tx).map_err(err)?;
        if now > latest() {
            return Err(StoreError::SchemaTooNew {
                path: path.to_path_buf(),
                found: now,
                supported: latest(),
            });
        }
        if now < version {
            tx.execute_batch(migration).map_err(err)?;
            tx.pragma_update(None, "user_version", version)
                .map_err(err)?;
        }
        tx.commit().map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrating_twice_is_a_no_op() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("state.db");
        let conn = Connection::open(&path).expect("open");
        migrate(&conn, &path).expect("first");
        assert_eq!(user_version(&conn).expect("version"), latest());
        migrate(&conn, &path).expect("second");
        assert_eq!(user_version(&conn).expect("version"), latest());
        let tables: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_schema WHERE type = 'table' AND name IN \
                 ('releases', 'operations', 'journal', 'leases', 'lease_events')",
                [],
                |row| row.get(0),
            )
            .expect("count tables");
        assert_eq!(tables, 5);
    }

    #[test]
    fn failed_migration_rolls_back_and_keeps_the_version() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("state.db");
        let conn = Connection::open(&path).expect("open");
        // A table in the way makes V1's CREATE TABLE fail half-way.
        conn.execute_batch("CREATE TABLE leases (x INTEGER)")
            .expect("squat");
        let err = migrate(&conn, &path).expect_err("must fail");
        assert!(
            matches!(err, StoreError::Migrate { version: 1, .. }),
            "{err:?}"
        );
        assert_eq!(user_version(&conn).expect("version"), 0);
        let releases: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_schema WHERE name = 'releases'",
                [],
                |row| row.get(0),
            )
            .expect("count");
        assert_eq!(releases, 0, "the partial migration was rolled back");
    }
}
