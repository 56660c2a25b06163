//! The adapter against the real Docker Engine, with the demo images
//! (`examples/demo/build-images`; the CLI tests build them when missing, CI before the tests).

use std::time::Duration;

use cutover_core::spec::{Health, Probe, RestartPolicy, Service, Strategy};
use cutover_docker::{ContainerSpec, Runtime, RuntimeError, Slot, label};
use cutover_testkit::cmd::{docker, docker_output};
use indexmap::IndexMap;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn image_here(reference: &str) {
    let ok = docker_output(&["image", "inspect", reference])
        .status
        .success();
    assert!(
        ok,
        "image {reference} is missing: run examples/demo/build-images (CI does, before the tests)"
    );
}

/// Removes everything a test created, also when it fails.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let ids = docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label={}={}", label::STACK, self.0),
        ]);
        for id in ids.lines() {
            docker(&["rm", "-f", id]);
        }
        docker(&["rm", "-f", &format!("{}-foreign", self.0)]);
        docker(&["network", "rm", &Runtime::network_name(&self.0)]);
    }
}

fn service(image: &str, health: Option<Health>) -> Service {
    Service {
        image: image.into(),
        command: None,
        env: IndexMap::new(),
        ports: Vec::new(),
        port: Some(8080),
        volumes: Vec::new(),
        depends_on: Vec::new(),
        strategy: Strategy::Recreate,
        health,
        stop_grace: Duration::from_secs(5),
        restart: RestartPolicy::No,
        migrate: None,
        config_files: Vec::new(),
        init: false,
        tmpfs: Vec::new(),
        adopt: Vec::new(),
        update: None,
        swarm: None,
    }
}

fn http_health(path: &str, deadline: Duration) -> Health {
    Health {
        probe: Probe::Http {
            path: path.into(),
            port: 8080,
            expect_status: 200,
            body_contains: None,
        },
        interval: Duration::from_millis(200),
        timeout: Duration::from_secs(2),
        start_period: Duration::ZERO,
        deadline,
    }
}

#[test]
fn an_unreachable_daemon_names_its_socket() {
    let err = rt()
        .block_on(Runtime::connect_to("unix:///nonexistent/cutover-test.sock"))
        .expect_err("must not connect");
    let msg = err.to_string();
    assert!(matches!(err, RuntimeError::Unavailable { .. }), "{msg}");
    assert!(
        msg.contains("unix:///nonexistent/cutover-test.sock"),
        "{msg}"
    );
}

#[test]
fn only_labelled_containers_of_the_stack_are_seen_and_health_failures_carry_logs() {
    image_here("cutover-demo:v2-nohealthcheck");
    let stack = format!("adapter-{}", std::process::id());
    let _cleanup = Cleanup(stack.clone());
    let rt = rt();
    let d = rt.block_on(Runtime::connect()).expect("docker");
    assert!(!d.api_version().is_empty());

    // A container with a confusable name but no label: never ours.
    let foreign = format!("{stack}-foreign");
    docker(&[
        "run",
        "-d",
        "--name",
        &foreign,
        "cutover-demo:v2-nohealthcheck",
    ]);

    let img = rt
        .block_on(d.ensure_image("cutover-demo:v2-nohealthcheck"))
        .expect("image");
    assert!(img.id.starts_with("sha256:"), "{img:?}");
    assert!(!img.has_healthcheck);

    let good = service(
        "cutover-demo:v2-nohealthcheck",
        Some(http_health("/health", Duration::from_secs(20))),
    );
    let spec = ContainerSpec {
        stack: &stack,
        service_name: "app",
        service: &good,
        release: 1,
        slot: Slot::Single,
        image_id: &img.id,
        env: vec!["DEMO_VERSION=v2".into()],
    };
    let id = rt.block_on(d.run(&spec)).expect("run");
    let out = rt
        .block_on(d.wait_healthy(&stack, "app", &id, good.health.as_ref()))
        .expect("healthy");
    assert!(out.contains("200"), "{out}");
    // Running it again (a step after a crash) reuses the container.
    assert_eq!(rt.block_on(d.run(&spec)).expect("rerun"), id);

    let seen = rt.block_on(d.containers(&stack)).expect("list");
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].id, id);
    assert_eq!(seen[0].image_id, img.id);
    assert_eq!(seen[0].release, 1);
    assert!(
        seen[0]
            .published
            .iter()
            .any(|(p, a)| *p == 8080 && a.ip().is_loopback())
    );

    // A probe that never passes: the failure names the service and carries the logs.
    let bad = service(
        "cutover-demo:v2-nohealthcheck",
        Some(http_health("/nope", Duration::from_secs(2))),
    );
    let spec2 = ContainerSpec {
        service: &bad,
        release: 2,
        ..spec.clone()
    };
    let id2 = rt.block_on(d.run(&spec2)).expect("run 2");
    let err = rt
        .block_on(d.wait_healthy(&stack, "app", &id2, bad.health.as_ref()))
        .expect_err("must fail");
    let msg = err.to_string();
    assert!(msg.contains("`app` did not become healthy"), "{msg}");
    assert!(msg.contains("/nope"), "{msg}");
    assert!(
        msg.contains("GET /nope 404"),
        "the container's log lines: {msg}"
    );

    // `down` removes ours and leaves the foreign container running.
    let removed = rt
        .block_on(d.down(&stack, false, &[], &[], &[]))
        .expect("down");
    assert_eq!(
        removed
            .iter()
            .filter(|r| r.starts_with("container"))
            .count(),
        2,
        "{removed:?}"
    );
    assert!(rt.block_on(d.containers(&stack)).expect("list").is_empty());
    assert_eq!(
        docker(&["inspect", "-f", "{{.State.Running}}", &foreign]),
        "true"
    );
}

#[test]
fn a_container_that_exits_fails_at_once_and_a_missing_image_is_named() {
    image_here("cutover-demo:v2-nohealthcheck");
    let stack = format!("adapter-exit-{}", std::process::id());
    let _cleanup = Cleanup(stack.clone());
    let rt = rt();
    let d = rt.block_on(Runtime::connect()).expect("docker");

    let missing = rt
        .block_on(d.ensure_image("cutover-demo:no-such-tag"))
        .expect_err("missing");
    assert!(
        matches!(missing, RuntimeError::ImageMissing { .. }),
        "{missing}"
    );
    assert!(missing.to_string().contains("cutover-demo:no-such-tag"));

    let img = rt
        .block_on(d.ensure_image("cutover-demo:v2-nohealthcheck"))
        .expect("image");
    let svc = service(
        "cutover-demo:v2-nohealthcheck",
        Some(http_health("/health", Duration::from_secs(60))),
    );
    let spec = ContainerSpec {
        stack: &stack,
        service_name: "app",
        service: &svc,
        release: 1,
        slot: Slot::Single,
        image_id: &img.id,
        env: vec!["DEMO_VERSION=v2".into(), "DEMO_CRASH_AFTER=1".into()],
    };
    let id = rt.block_on(d.run(&spec)).expect("run");
    // Healthy first, then it crashes: the next wait fails long before the 60 s deadline.
    std::thread::sleep(Duration::from_secs(2));
    let started = std::time::Instant::now();
    let err = rt
        .block_on(d.wait_healthy(&stack, "app", &id, svc.health.as_ref()))
        .expect_err("exited");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(err.to_string().contains("exited with code 70"), "{err}");
}
