//! What an operation needs to be resumed after a crash — the exact plan it runs and the
//! containers that ran before it (the revert target) — and the abort flag `cutover abort`
//! raises for it. Stored as JSON owned by the caller.

use rusqlite::{OptionalExtension, params};

use crate::{Store, StoreError, int, sql};

impl Store {
    /// Records the context of operation `op` (before its first step runs).
    pub fn set_operation_context(&self, op: u64, context_json: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO operation_context (op, context_json) VALUES (?1, ?2) \
                 ON CONFLICT (op) DO UPDATE SET context_json = excluded.context_json",
                params![int(op, "operation id")?, context_json],
            )
            .map_err(sql("cannot record the operation's context"))?;
        Ok(())
    }

    /// The context of operation `op`, if it was recorded.
    pub fn operation_context(&self, op: u64) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row(
                "SELECT context_json FROM operation_context WHERE op = ?1",
                params![int(op, "operation id")?],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql("cannot read the operation's context"))
    }

    /// Asks operation `op` to stop at its next step boundary and revert. Returns false when
    /// the operation has no context (it cannot be aborted that way).
    pub fn request_abort(&self, op: u64, by: &str) -> Result<bool, StoreError> {
        let n = self
            .conn
            .execute(
                "UPDATE operation_context SET abort_requested_by = ?2 WHERE op = ?1",
                params![int(op, "operation id")?, by],
            )
            .map_err(sql("cannot request the abort"))?;
        Ok(n == 1)
    }

    /// Who asked operation `op` to abort, if anyone did.
    pub fn abort_requested(&self, op: u64) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT abort_requested_by FROM operation_context WHERE op = ?1",
                params![int(op, "operation id")?],
                |r| r.get::<_, Option<String>>(0),
            )
            .optional()
            .map_err(sql("cannot read the abort flag"))?
            .flatten())
    }
}

#[cfg(test)]
mod tests {
    use crate::testutil::*;
    use crate::{Holder, StoreError};

    #[test]
    fn context_and_abort_flag_belong_to_one_operation() -> Result<(), StoreError> {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = open(tmp.path(), "web");
        let op = store.begin_operation("apply", None, &Holder::current())?;
        let other = store.begin_operation("apply", None, &Holder::current())?;
        assert_eq!(store.operation_context(op.id)?, None);
        assert!(
            !store.request_abort(op.id, "ops@host")?,
            "no context, nothing to abort"
        );
        store.set_operation_context(op.id, r#"{"plan":1}"#)?;
        store.set_operation_context(other.id, r#"{"plan":2}"#)?;
        assert_eq!(
            store.operation_context(op.id)?.as_deref(),
            Some(r#"{"plan":1}"#)
        );
        assert_eq!(store.abort_requested(op.id)?, None);
        assert!(store.request_abort(op.id, "ops@host")?);
        assert_eq!(store.abort_requested(op.id)?.as_deref(), Some("ops@host"));
        assert_eq!(store.abort_requested(other.id)?, None);
        Ok(())
    }
}
