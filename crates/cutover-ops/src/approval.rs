//! A protected stack changes only with a second person's approval: an approval step is put
//! first in preflight, before anything is checked or touched.

use cutover_core::plan::{Plan, PlanPhase, PlanStep, StepKind};
use cutover_core::spec::{CustomStep, Phase, StepAction, When};

/// The id of the step [`require_approval`] inserts.
pub const APPROVAL_STEP: &str = "preflight.approval";

/// Puts an approval step first in preflight (creating the phase when the plan has none),
/// once: a plan that has it already is left as it is.
pub fn require_approval(plan: &mut Plan, kind: &str) {
    if plan.steps().any(|s| s.id == APPROVAL_STEP) {
        return;
    }
    let step = PlanStep {
        id: APPROVAL_STEP.into(),
        phase: Phase::Preflight,
        title: format!("a second person approves this {kind} (protected stack)"),
        action: StepKind::Custom {
            step: CustomStep {
                name: "approval".into(),
                action: StepAction::Approval {
                    text: format!(
                        "{kind} of protected stack `{}` to release {}",
                        plan.stack, plan.to_release
                    ),
                },
                timeout: None,
                rerun_safe: true,
                when: When::Always,
            },
        },
        rerun_safe: true,
    };
    match plan
        .procedure
        .iter_mut()
        .find(|p| p.phase == Phase::Preflight)
    {
        Some(p) => p.steps.insert(0, step),
        None => {
            let at = plan
                .procedure
                .iter()
                .position(|p| p.phase != Phase::Plan)
                .unwrap_or(plan.procedure.len());
            plan.procedure.insert(
                at,
                PlanPhase {
                    phase: Phase::Preflight,
                    steps: vec![step],
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{plan_with, step};

    #[test]
    fn the_approval_goes_first_in_preflight() {
        let mut plan = plan_with(vec![
            (
                Phase::Preflight,
                vec![step(
                    "preflight.image.web",
                    StepKind::CheckPorts { ports: vec![] },
                )],
            ),
            (
                Phase::Upgrade,
                vec![step(
                    "upgrade.recreate.web",
                    StepKind::Recreate {
                        service: "web".into(),
                    },
                )],
            ),
        ]);
        require_approval(&mut plan, "apply");
        let ids: Vec<&str> = plan.steps().map(|s| s.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "preflight.approval",
                "preflight.image.web",
                "upgrade.recreate.web"
            ]
        );
        let first = plan.steps().next().expect("a step");
        assert!(
            first.title.contains("approves this apply"),
            "{}",
            first.title
        );
        // Twice is once.
        require_approval(&mut plan, "apply");
        assert_eq!(plan.steps().filter(|s| s.id == APPROVAL_STEP).count(), 1);
    }

    #[test]
    fn a_plan_without_preflight_gets_one_before_its_first_change() {
        let mut plan = plan_with(vec![
            (
                Phase::Plan,
                vec![step("plan.diff", StepKind::CompareWithBefore)],
            ),
            (
                Phase::Upgrade,
                vec![step(
                    "upgrade.recreate.web",
                    StepKind::Recreate {
                        service: "web".into(),
                    },
                )],
            ),
        ]);
        require_approval(&mut plan, "rollback");
        let phases: Vec<Phase> = plan.procedure.iter().map(|p| p.phase).collect();
        assert_eq!(phases, [Phase::Plan, Phase::Preflight, Phase::Upgrade]);
        assert_eq!(plan.procedure[1].steps[0].id, APPROVAL_STEP);
    }
}
