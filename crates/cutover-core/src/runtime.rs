//! The seam between an operation and the container runtime that runs a stack.
//!
//! An operation observes the stack's containers, creates, starts, stops and removes them,
//! waits until they are healthy, and runs commands in them; it does so through
//! [`ContainerRuntime`], never through a concrete engine. The Docker adapter
//! (`cutover-docker`) is the first implementation; the operations layer's unit tests use a
//! fake; Docker Swarm and Kubernetes are the next.
//!
//! The trait is blocking, like the engine's [`Executor`](crate::engine::Executor): steps run
//! one at a time, and an adapter that speaks an async API owns the runtime it blocks on.
//! Every call has a limit that fits it (an adapter's business), and an error is a sentence an
//! operator can act on ([`RuntimeFailure`]).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::spec::{Command, Health, RestartPolicy, Service};

/// Which of a blue-green pair a container is; services upgraded in place are `Single`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    Single,
    Blue,
    Green,
}

impl Slot {
    pub fn as_str(self) -> &'static str {
        match self {
            Slot::Single => "single",
            Slot::Blue => "blue",
            Slot::Green => "green",
        }
    }

    /// The slot a label names; anything else is `Single`.
    pub fn from_label(s: &str) -> Slot {
        match s {
            "blue" => Slot::Blue,
            "green" => Slot::Green,
            _ => Slot::Single,
        }
    }

    /// The other colour: a new blue-green container takes the slot the live one does not.
    pub fn other(self) -> Slot {
        match self {
            Slot::Blue => Slot::Green,
            Slot::Green | Slot::Single => Slot::Blue,
        }
    }
}

/// Everything needed to create one container of a service.
#[derive(Clone, Debug)]
pub struct ContainerSpec<'a> {
    pub stack: &'a str,
    pub service_name: &'a str,
    pub service: &'a Service,
    pub release: u64,
    pub slot: Slot,
    /// The image ID to run (`sha256:…`).
    pub image_id: &'a str,
    /// The environment, secrets resolved: `KEY=value`.
    pub env: Vec<String>,
}

/// A running container that publishes a host port, and whose it is.
#[derive(Clone, Debug, Default)]
pub struct PortHolder {
    pub name: String,
    /// The host ports it publishes.
    pub ports: Vec<u16>,
    pub stack: Option<String>,
    pub service: Option<String>,
    pub compose_project: Option<String>,
    pub compose_service: Option<String>,
}

/// One container of a stack, as observed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerInfo {
    pub id: String,
    pub name: String,
    pub service: String,
    pub release: u64,
    pub slot: Slot,
    pub image_id: String,
    pub image_ref: String,
    /// `running`, `exited`, `created`, ...
    pub state: String,
    /// The runtime's health status when the container has a health check of its own.
    pub health: Option<String>,
    /// Published ports: container port → host address.
    pub published: Vec<(u16, SocketAddr)>,
}

impl ContainerInfo {
    pub fn running(&self) -> bool {
        self.state == "running"
    }

    pub fn short_id(&self) -> &str {
        &self.id[..self.id.len().min(12)]
    }
}

/// An image or container ID as people read it: 12 hex digits, without `sha256:`.
pub fn short_id(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    &hex[..hex.len().min(12)]
}

/// An image as a release records it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    /// As the stack file wrote it: `cutover-demo:v2`.
    pub reference: String,
    /// The content-addressed ID the container runs: `sha256:…`.
    pub id: String,
    /// Registry digests (`repo@sha256:…`), empty for an image that was built locally.
    #[serde(default)]
    pub repo_digests: Vec<String>,
    /// The image defines a health check of its own (Docker's HEALTHCHECK).
    #[serde(default)]
    pub has_healthcheck: bool,
    /// The image's labels (the settings it accepts are declared there).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    /// How long the release's container of this image took from its start to healthy, in
    /// milliseconds, when the release started one: the next plan's downtime estimate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_in_ms: Option<u64>,
}

/// A runtime call that failed, in words an operator can act on (the adapter names the real
/// cause: the daemon unreachable, an image missing, a container unhealthy with its last log
/// lines).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RuntimeFailure(pub String);

impl RuntimeFailure {
    pub fn new(message: impl Into<String>) -> RuntimeFailure {
        RuntimeFailure(message.into())
    }
}

/// What an operation needs of the engine that runs a stack's containers.
///
/// cutover touches only what it labelled: every method that lists containers returns those
/// of `stack` only; the `foreign_*` methods reach a container cutover did not create, by the
/// name the plan gave (taking a compose project over).
pub trait ContainerRuntime {
    /// The stack's containers, running or not (one-shot jobs excluded).
    fn containers(&self, stack: &str) -> Result<Vec<ContainerInfo>, RuntimeFailure>;

    /// Every running container that publishes a host port, whoever's it is.
    fn port_holders(&self) -> Result<Vec<PortHolder>, RuntimeFailure>;

    /// The local image for `reference` (a tag or an ID), or `None` when it is not here.
    fn inspect_image(&self, reference: &str) -> Result<Option<ImageInfo>, RuntimeFailure>;

    /// The image for `reference`, pulled when it is not here.
    fn ensure_image(&self, reference: &str) -> Result<ImageInfo, RuntimeFailure>;

    /// Creates and starts a container; returns its ID. One of the same name left over from
    /// an interrupted attempt is reused when it runs the same image, else replaced.
    fn run(&self, spec: &ContainerSpec<'_>) -> Result<String, RuntimeFailure>;

    /// Runs `command` once in a container made like `spec`'s, to its end or `timeout`;
    /// returns the exit code and its last log lines. The container is removed after.
    fn run_job(
        &self,
        spec: &ContainerSpec<'_>,
        job: &str,
        command: &Command,
        timeout: Duration,
    ) -> Result<(i64, String), RuntimeFailure>;

    /// Waits until container `id` of `service` is healthy (the image's own check, else
    /// `probe`), bounded by the probe's deadline; a restart under the restart policy is a
    /// crash loop and fails at once. Returns what it saw.
    fn wait_healthy(
        &self,
        stack: &str,
        service: &str,
        id: &str,
        probe: Option<&Health>,
    ) -> Result<String, RuntimeFailure>;

    fn start(&self, id: &str) -> Result<(), RuntimeFailure>;

    /// Stops with SIGTERM and waits the longer of the container's own grace and `at_least`.
    fn stop(&self, id: &str, at_least: Duration) -> Result<(), RuntimeFailure>;

    /// Removes a container (stopping it first).
    fn remove(&self, id: &str) -> Result<(), RuntimeFailure>;

    fn set_restart(&self, id: &str, policy: RestartPolicy) -> Result<(), RuntimeFailure>;

    /// Removes the stack's network when nothing uses it; its name when it did.
    fn remove_network(&self, stack: &str) -> Result<Option<String>, RuntimeFailure>;

    /// A container cutover did not create, by name: its ID, or `None` when it is gone.
    fn foreign_container(&self, name: &str) -> Result<Option<String>, RuntimeFailure>;

    /// Stops a container cutover did not create (SIGTERM, up to `grace`, then SIGKILL), and
    /// nothing else: it keeps its owner's restart policy, for a revert that starts it again.
    fn stop_foreign(&self, name: &str, grace: Duration) -> Result<(), RuntimeFailure>;

    /// Runs `argv` in container `id`, up to `timeout` when given; returns the exit code and
    /// the output.
    fn exec(
        &self,
        id: &str,
        argv: &[String],
        timeout: Option<Duration>,
    ) -> Result<(i64, String), RuntimeFailure>;

    /// The last `lines` lines of a container's log.
    fn logs_tail(&self, id: &str, lines: usize) -> Result<String, RuntimeFailure>;

    /// The address of container `id` on the stack's network.
    fn address_on_network(&self, id: &str, stack: &str) -> Result<Option<IpAddr>, RuntimeFailure>;

    /// Where a named volume's content is on this host, when it exists.
    fn volume_path(&self, name: &str) -> Result<Option<PathBuf>, RuntimeFailure>;

    /// Where `path` inside container `id` is on this host, when it is a mount.
    fn host_path(&self, id: &str, path: &str) -> Result<Option<PathBuf>, RuntimeFailure>;

    /// A cluster engine that runs each service as one replicated service (Docker Swarm):
    /// the container steps deploy, scale and put back services through it instead of
    /// handling containers one by one. `None` for one engine.
    fn services(&self) -> Option<&dyn ServiceRuntime> {
        None
    }
}

/// A cluster engine's services (`runtime: swarm`). What runs is listed by
/// [`ContainerRuntime::containers`], one entry per replica (its task).
pub trait ServiceRuntime {
    /// Runs `spec`'s service on `spec.image_id`, creating or updating it, and waits until
    /// every replica runs that image and stays up; fails at the first replica that fails.
    /// Never relies on the engine's own rollback: a revert is another `deploy`.
    fn deploy(&self, spec: &ContainerSpec<'_>) -> Result<String, RuntimeFailure>;

    /// Scales `service` to `replicas` (0: every replica stopped, for a restore point) and
    /// waits until it is so.
    fn scale(&self, stack: &str, service: &str, replicas: u64) -> Result<String, RuntimeFailure>;

    /// Removes `service` (a service the stack no longer has, or one a revert takes away).
    fn remove_service(&self, stack: &str, service: &str) -> Result<(), RuntimeFailure>;
}
