//! Approvals: an approval step of an operation waits until a person other than the one who
//! started it approves (`cutover approve`), the crew chief to the driver.

use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::{Store, StoreError, int, sql};

/// An approval an operation asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// The operation that waits.
    pub op: u64,
    /// Its approval step.
    pub step_id: String,
    /// What is to be approved.
    pub text: String,
    /// `user@host` of who approved, once someone has.
    pub approved_by: Option<String>,
}

/// What a second person decided about an approval step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Who decided (`user@host`, or `name (dashboard)`).
    pub by: String,
    /// Approved, or refused.
    pub approved: bool,
    /// What they wrote with it.
    pub comment: Option<String>,
}

impl Store {
    /// Records that step `step_id` of operation `op` waits for an approval (idempotent: an
    /// approval given before a crash stays given).
    pub fn request_approval(&self, op: u64, step_id: &str, text: &str) -> Result<(), StoreError> {
        let now = self.now();
        self.conn
            .execute(
                "INSERT INTO approvals (op, step_id, text, requested_at) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (op, step_id) DO NOTHING",
                params![int(op, "operation id")?, step_id, text, now],
            )
            .map_err(sql("cannot record the approval request"))?;
        Ok(())
    }

    /// Who approved step `step_id` of `op`, once someone has (a refusal is not an approval).
    pub fn approved_by(&self, op: u64, step_id: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .decision(op, step_id)?
            .filter(|d| d.approved)
            .map(|d| d.by))
    }

    /// What was decided about step `step_id` of `op`, once someone has.
    pub fn decision(&self, op: u64, step_id: &str) -> Result<Option<Decision>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT approved_by, rejected, comment FROM approvals WHERE op = ?1 AND step_id = ?2",
                params![int(op, "operation id")?, step_id],
                |r| {
                    Ok(r.get::<_, Option<String>>(0)?.map(|by| Decision {
                        by,
                        approved: r.get::<_, i64>(1).map(|x| x == 0).unwrap_or(true),
                        comment: r.get(2).unwrap_or(None),
                    }))
                },
            )
            .optional()
            .map_err(sql("cannot read the approval"))?
            .flatten())
    }

    /// The approvals operation `op` waits for.
    pub fn pending_approvals(&self, op: u64) -> Result<Vec<Approval>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT op, step_id, text, approved_by FROM approvals WHERE op = ?1 AND approved_by IS NULL ORDER BY requested_at")
            .map_err(sql("cannot list approvals"))?;
        let rows = stmt
            .query_map(params![int(op, "operation id")?], |r| {
                Ok(Approval {
                    op: r.get::<_, i64>(0)? as u64,
                    step_id: r.get(1)?,
                    text: r.get(2)?,
                    approved_by: r.get(3)?,
                })
            })
            .map_err(sql("cannot list approvals"))?;
        rows.collect::<Result<_, _>>()
            .map_err(sql("cannot read an approval"))
    }

    /// Approves every pending approval of `op` as `by`; returns how many.
    pub fn approve(&self, op: u64, by: &str) -> Result<usize, StoreError> {
        self.decide(op, by, true, None)
    }

    /// Decides every pending approval of `op` as `by` — approved, or refused — with a
    /// comment; returns how many. A decision is made once.
    pub fn decide(
        &self,
        op: u64,
        by: &str,
        approved: bool,
        comment: Option<&str>,
    ) -> Result<usize, StoreError> {
        let now = self.now();
        self.conn
            .execute(
                "UPDATE approvals SET approved_by = ?2, approved_at = ?3, rejected = ?4, comment = ?5 \
                 WHERE op = ?1 AND approved_by IS NULL",
                params![
                    int(op, "operation id")?,
                    by,
                    now,
                    i64::from(!approved),
                    comment
                ],
            )
            .map_err(sql("cannot record the decision"))
    }
}

#[cfg(test)]
mod tests {
    use crate::testutil::*;
    use crate::{Holder, StoreError};

    #[test]
    fn an_approval_is_requested_once_and_given_once() -> Result<(), StoreError> {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = open(tmp.path(), "web");
        let op = store.begin_operation("apply", None, &Holder::current())?;
        store.request_approval(op.id, "preflight.approval", "chief approves")?;
        store.request_approval(op.id, "preflight.approval", "chief approves")?;
        assert_eq!(store.pending_approvals(op.id)?.len(), 1);
        assert_eq!(store.approved_by(op.id, "preflight.approval")?, None);
        assert_eq!(store.approve(op.id, "chief@ops")?, 1);
        assert_eq!(store.approve(op.id, "other@ops")?, 0, "given once");
        assert_eq!(
            store.approved_by(op.id, "preflight.approval")?.as_deref(),
            Some("chief@ops")
        );
        assert!(store.pending_approvals(op.id)?.is_empty());
        assert_eq!(
            store.decision(op.id, "preflight.approval")?,
            Some(super::Decision {
                by: "chief@ops".into(),
                approved: true,
                comment: None
            })
        );
        // Requested again after a crash: still approved.
        store.request_approval(op.id, "preflight.approval", "chief approves")?;
        assert_eq!(
            store.approved_by(op.id, "preflight.approval")?.as_deref(),
            Some("chief@ops")
        );
        Ok(())
    }
}

#[cfg(test)]
mod refusal {
    use crate::testutil::*;
    use crate::{Holder, StoreError};

    #[test]
    fn a_refusal_is_a_decision_but_not_an_approval() -> Result<(), StoreError> {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = open(tmp.path(), "web");
        let op = store.begin_operation("apply", None, &Holder::current())?;
        store.request_approval(op.id, "preflight.approval", "chief approves")?;
        assert_eq!(
            store.decide(op.id, "chief@ops", false, Some("not on a Friday"))?,
            1
        );
        assert_eq!(store.approved_by(op.id, "preflight.approval")?, None);
        let d = store
            .decision(op.id, "preflight.approval")?
            .expect("a decision");
        assert!(!d.approved);
        assert_eq!(d.comment.as_deref(), Some("not on a Friday"));
        assert_eq!(store.approve(op.id, "other@ops")?, 0, "decided once");
        assert!(store.pending_approvals(op.id)?.is_empty());
        Ok(())
    }
}
