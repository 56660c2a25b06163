//! The Swarm adapter on a real three-node swarm: three Docker engines in their own network
//! namespaces (tests/swarm/up, which tests/run starts as root), the demo images on each.
//! Without the swarm these tests fail when CUTOVER_REQUIRE_SWARM is set (CI), and otherwise
//! say why they did not run.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use cutover_docker::swarm::{ServiceDeploy, UpdateOrder};
use cutover_docker::{Runtime, RuntimeError};
use cutover_testkit::cmd::{build_demo_images, docker};

const RUN: &str = "/run/cosw";

fn socket(node: u8) -> String {
    format!("unix://{RUN}/{node}/docker.sock")
}

fn swarm_present() -> bool {
    if std::path::Path::new(&format!("{RUN}/1/docker.sock")).exists() {
        return true;
    }
    assert!(
        std::env::var_os("CUTOVER_REQUIRE_SWARM").is_none(),
        "no swarm at {RUN}: run tests/swarm/up (as root)"
    );
    eprintln!("SKIPPED: no swarm at {RUN} (tests/swarm/up makes one; CI requires it)");
    false
}

fn image_id(reference: &str) -> String {
    docker(&["image", "inspect", "-f", "{{.Id}}", reference])
        .trim()
        .to_string()
}

/// What node `addr` (10.77.0.1N) answers on `/version` at `port`.
fn version_at(addr: &str, port: u16) -> String {
    let a: SocketAddr = format!("{addr}:{port}").parse().expect("addr");
    cutover_testkit::net::get_now(a, "/version")
}

/// The image ID of a task's container, asked of the engine of the node that runs it.
fn container_image(node_addr: &str, container: &str) -> String {
    let n = node_addr
        .rsplit('.')
        .next()
        .and_then(|o| o.strip_prefix('1'))
        .expect("a node address");
    let o = std::process::Command::new("docker")
        .args([
            "-H",
            &format!("unix://{RUN}/{n}/docker.sock"),
            "inspect",
            "-f",
            "{{.Image}}",
            container,
        ])
        .output()
        .expect("docker inspect");
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_is_refused_and_a_manager_deploys_updates_and_reverts_across_three_nodes() {
    if !swarm_present() {
        return;
    }
    build_demo_images();
    let worker = Runtime::connect_to(&socket(2)).await.expect("node 2");
    let err = worker
        .swarm_manager()
        .await
        .expect_err("a worker is no manager");
    assert!(err.to_string().contains("swarm worker"), "{err}");
    let rt = Runtime::connect_to(&socket(1)).await.expect("the manager");
    rt.swarm_manager().await.expect("node 1 manages the swarm");

    let stack = format!("t-swarm-{}", std::process::id());
    let port = 20000 + (std::process::id() % 10000) as u16;
    let (v1, v2, v3) = (
        image_id("cutover-demo:v1"),
        image_id("cutover-demo:v2"),
        image_id("cutover-demo:v3-broken"),
    );
    let probe: Vec<String> = ["/cutover-demo", "probe", "http://127.0.0.1:8080/health"]
        .map(String::from)
        .to_vec();
    let ports = [(port, 8080)];
    let base = ServiceDeploy {
        stack: &stack,
        service: "app",
        image: "",
        image_ref: "",
        release: 1,
        replicas: 3,
        constraints: &[],
        max_per_node: Some(1),
        ports: &ports,
        env: &[],
        health: Some(&probe),
        health_interval: Duration::from_millis(500),
        order: UpdateOrder::StopFirst,
        parallelism: 1,
        delay: Duration::ZERO,
    };
    fn with<'a>(base: &ServiceDeploy<'a>, image_ref: &'a str, id: &'a str) -> ServiceDeploy<'a> {
        ServiceDeploy {
            image: id,
            image_ref,
            ..base.clone()
        }
    }
    struct Gone<'a>(&'a Runtime, &'a str);
    impl Drop for Gone<'_> {
        fn drop(&mut self) {
            let (rt, stack) = (self.0.clone(), self.1.to_string());
            let _ = std::thread::spawn(move || {
                tokio::runtime::Runtime::new()
                    .expect("rt")
                    .block_on(rt.remove_service(&stack, "app"))
            })
            .join();
        }
    }
    let _gone = Gone(&rt, &stack);
    let settle = Duration::from_secs(1);
    let limit = Duration::from_secs(120);

    // v1: three replicas, one on each node, each answering on its own node's address.
    let up = rt
        .deploy_service(&with(&base, "cutover-demo:v1", &v1), settle, limit)
        .await
        .expect("v1 converges");
    assert_eq!(up.tasks.len(), 3, "{:?}", up.tasks);
    let nodes: BTreeSet<String> = up
        .tasks
        .iter()
        .filter_map(|t| t.node_addr.clone())
        .collect();
    assert_eq!(nodes.len(), 3, "spread over three nodes: {:?}", up.tasks);
    for n in &nodes {
        assert_eq!(version_at(n, port), "v1");
    }

    // v2 replaces every task; each node's engine runs v2's image ID.
    let up = rt
        .deploy_service(&with(&base, "cutover-demo:v2", &v2), settle, limit)
        .await
        .expect("v2 converges");
    for t in &up.tasks {
        assert_eq!(t.image, v2);
        let addr = t.node_addr.as_deref().expect("node address");
        assert_eq!(
            container_image(addr, t.container.as_deref().expect("container")),
            v2
        );
        assert_eq!(version_at(addr, port), "v2");
    }

    // v3-broken never turns healthy: the first failed task ends the wait with its reason.
    let err = rt
        .deploy_service(&with(&base, "cutover-demo:v3-broken", &v3), settle, limit)
        .await
        .expect_err("v3-broken fails");
    assert!(matches!(err, RuntimeError::Swarm(_)), "{err}");
    let said = err.to_string();
    assert!(
        said.contains("failed") || said.contains("stopped the update"),
        "{said}"
    );

    // The revert is cutover's: v2 again, by its image ID, on every node.
    let back = rt
        .deploy_service(&with(&base, "cutover-demo:v2", &v2), settle, limit)
        .await
        .expect("v2 again");
    assert_eq!(back.tasks.len(), 3);
    for t in &back.tasks {
        assert_eq!(t.image, v2);
        let addr = t.node_addr.as_deref().expect("node address");
        assert_eq!(
            container_image(addr, t.container.as_deref().expect("container")),
            v2
        );
        assert_eq!(version_at(addr, port), "v2");
    }

    // Scaled to 0 (a quiesce) and back.
    let none = rt
        .scale_service(&stack, "app", 0, settle, limit)
        .await
        .expect("scaled to 0");
    assert!(none.tasks.is_empty(), "{:?}", none.tasks);
    let again = rt
        .scale_service(&stack, "app", 3, settle, limit)
        .await
        .expect("scaled to 3");
    assert_eq!(again.tasks.len(), 3);
}
