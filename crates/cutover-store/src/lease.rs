//! The per-stack lease: one operation at a time, with expiry, a named
//! holder, dead-holder detection and an audit trail.

use std::time::Duration;

use rusqlite::{OptionalExtension, Row, Transaction, params};

use crate::operations::{holder_from_row, pid_start_param};
use crate::time::duration_millis;
use crate::{Holder, Lease, LeaseEvent, LeaseGrant, Millis, Store, StoreError, proc, sql};

const LEASE_COLUMNS: &str = "stack, token, holder_user, holder_host, holder_pid, \
                             holder_pid_start, operation, acquired_at, renewed_at, expires_at";

fn lease_from_row(row: &Row<'_>) -> rusqlite::Result<Lease> {
    Ok(Lease {
        stack: row.get("stack")?,
        token: row.get("token")?,
        holder: holder_from_row(row, "holder_")?,
        operation: row.get("operation")?,
        acquired_at: row.get("acquired_at")?,
        renewed_at: row.get("renewed_at")?,
        expires_at: row.get("expires_at")?,
    })
}

fn event_from_row(row: &Row<'_>) -> rusqlite::Result<LeaseEvent> {
    let previous = match row.get::<_, Option<String>>("prev_user")? {
        Some(_) => Some(holder_from_row(row, "prev_")?),
        None => None,
    };
    Ok(LeaseEvent {
        at: row.get("at")?,
        kind: row.get("kind")?,
        stack: row.get("stack")?,
        holder: holder_from_row(row, "holder_")?,
        previous,
    })
}

/// A TTL in milliseconds; zero is refused (the lease would be born expired).
fn ttl_millis(ttl: Duration) -> Result<i64, StoreError> {
    match duration_millis(ttl) {
        0 => Err(StoreError::InvalidArgument {
            what: format!("lease TTL must be at least 1 ms, got {ttl:?}"),
        }),
        ms => Ok(ms),
    }
}

/// Why an existing lease may be replaced, or `None` if it must be respected.
///
/// A holder on this host whose process is gone (or whose pid now belongs to
/// another process) is dead however long its lease had left; otherwise the
/// lease stands until `expires_at <= now`.
fn takeover_kind(existing: &Lease, local_host: &str, now: Millis) -> Option<&'static str> {
    let holder = &existing.holder;
    if holder.host == local_host && !proc::pid_alive(holder.pid, holder.pid_start) {
        Some(LeaseEvent::DEAD_HOLDER_TAKEOVER)
    } else if existing.is_expired(now) {
        Some(LeaseEvent::EXPIRED_TAKEOVER)
    } else {
        None
    }
}

impl Store {
    fn lease_in(&self, tx: &Transaction<'_>) -> Result<Option<Lease>, StoreError> {
        tx.query_row(
            &format!("SELECT {LEASE_COLUMNS} FROM leases WHERE stack = ?1"),
            [&self.stack],
            lease_from_row,
        )
        .optional()
        .map_err(sql("cannot read the lease"))
    }

    fn record_event(
        &self,
        tx: &Transaction<'_>,
        at: Millis,
        kind: &str,
        holder: &Holder,
        previous: Option<&Holder>,
    ) -> Result<(), StoreError> {
        tx.execute(
            "INSERT INTO lease_events (at, kind, stack, holder_user, holder_host, holder_pid, \
             holder_pid_start, prev_user, prev_host, prev_pid, prev_pid_start) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                at,
                kind,
                self.stack,
                holder.user,
                holder.host,
                holder.pid,
                pid_start_param(holder)?,
                previous.map(|p| &p.user),
                previous.map(|p| &p.host),
                previous.map(|p| p.pid),
                previous.map(pid_start_param).transpose()?.flatten(),
            ],
        )
        .map_err(sql("cannot record the lease event"))?;
        Ok(())
    }

    /// Takes the stack's lease for `holder` running `operation`, valid for
    /// `ttl` unless renewed.
    ///
    /// In one `BEGIN IMMEDIATE` transaction (so racing processes cannot both
    /// win): no lease → granted. An existing lease — whoever holds it, this
    /// very process included — is replaced only if its holder is on this host
    /// and its process is gone (`dead_holder_takeover`), or it has expired
    /// (`expired_takeover`); [`LeaseGrant::took_over`] then names it. Otherwise
    /// [`StoreError::LeaseHeld`]. Every grant is recorded as a [`LeaseEvent`].
    pub fn acquire_lease(
        &self,
        holder: &Holder,
        operation: &str,
        ttl: Duration,
    ) -> Result<LeaseGrant, StoreError> {
        let ttl_ms = ttl_millis(ttl)?;
        let pid_start = pid_start_param(holder)?;
        let local_host = proc::hostname();
        let tx = self.immediate()?;
        // Read the clock after the write lock is ours: waiting for it may
        // have taken a while.
        let now = self.now();
        let (kind, took_over) = match self.lease_in(&tx)? {
            None => (LeaseEvent::ACQUIRED, None),
            Some(existing) => match takeover_kind(&existing, &local_host, now) {
                Some(kind) => (kind, Some(existing)),
                None => {
                    return Err(StoreError::LeaseHeld {
                        lease: Box::new(existing),
                    });
                }
            },
        };
        let lease = Lease {
            stack: self.stack.clone(),
            token: proc::new_token(),
            holder: holder.clone(),
            operation: operation.to_owned(),
            acquired_at: now,
            renewed_at: now,
            expires_at: now.saturating_add(ttl_ms),
        };
        tx.execute(
            &format!(
                "INSERT OR REPLACE INTO leases ({LEASE_COLUMNS}) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9)"
            ),
            params![
                lease.stack,
                lease.token,
                holder.user,
                holder.host,
                holder.pid,
                pid_start,
                lease.operation,
                now,
                lease.expires_at
            ],
        )
        .map_err(sql("cannot write the lease"))?;
        self.record_event(
            &tx,
            now,
            kind,
            holder,
            took_over.as_ref().map(|l| &l.holder),
        )?;
        tx.commit().map_err(sql("cannot commit the lease"))?;
        Ok(LeaseGrant { lease, took_over })
    }

    /// Extends the lease held by `token` to `ttl` from now and returns it.
    ///
    /// [`StoreError::LeaseLost`] if the token no longer holds the lease
    /// (released, forced, or expired and taken over). A lease that expired
    /// but was not taken over by anyone is still held, so renewing it works.
    pub fn renew_lease(&self, token: &str, ttl: Duration) -> Result<Lease, StoreError> {
        let ttl_ms = ttl_millis(ttl)?;
        let tx = self.immediate()?;
        let now = self.now();
        let mut lease = match self.lease_in(&tx)? {
            Some(lease) if lease.token == token => lease,
            _ => {
                return Err(StoreError::LeaseLost {
                    stack: self.stack.clone(),
                });
            }
        };
        lease.renewed_at = now;
        lease.expires_at = now.saturating_add(ttl_ms);
        tx.execute(
            "UPDATE leases SET renewed_at = ?1, expires_at = ?2 WHERE stack = ?3 AND token = ?4",
            params![lease.renewed_at, lease.expires_at, self.stack, token],
        )
        .map_err(sql("cannot renew the lease"))?;
        tx.commit()
            .map_err(sql("cannot commit the lease renewal"))?;
        Ok(lease)
    }

    /// Gives up the lease held by `token` and records a `released` event.
    /// Idempotent: does nothing if `token` does not hold it (any more).
    pub fn release_lease(&self, token: &str) -> Result<(), StoreError> {
        let tx = self.immediate()?;
        let now = self.now();
        let Some(lease) = self.lease_in(&tx)?.filter(|l| l.token == token) else {
            return Ok(());
        };
        tx.execute(
            "DELETE FROM leases WHERE stack = ?1 AND token = ?2",
            params![self.stack, token],
        )
        .map_err(sql("cannot delete the lease"))?;
        self.record_event(&tx, now, LeaseEvent::RELEASED, &lease.holder, None)?;
        tx.commit()
            .map_err(sql("cannot commit the lease release"))?;
        Ok(())
    }

    /// The stack's lease as stored, if any — possibly already expired (see
    /// [`Lease::is_expired`]).
    pub fn current_lease(&self) -> Result<Option<Lease>, StoreError> {
        self.conn
            .query_row(
                &format!("SELECT {LEASE_COLUMNS} FROM leases WHERE stack = ?1"),
                [&self.stack],
                lease_from_row,
            )
            .optional()
            .map_err(sql("cannot read the lease"))
    }

    /// The stack's lease when someone holds it now: not expired, and its holder's process
    /// alive (when it is on this host). A stale lease, which the next taker takes over, is
    /// `None`.
    pub fn live_lease(&self) -> Result<Option<Lease>, StoreError> {
        let now = self.now();
        let host = proc::hostname();
        Ok(self
            .current_lease()?
            .filter(|l| takeover_kind(l, &host, now).is_none()))
    }

    /// Removes the stack's lease whoever holds it, records a `forced` event
    /// by `by` (also when there was no lease, as an audit of the attempt) and
    /// returns the removed lease.
    pub fn force_unlock(&self, by: &Holder) -> Result<Option<Lease>, StoreError> {
        let tx = self.immediate()?;
        let now = self.now();
        let removed = self.lease_in(&tx)?;
        tx.execute("DELETE FROM leases WHERE stack = ?1", [&self.stack])
            .map_err(sql("cannot delete the lease"))?;
        self.record_event(
            &tx,
            now,
            LeaseEvent::FORCED,
            by,
            removed.as_ref().map(|l| &l.holder),
        )?;
        tx.commit()
            .map_err(sql("cannot commit the forced unlock"))?;
        Ok(removed)
    }

    /// Up to `limit` lease events of this stack, newest first.
    pub fn lease_events(&self, limit: usize) -> Result<Vec<LeaseEvent>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT at, kind, stack, holder_user, holder_host, holder_pid, holder_pid_start, \
                 prev_user, prev_host, prev_pid, prev_pid_start \
                 FROM lease_events WHERE stack = ?1 ORDER BY id DESC LIMIT ?2",
            )
            .map_err(sql("cannot list lease events"))?;
        let rows = stmt
            .query_map(params![self.stack, crate::limit(limit)], event_from_row)
            .map_err(sql("cannot list lease events"))?;
        rows.collect::<Result<_, _>>()
            .map_err(sql("cannot read a lease event"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use std::process::Command;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Barrier};

    const MINUTE: Duration = Duration::from_secs(60);

    /// A holder on this host that is alive: this test process, under another
    /// user name so it is distinguishable.
    fn local_live(user: &str) -> Holder {
        Holder {
            user: user.to_owned(),
            ..Holder::current()
        }
    }

    fn kinds(store: &Store) -> Vec<String> {
        store
            .lease_events(usize::MAX)
            .expect("events")
            .into_iter()
            .map(|e| e.kind)
            .collect()
    }

    #[test]
    fn first_acquire_is_granted_and_recorded() -> Result<(), StoreError> {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = open(tmp.path(), "web");
        store.set_now(1_000);
        let alice = remote("alice");
        let grant = store.acquire_lease(&alice, "apply", MINUTE)?;
        assert_eq!(grant.took_over, None);
        assert_eq!(grant.lease.holder, alice);
        assert_eq!(grant.lease.operation, "apply");
        assert_eq!(grant.lease.stack, "web");
        assert_eq!(
            (
                grant.lease.acquired_at,
                grant.lease.renewed_at,
                grant.lease.expires_at
            ),
            (1_000, 1_000, 61_000)
        );
        assert_eq!(store.current_lease()?, Some(grant.lease));
        let events = store.lease_events(10)?;
        assert_eq!(
            events,
            vec![LeaseEvent {
                at: 1_000,
                kind: "acquired".to_owned(),
                stack: "web".to_owned(),
                holder: alice,
                previous: None,
            }]
        );
        Ok(())
    }

    #[test]
    fn live_holder_blocks_and_is_named() -> Result<(), StoreError> {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = open(tmp.path(), "web");
        let alice = local_live("alice");
        let held = store.acquire_lease(&alice, "apply", MINUTE)?.lease;
        let err = store
            .acquire_lease(&remote("bob"), "rollback", MINUTE)
            .expect_err("alice is alive");
        match &err {
            StoreError::LeaseHeld { lease } => assert_eq!(**lease, held),
            other => panic!("expected LeaseHeld, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains("alice"), "{msg}");
        assert!(msg.contains(&alice.host), "{msg}");
        assert!(msg.contains(&format!("pid {}", alice.pid)), "{msg}");
        assert!(msg.contains("`apply`"), "{msg}");
        assert!(msg.contains("expires in"), "{msg}");
        assert_eq!(store.current_lease()?, Some(held));
        assert_eq!(kinds(&store), ["acquired"], "a refusal records nothing");
        Ok(())
    }

    #[test]
    fn the_same_process_cannot_acquire_twice() -> Result<(), StoreError> {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = open(tmp.path(), "web");
        let me = Holder::current();
        store.acquire_lease(&me, "apply", MINUTE)?;
        let err = store
            .acquire_lease(&me, "apply", MINUTE)
            .expect_err("not re-entrant");
        assert!(matches!(err, StoreError::LeaseHeld { .. }), "{err:?}");
        Ok(())
    }

    #[test]
    fn remote_holder_blocks_until_expiry_then_is_taken_over() -> Result<(), StoreError> {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = open(tmp.path(), "web");
        let alice = remote("alice");
        let bob = remote("bob");
        store.set_now(1_000);
        let old = store
            .acquire_lease(&alice, "apply", Duration::from_secs(30))?
            .lease;

        store.set_now(30_999);
        let err = store
            .acquire_lease(&bob, "apply", MINUTE)
            .expect_err("1 ms left");
        assert!(matches!(err, StoreError::LeaseHeld { .. }), "{err:?}");

        store.set_now(31_000);
        let grant = store.acquire_lease(&bob, "rollback", MINUTE)?;
        assert_eq!(grant.took_over, Some(old.clone()));
        assert_eq!(grant.lease.holder, bob);
        assert_ne!(grant.lease.token, old.token);
        assert_eq!(grant.lease.expires_at, 91_000);
        let newest = &store.lease_events(1)?[0];
        assert_eq!(newest.kind, LeaseEvent::EXPIRED_TAKEOVER);
        assert_eq!(newest.at, 31_000);
        assert_eq!(newest.holder, bob);
        assert_eq!(newest.previous, Some(alice));

        // The old holder finds out when it next renews.
        let err = store.renew_lease(&old.token, MINUTE).expect_err("lost");
        assert!(
            matches!(&err, StoreError::LeaseLost { stack } if stack == "web"),
            "{err:?}"
        );
        Ok(())
    }

    #[test]
    fn dead_local_holder_is_taken_over_before_expiry() -> Result<(), StoreError> {
        if !std::path::Path::new("/proc/self/stat").exists() {
            return Ok(()); // no procfs: liveness is unknown, holders count as alive
        }
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = open(tmp.path(), "web");
        let mut child = Command::new("true").spawn().expect("spawn true");
        let pid = child.id();
        let pid_start = proc::process_start(pid); // readable while unreaped
        child.wait().expect("wait");
        let ghost = Holder {
            user: "ghost".to_owned(),
            host: proc::hostname(),
            pid,
            pid_start,
        };
        store.set_now(1_000);
        let old = store
            .acquire_lease(&ghost, "apply", Duration::from_secs(3600))?
            .lease;

        store.set_now(2_000);
        let bob = local_live("bob");
        let grant = store.acquire_lease(&bob, "resume", MINUTE)?;
        assert_eq!(grant.took_over, Some(old));
        let newest = &store.lease_events(1)?[0];
        assert_eq!(newest.kind, LeaseEvent::DEAD_HOLDER_TAKEOVER);
        assert_eq!(newest.previous, Some(ghost));
        assert_eq!(newest.holder, bob);
        Ok(())
    }

    #[test]
    fn dead_pid_on_another_host_is_not_judged() -> Result<(), StoreError> {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = open(tmp.path(), "web");
        let mut child = Command::new("true").spawn().expect("spawn true");
        let pid = child.id();
        child.wait().expect("wait");
        let elsewhere = Holder {
            pid,
            ..remote("alice")
        };
        store.acquire_lease(&elsewhere, "apply", MINUTE)?;
        let err = store
            .acquire_lease(&remote("bob"), "apply", MINUTE)
            .expect_err("remote pid says nothing about liveness");
        assert!(matches!(err, StoreError::LeaseHeld { .. }), "{err:?}");
        Ok(())
    }

    #[test]
    fn renew_extends_only_with_the_current_token() -> Result<(), StoreError> {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = open(tmp.path(), "web");
        store.set_now(1_000);
        let lease = store
            .acquire_lease(&remote("alice"), "apply", MINUTE)?
            .lease;
        store.set_now(50_000);
        let renewed = store.renew_lease(&lease.token, MINUTE)?;
        assert_eq!(renewed.acquired_at, 1_000);
        assert_eq!(renewed.renewed_at, 50_000);
        assert_eq!(renewed.expires_at, 110_000);
        assert_eq!(store.current_lease()?, Some(renewed));

        // Expired but nobody took it: still ours.
        store.set_now(200_000);
        assert_eq!(store.renew_lease(&lease.token, MINUTE)?.expires_at, 260_000);

        let err = store
            .renew_lease("not-the-token", MINUTE)
            .expect_err("stale");
        assert!(matches!(err, StoreError::LeaseLost { .. }), "{err:?}");
        store.release_lease(&lease.token)?;
        let err = store
            .renew_lease(&lease.token, MINUTE)
            .expect_err("released");
        assert!(matches!(err, StoreError::LeaseLost { .. }), "{err:?}");
        Ok(())
    }

    #[test]
    fn release_is_idempotent_and_ignores_foreign_tokens() -> Result<(), StoreError> {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = open(tmp.path(), "web");
        let alice = remote("alice");
        let lease = store.acquire_lease(&alice, "apply", MINUTE)?.lease;

        store.release_lease("someone-elses-token")?;
        assert_eq!(
            store.current_lease()?,
            Some(lease.clone()),
            "not ours to release"
        );

        store.release_lease(&lease.token)?;
        assert_eq!(store.current_lease()?, None);
        store.release_lease(&lease.token)?;
        assert_eq!(kinds(&store), ["released", "acquired"], "one release event");
        let released = &store.lease_events(1)?[0];
        assert_eq!(released.holder, alice);

        // Free again.
        store.acquire_lease(&remote("bob"), "apply", MINUTE)?;
        Ok(())
    }

    #[test]
    fn release_with_an_old_token_keeps_the_new_holders_lease() -> Result<(), StoreError> {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = open(tmp.path(), "web");
        store.set_now(0);
        let old = store
            .acquire_lease(&remote("alice"), "apply", MINUTE)?
            .lease;
        store.set_now(60_000);
        let new = store.acquire_lease(&remote("bob"), "apply", MINUTE)?.lease;
        store.release_lease(&old.token)?;
        assert_eq!(store.current_lease()?, Some(new));
        Ok(())
    }

    #[test]
    fn force_unlock_removes_any_lease_and_records_it() -> Result<(), StoreError> {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = open(tmp.path(), "web");
        let alice = local_live("alice");
        let admin = remote("admin");
        let lease = store.acquire_lease(&alice, "apply", MINUTE)?.lease;
        store.set_now(5_000);
        assert_eq!(store.force_unlock(&admin)?, Some(lease.clone()));
        assert_eq!(store.current_lease()?, None);
        let forced = &store.lease_events(1)?[0];
        assert_eq!(
            *forced,
            LeaseEvent {
                at: 5_000,
                kind: "forced".to_owned(),
                stack: "web".to_owned(),
                holder: admin.clone(),
                previous: Some(alice),
            }
        );
        let err = store.renew_lease(&lease.token, MINUTE).expect_err("forced");
        assert!(matches!(err, StoreError::LeaseLost { .. }), "{err:?}");

        assert_eq!(store.force_unlock(&admin)?, None);
        let again = &store.lease_events(1)?[0];
        assert_eq!((again.kind.as_str(), &again.previous), ("forced", &None));
        Ok(())
    }

    #[test]
    fn leases_and_events_are_per_stack() -> Result<(), StoreError> {
        let tmp = tempfile::tempdir().expect("tempdir");
        let web = open(tmp.path(), "web");
        let db = open(tmp.path(), "db");
        let me = Holder::current();
        let w = web.acquire_lease(&me, "apply", MINUTE)?.lease;
        let d = db.acquire_lease(&me, "apply", MINUTE)?.lease;
        assert_eq!(web.current_lease()?, Some(w.clone()));
        assert_eq!(db.current_lease()?, Some(d.clone()));
        let err = db.renew_lease(&w.token, MINUTE).expect_err("web's token");
        assert!(matches!(err, StoreError::LeaseLost { .. }), "{err:?}");
        db.release_lease(&w.token)?;
        assert_eq!(web.current_lease()?, Some(w));
        assert_eq!(kinds(&web), ["acquired"]);
        assert_eq!(kinds(&db), ["acquired"]);
        Ok(())
    }

    #[test]
    fn events_are_newest_first_and_limited() -> Result<(), StoreError> {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = open(tmp.path(), "web");
        let admin = remote("admin");
        for t in 0..4 {
            store.set_now(t);
            store.force_unlock(&admin)?;
        }
        let at: Vec<Millis> = store.lease_events(3)?.iter().map(|e| e.at).collect();
        assert_eq!(at, [3, 2, 1]);
        assert!(store.lease_events(0)?.is_empty());
        Ok(())
    }

    #[test]
    fn zero_ttl_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = open(tmp.path(), "web");
        let err = store
            .acquire_lease(&remote("alice"), "apply", Duration::ZERO)
            .expect_err("zero ttl");
        assert!(matches!(err, StoreError::InvalidArgument { .. }), "{err:?}");
        assert_eq!(store.current_lease().expect("read"), None);
    }

    #[test]
    fn racing_stores_never_both_hold_the_lease() {
        const ROUNDS: usize = 50;
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let inside = Arc::new(AtomicBool::new(false));
        let grants = Arc::new(AtomicUsize::new(0));
        let barrier = Arc::new(Barrier::new(2));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let (dir, inside, grants, barrier) =
                    (dir.clone(), inside.clone(), grants.clone(), barrier.clone());
                std::thread::spawn(move || -> Result<usize, String> {
                    barrier.wait();
                    // Both open (and migrate) a fresh file at the same time.
                    let store = Store::open(&dir, "web").map_err(|e| format!("open: {e:?}"))?;
                    let me = Holder::current();
                    let mut refused = 0;
                    for _ in 0..ROUNDS {
                        match store.acquire_lease(&me, "apply", MINUTE) {
                            Ok(grant) => {
                                if inside.swap(true, Ordering::SeqCst) {
                                    return Err("two holders at once".to_owned());
                                }
                                grants.fetch_add(1, Ordering::SeqCst);
                                std::thread::yield_now();
                                inside.store(false, Ordering::SeqCst);
                                store
                                    .release_lease(&grant.lease.token)
                                    .map_err(|e| format!("release: {e:?}"))?;
                            }
                            Err(StoreError::LeaseHeld { .. }) => refused += 1,
                            Err(e) => return Err(format!("acquire: {e:?}")),
                        }
                    }
                    Ok(refused)
                })
            })
            .collect();
        let mut refused = 0;
        for t in threads {
            refused += t.join().expect("thread panicked").expect("thread failed");
        }
        let granted = grants.load(Ordering::SeqCst);
        assert_eq!(granted + refused, 2 * ROUNDS);
        assert!(granted > 0, "nobody ever got the lease");
        let store = open(&dir, "web");
        assert_eq!(store.current_lease().expect("read"), None);
        let acquired = kinds(&store).iter().filter(|k| *k == "acquired").count();
        assert_eq!(acquired, granted, "every grant was a clean acquire");
    }
}
