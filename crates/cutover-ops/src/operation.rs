//! The start of an operation: its release (when it makes one), the operation itself, and
//! the context `resume` needs — recorded before its first step, or nothing is left behind.

use cutover_core::plan::Plan;
use cutover_core::runtime::ContainerInfo;
use cutover_core::spec::Stack;
use cutover_store::{Holder, NewRelease, OperationStatus, ReleaseStatus, Store, StoreError};
use indexmap::IndexMap;

use crate::record::{OperationContext, ReleaseImages};

/// What an operation is about to do.
pub struct Begin<'a> {
    /// `apply`, `rollback`, `upgrade-service`.
    pub kind: &'a str,
    pub plan: &'a Plan,
    /// The stack to deploy (secrets resolved; recorded as references).
    pub desired: &'a Stack,
    /// The live release's stack and number, when there is one.
    pub previous: Option<&'a Stack>,
    pub from_release: Option<u64>,
    /// Make a new release (apply, rollback); `upgrade-service` works within the live one.
    pub record_release: bool,
    /// Why, recorded with the release.
    pub reason: Option<&'a str>,
    /// Where the change came from (a git commit, as JSON), recorded with the release.
    pub source_json: Option<&'a str>,
    pub pins: &'a IndexMap<String, String>,
    pub ack_settings: bool,
    pub from_dump: bool,
    /// The containers that run now: the revert target.
    pub before: Vec<ContainerInfo>,
}

/// An operation that has begun: nothing has run yet, and `resume` can finish it.
#[derive(Debug)]
pub struct Begun {
    pub operation: u64,
    pub release: u64,
    pub context: OperationContext,
}

#[derive(Debug, thiserror::Error)]
pub enum BeginError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot record the operation's context: {0}")]
    Context(String),
}

/// Records the release (pending), the operation (running) and its context. When the context
/// cannot be recorded, the operation is closed (`aborted`) and its release failed, so no
/// operation is left unfinished that nothing could resume.
pub fn begin(store: &Store, holder: &Holder, b: Begin<'_>) -> Result<Begun, BeginError> {
    let release = if b.record_release {
        let spec_json =
            serde_json::to_string(b.desired).map_err(|e| BeginError::Context(e.to_string()))?;
        store
            .insert_release(&NewRelease {
                spec_json: &spec_json,
                images_json: &ReleaseImages::default().to_json(),
                created_by: &holder.user,
                host: &holder.host,
                reason: b.reason,
                status: ReleaseStatus::Pending,
                source_json: b.source_json,
            })?
            .revision
    } else {
        b.plan.to_release
    };
    let context = OperationContext {
        kind: b.kind.to_string(),
        plan: b.plan.clone(),
        desired: b.desired.clone(),
        previous: b.previous.cloned(),
        from_release: b.from_release,
        release,
        record_release: b.record_release,
        pins: b.pins.clone(),
        ack_settings: b.ack_settings,
        from_dump: b.from_dump,
        before: b.before,
    };
    let fail_release = |store: &Store| {
        if b.record_release {
            let _ = store.set_release_status(release, ReleaseStatus::Failed);
        }
    };
    let json = match serde_json::to_string(&context) {
        Ok(j) => j,
        Err(e) => {
            fail_release(store);
            return Err(BeginError::Context(e.to_string()));
        }
    };
    let operation = match store.begin_operation(b.kind, Some(release), holder) {
        Ok(op) => op,
        Err(e) => {
            fail_release(store);
            return Err(e.into());
        }
    };
    if let Err(e) = store.set_operation_context(operation.id, &json) {
        // Nothing ran: closed, not left unfinished.
        let _ = store.finish_operation(
            operation.id,
            OperationStatus::Aborted,
            Some("its context could not be recorded; nothing ran"),
        );
        fail_release(store);
        return Err(BeginError::Context(e.to_string()));
    }
    Ok(Begun {
        operation: operation.id,
        release,
        context,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{plan_with, release, store};
    use cutover_core::spec::Phase;

    fn stack() -> Stack {
        cutover_core::spec::load::load_str(
            std::path::Path::new("cutover.yaml"),
            "name: shop\nservices:\n  web: { image: app:v2 }\n",
            &cutover_core::spec::load::LoadOptions::default(),
        )
        .unwrap_or_else(|d| panic!("{d:?}"))
        .stack
    }

    fn begin_with(store: &Store, record_release: bool, to_release: u64) -> Begun {
        let (s, mut plan, pins) = (
            stack(),
            plan_with(vec![(Phase::Upgrade, vec![])]),
            IndexMap::new(),
        );
        plan.to_release = to_release;
        begin(
            store,
            &Holder::current(),
            Begin {
                kind: "apply",
                plan: &plan,
                desired: &s,
                previous: None,
                from_release: Some(1),
                record_release,
                reason: Some("monthly"),
                source_json: None,
                pins: &pins,
                ack_settings: false,
                from_dump: false,
                before: Vec::new(),
            },
        )
        .expect("begins")
    }

    #[test]
    fn an_apply_records_a_pending_release_a_running_operation_and_what_resume_needs() {
        let (_d, store) = store();
        release(&store, ReleaseStatus::Deployed);
        let b = begin_with(&store, true, 2);
        assert_eq!(b.release, 2);
        let rel = store.release(2).expect("read").expect("release 2");
        assert_eq!(
            (rel.status, rel.reason.as_deref()),
            (ReleaseStatus::Pending, Some("monthly"))
        );
        let op = store.operation(b.operation).expect("read").expect("op");
        assert_eq!((op.status, op.release), (OperationStatus::Running, Some(2)));
        let json = store
            .operation_context(b.operation)
            .expect("read")
            .expect("context");
        let ctx = OperationContext::of_operation(b.operation, &json).expect("parses");
        assert_eq!(
            (ctx.kind.as_str(), ctx.release, ctx.from_release),
            ("apply", 2, Some(1))
        );
        assert_eq!(ctx.desired.name, "shop");
    }

    #[test]
    fn work_within_the_live_release_makes_no_new_one() {
        let (_d, store) = store();
        let live = release(&store, ReleaseStatus::Deployed);
        let b = begin_with(&store, false, live);
        assert_eq!(
            b.release, live,
            "the live release, recorded with the operation"
        );
        assert_eq!(store.releases(10).expect("list").len(), 1);
        assert_eq!(
            store.release(live).expect("read").map(|r| r.status),
            Some(ReleaseStatus::Deployed)
        );
    }
}
