//! The Docker runtime adapter: what runs for a stack, and the means to change it.
//!
//! cutover owns exactly the containers it labels (`io.cutover.stack`, `.service`,
//! `.release`, `.slot`) and the one network it creates per stack (`cutover-<stack>`, where
//! services reach each other by name). It never lists, stops or removes anything without
//! the stack's label, so another stack's containers, and containers cutover did not
//! create, are out of its reach by construction — with one exception the operator asks
//! for: the first apply of a stack that includes a compose file takes over that compose
//! project's containers (`compose_containers`, `stop_foreign`), which the plan names.
//!
//! Containers are created from the image **ID** (`sha256:…`), never from a tag: what a
//! release records is what runs, and a rollback runs the same bits even when the tag moved.
//!
//! The engine speaks API 1.41 and newer; the client negotiates the version on connect.

mod auth;
mod blocking;
mod containers;
mod health;
mod images;
pub mod swarm;

use std::time::Duration;

use bollard::Docker;

pub use auth::{credentials_for, registry_of};
pub use blocking::Blocking;
pub use containers::{ContainerInfo, ContainerSpec, PortHolder, Slot};
pub use health::HealthFailure;
pub use images::ImageInfo;

/// Label keys on every container and network cutover creates.
pub mod label {
    pub const STACK: &str = "io.cutover.stack";
    pub const SERVICE: &str = "io.cutover.service";
    pub const RELEASE: &str = "io.cutover.release";
    pub const SLOT: &str = "io.cutover.slot";
    /// The image reference as the stack file wrote it (the container runs its ID).
    pub const IMAGE_REF: &str = "io.cutover.image-ref";
    /// On a one-shot job's container (`migrate`): the job's name. Such a container is
    /// never one of the service's.
    pub const JOB: &str = "io.cutover.job";
}

/// What can go wrong talking to the engine, in words an operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(
        "cannot reach the Docker daemon at {socket}: {reason} (is it running, and may this user use its socket? DOCKER_HOST picks another one)"
    )]
    Unavailable { socket: String, reason: String },
    #[error("image {reference} is not available: {reason}")]
    ImageMissing { reference: String, reason: String },
    #[error("{0}")]
    Unhealthy(Box<HealthFailure>),
    #[error("{job} did not finish within {}s and was removed{}", timeout.as_secs(), last_lines(logs))]
    JobTimeout {
        job: String,
        timeout: Duration,
        logs: String,
    },
    /// A swarm service did not do what was asked (a task failed, the update paused, it did
    /// not converge), or the engine is no swarm manager.
    #[error("{0}")]
    Swarm(String),
    #[error("{what}: {source}")]
    Docker {
        what: String,
        #[source]
        source: bollard::errors::Error,
    },
}

/// `logs` as an indented block after a message, or nothing.
fn last_lines(logs: &str) -> String {
    if logs.trim().is_empty() {
        return String::new();
    }
    let mut out = format!("\n  last {} log lines:", health::LOG_LINES);
    for line in logs.lines() {
        out.push_str("\n    ");
        out.push_str(line);
    }
    out
}

impl RuntimeError {
    pub(crate) fn docker(what: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> Self {
        let what = what.into();
        move |source| RuntimeError::Docker { what, source }
    }
}

/// A connection to one Docker Engine.
#[derive(Clone, Debug)]
pub struct Runtime {
    docker: Docker,
    socket: String,
}

/// How long connecting and negotiating may take before the daemon counts as unavailable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The limit of an ordinary API call (inspect, list, create, start, update): long enough for
/// a daemon busy with other work, short enough that a hung one is named within a minute.
/// Calls that wait for something by design set their own: a stop waits the grace period
/// ([`Runtime::stop`]), a pull as long as a large image takes.
const API_TIMEOUT: Duration = Duration::from_secs(60);

/// What a call that waits by design (a stop's grace, a removal) gets on top of the wait
/// itself: the daemon's own work around it.
const CALL_MARGIN: Duration = Duration::from_secs(30);

impl Runtime {
    /// Connects to the local engine (`DOCKER_HOST` when it names a unix socket, else
    /// `/var/run/docker.sock`) and negotiates the API version.
    pub async fn connect() -> Result<Runtime, RuntimeError> {
        let socket = std::env::var("DOCKER_HOST")
            .ok()
            .filter(|h| h.starts_with("unix://"))
            .unwrap_or_else(|| "unix:///var/run/docker.sock".to_string());
        Runtime::connect_to(&socket).await
    }

    /// Connects to the engine on `socket` (`unix:///path`) and negotiates the API version.
    pub async fn connect_to(socket: &str) -> Result<Runtime, RuntimeError> {
        let unavailable = |reason: String| RuntimeError::Unavailable {
            socket: socket.to_string(),
            reason,
        };
        let docker =
            Docker::connect_with_unix(socket, API_TIMEOUT.as_secs(), bollard::API_DEFAULT_VERSION)
                .map_err(|e| unavailable(e.to_string()))?;
        let docker = tokio::time::timeout(CONNECT_TIMEOUT, docker.negotiate_version())
            .await
            .map_err(|_| unavailable(format!("no answer within {}s", CONNECT_TIMEOUT.as_secs())))?
            .map_err(|e| unavailable(e.to_string()))?;
        Ok(Runtime {
            docker,
            socket: socket.to_string(),
        })
    }

    /// An error of a call that could not reach the daemon at all (it stopped, or its socket
    /// went away) says so, naming the socket; other errors stay as they are.
    pub fn explain(&self, e: RuntimeError) -> RuntimeError {
        match e {
            RuntimeError::Docker { what, source }
                if matches!(
                    source,
                    bollard::errors::Error::HyperLegacyError { .. }
                        | bollard::errors::Error::IOError { .. }
                        | bollard::errors::Error::SocketNotFoundError(_)
                        | bollard::errors::Error::RequestTimeoutError
                ) =>
            {
                RuntimeError::Unavailable {
                    socket: self.socket.clone(),
                    reason: format!("{what}: {source}"),
                }
            }
            other => other,
        }
    }

    /// The client for one call that waits up to `wait` by design (a stop's grace period, a
    /// pull): the ordinary limit would cut it off and report a healthy daemon as unreachable.
    pub(crate) fn waiting(&self, wait: Duration) -> Docker {
        self.docker
            .clone()
            .with_timeout(API_TIMEOUT.max(wait.saturating_add(CALL_MARGIN)))
    }

    /// The socket this runtime talks to.
    pub fn socket(&self) -> &str {
        &self.socket
    }

    /// The negotiated API version, e.g. `1.41`.
    pub fn api_version(&self) -> String {
        let v = self.docker.client_version();
        format!("{}.{}", v.major_version, v.minor_version)
    }

    /// The network a stack's services share: `cutover-<stack>`.
    pub fn network_name(stack: &str) -> String {
        format!("cutover-{stack}")
    }
}
