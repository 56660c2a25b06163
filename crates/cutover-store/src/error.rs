//! The error type of the store.

use std::path::PathBuf;

use crate::Millis;
use crate::model::{Lease, OperationStatus, StepStatus};
use crate::time::{format_millis, now_millis};

/// Everything that can go wrong while reading or writing the state database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The state directory could not be created.
    #[error("cannot create state directory {}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },

    /// The database file could not be opened or configured (also: the file is
    /// not an SQLite database).
    #[error("cannot open state database {}", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rusqlite::Error,
    },

    /// The database was written by a newer cutover with a schema this build
    /// does not understand. The file is left untouched.
    #[error(
        "state database {} has schema version {found}, newer than the newest this cutover understands ({supported}); use a newer cutover",
        path.display()
    )]
    SchemaTooNew {
        /// The database file.
        path: PathBuf,
        /// The schema version found in the file.
        found: i64,
        /// The newest schema version this build knows.
        supported: i64,
    },

    /// Applying a schema migration failed (nothing of it was committed).
    #[error("cannot migrate state database {} to schema version {version}", path.display())]
    Migrate {
        /// The database file.
        path: PathBuf,
        /// The version being migrated to.
        version: i64,
        /// Why.
        #[source]
        source: rusqlite::Error,
    },

    /// A query failed.
    #[error("{context}")]
    Sql {
        /// What the store was doing.
        context: &'static str,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },

    /// Another holder has a live, unexpired lease on the stack.
    #[error("{}", lease_held_message(.lease, now_millis()))]
    LeaseHeld {
        /// The lease that is in the way.
        lease: Box<Lease>,
    },

    /// The token no longer holds the lease: it was released, force-unlocked,
    /// or expired and was taken over by someone else.
    #[error(
        "lost the lease on stack `{stack}`: it was released, force-unlocked, or expired and was taken over"
    )]
    LeaseLost {
        /// The stack.
        stack: String,
    },

    /// The database holds data this code never writes.
    #[error("state database is corrupt: {what}")]
    Corrupt {
        /// What is wrong, with the SQLite detail.
        what: String,
    },

    /// No release with that revision exists for the stack.
    #[error("stack `{stack}` has no release with revision {revision}")]
    ReleaseNotFound {
        /// The stack.
        stack: String,
        /// The revision asked for.
        revision: u64,
    },

    /// No operation with that id exists for the stack.
    #[error("stack `{stack}` has no operation with id {id}")]
    OperationNotFound {
        /// The stack.
        stack: String,
        /// The operation id asked for.
        id: u64,
    },

    /// The operation is no longer running, so it cannot be finished again or
    /// get new steps.
    #[error("operation {id} has already finished with status `{status}`")]
    OperationFinished {
        /// The operation id.
        id: u64,
        /// Its final status.
        status: OperationStatus,
    },

    /// The operation has no journal entry with that sequence number.
    #[error("operation {op} has no journal step {seq}")]
    StepNotFound {
        /// The operation id.
        op: u64,
        /// The step sequence number asked for.
        seq: u64,
    },

    /// The journal step was already marked finished.
    #[error("step {seq} of operation {op} has already finished with status `{status}`")]
    StepFinished {
        /// The operation id.
        op: u64,
        /// The step sequence number.
        seq: u64,
        /// Its recorded status.
        status: StepStatus,
    },

    /// The caller passed a value the store cannot accept.
    #[error("invalid argument: {what}")]
    InvalidArgument {
        /// What is wrong.
        what: String,
    },
}

/// "stack `x` is locked by user@host (pid N) running `apply` since …, lease
/// expires in Ns", relative to `now`.
pub(crate) fn lease_held_message(lease: &Lease, now: Millis) -> String {
    let left_ms = lease.expires_at.saturating_sub(now);
    let expiry = if left_ms > 0 {
        // Round up: "expires in 0s" would read as already expired.
        format!("lease expires in {}s", left_ms.saturating_add(999) / 1000)
    } else {
        format!("lease expired {}s ago", left_ms.saturating_neg() / 1000)
    };
    format!(
        "stack `{}` is locked by {} running `{}` since {}, {}",
        lease.stack,
        lease.holder,
        lease.operation,
        format_millis(lease.acquired_at),
        expiry
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Holder;

    fn lease() -> Lease {
        Lease {
            stack: "web".to_owned(),
            token: "t".to_owned(),
            holder: Holder {
                user: "alice".to_owned(),
                host: "box1".to_owned(),
                pid: 1234,
                pid_start: None,
            },
            operation: "apply".to_owned(),
            acquired_at: 1_700_000_000_000,
            renewed_at: 1_700_000_000_000,
            expires_at: 1_700_000_030_000,
        }
    }

    #[test]
    fn lease_held_names_holder_operation_and_expiry() {
        let msg = lease_held_message(&lease(), 1_700_000_005_500);
        assert_eq!(
            msg,
            "stack `web` is locked by alice@box1 (pid 1234) running `apply` since \
             2023-11-14T22:13:20Z, lease expires in 25s"
        );
    }

    #[test]
    fn lease_held_after_expiry_says_so() {
        let msg = lease_held_message(&lease(), 1_700_000_042_000);
        assert!(msg.ends_with("lease expired 12s ago"), "{msg}");
    }

    #[test]
    fn display_of_lease_held_uses_the_same_message() {
        let err = StoreError::LeaseHeld {
            lease: Box::new(lease()),
        };
        let msg = err.to_string();
        assert!(
            msg.starts_with("stack `web` is locked by alice@box1 (pid 1234) running `apply`"),
            "{msg}"
        );
    }
}
