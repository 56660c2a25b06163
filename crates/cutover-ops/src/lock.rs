//! One operation per stack at a time, and never one on top of an unfinished one.
//!
//! The store's lease says who changes a stack now; it is taken over when its holder's
//! process is gone or it expired. An operation whose holder died is *unfinished*: its
//! journal says where it stopped, and only `resume` (finish it) or `abort` (revert it) may
//! act on the stack until it is closed — an apply or a rollback on top of it would run from
//! a state no plan described, and a later resume would overwrite what they did.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use cutover_store::{Holder, Lease, Operation, StepRecord, StepStatus, Store, StoreError};

/// How long a lease lives without renewal. A thread renews it while the operation runs.
pub const LEASE_TTL: Duration = Duration::from_secs(60);
const RENEW_EVERY: Duration = Duration::from_secs(15);

/// An operation that is still `running` in the store while nobody holds the stack's lease:
/// its process died (killed, crashed, the host rebooted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unfinished {
    pub operation: Operation,
    /// The last step its journal recorded, if it reached one.
    pub stopped_at: Option<StepRecord>,
    /// A later operation that ran after it (state from before operations were kept from
    /// overlapping): finishing it would overwrite that one, so only `abort` closes it.
    pub overtaken_by: Option<Operation>,
}

impl Unfinished {
    /// Where it stopped, in words: "step `upgrade.recreate.web` (recreate …), started and
    /// never finished".
    pub fn where_stopped(&self) -> String {
        match &self.stopped_at {
            None => "before its first step".to_string(),
            Some(s) => format!(
                "at step `{}` ({}), {}",
                s.step_id,
                s.title,
                match s.status {
                    StepStatus::Started => "started and never finished",
                    StepStatus::Succeeded => "after it finished",
                    StepStatus::Failed => "after it failed",
                    StepStatus::Skipped => "after it was skipped",
                }
            ),
        }
    }
}

impl std::fmt::Display for Unfinished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let op = &self.operation;
        write!(
            f,
            "stack `{}` has an unfinished operation: operation {} ({}{}), started {} by {}, whose process is gone; it stopped {}. Nothing was changed. ",
            op.stack,
            op.id,
            op.kind,
            op.release
                .map(|r| format!(" of release {r}"))
                .unwrap_or_default(),
            cutover_store::format_millis(op.started_at),
            op.holder,
            self.where_stopped(),
        )?;
        match &self.overtaken_by {
            None => write!(
                f,
                "Finish it first: `cutover resume` continues it from there (or reverts it when that step may not run twice), `cutover abort` reverts it"
            ),
            Some(by) => write!(
                f,
                "Operation {} ({}) ran after it, so it cannot be finished: `cutover abort` closes it without changing the stack",
                by.id, by.kind
            ),
        }
    }
}

/// The newest operation of the stack that is still running in the store, with where its
/// journal stopped. Call it while holding the lease: then its holder is gone.
pub fn unfinished(store: &Store) -> Result<Option<Unfinished>, StoreError> {
    let Some(operation) = store.unfinished_operations()?.into_iter().next() else {
        return Ok(None);
    };
    let stopped_at = store.journal(operation.id)?.into_iter().last();
    let overtaken_by = store
        .operations(1)?
        .into_iter()
        .next()
        .filter(|newest| newest.id > operation.id);
    Ok(Some(Unfinished {
        operation,
        stopped_at,
        overtaken_by,
    }))
}

/// Refuses early — before a plan is made — when an operation is unfinished and nobody
/// holds the lease (its process died). While a live process holds it, taking the lease says
/// who; [`Lock::take`] checks again once the lease is held.
pub fn refuse_if_unfinished(store: &Store) -> Result<(), LockError> {
    if store.live_lease()?.is_some() {
        return Ok(());
    }
    match unfinished(store)? {
        Some(u) => Err(LockError::Unfinished(Box::new(u))),
        None => Ok(()),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another live process holds the lease ([`StoreError::LeaseHeld`]), or the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The lease was free (or stale), but an operation is unfinished.
    #[error("{0}")]
    Unfinished(Box<Unfinished>),
}

/// The stack's lease, held for one operation and renewed from a thread until released.
#[derive(Debug)]
pub struct Lock {
    token: String,
    took_over: Option<Lease>,
    renewer: Option<mpsc::Sender<()>>,
}

impl Lock {
    /// Takes the lease to start a new operation (`kind`: apply, rollback, down, …), refusing
    /// while an operation is unfinished; the lease is given back then.
    pub fn take(store: &Store, holder: &Holder, kind: &str) -> Result<Lock, LockError> {
        let lock = Lock::take_any(store, holder, kind)?;
        match unfinished(store) {
            Ok(None) => Ok(lock),
            Ok(Some(u)) => {
                let _ = store.release_lease(&lock.token);
                Err(LockError::Unfinished(Box::new(u)))
            }
            Err(e) => {
                let _ = store.release_lease(&lock.token);
                Err(e.into())
            }
        }
    }

    /// Takes the lease whatever is unfinished: for `resume` and `abort`, which finish it.
    pub fn take_any(store: &Store, holder: &Holder, kind: &str) -> Result<Lock, StoreError> {
        let grant = store.acquire_lease(holder, kind, LEASE_TTL)?;
        Ok(Lock {
            token: grant.lease.token,
            took_over: grant.took_over,
            renewer: None,
        })
    }

    /// The stale lease this one replaced (its holder's process was gone, or it expired).
    pub fn took_over(&self) -> Option<&Lease> {
        self.took_over.as_ref()
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// Renews the lease every few seconds from a thread with its own store connection,
    /// until [`Lock::release`] (or the lock is dropped).
    pub fn renew_in_background(&mut self, state_dir: &Path, stack: &str) {
        let dir: PathBuf = state_dir.to_path_buf();
        let stack = stack.to_string();
        let token = self.token.clone();
        let (tx, rx) = mpsc::channel::<()>();
        let spawned = std::thread::Builder::new()
            .name("lease-renewal".into())
            .spawn(move || {
                let Ok(store) = Store::open(&dir, &stack) else {
                    return;
                };
                // Ends when the sender is dropped (Disconnected) or sends. A renewal that fails
                // (the database busy, the disk full for a moment) is tried again at the next
                // tick, well before the lease runs out; a lease taken over is lost for good.
                while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(RENEW_EVERY) {
                    match store.renew_lease(&token, LEASE_TTL) {
                        Ok(_) => {}
                        Err(e @ StoreError::LeaseLost { .. }) => {
                            eprintln!("cutover: the lease was lost: {e}");
                            return;
                        }
                        Err(e) => eprintln!("cutover: cannot renew the lease (trying again): {e}"),
                    }
                }
            });
        if spawned.is_ok() {
            self.renewer = Some(tx);
        }
    }

    /// Stops the renewal and gives the lease back.
    pub fn release(mut self, store: &Store) -> Result<(), StoreError> {
        self.renewer = None;
        store.release_lease(&self.token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cutover_store::OperationStatus;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), "shop").expect("store");
        (dir, store)
    }

    /// A holder whose process is gone: pid 1's start time never matches a made-up one.
    fn dead() -> Holder {
        Holder {
            user: "ops".into(),
            host: Holder::current().host,
            pid: 999_999_999,
            pid_start: Some(1),
        }
    }

    #[test]
    fn a_new_operation_is_refused_while_a_dead_ones_is_unfinished() {
        let (_d, store) = store();
        // A killed apply: its lease stale, its operation running, one step started.
        store
            .acquire_lease(&dead(), "apply", LEASE_TTL)
            .expect("lease");
        let op = store.begin_operation("apply", None, &dead()).expect("op");
        store
            .step_started(op.id, "upgrade.recreate.web", "upgrade", "recreate `web`")
            .expect("journal");

        let err = Lock::take(&store, &Holder::current(), "apply").expect_err("refused");
        let LockError::Unfinished(u) = err else {
            panic!("not an unfinished refusal: {err}");
        };
        assert_eq!(u.operation.id, op.id);
        let msg = u.to_string();
        assert!(
            msg.contains(&format!("operation {} (apply)", op.id)),
            "{msg}"
        );
        assert!(
            msg.contains(
                "at step `upgrade.recreate.web` (recreate `web`), started and never finished"
            ),
            "{msg}"
        );
        assert!(
            msg.contains("`cutover resume`") && msg.contains("`cutover abort`"),
            "{msg}"
        );
        // The lease went back: resume can take it.
        assert!(store.current_lease().expect("lease").is_none());
        let lock = Lock::take_any(&store, &Holder::current(), "resume").expect("resume locks");
        lock.release(&store).expect("release");
    }

    #[test]
    fn the_early_check_refuses_only_when_nobody_live_holds_the_stack() {
        let (_d, store) = store();
        store.begin_operation("apply", None, &dead()).expect("op");
        assert!(matches!(
            refuse_if_unfinished(&store),
            Err(LockError::Unfinished(_))
        ));
        // A live holder (this process): the lease itself will say who holds the stack.
        let lock = Lock::take_any(&store, &Holder::current(), "resume").expect("lease");
        assert!(refuse_if_unfinished(&store).is_ok());
        lock.release(&store).expect("release");
    }

    #[test]
    fn a_stale_lease_without_an_unfinished_operation_is_taken_over() {
        let (_d, store) = store();
        store
            .acquire_lease(&dead(), "apply", LEASE_TTL)
            .expect("lease");
        let lock = Lock::take(&store, &Holder::current(), "apply").expect("taken over");
        assert_eq!(lock.took_over().map(|l| l.holder.pid), Some(999_999_999));
        lock.release(&store).expect("release");
    }

    #[test]
    fn a_finished_operation_does_not_block() {
        let (_d, store) = store();
        let op = store
            .begin_operation("apply", None, &Holder::current())
            .expect("op");
        store
            .finish_operation(op.id, OperationStatus::Reverted, Some("x"))
            .expect("finish");
        let lock = Lock::take(&store, &Holder::current(), "apply").expect("free");
        lock.release(&store).expect("release");
    }

    #[test]
    fn an_unfinished_operation_that_a_later_one_overtook_points_at_abort_only() {
        let (_d, store) = store();
        let old = store.begin_operation("apply", None, &dead()).expect("op");
        let later = store
            .begin_operation("rollback", None, &Holder::current())
            .expect("later");
        store
            .finish_operation(later.id, OperationStatus::Succeeded, None)
            .expect("finish");
        let u = unfinished(&store).expect("read").expect("unfinished");
        assert_eq!(u.operation.id, old.id);
        let msg = u.to_string();
        assert!(
            msg.contains(&format!("Operation {} (rollback) ran after it", later.id)),
            "{msg}"
        );
        assert!(
            msg.contains("`cutover abort` closes it") && !msg.contains("`cutover resume`"),
            "{msg}"
        );
    }

    #[test]
    fn an_operation_stopped_before_its_first_step_says_so() {
        let (_d, store) = store();
        store
            .begin_operation("rollback", None, &dead())
            .expect("op");
        let u = unfinished(&store).expect("read").expect("unfinished");
        assert_eq!(u.where_stopped(), "before its first step");
    }
}
