//! A throwaway PostgreSQL cluster for tests: `initdb` + `pg_ctl` in a temp dir, a free port,
//! the unix socket in the temp dir. Stopped (immediate) and removed on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::cmd::{is_root, ok};
use crate::net::free_port;

pub struct Cluster {
    _tmp: tempfile::TempDir,
    pub dir: PathBuf,
    pub port: u16,
}

fn bin(name: &str) -> PathBuf {
    for dir in ["/usr/lib/postgresql/15/bin", "/usr/local/bin", "/usr/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("PostgreSQL's `{name}` is not installed: these tests need the server binaries");
}

/// Runs a server binary as `postgres` when we are root (initdb refuses to run as root).
fn as_pg_user(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// `pg_ctl -D DIR/data ARGS`, as the server's user.
fn pg_ctl(dir: &Path, args: &[&str]) -> Output {
    as_pg_user(&bin("pg_ctl"))
        .arg("-D")
        .arg(dir.join("data"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("pg_ctl")
}

/// Starts the server of `DIR/data` on `port`, its socket in DIR and no TCP, logging to
/// DIR/log; waits until it accepts connections.
fn pg_start(dir: &Path, port: u16) {
    let log = dir.join("log");
    let options = format!(
        "-p {port} -k {} -c listen_addresses='' -c fsync=off",
        dir.display()
    );
    ok(
        &pg_ctl(
            dir,
            &[
                "-w",
                "-l",
                &log.display().to_string(),
                "-o",
                &options,
                "start",
            ],
        ),
        "pg_ctl start",
    );
}

impl Cluster {
    pub fn start() -> Cluster {
        let tmp = tempfile::Builder::new()
            .prefix("cutover-pg-")
            .tempdir()
            .expect("temp dir");
        let dir = tmp.path().to_path_buf();
        // The server runs as `postgres` when we are root: let it own the directory.
        let _ = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&dir)
            .output();
        let port = free_port();
        ok(
            &as_pg_user(&bin("initdb"))
                .args(["-D"])
                .arg(dir.join("data"))
                .args(["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"])
                .output()
                .expect("initdb"),
            "initdb",
        );
        pg_start(&dir, port);
        Cluster {
            _tmp: tmp,
            dir,
            port,
        }
    }

    /// Stops the server (fast shutdown) and waits for it, as an outage would.
    pub fn stop(&self) {
        ok(
            &pg_ctl(&self.dir, &["-m", "fast", "-w", "stop"]),
            "pg_ctl stop",
        );
    }

    /// Starts a stopped server again, as `start` did: same port, same socket.
    pub fn start_again(&self) {
        pg_start(&self.dir, self.port);
    }

    /// The admin URL (superuser over the unix socket).
    pub fn url(&self) -> String {
        format!(
            "host={} port={} user=postgres dbname=postgres",
            self.dir.display(),
            self.port
        )
    }

    /// psql with `sql` on `db`; stdout, trimmed.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let o = Command::new("psql")
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.dir)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
                "-c",
                sql,
            ])
            .output()
            .expect("psql");
        let out = String::from_utf8_lossy(&o.stdout).trim().to_string();
        assert!(
            o.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = pg_ctl(&self.dir, &["-m", "immediate", "stop"]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_cluster_starts_again_where_it_was() {
        let c = Cluster::start();
        c.psql(
            "postgres",
            "CREATE TABLE t (v int); INSERT INTO t VALUES (7)",
        );
        c.stop();
        c.start_again();
        assert_eq!(c.psql("postgres", "SELECT v FROM t"), "7");
    }
}
