//! Operations (runs of apply, rollback, ...) and their step journal.

use rusqlite::{OptionalExtension, Row, Transaction, params};

use crate::{
    Holder, Operation, OperationStatus, StepRecord, StepStatus, Store, StoreError, get_opt_u64,
    get_u64, int, sql,
};

/// The journal keeps this many bytes of a step's output (its end).
pub(crate) const OUTPUT_TAIL_BYTES: usize = 8 * 1024;

const OP_COLUMNS: &str = "id, stack, kind, release_revision, status, holder_user, holder_host, \
                          holder_pid, holder_pid_start, started_at, finished_at, error";

const STEP_COLUMNS: &str =
    "op, seq, step_id, phase, title, status, started_at, finished_at, output_tail";

/// Reads a [`Holder`] from the columns `{prefix}user`, `{prefix}host`,
/// `{prefix}pid`, `{prefix}pid_start`.
pub(crate) fn holder_from_row(row: &Row<'_>, prefix: &str) -> rusqlite::Result<Holder> {
    Ok(Holder {
        user: row.get(format!("{prefix}user").as_str())?,
        host: row.get(format!("{prefix}host").as_str())?,
        pid: row.get(format!("{prefix}pid").as_str())?,
        pid_start: get_opt_u64(row, &format!("{prefix}pid_start"))?,
    })
}

/// `pid_start` as an SQLite integer.
pub(crate) fn pid_start_param(holder: &Holder) -> Result<Option<i64>, StoreError> {
    holder
        .pid_start
        .map(|start| int(start, "holder pid start time"))
        .transpose()
}

fn op_from_row(row: &Row<'_>) -> rusqlite::Result<Operation> {
    Ok(Operation {
        id: get_u64(row, "id")?,
        stack: row.get("stack")?,
        kind: row.get("kind")?,
        release: get_opt_u64(row, "release_revision")?,
        status: row.get("status")?,
        holder: holder_from_row(row, "holder_")?,
        started_at: row.get("started_at")?,
        finished_at: row.get("finished_at")?,
        error: row.get("error")?,
    })
}

fn step_from_row(row: &Row<'_>) -> rusqlite::Result<StepRecord> {
    Ok(StepRecord {
        op: get_u64(row, "op")?,
        seq: get_u64(row, "seq")?,
        step_id: row.get("step_id")?,
        phase: row.get("phase")?,
        title: row.get("title")?,
        status: row.get("status")?,
        started_at: row.get("started_at")?,
        finished_at: row.get("finished_at")?,
        output_tail: row.get("output_tail")?,
    })
}

/// The last [`OUTPUT_TAIL_BYTES`] bytes of `output`, starting on a char
/// boundary (so possibly a few bytes shorter).
pub(crate) fn output_tail(output: &str) -> &str {
    let Some(mut start) = output.len().checked_sub(OUTPUT_TAIL_BYTES) else {
        return output;
    };
    while !output.is_char_boundary(start) {
        start += 1;
    }
    &output[start..]
}

impl Store {
    /// Status of operation `id` of this stack, inside `tx`.
    fn op_status(&self, tx: &Transaction<'_>, id: u64) -> Result<OperationStatus, StoreError> {
        tx.query_row(
            "SELECT status FROM operations WHERE id = ?1 AND stack = ?2",
            params![int(id, "operation id")?, self.stack],
            |row| row.get(0),
        )
        .optional()
        .map_err(sql("cannot read the operation status"))?
        .ok_or_else(|| StoreError::OperationNotFound {
            stack: self.stack.clone(),
            id,
        })
    }

    /// Records the start of an operation (status `Running`) and returns it.
    /// `release`, if given, must be a revision of this stack
    /// ([`StoreError::ReleaseNotFound`] otherwise).
    pub fn begin_operation(
        &self,
        kind: &str,
        release: Option<u64>,
        holder: &Holder,
    ) -> Result<Operation, StoreError> {
        let rev = release.map(|r| int(r, "revision")).transpose()?;
        let pid_start = pid_start_param(holder)?;
        let now = self.now();
        let tx = self.immediate()?;
        if let (Some(rev), Some(revision)) = (rev, release) {
            let exists = tx
                .query_row(
                    "SELECT 1 FROM releases WHERE stack = ?1 AND revision = ?2",
                    params![self.stack, rev],
                    |_| Ok(()),
                )
                .optional()
                .map_err(sql("cannot look up the operation's release"))?;
            if exists.is_none() {
                return Err(StoreError::ReleaseNotFound {
                    stack: self.stack.clone(),
                    revision,
                });
            }
        }
        tx.execute(
            "INSERT INTO operations (stack, kind, release_revision, status, holder_user, \
             holder_host, holder_pid, holder_pid_start, started_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                self.stack,
                kind,
                rev,
                OperationStatus::Running,
                holder.user,
                holder.host,
                holder.pid,
                pid_start,
                now
            ],
        )
        .map_err(sql("cannot insert the operation"))?;
        let id = tx.last_insert_rowid();
        tx.commit()
            .map_err(sql("cannot commit the new operation"))?;
        Ok(Operation {
            id: u64::try_from(id).map_err(|_| StoreError::Corrupt {
                what: format!("negative operation id {id} allocated"),
            })?,
            stack: self.stack.clone(),
            kind: kind.to_owned(),
            release,
            status: OperationStatus::Running,
            holder: holder.clone(),
            started_at: now,
            finished_at: None,
            error: None,
        })
    }

    /// Records the end of a running operation. `status` must not be `Running`;
    /// an operation that already finished cannot be finished again
    /// ([`StoreError::OperationFinished`]).
    pub fn finish_operation(
        &self,
        id: u64,
        status: OperationStatus,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        if status == OperationStatus::Running {
            return Err(StoreError::InvalidArgument {
                what: format!("operation {id} cannot finish with status `running`"),
            });
        }
        let now = self.now();
        let tx = self.immediate()?;
        match self.op_status(&tx, id)? {
            OperationStatus::Running => {}
            done => return Err(StoreError::OperationFinished { id, status: done }),
        }
        tx.execute(
            "UPDATE operations SET status = ?1, finished_at = ?2, error = ?3 WHERE id = ?4",
            params![status, now, error, int(id, "operation id")?],
        )
        .map_err(sql("cannot finish the operation"))?;
        tx.commit()
            .map_err(sql("cannot commit the operation's end"))?;
        Ok(())
    }

    /// Makes an operation whose revert failed running again, so `resume` can finish its
    /// revert once the cause is fixed. Only a `revert_failed` operation can be reopened.
    pub fn reopen_operation(&self, id: u64) -> Result<(), StoreError> {
        let tx = self.immediate()?;
        match self.op_status(&tx, id)? {
            OperationStatus::RevertFailed => {}
            done => return Err(StoreError::OperationFinished { id, status: done }),
        }
        tx.execute(
            "UPDATE operations SET status = ?1, finished_at = NULL WHERE id = ?2",
            params![OperationStatus::Running, int(id, "operation id")?],
        )
        .map_err(sql("cannot reopen the operation"))?;
        tx.commit()
            .map_err(sql("cannot commit the operation's reopening"))?;
        Ok(())
    }

    /// The operation with that id, if it exists and belongs to this stack.
    pub fn operation(&self, id: u64) -> Result<Option<Operation>, StoreError> {
        self.conn
            .query_row(
                &format!("SELECT {OP_COLUMNS} FROM operations WHERE id = ?1 AND stack = ?2"),
                params![int(id, "operation id")?, self.stack],
                op_from_row,
            )
            .optional()
            .map_err(sql("cannot read the operation"))
    }

    /// Up to `limit` operations of this stack, newest first.
    pub fn operations(&self, limit: usize) -> Result<Vec<Operation>, StoreError> {
        self.query_ops(
            &format!(
                "SELECT {OP_COLUMNS} FROM operations WHERE stack = ?1 ORDER BY id DESC LIMIT ?2"
            ),
            params![self.stack, crate::limit(limit)],
        )
    }

    /// Operations of this stack still `Running` (in progress, or their process
    /// died), newest first.
    pub fn unfinished_operations(&self) -> Result<Vec<Operation>, StoreError> {
        self.query_ops(
            &format!(
                "SELECT {OP_COLUMNS} FROM operations WHERE stack = ?1 AND status = ?2 \
                 ORDER BY id DESC"
            ),
            params![self.stack, OperationStatus::Running],
        )
    }

    fn query_ops(
        &self,
        query: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<Operation>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(query)
            .map_err(sql("cannot list operations"))?;
        let rows = stmt
            .query_map(params, op_from_row)
            .map_err(sql("cannot list operations"))?;
        rows.collect::<Result<_, _>>()
            .map_err(sql("cannot read a listed operation"))
    }

    /// Journals that a step is about to run (call it BEFORE running the step)
    /// and returns its sequence number within the operation (1, 2, ...). The
    /// operation must belong to this stack and still be running.
    pub fn step_started(
        &self,
        op: u64,
        step_id: &str,
        phase: &str,
        title: &str,
    ) -> Result<u64, StoreError> {
        let op_id = int(op, "operation id")?;
        let now = self.now();
        let tx = self.immediate()?;
        match self.op_status(&tx, op)? {
            OperationStatus::Running => {}
            done => {
                return Err(StoreError::OperationFinished {
                    id: op,
                    status: done,
                });
            }
        }
        let seq: i64 = tx
            .query_row(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM journal WHERE op = ?1",
                [op_id],
                |row| row.get(0),
            )
            .map_err(sql("cannot allocate the next step number"))?;
        tx.execute(
            "INSERT INTO journal (op, seq, step_id, phase, title, status, started_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![op_id, seq, step_id, phase, title, StepStatus::Started, now],
        )
        .map_err(sql("cannot journal the step start"))?;
        tx.commit().map_err(sql("cannot commit the step start"))?;
        u64::try_from(seq).map_err(|_| StoreError::Corrupt {
            what: format!("negative step number {seq} allocated for operation {op}"),
        })
    }

    /// Journals how a started step ended, keeping the last 8 KiB of its
    /// output (cut on a char boundary). `status` must not be `Started`; a
    /// step can finish only once ([`StoreError::StepFinished`]).
    pub fn step_finished(
        &self,
        op: u64,
        seq: u64,
        status: StepStatus,
        output_tail: &str,
    ) -> Result<(), StoreError> {
        if status == StepStatus::Started {
            return Err(StoreError::InvalidArgument {
                what: format!("step {seq} of operation {op} cannot finish with status `started`"),
            });
        }
        let op_id = int(op, "operation id")?;
        let seq_no = int(seq, "step number")?;
        let now = self.now();
        let tx = self.immediate()?;
        let current: Option<StepStatus> = tx
            .query_row(
                "SELECT j.status FROM journal j JOIN operations o ON o.id = j.op \
                 WHERE j.op = ?1 AND j.seq = ?2 AND o.stack = ?3",
                params![op_id, seq_no, self.stack],
                |row| row.get(0),
            )
            .optional()
            .map_err(sql("cannot read the step status"))?;
        match current {
            None => return Err(StoreError::StepNotFound { op, seq }),
            Some(StepStatus::Started) => {}
            Some(done) => {
                return Err(StoreError::StepFinished {
                    op,
                    seq,
                    status: done,
                });
            }
        }
        tx.execute(
            "UPDATE journal SET status = ?1, finished_at = ?2, output_tail = ?3 \
             WHERE op = ?4 AND seq = ?5",
            params![status, now, self::output_tail(output_tail), op_id, seq_no],
        )
        .map_err(sql("cannot journal the step end"))?;
        tx.commit().map_err(sql("cannot commit the step end"))?;
        Ok(())
    }

    /// The journal of an operation of this stack, in step order (empty for an
    /// unknown operation).
    pub fn journal(&self, op: u64) -> Result<Vec<StepRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {STEP_COLUMNS} FROM journal \
                 WHERE op = ?1 AND op IN (SELECT id FROM operations WHERE stack = ?2) \
                 ORDER BY seq"
            ))
            .map_err(sql("cannot read the journal"))?;
        let rows = stmt
            .query_map(params![int(op, "operation id")?, self.stack], step_from_row)
            .map_err(sql("cannot read the journal"))?;
        rows.collect::<Result<_, _>>()
            .map_err(sql("cannot read a journal step"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ReleaseStatus;
    use crate::testutil::*;

    #[test]
    fn operation_lifecycle_round_trips() -> Result<(), StoreError> {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = open(tmp.path(), "web");
        store.insert_release(&new_release(ReleaseStatus::Pending))?;
        let holder = remote("alice");
        store.set_now(10);
        let op = store.begin_operation("apply", Some(1), &holder)?;
        assert_eq!(op.status, OperationStatus::Running);
        assert_eq!(op.release, Some(1));
        assert_eq!(op.holder, holder);
        assert_eq!(op.started_at, 10);
        assert_eq!(store.operation(op.id)?, Some(op.clone()));
        assert_eq!(store.unfinished_operations()?, vec![op.clone()]);

        store.set_now(20);
        store.finish_operation(op.id, OperationStatus::RevertFailed, Some("disk full"))?;
        let done = store.operation(op.id)?.expect("exists");
        assert_eq!(done.status, OperationStatus::RevertFailed);
        assert_eq!(done.finished_at, Some(20));
        assert_eq!(done.error.as_deref(), Some("disk full"));
        assert_eq!(done.started_at, 10);
        assert!(store.unfinished_operations()?.is_empty());

        let again = store
            .finish_operation(op.id, OperationStatus::Succeeded, None)
            .expect_err("already finished");
        assert!(
            matches!(
                again,
                StoreError::OperationFinished {
                    status: OperationStatus::RevertFailed,
                    ..
                }
            ),
            "{again:?}"
        );
        Ok(())
    }

    #[test]
    fn operations_are_per_stack_and_newest_first() -> Result<(), StoreError> {
        let tmp = tempfile::tempdir().expect("tempdir");
        let web = open(tmp.path(), "web");
        let db = open(tmp.path(), "db");
        let h = remote("alice");
        let a = web.begin_operation("apply", None, &h)?;
        let b = db.begin_operation("apply", None, &h)?;
        let c = web.begin_operation("rollback", None, &h)?;
        assert_ne!(a.id, b.id);
        let ids: Vec<u64> = web.operations(10)?.iter().map(|o| o.id).collect();
        assert_eq!(ids, [c.id, a.id]);
        assert_eq!(web.operations(1)?.len(), 1);
        assert_eq!(web.operation(b.id)?, None, "db's operation is not web's");
        let err = web
            .finish_operation(b.id, OperationStatus::Succeeded, None)
            .expect_err("other stack");
        assert!(
            matches!(err, StoreError::OperationNotFound { .. }),
            "{err:?}"
        );
        web.finish_operation(a.id, OperationStatus::Aborted, None)?;
        let unfinished: Vec<u64> = web.unfinished_operations()?.iter().map(|o| o.id).collect();
        assert_eq!(unfinished, [c.id]);
        Ok(())
    }

    #[test]
    fn begin_operation_checks_the_release() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = open(tmp.path(), "web");
        let err = store
            .begin_operation("apply", Some(3), &remote("alice"))
            .expect_err("no release 3");
        assert!(
            matches!(err, StoreError::ReleaseNotFound { revision: 3, .. }),
            "{err:?}"
        );
        assert!(store.operations(10).expect("list").is_empty());
    }

    #[test]
    fn finishing_as_running_is_refused() -> Result<(), StoreError> {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = open(tmp.path(), "web");
        let op = store.begin_operation("apply", None, &remote("alice"))?;
        let err = store
            .finish_operation(op.id, OperationStatus::Running, None)
            .expect_err("running is not an end");
        assert!(matches!(err, StoreError::InvalidArgument { .. }), "{err:?}");
        Ok(())
    }

    #[test]
    fn journal_records_start_then_finish_in_order() -> Result<(), StoreError> {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = open(tmp.path(), "web");
        let op = store.begin_operation("apply", None, &remote("alice"))?;
        let other = store.begin_operation("apply", None, &remote("bob"))?;

        store.set_now(100);
        let s1 = store.step_started(op.id, "preflight.disk", "preflight", "Check disk space")?;
        // Started is on disk before the step runs.
        let journal = store.journal(op.id)?;
        assert_eq!(journal.len(), 1);
        assert_eq!(journal[0].status, StepStatus::Started);
        assert_eq!(journal[0].finished_at, None);
        assert_eq!(journal[0].output_tail, "");

        store.set_now(150);
        store.step_finished(op.id, s1, StepStatus::Succeeded, "ok\n")?;
        let s2 = store.step_started(op.id, "quiesce.stop", "quiesce", "Stop app")?;
        assert_eq!(
            store.step_started(other.id, "x", "p", "t")?,
            1,
            "per operation"
        );
        store.set_now(180);
        store.step_finished(op.id, s2, StepStatus::Failed, "boom")?;
        let s3 = store.step_started(op.id, "revert.start", "revert", "Start app")?;
        assert_eq!((s1, s2, s3), (1, 2, 3));

        let journal = store.journal(op.id)?;
        let seqs: Vec<u64> = journal.iter().map(|s| s.seq).collect();
        assert_eq!(seqs, [1, 2, 3]);
        assert_eq!(
            journal[0],
            StepRecord {
                op: op.id,
                seq: 1,
                step_id: "preflight.disk".to_owned(),
                phase: "preflight".to_owned(),
                title: "Check disk space".to_owned(),
                status: StepStatus::Succeeded,
                started_at: 100,
                finished_at: Some(150),
                output_tail: "ok\n".to_owned(),
            }
        );
        assert_eq!(journal[1].status, StepStatus::Failed);
        assert_eq!(journal[1].output_tail, "boom");
        assert_eq!(journal[2].status, StepStatus::Started);
        assert_eq!(store.journal(other.id)?.len(), 1);
        Ok(())
    }

    #[test]
    fn journal_refuses_misuse() -> Result<(), StoreError> {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = open(tmp.path(), "web");
        let op = store.begin_operation("apply", None, &remote("alice"))?;
        let seq = store.step_started(op.id, "a", "p", "t")?;

        let err = store
            .step_finished(op.id, seq + 1, StepStatus::Succeeded, "")
            .expect_err("no such step");
        assert!(
            matches!(err, StoreError::StepNotFound { seq: 2, .. }),
            "{err:?}"
        );
        let err = store
            .step_finished(op.id, seq, StepStatus::Started, "")
            .expect_err("started is not an end");
        assert!(matches!(err, StoreError::InvalidArgument { .. }), "{err:?}");

        store.step_finished(op.id, seq, StepStatus::Skipped, "")?;
        let err = store
            .step_finished(op.id, seq, StepStatus::Failed, "")
            .expect_err("twice");
        assert!(
            matches!(
                err,
                StoreError::StepFinished {
                    status: StepStatus::Skipped,
                    ..
                }
            ),
            "{err:?}"
        );

        let err = store
            .step_started(op.id + 100, "a", "p", "t")
            .expect_err("unknown op");
        assert!(
            matches!(err, StoreError::OperationNotFound { .. }),
            "{err:?}"
        );

        store.finish_operation(op.id, OperationStatus::Succeeded, None)?;
        let err = store
            .step_started(op.id, "late", "p", "t")
            .expect_err("finished op");
        assert!(
            matches!(err, StoreError::OperationFinished { .. }),
            "{err:?}"
        );
        assert_eq!(store.journal(op.id + 100)?, vec![]);
        Ok(())
    }

    #[test]
    fn output_tail_keeps_the_last_8_kib_on_a_char_boundary() -> Result<(), StoreError> {
        let short = "short output";
        assert_eq!(output_tail(short), short);
        let exact = "x".repeat(OUTPUT_TAIL_BYTES);
        assert_eq!(output_tail(&exact), exact);

        // "é" is 2 bytes and "€" 3: with an odd prefix the 8 KiB cut falls
        // inside a multibyte char and must move forward to the next boundary.
        let mut long = String::from("HEAD");
        long.push_str(&"€".repeat(5000));
        long.push_str("é-END");
        assert!(long.len() > OUTPUT_TAIL_BYTES);
        let cut = long.len() - OUTPUT_TAIL_BYTES;
        assert!(!long.is_char_boundary(cut), "test must cut inside a char");
        let tail = output_tail(&long);
        assert!(tail.len() < OUTPUT_TAIL_BYTES && tail.len() > OUTPUT_TAIL_BYTES - 4);
        assert!(long.ends_with(tail));
        assert!(tail.ends_with("€é-END"));
        assert!(tail.starts_with('€'));

        let tmp = tempfile::tempdir().expect("tempdir");
        let store = open(tmp.path(), "web");
        let op = store.begin_operation("apply", None, &remote("alice"))?;
        let seq = store.step_started(op.id, "pull", "upgrade", "Pull")?;
        store.step_finished(op.id, seq, StepStatus::Succeeded, &long)?;
        let stored = &store.journal(op.id)?[0].output_tail;
        assert_eq!(stored, tail);
        assert!(stored.len() <= OUTPUT_TAIL_BYTES);
        Ok(())
    }
}
