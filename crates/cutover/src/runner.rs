//! The executor behind `apply`, `rollback`, `upgrade-service` and `resume`: each plan step
//! handed to its family — containers (`cutover_ops::containers`, on the runtime seam), data
//! (`cutover_ops::data`, on this host's backends in `backends.rs`), the stack file's own steps
//! and checks (`cutover_ops::checks`, on this host's probes and terminal in `host.rs`). The journal is
//! `cutover_ops::journal`; progress (`progress.rs`) observes it.
//!
//! The engine (cutover-core) decides the order and the revert; a family only knows how to do
//! one step, idempotently.

use cutover_core::engine::{Executor, StepError};
use cutover_core::plan::{PlanStep, StepKind};
use cutover_ops::checks::Checks;
use cutover_ops::containers::Containers;
use cutover_ops::data::Data;
use cutover_store::{ReleaseStatus, Store};

/// Does plan steps for one operation of one stack.
pub struct Runner<'a> {
    pub containers: Containers<'a>,
    pub data: Data<'a>,
    pub checks: Checks<'a>,
    pub store: &'a Store,
}

fn fail(e: impl std::fmt::Display) -> StepError {
    StepError::new(e.to_string())
}

impl Runner<'_> {
    /// Release: record it, and clean up what no rollback needs any more.
    fn record_release(&mut self) -> Result<String, StepError> {
        let release = self.containers.release;
        self.containers.settle_images()?;
        self.store
            .set_release_images(release, &self.containers.images.to_json())
            .map_err(fail)?;
        self.store
            .set_release_status(release, ReleaseStatus::Deployed)
            .map_err(fail)?;
        let removed = self.containers.remove_superseded()?;
        Ok(format!(
            "release {release} deployed{}",
            if removed.is_empty() {
                String::new()
            } else {
                format!("; removed old containers {}", removed.join(", "))
            }
        ))
    }
}

impl Executor for Runner<'_> {
    fn run(&mut self, step: &PlanStep) -> Result<String, StepError> {
        if let Some(done) = self.containers.run(step) {
            return done;
        }
        match &step.action {
            StepKind::RecordRelease => self.record_release(),
            StepKind::CompareWithBefore => self
                .containers
                .compare_with_before(self.data.schema_differences()),
            StepKind::CheckData { data } => self.data.check_data(data),
            StepKind::TakeRestorePoint { data } => self.data.take_restore_point(data),
            StepKind::RestoreData { data } => self.data.restore_data(data),
            StepKind::RestoreFrom { data, release } => self.data.restore_data_from(data, *release),
            StepKind::CheckSchemaVersion { data, expect } => {
                self.data.check_schema_version(data, expect.as_deref())
            }
            StepKind::CheckSchemaKept {
                data,
                release,
                version,
            } => self.data.check_schema_kept(data, *release, version),
            StepKind::SettingsRemoved {
                service,
                file,
                keys,
            } => {
                let list = keys.join(", ");
                if self.containers.ack_settings {
                    Ok(format!(
                        "acknowledged (--ack-settings): `{service}` still sets in {file} what the new version removed or renamed: {list}"
                    ))
                } else {
                    Err(StepError::new(format!(
                        "`{service}` still sets in {file} what the new version removed or renamed: {list}; change the file (the new version's defaults file lists what it reads), or acknowledge with --ack-settings; nothing was changed"
                    )))
                }
            }
            StepKind::Custom { step: custom } => self.checks.custom_step(&step.id, custom),
            other => Err(StepError::new(format!(
                "step `{}` ({other:?}) has no family to run it",
                step.id
            ))),
        }
    }
}
