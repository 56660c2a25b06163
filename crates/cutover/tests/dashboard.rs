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
        // An operation a failed test left waiting (for an approval) is stopped first: its
        // process is in its own group and would otherwise wait out its hour.
        let _ = self.cli(&["abort", "--yes"]);
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

/// A dashboard serving some stacks, with users alice (operator), bob (approver), vera
/// (viewer) and ada (admin: operates and approves); killed when dropped.
struct Dashboard {
    _dir: tempfile::TempDir,
    home: PathBuf,
    addr: SocketAddr,
    child: Child,
    log: PathBuf,
}

const USERS: [(&str, &str, &str); 4] = [
    ("alice", "operator", "alice-pw-1"),
    ("bob", "approver", "bob-pw-1"),
    ("vera", "viewer", "vera-pw-1"),
    ("ada", "admin", "ada-pw-1"),
];

impl Dashboard {
    fn start(dir: tempfile::TempDir, stacks: &[&Stack]) -> Dashboard {
        Dashboard::start_with(dir, stacks, &[])
    }

    fn start_with(dir: tempfile::TempDir, stacks: &[&Stack], extra: &[&str]) -> Dashboard {
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
        cmd.args(extra);
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

#[test]
fn over_tls_the_session_cookie_is_secure_and_plain_http_gets_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Stack::new(dir.path(), "tls", false);
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).expect("cert");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("key");
    let (cert_arg, key_arg) = (cert.display().to_string(), key.display().to_string());
    let d = Dashboard::start_with(
        dir,
        &[&s],
        &["--tls-cert", &cert_arg, "--tls-key", &key_arg],
    );
    let https = reqwest::blocking::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).expect("root"),
        )
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let url = format!("https://localhost:{}", d.addr.port());
    let r = https
        .post(format!("{url}/login"))
        .form(&[("name", "alice"), ("password", "alice-pw-1")])
        .send()
        .expect("login over TLS");
    assert_eq!(r.status(), 303);
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .to_string();
    for attr in ["HttpOnly", "SameSite=Strict", "Secure"] {
        assert!(cookie.contains(attr), "{attr} in {cookie}");
    }
    let (status, _) = json_of(
        https
            .get(format!("{url}/api/v1/stacks"))
            .send()
            .expect("get"),
    );
    assert_eq!(status, 401, "TLS is no credential");
    assert!(
        client().get(d.url("/api/v1/stacks")).send().is_err(),
        "plain HTTP on the TLS port gets no answer"
    );
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

// ---------------------------------------------------------------------------------------
// In a real browser.

/// chromedriver on a free port, stopped when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Driver {
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver; tests/run installs it)");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let start = Instant::now();
        while TcpStream::connect(addr).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "chromedriver did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Driver {
            child,
            url: format!("http://{addr}"),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type Browser = fantoccini::Client;

async fn browser(d: &Driver) -> Browser {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,1000"]
        }),
    );
    fantoccini::ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&d.url)
        .await
        .expect("a Chromium session")
}

fn css(s: &str) -> fantoccini::Locator<'_> {
    fantoccini::Locator::Css(s)
}

async fn text_of(b: &Browser, sel: &str) -> Option<String> {
    match b.find(css(sel)).await {
        Ok(e) => e.text().await.ok(),
        Err(_) => None,
    }
}

/// Waits until `sel` is on the page and its text contains `want` (pages reload as
/// operations end).
async fn wait_text(b: &Browser, sel: &str, want: &str) -> String {
    let start = Instant::now();
    loop {
        let t = text_of(b, sel).await;
        if let Some(t) = t.as_ref().filter(|t| t.contains(want)) {
            return t.clone();
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "`{sel}` never said {want:?}; it says {t:?} on {}",
            b.current_url()
                .await
                .map(|u| u.to_string())
                .unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn sign_in(b: &Browser, dash: &Dashboard, name: &str) {
    let pw = USERS.iter().find(|u| u.0 == name).expect("user").2;
    b.goto(&dash.url("/login")).await.expect("login page");
    b.find(css("input[name=name]"))
        .await
        .expect("name")
        .send_keys(name)
        .await
        .expect("type");
    b.find(css("input[name=password]"))
        .await
        .expect("pw")
        .send_keys(pw)
        .await
        .expect("type");
    b.find(css("#login"))
        .await
        .expect("button")
        .click()
        .await
        .expect("click");
    wait_text(b, "header .who", name).await;
}

async fn shot(b: &Browser, name: &str) {
    let png = b.screenshot().await.expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    if std::env::var_os("CUTOVER_UPDATE_SCREENSHOTS").is_some() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/screenshots");
        std::fs::create_dir_all(&dir).expect("docs/screenshots");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("write the screenshot");
    }
}

/// From a stack's page: the image of `app`, preview, then apply; lands on the operation.
async fn propose_and_apply(
    b: &Browser,
    dash: &Dashboard,
    stack: &str,
    image: &str,
    screenshot: Option<&str>,
) {
    b.goto(&dash.url(&format!("/stacks/{stack}")))
        .await
        .expect("stack page");
    let field = b
        .find(css("input[name='image.app']"))
        .await
        .expect("the image field");
    field.clear().await.expect("clear");
    field.send_keys(image).await.expect("type");
    b.find(css("#preview"))
        .await
        .expect("preview")
        .click()
        .await
        .expect("click");
    let plan = wait_text(b, "#plan", "").await;
    assert!(
        plan.contains(image) || image == "cutover-demo:v1",
        "the plan names {image}: {plan}"
    );
    if let Some(name) = screenshot {
        shot(b, name).await;
    }
    b.find(css("#apply"))
        .await
        .expect("apply")
        .click()
        .await
        .expect("click");
    wait_text(b, "#op-status", "").await;
}

#[test]
fn in_a_browser_an_operator_upgrades_sees_the_revert_an_approver_approves_and_a_rollback_runs() {
    build_demo_images();
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Stack::new(dir.path(), "web", false);
    let p = Stack::new(dir.path(), "prot", true);
    let dash = Dashboard::start(dir, &[&s, &p]);
    let driver = Driver::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let alice = browser(&driver).await;
        sign_in(&alice, &dash, "alice").await;

        // v1, then v2: the steps appear while the operation runs, before the page reloads.
        propose_and_apply(&alice, &dash, &s.name, "cutover-demo:v1", None).await;
        wait_text(&alice, "#op-status", "succeeded").await;
        propose_and_apply(&alice, &dash, &s.name, "cutover-demo:v2", Some("plan")).await;
        let mut seen = Vec::new();
        loop {
            let status = text_of(&alice, "#op-status").await.unwrap_or_default();
            let rows = alice
                .find_all(css("#steps tr"))
                .await
                .map(|r| r.len())
                .unwrap_or(0);
            seen.push((status.clone(), rows));
            if status == "succeeded" {
                break;
            }
            assert!(seen.len() < 2000, "the upgrade did not end: {seen:?}");
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        let first_running = seen.iter().find(|(st, _)| st == "running").map(|x| x.1);
        assert!(
            seen.iter()
                .any(|(st, n)| st == "running" && Some(*n) > first_running),
            "rows were added while the operation ran (live), not only on reload: {seen:?}"
        );
        assert_eq!(s.version(), "v2");
        let timeline = alice
            .find(css("#timeline svg"))
            .await
            .expect("the timeline");
        assert!(
            timeline
                .html(false)
                .await
                .unwrap_or_default()
                .contains("app stopped or held")
        );
        shot(&alice, "operation").await;

        // v3-broken: migrates, never turns healthy, and is reverted — seen on the page.
        propose_and_apply(&alice, &dash, &s.name, "cutover-demo:v3-broken", None).await;
        wait_text(&alice, "#op-status", "reverted").await;
        let failed = wait_text(&alice, "#failed", "Failed at").await;
        assert!(
            failed.contains("upgrade") || failed.contains("verify"),
            "{failed}"
        );
        let reverted_rows = alice.find_all(css("#steps tr.step")).await.expect("rows");
        let mut phases = Vec::new();
        for r in &reverted_rows {
            phases.push(r.text().await.unwrap_or_default());
        }
        assert!(
            phases.iter().any(|t| t.starts_with("revert")),
            "revert steps shown: {phases:?}"
        );
        assert_eq!(s.version(), "v2", "v2 runs again");
        shot(&alice, "reverted").await;

        // A protected stack waits for a second person. Ada (admin: she may approve) starts
        // it, and may not approve her own apply; alice, an operator, is not offered it.
        let ada = browser(&driver).await;
        sign_in(&ada, &dash, "ada").await;
        propose_and_apply(&ada, &dash, &p.name, "cutover-demo:v1", None).await;
        wait_text(&ada, "#approval", "Waiting for approval").await;
        let op_url = ada.current_url().await.expect("url").to_string();
        shot(&ada, "approval").await;
        alice.goto(&op_url).await.expect("the operation");
        let offered = wait_text(&alice, "#approval", "Waiting for approval").await;
        assert!(
            offered.contains("An approver or admin decides"),
            "{offered}"
        );
        ada.find(css("#approve"))
            .await
            .expect("approve")
            .click()
            .await
            .expect("click");
        let refused = wait_text(&ada, "#error", "different person").await;
        assert!(refused.contains("ada started operation"), "{refused}");
        ada.close().await.expect("close");

        let bob = browser(&driver).await;
        sign_in(&bob, &dash, "bob").await;
        bob.goto(&op_url).await.expect("the operation");
        wait_text(&bob, "#approval", "Waiting for approval").await;
        bob.find(css("#approval input[name=comment]"))
            .await
            .expect("comment")
            .send_keys("checked the release notes")
            .await
            .expect("type");
        bob.find(css("#approve"))
            .await
            .expect("approve")
            .click()
            .await
            .expect("click");
        wait_text(&bob, "#op-status", "succeeded").await;
        let page = bob.source().await.expect("source");
        assert!(
            page.contains("Approved by bob (dashboard)")
                && page.contains("checked the release notes"),
            "the decision is shown"
        );
        assert_eq!(p.version(), "v1");
        bob.close().await.expect("close");

        // Rollback from the history page: release 1 (v1), as a new release.
        alice
            .goto(&dash.url(&format!("/stacks/{}/history", s.name)))
            .await
            .expect("history");
        shot(&alice, "history").await;
        alice
            .find(css("#release-1 button.rollback"))
            .await
            .expect("the rollback button of release 1")
            .click()
            .await
            .expect("click");
        wait_text(&alice, "#op-status", "succeeded").await;
        assert_eq!(s.version(), "v1");

        alice.goto(&dash.url("/")).await.expect("overview");
        wait_text(&alice, "#stacks", &p.name).await;
        shot(&alice, "overview").await;
        alice
            .goto(&dash.url(&format!("/stacks/{}", s.name)))
            .await
            .expect("stack");
        wait_text(&alice, "#services", "cutover-demo:v1").await;
        shot(&alice, "stack").await;
        alice.goto(&dash.url("/audit")).await.expect("audit");
        let audit = wait_text(&alice, "#audit", "rollback").await;
        assert!(
            audit.contains("approve") && audit.contains("different person"),
            "{audit}"
        );
        shot(&alice, "audit").await;
        alice.close().await.expect("close");
    });
}
