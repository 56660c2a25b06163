//! The engine: runs a plan's steps in order, journals each one before and after it runs, and
//! reverts when a step fails after anything was changed.
//!
//! The engine knows steps and the journal, not Docker: an [`Executor`] does each step (the
//! runtime, data and traffic adapters stand behind it), a [`Journal`] records it durably.
//! Every step may run twice (after a crash, `resume` starts again at the first step the
//! journal does not show as finished), so executors must make each step idempotent.

use std::fmt;

use crate::plan::{Plan, PlanStep};
use crate::spec::{Phase, Redactor};

/// Does one step. Implementations make every step idempotent: running a step that already
/// took effect must succeed without doing it twice.
pub trait Executor {
    /// Runs the step; `Ok` carries the tail of its output for the journal.
    fn run(&mut self, step: &PlanStep) -> Result<String, StepError>;
}

/// An executor whose every output and error passes through a [`Redactor`] before the engine
/// journals or reports it: a step that quotes a container's logs or a command's output
/// cannot carry a secret into the journal, the store or the terminal.
pub struct Redacting<'a, E> {
    pub inner: &'a mut E,
    pub redactor: &'a Redactor,
}

impl<E: Executor> Executor for Redacting<'_, E> {
    fn run(&mut self, step: &PlanStep) -> Result<String, StepError> {
        let scrub = |s: String| match self.redactor.redact(&s) {
            std::borrow::Cow::Borrowed(_) => s,
            std::borrow::Cow::Owned(o) => o,
        };
        match self.inner.run(step) {
            Ok(out) => Ok(scrub(out)),
            Err(e) => Err(StepError {
                message: scrub(e.message),
                output: scrub(e.output),
            }),
        }
    }
}

/// Records steps durably. `started` must be on disk before the step runs.
pub trait Journal {
    /// Who asked to stop the operation (`cutover abort`), checked before each step of the
    /// procedure: the emergency stop ends the procedure at a step boundary and reverts.
    fn abort_requested(&mut self) -> Option<String> {
        None
    }

    /// Why this process may no longer act for the operation (another took its lease over),
    /// checked before every step, of the procedure and of the revert: the engine then stops
    /// at once, neither running nor reverting anything more, and leaves the operation
    /// unfinished to whoever holds the lease now.
    fn lost(&mut self) -> Option<String> {
        None
    }

    fn started(&mut self, step: &PlanStep) -> Result<u64, JournalError>;
    fn finished(
        &mut self,
        seq: u64,
        step: &PlanStep,
        result: &StepResult,
    ) -> Result<(), JournalError>;
}

/// Why a step failed, in words an operator can act on (the service, the last check output,
/// the log lines).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepError {
    pub message: String,
    /// The tail of the step's output, for the journal.
    pub output: String,
}

impl StepError {
    pub fn new(message: impl Into<String>) -> Self {
        StepError {
            message: message.into(),
            output: String::new(),
        }
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The journal could not be written: the engine stops, because a step it cannot record is a
/// step it could not recover from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalError(pub String);

/// How a step ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepResult {
    Succeeded { output: String },
    Failed { error: StepError },
}

/// A step that failed, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub step: String,
    pub phase: Phase,
    pub error: String,
}

/// How an operation ended. Each maps to an exit code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every step succeeded.
    Succeeded,
    /// A step of the plan or preflight phase failed: nothing had been changed, so there is
    /// nothing to revert.
    Refused(Failure),
    /// A step failed after quiesce; the revert ran and every revert step succeeded.
    Reverted(Failure),
    /// A step failed and so did the revert: an operator must look. Holds both.
    RevertFailed {
        failure: Failure,
        revert_failures: Vec<Failure>,
    },
    /// This process lost the right to act ([`Journal::lost`]) before `step`: nothing more
    /// ran, the operation is left unfinished for the lease's new holder.
    Lost { step: String, why: String },
}

fn touches_nothing(phase: Phase) -> bool {
    matches!(phase, Phase::Plan | Phase::Preflight)
}

/// Where an interrupted operation stands, read from its journal by `resume`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resume {
    /// Nothing ran yet: run the whole plan.
    Start,
    /// These procedure steps finished successfully; continue after them (a step that
    /// started but did not finish runs again: steps are idempotent).
    Continue { done: Vec<String> },
    /// A step failed, or the revert had begun, or continuing is not safe (the interrupted
    /// step may not run twice): run the revert, all of it (its steps are idempotent).
    Revert(Failure),
}

/// One step as the journal of an interrupted operation shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Journaled {
    pub step_id: String,
    /// `None`: started, never finished (the process died while it ran). `Some(ok)`.
    pub finished_ok: Option<bool>,
    /// Why it failed, when it did.
    pub error: Option<String>,
}

/// Where an operation interrupted with this journal must go on (see [`Resume`]).
pub fn resume_point(plan: &Plan, journal: &[Journaled]) -> Resume {
    let step = |id: &str| plan.steps().find(|s| s.id == id);
    let failure_of = |id: &str, error: String| Failure {
        step: id.to_string(),
        phase: step(id).map_or(crate::spec::Phase::Upgrade, |s| s.phase),
        error,
    };
    let in_revert = |id: &str| plan.revert.iter().any(|s| s.id == id);
    // The procedure step that failed (or was interrupted) first.
    let failed = journal
        .iter()
        .find(|j| !in_revert(&j.step_id) && j.finished_ok == Some(false));
    if journal.iter().any(|j| in_revert(&j.step_id)) {
        let f = failed.map_or_else(
            || failure_of("revert", "the revert was interrupted".into()),
            |j| failure_of(&j.step_id, j.error.clone().unwrap_or_default()),
        );
        return Resume::Revert(f);
    }
    if let Some(j) = failed {
        return Resume::Revert(failure_of(
            &j.step_id,
            j.error.clone().unwrap_or_else(|| "failed".into()),
        ));
    }
    if let Some(j) = journal.iter().find(|j| j.finished_ok.is_none())
        && let Some(s) = step(&j.step_id)
        && !s.rerun_safe
    {
        return Resume::Revert(failure_of(
            &j.step_id,
            format!(
                "interrupted during `{}`, which may not run twice: reverting instead",
                s.title
            ),
        ));
    }
    let done: Vec<String> = journal
        .iter()
        .filter(|j| j.finished_ok == Some(true))
        .map(|j| j.step_id.clone())
        .collect();
    if done.is_empty() && journal.is_empty() {
        Resume::Start
    } else {
        Resume::Continue { done }
    }
}

/// Runs `plan`: its procedure, then, on a failure after preflight, its revert. Revert steps
/// all run even when one fails (each is independent and idempotent); every failure is kept.
pub fn execute(plan: &Plan, exec: &mut dyn Executor, journal: &mut dyn Journal) -> Outcome {
    resume(plan, Resume::Start, exec, journal)
}

/// Runs what is left of `plan` from `at` (see [`Resume`]).
pub fn resume(
    plan: &Plan,
    at: Resume,
    exec: &mut dyn Executor,
    journal: &mut dyn Journal,
) -> Outcome {
    let failure = match at {
        Resume::Revert(failure) => Some(failure),
        Resume::Start | Resume::Continue { .. } => {
            let done = match &at {
                Resume::Continue { done } => done.clone(),
                _ => Vec::new(),
            };
            let mut failure = None;
            for step in plan.steps().filter(|s| !done.contains(&s.id)) {
                if let Some(why) = journal.lost() {
                    return Outcome::Lost {
                        step: step.id.clone(),
                        why,
                    };
                }
                if let Some(who) = journal.abort_requested() {
                    failure = Some(Failure {
                        step: step.id.clone(),
                        phase: step.phase,
                        error: format!("aborted by {who} before this step"),
                    });
                    break;
                }
                if let Err(error) = run_one(step, exec, journal) {
                    failure = Some(Failure {
                        step: step.id.clone(),
                        phase: step.phase,
                        error,
                    });
                    break;
                }
            }
            failure
        }
    };
    let Some(failure) = failure else {
        return Outcome::Succeeded;
    };
    if touches_nothing(failure.phase) {
        return Outcome::Refused(failure);
    }
    let mut revert_failures = Vec::new();
    for step in &plan.revert {
        if let Some(why) = journal.lost() {
            return Outcome::Lost {
                step: step.id.clone(),
                why,
            };
        }
        if let Err(error) = run_revert_step(step, exec, journal) {
            revert_failures.push(Failure {
                step: step.id.clone(),
                phase: step.phase,
                error,
            });
        }
    }
    if revert_failures.is_empty() {
        Outcome::Reverted(failure)
    } else {
        Outcome::RevertFailed {
            failure,
            revert_failures,
        }
    }
}

/// A revert step runs even when the journal cannot record it (a full disk must not leave
/// the stack half-way): it then counts as failed, saying why, so the outcome tells an
/// operator to look.
fn run_revert_step(
    step: &PlanStep,
    exec: &mut dyn Executor,
    journal: &mut dyn Journal,
) -> Result<(), String> {
    let seq = match journal.started(step) {
        Ok(seq) => seq,
        Err(e) => {
            return Err(match exec.run(step) {
                Ok(_) => format!(
                    "done, but the journal could not record it ({}): the state does not show it",
                    e.0
                ),
                Err(error) => format!(
                    "{} (and the journal could not record the step: {})",
                    error.message, e.0
                ),
            });
        }
    };
    let result = match exec.run(step) {
        Ok(output) => StepResult::Succeeded { output },
        Err(error) => StepResult::Failed { error },
    };
    let recorded = journal.finished(seq, step, &result);
    match (result, recorded) {
        (StepResult::Succeeded { .. }, Ok(())) => Ok(()),
        (StepResult::Succeeded { .. }, Err(e)) => Err(format!(
            "done, but the journal could not record its end ({})",
            e.0
        )),
        (StepResult::Failed { error }, _) => Err(error.message),
    }
}

fn run_one(
    step: &PlanStep,
    exec: &mut dyn Executor,
    journal: &mut dyn Journal,
) -> Result<(), String> {
    let seq = journal
        .started(step)
        .map_err(|e| format!("cannot journal step `{}`: {}", step.id, e.0))?;
    let result = match exec.run(step) {
        Ok(output) => StepResult::Succeeded { output },
        Err(error) => StepResult::Failed { error },
    };
    journal
        .finished(seq, step, &result)
        .map_err(|e| format!("cannot journal the end of step `{}`: {}", step.id, e.0))?;
    match result {
        StepResult::Succeeded { .. } => Ok(()),
        StepResult::Failed { error } => Err(error.message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Observed, Resolved, plan};
    use crate::spec::{LoadOptions, load_str};

    /// Fails the steps whose ids are listed; records what ran.
    #[derive(Default)]
    struct Fake {
        fail: Vec<&'static str>,
        ran: Vec<String>,
    }

    impl Executor for Fake {
        fn run(&mut self, step: &PlanStep) -> Result<String, StepError> {
            self.ran.push(step.id.clone());
            if self.fail.contains(&step.id.as_str()) {
                Err(StepError::new(format!("{} broke", step.id)))
            } else {
                Ok(format!("{} ok", step.id))
            }
        }
    }

    #[derive(Default)]
    struct Memory {
        lines: Vec<String>,
        fail_at: Option<usize>,
    }

    impl Journal for Memory {
        fn started(&mut self, step: &PlanStep) -> Result<u64, JournalError> {
            if self.fail_at == Some(self.lines.len()) {
                return Err(JournalError("disk full".into()));
            }
            self.lines.push(format!("start {}", step.id));
            Ok(self.lines.len() as u64)
        }

        fn finished(
            &mut self,
            _: u64,
            step: &PlanStep,
            result: &StepResult,
        ) -> Result<(), JournalError> {
            let word = match result {
                StepResult::Succeeded { .. } => "ok",
                StepResult::Failed { .. } => "failed",
            };
            self.lines.push(format!("{word} {}", step.id));
            Ok(())
        }
    }

    fn upgrade_plan() -> Plan {
        let text = "\
name: s
services:
  db: { image: 'pg:${V}' }
  app: { image: 'app:${V}', depends_on: [db] }
data:
  files: { sqlite: { path: a.db }, writers: [app] }
";
        let load = |v: &str| {
            let opts = LoadOptions {
                process_env: [("V".to_string(), v.to_string())].into_iter().collect(),
                ..LoadOptions::default()
            };
            load_str(std::path::Path::new("/x/cutover.yaml"), text, &opts)
                .expect("valid")
                .stack
        };
        let observed = Observed {
            release: Some(1),
            stack: Some(load("1")),
            image_ids: Default::default(),
            adoptable: indexmap::IndexMap::new(),
            started_in: indexmap::IndexMap::new(),
        };
        plan(&load("2"), &observed, &Resolved::default())
    }

    #[test]
    fn every_step_is_journaled_before_and_after_it_runs() {
        let p = upgrade_plan();
        let (mut exec, mut journal) = (Fake::default(), Memory::default());
        assert_eq!(execute(&p, &mut exec, &mut journal), Outcome::Succeeded);
        let expected: Vec<String> = p
            .steps()
            .flat_map(|s| [format!("start {}", s.id), format!("ok {}", s.id)])
            .collect();
        assert_eq!(journal.lines, expected);
        assert_eq!(exec.ran.len(), p.steps().count());
    }

    #[test]
    fn a_preflight_failure_changes_nothing_and_reverts_nothing() {
        let p = upgrade_plan();
        let mut exec = Fake {
            fail: vec!["preflight.image.app"],
            ..Fake::default()
        };
        let out = execute(&p, &mut exec, &mut Memory::default());
        let Outcome::Refused(f) = out else {
            panic!("expected a refusal, got {out:?}")
        };
        assert_eq!(f.step, "preflight.image.app");
        assert!(
            exec.ran.iter().all(|s| s.starts_with("preflight.")),
            "{:?}",
            exec.ran
        );
    }

    #[test]
    fn a_failure_after_quiesce_runs_the_whole_revert() {
        let p = upgrade_plan();
        let mut exec = Fake {
            fail: vec!["upgrade.recreate.app"],
            ..Fake::default()
        };
        let out = execute(&p, &mut exec, &mut Memory::default());
        assert!(
            matches!(&out, Outcome::Reverted(f) if f.step == "upgrade.recreate.app"),
            "{out:?}"
        );
        let reverted: Vec<&str> = exec
            .ran
            .iter()
            .filter(|s| s.starts_with("revert."))
            .map(String::as_str)
            .collect();
        let planned: Vec<&str> = p.revert.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(reverted, planned);
        assert!(
            !exec
                .ran
                .iter()
                .any(|s| s.starts_with("verify.") || s.starts_with("release."))
        );
    }

    #[test]
    fn a_failed_revert_keeps_going_and_reports_both_failures() {
        let p = upgrade_plan();
        let mut exec = Fake {
            fail: vec!["upgrade.recreate.app", "revert.restore.files"],
            ..Fake::default()
        };
        let out = execute(&p, &mut exec, &mut Memory::default());
        let Outcome::RevertFailed {
            failure,
            revert_failures,
        } = out
        else {
            panic!("expected a failed revert, got {out:?}")
        };
        assert_eq!(failure.step, "upgrade.recreate.app");
        assert_eq!(revert_failures.len(), 1);
        assert_eq!(revert_failures[0].step, "revert.restore.files");
        assert!(
            exec.ran.contains(&"revert.compare".to_string()),
            "later revert steps still ran"
        );
    }

    #[test]
    fn a_step_that_cannot_be_journaled_does_not_run() {
        let p = upgrade_plan();
        let mut exec = Fake::default();
        let mut journal = Memory {
            fail_at: Some(0),
            ..Memory::default()
        };
        let out = execute(&p, &mut exec, &mut journal);
        assert!(
            matches!(&out, Outcome::Refused(f) if f.error.contains("disk full")),
            "{out:?}"
        );
        assert!(exec.ran.is_empty());
    }

    fn journaled(id: &str, ok: Option<bool>) -> Journaled {
        Journaled {
            step_id: id.into(),
            finished_ok: ok,
            error: ok.filter(|o| !o).map(|_| "boom".into()),
        }
    }

    #[test]
    fn resume_continues_after_finished_steps_and_reruns_the_interrupted_one() {
        let p = upgrade_plan();
        let ids: Vec<String> = p.steps().map(|s| s.id.clone()).collect();
        let at = resume_point(
            &p,
            &[journaled(&ids[0], Some(true)), journaled(&ids[1], None)],
        );
        assert_eq!(
            at,
            Resume::Continue {
                done: vec![ids[0].clone()]
            }
        );
        let mut exec = Fake::default();
        let mut journal = Memory::default();
        assert_eq!(resume(&p, at, &mut exec, &mut journal), Outcome::Succeeded);
        assert_eq!(
            exec.ran,
            ids[1..].to_vec(),
            "the interrupted step runs again, the rest after it"
        );
    }

    #[test]
    fn resume_reverts_after_a_failure_or_an_interrupted_revert() {
        let p = upgrade_plan();
        let ids: Vec<String> = p.steps().map(|s| s.id.clone()).collect();
        let last = ids.last().expect("steps").clone();
        let at = resume_point(
            &p,
            &[
                journaled(&ids[0], Some(true)),
                journaled(&last, Some(false)),
            ],
        );
        assert!(matches!(&at, Resume::Revert(f) if f.step == last), "{at:?}");
        let revert_id = p.revert[0].id.clone();
        let at = resume_point(
            &p,
            &[journaled(&last, Some(false)), journaled(&revert_id, None)],
        );
        let mut exec = Fake::default();
        let mut journal = Memory::default();
        assert!(matches!(
            resume(&p, at, &mut exec, &mut journal),
            Outcome::Reverted(_)
        ));
        let reverts: Vec<String> = p.revert.iter().map(|s| s.id.clone()).collect();
        assert_eq!(
            exec.ran, reverts,
            "the whole revert runs again, nothing of the procedure"
        );
    }

    #[test]
    fn an_abort_request_stops_at_the_next_step_and_reverts() {
        struct Aborting(Memory, usize);
        impl Journal for Aborting {
            fn abort_requested(&mut self) -> Option<String> {
                (self.0.lines.len() >= self.1).then(|| "chief@ops".to_string())
            }
            fn started(&mut self, step: &PlanStep) -> Result<u64, JournalError> {
                self.0.started(step)
            }
            fn finished(
                &mut self,
                seq: u64,
                step: &PlanStep,
                r: &StepResult,
            ) -> Result<(), JournalError> {
                self.0.finished(seq, step, r)
            }
        }
        let p = upgrade_plan();
        let steps: Vec<&PlanStep> = p.steps().collect();
        // Let the steps up to the first one after preflight run, then ask to stop.
        let first_change = steps
            .iter()
            .position(|s| !touches_nothing(s.phase))
            .expect("a step that changes something");
        let mut exec = Fake::default();
        let mut journal = Aborting(Memory::default(), 2 * (first_change + 1));
        match resume(&p, Resume::Start, &mut exec, &mut journal) {
            Outcome::Reverted(f) => assert!(f.error.contains("aborted by chief@ops"), "{f:?}"),
            other => panic!("expected a revert, got {other:?}"),
        }
        assert_eq!(exec.ran.len(), first_change + 1 + p.revert.len());
    }

    /// Loses the lease after `after` journal lines.
    struct Losing(Memory, usize);
    impl Journal for Losing {
        fn lost(&mut self) -> Option<String> {
            (self.0.lines.len() >= self.1).then(|| "taken over by ops@other".to_string())
        }
        fn started(&mut self, step: &PlanStep) -> Result<u64, JournalError> {
            self.0.started(step)
        }
        fn finished(
            &mut self,
            seq: u64,
            step: &PlanStep,
            r: &StepResult,
        ) -> Result<(), JournalError> {
            self.0.finished(seq, step, r)
        }
    }

    #[test]
    fn a_lost_lease_stops_at_once_without_running_or_reverting_anything_more() {
        let p = upgrade_plan();
        let steps: Vec<&PlanStep> = p.steps().collect();
        let mut exec = Fake::default();
        // Two steps ran (start and end journaled each), then the lease is gone.
        let mut journal = Losing(Memory::default(), 4);
        match resume(&p, Resume::Start, &mut exec, &mut journal) {
            Outcome::Lost { step, why } => {
                assert_eq!(step, steps[2].id);
                assert_eq!(why, "taken over by ops@other");
            }
            other => panic!("expected to stop, got {other:?}"),
        }
        assert_eq!(exec.ran, [steps[0].id.clone(), steps[1].id.clone()]);
    }

    #[test]
    fn a_lease_lost_during_a_revert_stops_the_revert_too() {
        let p = upgrade_plan();
        let upgrade = p
            .steps()
            .find(|s| s.phase == crate::spec::Phase::Upgrade)
            .expect("an upgrade step");
        let mut exec = Fake {
            fail: vec![Box::leak(upgrade.id.clone().into_boxed_str())],
            ..Fake::default()
        };
        let procedure = p.steps().position(|s| s.id == upgrade.id).expect("index") + 1;
        // The procedure up to the failure, then one revert step, then the lease is gone.
        let mut journal = Losing(Memory::default(), 2 * (procedure + 1));
        match resume(&p, Resume::Start, &mut exec, &mut journal) {
            Outcome::Lost { step, .. } => assert_eq!(step, p.revert[1].id),
            other => panic!("expected to stop, got {other:?}"),
        }
        assert_eq!(exec.ran.len(), procedure + 1, "{:?}", exec.ran);
    }
}
