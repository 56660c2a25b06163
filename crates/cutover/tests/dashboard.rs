//! `cutover dashboard` as its users meet it: the real binary serving real stacks on the
//! real Docker Engine (the cutover-demo images), its API driven over HTTP, and its pages
//! driven in a real headless Chromium through chromedriver (Debian's `chromium` and
//! `chromium-driver`, which tests/run installs).
//!
//! Screenshots of the main pages are written to docs/screenshots/ when
//! CUTOVER_UPDATE_SCREENSHOTS=1.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cutover_testkit::cmd::{build_demo_images, docker};
use cutover_testkit::net::free_port;
use serde_json::{Value, json};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_cutover")
}

/// A demo stack of its own: name, stack file, host port and volume.
struct Stack {
    name: String,
    file: PathBuf,
    port: u16,
}

impl Stack {
    fn new(dir: &Path, tag: &str, protected: bool) -> Stack {
        let name = format!("t-dash-{tag}-{}", std::process::id());
        let port = free_port();
        let sub = dir.join(&name);
        std::fs::create_dir_all(&sub).expect("stack dir");
        let file = sub.join("cutover.yaml");
        std::fs::write(
            &file,
            format!(
                "name: {name}\nprotected: {protected}\n\
                 services:\n  app:\n    image: cutover-demo:v1\n    port: 8080\n    \
                 ports: [\"127.0.0.1:{port}:8080\"]\n    volumes: [\"{name}-data:/data\"]\n    \
                 strategy: recreate\n    stop_grace: 5s\n    \
                 health:\n      http: /health\n      interval: 200ms\n      deadline: 20s\n\
                 data:\n  app_data:\n    volume: {{ name: {name}-data }}\n    writers: [app]\n"
            ),
        )
        .expect("stack file");
        let s = Stack { name, file, port };
        s.cleanup();
        s
    }

    fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(bin())
            .arg("-f")
            .arg(&self.file)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run cutover")
    }

    fn cleanup(&self) {
        let _ = self.cli(&["down", "--volumes", "--yes"]);
        let ids = docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=io.cutover.stack={}", self.name),
        ]);
        for id in ids.split_whitespace() {
            docker(&["rm", "-f", id]);
        }
        docker(&["volume", "rm", "-f", &format!("{}-data", self.name)]);
        docker(&["network", "rm", &format!("cutover-{}", self.name)]);
    }

    /// What the app answers on `/version`.
    fn version(&self) -> String {
        cutover_testkit::net::get_now(SocketAddr::from(([127, 0, 0, 1], self.port)), "/version")
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// A dashboard serving some stacks, with users alice (operator), bob (approver) and vera
/// (viewer); killed when dropped.
struct Dashboard {
    _dir: tempfile::TempDir,
    home: PathBuf,
    addr: SocketAddr,
    child: Child,
    log: PathBuf,
}

const USERS: [(&str, &str, &str); 3] = [
    ("alice", "operator", "alice-pw-1"),
    ("bob", "approver", "bob-pw-1"),
    ("vera", "viewer", "vera-pw-1"),
];

impl Dashboard {
    fn start(dir: tempfile::TempDir, stacks: &[&Stack]) -> Dashboard {
        let home = dir.path().join("home");
        for (name, role, pw) in USERS {
            let mut c = Command::new(bin())
                .args(["user", "add", name, "--role", role, "--home"])
                .arg(&home)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .expect("user add");
            writeln!(c.stdin.take().expect("stdin"), "{pw}").expect("password");
            assert!(c.wait().expect("wait").success(), "user add {name}");
        }
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = dir.path().join("dashboard.log");
        let mut cmd = Command::new(bin());
        cmd.arg("dashboard")
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--home")
            .arg(&home);
        for s in stacks {
            cmd.arg("--stack").arg(&s.file);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("start the dashboard");
        let start = Instant::now();
        while TcpStream::connect(addr).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the dashboard did not listen: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Dashboard {
            _dir: dir,
            home,
            addr,
            child,
            log,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn token(&self, name: &str, role: &str) -> String {
        let o = Command::new(bin())
            .args(["token", "create", name, "--role", role, "--home"])
            .arg(&self.home)
            .output()
            .expect("token create");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "dashboard log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .cookie_store(true)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

/// A client signed in as `name` (a session cookie), and its CSRF token.
fn signed_in(d: &Dashboard, name: &str) -> (reqwest::blocking::Client, String) {
    let c = client();
    let pw = USERS.iter().find(|u| u.0 == name).expect("a user").2;
    let r = c
        .post(d.url("/login"))
        .form(&[("name", name), ("password", pw), ("next", "/")])
        .send()
        .expect("login");
    assert_eq!(r.status(), 200, "signed in and sent to the overview");
    let me: Value = c
        .get(d.url("/api/v1/me"))
        .send()
        .expect("me")
        .json()
        .expect("json");
    assert_eq!(me["name"], name);
    let csrf = me["csrf_token"].as_str().expect("csrf").to_string();
    (c, csrf)
}

fn json_of(r: reqwest::blocking::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

/// The operation once it has ended (its JSON), within a minute.
fn finished(
    c: &reqwest::blocking::Client,
    auth: Option<&str>,
    d: &Dashboard,
    stack: &str,
    op: u64,
) -> Value {
    let start = Instant::now();
    loop {
        let mut req = c.get(d.url(&format!("/api/v1/stacks/{stack}/operations/{op}")));
        if let Some(t) = auth {
            req = req.bearer_auth(t);
        }
        let (status, v) = json_of(req.send().expect("operation"));
        assert_eq!(status, 200, "{v}");
        if v["status"] != "running" {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "operation {op} still runs: {v}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_api_wants_credentials_checks_roles_and_csrf_and_audits_every_action() {
    build_demo_images();
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Stack::new(dir.path(), "api", false);
    let d = Dashboard::start(dir, &[&s]);
    let stack = s.name.as_str();
    let apply = format!("/api/v1/stacks/{stack}/apply");

    // No credentials, or wrong ones: 401 with the error body.
    let anon = client();
    let (status, body) = json_of(anon.get(d.url("/api/v1/stacks")).send().expect("get"));
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["status"], 401);
    let (status, _) = json_of(
        anon.get(d.url("/api/v1/stacks"))
            .bearer_auth("cutover_forged")
            .send()
            .expect("get"),
    );
    assert_eq!(status, 401);
    // The OpenAPI description is public.
    let (status, spec) = json_of(anon.get(d.url("/api/v1/openapi.json")).send().expect("get"));
    assert_eq!(status, 200);
    assert!(spec["paths"]["/stacks/{stack}/apply"]["post"].is_object());

    // A viewer's token reads, and may not apply.
    let viewer = d.token("dash-ro", "viewer");
    let (status, list) = json_of(
        anon.get(d.url("/api/v1/stacks"))
            .bearer_auth(&viewer)
            .send()
            .expect("get"),
    );
    assert_eq!(status, 200);
    assert_eq!(list[0]["name"], stack);
    let (status, body) = json_of(
        anon.post(d.url(&apply))
            .bearer_auth(&viewer)
            .json(&json!({}))
            .send()
            .expect("post"),
    );
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("token:dash-ro is a viewer"),
        "{body}"
    );

    // A signed-in operator without the CSRF token is refused, and nothing runs.
    let (alice, csrf) = signed_in(&d, "alice");
    let (status, body) = json_of(
        alice
            .post(d.url(&apply))
            .json(&json!({}))
            .send()
            .expect("post"),
    );
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("CSRF"),
        "{body}"
    );
    let (status, body) = json_of(
        alice
            .post(d.url(&apply))
            .header("x-csrf-token", "0123456789abcdef0123456789abcdef")
            .json(&json!({}))
            .send()
            .expect("post"),
    );
    assert_eq!(status, 403, "a made-up token: {body}");
    let (_, ops) = json_of(
        alice
            .get(d.url(&format!("/api/v1/stacks/{stack}/operations")))
            .send()
            .expect("ops"),
    );
    assert_eq!(ops, json!([]), "nothing ran");

    // With its CSRF token the session applies v1: the operation records alice as its starter.
    let (status, started) = json_of(
        alice
            .post(d.url(&apply))
            .header("x-csrf-token", &csrf)
            .json(&json!({}))
            .send()
            .expect("post"),
    );
    assert_eq!(status, 202, "{started}");
    let op1 = started["operation"].as_u64().expect("operation id");
    let v = finished(&alice, None, &d, stack, op1);
    assert_eq!(v["status"], "succeeded", "{v}");
    assert_eq!(v["started_by"]["user"], "alice");
    assert_eq!(s.version(), "v1");

    // An operator's token applies v2 without any CSRF token (no ambient credential).
    let op_token = d.token("dash-ci", "operator");
    let (status, started) = json_of(
        anon.post(d.url(&apply))
            .bearer_auth(&op_token)
            .json(&json!({"set": ["app.image=cutover-demo:v2"]}))
            .send()
            .expect("post"),
    );
    assert_eq!(status, 202, "{started}");
    let op2 = started["operation"].as_u64().expect("operation id");
    let v = finished(&anon, Some(&op_token), &d, stack, op2);
    assert_eq!(v["status"], "succeeded", "{v}");
    assert_eq!(v["started_by"]["user"], "token:dash-ci");
    assert_eq!(s.version(), "v2");
    // A bad --set is refused before anything runs, with cutover's own message.
    let (status, body) = json_of(
        anon.post(d.url(&apply))
            .bearer_auth(&op_token)
            .json(&json!({"set": ["app.imag=cutover-demo:v1"]}))
            .send()
            .expect("post"),
    );
    assert_eq!(status, 422, "{body}");

    // Five wrong passwords, then sign-ins are refused for a while (429), even the right one.
    let guess = client();
    for _ in 0..5 {
        let r = guess
            .post(d.url("/login"))
            .form(&[("name", "bob"), ("password", "guess")])
            .send()
            .expect("login");
        assert_eq!(r.status(), 401);
    }
    let r = guess
        .post(d.url("/login"))
        .form(&[("name", "bob"), ("password", "bob-pw-1")])
        .send()
        .expect("login");
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_some());

    // The audit log has each action, who, from where and how it ended.
    let (status, log) = json_of(
        anon.get(d.url("/api/v1/audit"))
            .bearer_auth(&viewer)
            .send()
            .expect("audit"),
    );
    assert_eq!(status, 200);
    let entries = log.as_array().expect("entries");
    let has = |actor: &str, action: &str, outcome: &str| {
        entries.iter().any(|e| {
            e["actor"] == actor
                && e["action"] == action
                && e["outcome"].as_str().unwrap_or("").contains(outcome)
                && e["remote"] == "127.0.0.1"
        })
    };
    assert!(has("token:dash-ro", "apply", "denied"), "{log:#}");
    assert!(has("alice", "login", "ok"), "{log:#}");
    assert!(
        has(
            "alice",
            "apply",
            &format!("operation {op1}: succeeded (exit 0)")
        ),
        "{log:#}"
    );
    assert!(
        has(
            "token:dash-ci",
            "apply",
            &format!("operation {op2}: succeeded (exit 0)")
        ),
        "{log:#}"
    );
    assert!(has("token:dash-ci", "apply", "refused (exit 2)"), "{log:#}");
    assert!(
        has("bob", "login", "refused: wrong name or password"),
        "{log:#}"
    );
    assert!(has("bob", "login", "too many failed attempts"), "{log:#}");
    // Secrets never: no password, token or session id in the log.
    let text = log.to_string();
    for secret in [
        "alice-pw-1",
        "bob-pw-1",
        "guess",
        op_token.as_str(),
        viewer.as_str(),
    ] {
        assert!(!text.contains(secret), "the audit log shows {secret}");
    }
}

/// The events a `-o json` run printed, or an SSE stream sent: (event, step, status).
fn event_keys(events: &[Value]) -> Vec<(String, String, String)> {
    events
        .iter()
        .filter(|e| e["event"] == "step_started" || e["event"] == "step_finished")
        .map(|e| {
            (
                e["event"].as_str().unwrap_or("").to_string(),
                e["step"].as_str().unwrap_or("").to_string(),
                e["status"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn an_operation_started_at_the_terminal_streams_over_sse_with_the_clis_own_events() {
    build_demo_images();
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Stack::new(dir.path(), "sse", false);
    // A soak in verify keeps the operation running long enough to join it half-way.
    let mut yaml = std::fs::read_to_string(&s.file).expect("read");
    yaml.push_str(
        "steps:\n  verify:\n    - run: [sleep, \"2\"]\n      name: soak\n      rerun_safe: true\n",
    );
    std::fs::write(&s.file, yaml).expect("write");
    let d = Dashboard::start(dir, &[&s]);
    let token = d.token("dash-sse", "viewer");
    let c = client();

    let cli = Command::new(bin())
        .arg("-f")
        .arg(&s.file)
        .args(["apply", "--yes", "-o", "json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("apply");
    // The operation appears in the API while it runs.
    let start = Instant::now();
    let op = loop {
        let (_, ops) = json_of(
            c.get(d.url(&format!("/api/v1/stacks/{}/operations", s.name)))
                .bearer_auth(&token)
                .send()
                .expect("ops"),
        );
        if let Some(id) = ops[0]["id"].as_u64() {
            break id;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no operation appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let r = c
        .get(d.url(&format!("/api/v1/stacks/{}/operations/{op}/events", s.name)))
        .bearer_auth(&token)
        .send()
        .expect("events");
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .starts_with("text/event-stream")
    );
    let mut streamed = Vec::new();
    for line in BufReader::new(r).lines() {
        let line = line.expect("a line of the stream");
        if let Some(data) = line.strip_prefix("data: ") {
            let v: Value = serde_json::from_str(data).expect("each event is JSON");
            let end = v["event"] == "finished";
            streamed.push(v);
            if end {
                break;
            }
        }
    }
    let out = cli.wait_with_output().expect("apply ends");
    assert!(out.status.success());
    let printed: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    // Every step event the terminal printed came over the stream, in the same order and
    // shape, and the stream ended with the operation.
    assert!(!event_keys(&printed).is_empty());
    assert_eq!(event_keys(&streamed), event_keys(&printed));
    // And it ended as the terminal's did.
    let last = streamed.last().expect("events");
    assert_eq!(last, printed.last().expect("printed"));
    assert_eq!(last["operation"], op);
    for (a, b) in streamed.iter().zip(printed.iter()) {
        let keys = |v: &Value| v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>());
        assert_eq!(keys(a), keys(b), "the same shape: {a} vs {b}");
    }
    // Joined half-way, the stream still began with the first step.
    assert_eq!(streamed[0]["event"], "step_started");
    assert!(
        streamed[0]["step"]
            .as_str()
            .unwrap_or("")
            .starts_with("preflight")
    );
}
