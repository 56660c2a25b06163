//! Docker Swarm: a stack's service as one replicated Swarm service, through the manager's
//! API. An update is cutover's: the service is pinned to an image ID, Swarm's own
//! `failure_action` is `pause` (never its rollback), and cutover waits until every replica
//! runs that image and stays up — or reports the first task that failed, and puts the
//! previous image back the same way.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::models::{
    EndpointPortConfig, EndpointPortConfigPublishModeEnum, EndpointSpec, HealthConfig, ServiceSpec,
    ServiceSpecMode, ServiceSpecModeReplicated, ServiceSpecUpdateConfig,
    ServiceSpecUpdateConfigFailureActionEnum, ServiceSpecUpdateConfigOrderEnum,
    ServiceUpdateStatusStateEnum, Task, TaskSpec, TaskSpecContainerSpec, TaskSpecPlacement,
    TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum, TaskState,
};
use bollard::query_parameters::{
    InspectServiceOptions, ListNodesOptions, ListTasksOptions, UpdateServiceOptions,
};

use crate::{ContainerInfo, ContainerSpec, Runtime, RuntimeError, Slot, label};

/// How replicas are replaced: the new one first (no gap, twice the resources for a moment;
/// impossible with host-mode ports on a node that already serves them), or the old one first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateOrder {
    StartFirst,
    StopFirst,
}

/// A service as cutover deploys it on a swarm.
#[derive(Clone, Debug)]
pub struct ServiceDeploy<'a> {
    pub stack: &'a str,
    pub service: &'a str,
    /// What every task runs: an image ID (`sha256:…`), so a moved tag changes nothing.
    pub image: &'a str,
    /// The reference as the stack file wrote it, kept in a label.
    pub image_ref: &'a str,
    pub release: u64,
    pub replicas: u64,
    /// Placement constraints, e.g. `node.labels.cutover.node==2`.
    pub constraints: &'a [String],
    /// At most this many replicas on one node.
    pub max_per_node: Option<u64>,
    /// (published, target) ports, published in host mode on the node that runs the task.
    pub ports: &'a [(u16, u16)],
    pub env: &'a [String],
    /// A health check Swarm runs in each task (`CMD …`); a task is running once healthy.
    pub health: Option<&'a [String]>,
    pub health_interval: Duration,
    pub order: UpdateOrder,
    pub parallelism: u64,
    pub delay: Duration,
}

/// One task of a service, as cutover reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskInfo {
    pub id: String,
    /// `service.slot`.
    pub name: String,
    pub node: String,
    /// The node's address, when the swarm knows it.
    pub node_addr: Option<String>,
    pub image: String,
    pub state: String,
    pub desired: String,
    pub error: Option<String>,
    pub container: Option<String>,
}

/// A service that reached what was asked.
#[derive(Clone, Debug)]
pub struct Converged {
    /// The tasks that run now, by slot.
    pub tasks: Vec<TaskInfo>,
    pub waited: Duration,
}

/// The Swarm service name of a stack's service (as `docker stack deploy` names it).
pub fn service_name(stack: &str, service: &str) -> String {
    format!("{stack}_{service}")
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

fn spec_of(d: &ServiceDeploy<'_>) -> ServiceSpec {
    let labels: HashMap<String, String> = [
        (label::STACK, d.stack.to_string()),
        (label::SERVICE, d.service.to_string()),
        (label::RELEASE, d.release.to_string()),
        (label::IMAGE_REF, d.image_ref.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let health = d.health.map(|test| HealthConfig {
        test: Some(
            std::iter::once("CMD".to_string())
                .chain(test.iter().cloned())
                .collect(),
        ),
        interval: Some(nanos(d.health_interval)),
        timeout: Some(nanos(d.health_interval.max(Duration::from_secs(1)))),
        retries: Some(3),
        start_period: Some(0),
        start_interval: None,
    });
    ServiceSpec {
        name: Some(service_name(d.stack, d.service)),
        labels: Some(labels.clone()),
        task_template: Some(TaskSpec {
            container_spec: Some(TaskSpecContainerSpec {
                image: Some(d.image.to_string()),
                labels: Some(labels),
                env: Some(d.env.to_vec()),
                health_check: health,
                ..Default::default()
            }),
            placement: Some(TaskSpecPlacement {
                constraints: Some(d.constraints.to_vec()),
                max_replicas: d.max_per_node.map(|m| i64::try_from(m).unwrap_or(i64::MAX)),
                ..Default::default()
            }),
            restart_policy: Some(TaskSpecRestartPolicy {
                condition: Some(TaskSpecRestartPolicyConditionEnum::ANY),
                ..Default::default()
            }),
            ..Default::default()
        }),
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated {
                replicas: Some(i64::try_from(d.replicas).unwrap_or(i64::MAX)),
            }),
            ..Default::default()
        }),
        update_config: Some(ServiceSpecUpdateConfig {
            parallelism: Some(i64::try_from(d.parallelism.max(1)).unwrap_or(1)),
            delay: Some(nanos(d.delay)),
            // cutover decides what a failure means and reverts itself: Swarm only stops.
            failure_action: Some(ServiceSpecUpdateConfigFailureActionEnum::PAUSE),
            monitor: Some(nanos(
                d.health_interval
                    .saturating_mul(3)
                    .max(Duration::from_secs(2)),
            )),
            max_failure_ratio: Some(0.0),
            order: Some(match d.order {
                UpdateOrder::StartFirst => ServiceSpecUpdateConfigOrderEnum::START_FIRST,
                UpdateOrder::StopFirst => ServiceSpecUpdateConfigOrderEnum::STOP_FIRST,
            }),
        }),
        endpoint_spec: Some(EndpointSpec {
            ports: Some(
                d.ports
                    .iter()
                    .map(|(published, target)| EndpointPortConfig {
                        target_port: Some(i64::from(*target)),
                        published_port: Some(i64::from(*published)),
                        // The ingress routing mesh is not relied on: each node answers for
                        // the task it runs (and the cutover proxy routes to the nodes).
                        publish_mode: Some(EndpointPortConfigPublishModeEnum::HOST),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `sha256:` and the first 12 hex digits of an image ID, as Docker shows it.
fn short(image: &str) -> &str {
    let end = image
        .char_indices()
        .nth("sha256:".len() + 12)
        .map_or(image.len(), |(i, _)| i);
    &image[..end]
}

fn state_str(s: Option<&TaskState>) -> String {
    s.map(|s| s.to_string()).unwrap_or_default()
}

impl Runtime {
    /// Deploys a stack's service (as the operations layer describes it) on the swarm and
    /// says how it went: its replicas, on which nodes, and how long it took to converge.
    pub async fn deploy_spec(&self, spec: &ContainerSpec<'_>) -> Result<String, RuntimeError> {
        let svc = spec.service;
        let w = svc
            .swarm
            .clone()
            .unwrap_or(cutover_core::spec::SwarmService {
                replicas: 1,
                constraints: Vec::new(),
                max_per_node: None,
                order: cutover_core::spec::SwarmOrder::StopFirst,
                parallelism: 1,
                delay: Duration::ZERO,
            });
        let ports: Vec<(u16, u16)> = svc.ports.iter().map(|p| (p.host, p.container)).collect();
        let health: Option<Vec<String>> = svc.health.as_ref().and_then(|h| match &h.probe {
            cutover_core::spec::Probe::Command(c) => Some(c.argv()),
            _ => None,
        });
        let interval = svc
            .health
            .as_ref()
            .map_or(Duration::from_secs(1), |h| h.interval);
        let deadline = svc
            .health
            .as_ref()
            .map_or(Duration::from_secs(30), |h| h.deadline);
        // Each batch may take the health deadline, then the delay; and the scheduler a moment.
        let batches = w.replicas.div_ceil(w.parallelism.max(1)).max(1);
        let limit = (deadline + w.delay).saturating_mul(u32::try_from(batches).unwrap_or(u32::MAX))
            + Duration::from_secs(15);
        let d = ServiceDeploy {
            stack: spec.stack,
            service: spec.service_name,
            image: spec.image_id,
            image_ref: &svc.image,
            release: spec.release,
            replicas: w.replicas,
            constraints: &w.constraints,
            max_per_node: w.max_per_node,
            ports: &ports,
            env: &spec.env,
            health: health.as_deref(),
            health_interval: interval,
            order: match w.order {
                cutover_core::spec::SwarmOrder::StartFirst => UpdateOrder::StartFirst,
                cutover_core::spec::SwarmOrder::StopFirst => UpdateOrder::StopFirst,
            },
            parallelism: w.parallelism,
            delay: w.delay,
        };
        let settle = interval.saturating_mul(2).max(Duration::from_secs(1));
        let c = self.deploy_service(&d, settle, limit).await?;
        let nodes: Vec<String> = c
            .tasks
            .iter()
            .map(|t| t.node_addr.clone().unwrap_or_else(|| t.node.clone()))
            .collect();
        Ok(format!(
            "{} replica(s) run {} on {}; converged in {} ms",
            c.tasks.len(),
            short(spec.image_id),
            nodes.join(", "),
            c.waited.as_millis()
        ))
    }

    /// The replicas (tasks meant to run) of every service of `stack` on the swarm, one
    /// entry each, as the operations layer lists containers.
    pub async fn swarm_replicas(&self, stack: &str) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let filters: HashMap<String, Vec<String>> = [(
            "label".to_string(),
            vec![format!("{}={stack}", label::STACK)],
        )]
        .into();
        let services = self
            .docker
            .list_services(Some(bollard::query_parameters::ListServicesOptions {
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(RuntimeError::docker("cannot list the swarm's services"))
            .map_err(|e| self.explain(e))?;
        let mut out = Vec::new();
        for s in services {
            let Some(spec) = s.spec else { continue };
            let labels = spec.labels.unwrap_or_default();
            if labels.get(label::STACK).map(String::as_str) != Some(stack) {
                continue;
            }
            let service = labels.get(label::SERVICE).cloned().unwrap_or_default();
            let name = spec.name.unwrap_or_default();
            for t in self.tasks(&name).await? {
                if t.desired_state.as_ref().map(|d| d.to_string()).as_deref() != Some("running") {
                    continue;
                }
                let info = task_info(&name, &t, &HashMap::new());
                let cl = t
                    .spec
                    .as_ref()
                    .and_then(|s| s.container_spec.as_ref())
                    .and_then(|c| c.labels.clone())
                    .unwrap_or_default();
                out.push(ContainerInfo {
                    id: info.id,
                    name: info.name,
                    service: service.clone(),
                    release: cl
                        .get(label::RELEASE)
                        .and_then(|r| r.parse().ok())
                        .unwrap_or(0),
                    slot: Slot::Single,
                    image_id: info.image,
                    image_ref: cl.get(label::IMAGE_REF).cloned().unwrap_or_default(),
                    state: info.state,
                    health: None,
                    published: Vec::new(),
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The engine is a swarm manager (cutover deploys services through it), or why not.
    pub async fn swarm_manager(&self) -> Result<(), RuntimeError> {
        let info = self
            .docker
            .info()
            .await
            .map_err(RuntimeError::docker("cannot read the engine's info"))
            .map_err(|e| self.explain(e))?;
        let swarm = info.swarm.unwrap_or_default();
        let state = swarm
            .local_node_state
            .map(|s| s.to_string())
            .unwrap_or_default();
        if state != "active" {
            return Err(RuntimeError::Swarm(format!(
                "the engine at {} is in no swarm (its swarm state is `{state}`): `runtime: swarm` \
                 needs a manager (docker swarm init)",
                self.socket
            )));
        }
        if swarm.control_available != Some(true) {
            return Err(RuntimeError::Swarm(format!(
                "the engine at {} is a swarm worker: `runtime: swarm` talks to a manager \
                 (DOCKER_HOST picks one)",
                self.socket
            )));
        }
        Ok(())
    }

    /// Creates or updates the service to run `d.image` and waits until it has converged:
    /// every replica runs that image and stays up for `settle`. Fails at the first task of
    /// the new image that fails, or when Swarm pauses the update, or after `limit`.
    pub async fn deploy_service(
        &self,
        d: &ServiceDeploy<'_>,
        settle: Duration,
        limit: Duration,
    ) -> Result<Converged, RuntimeError> {
        let name = service_name(d.stack, d.service);
        let spec = spec_of(d);
        let started = Instant::now();
        let existing = self.inspect_service(&name).await?;
        let since = match existing {
            Some((version, _)) => self.update_spec(&name, version, spec, "update").await?,
            None => {
                self.docker
                    .create_service(spec, None)
                    .await
                    .map_err(RuntimeError::docker(format!(
                        "cannot create service {name}"
                    )))
                    .map_err(|e| self.explain(e))?;
                Vec::new()
            }
        };
        self.converge(&name, d.image, d.replicas, &since, settle, started, limit)
            .await
    }

    /// Scales the service to `replicas` (0 stops every task: a quiesce) and waits.
    pub async fn scale_service(
        &self,
        stack: &str,
        service: &str,
        replicas: u64,
        settle: Duration,
        limit: Duration,
    ) -> Result<Converged, RuntimeError> {
        let name = service_name(stack, service);
        let started = Instant::now();
        let Some((version, mut spec)) = self.inspect_service(&name).await? else {
            return Err(RuntimeError::Swarm(format!(
                "service {name} is not on the swarm"
            )));
        };
        let image = spec
            .task_template
            .as_ref()
            .and_then(|t| t.container_spec.as_ref())
            .and_then(|c| c.image.clone())
            .unwrap_or_default();
        spec.mode = Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated {
                replicas: Some(i64::try_from(replicas).unwrap_or(i64::MAX)),
            }),
            ..Default::default()
        });
        let before = self.update_spec(&name, version, spec, "scale").await?;
        self.converge(&name, &image, replicas, &before, settle, started, limit)
            .await
    }

    /// Removes the service (its tasks stop).
    pub async fn remove_service(&self, stack: &str, service: &str) -> Result<(), RuntimeError> {
        let name = service_name(stack, service);
        match self.docker.delete_service(&name).await {
            Ok(()) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => Err(self.explain(RuntimeError::Docker {
                what: format!("cannot remove service {name}"),
                source: e,
            })),
        }
    }

    /// The tasks of a stack's service, newest first per slot.
    pub async fn service_tasks(
        &self,
        stack: &str,
        service: &str,
    ) -> Result<Vec<TaskInfo>, RuntimeError> {
        let name = service_name(stack, service);
        let nodes = self.node_addresses().await?;
        Ok(self
            .tasks(&name)
            .await?
            .iter()
            .map(|t| task_info(&name, t, &nodes))
            .collect())
    }

    /// Replaces the spec of service `name` (at `version`, so a concurrent change is refused
    /// by the manager); returns the tasks it had before, which the wait tells apart.
    async fn update_spec(
        &self,
        name: &str,
        version: u64,
        spec: ServiceSpec,
        verb: &str,
    ) -> Result<Vec<String>, RuntimeError> {
        let before = self.task_ids(name).await?;
        self.docker
            .update_service(
                name,
                spec,
                UpdateServiceOptions {
                    version: i32::try_from(version).unwrap_or(i32::MAX),
                    ..Default::default()
                },
                None,
            )
            .await
            .map_err(RuntimeError::docker(format!(
                "cannot {verb} service {name}"
            )))
            .map_err(|e| self.explain(e))?;
        Ok(before)
    }

    async fn inspect_service(
        &self,
        name: &str,
    ) -> Result<Option<(u64, ServiceSpec)>, RuntimeError> {
        match self
            .docker
            .inspect_service(name, None::<InspectServiceOptions>)
            .await
        {
            Ok(s) => Ok(Some((
                s.version.and_then(|v| v.index).unwrap_or(0),
                s.spec.unwrap_or_default(),
            ))),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(self.explain(RuntimeError::Docker {
                what: format!("cannot inspect service {name}"),
                source: e,
            })),
        }
    }

    async fn tasks(&self, name: &str) -> Result<Vec<Task>, RuntimeError> {
        let filters: HashMap<String, Vec<String>> =
            [("service".to_string(), vec![name.to_string()])].into();
        self.docker
            .list_tasks(Some(ListTasksOptions {
                filters: Some(filters),
            }))
            .await
            .map_err(RuntimeError::docker(format!(
                "cannot list the tasks of {name}"
            )))
            .map_err(|e| self.explain(e))
    }

    async fn task_ids(&self, name: &str) -> Result<Vec<String>, RuntimeError> {
        Ok(self
            .tasks(name)
            .await?
            .into_iter()
            .filter_map(|t| t.id)
            .collect())
    }

    async fn node_addresses(&self) -> Result<HashMap<String, String>, RuntimeError> {
        let nodes = self
            .docker
            .list_nodes(None::<ListNodesOptions>)
            .await
            .map_err(RuntimeError::docker("cannot list the swarm's nodes"))
            .map_err(|e| self.explain(e))?;
        Ok(nodes
            .into_iter()
            .filter_map(|n| Some((n.id?, n.status?.addr?)))
            .collect())
    }

    /// Waits until `replicas` tasks run `image` and no other task is meant to run, held for
    /// `settle`. A task of this rollout (not among `before`) that failed ends the wait.
    #[allow(clippy::too_many_arguments)]
    async fn converge(
        &self,
        name: &str,
        image: &str,
        replicas: u64,
        before: &[String],
        settle: Duration,
        started: Instant,
        limit: Duration,
    ) -> Result<Converged, RuntimeError> {
        let nodes = self.node_addresses().await?;
        let mut held_since: Option<Instant> = None;
        loop {
            let tasks = self.tasks(name).await?;
            let infos: Vec<TaskInfo> = tasks.iter().map(|t| task_info(name, t, &nodes)).collect();
            // A task of this rollout that failed: the new image does not run.
            if let Some(t) = infos.iter().find(|t| {
                !before.contains(&t.id)
                    && t.image == image
                    && matches!(t.state.as_str(), "failed" | "rejected")
            }) {
                return Err(RuntimeError::Swarm(format!(
                    "{} on node {} {}: {}",
                    t.name,
                    t.node_addr.as_deref().unwrap_or(&t.node),
                    t.state,
                    t.error.as_deref().unwrap_or("no reason given")
                )));
            }
            if let Some((message, state)) = self.update_state(name).await?
                && matches!(
                    state,
                    ServiceUpdateStatusStateEnum::PAUSED
                        | ServiceUpdateStatusStateEnum::ROLLBACK_STARTED
                        | ServiceUpdateStatusStateEnum::ROLLBACK_PAUSED
                        | ServiceUpdateStatusStateEnum::ROLLBACK_COMPLETED
                )
            {
                return Err(RuntimeError::Swarm(format!(
                    "Swarm stopped the update of {name} ({state}): {message}"
                )));
            }
            let meant: Vec<&TaskInfo> = infos.iter().filter(|t| t.desired == "running").collect();
            let running_new = meant
                .iter()
                .filter(|t| t.image == image && t.state == "running")
                .count() as u64;
            let others = meant.iter().filter(|t| t.image != image).count();
            // Tasks being stopped still count until they are gone.
            let stopping = infos
                .iter()
                .filter(|t| t.desired != "running" && t.state == "running")
                .count();
            let done = running_new == replicas && others == 0 && stopping == 0;
            match (done, held_since) {
                (true, None) => held_since = Some(Instant::now()),
                (true, Some(at)) if at.elapsed() >= settle => {
                    let mut tasks: Vec<TaskInfo> = meant.into_iter().cloned().collect();
                    tasks.sort_by(|a, b| a.name.cmp(&b.name));
                    return Ok(Converged {
                        tasks,
                        waited: started.elapsed(),
                    });
                }
                (true, Some(_)) => {}
                (false, _) => held_since = None,
            }
            if started.elapsed() > limit {
                return Err(RuntimeError::Swarm(format!(
                    "{name} did not converge within {}s: {running_new} of {replicas} replica(s) run {}, {others} other task(s) still meant to run",
                    limit.as_secs(),
                    short(image)
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn update_state(
        &self,
        name: &str,
    ) -> Result<Option<(String, ServiceUpdateStatusStateEnum)>, RuntimeError> {
        let s = self
            .docker
            .inspect_service(name, None::<InspectServiceOptions>)
            .await
            .map_err(RuntimeError::docker(format!(
                "cannot inspect service {name}"
            )))
            .map_err(|e| self.explain(e))?;
        Ok(s.update_status
            .and_then(|u| u.state.map(|st| (u.message.unwrap_or_default(), st))))
    }
}

fn task_info(service: &str, t: &Task, nodes: &HashMap<String, String>) -> TaskInfo {
    let status = t.status.clone().unwrap_or_default();
    let node = t.node_id.clone().unwrap_or_default();
    TaskInfo {
        id: t.id.clone().unwrap_or_default(),
        name: format!("{service}.{}", t.slot.unwrap_or(0)),
        node_addr: nodes.get(&node).cloned(),
        node,
        image: t
            .spec
            .as_ref()
            .and_then(|s| s.container_spec.as_ref())
            .and_then(|c| c.image.clone())
            .unwrap_or_default(),
        state: state_str(status.state.as_ref()),
        desired: state_str(t.desired_state.as_ref()),
        error: status.err.filter(|e| !e.is_empty()),
        container: status.container_status.and_then(|c| c.container_id),
    }
}
