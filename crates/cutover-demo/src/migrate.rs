//! The app's SQLite schema and its migrations.
//!
//! Each migration runs in its own transaction and is recorded in `schema_version`, the way
//! most real apps do it; an app finding a database newer than it knows keeps running
//! (forward-compatible), and the `DEMO_BREAK_MIGRATION` fault leaves a migration half applied,
//! which is what cutover's backup and restore are for.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

/// How long a statement waits for another process's lock (the old and the new version of the
/// app may share the database during a cutover).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// One step of the schema.
struct Migration {
    /// The schema version this migration brings the database to.
    version: u32,
    /// What it does, for the log.
    what: &'static str,
    /// The statements, run in order.
    statements: &'static [&'static str],
}

/// Every migration, in order; migration `n` is at index `n - 1`.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        what: "create table items",
        statements: &["CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL)"],
    },
    Migration {
        version: 2,
        what: "add column items.created_at",
        statements: &["ALTER TABLE items ADD COLUMN created_at TEXT"],
    },
    Migration {
        version: 3,
        what: "create table tags",
        statements: &["CREATE TABLE tags (item_id INTEGER, tag TEXT)"],
    },
];

/// The newest schema version this build knows.
pub const LATEST: u32 = 3;

/// What [`migrate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The database is at the wanted version (`from == to` when nothing was applied).
    Migrated { from: u32, to: u32 },
    /// The database is newer than the app: nothing was touched.
    Ahead { db: u32, app: u32 },
    /// `DEMO_BREAK_MIGRATION`: migration `version` was applied halfway and not recorded.
    Broken { version: u32 },
}

/// Opens the database at `path`, creating its parent directory and the file if missing, in
/// WAL mode with a busy timeout.
pub fn open(path: &Path) -> Result<Connection, String> {
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create directory {}: {e}", dir.display()))?;
    }
    let fail = |e: rusqlite::Error| format!("cannot open database {}: {e}", path.display());
    let conn = Connection::open(path).map_err(fail)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(fail)?;
    // Answers the resulting mode; a file system without WAL support keeps the rollback
    // journal, which is slower but just as correct, so the answer is not checked.
    let _mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "wal", |row| row.get(0))
        .map_err(fail)?;
    Ok(conn)
}

/// The highest schema version recorded in the database (0 for a new one).
pub fn current_version(conn: &Connection) -> rusqlite::Result<u32> {
    conn.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_version",
        [],
        |row| row.get(0),
    )
}

/// Brings the database up to schema `target`, logging each migration through `log`.
///
/// With `break_last`, the last pending migration (the one to `target`) is applied halfway: its
/// first statement runs outside any transaction, so it sticks, and the version is not recorded.
/// The caller then exits as a real app whose migration died would.
pub fn migrate(
    conn: &mut Connection,
    target: u32,
    break_last: bool,
    mut log: impl FnMut(&str),
) -> Result<Outcome, String> {
    if target > LATEST {
        return Err(format!(
            "schema version {target} is unknown: this build knows versions 1 to {LATEST}"
        ));
    }
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TEXT)",
    )
    .map_err(|e| format!("cannot create table schema_version: {e}"))?;

    let from = current_version(conn).map_err(|e| format!("cannot read schema version: {e}"))?;
    if from > target {
        log(&format!(
            "warning: database schema is at version {from}, newer than this app's {target}; \
             running on it unchanged (forward-compatible)"
        ));
        return Ok(Outcome::Ahead {
            db: from,
            app: target,
        });
    }
    if from == target {
        log(&format!("database schema is at version {from}, up to date"));
        if break_last {
            log("DEMO_BREAK_MIGRATION: no migration is pending, nothing to break");
        }
        return Ok(Outcome::Migrated { from, to: target });
    }

    log(&format!(
        "database schema is at version {from}, migrating to {target}"
    ));
    for migration in MIGRATIONS
        .iter()
        .filter(|m| m.version > from && m.version <= target)
    {
        if break_last && migration.version == target {
            break_halfway(conn, migration, &mut log)?;
            return Ok(Outcome::Broken {
                version: migration.version,
            });
        }
        apply(conn, migration, &mut log)?;
    }
    Ok(Outcome::Migrated { from, to: target })
}

/// Applies one migration in a transaction that also records it.
///
/// The transaction takes the write lock up front (`BEGIN IMMEDIATE`) and checks again that the
/// version is not recorded yet: if another instance of the app sharing the database applied
/// it meanwhile, it is skipped instead of failing on a table that already exists.
fn apply(
    conn: &mut Connection,
    migration: &Migration,
    log: &mut impl FnMut(&str),
) -> Result<(), String> {
    let Migration {
        version,
        what,
        statements,
    } = migration;
    let fail = |e: rusqlite::Error| format!("migration {version} ({what}) failed: {e}");

    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(fail)?;
    let recorded: bool = tx
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM schema_version WHERE version = ?1)",
            [version],
            |row| row.get(0),
        )
        .map_err(fail)?;
    if recorded {
        log(&format!(
            "migration {version} ({what}) was applied meanwhile by another instance, skipped"
        ));
        return Ok(());
    }
    for statement in *statements {
        tx.execute_batch(statement).map_err(fail)?;
    }
    tx.execute(
        "INSERT INTO schema_version (version, applied_at) \
         VALUES (?1, strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))",
        [version],
    )
    .map_err(fail)?;
    tx.commit().map_err(fail)?;
    log(&format!("migration {version} applied: {what}"));
    Ok(())
}

/// The `DEMO_BREAK_MIGRATION` fault: runs the migration's first statement on its own, in
/// autocommit mode so it persists, and records nothing.
fn break_halfway(
    conn: &Connection,
    migration: &Migration,
    log: &mut impl FnMut(&str),
) -> Result<(), String> {
    let Migration { version, what, .. } = migration;
    log(&format!(
        "DEMO_BREAK_MIGRATION: applying migration {version} ({what}) halfway, outside a transaction"
    ));
    if let Some(first) = migration.statements.first() {
        conn.execute_batch(first)
            .map_err(|e| format!("migration {version} ({what}) failed: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh database in a temporary directory (kept alive by the returned guard).
    fn fresh() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().expect("temporary directory");
        let conn = open(&dir.path().join("sub/dir/demo.sqlite")).expect("open database");
        (dir, conn)
    }

    fn table_exists(conn: &Connection, name: &str) -> bool {
        conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)",
            [name],
            |row| row.get(0),
        )
        .expect("query sqlite_master")
    }

    fn recorded(conn: &Connection) -> Vec<u32> {
        let mut stmt = conn
            .prepare("SELECT version FROM schema_version ORDER BY version")
            .expect("prepare");
        stmt.query_map([], |row| row.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
    }

    #[test]
    fn migrates_step_by_step_to_the_latest() {
        let (_dir, mut conn) = fresh();
        let journal: String = conn
            .query_row("PRAGMA journal_mode", [], |row| row.get(0))
            .expect("journal mode");
        assert_eq!(journal, "wal");

        let outcome = migrate(&mut conn, 1, false, |_| {}).expect("migrate to 1");
        assert_eq!(outcome, Outcome::Migrated { from: 0, to: 1 });
        assert!(table_exists(&conn, "items"));
        assert!(!table_exists(&conn, "tags"));

        let mut lines = Vec::new();
        let outcome = migrate(&mut conn, 3, false, |l| lines.push(l.to_owned())).expect("to 3");
        assert_eq!(outcome, Outcome::Migrated { from: 1, to: 3 });
        assert_eq!(current_version(&conn).expect("version"), 3);
        assert_eq!(recorded(&conn), [1, 2, 3]);
        assert!(table_exists(&conn, "tags"));
        assert!(lines.iter().any(|l| l.contains("migration 2 applied")));
        assert!(lines.iter().any(|l| l.contains("migration 3 applied")));
        conn.execute(
            "INSERT INTO items (name, created_at) VALUES ('x', 'now')",
            [],
        )
        .expect("created_at column exists");

        let again = migrate(&mut conn, 3, false, |_| {}).expect("again");
        assert_eq!(again, Outcome::Migrated { from: 3, to: 3 });
    }

    #[test]
    fn a_newer_database_is_left_alone() {
        let (_dir, mut conn) = fresh();
        migrate(&mut conn, 3, false, |_| {}).expect("migrate to 3");
        let mut lines = Vec::new();
        let outcome = migrate(&mut conn, 1, false, |l| lines.push(l.to_owned())).expect("run v1");
        assert_eq!(outcome, Outcome::Ahead { db: 3, app: 1 });
        assert!(lines.iter().any(|l| l.starts_with("warning:")));
        assert_eq!(current_version(&conn).expect("version"), 3);
    }

    #[test]
    fn a_broken_migration_is_half_applied_and_not_recorded() {
        let (_dir, mut conn) = fresh();
        let outcome = migrate(&mut conn, 3, true, |_| {}).expect("migrate");
        assert_eq!(outcome, Outcome::Broken { version: 3 });
        assert_eq!(recorded(&conn), [1, 2]);
        assert_eq!(current_version(&conn).expect("version"), 2);
        assert!(table_exists(&conn, "tags"), "the first statement stuck");

        // Like a real half-applied migration, it does not heal by itself: running it again
        // fails on the table it left behind, until the database is restored.
        let err = migrate(&mut conn, 3, false, |_| {}).expect_err("retry fails");
        assert!(err.contains("tags already exists"), "{err}");
        assert_eq!(current_version(&conn).expect("version"), 2);
    }

    #[test]
    fn an_unknown_version_is_refused() {
        let (_dir, mut conn) = fresh();
        assert!(migrate(&mut conn, LATEST + 1, false, |_| {}).is_err());
        assert_eq!(MIGRATIONS.len(), LATEST as usize);
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(
                m.version as usize,
                i + 1,
                "migrations are numbered in order"
            );
        }
    }
}
