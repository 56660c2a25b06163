//! `cutover watch --git` against real parts: a bare git repository and a clone made with
//! git, the demo images on the real engine. Each commit is what an operator pushes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cutover_testkit::cmd::{code, demo_images, docker, require_test_hooks, stderr, stdout, text};
use cutover_testkit::net::{free_port, get_now, post_ok};
use serde_json::Value;

/// Runs git in `dir`, which must succeed; its output, trimmed.
fn git(dir: &Path, args: &[&str]) -> String {
    let o = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Ana Operator")
        .env("GIT_AUTHOR_EMAIL", "ana@example.org")
        .env("GIT_COMMITTER_NAME", "Ana Operator")
        .env("GIT_COMMITTER_EMAIL", "ana@example.org")
        .output()
        .expect("git runs");
    assert!(o.status.success(), "git {}: {}", args.join(" "), text(&o));
    stdout(&o).trim().to_string()
}

/// A local HTTP receiver for the webhooks: it keeps every POST (path, body) and answers 204.
struct Receiver {
    port: u16,
    got: std::sync::Arc<std::sync::Mutex<Vec<(String, Value)>>>,
}

impl Receiver {
    fn start() -> Receiver {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let keep = got.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut reader = BufReader::new(conn.try_clone().expect("clone"));
                let mut line = String::new();
                let _ = reader.read_line(&mut line);
                let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                let mut length = 0;
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                        break;
                    }
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                if let Ok(v) = serde_json::from_slice(&body) {
                    keep.lock().expect("lock").push((path, v));
                }
                let _ = conn.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
            }
        });
        Receiver { port, got }
    }

    /// The JSON bodies posted to `path`, in order.
    fn bodies(&self, path: &str) -> Vec<Value> {
        self.got
            .lock()
            .expect("lock")
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

struct Repo {
    receiver: Receiver,
    _tmp: tempfile::TempDir,
    bare: PathBuf,
    work: PathBuf,
    state: PathBuf,
    name: String,
    port: u16,
}

impl Repo {
    fn new(tag: &str) -> Repo {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (bare, work, state) = (
            tmp.path().join("stack.git"),
            tmp.path().join("work"),
            tmp.path().join("state"),
        );
        git(
            tmp.path(),
            &["init", "-q", "--bare", "-b", "main", "stack.git"],
        );
        git(tmp.path(), &["clone", "-q", "stack.git", "work"]);
        Repo {
            receiver: Receiver::start(),
            _tmp: tmp,
            bare,
            work,
            state,
            name: format!("t-{tag}-{}", std::process::id()),
            port: free_port(),
        }
    }

    /// Commits the demo stack on `image` with `subject`, and pushes it.
    fn commit(&self, image: &str, subject: &str) -> String {
        self.commit_with(image, subject, "")
    }

    /// The same, with more of the `watch:` section (`, windows: [...]`).
    fn commit_with(&self, image: &str, subject: &str, watch_more: &str) -> String {
        let (name, port) = (&self.name, self.port);
        let yaml = format!(
            "name: {name}\n\
             services:\n  app:\n    image: {image}\n    port: 8080\n    \
               ports: [\"127.0.0.1:{port}:8080\"]\n    volumes: [\"{name}-data:/data\"]\n    \
               stop_grace: 5s\n    health: {{ http: /health, interval: 500ms, deadline: 20s }}\n\
             data:\n  app_data:\n    volume: {{ name: {name}-data }}\n    writers: [app]\n\
             watch: {{ git_revert: true, webhooks: [{{ url: \"http://127.0.0.1:{hook}/hooks/demo\" }}, \
               {{ url: \"http://127.0.0.1:{hook}/slack\", format: slack }}]{watch_more} }}\n",
            hook = self.receiver.port
        );
        // What the watch pushed (a revert) comes first.
        if !git(&self.work, &["ls-remote", "--heads", "origin", "main"]).is_empty() {
            git(&self.work, &["pull", "-q", "--rebase", "origin", "main"]);
        }
        std::fs::write(self.work.join("cutover.yaml"), yaml).expect("stack file");
        git(&self.work, &["add", "cutover.yaml"]);
        git(&self.work, &["commit", "-q", "-m", subject]);
        git(&self.work, &["push", "-q", "origin", "HEAD:main"]);
        git(&self.work, &["rev-parse", "HEAD"])
    }

    fn cutover(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_cutover"))
            .arg("--state-dir")
            .arg(&self.state)
            .args(args)
            .output()
            .expect("cutover runs")
    }

    fn watch_once(&self) -> Output {
        self.watch_once_at(None)
    }

    /// One pass with the watch's clock set (the `test-hooks` feature).
    fn watch_once_at(&self, now: Option<&str>) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cutover"));
        cmd.arg("--state-dir").arg(&self.state).args([
            "watch",
            "--git",
            &self.bare.display().to_string(),
            "--once",
        ]);
        if let Some(now) = now {
            cmd.env("CUTOVER_TEST_NOW", now);
        }
        cmd.output().expect("cutover runs")
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The newest release in `history -o json`.
    fn newest_release(&self) -> Value {
        let file = self.state.join("watch/repo/cutover.yaml");
        let o = self.cutover(&["-f", &file.display().to_string(), "-o", "json", "history"]);
        assert_eq!(code(&o), 0, "history: {}", text(&o));
        let v: Value = serde_json::from_slice(&o.stdout).expect("json");
        v["releases"][0].clone()
    }
}

impl Drop for Repo {
    fn drop(&mut self) {
        let file = self.state.join("watch/repo/cutover.yaml");
        let _ = self.cutover(&[
            "-f",
            &file.display().to_string(),
            "down",
            "--yes",
            "--volumes",
        ]);
        let _ = docker(&["volume", "rm", "-f", &format!("{}-data", self.name)]);
    }
}

#[test]
fn each_commit_is_applied_and_a_reverted_one_is_reverted_in_git_and_waits_for_ack() {
    demo_images();
    let r = Repo::new("watch");

    let c1 = r.commit("cutover-demo:v1", "Deploy the demo app");
    let o = r.watch_once();
    assert_eq!(code(&o), 0, "first commit: {}", text(&o));
    assert_eq!(get_now(r.addr(), "/version"), "v1");
    post_ok(r.addr(), "/items", "kept");
    assert_eq!(r.newest_release()["source"]["commit"], c1.as_str());

    let c2 = r.commit("cutover-demo:v2", "Upgrade to v2");
    let o = r.watch_once();
    assert_eq!(code(&o), 0, "v2: {}", text(&o));
    assert_eq!(get_now(r.addr(), "/version"), "v2");
    let rel = r.newest_release();
    assert_eq!(rel["revision"], 2, "{rel}");
    assert_eq!(rel["source"]["commit"], c2.as_str(), "{rel}");
    assert_eq!(rel["source"]["subject"], "Upgrade to v2", "{rel}");
    assert_eq!(rel["source"]["author"], "Ana Operator <ana@example.org>");
    let o = r.watch_once();
    assert!(stdout(&o).contains("up to date"), "{}", text(&o));

    // v3-broken migrates the data, then never turns healthy: reverted, images and data.
    let c3 = r.commit("cutover-demo:v3-broken", "Upgrade to v3-broken");
    let o = r.watch_once();
    assert_eq!(code(&o), 1, "reverted: {}", text(&o));
    assert_eq!(get_now(r.addr(), "/version"), "v2");
    assert!(get_now(r.addr(), "/items").contains("kept"));
    let pushed = git(&r.bare, &["log", "-1", "--format=%s%n%b", "main"]);
    assert!(
        pushed.starts_with("Revert \"Upgrade to v3-broken\"") && pushed.contains(&c3),
        "the revert is pushed to the branch: {pushed}"
    );
    assert!(stderr(&o).contains("paused"), "{}", text(&o));
    let events: Vec<Value> = r.receiver.bodies("/hooks/demo");
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(
        kinds[kinds.len() - 4..],
        ["planned", "started", "reverted", "paused"],
        "the last pass's notifications: {kinds:?}"
    );
    let reverted = &events[events.len() - 2];
    assert_eq!(reverted["release"], 3, "{reverted}");
    assert_eq!(reverted["commit"]["commit"], c3.as_str());
    assert!(
        reverted["failed_step"]["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("upgrade.")),
        "the failing step: {reverted}"
    );
    assert!(
        reverted["failed_step"]["output_tail"]
            .as_str()
            .is_some_and(|t| t.contains("did not become healthy")),
        "{reverted}"
    );
    let planned = &events[events.len() - 4];
    assert!(
        planned["checklist"]
            .as_str()
            .is_some_and(|c| c.contains("cutover-demo:v3-broken")),
        "the planned notice carries the checklist: {planned}"
    );
    let slack = r.receiver.bodies("/slack");
    assert!(
        slack.iter().any(|b| b["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("*Reverted*") && t.contains("Failed at `upgrade."))),
        "{slack:?}"
    );

    // A good commit on top waits while the watch is paused...
    r.commit("cutover-demo:v3", "Upgrade to v3");
    let o = r.watch_once();
    assert_eq!(code(&o), 0);
    assert!(
        stdout(&o).contains("paused since") && stdout(&o).contains("\"Upgrade to v3\""),
        "{}",
        text(&o)
    );
    assert_eq!(get_now(r.addr(), "/version"), "v2");

    // ...and applies once a person acknowledges.
    let o = r.cutover(&["watch", "--git", &r.bare.display().to_string(), "--ack"]);
    assert!(stdout(&o).contains("acknowledged"), "{}", text(&o));
    let o = r.watch_once();
    assert_eq!(code(&o), 0, "v3 after --ack: {}", text(&o));
    assert_eq!(get_now(r.addr(), "/version"), "v3");
    assert_eq!(r.newest_release()["source"]["subject"], "Upgrade to v3");
}

#[test]
fn prod_refuses_an_image_staging_never_ran_and_takes_it_once_staging_did() {
    demo_images();
    let dir = tempfile::tempdir().expect("tempdir");
    let (p_staging, p_prod) = (free_port(), free_port());
    let name = format!("t-promo-{}", std::process::id());
    std::fs::write(
        dir.path().join("cutover.yaml"),
        format!(
            "name: {name}-${{stage}}\n\
             vars: {{ stage: dev, tag: v1, port: \"0\" }}\n\
             services:\n  app:\n    image: cutover-demo:${{tag}}\n    port: 8080\n    \
               ports: [\"127.0.0.1:${{port}}:8080\"]\n    stop_grace: 5s\n\
             environments:\n  \
               staging: {{ vars: {{ stage: staging, port: \"{p_staging}\" }} }}\n  \
               prod:\n    vars: {{ stage: prod, port: \"{p_prod}\" }}\n    \
                 promote_from: {{ environment: staging, state_dir: ./staging-state }}\n"
        ),
    )
    .expect("stack file");
    let run = |env: &str, args: &[&str]| -> Output {
        Command::new(env!("CARGO_BIN_EXE_cutover"))
            .current_dir(dir.path())
            .args(["--env", env, "--state-dir", &format!("{env}-state")])
            .args(args)
            .output()
            .expect("cutover runs")
    };
    struct Down<'a>(&'a dyn Fn(&str, &[&str]) -> Output);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            for env in ["staging", "prod"] {
                let _ = (self.0)(env, &["down", "--yes"]);
            }
        }
    }
    let _down = Down(&run);
    let apply = |env: &str, tag: &str| {
        run(
            env,
            &["apply", "--yes", "--set", &format!("vars.tag={tag}")],
        )
    };

    let o = apply("staging", "v1");
    assert_eq!(code(&o), 0, "staging v1: {}", text(&o));
    let o = apply("prod", "v1");
    assert_eq!(code(&o), 0, "prod v1, which staging runs: {}", text(&o));
    assert!(
        stderr(&o).contains("promotion gate: ran in staging first"),
        "{}",
        text(&o)
    );

    let o = apply("prod", "v2");
    assert_eq!(code(&o), 2, "prod v2 before staging: {}", text(&o));
    let err = stderr(&o);
    assert!(
        err.contains("which staging never ran verified")
            && err.contains("staging's release 1 runs cutover-demo:v1")
            && err.contains("nothing was changed"),
        "{err}"
    );
    assert_eq!(
        get_now(SocketAddr::from(([127, 0, 0, 1], p_prod)), "/version"),
        "v1"
    );

    let o = apply("staging", "v2");
    assert_eq!(code(&o), 0, "staging v2: {}", text(&o));
    let o = apply("prod", "v2");
    assert_eq!(code(&o), 0, "prod v2 after staging: {}", text(&o));
    assert!(stderr(&o).contains("staging's release 2"), "{}", text(&o));
    assert_eq!(
        get_now(SocketAddr::from(([127, 0, 0, 1], p_prod)), "/version"),
        "v2"
    );
}

#[test]
fn an_update_outside_its_window_is_announced_once_and_applied_inside_it() {
    require_test_hooks(Path::new(env!("CARGO_BIN_EXE_cutover")));
    demo_images();
    let r = Repo::new("window");
    r.commit_with(
        "cutover-demo:v1",
        "Deploy at night",
        ", windows: [{ days: [mon, tue, wed, thu, fri, sat, sun], from: \"02:00\", to: \"03:00\", tz: UTC }]",
    );
    for _ in 0..2 {
        let o = r.watch_once_at(Some("2026-12-07T12:00:00Z"));
        assert_eq!(code(&o), 0, "{}", text(&o));
        assert!(
            stdout(&o)
                .contains("waits for its maintenance window, which opens at 2026-12-08T02:00:00Z"),
            "{}",
            text(&o)
        );
    }
    assert!(
        get_now_or_none(r.addr()).is_none(),
        "nothing was deployed outside the window"
    );
    let planned: Vec<Value> = r
        .receiver
        .bodies("/hooks/demo")
        .into_iter()
        .filter(|b| b["event"] == "planned")
        .collect();
    assert_eq!(planned.len(), 1, "announced once, ahead: {planned:?}");
    assert!(
        planned[0]["checklist"]
            .as_str()
            .is_some_and(|c| c.contains("cutover-demo:v1"))
    );

    let o = r.watch_once_at(Some("2026-12-08T02:30:00Z"));
    assert_eq!(code(&o), 0, "inside the window: {}", text(&o));
    assert_eq!(get_now(r.addr(), "/version"), "v1");
}

/// What `GET /version` answers, or `None` when nothing answers.
fn get_now_or_none(addr: SocketAddr) -> Option<String> {
    cutover_testkit::net::http_get(addr, "/version")
        .ok()
        .map(|(_, b)| b)
}

/// Debian's `docker-registry` on loopback (plain HTTP, no auth), killed when dropped, with
/// the images it was given removed from the engine.
struct Registry {
    child: std::process::Child,
    port: u16,
    pushed: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start() -> Registry {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let config = format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        std::fs::write(dir.path().join("config.yml"), config).expect("config");
        let child = Command::new("docker-registry")
            .args([
                "serve",
                &dir.path().join("config.yml").display().to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("docker-registry (Debian package docker-registry; tests/run installs it)");
        let start = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(start.elapsed().as_secs() < 20, "the registry did not start");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Registry {
            child,
            port,
            pushed: Vec::new(),
            _dir: dir,
        }
    }

    /// Pushes local image `from` as `127.0.0.1:PORT/demo:TAG`; returns that reference.
    fn push(&mut self, from: &str, tag: &str) -> String {
        let to = format!("127.0.0.1:{}/demo:{tag}", self.port);
        docker(&["tag", from, &to]);
        let o = Command::new("docker")
            .args(["push", &to])
            .output()
            .expect("docker push");
        assert!(o.status.success(), "docker push {to}: {}", text(&o));
        self.pushed.push(to.clone());
        to
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for image in &self.pushed {
            let _ = docker(&["rmi", "-f", image]);
        }
    }
}

#[test]
fn a_new_tag_the_policy_allows_is_applied_and_one_it_does_not_is_ignored() {
    demo_images();
    let mut reg = Registry::start();
    let first = reg.push("cutover-demo:v2", "2.0.0");
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let name = format!("t-images-{}", std::process::id());
    std::fs::write(
        dir.path().join("cutover.yaml"),
        format!(
            "name: {name}\n\
             services:\n  app:\n    image: {first}\n    port: 8080\n    \
               ports: [\"127.0.0.1:{port}:8080\"]\n    volumes: [\"{name}-data:/data\"]\n    \
               stop_grace: 5s\n    health: {{ http: /health, interval: 500ms, deadline: 20s }}\n    \
               update: {{ semver: \"~2\" }}\n\
             data:\n  app_data:\n    volume: {{ name: {name}-data }}\n    writers: [app]\n"
        ),
    )
    .expect("stack file");
    let run = |args: &[&str]| -> Output {
        Command::new(env!("CARGO_BIN_EXE_cutover"))
            .current_dir(dir.path())
            .args(["--state-dir", "state"])
            .args(args)
            .output()
            .expect("cutover runs")
    };
    struct Down<'a>(&'a dyn Fn(&[&str]) -> Output, String);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            let _ = (self.0)(&["down", "--yes", "--volumes"]);
            let _ = docker(&["volume", "rm", "-f", &self.1]);
        }
    }
    let _down = Down(&run, format!("{name}-data"));
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let o = run(&["apply", "--yes"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(get_now(addr, "/version"), "v2");
    post_ok(addr, "/items", "kept");

    // 2.1.0 (the v3 image) is allowed by ~2; 3.0.0 is not.
    let allowed = reg.push("cutover-demo:v3", "2.1.0");
    reg.push("cutover-demo:v3-broken", "3.0.0");
    let o = run(&["watch", "--images", "--once"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(get_now(addr, "/version"), "v3");
    let o = run(&["-o", "json", "history"]);
    let h: Value = serde_json::from_slice(&o.stdout).expect("json");
    let source = &h["releases"][0]["source"];
    assert_eq!(source["kind"], "images", "{source}");
    assert_eq!(source["updates"][0]["to"], allowed.as_str(), "{source}");
    let o = run(&["watch", "--images", "--once"]);
    assert!(
        stdout(&o).contains("up to date"),
        "3.0.0 is ignored: {}",
        text(&o)
    );

    // A tag the policy allows but that fails is reverted, and never tried again.
    reg.push("cutover-demo:v3-broken", "2.2.0");
    let o = run(&["watch", "--images", "--once"]);
    assert_eq!(code(&o), 1, "reverted: {}", text(&o));
    assert_eq!(get_now(addr, "/version"), "v3");
    assert!(get_now(addr, "/items").contains("kept"));
    let o = run(&["watch", "--images", "--once"]);
    assert!(stdout(&o).contains("paused since"), "{}", text(&o));
    let o = run(&["watch", "--images", "--ack"]);
    assert!(stdout(&o).contains("acknowledged"), "{}", text(&o));
    let o = run(&["watch", "--images", "--once"]);
    assert!(
        stdout(&o).contains("up to date"),
        "2.2.0 is not tried again: {}",
        text(&o)
    );
}

#[test]
fn with_a_git_source_a_new_tag_becomes_a_commit_and_drift_is_reported() {
    demo_images();
    let mut reg = Registry::start();
    let first = reg.push("cutover-demo:v2", "2.0.0");
    let r = Repo::new("gitimages");
    let (name, port) = (&r.name, r.port);
    std::fs::write(
        r.work.join("cutover.yaml"),
        format!(
            "name: {name}\n\
             services:\n  app:\n    image: {first}\n    port: 8080\n    \
               ports: [\"127.0.0.1:{port}:8080\"]\n    stop_grace: 5s\n    \
               health: {{ http: /health, interval: 500ms, deadline: 20s }}\n    \
               update: {{ semver: \"~2\" }}\n"
        ),
    )
    .expect("stack file");
    git(&r.work, &["add", "cutover.yaml"]);
    git(&r.work, &["commit", "-q", "-m", "Deploy 2.0.0"]);
    git(&r.work, &["push", "-q", "origin", "HEAD:main"]);
    let watch = || {
        r.cutover(&[
            "watch",
            "--git",
            &r.bare.display().to_string(),
            "--images",
            "--once",
        ])
    };
    let o = watch();
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(get_now(r.addr(), "/version"), "v2");

    let newer = reg.push("cutover-demo:v3", "2.1.0");
    let o = watch();
    assert_eq!(code(&o), 0, "{}", text(&o));
    let subject = git(&r.bare, &["log", "-1", "--format=%s", "main"]);
    assert_eq!(subject, format!("Update app to {newer}"), "{}", text(&o));
    let pushed = git(&r.bare, &["show", "main:cutover.yaml"]);
    assert!(pushed.contains(&format!("image: {newer}")), "{pushed}");
    assert_eq!(
        get_now(r.addr(), "/version"),
        "v3",
        "the commit is applied too"
    );
    let rel = r.newest_release();
    assert_eq!(rel["source"]["subject"], subject.as_str(), "{rel}");

    // Someone stops the container by hand: the next pass says so.
    let running = docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=io.cutover.stack={name}"),
    ]);
    docker(&["stop", running.trim()]);
    let o = watch();
    assert!(
        stderr(&o).contains("drift: `app` has no running container"),
        "{}",
        text(&o)
    );
}

#[test]
fn a_floating_tag_that_names_a_new_image_is_pulled_and_applied() {
    demo_images();
    let mut reg = Registry::start();
    let stable = reg.push("cutover-demo:v2", "stable");
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let name = format!("t-digest-{}", std::process::id());
    std::fs::write(
        dir.path().join("cutover.yaml"),
        format!(
            "name: {name}\n\
             services:\n  app:\n    image: {stable}\n    port: 8080\n    \
               ports: [\"127.0.0.1:{port}:8080\"]\n    stop_grace: 5s\n    \
               health: {{ http: /health, interval: 500ms, deadline: 20s }}\n    \
               update: {{ digest: true }}\n"
        ),
    )
    .expect("stack file");
    let run = |args: &[&str]| -> Output {
        Command::new(env!("CARGO_BIN_EXE_cutover"))
            .current_dir(dir.path())
            .args(["--state-dir", "state"])
            .args(args)
            .output()
            .expect("cutover runs")
    };
    struct Down<'a>(&'a dyn Fn(&[&str]) -> Output);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            let _ = (self.0)(&["down", "--yes"]);
        }
    }
    let _down = Down(&run);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    assert_eq!(code(&run(&["apply", "--yes"])), 0);
    assert_eq!(get_now(addr, "/version"), "v2");
    let o = run(&["watch", "--images", "--once"]);
    assert!(stdout(&o).contains("up to date"), "{}", text(&o));

    // The registry's `stable` moves to the v3 image; this engine still has the old one.
    reg.push("cutover-demo:v3", "stable");
    docker(&["tag", "cutover-demo:v2", &stable]);
    let o = run(&["watch", "--images", "--once"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(get_now(addr, "/version"), "v3");
    let h: Value = serde_json::from_slice(&run(&["-o", "json", "history"]).stdout).expect("json");
    let update = &h["releases"][0]["source"]["updates"][0];
    assert_eq!(update["digest"], true, "{update}");
    assert!(
        update["to"]
            .as_str()
            .is_some_and(|t| t.starts_with(&format!("{stable}@sha256:"))),
        "{update}"
    );
}

/// An HTTPS receiver (python's http.server behind ssl) with a certificate from a private CA
/// made by openssl; it appends every POST body to `bodies`.
struct HttpsReceiver {
    child: std::process::Child,
    port: u16,
    ca: PathBuf,
    bodies: PathBuf,
    _dir: tempfile::TempDir,
}

impl HttpsReceiver {
    fn start() -> HttpsReceiver {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let sh = |script: &str| {
            let o = Command::new("sh")
                .args(["-c", script])
                .current_dir(d)
                .output()
                .expect("sh");
            assert!(o.status.success(), "{script}: {}", text(&o));
        };
        sh(
            "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 1 \
            -subj /CN=test-ca 2>/dev/null",
        );
        sh(
            "openssl req -newkey rsa:2048 -nodes -keyout key.pem -out leaf.csr \
            -subj /CN=127.0.0.1 2>/dev/null",
        );
        std::fs::write(
            d.join("leaf.ext"),
            "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\n",
        )
        .expect("ext");
        sh(
            "openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
            -out cert.pem -days 1 -extfile leaf.ext 2>/dev/null",
        );
        std::fs::write(
            d.join("server.py"),
            "import http.server, ssl, sys\n\
             class H(http.server.BaseHTTPRequestHandler):\n\
             \x20   def do_POST(self):\n\
             \x20       n = int(self.headers['Content-Length'])\n\
             \x20       open(sys.argv[2] + '/bodies', 'ab').write(self.rfile.read(n) + b'\\n')\n\
             \x20       self.send_response(204)\n\
             \x20       self.end_headers()\n\
             \x20   def log_message(self, *a):\n\
             \x20       pass\n\
             srv = http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), H)\n\
             ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n\
             ctx.load_cert_chain(sys.argv[2] + '/cert.pem', sys.argv[2] + '/key.pem')\n\
             srv.socket = ctx.wrap_socket(srv.socket, server_side=True)\n\
             srv.serve_forever()\n",
        )
        .expect("server");
        let port = free_port();
        let child = Command::new("python3")
            .arg(d.join("server.py"))
            .arg(port.to_string())
            .arg(d)
            .spawn()
            .expect("python3");
        let start = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed().as_secs() < 20,
                "the HTTPS receiver did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        HttpsReceiver {
            child,
            port,
            ca: d.join("ca.pem"),
            bodies: d.join("bodies"),
            _dir: dir,
        }
    }

    fn events(&self) -> Vec<String> {
        std::fs::read_to_string(&self.bodies)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|v| v["event"].as_str().map(String::from))
            .collect()
    }
}

impl Drop for HttpsReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn webhooks_go_over_https_trusting_a_private_ca_named_by_ssl_cert_file() {
    demo_images();
    let https = HttpsReceiver::start();
    let r = Repo::new("https");
    let (name, port) = (&r.name, r.port);
    std::fs::write(
        r.work.join("cutover.yaml"),
        format!(
            "name: {name}\n\
             services:\n  app:\n    image: cutover-demo:v1\n    port: 8080\n    \
               ports: [\"127.0.0.1:{port}:8080\"]\n    stop_grace: 5s\n\
             watch: {{ webhooks: [{{ url: \"https://127.0.0.1:{}/hook\" }}] }}\n",
            https.port
        ),
    )
    .expect("stack file");
    git(&r.work, &["add", "cutover.yaml"]);
    git(&r.work, &["commit", "-q", "-m", "Deploy v1"]);
    git(&r.work, &["push", "-q", "origin", "HEAD:main"]);
    let watch = |ca: Option<&Path>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cutover"));
        cmd.arg("--state-dir").arg(&r.state).args([
            "watch",
            "--git",
            &r.bare.display().to_string(),
            "--once",
        ]);
        match ca {
            Some(ca) => cmd.env("SSL_CERT_FILE", ca),
            None => cmd.env_remove("SSL_CERT_FILE"),
        };
        cmd.output().expect("cutover runs")
    };
    let o = watch(None);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(
        stderr(&o).contains("watch: webhook not sent: POST https://127.0.0.1:"),
        "an unknown CA is refused, and said: {}",
        text(&o)
    );
    assert!(https.events().is_empty());

    git(&r.work, &["commit", "-q", "--allow-empty", "-m", "Again"]);
    git(&r.work, &["push", "-q", "origin", "HEAD:main"]);
    let o = watch(Some(&https.ca));
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(
        https.events(),
        ["planned", "started", "succeeded"],
        "{}",
        text(&o)
    );
}

/// An sshd on loopback (Debian's openssh-server) that lets a key made by the test log in as
/// the user running the tests; git over SSH reaches bare repositories by path.
struct Sshd {
    child: std::process::Child,
    port: u16,
    /// A HOME for cutover: `.ssh/id_ed25519` and `.ssh/known_hosts` with this server's key.
    home: PathBuf,
    _dir: tempfile::TempDir,
}

impl Sshd {
    fn start() -> Sshd {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().to_path_buf();
        let home = d.join("home");
        std::fs::create_dir_all(home.join(".ssh")).expect("home");
        let keygen = |path: &Path| {
            let o = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(path)
                .output()
                .expect("ssh-keygen");
            assert!(o.status.success(), "ssh-keygen: {}", text(&o));
        };
        keygen(&d.join("host_key"));
        keygen(&home.join(".ssh/id_ed25519"));
        std::fs::copy(home.join(".ssh/id_ed25519.pub"), d.join("authorized_keys"))
            .expect("authorized_keys");
        let port = free_port();
        let host_pub = std::fs::read_to_string(d.join("host_key.pub")).expect("host key");
        let mut parts = host_pub.split_whitespace();
        let (kind, key) = (parts.next().expect("type"), parts.next().expect("key"));
        std::fs::write(
            home.join(".ssh/known_hosts"),
            format!("[127.0.0.1]:{port} {kind} {key}\n"),
        )
        .expect("known_hosts");
        std::fs::write(
            d.join("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\n\
                 PidFile {}\nStrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 UsePAM no\nPermitRootLogin prohibit-password\n",
                d.join("host_key").display(),
                d.join("authorized_keys").display(),
                d.join("sshd.pid").display()
            ),
        )
        .expect("sshd_config");
        std::fs::create_dir_all("/run/sshd").expect("/run/sshd");
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("sshd (Debian package openssh-server; tests/run installs it)");
        let start = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(start.elapsed().as_secs() < 20, "sshd did not start");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Sshd {
            child,
            port,
            home,
            _dir: dir,
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_repository_is_reached_over_ssh_with_a_key_from_home_and_the_revert_pushed_back() {
    demo_images();
    let sshd = Sshd::start();
    let r = Repo::new("ssh");
    let url = format!(
        "ssh://{}@127.0.0.1:{}{}",
        std::env::var("USER").unwrap_or_else(|_| "root".into()),
        sshd.port,
        r.bare.display()
    );
    let watch = || {
        Command::new(env!("CARGO_BIN_EXE_cutover"))
            .env("HOME", &sshd.home)
            .env_remove("SSH_AUTH_SOCK")
            .arg("--state-dir")
            .arg(&r.state)
            .args(["watch", "--git", &url, "--once"])
            .output()
            .expect("cutover runs")
    };
    r.commit("cutover-demo:v1", "Deploy v1");
    let o = watch();
    assert_eq!(code(&o), 0, "cloned and applied over SSH: {}", text(&o));
    assert_eq!(get_now(r.addr(), "/version"), "v1");

    r.commit("cutover-demo:v3-broken", "Upgrade to v3-broken");
    let o = watch();
    assert_eq!(code(&o), 1, "{}", text(&o));
    let pushed = git(&r.bare, &["log", "-1", "--format=%s", "main"]);
    assert_eq!(
        pushed,
        "Revert \"Upgrade to v3-broken\"",
        "pushed over SSH: {}",
        text(&o)
    );
    let rel = r.newest_release();
    assert_eq!(rel["source"]["repository"], url.as_str(), "{rel}");
}
