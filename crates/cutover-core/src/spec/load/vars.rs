//! `--set`, the variables and `${VAR}` interpolation, and the small values every section uses
//! (commands, durations, names).

use super::*;

impl Cx {
    /// `--set SERVICE.image=REF`, `SERVICE.env.KEY=V`, `SERVICE.strategy=S`, `vars.NAME=V`.
    pub(super) fn apply_set(&mut self, set: &str, raw: &mut RawStack) {
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
    pub(super) fn vars(&mut self, raw: &RawStack, opts: &LoadOptions) -> Vars {
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

    pub(super) fn interp_errors(&mut self, at: Loc, errs: Vec<InterpError>) {
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
    pub(super) fn value(&mut self, t: &Text, vars: &Vars) -> Option<Value> {
        match interpolate(&t.value, vars) {
            Ok(v) => Some(v),
            Err(errs) => {
                self.interp_errors(t.at, errs);
                None
            }
        }
    }

    /// Interpolates a value that is printed in plans: a secret is refused here.
    pub(super) fn plain(&mut self, t: &Text, vars: &Vars) -> Option<String> {
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

    pub(super) fn command(&mut self, c: &Located<StringOrList>, vars: &Vars) -> Option<Command> {
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
    pub(super) fn host_program_exists(&mut self, command: &Command, at: Loc) {
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

    pub(super) fn duration(
        &mut self,
        t: Option<&Text>,
        vars: &Vars,
        default: Duration,
    ) -> Duration {
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

    pub(super) fn name_ok(&mut self, what: &str, name: &str, at: Loc) {
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
}
