//! The traffic proxy's state (routes, upstreams, holds, maintenance pages), so that a
//! restarted `cutover serve` routes exactly as before. Stored as one JSON document per
//! stack: the proxy owns its shape.

use rusqlite::{OptionalExtension, params};

use crate::{Store, StoreError, sql};

impl Store {
    /// Replaces the proxy state of this stack.
    pub fn set_proxy_state(&self, state_json: &str) -> Result<(), StoreError> {
        let now = self.now();
        self.conn
            .execute(
                "INSERT INTO proxy_state (stack, state_json, updated_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (stack) DO UPDATE SET state_json = excluded.state_json, updated_at = excluded.updated_at",
                params![self.stack, state_json, now],
            )
            .map_err(sql("cannot save the proxy state"))?;
        Ok(())
    }

    /// The proxy state of this stack, if one was saved.
    pub fn proxy_state(&self) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row(
                "SELECT state_json FROM proxy_state WHERE stack = ?1",
                params![self.stack],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql("cannot read the proxy state"))
    }
}

#[cfg(test)]
mod tests {
    use crate::StoreError;
    use crate::testutil::*;

    #[test]
    fn proxy_state_is_per_stack_and_replaced() -> Result<(), StoreError> {
        let tmp = tempfile::tempdir().expect("tempdir");
        let web = open(tmp.path(), "web");
        let db = open(tmp.path(), "db");
        assert_eq!(web.proxy_state()?, None);
        web.set_proxy_state(r#"{"v":1}"#)?;
        web.set_proxy_state(r#"{"v":2}"#)?;
        assert_eq!(web.proxy_state()?.as_deref(), Some(r#"{"v":2}"#));
        assert_eq!(db.proxy_state()?, None);
        drop(web);
        let again = open(tmp.path(), "web");
        assert_eq!(again.proxy_state()?.as_deref(), Some(r#"{"v":2}"#));
        Ok(())
    }
}
