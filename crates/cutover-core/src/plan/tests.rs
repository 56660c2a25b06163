//! The plan: ordering, what changes, restore points and the revert, on small stacks.

use std::collections::HashMap;

use super::*;
use crate::spec::{LoadOptions, load_str};

fn stack(text: &str, env: &[(&str, &str)]) -> Stack {
    let opts = LoadOptions {
        process_env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<HashMap<_, _>>(),
        ..LoadOptions::default()
    };
    match load_str(std::path::Path::new("/srv/stack/cutover.yaml"), text, &opts) {
        Ok(l) => l.stack,
        Err(d) => panic!("test stack must be valid:\n{d}"),
    }
}

fn live(s: &Stack, release: u64) -> Observed {
    Observed {
        release: Some(release),
        stack: Some(s.clone()),
        image_ids: IndexMap::new(),
        adoptable: IndexMap::new(),
        started_in: IndexMap::new(),
    }
}

fn ids(plan: &Plan) -> Vec<&str> {
    plan.steps().map(|s| s.id.as_str()).collect()
}

const GROUPER: &str = "\
name: grouper
secrets: { PW: { env: PW } }
services:
  ui:
    image: grouper:${V}
    port: 8080
    depends_on: [daemon]
    strategy: blue-green
    env: { MODE: ui, PASSWORD: '${PW}' }
  daemon:
    image: grouper:${V}
    env: { MODE: daemon, OLD: x }
data:
  db:
    postgres: { url: 'postgres://admin:${PW}@db/grouper', database: grouper }
    writers: [daemon]
    schema_version: { query: select 1, expect: '${V}' }
traffic:
  routes: [{ service: ui }]
";

#[test]
fn a_first_deploy_creates_everything_in_dependency_order_without_restore_points() {
    let s = stack(GROUPER, &[("V", "1"), ("PW", "a")]);
    let p = plan(&s, &Observed::default(), &Resolved::default());
    assert!(p.changes);
    assert_eq!((p.from_release, p.to_release), (None, 1));
    let order: Vec<(&str, Action)> = p
        .services
        .iter()
        .map(|c| (c.service.as_str(), c.action))
        .collect();
    assert_eq!(
        order,
        vec![("daemon", Action::Create), ("ui", Action::Create)]
    );
    assert!(p.data.is_empty(), "nothing to go back to on a first deploy");
    assert_eq!(
        ids(&p),
        vec![
            "preflight.image.daemon",
            "preflight.image.ui",
            "upgrade.create.daemon",
            "upgrade.create.ui",
            "release.record",
        ]
    );
    let revert: Vec<&str> = p.revert.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(
        revert,
        vec!["revert.remove.ui", "revert.remove.daemon", "revert.compare"]
    );
}

#[test]
fn an_upgrade_quiesces_writers_takes_a_restore_point_and_verifies_the_schema() {
    let before = stack(GROUPER, &[("V", "1"), ("PW", "a")]);
    let after = stack(
        &GROUPER.replace("OLD: x", "NEW: y"),
        &[("V", "2"), ("PW", "a")],
    );
    let p = plan(&after, &live(&before, 7), &Resolved::default());
    assert_eq!((p.from_release, p.to_release), (Some(7), 8));
    assert_eq!(p.data.len(), 1);
    assert_eq!(p.data[0].writers, vec!["daemon"]);
    let daemon = &p.services[0];
    assert_eq!(daemon.action, Action::Upgrade);
    assert!(daemon.quiesced);
    assert_eq!(daemon.downtime.kind, DowntimeKind::Window);
    let keys: Vec<(&str, &KeyChangeKind)> = daemon
        .env
        .iter()
        .map(|k| (k.key.as_str(), &k.change))
        .collect();
    assert_eq!(
        keys,
        vec![
            ("NEW", &KeyChangeKind::Added),
            ("OLD", &KeyChangeKind::Removed)
        ]
    );
    let ui = &p.services[1];
    assert_eq!(
        ui.downtime.kind,
        DowntimeKind::None,
        "blue-green and not a writer"
    );
    assert_eq!(
        ids(&p),
        vec![
            "preflight.image.daemon",
            "preflight.image.ui",
            "preflight.data.db",
            "preflight.schema.db",
            "quiesce.stop.daemon",
            "restore_point.db",
            "upgrade.recreate.daemon",
            "upgrade.blue-green.ui",
            "verify.schema.db",
            "release.record",
        ]
    );
    let schema = p
        .steps()
        .find(|s| s.id == "verify.schema.db")
        .map(|s| &s.action);
    assert_eq!(
        schema,
        Some(&StepKind::CheckSchemaVersion {
            data: "db".into(),
            expect: Some("2".into())
        })
    );
    let pre = p
        .steps()
        .find(|s| s.id == "preflight.schema.db")
        .map(|s| &s.action);
    assert_eq!(
        pre,
        Some(&StepKind::CheckSchemaVersion {
            data: "db".into(),
            expect: Some("1".into())
        }),
        "preflight checks the live schema against the live release"
    );
    let revert: Vec<&str> = p.revert.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(
        revert,
        vec![
            "revert.stop.ui",
            "revert.stop.daemon",
            "revert.restore.db",
            "revert.start.daemon",
            "revert.start.ui",
            "revert.compare",
        ]
    );
}

#[test]
fn nothing_changes_when_the_stack_is_what_runs() {
    let s = stack(GROUPER, &[("V", "1"), ("PW", "a")]);
    let p = plan(&s, &live(&s, 3), &Resolved::default());
    assert!(!p.changes);
    assert!(p.procedure.is_empty() && p.revert.is_empty() && p.data.is_empty());
    assert!(p.services.iter().all(|c| c.action == Action::Unchanged));
}

#[test]
fn a_moved_tag_is_an_upgrade_when_the_image_id_differs() {
    let s = stack(GROUPER, &[("V", "1"), ("PW", "a")]);
    let mut obs = live(&s, 3);
    obs.image_ids.insert("daemon".into(), "sha256:aaaa".into());
    let resolved = Resolved {
        image_ids: [("daemon".to_string(), "sha256:bbbb".to_string())]
            .into_iter()
            .collect(),
        ..Resolved::default()
    };
    let p = plan(&s, &obs, &resolved);
    let daemon = &p.services[0];
    assert_eq!(daemon.action, Action::Upgrade);
    assert_eq!(
        daemon.image_from.as_ref().and_then(|i| i.id.as_deref()),
        Some("sha256:aaaa")
    );
    assert_eq!(
        daemon.image_to.as_ref().and_then(|i| i.id.as_deref()),
        Some("sha256:bbbb")
    );
}

#[test]
fn secret_env_values_appear_only_as_references() {
    let before = stack(GROUPER, &[("V", "1"), ("PW", "old-secret")]);
    let after = stack(
        &GROUPER.replace("PASSWORD: '${PW}'", "PASSWORD: 'v2-${PW}'"),
        &[("V", "1"), ("PW", "new-secret")],
    );
    let p = plan(&after, &live(&before, 1), &Resolved::default());
    let ui = p.services.iter().find(|c| c.service == "ui").expect("ui");
    assert_eq!(ui.env.len(), 1);
    let k = &ui.env[0];
    assert!(k.secret);
    assert_eq!(
        (k.from.as_deref(), k.to.as_deref()),
        (Some("${PW}"), Some("v2-${PW}"))
    );
    let all = format!(
        "{}{}{}",
        serde_json::to_string(&p).expect("json"),
        render::text(&p, false),
        render::markdown(&p)
    );
    assert!(
        !all.contains("old-secret") && !all.contains("new-secret"),
        "a secret value leaked into the plan output"
    );
}

#[test]
fn manual_services_wait_and_removed_services_go() {
    let before = stack(
        "name: s\nservices:\n  a: { image: 'x:1', strategy: manual }\n  gone: { image: y }\n",
        &[],
    );
    let after = stack(
        "name: s\nservices:\n  a: { image: 'x:2', strategy: manual }\n",
        &[],
    );
    let p = plan(&after, &live(&before, 1), &Resolved::default());
    let actions: Vec<(&str, Action, DowntimeKind)> = p
        .services
        .iter()
        .map(|c| (c.service.as_str(), c.action, c.downtime.kind))
        .collect();
    assert_eq!(
        actions,
        vec![
            ("a", Action::Upgrade, DowntimeKind::Deferred),
            ("gone", Action::Remove, DowntimeKind::Window),
        ]
    );
    assert_eq!(
        ids(&p),
        vec![
            "preflight.image.a",
            "upgrade.pending.a",
            "upgrade.remove.gone",
            "release.record"
        ]
    );
}

#[test]
fn unchanged_writers_are_restarted_around_the_restore_point() {
    let text = "\
name: s
services:
  api: { image: 'api:${V}' }
  worker: { image: 'worker:1' }
data:
  files: { sqlite: { path: app.db } }
";
    let before = stack(text, &[("V", "1")]);
    let after = stack(text, &[("V", "2")]);
    let p = plan(&after, &live(&before, 1), &Resolved::default());
    let worker = &p.services[1];
    assert_eq!(
        worker.action,
        Action::Restart,
        "default writers: every service"
    );
    assert!(ids(&p).contains(&"quiesce.stop.worker"));
    assert!(ids(&p).contains(&"upgrade.start.worker"));
    assert_eq!(p.data[0].describe, "SQLite file /srv/stack/app.db");
}

#[test]
fn a_routed_recreate_holds_requests_when_it_fits_in_max_hold_else_shows_maintenance() {
    let text = |grace: &str| {
        format!(
            "name: web\nservices:\n  app:\n    image: app:${{V}}\n    port: 8080\n    stop_grace: {grace}\n    \
             health: {{ http: /health, deadline: 3s }}\ntraffic:\n  routes: [{{ service: app }}]\n  max_hold: 10s\n"
        )
    };
    let short_v1 = stack(&text("2s"), &[("V", "1")]);
    let short_v2 = stack(&text("2s"), &[("V", "2")]);
    let p = plan(&short_v2, &live(&short_v1, 1), &Resolved::default());
    assert!(
        !p.steps().any(|s| s.action == StepKind::MaintenanceOn),
        "a 5 s window fits in a 10 s hold: {:?}",
        ids(&p)
    );
    assert!(
        p.services[0].downtime.because.contains("requests held"),
        "{:?}",
        p.services[0].downtime
    );
    assert!(holds_requests(&short_v2, &p.services[0]));

    let long_v1 = stack(&text("30s"), &[("V", "1")]);
    let long_v2 = stack(&text("30s"), &[("V", "2")]);
    let p = plan(&long_v2, &live(&long_v1, 1), &Resolved::default());
    assert!(!holds_requests(&long_v2, &p.services[0]));
    assert!(p.services[0].downtime.because.contains("maintenance page"));
    let on = ids(&p).iter().position(|i| *i == "quiesce.maintenance");
    let off = ids(&p).iter().position(|i| *i == "release.maintenance");
    assert!(on.is_some() && off.is_some() && on < off, "{:?}", ids(&p));
    assert!(
        p.revert
            .iter()
            .any(|s| s.action == StepKind::MaintenanceOff),
        "a revert always takes the page down"
    );
}

const MIGRATING: &str = "\
name: app
services:
  web:
    image: app:${V}
    env: { MODE: '${MODE:-a}' }
    migrate: { command: [app, db, upgrade], timeout: 2m }
steps:
  verify:
    - run: [/bin/true]
      name: every time
    - check: rows
      when: upgrade
    - run: [/bin/true]
      name: seed
      when: first-deploy
checks:
  rows: { command: [/bin/true] }
";

#[test]
fn the_migration_runs_once_on_the_new_image_before_the_new_container_starts() {
    let v1 = stack(MIGRATING, &[("V", "1")]);
    let first = plan(&v1, &Observed::default(), &Resolved::default());
    assert_eq!(
        ids(&first)
            .into_iter()
            .filter(|i| i.starts_with("upgrade."))
            .collect::<Vec<_>>(),
        vec!["upgrade.migrate.web", "upgrade.create.web"],
        "a first deploy migrates the empty database too"
    );
    let v2 = stack(MIGRATING, &[("V", "2")]);
    let up = plan(&v2, &live(&v1, 1), &Resolved::default());
    let steps: Vec<&PlanStep> = up.steps().collect();
    let at = |id: &str| {
        steps
            .iter()
            .position(|s| s.id == id)
            .unwrap_or_else(|| panic!("no {id} in {:?}", ids(&up)))
    };
    assert_eq!(at("upgrade.migrate.web") + 1, at("upgrade.recreate.web"));
    // A rollback leaves the older version's migration out.
    let mut back = up.clone();
    back.drop_migrations();
    assert!(
        !ids(&back).contains(&"upgrade.migrate.web"),
        "{:?}",
        ids(&back)
    );
    assert_eq!(
        steps[at("upgrade.migrate.web")].title,
        "run the migration of `web` once on app:2: `app db upgrade` (at most 2m)"
    );
    // Only the environment changes: the same image needs no migration.
    let env_only = stack(MIGRATING, &[("V", "1"), ("MODE", "b")]);
    let p = plan(&env_only, &live(&v1, 1), &Resolved::default());
    assert!(ids(&p).contains(&"upgrade.recreate.web"), "{:?}", ids(&p));
    assert!(!ids(&p).contains(&"upgrade.migrate.web"), "{:?}", ids(&p));
}

#[test]
fn steps_marked_when_upgrade_or_first_deploy_are_planned_only_then() {
    let titles = |p: &Plan| -> Vec<String> {
        p.steps()
            .filter(|s| s.phase == Phase::Verify)
            .map(|s| s.title.clone())
            .collect()
    };
    let v1 = stack(MIGRATING, &[("V", "1")]);
    let first = plan(&v1, &Observed::default(), &Resolved::default());
    assert_eq!(titles(&first), vec!["every time", "seed"]);
    let v2 = stack(MIGRATING, &[("V", "2")]);
    let up = plan(&v2, &live(&v1, 1), &Resolved::default());
    assert_eq!(titles(&up), vec!["every time", "check `rows`"]);
}

#[test]
fn a_blue_green_service_that_writes_restored_data_is_planned_as_the_recreate_it_gets() {
    let text = "\
name: s
services:
  db: { image: 'postgres:15', ports: ['127.0.0.1:55432:5432'] }
  web: { image: 'web:${V}', port: 8080, strategy: blue-green, depends_on: [db] }
data:
  main:
    postgres: { url: 'postgres://u:p@127.0.0.1:55432/postgres', database: app }
traffic:
  routes: [{ service: web }]
";
    let v1 = stack(text, &[("V", "1")]);
    let v2 = stack(text, &[("V", "2")]);
    let p = plan(&v2, &live(&v1, 1), &Resolved::default());
    let web = p.services.iter().find(|c| c.service == "web").expect("web");
    assert!(web.quiesced);
    assert!(
        web.downtime
            .because
            .starts_with("recreated, not blue-green: it writes data that gets a restore point"),
        "{}",
        web.downtime.because
    );
    assert!(ids(&p).contains(&"upgrade.recreate.web"), "{:?}", ids(&p));
    assert!(
        !ids(&p).iter().any(|i| i.contains("blue-green")),
        "{:?}",
        ids(&p)
    );
    let text_plan = render::text(&p, false);
    assert!(text_plan.contains("recreate*"), "{text_plan}");
    // The database server is not a writer: it keeps running for the template copy.
    assert_eq!(v2.data["main"].writers, ["web"]);
}

#[test]
fn the_downtime_estimate_says_how_long_the_last_start_took() {
    let v1 = stack(MIGRATING, &[("V", "1")]);
    let v2 = stack(MIGRATING, &[("V", "2")]);
    let mut obs = live(&v1, 1);
    obs.started_in
        .insert("web".into(), std::time::Duration::from_millis(2340));
    let p = plan(&v2, &obs, &Resolved::default());
    let web = p.services.iter().find(|c| c.service == "web").expect("web");
    assert!(
        web.downtime.because.contains("the last start took 2.3s"),
        "{}",
        web.downtime.because
    );
}

#[test]
fn a_first_deploy_that_takes_a_writer_over_takes_a_restore_point_and_gives_it_back_after() {
    let text = "\
name: s
services:
  app: { image: 'app:2' }
data:
  files: { volume: { name: p_appdata }, writers: [app] }
";
    let s = stack(text, &[]);
    let mut obs = Observed::default();
    obs.adoptable.insert("app".into(), vec!["p_app_1".into()]);
    let p = plan(&s, &obs, &Resolved::default());
    assert_eq!(
        ids(&p),
        vec![
            "preflight.image.app",
            "preflight.data.files",
            "quiesce.adopt.app",
            "restore_point.files",
            "upgrade.create.app",
            "release.record",
            "release.remove-adopted",
        ]
    );
    assert!(
        p.services[0]
            .downtime
            .because
            .starts_with("taken over from p_app_1"),
        "{}",
        p.services[0].downtime.because
    );
    let revert: Vec<&str> = p.revert.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(
        revert,
        vec![
            "revert.remove.app",
            "revert.restore.files",
            "revert.give-back.app",
            "revert.compare"
        ],
        "the containers taken over start again on the data as it was"
    );
}

#[test]
fn a_reverted_postgresql_server_stays_up_until_its_database_is_restored() {
    let text = "\
name: s
services:
  db: { image: 'postgres:${V}', ports: ['127.0.0.1:55432:5432'] }
  app: { image: 'app:${V}', depends_on: [db] }
data:
  main:
    postgres: { url: 'postgres://u:p@127.0.0.1:55432/postgres', database: app }
";
    let v1 = stack(text, &[("V", "1")]);
    let v2 = stack(text, &[("V", "2")]);
    let p = plan(&v2, &live(&v1, 1), &Resolved::default());
    let revert: Vec<&str> = p.revert.iter().map(|s| s.id.as_str()).collect();
    let at = |id: &str| {
        revert
            .iter()
            .position(|r| *r == id)
            .unwrap_or_else(|| panic!("{id} in {revert:?}"))
    };
    assert!(
        at("revert.stop.app") < at("revert.restore.main"),
        "{revert:?}"
    );
    assert!(
        at("revert.restore.main") < at("revert.stop.db"),
        "the restore runs on a running server: {revert:?}"
    );
}

#[test]
fn upgrade_service_recreates_one_manual_service_within_the_live_release() {
    let live = stack(
        "name: s\nservices:\n  db: { image: pg:15, strategy: manual }\n  app: { image: app:2 }\n",
        &[],
    );
    let plan = upgrade_service(&live, 4, "db", "pg:15");
    assert_eq!((plan.from_release, plan.to_release), (Some(4), 4));
    let ids: Vec<&str> = plan.steps().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["preflight.image.db", "upgrade.recreate.db"]);
    let revert: Vec<&str> = plan.revert.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(
        revert,
        ["revert.stop.db", "revert.start.db", "revert.compare"]
    );
    // Nothing else of the stack is touched.
    assert!(
        plan.steps()
            .chain(&plan.revert)
            .all(|s| !format!("{:?}", s.action).contains("app"))
    );
}

#[test]
fn the_downtime_bound_includes_the_restore_point_as_measured_on_this_host() {
    let text = "\
name: files
vars: { V: '1' }
services:
  web:
    image: web:${V}
    port: 8080
    stop_grace: 10s
    health: { http: /health, deadline: 20s }
data:
  uploads:
    volume: { name: uploads }
    writers: [web]
";
    let before = stack(text, &[]);
    let after = stack(&text.replace("V: '1'", "V: '2'"), &[]);
    let bare = plan(&after, &live(&before, 1), &Resolved::default());
    let web = |p: &Plan| p.services[0].downtime.clone();
    assert_eq!(web(&bare).max_seconds, Some(30));
    assert!(web(&bare).because.ends_with("plus the restore point"));

    let copy = |how: &str, ms: u64| Resolved {
        data: [(
            "uploads".to_string(),
            DataCopy {
                how: how.into(),
                files: 1000,
                bytes: 1 << 30,
                estimate_ms: ms,
                room_bytes: 0,
            },
        )]
        .into_iter()
        .collect(),
        ..Resolved::default()
    };
    let clone = plan(&after, &live(&before, 1), &copy("reflink clone", 80));
    assert_eq!(
        web(&clone).max_seconds,
        Some(31),
        "20s + 10s + 80 ms, rounded up"
    );
    assert!(
        web(&clone)
            .because
            .contains("plus the restore point (reflink clone of 1.0 GiB: ≈ 80 ms)"),
        "{}",
        web(&clone).because
    );
    assert_eq!(clone.data[0].copy.as_ref().map(|c| c.estimate_ms), Some(80));
    let archive = plan(&after, &live(&before, 1), &copy("tar+zstd archive", 3200));
    assert_eq!(web(&archive).max_seconds, Some(34));
}
