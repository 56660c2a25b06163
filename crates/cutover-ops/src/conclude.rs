//! How an operation ended, recorded: the operation's status, the release's status and the
//! images it ran — and the summary an operator reads.

use cutover_core::engine::Outcome;
use cutover_store::{OperationStatus, ReleaseStatus, Store};

use crate::record::ReleaseImages;

/// What [`conclude`] needs to know about the operation that ran.
#[derive(Clone, Debug)]
pub struct Concluding<'a> {
    pub kind: &'a str,
    pub operation: u64,
    pub release: u64,
    /// The operation made a release of its own (apply, rollback), whose status it sets.
    pub record_release: bool,
    pub from_release: Option<u64>,
}

/// The four ways an operation ends; each has its exit code in the binary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    Succeeded,
    /// A preflight check failed: nothing was changed.
    Refused,
    /// A later step failed and the revert put everything back.
    Reverted,
    /// The revert failed too: an operator must look.
    RevertFailed,
    /// Another process took the lease over: this one stopped, and records nothing.
    Lost,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Concluded {
    pub ending: Ending,
    pub status: OperationStatus,
    /// What happened, in a few lines; names anything that could not be recorded.
    pub summary: String,
}

/// Records how an operation ended (operation and release status, the images it ran). What
/// happened decides the ending; a record that cannot be written is said in the summary, not
/// allowed to replace it.
pub fn conclude(
    store: &Store,
    c: &Concluding<'_>,
    outcome: &Outcome,
    images: &ReleaseImages,
) -> Concluded {
    let release = c.release;
    let kind = c.kind;
    let (status, rel_status, ending, summary) = match outcome {
        Outcome::Succeeded => (
            OperationStatus::Succeeded,
            None,
            Ending::Succeeded,
            format!("{kind} succeeded: release {release} runs"),
        ),
        Outcome::Refused(f) => (
            OperationStatus::Failed,
            Some(ReleaseStatus::Refused),
            Ending::Refused,
            format!(
                "{kind} refused in {}: {}\nnothing was changed",
                f.phase.as_str(),
                f.error
            ),
        ),
        Outcome::Reverted(f) => (
            OperationStatus::Reverted,
            Some(ReleaseStatus::Reverted),
            Ending::Reverted,
            format!(
                "{kind} failed at {}: {}\nreverted: the stack runs what it ran before (release {}); `cutover history --operation {}` shows the journal",
                f.step,
                f.error,
                c.from_release.map_or("none".into(), |r| r.to_string()),
                c.operation
            ),
        ),
        Outcome::RevertFailed {
            failure,
            revert_failures,
        } => (
            OperationStatus::RevertFailed,
            Some(ReleaseStatus::Failed),
            Ending::RevertFailed,
            format!(
                "{kind} failed at {}: {}\nthe revert failed too:\n{}\nan operator must look: `cutover status` shows what runs, `cutover history --operation {}` the journal; once the cause is fixed, `cutover resume` runs the revert again",
                failure.step,
                failure.error,
                revert_failures
                    .iter()
                    .map(|f| format!("  {}: {}", f.step, f.error))
                    .collect::<Vec<_>>()
                    .join("\n"),
                c.operation
            ),
        ),
        Outcome::Lost { step, why } => {
            // The operation belongs to the lease's new holder now: nothing is recorded here.
            return Concluded {
                ending: Ending::Lost,
                status: OperationStatus::Running,
                summary: format!(
                    "{kind} stopped before {step}: {why}; this process changed nothing more, and operation {} is left to the lease's holder (`cutover status` shows it)",
                    c.operation
                ),
            };
        }
    };
    let mut unrecorded = Vec::new();
    if c.record_release
        && let Some(rs) = rel_status
    {
        if let Err(e) = store.set_release_status(release, rs) {
            unrecorded.push(format!("the release status: {e}"));
        }
        if !images.0.is_empty()
            && let Err(e) = store.set_release_images(release, &images.to_json())
        {
            unrecorded.push(format!("the release images: {e}"));
        }
    }
    let error = (ending != Ending::Succeeded).then_some(summary.as_str());
    if let Err(e) = store.finish_operation(c.operation, status, error) {
        unrecorded.push(format!("the end of operation {}: {e}", c.operation));
    }
    let summary = if unrecorded.is_empty() {
        summary
    } else {
        format!(
            "{summary}\ncould not be recorded in the state (is its disk full?): {}",
            unrecorded.join("; ")
        )
    };
    Concluded {
        ending,
        status,
        summary,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{release, store};
    use cutover_core::engine::Failure;
    use cutover_core::spec::Phase;
    use cutover_store::Holder;

    fn fail(phase: Phase) -> Failure {
        Failure {
            step: "preflight.image.web".into(),
            phase,
            error: "image app:v9 is not available".into(),
        }
    }

    fn run(outcome: &Outcome) -> (Concluded, ReleaseStatus, OperationStatus) {
        let (_d, store) = store();
        let rev = release(&store, ReleaseStatus::Pending);
        let op = store
            .begin_operation("apply", Some(rev), &Holder::current())
            .expect("op");
        let c = conclude(
            &store,
            &Concluding {
                kind: "apply",
                operation: op.id,
                release: rev,
                record_release: true,
                from_release: Some(1),
            },
            outcome,
            &ReleaseImages::default(),
        );
        let rel = store.release(rev).expect("read").expect("release");
        let op = store.operation(op.id).expect("read").expect("op");
        (c, rel.status, op.status)
    }

    #[test]
    fn a_preflight_refusal_records_the_release_as_refused_not_failed() {
        let (c, rel, op) = run(&Outcome::Refused(fail(Phase::Preflight)));
        assert_eq!(c.ending, Ending::Refused);
        assert_eq!(rel, ReleaseStatus::Refused);
        assert_eq!(op, OperationStatus::Failed);
        assert!(c.summary.ends_with("nothing was changed"), "{}", c.summary);
    }

    #[test]
    fn each_outcome_has_its_statuses() {
        let (c, rel, op) = run(&Outcome::Reverted(fail(Phase::Upgrade)));
        assert_eq!(
            (c.ending, rel, op),
            (
                Ending::Reverted,
                ReleaseStatus::Reverted,
                OperationStatus::Reverted
            )
        );
        assert!(
            c.summary.contains("runs what it ran before (release 1)"),
            "{}",
            c.summary
        );
        let (c, rel, op) = run(&Outcome::RevertFailed {
            failure: fail(Phase::Upgrade),
            revert_failures: vec![fail(Phase::Revert)],
        });
        assert_eq!(
            (c.ending, rel, op),
            (
                Ending::RevertFailed,
                ReleaseStatus::Failed,
                OperationStatus::RevertFailed
            )
        );
        assert!(
            c.summary.contains("`cutover resume` runs the revert again"),
            "{}",
            c.summary
        );
        // Success leaves the release to the release step (it is deployed there).
        let (c, rel, op) = run(&Outcome::Succeeded);
        assert_eq!(
            (c.ending, rel, op),
            (
                Ending::Succeeded,
                ReleaseStatus::Pending,
                OperationStatus::Succeeded
            )
        );
    }

    #[test]
    fn a_lost_lease_records_nothing_and_leaves_the_operation_to_its_new_holder() {
        let (c, rel, op) = run(&Outcome::Lost {
            step: "upgrade.recreate.web".into(),
            why: "the stack's lease was taken over by ops@box (pid 7)".into(),
        });
        assert_eq!(c.ending, Ending::Lost);
        assert_eq!(
            (rel, op),
            (ReleaseStatus::Pending, OperationStatus::Running)
        );
        assert!(
            c.summary.starts_with(
                "apply stopped before upgrade.recreate.web: the stack's lease was taken over"
            ),
            "{}",
            c.summary
        );
    }

    #[test]
    fn what_cannot_be_recorded_is_said_and_does_not_change_the_ending() {
        let (_d, store) = store();
        let c = conclude(
            &store,
            &Concluding {
                kind: "apply",
                operation: 42,
                release: 9,
                record_release: true,
                from_release: None,
            },
            &Outcome::Reverted(fail(Phase::Upgrade)),
            &ReleaseImages::default(),
        );
        assert_eq!(c.ending, Ending::Reverted);
        assert!(
            c.summary.contains("could not be recorded in the state"),
            "{}",
            c.summary
        );
        assert!(
            c.summary.contains("the end of operation 42"),
            "{}",
            c.summary
        );
    }
}
