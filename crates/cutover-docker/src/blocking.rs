//! The Docker adapter behind the operations layer's seam: [`ContainerRuntime`], each call
//! made on the async client and waited for on a Tokio runtime the caller owns.

use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use cutover_core::runtime::{
    ContainerInfo, ContainerRuntime, ContainerSpec, ImageInfo, PortHolder, RuntimeFailure,
    ServiceRuntime,
};
use cutover_core::spec::{Command, Health, RestartPolicy};

use crate::{Runtime, RuntimeError};

/// One Docker Engine — or a swarm's manager — driven step by step: what an operation's
/// executor holds.
#[derive(Clone, Copy, Debug)]
pub struct Blocking<'a> {
    pub rt: &'a tokio::runtime::Runtime,
    pub docker: &'a Runtime,
    /// The engine is a swarm manager and the stack's services are Swarm services.
    pub swarm: bool,
}

impl<'a> Blocking<'a> {
    pub fn new(rt: &'a tokio::runtime::Runtime, docker: &'a Runtime) -> Blocking<'a> {
        Blocking {
            rt,
            docker,
            swarm: false,
        }
    }

    /// The stack's services on the swarm `docker` manages (`runtime: swarm`).
    pub fn swarm(rt: &'a tokio::runtime::Runtime, docker: &'a Runtime) -> Blocking<'a> {
        Blocking {
            rt,
            docker,
            swarm: true,
        }
    }

    fn call<T>(
        &self,
        f: impl Future<Output = Result<T, RuntimeError>>,
    ) -> Result<T, RuntimeFailure> {
        self.rt
            .block_on(f)
            .map_err(|e| RuntimeFailure(self.docker.explain(e).to_string()))
    }
}

impl ContainerRuntime for Blocking<'_> {
    fn containers(&self, stack: &str) -> Result<Vec<ContainerInfo>, RuntimeFailure> {
        if self.swarm {
            return self.call(self.docker.swarm_replicas(stack));
        }
        self.call(self.docker.containers(stack))
    }

    fn port_holders(&self) -> Result<Vec<PortHolder>, RuntimeFailure> {
        self.call(self.docker.port_holders())
    }

    fn inspect_image(&self, reference: &str) -> Result<Option<ImageInfo>, RuntimeFailure> {
        self.call(self.docker.inspect_image(reference))
    }

    fn ensure_image(&self, reference: &str) -> Result<ImageInfo, RuntimeFailure> {
        self.call(self.docker.ensure_image(reference))
    }

    fn run(&self, spec: &ContainerSpec<'_>) -> Result<String, RuntimeFailure> {
        self.call(self.docker.run(spec))
    }

    fn run_job(
        &self,
        spec: &ContainerSpec<'_>,
        job: &str,
        command: &Command,
        timeout: Duration,
    ) -> Result<(i64, String), RuntimeFailure> {
        self.call(self.docker.run_job(spec, job, command, timeout))
    }

    fn wait_healthy(
        &self,
        stack: &str,
        service: &str,
        id: &str,
        probe: Option<&Health>,
    ) -> Result<String, RuntimeFailure> {
        self.call(self.docker.wait_healthy(stack, service, id, probe))
    }

    fn start(&self, id: &str) -> Result<(), RuntimeFailure> {
        self.call(self.docker.start(id))
    }

    fn stop(&self, id: &str, at_least: Duration) -> Result<(), RuntimeFailure> {
        self.call(self.docker.stop_graceful(id, at_least))
    }

    fn remove(&self, id: &str) -> Result<(), RuntimeFailure> {
        self.call(self.docker.remove(id))
    }

    fn set_restart(&self, id: &str, policy: RestartPolicy) -> Result<(), RuntimeFailure> {
        self.call(self.docker.set_restart(id, policy))
    }

    fn remove_network(&self, stack: &str) -> Result<Option<String>, RuntimeFailure> {
        self.call(self.docker.remove_network(stack))
    }

    fn foreign_container(&self, name: &str) -> Result<Option<String>, RuntimeFailure> {
        self.call(self.docker.foreign_container(name))
    }

    fn stop_foreign(&self, name: &str, grace: Duration) -> Result<(), RuntimeFailure> {
        self.call(self.docker.stop_foreign(name, grace))
    }

    fn exec(
        &self,
        id: &str,
        argv: &[String],
        timeout: Option<Duration>,
    ) -> Result<(i64, String), RuntimeFailure> {
        let Some(t) = timeout else {
            return self.call(self.docker.exec(id, argv));
        };
        match self
            .rt
            .block_on(async { tokio::time::timeout(t, self.docker.exec(id, argv)).await })
        {
            Ok(done) => done.map_err(|e| RuntimeFailure(self.docker.explain(e).to_string())),
            Err(_) => Err(RuntimeFailure(format!("timed out after {}s", t.as_secs()))),
        }
    }

    fn logs_tail(&self, id: &str, lines: usize) -> Result<String, RuntimeFailure> {
        self.call(self.docker.logs_tail(id, lines))
    }

    fn address_on_network(&self, id: &str, stack: &str) -> Result<Option<IpAddr>, RuntimeFailure> {
        self.call(self.docker.address_on_network(id, stack))
    }

    fn volume_path(&self, name: &str) -> Result<Option<PathBuf>, RuntimeFailure> {
        self.call(self.docker.volume_path(name))
    }

    fn services(&self) -> Option<&dyn ServiceRuntime> {
        self.swarm.then_some(self as &dyn ServiceRuntime)
    }

    fn host_path(&self, id: &str, path: &str) -> Result<Option<PathBuf>, RuntimeFailure> {
        self.call(self.docker.host_path(id, path))
    }
}

impl ServiceRuntime for Blocking<'_> {
    fn deploy(&self, spec: &ContainerSpec<'_>) -> Result<String, RuntimeFailure> {
        self.call(self.docker.deploy_spec(spec))
    }

    fn scale(&self, stack: &str, service: &str, replicas: u64) -> Result<String, RuntimeFailure> {
        self.call(async {
            let c = self
                .docker
                .scale_service(
                    stack,
                    service,
                    replicas,
                    Duration::from_secs(1),
                    Duration::from_secs(300),
                )
                .await?;
            Ok(format!(
                "`{service}` scaled to {replicas} replica(s) in {} ms",
                c.waited.as_millis()
            ))
        })
    }

    fn remove_service(&self, stack: &str, service: &str) -> Result<(), RuntimeFailure> {
        self.call(self.docker.remove_service(stack, service))
    }
}
