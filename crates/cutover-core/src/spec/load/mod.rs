//! Stack file → validated [`Stack`].
//!
//! The loader reads the stack file (and the compose file it includes), lays the chosen
//! environment and the `--set` overrides over it, expands `${VAR}`s and checks everything it
//! can, collecting every problem before it gives up. Nothing here has side effects beyond
//! reading the files the stack names.
//!
//! One context, [`Cx`], carries the diagnostics, the sources and the key places through
//! the whole load; its methods live with the section of the stack file they read:
//! `compose.rs` (the compose import), `vars.rs` (`--set`, variables, `${VAR}`, the small
//! values every section uses), `services.rs`, `data.rs`, `steps.rs` (checks and custom
//! steps) and `traffic.rs`. This file parses, runs the sections in order and checks the
//! dependency graph.

mod compose;
mod data;
mod services;
mod steps;
mod traffic;
mod vars;

pub use services::serving_service;
// Helpers one section's module writes and another reads.
use data::d_loc;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use indexmap::IndexMap;
use secrecy::SecretString;
use serde::de::DeserializeOwned;

use super::compose::ComposeFile;
use super::diag::{DiagKind, Diagnostic, Diagnostics};
use super::interp::{InterpError, Vars, interpolate};
use super::keymap::{self, KeyMap, Segment};
use super::model::*;
use super::raw::*;
use super::source::{Loc, Located, SourceId, SourceScope, Sources, Text};
use crate::graph;
use crate::settings::ConfigFormat;

/// What to load besides the file itself.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// The environment overlay to apply (`--env`).
    pub environment: Option<String>,
    /// `--set SERVICE.image=REF` and friends, in order.
    pub sets: Vec<String>,
    /// The process environment: the highest-precedence source of `${VAR}`s.
    pub process_env: HashMap<String, String>,
    /// Compose profiles to activate (`--profile`), besides COMPOSE_PROFILES.
    pub profiles: Vec<String>,
}

impl LoadOptions {
    /// Options with the real process environment.
    pub fn from_process() -> Self {
        LoadOptions {
            process_env: std::env::vars().collect(),
            ..LoadOptions::default()
        }
    }
}

/// A stack that passed validation, with what was noticed on the way.
#[derive(Debug)]
pub struct Loaded {
    pub stack: Stack,
    /// The stack file.
    pub path: PathBuf,
    /// Problems that do not stop anything (compose keys not imported).
    pub warnings: Diagnostics,
    /// Secrets declared but not available here: fine for `plan`, refused by `apply`.
    pub missing_secrets: Vec<(String, String)>,
    /// The values of the secrets that are available, to scrub from any text cutover prints
    /// or stores.
    pub redactor: super::Redactor,
}

/// Loads and validates the stack file at `path`.
pub fn load(path: &Path, opts: &LoadOptions) -> Result<Loaded, Diagnostics> {
    let mut cx = Cx::new(path);
    let source = cx.sources.add(path);
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            cx.error(
                DiagKind::Io,
                Loc {
                    source,
                    ..Loc::default()
                },
                format!("cannot read the stack file: {e}"),
            );
            return Err(cx.finish_err());
        }
    };
    load_text(cx, source, &text, opts)
}

/// Loads a stack from text, as if read from `path` (which names it in diagnostics and anchors
/// relative paths). Never panics, whatever the text.
pub fn load_str(path: &Path, text: &str, opts: &LoadOptions) -> Result<Loaded, Diagnostics> {
    let mut cx = Cx::new(path);
    let source = cx.sources.add(path);
    load_text(cx, source, text, opts)
}

fn load_text(
    mut cx: Cx,
    source: SourceId,
    text: &str,
    opts: &LoadOptions,
) -> Result<Loaded, Diagnostics> {
    let Some(mut raw) = cx.parse::<RawStack>(text, source, Strictness::Strict) else {
        return Err(cx.finish_err());
    };
    cx.keys = KeyMap::build(text, source);
    let given = cx
        .sources
        .path(source)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let path = std::path::absolute(&given).unwrap_or(given);

    // The compose file first: the stack's own `services` entries are laid over it.
    if let Some(inc) = raw.include_compose.clone() {
        cx.import_compose(&inc, &mut raw, opts);
    }

    // The environment overlay.
    let mut environment = None;
    if let Some(name) = &opts.environment {
        match raw.environments.shift_remove(name) {
            Some(env) => {
                environment = Some(name.clone());
                apply_environment(&mut raw, env);
            }
            None => {
                let known: Vec<&str> = raw.environments.keys().map(String::as_str).collect();
                let hint = if known.is_empty() {
                    "this stack defines no `environments`".to_string()
                } else {
                    format!("defined environments: {}", known.join(", "))
                };
                cx.error(
                    DiagKind::InvalidValue,
                    Loc {
                        source: SourceId::COMMAND_LINE,
                        ..Loc::default()
                    },
                    format!("--env {name}: no such environment"),
                )
                .hint = Some(hint);
            }
        }
    }

    for set in &opts.sets {
        cx.apply_set(set, &mut raw);
    }

    let vars = cx.vars(&raw, opts);
    let stack = cx.lower(raw, environment, &vars);
    if stack.services.is_empty() && cx.errors.is_empty() {
        // An empty file (or one of comments) would otherwise "validate" as a stack that
        // deploys nothing.
        cx.error(
            DiagKind::Missing,
            Loc {
                source,
                line: 1,
                col: 1,
            },
            "the stack defines no services",
        )
        .hint = Some(
            "a stack file needs `name:` and at least one entry under `services:` (or an `include_compose:` with services); docs/stack-file.md shows an example".into(),
        );
    }
    cx.check_graph(&stack);
    if cx.errors.is_empty() {
        Ok(Loaded {
            stack,
            path,
            warnings: Diagnostics {
                sources: cx.sources.clone(),
                items: cx.warnings,
            }
            .sorted(),
            missing_secrets: cx.missing_secrets,
            redactor: vars.redactor(),
        })
    } else {
        Err(cx.finish_err())
    }
}

fn apply_environment(raw: &mut RawStack, env: RawEnvironment) {
    raw.vars.extend(env.vars);
    if env.env_files.is_some() {
        raw.env_files = env.env_files;
    }
    raw.secrets.extend(env.secrets);
    if env.protected.is_some() {
        raw.protected = env.protected;
    }
    for (name, over) in env.services {
        raw.services.entry(name).or_default().overlay(over);
    }
    if env.traffic.is_some() {
        raw.traffic = env.traffic;
    }
    if env.promote_from.is_some() {
        raw.promote_from = env.promote_from;
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Strictness {
    /// Unknown keys are errors (our own stack file).
    Strict,
    /// Unknown keys are warnings (a compose file: it has much we do not import).
    Lenient,
}

/// The loader's working state: sources, diagnostics, the stack file's directory.
struct Cx {
    sources: Sources,
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
    missing_secrets: Vec<(String, String)>,
    /// The directory relative paths in the stack file are resolved against (absolute).
    base: PathBuf,
    /// The same directory as the user named it, for file names in diagnostics.
    shown_base: PathBuf,
    /// Every key name of the stack file format, for "did you mean".
    known_keys: BTreeSet<&'static str>,
    /// Where each `depends_on` edge was written, to place cycle errors.
    dep_locs: HashMap<(String, String), Loc>,
    /// Where every key of the stack file is: the place of an entry that has no value of its
    /// own to point at.
    keys: KeyMap,
    /// The compose project of `include_compose`.
    compose_project: Option<String>,
    /// Its volumes marked `external:`.
    external_volumes: Vec<String>,
    /// Its top-level volumes: the compose file's name → the engine's.
    compose_volumes: HashMap<String, String>,
}

impl Cx {
    fn new(path: &Path) -> Cx {
        let base = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let shown_base = base.clone();
        let base = std::path::absolute(&base).unwrap_or(base);
        Cx {
            shown_base,
            sources: Sources::default(),
            errors: Vec::new(),
            warnings: Vec::new(),
            missing_secrets: Vec::new(),
            base,
            known_keys: super::fields::all_keys(),
            dep_locs: HashMap::new(),
            keys: KeyMap::default(),
            compose_project: None,
            external_volumes: Vec::new(),
            compose_volumes: HashMap::new(),
        }
    }

    /// Where the key at `path` of the stack file is, or its nearest written ancestor.
    fn key_at(&self, path: &[&str]) -> Loc {
        let segs: Vec<Segment> = path
            .iter()
            .map(|p| match p.parse::<usize>() {
                Ok(i) if p.chars().all(|c| c.is_ascii_digit()) => Segment::Index(i),
                _ => Segment::Key((*p).to_string()),
            })
            .collect();
        // Merged in from an environment overlay, the path is written under it; failing all,
        // the document's first line: a diagnostic always has a place.
        self.keys
            .under_any(&segs)
            .filter(|_| self.keys.get(&segs).is_none())
            .or_else(|| self.keys.nearest(&segs).filter(|l| l.line > 0))
            .or_else(|| self.keys.first())
            .unwrap_or_default()
    }

    fn error(&mut self, kind: DiagKind, at: Loc, message: impl Into<String>) -> &mut Diagnostic {
        self.errors.push(Diagnostic::new(kind, at, message));
        let last = self.errors.len() - 1;
        &mut self.errors[last]
    }

    fn finish_err(self) -> Diagnostics {
        Diagnostics {
            sources: self.sources,
            items: self.errors,
        }
        .sorted()
    }

    /// Parses a document; a YAML or type error is one diagnostic and `None`. Unknown keys
    /// become diagnostics (all of them) and parsing goes on.
    fn parse<T: DeserializeOwned>(
        &mut self,
        text: &str,
        source: SourceId,
        strictness: Strictness,
    ) -> Option<T> {
        let mut ignored: Vec<Vec<Segment>> = Vec::new();
        let parsed = {
            let _scope = SourceScope::enter(source);
            serde_saphyr::with_deserializer_from_str_with_options(text, yaml_options(), |de| {
                serde_ignored::deserialize(de, |path| ignored.push(keymap::from_ignored(&path)))
            })
        };
        let value = match parsed {
            Ok(v) => v,
            Err(e) => {
                let at = e.location().map_or(
                    Loc {
                        source,
                        ..Loc::default()
                    },
                    |l| Loc {
                        source,
                        line: l.line() as u32,
                        col: l.column() as u32,
                    },
                );
                let message = syntax_message(&e);
                self.error(DiagKind::Syntax, at, message).hint =
                    Some("check the indentation and the value's type at this place".into());
                return None;
            }
        };
        // serde_ignored also reports the internals of our located values; those are not keys.
        ignored.retain(|p| {
            !p.iter()
                .any(|s| matches!(s, Segment::Key(k) if k.starts_with("__serde_saphyr")))
        });
        if !ignored.is_empty() {
            let keys = KeyMap::build(text, source);
            for path in ignored {
                let at = keys.nearest(&path).unwrap_or(Loc {
                    source,
                    ..Loc::default()
                });
                let shown = keymap::display_path(&path);
                let Some(Segment::Key(name)) = path.last() else {
                    continue;
                };
                match strictness {
                    // Top-level compose keys (volumes, networks, x-…) are not about services.
                    Strictness::Lenient if path.len() < 3 => {}
                    Strictness::Strict => {
                        let hint = match self.suggest(name) {
                            Some(s) => format!("did you mean `{s}`?"),
                            None => "remove it; docs/stack-file.md lists every key".to_string(),
                        };
                        self.error(DiagKind::UnknownKey, at, format!("unknown key `{shown}`"))
                            .hint = Some(hint);
                    }
                    Strictness::Lenient => self.warnings.push(
                        Diagnostic::new(
                            DiagKind::UnknownKey,
                            at,
                            format!("`{shown}` is not imported from the compose file"),
                        )
                        .hint("cutover imports image, command, environment, env_file, ports, volumes, depends_on, healthcheck, restart, stop_grace_period, init, tmpfs and profiles (docs/compose-keys.md)"),
                    ),
                }
            }
        }
        Some(value)
    }

    fn suggest(&self, name: &str) -> Option<&'static str> {
        self.known_keys
            .iter()
            .map(|k| (strsim::damerau_levenshtein(name, k), *k))
            .filter(|(d, k)| *d <= 2 && d * 2 < k.len())
            .min()
            .map(|(_, k)| k)
    }

    fn resolve_path(&self, p: &str) -> PathBuf {
        let path = Path::new(p);
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base.join(path)
        }
    }

    /// Dependency cycles, reported once per cycle at the first edge of it.
    fn check_graph(&mut self, stack: &Stack) {
        let mut deps: IndexMap<String, Vec<String>> = stack
            .services
            .iter()
            .map(|(n, s)| {
                (
                    n.clone(),
                    s.depends_on.iter().filter(|d| *d != n).cloned().collect(),
                )
            })
            .collect();
        // Report each cycle, then cut it and look again: every cycle is reported once.
        while let Err(cycle) = graph::waves(&deps) {
            if cycle.len() < 2 {
                break;
            }
            let message = format!("dependency cycle: {}", cycle.join(" → "));
            self.errors.push(
                Diagnostic::new(DiagKind::DependencyCycle, self.cycle_loc(&cycle), message)
                    .hint("break the cycle: a service cannot wait for itself"),
            );
            if let Some(d) = deps.get_mut(&cycle[0]) {
                d.retain(|x| *x != cycle[1]);
            }
        }
    }

    /// Where the first edge of a cycle, `a → b`, was written: the `b` in `a`'s depends_on.
    fn cycle_loc(&self, cycle: &[String]) -> Loc {
        self.dep_locs
            .get(&(cycle[0].clone(), cycle[1].clone()))
            .copied()
            .unwrap_or_default()
    }
}

fn syntax_message(e: &serde_saphyr::Error) -> String {
    let rendered = e.without_snippet().render();
    let first = rendered.lines().next().unwrap_or_default().trim();
    // "line 4 column 12: expected string scalar" → "expected string scalar"
    let message = match first.split_once(": ") {
        Some((pos, rest)) if pos.starts_with("line ") => rest,
        _ => first,
    };
    // serde's own messages may end with " at line 9, column 36": we show the place already.
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// The parser's limits: its defaults (caps on events, nodes, aliases and depth against a
/// YAML bomb) but the alias-to-anchor ratio, which real compose files break by design — one
/// `x-` anchor of shared settings merged into every service (Sentry's: 142 aliases, 10
/// anchors).
fn yaml_options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.enforce_alias_anchor_ratio = false;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options
}
