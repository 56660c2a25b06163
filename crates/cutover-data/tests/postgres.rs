//! PostgreSQL restore points on a real throwaway cluster.

use cutover_data::postgres::Admin;
use cutover_testkit::pg::Cluster;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A checksum of every table's rows, the schema, and the database-level settings and ACL.
fn fingerprint(c: &Cluster, db: &str) -> String {
    let rows = c.psql(
        db,
        "SELECT string_agg(table_name || ':' || (xpath('/row/c/text()', query_to_xml(format(\
           'select md5(coalesce(string_agg(t::text, '','' order by t::text), '''')) as c from %I.%I t', \
           table_schema, table_name), false, true, '')))[1]::text, ' ' ORDER BY table_name) \
         FROM information_schema.tables WHERE table_schema = 'public'",
    );
    let schema = c.psql(
        db,
        "SELECT string_agg(table_name || '.' || column_name || ':' || data_type, ',' \
           ORDER BY table_name, ordinal_position) \
         FROM information_schema.columns WHERE table_schema = 'public'",
    );
    let facts = c.psql(
        "postgres",
        &format!(
            "SELECT pg_get_userbyid(d.datdba) || ' ' || coalesce(d.datacl::text, '-') || ' ' || d.datconnlimit || ' ' || \
               coalesce((SELECT string_agg(coalesce(pg_get_userbyid(nullif(s.setrole, 0))::text, '*') || '=' || array_to_string(s.setconfig, ';'), ' ' ORDER BY 1) \
                 FROM pg_db_role_setting s WHERE s.setdatabase = d.oid), '-') \
             FROM pg_database d WHERE d.datname = '{db}'"
        ),
    );
    format!("rows {rows}\nschema {schema}\nfacts {facts}")
}

fn seed(c: &Cluster) {
    c.psql("postgres", "CREATE ROLE app_owner LOGIN");
    c.psql("postgres", "CREATE ROLE reporter LOGIN");
    c.psql("postgres", "CREATE DATABASE app OWNER app_owner");
    c.psql("postgres", "ALTER DATABASE app SET work_mem = '8MB'");
    c.psql(
        "postgres",
        "ALTER DATABASE app SET search_path = public, \"$user\"",
    );
    c.psql(
        "postgres",
        "ALTER ROLE reporter IN DATABASE app SET statement_timeout = '5s'",
    );
    c.psql("postgres", "ALTER DATABASE app CONNECTION LIMIT 40");
    c.psql("postgres", "REVOKE ALL ON DATABASE app FROM PUBLIC");
    c.psql("postgres", "GRANT CONNECT ON DATABASE app TO reporter");
    c.psql(
        "app",
        "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL); \
         INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 20000) g; \
         CREATE TABLE schema_version (version int PRIMARY KEY); INSERT INTO schema_version VALUES (1);",
    );
}

#[test]
fn a_swap_puts_back_rows_schema_settings_and_acl_and_keeps_the_failed_copy() {
    let c = Cluster::start();
    seed(&c);
    let before = fingerprint(&c, "app");
    let rt = rt();
    let mut admin = rt.block_on(Admin::connect(&c.url(), "app")).expect("admin");

    // A client still connected: the restore point ends its session.
    let mut lingering = std::process::Command::new("psql")
        .args(["-X", "-h"])
        .arg(&c.dir)
        .args([
            "-p",
            &c.port.to_string(),
            "-U",
            "postgres",
            "-d",
            "app",
            "-c",
            "SELECT pg_sleep(60)",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("psql");
    std::thread::sleep(std::time::Duration::from_millis(300));

    let rp = rt.block_on(admin.take("app", 2)).expect("restore point");
    assert_eq!(rp.copy, "app__rp_2");
    assert!(rp.size_bytes > 0);
    let _ = lingering.wait();
    assert_eq!(
        c.psql(
            "postgres",
            "SELECT datallowconn FROM pg_database WHERE datname = 'app__rp_2'"
        ),
        "f"
    );
    assert_eq!(
        fingerprint(&c, "app"),
        before,
        "taking a restore point changes nothing"
    );

    // What a v2 migration does: schema and data.
    c.psql(
        "app",
        "ALTER TABLE items ADD COLUMN created_at timestamptz DEFAULT now(); \
         UPDATE items SET name = upper(name) WHERE id % 3 = 0; DELETE FROM items WHERE id > 15000; \
         CREATE TABLE tags (item int, tag text); UPDATE schema_version SET version = 2;",
    );
    c.psql("postgres", "ALTER DATABASE app SET work_mem = '64MB'");
    assert_ne!(fingerprint(&c, "app"), before);

    let report = rt.block_on(admin.restore(&rp)).expect("restore");
    assert_eq!(report.failed_copy.as_deref(), Some("app__failed_2"));
    assert!(
        report.swap < std::time::Duration::from_secs(1),
        "{:?}",
        report.swap
    );
    assert_eq!(
        fingerprint(&c, "app"),
        before,
        "the restored database equals the original"
    );
    assert_eq!(c.psql("app", "SELECT version FROM schema_version"), "1");
    // The failed copy is kept for inspection, with the migrated schema.
    assert_eq!(
        c.psql("app__failed_2", "SELECT version FROM schema_version"),
        "2"
    );
    // Running the restore again (after a crash) finds it done and changes nothing.
    rt.block_on(admin.restore(&rp)).expect("restore again");
    assert_eq!(fingerprint(&c, "app"), before);
    // Pruned later.
    assert!(
        rt.block_on(admin.drop_database("app__failed_2"))
            .expect("drop")
    );
    assert_eq!(
        c.psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'app__%'"
        ),
        "0"
    );
}

#[test]
fn a_killed_take_leaves_the_live_database_untouched_and_the_next_take_cleans_up() {
    let c = Cluster::start();
    seed(&c);
    // Big enough that the copy takes a moment.
    c.psql("app", "CREATE TABLE blob AS SELECT g, repeat(md5(g::text), 8) AS pad FROM generate_series(1, 600000) g");
    let before = fingerprint(&c, "app");

    // A separate process takes the restore point; it is killed mid-copy.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pg-restore-point"))
        .args(["take", &c.url(), "app", "7"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("pg-restore-point");
    let started = std::time::Instant::now();
    let mut seen = false;
    while !seen && started.elapsed() < std::time::Duration::from_secs(20) {
        seen = c.psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'CREATE DATABASE%' AND state = 'active'",
        ) != "0";
    }
    child.kill().expect("kill");
    assert!(
        seen,
        "the copy was never seen running: the kill did not interrupt it"
    );
    let _ = child.wait();
    std::thread::sleep(std::time::Duration::from_millis(500));

    assert_eq!(
        fingerprint(&c, "app"),
        before,
        "the live database is untouched"
    );
    let rt = rt();
    let admin = rt.block_on(Admin::connect(&c.url(), "app")).expect("admin");
    let rp = rt
        .block_on(admin.take("app", 7))
        .expect("the next take succeeds");
    rt.block_on(admin.verify(&rp)).expect("verified");
    assert_eq!(
        c.psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'app__rp_7'"
        ),
        "1"
    );
}

#[test]
fn selected_tables_are_put_back_and_the_rest_of_the_database_is_left_alone() {
    use cutover_data::pg_tables;
    let c = Cluster::start();
    c.psql("postgres", "CREATE DATABASE lsm");
    c.psql(
        "lsm",
        "CREATE TABLE lsm_serviceentity (id int PRIMARY KEY, name text NOT NULL); \
         CREATE TABLE lsm_serviceinstance (id int PRIMARY KEY, entity int REFERENCES lsm_serviceentity(id), state text); \
         CREATE TABLE audit (id serial PRIMARY KEY, what text); \
         INSERT INTO lsm_serviceentity SELECT g, 'entity ' || g FROM generate_series(1, 500) g; \
         INSERT INTO lsm_serviceinstance SELECT g, 1 + g % 500, 'up' FROM generate_series(1, 2000) g; \
         INSERT INTO audit (what) VALUES ('before');",
    );
    let sum = |t: &str| {
        c.psql(
            "lsm",
            &format!("SELECT md5(string_agg(x::text, ',' ORDER BY x::text)) FROM {t} x"),
        )
    };
    let entities = sum("lsm_serviceentity");
    let rt = rt();
    let tables = vec![
        "lsm_serviceentity".to_string(),
        "public.lsm_serviceinstance".to_string(),
    ];
    let mut client = rt
        .block_on(cutover_data::postgres::connect_db(&c.url(), "lsm"))
        .expect("connect");
    let rp = rt
        .block_on(pg_tables::take(&mut client, "lsm", &tables, 4))
        .expect("take");
    assert_eq!(
        rp.tables.iter().map(|t| t.rows).collect::<Vec<_>>(),
        [500, 2000]
    );

    // The upgrade adds a column and rewrites the rows; the audit log goes on.
    c.psql(
        "lsm",
        "ALTER TABLE lsm_serviceinstance ADD COLUMN version int DEFAULT 2; \
         UPDATE lsm_serviceinstance SET state = 'migrated'; DELETE FROM lsm_serviceentity WHERE id > 400 \
           AND id NOT IN (SELECT entity FROM lsm_serviceinstance); \
         INSERT INTO lsm_serviceentity VALUES (9999, 'new'); INSERT INTO audit (what) VALUES ('during');",
    );
    rt.block_on(pg_tables::restore(&mut client, &rp))
        .expect("restore");
    assert_eq!(sum("lsm_serviceentity"), entities);
    assert_eq!(
        c.psql(
            "lsm",
            "SELECT count(*), min(state), max(state) FROM lsm_serviceinstance"
        ),
        "2000|up|up"
    );
    assert_eq!(
        c.psql("lsm", "SELECT md5(string_agg((x.id, x.entity, x.state)::text, ',' ORDER BY x.id)) FROM lsm_serviceinstance x"),
        c.psql("lsm", "SELECT md5(string_agg((x.id, x.entity, x.state)::text, ',' ORDER BY x.id)) FROM cutover_rp_4.public__lsm_serviceinstance x")
    );
    assert_eq!(
        c.psql("lsm", "SELECT count(*) FROM audit"),
        "2",
        "other tables are left alone"
    );
    assert_eq!(
        c.psql("lsm", "SELECT count(*) FROM cutover_failed_4.public__lsm_serviceinstance WHERE state = 'migrated'"),
        "2000",
        "the rows the upgrade left are kept for inspection"
    );

    // A migration that dropped a column cannot be undone row by row: refused, untouched.
    c.psql("lsm", "ALTER TABLE lsm_serviceentity DROP COLUMN name");
    let err = rt
        .block_on(pg_tables::restore(&mut client, &rp))
        .expect_err("refused");
    assert!(
        err.to_string().contains("no longer has column(s) name"),
        "{err}"
    );
    rt.block_on(pg_tables::drop(&client, &rp, true))
        .expect("drop");
    assert_eq!(
        c.psql(
            "lsm",
            "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'cutover_%'"
        ),
        "0"
    );
}

#[test]
fn the_dump_of_a_restore_point_brings_it_back_when_the_copy_is_gone() {
    let c = Cluster::start();
    seed(&c);
    let before = fingerprint(&c, "app");
    let rt = rt();
    let mut admin = rt.block_on(Admin::connect(&c.url(), "app")).expect("admin");
    let mut rp = rt.block_on(admin.take("app", 5)).expect("take");
    let tmp = tempfile::tempdir().expect("tmp");
    let dump = tmp.path().join("pg_dump");
    rt.block_on(admin.open_copy(&rp, true)).expect("open");
    cutover_data::pg_dump::dump(&c.url(), &rp.copy, &dump, 2).expect("pg_dump of the copy");
    rt.block_on(admin.open_copy(&rp, false)).expect("close");
    assert!(dump.join("toc.dat").exists());

    // The server loses the copy; the upgrade changed the live database.
    assert!(rt.block_on(admin.drop_database(&rp.copy)).expect("drop"));
    c.psql(
        "app",
        "DELETE FROM items WHERE id > 100; UPDATE schema_version SET version = 2",
    );

    cutover_data::pg_dump::restore(&c.url(), &dump, &rp.copy, &rp.owner, 2).expect("pg_restore");
    rp.copy_oid = rt
        .block_on(admin.oid_of(&rp.copy))
        .expect("oid")
        .expect("restored copy");
    rt.block_on(admin.restore(&rp)).expect("swap");
    let after = fingerprint(&c, "app");
    // Rows and schema come back; the database-level facts were applied by the swap.
    assert_eq!(after, before);
}
