//! A container runtime in memory, for the unit tests of the step families: containers with
//! states and published ports, images by reference and ID, and a log of every change in
//! the order it was asked for — what the tests assert on.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use cutover_core::runtime::{
    ContainerInfo, ContainerRuntime, ContainerSpec, ImageInfo, PortHolder, RuntimeFailure, Slot,
};
use cutover_core::spec::{Command, Health, RestartPolicy};
use cutover_core::traffic::TrafficSwitch;

#[derive(Default)]
pub struct State {
    pub containers: Vec<ContainerInfo>,
    /// By reference (tag) and by ID.
    pub images: BTreeMap<String, ImageInfo>,
    /// Containers of these images never turn healthy.
    pub unhealthy: BTreeSet<String>,
    /// Containers cutover did not make: name → running.
    pub foreign: BTreeMap<String, bool>,
    pub port_holders: Vec<PortHolder>,
    /// What a `migrate` job exits with.
    pub job_exit: i64,
    /// What an exec answers: exit code and output.
    pub exec: (i64, String),
    /// What a container's log holds.
    pub logs: String,
    /// Addresses on the stack network, by container name.
    pub addresses: BTreeMap<String, IpAddr>,
    pub network: bool,
    /// Every change, in order: "run shop-web-r2", "stop shop-web-r1", …
    pub log: Vec<String>,
    next: u16,
}

#[derive(Default)]
pub struct Fake {
    pub state: RefCell<State>,
}

impl Fake {
    pub fn new() -> Fake {
        let f = Fake::default();
        f.state.borrow_mut().network = true;
        f
    }

    pub fn image(&self, reference: &str, id: &str) -> &Fake {
        let info = ImageInfo {
            reference: reference.into(),
            id: id.into(),
            ..ImageInfo::default()
        };
        let mut s = self.state.borrow_mut();
        s.images.insert(reference.into(), info.clone());
        s.images.insert(id.into(), info);
        drop(s);
        self
    }

    pub fn image_labelled(&self, reference: &str, id: &str, key: &str, value: &str) -> &Fake {
        self.image(reference, id);
        let mut s = self.state.borrow_mut();
        for k in [reference, id] {
            if let Some(i) = s.images.get_mut(k) {
                i.labels.insert(key.into(), value.into());
            }
        }
        drop(s);
        self
    }

    /// A running container of `service` at `release` on image `reference` (a tag the fake
    /// knows, or an ID), as a previous operation left it.
    pub fn running(
        &self,
        stack: &str,
        service: &str,
        release: u64,
        slot: Slot,
        reference: &str,
    ) -> ContainerInfo {
        let image_id = self
            .state
            .borrow()
            .images
            .get(reference)
            .map_or_else(|| reference.to_string(), |i| i.id.clone());
        let mut s = self.state.borrow_mut();
        s.next += 1;
        let n = s.next;
        let c = ContainerInfo {
            id: format!("c{n}"),
            name: name(stack, service, release, slot),
            service: service.into(),
            release,
            slot,
            image_id,
            image_ref: reference.into(),
            state: "running".into(),
            health: None,
            published: vec![(8080, SocketAddr::from(([127, 0, 0, 1], 30_000 + n)))],
        };
        s.containers.push(c.clone());
        c
    }

    pub fn log(&self) -> Vec<String> {
        self.state.borrow().log.clone()
    }

    pub fn clear_log(&self) {
        self.state.borrow_mut().log.clear();
    }

    pub fn container(&self, name: &str) -> Option<ContainerInfo> {
        self.state
            .borrow()
            .containers
            .iter()
            .find(|c| c.name == name)
            .cloned()
    }

    fn note(&self, what: String) {
        self.state.borrow_mut().log.push(what);
    }

    fn name_of(&self, id: &str) -> Result<String, RuntimeFailure> {
        let s = self.state.borrow();
        s.containers
            .iter()
            .find(|c| c.id == id || c.name == id)
            .map(|c| c.name.clone())
            .or_else(|| s.foreign.contains_key(id).then(|| id.to_string()))
            .ok_or_else(|| RuntimeFailure::new(format!("no such container: {id}")))
    }

    fn set_state(&self, id: &str, state: &str) {
        let mut s = self.state.borrow_mut();
        if let Some(c) = s.containers.iter_mut().find(|c| c.id == id || c.name == id) {
            c.state = state.into();
            // A restarted container gets a new ephemeral host port.
            if state == "running" {
                s.next += 1;
                let n = s.next;
                if let Some(c) = s.containers.iter_mut().find(|c| c.id == id || c.name == id) {
                    c.published = vec![(8080, SocketAddr::from(([127, 0, 0, 1], 30_000 + n)))];
                }
            }
        } else if let Some(r) = s.foreign.get_mut(id) {
            *r = state == "running";
        }
    }
}

fn name(stack: &str, service: &str, release: u64, slot: Slot) -> String {
    match slot {
        Slot::Single => format!("{stack}-{service}-r{release}"),
        s => format!("{stack}-{service}-r{release}-{}", s.as_str()),
    }
}

impl ContainerRuntime for Fake {
    fn containers(&self, stack: &str) -> Result<Vec<ContainerInfo>, RuntimeFailure> {
        let prefix = format!("{stack}-");
        Ok(self
            .state
            .borrow()
            .containers
            .iter()
            .filter(|c| c.name.starts_with(&prefix))
            .cloned()
            .collect())
    }

    fn port_holders(&self) -> Result<Vec<PortHolder>, RuntimeFailure> {
        Ok(self.state.borrow().port_holders.clone())
    }

    fn inspect_image(&self, reference: &str) -> Result<Option<ImageInfo>, RuntimeFailure> {
        Ok(self.state.borrow().images.get(reference).cloned())
    }

    fn ensure_image(&self, reference: &str) -> Result<ImageInfo, RuntimeFailure> {
        self.inspect_image(reference)?.ok_or_else(|| {
            RuntimeFailure::new(format!("image {reference} is not available: not found"))
        })
    }

    fn run(&self, spec: &ContainerSpec<'_>) -> Result<String, RuntimeFailure> {
        let name = name(spec.stack, spec.service_name, spec.release, spec.slot);
        self.note(format!("run {name}"));
        let mut s = self.state.borrow_mut();
        s.containers.retain(|c| c.name != name);
        s.next += 1;
        let n = s.next;
        let id = format!("c{n}");
        s.containers.push(ContainerInfo {
            id: id.clone(),
            name,
            service: spec.service_name.into(),
            release: spec.release,
            slot: spec.slot,
            image_id: spec.image_id.into(),
            image_ref: spec.service.image.clone(),
            state: "running".into(),
            health: None,
            published: vec![(8080, SocketAddr::from(([127, 0, 0, 1], 30_000 + n)))],
        });
        Ok(id)
    }

    fn run_job(
        &self,
        spec: &ContainerSpec<'_>,
        job: &str,
        _command: &Command,
        _timeout: Duration,
    ) -> Result<(i64, String), RuntimeFailure> {
        self.note(format!(
            "job {job} {} on {}",
            spec.service_name, spec.image_id
        ));
        let code = self.state.borrow().job_exit;
        Ok((code, format!("migrating\nexit {code}")))
    }

    fn wait_healthy(
        &self,
        _stack: &str,
        service: &str,
        id: &str,
        _probe: Option<&Health>,
    ) -> Result<String, RuntimeFailure> {
        let s = self.state.borrow();
        let c = s
            .containers
            .iter()
            .find(|c| c.id == id)
            .ok_or_else(|| RuntimeFailure::new(format!("no such container: {id}")))?;
        if s.unhealthy.contains(&c.image_id) {
            return Err(RuntimeFailure::new(format!(
                "`{service}` ({}) did not become healthy",
                c.name
            )));
        }
        Ok(format!("{} healthy", c.name))
    }

    fn start(&self, id: &str) -> Result<(), RuntimeFailure> {
        self.note(format!("start {}", self.name_of(id)?));
        self.set_state(id, "running");
        Ok(())
    }

    fn stop(&self, id: &str, at_least: Duration) -> Result<(), RuntimeFailure> {
        self.note(format!(
            "stop {} ({}s)",
            self.name_of(id)?,
            at_least.as_secs()
        ));
        self.set_state(id, "exited");
        Ok(())
    }

    fn remove(&self, id: &str) -> Result<(), RuntimeFailure> {
        self.note(format!("remove {}", self.name_of(id)?));
        let mut s = self.state.borrow_mut();
        s.containers.retain(|c| c.id != id && c.name != id);
        s.foreign.remove(id);
        Ok(())
    }

    fn set_restart(&self, id: &str, policy: RestartPolicy) -> Result<(), RuntimeFailure> {
        self.note(format!("restart {} {policy:?}", self.name_of(id)?));
        Ok(())
    }

    fn remove_network(&self, stack: &str) -> Result<Option<String>, RuntimeFailure> {
        let mut s = self.state.borrow_mut();
        if !s.network {
            return Ok(None);
        }
        s.network = false;
        s.log.push(format!("remove network cutover-{stack}"));
        Ok(Some(format!("cutover-{stack}")))
    }

    fn foreign_container(&self, name: &str) -> Result<Option<String>, RuntimeFailure> {
        Ok(self
            .state
            .borrow()
            .foreign
            .contains_key(name)
            .then(|| name.to_string()))
    }

    fn stop_foreign(&self, name: &str, grace: Duration) -> Result<(), RuntimeFailure> {
        self.note(format!("stop foreign {name} ({}s)", grace.as_secs()));
        self.set_state(name, "exited");
        Ok(())
    }

    fn exec(
        &self,
        id: &str,
        argv: &[String],
        _timeout: Option<Duration>,
    ) -> Result<(i64, String), RuntimeFailure> {
        self.note(format!("exec {} {}", self.name_of(id)?, argv.join(" ")));
        Ok(self.state.borrow().exec.clone())
    }

    fn logs_tail(&self, _id: &str, _lines: usize) -> Result<String, RuntimeFailure> {
        Ok(self.state.borrow().logs.clone())
    }

    fn address_on_network(&self, id: &str, _stack: &str) -> Result<Option<IpAddr>, RuntimeFailure> {
        let name = self.name_of(id)?;
        Ok(self.state.borrow().addresses.get(&name).copied())
    }

    fn volume_path(&self, _name: &str) -> Result<Option<PathBuf>, RuntimeFailure> {
        Ok(None)
    }

    fn host_path(&self, _id: &str, _path: &str) -> Result<Option<PathBuf>, RuntimeFailure> {
        Ok(None)
    }
}

/// A traffic switch that logs what it is asked, into a log the test keeps.
#[derive(Clone, Default)]
pub struct Traffic(pub Rc<RefCell<Vec<String>>>);

impl Traffic {
    pub fn log(&self) -> Vec<String> {
        self.0.borrow().clone()
    }
}

impl TrafficSwitch for Traffic {
    fn switch(&mut self, service: &str, upstreams: &[SocketAddr]) -> Result<String, String> {
        let list: Vec<String> = upstreams.iter().map(ToString::to_string).collect();
        self.0
            .borrow_mut()
            .push(format!("switch {service} {}", list.join(",")));
        Ok(format!("switched `{service}`"))
    }

    fn drain(&mut self, service: &str, old: &[SocketAddr]) -> Result<String, String> {
        self.0
            .borrow_mut()
            .push(format!("drain {service} {}", old.len()));
        Ok(format!("drained `{service}`"))
    }

    fn hold(&mut self, service: &str) -> Result<String, String> {
        self.0.borrow_mut().push(format!("hold {service}"));
        Ok(format!("holding `{service}`"))
    }

    fn release(&mut self, service: &str) -> Result<String, String> {
        self.0.borrow_mut().push(format!("release {service}"));
        Ok(format!("released `{service}`"))
    }

    fn maintenance(&mut self, on: bool) -> Result<String, String> {
        self.0.borrow_mut().push(format!("maintenance {on}"));
        Ok(format!("maintenance {on}"))
    }
}
