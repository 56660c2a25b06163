//! The engine: runs a plan's steps in order, journals each one before and after it runs, and
//! reverts when a step fails after anything was changed.
//!
//! The engine knows steps and the journal, not Docker: an [`Executor`] does each step (the
//! runtime, data and traffic adapters stand behind it), a [`Journal`] records it durably.
//! Every step may run twice (after a crash, `resume` starts again at the first step the
//! journal does not show as finished), so executors must make each step idempotent.

use std::fmt;

use crate::plan::{Plan, PlanStep};
use crate::spec::Phase;

/// Does one step. Implementations make every step idempotent: running a step that already
/// took effect must succeed without doing it twice.
pub trait Executor {
    /// Runs the step; `Ok` carries the tail of its output for the journal.
    fn run(&mut self, step: &PlanStep) -> Result<String, StepError>;
}

/// Records steps durably. `started` must be on disk before the step runs.
pub trait Journal {
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
}

fn touches_nothing(phase: Phase) -> bool {
    matches!(phase, Phase::Plan | Phase::Preflight)
}

/// Runs `plan`: its procedure, then, on a failure after preflight, its revert. Revert steps
/// all run even when one fails (each is independent and idempotent); every failure is kept.
pub fn execute(plan: &Plan, exec: &mut dyn Executor, journal: &mut dyn Journal) -> Outcome {
    let mut failure = None;
    for step in plan.steps() {
        if let Err(error) = run_one(step, exec, journal) {
            failure = Some(Failure {
                step: step.id.clone(),
                phase: step.phase,
                error,
            });
            break;
        }
    }
    let Some(failure) = failure else {
        return Outcome::Succeeded;
    };
    if touches_nothing(failure.phase) {
        return Outcome::Refused(failure);
    }
    let mut revert_failures = Vec::new();
    for step in &plan.revert {
        if let Err(error) = run_one(step, exec, journal) {
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
}
