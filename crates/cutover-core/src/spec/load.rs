//! Stack file → validated [`Stack`].
//!
//! The loader reads the stack file (and the compose file it includes), lays the chosen
//! environment and the `--set` overrides over it, expands `${VAR}`s and checks everything it
//! can, collecting every problem before it gives up. Nothing here has side effects beyond
//! reading the files the stack names.

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
        self.keys.nearest(&segs).unwrap_or_default()
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

    fn import_compose(&mut self, inc: &Text, raw: &mut RawStack, opts: &LoadOptions) {
        let path = self.resolve_path(&inc.value);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                self.error(
                    DiagKind::Io,
                    inc.at,
                    format!("cannot read compose file {}: {e}", path.display()),
                )
                .hint = Some("include_compose is resolved relative to the stack file".into());
                return;
            }
        };
        let shown = if Path::new(&inc.value).is_absolute() {
            path.clone()
        } else {
            self.shown_base.join(&inc.value)
        };
        let source = self.sources.add(&shown);
        // Compose also expands the unbraced form, `$VAR`: the same variable as `${VAR}`.
        let text = super::compose::brace_variables(&text);
        let Some(compose) = self.parse::<ComposeFile>(&text, source, Strictness::Lenient) else {
            return;
        };
        // Compose reads `.env` beside the compose file for `${VAR}`s: so does cutover, below
        // the stack file's own env files.
        let dot_env = path.with_file_name(".env");
        if dot_env.is_file() {
            let own_default = self.base.join(".env");
            let files = raw.env_files.get_or_insert_with(|| {
                // Without `env_files` the stack file's own `.env` is read: it still is.
                if own_default.is_file() {
                    vec![Located::new(own_default.display().to_string(), inc.at)]
                } else {
                    Vec::new()
                }
            });
            if !files.iter().any(|f| self.resolve_path(&f.value) == dot_env) {
                files.insert(0, Located::new(dot_env.display().to_string(), inc.at));
            }
        }
        // The project name decides the names of its volumes and containers: `name:`, then
        // COMPOSE_PROJECT_NAME, then the compose file's directory, as compose does.
        // COMPOSE_PROJECT_NAME and COMPOSE_PROFILES may be set in that `.env` too.
        let dot_env_vars: HashMap<String, String> = dotenvy::from_path_iter(&dot_env)
            .map(|iter| iter.flatten().collect())
            .unwrap_or_default();
        let compose_var = |name: &str| {
            opts.process_env
                .get(name)
                .or_else(|| dot_env_vars.get(name))
                .cloned()
        };
        let project = compose
            .name
            .as_ref()
            .map(|n| n.value.clone())
            .or_else(|| compose_var("COMPOSE_PROJECT_NAME"))
            .unwrap_or_else(|| {
                path.parent()
                    .and_then(|d| std::path::absolute(d).ok())
                    .and_then(|d| d.file_name().map(|f| f.to_string_lossy().into_owned()))
                    .unwrap_or_default()
            });
        let project = super::compose::project_name(&project);
        let compose_keys = KeyMap::build(&text, source);
        for (net, _) in &compose.networks {
            if net != "default" {
                self.warnings.push(Diagnostic::new(
                    DiagKind::UnknownKey,
                    compose_keys
                        .nearest(&[
                            Segment::Key("networks".into()),
                            Segment::Key(net.clone()),
                        ])
                        .unwrap_or_default(),
                    format!(
                        "network `{net}` is not created: cutover puts every service of the stack on one network, `cutover-<stack>`, where they reach each other by service name"
                    ),
                ));
            }
        }
        for (key, at) in [("include", compose.include.as_ref().map(|c| c.at))] {
            if let Some(at) = at {
                self.warnings.push(
                    Diagnostic::new(
                        DiagKind::UnknownKey,
                        at,
                        format!("top-level `{key}` is not imported from the compose file: no service gets what it declares"),
                    )
                    .hint("docs/compose-keys.md says what each key becomes"),
                );
            }
        }
        let mut active: Vec<String> = compose_var("COMPOSE_PROFILES")
            .map(|p| {
                p.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        active.extend(opts.profiles.iter().cloned());
        let cx = super::compose::ComposeContext {
            project: &project,
            volumes: &compose.volumes,
            env: &opts.process_env,
            dot_env: &dot_env_vars,
            dir: path.parent().unwrap_or(Path::new(".")),
            configs: &compose.configs,
            secrets: &compose.secrets,
        };
        let mut notes = Vec::new();
        let mut compose_services = compose.services;
        let names: Vec<String> = compose_services.keys().cloned().collect();
        let compose_dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        for name in &names {
            self.resolve_extends(name, &mut compose_services, &compose_dir, 0);
        }
        let mut services: IndexMap<String, RawService> = IndexMap::new();
        for (name, s) in compose_services {
            if let Some(profiles) = &s.profiles
                && !profiles.is_empty()
                && !profiles.iter().any(|p| active.contains(&p.value))
            {
                let at = profiles.first().map_or_else(Loc::default, |p| p.at);
                notes.push((
                    at,
                    format!(
                        "service `{name}` is not imported: its profile(s) {} are not active (--profile, COMPOSE_PROFILES)",
                        profiles
                            .iter()
                            .map(|p| p.value.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
                continue;
            }
            let raw_service = s.into_raw(&name, &cx, &mut notes);
            services.insert(name, raw_service);
        }
        for (at, message) in notes {
            self.warnings
                .push(Diagnostic::new(DiagKind::UnknownKey, at, message));
        }
        for (name, own) in std::mem::take(&mut raw.services) {
            services.entry(name).or_default().overlay(own);
        }
        raw.services = services;
        self.external_volumes = cx.external_volumes();
        // A data set may name a compose volume as the compose file does (`appdata`).
        self.compose_volumes = compose
            .volumes
            .keys()
            .map(|k| (k.clone(), cx.volume_name(k)))
            .collect();
        self.compose_project = Some(project);
    }

    /// Lays the service `name` of `services` (a compose file in `dir`) over what it
    /// `extends`, resolving the base's own `extends` first; the base may be in another file.
    fn resolve_extends(
        &mut self,
        name: &str,
        services: &mut IndexMap<String, super::compose::ComposeService>,
        dir: &Path,
        depth: usize,
    ) {
        let Some(ext) = services.get_mut(name).and_then(|s| s.extends.take()) else {
            return;
        };
        if depth > 8 {
            self.error(
                DiagKind::InvalidValue,
                ext.at,
                format!("`extends` of `{name}` goes more than 8 levels deep (a cycle?)"),
            );
            return;
        }
        let base_name = ext.value.service().to_string();
        let base = match ext.value.file() {
            None => {
                self.resolve_extends(&base_name, services, dir, depth + 1);
                services.get(&base_name).cloned()
            }
            Some(file) => {
                let path = dir.join(file);
                let Ok(text) = std::fs::read_to_string(&path) else {
                    self.error(
                        DiagKind::Io,
                        ext.at,
                        format!("`extends` of `{name}`: cannot read {}", path.display()),
                    );
                    return;
                };
                let source = self.sources.add(&path);
                let text = super::compose::brace_variables(&text);
                let Some(other) = self.parse::<ComposeFile>(&text, source, Strictness::Lenient)
                else {
                    return;
                };
                let mut other = other.services;
                let other_dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
                self.resolve_extends(&base_name, &mut other, &other_dir, depth + 1);
                other.get(&base_name).cloned().map(|mut base| {
                    base.rebase(&other_dir);
                    base
                })
            }
        };
        match base {
            Some(base) => {
                if let Some(svc) = services.get_mut(name) {
                    svc.inherit(base);
                }
            }
            None => {
                self.error(
                    DiagKind::DanglingReference,
                    ext.at,
                    format!(
                        "`{name}` extends `{base_name}`, which is not a service of {}",
                        ext.value.file().unwrap_or("this compose file")
                    ),
                );
            }
        }
    }

    /// `--set SERVICE.image=REF`, `SERVICE.env.KEY=V`, `SERVICE.strategy=S`, `vars.NAME=V`.
    fn apply_set(&mut self, set: &str, raw: &mut RawStack) {
        let at = Loc {
            source: SourceId::COMMAND_LINE,
            ..Loc::default()
        };
        let Some((key, value)) = set.split_once('=') else {
            self.error(
                DiagKind::InvalidValue,
                at,
                format!("--set {set}: expected KEY=VALUE"),
            )
            .hint = Some("for example --set app.image=registry/app:2.0".into());
            return;
        };
        let text = Located::command_line(value.to_string());
        let parts: Vec<&str> = key.split('.').collect();
        if let ["vars", name] = parts.as_slice() {
            raw.vars.insert((*name).to_string(), text);
            return;
        }
        let (service, field) = match parts.as_slice() {
            [s, f] => (*s, *f),
            [s, "env", k] => {
                if let Some(svc) = raw.services.get_mut(*s) {
                    svc.env
                        .get_or_insert_with(IndexMap::new)
                        .insert((*k).to_string(), text);
                    return;
                }
                (*s, "env")
            }
            _ => {
                self.error(
                    DiagKind::InvalidValue,
                    at,
                    format!("--set {set}: cannot set `{key}`"),
                )
                .hint = Some(
                    "settable: SERVICE.image, SERVICE.strategy, SERVICE.env.KEY, vars.NAME".into(),
                );
                return;
            }
        };
        let known: Vec<String> = raw.services.keys().cloned().collect();
        let Some(svc) = raw.services.get_mut(service) else {
            self.error(
                DiagKind::DanglingReference,
                at,
                format!("--set {set}: no service `{service}`"),
            )
            .hint = Some(format!("services: {}", known.join(", ")));
            return;
        };
        match field {
            "image" => svc.image = Some(text),
            "strategy" => svc.strategy = Some(text),
            _ => {
                self.error(
                    DiagKind::InvalidValue,
                    at,
                    format!("--set {set}: cannot set `{field}` of a service"),
                )
                .hint = Some("settable: SERVICE.image, SERVICE.strategy, SERVICE.env.KEY".into());
            }
        }
    }

    /// The variables, lowest precedence first: env files, the stack's `vars` (with the
    /// overlay's), the process environment. Secrets come from the process environment, env
    /// files or files.
    fn vars(&mut self, raw: &RawStack, opts: &LoadOptions) -> Vars {
        let mut from_files: HashMap<String, String> = HashMap::new();
        let default_env = [Located::new(
            ".env".to_string(),
            Loc {
                source: SourceId(0),
                ..Loc::default()
            },
        )];
        let (files, explicit) = match &raw.env_files {
            Some(f) => (f.as_slice(), true),
            None => (&default_env[..], false),
        };
        for f in files {
            let path = self.resolve_path(&f.value);
            if !explicit && !path.exists() {
                continue;
            }
            match dotenvy::from_path_iter(&path) {
                Ok(iter) => {
                    for item in iter {
                        match item {
                            Ok((k, v)) => {
                                from_files.insert(k, v);
                            }
                            Err(e) => {
                                self.error(
                                    DiagKind::Syntax,
                                    f.at,
                                    format!("env file {}: {e}", path.display()),
                                );
                                break;
                            }
                        }
                    }
                }
                Err(e) => {
                    self.error(
                        DiagKind::Io,
                        f.at,
                        format!("cannot read env file {}: {e}", path.display()),
                    )
                    .hint = Some("env_files are resolved relative to the stack file".into());
                }
            }
        }
        let mut outer = Vars::default();
        for (k, v) in from_files.iter().chain(opts.process_env.iter()) {
            outer.set(k.clone(), v.clone());
        }
        let mut vars = Vars::default();
        for (k, v) in &from_files {
            vars.set(k.clone(), v.clone());
        }
        // A stack var may use env-file and process variables: `version: ${VERSION:-2.6.15}`.
        for (k, v) in &raw.vars {
            match interpolate(&v.value, &outer) {
                Ok(val) => vars.set(k.clone(), val.shown().to_string()),
                Err(errs) => self.interp_errors(v.at, errs),
            }
        }
        for (k, v) in &opts.process_env {
            vars.set(k.clone(), v.clone());
        }
        for (name, secret) in &raw.secrets {
            let value = match (&secret.env, &secret.file) {
                (Some(env), None) => opts
                    .process_env
                    .get(&env.value)
                    .or_else(|| from_files.get(&env.value))
                    .cloned()
                    .ok_or_else(|| format!("environment variable {} is not set", env.value)),
                (None, Some(file)) => std::fs::read_to_string(self.resolve_path(&file.value))
                    .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
                    .map_err(|e| format!("cannot read {}: {e}", file.value)),
                _ => {
                    let at = secret
                        .env
                        .as_ref()
                        .or(secret.file.as_ref())
                        .map_or_else(|| self.key_at(&["secrets", name]), |t| t.at);
                    self.error(
                        DiagKind::InvalidValue,
                        at,
                        format!("secret `{name}` needs exactly one of `env` or `file`"),
                    );
                    continue;
                }
            };
            match value {
                Ok(v) => vars.set_secret(name.clone(), Some(SecretString::from(v))),
                Err(why) => {
                    self.missing_secrets.push((name.clone(), why));
                    vars.set_secret(name.clone(), None);
                }
            }
        }
        vars
    }

    fn interp_errors(&mut self, at: Loc, errs: Vec<InterpError>) {
        for e in errs {
            match e {
                InterpError::Undefined(name) => {
                    self.error(
                        DiagKind::UndefinedVariable,
                        at,
                        format!("variable `{name}` is not defined"),
                    )
                    .hint = Some(format!(
                        "set {name} in the environment, an env file or `vars`, or write ${{{name}:-default}}"
                    ));
                }
                InterpError::Required { name, message } => {
                    self.error(
                        DiagKind::UndefinedVariable,
                        at,
                        format!("variable `{name}` is required: {message}"),
                    );
                }
                InterpError::Unterminated => {
                    self.error(DiagKind::InvalidValue, at, "`${` without a closing `}`")
                        .hint = Some("write `$$` for a literal dollar sign".into());
                }
                InterpError::BadName(body) => {
                    self.error(
                        DiagKind::InvalidValue,
                        at,
                        format!("`${{{body}}}` is not a variable reference"),
                    )
                    .hint = Some("names are letters, digits and `_`".into());
                }
            }
        }
    }

    /// Interpolates a value that may carry a secret.
    fn value(&mut self, t: &Text, vars: &Vars) -> Option<Value> {
        match interpolate(&t.value, vars) {
            Ok(v) => Some(v),
            Err(errs) => {
                self.interp_errors(t.at, errs);
                None
            }
        }
    }

    /// Interpolates a value that is printed in plans: a secret is refused here.
    fn plain(&mut self, t: &Text, vars: &Vars) -> Option<String> {
        match self.value(t, vars)? {
            Value::Plain(s) => Some(s),
            Value::Secret(_) => {
                self.error(
                    DiagKind::SecretNotAllowed,
                    t.at,
                    "a secret cannot be used here: this value is shown in plans and logs",
                )
                .hint = Some(
                    "pass secrets to a service through `env`, or to a database through `url`"
                        .into(),
                );
                None
            }
        }
    }

    fn command(&mut self, c: &Located<StringOrList>, vars: &Vars) -> Option<Command> {
        Some(match &c.value {
            StringOrList::One(s) => {
                Command::Shell(self.plain(&Located::new(s.clone(), c.at), vars)?)
            }
            StringOrList::Many(v) => {
                if v.is_empty() {
                    self.error(DiagKind::InvalidValue, c.at, "an empty command");
                    return None;
                }
                let mut argv = Vec::with_capacity(v.len());
                for a in v {
                    argv.push(self.plain(&Located::new(a.0.clone(), c.at), vars)?);
                }
                Command::Exec(argv)
            }
        })
    }

    /// A command run on this host whose program is a relative path (`./scripts/x.sh`) runs
    /// in the stack file's directory: the program must be there, and be executable.
    fn host_program_exists(&mut self, command: &Command, at: Loc) {
        let program = match command {
            Command::Exec(argv) => argv.first().cloned(),
            Command::Shell(s) => s.split_whitespace().next().map(str::to_string),
        };
        let Some(program) = program.filter(|p| p.starts_with("./") || p.starts_with("../")) else {
            return;
        };
        let relative = program.strip_prefix("./").unwrap_or(&program);
        let path = self.base.join(relative);
        let shown = self.shown_base.join(relative);
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => {
                use std::os::unix::fs::PermissionsExt;
                if m.permissions().mode() & 0o111 == 0 {
                    self.error(
                        DiagKind::InvalidValue,
                        at,
                        format!("`{}` is not executable", shown.display()),
                    )
                    .hint = Some(format!("chmod +x {}", shown.display()));
                }
            }
            _ => {
                self.error(
                    DiagKind::InvalidValue,
                    at,
                    format!(
                        "`{program}` does not exist: host commands run in the stack file's directory, so it would be `{}`",
                        shown.display()
                    ),
                );
            }
        }
    }

    fn duration(&mut self, t: Option<&Text>, vars: &Vars, default: Duration) -> Duration {
        let Some(t) = t else { return default };
        let Some(s) = self.plain(t, vars) else {
            return default;
        };
        match humantime::parse_duration(s.trim()) {
            Ok(d) => d,
            Err(_) => {
                self.error(
                    DiagKind::InvalidValue,
                    t.at,
                    format!("`{s}` is not a duration"),
                )
                .hint = Some("write it like 30s, 2m or 1h30m".into());
                default
            }
        }
    }

    fn name_ok(&mut self, what: &str, name: &str, at: Loc) {
        let valid = !name.is_empty()
            && name.len() <= 63
            && name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !valid {
            self.error(
                DiagKind::InvalidValue,
                at,
                format!("`{name}` is not a valid {what} name"),
            )
            .hint = Some(
                "use lowercase letters, digits, `-` and `_`, starting with a letter or digit (at most 63)"
                    .into(),
            );
        }
    }

    /// Raw → model, checking each value where it is read.
    fn lower(&mut self, raw: RawStack, environment: Option<String>, vars: &Vars) -> Stack {
        let name = match &raw.name {
            Some(n) => {
                let v = self.plain(n, vars).unwrap_or_default();
                self.name_ok("stack", &v, n.at);
                v
            }
            None => self
                .base
                .file_name()
                .map(|s| s.to_string_lossy().to_lowercase())
                .unwrap_or_else(|| "stack".into()),
        };
        let traffic = raw.traffic.as_ref().map(|t| self.traffic(t, vars));
        let mut services = IndexMap::new();
        for (name, s) in &raw.services {
            let at = s
                .image
                .as_ref()
                .map_or_else(|| self.key_at(&["services", name]), |t| t.at);
            self.name_ok("service", name, at);
            if let Some(svc) = self.service(name, s, vars, at) {
                services.insert(name.clone(), svc);
            }
        }
        let mut stack = Stack {
            name,
            environment,
            protected: raw.protected.as_ref().is_some_and(|p| p.value),
            services,
            data: IndexMap::new(),
            checks: IndexMap::new(),
            steps: Steps::default(),
            traffic,
            keep_restore_points: raw
                .restore_points
                .as_ref()
                .and_then(|r| r.keep.as_ref())
                .map_or(DEFAULT_KEEP_RESTORE_POINTS, |k| k.value),
            compose_project: self.compose_project.clone(),
            external_volumes: self.external_volumes.clone(),
            base_dir: self.base.clone(),
        };
        self.check_services(&raw, &stack);
        for (name, d) in &raw.data {
            let at = d_loc(d).unwrap_or_else(|| self.key_at(&["data", name]));
            self.name_ok("data", name, at);
            if let Some(mut ds) = self.data(name, d, vars, &raw) {
                self.writers_exclude_server(name, d, &mut ds, &stack.services);
                stack.data.insert(name.clone(), ds);
            }
        }
        for (name, c) in &raw.checks {
            if let Some(check) = self.check(name, c, vars, &raw) {
                stack.checks.insert(name.clone(), check);
            }
        }
        let phases: [(&Vec<RawStep>, &mut Vec<CustomStep>, &str); 7] = [
            (&raw.steps.plan, &mut stack.steps.plan, "plan"),
            (
                &raw.steps.preflight,
                &mut stack.steps.preflight,
                "preflight",
            ),
            (&raw.steps.quiesce, &mut stack.steps.quiesce, "quiesce"),
            (&raw.steps.upgrade, &mut stack.steps.upgrade, "upgrade"),
            (&raw.steps.verify, &mut stack.steps.verify, "verify"),
            (&raw.steps.release, &mut stack.steps.release, "release"),
            (&raw.steps.revert, &mut stack.steps.revert, "revert"),
        ];
        for (raws, out, phase) in phases {
            for (i, step) in raws.iter().enumerate() {
                if let Some(s) = self.step(phase, i, step, vars, &raw) {
                    out.push(s);
                }
            }
        }
        stack
    }

    fn service(&mut self, name: &str, s: &RawService, vars: &Vars, at: Loc) -> Option<Service> {
        let image = match &s.image {
            Some(t) => self.plain(t, vars).filter(|i| {
                let ok = !i.trim().is_empty() && !i.contains(char::is_whitespace);
                if !ok {
                    self.error(
                        DiagKind::InvalidValue,
                        t.at,
                        format!("`{i}` is not an image reference"),
                    );
                }
                ok
            }),
            None => {
                self.error(
                    DiagKind::Missing,
                    at,
                    format!("service `{name}` has no `image`"),
                )
                .hint = Some("add `image: REPOSITORY:TAG`".into());
                None
            }
        };
        let command = s.command.as_ref().and_then(|c| self.command(c, vars));
        let mut env = IndexMap::new();
        for (k, v) in s.env.iter().flatten() {
            if let Some(val) = self.value(v, vars) {
                env.insert(k.clone(), val);
            }
        }
        let ports = s
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                let v = self.plain(p, vars)?;
                match parse_port(&v) {
                    Ok(pm) => Some(pm),
                    Err(why) => {
                        self.error(DiagKind::InvalidValue, p.at, format!("port `{v}`: {why}"))
                            .hint =
                            Some("write HOST:CONTAINER, IP:HOST:CONTAINER, or add /udp".into());
                        None
                    }
                }
            })
            .collect();
        let volumes = s
            .volumes
            .iter()
            .flatten()
            .filter_map(|m| {
                let v = self.plain(m, vars)?;
                match parse_mount(&v, &self.base) {
                    Ok(mount) => Some(mount),
                    Err(why) => {
                        self.error(DiagKind::InvalidValue, m.at, format!("volume `{v}`: {why}"))
                            .hint = Some(
                            "write NAME:/path, ./dir:/path or /abs:/path, optionally :ro".into(),
                        );
                        None
                    }
                }
            })
            .collect();
        let strategy = match &s.strategy {
            None => Strategy::Recreate,
            Some(t) => match self.plain(t, vars).as_deref() {
                Some("recreate") => Strategy::Recreate,
                Some("blue-green") | Some("bluegreen") | Some("blue_green") => Strategy::BlueGreen,
                Some("manual") => Strategy::Manual,
                Some(other) => {
                    self.error(
                        DiagKind::InvalidValue,
                        t.at,
                        format!("unknown strategy `{other}`"),
                    )
                    .hint = Some(format!("one of: {}", Strategy::ALL.join(", ")));
                    Strategy::Recreate
                }
                None => Strategy::Recreate,
            },
        };
        let restart = match &s.restart {
            None => RestartPolicy::UnlessStopped,
            Some(t) => match self.plain(t, vars).as_deref() {
                Some("no") => RestartPolicy::No,
                Some("always") => RestartPolicy::Always,
                Some("unless-stopped") => RestartPolicy::UnlessStopped,
                Some(r) if r.starts_with("on-failure") => RestartPolicy::OnFailure,
                Some(other) => {
                    self.error(
                        DiagKind::InvalidValue,
                        t.at,
                        format!("unknown restart policy `{other}`"),
                    )
                    .hint = Some("one of: no, always, unless-stopped, on-failure".into());
                    RestartPolicy::UnlessStopped
                }
                None => RestartPolicy::UnlessStopped,
            },
        };
        let port = s.port.as_ref().map(|p| p.value);
        let health = s
            .health
            .as_ref()
            .and_then(|h| self.health(name, h, port, vars, at));
        let stop_grace = self.duration(s.stop_grace.as_ref(), vars, Duration::from_secs(10));
        let migrate = match &s.migrate {
            None => None,
            Some(m) => match &m.command {
                None => {
                    self.error(
                        DiagKind::Missing,
                        self.key_at(&["services", name, "migrate"]),
                        format!("the migration of `{name}` needs `command`"),
                    )
                    .hint = Some("migrate: { command: [app, db, upgrade], timeout: 10m }".into());
                    None
                }
                Some(c) => self.command(c, vars).map(|command| Migrate {
                    command,
                    timeout: self.duration(m.timeout.as_ref(), vars, Duration::from_secs(600)),
                }),
            },
        };
        let config_files = s
            .config_files
            .iter()
            .flatten()
            .filter_map(|c| self.config_file(name, c, vars, at))
            .collect();
        Some(Service {
            image: image?,
            command,
            env,
            ports,
            port,
            volumes,
            depends_on: s
                .depends_on
                .iter()
                .flatten()
                .map(|d| d.value.clone())
                .collect(),
            strategy,
            health,
            stop_grace,
            restart,
            migrate,
            config_files,
            init: s.init.as_ref().is_some_and(|i| i.value),
            tmpfs: s
                .tmpfs
                .iter()
                .flatten()
                .filter_map(|t| {
                    let v = self.plain(t, vars)?;
                    if !v.starts_with('/') {
                        self.error(
                            DiagKind::InvalidValue,
                            t.at,
                            format!("tmpfs `{v}` of `{name}` is not an absolute path"),
                        );
                        return None;
                    }
                    Some(v)
                })
                .collect(),
            adopt: s
                .adopt
                .iter()
                .flatten()
                .filter_map(|t| self.plain(t, vars))
                .collect(),
        })
    }

    /// One of `config_files`: the operator's file must exist; both formats must be known.
    fn config_file(
        &mut self,
        service: &str,
        c: &RawConfigFile,
        vars: &Vars,
        at: Loc,
    ) -> Option<ConfigFile> {
        let (Some(path), Some(defaults)) = (&c.path, &c.defaults) else {
            self.error(
                DiagKind::Missing,
                at,
                format!("a config file of `{service}` needs `path` and `defaults`"),
            )
            .hint = Some(
                "config_files: [{ path: ./conf/app.ini, defaults: /etc/app/app.example.ini }]"
                    .into(),
            );
            return None;
        };
        let shown = self.plain(path, vars)?;
        let defaults_path = self.plain(defaults, vars)?;
        if !defaults_path.starts_with('/') {
            self.error(
                DiagKind::InvalidValue,
                defaults.at,
                format!("`{defaults_path}` is a path in the image: it must be absolute"),
            );
            return None;
        }
        let host_path = self.resolve_path(&shown);
        if !host_path.is_file() {
            self.error(
                DiagKind::InvalidValue,
                path.at,
                format!(
                    "config file `{shown}` of `{service}` does not exist (relative paths are resolved against the stack file's directory)"
                ),
            );
            return None;
        }
        let explicit = match &c.format {
            None => None,
            Some(f) => match self.plain(f, vars).as_deref().and_then(ConfigFormat::parse) {
                Some(f) => Some(f),
                None => {
                    self.error(DiagKind::InvalidValue, f.at, "unknown config file format")
                        .hint = Some("one of: yaml, ini, toml, env".into());
                    return None;
                }
            },
        };
        let Some(format) = explicit.or_else(|| ConfigFormat::from_name(&shown)) else {
            self.error(
                DiagKind::Missing,
                path.at,
                format!("the format of `{shown}` is not in its name: say `format:`"),
            )
            .hint = Some("one of: yaml, ini, toml, env".into());
            return None;
        };
        Some(ConfigFile {
            path: shown,
            host_path,
            defaults_format: ConfigFormat::from_name(&defaults_path).unwrap_or(format),
            defaults: defaults_path,
            format,
        })
    }

    fn health(
        &mut self,
        service: &str,
        h: &RawHealth,
        port: Option<u16>,
        vars: &Vars,
        at: Loc,
    ) -> Option<Health> {
        let kinds = [h.http.is_some(), h.tcp.is_some(), h.command.is_some()];
        if kinds.iter().filter(|k| **k).count() != 1 {
            self.error(
                DiagKind::InvalidValue,
                at,
                format!("the health check of `{service}` needs exactly one of `http`, `tcp` or `command`"),
            );
            return None;
        }
        let probe = if let Some(path) = &h.http {
            let path = self.plain(path, vars)?;
            let Some(port) = port else {
                self.error(
                    DiagKind::Missing,
                    h.http.as_ref().map_or(at, |t| t.at),
                    format!("`{service}` checks health over HTTP but has no `port`"),
                )
                .hint = Some("add `port: N`, the container port that serves HTTP".into());
                return None;
            };
            Probe::Http {
                path: if path.starts_with('/') {
                    path
                } else {
                    format!("/{path}")
                },
                port,
                expect_status: h.expect_status.as_ref().map_or(200, |s| s.value),
                body_contains: match &h.body_contains {
                    Some(b) => Some(self.plain(b, vars)?),
                    None => None,
                },
            }
        } else if let Some(p) = &h.tcp {
            Probe::Tcp { port: p.value }
        } else {
            Probe::Command(self.command(h.command.as_ref()?, vars)?)
        };
        Some(Health {
            probe,
            interval: self.duration(h.interval.as_ref(), vars, Duration::from_secs(2)),
            timeout: self.duration(h.timeout.as_ref(), vars, Duration::from_secs(5)),
            start_period: self.duration(h.start_period.as_ref(), vars, Duration::ZERO),
            deadline: self.duration(h.deadline.as_ref(), vars, Duration::from_secs(60)),
        })
    }

    /// Cross-service rules: references, ports, strategies.
    fn check_services(&mut self, raw: &RawStack, stack: &Stack) {
        let names: Vec<&str> = raw.services.keys().map(String::as_str).collect();
        let mut host_ports: HashMap<(Option<String>, u16, Protocol), (String, Loc)> =
            HashMap::new();
        for (name, s) in &raw.services {
            for d in s.depends_on.iter().flatten() {
                self.dep_locs
                    .entry((name.clone(), d.value.clone()))
                    .or_insert(d.at);
                if !raw.services.contains_key(&d.value) {
                    let hint = self.closest(&d.value, &names);
                    self.error(
                        DiagKind::DanglingReference,
                        d.at,
                        format!(
                            "service `{name}` depends on `{}`, which is not defined",
                            d.value
                        ),
                    )
                    .hint = Some(hint);
                } else if d.value == *name {
                    self.error(
                        DiagKind::DependencyCycle,
                        d.at,
                        format!("service `{name}` depends on itself"),
                    );
                }
            }
            let Some(svc) = stack.services.get(name) else {
                continue;
            };
            for (p, text) in svc.ports.iter().zip(s.ports.iter().flatten()) {
                let key = (p.host_ip.clone(), p.host, p.protocol);
                if let Some((other, first)) = host_ports.get(&key) {
                    let first = self.sources.describe(*first);
                    self.error(
                        DiagKind::DuplicatePort,
                        text.at,
                        format!(
                            "host port {} is already published by `{other}` ({first})",
                            p.host
                        ),
                    )
                    .hint = Some("two services cannot publish one host port; pick another".into());
                } else {
                    host_ports.insert(key, (name.clone(), text.at));
                }
            }
            if svc.strategy == Strategy::BlueGreen {
                let at = s
                    .strategy
                    .as_ref()
                    .map_or_else(|| self.key_at(&["services", name]), |t| t.at);
                if !stack.is_routed(name) {
                    self.error(
                        DiagKind::StrategyNotUsable,
                        at,
                        format!("`{name}` uses blue-green but no traffic route leads to it"),
                    )
                    .hint = Some(format!(
                        "add `traffic: {{ routes: [{{ service: {name} }}] }}`, or use `strategy: recreate`"
                    ));
                } else if svc.port.is_none() {
                    self.error(
                        DiagKind::StrategyNotUsable,
                        at,
                        format!("`{name}` uses blue-green but has no `port` to switch traffic to"),
                    )
                    .hint = Some("add `port: N`, the container port that serves HTTP".into());
                }
                if !svc.ports.is_empty() {
                    self.error(
                        DiagKind::StrategyNotUsable,
                        at,
                        format!("`{name}` uses blue-green but publishes fixed host ports: old and new cannot run side by side"),
                    )
                    .hint = Some("remove `ports` and let the traffic route reach it".into());
                }
            }
        }
        if let Some(t) = &raw.traffic {
            for r in &t.routes {
                if let Some(s) = &r.service {
                    if !raw.services.contains_key(&s.value) {
                        let hint = self.closest(&s.value, &names);
                        self.error(
                            DiagKind::DanglingReference,
                            s.at,
                            format!("route to `{}`, which is not a service", s.value),
                        )
                        .hint = Some(hint);
                    } else if stack
                        .services
                        .get(&s.value)
                        .is_some_and(|svc| svc.port.is_none())
                    {
                        self.error(
                            DiagKind::Missing,
                            s.at,
                            format!("route to `{}`, which has no `port`", s.value),
                        )
                        .hint = Some(
                            "add `port: N` to the service: the container port traffic goes to"
                                .into(),
                        );
                    }
                }
            }
        }
    }

    fn closest(&self, name: &str, names: &[&str]) -> String {
        let best = names
            .iter()
            .map(|n| (strsim::damerau_levenshtein(name, n), *n))
            .filter(|(d, n)| *d <= 2 && d * 2 < n.len())
            .min();
        match best {
            Some((_, n)) => format!("did you mean `{n}`?"),
            None if names.is_empty() => "no services are defined".to_string(),
            None => format!("services: {}", names.join(", ")),
        }
    }

    /// Checks a reference to a service; true when it resolves.
    fn service_ref(&mut self, what: &str, t: &Text, raw: &RawStack) -> bool {
        if raw.services.contains_key(&t.value) {
            return true;
        }
        let names: Vec<&str> = raw.services.keys().map(String::as_str).collect();
        let hint = self.closest(&t.value, &names);
        self.error(
            DiagKind::DanglingReference,
            t.at,
            format!("{what} names service `{}`, which is not defined", t.value),
        )
        .hint = Some(hint);
        false
    }

    fn data_ref(&mut self, what: &str, t: &Text, raw: &RawStack) -> bool {
        if raw.data.contains_key(&t.value) {
            return true;
        }
        let names: Vec<&str> = raw.data.keys().map(String::as_str).collect();
        self.error(
            DiagKind::DanglingReference,
            t.at,
            format!("{what} names data `{}`, which is not defined", t.value),
        )
        .hint = Some(if names.is_empty() {
            "this stack declares no `data`".into()
        } else {
            format!("data: {}", names.join(", "))
        });
        false
    }

    fn data(&mut self, name: &str, d: &RawData, vars: &Vars, raw: &RawStack) -> Option<DataSet> {
        let at = d_loc(d).unwrap_or_else(|| self.key_at(&["data", name]));
        let kinds = [d.postgres.is_some(), d.sqlite.is_some(), d.volume.is_some()];
        if kinds.iter().filter(|k| **k).count() != 1 {
            self.error(
                DiagKind::InvalidValue,
                at,
                format!("data `{name}` needs exactly one of `postgres`, `sqlite` or `volume`"),
            );
            return None;
        }
        let kind = if let Some(pg) = &d.postgres {
            let (Some(url), Some(db)) = (&pg.url, &pg.database) else {
                self.error(
                    DiagKind::Missing,
                    at,
                    format!("data `{name}`: postgres needs `url` and `database`"),
                )
                .hint = Some("url: ${DB_ADMIN_URL} (a secret), database: NAME".into());
                return None;
            };
            DataKind::Postgres {
                url: self.value(url, vars)?,
                database: self.plain(db, vars)?,
                tables: pg
                    .tables
                    .iter()
                    .flatten()
                    .filter_map(|t| self.plain(t, vars))
                    .collect(),
            }
        } else if let Some(sq) = &d.sqlite {
            let Some(p) = &sq.path else {
                self.error(
                    DiagKind::Missing,
                    at,
                    format!("data `{name}`: sqlite needs `path`"),
                );
                return None;
            };
            let p = self.plain(p, vars)?;
            DataKind::Sqlite {
                path: self.resolve_path(&p).display().to_string(),
            }
        } else {
            let v = d.volume.as_ref()?;
            match (&v.name, &v.path) {
                (Some(n), None) => {
                    let name = self.plain(n, vars)?;
                    DataKind::Volume {
                        name: self.compose_volumes.get(&name).cloned().unwrap_or(name),
                    }
                }
                (None, Some(p)) => {
                    let p = self.plain(p, vars)?;
                    DataKind::Directory {
                        path: self.resolve_path(&p).display().to_string(),
                    }
                }
                _ => {
                    self.error(
                        DiagKind::InvalidValue,
                        at,
                        format!("data `{name}`: a volume needs exactly one of `name` or `path`"),
                    );
                    return None;
                }
            }
        };
        let writers = match &d.writers {
            Some(ws) => ws
                .iter()
                .filter(|w| self.service_ref(&format!("data `{name}` writers"), w, raw))
                .map(|w| w.value.clone())
                .collect(),
            None => raw.services.keys().cloned().collect(),
        };
        let schema_version = match &d.schema_version {
            None => None,
            Some(sv) => {
                let Some(q) = &sv.query else {
                    self.error(
                        DiagKind::Missing,
                        at,
                        format!("data `{name}`: schema_version needs `query`"),
                    );
                    return None;
                };
                Some(SchemaVersion {
                    query: self.plain(q, vars)?,
                    expect: match &sv.expect {
                        Some(e) => Some(self.plain(e, vars)?),
                        None => None,
                    },
                })
            }
        };
        Some(DataSet {
            kind,
            writers,
            schema_version,
        })
    }

    /// A PostgreSQL data set is copied on its running server: the service that serves it
    /// (named by the URL's host, or publishing the URL's loopback port) must not be stopped
    /// with the writers. Left out of the default writers; an error when named.
    fn writers_exclude_server(
        &mut self,
        name: &str,
        d: &RawData,
        ds: &mut DataSet,
        services: &IndexMap<String, Service>,
    ) {
        let DataKind::Postgres { url, .. } = &ds.kind else {
            return;
        };
        // The URL may be a secret as a whole (`${DB_ADMIN_URL}`): its value tells the host.
        let Some(server) = serving_service(url.expose().unwrap_or(url.shown()), services) else {
            return;
        };
        match &d.writers {
            None => ds.writers.retain(|w| *w != server),
            Some(ws) => {
                if let Some(w) = ws.iter().find(|w| w.value == server) {
                    self.error(
                        DiagKind::InvalidValue,
                        w.at,
                        format!(
                            "data `{name}` is served by `{server}` (its URL points there), which is among its writers: the restore point is copied on the running server, so stopping `{server}` first would make it fail"
                        ),
                    )
                    .hint = Some(format!(
                        "writers are the services that write to the database: remove `{server}`"
                    ));
                }
            }
        }
    }

    fn check(&mut self, name: &str, c: &RawCheck, vars: &Vars, raw: &RawStack) -> Option<Check> {
        let at = check_loc(c).unwrap_or_else(|| self.key_at(&["checks", name]));
        let count = [
            c.http.is_some(),
            c.tcp.is_some(),
            c.sql.is_some(),
            c.exec.is_some(),
            c.command.is_some(),
            c.logs.is_some(),
            c.container_health.is_some(),
        ]
        .iter()
        .filter(|k| **k)
        .count();
        if count != 1 {
            self.error(
                DiagKind::InvalidValue,
                at,
                format!("check `{name}` needs exactly one of http, tcp, sql, exec, command, logs, container_health"),
            );
            return None;
        }
        let kind = self.check_kind(&format!("check `{name}`"), c, vars, raw, at)?;
        Some(Check {
            kind,
            timeout: self.duration(c.timeout.as_ref(), vars, Duration::from_secs(10)),
            interval: self.duration(c.interval.as_ref(), vars, Duration::from_secs(2)),
            retries: c.retries.as_ref().map_or(1, |r| r.value),
        })
    }

    fn http_check(
        &mut self,
        what: &str,
        h: &RawHttpCheck,
        vars: &Vars,
        raw: &RawStack,
        at: Loc,
    ) -> Option<CheckKind> {
        if h.url.is_some() == h.service.is_some() {
            self.error(
                DiagKind::InvalidValue,
                at,
                format!("{what}: http needs exactly one of `url` or `service`"),
            );
            return None;
        }
        if let Some(s) = &h.service {
            self.service_ref(what, s, raw);
        }
        Some(CheckKind::Http {
            url: match &h.url {
                Some(u) => Some(self.plain(u, vars)?),
                None => None,
            },
            service: h.service.as_ref().map(|s| s.value.clone()),
            path: match &h.path {
                Some(p) => Some(self.plain(p, vars)?),
                None => None,
            },
            status: h.status.as_ref().map_or(200, |s| s.value),
            body_contains: match &h.body_contains {
                Some(b) => Some(self.plain(b, vars)?),
                None => None,
            },
            body_regex: match &h.body_regex {
                Some(b) => Some(self.plain(b, vars)?),
                None => None,
            },
        })
    }

    fn check_kind(
        &mut self,
        what: &str,
        c: &RawCheck,
        vars: &Vars,
        raw: &RawStack,
        at: Loc,
    ) -> Option<CheckKind> {
        if let Some(h) = &c.http {
            return self.http_check(what, h, vars, raw, at);
        }
        if let Some(t) = &c.tcp {
            return Some(CheckKind::Tcp {
                target: self.plain(t, vars)?,
            });
        }
        if let Some(s) = &c.sql {
            let (Some(data), Some(query)) = (&s.data, &s.query) else {
                self.error(
                    DiagKind::Missing,
                    at,
                    format!("{what}: sql needs `data` and `query`"),
                );
                return None;
            };
            self.data_ref(what, data, raw);
            return Some(CheckKind::Sql {
                data: data.value.clone(),
                query: self.plain(query, vars)?,
                expect: match &s.expect {
                    Some(e) => Some(self.plain(e, vars)?),
                    None => None,
                },
            });
        }
        if let Some(e) = &c.exec {
            let (Some(service), Some(command)) = (&e.service, &e.command) else {
                self.error(
                    DiagKind::Missing,
                    at,
                    format!("{what}: exec needs `service` and `command`"),
                );
                return None;
            };
            self.service_ref(what, service, raw);
            return Some(CheckKind::Exec {
                service: service.value.clone(),
                command: self.command(command, vars)?,
                output_contains: match &e.output_contains {
                    Some(o) => Some(self.plain(o, vars)?),
                    None => None,
                },
            });
        }
        if let Some(cmd) = &c.command {
            let command = self.command(cmd, vars)?;
            self.host_program_exists(&command, cmd.at);
            return Some(CheckKind::Command(command));
        }
        if let Some(l) = &c.logs {
            let Some(service) = &l.service else {
                self.error(
                    DiagKind::Missing,
                    at,
                    format!("{what}: logs needs `service`"),
                );
                return None;
            };
            self.service_ref(what, service, raw);
            return Some(CheckKind::Logs {
                service: service.value.clone(),
                absent: match &l.absent {
                    Some(a) => Some(self.plain(a, vars)?),
                    None => None,
                },
                present: match &l.present {
                    Some(p) => Some(self.plain(p, vars)?),
                    None => None,
                },
            });
        }
        let s = c.container_health.as_ref()?;
        self.service_ref(what, s, raw);
        Some(CheckKind::ContainerHealth {
            service: s.value.clone(),
        })
    }

    fn step(
        &mut self,
        phase: &str,
        i: usize,
        s: &RawStep,
        vars: &Vars,
        raw: &RawStack,
    ) -> Option<CustomStep> {
        let index = i.to_string();
        let at = step_loc(s).unwrap_or_else(|| self.key_at(&["steps", phase, &index]));
        let what = format!("step {} of `{phase}`", i + 1);
        let count = [
            s.manual.is_some(),
            s.approval.is_some(),
            s.run.is_some(),
            s.exec.is_some(),
            s.sql.is_some(),
            s.http.is_some(),
            s.check.is_some(),
            s.wait.is_some(),
        ]
        .iter()
        .filter(|k| **k)
        .count();
        if count != 1 {
            self.error(
                DiagKind::InvalidValue,
                at,
                format!("{what} needs exactly one of manual, approval, run, exec, sql, http, check, wait"),
            );
            return None;
        }
        let (action, default_safe) = if let Some(t) = &s.manual {
            (
                StepAction::Manual {
                    text: self.plain(t, vars)?,
                },
                true,
            )
        } else if let Some(t) = &s.approval {
            (
                StepAction::Approval {
                    text: self.plain(t, vars)?,
                },
                true,
            )
        } else if let Some(r) = &s.run {
            let shell = s.shell.as_ref().is_some_and(|b| b.value);
            if matches!(r.value, StringOrList::One(_)) && !shell {
                self.error(
                    DiagKind::InvalidValue,
                    r.at,
                    format!("{what}: `run` is a string, which only a shell can split"),
                )
                .hint = Some("write it as a list [prog, arg, ...], or add `shell: true`".into());
                return None;
            }
            let command = self.command(r, vars)?;
            self.host_program_exists(&command, r.at);
            (StepAction::Run { command }, false)
        } else if let Some(e) = &s.exec {
            let (Some(service), Some(command)) = (&e.service, &e.command) else {
                self.error(
                    DiagKind::Missing,
                    at,
                    format!("{what}: exec needs `service` and `command`"),
                );
                return None;
            };
            self.service_ref(&what, service, raw);
            (
                StepAction::Exec {
                    service: service.value.clone(),
                    command: self.command(command, vars)?,
                },
                false,
            )
        } else if let Some(q) = &s.sql {
            let (Some(data), Some(query)) = (&q.data, &q.query) else {
                self.error(
                    DiagKind::Missing,
                    at,
                    format!("{what}: sql needs `data` and `query`"),
                );
                return None;
            };
            self.data_ref(&what, data, raw);
            (
                StepAction::Sql {
                    data: data.value.clone(),
                    query: self.plain(query, vars)?,
                },
                false,
            )
        } else if let Some(h) = &s.http {
            (
                StepAction::Http {
                    check: self.http_check(&what, h, vars, raw, at)?,
                },
                false,
            )
        } else {
            let (t, wait) = match (&s.check, &s.wait) {
                (Some(t), _) => (t, false),
                (None, Some(t)) => (t, true),
                (None, None) => return None,
            };
            if !raw.checks.contains_key(&t.value) {
                let names: Vec<&str> = raw.checks.keys().map(String::as_str).collect();
                self.error(
                    DiagKind::DanglingReference,
                    t.at,
                    format!("{what} names check `{}`, which is not defined", t.value),
                )
                .hint = Some(if names.is_empty() {
                    "define it under `checks:`".into()
                } else {
                    format!("checks: {}", names.join(", "))
                });
            }
            let check = t.value.clone();
            (
                if wait {
                    StepAction::Wait { check }
                } else {
                    StepAction::Check { check }
                },
                true,
            )
        };
        let name = match &s.name {
            Some(n) => self.plain(n, vars)?,
            None => action.to_string(),
        };
        Some(CustomStep {
            name,
            action,
            timeout: s
                .timeout
                .as_ref()
                .map(|t| self.duration(Some(t), vars, Duration::ZERO)),
            rerun_safe: s.rerun_safe.as_ref().map_or(default_safe, |b| b.value),
            when: match &s.when {
                None => When::Always,
                Some(w) => match self.plain(w, vars).as_deref() {
                    Some("always") => When::Always,
                    Some("upgrade") => When::Upgrade,
                    Some("first-deploy") => When::FirstDeploy,
                    Some(other) => {
                        self.error(
                            DiagKind::InvalidValue,
                            w.at,
                            format!("{what}: unknown `when: {other}`"),
                        )
                        .hint = Some("one of: always, upgrade, first-deploy".into());
                        When::Always
                    }
                    None => When::Always,
                },
            },
        })
    }

    fn traffic(&mut self, t: &RawTraffic, vars: &Vars) -> Traffic {
        let listen = match &t.listen {
            Some(l) => match self.plain(l, vars) {
                Some(v) if v.parse::<std::net::SocketAddr>().is_ok() => v,
                Some(v) => {
                    self.error(
                        DiagKind::InvalidValue,
                        l.at,
                        format!("`{v}` is not an address to listen on"),
                    )
                    .hint = Some("write IP:PORT, e.g. 0.0.0.0:8080".into());
                    v
                }
                None => String::new(),
            },
            None => "127.0.0.1:8080".to_string(),
        };
        let routes = t
            .routes
            .iter()
            .filter_map(|r| {
                let Some(service) = &r.service else {
                    let at = r
                        .host
                        .as_ref()
                        .or(r.path.as_ref())
                        .map_or_else(|| self.key_at(&["traffic", "routes"]), |t| t.at);
                    self.error(DiagKind::Missing, at, "a route needs `service`");
                    return None;
                };
                Some(Route {
                    host: r.host.as_ref().and_then(|h| self.plain(h, vars)),
                    path: r.path.as_ref().and_then(|p| self.plain(p, vars)),
                    service: service.value.clone(),
                })
            })
            .collect();
        Traffic {
            listen,
            routes,
            max_hold: self.duration(t.max_hold.as_ref(), vars, Duration::from_secs(10)),
            maintenance_page: t
                .maintenance_page
                .as_ref()
                .and_then(|p| self.plain(p, vars))
                .map(|p| self.resolve_path(&p).display().to_string()),
            tls: t.tls.as_ref().and_then(|tls| {
                let path = |cx: &mut Self, v: &Option<Text>, what: &str| match v {
                    Some(v) => cx
                        .plain(v, vars)
                        .map(|p| cx.resolve_path(&p).display().to_string()),
                    None => {
                        let at = cx.key_at(&["traffic", "tls"]);
                        cx.error(DiagKind::Missing, at, format!("`tls` needs `{what}`"))
                            .hint =
                            Some("cert: a PEM certificate chain; key: its private key".into());
                        None
                    }
                };
                let cert = path(self, &tls.cert, "cert");
                let key = path(self, &tls.key, "key");
                Some(crate::spec::Tls {
                    cert: cert?,
                    key: key?,
                })
            }),
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

fn d_loc(d: &RawData) -> Option<Loc> {
    d.postgres
        .as_ref()
        .and_then(|p| p.url.as_ref().or(p.database.as_ref()))
        .or(d.sqlite.as_ref().and_then(|s| s.path.as_ref()))
        .or(d
            .volume
            .as_ref()
            .and_then(|v| v.name.as_ref().or(v.path.as_ref())))
        .map(|t| t.at)
}

fn check_loc(c: &RawCheck) -> Option<Loc> {
    c.tcp
        .as_ref()
        .or(c.container_health.as_ref())
        .or(c.timeout.as_ref())
        .map(|t| t.at)
        .or(c.command.as_ref().map(|t| t.at))
}

fn step_loc(s: &RawStep) -> Option<Loc> {
    s.name
        .as_ref()
        .or(s.manual.as_ref())
        .or(s.approval.as_ref())
        .or(s.check.as_ref())
        .or(s.wait.as_ref())
        .map(|t| t.at)
        .or(s.run.as_ref().map(|r| r.at))
}

/// `[IP:]HOST:CONTAINER[/PROTO]` or a bare `CONTAINER` (published on the same host port).
fn parse_port(s: &str) -> Result<PortMapping, String> {
    let (spec, protocol) = match s.rsplit_once('/') {
        Some((spec, "tcp")) => (spec, Protocol::Tcp),
        Some((spec, "udp")) => (spec, Protocol::Udp),
        Some((_, p)) => return Err(format!("unknown protocol `{p}`")),
        None => (s, Protocol::Tcp),
    };
    let num = |p: &str| -> Result<u16, String> {
        match p.parse::<u16>() {
            Ok(0) | Err(_) => Err(format!("`{p}` is not a port number (1-65535)")),
            Ok(n) => Ok(n),
        }
    };
    let parts: Vec<&str> = spec.rsplitn(3, ':').collect();
    let (host_ip, host, container) = match parts.as_slice() {
        [c] => (None, num(c)?, num(c)?),
        [c, h] => (None, num(h)?, num(c)?),
        // An empty address (`:80:80`, what `${BIND:-}:80:80` gives) is every interface, as
        // for Docker.
        [c, h, ""] => (None, num(h)?, num(c)?),
        [c, h, ip] => {
            let ip = ip.trim_start_matches('[').trim_end_matches(']');
            if ip.parse::<std::net::IpAddr>().is_err() {
                return Err(format!("`{ip}` is not an IP address"));
            }
            (Some(ip.to_string()), num(h)?, num(c)?)
        }
        _ => return Err("empty".into()),
    };
    Ok(PortMapping {
        host_ip,
        host,
        container,
        protocol,
    })
}

/// `NAME:/path[:ro]`, `./dir:/path[:ro]`, `/abs:/path[:rw]`.
fn parse_mount(s: &str, base: &Path) -> Result<Mount, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let (src, target, mode) = match parts.as_slice() {
        [src, target] => (*src, *target, None),
        [src, target, mode] => (*src, *target, Some(*mode)),
        [_] => return Err("anonymous volumes are not supported: name the volume".into()),
        _ => return Err("too many `:`".into()),
    };
    if !target.starts_with('/') {
        return Err(format!("the container path `{target}` must be absolute"));
    }
    let mut read_only = false;
    let mut options = Vec::new();
    for opt in mode.iter().flat_map(|m| m.split(',')) {
        match opt {
            "rw" => {}
            "ro" => read_only = true,
            "z" | "Z" | "nocopy" | "shared" | "rshared" | "slave" | "rslave" | "private"
            | "rprivate" | "consistent" | "cached" | "delegated" => options.push(opt.to_string()),
            m => {
                return Err(format!(
                    "unknown mode `{m}` (ro, rw, z, Z, nocopy, a propagation or consistency)"
                ));
            }
        }
    }
    let source = if src.starts_with('/') {
        MountSource::Bind(src.to_string())
    } else if src.starts_with('.') || src.starts_with('~') {
        MountSource::Bind(base.join(src).display().to_string())
    } else if src.is_empty() {
        return Err("the source is empty".into());
    } else {
        MountSource::Volume(src.to_string())
    };
    Ok(Mount {
        source,
        target: target.to_string(),
        read_only,
        options,
    })
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

/// The service a PostgreSQL URL reaches: the host is a service's name, or a loopback address
/// whose port a service publishes.
pub fn serving_service(url: &str, services: &IndexMap<String, Service>) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = match hostport.strip_prefix('[') {
        Some(v6) => {
            let (h, p) = v6.split_once(']').unwrap_or((v6, ""));
            (h, p.strip_prefix(':').unwrap_or(""))
        }
        None => hostport.rsplit_once(':').unwrap_or((hostport, "")),
    };
    let port: u16 = if port.is_empty() {
        5432
    } else {
        port.parse().ok()?
    };
    if services.contains_key(host) {
        return Some(host.to_string());
    }
    if matches!(host, "127.0.0.1" | "localhost" | "::1") {
        return services
            .iter()
            .find(|(_, s)| s.ports.iter().any(|p| p.host == port))
            .map(|(n, _)| n.clone());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_parse_in_every_short_form() {
        let p = parse_port("8080:80").expect("valid");
        assert_eq!((p.host, p.container, p.protocol), (8080, 80, Protocol::Tcp));
        let p = parse_port("127.0.0.1:5353:53/udp").expect("valid");
        assert_eq!(p.host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!((p.host, p.container, p.protocol), (5353, 53, Protocol::Udp));
        assert_eq!(parse_port("9000").expect("valid").host, 9000);
        assert!(parse_port("80:0").is_err());
        assert!(parse_port("http:80").is_err());
        assert!(parse_port("1.2.3:80:80").is_err());
        assert!(parse_port("80/sctp").is_err());
    }

    #[test]
    fn mounts_tell_volumes_from_bind_paths() {
        let base = Path::new("/srv/app");
        let m = parse_mount("data:/var/lib/x", base).expect("valid");
        assert_eq!(m.source, MountSource::Volume("data".into()));
        let m = parse_mount("./conf:/etc/x:ro", base).expect("valid");
        assert_eq!(m.source, MountSource::Bind("/srv/app/./conf".into()));
        assert!(m.read_only);
        assert!(parse_mount("data:relative", base).is_err());
        assert!(parse_mount("/x", base).is_err());
        assert!(parse_mount("a:/b:rx", base).is_err());
    }
}
