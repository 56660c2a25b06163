//! A throwaway PostgreSQL cluster for tests: `initdb` + `pg_ctl` in a temp dir, a free port,
//! the unix socket in the temp dir. Stopped (immediate) and removed on drop.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.to_string())
        })
        .is_some_and(|l| l.split_whitespace().nth(1) == Some("0"));
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn ok(o: Output, what: &str) {
    assert!(
        o.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
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
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        ok(
            as_pg_user(&bin("initdb"))
                .args(["-D"])
                .arg(dir.join("data"))
                .args(["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"])
                .output()
                .expect("initdb"),
            "initdb",
        );
        ok(
            as_pg_user(&bin("pg_ctl"))
                .args(["-D"])
                .arg(dir.join("data"))
                .args(["-w", "-l"])
                .arg(dir.join("log"))
                .arg("-o")
                .arg(format!(
                    "-p {port} -k {} -c listen_addresses='' -c fsync=off",
                    dir.display()
                ))
                .arg("start")
                .output()
                .expect("pg_ctl"),
            "pg_ctl start",
        );
        Cluster {
            _tmp: tmp,
            dir,
            port,
        }
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
        let _ = as_pg_user(&bin("pg_ctl"))
            .args(["-D"])
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "stop"])
            .output();
    }
}
