//! Containers and the stack network: observe, create, start, stop, remove, exec, logs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, ContainerSummaryStateEnum, ContainerUpdateBody, EndpointSettings,
    HostConfig, NetworkCreateRequest, NetworkingConfig, PortBinding, RestartPolicy,
    RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptions, InspectNetworkOptions, ListContainersOptions, ListNetworksOptions,
    LogsOptions, RemoveContainerOptions, RemoveVolumeOptions, StopContainerOptions,
};
use cutover_core::spec::{Command, Protocol, RestartPolicy as Restart};
use futures_util::{StreamExt, TryStreamExt};

pub use cutover_core::runtime::{ContainerInfo, ContainerSpec, PortHolder, Slot};

use crate::{Runtime, RuntimeError, label};

impl Runtime {
    /// Every container labelled with `stack`, running or not, oldest release first.
    pub async fn containers(&self, stack: &str) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("{}={stack}", label::STACK)],
        )]);
        let list = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(RuntimeError::docker(format!(
                "cannot list the containers of stack `{stack}`"
            )))?;
        let mut out = Vec::new();
        for c in list {
            let labels = c.labels.unwrap_or_default();
            // The filter asked the engine; check again, because everything we do next to
            // these containers depends on it.
            if labels.get(label::STACK).map(String::as_str) != Some(stack) {
                continue;
            }
            let Some(service) = labels.get(label::SERVICE).cloned() else {
                continue;
            };
            // A one-shot job (a migration) is no container of the service.
            if labels.contains_key(label::JOB) {
                continue;
            }
            let id = c.id.unwrap_or_default();
            // The summary's health field is newer than API 1.41: inspect for it.
            let health = self.health_status(&id).await?;
            let published = c
                .ports
                .unwrap_or_default()
                .into_iter()
                .filter_map(|p| {
                    let ip = p.ip.as_deref().unwrap_or("0.0.0.0");
                    let ip = if ip == "0.0.0.0" || ip == "::" {
                        "127.0.0.1"
                    } else {
                        ip
                    };
                    let addr: SocketAddr = format!("{ip}:{}", p.public_port?).parse().ok()?;
                    Some((p.private_port, addr))
                })
                .collect();
            out.push(ContainerInfo {
                name: c
                    .names
                    .and_then(|n| n.into_iter().next())
                    .map(|n| n.trim_start_matches('/').to_string())
                    .unwrap_or_default(),
                id,
                service,
                release: labels
                    .get(label::RELEASE)
                    .and_then(|r| r.parse().ok())
                    .unwrap_or(0),
                slot: Slot::from_label(labels.get(label::SLOT).map_or("", String::as_str)),
                image_id: c.image_id.unwrap_or_default(),
                image_ref: labels.get(label::IMAGE_REF).cloned().unwrap_or_default(),
                state: c.state.map_or_else(
                    || "unknown".to_string(),
                    |s: ContainerSummaryStateEnum| s.to_string(),
                ),
                health,
                published,
            });
        }
        out.sort_by(|a, b| (a.release, &a.name).cmp(&(b.release, &b.name)));
        Ok(out)
    }

    async fn health_status(&self, id: &str) -> Result<Option<String>, RuntimeError> {
        let inspect =
            self.docker
                .inspect_container(id, None)
                .await
                .map_err(RuntimeError::docker(format!(
                    "cannot inspect container {id}"
                )))?;
        Ok(inspect
            .state
            .and_then(|s| s.health)
            .and_then(|h| h.status)
            .map(|s| s.to_string())
            .filter(|s| !s.is_empty() && s != "none"))
    }

    /// Creates the stack network when it does not exist yet.
    pub async fn ensure_network(&self, stack: &str) -> Result<String, RuntimeError> {
        let name = Runtime::network_name(stack);
        match self
            .docker
            .inspect_network(&name, None::<InspectNetworkOptions>)
            .await
        {
            Ok(net) => {
                let owner = net.labels.unwrap_or_default().get(label::STACK).cloned();
                if owner.as_deref() != Some(stack) {
                    return Err(RuntimeError::Docker {
                        what: format!(
                            "a network named `{name}` exists but cutover did not create it for stack `{stack}`; rename or remove it"
                        ),
                        source: bollard::errors::Error::DockerResponseServerError {
                            status_code: 409,
                            message: "network name taken".into(),
                        },
                    });
                }
                Ok(name)
            }
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {
                self.docker
                    .create_network(NetworkCreateRequest {
                        name: name.clone(),
                        driver: Some("bridge".into()),
                        labels: Some(HashMap::from([(
                            label::STACK.to_string(),
                            stack.to_string(),
                        )])),
                        ..Default::default()
                    })
                    .await
                    .map_err(RuntimeError::docker(format!(
                        "cannot create network `{name}`"
                    )))?;
                Ok(name)
            }
            Err(e) => Err(RuntimeError::docker(format!(
                "cannot inspect network `{name}`"
            ))(e)),
        }
    }

    /// The container name: `<stack>-<service>-r<release>[-<slot>]`.
    pub fn container_name(stack: &str, service: &str, release: u64, slot: Slot) -> String {
        match slot {
            Slot::Single => format!("{stack}-{service}-r{release}"),
            s => format!("{stack}-{service}-r{release}-{}", s.as_str()),
        }
    }

    /// Creates and starts a container. When one of that name exists already (a step that
    /// runs again after a crash), it is reused if it runs the same image, else replaced.
    pub async fn run(&self, spec: &ContainerSpec<'_>) -> Result<String, RuntimeError> {
        let network = self.ensure_network(spec.stack).await?;
        let name = Runtime::container_name(spec.stack, spec.service_name, spec.release, spec.slot);
        if let Ok(existing) = self.docker.inspect_container(&name, None).await {
            let same_image = existing.image.as_deref() == Some(spec.image_id);
            let id = existing.id.unwrap_or_default();
            if same_image {
                let running = existing.state.and_then(|s| s.running).unwrap_or(false);
                if !running {
                    self.start(&id).await?;
                }
                return Ok(id);
            }
            self.remove(&id).await?;
        }
        self.create_and_start(&name, Self::create_body(spec, &network))
            .await
    }

    /// Creates container `name` from `body` and starts it; its ID.
    async fn create_and_start(
        &self,
        name: &str,
        body: ContainerCreateBody,
    ) -> Result<String, RuntimeError> {
        let created = self
            .docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.to_string()),
                    ..Default::default()
                }),
                body,
            )
            .await
            .map_err(RuntimeError::docker(format!(
                "cannot create container `{name}`"
            )))?;
        self.start(&created.id).await?;
        Ok(created.id)
    }

    /// What a container of `spec` is created with: its image, command, env, labels, ports,
    /// mounts, restart policy and stop grace, on the stack network under the service's name.
    fn create_body(spec: &ContainerSpec<'_>, network: &str) -> ContainerCreateBody {
        let svc = spec.service;
        let labels = HashMap::from([
            (label::STACK.to_string(), spec.stack.to_string()),
            (label::SERVICE.to_string(), spec.service_name.to_string()),
            (label::RELEASE.to_string(), spec.release.to_string()),
            (label::SLOT.to_string(), spec.slot.as_str().to_string()),
            (label::IMAGE_REF.to_string(), svc.image.clone()),
        ]);
        let mut port_bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
        for p in &svc.ports {
            let proto = match p.protocol {
                Protocol::Tcp => "tcp",
                Protocol::Udp => "udp",
            };
            port_bindings
                .entry(format!("{}/{proto}", p.container))
                .or_insert_with(|| Some(Vec::new()))
                .get_or_insert_with(Vec::new)
                .push(PortBinding {
                    host_ip: p.host_ip.clone(),
                    host_port: Some(p.host.to_string()),
                });
        }
        // The service's own port, when no fixed mapping publishes it: on loopback, on a port
        // the engine picks, so an old and a new container can both answer during blue-green.
        if let Some(port) = svc.port {
            let key = format!("{port}/tcp");
            port_bindings.entry(key).or_insert_with(|| {
                Some(vec![PortBinding {
                    host_ip: Some("127.0.0.1".into()),
                    host_port: Some(String::new()),
                }])
            });
        }
        let exposed: Vec<String> = port_bindings.keys().cloned().collect();
        let binds: Vec<String> = svc.volumes.iter().map(|m| m.bind_spec()).collect();
        ContainerCreateBody {
            image: Some(spec.image_id.to_string()),
            cmd: svc.command.as_ref().map(Command::argv),
            env: Some(spec.env.clone()),
            labels: Some(labels),
            exposed_ports: Some(exposed),
            stop_timeout: Some(svc.stop_grace.as_secs().try_into().unwrap_or(i64::MAX)),
            host_config: Some(HostConfig {
                binds: Some(binds),
                port_bindings: Some(port_bindings),
                restart_policy: Some(restart_policy(svc.restart)),
                network_mode: Some(network.to_string()),
                init: svc.init.then_some(true),
                tmpfs: (!svc.tmpfs.is_empty()).then(|| {
                    svc.tmpfs
                        .iter()
                        .map(|t| match t.split_once(':') {
                            Some((path, options)) => (path.to_string(), options.to_string()),
                            None => (t.clone(), String::new()),
                        })
                        .collect()
                }),
                ..Default::default()
            }),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    network.to_string(),
                    EndpointSettings {
                        aliases: Some(vec![spec.service_name.to_string()]),
                        ..Default::default()
                    },
                )])),
            }),
            ..Default::default()
        }
    }

    /// Runs `command` once in a container of `spec` (the new image, the service's env,
    /// volumes and network; no published ports, no restart, no name on the network, so the
    /// live containers keep theirs) and waits up to `timeout` for it to exit. Returns the
    /// exit code and the last [`crate::health::LOG_LINES`] lines of its output; the
    /// container is removed either way. Run again after a crash, a job of the same release
    /// that exited 0 counts as done, one still running is waited for.
    pub async fn run_job(
        &self,
        spec: &ContainerSpec<'_>,
        job: &str,
        command: &Command,
        timeout: Duration,
    ) -> Result<(i64, String), RuntimeError> {
        let network = self.ensure_network(spec.stack).await?;
        let name = format!(
            "{}-{job}",
            Runtime::container_name(spec.stack, spec.service_name, spec.release, Slot::Single)
        );
        let existing = self.docker.inspect_container(&name, None).await.ok();
        let id = match existing {
            Some(c)
                if c.image.as_deref() == Some(spec.image_id)
                    && c.state.as_ref().is_some_and(|s| {
                        s.running == Some(true)
                            || (s.exit_code == Some(0)
                                && s.finished_at
                                    .as_deref()
                                    .is_some_and(|f| !f.starts_with("0001")))
                    }) =>
            {
                c.id.unwrap_or_default()
            }
            other => {
                if let Some(c) = other {
                    self.remove(&c.id.unwrap_or_default()).await?;
                }
                let mut body = Self::create_body(spec, &network);
                body.cmd = Some(command.argv());
                body.exposed_ports = None;
                if let Some(labels) = body.labels.as_mut() {
                    labels.insert(label::JOB.to_string(), job.to_string());
                }
                if let Some(host) = body.host_config.as_mut() {
                    host.port_bindings = None;
                    host.restart_policy = Some(restart_policy(Restart::No));
                }
                body.networking_config = None;
                self.create_and_start(&name, body).await?
            }
        };
        let started = std::time::Instant::now();
        let code = loop {
            let state = match self.docker.inspect_container(&id, None).await {
                Ok(c) => c.state.unwrap_or_default(),
                Err(e) => {
                    // A job left running would go on writing into the revert's restore.
                    let _ = self.remove(&id).await;
                    return Err(RuntimeError::docker(format!("cannot inspect `{name}`"))(e));
                }
            };
            if state.running != Some(true) {
                break state.exit_code.unwrap_or(-1);
            }
            if started.elapsed() >= timeout {
                let logs = self
                    .logs_tail(&id, crate::health::LOG_LINES)
                    .await
                    .unwrap_or_default();
                self.remove(&id).await?;
                return Err(RuntimeError::JobTimeout {
                    job: name,
                    timeout,
                    logs,
                });
            }
            tokio::time::sleep(JOB_POLL).await;
        };
        let logs = self
            .logs_tail(&id, crate::health::LOG_LINES)
            .await
            .unwrap_or_default();
        self.remove(&id).await?;
        Ok((code, logs))
    }

    /// Starts a container (a no-op when it runs).
    pub async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        match self.docker.start_container(id, None).await {
            Ok(()) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(RuntimeError::docker(format!("cannot start container {id}"))(e)),
        }
    }

    /// SIGTERM, up to `grace`, then SIGKILL (a no-op when it is not running). The container
    /// is kept, with its restart policy set to `no`: a daemon restart must not bring an old
    /// release back beside the new one, and the kept container keeps its image from being
    /// pruned while it is a rollback target.
    pub async fn stop(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        self.stop_foreign(id, grace).await?;
        self.set_restart(id, Restart::No).await
    }

    /// The running containers of compose project `project` (its `com.docker.compose.project`
    /// label), one-offs of `compose run` left out: (compose service, container name).
    pub async fn compose_containers(
        &self,
        project: &str,
    ) -> Result<Vec<(String, String)>, RuntimeError> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("{COMPOSE_PROJECT}={project}")],
        )]);
        let list = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(RuntimeError::docker(format!(
                "cannot list the containers of compose project `{project}`"
            )))?;
        let mut out: Vec<(String, String)> = list
            .into_iter()
            .filter_map(|c| {
                let labels = c.labels.unwrap_or_default();
                // Checked again, and never one of cutover's own, nor a `compose run` one-off;
                // only running ones: a revert starts again what it stopped, nothing more.
                let running = c
                    .state
                    .is_some_and(|s| s == ContainerSummaryStateEnum::RUNNING);
                if labels.get(COMPOSE_PROJECT).map(String::as_str) != Some(project)
                    || labels.contains_key(label::STACK)
                    || labels.get("com.docker.compose.oneoff").map(String::as_str) == Some("True")
                    || !running
                {
                    return None;
                }
                let service = labels.get(COMPOSE_SERVICE)?.clone();
                let name = c.names?.into_iter().next()?;
                Some((service, name.trim_start_matches('/').to_string()))
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// Running containers that publish host ports: their names, the ports, and whose they
    /// are (cutover stack and service, compose project and service).
    pub async fn port_holders(&self) -> Result<Vec<PortHolder>, RuntimeError> {
        let list = self
            .docker
            .list_containers(None::<ListContainersOptions>)
            .await
            .map_err(RuntimeError::docker("cannot list the running containers"))?;
        Ok(list
            .into_iter()
            .filter_map(|c| {
                let ports: Vec<u16> = c
                    .ports
                    .iter()
                    .flatten()
                    .filter_map(|p| p.public_port)
                    .collect();
                (!ports.is_empty()).then_some((c, ports))
            })
            .map(|(c, ports)| {
                let labels = c.labels.unwrap_or_default();
                PortHolder {
                    ports,
                    name: c
                        .names
                        .and_then(|n| n.into_iter().next())
                        .map(|n| n.trim_start_matches('/').to_string())
                        .unwrap_or_default(),
                    stack: labels.get(label::STACK).cloned(),
                    service: labels.get(label::SERVICE).cloned(),
                    compose_project: labels.get(COMPOSE_PROJECT).cloned(),
                    compose_service: labels.get(COMPOSE_SERVICE).cloned(),
                }
            })
            .collect())
    }

    /// Where `path` inside container `id` is on this host, through the container's mounts
    /// (a `local` volume's or a bind mount's source): `None` when no mount holds it.
    pub async fn host_path(
        &self,
        id: &str,
        path: &str,
    ) -> Result<Option<std::path::PathBuf>, RuntimeError> {
        let inspect =
            self.docker
                .inspect_container(id, None)
                .await
                .map_err(RuntimeError::docker(format!(
                    "cannot inspect container {id}"
                )))?;
        let inside = std::path::Path::new(path);
        let best = inspect
            .mounts
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                let dest = std::path::PathBuf::from(m.destination?);
                let rest = inside.strip_prefix(&dest).ok()?.to_path_buf();
                Some((
                    dest.components().count(),
                    std::path::PathBuf::from(m.source?),
                    rest,
                ))
            })
            .max_by_key(|(depth, _, _)| *depth);
        Ok(best.map(|(_, source, rest)| source.join(rest)))
    }

    /// Removes the stack network (`cutover-<stack>`, with the stack's label) when it exists;
    /// its name when it did. Containers still on it make this fail.
    pub async fn remove_network(&self, stack: &str) -> Result<Option<String>, RuntimeError> {
        let name = Runtime::network_name(stack);
        let filters = HashMap::from([
            (
                "label".to_string(),
                vec![format!("{}={stack}", label::STACK)],
            ),
            ("name".to_string(), vec![name.clone()]),
        ]);
        let nets = self
            .docker
            .list_networks(Some(ListNetworksOptions {
                filters: Some(filters),
            }))
            .await
            .map_err(RuntimeError::docker("cannot list networks"))?;
        if !nets
            .iter()
            .any(|n| n.name.as_deref() == Some(name.as_str()))
        {
            return Ok(None);
        }
        self.docker
            .remove_network(&name)
            .await
            .map_err(RuntimeError::docker(format!(
                "cannot remove network `{name}`"
            )))?;
        Ok(Some(name))
    }

    /// The name of container `name` when it exists and is no container of a cutover
    /// stack (one a stack file names to take over); `None` when there is none.
    pub async fn foreign_container(&self, name: &str) -> Result<Option<String>, RuntimeError> {
        match self.docker.inspect_container(name, None).await {
            Ok(c) => {
                let labels = c.config.and_then(|c| c.labels).unwrap_or_default();
                if let Some(stack) = labels.get(label::STACK) {
                    return Err(RuntimeError::Docker {
                        what: format!(
                            "container `{name}` belongs to cutover stack `{stack}`: it is not one to take over"
                        ),
                        source: bollard::errors::Error::DockerResponseServerError {
                            status_code: 409,
                            message: "owned by a stack".into(),
                        },
                    });
                }
                Ok(Some(
                    c.name
                        .map(|n| n.trim_start_matches('/').to_string())
                        .unwrap_or_else(|| name.to_string()),
                ))
            }
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(RuntimeError::docker(format!(
                "cannot inspect container `{name}`"
            ))(e)),
        }
    }

    /// SIGTERM, up to `grace`, then SIGKILL (a no-op when it is not running), and nothing
    /// else: a container cutover did not make (one it takes over) keeps the restart policy
    /// its owner set, for a revert that starts it again.
    pub async fn stop_foreign(&self, name: &str, grace: Duration) -> Result<(), RuntimeError> {
        let t: i32 = grace.as_secs().try_into().unwrap_or(i32::MAX);
        // The call returns when the container has stopped: after the grace period and the
        // SIGKILL for a process that ignores SIGTERM (a PID 1 without a handler does).
        let stopped = self
            .waiting(grace)
            .stop_container(
                name,
                Some(StopContainerOptions {
                    t: Some(t),
                    ..Default::default()
                }),
            )
            .await;
        // 304: not running; 404: gone. Both mean stopped.
        settled(stopped, &[304, 404], || {
            format!("cannot stop container {name}")
        })
    }

    /// Changes a container's restart policy.
    pub async fn set_restart(&self, id: &str, policy: Restart) -> Result<(), RuntimeError> {
        let updated = self
            .docker
            .update_container(
                id,
                ContainerUpdateBody {
                    restart_policy: Some(restart_policy(policy)),
                    ..Default::default()
                },
            )
            .await;
        settled(updated, &[404], || {
            format!("cannot update the restart policy of container {id}")
        })
    }

    /// Removes a container, stopping it first if it runs (a no-op when it is gone). A removal
    /// already under way (another call's, or one a killed cutover started) is waited out: the
    /// container is gone when this returns.
    pub async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let removed = self
            .waiting(REMOVE_WAIT)
            .remove_container(
                id,
                Some(RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                }),
            )
            .await;
        match removed {
            Err(e) if in_progress(&e) => self.wait_gone(id, REMOVE_WAIT).await,
            other => settled(other, &[404], || format!("cannot remove container {id}")),
        }
    }

    /// Waits until container `id` no longer exists (its removal is under way).
    async fn wait_gone(&self, id: &str, limit: Duration) -> Result<(), RuntimeError> {
        let started = std::time::Instant::now();
        loop {
            match self.docker.inspect_container(id, None).await {
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => return Ok(()),
                Err(e) => {
                    return Err(RuntimeError::docker(format!(
                        "cannot inspect container {id} while its removal is under way"
                    ))(e));
                }
                Ok(_) if started.elapsed() >= limit => {
                    return Err(RuntimeError::Docker {
                        what: format!(
                            "container {id} is still being removed after {}s",
                            limit.as_secs()
                        ),
                        source: bollard::errors::Error::DockerResponseServerError {
                            status_code: 409,
                            message: "removal in progress".into(),
                        },
                    });
                }
                Ok(_) => tokio::time::sleep(IN_PROGRESS_POLL).await,
            }
        }
    }

    /// The last `lines` lines of a container's output (stdout and stderr interleaved).
    pub async fn logs_tail(&self, id: &str, lines: usize) -> Result<String, RuntimeError> {
        let chunks: Vec<_> = self
            .docker
            .logs(
                id,
                Some(LogsOptions {
                    stdout: true,
                    stderr: true,
                    tail: lines.to_string(),
                    ..Default::default()
                }),
            )
            .try_collect()
            .await
            .map_err(RuntimeError::docker(format!(
                "cannot read the logs of {id}"
            )))?;
        Ok(chunks.iter().map(ToString::to_string).collect())
    }

    /// Runs `argv` in a running container; returns the exit code and the combined output.
    pub async fn exec(&self, id: &str, argv: &[String]) -> Result<(i64, String), RuntimeError> {
        let exec = self
            .docker
            .create_exec(
                id,
                CreateExecOptions {
                    cmd: Some(argv.to_vec()),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await
            .map_err(RuntimeError::docker(format!(
                "cannot exec in container {id}"
            )))?;
        let mut output = String::new();
        if let StartExecResults::Attached {
            output: mut out, ..
        } = self
            .docker
            .start_exec(&exec.id, None)
            .await
            .map_err(RuntimeError::docker(format!(
                "cannot exec in container {id}"
            )))?
        {
            while let Some(chunk) = out.next().await {
                let chunk = chunk.map_err(RuntimeError::docker(format!("exec output of {id}")))?;
                output.push_str(&chunk.to_string());
            }
        }
        let inspect = self
            .docker
            .inspect_exec(&exec.id)
            .await
            .map_err(RuntimeError::docker(format!("cannot inspect exec in {id}")))?;
        Ok((inspect.exit_code.unwrap_or(-1), output))
    }

    /// The container's address on the stack network.
    pub async fn address_on_network(
        &self,
        id: &str,
        stack: &str,
    ) -> Result<Option<std::net::IpAddr>, RuntimeError> {
        let inspect =
            self.docker
                .inspect_container(id, None)
                .await
                .map_err(RuntimeError::docker(format!(
                    "cannot inspect container {id}"
                )))?;
        Ok(inspect
            .network_settings
            .and_then(|n| n.networks)
            .and_then(|mut n| n.remove(&Runtime::network_name(stack)))
            .and_then(|e| e.ip_address)
            .and_then(|ip| ip.parse().ok()))
    }

    /// Where a named volume's files are on this host (`local` driver volumes only: other
    /// drivers keep them elsewhere, and cutover refuses to guess). `None` when the volume
    /// does not exist.
    pub async fn volume_path(
        &self,
        name: &str,
    ) -> Result<Option<std::path::PathBuf>, RuntimeError> {
        match self.docker.inspect_volume(name).await {
            Ok(v) if v.driver == "local" && !v.mountpoint.is_empty() => {
                match local_volume_dir(&v.options) {
                    Ok(Some(device)) => Ok(Some(device)),
                    Ok(None) => Ok(Some(std::path::PathBuf::from(v.mountpoint))),
                    Err(why) => Err(RuntimeError::Docker {
                        what: format!("volume `{name}` {why}"),
                        source: bollard::errors::Error::DockerResponseServerError {
                            status_code: 400,
                            message: "unsupported volume options".into(),
                        },
                    }),
                }
            }
            Ok(v) => Err(RuntimeError::Docker {
                what: format!(
                    "volume `{name}` uses the `{}` driver: cutover archives only `local` volumes",
                    v.driver
                ),
                source: bollard::errors::Error::DockerResponseServerError {
                    status_code: 400,
                    message: "unsupported volume driver".into(),
                },
            }),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(RuntimeError::docker(format!(
                "cannot inspect volume `{name}`"
            ))(e)),
        }
    }

    /// Stops container `id` with the grace period it was created with (the `stop_grace` of
    /// the release that made it, kept by the engine as the container's stop timeout), or
    /// `at_least` when that is longer, then SIGKILL. A container is never cut shorter than
    /// the release it belongs to asked, whatever release is being deployed.
    pub async fn stop_graceful(&self, id: &str, at_least: Duration) -> Result<(), RuntimeError> {
        let inspect =
            self.docker
                .inspect_container(id, None)
                .await
                .map_err(RuntimeError::docker(format!(
                    "cannot inspect container {id}"
                )))?;
        if !inspect.state.and_then(|s| s.running).unwrap_or(false) {
            return Ok(());
        }
        // Docker's own default when a container has none.
        let grace = inspect
            .config
            .and_then(|c| c.stop_timeout)
            .and_then(|t| u64::try_from(t).ok())
            .unwrap_or(10);
        self.stop(id, Duration::from_secs(grace).max(at_least))
            .await
    }

    /// Removes every container of the stack and its network; with `volumes`, also the named
    /// volumes its containers mounted and the ones in `declared` (the stack file's, which
    /// may outlive every container), but never those in `keep_volumes` (external ones).
    /// Returns what was removed, for the operator.
    ///
    /// Running containers are stopped first, each with its own grace period, so a database
    /// shuts down cleanly: services in the reverse of `start_order` (dependents before what
    /// they depend on), one service at a time, the containers of one service together; those
    /// of services not named there (the stack file changed, or did not load) last.
    pub async fn down(
        &self,
        stack: &str,
        volumes: bool,
        declared: &[String],
        start_order: &[String],
        keep_volumes: &[String],
    ) -> Result<Vec<String>, RuntimeError> {
        let mut removed = Vec::new();
        let mut volume_names: Vec<String> = if volumes {
            declared.to_vec()
        } else {
            Vec::new()
        };
        let containers = self.containers(stack).await?;
        let rank = |service: &str| {
            start_order
                .iter()
                .position(|s| s == service)
                .map_or(0, |i| start_order.len() - i)
        };
        let mut by_rank: Vec<(usize, Vec<&ContainerInfo>)> = Vec::new();
        for c in containers.iter().filter(|c| c.running()) {
            let r = rank(&c.service);
            match by_rank.iter_mut().find(|(k, _)| *k == r) {
                Some((_, group)) => group.push(c),
                None => by_rank.push((r, vec![c])),
            }
        }
        // Highest rank first: the last service started is the first stopped; unknown (0) last.
        by_rank.sort_by_key(|(rank, _)| std::cmp::Reverse(*rank));
        for (_, group) in by_rank {
            futures_util::future::try_join_all(
                group
                    .iter()
                    .map(|c| self.stop_graceful(&c.id, Duration::ZERO)),
            )
            .await?;
        }
        for c in containers {
            if volumes {
                let inspect = self
                    .docker
                    .inspect_container(&c.id, None)
                    .await
                    .map_err(RuntimeError::docker(format!("cannot inspect {}", c.name)))?;
                for m in inspect.mounts.unwrap_or_default() {
                    if m.typ.map(|t| t.to_string()).as_deref() == Some("volume")
                        && let Some(n) = m.name
                        && !volume_names.contains(&n)
                    {
                        volume_names.push(n);
                    }
                }
            }
            self.remove(&c.id).await?;
            removed.push(format!("container {}", c.name));
        }
        // One-shot jobs a crash left behind.
        let jobs = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(HashMap::from([(
                    "label".to_string(),
                    vec![format!("{}={stack}", label::STACK), label::JOB.to_string()],
                )])),
                ..Default::default()
            }))
            .await
            .map_err(RuntimeError::docker(format!(
                "cannot list the jobs of stack `{stack}`"
            )))?;
        for j in jobs {
            if let Some(id) = j.id {
                self.remove(&id).await?;
                removed.push(format!(
                    "job container {}",
                    j.names
                        .and_then(|n| n.into_iter().next())
                        .map(|n| n.trim_start_matches('/').to_string())
                        .unwrap_or(id)
                ));
            }
        }
        if let Some(name) = self.remove_network(stack).await? {
            removed.push(format!("network {name}"));
        }
        for v in volume_names
            .into_iter()
            .filter(|v| !keep_volumes.contains(v))
        {
            match self
                .docker
                .remove_volume(&v, Some(RemoveVolumeOptions { force: false }))
                .await
            {
                Ok(()) => removed.push(format!("volume {v}")),
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => {}
                Err(e) => {
                    return Err(RuntimeError::docker(format!("cannot remove volume `{v}`"))(
                        e,
                    ));
                }
            }
        }
        Ok(removed)
    }
}

/// How long a removal may take: a forced one kills the process at once, but the engine then
/// deletes the container's writable layer, which is slow on some storage drivers.
const REMOVE_WAIT: Duration = Duration::from_secs(120);
/// Compose's labels on the containers of a project.
const COMPOSE_PROJECT: &str = "com.docker.compose.project";
const COMPOSE_SERVICE: &str = "com.docker.compose.service";

/// How often a running job is looked at.
const JOB_POLL: Duration = Duration::from_millis(200);
/// How often an operation another caller has under way is looked at again.
const IN_PROGRESS_POLL: Duration = Duration::from_millis(100);

/// A 409 for work the engine is already doing on the container ("removal of container … is
/// already in progress"): not a failure, something to wait out.
fn in_progress(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError { status_code: 409, message }
            if message.contains("in progress")
    )
}

/// The outcome of an idempotent call: the status codes in `done` mean the container is
/// already as asked (gone, not running) and count as success.
fn settled(
    result: Result<(), bollard::errors::Error>,
    done: &[u16],
    what: impl FnOnce() -> String,
) -> Result<(), RuntimeError> {
    match result {
        Ok(()) => Ok(()),
        Err(bollard::errors::Error::DockerResponseServerError { status_code, .. })
            if done.contains(&status_code) =>
        {
            Ok(())
        }
        Err(e) => Err(RuntimeError::docker(what())(e)),
    }
}

fn restart_policy(policy: Restart) -> RestartPolicy {
    RestartPolicy {
        name: Some(match policy {
            Restart::No => RestartPolicyNameEnum::NO,
            Restart::Always => RestartPolicyNameEnum::ALWAYS,
            Restart::UnlessStopped => RestartPolicyNameEnum::UNLESS_STOPPED,
            Restart::OnFailure => RestartPolicyNameEnum::ON_FAILURE,
        }),
        maximum_retry_count: None,
    }
}

/// Where the data of a `local` volume is. A volume made with options is mounted at its
/// mountpoint only while a container uses it: a bind volume (`type: none, o: bind,
/// device: DIR`, compose's `driver_opts`) keeps its data in `DIR`, which is what a restore
/// point copies. `Ok(None)`: a plain volume, its data at its mountpoint. Other mounts (nfs,
/// tmpfs, a block device) are not a directory of this host: refused, never copied empty.
pub fn local_volume_dir(
    options: &std::collections::HashMap<String, String>,
) -> Result<Option<std::path::PathBuf>, String> {
    if options.is_empty() {
        return Ok(None);
    }
    let is_bind = options
        .get("o")
        .is_some_and(|o| o.split(',').any(|o| o == "bind" || o == "rbind"));
    match (
        options.get("type").map(String::as_str),
        options.get("device"),
    ) {
        (Some("none") | None, Some(device)) if is_bind => {
            Ok(Some(std::path::PathBuf::from(device)))
        }
        (kind, _) => Err(format!(
            "is a `{}` mount made by the local driver's options; cutover copies only plain volumes and bind volumes (`type: none, o: bind, device: DIR`)",
            kind.unwrap_or("?")
        )),
    }
}

#[cfg(test)]
mod volume_tests {
    use super::local_volume_dir;

    fn opts(kv: &[(&str, &str)]) -> std::collections::HashMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_bind_volume_is_copied_from_its_device_and_other_mounts_are_refused() {
        assert_eq!(local_volume_dir(&opts(&[])), Ok(None));
        assert_eq!(
            local_volume_dir(&opts(&[
                ("type", "none"),
                ("o", "bind"),
                ("device", "/srv/x")
            ])),
            Ok(Some("/srv/x".into()))
        );
        let nfs = local_volume_dir(&opts(&[
            ("type", "nfs"),
            ("o", "addr=10.0.0.1,rw"),
            ("device", ":/export"),
        ]))
        .expect_err("refused");
        assert!(nfs.contains("`nfs` mount"), "{nfs}");
        assert!(local_volume_dir(&opts(&[("type", "tmpfs"), ("device", "tmpfs")])).is_err());
    }
}
