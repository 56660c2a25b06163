//! `include_compose` on compose files of well-known self-hosted projects, kept byte for byte
//! under `tests/compose/` (provenance in its README): each imports, or is refused for a
//! documented reason, and no key of a service is dropped without a word — every one is
//! imported or named in a warning with its place.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use cutover_core::spec::{LoadOptions, load_str};

/// The service keys the importer takes (docs/compose-keys.md, "import").
const IMPORTED: &[&str] = &[
    "image",
    "command",
    "environment",
    "ports",
    "volumes",
    "depends_on",
    "healthcheck",
    "restart",
    "stop_grace_period",
    "init",
    "tmpfs",
    "profiles",
    "env_file",
    "extends",
    "secrets",
    "configs",
];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/compose")
}

/// What an operator provides before `docker compose up`: the project's own example env file
/// when it ships one, and a value for each variable the file requires without a default.
fn operator_env(dir: &Path, text: &str) -> HashMap<String, String> {
    let mut env = HashMap::new();
    for example in [".env", "example.env", "env.example"] {
        if let Ok(iter) = dotenvy::from_path_iter(dir.join(example)) {
            env.extend(iter.flatten());
        }
    }
    let re = regex::Regex::new(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:?[-?])?[^}]*\}").expect("regex");
    let mut port = 18000;
    // The unbraced `$VAR` compose also expands, as `${VAR}`.
    let text = &cutover_core::spec::compose::brace_variables(text);
    for c in re.captures_iter(text) {
        let name = c[1].to_string();
        let has_default = c.get(2).is_some_and(|m| m.as_str().ends_with('-'));
        if env.contains_key(&name) || has_default {
            continue;
        }
        let value = if name.contains("PORT") {
            port += 1;
            port.to_string()
        } else {
            "set-by-the-operator".to_string()
        };
        env.insert(name, value);
    }
    env
}

/// Each service's own keys, as written (merge keys resolved).
fn service_keys(text: &str) -> Vec<(String, BTreeSet<String>)> {
    let mut budget = serde_saphyr::Budget::default();
    budget.enforce_alias_anchor_ratio = false;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    let doc: serde_json::Value =
        serde_saphyr::from_str_with_options(text, options).expect("the fixture is YAML");
    doc["services"]
        .as_object()
        .expect("services")
        .iter()
        .map(|(name, svc)| {
            let keys = svc
                .as_object()
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
            (name.clone(), keys)
        })
        .collect()
}

#[test]
fn every_real_compose_file_imports_without_a_silent_drop() {
    let mut imported = 0;
    let mut report = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .expect("tests/compose")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("docker-compose.yml").is_file())
        .collect();
    dirs.sort();
    assert!(
        dirs.len() >= 5,
        "at least five real compose files: {dirs:?}"
    );
    for dir in &dirs {
        let project = dir
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let compose = dir.join("docker-compose.yml");
        let text = std::fs::read_to_string(&compose).expect("read");
        let stack = format!("name: t\ninclude_compose: {}\n", compose.display());
        // The files it extends are read too: their variables are the operator's to set.
        let all_yaml: String = std::fs::read_dir(dir)
            .expect("read dir")
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .collect::<Vec<_>>()
            .join("\n");
        let opts = LoadOptions {
            process_env: operator_env(dir, &all_yaml),
            ..LoadOptions::default()
        };
        let tmp = tempfile::tempdir().expect("temp dir");
        match load_str(&tmp.path().join("cutover.yaml"), &stack, &opts) {
            Ok(loaded) => {
                imported += 1;
                let warned: Vec<String> = loaded
                    .warnings
                    .items
                    .iter()
                    .map(|w| w.message.clone())
                    .collect();
                for (svc, keys) in service_keys(&text) {
                    let inactive = warned.iter().any(|w| {
                        w.starts_with(&format!("service `{svc}` is not imported: its profile"))
                    });
                    if inactive {
                        continue;
                    }
                    for key in keys {
                        let said = IMPORTED.contains(&key.as_str())
                            || warned
                                .iter()
                                .any(|w| w.contains(&format!("services.{svc}.{key}")));
                        assert!(
                            said,
                            "{project}: `services.{svc}.{key}` is neither imported nor warned about"
                        );
                    }
                }
                report.push(format!("{project}: imported, {} warnings", warned.len()));
            }
            Err(d) => {
                // The documented refusal: an image cutover cannot run without building it.
                let all = d.to_string();
                assert!(
                    all.contains("has no `image`"),
                    "{project}: refused for an undocumented reason:\n{all}"
                );
                let first: Vec<&str> = all.lines().take(2).collect();
                report.push(format!("{project}: refused: {}", first.join(" / ")));
            }
        }
    }
    eprintln!("{}", report.join("\n"));
    assert!(imported >= 5, "at least five import: {report:#?}");
}
