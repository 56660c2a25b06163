//! Which release a rollback deploys again.

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
}
