//! The stack file's own steps and checks against the in-memory runtime, scripted probes and
//! a scripted operator: how each check reaches its service, what passes and what fails with
//! which words, retries and waits, manual steps, approvals, host commands.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use cutover_core::runtime::Slot;
use cutover_core::spec::load::LoadOptions;
use cutover_core::spec::{Check, CheckKind, Command, CustomStep, Stack, StepAction, When};
use cutover_store::Holder;

use super::{Checks, Operator, Probes, run_host};
use crate::fake::Fake;
use crate::testing::store;

/// Answers in order; records what was asked.
#[derive(Default)]
struct Scripted {
    http: RefCell<VecDeque<Result<(u16, String), String>>>,
    tcp: RefCell<VecDeque<Result<(), String>>>,
    asked: RefCell<Vec<String>>,
}

impl Probes for Scripted {
    fn http_get(&self, url: &str, _timeout: Duration) -> Result<(u16, String), String> {
        self.asked.borrow_mut().push(format!("GET {url}"));
        self.http
            .borrow_mut()
            .pop_front()
            .unwrap_or_else(|| Err("connection refused".into()))
    }
    fn tcp_connect(&self, addr: SocketAddr, _timeout: Duration) -> Result<(), String> {
        self.asked.borrow_mut().push(format!("TCP {addr}"));
        self.tcp.borrow_mut().pop_front().unwrap_or(Ok(()))
    }
    fn postgres_value(&self, _: &str, _: &str, q: &str) -> Result<Option<String>, String> {
        self.asked.borrow_mut().push(format!("SQL {q}"));
        Ok(Some("42".into()))
    }
    fn postgres_execute(&self, _: &str, _: &str, q: &str) -> Result<(), String> {
        self.asked.borrow_mut().push(format!("SQL! {q}"));
        Ok(())
    }
}

struct Person {
    answer: Result<String, String>,
    heard: RefCell<Vec<String>>,
}

impl Operator for Person {
    fn say(&self, text: &str) {
        self.heard.borrow_mut().push(text.to_string());
    }
    fn confirm(&self, text: &str) -> Result<String, String> {
        self.heard.borrow_mut().push(format!("confirm: {text}"));
        self.answer.clone()
    }
}

fn stack() -> Stack {
    cutover_core::spec::load::load_str(
        Path::new("cutover.yaml"),
        "name: shop
services:
  web: { image: app:v2, port: 8080 }
  db: { image: pg:15 }
data:
  main:
    postgres: { url: postgres://admin@db/postgres, database: shop }
",
        &LoadOptions::default(),
    )
    .unwrap_or_else(|d| panic!("{d:?}"))
    .stack
}

struct World {
    fake: Fake,
    probes: Scripted,
    person: Person,
    stack: Stack,
    store: (tempfile::TempDir, cutover_store::Store),
}

impl World {
    fn new() -> World {
        let fake = Fake::new();
        fake.running("shop", "web", 3, Slot::Single, "sha256:w3");
        fake.running("shop", "db", 3, Slot::Single, "sha256:d3");
        World {
            fake,
            probes: Scripted::default(),
            person: Person {
                answer: Ok("confirmed by ops@box".into()),
                heard: RefCell::default(),
            },
            stack: stack(),
            store: store(),
        }
    }

    fn checks(&self, operation: u64) -> Checks<'_> {
        Checks {
            runtime: &self.fake,
            probes: &self.probes,
            operator: &self.person,
            store: &self.store.1,
            desired: &self.stack,
            operation,
        }
    }

    fn web_addr(&self) -> SocketAddr {
        self.fake.container("shop-web-r3").expect("web").published[0].1
    }
}

fn http(service: &str, path: &str, status: u16, body_contains: Option<&str>) -> CheckKind {
    CheckKind::Http {
        url: None,
        service: Some(service.into()),
        path: Some(path.into()),
        status,
        body_contains: body_contains.map(Into::into),
        body_regex: None,
    }
}

fn check(kind: CheckKind, retries: u32) -> Check {
    Check {
        kind,
        timeout: Duration::from_secs(1),
        interval: Duration::ZERO,
        retries,
    }
}

fn step(action: StepAction) -> CustomStep {
    CustomStep {
        name: "custom".into(),
        action,
        timeout: Some(Duration::from_secs(5)),
        rerun_safe: true,
        when: When::Always,
    }
}

#[test]
fn an_http_check_of_a_service_goes_to_its_published_port_and_judges_status_and_body() {
    let w = World::new();
    let c = w.checks(1);
    let url = format!("http://{}/status", w.web_addr());
    w.probes.http.borrow_mut().extend([
        Ok((200, "version 2.1 ready".into())),
        Ok((503, "warming up".into())),
        Ok((200, "version 2.0".into())),
    ]);
    let kind = http("web", "/status", 200, Some("2.1"));
    assert_eq!(
        c.check(&check(kind.clone(), 1)),
        Ok(format!("GET {url} → 200: version 2.1 ready"))
    );
    assert_eq!(
        c.check(&check(kind.clone(), 1)),
        Err(format!("GET {url} → 503 (want 200): warming up"))
    );
    assert_eq!(
        c.check(&check(kind, 1)),
        Err(format!("GET {url} → 200, body lacks \"2.1\": version 2.0"))
    );
    let regex = CheckKind::Http {
        url: Some("http://127.0.0.1:1/v".into()),
        service: None,
        path: None,
        status: 200,
        body_contains: None,
        body_regex: Some("^v[0-9]+$".into()),
    };
    w.probes
        .http
        .borrow_mut()
        .push_back(Ok((200, "v2x".into())));
    let err = c.check(&check(regex, 1)).expect_err("no match");
    assert!(
        err.ends_with("body does not match /^v[0-9]+$/: v2x"),
        "{err}"
    );
}

#[test]
fn a_check_is_tried_its_retries_and_the_last_failure_is_the_error() {
    let w = World::new();
    let c = w.checks(1);
    let kind = http("web", "/", 200, None);
    w.probes
        .http
        .borrow_mut()
        .extend([Err("refused".into()), Ok((200, "ok".into()))]);
    assert!(
        c.check(&check(kind.clone(), 3)).is_ok(),
        "passes on its second try"
    );
    w.probes
        .http
        .borrow_mut()
        .extend([Err("refused".into()), Err("reset".into())]);
    assert_eq!(
        c.check(&check(kind, 2)),
        Err("reset (after 2 tries)".to_string())
    );
    assert_eq!(w.probes.asked.borrow().len(), 4);
}

#[test]
fn a_wait_step_tries_until_its_check_passes_or_its_time_is_up() {
    let mut w = World::new();
    w.stack
        .checks
        .insert("up".into(), check(http("web", "/", 200, None), 1));
    let c = w.checks(1);
    w.probes.http.borrow_mut().extend([
        Err("refused".into()),
        Err("refused".into()),
        Ok((200, "ok".into())),
    ]);
    let out = c
        .custom_step(
            "upgrade.custom.1",
            &step(StepAction::Wait { check: "up".into() }),
        )
        .expect("passes");
    assert!(out.starts_with("`up` passed after 3 tries"), "{out}");
    let mut short = step(StepAction::Wait { check: "up".into() });
    short.timeout = Some(Duration::from_millis(300));
    let err = c
        .custom_step("upgrade.custom.2", &short)
        .expect_err("never");
    assert!(
        err.message.starts_with("`up` did not pass within 0s"),
        "{}",
        err.message
    );
    assert!(
        err.message.contains("last: connection refused"),
        "{}",
        err.message
    );
}

#[test]
fn a_tcp_target_named_after_a_service_is_its_published_port_else_its_network_address() {
    let w = World::new();
    let c = w.checks(1);
    let out = c
        .check(&check(
            CheckKind::Tcp {
                target: "web:8080".into(),
            },
            1,
        ))
        .expect("web");
    assert_eq!(out, format!("TCP web:8080 ({}): connected", w.web_addr()));
    // db publishes nothing: its address on the stack network.
    let err = c
        .check(&check(
            CheckKind::Tcp {
                target: "db:5432".into(),
            },
            1,
        ))
        .expect_err("no address");
    assert_eq!(err, "`db` has no address on the stack network");
    w.fake
        .state
        .borrow_mut()
        .addresses
        .insert("shop-db-r3".into(), "10.9.0.4".parse().expect("ip"));
    w.probes.tcp.borrow_mut().push_back(Err("timed out".into()));
    let err = c
        .check(&check(
            CheckKind::Tcp {
                target: "db:5432".into(),
            },
            1,
        ))
        .expect_err("timed out");
    assert_eq!(err, "TCP db:5432 (10.9.0.4:5432): timed out");
}

#[test]
fn exec_logs_and_health_checks_read_the_newest_running_container() {
    let w = World::new();
    w.fake.running("shop", "web", 4, Slot::Single, "sha256:w4");
    let c = w.checks(1);
    w.fake.state.borrow_mut().exec = (0, "daemons: green".into());
    let exec = CheckKind::Exec {
        service: "web".into(),
        command: Command::Exec(vec!["gsh".into(), "-check".into()]),
        output_contains: Some("green".into()),
    };
    assert!(c.check(&check(exec.clone(), 1)).is_ok());
    assert_eq!(w.fake.log(), ["exec shop-web-r4 gsh -check"]);
    w.fake.state.borrow_mut().exec = (3, "daemons: red".into());
    assert_eq!(
        c.check(&check(exec, 1)),
        Err("`gsh -check` in `web` exited 3: daemons: red".to_string())
    );

    w.fake.state.borrow_mut().logs = "started\nERROR: disk\n".into();
    let logs = |absent: Option<&str>, present: Option<&str>| CheckKind::Logs {
        service: "web".into(),
        absent: absent.map(Into::into),
        present: present.map(Into::into),
    };
    assert_eq!(
        c.check(&check(logs(Some("ERROR"), None), 1)),
        Err("`web` logged \"ERROR\": ERROR: disk".to_string())
    );
    assert!(
        c.check(&check(logs(Some("PANIC"), Some("started")), 1))
            .is_ok()
    );
    assert_eq!(
        c.check(&check(logs(None, Some("ready")), 1)),
        Err("`web` has not logged \"ready\" yet".to_string())
    );

    let health = check(
        CheckKind::ContainerHealth {
            service: "web".into(),
        },
        1,
    );
    assert_eq!(
        c.check(&health),
        Err("shop-web-r4 has no Docker health check".to_string())
    );
    w.fake
        .state
        .borrow_mut()
        .containers
        .iter_mut()
        .for_each(|c| c.health = Some("healthy".into()));
    assert_eq!(c.check(&health), Ok("shop-web-r4 is healthy".to_string()));
}

#[test]
fn a_manual_step_is_the_operators_word_and_a_refusal_fails_it() {
    let mut w = World::new();
    let out = w
        .checks(1)
        .custom_step(
            "plan.custom.1",
            &step(StepAction::Manual {
                text: "read the notes".into(),
            }),
        )
        .expect("confirmed");
    assert_eq!(out, "confirmed by ops@box");
    w.person.answer = Err("manual step `read the notes` was not confirmed".into());
    let err = w
        .checks(1)
        .custom_step(
            "plan.custom.1",
            &step(StepAction::Manual {
                text: "read the notes".into(),
            }),
        )
        .expect_err("refused");
    assert_eq!(
        err.message,
        "manual step `read the notes` was not confirmed"
    );
}

#[test]
fn an_approval_waits_for_a_second_person_and_an_abort_ends_the_wait() {
    let w = World::new();
    let store = &w.store.1;
    let op = store
        .begin_operation("apply", None, &Holder::current())
        .expect("op");
    let dir = w.store.0.path().to_path_buf();
    let approver = std::thread::spawn(move || {
        let other = cutover_store::Store::open(&dir, "shop").expect("store");
        // Once requested, approve as someone else.
        for _ in 0..100 {
            if !other.pending_approvals(op.id).expect("pending").is_empty() {
                other.approve(op.id, "bob@desk").expect("approve");
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let out = w
        .checks(op.id)
        .custom_step(
            "preflight.approval",
            &step(StepAction::Approval {
                text: "apply to prod".into(),
            }),
        )
        .expect("approved");
    approver.join().expect("approver");
    assert_eq!(out, "approved by bob@desk");
    assert!(w.person.heard.borrow()[0].contains(&format!("`cutover approve {}`", op.id)));

    // An abort is asked of an operation that recorded its plan.
    store.set_operation_context(op.id, "{}").expect("context");
    assert!(store.request_abort(op.id, "carol@desk").expect("abort"));
    let err = w
        .checks(op.id)
        .custom_step(
            "upgrade.approval",
            &step(StepAction::Approval {
                text: "again".into(),
            }),
        )
        .expect_err("aborted");
    assert_eq!(
        err.message,
        "aborted by carol@desk while waiting for approval"
    );
}

#[test]
fn sql_reaches_the_data_sets_database_and_other_data_is_no_database() {
    let w = World::new();
    let c = w.checks(1);
    let sql = |data: &str, expect: &str| CheckKind::Sql {
        data: data.into(),
        query: "select count(*) from t".into(),
        expect: Some(expect.into()),
    };
    assert!(c.check(&check(sql("main", "42"), 1)).is_ok());
    assert_eq!(
        c.check(&check(sql("main", "41"), 1)),
        Err("`select count(*) from t` returned 42 (want 41)".to_string())
    );
    let out = c
        .custom_step(
            "upgrade.custom.1",
            &step(StepAction::Sql {
                data: "main".into(),
                query: "vacuum".into(),
            }),
        )
        .expect("ran");
    assert_eq!(out, "ran on `main`: vacuum");
    assert_eq!(
        w.probes.asked.borrow().as_slice(),
        [
            "SQL select count(*) from t",
            "SQL select count(*) from t",
            "SQL! vacuum"
        ]
    );
}

#[test]
fn a_host_command_runs_in_the_stack_directory_and_is_killed_at_its_limit() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("marker"), "here").expect("marker");
    let sh = |s: &str| Command::Shell(s.into());
    assert_eq!(
        run_host(&sh("cat marker"), dir.path(), Duration::from_secs(5)).expect("runs"),
        "here"
    );
    let failing = sh("echo broken >&2; exit 4");
    let err = run_host(&failing, dir.path(), Duration::from_secs(5)).expect_err("fails");
    assert_eq!(err.message, format!("`{failing}` failed (exit status: 4)"));
    assert_eq!(err.output, "broken");
    let started = std::time::Instant::now();
    let err =
        run_host(&sh("sleep 30"), dir.path(), Duration::from_millis(300)).expect_err("killed");
    assert_eq!(
        err.message,
        format!(
            "`{}` did not finish within 0s and was killed",
            sh("sleep 30")
        )
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_refused_approval_fails_the_step_with_who_and_why() {
    let w = World::new();
    let store = &w.store.1;
    let op = store
        .begin_operation("apply", None, &Holder::current())
        .expect("op");
    // Decided before the step asks: the step reads the decision on its first look.
    store
        .request_approval(op.id, "preflight.approval", "apply to prod")
        .expect("request");
    store
        .decide(op.id, "bob (dashboard)", false, Some("not during the sale"))
        .expect("refuse");
    let err = w
        .checks(op.id)
        .custom_step(
            "preflight.approval",
            &step(StepAction::Approval {
                text: "apply to prod".into(),
            }),
        )
        .expect_err("refused");
    assert_eq!(
        err.message,
        "refused by bob (dashboard): not during the sale"
    );
}
