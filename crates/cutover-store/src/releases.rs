//! Releases: numbered revisions of a stack.

use rusqlite::{OptionalExtension, Row, Transaction, params};

use crate::{Millis, NewRelease, Release, ReleaseStatus, Store, StoreError, get_u64, int, sql};

const COLUMNS: &str = "stack, revision, spec_json, images_json, created_by, host, reason, \
                       status, created_at, updated_at, source_json";

fn from_row(row: &Row<'_>) -> rusqlite::Result<Release> {
    Ok(Release {
        stack: row.get("stack")?,
        revision: get_u64(row, "revision")?,
        spec_json: row.get("spec_json")?,
        images_json: row.get("images_json")?,
        created_by: row.get("created_by")?,
        host: row.get("host")?,
        reason: row.get("reason")?,
        status: row.get("status")?,
        created_at: row.get("created_at")?,
        updated_at: row.get("updated_at")?,
        source_json: row.get("source_json")?,
    })
}

/// Marks every deployed release of `stack` except `keep` as superseded.
fn supersede_others(
    tx: &Transaction<'_>,
    stack: &str,
    keep: i64,
    now: Millis,
) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE releases SET status = ?1, updated_at = ?2 \
         WHERE stack = ?3 AND status = ?4 AND revision <> ?5",
        params![
            ReleaseStatus::Superseded,
            now,
            stack,
            ReleaseStatus::Deployed,
            keep
        ],
    )
    .map_err(sql("cannot supersede the deployed release"))?;
    Ok(())
}

impl Store {
    /// Records a new release under the next revision of the stack (1 for the
    /// first), atomically. Inserting it as `Deployed` supersedes the release
    /// that was deployed, in the same transaction.
    pub fn insert_release(&self, new: &NewRelease<'_>) -> Result<Release, StoreError> {
        let now = self.now();
        let tx = self.immediate()?;
        let revision: i64 = tx
            .query_row(
                "SELECT COALESCE(MAX(revision), 0) + 1 FROM releases WHERE stack = ?1",
                [&self.stack],
                |row| row.get(0),
            )
            .map_err(sql("cannot allocate the next revision"))?;
        if new.status == ReleaseStatus::Deployed {
            supersede_others(&tx, &self.stack, revision, now)?;
        }
        tx.execute(
            "INSERT INTO releases (stack, revision, spec_json, images_json, created_by, host, \
             reason, status, created_at, updated_at, source_json) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?10)",
            params![
                self.stack,
                revision,
                new.spec_json,
                new.images_json,
                new.created_by,
                new.host,
                new.reason,
                new.status,
                now,
                new.source_json
            ],
        )
        .map_err(sql("cannot insert the release"))?;
        tx.commit().map_err(sql("cannot commit the new release"))?;
        Ok(Release {
            stack: self.stack.clone(),
            revision: u64::try_from(revision).map_err(|_| StoreError::Corrupt {
                what: format!("negative revision {revision} allocated"),
            })?,
            spec_json: new.spec_json.to_owned(),
            images_json: new.images_json.to_owned(),
            created_by: new.created_by.to_owned(),
            host: new.host.to_owned(),
            reason: new.reason.map(str::to_owned),
            status: new.status,
            created_at: now,
            updated_at: now,
            source_json: new.source_json.map(str::to_owned),
        })
    }

    /// Changes the status of a release. Setting `Deployed` marks every other
    /// deployed release of the stack `Superseded` in the same transaction.
    /// Fails with [`StoreError::ReleaseNotFound`] for an unknown revision.
    pub fn set_release_status(
        &self,
        revision: u64,
        status: ReleaseStatus,
    ) -> Result<(), StoreError> {
        let rev = int(revision, "revision")?;
        let now = self.now();
        let tx = self.immediate()?;
        if status == ReleaseStatus::Deployed {
            supersede_others(&tx, &self.stack, rev, now)?;
        }
        let changed = tx
            .execute(
                "UPDATE releases SET status = ?1, updated_at = ?2 WHERE stack = ?3 AND revision = ?4",
                params![status, now, self.stack, rev],
            )
            .map_err(sql("cannot update the release status"))?;
        if changed == 0 {
            // Dropping `tx` rolls back the superseding.
            return Err(StoreError::ReleaseNotFound {
                stack: self.stack.clone(),
                revision,
            });
        }
        tx.commit()
            .map_err(sql("cannot commit the release status"))?;
        Ok(())
    }

    /// Replaces the images a release records: the IDs actually started are known only once
    /// every image is present, after the release was inserted. Fails with
    /// [`StoreError::ReleaseNotFound`] for an unknown revision.
    pub fn set_release_images(&self, revision: u64, images_json: &str) -> Result<(), StoreError> {
        let rev = int(revision, "revision")?;
        let now = self.now();
        let changed = self
            .conn
            .execute(
                "UPDATE releases SET images_json = ?1, updated_at = ?2 WHERE stack = ?3 AND revision = ?4",
                params![images_json, now, self.stack, rev],
            )
            .map_err(sql("cannot update the release images"))?;
        if changed == 0 {
            return Err(StoreError::ReleaseNotFound {
                stack: self.stack.clone(),
                revision,
            });
        }
        Ok(())
    }

    /// The release with that revision, if it exists.
    pub fn release(&self, revision: u64) -> Result<Option<Release>, StoreError> {
        let rev = int(revision, "revision")?;
        self.conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM releases WHERE stack = ?1 AND revision = ?2"),
                params![self.stack, rev],
                from_row,
            )
            .optional()
            .map_err(sql("cannot read the release"))
    }

    /// Up to `limit` releases, newest (highest revision) first.
    pub fn releases(&self, limit: usize) -> Result<Vec<Release>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM releases WHERE stack = ?1 ORDER BY revision DESC LIMIT ?2"
            ))
            .map_err(sql("cannot list releases"))?;
        let rows = stmt
            .query_map(params![self.stack, crate::limit(limit)], from_row)
            .map_err(sql("cannot list releases"))?;
        rows.collect::<Result<_, _>>()
            .map_err(sql("cannot read a listed release"))
    }

    /// The deployed release with the highest revision (normally the only
    /// deployed one), if any.
    pub fn current_release(&self) -> Result<Option<Release>, StoreError> {
        self.conn
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM releases WHERE stack = ?1 AND status = ?2 \
                     ORDER BY revision DESC LIMIT 1"
                ),
                params![self.stack, ReleaseStatus::Deployed],
                from_row,
            )
            .optional()
            .map_err(sql("cannot read the current release"))
    }
}

#[cfg(test)]
mod tests {
    use crate::testutil::*;
    use crate::{ReleaseStatus, StoreError};

    #[test]
    fn revisions_count_from_one_per_stack() -> Result<(), StoreError> {
        let tmp = tempfile::tempdir().expect("tempdir");
        let web = open(tmp.path(), "web");
        let db = open(tmp.path(), "db");
        let revs: Vec<u64> = (0..3)
            .map(|_| web.insert_release(&new_release(ReleaseStatus::Pending)))
            .map(|r| r.map(|r| r.revision))
            .collect::<Result<_, _>>()?;
        assert_eq!(revs, [1, 2, 3]);
        assert_eq!(
            db.insert_release(&new_release(ReleaseStatus::Pending))?
                .revision,
            1
        );
        assert_eq!(
            web.insert_release(&new_release(ReleaseStatus::Pending))?
                .revision,
            4
        );
        assert_eq!(db.releases(10)?.len(), 1);
        assert!(db.releases(10)?.iter().all(|r| r.stack == "db"));
        assert_eq!(web.releases(10)?.len(), 4);
        assert_eq!(db.release(3)?, None, "web's revision 3 is not db's");
        Ok(())
    }

    #[test]
    fn images_are_replaced_on_that_release_only() -> Result<(), StoreError> {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = open(tmp.path(), "web");
        store.insert_release(&new_release(ReleaseStatus::Deployed))?;
        store.insert_release(&new_release(ReleaseStatus::Pending))?;
        store.set_release_images(2, r#"{"app":"sha256:2"}"#)?;
        assert_eq!(
            store.release(2)?.expect("2").images_json,
            r#"{"app":"sha256:2"}"#
        );
        assert_ne!(
            store.release(1)?.expect("1").images_json,
            r#"{"app":"sha256:2"}"#
        );
        assert!(matches!(
            store.set_release_images(9, "{}"),
            Err(StoreError::ReleaseNotFound { revision: 9, .. })
        ));
        Ok(())
    }

    #[test]
    fn release_round_trips_all_fields() -> Result<(), StoreError> {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = open(tmp.path(), "web");
        store.set_now(1_000);
        let inserted = store.insert_release(&new_release(ReleaseStatus::Failed))?;
        let read = store.release(1)?.expect("release 1");
        assert_eq!(read, inserted);
        assert_eq!(read.stack, "web");
        assert_eq!(read.revision, 1);
        assert_eq!(read.spec_json, r#"{"app":"paperless","version":"2.1"}"#);
        assert_eq!(read.images_json, r#"["ghcr.io/x/y@sha256:abc"]"#);
        assert_eq!(read.created_by, "alice");
        assert_eq!(read.host, "box1");
        assert_eq!(read.reason.as_deref(), Some("monthly upgrade"));
        assert_eq!(read.status, ReleaseStatus::Failed);
        assert_eq!((read.created_at, read.updated_at), (1_000, 1_000));

        let mut no_reason = new_release(ReleaseStatus::Pending);
        no_reason.reason = None;
        store.insert_release(&no_reason)?;
        assert_eq!(store.release(2)?.expect("release 2").reason, None);
        assert_eq!(store.release(3)?, None);
        Ok(())
    }

    #[test]
    fn releases_are_newest_first_and_limited() -> Result<(), StoreError> {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = open(tmp.path(), "web");
        for _ in 0..5 {
            store.insert_release(&new_release(ReleaseStatus::Pending))?;
        }
        let revs: Vec<u64> = store.releases(3)?.iter().map(|r| r.revision).collect();
        assert_eq!(revs, [5, 4, 3]);
        assert!(store.releases(0)?.is_empty());
        assert_eq!(store.releases(usize::MAX)?.len(), 5);
        Ok(())
    }

    #[test]
    fn deploying_supersedes_the_previous_deployment() -> Result<(), StoreError> {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = open(tmp.path(), "web");
        let other = open(tmp.path(), "other");
        other.insert_release(&new_release(ReleaseStatus::Deployed))?;
        assert_eq!(store.current_release()?, None);

        store.insert_release(&new_release(ReleaseStatus::Deployed))?; // 1
        store.insert_release(&new_release(ReleaseStatus::Pending))?; // 2
        store.insert_release(&new_release(ReleaseStatus::Failed))?; // 3
        assert_eq!(store.current_release()?.map(|r| r.revision), Some(1));

        store.set_now(5_000);
        store.set_release_status(2, ReleaseStatus::Deployed)?;
        let status = |rev| -> Result<ReleaseStatus, StoreError> {
            Ok(store.release(rev)?.expect("exists").status)
        };
        assert_eq!(status(1)?, ReleaseStatus::Superseded);
        assert_eq!(store.release(1)?.expect("1").updated_at, 5_000);
        assert_eq!(status(2)?, ReleaseStatus::Deployed);
        assert_eq!(status(3)?, ReleaseStatus::Failed, "untouched");
        assert_eq!(store.current_release()?.map(|r| r.revision), Some(2));

        // Redeploying an older revision supersedes the newer one.
        store.set_release_status(1, ReleaseStatus::Deployed)?;
        assert_eq!(status(2)?, ReleaseStatus::Superseded);
        assert_eq!(store.current_release()?.map(|r| r.revision), Some(1));

        // Inserting as deployed supersedes as well.
        let r4 = store.insert_release(&new_release(ReleaseStatus::Deployed))?;
        assert_eq!(status(1)?, ReleaseStatus::Superseded);
        assert_eq!(store.current_release()?, Some(r4));

        // Another stack is never touched.
        assert_eq!(
            other.release(1)?.expect("other").status,
            ReleaseStatus::Deployed
        );
        Ok(())
    }

    #[test]
    fn status_of_unknown_revision_is_not_found_and_changes_nothing() -> Result<(), StoreError> {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = open(tmp.path(), "web");
        store.insert_release(&new_release(ReleaseStatus::Deployed))?;
        let err = store
            .set_release_status(9, ReleaseStatus::Deployed)
            .expect_err("no revision 9");
        assert!(
            matches!(&err, StoreError::ReleaseNotFound { stack, revision: 9 } if stack == "web"),
            "{err:?}"
        );
        assert_eq!(
            store.release(1)?.expect("1").status,
            ReleaseStatus::Deployed,
            "superseding was rolled back"
        );
        Ok(())
    }

    #[test]
    fn out_of_range_revision_is_an_invalid_argument() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = open(tmp.path(), "web");
        let err = store.release(u64::MAX).expect_err("too big");
        assert!(matches!(err, StoreError::InvalidArgument { .. }), "{err:?}");
    }
}
