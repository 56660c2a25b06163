//! Validation: one test per kind of mistake, each asserting where it is reported and what it
//! says. Stacks are loaded from text as if read from `cutover.yaml` in a temp dir.

use std::collections::HashMap;
use std::path::Path;

use super::*;

fn opts(env: &[(&str, &str)]) -> LoadOptions {
    LoadOptions {
        process_env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<HashMap<_, _>>(),
        ..LoadOptions::default()
    }
}

/// `line:col kind: message (hint)` for each diagnostic.
fn problems_with(text: &str, opts: &LoadOptions) -> Vec<String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cutover.yaml");
    match load_str(&path, text, opts) {
        Ok(_) => Vec::new(),
        Err(d) => d
            .items
            .iter()
            .map(|i| {
                let hint = i
                    .hint
                    .as_deref()
                    .map(|h| format!(" ({h})"))
                    .unwrap_or_default();
                format!(
                    "{}:{} {:?}: {}{hint}",
                    i.at.line, i.at.col, i.kind, i.message
                )
            })
            .collect(),
    }
}

fn problems(text: &str) -> Vec<String> {
    problems_with(text, &opts(&[]))
}

fn ok(text: &str) -> Stack {
    let dir = tempfile::tempdir().expect("temp dir");
    match load_str(
        &dir.path().join("cutover.yaml"),
        text,
        &opts(&[("TAG", "2.0")]),
    ) {
        Ok(l) => l.stack,
        Err(d) => panic!("expected a valid stack, got:\n{d}"),
    }
}

#[test]
fn unknown_keys_are_all_reported_at_their_own_place_with_a_suggestion() {
    let text = "\
name: shop
services:
  web:
    image: nginx
    imgae: nginx:2
    helth: {}
  db:
    image: postgres
    portz: [1]
servces: {}
";
    assert_eq!(
        problems(text),
        vec![
            "5:5 UnknownKey: unknown key `services.web.imgae` (did you mean `image`?)",
            "6:5 UnknownKey: unknown key `services.web.helth` (did you mean `health`?)",
            "9:5 UnknownKey: unknown key `services.db.portz` (did you mean `port`?)",
            "10:1 UnknownKey: unknown key `servces` (did you mean `services`?)",
        ]
    );
}

#[test]
fn a_wrong_type_is_a_syntax_error_at_the_value() {
    let text = "name: shop\nservices:\n  web:\n    image: [nginx]\n";
    let p = problems(text);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].starts_with("4:12 Syntax: "), "{p:?}");
}

#[test]
fn broken_yaml_is_reported_where_the_parser_stopped() {
    let p = problems("name: shop\nservices:\n  web: [\n");
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].contains("Syntax"), "{p:?}");
    assert!(p[0].starts_with('3') || p[0].starts_with('4'), "{p:?}");
}

#[test]
fn dangling_depends_on_names_the_missing_service_and_the_closest_one() {
    let text = "\
name: shop
services:
  daemon: { image: app }
  ui:
    image: app
    depends_on: [deamon, cache]
";
    assert_eq!(
        problems(text),
        vec![
            "6:18 DanglingReference: service `ui` depends on `deamon`, which is not defined (did you mean `daemon`?)",
            "6:26 DanglingReference: service `ui` depends on `cache`, which is not defined (services: daemon, ui)",
        ]
    );
}

#[test]
fn every_dependency_cycle_is_reported_once() {
    let text = "\
name: shop
services:
  a: { image: x, depends_on: [b] }
  b: { image: x, depends_on: [c] }
  c: { image: x, depends_on: [a] }
  d: { image: x, depends_on: [d] }
";
    assert_eq!(
        problems(text),
        vec![
            "3:31 DependencyCycle: dependency cycle: a → b → c → a (break the cycle: a service cannot wait for itself)",
            "6:31 DependencyCycle: service `d` depends on itself",
        ]
    );
}

#[test]
fn two_services_cannot_publish_one_host_port() {
    let text = "\
name: shop
services:
  a: { image: x, ports: ['8080:80'] }
  b: { image: x, ports: ['9090:90', '8080:81'] }
  c: { image: x, ports: ['127.0.0.1:8080:80', '8080:80/udp'] }
";
    let p = problems(text);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("4:37 DuplicatePort: host port 8080 is already published by `a` ("),
        "{p:?}"
    );
    assert!(p[0].contains("cutover.yaml:3:26)"), "{p:?}");
}

#[test]
fn an_undefined_variable_is_reported_where_it_is_used() {
    let text = "\
name: shop
services:
  web:
    image: nginx:${TAG}
    env:
      A: ${TAG}-${FLAVOR}
      B: ${ALSO:-fine}
";
    assert_eq!(
        problems(text),
        vec![
            "4:12 UndefinedVariable: variable `TAG` is not defined (set TAG in the environment, an env file or `vars`, or write ${TAG:-default})",
            "6:10 UndefinedVariable: variable `TAG` is not defined (set TAG in the environment, an env file or `vars`, or write ${TAG:-default})",
            "6:10 UndefinedVariable: variable `FLAVOR` is not defined (set FLAVOR in the environment, an env file or `vars`, or write ${FLAVOR:-default})",
        ]
    );
    assert!(problems_with(text, &opts(&[("TAG", "1"), ("FLAVOR", "x")])).is_empty());
}

#[test]
fn blue_green_needs_a_route_a_port_and_no_fixed_host_port() {
    let text = "\
name: shop
services:
  ui: { image: x, strategy: blue-green }
  api: { image: x, strategy: blue-green, ports: ['80:80'], port: 80 }
traffic:
  routes: [{ service: api }]
";
    assert_eq!(
        problems(text),
        vec![
            "3:29 StrategyNotUsable: `ui` uses blue-green but no traffic route leads to it (add `traffic: { routes: [{ service: ui }] }`, or use `strategy: recreate`)",
            "4:30 StrategyNotUsable: `api` uses blue-green but publishes fixed host ports: old and new cannot run side by side (remove `ports` and let the traffic route reach it)",
        ]
    );
}

#[test]
fn an_unknown_strategy_lists_the_choices() {
    let p = problems("name: s\nservices:\n  a: { image: x, strategy: rolling }\n");
    assert_eq!(
        p,
        vec![
            "3:28 InvalidValue: unknown strategy `rolling` (one of: recreate, blue-green, manual)"
        ]
    );
}

#[test]
fn bad_durations_ports_and_mounts_are_each_reported() {
    let text = "\
name: s
services:
  a:
    image: x
    stop_grace: soon
    ports: ['80:0']
    volumes: ['data:relative']
";
    let p = problems(text);
    assert_eq!(p.len(), 3, "{p:?}");
    assert!(
        p[0].starts_with("5:17 InvalidValue: `soon` is not a duration"),
        "{p:?}"
    );
    assert!(p[1].starts_with("6:13 InvalidValue: port `80:0`"), "{p:?}");
    assert!(
        p[2].starts_with("7:15 InvalidValue: volume `data:relative`"),
        "{p:?}"
    );
}

#[test]
fn a_service_without_image_is_missing_one() {
    let p = problems("name: s\nservices:\n  a: { command: [x] }\n");
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].contains("Missing: service `a` has no `image`"),
        "{p:?}"
    );
}

#[test]
fn secrets_are_refused_where_values_are_printed() {
    let text = "\
name: s
secrets:
  PW: { env: PW }
services:
  a:
    image: x:${PW}
    env: { DB_PASSWORD: '${PW}' }
";
    let p = problems_with(text, &opts(&[("PW", "hunter2")]));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].starts_with("6:12 SecretNotAllowed"), "{p:?}");
    assert!(!p[0].contains("hunter2"));
}

#[test]
fn step_and_check_references_are_checked() {
    let text = "\
name: s
services:
  a: { image: x }
checks:
  up: { container_health: a }
steps:
  verify:
    - wait: upp
    - exec: { service: b, command: [true] }
    - run: make release
";
    let p = problems(text);
    assert_eq!(p.len(), 3, "{p:?}");
    assert!(
        p[0].starts_with("8:13 DanglingReference: step 1 of `verify` names check `upp`"),
        "{p:?}"
    );
    assert!(
        p[1].contains("step 2 of `verify` names service `b`"),
        "{p:?}"
    );
    assert!(
        p[2].starts_with("10:12 InvalidValue: step 3 of `verify`: `run` is a string"),
        "{p:?}"
    );
}

#[test]
fn an_unknown_environment_is_a_command_line_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let o = LoadOptions {
        environment: Some("prodd".into()),
        ..LoadOptions::default()
    };
    let text = "name: s\nservices: { a: { image: x } }\nenvironments: { prod: {} }\n";
    let err = load_str(&dir.path().join("cutover.yaml"), text, &o).expect_err("unknown env");
    assert_eq!(
        err.to_string(),
        "command line: --env prodd: no such environment\n  hint: defined environments: prod"
    );
}

#[test]
fn diagnostics_render_as_file_line_column() {
    let err = load_str(
        Path::new("stacks/shop.yaml"),
        "name: s\nservices:\n  a: { image: x, depends_on: [b] }\n",
        &opts(&[]),
    )
    .expect_err("dangling");
    assert_eq!(
        err.to_string(),
        "stacks/shop.yaml:3:31: service `a` depends on `b`, which is not defined\n  hint: services: a"
    );
}

#[test]
fn environments_overlay_the_base_and_set_wins_over_both() {
    let text = "\
name: s
vars: { tag: '1.0' }
services:
  api:
    image: app:${tag}
    env: { LOG: info, KEEP: yes }
environments:
  staging:
    vars: { tag: '1.1-rc' }
    services:
      api: { env: { LOG: debug } }
";
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cutover.yaml");
    let o = LoadOptions {
        environment: Some("staging".into()),
        ..LoadOptions::default()
    };
    let s = load_str(&path, text, &o).expect("valid").stack;
    let api = &s.services["api"];
    assert_eq!(api.image, "app:1.1-rc");
    assert_eq!(api.env["LOG"].shown(), "debug");
    assert_eq!(api.env["KEEP"].shown(), "yes");
    let o = LoadOptions {
        environment: Some("staging".into()),
        sets: vec!["api.image=app:hotfix".into(), "api.env.LOG=warn".into()],
        ..LoadOptions::default()
    };
    let s = load_str(&path, text, &o).expect("valid").stack;
    assert_eq!(s.services["api"].image, "app:hotfix");
    assert_eq!(s.services["api"].env["LOG"].shown(), "warn");
    let o = LoadOptions {
        sets: vec!["apj.image=x".into()],
        ..LoadOptions::default()
    };
    let err = load_str(&path, text, &o).expect_err("unknown service");
    assert!(
        err.to_string()
            .contains("--set apj.image=x: no service `apj`"),
        "{err}"
    );
}

#[test]
fn process_env_beats_env_files_and_stack_vars_can_default_from_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join(".env"), "TAG=from-file\nREGION=eu\n").expect("write .env");
    let text = "name: s\nvars: { region: '${REGION:-us}' }\nservices:\n  a: { image: 'x:${TAG}-${region}' }\n";
    let path = dir.path().join("cutover.yaml");
    let s = load_str(&path, text, &opts(&[])).expect("valid").stack;
    assert_eq!(s.services["a"].image, "x:from-file-eu");
    let s = load_str(&path, text, &opts(&[("TAG", "from-env")]))
        .expect("valid")
        .stack;
    assert_eq!(s.services["a"].image, "x:from-env-eu");
}

#[test]
fn secrets_from_files_are_masked_and_missing_ones_only_noted() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("pw"), "s3cret\n").expect("write secret");
    let text = "\
name: s
secrets:
  PW: { file: pw }
  TOKEN: { env: NOT_SET_ANYWHERE }
services:
  a:
    image: x
    env: { URL: 'postgres://u:${PW}@db/x', T: '${TOKEN}' }
";
    let loaded = load_str(&dir.path().join("cutover.yaml"), text, &opts(&[])).expect("valid");
    let env = &loaded.stack.services["a"].env;
    assert_eq!(env["URL"].shown(), "postgres://u:${PW}@db/x");
    assert_eq!(env["URL"].expose(), Some("postgres://u:s3cret@db/x"));
    assert_eq!(env["T"].expose(), None);
    assert_eq!(loaded.missing_secrets.len(), 1);
    assert_eq!(loaded.missing_secrets[0].0, "TOKEN");
    let json = serde_json::to_string(&loaded.stack).expect("json");
    assert!(!json.contains("s3cret"), "{json}");
}

#[test]
fn compose_services_are_imported_and_extended() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("docker-compose.yml"),
        "\
services:
  db:
    image: postgres:15
    environment: [POSTGRES_DB=app, 'EMPTY=']
    healthcheck: { test: ['CMD-SHELL', 'pg_isready'], interval: 5s }
  web:
    image: web:1
    ports: ['8080:80', { target: 443, published: 8443 }]
    depends_on: { db: { condition: service_healthy } }
    volumes: ['./conf:/etc/web:ro', 'data:/var/lib/web']
    deploy: { replicas: 2 }
",
    )
    .expect("write compose");
    let text = "\
name: s
include_compose: docker-compose.yml
services:
  web: { image: 'web:2', strategy: recreate, stop_grace: 30s }
";
    let loaded = load_str(&dir.path().join("cutover.yaml"), text, &opts(&[])).expect("valid");
    let s = &loaded.stack;
    assert_eq!(s.services.keys().collect::<Vec<_>>(), vec!["db", "web"]);
    let db = &s.services["db"];
    assert_eq!(db.env["POSTGRES_DB"].shown(), "app");
    assert_eq!(
        db.health.as_ref().map(|h| &h.probe),
        Some(&Probe::Command(Command::Shell("pg_isready".into())))
    );
    let web = &s.services["web"];
    assert_eq!(web.image, "web:2");
    assert_eq!(web.depends_on, vec!["db"]);
    assert_eq!(web.ports.len(), 2);
    assert_eq!(web.ports[1].host, 8443);
    assert_eq!(web.stop_grace, std::time::Duration::from_secs(30));
    assert!(web.volumes[0].read_only);
    assert_eq!(loaded.warnings.items.len(), 1, "{}", loaded.warnings);
    assert!(
        loaded.warnings.items[0]
            .message
            .contains("services.web.deploy")
    );
    assert_eq!(loaded.warnings.items[0].at.line, 11);
}

#[test]
fn the_design_sketch_example_is_accepted() {
    let s = ok("\
name: grouper
protected: true
services:
  daemon:
    image: registry.example.org/grouper:${TAG}
    strategy: recreate
  ui:
    image: registry.example.org/grouper:${TAG}
    port: 8080
    strategy: blue-green
    depends_on: [daemon]
    health: { http: /status, expect_status: 200, deadline: 120s }
traffic:
  listen: 0.0.0.0:443
  routes: [{ host: grouper.example.org, service: ui }]
");
    assert!(s.protected);
    assert_eq!(s.services["ui"].strategy, Strategy::BlueGreen);
    assert_eq!(
        s.services["ui"]
            .health
            .as_ref()
            .map(|h| h.deadline.as_secs()),
        Some(120)
    );
}

#[test]
fn a_host_script_is_looked_for_beside_the_stack_file_not_in_the_current_directory() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cutover.yaml");
    std::fs::create_dir(dir.path().join("scripts")).expect("mkdir");
    let script = dir.path().join("scripts/ok.sh");
    std::fs::write(&script, "#!/bin/sh\n").expect("script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::write(dir.path().join("scripts/plain.sh"), "#!/bin/sh\n").expect("script");
    let text = "name: s\nservices:\n  web: { image: x }\n\
                checks:\n  c: { command: [./scripts/plain.sh] }\n\
                steps:\n  verify:\n    - run: [./scripts/ok.sh, a]\n    - run: [./scripts/gone.sh]\n    - run: [/bin/true]\n";
    let errs: Vec<String> = match load_str(&path, text, &opts(&[])) {
        Ok(_) => Vec::new(),
        Err(d) => d
            .items
            .iter()
            .map(|i| format!("{}:{} {}", i.at.line, i.at.col, i.message))
            .collect(),
    };
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(
        errs[0].starts_with("5:17 `") && errs[0].contains("scripts/plain.sh` is not executable"),
        "{errs:#?}"
    );
    assert!(
        errs[1].starts_with("9:12 `./scripts/gone.sh` does not exist"),
        "{errs:#?}"
    );
    let fine = "name: s\nservices:\n  web: { image: x }\nsteps:\n  verify:\n    - run: [./scripts/ok.sh]\n";
    let loaded = load_str(&path, fine, &opts(&[])).expect("valid");
    assert_eq!(
        loaded.stack.base_dir,
        std::path::absolute(dir.path()).expect("absolute"),
        "host commands run in the stack file's directory"
    );
}

/// A stack importing `compose` (written as `<dir>/myapp/docker-compose.yml`), loaded with
/// `env` as the process environment.
fn with_compose(compose: &str, stack_extra: &str, env: &[(&str, &str)]) -> Loaded {
    let dir = tempfile::tempdir().expect("temp dir");
    let app = dir.path().join("My-App");
    std::fs::create_dir(&app).expect("mkdir");
    std::fs::write(app.join("docker-compose.yml"), compose).expect("write compose");
    let text = format!("name: s\ninclude_compose: docker-compose.yml\n{stack_extra}");
    match load_str(&app.join("cutover.yaml"), &text, &opts(env)) {
        Ok(l) => l,
        Err(d) => panic!("expected a valid stack, got:\n{d}"),
    }
}

#[test]
fn compose_volumes_get_the_names_compose_gives_them() {
    let compose = "\
volumes:
  pgdata: {}
  shared: { external: true }
  legacy: { external: { name: old-volume } }
  named: { name: exact-name }
services:
  db:
    image: postgres:15
    volumes:
      - pgdata:/var/lib/postgresql/data
      - shared:/shared
      - { type: volume, source: legacy, target: /legacy }
      - named:/named
      - undeclared:/u
      - ./conf:/etc/conf:ro
";
    let l = with_compose(compose, "", &[]);
    let sources: Vec<String> = l.stack.services["db"]
        .volumes
        .iter()
        .map(|m| match &m.source {
            MountSource::Volume(v) => v.clone(),
            MountSource::Bind(p) => format!(
                "bind {}",
                Path::new(p)
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default()
            ),
        })
        .collect();
    // The project is the compose file's directory, lowercased, as compose names it.
    assert_eq!(
        sources,
        [
            "my-app_pgdata",
            "shared",
            "old-volume",
            "exact-name",
            "my-app_undeclared",
            "bind conf"
        ]
    );
    assert_eq!(l.stack.compose_project.as_deref(), Some("my-app"));
    assert_eq!(
        l.stack.external_volumes,
        ["shared", "old-volume"],
        "down --volumes keeps them"
    );
    // `name:` in the file, then COMPOSE_PROJECT_NAME, decide the project instead.
    let l = with_compose(&format!("name: prod\n{compose}"), "", &[]);
    assert!(
        matches!(&l.stack.services["db"].volumes[0].source, MountSource::Volume(v) if v == "prod_pgdata")
    );
    let l = with_compose(compose, "", &[("COMPOSE_PROJECT_NAME", "Blue")]);
    assert!(
        matches!(&l.stack.services["db"].volumes[0].source, MountSource::Volume(v) if v == "blue_pgdata")
    );
}

#[test]
fn compose_keys_that_change_how_a_container_runs_are_imported_or_said() {
    let compose = "\
networks:
  backend: {}
services:
  app:
    image: app:1
    init: true
    tmpfs: /run
    volumes: [{ type: tmpfs, target: /cache }]
    environment:
      - FROM_HOST
      - UNSET_HERE
      - PLAIN=1
    healthcheck: { test: [CMD, probe], interval: 10s, timeout: 5s, retries: 5, start_period: 30s }
    depends_on:
      setup: { condition: service_completed_successfully }
  setup:
    image: app:1
  debug:
    image: busybox
    profiles: [debug]
";
    let l = with_compose(compose, "", &[("FROM_HOST", "from-the-shell")]);
    let app = &l.stack.services["app"];
    assert!(app.init);
    assert_eq!(app.tmpfs, ["/run", "/cache"]);
    assert!(app.volumes.is_empty(), "a tmpfs is no volume");
    assert_eq!(app.env["FROM_HOST"].shown(), "from-the-shell");
    assert!(
        !app.env.contains_key("UNSET_HERE"),
        "unset on the host: unset in the container"
    );
    assert_eq!(app.env["PLAIN"].shown(), "1");
    // 30s + 5 × (10s + 5s): when Docker would have called it unhealthy.
    assert_eq!(
        app.health.as_ref().map(|h| h.deadline),
        Some(std::time::Duration::from_secs(105))
    );
    assert!(
        !l.stack.services.contains_key("debug"),
        "its profile is not active"
    );
    let said: Vec<String> = l.warnings.items.iter().map(|w| w.message.clone()).collect();
    for want in [
        "network `backend` is not created",
        "`setup` is awaited as a long-running service",
        "service `debug` is not imported: its profile(s) debug are not active",
    ] {
        assert!(said.iter().any(|m| m.contains(want)), "{want}: {said:#?}");
    }
    let l = with_compose(compose, "", &[("COMPOSE_PROFILES", "debug")]);
    assert!(l.stack.services.contains_key("debug"));
    // `--profile debug` does the same.
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("docker-compose.yml"), compose).expect("compose");
    let l = load_str(
        &dir.path().join("cutover.yaml"),
        "name: s\ninclude_compose: docker-compose.yml\n",
        &LoadOptions {
            profiles: vec!["debug".into()],
            ..opts(&[])
        },
    )
    .expect("valid");
    assert!(l.stack.services.contains_key("debug"));
}

#[test]
fn the_service_that_serves_a_database_is_not_one_of_its_writers() {
    let base = "\
name: s
services:
  db: { image: postgres, ports: ['127.0.0.1:55432:5432'] }
  app: { image: app, depends_on: [db] }
data:
  main:
    postgres: { url: 'postgres://u:p@127.0.0.1:55432/postgres', database: app }
";
    // Writers left to the default: everything but the server.
    let s = ok(base);
    assert_eq!(s.data["main"].writers, ["app"]);
    let by_name = base.replace("127.0.0.1:55432/postgres", "db/postgres");
    assert_eq!(ok(&by_name).data["main"].writers, ["app"]);
    // Named as a writer: an error where it is named.
    let explicit = format!("{base}    writers: [app, db]\n");
    assert_eq!(
        problems(&explicit),
        [
            "8:20 InvalidValue: data `main` is served by `db` (its URL points there), which is among its writers: the restore point is copied on the running server, so stopping `db` first would make it fail (writers are the services that write to the database: remove `db`)"
        ]
    );
}

#[test]
fn compose_env_files_lie_below_environment_and_their_values_are_literal() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("db.env"),
        "POSTGRES_PASSWORD='pa$word'\nSHARED=from-file\n",
    )
    .expect("env file");
    std::fs::write(
        dir.path().join("docker-compose.yml"),
        "services:\n  db:\n    image: postgres\n    env_file: db.env\n    environment: { SHARED: from-environment }\n  app:\n    image: app\n    env_file: [{ path: missing.env, required: false }]\n",
    )
    .expect("compose");
    let l = load_str(
        &dir.path().join("cutover.yaml"),
        "name: s\ninclude_compose: docker-compose.yml\n",
        &opts(&[]),
    )
    .expect("valid");
    let db = &l.stack.services["db"];
    assert_eq!(db.env["POSTGRES_PASSWORD"].expose(), Some("pa$word"));
    assert_eq!(db.env["SHARED"].shown(), "from-environment");
    assert!(l.stack.services["app"].env.is_empty());
    assert!(l.warnings.items.is_empty(), "{}", l.warnings);
}

#[test]
fn a_compose_string_command_is_split_into_words_for_the_entrypoint_not_run_by_a_shell() {
    let compose = "volumes: { pgdata: {} }\nservices:\n  redis:\n    image: redis\n    command: --save 60 1 --loglevel \"warning level\" 'a b'\n    volumes: ['${UPLOAD_LOCATION}:/data', '${DB_VOL:-pgdata}:/db']\n";
    let l = with_compose(compose, "", &[("UPLOAD_LOCATION", "./library")]);
    let redis = &l.stack.services["redis"];
    assert_eq!(
        redis.command,
        Some(Command::Exec(
            ["--save", "60", "1", "--loglevel", "warning level", "a b"]
                .map(String::from)
                .to_vec()
        ))
    );
    // A variable that holds a path is a bind mount, not a `<project>_` volume.
    assert!(
        matches!(&redis.volumes[0].source, MountSource::Bind(p) if p.ends_with("library")),
        "{:?}",
        redis.volumes[0]
    );
    // One that holds a name is the project's volume, as compose names it after interpolating.
    assert!(
        matches!(&redis.volumes[1].source, MountSource::Volume(v) if v == "my-app_pgdata"),
        "{:?}",
        redis.volumes[1]
    );
}

#[test]
fn compose_project_name_and_profiles_may_come_from_the_dot_env_beside_the_compose_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join(".env"),
        "COMPOSE_PROJECT_NAME=sentry-self-hosted\nCOMPOSE_PROFILES=full\nFROM_DOT_ENV=yes\n",
    )
    .expect(".env");
    std::fs::write(
        dir.path().join("docker-compose.yml"),
        "volumes: { data: {} }\nservices:\n  web: { image: web, volumes: ['data:/d'], environment: [FROM_DOT_ENV] }\n  worker: { image: web, profiles: [full] }\n",
    )
    .expect("compose");
    let l = load_str(
        &dir.path().join("cutover.yaml"),
        "name: s\ninclude_compose: docker-compose.yml\n",
        &opts(&[]),
    )
    .expect("valid");
    assert_eq!(
        l.stack.compose_project.as_deref(),
        Some("sentry-self-hosted")
    );
    assert!(
        l.stack.services.contains_key("worker"),
        "profile `full` is active"
    );
    assert_eq!(
        l.stack.services["web"].env["FROM_DOT_ENV"].shown(),
        "yes",
        "a pass-through variable may come from the .env"
    );
    assert!(matches!(
        &l.stack.services["web"].volumes[0].source,
        MountSource::Volume(v) if v == "sentry-self-hosted_data"
    ));
}

#[test]
fn a_recorded_release_can_be_corrected_for_a_rollback() {
    let mut s = ok(
        "name: s\nservices:\n  db:\n    image: postgres\n    stop_grace: 1s\n    health: { tcp: 5432 }\n",
    );
    s.correct("db.stop_grace=45s").expect("stop_grace");
    s.correct("db.health.deadline=3m").expect("deadline");
    s.correct("db.env.LOG=debug").expect("env");
    let db = &s.services["db"];
    assert_eq!(db.stop_grace, std::time::Duration::from_secs(45));
    assert_eq!(
        db.health.as_ref().map(|h| h.deadline),
        Some(std::time::Duration::from_secs(180))
    );
    assert_eq!(db.env["LOG"].shown(), "debug");
    for (bad, says) in [
        ("db.image=postgres:16", "cannot set `db.image`"),
        ("web.stop_grace=1s", "no service `web` (it has db)"),
        ("db.stop_grace=soon", "`soon` is not a duration"),
        ("db.stop_grace", "expected KEY=VALUE"),
    ] {
        let err = s.correct(bad).expect_err(bad);
        assert!(err.contains(says), "{bad}: {err}");
    }
}

#[test]
fn compose_extends_lays_a_service_over_its_base_in_this_file_or_another() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("base.yml"),
        "services:\n  common:\n    image: app:1\n    environment: { A: base, B: base }\n    ports: ['8080:80', '9090:90']\n    volumes: ['data:/data', '/cache']\n",
    )
    .expect("base");
    std::fs::write(
        dir.path().join("docker-compose.yml"),
        "services:\n  web:\n    extends: { file: base.yml, service: common }\n    environment: { B: web }\n    ports: ['8080:81']\n  worker:\n    extends: web\n    command: work\n",
    )
    .expect("compose");
    let l = load_str(
        &dir.path().join("cutover.yaml"),
        "name: s\ninclude_compose: docker-compose.yml\nservices:\n  worker: { ports: [] }\n",
        &opts(&[("COMPOSE_PROJECT_NAME", "p")]),
    );
    let l = match l {
        Ok(l) => l,
        Err(d) => panic!("{d}"),
    };
    let web = &l.stack.services["web"];
    assert_eq!(web.image, "app:1", "from the base file");
    assert_eq!(web.env["A"].shown(), "base");
    assert_eq!(web.env["B"].shown(), "web", "its own value wins");
    let ports: Vec<(u16, u16)> = web.ports.iter().map(|p| (p.host, p.container)).collect();
    assert_eq!(
        ports,
        [(9090, 90), (8080, 81)],
        "the same host port is replaced, not doubled"
    );
    let sources: Vec<String> = web
        .volumes
        .iter()
        .map(|m| match &m.source {
            MountSource::Volume(v) | MountSource::Bind(v) => v.clone(),
        })
        .collect();
    assert_eq!(
        sources,
        ["p_data", "p_web_cache"],
        "an anonymous volume gets a stable name"
    );
    let worker = &l.stack.services["worker"];
    assert_eq!(worker.image, "app:1", "extends of an extends");
    assert_eq!(worker.command, Some(Command::Exec(vec!["work".into()])));
}

#[test]
fn compose_secrets_and_configs_from_files_are_mounted_where_compose_puts_them() {
    let compose = "\
secrets:
  db_pw: { file: ./secrets/db_pw.txt }
  from_env: { environment: DB_PW }
configs:
  nginx: { file: ./nginx.conf }
services:
  web:
    image: nginx
    secrets: [db_pw, { source: db_pw, target: other_name }, from_env]
    configs: [{ source: nginx, target: /etc/nginx/nginx.conf }, nginx]
";
    let l = with_compose(compose, "", &[]);
    let mounts: Vec<String> = l.stack.services["web"]
        .volumes
        .iter()
        .map(|m| {
            let src = match &m.source {
                MountSource::Bind(p) | MountSource::Volume(p) => p.clone(),
            };
            let file = Path::new(&src)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            format!(
                "{file}:{}:{}",
                m.target,
                if m.read_only { "ro" } else { "rw" }
            )
        })
        .collect();
    assert_eq!(
        mounts,
        [
            "db_pw.txt:/run/secrets/db_pw:ro",
            "db_pw.txt:/run/secrets/other_name:ro",
            "nginx.conf:/etc/nginx/nginx.conf:ro",
            "nginx.conf:/nginx:ro",
        ]
    );
    assert!(
        l.warnings
            .items
            .iter()
            .any(|w| w.message.contains("secret `from_env` is not from a file")),
        "{}",
        l.warnings
    );
}

#[test]
fn compose_paths_are_relative_to_the_compose_file_and_its_bases_to_theirs() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("app/common")).expect("dirs");
    std::fs::write(
        dir.path().join("app/common/base.yml"),
        "services:\n  base:\n    image: postgres\n    volumes: ['./initdb:/docker-entrypoint-initdb.d:ro']\n",
    )
    .expect("base");
    std::fs::write(
        dir.path().join("app/docker-compose.yml"),
        "services:\n  db:\n    extends: { file: common/base.yml, service: base }\n    volumes: ['./pgdata:/var/lib/postgresql/data', '~/backups:/backups']\n",
    )
    .expect("compose");
    let l = load_str(
        &dir.path().join("cutover.yaml"),
        "name: s\ninclude_compose: app/docker-compose.yml\n",
        &opts(&[("HOME", "/home/op")]),
    )
    .expect("valid");
    let binds: Vec<String> = l.stack.services["db"]
        .volumes
        .iter()
        .map(|m| match &m.source {
            MountSource::Bind(p) | MountSource::Volume(p) => p.clone(),
        })
        .collect();
    let app = std::path::absolute(dir.path().join("app")).expect("absolute");
    assert_eq!(
        binds,
        [
            app.join("common/./initdb").display().to_string(),
            app.join("./pgdata").display().to_string(),
            "/home/op/backups".to_string(),
        ],
        "the compose file's directory, not the stack file's; the base's own for inherited ones"
    );
}

#[test]
fn an_empty_stack_file_is_an_error_not_a_stack_of_no_services() {
    for text in ["", "# nothing here yet\n", "name: shop\n"] {
        let p = problems(text);
        assert!(
            p.iter()
                .any(|l| l.starts_with("1:1 Missing: the stack defines no services")),
            "{text:?}: {p:?}"
        );
    }
    // `services: {}` too.
    assert!(
        problems("name: shop\nservices: {}\n")
            .iter()
            .any(|l| l.contains("the stack defines no services")),
    );
}

#[test]
fn watch_webhooks_take_a_secret_url_and_a_known_format() {
    let base = "\
name: shop
secrets: { HOOK: { env: HOOK } }
services:
  web: { image: nginx }
watch:
  git_revert: true
  webhooks:
    - url: ${HOOK}
    - url: http://127.0.0.1:9/x
      format: teams
";
    assert_eq!(
        problems_with(base, &opts(&[("HOOK", "http://h/secret-token")])),
        vec!["10:15 InvalidValue: webhook format `teams` is not one of `json`, `slack`"]
    );
    let good = base.replace("format: teams", "format: slack");
    let dir = tempfile::tempdir().expect("temp dir");
    let s = load_str(
        &dir.path().join("cutover.yaml"),
        &good,
        &opts(&[("HOOK", "http://h/secret-token")]),
    )
    .expect("valid")
    .stack;
    assert!(s.watch_git_revert);
    assert_eq!(s.webhooks.len(), 2);
    assert_eq!(s.webhooks[0].url.shown(), "${HOOK}", "the URL is a secret");
    assert_eq!(s.webhooks[0].url.expose(), Some("http://h/secret-token"));
    assert_eq!(s.webhooks[1].format, WebhookFormat::Slack);
}

#[test]
fn a_mistake_merged_in_from_an_environment_is_placed_in_the_overlay() {
    // Found by loader_never_panics: the secret exists only under the overlay, so its
    // diagnostic had no line at all.
    let text = "environments:\n  prod:\n    secrets:\n      VERSION: {}\n";
    let opts = LoadOptions {
        environment: Some("prod".into()),
        ..opts(&[])
    };
    let found = problems_with(text, &opts);
    assert!(
        found.contains(
            &"4:7 InvalidValue: secret `VERSION` needs exactly one of `env` or `file`".to_string()
        ),
        "{found:?}"
    );
    assert!(found.iter().all(|p| !p.starts_with("0:")), "{found:?}");
}
