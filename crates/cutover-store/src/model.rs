//! The records the store reads and writes.

use std::fmt;
use std::str::FromStr;

use rusqlite::ToSql;
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, ValueRef};
use serde::{Deserialize, Serialize};

use crate::Millis;

/// A status string that names no known variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} status `{value}`")]
pub struct ParseStatusError {
    /// Which status type was being parsed ("release", "operation", "step").
    pub kind: &'static str,
    /// The text that did not parse.
    pub value: String,
}

/// Defines a status enum stored and serialized as fixed strings, with
/// `as_str`, `FromStr`, `Display` and SQLite conversions.
macro_rules! status_enum {
    (
        $(#[$meta:meta])*
        $name:ident, $kind:literal, $serde_case:literal {
            $( $(#[$vmeta:meta])* $variant:ident => $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = $serde_case)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stored (and serialized) spelling.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }
        }

        impl FromStr for $name {
            type Err = ParseStatusError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $( $text => Ok($name::$variant), )+
                    other => Err(ParseStatusError {
                        kind: $kind,
                        value: other.to_owned(),
                    }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $name {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                value
                    .as_str()?
                    .parse()
                    .map_err(|e| FromSqlError::Other(Box::new(e)))
            }
        }
    };
}

status_enum! {
    /// Lifecycle of a release (one numbered revision of a stack).
    ReleaseStatus, "release", "lowercase" {
        /// Recorded, not yet rolled out.
        Pending => "pending",
        /// Running now; at most one release per stack is deployed.
        Deployed => "deployed",
        /// The rollout failed.
        Failed => "failed",
        /// Refused before anything was changed (a preflight check failed).
        Refused => "refused",
        /// The rollout was reverted to the previous state.
        Reverted => "reverted",
        /// Was deployed, replaced by a later deployment.
        Superseded => "superseded",
    }
}

status_enum! {
    /// Outcome of an operation (one run of apply, rollback, resume, ...).
    OperationStatus, "operation", "snake_case" {
        /// In progress, or its process died before finishing it.
        Running => "running",
        /// Completed.
        Succeeded => "succeeded",
        /// Failed and was not reverted.
        Failed => "failed",
        /// Failed and was reverted.
        Reverted => "reverted",
        /// Failed, and reverting failed too.
        RevertFailed => "revert_failed",
        /// Stopped on purpose (interrupted, or abandoned by a later resume).
        Aborted => "aborted",
    }
}

status_enum! {
    /// State of one journal step.
    StepStatus, "step", "lowercase" {
        /// Recorded before the step ran; still this if the process died in it.
        Started => "started",
        /// Completed.
        Succeeded => "succeeded",
        /// Failed.
        Failed => "failed",
        /// Not run (not applicable).
        Skipped => "skipped",
    }
}

/// Input of [`Store::insert_release`](crate::Store::insert_release); the
/// store assigns the revision and timestamps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewRelease<'a> {
    /// The resolved stack spec, as JSON.
    pub spec_json: &'a str,
    /// The images (with digests) the release runs, as JSON.
    pub images_json: &'a str,
    /// Who created it.
    pub created_by: &'a str,
    /// Where it was created.
    pub host: &'a str,
    /// Why, if given.
    #[serde(borrow)]
    pub reason: Option<&'a str>,
    /// Initial status (a `Deployed` one supersedes the deployed release).
    pub status: ReleaseStatus,
    /// Where it came from, as JSON (a git commit `cutover watch` applied), if not a person.
    #[serde(borrow)]
    pub source_json: Option<&'a str>,
}

/// One numbered revision of a stack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// The stack.
    pub stack: String,
    /// 1, 2, 3, ... per stack.
    pub revision: u64,
    /// The resolved stack spec, as JSON.
    pub spec_json: String,
    /// The images (with digests) the release runs, as JSON.
    pub images_json: String,
    /// Who created it.
    pub created_by: String,
    /// Where it was created.
    pub host: String,
    /// Why, if given.
    pub reason: Option<String>,
    /// Current status.
    pub status: ReleaseStatus,
    /// When it was recorded.
    pub created_at: Millis,
    /// When its status last changed.
    pub updated_at: Millis,
    /// Where it came from, as JSON (a git commit `cutover watch` applied), if not a person.
    pub source_json: Option<String>,
}

/// Who runs (or ran) something: a process on a host.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Holder {
    /// Login name.
    pub user: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// Start time of the process (field 22 of `/proc/<pid>/stat`, clock ticks
    /// since boot), so a reused pid is not mistaken for the holder.
    pub pid_start: Option<u64>,
}

impl fmt::Display for Holder {
    /// `user@host (pid N)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{} (pid {})", self.user, self.host, self.pid)
    }
}

/// One run of apply, rollback, resume, ...
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    /// Unique across the database, never reused.
    pub id: u64,
    /// The stack.
    pub stack: String,
    /// What kind of run ("apply", "rollback", ...).
    pub kind: String,
    /// The release it works on, if any.
    pub release: Option<u64>,
    /// Current status.
    pub status: OperationStatus,
    /// Who started it.
    pub holder: Holder,
    /// When it began.
    pub started_at: Millis,
    /// When it finished, if it did.
    pub finished_at: Option<Millis>,
    /// The error it finished with, if any.
    pub error: Option<String>,
}

/// One journal entry: a step of an operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The operation id.
    pub op: u64,
    /// 1, 2, 3, ... within the operation, in the order steps started.
    pub seq: u64,
    /// Stable id of the step in the plan.
    pub step_id: String,
    /// The phase it belongs to (preflight, quiesce, ...).
    pub phase: String,
    /// Human-readable title.
    pub title: String,
    /// Current status.
    pub status: StepStatus,
    /// When it was recorded as started (before it ran).
    pub started_at: Millis,
    /// When it finished, if it did.
    pub finished_at: Option<Millis>,
    /// The last 8 KiB of its output.
    pub output_tail: String,
}

/// The per-stack lock: one operation at a time, with an expiry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The stack.
    pub stack: String,
    /// Secret handed to the holder; renew and release need it.
    pub token: String,
    /// Who holds it.
    pub holder: Holder,
    /// What the holder is doing ("apply", ...).
    pub operation: String,
    /// When it was granted.
    pub acquired_at: Millis,
    /// When it was last renewed (or granted).
    pub renewed_at: Millis,
    /// When it stops protecting the holder unless renewed.
    pub expires_at: Millis,
}

impl Lease {
    /// Whether the lease has run out at `now` (`expires_at <= now`).
    pub fn is_expired(&self, now: Millis) -> bool {
        self.expires_at <= now
    }
}

/// Result of a successful [`Store::acquire_lease`](crate::Store::acquire_lease).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseGrant {
    /// The new lease.
    pub lease: Lease,
    /// The stale lease (expired, or held by a dead process) that was replaced.
    pub took_over: Option<Lease>,
}

/// Audit record of a lease change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseEvent {
    /// When it happened.
    pub at: Millis,
    /// One of the `LeaseEvent::*` kind constants.
    pub kind: String,
    /// The stack.
    pub stack: String,
    /// Who acquired, released or forced.
    pub holder: Holder,
    /// Whose lease was taken over or force-removed.
    pub previous: Option<Holder>,
}

impl LeaseEvent {
    /// Granted while no lease existed.
    pub const ACQUIRED: &'static str = "acquired";
    /// Given up by its holder.
    pub const RELEASED: &'static str = "released";
    /// Granted by replacing an expired lease.
    pub const EXPIRED_TAKEOVER: &'static str = "expired_takeover";
    /// Granted by replacing the lease of a dead process on this host.
    pub const DEAD_HOLDER_TAKEOVER: &'static str = "dead_holder_takeover";
    /// Removed by `force_unlock`.
    pub const FORCED: &'static str = "forced";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_through_str_and_serde() {
        fn check<T>(all: &[T])
        where
            T: Copy + fmt::Debug + PartialEq + FromStr + fmt::Display + Serialize,
            for<'de> T: Deserialize<'de>,
            <T as FromStr>::Err: fmt::Debug,
        {
            for &v in all {
                let text = v.to_string();
                assert_eq!(text.parse::<T>().expect("parse"), v);
                let json = serde_json::to_string(&v).expect("serialize");
                assert_eq!(json, format!("\"{text}\""));
                assert_eq!(serde_json::from_str::<T>(&json).expect("deserialize"), v);
            }
        }
        check(ReleaseStatus::ALL);
        check(OperationStatus::ALL);
        check(StepStatus::ALL);
    }

    #[test]
    fn spellings_are_lowercase_and_snake_case() {
        assert_eq!(ReleaseStatus::Superseded.as_str(), "superseded");
        assert_eq!(OperationStatus::RevertFailed.as_str(), "revert_failed");
        assert_eq!(
            serde_json::to_string(&OperationStatus::RevertFailed).expect("json"),
            "\"revert_failed\""
        );
        assert_eq!(StepStatus::Skipped.as_str(), "skipped");
    }

    #[test]
    fn unknown_status_is_a_parse_error() {
        let err = "Deployed"
            .parse::<ReleaseStatus>()
            .expect_err("case matters");
        assert_eq!(
            err,
            ParseStatusError {
                kind: "release",
                value: "Deployed".to_owned()
            }
        );
        assert_eq!(err.to_string(), "unknown release status `Deployed`");
    }

    #[test]
    fn holder_displays_as_user_at_host_with_pid() {
        let h = Holder {
            user: "bob".to_owned(),
            host: "nas".to_owned(),
            pid: 7,
            pid_start: Some(1),
        };
        assert_eq!(h.to_string(), "bob@nas (pid 7)");
    }

    #[test]
    fn lease_expiry_is_inclusive() {
        let lease = Lease {
            stack: "s".to_owned(),
            token: "t".to_owned(),
            holder: Holder {
                user: "u".to_owned(),
                host: "h".to_owned(),
                pid: 1,
                pid_start: None,
            },
            operation: "apply".to_owned(),
            acquired_at: 0,
            renewed_at: 0,
            expires_at: 100,
        };
        assert!(!lease.is_expired(99));
        assert!(lease.is_expired(100));
    }
}
