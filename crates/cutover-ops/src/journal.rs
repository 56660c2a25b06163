//! The journal of one operation, in the store, and whoever watches it.
//!
//! Every step is journaled before it runs and after it ends (the engine's invariant); each
//! of those records is also an [`Event`] handed to an [`Observer`] — the binary's terminal,
//! plain-text and JSON renderers, and whatever else follows an operation live. What is shown
//! is what was recorded.

use cutover_core::engine::{Journal, JournalError, StepResult};
use cutover_core::plan::PlanStep;
use cutover_store::{StepStatus, Store};

/// A step's start or end, as journaled.
#[derive(Clone, Copy, Debug)]
pub enum Event<'a> {
    Started {
        operation: u64,
        step: &'a PlanStep,
    },
    Finished {
        operation: u64,
        step: &'a PlanStep,
        status: StepStatus,
        /// What the step said, or why it failed (redacted by the executor).
        output: &'a str,
    },
}

/// Follows an operation's journal as it is written.
pub trait Observer {
    fn event(&mut self, event: &Event<'_>);
}

/// Watches nothing.
#[derive(Debug, Default)]
pub struct Quiet;

impl Observer for Quiet {
    fn event(&mut self, _: &Event<'_>) {}
}

/// The journal of operation `operation`, in the store, shown to `observer`.
pub struct StoreJournal<'a> {
    pub store: &'a Store,
    pub operation: u64,
    pub observer: &'a mut dyn Observer,
    /// The token of the lease this process holds for the operation: once it is not the
    /// stack's lease any more, the engine stops (`Journal::lost`).
    pub lease: Option<String>,
}

impl Journal for StoreJournal<'_> {
    fn abort_requested(&mut self) -> Option<String> {
        self.store.abort_requested(self.operation).ok().flatten()
    }

    fn lost(&mut self) -> Option<String> {
        let token = self.lease.as_deref()?;
        match self.store.current_lease() {
            Ok(Some(l)) if l.token == token => None,
            Ok(Some(l)) => Some(format!(
                "the stack's lease was taken over by {} running `{}`",
                l.holder, l.operation
            )),
            Ok(None) => Some("the stack's lease was removed (`cutover unlock --force`)".into()),
            // Unreadable: the journal's own writes fail and say so.
            Err(_) => None,
        }
    }

    fn started(&mut self, step: &PlanStep) -> Result<u64, JournalError> {
        let seq = self
            .store
            .step_started(self.operation, &step.id, step.phase.as_str(), &step.title)
            .map_err(|e| JournalError(e.to_string()))?;
        self.observer.event(&Event::Started {
            operation: self.operation,
            step,
        });
        hooks::crash_point(step, "before");
        Ok(seq)
    }

    fn finished(
        &mut self,
        seq: u64,
        step: &PlanStep,
        result: &StepResult,
    ) -> Result<(), JournalError> {
        let (status, output) = match result {
            StepResult::Succeeded { output } => (StepStatus::Succeeded, output.clone()),
            StepResult::Failed { error } => (
                StepStatus::Failed,
                if error.output.is_empty() {
                    error.message.clone()
                } else {
                    format!("{}\n{}", error.message, error.output)
                },
            ),
        };
        self.store
            .step_finished(self.operation, seq, status, &output)
            .map_err(|e| JournalError(e.to_string()))?;
        self.observer.event(&Event::Finished {
            operation: self.operation,
            step,
            status,
            output: &output,
        });
        hooks::crash_point(step, "after");
        Ok(())
    }
}

/// Test hooks, compiled only with the `test-hooks` feature (the tests and the crash
/// benchmark enable it; the binary users run has none).
#[cfg(feature = "test-hooks")]
pub mod hooks {
    use cutover_core::plan::PlanStep;

    /// `CUTOVER_TEST_CRASH_AT=<step id>:<before|after>` makes the process write
    /// `CUTOVER_TEST_CRASH_MARKER` (a file) and stop at that step boundary, for a test to
    /// kill it there with SIGKILL. `before`: journaled as started, not run yet; `after`:
    /// finished.
    pub fn crash_point(step: &PlanStep, when: &str) {
        crash_at(&format!("{}:{when}", step.id));
    }

    /// Stops at a named point inside a step (`CUTOVER_TEST_CRASH_AT=<label>`), as
    /// [`crash_point`] does at a boundary.
    pub fn crash_at(label: &str) {
        let Ok(at) = std::env::var("CUTOVER_TEST_CRASH_AT") else {
            return;
        };
        if at != label {
            return;
        }
        if let Ok(marker) = std::env::var("CUTOVER_TEST_CRASH_MARKER") {
            let _ = std::fs::write(marker, &at);
        }
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}

#[cfg(not(feature = "test-hooks"))]
pub mod hooks {
    use cutover_core::plan::PlanStep;

    pub fn crash_point(_: &PlanStep, _: &str) {}

    pub fn crash_at(_: &str) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{plan_with, step, store};
    use cutover_core::engine::{self, Executor, Outcome, StepError};
    use cutover_core::plan::StepKind;
    use cutover_core::spec::Phase;
    use cutover_store::Holder;

    /// Notes each event, and what the store held for that step when it came.
    struct Seen<'s> {
        store: &'s Store,
        op: u64,
        seen: Vec<String>,
    }

    impl Observer for Seen<'_> {
        fn event(&mut self, e: &Event<'_>) {
            let recorded = |id: &str| {
                self.store
                    .journal(self.op)
                    .expect("journal")
                    .into_iter()
                    .rfind(|r| r.step_id == id)
                    .map_or("nothing".to_string(), |r| r.status.as_str().to_string())
            };
            self.seen.push(match e {
                Event::Started { step, .. } => {
                    format!("start {} (recorded {})", step.id, recorded(&step.id))
                }
                Event::Finished {
                    step,
                    status,
                    output,
                    ..
                } => format!(
                    "end {} {} {output} (recorded {})",
                    step.id,
                    status.as_str(),
                    recorded(&step.id)
                ),
            });
        }
    }

    struct Steps;

    impl Executor for Steps {
        fn run(&mut self, step: &PlanStep) -> Result<String, StepError> {
            match step.id.as_str() {
                "upgrade.recreate.web" => Err(StepError::new("never healthy")),
                id => Ok(format!("{id} done")),
            }
        }
    }

    #[test]
    fn the_observer_sees_what_the_store_records_in_the_order_it_is_recorded() {
        let (_d, store) = store();
        let op = store
            .begin_operation("apply", None, &Holder::current())
            .expect("op");
        let mut plan = plan_with(vec![
            (
                Phase::Preflight,
                vec![step(
                    "preflight.ports",
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
        let mut revert = step(
            "revert.start.web",
            StepKind::StartPrevious {
                service: "web".into(),
            },
        );
        revert.phase = Phase::Revert;
        plan.revert = vec![revert];
        let mut seen = Seen {
            store: &store,
            op: op.id,
            seen: Vec::new(),
        };
        let outcome = engine::execute(
            &plan,
            &mut Steps,
            &mut StoreJournal {
                store: &store,
                operation: op.id,
                observer: &mut seen,
                lease: None,
            },
        );
        assert!(matches!(outcome, Outcome::Reverted(_)), "{outcome:?}");
        // What is shown was recorded first.
        assert_eq!(
            seen.seen,
            [
                "start preflight.ports (recorded started)",
                "end preflight.ports succeeded preflight.ports done (recorded succeeded)",
                "start upgrade.recreate.web (recorded started)",
                "end upgrade.recreate.web failed never healthy (recorded failed)",
                "start revert.start.web (recorded started)",
                "end revert.start.web succeeded revert.start.web done (recorded succeeded)",
            ]
        );
        let journal: Vec<(String, StepStatus)> = store
            .journal(op.id)
            .expect("journal")
            .into_iter()
            .map(|r| (r.step_id, r.status))
            .collect();
        assert_eq!(
            journal,
            [
                ("preflight.ports".to_string(), StepStatus::Succeeded),
                ("upgrade.recreate.web".to_string(), StepStatus::Failed),
                ("revert.start.web".to_string(), StepStatus::Succeeded),
            ]
        );
    }

    #[test]
    fn a_lease_taken_over_is_lost_and_says_by_whom() {
        let (_d, store) = store();
        let op = store
            .begin_operation("apply", None, &Holder::current())
            .expect("op");
        let mine = store
            .acquire_lease(
                &Holder::current(),
                "apply",
                std::time::Duration::from_secs(60),
            )
            .expect("lease");
        let mut quiet = Quiet;
        let mut j = StoreJournal {
            store: &store,
            operation: op.id,
            observer: &mut quiet,
            lease: Some(mine.lease.token.clone()),
        };
        assert_eq!(j.lost(), None);
        store.release_lease(&mine.lease.token).expect("release");
        assert_eq!(
            j.lost().as_deref(),
            Some("the stack's lease was removed (`cutover unlock --force`)")
        );
        let other = Holder {
            pid: 4242,
            ..Holder::current()
        };
        store
            .acquire_lease(&other, "resume", std::time::Duration::from_secs(60))
            .expect("taken");
        let why = j.lost().expect("lost");
        assert!(
            why.starts_with("the stack's lease was taken over by ")
                && why.ends_with("running `resume`"),
            "{why}"
        );
    }
}
