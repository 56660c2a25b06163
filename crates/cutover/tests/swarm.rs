//! `runtime: swarm`: the `cutover` binary upgrading a three-replica service on a real
//! three-node swarm (tests/swarm/up: three Docker engines in network namespaces; tests/run
//! starts it as root, CI requires it) — journaled steps, cutover's own revert to the image
//! IDs that ran, and the refusals that come before anything is touched.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use cutover_testkit::cmd::{build_demo_images, code, docker, text};
use serde_json::Value;

const RUN: &str = "/run/cosw";

/// The swarm is one for every test here, and one of them kills a node: they take turns.
static SWARM: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    SWARM.lock().unwrap_or_else(|p| p.into_inner())
}

/// A host port for a test's service, the same on every node: one per stack of this process.
fn next_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    21000
        + (std::process::id() % 8000) as u16
        + NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}
const NODES: [&str; 3] = ["10.77.0.11", "10.77.0.12", "10.77.0.13"];

fn swarm_present() -> bool {
    if Path::new(&format!("{RUN}/1/docker.sock")).exists() {
        return true;
    }
    assert!(
        std::env::var_os("CUTOVER_REQUIRE_SWARM").is_none(),
        "no swarm at {RUN}: run tests/swarm/up (as root)"
    );
    eprintln!("SKIPPED: no swarm at {RUN} (tests/swarm/up makes one; CI requires it)");
    false
}

fn on_node(node: usize, args: &[&str]) -> String {
    let o = Command::new("docker")
        .args(["-H", &format!("unix://{RUN}/{node}/docker.sock")])
        .args(args)
        .output()
        .expect("docker");
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

struct SwarmStack {
    name: String,
    dir: tempfile::TempDir,
    port: u16,
}

impl SwarmStack {
    fn new(tag: &str) -> SwarmStack {
        let name = format!("t-sw-{tag}-{}", std::process::id());
        let port = next_port();
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("cutover.yaml"),
            format!(
                "name: {name}\nruntime: swarm\nservices:\n  app:\n    image: cutover-demo:v1\n    \
                 ports: [\"{port}:8080\"]\n    \
                 health:\n      command: [/cutover-demo, probe, \"http://127.0.0.1:8080/health\"]\n      \
                 interval: 500ms\n      deadline: 30s\n    \
                 swarm: {{ replicas: 3, max_per_node: 1, order: stop-first, parallelism: 1 }}\n"
            ),
        )
        .expect("stack file");
        let s = SwarmStack { name, dir, port };
        s.cleanup();
        s
    }

    fn file(&self) -> PathBuf {
        self.dir.path().join("cutover.yaml")
    }

    /// `cutover ARGS` against the swarm's manager, to run.
    fn command(&self, args: &[&str]) -> Command {
        let mut c = cutover_at(&self.file(), args);
        c.env("DOCKER_HOST", format!("unix://{RUN}/1/docker.sock"));
        c
    }

    fn cutover(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("cutover")
    }

    fn cleanup(&self) {
        on_node(1, &["service", "rm", &format!("{}_app", self.name)]);
    }

    /// What every node answers on `/version`.
    fn versions(&self) -> Vec<String> {
        NODES
            .iter()
            .map(|n| {
                let a: SocketAddr = format!("{n}:{}", self.port).parse().expect("addr");
                cutover_testkit::net::get_now(a, "/version")
            })
            .collect()
    }

    /// The image ID each running replica's container runs, asked of its own node.
    fn replica_images(&self) -> Vec<String> {
        let mut out = Vec::new();
        for node in 1..=3 {
            let ids = on_node(
                node,
                &[
                    "ps",
                    "-q",
                    "--filter",
                    &format!("label=com.docker.swarm.service.name={}_app", self.name),
                ],
            );
            for id in ids.split_whitespace() {
                out.push(on_node(node, &["inspect", "-f", "{{.Image}}", id]));
            }
        }
        out
    }
}

impl Drop for SwarmStack {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// `cutover -f FILE ARGS`, with no input.
fn cutover_at(file: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cutover"));
    c.arg("-f").arg(file).args(args).stdin(Stdio::null());
    c
}

fn expect(o: &Output, want: i32, what: &str) {
    assert_eq!(code(o), want, "{what}:\n{}", text(o));
}

fn image_id(reference: &str) -> String {
    docker(&["image", "inspect", "-f", "{{.Id}}", reference])
        .trim()
        .to_string()
}

#[test]
fn a_three_replica_service_is_upgraded_across_three_nodes_and_a_failed_upgrade_reverted() {
    if !swarm_present() {
        return;
    }
    let _turn = turn();
    build_demo_images();
    let s = SwarmStack::new("up");

    let o = s.cutover(&["apply", "--yes"]);
    expect(&o, 0, "v1");
    assert_eq!(s.versions(), ["v1", "v1", "v1"], "one replica on each node");

    let o = s.cutover(&["apply", "--yes", "--set", "app.image=cutover-demo:v2"]);
    expect(&o, 0, "v2");
    assert_eq!(s.versions(), ["v2", "v2", "v2"]);
    let v2 = image_id("cutover-demo:v2");
    assert_eq!(s.replica_images(), [v2.clone(), v2.clone(), v2.clone()]);

    // v3-broken never turns healthy: cutover reverts, not Swarm, to v2's image ID.
    let o = s.cutover(&[
        "apply",
        "--yes",
        "--set",
        "app.image=cutover-demo:v3-broken",
    ]);
    expect(&o, 1, "v3-broken is reverted");
    let said = text(&o);
    assert!(said.contains("reverted"), "{said}");
    assert_eq!(
        s.replica_images(),
        [v2.clone(), v2.clone(), v2.clone()],
        "every replica back on v2's image ID"
    );
    assert_eq!(s.versions(), ["v2", "v2", "v2"]);

    let h = s.cutover(&["history", "-o", "json"]);
    expect(&h, 0, "history");
    let releases: Value = serde_json::from_slice(&h.stdout).expect("json");
    let statuses: Vec<&str> = releases["releases"]
        .as_array()
        .expect("releases")
        .iter()
        .map(|r| r["status"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        statuses,
        ["reverted", "deployed", "superseded"],
        "{releases}"
    );

    // The journal of the revert: the service put back whole, compared by service.
    let j = s.cutover(&["history", "--operation", "3", "-o", "json"]);
    let journal = String::from_utf8_lossy(&j.stdout).to_string();
    assert!(journal.contains("again:"), "{journal}");
    assert!(
        journal.contains("3 replica(s) run the same image IDs as before the operation"),
        "{journal}"
    );

    // status lists the replicas.
    let st = s.cutover(&["status", "-o", "json"]);
    let v: Value = serde_json::from_slice(&st.stdout).expect("status");
    let replicas = v["services"][0]["containers"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(0);
    assert_eq!(replicas, 3, "{v}");
}

#[test]
fn a_swarm_stack_on_an_engine_that_manages_no_swarm_is_refused_before_anything() {
    build_demo_images();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("cutover.yaml");
    std::fs::write(
        &file,
        "name: t-sw-none\nruntime: swarm\nservices:\n  app:\n    image: cutover-demo:v1\n",
    )
    .expect("stack file");
    // This machine's own engine is in no swarm.
    let o = cutover_at(&file, &["apply", "--yes"])
        .env_remove("DOCKER_HOST")
        .output()
        .expect("cutover");
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(text(&o).contains("is in no swarm"), "{}", text(&o));
    // Nothing was recorded: no release, no operation.
    let h = cutover_at(&file, &["history", "-o", "json"])
        .output()
        .expect("history");
    let v: Value = serde_json::from_slice(&h.stdout).unwrap_or(Value::Null);
    assert_eq!(
        v["releases"],
        serde_json::json!([]),
        "nothing recorded: {v}"
    );

    // `swarm:` on a stack of one engine, and what a swarm cannot do yet, are mistakes with
    // their places.
    std::fs::write(
        &file,
        "name: t-sw-bad\nservices:\n  app:\n    image: cutover-demo:v1\n    swarm: { replicas: 2 }\n",
    )
    .expect("stack file");
    let o = cutover_at(&file, &["validate"]).output().expect("validate");
    assert_eq!(code(&o), 2);
    assert!(
        text(&o).contains("cutover.yaml:5") && text(&o).contains("runtime: swarm"),
        "{}",
        text(&o)
    );
    std::fs::write(
        &file,
        "name: t-sw-bad\nruntime: swarm\nservices:\n  app:\n    image: cutover-demo:v1\n    \
         port: 8080\n    health: { http: /health }\n    volumes: [\"data:/data\"]\n",
    )
    .expect("stack file");
    let o = cutover_at(&file, &["validate"]).output().expect("validate");
    assert_eq!(code(&o), 2);
    let said = text(&o);
    assert!(
        said.contains("it must be a command") && said.contains("not supported yet"),
        "{said}"
    );
}

/// Node 3's engine, killed (SIGKILL) and later started again by tests/swarm/up.
fn kill_node_3() {
    let pid = std::fs::read_to_string(format!("{RUN}/3/pid")).expect("node 3's pid file");
    let o = Command::new("kill")
        .args(["-9", pid.trim()])
        .output()
        .expect("kill");
    assert!(o.status.success(), "kill node 3: {}", text(&o));
}

fn node_3_back() {
    let up = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/swarm/up");
    let o = Command::new(up).output().expect("tests/swarm/up");
    assert!(o.status.success(), "node 3 back: {}", text(&o));
}

#[test]
fn a_node_killed_mid_upgrade_fails_the_operation_cleanly_and_resume_finishes_the_revert() {
    if !swarm_present() {
        return;
    }
    let _turn = turn();
    build_demo_images();
    let s = SwarmStack::new("kill");
    // A delay between replicas keeps the rollout going long enough to lose a node in it.
    let yaml = std::fs::read_to_string(s.file()).expect("read");
    std::fs::write(
        s.file(),
        yaml.replace("deadline: 30s", "deadline: 5s")
            .replace("parallelism: 1 }", "parallelism: 1, delay: 3s }"),
    )
    .expect("write");
    expect(&s.cutover(&["apply", "--yes"]), 0, "v1");
    let v1 = image_id("cutover-demo:v1");

    let upgrade = s
        .command(&["apply", "--yes", "--set", "app.image=cutover-demo:v2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("apply v2");
    // In its preflight: the swarm still counts node 3's replica as running, so the rollout
    // starts, and reaches a node whose engine does not answer.
    std::thread::sleep(std::time::Duration::from_millis(500));
    kill_node_3();
    struct Back;
    impl Drop for Back {
        fn drop(&mut self) {
            node_3_back();
        }
    }
    let back = Back;
    let out = upgrade.wait_with_output().expect("apply ends");
    let said = text(&out);
    // Three replicas, at most one per node, cannot run on two nodes: neither v2 nor the
    // revert to v1 converges while the node is gone. The operation fails, it does not hang.
    assert!(
        matches!(code(&out), 1 | 3),
        "the upgrade fails (reverted, or its revert failed too): {said}"
    );
    eprintln!("the upgrade ended with exit {}:\n{said}", code(&out));
    drop(back);
    if code(&out) == 3 {
        // With the node back, `resume` runs the revert again.
        let r = s.cutover(&["resume", "--yes"]);
        eprintln!("resume:\n{}", text(&r));
        assert_eq!(code(&r), 1, "resume finishes the revert: {}", text(&r));
    }
    assert_eq!(
        s.replica_images(),
        [v1.clone(), v1.clone(), v1.clone()],
        "every replica runs v1's image ID again"
    );
    assert_eq!(s.versions(), ["v1", "v1", "v1"]);
    let h = s.cutover(&["history", "-o", "json"]);
    let v: Value = serde_json::from_slice(&h.stdout).expect("history");
    assert_eq!(v["releases"][0]["status"], "reverted", "{v}");
    assert_eq!(v["releases"][1]["status"], "deployed", "{v}");
}
