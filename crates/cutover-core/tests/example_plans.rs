//! Snapshot tests of the plans of the example stacks, as text, JSON and a markdown
//! checklist: an upgrade from the previous version of each example to the current one.
//!
//! A change to a plan's wording or order shows up here as a diff to review
//! (`INSTA_UPDATE=always cargo test` rewrites the snapshots; read the diff before committing).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use cutover_core::plan::{self, Observed, Resolved, render};
use cutover_core::spec::{self, LoadOptions, Stack};

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name)
        .join("cutover.yaml")
}

fn load(name: &str, env: Option<&str>, vars: &[(&str, &str)], sets: &[&str]) -> Stack {
    let opts = LoadOptions {
        environment: env.map(str::to_string),
        sets: sets.iter().map(|s| s.to_string()).collect(),
        process_env: vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<HashMap<_, _>>(),
        profiles: Vec::new(),
    };
    match spec::load(&example(name), &opts) {
        Ok(l) => l.stack,
        Err(d) => panic!("example {name} must be valid:\n{d}"),
    }
}

fn snapshot_all(name: &str, before: &Stack, after: &Stack) {
    let observed = Observed {
        release: Some(4),
        stack: Some(before.clone()),
        image_ids: Default::default(),
        adoptable: indexmap::IndexMap::new(),
        started_in: indexmap::IndexMap::new(),
    };
    let p = plan::plan(after, &observed, &Resolved::default());
    assert!(p.changes, "{name}: the upgrade must change something");
    let text = render::text(&p, false);
    let markdown = render::markdown(&p);
    let json = serde_json::to_string_pretty(&p).expect("plan serializes");
    for out in [&text, &markdown, &json] {
        assert!(
            !out.contains("pw-never-shown"),
            "{name}: a secret value reached the plan"
        );
    }
    insta::assert_snapshot!(format!("{name}_text"), text);
    insta::assert_snapshot!(format!("{name}_markdown"), markdown);
    // The JSON form is a contract: it must read back into the same plan.
    let back: plan::Plan = serde_json::from_str(&json).expect("plan JSON reads back");
    assert_eq!(back, p);
    insta::assert_snapshot!(format!("{name}_json"), json);
}

const SECRETS: [(&str, &str); 5] = [
    ("GROUPER_DB_PASSWORD", "pw-never-shown"),
    (
        "GROUPER_DB_ADMIN_URL",
        "postgres://admin:pw-never-shown@db/postgres",
    ),
    ("ATMO_DB_PASSWORD", "pw-never-shown"),
    (
        "ATMO_DB_ADMIN_URL",
        "postgres://admin:pw-never-shown@db/postgres",
    ),
    ("TRACKER_DB_PASSWORD", "pw-never-shown"),
];

fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    SECRETS
        .iter()
        .copied()
        .chain(extra.iter().copied())
        .collect()
}

#[test]
fn grouper_upgrade() {
    let before = load(
        "grouper",
        None,
        &with(&[("GROUPER_VERSION", "2.6.15")]),
        &[],
    );
    let after = load("grouper", None, &with(&[]), &[]);
    snapshot_all("grouper", &before, &after);
}

#[test]
fn atmosphere_upgrade_from_compose() {
    let before = load("atmosphere", None, &with(&[]), &["vars.release=v36-5"]);
    let after = load("atmosphere", None, &with(&[]), &[]);
    snapshot_all("atmosphere", &before, &after);
}

#[test]
fn tracker_upgrade_in_staging_and_prod() {
    let before = load(
        "tracker",
        Some("staging"),
        &with(&[]),
        &["vars.tag=master-0000000"],
    );
    let after = load("tracker", Some("staging"), &with(&[]), &[]);
    snapshot_all("tracker_staging", &before, &after);
    let before = load(
        "tracker",
        Some("prod"),
        &with(&[]),
        &["vars.tag=master-f01225d"],
    );
    let after = load("tracker", Some("prod"), &with(&[]), &[]);
    assert!(after.protected);
    snapshot_all("tracker_prod", &before, &after);
}
