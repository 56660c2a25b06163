//! The `cutover` binary against a real Docker Engine: real processes, real containers, real
//! HTTP. The cutover-demo images (examples/demo/build-images) are the app under upgrade.
//!
//! Every test owns a stack with its own name and host ports, so the tests run in parallel;
//! a guard removes the stack's containers, network and volume when the test ends, passed or
//! not. Without a reachable Docker Engine these tests fail: they never skip silently.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cutover_testkit::cmd::{
    build_demo_images, code, docker, docker_output, require_test_hooks, stderr, stdout, text,
};
use cutover_testkit::net::{free_port, http_get, post_ok, request};
use serde_json::Value;

// ---------------------------------------------------------------------------------------
// The engine and the demo images.

/// Runs `docker ARGS`, which must succeed; its standard output, trimmed.
fn docker_ok(args: &[&str]) -> String {
    let o = docker_output(args);
    assert!(
        o.status.success(),
        "docker {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn lines(s: &str) -> Vec<String> {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// The ID of a local image: `sha256:…`.
fn image_id(reference: &str) -> String {
    docker_ok(&["image", "inspect", "-f", "{{.Id}}", reference])
}

/// The image ID a container runs.
fn image_of(container: &str) -> String {
    docker_ok(&["inspect", "-f", "{{.Image}}", container])
}

fn is_running(container: &str) -> bool {
    docker_ok(&["inspect", "-f", "{{.State.Running}}", container]) == "true"
}

/// Where container port 8080 of `container` is published on this host.
fn published_8080(container: &str) -> SocketAddr {
    let out = docker_ok(&["port", container, "8080"]);
    let first = lines(&out)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("container {container} publishes no port 8080"));
    let addr: SocketAddr = first
        .parse()
        .unwrap_or_else(|e| panic!("`docker port` said {first:?}: {e}"));
    if addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    }
}

// ---------------------------------------------------------------------------------------
// HTTP, the way a client of the app sees it.

/// What `GET /version` answers (`v1`, `v2`, ...), or why it did not.
fn version(addr: SocketAddr) -> Result<String, String> {
    match http_get(addr, "/version")? {
        (200, body) => Ok(body.trim().to_string()),
        (status, body) => Err(format!("GET /version → {status}: {body}")),
    }
}

/// The version `addr` answers; right after a successful apply the app must answer (a few
/// tries only absorb the port proxy catching up).
fn version_now(addr: SocketAddr) -> String {
    let mut last = String::new();
    for _ in 0..10 {
        match version(addr) {
            Ok(v) => return v,
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{addr} does not answer GET /version: {last}")
}

// ---------------------------------------------------------------------------------------
// A stack of one test: its directory, state dir and cleanup.

const HEALTH: &str = "{ http: /health, interval: 500ms, deadline: 30s }";

struct Stack {
    name: String,
    dir: tempfile::TempDir,
    /// Where `cutover serve` listens for a stack with `traffic:`.
    proxy_port: u16,
    /// Containers outside the stack that the test started and the guard removes.
    foreign: Vec<String>,
}

impl Stack {
    /// A stack named `t-<tag>-<pid>`, with no stack file yet.
    fn new(tag: &str) -> Stack {
        Stack::named(format!("t-{tag}-{}", std::process::id()))
    }

    fn named(name: String) -> Stack {
        build_demo_images();
        let stack = Stack {
            name,
            dir: tempfile::tempdir().expect("temp dir"),
            proxy_port: free_port(),
            foreign: Vec::new(),
        };
        // Leftovers of an earlier run that was killed before its guard ran.
        stack.cleanup();
        stack
    }

    fn volume(&self) -> String {
        format!("{}-data", self.name)
    }

    fn network(&self) -> String {
        format!("cutover-{}", self.name)
    }

    fn label(&self) -> String {
        format!("label=io.cutover.stack={}", self.name)
    }

    /// The stack file: service `app` (port 8080, a named volume, an HTTP health probe).
    /// `host_port` publishes 8080 on loopback; blue-green stacks get their traffic route.
    fn write(&self, image: &str, strategy: &str, host_port: Option<u16>, health: &str) {
        let name = &self.name;
        let ports = host_port
            .map(|p| format!("    ports: [\"127.0.0.1:{p}:8080\"]\n"))
            .unwrap_or_default();
        let traffic = if strategy == "blue-green" {
            format!(
                "traffic:\n  listen: 127.0.0.1:{}\n  routes: [{{ service: app }}]\n",
                self.proxy_port
            )
        } else {
            String::new()
        };
        let yaml = format!(
            "name: {name}\n\
             services:\n  \
               app:\n    \
                 image: {image}\n    \
                 port: 8080\n\
             {ports}    \
                 volumes: [\"{name}-data:/data\"]\n    \
                 strategy: {strategy}\n    \
                 stop_grace: 5s\n    \
                 health: {health}\n\
             {traffic}"
        );
        std::fs::write(self.dir.path().join("cutover.yaml"), yaml).expect("write the stack file");
    }

    /// The proxy's address (stacks with `traffic:`).
    fn proxy(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.proxy_port))
    }

    /// Starts `cutover serve` for this stack; it stops when the guard drops.
    fn serve(&self) -> Served {
        let log = self.dir.path().join("serve.log");
        let child = self
            .cmd(&["serve"])
            .stderr(std::fs::File::create(&log).expect("serve log"))
            .stdout(Stdio::null())
            .spawn()
            .expect("cutover serve starts");
        let served = Served { child, log };
        let socket = self.dir.path().join("state/proxy.sock");
        let start = Instant::now();
        while !(socket.exists() && TcpStream::connect(self.proxy()).is_ok()) {
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "cutover serve did not come up: {}",
                std::fs::read_to_string(&served.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        served
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cutover"));
        c.current_dir(self.dir.path())
            .arg("--state-dir")
            .arg(self.dir.path().join("state"))
            .args(args)
            .env_remove("CUTOVER_FILE")
            .env_remove("CUTOVER_ENV")
            .env_remove("CUTOVER_STATE_DIR")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("cutover runs")
    }

    /// `apply --yes` with `--set`s.
    fn apply(&self, sets: &[&str]) -> Output {
        let mut args = vec!["apply", "--yes"];
        for s in sets {
            args.extend(["--set", s]);
        }
        self.run(&args)
    }

    /// `apply`, which must exit 0.
    fn apply_ok(&self, sets: &[&str]) {
        expect_code(&self.apply(sets), 0, &format!("apply {sets:?}"));
    }

    /// The stack's containers (full IDs); `all` includes stopped ones; `filters` adds
    /// `--filter`s.
    fn containers(&self, all: bool, filters: &[&str]) -> Vec<String> {
        let label = self.label();
        let mut args = vec!["ps", "-q", "--no-trunc", "--filter", &label];
        if all {
            args.push("-a");
        }
        for f in filters {
            args.extend(["--filter", f]);
        }
        lines(&docker_ok(&args))
    }

    /// The one running container of the stack.
    fn the_running(&self) -> String {
        let running = self.containers(false, &[]);
        assert_eq!(
            running.len(),
            1,
            "stack {} should run exactly one container: {running:?}\n{}",
            self.name,
            docker_ok(&["ps", "-a", "--filter", &self.label()])
        );
        running.into_iter().next().expect("one container")
    }

    fn history(&self) -> Value {
        let o = self.run(&["history", "-o", "json"]);
        expect_code(&o, 0, "history -o json");
        serde_json::from_slice(&o.stdout).expect("history JSON")
    }

    /// Release `revision` from `history -o json`.
    fn release(&self, revision: u64) -> Value {
        let h = self.history();
        h["releases"]
            .as_array()
            .expect("releases array")
            .iter()
            .find(|r| r["revision"].as_u64() == Some(revision))
            .cloned()
            .unwrap_or_else(|| panic!("no release {revision} in history: {h:#}"))
    }

    fn status_of(&self, revision: u64) -> String {
        self.release(revision)["status"]
            .as_str()
            .expect("status string")
            .to_string()
    }

    fn status_json(&self) -> Value {
        let o = self.run(&["status", "-o", "json"]);
        expect_code(&o, 0, "status -o json");
        serde_json::from_slice(&o.stdout).expect("status JSON")
    }

    fn status_text(&self) -> String {
        let o = self.run(&["status"]);
        expect_code(&o, 0, "status");
        stdout(&o)
    }

    fn cleanup(&self) {
        let label = self.label();
        let mut ids = lines(&docker(&["ps", "-aq", "--no-trunc", "--filter", &label]));
        ids.extend(self.foreign.iter().cloned());
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(ids.iter().map(String::as_str));
            docker(&args);
        }
        docker(&["network", "rm", &self.network()]);
        docker(&["volume", "rm", "-f", &self.volume()]);
    }
}

/// A running `cutover serve`, stopped (SIGTERM, then kill) on drop.
struct Served {
    child: std::process::Child,
    log: PathBuf,
}

impl Served {
    /// Stops it gracefully and waits.
    fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.cleanup();
    }
}

fn expect_code(o: &Output, want: i32, what: &str) {
    assert_eq!(code(o), want, "{what}: exit code\n{}", text(o));
}

// ---------------------------------------------------------------------------------------
// Recreate.

#[test]
fn v1_to_v2_recreate_replaces_the_container_and_records_the_image_id() {
    let s = Stack::new("recreate");
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    s.write("cutover-demo:v1", "recreate", Some(port), HEALTH);

    s.apply_ok(&[]);
    assert_eq!(version_now(addr), "v1");
    let first = s.the_running();

    s.apply_ok(&["app.image=cutover-demo:v2"]);
    assert_eq!(version_now(addr), "v2");
    let second = s.the_running();
    assert_ne!(first, second, "recreate runs a new container");
    let v2 = image_id("cutover-demo:v2");
    assert_eq!(image_of(&second), v2);

    let rel = s.release(2);
    assert_eq!(rel["status"], "deployed", "{rel:#}");
    assert_eq!(
        rel["images"]["app"]["id"].as_str(),
        Some(v2.as_str()),
        "{rel:#}"
    );
    assert_eq!(s.status_of(1), "superseded");

    let o = s.run(&["status", "-o", "json"]);
    expect_code(&o, 0, "status -o json");
    let status: Value = serde_json::from_slice(&o.stdout).expect("status JSON");
    assert_eq!(status["release"]["revision"], 2, "{status:#}");
    let app = &status["services"][0];
    assert_eq!(app["service"], "app", "{status:#}");
    assert_eq!(app["image_id"].as_str(), Some(v2.as_str()), "{status:#}");
    assert_eq!(app["drift"], false, "{status:#}");
}

#[test]
fn broken_upgrade_reverts_to_the_same_image_id() {
    let s = Stack::new("broken");
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    s.write("cutover-demo:v1", "recreate", Some(port), HEALTH);
    s.apply_ok(&[]);
    s.apply_ok(&["app.image=cutover-demo:v2"]);
    assert_eq!(version_now(addr), "v2");
    let before = s.the_running();

    let o = s.apply(&["app.image=cutover-demo:v3-broken"]);
    expect_code(&o, 1, "apply v3-broken");
    let err = stderr(&o);
    assert!(err.contains("`app`"), "{err}");
    assert!(err.contains("did not become healthy"), "{err}");
    assert!(
        err.contains("GET /health 500"),
        "the failure shows the container's log: {err}"
    );

    assert_eq!(version_now(addr), "v2");
    assert_eq!(
        s.the_running(),
        before,
        "the container of release 2 runs again"
    );
    assert_eq!(image_of(&before), image_id("cutover-demo:v2"));
    assert!(
        s.containers(true, &["label=io.cutover.release=3"])
            .is_empty(),
        "nothing of the reverted release is left"
    );
    assert_eq!(s.status_of(3), "reverted");
    assert_eq!(s.status_of(2), "deployed");
}

#[test]
fn rollback_to_release_1_runs_v1s_exact_image_id() {
    let s = Stack::new("rollback");
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    s.write("cutover-demo:v1", "recreate", Some(port), HEALTH);
    s.apply_ok(&[]);
    s.apply_ok(&["app.image=cutover-demo:v2"]);
    assert_eq!(version_now(addr), "v2");

    let o = s.run(&["rollback", "1", "--yes"]);
    expect_code(&o, 0, "rollback 1");
    assert_eq!(version_now(addr), "v1");
    let v1 = image_id("cutover-demo:v1");
    assert_eq!(image_of(&s.the_running()), v1);
    let rel = s.release(3);
    assert_eq!(rel["status"], "deployed", "{rel:#}");
    assert_eq!(
        rel["images"]["app"]["id"].as_str(),
        Some(v1.as_str()),
        "{rel:#}"
    );
}

#[test]
fn missing_image_fails_in_preflight_and_touches_nothing() {
    let s = Stack::new("noimage");
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    s.write("cutover-demo:v1", "recreate", Some(port), HEALTH);
    s.apply_ok(&[]);
    let before = s.the_running();

    let o = s.apply(&["app.image=cutover-demo:does-not-exist"]);
    expect_code(&o, 2, "apply of a missing image");
    let err = stderr(&o);
    assert!(err.contains("preflight"), "{err}");
    assert!(err.contains("cutover-demo:does-not-exist"), "{err}");

    assert_eq!(s.the_running(), before);
    assert_eq!(version_now(addr), "v1");
    assert_eq!(
        s.status_of(2),
        "refused",
        "a refusal changed nothing: not a failed release"
    );
    assert_eq!(s.status_of(1), "deployed");
}

// ---------------------------------------------------------------------------------------
// Blue-green.

/// One GET /version while an apply runs: when it started, when it ended, what it got.
struct Poll {
    start: Instant,
    end: Instant,
    result: Result<String, String>,
}

/// Spawns `cutover ARGS` and GETs /version of `addr` every 50 ms until it exits. Returns the
/// polls and the process's output.
fn poll_while(s: &Stack, args: &[&str], addr: SocketAddr) -> (Vec<Poll>, Output) {
    let out_path = s.dir.path().join("apply.stdout");
    let err_path = s.dir.path().join("apply.stderr");
    let mut child = s
        .cmd(args)
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("cutover starts");
    let began = Instant::now();
    let mut polls = Vec::new();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for cutover") {
            break status;
        }
        if began.elapsed() > Duration::from_secs(180) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`cutover {}` still runs after 180s:\n{}",
                args.join(" "),
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        let start = Instant::now();
        let result = version(addr);
        polls.push(Poll {
            start,
            end: Instant::now(),
            result,
        });
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = Output {
        status,
        stdout: std::fs::read(&out_path).expect("read stdout"),
        stderr: std::fs::read(&err_path).expect("read stderr"),
    };
    (polls, output)
}

fn summary(polls: &[Poll], since: Instant) -> String {
    polls
        .iter()
        .map(|p| {
            format!(
                "{:>6}ms {}",
                p.start.duration_since(since).as_millis(),
                match &p.result {
                    Ok(v) => v.clone(),
                    Err(e) => format!("ERR {e}"),
                }
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn blue_green_keeps_the_old_container_serving_until_the_new_one_is_healthy() {
    let s = Stack::new("bluegreen");
    s.write("cutover-demo:v1", "blue-green", None, HEALTH);
    let _proxy = s.serve();
    s.apply_ok(&[]);
    let old = s.the_running();
    let old_addr = published_8080(&old);
    assert_eq!(version_now(old_addr), "v1");

    // Meanwhile, find the new container and note when it first answers v2 on its own port.
    let stop = Arc::new(AtomicBool::new(false));
    let first_v2: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let watcher = {
        let (stop, first_v2) = (stop.clone(), first_v2.clone());
        let label = s.label();
        std::thread::spawn(move || {
            let mut addr = None;
            while !stop.load(Ordering::Relaxed) {
                if addr.is_none() {
                    let ids = docker(&[
                        "ps",
                        "-q",
                        "--no-trunc",
                        "--filter",
                        &label,
                        "--filter",
                        "label=io.cutover.release=2",
                    ]);
                    if let Some(id) = lines(&ids).first() {
                        addr = lines(&docker(&["port", id, "8080"]))
                            .first()
                            .and_then(|a| a.parse::<SocketAddr>().ok());
                    }
                }
                if let Some(a) = addr {
                    let start = Instant::now();
                    if version(a).as_deref() == Ok("v2") {
                        *first_v2.lock().expect("lock") = Some(start);
                        return;
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let began = Instant::now();
    let (polls, o) = poll_while(
        &s,
        &[
            "apply",
            "--yes",
            "--set",
            "app.image=cutover-demo:v2",
            "--set",
            "app.env.DEMO_SLOW_START=3",
        ],
        old_addr,
    );
    stop.store(true, Ordering::Relaxed);
    watcher.join().expect("watcher thread");
    expect_code(&o, 0, "blue-green apply of v2");
    let log = summary(&polls, began);

    // The old container answered v1 until it stopped, and stopped only once the new one
    // served v2.
    let first_failure = polls.iter().position(|p| p.result.is_err());
    let served = first_failure.unwrap_or(polls.len());
    assert!(
        polls[..served]
            .iter()
            .all(|p| p.result.as_deref() == Ok("v1")),
        "{log}"
    );
    assert!(
        served >= 20,
        "the old container served only {served} requests during the apply:\n{log}"
    );
    assert!(
        polls[served..]
            .iter()
            .all(|p| p.result.as_deref() != Ok("v2")),
        "{log}"
    );
    if let Some(i) = first_failure {
        let v2_at = first_v2.lock().expect("lock").unwrap_or_else(|| {
            panic!("the old container failed, the new one never answered v2:\n{log}")
        });
        assert!(
            polls[i].end >= v2_at,
            "the old container failed at {}ms, before the new one answered v2 at {}ms:\n{log}",
            polls[i].start.duration_since(began).as_millis(),
            v2_at.duration_since(began).as_millis()
        );
    }

    let new = s.the_running();
    assert_ne!(new, old);
    let new_addr = published_8080(&new);
    assert_ne!(new_addr, old_addr);
    assert_eq!(version_now(new_addr), "v2");
    assert_eq!(image_of(&new), image_id("cutover-demo:v2"));
    assert!(!is_running(&old), "the old container is stopped");

    // A broken new version: the live one serves throughout, the broken one goes away.
    let began = Instant::now();
    let (polls, o) = poll_while(
        &s,
        &[
            "apply",
            "--yes",
            "--set",
            "app.image=cutover-demo:v3-broken",
        ],
        new_addr,
    );
    expect_code(&o, 1, "blue-green apply of v3-broken");
    let log = summary(&polls, began);
    assert!(
        polls.iter().all(|p| p.result.as_deref() == Ok("v2")),
        "the live container must serve throughout:\n{log}"
    );
    assert!(polls.len() >= 20, "{log}");
    assert!(
        stderr(&o).contains("did not become healthy"),
        "{}",
        stderr(&o)
    );
    assert_eq!(s.the_running(), new);
    assert_eq!(version_now(new_addr), "v2");
    assert!(
        s.containers(true, &["label=io.cutover.release=3"])
            .is_empty(),
        "the broken container is removed:\n{}",
        docker_ok(&["ps", "-a", "--filter", &s.label()])
    );
    assert_eq!(s.status_of(3), "reverted");
    assert_eq!(s.status_of(2), "deployed");
}

// ---------------------------------------------------------------------------------------
// Isolation, availability of the engine.

#[test]
fn other_stacks_and_unlabelled_containers_are_never_touched() {
    let mut a = Stack::new("iso");
    // B's name starts with A's: a prefix match on names would catch B's containers.
    let b = Stack::named(format!("{}-b", a.name));
    let foreign = format!("{}-app-r1-foreign", a.name);
    a.foreign.push(foreign.clone());
    docker(&["rm", "-f", &foreign]);
    let foreign_id = docker_ok(&["run", "-d", "--name", &foreign, "cutover-demo:v1"]);

    let b_port = free_port();
    b.write("cutover-demo:v1", "recreate", Some(b_port), HEALTH);
    b.apply_ok(&[]);
    let b_id = b.the_running();

    let a_port = free_port();
    a.write("cutover-demo:v1", "recreate", Some(a_port), HEALTH);
    a.apply_ok(&[]);
    a.apply_ok(&["app.image=cutover-demo:v2"]);
    let o = a.run(&["down", "--yes"]);
    expect_code(&o, 0, "down of stack A");
    assert!(a.containers(true, &[]).is_empty());

    assert!(
        is_running(&foreign_id),
        "the unlabelled container still runs"
    );
    assert_eq!(
        docker_ok(&["inspect", "-f", "{{.Id}}", &foreign]),
        foreign_id
    );
    assert_eq!(b.the_running(), b_id, "stack B's container still runs");
    assert_eq!(
        version_now(SocketAddr::from(([127, 0, 0, 1], b_port))),
        "v1"
    );
    docker_ok(&["network", "inspect", &b.network()]);
}

#[test]
fn docker_unavailable_is_a_clear_error_and_changes_nothing() {
    let s = Stack::new("nodocker");
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    s.write("cutover-demo:v1", "recreate", Some(port), HEALTH);
    s.apply_ok(&[]);
    let before = s.the_running();
    let history = s.run(&["history", "-o", "json"]);
    expect_code(&history, 0, "history");

    let socket = format!("/tmp/{}/nope.sock", s.name);
    let o = s
        .cmd(&["apply", "--yes", "--set", "app.image=cutover-demo:v2"])
        .env("DOCKER_HOST", format!("unix://{socket}"))
        .output()
        .expect("cutover runs");
    expect_code(&o, 2, "apply without an engine");
    assert!(stderr(&o).contains(&socket), "{}", stderr(&o));

    let after = s.run(&["history", "-o", "json"]);
    expect_code(&after, 0, "history");
    assert_eq!(stdout(&history), stdout(&after), "the history is unchanged");
    assert_eq!(s.the_running(), before);
    assert_eq!(version_now(addr), "v1");
}

// ---------------------------------------------------------------------------------------
// Manual upgrades, the stack's own probe.

#[test]
fn manual_strategy_waits_for_upgrade_service() {
    let s = Stack::new("manual");
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    s.write("cutover-demo:v1", "manual", Some(port), HEALTH);
    s.apply_ok(&[]);
    assert_eq!(version_now(addr), "v1");
    let first = s.the_running();

    s.apply_ok(&["app.image=cutover-demo:v2"]);
    assert_eq!(version_now(addr), "v1", "a manual service waits");
    assert_eq!(s.the_running(), first);
    let status = s.status_text();
    assert!(status.contains("PENDING"), "{status}");

    let o = s.run(&["upgrade-service", "app", "--yes"]);
    expect_code(&o, 0, "upgrade-service app");
    assert_eq!(version_now(addr), "v2");
    assert_eq!(image_of(&s.the_running()), image_id("cutover-demo:v2"));
    let status = s.status_text();
    assert!(!status.contains("PENDING"), "{status}");
}

#[test]
fn stack_health_probe_is_used_when_the_image_has_none() {
    let s = Stack::new("probe");
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let image = "cutover-demo:v2-nohealthcheck";
    s.write(
        image,
        "recreate",
        Some(port),
        "{ http: /health, body_contains: \"ok\", interval: 500ms, deadline: 30s }",
    );
    let o = s.apply(&[]);
    expect_code(&o, 0, "apply v2-nohealthcheck");
    assert!(
        !stderr(&o).contains("Docker HEALTHCHECK"),
        "the image has no HEALTHCHECK: {}",
        stderr(&o)
    );
    let first = s.the_running();
    assert_eq!(
        docker_ok(&["inspect", "-f", "{{.State.Health}}", &first]),
        "<nil>",
        "the image has no HEALTHCHECK"
    );
    assert_eq!(version_now(addr), "v2");

    // A probe the app fails (404); only the stack's probe can tell.
    s.write(
        image,
        "recreate",
        Some(port),
        "{ http: /nope, interval: 500ms, deadline: 6s }",
    );
    let o = s.apply(&[]);
    expect_code(&o, 1, "apply with a failing probe");
    let err = stderr(&o);
    assert!(err.contains("did not become healthy"), "{err}");
    assert!(err.contains("/nope"), "{err}");
    assert!(err.contains("404"), "{err}");
    assert_eq!(s.the_running(), first, "the previous container runs again");
    assert_eq!(version_now(addr), "v2");

    // A body that lacks what the probe wants: 200 is not enough.
    s.write(
        image,
        "recreate",
        Some(port),
        "{ http: /health, body_contains: \"never-in-the-body\", interval: 500ms, deadline: 6s }",
    );
    let o = s.apply(&[]);
    expect_code(&o, 1, "apply with a body the probe does not accept");
    let err = stderr(&o);
    assert!(err.contains("did not become healthy"), "{err}");
    assert!(err.contains("never-in-the-body"), "{err}");
    assert_eq!(s.the_running(), first, "the previous container runs again");
    assert_eq!(version_now(addr), "v2");
    assert_eq!(s.status_of(1), "deployed");
}

// ---------------------------------------------------------------------------------------
// Down.

#[test]
fn down_removes_containers_and_network_but_keeps_volume_unless_asked() {
    let s = Stack::new("down");
    let port = free_port();
    s.write("cutover-demo:v1", "recreate", Some(port), HEALTH);
    s.apply_ok(&[]);
    s.the_running();
    docker_ok(&["network", "inspect", &s.network()]);
    docker_ok(&["volume", "inspect", &s.volume()]);

    let o = s.run(&["down", "--yes"]);
    expect_code(&o, 0, "down");
    assert!(s.containers(true, &[]).is_empty(), "no container is left");
    assert!(
        !docker_output(&["network", "inspect", &s.network()])
            .status
            .success(),
        "the network is gone"
    );
    docker_ok(&["volume", "inspect", &s.volume()]);

    s.apply_ok(&[]);
    s.the_running();
    let o = s.run(&["down", "--yes", "--volumes"]);
    expect_code(&o, 0, "down --volumes");
    assert!(s.containers(true, &[]).is_empty(), "no container is left");
    assert!(
        !docker_output(&["network", "inspect", &s.network()])
            .status
            .success(),
        "the network is gone"
    );
    assert!(
        !docker_output(&["volume", "inspect", &s.volume()])
            .status
            .success(),
        "the volume is gone"
    );
}

// ---------------------------------------------------------------------------------------
// Data: restore points taken before an upgrade, put back by its revert.

/// `GET /schema` and `GET /items` of the demo app: the state of its database.
fn app_state(addr: SocketAddr) -> (String, String) {
    let (_, schema) = http_get(addr, "/schema").expect("GET /schema");
    let (_, items) = http_get(addr, "/items").expect("GET /items");
    (schema.trim().to_string(), items)
}

#[test]
fn a_reverted_upgrade_puts_the_volume_back() {
    let s = Stack::new("volume-rp");
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    s.write("cutover-demo:v1", "recreate", Some(port), HEALTH);
    let stack_file = s.dir.path().join("cutover.yaml");
    let mut yaml = std::fs::read_to_string(&stack_file).expect("read");
    yaml.push_str(&format!(
        "data:\n  app_data:\n    volume: {{ name: {} }}\n    writers: [app]\n",
        s.volume()
    ));
    std::fs::write(&stack_file, yaml).expect("write");

    s.apply_ok(&[]);
    post_ok(addr, "/items", "first");
    s.apply_ok(&["app.image=cutover-demo:v2"]);
    post_ok(addr, "/items", "second");
    let before = app_state(addr);
    assert_eq!(before.0, "2");

    // v3-broken migrates the database to 3, then never turns healthy.
    let o = s.apply(&["app.image=cutover-demo:v3-broken"]);
    expect_code(&o, 1, "apply v3-broken");
    assert!(
        stderr(&o).contains("restore Docker volume"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        app_state(addr),
        before,
        "schema and rows are back as they were"
    );

    // The restore point is recorded as restored; what v3 left is kept for inspection.
    let list = s.run(&["-o", "json", "restore-points", "list"]);
    expect_code(&list, 0, "restore-points list");
    let rps: Value = serde_json::from_slice(&list.stdout).expect("json");
    let r3 = rps
        .as_array()
        .expect("array")
        .iter()
        .find(|m| m["release"] == 3)
        .unwrap_or_else(|| panic!("no restore point of release 3: {rps}"));
    assert_eq!(r3["status"], "restored", "{r3}");
    let failed = PathBuf::from(r3["failed_copy"].as_str().expect("failed copy"));
    assert!(failed.join("demo.sqlite").exists(), "{}", failed.display());
    let verify = s.run(&["restore-points", "verify"]);
    expect_code(&verify, 0, "restore-points verify");

    let prune = s.run(&["restore-points", "prune", "--keep", "1", "--yes"]);
    expect_code(&prune, 0, "restore-points prune");
    assert!(
        !failed.exists(),
        "the failed copy is pruned: {}",
        stdout(&prune)
    );
    assert!(
        stdout(&prune).contains("kept     r2 app_data"),
        "the live release's restore point is never pruned: {}",
        stdout(&prune)
    );
}

#[test]
fn a_sqlite_database_is_restored_and_its_schema_version_checked() {
    let s = Stack::new("sqlite-rp");
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let data_dir = s.dir.path().join("appdata");
    std::fs::create_dir_all(&data_dir).expect("data dir");
    let name = &s.name;
    std::fs::write(
        s.dir.path().join("cutover.yaml"),
        format!(
            "name: {name}\n\
             vars: {{ schema: \"1\" }}\n\
             services:\n  app:\n    image: cutover-demo:v1\n    port: 8080\n    \
               ports: [\"127.0.0.1:{port}:8080\"]\n    volumes: [\"./appdata:/data\"]\n    \
               stop_grace: 5s\n    health: {HEALTH}\n\
             data:\n  db:\n    sqlite: {{ path: ./appdata/demo.sqlite }}\n    writers: [app]\n    \
               schema_version: {{ query: \"select max(version) from schema_version\", expect: \"${{schema}}\" }}\n"
        ),
    )
    .expect("stack file");

    s.apply_ok(&[]);
    post_ok(addr, "/items", "one");
    let o = s.apply(&["app.image=cutover-demo:v2", "vars.schema=2"]);
    expect_code(&o, 0, "apply v2");
    assert!(
        stderr(&o).contains("schema version of `db` is 2"),
        "the verify phase reads the new schema version: {}",
        stderr(&o)
    );
    let before = app_state(addr);

    let o = s.apply(&["app.image=cutover-demo:v3-broken", "vars.schema=3"]);
    expect_code(&o, 1, "apply v3-broken");
    assert_eq!(app_state(addr), before);
    assert!(
        data_dir.join("demo.sqlite.failed-3").exists(),
        "the failed database is kept beside it"
    );
    // The live schema must match what the live release expects: a wrong expectation is
    // refused in preflight, before anything stops.
    let running = s.the_running();
    let o = s.apply(&["app.image=cutover-demo:v3", "vars.schema=3"]);
    expect_code(&o, 0, "apply v3");
    assert_eq!(app_state(addr).0, "3");
    assert_ne!(s.the_running(), running);
}

// ---------------------------------------------------------------------------------------
// Traffic: the proxy `cutover serve` runs, under steady load.

/// `GET path`, reads waiting up to 15 s (a request the proxy holds): status, head
/// (lowercase) and body.
fn http_get_head(addr: SocketAddr, path: &str) -> Result<(u16, String, String), String> {
    request(addr, "GET", path, "", Duration::from_secs(15))
        .map(|a| (a.status, a.head.to_lowercase(), a.body))
}

#[derive(Debug, Clone)]
struct Hit {
    start: Instant,
    end: Instant,
    /// The version answered, or the failure.
    result: Result<String, String>,
}

/// `threads` clients looping `GET /version` through `addr` (a new connection each time)
/// until `stop`.
fn load(
    addr: SocketAddr,
    threads: usize,
    stop: Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<Vec<Hit>>> {
    (0..threads)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut hits = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let start = Instant::now();
                    let result = match http_get_head(addr, "/version") {
                        Ok((200, _, body)) => Ok(body.trim().to_string()),
                        Ok((code, _, body)) => Err(format!("{code}: {}", body.trim())),
                        Err(e) => Err(e),
                    };
                    hits.push(Hit {
                        start,
                        end: Instant::now(),
                        result,
                    });
                }
                hits
            })
        })
        .collect()
}

/// Runs `cutover ARGS` while `threads` clients load the proxy; the hits and the output.
fn under_load(s: &Stack, args: &[&str], threads: usize) -> (Vec<Hit>, Output) {
    let stop = Arc::new(AtomicBool::new(false));
    let workers = load(s.proxy(), threads, stop.clone());
    std::thread::sleep(Duration::from_millis(500));
    let out = s.run(args);
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let mut hits: Vec<Hit> = workers
        .into_iter()
        .flat_map(|w| w.join().expect("load thread"))
        .collect();
    hits.sort_by_key(|h| h.start);
    (hits, out)
}

fn failures(hits: &[Hit]) -> Vec<String> {
    hits.iter().filter_map(|h| h.result.clone().err()).collect()
}

#[test]
fn blue_green_through_the_proxy_fails_no_request_and_switches_at_one_point() {
    let s = Stack::new("tr-bluegreen");
    s.write("cutover-demo:v1", "blue-green", None, HEALTH);
    let _proxy = s.serve();
    s.apply_ok(&[]);
    assert_eq!(
        version_now(s.proxy()),
        "v1",
        "the proxy routes to the new service"
    );

    let (hits, out) = under_load(
        &s,
        &[
            "apply",
            "--yes",
            "--set",
            "app.image=cutover-demo:v2",
            "--set",
            "app.env.DEMO_SLOW_START=2",
        ],
        4,
    );
    expect_code(&out, 0, "blue-green apply under load");
    let failed = failures(&hits);
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        hits.len(),
        &failed[..failed.len().min(5)]
    );
    let first_v2_end = hits
        .iter()
        .filter(|h| h.result.as_deref() == Ok("v2"))
        .map(|h| h.end)
        .min()
        .expect("some request answered v2");
    assert!(
        hits.iter().any(|h| h.result.as_deref() == Ok("v1")),
        "v1 served before the switch"
    );
    let late_v1 = hits
        .iter()
        .filter(|h| h.start > first_v2_end && h.result.as_deref() == Ok("v1"))
        .count();
    assert_eq!(
        late_v1,
        0,
        "after the first v2 answer, every new request gets v2 ({} hits)",
        hits.len()
    );
}

/// A routed `recreate` stack; `grace` decides whether its window fits in `max_hold`.
fn write_routed_recreate(s: &Stack, grace: &str, max_hold: &str) {
    let name = &s.name;
    std::fs::write(
        s.dir.path().join("cutover.yaml"),
        format!(
            "name: {name}\n\
             services:\n  app:\n    image: cutover-demo:v1\n    port: 8080\n    \
               volumes: [\"{name}-data:/data\"]\n    stop_grace: {grace}\n    \
               health: {{ http: /health, interval: 200ms, deadline: 8s }}\n\
             traffic:\n  listen: 127.0.0.1:{}\n  routes: [{{ service: app }}]\n  max_hold: {max_hold}\n",
            s.proxy_port
        ),
    )
    .expect("stack file");
}

#[test]
fn a_recreate_behind_the_proxy_holds_requests_and_fails_none() {
    let s = Stack::new("tr-hold");
    write_routed_recreate(&s, "2s", "15s");
    let _proxy = s.serve();
    s.apply_ok(&[]);
    assert_eq!(version_now(s.proxy()), "v1");
    let (hits, out) = under_load(
        &s,
        &["apply", "--yes", "--set", "app.image=cutover-demo:v2"],
        4,
    );
    expect_code(&out, 0, "recreate under load");
    assert!(stderr(&out).contains("held"), "{}", stderr(&out));
    let failed = failures(&hits);
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        hits.len(),
        &failed[..failed.len().min(5)]
    );
    let slowest = hits.iter().map(|h| h.end - h.start).max().expect("hits");
    assert!(
        slowest > Duration::from_millis(200),
        "some requests waited for the new container: {slowest:?}"
    );
    assert_eq!(version_now(s.proxy()), "v2");
}

#[test]
fn the_maintenance_page_shows_during_a_long_upgrade_and_goes_after_its_revert() {
    let s = Stack::new("tr-maint");
    // Stop (up to 20 s) + health (8 s) is longer than the 1 s hold: the page goes up.
    write_routed_recreate(&s, "20s", "1s");
    let mut proxy = s.serve();
    s.apply_ok(&[]);
    s.apply_ok(&["app.image=cutover-demo:v2"]);

    let (hits, out) = under_load(
        &s,
        &[
            "apply",
            "--yes",
            "--set",
            "app.image=cutover-demo:v3-broken",
        ],
        2,
    );
    expect_code(&out, 1, "v3-broken");
    assert!(
        hits.iter()
            .any(|h| h.result.as_ref().is_err_and(|e| e.starts_with("503"))),
        "the maintenance page answered during the upgrade"
    );
    let (code, _, body) = http_get_head(s.proxy(), "/version").expect("GET");
    assert_eq!(
        (code, body.trim()),
        (200, "v2"),
        "after the revert the page is off"
    );

    // By hand, with a message; the page escapes it.
    let o = s.run(&[
        "maintenance",
        "on",
        "--message",
        "Back at <noon>",
        "--retry-after",
        "90s",
    ]);
    expect_code(&o, 0, "maintenance on");
    let (code, head, body) = http_get_head(s.proxy(), "/version").expect("GET");
    assert_eq!(code, 503);
    assert!(head.contains("retry-after: 90"), "{head}");
    assert!(head.contains("text/html"), "{head}");
    assert!(body.contains("Back at &lt;noon&gt;"), "{body}");
    let status = s.run(&["maintenance", "status"]);
    expect_code(&status, 0, "maintenance status");
    assert!(
        stdout(&status).contains("maintenance page on for every route")
            && stdout(&status).contains("MAINTENANCE")
            && !stdout(&status).contains("serving"),
        "status says what the proxy answers: {}",
        stdout(&status)
    );
    // The state survives a restart of the proxy: still in maintenance, same upstream.
    proxy.stop();
    let _proxy = s.serve();
    assert_eq!(http_get_head(s.proxy(), "/version").expect("GET").0, 503);
    expect_code(&s.run(&["maintenance", "off"]), 0, "maintenance off");
    assert_eq!(
        version_now(s.proxy()),
        "v2",
        "routes survive a restart of the proxy"
    );

    // After `down` the proxy has no upstream: 503 with Retry-After, not 502 for a container
    // that is gone.
    expect_code(&s.run(&["down", "--yes"]), 0, "down");
    let (code, head, _) = http_get_head(s.proxy(), "/version").expect("GET");
    assert_eq!(code, 503, "{head}");
    assert!(head.contains("retry-after"), "{head}");
}

// ---------------------------------------------------------------------------------------
// The stack file's own steps and checks.

#[test]
fn custom_steps_and_checks_run_in_their_phases_and_a_failing_check_reverts() {
    let s = Stack::new("steps");
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let name = &s.name;
    let marker = s.dir.path().join("quiesced.txt");
    std::fs::write(
        s.dir.path().join("cutover.yaml"),
        format!(
            "name: {name}\n\
             vars: {{ version: v1 }}\n\
             services:\n  app:\n    image: cutover-demo:${{version}}\n    port: 8080\n    \
               ports: [\"127.0.0.1:{port}:8080\"]\n    stop_grace: 5s\n    health: {HEALTH}\n\
             checks:\n  \
               right_version: {{ http: {{ service: app, path: /version, body_contains: \"${{version}}\" }}, retries: 3, interval: 300ms }}\n  \
               port_open: {{ tcp: \"app:8080\" }}\n  \
               host_ready: {{ command: [sh, -c, \"test -d /\"] }}\n  \
               clean_logs: {{ logs: {{ service: app, absent: \"panicked\", present: \"listening\" }} }}\n\
             steps:\n  \
               preflight:\n    - check: host_ready\n  \
               quiesce:\n    - run: [sh, -c, \"echo ${{version}} > {}\"]\n      name: mark\n  \
               verify:\n    - wait: right_version\n      timeout: 20s\n    - check: clean_logs\n    - check: port_open\n    \
                 - exec: {{ service: app, command: [/cutover-demo, probe, \"http://127.0.0.1:8080/health\"] }}\n",
            marker.display()
        ),
    )
    .expect("stack file");

    s.apply_ok(&[]);
    let o = s.apply(&["vars.version=v2"]);
    expect_code(&o, 0, "apply v2 with its checks");
    let err = stderr(&o);
    assert!(err.contains("`right_version` passed"), "{err}");
    assert!(err.contains("logs of `app`"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&marker)
            .expect("the quiesce step ran")
            .trim(),
        "v2"
    );
    assert_eq!(version_now(addr), "v2");

    // v3 is healthy, but the verify check looks for a version it does not report: revert.
    let mut yaml = std::fs::read_to_string(s.dir.path().join("cutover.yaml")).expect("read");
    yaml = yaml.replace("body_contains: \"${version}\"", "body_contains: \"v9\"");
    std::fs::write(s.dir.path().join("cutover.yaml"), yaml).expect("write");
    let o = s.apply(&["vars.version=v3"]);
    expect_code(&o, 1, "a failing verify check");
    assert!(
        stderr(&o).contains("`right_version` did not pass"),
        "{}",
        stderr(&o)
    );
    assert_eq!(version_now(addr), "v2", "reverted to v2");
}

#[test]
fn abort_stops_a_running_upgrade_at_its_next_step_and_reverts_with_json_events() {
    use std::io::BufRead;
    let s = Stack::new("abort");
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let name = &s.name;
    std::fs::write(
        s.dir.path().join("cutover.yaml"),
        format!(
            "name: {name}\n\
             vars: {{ version: v1 }}\n\
             services:\n  app:\n    image: cutover-demo:${{version}}\n    port: 8080\n    \
               ports: [\"127.0.0.1:{port}:8080\"]\n    stop_grace: 5s\n    health: {HEALTH}\n\
             steps:\n  verify:\n    - run: [sleep, \"3\"]\n      name: soak\n      rerun_safe: true\n    \
               - run: [\"true\"]\n      name: after the soak\n"
        ),
    )
    .expect("stack file");
    s.apply_ok(&[]);

    let mut child = s
        .cmd(&["-o", "json", "apply", "--yes", "--set", "vars.version=v2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("apply");
    let out = child.stdout.take().expect("stdout");
    let mut events = Vec::new();
    let mut lines = std::io::BufReader::new(out).lines();
    // Wait until the soak runs, then pull the emergency brake.
    for line in lines.by_ref() {
        let line = line.expect("line");
        let v: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON: {line}: {e}"));
        let soak = v["event"] == "step_started" && v["title"] == "soak";
        events.push(v);
        if soak {
            break;
        }
    }
    let o = s.run(&["abort"]);
    expect_code(&o, 0, "abort");
    assert!(stdout(&o).contains("asked operation"), "{}", stdout(&o));
    for line in lines {
        events.push(serde_json::from_str(&line.expect("line")).expect("JSON event"));
    }
    let status = child.wait().expect("apply ends");
    assert_eq!(status.code(), Some(1), "an aborted upgrade is reverted");
    let last = events.last().expect("events");
    assert_eq!(last["event"], "finished", "{last}");
    assert_eq!(last["outcome"], "reverted", "{last}");
    assert!(
        last["summary"]
            .as_str()
            .expect("summary")
            .contains("aborted by"),
        "{last}"
    );
    assert!(
        !events.iter().any(|e| e["title"] == "after the soak"),
        "nothing after the abort point runs"
    );
    assert!(events.iter().any(|e| e["phase"] == "revert"));
    assert_eq!(version_now(addr), "v1");
}

#[test]
fn rollback_with_data_restore_puts_back_the_old_release_and_its_data() {
    let s = Stack::new("rollback-data");
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    s.write("cutover-demo:v1", "recreate", Some(port), HEALTH);
    let stack_file = s.dir.path().join("cutover.yaml");
    let mut yaml = std::fs::read_to_string(&stack_file).expect("read");
    yaml.push_str(&format!(
        "data:\n  app_data:\n    volume: {{ name: {} }}\n    writers: [app]\n",
        s.volume()
    ));
    std::fs::write(&stack_file, yaml).expect("write");

    s.apply_ok(&[]);
    post_ok(addr, "/items", "in v1");
    let v1_state = app_state(addr);
    s.apply_ok(&["app.image=cutover-demo:v2"]);
    post_ok(addr, "/items", "in v2");
    assert_eq!(app_state(addr).0, "2");

    let o = s.run(&["rollback", "1", "--data", "restore", "--yes"]);
    expect_code(&o, 0, "rollback 1 --data restore");
    assert!(
        stderr(&o).contains("as it was in release 1"),
        "{}",
        stderr(&o)
    );
    assert_eq!(version_now(addr), "v1");
    assert_eq!(app_state(addr), v1_state, "schema 1 and v1's rows only");
    let history = s.history();
    assert_eq!(history["releases"][0]["status"], "deployed");
    assert_eq!(history["releases"][0]["reason"], "rollback to release 1");

    // That restore point is used up: asking again is refused, with the reason.
    s.apply_ok(&["app.image=cutover-demo:v2"]);
    let o = s.run(&["rollback", "1", "--data", "restore", "--yes"]);
    expect_code(&o, 2, "no restore point left");
    assert!(
        stderr(&o).contains("no restore point holds release 1's data"),
        "{}",
        stderr(&o)
    );
    assert_eq!(version_now(addr), "v2", "nothing was changed");
}

#[test]
fn a_protected_stack_changes_only_after_a_second_person_approves() {
    use std::io::BufRead;
    let s = Stack::new("protected");
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    s.write("cutover-demo:v1", "recreate", Some(port), HEALTH);
    let stack_file = s.dir.path().join("cutover.yaml");
    let yaml = std::fs::read_to_string(&stack_file).expect("read");
    std::fs::write(&stack_file, format!("protected: true\n{yaml}")).expect("write");

    let o = s.run(&["apply"]);
    expect_code(&o, 2, "a protected stack without --yes");
    assert!(stderr(&o).contains("is protected"), "{}", stderr(&o));

    let mut child = s
        .cmd(&["-o", "json", "apply", "--yes"])
        .env("USER", "driver")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("apply");
    let out = child.stdout.take().expect("stdout");
    let mut lines = std::io::BufReader::new(out).lines();
    for line in lines.by_ref() {
        let v: Value = serde_json::from_str(&line.expect("line")).expect("JSON event");
        if v["event"] == "step_started" && v["step"] == "preflight.approval" {
            break;
        }
    }
    assert!(
        http_get(addr, "/version").is_err(),
        "nothing runs before the approval"
    );
    let o = s
        .cmd(&["approve"])
        .env("USER", "driver")
        .output()
        .expect("approve");
    expect_code(&o, 2, "the driver approving himself");
    assert!(
        stderr(&o).contains("a different person must approve"),
        "{}",
        stderr(&o)
    );
    let o = s
        .cmd(&["approve"])
        .env("USER", "chief")
        .output()
        .expect("approve");
    expect_code(&o, 0, "the chief approves");
    assert!(stdout(&o).contains("approved by chief@"), "{}", stdout(&o));
    let events: Vec<Value> = lines
        .map(|l| serde_json::from_str(&l.expect("line")).expect("JSON event"))
        .collect();
    assert_eq!(child.wait().expect("apply").code(), Some(0));
    let approval = events
        .iter()
        .find(|e| e["event"] == "step_finished" && e["step"] == "preflight.approval")
        .expect("the approval step finished");
    assert!(
        approval["output"]
            .as_str()
            .expect("output")
            .contains("approved by chief@"),
        "{approval}"
    );
    assert_eq!(version_now(addr), "v1");
}

#[test]
fn settings_a_new_version_no_longer_accepts_refuse_the_upgrade_unless_acknowledged() {
    let s = Stack::new("settings");
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    s.write("cutover-demo:v1", "recreate", Some(port), HEALTH);
    let stack_file = s.dir.path().join("cutover.yaml");
    let yaml = std::fs::read_to_string(&stack_file).expect("read").replace(
        "    strategy: recreate\n",
        "    strategy: recreate\n    env: { DEMO_LEGACY: \"1\", DEMO_DB: /data/demo.sqlite }\n",
    );
    std::fs::write(&stack_file, yaml).expect("write");
    s.apply_ok(&[]);
    let running = s.the_running();

    // v3 lists the keys it accepts: DEMO_LEGACY is not one of them.
    let o = s.apply(&["app.image=cutover-demo:v3"]);
    expect_code(&o, 2, "a removed setting");
    assert!(
        stderr(&o).contains("no longer accepts settings `app` sets: DEMO_LEGACY"),
        "{}",
        stderr(&o)
    );
    assert_eq!(s.the_running(), running, "nothing was changed");

    let o = s.run(&[
        "apply",
        "--yes",
        "--ack-settings",
        "--set",
        "app.image=cutover-demo:v3",
    ]);
    expect_code(&o, 0, "acknowledged");
    assert!(
        stderr(&o).contains("deprecated by this version: DEMO_DB"),
        "{}",
        stderr(&o)
    );
    assert!(
        stderr(&o).contains("(acknowledged): DEMO_LEGACY"),
        "{}",
        stderr(&o)
    );
    assert_eq!(version_now(addr), "v3");
}

#[test]
fn a_manual_step_waits_for_someone_at_the_terminal() {
    let s = Stack::new("manual-step");
    let port = free_port();
    s.write("cutover-demo:v1", "recreate", Some(port), HEALTH);
    let stack_file = s.dir.path().join("cutover.yaml");
    let mut yaml = std::fs::read_to_string(&stack_file).expect("read");
    yaml.push_str("steps:\n  preflight:\n    - manual: \"Read the release notes\"\n");
    std::fs::write(&stack_file, yaml).expect("write");
    // `script` gives cutover a terminal; what we write to its input is what a person types.
    let at_terminal = |answer: &str| {
        let cmdline = format!(
            "{} --state-dir {} apply --yes",
            env!("CARGO_BIN_EXE_cutover"),
            s.dir.path().join("state").display()
        );
        let mut child = Command::new("script")
            .args(["-qec", &cmdline, "/dev/null"])
            .current_dir(s.dir.path())
            .env("NO_COLOR", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("script (bsdutils) runs");
        let mut stdin = child.stdin.take().expect("stdin");
        std::thread::sleep(Duration::from_millis(1500));
        stdin
            .write_all(format!("{answer}\n").as_bytes())
            .expect("type");
        let o = child.wait_with_output().expect("ends");
        drop(stdin);
        o
    };
    let o = at_terminal("no");
    assert_eq!(code(&o), 2, "not confirmed: refused\n{}", stdout(&o));
    assert!(stdout(&o).contains("was not confirmed"), "{}", stdout(&o));
    assert!(s.containers(true, &[]).is_empty(), "nothing was started");

    let o = at_terminal("yes");
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    assert!(
        stdout(&o).contains("MANUAL STEP: Read the release notes"),
        "{}",
        stdout(&o)
    );
    assert!(stdout(&o).contains("confirmed by"), "{}", stdout(&o));
}

// ---------------------------------------------------------------------------------------
// What the first upgrade of a real application hit (#13).

/// Writes `yaml` as the test stack's file.
fn write_yaml(s: &Stack, yaml: &str) {
    std::fs::write(s.dir.path().join("cutover.yaml"), yaml).expect("write the stack file");
}

/// Service `app` of cutover-demo with the default `stop_grace` (10s) and restart policy
/// (unless-stopped), a volume, port 8080 on loopback `port`, and `env` lines.
fn write_defaults_stack(s: &Stack, port: u16, env: &str) {
    let name = &s.name;
    write_yaml(
        s,
        &format!(
            "name: {name}\n\
             services:\n  \
               app:\n    \
                 image: cutover-demo:v1\n    \
                 port: 8080\n    \
                 ports: [\"127.0.0.1:{port}:8080\"]\n    \
                 volumes: [\"{name}-data:/data\"]\n    \
                 health: {{ http: /health, interval: 500ms, deadline: 60s }}\n    \
                 env:\n{env}"
        ),
    );
}

#[test]
fn a_pid_1_that_ignores_sigterm_upgrades_and_reverts_with_the_default_stop_grace() {
    // The stop waits the whole grace (10s) and ends in SIGKILL: longer than an ordinary
    // Docker API call may take, so a stop must get a limit of its own.
    let s = Stack::new("sigterm");
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    write_defaults_stack(&s, port, "      DEMO_IGNORE_SIGTERM: \"1\"\n");
    s.apply_ok(&[]);
    let started = Instant::now();
    s.apply_ok(&["app.image=cutover-demo:v2"]);
    assert!(
        started.elapsed() >= Duration::from_secs(10),
        "the old container ignored SIGTERM and got its whole grace period"
    );
    assert_eq!(version_now(addr), "v2");
    let live = s.the_running();

    let o = s.apply(&["app.image=cutover-demo:v3-broken"]);
    expect_code(&o, 1, "apply v3-broken: reverted, not an outage (3)");
    assert_eq!(s.the_running(), live, "release 2's container runs again");
    assert!(is_running(&live));
    assert_eq!(version_now(addr), "v2");
    assert_eq!(s.status_of(3), "reverted");
}

#[test]
fn a_crash_loop_under_a_restart_policy_fails_the_upgrade_at_once() {
    // With `restart: unless-stopped` the engine restarts the crashing version and the
    // container keeps counting as running: the wait must see the restarts, not wait out
    // the deadline (60s here).
    let s = Stack::new("crashloop");
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    write_defaults_stack(&s, port, "      DEMO_CRASH_AFTER: \"${CRASH_AFTER:-}\"\n");
    s.apply_ok(&[]);
    let started = Instant::now();
    let o = s
        .cmd(&["apply", "--yes", "--set", "app.image=cutover-demo:v2"])
        .env("CRASH_AFTER", "0.2")
        .output()
        .expect("cutover runs");
    expect_code(&o, 1, "apply of a crashing v2");
    let err = stderr(&o);
    assert!(err.contains("crash loop"), "the failure says why: {err}");
    assert!(
        err.contains("exited with code 70"),
        "the failure names the exit code: {err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(45),
        "failed before the 60s deadline: {:?}",
        started.elapsed()
    );
    assert_eq!(version_now(addr), "v1", "release 1 runs again");

    // Why release 2 was reverted is in its history, and the journal one command away.
    let r2 = s.release(2);
    let failed = &r2["operation"]["failed_step"];
    assert_eq!(failed["id"], "upgrade.recreate.app", "{r2:#}");
    assert!(
        failed["output"]
            .as_str()
            .is_some_and(|o| o.contains("crash loop")),
        "{r2:#}"
    );
    assert_eq!(r2["operation"]["status"], "reverted", "{r2:#}");
    let text = s.run(&["history"]);
    expect_code(&text, 0, "history");
    assert!(
        stdout(&text).contains("failed at upgrade.recreate.app: `app` did not become healthy"),
        "{}",
        stdout(&text)
    );
    let op = r2["operation"]["id"].as_u64().expect("operation id");
    assert!(
        err.contains(&format!("cutover history --operation {op}")),
        "the failure points at the journal: {err}"
    );
    let journal = s.run(&["history", "--operation", &op.to_string()]);
    expect_code(&journal, 0, "history --operation");
    let journal = stdout(&journal);
    for want in [
        "preflight",
        "upgrade",
        "revert",
        "failed",
        "crash loop",
        "exited with code 70",
    ] {
        assert!(journal.contains(want), "{want}: {journal}");
    }

    // The next apply makes release 3 (2 is used up by the reverted one): the plan says so.
    let plan = s.run(&["-o", "json", "plan", "--set", "app.image=cutover-demo:v2"]);
    expect_code(&plan, 0, "plan");
    let plan: Value = serde_json::from_slice(&plan.stdout).expect("plan JSON");
    assert_eq!(
        (plan["from_release"].as_u64(), plan["to_release"].as_u64()),
        (Some(1), Some(3)),
        "{plan:#}"
    );
}

/// Every file under `dir`, as bytes, with its path.
fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("read dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                out.push((p, bytes));
            }
        }
    }
    out
}

#[test]
fn a_secret_an_app_logs_is_redacted_from_output_journal_and_store() {
    // The app logs its connection URL, built from a secret; a failed upgrade quotes the
    // container's last log lines in the error, the journal and the store.
    let s = Stack::new("redact");
    let port = free_port();
    let password = "pw-Zq81vXk3";
    let name = &s.name;
    write_yaml(
        &s,
        &format!(
            "name: {name}\n\
             secrets:\n  DB_PASSWORD: {{ env: TEST_DB_PASSWORD }}\n\
             services:\n  \
               app:\n    \
                 image: cutover-demo:v1\n    \
                 port: 8080\n    \
                 ports: [\"127.0.0.1:{port}:8080\"]\n    \
                 volumes: [\"{name}-data:/data\"]\n    \
                 stop_grace: 5s\n    \
                 health: {{ http: /health, interval: 500ms, deadline: 20s }}\n    \
                 env:\n      \
                   DEMO_LOG_AT_START: \"connecting to postgres://app:${{DB_PASSWORD}}@db/app\"\n"
        ),
    );
    let run = |args: &[&str]| {
        s.cmd(args)
            .env("TEST_DB_PASSWORD", password)
            .output()
            .expect("cutover runs")
    };
    let mut outputs = Vec::new();
    let o = run(&["apply", "--yes"]);
    expect_code(&o, 0, "apply v1");
    outputs.push(o);
    let container = s.the_running();
    let logs = docker_output(&["logs", &container]);
    assert!(
        String::from_utf8_lossy(&logs.stderr).contains(password)
            || String::from_utf8_lossy(&logs.stdout).contains(password),
        "the app does log the password (else this test proves nothing)"
    );
    let o = run(&[
        "apply",
        "--yes",
        "--set",
        "app.image=cutover-demo:v3-broken",
    ]);
    expect_code(&o, 1, "apply v3-broken");
    assert!(
        stderr(&o).contains("postgres://app:${DB_PASSWORD}@db/app"),
        "the quoted log line is there, the secret as its reference: {}",
        stderr(&o)
    );
    outputs.push(o);
    for args in [
        &["history"][..],
        &["-o", "json", "history"],
        &["status"],
        &["-o", "json", "status"],
    ] {
        outputs.push(run(args));
    }
    for o in &outputs {
        for stream in [&o.stdout, &o.stderr] {
            assert!(
                !String::from_utf8_lossy(stream).contains(password),
                "a secret in output: {}",
                String::from_utf8_lossy(stream)
            );
        }
    }
    let state = s.dir.path().join("state");
    for (path, bytes) in files_under(&state) {
        assert!(
            !bytes
                .windows(password.len())
                .any(|w| w == password.as_bytes()),
            "the secret is stored in {}",
            path.display()
        );
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(state.join("state.db"))
        .expect("state.db")
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "state.db is private: {mode:o}");
}

#[test]
fn down_stops_each_container_with_sigterm_before_removing_it() {
    // A database must get its SIGTERM (a clean shutdown), not only a removal's SIGKILL.
    let s = Stack::new("down-grace");
    let port = free_port();
    write_defaults_stack(&s, port, "      DEMO_LOG_AT_START: \"\"\n");
    s.apply_ok(&[]);
    let container = s.the_running();
    let since = engine_now();
    expect_code(&s.run(&["down", "--yes"]), 0, "down");
    assert!(
        s.containers(true, &[]).is_empty(),
        "the container is removed"
    );
    let signals = kill_signals(&container, &since);
    assert_eq!(
        signals.first().map(|(sig, _)| sig.as_str()),
        Some("15"),
        "the first signal is SIGTERM: {signals:?}"
    );
}

/// The engine's clock now, for `kill_signals`.
fn engine_now() -> String {
    docker_ok(&["system", "info", "--format", "{{.SystemTime}}"])
}

/// The signals the engine sent `container` since `since` (`engine_now`), in order, with
/// their times in nanoseconds: its `kill` events.
fn kill_signals(container: &str, since: &str) -> Vec<(String, u128)> {
    let until = engine_now();
    let events = docker_ok(&[
        "events",
        "--since",
        since,
        "--until",
        &until,
        "--filter",
        &format!("container={container}"),
        "--filter",
        "event=kill",
        "--format",
        "{{.Actor.Attributes.signal}} {{.TimeNano}}",
    ]);
    lines(&events)
        .iter()
        .filter_map(|l| {
            let (sig, t) = l.split_once(' ')?;
            Some((sig.to_string(), t.parse().ok()?))
        })
        .collect()
}

#[test]
fn rollback_keeping_data_is_refused_at_once_when_the_old_release_ran_on_another_schema() {
    let s = Stack::new("keep-schema");
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let data_dir = s.dir.path().join("appdata");
    std::fs::create_dir_all(&data_dir).expect("data dir");
    let name = &s.name;
    write_yaml(
        &s,
        &format!(
            "name: {name}\n\
             services:\n  app:\n    image: cutover-demo:v1\n    port: 8080\n    \
               ports: [\"127.0.0.1:{port}:8080\"]\n    volumes: [\"./appdata:/data\"]\n    \
               stop_grace: 5s\n    health: {HEALTH}\n\
             data:\n  db:\n    sqlite: {{ path: ./appdata/demo.sqlite }}\n    writers: [app]\n    \
               schema_version: {{ query: \"select max(version) from schema_version\" }}\n"
        ),
    );
    s.apply_ok(&[]);
    s.apply_ok(&["app.image=cutover-demo:v2"]);
    assert_eq!(app_state(addr).0, "2");
    let live = s.the_running();

    let started = Instant::now();
    let o = s.run(&["rollback", "1", "--data", "keep", "--yes"]);
    expect_code(&o, 2, "rollback 1 --data keep onto schema 2");
    let err = stderr(&o);
    assert!(
        err.contains("the schema version is 2, but release 1 ran on 1"),
        "{err}"
    );
    assert!(err.contains("--data restore"), "points the way: {err}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "refused in preflight, not after a health deadline: {:?}",
        started.elapsed()
    );
    assert_eq!(s.the_running(), live, "nothing was changed");
    assert_eq!(version_now(addr), "v2");

    let o = s.run(&["rollback", "1", "--data", "restore", "--yes"]);
    expect_code(&o, 0, "rollback 1 --data restore");
    assert_eq!(version_now(addr), "v1");
    assert_eq!(app_state(addr).0, "1");
}

#[test]
fn a_run_step_runs_in_the_stack_files_directory_wherever_cutover_is_started() {
    use std::os::unix::fs::PermissionsExt;
    let s = Stack::new("run-dir");
    let port = free_port();
    write_defaults_stack(&s, port, "      DEMO_LOG_AT_START: \"\"\n");
    let file = s.dir.path().join("cutover.yaml");
    let mut yaml = std::fs::read_to_string(&file).expect("read");
    yaml.push_str("steps:\n  verify:\n    - run: [./scripts/mark.sh, done]\n");
    std::fs::write(&file, yaml).expect("write");
    std::fs::create_dir(s.dir.path().join("scripts")).expect("mkdir");
    let script = s.dir.path().join("scripts/mark.sh");
    std::fs::write(&script, "#!/bin/sh\necho \"$1\" > marked\n").expect("script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let elsewhere = tempfile::tempdir().expect("another directory");
    let o = s
        .cmd(&["-f", file.to_str().expect("utf-8"), "apply", "--yes"])
        .current_dir(elsewhere.path())
        .output()
        .expect("cutover runs");
    expect_code(&o, 0, "apply from another directory");
    assert_eq!(
        std::fs::read_to_string(s.dir.path().join("scripts/../marked")).expect("marked"),
        "done\n",
        "the script ran beside the stack file"
    );
    assert!(!elsewhere.path().join("marked").exists());
}

#[test]
fn a_migration_job_runs_on_the_new_image_before_it_starts_and_a_failed_one_reverts() {
    let s = Stack::new("migrate");
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let name = &s.name;
    write_yaml(
        &s,
        &format!(
            "name: {name}\n\
             services:\n  app:\n    image: cutover-demo:v1\n    port: 8080\n    \
               ports: [\"127.0.0.1:{port}:8080\"]\n    volumes: [\"{name}-data:/data\"]\n    \
               stop_grace: 5s\n    health: {HEALTH}\n    \
               env: {{ DEMO_BREAK_MIGRATION: \"${{BREAK:-0}}\" }}\n    \
               migrate: {{ command: [migrate], timeout: 1m }}\n\
             data:\n  app_data:\n    volume: {{ name: {name}-data }}\n    writers: [app]\n"
        ),
    );
    s.apply_ok(&[]);
    post_ok(addr, "/items", "one");
    let o = s.apply(&["app.image=cutover-demo:v2"]);
    expect_code(&o, 0, "apply v2 with its migration");
    let err = stderr(&o);
    let migrated = err
        .find("`migrate` on")
        .unwrap_or_else(|| panic!("the migration ran: {err}"));
    let recreated = err
        .find("start `app` on cutover-demo:v2")
        .unwrap_or_else(|| panic!("then the new container: {err}"));
    assert!(migrated < recreated, "{err}");
    let journal = s.run(&["history", "--operation", "2"]);
    assert!(
        stdout(&journal).contains("migration 2 applied"),
        "the job's output is journaled: {}",
        stdout(&journal)
    );
    assert_eq!(app_state(addr).0, "2");
    assert!(
        docker_ok(&[
            "ps",
            "-aq",
            "--filter",
            &format!("name={name}-app-r2-migrate")
        ])
        .is_empty(),
        "the job's container is removed"
    );
    let before = app_state(addr);

    // v3's migration dies halfway: the upgrade stops there and everything is put back.
    let o = s
        .cmd(&["apply", "--yes", "--set", "app.image=cutover-demo:v3"])
        .env("BREAK", "1")
        .output()
        .expect("cutover runs");
    expect_code(&o, 1, "apply v3 whose migration fails");
    let err = stderr(&o);
    assert!(
        err.contains("the migration of `app` (`migrate` on") && err.contains("exited with code 71"),
        "{err}"
    );
    assert!(err.contains("died halfway"), "the job's log lines: {err}");
    assert_eq!(version_now(addr), "v2");
    assert_eq!(app_state(addr), before, "the data is as it was");
}

#[test]
fn a_successful_apply_keeps_only_the_newest_restore_points() {
    let s = Stack::new("retention");
    let port = free_port();
    s.write("cutover-demo:v1", "recreate", Some(port), HEALTH);
    let stack_file = s.dir.path().join("cutover.yaml");
    let mut yaml = std::fs::read_to_string(&stack_file).expect("read");
    yaml.push_str(&format!(
        "restore_points: {{ keep: 1 }}\ndata:\n  app_data:\n    volume: {{ name: {} }}\n    writers: [app]\n",
        s.volume()
    ));
    std::fs::write(&stack_file, yaml).expect("write");
    let releases_kept = || -> Vec<u64> {
        let list = s.run(&["-o", "json", "restore-points", "list"]);
        expect_code(&list, 0, "restore-points list");
        let v: Value = serde_json::from_slice(&list.stdout).expect("json");
        v.as_array()
            .expect("array")
            .iter()
            .filter_map(|m| m["release"].as_u64())
            .collect()
    };
    s.apply_ok(&[]);
    s.apply_ok(&["app.image=cutover-demo:v2"]);
    assert_eq!(releases_kept(), vec![2]);
    // The release records how long its container took to become healthy; the next plan
    // says so beside the bound.
    let r2 = s.release(2);
    assert!(
        r2["images"]["app"]["started_in_ms"]
            .as_u64()
            .is_some_and(|ms| ms > 0),
        "{r2:#}"
    );
    let plan = s.run(&["plan", "--set", "app.image=cutover-demo:v3"]);
    assert!(
        stdout(&plan).contains("the last start took"),
        "{}",
        stdout(&plan)
    );
    let o = s.apply(&["app.image=cutover-demo:v3"]);
    expect_code(&o, 0, "apply v3");
    assert!(
        stderr(&o).contains("retention (restore_points.keep: 1): removed  r2 app_data"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        releases_kept(),
        vec![3],
        "release 2's restore point is gone"
    );
}

#[test]
fn a_setting_the_new_image_removed_is_named_in_the_plan_and_refused_until_acknowledged() {
    // The images ship their defaults as a file (/etc/cutover-demo/defaults.ini); v3 drops
    // [features] legacy_export, which the operator's file still sets.
    let s = Stack::new("settings-file");
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    write_defaults_stack(&s, port, "      DEMO_LOG_AT_START: \"\"\n");
    let file = s.dir.path().join("cutover.yaml");
    let yaml = std::fs::read_to_string(&file).expect("read").replace(
        "    env:\n",
        "    config_files:\n      - { path: ./conf/demo.ini, defaults: /etc/cutover-demo/defaults.ini }\n    env:\n",
    );
    std::fs::write(&file, yaml).expect("write");
    std::fs::create_dir(s.dir.path().join("conf")).expect("mkdir");
    std::fs::write(
        s.dir.path().join("conf/demo.ini"),
        "[server]\nlisten = 0.0.0.0:8080\n[features]\nlegacy_export = true\n",
    )
    .expect("operator's file");
    s.apply_ok(&["app.image=cutover-demo:v2"]);

    let plan = s.run(&["-o", "json", "plan", "--set", "app.image=cutover-demo:v3"]);
    expect_code(&plan, 0, "plan");
    let plan: Value = serde_json::from_slice(&plan.stdout).expect("plan JSON");
    let review = &plan["settings"][0];
    assert_eq!(review["file"], "./conf/demo.ini", "{plan:#}");
    assert_eq!(
        review["removed"][0]["key"], "features.legacy_export",
        "{plan:#}"
    );
    assert_eq!(review["removed"][0]["line"], 4, "{plan:#}");
    assert_eq!(review["added"][0], "features.new_search", "{plan:#}");
    let text = s.run(&["plan", "--set", "app.image=cutover-demo:v3"]);
    assert!(
        stdout(&text).contains("./conf/demo.ini:4: `features.legacy_export` is set"),
        "{}",
        stdout(&text)
    );

    let running = s.the_running();
    let o = s.apply(&["app.image=cutover-demo:v3"]);
    expect_code(&o, 2, "refused in preflight");
    assert!(
        stderr(&o).contains("still sets in ./conf/demo.ini what the new version removed or renamed: features.legacy_export"),
        "{}",
        stderr(&o)
    );
    assert_eq!(s.the_running(), running, "nothing was changed");
    let o = s.run(&[
        "apply",
        "--yes",
        "--ack-settings",
        "--set",
        "app.image=cutover-demo:v3",
    ]);
    expect_code(&o, 0, "acknowledged");
    assert_eq!(version_now(addr), "v3");
}

/// `docker rm -f NAME` when dropped: a container a test started outside any stack.
struct Gone(String);

impl Drop for Gone {
    fn drop(&mut self) {
        docker(&["rm", "-f", &self.0]);
    }
}

/// `docker-compose -p PROJECT down -v` when dropped: the compose project a test started,
/// its network and volumes, gone whatever the test did.
struct ComposeProject {
    project: String,
    dir: PathBuf,
}

impl Drop for ComposeProject {
    fn drop(&mut self) {
        let _ = Command::new("docker-compose")
            .args(["-p", &self.project, "down", "-v", "--remove-orphans"])
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output();
        docker(&["volume", "rm", "-f", &format!("{}_appdata", self.project)]);
    }
}

#[test]
fn a_running_compose_project_is_taken_over_with_its_data_ports_and_environment() {
    // Deployed first the way its users run it: `docker-compose up -d`.
    let name = format!("t-adopt-{}", std::process::id());
    let dir = tempfile::tempdir().expect("temp dir");
    let _compose = ComposeProject {
        project: name.clone(),
        dir: dir.path().to_path_buf(),
    };
    let s = Stack::named(name.clone());
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let compose = format!(
        "volumes:\n  appdata: {{}}\n\
         networks:\n  back: {{}}\n\
         services:\n  app:\n    image: cutover-demo:v1\n    \
           ports: [\"127.0.0.1:{port}:8080\"]\n    \
           volumes: [\"appdata:/data\"]\n    \
           networks: [back, default]\n    \
           environment:\n      - DEMO_LOG_AT_START\n    \
           stop_grace_period: 5s\n    \
           healthcheck:\n      test: [CMD, /cutover-demo, probe, \"http://127.0.0.1:8080/health\"]\n      interval: 1s\n      retries: 10\n"
    );
    std::fs::write(s.dir.path().join("docker-compose.yml"), &compose).expect("compose file");
    std::fs::write(dir.path().join("docker-compose.yml"), &compose).expect("compose file");
    let up = Command::new("docker-compose")
        .args(["-p", &name, "up", "-d"])
        .current_dir(s.dir.path())
        .env("DEMO_LOG_AT_START", "hello from the host")
        .stdin(Stdio::null())
        .output()
        .expect("docker-compose runs (Debian package docker-compose)");
    assert!(
        up.status.success(),
        "docker-compose up: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    let _ = version_now(addr);
    post_ok(addr, "/items", "written-under-compose");
    let before = app_state(addr);
    let compose_ids = || {
        lines(&docker_ok(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=com.docker.compose.project={name}"),
        ]))
    };
    assert_eq!(compose_ids().len(), 1);

    write_yaml(
        &s,
        &format!("name: {name}\ninclude_compose: docker-compose.yml\n"),
    );
    let run = |args: &[&str]| {
        s.cmd(args)
            .env("COMPOSE_PROJECT_NAME", &name)
            .env("DEMO_LOG_AT_START", "hello from the host")
            .output()
            .expect("cutover runs")
    };
    let plan = run(&["plan"]);
    expect_code(&plan, 0, "plan");
    assert!(
        stdout(&plan).contains(&format!("take `app` over from {name}_app_1")),
        "the plan shows the adoption: {}",
        stdout(&plan)
    );
    let o = run(&["apply", "--yes"]);
    expect_code(&o, 0, "apply: take the compose project over");

    assert_eq!(app_state(addr), before, "the data is where it was");
    assert!(compose_ids().is_empty(), "the compose container is gone");
    let ours = s.the_running();
    assert!(
        docker_ok(&["inspect", "-f", "{{range .Mounts}}{{.Name}} {{end}}", &ours])
            .contains(&format!("{name}_appdata")),
        "ours runs on compose's volume, not a new one"
    );
    let logs = docker_output(&["logs", &ours]);
    assert!(
        String::from_utf8_lossy(&logs.stdout).contains("hello from the host")
            || String::from_utf8_lossy(&logs.stderr).contains("hello from the host"),
        "the pass-through variable arrived"
    );
    assert!(
        !docker_output(&["volume", "inspect", "appdata"])
            .status
            .success(),
        "no second, empty volume"
    );
}

#[test]
fn a_host_port_held_by_another_container_refuses_the_apply_in_preflight() {
    let s = Stack::new("port-clash");
    let port = free_port();
    let other = format!("{}-squatter", s.name);
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &other,
        "-p",
        &format!("127.0.0.1:{port}:8080"),
        "-e",
        "DEMO_VERSION=v1",
        "cutover-demo:v1",
    ]);
    let _gone = Gone(other.clone());
    s.write("cutover-demo:v1", "recreate", Some(port), HEALTH);
    let o = s.apply(&[]);
    expect_code(&o, 2, "refused in preflight");
    assert!(
        stderr(&o).contains(&format!(
            "host port {port} of `app` is published by container {other}"
        )),
        "{}",
        stderr(&o)
    );
    assert!(s.containers(true, &[]).is_empty(), "nothing was started");
    assert!(
        !docker_output(&["network", "inspect", &s.network()])
            .status
            .success(),
        "no network was left behind"
    );

    // A first deploy that fails after starting something leaves no network behind either.
    docker(&["rm", "-f", &other]);
    s.write("cutover-demo:v3-broken", "recreate", Some(port), HEALTH);
    let o = s.apply(&[]);
    expect_code(&o, 1, "a broken first deploy, reverted");
    assert!(s.containers(true, &[]).is_empty());
    assert!(
        !docker_output(&["network", "inspect", &s.network()])
            .status
            .success(),
        "the network the failed first deploy created is gone: {}",
        stderr(&o)
    );
}

#[test]
fn a_rollback_to_a_release_recorded_with_a_short_grace_stops_the_live_one_with_its_own() {
    // Release 1 was recorded with `stop_grace: 1s`; release 2 runs with 12s and a process
    // that ignores SIGTERM. Rolling back to 1 stops release 2's container: it gets the
    // grace it was started with, not the target release's.
    let s = Stack::new("rollback-grace");
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let name = &s.name;
    let stack = |grace: &str| {
        format!(
            "name: {name}\n\
             services:\n  app:\n    image: cutover-demo:v1\n    port: 8080\n    \
               ports: [\"127.0.0.1:{port}:8080\"]\n    stop_grace: {grace}\n    \
               health: {HEALTH}\n    env: {{ DEMO_IGNORE_SIGTERM: \"1\" }}\n"
        )
    };
    write_yaml(&s, &stack("1s"));
    s.apply_ok(&[]);
    write_yaml(&s, &stack("12s"));
    s.apply_ok(&["app.image=cutover-demo:v2"]);
    assert_eq!(version_now(addr), "v2");
    let live = s.the_running();
    let since = engine_now();
    let o = s.run(&["rollback", "1", "--yes"]);
    expect_code(&o, 0, "rollback 1");
    assert_eq!(version_now(addr), "v1");
    // The engine's events: SIGTERM (15), then SIGKILL (9) at least 12 s later.
    let kills = kill_signals(&live, &since);
    let term = kills.iter().find(|(s, _)| s == "15").expect("a SIGTERM");
    let kill = kills
        .iter()
        .find(|(s, _)| s == "9")
        .expect("then a SIGKILL");
    let waited = Duration::from_nanos((kill.1 - term.1) as u64);
    assert!(
        waited >= Duration::from_secs(11),
        "release 2's container got its own 12s grace, not release 1's 1s: {waited:?} ({kills:?})"
    );
}

#[test]
fn a_container_started_by_hand_is_taken_over_and_given_back_when_the_first_apply_fails() {
    let s = Stack::new("adopt-run");
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let by_hand = format!("{}-by-hand", s.name);
    let _gone = Gone(by_hand.clone());
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &by_hand,
        "-p",
        &format!("127.0.0.1:{port}:8080"),
        "-v",
        &format!("{}:/data", s.volume()),
        "--restart",
        "unless-stopped",
        "cutover-demo:v1",
    ]);
    let _ = version_now(addr);
    post_ok(addr, "/items", "written-by-hand");
    let before = app_state(addr);
    let stack = |image: &str| {
        format!(
            "name: {}\nservices:\n  app:\n    image: {image}\n    port: 8080\n    \
               ports: [\"127.0.0.1:{port}:8080\"]\n    volumes: [\"{}:/data\"]\n    \
               stop_grace: 5s\n    health: {HEALTH}\n    adopt: [{by_hand}]\n",
            s.name,
            s.volume()
        )
    };
    // A first apply that fails gives the container back: it runs and serves again.
    write_yaml(&s, &stack("cutover-demo:v3-broken"));
    let o = s.apply(&[]);
    expect_code(&o, 1, "a broken first apply, reverted");
    assert!(
        stderr(&o).contains(&format!("{by_hand} runs again")),
        "{}",
        stderr(&o)
    );
    assert!(is_running(&by_hand));
    assert_eq!(version_now(addr), "v1");

    // Then taken over for good.
    write_yaml(&s, &stack("cutover-demo:v2"));
    let o = s.apply(&[]);
    expect_code(&o, 0, "apply: take the container over");
    assert!(
        stderr(&o).contains(&format!("take `app` over from {by_hand}")),
        "{}",
        stderr(&o)
    );
    assert!(
        !docker_output(&["inspect", &by_hand]).status.success(),
        "the container started by hand is gone"
    );
    assert_eq!(version_now(addr), "v2");
    let after = app_state(addr);
    assert!(
        after.1.contains("written-by-hand"),
        "{after:?} (was {before:?})"
    );
}

#[test]
fn down_volumes_leaves_a_compose_external_volume_alone() {
    let s = Stack::new("external-vol");
    let external = format!("{}-ext", s.name);
    docker_ok(&["volume", "create", &external]);
    struct Volume(String);
    impl Drop for Volume {
        fn drop(&mut self) {
            docker(&["volume", "rm", "-f", &self.0]);
        }
    }
    let _external = Volume(external.clone());
    let port = free_port();
    std::fs::write(
        s.dir.path().join("docker-compose.yml"),
        format!(
            "volumes:\n  shared: {{ external: true, name: {external} }}\n  own: {{ name: {} }}\n\
             services:\n  app:\n    image: cutover-demo:v1\n    ports: [\"127.0.0.1:{port}:8080\"]\n    \
               volumes: [\"shared:/data\", \"own:/own\"]\n",
            s.volume()
        ),
    )
    .expect("compose file");
    write_yaml(
        &s,
        &format!("name: {}\ninclude_compose: docker-compose.yml\n", s.name),
    );
    s.apply_ok(&[]);
    let o = s.run(&["down", "--yes", "--volumes"]);
    expect_code(&o, 0, "down --volumes");
    assert!(
        docker_output(&["volume", "inspect", &external])
            .status
            .success(),
        "the external volume is not the stack's to remove: {}",
        stdout(&o)
    );
    assert!(
        !docker_output(&["volume", "inspect", &s.volume()])
            .status
            .success(),
        "its own volume is removed"
    );
}

#[test]
fn a_failed_first_apply_that_took_a_compose_project_over_puts_its_data_back() {
    let name = format!("t-adopt-data-{}", std::process::id());
    let dir = tempfile::tempdir().expect("temp dir");
    let _compose = ComposeProject {
        project: name.clone(),
        dir: dir.path().to_path_buf(),
    };
    let s = Stack::named(name.clone());
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let compose = format!(
        "volumes:\n  appdata: {{}}\n\
         services:\n  app:\n    image: cutover-demo:v1\n    \
           ports: [\"127.0.0.1:{port}:8080\"]\n    volumes: [\"appdata:/data\"]\n    \
           stop_grace_period: 5s\n"
    );
    std::fs::write(s.dir.path().join("docker-compose.yml"), &compose).expect("compose file");
    std::fs::write(dir.path().join("docker-compose.yml"), &compose).expect("compose file");
    let up = Command::new("docker-compose")
        .args(["-p", &name, "up", "-d"])
        .current_dir(s.dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("docker-compose runs");
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let _ = version_now(addr);
    post_ok(addr, "/items", "written-under-compose");
    let before = app_state(addr);
    assert_eq!(before.0, "1");
    write_yaml(
        &s,
        &format!(
            "name: {name}\ninclude_compose: docker-compose.yml\n\
             services:\n  app: {{ port: 8080, health: {HEALTH} }}\n\
             data:\n  app_data:\n    volume: {{ name: appdata }}\n    writers: [app]\n"
        ),
    );
    let run = |args: &[&str]| {
        s.cmd(args)
            .env("COMPOSE_PROJECT_NAME", &name)
            .output()
            .expect("cutover runs")
    };
    // v3-broken migrates the database to schema 3, then never turns healthy.
    let o = run(&[
        "apply",
        "--yes",
        "--set",
        "app.image=cutover-demo:v3-broken",
    ]);
    expect_code(&o, 1, "a broken first apply over a compose project");
    let err = stderr(&o);
    assert!(err.contains("restore point of Docker volume"), "{err}");
    assert_eq!(
        app_state(addr),
        before,
        "the compose container serves again, on the data as it was: {err}"
    );
    // The next one takes it over for good, the data with it.
    let o = run(&["apply", "--yes", "--set", "app.image=cutover-demo:v2"]);
    expect_code(&o, 0, "apply v2 over the compose project");
    let after = app_state(addr);
    assert_eq!(after.0, "2");
    assert!(after.1.contains("written-under-compose"), "{after:?}");
}

// ---------------------------------------------------------------------------------------
// Operations never overlap.

/// Runs `apply` to `image` and kills it with SIGKILL once it finished `step` (a test hook
/// stops it there): an operation left unfinished, as a crash or a `kill -9` leaves it.
fn kill_apply_after(s: &Stack, image: &str, step: &str) {
    kill_apply_at(s, &format!("app.image={image}"), &format!("{step}:after"));
}

/// Starts `apply --set SET` with the test hook stopping it at `crash_at` (a step boundary
/// `<step>:<before|after>`, or a named point inside a step), waits until it is there, then
/// kills it with SIGKILL.
fn kill_apply_at(s: &Stack, set: &str, crash_at: &str) {
    require_test_hooks(Path::new(env!("CARGO_BIN_EXE_cutover")));
    let marker = s.dir.path().join("crashed");
    let mut child = s
        .cmd(&["apply", "--yes", "--set", set])
        .env("CUTOVER_TEST_CRASH_AT", crash_at)
        .env("CUTOVER_TEST_CRASH_MARKER", &marker)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("apply starts");
    let start = Instant::now();
    while !marker.exists() {
        if let Some(status) = child.try_wait().expect("wait") {
            panic!("apply ended ({status}) before it reached {crash_at}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "never reached {crash_at}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().expect("SIGKILL");
    let _ = child.wait();
}

#[test]
fn after_a_killed_apply_nothing_but_resume_or_abort_acts_on_the_stack() {
    let s = Stack::new("overlap");
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    s.write("cutover-demo:v1", "recreate", Some(port), HEALTH);
    s.apply_ok(&[]);
    assert_eq!(version_now(addr), "v1");

    // Killed once v2 runs and before the release is recorded: operation 2 is unfinished.
    kill_apply_after(&s, "cutover-demo:v2", "upgrade.recreate.app");
    let running = s.the_running();
    assert_eq!(image_of(&running), image_id("cutover-demo:v2"));
    let st = s.status_json();
    let op = st["unfinished_operations"][0]["id"]
        .as_u64()
        .expect("an unfinished operation");
    assert_eq!(
        st["unfinished_operations"][0]["in_progress"], false,
        "its process is gone: {st:#}"
    );
    assert_eq!(
        st["unfinished_operations"][0]["last_step"]["id"], "upgrade.recreate.app",
        "{st:#}"
    );

    // Every verb that would change the stack refuses with exit 4, naming the operation,
    // where it stopped and the two ways out; none records anything.
    let refusals: [&[&str]; 5] = [
        &["apply", "--yes", "--set", "app.image=cutover-demo:v1"],
        &["rollback", "--yes"],
        &["upgrade-service", "app", "--yes"],
        &["down", "--yes"],
        &["restore-points", "prune", "--keep", "0", "--yes"],
    ];
    for args in refusals {
        let o = s.run(args);
        expect_code(&o, 4, &args.join(" "));
        let err = stderr(&o);
        assert!(
            err.contains(&format!(
                "unfinished operation: operation {op} (apply of release 2)"
            )),
            "{args:?}: {err}"
        );
        assert!(
            err.contains("it stopped at step `upgrade.recreate.app`"),
            "{args:?}: {err}"
        );
        assert!(
            err.contains("`cutover resume`") && err.contains("`cutover abort`"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("took over a stale lease"), "{args:?}: {err}");
    }
    // Nothing changed: the same container, no new release.
    assert_eq!(s.the_running(), running);
    let h = s.history();
    assert_eq!(h["releases"].as_array().map(Vec::len), Some(2), "{h:#}");

    // `resume` finishes operation 2 from where it stopped.
    let o = s.run(&["resume", "--yes"]);
    expect_code(&o, 0, "resume");
    assert!(
        stderr(&o).contains(&format!("operation {op} (apply of release 2)")),
        "{}",
        stderr(&o)
    );

    // The history is coherent: the newest release is deployed, and it is what runs.
    let h = s.history();
    let releases = h["releases"].as_array().expect("releases");
    assert_eq!(releases.len(), 2, "{h:#}");
    assert_eq!(s.status_of(2), "deployed");
    assert_eq!(s.status_of(1), "superseded");
    assert_eq!(
        s.the_running(),
        running,
        "resume did not start another container"
    );
    assert_eq!(version_now(addr), "v2");
    let st = s.status_json();
    assert!(st["lease"].is_null(), "{st:#}");
    assert_eq!(
        st["unfinished_operations"].as_array().map(Vec::len),
        Some(0),
        "{st:#}"
    );

    // And the stack takes new operations again.
    let o = s.run(&["rollback", "--yes"]);
    expect_code(&o, 0, "rollback once nothing is unfinished");
    assert_eq!(version_now(addr), "v1");
}

#[test]
fn abort_reverts_an_interrupted_upgrade_and_says_what_the_restore_keeps_aside() {
    let s = Stack::new("abortdata");
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let name = &s.name;
    std::fs::write(
        s.dir.path().join("cutover.yaml"),
        format!(
            "name: {name}\n\
             services:\n  app:\n    image: cutover-demo:v1\n    port: 8080\n    \
             ports: [\"127.0.0.1:{port}:8080\"]\n    volumes: [\"{name}-data:/data\"]\n    \
             stop_grace: 5s\n    health: {HEALTH}\n\
             data:\n  app_data:\n    volume: {{ name: {name}-data }}\n    writers: [app]\n"
        ),
    )
    .expect("stack file");
    s.apply_ok(&[]);
    post_ok(addr, "/items", "before");
    kill_apply_after(&s, "cutover-demo:v2", "upgrade.recreate.app");
    // The new version kept serving, and took a write, while the operation was unfinished.
    post_ok(addr, "/items", "written-since");

    let o = s.run(&["abort", "--yes"]);
    expect_code(&o, 1, "abort reverts");
    let err = stderr(&o);
    // Before the volume is put back, the operator reads how old the restore point is and
    // where what was written since is kept.
    let notice = err
        .lines()
        .find(|l| l.contains("restoring `app_data` to its restore point of"))
        .unwrap_or_else(|| panic!("no notice before the restore: {err}"));
    assert!(
        notice.contains("old, taken before release 2's upgrade"),
        "{notice}"
    );
    assert!(notice.contains("cutover-failed"), "{notice}");
    assert_eq!(version_now(addr), "v1");
    let (_, items) = app_state(addr);
    assert!(
        items.contains("before") && !items.contains("written-since"),
        "{items}"
    );
    assert_eq!(s.status_of(2), "reverted");
}

// ---------------------------------------------------------------------------------------
// Restore points made by the filesystem: a bind volume on a real XFS (reflink) loop mount.

/// The demo stack with its volume made as a bind volume of a directory on `xfs`, and the
/// volume declared as data with a snapshot restore point (the default method).
fn stack_on_xfs(s: &Stack, xfs: &cutover_testkit::fs::Xfs, port: u16) -> PathBuf {
    let device = xfs.path().join("appdata");
    cutover_testkit::cmd::bind_volume(&s.volume(), &device);
    s.write("cutover-demo:v1", "recreate", Some(port), HEALTH);
    let stack_file = s.dir.path().join("cutover.yaml");
    let mut yaml = std::fs::read_to_string(&stack_file).expect("read");
    yaml.push_str(&format!(
        "data:\n  app_data:\n    volume: {{ name: {} }}\n    writers: [app]\n",
        s.volume()
    ));
    std::fs::write(&stack_file, yaml).expect("write");
    device
}

#[test]
fn on_xfs_the_restore_point_is_a_reflink_clone_and_a_swap_cut_in_half_is_finished_by_resume() {
    let Some(xfs) = cutover_testkit::fs::Xfs::new(400) else {
        return;
    };
    let s = Stack::new("xfs-swap");
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let device = stack_on_xfs(&s, &xfs, port);

    s.apply_ok(&[]);
    post_ok(addr, "/items", "first");
    assert!(
        device.join("demo.sqlite").exists(),
        "the app writes into the bind volume's directory on XFS"
    );
    let plan = s.run(&["plan", "--set", "app.image=cutover-demo:v2"]);
    assert!(
        stdout(&plan).contains("here: reflink clone of"),
        "the plan says how the restore point is made here: {}",
        stdout(&plan)
    );
    s.apply_ok(&["app.image=cutover-demo:v2"]);
    post_ok(addr, "/items", "second");
    let before = app_state(addr);

    // v3-broken migrates to schema 3 and never turns healthy; the revert's swap is cut
    // between its two halves.
    kill_apply_at(
        &s,
        "app.image=cutover-demo:v3-broken",
        "snapshot-swap:between",
    );
    let snapshot = PathBuf::from(format!("{}.cutover-rp-r3", device.display()));
    assert_eq!(
        std::fs::read_dir(&device)
            .expect("the volume's directory stays")
            .count(),
        0,
        "the first half set the data aside"
    );
    assert!(snapshot.exists(), "the snapshot waits beside it");

    let o = s.run(&["resume", "--yes"]);
    expect_code(&o, 1, "resume finishes the revert");
    assert!(
        stderr(&o).contains("the swap an interrupted run began, finished"),
        "{}",
        text(&o)
    );
    assert_eq!(app_state(addr), before, "schema and rows are back");
    assert!(!snapshot.exists(), "the snapshot became the data");

    let list = s.run(&["-o", "json", "restore-points", "list"]);
    let rps: Value = serde_json::from_slice(&list.stdout).expect("json");
    let r3 = rps
        .as_array()
        .expect("array")
        .iter()
        .find(|m| m["release"] == 3)
        .unwrap_or_else(|| panic!("no restore point of release 3: {rps}"));
    assert_eq!(r3["snapshot"]["method"], "reflink", "{r3}");
    assert_eq!(r3["status"], "restored", "{r3}");
    let failed = PathBuf::from(r3["failed_copy"].as_str().expect("failed copy"));
    assert!(
        failed.join("demo.sqlite").exists(),
        "what v3 left is kept: {}",
        failed.display()
    );
}

#[test]
fn a_snapshot_touched_after_it_was_taken_falls_back_to_its_durable_archive() {
    let Some(xfs) = cutover_testkit::fs::Xfs::new(400) else {
        return;
    };
    let s = Stack::new("xfs-durable");
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let device = stack_on_xfs(&s, &xfs, port);
    let stack_file = s.dir.path().join("cutover.yaml");
    let yaml = std::fs::read_to_string(&stack_file).expect("read").replace(
        " }\n    writers: [app]\n",
        ", durable: true }\n    writers: [app]\n",
    );
    std::fs::write(&stack_file, yaml).expect("write");

    s.apply_ok(&[]);
    post_ok(addr, "/items", "first");
    let o = s.apply(&["app.image=cutover-demo:v2"]);
    expect_code(&o, 0, "apply v2");
    assert!(
        stderr(&o).contains("durable copy: archived r2 app_data"),
        "the archive is written after the release: {}",
        stderr(&o)
    );
    let snapshot = PathBuf::from(format!("{}.cutover-rp-r2", device.display()));
    assert!(snapshot.exists());

    // Something writes into release 2's snapshot: it may no longer be trusted...
    std::fs::write(snapshot.join("stray"), "not from the app").expect("tamper");
    let verify = s.run(&["restore-points", "verify"]);
    expect_code(&verify, 2, "restore-points verify names the change");
    assert!(
        stdout(&verify).contains("`stray` was added"),
        "{}",
        text(&verify)
    );

    // ...so a rollback with data restores the archive made from it before it was touched.
    let o = s.run(&["rollback", "--data", "restore", "--yes"]);
    expect_code(&o, 0, "rollback --data restore");
    assert!(
        stderr(&o).contains("cannot be used") && stderr(&o).contains("restored from its archive"),
        "{}",
        text(&o)
    );
    assert_eq!(app_state(addr).0, "1", "release 1's schema");
    assert!(!device.join("stray").exists());
}

/// Runs SQL in the stack's running `db` container as `postgres`; the single value printed.
fn psql(s: &Stack, sql: &str) -> String {
    let db = s
        .containers(false, &["label=io.cutover.service=db"])
        .into_iter()
        .next()
        .expect("a running db container");
    docker_ok(&[
        "exec", &db, "psql", "-U", "postgres", "-d", "app", "-tAc", sql,
    ])
}

#[test]
fn a_postgres_cluster_in_a_volume_is_cloned_after_a_clean_stop_and_put_back_on_revert() {
    // PostgreSQL run as a stack service, its cluster in a volume: the restore point is the
    // whole cluster, taken while the server is stopped (a clean shutdown, so the copy is
    // consistent at rest) by a reflink clone — the alternative to a same-server template copy.
    let Some(xfs) = cutover_testkit::fs::Xfs::new(600) else {
        return;
    };
    let s = Stack::new("pg-cluster");
    let device = xfs.path().join("pgdata");
    let vol = s.volume();
    cutover_testkit::cmd::bind_volume(&vol, &device);
    let name = &s.name;
    std::fs::write(
        s.dir.path().join("cutover.yaml"),
        format!(
            "name: {name}\n\
             vars: {{ mark: \"1\", fail: \"0\" }}\n\
             services:\n  db:\n    image: cutover-synapse-postgres:15\n    \
               env: {{ POSTGRES_PASSWORD: not-a-secret, POSTGRES_DB: app }}\n    \
               command: [\"-c\", \"work_mem=${{mark}}MB\"]\n    \
               volumes: [\"{vol}:/var/lib/postgresql/data\"]\n    stop_grace: 30s\n    \
               health: {{ command: [pg_isready, -U, postgres, -h, 127.0.0.1], interval: 500ms, deadline: 60s }}\n\
             data:\n  cluster:\n    volume: {{ name: {vol} }}\n    writers: [db]\n\
             steps:\n  verify:\n    \
               - exec: {{ service: db, command: [psql, -U, postgres, -d, app, -c, \"insert into t values ('written by the failed release')\"] }}\n      when: upgrade\n    \
               - run: [sh, -c, \"exit ${{fail}}\"]\n      name: the release's own test\n"
        ),
    )
    .expect("stack file");

    s.apply_ok(&[]);
    psql(&s, "create table t (v text); insert into t values ('kept')");
    let o = s.apply(&["vars.mark=2", "vars.fail=1"]);
    expect_code(&o, 1, "a failing release is reverted");
    assert!(
        stderr(&o).contains("by reflink clone"),
        "the cluster was cloned: {}",
        stderr(&o)
    );
    assert_eq!(
        psql(&s, "select string_agg(v, ',') from t"),
        "kept",
        "the cluster is back as it was before the upgrade"
    );
    let failed: Vec<_> = std::fs::read_dir(xfs.path())
        .expect("list")
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("pgdata.cutover-failed-")
        })
        .collect();
    assert_eq!(
        failed.len(),
        1,
        "the failed release's cluster is kept aside"
    );
    assert!(failed[0].path().join("PG_VERSION").exists());

    // The server starts cleanly on the restored cluster and takes writes.
    psql(&s, "insert into t values ('after the revert')");
    s.apply_ok(&["vars.mark=3"]);
    assert_eq!(
        psql(&s, "select string_agg(v, ',' order by v) from t"),
        "after the revert,kept,written by the failed release",
        "a good release after the revert (its verify step wrote the last row)"
    );
}
