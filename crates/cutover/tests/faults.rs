//! Faults from outside cutover in the middle of a real upgrade: the Docker API goes away,
//! the PostgreSQL server stops, the state dir's disk fills up. Whatever happens, the
//! operation must end reverted (exit 1) or cleanly refused (exit 2), or, when even the
//! revert cannot be done, say so (exit 3) with a message that says what happened — never
//! half-done — and an operator must be able to get the old release back afterwards.
//!
//! Each test owns a stack named `t-<tag>-<pid>` with its own host port; a guard removes its
//! containers, network and volume whatever the outcome. They need the Docker Engine, the
//! cutover-demo images (examples/demo/build-images), PostgreSQL's server binaries, `socat`,
//! and root (tmpfs mounts, reading volume mountpoints).

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use cutover_testkit::cmd::{code, demo_images, docker, is_root, stderr, text};
use cutover_testkit::net::{free_port, get_now, post_ok};
use cutover_testkit::pg;
use serde_json::Value;

// ---------------------------------------------------------------------------------------
// Small helpers.

/// `n` bytes nobody can compress.
fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("read /dev/urandom");
    buf
}

/// Every file below `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                pending.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// A stack of one test.

struct Stack {
    name: String,
    dir: tempfile::TempDir,
    /// Extra environment of every `cutover` run (DOCKER_HOST, PG_URL, CUTOVER_STATE_DIR).
    env: Vec<(String, String)>,
}

/// How a `cutover … -o json` run with a fault injected in the middle ended.
struct Faulted {
    code: i32,
    stderr: String,
    /// One JSON object per line of its standard output.
    events: Vec<Value>,
}

impl Faulted {
    fn step(&self, id: &str) -> Option<&Value> {
        self.events
            .iter()
            .rev()
            .find(|e| e["event"] == "step_finished" && e["step"] == id)
    }

    fn step_status(&self, id: &str) -> String {
        self.step(id)
            .and_then(|e| e["status"].as_str())
            .unwrap_or("not run")
            .to_string()
    }

    fn all(&self) -> String {
        format!(
            "exit {}\n--- events\n{}\n--- stderr\n{}",
            self.code,
            self.events
                .iter()
                .map(Value::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
            self.stderr
        )
    }
}

impl Stack {
    fn new(tag: &str) -> Stack {
        Stack {
            name: format!("t-{tag}-{}", std::process::id()),
            dir: tempfile::tempdir().expect("tmp"),
            env: Vec::new(),
        }
    }

    fn write(&self, yaml: &str) {
        std::fs::write(self.dir.path().join("cutover.yaml"), yaml).expect("stack file");
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cutover"));
        c.current_dir(self.dir.path())
            .args(args)
            .env("NO_COLOR", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("cutover")
    }

    fn status(&self) -> Value {
        let o = self.run(&["status", "-o", "json"]);
        serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("status json: {e}\n{}", text(&o)))
    }

    fn restore_points(&self) -> Vec<Value> {
        let o = self.run(&["restore-points", "list", "-o", "json"]);
        assert_eq!(code(&o), 0, "restore-points list\n{}", text(&o));
        serde_json::from_slice::<Value>(&o.stdout)
            .unwrap_or_else(|e| panic!("restore-points json: {e}\n{}", text(&o)))
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// IDs of the stack's running containers, as Docker itself reports them.
    fn running(&self) -> Vec<String> {
        docker(&[
            "ps",
            "-q",
            "--no-trunc",
            "--filter",
            &format!("label=io.cutover.stack={}", self.name),
        ])
        .lines()
        .map(String::from)
        .collect()
    }

    /// The lease is free, nothing is left unfinished, and what runs is what the live release
    /// recorded.
    fn settled(&self) {
        let st = self.status();
        assert!(st["lease"].is_null(), "the lease is free: {st:#}");
        assert!(
            st["unfinished_operations"]
                .as_array()
                .is_some_and(Vec::is_empty),
            "nothing unfinished: {st:#}"
        );
        assert!(st["engine_error"].is_null(), "{st:#}");
        for svc in st["services"].as_array().expect("services") {
            assert_eq!(svc["drift"], false, "no drift: {st:#}");
        }
    }

    /// Runs `cutover ARGS` (which must include `-o json`) and calls `fault` once, when the
    /// step `step` has been journaled as started.
    fn run_with_fault(&self, args: &[&str], step: &str, fault: impl FnOnce(&[Value])) -> Faulted {
        let mut child = self
            .cmd(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cutover");
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut events = Vec::new();
        let mut fault = Some(fault);
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    let v: Value = serde_json::from_str(&line).unwrap_or(Value::String(line));
                    let hit = v["event"] == "step_started" && v["step"] == step;
                    events.push(v);
                    if hit && let Some(f) = fault.take() {
                        f(&events);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    assert!(Instant::now() < deadline, "cutover {args:?} never ended")
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        let output = child.wait_with_output().expect("wait");
        let _ = reader.join();
        let ran = Faulted {
            code: code(&output),
            stderr: String::from_utf8_lossy(&output.stderr).to_string(),
            events,
        };
        assert!(
            fault.is_none(),
            "cutover ended before step {step} started\n{}",
            ran.all()
        );
        ran
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let ids = docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=io.cutover.stack={}", self.name),
        ]);
        for id in ids.lines() {
            docker(&["rm", "-f", id]);
        }
        docker(&["network", "rm", &format!("cutover-{}", self.name)]);
        docker(&["volume", "rm", "-f", &format!("{}-data", self.name)]);
    }
}

/// The stack's one service: the demo app on `cutover-demo:v${v}`, its SQLite database in
/// the volume `<stack>-data`, published on `port`.
fn app_service(name: &str, port: u16) -> String {
    format!(
        "services:\n  app:\n    image: cutover-demo:v${{v}}\n    port: 8080\n    \
         ports: [\"127.0.0.1:{port}:8080\"]\n    volumes: [\"{name}-data:/data\"]\n    \
         stop_grace: 5s\n    health: {{ http: /health, interval: 200ms, deadline: 30s }}\n"
    )
}

// ---------------------------------------------------------------------------------------
// 1. The Docker API goes away after the upgrade, before the release is recorded.

/// `socat` between a unix socket of ours and the Docker socket: a Docker API that can be cut.
struct DockerProxy {
    child: Option<Child>,
}

impl DockerProxy {
    fn start(sock: &Path) -> DockerProxy {
        // A socket file left by a killed proxy would make socat refuse to listen.
        let _ = std::fs::remove_file(sock);
        let child = Command::new("socat")
            .arg(format!("UNIX-LISTEN:{},fork", sock.display()))
            .arg("UNIX-CONNECT:/var/run/docker.sock")
            // Its own process group: the forked children (one per connection, which a
            // pooled keep-alive connection would keep using) are cut too.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("socat is installed (apt-get install -y socat)");
        let start = Instant::now();
        while !sock.exists() {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "socat never listened on {}",
                sock.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        DockerProxy { child: Some(child) }
    }

    /// SIGKILL to socat and its children: connections drop, new ones are refused.
    fn cut(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", c.id())])
                .status();
            let _ = c.wait();
        }
    }
}

impl Drop for DockerProxy {
    fn drop(&mut self) {
        self.cut();
    }
}

#[test]
fn docker_api_cut_mid_upgrade() {
    demo_images();
    let sock_dir = tempfile::tempdir().expect("tmp");
    let sock = sock_dir.path().join("docker.sock");
    let mut proxy = DockerProxy::start(&sock);
    let mut s = Stack::new("apicut");
    s.env
        .push(("DOCKER_HOST".into(), format!("unix://{}", sock.display())));
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    s.write(&format!(
        "name: {}\nvars: {{ v: \"1\" }}\n{}\
         steps:\n  verify:\n    - run: [sleep, \"3\"]\n      name: soak\n      rerun_safe: true\n",
        s.name,
        app_service(&s.name, port)
    ));
    let o = s.run(&["apply", "--yes"]);
    assert_eq!(code(&o), 0, "deploy v1\n{}", text(&o));
    assert_eq!(get_now(addr, "/version"), "v1");
    post_ok(addr, "/items", "written-by-v1");
    let v1 = s.running();
    assert_eq!(v1.len(), 1, "one container runs v1");

    // The API goes away while the verify step waits: the upgrade itself had finished.
    let ran = s.run_with_fault(
        &["apply", "--yes", "-o", "json", "--set", "vars.v=2"],
        "verify.custom.1",
        |events| {
            assert!(
                events.iter().any(|e| e["event"] == "step_finished"
                    && e["step"] == "upgrade.recreate.app"
                    && e["status"] == "succeeded"),
                "the upgrade step finished before the cut: {events:?}"
            );
            proxy.cut();
        },
    );
    assert_eq!(
        ran.code,
        3,
        "the revert cannot reach Docker either\n{}",
        ran.all()
    );
    assert_eq!(
        ran.step_status("verify.custom.1"),
        "succeeded",
        "{}",
        ran.all()
    );
    assert_eq!(ran.step_status("release.record"), "failed", "{}", ran.all());
    for step in ["revert.stop.app", "revert.start.app", "revert.compare"] {
        assert_eq!(ran.step_status(step), "failed", "{step}\n{}", ran.all());
    }
    assert!(
        ran.stderr.contains("the revert failed too")
            && ran.stderr.contains("an operator must look"),
        "{}",
        ran.all()
    );
    // What runs: the new release entirely (its one container), the old container kept,
    // stopped, as the way back. Never both, never none.
    let now = s.running();
    assert_eq!(now.len(), 1, "one container runs");
    assert_ne!(
        now, v1,
        "the v2 container runs: the revert never reached Docker"
    );
    assert_eq!(get_now(addr, "/version"), "v2");
    assert_eq!(
        docker(&["inspect", "-f", "{{.State.Status}}", &v1[0]]),
        "exited",
        "the old container is kept, stopped"
    );

    // Docker is back.
    let _proxy = DockerProxy::start(&sock);
    let o = s.run(&["resume", "--yes"]);
    // The cause fixed, `resume` runs the failed revert again.
    assert!(
        code(&o) == 0 || code(&o) == 1,
        "resume finishes the revert\n{}",
        text(&o)
    );
    assert_eq!(
        get_now(addr, "/version"),
        "v1",
        "the old version serves again"
    );
    assert!(
        get_now(addr, "/items").contains("written-by-v1"),
        "the app's data is kept"
    );
    assert_eq!(s.running().len(), 1, "one container runs");
    s.settled();

    // Checked last, so that everything above is known to hold when only this fails.
    assert!(
        ran.stderr.contains(&sock.display().to_string()),
        "PRODUCT GAP: the message of a failed revert does not name the Docker socket it could \
         not reach (only `Error in the hyper legacy client: client error (Connect)`)\n{}",
        ran.all()
    );
}

// ---------------------------------------------------------------------------------------
// 2. The PostgreSQL server stops during verify.

/// A checksum of every row of `items`.
fn items_checksum(cluster: &pg::Cluster) -> String {
    cluster.psql(
        "app",
        "SELECT count(*) || ':' || md5(string_agg(t::text, ',' ORDER BY t.id)) FROM items t",
    )
}

#[test]
fn postgres_stopped_mid_verify() {
    demo_images();
    let cluster = pg::Cluster::start();
    cluster.psql("postgres", "CREATE DATABASE app");
    cluster.psql(
        "app",
        "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL); \
         INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 1000) g",
    );
    let mut s = Stack::new("pgstop");
    s.env.push(("PG_URL".into(), cluster.url()));
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    s.write(&format!(
        "name: {}\nvars: {{ v: \"1\" }}\nsecrets: {{ PG_URL: {{ env: PG_URL }} }}\n{}\
         data:\n  db:\n    postgres: {{ url: \"${{PG_URL}}\", database: app }}\n    writers: [app]\n\
         steps:\n  upgrade:\n    - sql: {{ data: db, query: \"UPDATE items SET name = name || ' v${{v}}'\" }}\n      \
         name: migrate the items\n  \
         verify:\n    - run: [sleep, \"3\"]\n      name: soak\n      rerun_safe: true\n    \
         - sql: {{ data: db, query: \"select 1\" }}\n      name: the database answers\n",
        s.name,
        app_service(&s.name, port)
    ));
    let o = s.run(&["apply", "--yes"]);
    assert_eq!(code(&o), 0, "deploy v1\n{}", text(&o));
    assert_eq!(get_now(addr, "/version"), "v1");
    let before = items_checksum(&cluster);
    let v1 = s.running();
    assert_eq!(v1.len(), 1);

    let ran = s.run_with_fault(
        &["apply", "--yes", "-o", "json", "--set", "vars.v=2"],
        "verify.custom.1",
        |_| cluster.stop(),
    );
    assert_eq!(
        ran.code,
        3,
        "the restore needs the server too\n{}",
        ran.all()
    );
    assert_eq!(
        ran.step_status("upgrade.custom.1"),
        "succeeded",
        "{}",
        ran.all()
    );
    assert_eq!(
        ran.step_status("verify.custom.2"),
        "failed",
        "{}",
        ran.all()
    );
    assert_eq!(
        ran.step_status("revert.restore.db"),
        "failed",
        "{}",
        ran.all()
    );
    // Docker was fine: the old container is back, and nothing else runs.
    assert_eq!(
        ran.step_status("revert.start.app"),
        "succeeded",
        "{}",
        ran.all()
    );
    for needle in [
        "failed at verify.custom.2",
        "cannot connect to PostgreSQL",
        "the revert failed too",
        "revert.restore.db: cannot connect to PostgreSQL",
        "an operator must look",
    ] {
        assert!(
            ran.stderr.contains(needle),
            "says {needle:?}\n{}",
            ran.all()
        );
    }
    assert_eq!(s.running(), v1, "the old container runs again, alone");
    assert_eq!(get_now(addr, "/version"), "v1");

    // The server is back. The database still holds what v2's migration wrote: the revert
    // could not put the restore point back, and said so. The restore point is intact.
    cluster.start_again();
    assert_ne!(items_checksum(&cluster), before);
    let rps = s.restore_points();
    let rp = rps
        .iter()
        .find(|m| m["release"] == 2 && m["data"] == "db")
        .unwrap_or_else(|| panic!("release 2's restore point of db: {rps:?}"))
        .clone();
    assert_eq!(rp["status"], "complete", "{rp:#}");

    let o = s.run(&["resume", "--yes"]);
    // The cause fixed, `resume` runs the failed revert again.
    assert!(
        code(&o) == 0 || code(&o) == 1,
        "resume finishes the revert\n{}",
        text(&o)
    );
    assert_eq!(
        items_checksum(&cluster),
        before,
        "the database is as it was before the upgrade"
    );
    assert_eq!(get_now(addr, "/version"), "v1");
    assert_eq!(s.running(), v1, "release 1's container runs, alone");
    s.settled();
}

// ---------------------------------------------------------------------------------------
// 3. The disk of the state dir (where archives of volumes go) is too small.

/// A tmpfs of `size`, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        assert!(is_root(), "mounting a tmpfs needs root");
        let dir = tempfile::tempdir().expect("tmp");
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("mount");
        assert!(o.status.success(), "mount tmpfs: {}", text(&o));
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

/// A stack whose data is its Docker volume, archived (`method: archive`: its restore point
/// takes room in the state dir), with its state dir on a 2 MB tmpfs; the volume
/// is created up front so the test can write into its mountpoint. A `quiesce` step writes
/// `${grow}` more bytes into the volume (the app's last export, after the preflight looked).
fn disk_stack(tag: &str, state: &Tmpfs) -> (Stack, SocketAddr, PathBuf) {
    let mut s = Stack::new(tag);
    s.env.push((
        "CUTOVER_STATE_DIR".into(),
        state.path().display().to_string(),
    ));
    let volume = format!("{}-data", s.name);
    docker(&["volume", "create", &volume]);
    let mp = PathBuf::from(docker(&[
        "volume",
        "inspect",
        "-f",
        "{{.Mountpoint}}",
        &volume,
    ]));
    assert!(mp.is_dir(), "volume mountpoint {}", mp.display());
    let port = free_port();
    s.write(&format!(
        "name: {}\nvars: {{ v: \"1\", grow: \"0\" }}\n{}\
         data:\n  files:\n    volume: {{ name: {volume}, method: archive }}\n    writers: [app]\n\
         steps:\n  quiesce:\n    - run: [sh, -c, \"head -c ${{grow}} /dev/urandom > {}/late-export.bin\"]\n      \
         name: the app's last export\n      rerun_safe: true\n",
        s.name,
        app_service(&s.name, port),
        mp.display()
    ));
    (s, SocketAddr::from(([127, 0, 0, 1], port)), mp)
}

/// The old release runs, untouched, and the state dir holds no restore point at all — no
/// complete-looking one, no partial archive, no temporary manifest.
fn nothing_left(s: &Stack, state: &Tmpfs, v1: &[String], addr: SocketAddr, ran: &Output) {
    assert_eq!(
        s.running(),
        v1,
        "the same container runs, alone\n{}",
        text(ran)
    );
    assert_eq!(get_now(addr, "/version"), "v1");
    assert!(get_now(addr, "/items").contains("written-by-v1"));
    let rps = s.restore_points();
    assert!(
        !rps.iter().any(|m| m["status"] == "complete"),
        "no complete restore point: {rps:#?}"
    );
    let left = files_under(&state.path().join("restore-points"));
    assert!(
        left.is_empty(),
        "nothing left behind: {left:?}\n{}",
        text(ran)
    );
}

#[test]
fn disk_full_during_the_restore_point() {
    demo_images();
    let state = Tmpfs::mount("2m");
    let (s, addr, mp) = disk_stack("diskfull", &state);
    let o = s.run(&["apply", "--yes"]);
    assert_eq!(code(&o), 0, "deploy v1\n{}", text(&o));
    assert_eq!(get_now(addr, "/version"), "v1");
    post_ok(addr, "/items", "written-by-v1");
    let v1 = s.running();
    assert_eq!(v1.len(), 1);

    // 10 MB of data cannot get a restore point on 2 MB: refused before anything stops.
    std::fs::write(mp.join("big.bin"), random_bytes(10_000_000)).expect("write");
    let o = s.run(&[
        "apply",
        "--yes",
        "--set",
        "vars.v=2",
        "--set",
        "vars.grow=1",
    ]);
    assert_eq!(code(&o), 2, "refused in preflight\n{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("not enough room for the restore points")
            && err.contains("nothing was changed"),
        "{}",
        text(&o)
    );
    assert_eq!(
        std::fs::metadata(mp.join("late-export.bin"))
            .expect("the export of the first deploy")
            .len(),
        0,
        "the quiesce step never ran"
    );
    nothing_left(&s, &state, &v1, addr, &o);

    // 1 MB passes the preflight (1.1 MB wanted, about 1.7 MB free), then the export grows
    // the data by 1.5 MB after it looked: the archive cannot be written. Reverted.
    std::fs::remove_file(mp.join("big.bin")).expect("rm");
    let base = random_bytes(1_000_000);
    std::fs::write(mp.join("base.bin"), &base).expect("write");
    let o = s.run(&[
        "apply",
        "--yes",
        "--set",
        "vars.v=2",
        "--set",
        "vars.grow=1500000",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(code(&o), 1, "reverted\n{}", text(&o));
    assert!(
        !err.contains("not enough room"),
        "the preflight let it through\n{}",
        text(&o)
    );
    for needle in [
        "failed at restore_point.files",
        "reverted: the stack runs what it ran before (release 1)",
    ] {
        assert!(err.contains(needle), "says {needle:?}\n{}", text(&o));
    }
    nothing_left(&s, &state, &v1, addr, &o);
    assert_eq!(
        std::fs::read(mp.join("base.bin")).expect("read"),
        base,
        "the data is intact"
    );
    s.settled();

    // Checked last, so that everything above is known to hold when only this fails.
    assert!(
        err.contains("No space left on device"),
        "PRODUCT GAP: the message says which archive could not be written, not why (the \
         disk is full)\n{}",
        text(&o)
    );
}

/// The default restore point of a volume, a snapshot beside the data on its own filesystem:
/// on a filesystem that cannot clone (tmpfs here), the copy takes the data's size there. The
/// preflight checks that filesystem, not the state dir; a copy that runs out of room midway
/// is reverted, and leaves nothing on the data's disk.
#[test]
fn disk_full_on_the_volumes_own_filesystem_during_a_snapshot_copy() {
    demo_images();
    let disk = Tmpfs::mount("8m");
    let mut s = Stack::new("snapfull");
    let volume = format!("{}-data", s.name);
    let device = disk.path().join("vol");
    cutover_testkit::cmd::bind_volume(&volume, &device);
    s.env.push((
        "CUTOVER_STATE_DIR".into(),
        s.dir.path().join("state").display().to_string(),
    ));
    let port = free_port();
    s.write(&format!(
        "name: {}\nvars: {{ v: \"1\", grow: \"0\" }}\n{}\
         data:\n  files:\n    volume: {{ name: {volume} }}\n    writers: [app]\n\
         steps:\n  quiesce:\n    - run: [sh, -c, \"head -c ${{grow}} /dev/urandom > {}/late-export.bin\"]\n      \
         name: the app's last export\n      rerun_safe: true\n",
        s.name,
        app_service(&s.name, port),
        device.display()
    ));
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let o = s.run(&["apply", "--yes"]);
    assert_eq!(code(&o), 0, "deploy v1\n{}", text(&o));
    post_ok(addr, "/items", "written-by-v1");
    let v1 = s.running();

    // 5 MB of data on an 8 MB disk: its copy (5.5 MB with the margin) cannot fit beside it.
    std::fs::write(device.join("big.bin"), random_bytes(5_000_000)).expect("write");
    let o = s.run(&[
        "apply",
        "--yes",
        "--set",
        "vars.v=2",
        "--set",
        "vars.grow=1",
    ]);
    assert_eq!(code(&o), 2, "refused in preflight\n{}", text(&o));
    let err = stderr(&o);
    assert!(
        err.contains("not enough room for the restore points")
            && err.contains(&format!("free on {}", disk.path().display()))
            && err.contains("nothing was changed"),
        "{}",
        text(&o)
    );
    assert_eq!(s.running(), v1, "nothing stopped");

    // 2 MB passes the preflight (2.2 MB wanted, about 6 MB free); the export then writes
    // 3 MB more: 5 MB to copy into the 3 MB left. Reverted, the data untouched.
    std::fs::remove_file(device.join("big.bin")).expect("rm");
    let base = random_bytes(2_000_000);
    std::fs::write(device.join("base.bin"), &base).expect("write");
    let o = s.run(&[
        "apply",
        "--yes",
        "--set",
        "vars.v=2",
        "--set",
        "vars.grow=3000000",
    ]);
    assert_eq!(code(&o), 1, "reverted\n{}", text(&o));
    let err = stderr(&o);
    assert!(
        err.contains("failed at restore_point.files") && err.contains("No space left on device"),
        "says where and why\n{}",
        text(&o)
    );
    assert_eq!(s.running(), v1, "the same container runs\n{}", text(&o));
    assert_eq!(get_now(addr, "/version"), "v1");
    assert!(get_now(addr, "/items").contains("written-by-v1"));
    assert_eq!(std::fs::read(device.join("base.bin")).expect("read"), base);
    let beside: Vec<String> = std::fs::read_dir(disk.path())
        .expect("list")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "vol")
        .collect();
    assert!(
        beside.is_empty(),
        "no partial copy left beside the data: {beside:?}"
    );
    s.settled();
    docker(&["volume", "rm", "-f", &volume]);
}

/// The preflight counts the bytes of the files, not what a restore point of many small
/// files costs besides (a manifest entry with a checksum for every file): the manifest does
/// not fit. The outcome must still be reverted or refused, with nothing left behind.
#[test]
fn disk_full_from_the_manifest_of_many_small_files() {
    demo_images();
    let state = Tmpfs::mount("2m");
    let (s, addr, mp) = disk_stack("manyfiles", &state);
    let o = s.run(&["apply", "--yes"]);
    assert_eq!(code(&o), 0, "deploy v1\n{}", text(&o));
    post_ok(addr, "/items", "written-by-v1");
    let v1 = s.running();
    assert_eq!(v1.len(), 1);

    let many = mp.join("many");
    std::fs::create_dir(&many).expect("mkdir");
    for (i, chunk) in random_bytes(80_000).chunks(8).enumerate() {
        std::fs::write(many.join(format!("f{i}")), chunk).expect("write");
    }
    let o = s.run(&["apply", "--yes", "--set", "vars.v=2"]);
    let err = String::from_utf8_lossy(&o.stderr);
    nothing_left(&s, &state, &v1, addr, &o);
    assert_eq!(std::fs::read_dir(&many).expect("ls").count(), 10_000);
    match code(&o) {
        1 => assert!(
            err.contains("reverted: the stack runs what it ran before"),
            "{}",
            text(&o)
        ),
        2 => assert!(
            err.contains("refused in preflight") && err.contains("nothing was changed"),
            "exit 2 says it was refused before anything changed\n{}",
            text(&o)
        ),
        _ => panic!("reverted (1) or refused (2)\n{}", text(&o)),
    }
    s.settled();
}
