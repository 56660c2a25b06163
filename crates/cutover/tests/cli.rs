//! The `cutover` binary, run as a user runs it: real processes, real files, real exit codes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use cutover_testkit::cmd::{code, require_test_hooks, stderr, stdout};
use cutover_testkit::net::{Answer, free_port, request};

const STACK: &str = "\
name: shop
vars: { tag: '1.0' }
services:
  db: { image: 'postgres:15' }
  web:
    image: 'shop:${tag}'
    port: 8080
    depends_on: [db]
    env: { MODE: prod }
    health: { http: /healthz }
";

struct Dir {
    _tmp: tempfile::TempDir,
    path: PathBuf,
}

impl Dir {
    fn with_stack(text: &str) -> Dir {
        let tmp = tempfile::tempdir().expect("temp dir");
        let path = tmp.path().to_path_buf();
        std::fs::write(path.join("cutover.yaml"), text).expect("write stack");
        Dir { _tmp: tmp, path }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cutover"));
        c.current_dir(&self.path)
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
}

#[test]
fn validate_reports_every_problem_with_its_place_and_exits_2() {
    let d = Dir::with_stack(
        "name: shop\nservices:\n  web:\n    image: x\n    depends_on: [dbb]\n    strategy: rolling\n",
    );
    let o = d.run(&["validate"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("cutover.yaml:5:18: service `web` depends on `dbb`, which is not defined"),
        "{err}"
    );
    assert!(
        err.contains("cutover.yaml:6:15: unknown strategy `rolling`"),
        "{err}"
    );
    assert!(
        err.contains("cutover: 2 problems in the stack file; nothing was changed"),
        "{err}"
    );

    let o = d.run(&["validate", "-o", "json"]);
    assert_eq!(code(&o), 2);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["valid"], false);
    let diags = v["diagnostics"].as_array().expect("array");
    assert_eq!(diags.len(), 2);
    assert_eq!(diags[0]["kind"], "dangling-reference");
    assert_eq!(
        (diags[0]["line"].as_u64(), diags[0]["column"].as_u64()),
        (Some(5), Some(18))
    );
}

#[test]
fn a_missing_stack_file_is_a_clear_error() {
    let d = Dir::with_stack(STACK);
    let o = d.run(&["-f", "nope.yaml", "validate"]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("nope.yaml: cannot read the stack file"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn plan_json_is_the_documented_schema() {
    let d = Dir::with_stack(STACK);
    let o = d.run(&["plan", "-o", "json", "--set", "web.image=shop:2.0"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let plan: cutover_core::plan::Plan = serde_json::from_slice(&o.stdout).expect("plan JSON");
    assert_eq!(plan.schema, cutover_core::plan::PLAN_SCHEMA);
    assert_eq!(plan.stack, "shop");
    let services: Vec<&str> = plan.services.iter().map(|s| s.service.as_str()).collect();
    assert_eq!(services, vec!["db", "web"]);
    assert_eq!(
        plan.services[1]
            .image_to
            .as_ref()
            .map(|i| i.reference.as_str()),
        Some("shop:2.0")
    );
}

#[test]
fn plan_markdown_is_a_checklist() {
    let d = Dir::with_stack(STACK);
    let o = d.run(&["plan", "--output", "markdown"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let md = stdout(&o);
    assert!(md.starts_with("# Upgrade `shop` to release 1\n"), "{md}");
    assert!(
        md.contains("\n## Upgrade\n\n- [ ] start `db`\n- [ ] start `web`\n"),
        "{md}"
    );
    assert!(md.contains("\n## Revert (only if a step fails)\n"), "{md}");
}

#[test]
fn apply_refuses_without_a_terminal_or_yes() {
    let d = Dir::with_stack(STACK);
    let o = d.run(&["apply"]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("not on a terminal: pass --yes"),
        "{}",
        stderr(&o)
    );
    // Nothing was recorded.
    let o = d.run(&["history", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["releases"].as_array().map(Vec::len), Some(0));
}

fn wait_for(path: &Path, pred: impl Fn(&str) -> bool) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if std::fs::read_to_string(path).is_ok_and(|s| pred(&s)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting on {}", path.display());
}

/// Starts `apply --yes` that holds the lease for `hold_ms` (a test hook), and returns once its
/// plan is printed (the lease is taken right after).
fn spawn_holding_apply(d: &Dir, hold_ms: u64, stderr: Stdio) -> std::process::Child {
    require_test_hooks(Path::new(env!("CARGO_BIN_EXE_cutover")));
    let out = d.path.join("first.out");
    let child = d
        .cmd(&["apply", "--yes"])
        .env("CUTOVER_TEST_HOLD_LEASE_MS", hold_ms.to_string())
        .stdout(std::fs::File::create(&out).expect("out file"))
        .stderr(stderr)
        .spawn()
        .expect("first apply starts");
    wait_for(&out, |s| s.contains("Procedure"));
    child
}

#[test]
fn two_concurrent_applies_one_holds_the_lease_the_other_exits_4_naming_it() {
    let d = Dir::with_stack(STACK);
    // The first apply holds the lease for a while (a test hook), with its output in a file so
    // we know when it holds it.
    let first = spawn_holding_apply(&d, 4000, Stdio::piped());
    let first_pid = first.id();
    let start = Instant::now();
    let second = loop {
        let o = d.run(&["apply", "--yes"]);
        if code(&o) == 4 || start.elapsed() > Duration::from_secs(10) {
            break o;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code(&second), 4, "{}", stderr(&second));
    let err = stderr(&second);
    assert!(err.contains("stack `shop` is locked by"), "{err}");
    assert!(err.contains(&format!("(pid {first_pid})")), "{err}");
    assert!(err.contains("running `apply`"), "{err}");

    // status names the holder too, while it holds.
    let st = d.run(&["status", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).expect("json");
    assert_eq!(
        v["lease"]["holder"]["pid"].as_u64(),
        Some(u64::from(first_pid))
    );

    let first = first.wait_with_output().expect("first apply ends");
    // Without a runtime adapter yet, the first apply stops before changing anything …
    assert_eq!(code(&first), 2, "{}", stderr(&first));
    // … and always gives the lease back.
    let st = d.run(&["status", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).expect("json");
    assert!(v["lease"].is_null(), "{v}");
}

#[test]
fn a_lease_of_a_killed_process_is_taken_over() {
    let d = Dir::with_stack(STACK);
    let mut first = spawn_holding_apply(&d, 30000, Stdio::null());
    let start = Instant::now();
    loop {
        let st = d.run(&["status", "-o", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&st.stdout).expect("json");
        if !v["lease"].is_null() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the lease never appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    first.kill().expect("kill");
    first.wait().expect("reaped");
    let o = d.run(&["apply", "--yes"]);
    assert_ne!(
        code(&o),
        4,
        "a dead holder's lease must not block: {}",
        stderr(&o)
    );
    assert!(
        stderr(&o).contains("took over a stale lease"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn status_history_and_unlock_read_the_real_store() {
    let d = Dir::with_stack(STACK);
    let o = d.run(&["status"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stdout(&o).contains("release   none deployed"),
        "{}",
        stdout(&o)
    );
    assert!(stdout(&o).contains("lease     free"));
    let o = d.run(&["history"]);
    assert_eq!(stdout(&o), "stack `shop`: no releases yet\n");
    let o = d.run(&["unlock"]);
    assert_eq!(stdout(&o), "stack `shop`: the lease is free\n");
    assert!(d.path.join(".cutover/state.db").exists());
    let o = d.run(&["rollback", "3", "--yes"]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("stack `shop` has no release 3"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn help_documents_exit_codes_and_completions_and_man_come_from_it() {
    let d = Dir::with_stack(STACK);
    let help = stdout(&d.run(&["--help"]));
    assert!(help.contains("EXIT STATUS:"), "{help}");
    assert!(
        help.contains("4  another operation holds the stack's lease"),
        "{help}"
    );
    let bash = stdout(&d.run(&["completions", "bash"]));
    assert!(
        bash.contains("_cutover()") && bash.contains("rollback"),
        "{bash}"
    );
    let man = stdout(&d.run(&["man"]));
    assert!(
        man.starts_with(".ie") || man.contains(".TH cutover"),
        "{man}"
    );
    assert!(
        man.contains("EXIT STATUS"),
        "the man page carries the exit codes"
    );
}

#[test]
fn a_closed_pipe_is_not_an_error() {
    let d = Dir::with_stack(STACK);
    let mut child = d
        .cmd(&["man"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    drop(child.stdout.take());
    let o = child.wait_with_output().expect("wait");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stderr(&o).is_empty(), "{}", stderr(&o));
}

/// One request with no body on a new connection; reads wait up to 10 s.
fn http(addr: SocketAddr, method: &str, path: &str) -> Answer {
    request(addr, method, path, "", Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"))
}

/// `cutover serve --metrics-listen` for a routed stack with no upstream yet; killed on drop.
struct MetricsServe {
    _dir: Dir,
    child: std::process::Child,
    log: PathBuf,
    proxy: SocketAddr,
    metrics: SocketAddr,
}

impl MetricsServe {
    fn start() -> MetricsServe {
        let (proxy_port, metrics_port) = (free_port(), free_port());
        let dir = Dir::with_stack(&format!(
            "name: shop\nservices:\n  web: {{ image: 'shop:1', port: 8080 }}\n\
             traffic:\n  listen: 127.0.0.1:{proxy_port}\n  routes: [{{ service: web }}]\n"
        ));
        let (proxy, metrics) = (
            SocketAddr::from(([127, 0, 0, 1], proxy_port)),
            SocketAddr::from(([127, 0, 0, 1], metrics_port)),
        );
        let log = dir.path.join("serve.log");
        let child = dir
            .cmd(&[
                "--state-dir",
                "state",
                "serve",
                "--metrics-listen",
                &metrics.to_string(),
            ])
            .stderr(std::fs::File::create(&log).expect("log"))
            .stdout(Stdio::null())
            .spawn()
            .expect("cutover serve starts");
        let mut served = MetricsServe {
            _dir: dir,
            child,
            log,
            proxy,
            metrics,
        };
        let start = Instant::now();
        while std::net::TcpStream::connect(served.metrics).is_err()
            || std::net::TcpStream::connect(served.proxy).is_err()
        {
            assert!(
                start.elapsed() < Duration::from_secs(15)
                    && served.child.try_wait().ok().flatten().is_none(),
                "cutover serve did not come up: {}",
                served.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        served
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for MetricsServe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn serve_exposes_the_metrics_alone_on_a_tcp_address() {
    let s = MetricsServe::start();
    // No upstream yet: the proxy answers 503, and the metrics count it.
    assert_eq!(http(s.proxy, "GET", "/").status, 503);
    let answer = http(s.metrics, "GET", "/metrics");
    assert_eq!(answer.status, 200, "{answer}");
    assert!(
        answer
            .head
            .to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{answer}"
    );
    assert!(
        answer
            .body
            .contains("cutover_proxy_errors_total{service=\"web\",kind=\"no_upstream\"} 1"),
        "{answer}"
    );
    let served = s.log();
    assert!(
        served.contains(&format!("metrics on http://{}/metrics", s.metrics)),
        "{served}"
    );
}

#[test]
fn the_metrics_address_offers_no_control_verb() {
    let s = MetricsServe::start();
    let answers = [
        http(s.metrics, "GET", "/state").status,
        http(s.metrics, "POST", "/services/web/hold").status,
        http(s.metrics, "PUT", "/maintenance").status,
    ];
    assert_eq!(answers, [404, 404, 404]);
}
