//! SQLite restore points: SQLite's online backup API into a file of ours, and back by an
//! atomic file replace while the writers are stopped.
//!
//! The backup reads through SQLite, so it is consistent even with a `-wal` file beside the
//! database that holds committed pages not yet checkpointed. Restoring writes the copy to a
//! temporary file in the database's directory, fsyncs it, removes the stale `-wal` and
//! `-shm` companions (they belong to the database being replaced: left in place, SQLite
//! would replay the failed release's writes onto the restored file), and renames it over the
//! database. The database as it was is kept beside it as `<name>.failed-<release>`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

#[derive(Debug, thiserror::Error)]
pub enum SqliteError {
    #[error("{what} ({path}): {source}")]
    Sqlite {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{what} ({path}): {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn lite<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(rusqlite::Error) -> SqliteError + 'a {
    move |source| SqliteError::Sqlite {
        what,
        path: path.to_path_buf(),
        source,
    }
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> SqliteError + 'a {
    move |source| SqliteError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// The `-wal` and `-shm` companions of a database file.
fn companions(db: &Path) -> [PathBuf; 2] {
    let name = db.as_os_str().to_os_string();
    let mut wal = name.clone();
    wal.push("-wal");
    let mut shm = name;
    shm.push("-shm");
    [PathBuf::from(wal), PathBuf::from(shm)]
}

/// Copies the database at `db` into `dest` with the online backup API. `dest` is written as
/// `<dest>.partial` first and renamed when complete, so a crash never leaves a copy that
/// looks whole.
pub fn backup(db: &Path, dest: &Path) -> Result<u64, SqliteError> {
    if !db.exists() {
        return Err(SqliteError::Io {
            what: "the SQLite database does not exist",
            path: db.to_path_buf(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
    }
    let src = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(lite("cannot open the SQLite database", db))?;
    let mut partial = dest.as_os_str().to_os_string();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let _ = std::fs::remove_file(&partial);
    {
        let mut out =
            Connection::open(&partial).map_err(lite("cannot create the copy", &partial))?;
        let backup = rusqlite::backup::Backup::new(&src, &mut out)
            .map_err(lite("cannot start the backup", db))?;
        backup
            .run_to_completion(1024, Duration::ZERO, None)
            .map_err(lite("the backup failed", db))?;
    }
    // The copy is a plain rollback-journal database: no companions to carry along.
    File::open(&partial)
        .and_then(|f| f.sync_all())
        .map_err(io("cannot sync the copy", &partial))?;
    std::fs::rename(&partial, dest).map_err(io("cannot move the copy into place", dest))?;
    sync_dir(dest)?;
    Ok(std::fs::metadata(dest)
        .map_err(io("cannot read the copy", dest))?
        .len())
}

/// Puts the copy at `copy` back as the database at `db` (writers stopped). The database as
/// it was goes to `<db>.failed-<release>` (with its companions); returns that path.
pub fn restore(copy: &Path, db: &Path, release: u64) -> Result<Option<PathBuf>, SqliteError> {
    // The copy must be a sound database before anything is touched.
    {
        let c = Connection::open_with_flags(copy, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(lite("cannot open the restore point", copy))?;
        let check: String = c
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(lite("cannot check the restore point", copy))?;
        if check != "ok" {
            return Err(SqliteError::Io {
                what: "the restore point fails SQLite's integrity check",
                path: copy.to_path_buf(),
                source: std::io::Error::other(check),
            });
        }
    }
    let dir = db.parent().unwrap_or(Path::new("."));
    let mut staged = db.as_os_str().to_os_string();
    staged.push(".cutover-restore");
    let staged = PathBuf::from(staged);
    std::fs::copy(copy, &staged).map_err(io("cannot stage the restore point", &staged))?;
    File::open(&staged)
        .and_then(|f| f.sync_all())
        .map_err(io("cannot sync the staged copy", &staged))?;

    let mut failed = None;
    if db.exists() {
        let mut aside = db.as_os_str().to_os_string();
        aside.push(format!(".failed-{release}"));
        let aside = PathBuf::from(aside);
        // Keep the failed database whole: file and companions together.
        std::fs::copy(db, &aside).map_err(io("cannot keep the failed database", &aside))?;
        for (c, a) in companions(db).iter().zip(companions(&aside).iter()) {
            if c.exists() {
                std::fs::copy(c, a).map_err(io("cannot keep a companion file", a))?;
            }
        }
        failed = Some(aside);
    }
    for c in companions(db) {
        match std::fs::remove_file(&c) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("cannot remove a stale companion", &c)(e)),
        }
    }
    std::fs::rename(&staged, db).map_err(io("cannot move the restore point into place", db))?;
    sync_dir(dir)?;
    Ok(failed)
}

/// Reads the schema version with `query` (first column of the first row, as text).
pub fn schema_version(db: &Path, query: &str) -> Result<Option<String>, SqliteError> {
    let c = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(lite("cannot open the SQLite database", db))?;
    let mut stmt = c
        .prepare(query)
        .map_err(lite("the schema version query is invalid", db))?;
    let mut rows = stmt
        .query([])
        .map_err(lite("the schema version query failed", db))?;
    let Some(row) = rows
        .next()
        .map_err(lite("the schema version query failed", db))?
    else {
        return Ok(None);
    };
    let v: rusqlite::types::Value = row.get(0).map_err(lite("unreadable schema version", db))?;
    Ok(match v {
        rusqlite::types::Value::Null => None,
        rusqlite::types::Value::Integer(i) => Some(i.to_string()),
        rusqlite::types::Value::Real(f) => Some(f.to_string()),
        rusqlite::types::Value::Text(t) => Some(t),
        rusqlite::types::Value::Blob(b) => Some(String::from_utf8_lossy(&b).into_owned()),
    })
}

/// Runs `sql` (one or more statements) on the database, for a stack file's `sql` step.
pub fn execute(db: &Path, sql: &str) -> Result<(), SqliteError> {
    let c = Connection::open(db).map_err(lite("cannot open the SQLite database", db))?;
    c.busy_timeout(Duration::from_secs(10))
        .map_err(lite("cannot set the busy timeout", db))?;
    c.execute_batch(sql)
        .map_err(lite("the SQL step failed", db))
}

/// fsync a directory, so a rename in it is durable.
fn sync_dir(path: &Path) -> Result<(), SqliteError> {
    let dir = if path.is_dir() {
        path
    } else {
        path.parent().unwrap_or(Path::new("."))
    };
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io("cannot sync the directory", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dump(db: &Path) -> Vec<String> {
        let c = Connection::open(db).expect("open");
        let mut out = Vec::new();
        let mut s = c
            .prepare("SELECT name, sql FROM sqlite_master ORDER BY name")
            .expect("prepare");
        let rows = s
            .query_map([], |r| {
                Ok(format!(
                    "{}: {}",
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<String>>(1)?.unwrap_or_default()
                ))
            })
            .expect("query");
        for r in rows {
            out.push(r.expect("row"));
        }
        let mut s = c
            .prepare("SELECT id, name FROM items ORDER BY id")
            .expect("items");
        let rows = s
            .query_map([], |r| {
                Ok(format!(
                    "{}={}",
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?
                ))
            })
            .expect("query");
        for r in rows {
            out.push(r.expect("row"));
        }
        out
    }

    #[test]
    fn backup_in_wal_mode_and_restore_give_back_the_exact_content() {
        let tmp = tempfile::tempdir().expect("tmp");
        let db = tmp.path().join("app.sqlite");
        // A writer in WAL mode that keeps its connection open: committed pages sit in -wal.
        let w = Connection::open(&db).expect("open");
        w.pragma_update(None, "journal_mode", "WAL").expect("wal");
        w.execute_batch(
            "PRAGMA wal_autocheckpoint = 0;
             CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
             CREATE TABLE schema_version (version INTEGER PRIMARY KEY);
             INSERT INTO schema_version VALUES (1);",
        )
        .expect("schema");
        for i in 0..500 {
            w.execute(
                "INSERT INTO items (name) VALUES (?1)",
                [format!("item {i}")],
            )
            .expect("insert");
        }
        assert!(companions(&db)[0].exists(), "the test needs a -wal file");
        let before = dump(&db);

        let copy = tmp.path().join("rp.sqlite");
        let bytes = backup(&db, &copy).expect("backup");
        assert!(bytes > 0);
        assert_eq!(
            dump(&copy),
            before,
            "the copy carries what was still in -wal"
        );
        assert_eq!(
            schema_version(&copy, "SELECT max(version) FROM schema_version")
                .expect("v")
                .as_deref(),
            Some("1")
        );

        // A v2 migration, then the writer stops (its -wal stays behind, as after a crash).
        w.execute_batch(
            "ALTER TABLE items ADD COLUMN created_at TEXT;
             DELETE FROM items WHERE id > 100;
             INSERT INTO schema_version VALUES (2);",
        )
        .expect("migrate");
        std::mem::forget(w); // no clean close: -wal and -shm stay, like a killed container
        assert_ne!(dump(&db), before);

        let failed = restore(&copy, &db, 2)
            .expect("restore")
            .expect("failed copy kept");
        assert_eq!(dump(&db), before, "restored exactly");
        assert!(!companions(&db)[0].exists(), "the stale -wal is gone");
        assert_eq!(
            schema_version(&failed, "SELECT max(version) FROM schema_version")
                .expect("v")
                .as_deref(),
            Some("2"),
            "the failed database is kept whole, with its -wal"
        );
    }

    #[test]
    fn a_corrupt_restore_point_is_refused_and_the_database_untouched() {
        let tmp = tempfile::tempdir().expect("tmp");
        let db = tmp.path().join("app.sqlite");
        let c = Connection::open(&db).expect("open");
        c.execute_batch("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO items VALUES (1, 'a');")
            .expect("seed");
        drop(c);
        let copy = tmp.path().join("rp.sqlite");
        std::fs::write(&copy, b"this is not a database").expect("write");
        let before = std::fs::read(&db).expect("read");
        assert!(restore(&copy, &db, 3).is_err());
        assert_eq!(std::fs::read(&db).expect("read"), before);
        assert!(backup(&tmp.path().join("missing.sqlite"), &copy).is_err());
    }
}
