//! Which release a rollback deploys again.

use cutover_core::plan::Plan;
use cutover_core::spec::Stack;
use cutover_data::manifest::RestorePoints;
use cutover_store::{Release, ReleaseStatus, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("stack `{stack}` has no release {revision}; `cutover history` lists them")]
    NoSuchRelease { stack: String, revision: u64 },
    #[error("stack `{stack}` has no deployed release to roll back from")]
    NothingDeployed { stack: String },
    #[error("stack `{stack}` has no earlier deployed release to roll back to")]
    NoEarlier { stack: String },
    #[error(
        "release {revision} was never deployed (it is {status}); only deployed releases are rollback targets"
    )]
    NeverDeployed {
        revision: u64,
        status: ReleaseStatus,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn was_deployed(r: &Release) -> bool {
    matches!(
        r.status,
        ReleaseStatus::Superseded | ReleaseStatus::Deployed
    )
}

/// The release `rollback [REVISION]` deploys: the one asked for, which must have been
/// deployed once; else the newest release before the live one that was deployed (refused,
/// failed and reverted releases never ran as a whole and are passed over).
pub fn target(
    store: &Store,
    live: Option<u64>,
    requested: Option<u64>,
) -> Result<Release, TargetError> {
    let stack = store.stack().to_string();
    if let Some(r) = requested
        && store.release(r)?.is_none()
    {
        return Err(TargetError::NoSuchRelease { stack, revision: r });
    }
    let Some(live) = live else {
        return Err(TargetError::NothingDeployed { stack });
    };
    let revision = match requested {
        Some(r) => r,
        None => store
            .releases(1000)?
            .iter()
            .filter(|r| r.revision < live)
            .find(|r| was_deployed(r))
            .map(|r| r.revision)
            .ok_or(TargetError::NoEarlier {
                stack: stack.clone(),
            })?,
    };
    let rel = store
        .release(revision)?
        .ok_or(TargetError::NoSuchRelease { stack, revision })?;
    if !was_deployed(&rel) {
        return Err(TargetError::NeverDeployed {
            revision,
            status: rel.status,
        });
    }
    Ok(rel)
}

/// What a rollback does with the data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataChoice {
    /// Put back the data release `target` had, from the restore point taken when the stack
    /// moved on from it.
    Restore,
    /// Leave the data as it is: its schema must be one the target's images ran on.
    Keep,
}

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error(
        "no restore point holds release {target}'s data of {}: restore points are taken when an upgrade moves on from a release, and are used up by a revert or removed by a prune (`cutover restore-points list`); roll back with `--data keep`, or not at all; nothing was changed",
        missing.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", ")
    )]
    NoRestorePoint { target: u64, missing: Vec<String> },
    #[error(
        "release {target}'s data can only be put back while its writers are stopped, and this rollback changes none of them; nothing was changed"
    )]
    WritersUnchanged { target: u64 },
    #[error("cannot read the restore points: {0}")]
    RestorePoints(#[from] cutover_data::manifest::ManifestError),
}

/// Adds the data steps of a rollback to release `target` to its plan: with `Restore`, each
/// data set's restore point of that release is put back while its writers are stopped
/// (refused when one is missing, or when the rollback stops no writer); with `Keep`, each
/// data set with a schema version must still have the one the target ran on (checked in
/// preflight, against what its restore point recorded).
pub fn plan_data(
    plan: &mut Plan,
    desired: &Stack,
    rps: &RestorePoints,
    target: u64,
    choice: DataChoice,
) -> Result<(), DataError> {
    match choice {
        DataChoice::Restore => {
            let mut found = Vec::new();
            let mut missing = Vec::new();
            for (name, ds) in &desired.data {
                match rps.of_release(name, target)? {
                    Some(_) => found.push((name.clone(), ds.kind.describe())),
                    None => missing.push(name.clone()),
                }
            }
            if !missing.is_empty() {
                return Err(DataError::NoRestorePoint { target, missing });
            }
            let writers_stop = plan
                .data
                .iter()
                .any(|d| found.iter().any(|(n, _)| n == &d.name));
            if !found.is_empty() && !writers_stop {
                return Err(DataError::WritersUnchanged { target });
            }
            plan.restore_data_of(target, &found);
        }
        DataChoice::Keep => {
            let recorded = rps.list()?;
            let mut versions = Vec::new();
            for (name, ds) in &desired.data {
                if ds.schema_version.is_none() {
                    continue;
                }
                if let Some(v) = recorded
                    .iter()
                    .filter(|m| m.data == *name && m.taken_from == Some(target))
                    .max_by_key(|m| m.release)
                    .and_then(|m| m.schema_version.clone())
                {
                    versions.push((name.clone(), v));
                }
            }
            plan.require_schema_of(target, &versions);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{release, store};

    #[test]
    fn the_default_target_is_the_newest_earlier_release_that_ran() {
        let (_d, store) = store();
        let r1 = release(&store, ReleaseStatus::Superseded);
        let _r2 = release(&store, ReleaseStatus::Reverted);
        let _r3 = release(&store, ReleaseStatus::Refused);
        let r4 = release(&store, ReleaseStatus::Superseded);
        let _r5 = release(&store, ReleaseStatus::Failed);
        let r6 = release(&store, ReleaseStatus::Deployed);
        assert_eq!(target(&store, Some(r6), None).expect("target").revision, r4);
        assert_eq!(target(&store, Some(r4), None).expect("target").revision, r1);
        assert!(matches!(
            target(&store, Some(r1), None),
            Err(TargetError::NoEarlier { .. })
        ));
    }

    #[test]
    fn a_requested_release_must_exist_and_have_run() {
        let (_d, store) = store();
        let r1 = release(&store, ReleaseStatus::Superseded);
        let r2 = release(&store, ReleaseStatus::Reverted);
        let r3 = release(&store, ReleaseStatus::Deployed);
        assert_eq!(target(&store, Some(r3), Some(r1)).expect("r1").revision, r1);
        let err = target(&store, Some(r3), Some(r2)).expect_err("never ran");
        assert_eq!(
            err.to_string(),
            format!(
                "release {r2} was never deployed (it is reverted); only deployed releases are rollback targets"
            )
        );
        assert!(matches!(
            target(&store, Some(r3), Some(99)),
            Err(TargetError::NoSuchRelease { revision: 99, .. })
        ));
        assert!(matches!(
            target(&store, None, Some(r1)),
            Err(TargetError::NothingDeployed { .. })
        ));
    }

    mod data {
        use super::super::*;
        use crate::testing::{plan_with, step};
        use cutover_core::plan::{DataPlan, StepKind};
        use cutover_core::spec::Phase;
        use cutover_data::manifest::{Kind, MANIFEST_SCHEMA, Manifest, Status};

        fn stack() -> Stack {
            cutover_core::spec::load::load_str(
                std::path::Path::new("cutover.yaml"),
                "name: shop
services:
  web: { image: app:v2 }
data:
  app_db:
    sqlite: { path: /var/lib/app/app.db }
    writers: [web]
    schema_version: { query: SELECT v FROM version }
",
                &cutover_core::spec::load::LoadOptions::default(),
            )
            .unwrap_or_else(|d| panic!("{d:?}"))
            .stack
        }

        /// The restore point release `release`'s upgrade took of release `from`'s data.
        fn point(rps: &RestorePoints, release: u64, from: u64, schema: &str) {
            rps.save(&Manifest {
                schema: MANIFEST_SCHEMA.into(),
                stack: "shop".into(),
                release,
                taken_from: Some(from),
                data: "app_db".into(),
                kind: Kind::Sqlite,
                source: "/var/lib/app/app.db".into(),
                status: Status::Complete,
                created_at: 0,
                schema_version: Some(schema.into()),
                source_bytes: 1,
                artifacts: Vec::new(),
                files: Vec::new(),
                failed_copy: None,
                postgres: None,
                postgres_tables: None,
                snapshot: None,
            })
            .expect("save");
        }

        fn rollback_plan(stops_writers: bool) -> Plan {
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
            if stops_writers {
                plan.data.push(DataPlan {
                    name: "app_db".into(),
                    describe: "SQLite database".into(),
                    writers: vec!["web".into()],
                    method: "online backup".into(),
                    copy: None,
                    schema_version: None,
                });
            }
            plan
        }

        #[test]
        fn restoring_puts_back_the_point_that_holds_the_target_and_refuses_without_one() {
            let dir = tempfile::tempdir().expect("tempdir");
            let rps = RestorePoints::new(dir.path());
            let s = stack();
            let mut plan = rollback_plan(true);
            let err = plan_data(&mut plan, &s, &rps, 1, DataChoice::Restore).expect_err("none");
            assert!(
                err.to_string()
                    .starts_with("no restore point holds release 1's data of `app_db`"),
                "{err}"
            );
            // Release 2's upgrade took release 1's data.
            point(&rps, 2, 1, "1");
            plan_data(&mut plan, &s, &rps, 1, DataChoice::Restore).expect("planned");
            let restore = plan
                .steps()
                .find(|s| s.id == "upgrade.restore.app_db")
                .expect("a restore step");
            assert!(
                matches!(&restore.action, StepKind::RestoreFrom { data, release: 1 } if data == "app_db")
            );
            // A rollback that stops no writer cannot put data back.
            let mut idle = rollback_plan(false);
            let err =
                plan_data(&mut idle, &s, &rps, 1, DataChoice::Restore).expect_err("no writer");
            assert!(matches!(err, DataError::WritersUnchanged { target: 1 }));
        }

        #[test]
        fn keeping_the_data_checks_the_schema_the_target_last_ran_on() {
            let dir = tempfile::tempdir().expect("tempdir");
            let rps = RestorePoints::new(dir.path());
            point(&rps, 2, 1, "1");
            point(&rps, 5, 1, "1b");
            let mut plan = rollback_plan(true);
            plan_data(&mut plan, &stack(), &rps, 1, DataChoice::Keep).expect("planned");
            let check = plan
                .steps()
                .find(|s| s.id == "preflight.schema_kept.app_db")
                .expect("a check");
            assert!(
                matches!(&check.action, StepKind::CheckSchemaKept { release: 1, version, .. } if version == "1b")
            );
        }
    }
}
