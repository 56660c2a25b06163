//! The container steps on a cluster engine (`runtime: swarm`): a service is one replicated
//! service, deployed, scaled and put back whole through [`ServiceRuntime`]; its replicas are
//! what [`ContainerRuntime::containers`](cutover_core::runtime::ContainerRuntime::containers)
//! lists. The plan is the same as on one engine; only what each step does differs.

use std::collections::BTreeMap;
use std::time::Instant;

use cutover_core::engine::StepError;
use cutover_core::plan::{PlanStep, StepKind};
use cutover_core::runtime::{ContainerInfo, ServiceRuntime, Slot};
use cutover_core::spec::Phase;

use super::{Containers, fail, short};

impl Containers<'_> {
    /// Does `step` on the cluster engine when it is a container step that differs there;
    /// `None` for the steps that are the same (images, maintenance) or belong elsewhere.
    pub(super) fn run_on_services(
        &mut self,
        services: &dyn ServiceRuntime,
        step: &PlanStep,
    ) -> Option<Result<String, StepError>> {
        let revert = step.phase == Phase::Revert;
        Some(match &step.action {
            StepKind::Create { service } | StepKind::Recreate { service } => {
                self.deploy_new(services, service)
            }
            StepKind::BlueGreen { service } => Err(StepError::new(format!(
                "`{service}`: blue-green is for one engine; on a swarm the service's update order says how replicas are replaced"
            ))),
            // The revert's own steps put each service back whole (`StartPrevious`).
            StepKind::Stop { service } | StepKind::Remove { service } if revert => Ok(format!(
                "`{service}` is put back whole by the revert's next step"
            )),
            StepKind::Stop { service } | StepKind::Remove { service } => services
                .scale(&self.desired.name, service, 0)
                .map_err(fail)
                .map(|s| format!("{s} (kept for a revert)")),
            StepKind::Start { service } => {
                let replicas = self.replicas(service);
                services
                    .scale(&self.desired.name, service, replicas)
                    .map_err(fail)
            }
            StepKind::StartPrevious { service } => self.put_back(services, service),
            StepKind::CheckHealthy { service } => self.replicas_run(service),
            StepKind::CheckPorts { .. } => Ok(
                "host ports are each node's: Swarm places a replica only where its ports are free"
                    .into(),
            ),
            _ => return None,
        })
    }

    fn replicas(&self, service: &str) -> u64 {
        self.desired
            .services
            .get(service)
            .or_else(|| self.previous_service(service))
            .and_then(|s| s.swarm.as_ref())
            .map_or(1, |w| w.replicas)
    }

    /// This release's image on every replica of `name`.
    fn deploy_new(
        &mut self,
        services: &dyn ServiceRuntime,
        name: &str,
    ) -> Result<String, StepError> {
        let svc = self.service(name)?.clone();
        let image = self.image_for(name)?;
        let spec = self.spec_of(name, &svc, self.release, Slot::Single, &image.id)?;
        let started = Instant::now();
        let said = services.deploy(&spec).map_err(fail)?;
        self.record_start(name, started);
        Ok(said)
    }

    /// Revert: the service as it ran before the operation — the previous release's spec on
    /// the image ID its replicas ran — or gone when it did not run before.
    fn put_back(&mut self, services: &dyn ServiceRuntime, name: &str) -> Result<String, StepError> {
        let before = self.before_of(name);
        let Some(first) = before.first() else {
            services
                .remove_service(&self.desired.name, name)
                .map_err(fail)?;
            return Ok(format!(
                "`{name}` did not run before the operation: removed"
            ));
        };
        let svc = self
            .previous_service(name)
            .or_else(|| self.desired.services.get(name))
            .cloned()
            .ok_or_else(|| StepError::new(format!("service `{name}` is in neither release")))?;
        let spec = self.spec_of(name, &svc, first.release, Slot::Single, &first.image_id)?;
        let said = services.deploy(&spec).map_err(fail)?;
        Ok(format!("{} again: {said}", short(&first.image_id)))
    }

    /// Preflight: the live service has replicas running.
    fn replicas_run(&self, service: &str) -> Result<String, StepError> {
        let running = self
            .containers(service)?
            .into_iter()
            .filter(ContainerInfo::running)
            .count();
        if running == 0 {
            return Err(StepError::new(format!(
                "`{service}` has no replica running: nothing was changed; `cutover status` shows its tasks"
            )));
        }
        Ok(format!("{running} replica(s) of `{service}` run"))
    }

    /// Revert: each service runs, on as many replicas, the image IDs it ran before. Replicas
    /// are replaced on a swarm, so they are compared by service, not one by one.
    pub(super) fn compare_services(&self, more: Vec<String>) -> Result<String, StepError> {
        let now = self.runtime.containers(&self.desired.name).map_err(fail)?;
        let count = |list: &[ContainerInfo]| {
            let mut m: BTreeMap<(String, String), usize> = BTreeMap::new();
            for c in list.iter().filter(|c| c.running()) {
                *m.entry((c.service.clone(), c.image_id.clone()))
                    .or_default() += 1;
            }
            m
        };
        let (was, is) = (count(&self.before), count(&now));
        let mut diffs: Vec<String> = Vec::new();
        for ((service, image), n) in &was {
            let m = is
                .get(&(service.clone(), image.clone()))
                .copied()
                .unwrap_or(0);
            if m != *n {
                diffs.push(format!(
                    "`{service}` runs {m} replica(s) of {} (was {n})",
                    short(image)
                ));
            }
        }
        for ((service, image), n) in &is {
            if !was.contains_key(&(service.clone(), image.clone())) {
                diffs.push(format!(
                    "`{service}` runs {n} replica(s) of {}, which did not run before",
                    short(image)
                ));
            }
        }
        diffs.extend(more);
        if diffs.is_empty() {
            Ok(format!(
                "{} replica(s) run the same image IDs as before the operation",
                was.values().sum::<usize>()
            ))
        } else {
            Err(StepError::new(format!(
                "the stack differs from before the operation: {}",
                diffs.join("; ")
            )))
        }
    }
}
