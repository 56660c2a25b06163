//! Finishing an operation that was interrupted: which one, and from where.
//!
//! Only the newest unfinished operation is ever acted on, and only while nothing ran after
//! it: an operation that later operations overtook (state written before operations were
//! kept from overlapping) would, finished now, overwrite what they did — it can only be
//! closed without acting (`abort`).

use cutover_core::engine::{self, Failure, Journaled, Resume};
use cutover_core::plan::Plan;
use cutover_core::spec::Phase;
use cutover_store::{Operation, OperationStatus, StepStatus, Store, StoreError};

/// What `resume` and `abort` find to act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pick {
    /// No operation is unfinished, and the last one's revert did not fail.
    Nothing,
    /// The newest unfinished operation (its process died), nothing after it.
    Interrupted(Operation),
    /// The newest operation ended with a failed revert: `resume` runs the revert again.
    RevertFailed(Operation),
    /// The newest unfinished operation, and the newest operation, which ran after it.
    Overtaken { op: Operation, by: Operation },
}

/// What `resume` or `abort` acts on. Call it while holding the stack's lease.
pub fn pick(store: &Store) -> Result<Pick, StoreError> {
    let newest = store.operations(1)?.into_iter().next();
    match store.unfinished_operations()?.into_iter().next() {
        Some(op) => Ok(match newest {
            Some(by) if by.id > op.id => Pick::Overtaken { op, by },
            _ => Pick::Interrupted(op),
        }),
        None => Ok(match newest {
            Some(op) if op.status == OperationStatus::RevertFailed => Pick::RevertFailed(op),
            _ => Pick::Nothing,
        }),
    }
}

/// The journal of operation `op`, as the engine reads it.
pub fn journaled(store: &Store, op: u64) -> Result<Vec<Journaled>, StoreError> {
    Ok(store
        .journal(op)?
        .into_iter()
        .map(|r| Journaled {
            finished_ok: match r.status {
                StepStatus::Succeeded => Some(true),
                StepStatus::Failed => Some(false),
                _ => None,
            },
            error: (r.status == StepStatus::Failed).then(|| r.output_tail.clone()),
            step_id: r.step_id,
        })
        .collect())
}

/// Where to go on: after the last finished step (`resume`), or into the revert (`abort`,
/// naming who asked; the failure is the last step the journal reached).
pub fn decide(plan: &Plan, journaled: &[Journaled], abort_by: Option<&str>) -> Resume {
    let Some(by) = abort_by else {
        return engine::resume_point(plan, journaled);
    };
    let (step, phase) = journaled
        .iter()
        .rev()
        .find_map(|j| plan.steps().find(|s| s.id == j.step_id))
        .map_or((String::from("abort"), Phase::Preflight), |s| {
            (s.id.clone(), s.phase)
        });
    Resume::Revert(Failure {
        step,
        phase,
        error: format!("aborted by {by}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{plan_with, step, store};
    use cutover_core::plan::StepKind;
    use cutover_store::Holder;

    fn finished(store: &Store, kind: &str, status: OperationStatus) -> Operation {
        let op = store
            .begin_operation(kind, None, &Holder::current())
            .expect("op");
        store.finish_operation(op.id, status, None).expect("finish");
        op
    }

    #[test]
    fn the_newest_unfinished_operation_is_picked_when_nothing_ran_after_it() {
        let (_d, store) = store();
        finished(&store, "apply", OperationStatus::Succeeded);
        let op = store
            .begin_operation("apply", None, &Holder::current())
            .expect("op");
        assert_eq!(pick(&store).expect("pick"), Pick::Interrupted(op));
    }

    #[test]
    fn an_unfinished_operation_overtaken_by_a_later_one_is_not_resumed() {
        let (_d, store) = store();
        let old = store
            .begin_operation("apply", None, &Holder::current())
            .expect("op");
        let later = finished(&store, "rollback", OperationStatus::Succeeded);
        match pick(&store).expect("pick") {
            Pick::Overtaken { op, by } => {
                assert_eq!(op.id, old.id);
                assert_eq!(by.id, later.id);
            }
            other => panic!("{other:?}"),
        }
        // Several unfinished (older state): the newest is the one acted on.
        let newer = store
            .begin_operation("apply", None, &Holder::current())
            .expect("op");
        match pick(&store).expect("pick") {
            Pick::Interrupted(op) => assert_eq!(op.id, newer.id),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_failed_revert_is_picked_only_when_it_is_the_newest() {
        let (_d, store) = store();
        let op = finished(&store, "apply", OperationStatus::RevertFailed);
        assert!(matches!(pick(&store).expect("pick"), Pick::RevertFailed(o) if o.id == op.id));
        finished(&store, "apply", OperationStatus::Succeeded);
        assert_eq!(pick(&store).expect("pick"), Pick::Nothing);
    }

    #[test]
    fn resume_goes_on_after_the_last_finished_step_and_abort_reverts_from_it() {
        let plan = plan_with(vec![
            (
                Phase::Preflight,
                vec![step(
                    "preflight.ports",
                    StepKind::CheckPorts { ports: vec![] },
                )],
            ),
            (
                Phase::Upgrade,
                vec![
                    step(
                        "upgrade.recreate.web",
                        StepKind::Recreate {
                            service: "web".into(),
                        },
                    ),
                    step(
                        "upgrade.recreate.worker",
                        StepKind::Recreate {
                            service: "worker".into(),
                        },
                    ),
                ],
            ),
        ]);
        let j = |id: &str, ok: Option<bool>| Journaled {
            step_id: id.into(),
            finished_ok: ok,
            error: None,
        };
        let journal = [
            j("preflight.ports", Some(true)),
            j("upgrade.recreate.web", Some(true)),
            j("upgrade.recreate.worker", None),
        ];
        match decide(&plan, &journal, None) {
            Resume::Continue { done } => {
                assert_eq!(done, ["preflight.ports", "upgrade.recreate.web"]);
            }
            other => panic!("{other:?}"),
        }
        match decide(&plan, &journal, Some("ops@host")) {
            Resume::Revert(f) => {
                assert_eq!(f.step, "upgrade.recreate.worker");
                assert_eq!(f.phase, Phase::Upgrade);
                assert_eq!(f.error, "aborted by ops@host");
            }
            other => panic!("{other:?}"),
        }
    }
}
