//! The executor behind `apply`, `rollback` and `upgrade-service`: each plan step, done on
//! the Docker Engine, and the journal over the store.
//!
//! The engine (cutover-core) decides the order and the revert; this module only knows how
//! to do one step, idempotently. Containers of the release being made carry its number; the
//! containers that ran when the operation began are the revert target and are never
//! removed by it: a failed step stops and removes only what this release created.

use std::net::SocketAddr;
use std::time::Duration;

use cutover_core::engine::{Executor, Journal, JournalError, StepError, StepResult};
use cutover_core::plan::{PlanStep, StepKind};
use cutover_core::spec::{RestartPolicy, Service, Stack, Strategy};
use cutover_core::traffic::TrafficSwitch;
use cutover_docker::{ContainerInfo, ContainerSpec, ImageInfo, Runtime, RuntimeError, Slot};
use cutover_store::{ReleaseStatus, StepStatus, Store};
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

/// What a release records about each service's image: `images_json` in the store.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseImages(pub IndexMap<String, ImageInfo>);

impl ReleaseImages {
    pub fn from_json(json: &str) -> ReleaseImages {
        serde_json::from_str(json).unwrap_or_default()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.0).unwrap_or_else(|_| "{}".into())
    }

    pub fn ids(&self) -> IndexMap<String, String> {
        self.0
            .iter()
            .map(|(s, i)| (s.clone(), i.id.clone()))
            .collect()
    }
}

/// Does plan steps on one Docker Engine for one stack.
pub struct Runner<'a> {
    pub rt: &'a tokio::runtime::Runtime,
    pub docker: &'a Runtime,
    pub store: &'a Store,
    /// The stack being deployed (secrets resolved).
    pub desired: &'a Stack,
    /// The live release's stack, when there is one.
    pub previous: Option<&'a Stack>,
    /// The release being made.
    pub release: u64,
    /// The live release.
    pub from_release: Option<u64>,
    /// Service → image to run instead of the stack's tag (a rollback runs recorded IDs).
    pub pins: IndexMap<String, String>,
    /// The images the new release runs, filled as `EnsureImage` steps find them.
    pub images: ReleaseImages,
    /// The containers that ran when the operation began: the revert target.
    pub before: Vec<ContainerInfo>,
    pub traffic: Box<dyn TrafficSwitch + 'a>,
    /// Restore PostgreSQL restore points from their dumps, not the same-server copies.
    pub from_dump: bool,
    /// Settings the new version no longer accepts were acknowledged (`--ack-settings`).
    pub ack_settings: bool,
    /// The operation these steps belong to (approvals and aborts are keyed on it).
    pub operation: u64,
    /// Where this stack's restore points are kept.
    pub restore_points: cutover_data::manifest::RestorePoints,
    /// Bytes the restore points of this operation need, summed by the preflight checks.
    pub space_needed: u64,
    /// Containers cutover did not make that this operation takes over, by service.
    pub adopting: IndexMap<String, Vec<String>>,
}

fn fail(e: impl std::fmt::Display) -> StepError {
    StepError::new(e.to_string())
}

impl Runner<'_> {
    fn block<T>(&self, f: impl Future<Output = Result<T, RuntimeError>>) -> Result<T, StepError> {
        self.rt
            .block_on(f)
            .map_err(|e| fail(self.docker.explain(e)))
    }

    fn service(&self, name: &str) -> Result<&Service, StepError> {
        self.desired
            .services
            .get(name)
            .ok_or_else(|| StepError::new(format!("service `{name}` is not in the stack")))
    }

    fn previous_service(&self, name: &str) -> Option<&Service> {
        self.previous.and_then(|p| p.services.get(name))
    }

    fn containers(&self, service: &str) -> Result<Vec<ContainerInfo>, StepError> {
        let all = self.block(self.docker.containers(&self.desired.name))?;
        Ok(all.into_iter().filter(|c| c.service == service).collect())
    }

    fn before_of(&self, service: &str) -> Vec<&ContainerInfo> {
        self.before
            .iter()
            .filter(|c| c.service == service)
            .collect()
    }

    fn env_of(svc: &Service, name: &str) -> Result<Vec<String>, StepError> {
        svc.env
            .iter()
            .map(|(k, v)| {
                v.expose().map(|v| format!("{k}={v}")).ok_or_else(|| {
                    StepError::new(format!(
                        "`{name}`: the value of {k} ({}) is not available here",
                        v.shown()
                    ))
                })
            })
            .collect()
    }

    /// Preflight: each host port a new container publishes is free, or published by a
    /// container the upgrade replaces (the same service of this stack, or the compose
    /// container it takes over); a port held by anything else refuses the upgrade.
    fn check_ports(&self, ports: &[(String, u16)]) -> Result<String, StepError> {
        let mut problems = Vec::new();
        let all = self.block(self.docker.port_holders())?;
        for (service, port) in ports {
            let holders: Vec<&cutover_docker::PortHolder> =
                all.iter().filter(|h| h.ports.contains(port)).collect();
            let adopting = self.adopting.get(service);
            let foreign: Vec<String> = holders
                .iter()
                .filter(|h| {
                    let ours = h.stack.as_deref() == Some(self.desired.name.as_str())
                        && h.service.as_deref() == Some(service.as_str());
                    let taken_over = adopting.is_some_and(|a| a.contains(&h.name));
                    !ours && !taken_over
                })
                .map(|h| match (&h.stack, &h.compose_project) {
                    (Some(stack), _) => format!(
                        "container {} (service `{}` of stack `{stack}`)",
                        h.name,
                        h.service.as_deref().unwrap_or("?")
                    ),
                    (None, Some(project)) => {
                        format!("container {} (compose project `{project}`)", h.name)
                    }
                    (None, None) => format!("container {}", h.name),
                })
                .collect();
            if !foreign.is_empty() {
                problems.push(format!(
                    "host port {port} of `{service}` is published by {}",
                    foreign.join(", ")
                ));
            } else if holders.is_empty()
                && let Err(e) =
                    std::net::TcpListener::bind((self.host_ip_of(service, *port), *port))
                && e.kind() == std::io::ErrorKind::AddrInUse
            {
                problems.push(format!(
                    "host port {port} of `{service}` is in use by a program on this host (not a container)"
                ));
            }
        }
        if problems.is_empty() {
            Ok(format!(
                "{} host port(s) free or held by what this upgrade replaces",
                ports.len()
            ))
        } else {
            Err(StepError::new(format!(
                "{}; free them, or change `ports`; nothing was changed",
                problems.join("; ")
            )))
        }
    }

    /// The address a service publishes host `port` on (`0.0.0.0` when it names none).
    fn host_ip_of(&self, service: &str, port: u16) -> std::net::IpAddr {
        self.desired
            .services
            .get(service)
            .and_then(|s| s.ports.iter().find(|p| p.host == port))
            .and_then(|p| p.host_ip.as_deref())
            .and_then(|ip| ip.parse().ok())
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
    }

    /// Runs the service's `migrate` job once on the new image; a non-zero exit fails.
    fn migrate(&mut self, name: &str) -> Result<String, StepError> {
        let svc = self.service(name)?.clone();
        let Some(m) = svc.migrate.clone() else {
            return Ok(format!("`{name}` has no migration"));
        };
        let image = self.image_for(name)?;
        let env = Self::env_of(&svc, name)?;
        let spec = ContainerSpec {
            stack: &self.desired.name,
            service_name: name,
            service: &svc,
            release: self.release,
            slot: Slot::Single,
            image_id: &image.id,
            env,
        };
        let started = std::time::Instant::now();
        let (code, logs) =
            self.block(self.docker.run_job(&spec, "migrate", &m.command, m.timeout))?;
        let took = started.elapsed().as_secs_f64();
        let mut tail = String::new();
        for line in logs.lines() {
            tail.push_str("\n    ");
            tail.push_str(line);
        }
        if code == 0 {
            Ok(format!(
                "`{}` on {} exited 0 after {took:.1}s{}",
                m.command,
                short(&image.id),
                if tail.is_empty() {
                    String::new()
                } else {
                    format!("; its last lines:{tail}")
                }
            ))
        } else {
            Err(StepError::new(format!(
                "the migration of `{name}` (`{}` on {}) exited with code {code} after {took:.1}s{}",
                m.command,
                short(&image.id),
                if tail.is_empty() {
                    String::new()
                } else {
                    format!("\n  last lines:{tail}")
                }
            )))
        }
    }

    /// Starts a container of `name` for this release and waits until it is healthy.
    fn start_new(&mut self, name: &str, slot: Slot) -> Result<(ContainerInfo, String), StepError> {
        let svc = self.service(name)?.clone();
        let image = self.image_for(name)?;
        let env = Self::env_of(&svc, name)?;
        let spec = ContainerSpec {
            stack: &self.desired.name,
            service_name: name,
            service: &svc,
            release: self.release,
            slot,
            image_id: &image.id,
            env,
        };
        let started = std::time::Instant::now();
        let id = self.block(self.docker.run(&spec))?;
        let health = self.block(self.docker.wait_healthy(
            &self.desired.name,
            name,
            &id,
            svc.health.as_ref(),
        ))?;
        // Recorded with the release: the next plan says how long a start really takes.
        if let Some(info) = self.images.0.get_mut(name) {
            info.started_in_ms =
                Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
        }
        let info = self
            .containers(name)?
            .into_iter()
            .find(|c| c.id == id)
            .ok_or_else(|| StepError::new(format!("container {id} of `{name}` vanished")))?;
        Ok((info, health))
    }

    /// The image a service of the new release runs: found by its `EnsureImage` step, or
    /// looked up now (a step that runs again after a crash).
    fn image_for(&mut self, name: &str) -> Result<ImageInfo, StepError> {
        if let Some(i) = self.images.0.get(name) {
            return Ok(i.clone());
        }
        let reference = match self.pins.get(name) {
            Some(id) => id.clone(),
            None => self.service(name)?.image.clone(),
        };
        let mut info = self.block(self.docker.ensure_image(&reference))?;
        info.reference = self.service(name)?.image.clone();
        self.images.0.insert(name.to_string(), info.clone());
        Ok(info)
    }

    fn stop_all(
        &self,
        containers: &[&ContainerInfo],
        grace: Duration,
    ) -> Result<Vec<String>, StepError> {
        let mut out = Vec::new();
        for c in containers {
            self.block(self.docker.stop_graceful(&c.id, grace))?;
            out.push(c.name.clone());
        }
        Ok(out)
    }

    fn grace(&self, name: &str) -> Duration {
        self.desired
            .services
            .get(name)
            .or_else(|| self.previous_service(name))
            .map_or(Duration::from_secs(10), |s| s.stop_grace)
    }

    fn published(c: &ContainerInfo, port: Option<u16>) -> Vec<SocketAddr> {
        c.published
            .iter()
            .filter(|(p, _)| port.is_none_or(|want| *p == want))
            .map(|(_, a)| *a)
            .collect()
    }

    /// Points the proxy at `containers` when `name` is routed; says what it did.
    fn route_to(&mut self, name: &str, containers: &[&ContainerInfo]) -> Result<String, StepError> {
        if !self.desired.is_routed(name) {
            return Ok(String::new());
        }
        let port = self
            .desired
            .services
            .get(name)
            .or_else(|| self.previous_service(name))
            .and_then(|s| s.port);
        let upstreams: Vec<SocketAddr> = containers
            .iter()
            .flat_map(|c| Self::published(c, port))
            .collect();
        let switched = self
            .traffic
            .switch(name, &upstreams)
            .map_err(StepError::new)?;
        Ok(format!("; {switched}"))
    }

    fn recreate(&mut self, name: &str) -> Result<String, StepError> {
        let current = self.containers(name)?;
        // Already done (the step runs again after a crash)?
        if let Some(c) = current
            .iter()
            .find(|c| c.release == self.release && c.running())
        {
            let health = self.block(self.docker.wait_healthy(
                &self.desired.name,
                name,
                &c.id,
                self.service(name)?.health.as_ref(),
            ))?;
            return Ok(format!("{} already runs: {health}", c.name));
        }
        let old: Vec<&ContainerInfo> = current
            .iter()
            .filter(|c| c.running() && c.release != self.release)
            .collect();
        // A routed service's requests wait while it is down (the revert releases them
        // should the new one fail).
        let routed = self.desired.is_routed(name);
        let held = if routed {
            format!("{}; ", self.traffic.hold(name).map_err(StepError::new)?)
        } else {
            String::new()
        };
        let stopped = self.stop_all(&old, self.grace(name))?;
        let (new, health) = self.start_new(name, Slot::Single)?;
        let switched = self.route_to(name, &[&new])?;
        let released = if routed {
            format!("; {}", self.traffic.release(name).map_err(StepError::new)?)
        } else {
            String::new()
        };
        Ok(format!(
            "{held}stopped {}; started {} on {}; {health}{switched}{released}",
            if stopped.is_empty() {
                "nothing".to_string()
            } else {
                stopped.join(", ")
            },
            new.name,
            short(&new.image_id)
        ))
    }

    fn blue_green(&mut self, name: &str) -> Result<String, StepError> {
        let current = self.containers(name)?;
        let port = self.service(name)?.port;
        if let Some(c) = current
            .iter()
            .find(|c| c.release == self.release && c.running())
        {
            return Ok(format!("{} already serves", c.name));
        }
        let old: Vec<&ContainerInfo> = current
            .iter()
            .filter(|c| c.running() && c.release != self.release)
            .collect();
        let slot = old.first().map_or(Slot::Blue, |c| c.slot.other());
        let (new, health) = match self.start_new(name, slot) {
            Ok(ok) => ok,
            Err(e) => {
                // The old container never stopped serving; take the new one away.
                if let Ok(cs) = self.containers(name) {
                    for c in cs.iter().filter(|c| c.release == self.release) {
                        let _ = self.rt.block_on(self.docker.remove(&c.id));
                    }
                }
                return Err(e);
            }
        };
        let switched = self
            .traffic
            .switch(name, &Self::published(&new, port))
            .map_err(StepError::new)?;
        let old_upstreams: Vec<SocketAddr> =
            old.iter().flat_map(|c| Self::published(c, port)).collect();
        let drained = self
            .traffic
            .drain(name, &old_upstreams)
            .map_err(StepError::new)?;
        let stopped = self.stop_all(&old, self.grace(name))?;
        Ok(format!(
            "started {} ({} slot) on {}; {health}; {switched}; {drained}; stopped {}",
            new.name,
            slot.as_str(),
            short(&new.image_id),
            if stopped.is_empty() {
                "nothing".to_string()
            } else {
                stopped.join(", ")
            }
        ))
    }

    /// Revert: take away what this release started for `name`.
    fn stop_new(&self, name: &str) -> Result<String, StepError> {
        let new: Vec<ContainerInfo> = self
            .containers(name)?
            .into_iter()
            .filter(|c| c.release == self.release)
            .collect();
        let mut out = Vec::new();
        for c in &new {
            self.block(self.docker.remove(&c.id))?;
            out.push(c.name.clone());
        }
        Ok(if out.is_empty() {
            format!("nothing of release {} runs for `{name}`", self.release)
        } else {
            format!("removed {}", out.join(", "))
        })
    }

    /// Revert: the containers that ran before, running and healthy again.
    fn start_previous(&mut self, name: &str) -> Result<String, StepError> {
        self.stop_new(name)?;
        let before: Vec<ContainerInfo> = self.before_of(name).into_iter().cloned().collect();
        let prev = self.previous_service(name).cloned();
        let health = prev.as_ref().and_then(|p| p.health.clone());
        let restart = prev
            .as_ref()
            .map_or(RestartPolicy::UnlessStopped, |p| p.restart);
        let mut out = Vec::new();
        let existing = self.containers(name)?;
        for b in &before {
            if !existing.iter().any(|c| c.id == b.id) {
                return Err(StepError::new(format!(
                    "container {} of `{name}` that ran before the operation is gone; recreate release {} with `cutover rollback {}`",
                    b.name,
                    self.from_release.unwrap_or(0),
                    self.from_release.unwrap_or(0)
                )));
            }
            self.block(self.docker.start(&b.id))?;
            self.block(self.docker.set_restart(&b.id, restart))?;
            let h = self.block(self.docker.wait_healthy(
                &self.desired.name,
                name,
                &b.id,
                health.as_ref(),
            ))?;
            out.push(format!("{} runs {} again; {h}", b.name, short(&b.image_id)));
        }
        if !before.is_empty() && self.desired.is_routed(name) {
            // Restarted containers get new ephemeral host ports: route to what they are now.
            let now = self.containers(name)?;
            let refs: Vec<&ContainerInfo> = now
                .iter()
                .filter(|c| before.iter().any(|b| b.id == c.id))
                .collect();
            let routed = self.route_to(name, &refs)?;
            let released = self.traffic.release(name).map_err(StepError::new)?;
            out.push(format!("{}; {released}", routed.trim_start_matches("; ")));
        }
        Ok(if out.is_empty() {
            format!("`{name}` did not run before the operation")
        } else {
            out.join("; ")
        })
    }

    /// Revert: does each service run the image it ran before the operation?
    fn compare_with_before(&self) -> Result<String, StepError> {
        let now = self.block(self.docker.containers(&self.desired.name))?;
        let mut diffs = Vec::new();
        let mut same = 0;
        for b in self.before.iter().filter(|b| b.running()) {
            match now.iter().find(|c| c.id == b.id) {
                Some(c) if c.running() && c.image_id == b.image_id => same += 1,
                Some(c) if !c.running() => diffs.push(format!("{} is {}", c.name, c.state)),
                Some(c) => diffs.push(format!(
                    "{} runs {} (was {})",
                    c.name,
                    short(&c.image_id),
                    short(&b.image_id)
                )),
                None => diffs.push(format!("{} is gone", b.name)),
            }
        }
        for c in now
            .iter()
            .filter(|c| c.running() && c.release == self.release)
        {
            diffs.push(format!("{} of the reverted release still runs", c.name));
        }
        diffs.extend(self.schema_differences());
        // A failed first deploy leaves nothing behind: no container ran before, so the
        // network it created goes too (volumes stay: they may hold data from elsewhere).
        let mut network = String::new();
        if diffs.is_empty() && self.before.is_empty() && !now.iter().any(ContainerInfo::running) {
            network = match self
                .rt
                .block_on(self.docker.remove_network(&self.desired.name))
            {
                Ok(Some(name)) => {
                    format!("; removed network {name}, which this first deploy created")
                }
                Ok(None) => String::new(),
                Err(e) => format!("; the stack network stays: {e}"),
            };
        }
        if diffs.is_empty() {
            Ok(format!(
                "{same} container(s) run the same image IDs as before the operation{network}"
            ))
        } else {
            Err(StepError::new(format!(
                "the stack differs from before the operation: {}",
                diffs.join("; ")
            )))
        }
    }

    /// Release: record it, and clean up what no rollback needs any more: stopped
    /// containers that are neither this release's nor the ones that ran before.
    fn record_release(&mut self) -> Result<String, StepError> {
        // Services whose image was never ensured (unchanged ones) keep the image they run.
        let running = self.block(self.docker.containers(&self.desired.name))?;
        for name in self.desired.services.keys() {
            if self.images.0.contains_key(name) {
                continue;
            }
            if let Some(c) = running.iter().find(|c| &c.service == name && c.running()) {
                let info = self.block(self.docker.inspect_image(&c.image_id))?;
                if let Some(mut info) = info {
                    info.reference = c.image_ref.clone();
                    self.images.0.insert(name.clone(), info);
                }
            }
        }
        self.store
            .set_release_images(self.release, &self.images.to_json())
            .map_err(fail)?;
        self.store
            .set_release_status(self.release, ReleaseStatus::Deployed)
            .map_err(fail)?;
        let mut removed = Vec::new();
        for c in running.iter().filter(|c| {
            !c.running() && c.release != self.release && !self.before.iter().any(|b| b.id == c.id)
        }) {
            self.block(self.docker.remove(&c.id))?;
            removed.push(c.name.clone());
        }
        Ok(format!(
            "release {} deployed{}",
            self.release,
            if removed.is_empty() {
                String::new()
            } else {
                format!("; removed old containers {}", removed.join(", "))
            }
        ))
    }
}

impl Executor for Runner<'_> {
    fn run(&mut self, step: &PlanStep) -> Result<String, StepError> {
        match &step.action {
            StepKind::EnsureImage { service, image } => {
                let reference = self
                    .pins
                    .get(service)
                    .cloned()
                    .unwrap_or_else(|| image.clone());
                let mut info = self.block(self.docker.ensure_image(&reference))?;
                info.reference = image.clone();
                let mut out = format!("{image} is {}", info.id);
                if let Some(svc) = self.desired.services.get(service) {
                    let (removed, deprecated) =
                        crate::settings::review(&info.labels, svc.env.keys());
                    if !deprecated.is_empty() {
                        out.push_str(&format!(
                            "; deprecated by this version: {}",
                            deprecated.join(", ")
                        ));
                    }
                    if !removed.is_empty() {
                        let list = removed.join(", ");
                        if !self.ack_settings {
                            return Err(StepError::new(format!(
                                "{image} no longer accepts settings `{service}` sets: {list}; remove them, or acknowledge with --ack-settings; nothing was changed"
                            )));
                        }
                        out.push_str(&format!(
                            "; not accepted by this version (acknowledged): {list}"
                        ));
                    }
                }
                self.images.0.insert(service.clone(), info);
                Ok(out)
            }
            StepKind::CheckHealthy { service } => {
                let live: Vec<ContainerInfo> = self
                    .containers(service)?
                    .into_iter()
                    .filter(ContainerInfo::running)
                    .collect();
                if live.is_empty() {
                    return Err(StepError::new(format!(
                        "`{service}` is not running: nothing was changed; `cutover status` shows its containers"
                    )));
                }
                let health = self
                    .previous_service(service)
                    .and_then(|s| s.health.clone());
                let mut out = Vec::new();
                for c in &live {
                    out.push(self.block(self.docker.wait_healthy(
                        &self.desired.name,
                        service,
                        &c.id,
                        health.as_ref(),
                    ))?);
                }
                Ok(out.join("; "))
            }
            StepKind::Stop { service } if step.phase == cutover_core::spec::Phase::Revert => {
                self.stop_new(service)
            }
            StepKind::Stop { service } => {
                let live: Vec<ContainerInfo> = self
                    .containers(service)?
                    .into_iter()
                    .filter(ContainerInfo::running)
                    .collect();
                let refs: Vec<&ContainerInfo> = live.iter().collect();
                let stopped = self.stop_all(&refs, self.grace(service))?;
                Ok(format!("stopped {}", stopped.join(", ")))
            }
            StepKind::Create { service } => {
                let strategy = self.service(service)?.strategy;
                let slot = if strategy == Strategy::BlueGreen {
                    Slot::Blue
                } else {
                    Slot::Single
                };
                if let Some(c) = self
                    .containers(service)?
                    .iter()
                    .find(|c| c.release == self.release && c.running())
                {
                    return Ok(format!("{} already runs", c.name));
                }
                let (c, health) = self.start_new(service, slot)?;
                let switched = self.route_to(service, &[&c])?;
                Ok(format!(
                    "started {} on {}; {health}{switched}",
                    c.name,
                    short(&c.image_id)
                ))
            }
            StepKind::Migrate { service } => self.migrate(service),
            StepKind::Recreate { service } => self.recreate(service),
            StepKind::BlueGreen { service } => self.blue_green(service),
            StepKind::Start { service } => {
                let before: Vec<ContainerInfo> =
                    self.before_of(service).into_iter().cloned().collect();
                let health = self.service(service)?.health.clone();
                let mut out = Vec::new();
                for b in &before {
                    self.block(self.docker.start(&b.id))?;
                    self.block(
                        self.docker
                            .set_restart(&b.id, self.service(service)?.restart),
                    )?;
                    out.push(self.block(self.docker.wait_healthy(
                        &self.desired.name,
                        service,
                        &b.id,
                        health.as_ref(),
                    ))?);
                }
                // Restarted, they have new ephemeral host ports: route to them again.
                let now = self.containers(service)?;
                let refs: Vec<&ContainerInfo> = now
                    .iter()
                    .filter(|c| before.iter().any(|b| b.id == c.id))
                    .collect();
                let switched = self.route_to(service, &refs)?;
                Ok(format!("{}{switched}", out.join("; ")))
            }
            StepKind::MarkPending { service } => Ok(format!(
                "`{service}` stays on its current image until `cutover upgrade-service {service}`"
            )),
            StepKind::Remove { service } if step.phase == cutover_core::spec::Phase::Revert => {
                self.stop_new(service)
            }
            StepKind::Remove { service } => {
                // Stopped and kept: it is the rollback target until the next release.
                let live: Vec<ContainerInfo> = self.containers(service)?;
                let refs: Vec<&ContainerInfo> = live.iter().filter(|c| c.running()).collect();
                let stopped = self.stop_all(&refs, self.grace(service))?;
                Ok(format!(
                    "stopped {} (kept for a rollback)",
                    stopped.join(", ")
                ))
            }
            StepKind::RecordRelease => self.record_release(),
            StepKind::CheckData { data } => self.check_data(data),
            StepKind::TakeRestorePoint { data } => self.take_restore_point(data),
            StepKind::RestoreData { data } => self.restore_data(data),
            StepKind::RestoreFrom { data, release } => self.restore_data_from(data, *release),
            StepKind::CheckSchemaVersion { data, expect } => {
                self.check_schema_version(data, expect.as_deref())
            }
            StepKind::CheckSchemaKept {
                data,
                release,
                version,
            } => self.check_schema_kept(data, *release, version),
            StepKind::SettingsRemoved {
                service,
                file,
                keys,
            } => {
                let list = keys.join(", ");
                if self.ack_settings {
                    Ok(format!(
                        "acknowledged (--ack-settings): `{service}` still sets in {file} what the new version removed or renamed: {list}"
                    ))
                } else {
                    Err(StepError::new(format!(
                        "`{service}` still sets in {file} what the new version removed or renamed: {list}; change the file (the new version's defaults file lists what it reads), or acknowledge with --ack-settings; nothing was changed"
                    )))
                }
            }
            StepKind::CheckPorts { ports } => self.check_ports(ports),
            StepKind::Adopt {
                service,
                containers,
            } => {
                let grace = self.grace(service);
                for c in containers {
                    self.block(self.docker.stop_foreign(c, grace))?;
                }
                Ok(format!(
                    "stopped {}; `{service}` is cutover's from now on",
                    containers.join(", ")
                ))
            }
            StepKind::GiveBack { containers, .. } => {
                let mut out = Vec::new();
                for c in containers {
                    // Gone (removed by hand meanwhile): nothing to start, not a failed revert.
                    match self.block(self.docker.foreign_container(c))? {
                        Some(_) => {
                            self.block(self.docker.start(c))?;
                            out.push(format!("{c} runs again"));
                        }
                        None => out.push(format!("{c} is gone")),
                    }
                }
                Ok(out.join("; "))
            }
            // After the release is recorded a failure here must not revert it: what could not
            // be removed is said, for the operator to remove.
            StepKind::RemoveAdopted { containers } => {
                let mut removed = Vec::new();
                let mut left = Vec::new();
                for c in containers {
                    match self.rt.block_on(self.docker.remove(c)) {
                        Ok(()) => removed.push(c.clone()),
                        Err(e) => left.push(format!("{c} ({e}; `docker rm -f {c}` removes it)")),
                    }
                }
                let mut out = format!("removed {}", removed.join(", "));
                if !left.is_empty() {
                    out.push_str(&format!("; not removed: {}", left.join(", ")));
                }
                Ok(out)
            }
            StepKind::StartPrevious { service } => self.start_previous(service),
            StepKind::CompareWithBefore => self.compare_with_before(),
            StepKind::MaintenanceOn => self.traffic.maintenance(true).map_err(StepError::new),
            StepKind::MaintenanceOff => self.traffic.maintenance(false).map_err(StepError::new),
            StepKind::Custom { step: custom } => self.custom_step(&step.id, custom),
        }
    }
}

fn short(id: &str) -> &str {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    &id[..id.len().min(12)]
}

/// The journal of one operation, in the store.
pub struct StoreJournal<'a> {
    pub store: &'a Store,
    pub operation: u64,
    /// How each step is shown as it starts and ends.
    pub progress: Progress,
    /// The running step's spinner, on a terminal.
    pub spinner: Option<indicatif::ProgressBar>,
}

impl StoreJournal<'_> {
    pub fn new(store: &Store, operation: u64, json: bool) -> StoreJournal<'_> {
        let progress = if json {
            Progress::Json
        } else if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            Progress::Terminal
        } else {
            Progress::Lines
        };
        StoreJournal {
            store,
            operation,
            progress,
            spinner: None,
        }
    }
}

/// How steps are reported while they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// On a terminal: a spinner while a step runs, then its line.
    Terminal,
    /// A line per step start and end on stderr.
    Lines,
    /// One JSON object per event on stdout (`-o json`), for scripts.
    Json,
}

fn event(kind: &str, op: u64, step: &PlanStep, status: Option<&str>, output: Option<&str>) {
    let line = serde_json::json!({
        "event": kind,
        "operation": op,
        "step": step.id,
        "phase": step.phase.as_str(),
        "title": step.title,
        "status": status,
        "output": output,
        "at": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
    });
    println!("{line}");
}

/// Test hook: `CUTOVER_TEST_CRASH_AT=<step id>:<before|after>` makes the process write
/// `CUTOVER_TEST_CRASH_MARKER` (a file) and stop at that step boundary, for a test to kill
/// it there with SIGKILL. `before`: journaled as started, not run yet; `after`: finished.
fn crash_point(step: &PlanStep, when: &str) {
    let Ok(at) = std::env::var("CUTOVER_TEST_CRASH_AT") else {
        return;
    };
    if at != format!("{}:{when}", step.id) {
        return;
    }
    if let Ok(marker) = std::env::var("CUTOVER_TEST_CRASH_MARKER") {
        let _ = std::fs::write(marker, &at);
    }
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

impl Journal for StoreJournal<'_> {
    fn abort_requested(&mut self) -> Option<String> {
        self.store.abort_requested(self.operation).ok().flatten()
    }

    fn started(&mut self, step: &PlanStep) -> Result<u64, JournalError> {
        match self.progress {
            Progress::Terminal => {
                let pb = indicatif::ProgressBar::new_spinner();
                pb.set_style(
                    indicatif::ProgressStyle::with_template(
                        "  {spinner} {prefix:<13} {msg} {elapsed}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
                );
                pb.set_prefix(step.phase.as_str().to_string());
                pb.set_message(step.title.clone());
                pb.enable_steady_tick(std::time::Duration::from_millis(120));
                self.spinner = Some(pb);
            }
            Progress::Lines => eprintln!("  {:<13} {} …", step.phase.as_str(), step.title),
            Progress::Json => event("step_started", self.operation, step, None, None),
        }
        let seq = self
            .store
            .step_started(self.operation, &step.id, step.phase.as_str(), &step.title)
            .map_err(|e| JournalError(e.to_string()))?;
        crash_point(step, "before");
        Ok(seq)
    }

    fn finished(
        &mut self,
        seq: u64,
        step: &PlanStep,
        result: &StepResult,
    ) -> Result<(), JournalError> {
        let (status, output) = match result {
            StepResult::Succeeded { output } => (StepStatus::Succeeded, output.clone()),
            StepResult::Failed { error } => (
                StepStatus::Failed,
                if error.output.is_empty() {
                    error.message.clone()
                } else {
                    format!("{}\n{}", error.message, error.output)
                },
            ),
        };
        match self.progress {
            Progress::Terminal => {
                let mark = if status == StepStatus::Succeeded {
                    "✓"
                } else {
                    "✗"
                };
                let first = output.lines().next().unwrap_or("");
                let line = format!(
                    "  {mark} {:<13} {} — {first}",
                    step.phase.as_str(),
                    step.title
                );
                if let Some(pb) = self.spinner.take() {
                    pb.finish_and_clear();
                }
                eprintln!("{line}");
            }
            Progress::Lines => {
                let mark = if status == StepStatus::Succeeded {
                    "ok"
                } else {
                    "FAILED"
                };
                let first = output.lines().next().unwrap_or("");
                eprintln!("  {:<13} {mark}: {first}", "");
            }
            Progress::Json => event(
                "step_finished",
                self.operation,
                step,
                Some(status.as_str()),
                Some(&output),
            ),
        }
        self.store
            .step_finished(self.operation, seq, status, &output)
            .map_err(|e| JournalError(e.to_string()))?;
        crash_point(step, "after");
        Ok(())
    }
}
