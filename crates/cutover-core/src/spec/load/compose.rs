//! Importing the compose file: its services become raw services, `extends` resolved.

use super::*;

impl Cx {
    pub(super) fn import_compose(&mut self, inc: &Text, raw: &mut RawStack, opts: &LoadOptions) {
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
        let text = crate::spec::compose::brace_variables(&text);
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
        let project = crate::spec::compose::project_name(&project);
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
        let cx = crate::spec::compose::ComposeContext {
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
    pub(super) fn resolve_extends(
        &mut self,
        name: &str,
        services: &mut IndexMap<String, crate::spec::compose::ComposeService>,
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
                let text = crate::spec::compose::brace_variables(&text);
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
}
