//! The container steps against a runtime in memory: each strategy, the revert's way back,
//! the release's record and cleanup, preflight's image and port checks.

use std::path::Path;

use cutover_core::plan::{PlanStep, StepKind};
use cutover_core::runtime::{ContainerInfo, PortHolder, Slot};
use cutover_core::spec::{Phase, Stack, load::LoadOptions};
use indexmap::IndexMap;

use super::Containers;
use crate::fake::{Fake, Traffic};
use crate::record::ReleaseImages;

fn stack(yaml: &str) -> Stack {
    cutover_core::spec::load::load_str(Path::new("cutover.yaml"), yaml, &LoadOptions::default())
        .unwrap_or_else(|d| panic!("{d:?}"))
        .stack
}

fn shop(web: &str, api: &str) -> Stack {
    shop_restarting(web, api, "unless-stopped")
}

/// `web`'s restart policy is `restart`.
fn shop_restarting(web: &str, api: &str, restart: &str) -> Stack {
    stack(&format!(
        "name: shop
services:
  web:
    image: {web}
    port: 8080
    strategy: recreate
    restart: {restart}
    stop_grace: 7s
    env: {{ MODE: fast }}
    migrate: {{ command: [migrate], timeout: 1m }}
  api:
    image: {api}
    port: 8080
    strategy: blue-green
traffic:
  listen: 127.0.0.1:8443
  routes:
    - {{ path: /api, service: api }}
"
    ))
}

/// A routed recreate: requests are held while the service is down.
fn routed_web(web: &str) -> Stack {
    stack(&format!(
        "name: shop
services:
  web:
    image: {web}
    port: 8080
traffic:
  listen: 127.0.0.1:8443
  routes:
    - {{ path: /, service: web }}
"
    ))
}

struct World {
    fake: Fake,
    traffic: Traffic,
    desired: Stack,
    previous: Stack,
    before: Vec<ContainerInfo>,
}

impl World {
    /// Release 1 runs web on app:v1 and api (blue) on api:v1; release 2 is being made.
    fn new(desired: Stack, previous: Stack) -> World {
        let fake = Fake::new();
        fake.image("app:v1", "sha256:a1")
            .image("app:v2", "sha256:a2")
            .image("api:v1", "sha256:b1")
            .image("api:v2", "sha256:b2");
        let before = vec![
            fake.running("shop", "web", 1, Slot::Single, "app:v1"),
            fake.running("shop", "api", 1, Slot::Blue, "api:v1"),
        ];
        World {
            fake,
            traffic: Traffic::default(),
            desired,
            previous,
            before,
        }
    }

    fn shop() -> World {
        World::new(shop("app:v2", "api:v2"), shop("app:v1", "api:v1"))
    }

    fn family(&self) -> Containers<'_> {
        Containers {
            runtime: &self.fake,
            desired: &self.desired,
            previous: Some(&self.previous),
            release: 2,
            from_release: Some(1),
            pins: IndexMap::new(),
            images: ReleaseImages::default(),
            before: self.before.clone(),
            traffic: Box::new(self.traffic.clone()),
            ack_settings: false,
            adopting: IndexMap::new(),
        }
    }
}

fn step(phase: Phase, action: StepKind) -> PlanStep {
    PlanStep {
        id: "test.step".into(),
        phase,
        title: "a step".into(),
        action,
        rerun_safe: true,
    }
}

fn run(c: &mut Containers<'_>, phase: Phase, action: StepKind) -> Result<String, String> {
    c.run(&step(phase, action))
        .expect("a container step")
        .map_err(|e| e.message)
}

fn svc(name: &str) -> String {
    name.to_string()
}

#[test]
fn recreate_stops_the_old_container_before_it_starts_the_new_one_on_the_ensured_image() {
    let w = World::shop();
    let mut c = w.family();
    let out = run(
        &mut c,
        Phase::Preflight,
        StepKind::EnsureImage {
            service: svc("web"),
            image: "app:v2".into(),
        },
    )
    .expect("image");
    assert_eq!(out, "app:v2 is sha256:a2");
    w.fake.clear_log();
    let out = run(
        &mut c,
        Phase::Upgrade,
        StepKind::Recreate {
            service: svc("web"),
        },
    )
    .expect("recreate");
    // The stack's grace (7 s), then the new container of release 2.
    assert_eq!(w.fake.log(), ["stop shop-web-r1 (7s)", "run shop-web-r2"]);
    let new = w.fake.container("shop-web-r2").expect("new container");
    assert_eq!(new.image_id, "sha256:a2");
    assert!(
        out.starts_with("stopped shop-web-r1; started shop-web-r2 on a2"),
        "{out}"
    );
    // The old one is stopped, not removed: it is the revert target.
    assert_eq!(
        w.fake.container("shop-web-r1").map(|c| c.state),
        Some("exited".into())
    );
    // Not routed: the traffic layer was never asked.
    assert!(w.traffic.log().is_empty());
    // How long the start took goes with the release record.
    assert!(c.images.0["web"].started_in_ms.is_some());
}

#[test]
fn recreate_run_again_after_a_crash_finds_its_container_and_changes_nothing() {
    let w = World::shop();
    w.fake.running("shop", "web", 2, Slot::Single, "app:v2");
    let mut c = w.family();
    w.fake.clear_log();
    let out = run(
        &mut c,
        Phase::Upgrade,
        StepKind::Recreate {
            service: svc("web"),
        },
    )
    .expect("recreate");
    assert!(out.starts_with("shop-web-r2 already runs"), "{out}");
    assert!(w.fake.log().is_empty(), "{:?}", w.fake.log());
}

#[test]
fn a_routed_recreate_holds_requests_until_the_new_container_is_switched_in() {
    let w = World::new(routed_web("app:v2"), routed_web("app:v1"));
    let mut c = w.family();
    run(
        &mut c,
        Phase::Upgrade,
        StepKind::Recreate {
            service: svc("web"),
        },
    )
    .expect("recreate");
    let new = w.fake.container("shop-web-r2").expect("new");
    let t = w.traffic.log();
    assert_eq!(t.len(), 3, "{t:?}");
    assert_eq!(t[0], "hold web");
    assert_eq!(t[1], format!("switch web {}", new.published[0].1));
    assert_eq!(t[2], "release web");
}

#[test]
fn blue_green_starts_the_new_slot_switches_drains_and_only_then_stops_the_old() {
    let w = World::shop();
    let mut c = w.family();
    w.fake.clear_log();
    let out = run(
        &mut c,
        Phase::Upgrade,
        StepKind::BlueGreen {
            service: svc("api"),
        },
    )
    .expect("bg");
    assert_eq!(
        w.fake.log(),
        ["run shop-api-r2-green", "stop shop-api-r1-blue (10s)"]
    );
    let new = w.fake.container("shop-api-r2-green").expect("green");
    assert_eq!(
        w.traffic.log(),
        [
            format!("switch api {}", new.published[0].1),
            "drain api 1".to_string()
        ]
    );
    assert!(out.contains("(green slot)"), "{out}");
}

#[test]
fn blue_green_whose_new_container_never_turns_healthy_removes_it_and_leaves_the_old_serving() {
    let w = World::shop();
    w.fake
        .state
        .borrow_mut()
        .unhealthy
        .insert("sha256:b2".into());
    let mut c = w.family();
    w.fake.clear_log();
    let err = run(
        &mut c,
        Phase::Upgrade,
        StepKind::BlueGreen {
            service: svc("api"),
        },
    )
    .expect_err("unhealthy");
    assert!(err.contains("did not become healthy"), "{err}");
    assert_eq!(
        w.fake.log(),
        ["run shop-api-r2-green", "remove shop-api-r2-green"]
    );
    assert!(
        w.traffic.log().is_empty(),
        "no switch: {:?}",
        w.traffic.log()
    );
    assert_eq!(
        w.fake.container("shop-api-r1-blue").map(|c| c.state),
        Some("running".into())
    );
}

#[test]
fn the_revert_removes_only_the_new_release_and_starts_what_ran_before() {
    // Release 1 ran `web` with restart: always; release 2 asks unless-stopped.
    let w = World::new(
        shop_restarting("app:v2", "api:v2", "unless-stopped"),
        shop_restarting("app:v1", "api:v1", "always"),
    );
    let mut c = w.family();
    run(
        &mut c,
        Phase::Upgrade,
        StepKind::Recreate {
            service: svc("web"),
        },
    )
    .expect("recreate");
    w.fake.clear_log();
    let out = run(
        &mut c,
        Phase::Revert,
        StepKind::StartPrevious {
            service: svc("web"),
        },
    )
    .expect("back");
    assert_eq!(
        w.fake.log(),
        [
            "remove shop-web-r2",
            "start shop-web-r1",
            // The old container gets back the policy its own release gave it.
            "restart shop-web-r1 Always"
        ]
    );
    assert!(out.starts_with("shop-web-r1 runs a1 again"), "{out}");
    // And the comparison agrees.
    let same = c.compare_with_before(Vec::new()).expect("same as before");
    assert!(
        same.starts_with("2 container(s) run the same image IDs"),
        "{same}"
    );
}

#[test]
fn the_revert_says_how_to_recover_when_the_old_container_is_gone() {
    let w = World::shop();
    let mut c = w.family();
    w.fake
        .state
        .borrow_mut()
        .containers
        .retain(|c| c.name != "shop-web-r1");
    let err = run(
        &mut c,
        Phase::Revert,
        StepKind::StartPrevious {
            service: svc("web"),
        },
    )
    .expect_err("gone");
    assert!(
        err.contains("shop-web-r1 of `web` that ran before the operation is gone"),
        "{err}"
    );
    assert!(err.contains("`cutover rollback 1`"), "{err}");
}

#[test]
fn a_routed_revert_routes_to_the_restarted_containers_new_ports_and_releases_held_requests() {
    let w = World::new(routed_web("app:v2"), routed_web("app:v1"));
    let mut c = w.family();
    run(
        &mut c,
        Phase::Upgrade,
        StepKind::Recreate {
            service: svc("web"),
        },
    )
    .expect("recreate");
    w.traffic.0.borrow_mut().clear();
    run(
        &mut c,
        Phase::Revert,
        StepKind::StartPrevious {
            service: svc("web"),
        },
    )
    .expect("back");
    let old = w.fake.container("shop-web-r1").expect("old");
    assert_ne!(
        old.published, w.before[0].published,
        "a restart gets a new host port"
    );
    assert_eq!(
        w.traffic.log(),
        [
            format!("switch web {}", old.published[0].1),
            "release web".to_string()
        ]
    );
}

#[test]
fn the_comparison_names_every_difference() {
    let w = World::shop();
    let mut c = w.family();
    run(
        &mut c,
        Phase::Upgrade,
        StepKind::Recreate {
            service: svc("web"),
        },
    )
    .expect("recreate");
    let err = c
        .compare_with_before(vec!["schema version of `db` is 3 (was 2)".into()])
        .expect_err("differs")
        .message;
    assert!(err.contains("shop-web-r1 is exited"), "{err}");
    assert!(
        err.contains("shop-web-r2 of the reverted release still runs"),
        "{err}"
    );
    assert!(err.contains("schema version of `db` is 3 (was 2)"), "{err}");
}

#[test]
fn a_failed_first_deploy_takes_its_network_away() {
    let w = World::shop();
    w.fake.state.borrow_mut().containers.clear();
    let mut c = w.family();
    c.before.clear();
    let out = c.compare_with_before(Vec::new()).expect("nothing runs");
    assert!(
        out.ends_with("removed network cutover-shop, which this first deploy created"),
        "{out}"
    );
}

#[test]
fn settings_the_new_image_no_longer_accepts_refuse_unless_acknowledged() {
    let w = World::shop();
    w.fake.image_labelled(
        "app:v2",
        "sha256:a2",
        "io.cutover.settings.accepted",
        "DB_URL",
    );
    let mut c = w.family();
    let step = StepKind::EnsureImage {
        service: svc("web"),
        image: "app:v2".into(),
    };
    let err = run(&mut c, Phase::Preflight, step.clone()).expect_err("refused");
    assert!(
        err.contains("no longer accepts settings `web` sets: MODE"),
        "{err}"
    );
    c.ack_settings = true;
    let out = run(&mut c, Phase::Preflight, step).expect("acknowledged");
    assert!(
        out.contains("not accepted by this version (acknowledged): MODE"),
        "{out}"
    );
}

#[test]
fn a_rollback_runs_the_pinned_image_id_whatever_the_tag_says_now() {
    let w = World::shop();
    let mut c = w.family();
    c.pins.insert(svc("web"), "sha256:a1".into());
    let out = run(
        &mut c,
        Phase::Preflight,
        StepKind::EnsureImage {
            service: svc("web"),
            image: "app:v2".into(),
        },
    )
    .expect("pinned");
    assert_eq!(out, "app:v2 is sha256:a1");
    run(
        &mut c,
        Phase::Upgrade,
        StepKind::Recreate {
            service: svc("web"),
        },
    )
    .expect("recreate");
    assert_eq!(
        w.fake.container("shop-web-r2").map(|c| c.image_id),
        Some("sha256:a1".into())
    );
}

#[test]
fn a_migration_that_exits_non_zero_fails_with_its_code_and_last_lines() {
    let w = World::shop();
    w.fake.state.borrow_mut().job_exit = 71;
    let mut c = w.family();
    let err = run(
        &mut c,
        Phase::Upgrade,
        StepKind::Migrate {
            service: svc("web"),
        },
    )
    .expect_err("fails");
    assert!(err.contains("the migration of `web`"), "{err}");
    assert!(err.contains("exited with code 71"), "{err}");
    assert!(err.contains("exit 71"), "its log lines: {err}");
    assert_eq!(w.fake.log(), ["job migrate web on sha256:a2"]);
}

#[test]
fn ports_held_by_what_the_upgrade_replaces_are_fine_anything_else_refuses() {
    let w = World::shop();
    let held = |name: &str, stack: Option<&str>, service: Option<&str>, project: Option<&str>| {
        PortHolder {
            name: name.into(),
            ports: vec![18_080],
            stack: stack.map(Into::into),
            service: service.map(Into::into),
            compose_project: project.map(Into::into),
            compose_service: None,
        }
    };
    let ports = vec![(svc("web"), 18_080)];
    w.fake.state.borrow_mut().port_holders =
        vec![held("shop-web-r1", Some("shop"), Some("web"), None)];
    let mut c = w.family();
    run(
        &mut c,
        Phase::Preflight,
        StepKind::CheckPorts {
            ports: ports.clone(),
        },
    )
    .expect("its own");

    w.fake.state.borrow_mut().port_holders = vec![held("legacy-web-1", None, None, Some("legacy"))];
    let err = run(
        &mut c,
        Phase::Preflight,
        StepKind::CheckPorts {
            ports: ports.clone(),
        },
    )
    .expect_err("foreign");
    assert_eq!(
        err,
        "host port 18080 of `web` is published by container legacy-web-1 (compose project `legacy`); free them, or change `ports`; nothing was changed"
    );
    // … unless this operation takes that container over.
    c.adopting.insert(svc("web"), vec!["legacy-web-1".into()]);
    run(
        &mut c,
        Phase::Preflight,
        StepKind::CheckPorts {
            ports: ports.clone(),
        },
    )
    .expect("taken over");

    w.fake.state.borrow_mut().port_holders =
        vec![held("shop2-web-r4", Some("shop2"), Some("web"), None)];
    let err =
        run(&mut c, Phase::Preflight, StepKind::CheckPorts { ports }).expect_err("other stack");
    assert!(err.contains("service `web` of stack `shop2`"), "{err}");
}

#[test]
fn release_records_every_image_and_removes_only_what_no_rollback_needs() {
    let w = World::shop();
    // A stopped container of release 0: neither this release's nor the revert target.
    let stale = w.fake.running("shop", "web", 0, Slot::Single, "sha256:a0");
    w.fake
        .state
        .borrow_mut()
        .containers
        .iter_mut()
        .for_each(|c| {
            if c.id == stale.id {
                c.state = "exited".into();
            }
        });
    let mut c = w.family();
    run(
        &mut c,
        Phase::Preflight,
        StepKind::EnsureImage {
            service: svc("web"),
            image: "app:v2".into(),
        },
    )
    .expect("image");
    run(
        &mut c,
        Phase::Upgrade,
        StepKind::Recreate {
            service: svc("web"),
        },
    )
    .expect("recreate");
    c.settle_images().expect("images");
    // `api` was never ensured: the image it runs is recorded, under its reference.
    assert_eq!(c.images.0["web"].id, "sha256:a2");
    assert_eq!(c.images.0["api"].id, "sha256:b1");
    assert_eq!(c.images.0["api"].reference, "api:v1");
    let removed = c.remove_superseded().expect("cleanup");
    assert_eq!(removed, ["shop-web-r0"]);
    assert!(
        w.fake.container("shop-web-r1").is_some(),
        "the rollback target stays"
    );
}

#[test]
fn a_compose_projects_containers_are_stopped_given_back_and_removed_by_name() {
    let w = World::shop();
    w.fake
        .state
        .borrow_mut()
        .foreign
        .insert("legacy-web-1".into(), true);
    let mut c = w.family();
    let names = vec!["legacy-web-1".to_string(), "legacy-gone-1".to_string()];
    run(
        &mut c,
        Phase::Quiesce,
        StepKind::Adopt {
            service: svc("web"),
            containers: names[..1].to_vec(),
        },
    )
    .expect("adopt");
    let out = run(
        &mut c,
        Phase::Revert,
        StepKind::GiveBack {
            service: svc("web"),
            containers: names.clone(),
        },
    )
    .expect("give back");
    assert_eq!(out, "legacy-web-1 runs again; legacy-gone-1 is gone");
    assert_eq!(
        w.fake.log(),
        ["stop foreign legacy-web-1 (7s)", "start legacy-web-1"]
    );
    // After the release: removed; what cannot be removed is said, and fails nothing.
    w.fake.clear_log();
    let out = run(
        &mut c,
        Phase::Release,
        StepKind::RemoveAdopted { containers: names },
    )
    .expect("never fails");
    assert_eq!(
        out,
        "removed legacy-web-1; not removed: legacy-gone-1 (no such container: legacy-gone-1; `docker rm -f legacy-gone-1` removes it)"
    );
    assert_eq!(w.fake.log(), ["remove legacy-web-1"]);
}

#[test]
fn quiesce_stops_with_the_grace_and_start_brings_back_the_same_containers_with_the_new_policy() {
    let w = World::new(
        shop_restarting("app:v1", "api:v1", "on-failure"),
        shop_restarting("app:v1", "api:v1", "always"),
    );
    let mut c = w.family();
    let out = run(
        &mut c,
        Phase::Quiesce,
        StepKind::Stop {
            service: svc("web"),
        },
    )
    .expect("stop");
    assert_eq!(out, "stopped shop-web-r1");
    let out = run(
        &mut c,
        Phase::Upgrade,
        StepKind::Start {
            service: svc("web"),
        },
    )
    .expect("start");
    assert_eq!(out, "shop-web-r1 healthy");
    assert_eq!(
        w.fake.log(),
        [
            "stop shop-web-r1 (7s)",
            "start shop-web-r1",
            "restart shop-web-r1 OnFailure"
        ]
    );
}

#[test]
fn a_new_service_gets_its_first_container_once_and_a_revert_takes_only_it_away() {
    let w = World::shop();
    let mut c = w.family();
    let out = run(
        &mut c,
        Phase::Upgrade,
        StepKind::Create {
            service: svc("api"),
        },
    )
    .expect("create");
    assert!(
        out.starts_with("started shop-api-r2-blue on b2; shop-api-r2-blue healthy; "),
        "{out}"
    );
    assert_eq!(w.traffic.log().len(), 1, "routed: switched to it");
    let again = run(
        &mut c,
        Phase::Upgrade,
        StepKind::Create {
            service: svc("api"),
        },
    )
    .expect("again");
    assert_eq!(again, "shop-api-r2-blue already runs");
    // Revert: Stop and Remove take away only release 2's containers.
    w.fake.clear_log();
    let out = run(
        &mut c,
        Phase::Revert,
        StepKind::Stop {
            service: svc("api"),
        },
    )
    .expect("revert");
    assert_eq!(out, "removed shop-api-r2-blue");
    let out = run(
        &mut c,
        Phase::Revert,
        StepKind::Remove {
            service: svc("api"),
        },
    )
    .expect("again");
    assert_eq!(out, "nothing of release 2 runs for `api`");
    assert_eq!(w.fake.log(), ["remove shop-api-r2-blue"]);
    assert_eq!(
        w.fake.container("shop-api-r1-blue").map(|c| c.state),
        Some("running".into())
    );
}

#[test]
fn steps_of_other_families_are_not_this_ones() {
    let w = World::shop();
    let mut c = w.family();
    assert!(
        c.run(&step(Phase::Release, StepKind::RecordRelease))
            .is_none()
    );
    assert!(
        c.run(&step(
            Phase::RestorePoint,
            StepKind::TakeRestorePoint { data: "db".into() }
        ))
        .is_none()
    );
}
