//! The container steps of a plan, on a [`ContainerRuntime`]: images, the strategies
//! (recreate, blue-green, create, manual), the stop/start/remove of quiesce and release,
//! taking a compose project's containers over, and the revert's way back.
//!
//! Each step is idempotent: a step that runs again after a crash finds what it did. The
//! containers of the release being made carry its number; the containers that ran when the
//! operation began are the revert target and are never removed by it — a failed step stops
//! and removes only what this release created.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cutover_core::engine::StepError;
use cutover_core::plan::{PlanStep, StepKind};
use cutover_core::runtime::{
    ContainerInfo, ContainerRuntime, ContainerSpec, ImageInfo, PortHolder, RuntimeFailure, Slot,
    short_id as short,
};
use cutover_core::spec::{Phase, RestartPolicy, Service, Stack, Strategy};
use cutover_core::traffic::TrafficSwitch;
use indexmap::IndexMap;

use crate::record::ReleaseImages;

/// What the container steps of one operation need, and nothing else.
pub struct Containers<'a> {
    pub runtime: &'a dyn ContainerRuntime,
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
    /// Settings the new version no longer accepts were acknowledged (`--ack-settings`).
    pub ack_settings: bool,
    /// Containers cutover did not make that this operation takes over, by service.
    pub adopting: IndexMap<String, Vec<String>>,
}

fn fail(e: RuntimeFailure) -> StepError {
    StepError::new(e.0)
}

fn names_or_nothing(names: &[String]) -> String {
    if names.is_empty() {
        "nothing".to_string()
    } else {
        names.join(", ")
    }
}

impl Containers<'_> {
    /// Does `step` when it is a container step; `None` when it belongs to another family.
    pub fn run(&mut self, step: &PlanStep) -> Option<Result<String, StepError>> {
        let runtime = self.runtime;
        if let Some(services) = runtime.services()
            && let Some(done) = self.run_on_services(services, step)
        {
            return Some(done);
        }
        let revert = step.phase == Phase::Revert;
        Some(match &step.action {
            StepKind::EnsureImage { service, image } => self.ensure_image(service, image),
            StepKind::CheckHealthy { service } => self.check_healthy(service),
            StepKind::CheckPorts { ports } => self.check_ports(ports),
            StepKind::Stop { service } | StepKind::Remove { service } if revert => {
                self.stop_new(service)
            }
            StepKind::Stop { service } => self
                .stop_running(service)
                .map(|s| format!("stopped {}", s.join(", "))),
            StepKind::Remove { service } => self
                .stop_running(service)
                .map(|s| format!("stopped {} (kept for a rollback)", s.join(", "))),
            StepKind::Create { service } => self.create(service),
            StepKind::Migrate { service } => self.migrate(service),
            StepKind::Recreate { service } => self.recreate(service),
            StepKind::BlueGreen { service } => self.blue_green(service),
            StepKind::Start { service } => self.start_again(service),
            StepKind::MarkPending { service } => Ok(format!(
                "`{service}` stays on its current image until `cutover upgrade-service {service}`"
            )),
            StepKind::Adopt {
                service,
                containers,
            } => self.adopt(service, containers),
            StepKind::GiveBack { containers, .. } => self.give_back(containers),
            StepKind::RemoveAdopted { containers } => Ok(self.remove_adopted(containers)),
            StepKind::StartPrevious { service } => self.start_previous(service),
            StepKind::MaintenanceOn => self.traffic.maintenance(true).map_err(StepError::new),
            StepKind::MaintenanceOff => self.traffic.maintenance(false).map_err(StepError::new),
            _ => return None,
        })
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

    /// The containers of service `name`, running or not.
    pub fn containers(&self, name: &str) -> Result<Vec<ContainerInfo>, StepError> {
        let all = self.runtime.containers(&self.desired.name).map_err(fail)?;
        Ok(all.into_iter().filter(|c| c.service == name).collect())
    }

    fn before_of(&self, service: &str) -> Vec<ContainerInfo> {
        self.before
            .iter()
            .filter(|c| c.service == service)
            .cloned()
            .collect()
    }

    /// What a container — or, on a swarm, a service — of `name` is made from: the stack,
    /// the service's settings with its secrets resolved, the release and the image to run.
    fn spec_of<'s>(
        &'s self,
        name: &'s str,
        svc: &'s Service,
        release: u64,
        slot: Slot,
        image_id: &'s str,
    ) -> Result<ContainerSpec<'s>, StepError> {
        Ok(ContainerSpec {
            stack: &self.desired.name,
            service_name: name,
            service: svc,
            release,
            slot,
            image_id,
            env: Self::env_of(svc, name)?,
        })
    }

    /// Recorded with the release: the next plan says how long a start really takes.
    fn record_start(&mut self, name: &str, started: Instant) {
        if let Some(info) = self.images.0.get_mut(name) {
            info.started_in_ms =
                Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
        }
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

    fn grace(&self, name: &str) -> Duration {
        self.desired
            .services
            .get(name)
            .or_else(|| self.previous_service(name))
            .map_or(Duration::from_secs(10), |s| s.stop_grace)
    }

    /// Preflight: the image is here (pulled when not), and accepts the settings the
    /// service sets (the image's labels say which).
    fn ensure_image(&mut self, service: &str, image: &str) -> Result<String, StepError> {
        let reference = self
            .pins
            .get(service)
            .cloned()
            .unwrap_or_else(|| image.to_string());
        let mut info = self.runtime.ensure_image(&reference).map_err(fail)?;
        info.reference = image.to_string();
        let mut out = format!("{image} is {}", info.id);
        if let Some(svc) = self.desired.services.get(service) {
            let (removed, deprecated) = crate::labels::review(&info.labels, svc.env.keys());
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
        self.images.0.insert(service.to_string(), info);
        Ok(out)
    }

    /// Preflight: the live service runs and is healthy (judged by the live release's probe).
    fn check_healthy(&self, service: &str) -> Result<String, StepError> {
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
            out.push(
                self.runtime
                    .wait_healthy(&self.desired.name, service, &c.id, health.as_ref())
                    .map_err(fail)?,
            );
        }
        Ok(out.join("; "))
    }

    /// Preflight: each host port a new container publishes is free, or published by a
    /// container the upgrade replaces (the same service of this stack, or the compose
    /// container it takes over); a port held by anything else refuses the upgrade.
    fn check_ports(&self, ports: &[(String, u16)]) -> Result<String, StepError> {
        let mut problems = Vec::new();
        let all = self.runtime.port_holders().map_err(fail)?;
        for (service, port) in ports {
            let holders: Vec<&PortHolder> = all.iter().filter(|h| h.ports.contains(port)).collect();
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
        let mut info = self.runtime.ensure_image(&reference).map_err(fail)?;
        info.reference = self.service(name)?.image.clone();
        self.images.0.insert(name.to_string(), info.clone());
        Ok(info)
    }

    /// Runs the service's `migrate` job once on the new image; a non-zero exit fails.
    fn migrate(&mut self, name: &str) -> Result<String, StepError> {
        let svc = self.service(name)?.clone();
        let Some(m) = svc.migrate.clone() else {
            return Ok(format!("`{name}` has no migration"));
        };
        let image = self.image_for(name)?;
        let spec = self.spec_of(name, &svc, self.release, Slot::Single, &image.id)?;
        let started = Instant::now();
        let (code, logs) = self
            .runtime
            .run_job(&spec, "migrate", &m.command, m.timeout)
            .map_err(fail)?;
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
        let spec = self.spec_of(name, &svc, self.release, slot, &image.id)?;
        let started = Instant::now();
        let id = self.runtime.run(&spec).map_err(fail)?;
        let health = self
            .runtime
            .wait_healthy(&self.desired.name, name, &id, svc.health.as_ref())
            .map_err(fail)?;
        self.record_start(name, started);
        let info = self
            .containers(name)?
            .into_iter()
            .find(|c| c.id == id)
            .ok_or_else(|| StepError::new(format!("container {id} of `{name}` vanished")))?;
        Ok((info, health))
    }

    fn stop_all(
        &self,
        containers: &[&ContainerInfo],
        grace: Duration,
    ) -> Result<Vec<String>, StepError> {
        let mut out = Vec::new();
        for c in containers {
            self.runtime.stop(&c.id, grace).map_err(fail)?;
            out.push(c.name.clone());
        }
        Ok(out)
    }

    /// Quiesce and release: stops what runs of `service` (kept, for a revert or rollback).
    fn stop_running(&self, service: &str) -> Result<Vec<String>, StepError> {
        let live = self.containers(service)?;
        let refs: Vec<&ContainerInfo> = live.iter().filter(|c| c.running()).collect();
        self.stop_all(&refs, self.grace(service))
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

    /// A new service: its first container.
    fn create(&mut self, service: &str) -> Result<String, StepError> {
        let slot = if self.service(service)?.strategy == Strategy::BlueGreen {
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

    /// Stop the old container, start the new one, wait until it is healthy. A routed
    /// service's requests wait meanwhile (the revert releases them should the new one fail).
    fn recreate(&mut self, name: &str) -> Result<String, StepError> {
        let current = self.containers(name)?;
        // Already done (the step runs again after a crash)?
        if let Some(c) = current
            .iter()
            .find(|c| c.release == self.release && c.running())
        {
            let health = self
                .runtime
                .wait_healthy(
                    &self.desired.name,
                    name,
                    &c.id,
                    self.service(name)?.health.as_ref(),
                )
                .map_err(fail)?;
            return Ok(format!("{} already runs: {health}", c.name));
        }
        let old: Vec<&ContainerInfo> = current
            .iter()
            .filter(|c| c.running() && c.release != self.release)
            .collect();
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
            names_or_nothing(&stopped),
            new.name,
            short(&new.image_id)
        ))
    }

    /// Start the new container beside the old one; once healthy, switch traffic to it,
    /// drain the old one and stop it. Until the switch the old one never stops serving.
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
                        let _ = self.runtime.remove(&c.id);
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
            names_or_nothing(&stopped)
        ))
    }

    /// After quiesce: the containers stopped for a restore point run again.
    fn start_again(&mut self, service: &str) -> Result<String, StepError> {
        let before = self.before_of(service);
        let health = self.service(service)?.health.clone();
        let restart = self.service(service)?.restart;
        let mut out = Vec::new();
        for b in &before {
            self.runtime.start(&b.id).map_err(fail)?;
            self.runtime.set_restart(&b.id, restart).map_err(fail)?;
            out.push(
                self.runtime
                    .wait_healthy(&self.desired.name, service, &b.id, health.as_ref())
                    .map_err(fail)?,
            );
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

    /// Revert: take away what this release started for `name`.
    fn stop_new(&self, name: &str) -> Result<String, StepError> {
        let mut out = Vec::new();
        for c in self
            .containers(name)?
            .iter()
            .filter(|c| c.release == self.release)
        {
            self.runtime.remove(&c.id).map_err(fail)?;
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
        let before = self.before_of(name);
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
            self.runtime.start(&b.id).map_err(fail)?;
            self.runtime.set_restart(&b.id, restart).map_err(fail)?;
            let h = self
                .runtime
                .wait_healthy(&self.desired.name, name, &b.id, health.as_ref())
                .map_err(fail)?;
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

    /// Revert: does each service run the image it ran before the operation? `more` are
    /// differences other families found (a schema version that did not come back).
    pub fn compare_with_before(&self, more: Vec<String>) -> Result<String, StepError> {
        if self.runtime.services().is_some() {
            return self.compare_services(more);
        }
        let now = self.runtime.containers(&self.desired.name).map_err(fail)?;
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
        diffs.extend(more);
        // A failed first deploy leaves nothing behind: no container ran before, so the
        // network it created goes too (volumes stay: they may hold data from elsewhere).
        let mut network = String::new();
        if diffs.is_empty() && self.before.is_empty() && !now.iter().any(ContainerInfo::running) {
            network = match self.runtime.remove_network(&self.desired.name) {
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

    /// Release: the images every service runs (unchanged services keep the image they
    /// run, never ensured), for the release record.
    pub fn settle_images(&mut self) -> Result<(), StepError> {
        let running = self.runtime.containers(&self.desired.name).map_err(fail)?;
        for name in self.desired.services.keys() {
            if self.images.0.contains_key(name) {
                continue;
            }
            if let Some(c) = running.iter().find(|c| &c.service == name && c.running())
                && let Some(mut info) = self.runtime.inspect_image(&c.image_id).map_err(fail)?
            {
                info.reference = c.image_ref.clone();
                self.images.0.insert(name.clone(), info);
            }
        }
        Ok(())
    }

    /// Release: removes what no rollback needs any more — stopped containers that are
    /// neither this release's nor the ones that ran before (the rollback target).
    pub fn remove_superseded(&self) -> Result<Vec<String>, StepError> {
        if self.runtime.services().is_some() {
            // A swarm keeps and prunes its own task history.
            return Ok(Vec::new());
        }
        let all = self.runtime.containers(&self.desired.name).map_err(fail)?;
        let mut removed = Vec::new();
        for c in all.iter().filter(|c| {
            !c.running() && c.release != self.release && !self.before.iter().any(|b| b.id == c.id)
        }) {
            self.runtime.remove(&c.id).map_err(fail)?;
            removed.push(c.name.clone());
        }
        Ok(removed)
    }

    /// Quiesce of a first apply over a compose project: its containers stop (and are
    /// started again by a revert).
    fn adopt(&self, service: &str, containers: &[String]) -> Result<String, StepError> {
        let grace = self.grace(service);
        for c in containers {
            self.runtime.stop_foreign(c, grace).map_err(fail)?;
        }
        Ok(format!(
            "stopped {}; `{service}` is cutover's from now on",
            containers.join(", ")
        ))
    }

    /// Revert: the taken-over containers run again.
    fn give_back(&self, containers: &[String]) -> Result<String, StepError> {
        let mut out = Vec::new();
        for c in containers {
            // Gone (removed by hand meanwhile): nothing to start, not a failed revert.
            match self.runtime.foreign_container(c).map_err(fail)? {
                Some(_) => {
                    self.runtime.start(c).map_err(fail)?;
                    out.push(format!("{c} runs again"));
                }
                None => out.push(format!("{c} is gone")),
            }
        }
        Ok(out.join("; "))
    }

    /// After the release is recorded a failure here must not revert it: what could not be
    /// removed is said, for the operator to remove.
    fn remove_adopted(&self, containers: &[String]) -> String {
        let mut removed = Vec::new();
        let mut left = Vec::new();
        for c in containers {
            match self.runtime.remove(c) {
                Ok(()) => removed.push(c.clone()),
                Err(e) => left.push(format!("{c} ({e}; `docker rm -f {c}` removes it)")),
            }
        }
        let mut out = format!("removed {}", removed.join(", "));
        if !left.is_empty() {
            out.push_str(&format!("; not removed: {}", left.join(", ")));
        }
        out
    }
}

mod swarm;

#[cfg(test)]
mod tests;
