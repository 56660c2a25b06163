//! `include_compose: docker-compose.yml`: services imported from an existing compose file.
//!
//! We read the parts of the Compose format that describe what runs — image, command,
//! environment, ports, volumes, depends_on, healthcheck, restart, stop_grace_period — and turn
//! each service into a [`RawService`], so the rest of the loader cannot tell an imported service
//! from one written in the stack file. Keys we do not import are reported as warnings, never
//! silently dropped.

use indexmap::IndexMap;
use serde::Deserialize;

use super::raw::{RawHealth, RawService, Scalar, StringOrList};
use super::source::{Located, Text};

/// A compose file: its services, and the top-level names that decide where their data is.
#[derive(Debug, Default, Deserialize)]
pub struct ComposeFile {
    /// The project name (Compose v2): the prefix of its volumes' and containers' names.
    pub name: Option<Text>,
    #[serde(default)]
    pub services: IndexMap<String, ComposeService>,
    /// Named volumes: `<project>_<key>` on the engine, unless `name:` or `external:` says
    /// otherwise.
    #[serde(default)]
    pub volumes: IndexMap<String, Option<ComposeTopVolume>>,
    /// Networks: cutover puts every service on one network of its own, so these are only
    /// reported.
    #[serde(default)]
    pub networks: IndexMap<String, Option<serde::de::IgnoredAny>>,
    /// Files a service mounts by name: file-based ones are imported (a read-only bind mount).
    #[serde(default)]
    pub configs: IndexMap<String, ComposeFileSource>,
    #[serde(default)]
    pub secrets: IndexMap<String, ComposeFileSource>,
    /// Not imported: other compose files. Read only to be reported.
    pub include: Option<Located<serde::de::IgnoredAny>>,
}

/// A top-level `configs` or `secrets` entry.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ComposeFileSource {
    /// A file on this host, relative to the compose file.
    pub file: Option<String>,
    /// From a variable of the environment compose runs in: not imported.
    pub environment: Option<String>,
    /// Inline content: not imported.
    pub content: Option<String>,
    /// Managed outside compose (Swarm): not imported.
    pub external: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ComposeTopVolume {
    pub name: Option<String>,
    pub external: Option<ComposeExternal>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ComposeExternal {
    Flag(bool),
    /// The legacy form `external: { name: x }`.
    Named {
        name: Option<String>,
    },
}

/// What an imported service needs to know about the file and the run it is imported in.
pub struct ComposeContext<'a> {
    /// The compose project name (`name:`, `COMPOSE_PROJECT_NAME`, or the directory's name).
    pub project: &'a str,
    pub volumes: &'a IndexMap<String, Option<ComposeTopVolume>>,
    /// The process environment, for pass-through variables (`- VAR`, `VAR:`).
    pub env: &'a std::collections::HashMap<String, String>,
    /// The `.env` beside the compose file: pass-through variables are looked up there too.
    pub dot_env: &'a std::collections::HashMap<String, String>,
    /// The compose file's directory: `env_file` paths are relative to it.
    pub dir: &'a std::path::Path,
    pub configs: &'a IndexMap<String, ComposeFileSource>,
    pub secrets: &'a IndexMap<String, ComposeFileSource>,
}

impl ComposeContext<'_> {
    /// The engine's names of the volumes marked `external:`.
    pub fn external_volumes(&self) -> Vec<String> {
        self.volumes
            .iter()
            .filter(|(_, v)| {
                v.as_ref().is_some_and(|v| {
                    v.external
                        .as_ref()
                        .is_some_and(|e| !matches!(e, ComposeExternal::Flag(false)))
                })
            })
            .map(|(k, _)| self.volume_name(k))
            .collect()
    }

    /// The engine's name of the volume a service names `source`; bind mounts (a path)
    /// unchanged. Compose prefixes a named volume with the project name unless the
    /// top-level entry gives a `name:` or marks it `external:`.
    pub fn volume_name(&self, source: &str) -> String {
        // A path is relative to the compose file (compose's rule), `~` is the home directory.
        if source.starts_with('.') {
            return self.dir.join(source).display().to_string();
        }
        if let Some(rest) = source.strip_prefix('~')
            && let Some(home) = self.env.get("HOME")
        {
            return format!("{home}{rest}");
        }
        // A variable (`${UPLOAD_LOCATION}`, `${DB_VOL:-pgdata}`): what it holds decides, as
        // compose interpolates before it names anything — a path is a bind mount, a name a
        // volume of the project. Unknown here, it is left to the stack's interpolation.
        if source.contains('$') {
            let mut vars = super::interp::Vars::default();
            for (k, v) in self.dot_env.iter().chain(self.env.iter()) {
                vars.set(k.clone(), v.clone());
            }
            return match super::interp::interpolate(source, &vars) {
                Ok(v) if !v.is_secret() && !v.shown().contains('$') => self.volume_name(v.shown()),
                _ => source.to_string(),
            };
        }
        if source.starts_with(['/', '~']) {
            return source.to_string();
        }
        match self.volumes.get(source) {
            Some(Some(v)) => match (&v.external, &v.name) {
                (Some(ComposeExternal::Named { name: Some(n) }), _) => n.clone(),
                (Some(ComposeExternal::Flag(true) | ComposeExternal::Named { .. }), name) => {
                    name.clone().unwrap_or_else(|| source.to_string())
                }
                (_, Some(name)) => name.clone(),
                _ => format!("{}_{source}", self.project),
            },
            _ => format!("{}_{source}", self.project),
        }
    }
}

/// `$VAR` → `${VAR}`, leaving `$$` (a literal dollar) and `${…}` as they are: compose expands
/// both forms, cutover's interpolation the braced one.
pub fn brace_variables(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        match chars.peek().map(|(_, n)| *n) {
            Some('$') => {
                out.push_str("$$");
                chars.next();
            }
            Some(n) if n == '_' || n.is_ascii_alphabetic() => {
                out.push_str("${");
                while let Some((_, n)) = chars.peek().copied() {
                    if n == '_' || n.is_ascii_alphanumeric() {
                        out.push(n);
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push('}');
            }
            _ => out.push('$'),
        }
    }
    out
}

/// Splits a command string into words as compose does (POSIX shell quoting: '…', "…",
/// backslash escapes; no expansion).
pub fn split_words(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                for q in chars.by_ref() {
                    if q == '\'' {
                        break;
                    }
                    word.push(q);
                }
            }
            '"' => {
                in_word = true;
                while let Some(q) = chars.next() {
                    match q {
                        '"' => break,
                        '\\' => {
                            if let Some(e) = chars.next() {
                                if !matches!(e, '"' | '\\' | '$' | '`') {
                                    word.push('\\');
                                }
                                word.push(e);
                            }
                        }
                        _ => word.push(q),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(e) = chars.next() {
                    word.push(e);
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// Compose's project name from a directory name: lowercase, only `a-z0-9_-` kept (what
/// `docker compose` and docker-compose 1.x do).
pub fn project_name(raw: &str) -> String {
    raw.to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'))
        .collect()
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct ComposeService {
    pub image: Option<Text>,
    pub command: Option<Located<StringOrList>>,
    pub environment: Option<Located<ComposeEnv>>,
    #[serde(default)]
    pub ports: Vec<Located<ComposePort>>,
    #[serde(default)]
    pub volumes: Vec<Located<ComposeVolume>>,
    pub depends_on: Option<Located<ComposeDependsOn>>,
    pub healthcheck: Option<ComposeHealth>,
    pub restart: Option<Text>,
    pub stop_grace_period: Option<Text>,
    /// An init process as PID 1 (tini): it forwards SIGTERM to the app.
    pub init: Option<Located<bool>>,
    /// tmpfs mounts: a path, or a list of them.
    pub tmpfs: Option<Located<StringOrList>>,
    /// A service in a profile runs only when one of its profiles is active.
    pub profiles: Option<Vec<Text>>,
    /// Files of `KEY=value` lines (relative to the compose file) below `environment`.
    pub env_file: Option<Located<ComposeEnvFiles>>,
    /// Another service's definition under this one's (in this file or another).
    pub extends: Option<Located<ComposeExtends>>,
    /// Top-level `secrets` mounted at `/run/secrets/<name>` (or `target`).
    pub secrets: Option<Located<Vec<ComposeFileRef>>>,
    /// Top-level `configs` mounted at `/<name>` (or `target`).
    pub configs: Option<Located<Vec<ComposeFileRef>>>,
}

/// A service's use of a top-level config or secret: its name, or `{ source, target }`.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum ComposeFileRef {
    Name(String),
    Long {
        source: String,
        target: Option<String>,
    },
}

/// `extends: { service: base, file: common.yml }`, or `extends: base`.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum ComposeExtends {
    Name(String),
    Full {
        service: String,
        file: Option<String>,
    },
}

impl ComposeExtends {
    pub fn service(&self) -> &str {
        match self {
            ComposeExtends::Name(s) | ComposeExtends::Full { service: s, .. } => s,
        }
    }

    pub fn file(&self) -> Option<&str> {
        match self {
            ComposeExtends::Name(_) => None,
            ComposeExtends::Full { file, .. } => file.as_deref(),
        }
    }
}

impl ComposeEnv {
    /// As a map: `KEY=VALUE` items keyed, a bare `KEY` (pass-through) as `None`.
    fn into_map(self) -> IndexMap<String, Option<Scalar>> {
        match self {
            ComposeEnv::Map(m) => m,
            ComposeEnv::List(items) => items
                .into_iter()
                .map(|i| match i.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(Scalar(v.to_string()))),
                    None => (i, None),
                })
                .collect(),
        }
    }
}

/// `SOURCE:REST` of a short volume entry, where the source may hold a `${VAR:-default}`
/// whose colon is not the separator.
fn split_source(s: &str) -> Option<(&str, &str)> {
    let mut depth = 0usize;
    for (i, c) in s.char_indices() {
        match c {
            '{' if s[..i].ends_with('$') => depth += 1,
            '}' if depth > 0 => depth -= 1,
            ':' if depth == 0 => return Some((&s[..i], &s[i + 1..])),
            _ => {}
        }
    }
    None
}

/// `path` made absolute against `dir` when it is relative (`./x`, `../x`, `x/y`).
fn rebased(dir: &std::path::Path, path: &str) -> String {
    if path.starts_with('.') {
        dir.join(path).display().to_string()
    } else {
        path.to_string()
    }
}

impl ComposeService {
    /// Makes the relative paths of a service read from another file (a base it `extends`)
    /// absolute against that file's directory, as compose does: bind-mount sources and
    /// `env_file`s.
    pub fn rebase(&mut self, dir: &std::path::Path) {
        for v in &mut self.volumes {
            match &mut v.value {
                ComposeVolume::Short(s) => {
                    if let Some((src, rest)) = split_source(s)
                        && src.starts_with('.')
                    {
                        *s = format!("{}:{rest}", rebased(dir, src));
                    }
                }
                ComposeVolume::Long {
                    source: Some(src), ..
                } => *src = rebased(dir, src),
                ComposeVolume::Long { .. } => {}
            }
        }
        if let Some(files) = &mut self.env_file {
            match &mut files.value {
                ComposeEnvFiles::One(p) => *p = dir.join(&*p).display().to_string(),
                ComposeEnvFiles::Many(v) => {
                    for f in v {
                        match f {
                            ComposeEnvFile::Path(p) | ComposeEnvFile::Long { path: p, .. } => {
                                *p = dir.join(&*p).display().to_string();
                            }
                        }
                    }
                }
            }
        }
    }

    /// Lays this service over `base` (what it `extends`), as compose merges them: a value this
    /// service sets wins; `environment` merges key by key; `ports` add up; `volumes` add up,
    /// this service's winning for the same container path; `depends_on` adds up.
    pub fn inherit(&mut self, base: ComposeService) {
        macro_rules! keep_or_take {
            ($($f:ident),*) => { $( if self.$f.is_none() { self.$f = base.$f.clone(); } )* };
        }
        keep_or_take!(
            image,
            command,
            healthcheck,
            restart,
            stop_grace_period,
            init,
            tmpfs,
            profiles,
            env_file,
            secrets,
            configs
        );
        self.environment = match (base.environment, self.environment.take()) {
            (Some(b), Some(own)) => {
                let at = own.at;
                let mut merged = b.value.into_map();
                merged.extend(own.value.into_map());
                Some(Located::new(ComposeEnv::Map(merged), at))
            }
            (b, own) => own.or(b),
        };
        // The same published port (and protocol) declared again replaces the base's.
        let key = |p: &Located<ComposePort>| match &p.value {
            ComposePort::Short(s) => {
                let (spec, proto) = s.0.split_once('/').unwrap_or((&s.0, "tcp"));
                let parts: Vec<&str> = spec.rsplitn(3, ':').collect();
                let host = parts.get(1).copied().unwrap_or(parts[0]);
                format!("{host}/{proto}")
            }
            ComposePort::Long {
                target,
                published,
                protocol,
                ..
            } => format!(
                "{}/{}",
                published.as_ref().unwrap_or(target).0,
                protocol.as_deref().unwrap_or("tcp")
            ),
        };
        let own_ports: Vec<String> = self.ports.iter().map(key).collect();
        let mut ports: Vec<Located<ComposePort>> = base
            .ports
            .into_iter()
            .filter(|p| !own_ports.contains(&key(p)))
            .collect();
        ports.append(&mut self.ports);
        self.ports = ports;
        let target = |v: &Located<ComposeVolume>| match &v.value {
            ComposeVolume::Short(s) => split_source(s)
                .map_or(s.as_str(), |(_, rest)| {
                    rest.split(':').next().unwrap_or(rest)
                })
                .to_string(),
            ComposeVolume::Long { target, .. } => target.clone(),
        };
        let own_targets: Vec<String> = self.volumes.iter().map(target).collect();
        let mut volumes: Vec<Located<ComposeVolume>> = base
            .volumes
            .into_iter()
            .filter(|v| !own_targets.contains(&target(v)))
            .collect();
        volumes.append(&mut self.volumes);
        self.volumes = volumes;
        self.depends_on = match (base.depends_on, self.depends_on.take()) {
            (Some(b), Some(own)) => {
                let names = |d: ComposeDependsOn| -> Vec<String> {
                    match d {
                        ComposeDependsOn::List(l) => l,
                        ComposeDependsOn::Map(m) => m.into_keys().collect(),
                    }
                };
                let at = own.at;
                let mut all = names(b.value);
                for n in names(own.value) {
                    if !all.contains(&n) {
                        all.push(n);
                    }
                }
                Some(Located::new(ComposeDependsOn::List(all), at))
            }
            (b, own) => own.or(b),
        };
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum ComposeEnvFiles {
    One(String),
    Many(Vec<ComposeEnvFile>),
}

#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum ComposeEnvFile {
    Path(String),
    Long {
        path: String,
        required: Option<bool>,
    },
}

#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum ComposeEnv {
    Map(IndexMap<String, Option<Scalar>>),
    List(Vec<String>),
}

#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum ComposePort {
    Short(Scalar),
    Long {
        target: Scalar,
        published: Option<Scalar>,
        host_ip: Option<String>,
        protocol: Option<String>,
    },
}

#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum ComposeVolume {
    Short(String),
    Long {
        #[serde(rename = "type")]
        kind: Option<String>,
        source: Option<String>,
        target: String,
        read_only: Option<bool>,
    },
}

#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum ComposeDependsOn {
    List(Vec<String>),
    Map(IndexMap<String, ComposeDependency>),
}

/// `depends_on: { db: { condition: service_healthy } }`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ComposeDependency {
    pub condition: Option<String>,
    pub restart: Option<bool>,
    pub required: Option<bool>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct ComposeHealth {
    pub test: Option<Located<StringOrList>>,
    pub interval: Option<Text>,
    pub timeout: Option<Text>,
    pub start_period: Option<Text>,
    /// A number, or a `${VAR}` (then the deadline stays the default).
    pub retries: Option<Located<Scalar>>,
    pub disable: Option<bool>,
}

fn text_at<T>(at: &Located<T>, value: String) -> Text {
    Located::new(value, at.at)
}

/// What importing a service noticed that the operator should know: (place, message).
pub type Notes = Vec<(super::source::Loc, String)>;

impl ComposeService {
    /// The service as cutover sees it; `notes` gets what is imported with a difference.
    pub fn into_raw(self, name: &str, cx: &ComposeContext<'_>, notes: &mut Notes) -> RawService {
        let env = self.environment.map(|e| {
            let at = e.at;
            let mut out = IndexMap::new();
            // `VAR` alone takes the value from the environment cutover runs in, as compose
            // does; unset there, the container does not get it.
            let pass = |k: &str, out: &mut IndexMap<String, Text>| {
                if cx.env.contains_key(k) || cx.dot_env.contains_key(k) {
                    out.insert(k.to_string(), Located::new(format!("${{{k}}}"), at));
                }
            };
            match e.value {
                ComposeEnv::Map(m) => {
                    for (k, v) in m {
                        match v {
                            Some(v) => {
                                out.insert(k, Located::new(v.0, at));
                            }
                            None => pass(&k, &mut out),
                        }
                    }
                }
                ComposeEnv::List(items) => {
                    for item in items {
                        match item.split_once('=') {
                            Some((k, v)) => {
                                out.insert(k.to_string(), Located::new(v.to_string(), at));
                            }
                            None => pass(&item, &mut out),
                        }
                    }
                }
            }
            out
        });
        // `env_file` entries lie below `environment`: the first file's keys first, later
        // files over earlier ones. Their values are literal (a `$` stays a `$`).
        let mut env = env;
        if let Some(files) = &self.env_file {
            let list: Vec<(String, bool)> = match &files.value {
                ComposeEnvFiles::One(p) => vec![(p.clone(), true)],
                ComposeEnvFiles::Many(v) => v
                    .iter()
                    .map(|f| match f {
                        ComposeEnvFile::Path(p) => (p.clone(), true),
                        ComposeEnvFile::Long { path, required } => {
                            (path.clone(), required.unwrap_or(true))
                        }
                    })
                    .collect(),
            };
            let mut from_files: IndexMap<String, Text> = IndexMap::new();
            for (path, required) in list {
                let full = cx.dir.join(&path);
                match dotenvy::from_path_iter(&full) {
                    Ok(iter) => {
                        for (k, v) in iter.flatten() {
                            from_files.insert(k, Located::new(v.replace('$', "$$"), files.at));
                        }
                    }
                    Err(_) if !required => {}
                    Err(e) => notes.push((
                        files.at,
                        format!(
                            "env_file `{path}` cannot be read ({e}): its variables are not set"
                        ),
                    )),
                }
            }
            if !from_files.is_empty() {
                let own = env.take().unwrap_or_default();
                from_files.extend(own);
                env = Some(from_files);
            }
        }
        let ports: Vec<Text> = self
            .ports
            .iter()
            .map(|p| {
                let s = match &p.value {
                    ComposePort::Short(s) => s.0.clone(),
                    ComposePort::Long {
                        target,
                        published,
                        host_ip,
                        protocol,
                    } => {
                        let mut s = String::new();
                        if let Some(ip) = host_ip {
                            s.push_str(ip);
                            s.push(':');
                        }
                        if let Some(p) = published {
                            s.push_str(&p.0);
                            s.push(':');
                        }
                        s.push_str(&target.0);
                        if let Some(proto) = protocol {
                            s.push('/');
                            s.push_str(proto);
                        }
                        s
                    }
                };
                text_at(p, s)
            })
            .collect();
        let mut tmpfs: Vec<Text> = match &self.tmpfs {
            Some(t) => match &t.value {
                StringOrList::One(p) => vec![text_at(t, p.clone())],
                StringOrList::Many(ps) => ps.iter().map(|p| text_at(t, p.0.clone())).collect(),
            },
            None => Vec::new(),
        };
        let volumes: Vec<Text> = self
            .volumes
            .iter()
            .filter_map(|v| {
                // An anonymous volume (a container path alone) gets a stable name of the
                // service's, so the data survives the container, as compose keeps it.
                let anonymous = |target: &str, notes: &mut Notes| {
                    let slug: String = target
                        .trim_matches('/')
                        .chars()
                        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                        .collect();
                    let named = format!("{}_{name}_{slug}", cx.project);
                    notes.push((
                        v.at,
                        format!(
                            "anonymous volume `{target}` becomes the named volume `{named}`: cutover keeps it across releases (the anonymous volume of a running compose container is not taken over)"
                        ),
                    ));
                    format!("{named}:{target}")
                };
                let s = match &v.value {
                    ComposeVolume::Short(s) => match split_source(s) {
                        Some((src, rest)) => format!("{}:{rest}", cx.volume_name(src)),
                        None if s.starts_with('/') => anonymous(s, notes),
                        None => s.clone(),
                    },
                    ComposeVolume::Long {
                        kind: Some(kind),
                        target,
                        ..
                    } if kind == "tmpfs" => {
                        tmpfs.push(text_at(v, target.clone()));
                        return None;
                    }
                    ComposeVolume::Long {
                        source,
                        target,
                        read_only,
                        ..
                    } => {
                        let mut s = match source {
                            Some(src) => format!("{}:{target}", cx.volume_name(src)),
                            None => anonymous(target, notes),
                        };
                        if read_only == &Some(true) {
                            s.push_str(":ro");
                        }
                        s
                    }
                };
                Some(text_at(v, s))
            })
            .collect();
        // Configs and secrets from files: read-only bind mounts where compose puts them.
        let mut volumes = volumes;
        for (kind, refs, base) in [
            ("secret", &self.secrets, "/run/secrets/"),
            ("config", &self.configs, "/"),
        ] {
            let Some(refs) = refs else { continue };
            let sources = if kind == "secret" {
                cx.secrets
            } else {
                cx.configs
            };
            for r in &refs.value {
                let (source, target) = match r {
                    ComposeFileRef::Name(n) => (n.as_str(), None),
                    ComposeFileRef::Long { source, target } => (source.as_str(), target.as_deref()),
                };
                let target = match target {
                    Some(t) if t.starts_with('/') => t.to_string(),
                    Some(t) => format!("{base}{t}"),
                    None => format!("{base}{source}"),
                };
                match sources.get(source) {
                    Some(ComposeFileSource { file: Some(file), .. }) => {
                        let path = cx.dir.join(file);
                        volumes.push(Located::new(
                            format!("{}:{target}:ro", path.display()),
                            refs.at,
                        ));
                    }
                    Some(_) => notes.push((
                        refs.at,
                        format!(
                            "{kind} `{source}` is not from a file (environment, content or external): `{target}` is not there"
                        ),
                    )),
                    None => notes.push((
                        refs.at,
                        format!("{kind} `{source}` is not declared at the top level: `{target}` is not there"),
                    )),
                }
            }
        }
        let depends_on = self.depends_on.map(|d| {
            let names: Vec<String> = match &d.value {
                ComposeDependsOn::List(l) => l.clone(),
                ComposeDependsOn::Map(m) => {
                    for (name, dep) in m {
                        // cutover starts a service only after what it depends on is healthy:
                        // service_started and service_healthy both hold. A one-shot job is
                        // another thing.
                        if dep.condition.as_deref() == Some("service_completed_successfully") {
                            notes.push((
                                d.at,
                                format!(
                                    "`{name}` is awaited as a long-running service: cutover has no one-shot services (condition service_completed_successfully); a migration belongs in the dependent service's `migrate`"
                                ),
                            ));
                        }
                    }
                    m.keys().cloned().collect()
                }
            };
            names.into_iter().map(|n| text_at(&d, n)).collect()
        });
        let health = self.healthcheck.and_then(|h| {
            if h.disable == Some(true) {
                return None;
            }
            let command = h.test.and_then(|t| {
                let at = t.at;
                match t.value {
                    StringOrList::One(s) => Some(Located::new(StringOrList::One(s), at)),
                    StringOrList::Many(v) => match v.first().map(|s| s.0.as_str()) {
                        Some("CMD") => Some(Located::new(StringOrList::Many(v[1..].to_vec()), at)),
                        Some("CMD-SHELL") => {
                            let words: Vec<&str> = v[1..].iter().map(|s| s.0.as_str()).collect();
                            Some(Located::new(StringOrList::One(words.join(" ")), at))
                        }
                        _ => None, // ["NONE"] or empty: no check
                    },
                }
            })?;
            // Docker marks a container unhealthy after `retries` failed checks past the start
            // period; cutover waits for a deadline: the same time.
            let retries = h.retries.as_ref().and_then(|r| match r.value.0.trim().parse::<u32>() {
                Ok(n) => Some(Located::new(n, r.at)),
                Err(_) => {
                    notes.push((
                        r.at,
                        format!(
                            "healthcheck retries `{}` is not a number when the file is read: the wait keeps the default deadline",
                            r.value.0
                        ),
                    ));
                    None
                }
            });
            let deadline = retries.as_ref().map(|r| {
                let secs = |t: &Option<Text>, default: f64| {
                    t.as_ref()
                        .and_then(|t| humantime::parse_duration(t.value.trim()).ok())
                        .map_or(default, |d| d.as_secs_f64())
                };
                let total = secs(&h.start_period, 0.0)
                    + f64::from(r.value) * (secs(&h.interval, 30.0) + secs(&h.timeout, 30.0));
                Located::new(format!("{}s", total.ceil().max(60.0) as u64), r.at)
            });
            Some(RawHealth {
                command: Some(command),
                interval: h.interval,
                timeout: h.timeout,
                start_period: h.start_period,
                deadline,
                ..RawHealth::default()
            })
        });
        // Compose splits a string command into words for the image's entrypoint (no shell);
        // a string command of the stack file itself runs through /bin/sh -c.
        let command = self.command.map(|c| match c.value {
            StringOrList::One(s) => Located::new(
                StringOrList::Many(split_words(&s).into_iter().map(Scalar).collect()),
                c.at,
            ),
            many => Located::new(many, c.at),
        });
        RawService {
            image: self.image,
            command,
            env,
            ports: (!ports.is_empty()).then_some(ports),
            volumes: (!volumes.is_empty()).then_some(volumes),
            depends_on,
            health,
            stop_grace: self.stop_grace_period,
            restart: self.restart,
            init: self.init,
            tmpfs: (!tmpfs.is_empty()).then_some(tmpfs),
            ..RawService::default()
        }
    }
}
