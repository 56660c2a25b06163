//! Helpers of this crate's unit tests: a store in a temporary directory, releases, plans.

use cutover_core::plan::{PLAN_SCHEMA, Plan, PlanPhase, PlanStep, StepKind};
use cutover_core::spec::Phase;
use cutover_store::{NewRelease, ReleaseStatus, Store};

pub fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), "shop").expect("store");
    (dir, store)
}

/// Records a release with `status`; returns its revision.
pub fn release(store: &Store, status: ReleaseStatus) -> u64 {
    store
        .insert_release(&NewRelease {
            spec_json: "{}",
            images_json: "{}",
            created_by: "ops",
            host: "box",
            reason: None,
            status,
            source_json: None,
        })
        .expect("release")
        .revision
}

/// A step; [`plan_with`] sets its phase.
pub fn step(id: &str, action: StepKind) -> PlanStep {
    PlanStep {
        id: id.into(),
        phase: Phase::Upgrade,
        title: id.replace('.', " "),
        action,
        rerun_safe: true,
    }
}

pub fn plan_with(phases: Vec<(Phase, Vec<PlanStep>)>) -> Plan {
    Plan {
        schema: PLAN_SCHEMA.into(),
        stack: "shop".into(),
        environment: None,
        from_release: Some(1),
        to_release: 2,
        changes: true,
        services: Vec::new(),
        data: Vec::new(),
        procedure: phases
            .into_iter()
            .map(|(phase, steps)| PlanPhase {
                phase,
                steps: steps
                    .into_iter()
                    .map(|mut s| {
                        s.phase = phase;
                        s
                    })
                    .collect(),
            })
            .collect(),
        revert: Vec::new(),
        settings: Vec::new(),
    }
}
