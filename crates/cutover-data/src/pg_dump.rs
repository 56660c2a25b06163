//! The durable restore point: `pg_dump -Fd -j N` of the same-server copy (not of the live
//! database, so it can run after the maintenance window without lengthening it), and its
//! restore with `pg_restore -j N` into a new database, which is then swapped in like the
//! copy. It survives the loss of the copy (dropped, or the server rebuilt from a backup).
//!
//! The connection is handed to the tools as libpq parameters; the password goes through
//! `PGPASSWORD`, never the command line (which other users can read in the process list).

use std::path::Path;
use std::process::Command;
use std::str::FromStr;

use tokio_postgres::Config;
use tokio_postgres::config::Host;

use crate::postgres::PgError;

/// `pg_dump`/`pg_restore`/`createdb` with the admin URL's host, port, user and password, and
/// `database` as the database.
fn tool(program: &str, url: &str, database: &str) -> Result<Command, PgError> {
    let cfg = Config::from_str(url).map_err(|_| {
        PgError::Invalid("the PostgreSQL admin URL cannot be parsed (it is not printed)".into())
    })?;
    let mut cmd = Command::new(program);
    if let Some(host) = cfg.get_hosts().first() {
        let h = match host {
            Host::Tcp(h) => h.clone(),
            Host::Unix(p) => p.display().to_string(),
        };
        cmd.arg("--host").arg(h);
    }
    if let Some(port) = cfg.get_ports().first() {
        cmd.arg("--port").arg(port.to_string());
    }
    if let Some(user) = cfg.get_user() {
        cmd.arg("--username").arg(user);
    }
    cmd.arg("--no-password");
    if let Some(pw) = cfg.get_password() {
        cmd.env("PGPASSWORD", String::from_utf8_lossy(pw).into_owned());
    }
    cmd.env("PGDATABASE", database);
    Ok(cmd)
}

fn run(mut cmd: Command, what: &str) -> Result<(), PgError> {
    let out = cmd.output().map_err(|e| {
        PgError::Invalid(format!(
            "cannot run {what}: {e} (is the PostgreSQL client installed?)"
        ))
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(PgError::Invalid(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Dumps database `copy` into the directory `dir` (which must not exist yet).
pub fn dump(url: &str, copy: &str, dir: &Path, jobs: u32) -> Result<(), PgError> {
    let mut cmd = tool("pg_dump", url, copy)?;
    cmd.args(["--format=directory", "--no-sync"])
        .arg(format!("--jobs={}", jobs.max(1)))
        .arg("--file")
        .arg(dir)
        .arg(copy);
    run(cmd, "pg_dump")
}

/// Restores the dump in `dir` into a new database `into` owned by `owner`.
pub fn restore(url: &str, dir: &Path, into: &str, owner: &str, jobs: u32) -> Result<(), PgError> {
    let mut create = tool("createdb", url, "postgres")?;
    create.arg("--owner").arg(owner).arg(into);
    run(create, "createdb")?;
    let mut cmd = tool("pg_restore", url, into)?;
    cmd.arg(format!("--jobs={}", jobs.max(1)))
        .arg("--dbname")
        .arg(into)
        .arg("--no-owner")
        .arg("--role")
        .arg(owner)
        .arg(dir);
    run(cmd, "pg_restore")
}
