//! `services:`: lowering the whole stack, each service (ports, mounts, health, config files),
//! and the checks across services.

use super::*;

impl Cx {
    /// Raw → model, checking each value where it is read.
    pub(super) fn lower(
        &mut self,
        raw: RawStack,
        environment: Option<String>,
        vars: &Vars,
    ) -> Stack {
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
        let runtime = self.runtime_kind(raw.runtime.as_ref(), vars);
        let mut stack = Stack {
            name,
            runtime,
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
            watch_git_revert: raw
                .watch
                .as_ref()
                .and_then(|w| w.git_revert.as_ref())
                .is_some_and(|g| g.value),
            webhooks: Vec::new(),
            promote_from: None,
            watch_windows: Vec::new(),
            compose_project: self.compose_project.clone(),
            external_volumes: self.external_volumes.clone(),
            base_dir: self.base.clone(),
        };
        self.check_services(&raw, &stack);
        if let Some(p) = &raw.promote_from {
            stack.promote_from = self.promotion(p, vars);
        }
        for w in raw.watch.iter().flat_map(|w| w.windows.iter().flatten()) {
            let (Some(days), Some(from), Some(to)) = (&w.days, &w.from, &w.to) else {
                let at = self.key_at(&["watch", "windows"]);
                self.error(
                    DiagKind::Missing,
                    at,
                    "a window needs `days`, `from` and `to`".to_string(),
                )
                .hint = Some(
                    "{ days: [sat, sun], from: \"02:00\", to: \"05:00\", tz: Europe/Berlin }"
                        .into(),
                );
                continue;
            };
            let window = (|| {
                Some(WatchWindow {
                    days: days
                        .iter()
                        .map(|d| self.plain(d, vars))
                        .collect::<Option<Vec<_>>>()?,
                    from: self.plain(from, vars)?,
                    to: self.plain(to, vars)?,
                    tz: match &w.tz {
                        Some(tz) => self.plain(tz, vars)?,
                        None => "UTC".into(),
                    },
                })
            })();
            stack.watch_windows.extend(window);
        }
        for w in raw.watch.iter().flat_map(|w| w.webhooks.iter().flatten()) {
            if let Some(hook) = self.webhook(w, vars) {
                stack.webhooks.push(hook);
            }
        }
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
        self.check_swarm(&stack);
        stack
    }

    fn runtime_kind(&mut self, t: Option<&Text>, vars: &Vars) -> RuntimeKind {
        let Some(t) = t else {
            return RuntimeKind::Docker;
        };
        match self.plain(t, vars).as_deref() {
            Some("docker") | None => RuntimeKind::Docker,
            Some("swarm") => RuntimeKind::Swarm,
            Some(other) => {
                self.error(
                    DiagKind::InvalidValue,
                    t.at,
                    format!("unknown runtime `{other}`"),
                )
                .hint = Some("docker (one engine, the default) or swarm".into());
                RuntimeKind::Docker
            }
        }
    }

    /// `swarm:` of a service.
    fn swarm(&mut self, name: &str, w: &RawSwarm, vars: &Vars) -> Option<SwarmService> {
        let order = match &w.order {
            None => SwarmOrder::StopFirst,
            Some(t) => match self.plain(t, vars)?.as_str() {
                "stop-first" => SwarmOrder::StopFirst,
                "start-first" => SwarmOrder::StartFirst,
                other => {
                    self.error(
                        DiagKind::InvalidValue,
                        t.at,
                        format!("`{name}`: unknown update order `{other}`"),
                    )
                    .hint = Some("stop-first or start-first".into());
                    return None;
                }
            },
        };
        let replicas = w.replicas.as_ref().map_or(1, |r| r.value);
        let parallelism = w.parallelism.as_ref().map_or(1, |p| p.value);
        if let Some(p) = w.parallelism.as_ref().filter(|p| p.value == 0) {
            self.error(
                DiagKind::InvalidValue,
                p.at,
                format!("`{name}`: a parallelism of 0 would replace no replica"),
            );
        }
        Some(SwarmService {
            replicas,
            constraints: w
                .constraints
                .iter()
                .flatten()
                .filter_map(|c| self.plain(c, vars))
                .collect(),
            max_per_node: w.max_per_node.as_ref().map(|m| m.value),
            order,
            parallelism: parallelism.max(1),
            delay: self.duration(w.delay.as_ref(), vars, Duration::ZERO),
        })
    }

    /// What `runtime: swarm` runs today, and what a Docker stack cannot say.
    fn check_swarm(&mut self, stack: &Stack) {
        let swarm = stack.runtime == RuntimeKind::Swarm;
        for (name, svc) in &stack.services {
            let at = |cx: &Self, key: &str| cx.key_at(&["services", name, key]);
            if !swarm {
                if svc.swarm.is_some() {
                    let loc = at(self, "swarm");
                    self.error(
                        DiagKind::InvalidValue,
                        loc,
                        format!("`{name}` has `swarm:`, but the stack runs on one Docker engine"),
                    )
                    .hint = Some("add `runtime: swarm` at the top of the stack file".into());
                }
                continue;
            }
            let refuse = |cx: &mut Self, key: &str, what: String, hint: &str| {
                let loc = at(cx, key);
                cx.error(DiagKind::InvalidValue, loc, what).hint = Some(hint.into());
            };
            if svc.strategy != Strategy::Recreate {
                refuse(
                    self,
                    "strategy",
                    format!(
                        "`{name}`: on `runtime: swarm` Swarm replaces the replicas; strategy `{}` is for one engine",
                        svc.strategy.as_str()
                    ),
                    "remove `strategy:`; `swarm: { order: start-first, parallelism: 1 }` says how",
                );
            }
            if svc.migrate.is_some() {
                refuse(
                    self,
                    "migrate",
                    format!("`{name}`: a `migrate` job does not run on a swarm yet"),
                    "run it as a `run:` step in the upgrade phase",
                );
            }
            if !svc.volumes.is_empty() {
                refuse(
                    self,
                    "volumes",
                    format!(
                        "`{name}`: volumes of a swarm service are on whichever node runs it: not supported yet"
                    ),
                    "keep the data in a database server the manager reaches (`data: { postgres: … }`)",
                );
            }
            if !svc.adopt.is_empty() || stack.compose_project.is_some() {
                refuse(
                    self,
                    "adopt",
                    format!("`{name}`: taking over containers is for one engine"),
                    "deploy the service on the swarm from the stack file",
                );
            }
            if svc.ports.iter().any(|p| p.host_ip.is_some()) {
                refuse(
                    self,
                    "ports",
                    format!(
                        "`{name}`: a swarm service publishes on the node that runs each replica: a host address means nothing there"
                    ),
                    "write ports as HOST:CONTAINER",
                );
            }
            if let Some(h) = &svc.health
                && !matches!(h.probe, Probe::Command(_))
            {
                refuse(
                    self,
                    "health",
                    format!(
                        "`{name}`: on a swarm the health check runs inside each replica: it must be a command"
                    ),
                    "health: { command: [/app, healthcheck], interval: 1s }",
                );
            }
            if svc
                .swarm
                .as_ref()
                .is_some_and(|w| w.order == SwarmOrder::StartFirst)
                && !svc.ports.is_empty()
            {
                refuse(
                    self,
                    "swarm",
                    format!(
                        "`{name}`: start-first needs a second copy of host ports its node already serves"
                    ),
                    "use `order: stop-first` (the default) with host ports",
                );
            }
        }
        if swarm {
            if stack.traffic.is_some() {
                let loc = self.key_at(&["traffic"]);
                self.error(
                    DiagKind::InvalidValue,
                    loc,
                    "`traffic:` does not route to a swarm yet".to_string(),
                )
                .hint = Some(
                    "publish ports in each service; a load balancer in front of the nodes routes"
                        .into(),
                );
            }
            for (name, d) in &stack.data {
                if matches!(
                    d.kind,
                    DataKind::Volume { .. } | DataKind::Directory { .. } | DataKind::Sqlite { .. }
                ) {
                    let loc = self.key_at(&["data", name]);
                    self.error(
                        DiagKind::InvalidValue,
                        loc,
                        format!("data set `{name}` lives on a node's disk: its restore point on a swarm is not supported yet"),
                    )
                    .hint = Some("a PostgreSQL database the manager reaches works on a swarm".into());
                }
            }
        }
    }

    pub(super) fn service(
        &mut self,
        name: &str,
        s: &RawService,
        vars: &Vars,
        at: Loc,
    ) -> Option<Service> {
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
            swarm: s.swarm.as_ref().and_then(|w| self.swarm(name, w, vars)),
            update: match s.update.as_ref().map(|u| {
                (
                    &u.semver,
                    &u.regex,
                    u.digest.as_ref().is_some_and(|d| d.value),
                )
            }) {
                None => None,
                Some((Some(v), None, false)) => Some(UpdatePolicy::Semver(self.plain(v, vars)?)),
                Some((None, Some(r), false)) => Some(UpdatePolicy::Regex(self.plain(r, vars)?)),
                Some((None, None, true)) => Some(UpdatePolicy::Digest),
                Some(_) => {
                    self.error(
                        DiagKind::InvalidValue,
                        at,
                        format!(
                            "`{name}`: update needs exactly one of `semver`, `regex` or `digest: true`"
                        ),
                    )
                    .hint = Some("update: { semver: \"~2\" }".into());
                    None
                }
            },
        })
    }

    /// One of `config_files`: the operator's file must exist; both formats must be known.
    pub(super) fn config_file(
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

    pub(super) fn health(
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
    pub(super) fn check_services(&mut self, raw: &RawStack, stack: &Stack) {
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

    pub(super) fn closest(&self, name: &str, names: &[&str]) -> String {
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
    pub(super) fn service_ref(&mut self, what: &str, t: &Text, raw: &RawStack) -> bool {
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
}

/// `[IP:]HOST:CONTAINER[/PROTO]` or a bare `CONTAINER` (published on the same host port).
pub(super) fn parse_port(s: &str) -> Result<PortMapping, String> {
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
pub(super) fn parse_mount(s: &str, base: &Path) -> Result<Mount, String> {
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

impl Cx {
    /// `promote_from`: the environment, where its state is, and the soak time.
    fn promotion(&mut self, p: &RawPromote, vars: &Vars) -> Option<Promotion> {
        let (Some(env), Some(dir)) = (&p.environment, &p.state_dir) else {
            let at = self.key_at(&["promote_from"]);
            self.error(
                DiagKind::Missing,
                at,
                "promote_from needs `environment` and `state_dir`".to_string(),
            )
            .hint = Some(
                "promote_from: { environment: staging, state_dir: /srv/cutover/staging, soak: 1h }"
                    .into(),
            );
            return None;
        };
        let environment = self.plain(env, vars)?;
        let state_dir = self.plain(dir, vars)?;
        Some(Promotion {
            environment,
            state_dir: self.resolve_path(&state_dir),
            soak: self.duration(p.soak.as_ref(), vars, Duration::ZERO),
        })
    }

    /// One of `watch.webhooks`: a URL (a secret, often) and the body's format.
    fn webhook(&mut self, w: &RawWebhook, vars: &Vars) -> Option<Webhook> {
        let Some(url) = &w.url else {
            let at = self.key_at(&["watch", "webhooks"]);
            self.error(DiagKind::Missing, at, "a webhook needs `url`".to_string())
                .hint = Some("url: ${SLACK_WEBHOOK_URL} (a secret)".into());
            return None;
        };
        let format = match &w.format {
            None => WebhookFormat::Json,
            Some(f) => match self.plain(f, vars)?.as_str() {
                "json" => WebhookFormat::Json,
                "slack" => WebhookFormat::Slack,
                other => {
                    self.error(
                        DiagKind::InvalidValue,
                        f.at,
                        format!("webhook format `{other}` is not one of `json`, `slack`"),
                    );
                    return None;
                }
            },
        };
        Some(Webhook {
            url: self.value(url, vars)?,
            format,
        })
    }
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
