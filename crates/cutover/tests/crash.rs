//! The crash matrix: a real upgrade of a stack with a container, a Docker volume and a
//! PostgreSQL database, killed with SIGKILL at every step boundary (before a step runs and
//! after it finished), then `cutover resume`. Whatever the boundary, the stack must end
//! entirely on the old release or entirely on the new one — image, volume and database
//! agreeing — with the lease free and no operation left unfinished.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use cutover_testkit::cmd::{code, demo_images, docker, require_test_hooks, text};
use cutover_testkit::net::{free_port, get_now};
use cutover_testkit::pg;

struct Stack {
    name: String,
    dir: tempfile::TempDir,
    url: String,
}

impl Stack {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cutover"));
        c.current_dir(self.dir.path())
            .args(args)
            .env("NO_COLOR", "1")
            .env("PG_URL", &self.url)
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("cutover")
    }

    fn status(&self) -> serde_json::Value {
        let o = self.run(&["status", "-o", "json"]);
        serde_json::from_slice(&o.stdout).expect("status json")
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let ids = docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=io.cutover.stack={}", self.name),
        ]);
        for id in ids.lines() {
            docker(&["rm", "-f", id]);
        }
        docker(&["network", "rm", &format!("cutover-{}", self.name)]);
        docker(&["volume", "rm", "-f", &format!("{}-data", self.name)]);
    }
}

/// Stops a child process (`cutover serve`) when the test ends, passed or not.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn killed_at_any_step_boundary_resume_ends_on_one_release_entirely() {
    require_test_hooks(Path::new(env!("CARGO_BIN_EXE_cutover")));
    demo_images();
    let cluster = pg::Cluster::start();
    cluster.psql("postgres", "CREATE DATABASE app");
    cluster.psql(
        "app",
        "CREATE TABLE marker (v text); INSERT INTO marker VALUES ('1')",
    );

    let name = format!("t-crash-{}", std::process::id());
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let proxy_port = free_port();
    let proxy = SocketAddr::from(([127, 0, 0, 1], proxy_port));
    let s = Stack {
        name: name.clone(),
        dir: tempfile::tempdir().expect("tmp"),
        url: cluster.url(),
    };
    std::fs::write(
        s.dir.path().join("cutover.yaml"),
        format!(
            "name: {name}\n\
             vars: {{ v: \"1\" }}\n\
             secrets: {{ PG_URL: {{ env: PG_URL }} }}\n\
             services:\n  app:\n    image: cutover-demo:v${{v}}\n    port: 8080\n    \
               ports: [\"127.0.0.1:{port}:8080\"]\n    volumes: [\"{name}-data:/data\"]\n    \
               stop_grace: 5s\n    health: {{ http: /health, interval: 200ms, deadline: 30s }}\n\
             data:\n  files:\n    volume: {{ name: {name}-data }}\n    writers: [app]\n  \
               db:\n    postgres: {{ url: \"${{PG_URL}}\", database: app }}\n    writers: [app]\n\
             steps:\n  upgrade:\n    - sql: {{ data: db, query: \"UPDATE marker SET v = '${{v}}'\" }}\n      name: migrate the marker\n\
             traffic:\n  listen: 127.0.0.1:{proxy_port}\n  routes: [{{ service: app }}]\n"
        ),
    )
    .expect("stack file");
    // The stack routes through its proxy: the quiesce puts up the maintenance page (a
    // restore point is taken), the release or the revert takes it down.
    let serve = s
        .cmd(&["serve"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cutover serve");
    let _serve = KillOnDrop(serve);
    let started = Instant::now();
    while !s.dir.path().join(".cutover/proxy.sock").exists() {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "cutover serve did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let o = s.run(&["apply", "--yes"]);
    assert_eq!(code(&o), 0, "deploy v1\n{}", text(&o));

    // The boundaries of an upgrade, from its plan.
    let o = s.run(&["plan", "-o", "json", "--set", "vars.v=2"]);
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).expect("plan json");
    let steps: Vec<String> = plan["procedure"]
        .as_array()
        .expect("procedure")
        .iter()
        .flat_map(|p| p["steps"].as_array().cloned().unwrap_or_default())
        .map(|st| st["id"].as_str().expect("id").to_string())
        .collect();
    assert!(steps.len() >= 8, "{steps:?}");
    // Printed first, so a failure part way still says how many boundaries there were.
    eprintln!("crash matrix: {} boundaries", steps.len() * 2);

    let mut current = 1;
    let mut outcomes = Vec::new();
    for step in &steps {
        for when in ["before", "after"] {
            let target = 3 - current; // 1 ↔ 2
            let schema_before = get_now(addr, "/schema");
            let marker = s.dir.path().join("crashed");
            let _ = std::fs::remove_file(&marker);
            let mut child = s
                .cmd(&["apply", "--yes", "--set", &format!("vars.v={target}")])
                .env("CUTOVER_TEST_CRASH_AT", format!("{step}:{when}"))
                .env("CUTOVER_TEST_CRASH_MARKER", &marker)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("apply");
            let start = Instant::now();
            while !marker.exists() {
                if let Some(status) = child.try_wait().expect("wait") {
                    panic!("apply ended ({status}) before reaching {step}:{when}");
                }
                assert!(
                    start.elapsed() < Duration::from_secs(90),
                    "never reached {step}:{when}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            child.kill().expect("SIGKILL");
            let _ = child.wait();

            let st = s.status();
            assert!(
                !st["unfinished_operations"]
                    .as_array()
                    .expect("ops")
                    .is_empty(),
                "{step}:{when}: the killed operation shows as unfinished"
            );
            let o = s.run(&["resume", "--yes"]);
            let resumed = code(&o);
            assert!(
                code(&o) == 0 || code(&o) == 1,
                "{step}:{when}: resume ends the operation (0: finished, 1: reverted)\n{}",
                text(&o)
            );
            let st = s.status();
            assert!(
                st["lease"].is_null(),
                "{step}:{when}: the lease is free: {st}"
            );
            assert!(
                st["unfinished_operations"]
                    .as_array()
                    .expect("ops")
                    .is_empty(),
                "{step}:{when}: nothing left unfinished"
            );

            // One release, entirely: the app, its volume and the database agree.
            let version = get_now(addr, "/version");
            let db = cluster.psql("app", "SELECT v FROM marker");
            let schema = get_now(addr, "/schema");
            let ended_on: u32 = version.trim_start_matches('v').parse().expect("version");
            assert!(
                ended_on == current || ended_on == target,
                "{step}:{when}: runs v{ended_on}"
            );
            assert_eq!(
                db,
                ended_on.to_string(),
                "{step}:{when}: database matches v{ended_on}"
            );
            let want_schema = if ended_on == current {
                schema_before.clone()
            } else {
                schema_before
                    .parse::<u32>()
                    .expect("schema")
                    .max(target)
                    .to_string()
            };
            assert_eq!(
                schema, want_schema,
                "{step}:{when}: volume matches v{ended_on}"
            );
            let live = st["release"]["revision"].as_u64().expect("a live release");
            let images = docker(&[
                "ps",
                "-q",
                "--filter",
                &format!("label=io.cutover.stack={name}"),
            ]);
            assert_eq!(
                images.lines().count(),
                1,
                "{step}:{when}: one container runs"
            );
            // Maintenance is off, and the proxy routes to the release that runs.
            assert_eq!(
                get_now(proxy, "/version"),
                version,
                "{step}:{when}: through the proxy"
            );
            let o = s.run(&["-o", "json", "maintenance", "status"]);
            let state: serde_json::Value = serde_json::from_slice(&o.stdout).expect("proxy state");
            assert!(
                state["maintenance"].is_null()
                    && state["services"]["app"]["maintenance"].is_null()
                    && state["services"]["app"]["held"] == false,
                "{step}:{when}: maintenance off, nothing held: {state}"
            );
            let line = format!(
                "{step}:{when} → v{ended_on} (release {live}, {})",
                if resumed == 0 { "finished" } else { "reverted" }
            );
            // Reported as it is verified, for bench/crash_matrix.
            eprintln!("  {line}");
            outcomes.push(line);
            current = ended_on;
        }
    }
    assert_eq!(outcomes.len(), steps.len() * 2);
}

#[test]
fn a_dumped_restore_point_brings_a_release_and_its_database_back_when_the_copy_is_gone() {
    let cluster = pg::Cluster::start();
    cluster.psql("postgres", "CREATE DATABASE app");
    cluster.psql(
        "app",
        "CREATE TABLE marker (v text); INSERT INTO marker VALUES ('1')",
    );
    let name = format!("t-dump-{}", std::process::id());
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let s = Stack {
        name: name.clone(),
        dir: tempfile::tempdir().expect("tmp"),
        url: cluster.url(),
    };
    std::fs::write(
        s.dir.path().join("cutover.yaml"),
        format!(
            "name: {name}\n\
             vars: {{ v: \"1\" }}\n\
             secrets: {{ PG_URL: {{ env: PG_URL }} }}\n\
             services:\n  app:\n    image: cutover-demo:v${{v}}\n    port: 8080\n    \
               ports: [\"127.0.0.1:{port}:8080\"]\n    volumes: [\"{name}-data:/data\"]\n    \
               stop_grace: 5s\n    health: {{ http: /health, interval: 200ms, deadline: 30s }}\n\
             data:\n  db:\n    postgres: {{ url: \"${{PG_URL}}\", database: app }}\n    writers: [app]\n\
             steps:\n  upgrade:\n    - sql: {{ data: db, query: \"UPDATE marker SET v = '${{v}}'\" }}\n"
        ),
    )
    .expect("stack file");
    let o = s.run(&["apply", "--yes"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let o = s.run(&["apply", "--yes", "--set", "vars.v=2"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(cluster.psql("app", "SELECT v FROM marker"), "2");
    // What v2 did to the database besides: a table of its own.
    cluster.psql("app", "CREATE TABLE v2_only (x int)");

    let o = s.run(&["restore-points", "dump"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("dumped   r2 db"),
        "{}",
        text(&o)
    );
    let o = s.run(&["restore-points", "verify"]);
    assert_eq!(
        code(&o),
        0,
        "the dump's files are checksummed: {}",
        text(&o)
    );

    // The server loses the same-server copy; the dump brings it back.
    cluster.psql("postgres", "DROP DATABASE app__rp_2");
    let o = s.run(&["rollback", "1", "--data", "restore", "--yes"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("from its dump"),
        "{}",
        text(&o)
    );
    assert_eq!(get_now(addr, "/version"), "v1");
    assert_eq!(
        cluster.psql("app", "SELECT v FROM marker"),
        "1",
        "release 1's data is back"
    );
    assert_eq!(
        cluster.psql(
            "app",
            "SELECT count(*) FROM pg_tables WHERE tablename = 'v2_only'"
        ),
        "0",
        "the database is release 1's, not v2's with a rewritten marker"
    );
}

/// A Grouper-like stack (seeds/grouper-container-upgrade.txt): a daemon that owns the
/// database schema and a UI in front of it, both on one image, sharing one PostgreSQL
/// database whose DDL table records the schema version. The daemon's DDL upgrade is an
/// upgrade-phase SQL step; the verify phase checks the version it left.
#[test]
fn a_grouper_like_upgrade_whose_ddl_check_fails_is_reverted_to_exactly_before() {
    let cluster = pg::Cluster::start();
    cluster.psql("postgres", "CREATE DATABASE grouper");
    cluster.psql(
        "grouper",
        "CREATE TABLE grouper_ddl (object_name text PRIMARY KEY, db_version text); \
         INSERT INTO grouper_ddl VALUES ('Grouper', '2.6.15'); \
         CREATE TABLE grouper_groups (id int PRIMARY KEY, name text); \
         INSERT INTO grouper_groups SELECT g, 'group ' || g FROM generate_series(1, 1000) g;",
    );
    let name = format!("t-grouper-{}", std::process::id());
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let s = Stack {
        name: name.clone(),
        dir: tempfile::tempdir().expect("tmp"),
        url: cluster.url(),
    };
    std::fs::write(
        s.dir.path().join("cutover.yaml"),
        format!(
            "name: {name}\n\
             vars: {{ version: \"2.6.15\", ddl: \"2.6.15\", img: v1 }}\n\
             secrets: {{ DB_ADMIN_URL: {{ env: PG_URL }} }}\n\
             services:\n  \
               daemon:\n    image: cutover-demo:${{img}}\n    port: 8080\n    \
                 env: {{ DEMO_DB: /tmp/daemon.sqlite }}\n    strategy: recreate\n    stop_grace: 5s\n    \
                 health: {{ http: /health, interval: 200ms, deadline: 30s }}\n  \
               ui:\n    image: cutover-demo:${{img}}\n    port: 8080\n    \
                 ports: [\"127.0.0.1:{port}:8080\"]\n    env: {{ DEMO_DB: /tmp/ui.sqlite }}\n    \
                 depends_on: [daemon]\n    stop_grace: 5s\n    \
                 health: {{ http: /health, interval: 200ms, deadline: 30s }}\n\
             data:\n  grouper_db:\n    postgres: {{ url: \"${{DB_ADMIN_URL}}\", database: grouper }}\n    \
               writers: [daemon, ui]\n    \
               schema_version: {{ query: \"select db_version from grouper_ddl where object_name = 'Grouper'\", expect: \"${{version}}\" }}\n\
             steps:\n  upgrade:\n    \
               - sql: {{ data: grouper_db, query: \"UPDATE grouper_ddl SET db_version = '${{ddl}}' WHERE object_name = 'Grouper'\" }}\n      \
                 name: the daemon upgrades the DDL\n"
        ),
    )
    .expect("stack file");
    let checksum = || {
        cluster.psql(
            "grouper",
            "SELECT md5(string_agg(x::text, ',' ORDER BY x::text)) FROM (SELECT * FROM grouper_ddl UNION ALL SELECT id::text, name FROM grouper_groups) x",
        )
    };

    let o = s.run(&["apply", "--yes"]);
    assert_eq!(code(&o), 0, "deploy\n{}", text(&o));
    let o = s.run(&[
        "apply",
        "--yes",
        "--set",
        "vars.img=v2",
        "--set",
        "vars.version=2.6.16",
        "--set",
        "vars.ddl=2.6.16",
    ]);
    assert_eq!(code(&o), 0, "2.6.16\n{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("schema version of `grouper_db` is 2.6.16"),
        "{}",
        text(&o)
    );
    cluster.psql(
        "grouper",
        "UPDATE grouper_groups SET name = name || ' (renamed in 2.6.16)' WHERE id <= 10",
    );
    let before = checksum();
    let version_before = get_now(addr, "/version");

    // v3: the DDL upgrade stops half-way (the table says 2.6.17-partial, not 2.6.17).
    let o = s.run(&[
        "apply",
        "--yes",
        "--set",
        "vars.img=v3",
        "--set",
        "vars.version=2.6.17",
        "--set",
        "vars.ddl=2.6.17-partial",
    ]);
    assert_eq!(code(&o), 1, "reverted\n{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("schema version is 2.6.17-partial, expected 2.6.17"),
        "{err}"
    );
    assert!(err.contains("swapped back"), "{err}");
    assert!(
        err.contains("run the same image IDs as before"),
        "the revert's comparison passed: {err}"
    );
    assert_eq!(
        checksum(),
        before,
        "the database is exactly as before the upgrade"
    );
    assert_eq!(
        cluster.psql("grouper", "SELECT db_version FROM grouper_ddl"),
        "2.6.16"
    );
    assert_eq!(get_now(addr, "/version"), version_before);
    assert_eq!(
        cluster.psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'grouper__failed_3'"
        ),
        "1",
        "what v3 left is kept for inspection"
    );
}
