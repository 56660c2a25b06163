//! The stack's lock for a command that changes it: exit 4 while another process holds the
//! lease or an operation is unfinished (`cutover_ops::lock`), said the same way by every
//! verb.

use anyhow::anyhow;
use cutover_ops::lock::{Lock, LockError};
use cutover_store::{Holder, Store};

use crate::cli::Cli;
use crate::commands;
use crate::exit::{self, with_code};

/// Exit 4 before any planning while an operation is unfinished (its process died): only
/// `resume` or `abort` may act on the stack then. Returns the newest operation the plan is
/// made after, for [`take_lock`] to check that none ran since.
pub fn refuse_if_unfinished(store: &Store) -> anyhow::Result<Option<u64>> {
    cutover_ops::lock::refuse_if_unfinished(store).map_err(lock_error)?;
    Ok(store.operations(1)?.first().map(|o| o.id))
}

fn lock_error(e: LockError) -> anyhow::Error {
    match e {
        LockError::Store(e) => anyhow::Error::from(e),
        LockError::Unfinished(u) => with_code(exit::LOCKED, anyhow!("{u}")),
    }
}

/// Takes the stack's lease for a new operation (`kind`), renewed in the background: exit 4
/// while another process holds it, or while an operation is unfinished.
pub fn take_lock(
    cli: &Cli,
    store: &Store,
    holder: &Holder,
    kind: &str,
    stack: &str,
) -> anyhow::Result<Lock> {
    let mut lock = Lock::take(store, holder, kind).map_err(lock_error)?;
    if let Some(old) = lock.took_over() {
        eprintln!(
            "cutover: took over a stale lease of {}@{} (pid {}), recorded in the lease log",
            old.holder.user, old.holder.host, old.holder.pid
        );
    }
    lock.renew_in_background(&commands::state_dir(cli), stack);
    Ok(lock)
}
