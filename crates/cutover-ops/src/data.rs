//! The data steps of a plan: the data is there and its restore point fits, take the restore
//! point, put it back, read the schema version — the same life for every kind of data, each
//! kind's copying done by its [`Backend`].
//!
//! A restore point's manifest is written `creating` before anything is copied and `complete`
//! after (cutover-data's `manifest`), so an interrupted take is recognised: it is cleaned up
//! and taken again, never restored from. A restore says first how old the restore point is
//! and where what was written since is kept; it is idempotent (a `restored` manifest is not
//! restored twice).

use std::path::{Path, PathBuf};

use cutover_core::engine::StepError;
use cutover_core::spec::{DataSet, Stack};
use cutover_data::manifest::{self, Kind, Manifest, RestorePoints, Status};

/// Room asked beyond the estimate: a copy that fills the disk to the last byte is a copy
/// that breaks the service it protects.
const MARGIN: f64 = 1.1;

/// Where a backend's copy takes its room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Room {
    /// Beside the restore points, in the state dir (a file's backup, an archive).
    StateDir,
    /// On the filesystem of this path (a PostgreSQL server's data directory).
    At(PathBuf),
    /// Not checkable from here (a database server on another host).
    Unknown,
}

/// One kind of data's restore points: measure it, copy it, put the copy back.
pub trait Backend {
    /// The data in words, for the checks: "PostgreSQL database `app`".
    fn describe(&self) -> String;
    /// The kind recorded in the manifest, and what is copied (a database, a path).
    fn source(&self) -> (Kind, String);
    /// The data's size in bytes, and where a copy of it takes its room.
    fn size(&self) -> Result<(u64, Room), StepError>;
    /// The room a copy of `bytes` of this data needs: all of it, unless the copy shares
    /// the data's extents (a reflink clone needs none until either side is written).
    fn needs(&self, bytes: u64) -> u64 {
        bytes
    }
    /// The application's schema version, by `query`.
    fn schema_version(&self, query: &str) -> Result<Option<String>, StepError>;
    /// Copies the data into `dir` (its writers are stopped), recording in `m` what a restore
    /// needs (artifacts, the copy's name). Returns what it did.
    fn take(&self, m: &mut Manifest, dir: &Path) -> Result<String, StepError>;
    /// Puts the copy back; what was there is kept aside and named in `m.failed_copy`.
    fn restore(
        &self,
        rps: &RestorePoints,
        m: &mut Manifest,
        r: &Restoring,
    ) -> Result<String, StepError>;
    /// Cleans up what a take that never completed left outside the state dir.
    fn discard(&self, m: &Manifest);
    /// Where what was written since the restore point will be kept, said before a restore.
    fn kept_where(&self, m: &Manifest, r: &Restoring) -> String;
}

/// What a restore is asked to do.
#[derive(Clone, Debug)]
pub struct Restoring {
    /// The release whose operation restores (the failed data is named after it).
    pub release: u64,
    /// PostgreSQL from its dump, not the same-server copy (`rollback --from-dump`).
    pub from_dump: bool,
}

/// Finds the backend of a data set: where it is on this host, resolved.
pub trait Backends {
    fn backend<'s>(
        &'s self,
        name: &str,
        data: &DataSet,
    ) -> Result<Box<dyn Backend + 's>, StepError>;
    /// Free bytes on the filesystem that holds `path`.
    fn free_space(&self, path: &Path) -> Result<u64, String>;
}

/// What the data steps of one operation need.
pub struct Data<'a> {
    pub backends: &'a dyn Backends,
    pub desired: &'a Stack,
    pub previous: Option<&'a Stack>,
    /// The release being made.
    pub release: u64,
    /// The live release.
    pub from_release: Option<u64>,
    /// Where this stack's restore points are kept.
    pub restore_points: RestorePoints,
    /// Restore PostgreSQL restore points from their dumps, not the same-server copies.
    pub from_dump: bool,
    /// Bytes the restore points of this operation need, summed by the preflight checks.
    pub space_needed: u64,
    /// Said before a restore happens (how old the restore point is, where the writes since
    /// are kept): the binary prints it.
    pub notice: Box<dyn FnMut(&str) + 'a>,
}

/// An error and its causes as one step error: "cannot write …: No space left on device".
pub fn fail(e: impl std::error::Error) -> StepError {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        source = s.source();
    }
    StepError::new(msg)
}

/// Bytes as `1.5 GiB`.
pub fn human(bytes: u64) -> String {
    cutover_core::plan::human_bytes(bytes)
}

/// How long ago a Unix time was, roughly.
fn age(secs: u64) -> String {
    let age = manifest::now().saturating_sub(secs);
    match age {
        0..=119 => format!("{age} s"),
        120..=7199 => format!("{} min", age / 60),
        7200..=172_799 => format!("{} h", age / 3600),
        _ => format!("{} days", age / 86_400),
    }
}

impl<'a> Data<'a> {
    fn data_set(&self, name: &str) -> Result<&'a DataSet, StepError> {
        let (desired, previous) = (self.desired, self.previous);
        desired
            .data
            .get(name)
            .or_else(|| previous.and_then(|p| p.data.get(name)))
            .ok_or_else(|| StepError::new(format!("data set `{name}` is not in the stack")))
    }

    fn backend(&self, name: &str) -> Result<Box<dyn Backend + 'a>, StepError> {
        let ds = self.data_set(name)?;
        let backends: &'a dyn Backends = self.backends;
        backends.backend(name, ds)
    }

    fn restoring(&self) -> Restoring {
        Restoring {
            release: self.release,
            from_dump: self.from_dump,
        }
    }

    fn check_room(&mut self, needed: u64, on: &Path) -> Result<String, StepError> {
        let free = self.backends.free_space(on).map_err(|e| {
            StepError::new(format!(
                "cannot read the free space of {}: {e}",
                on.display()
            ))
        })?;
        self.space_needed += needed;
        let want = (self.space_needed as f64 * MARGIN) as u64;
        if free < want {
            return Err(StepError::new(format!(
                "not enough room for the restore points: {} needed (with a 10% margin), {} free on {}; nothing was changed",
                human(want),
                human(free),
                on.display()
            )));
        }
        Ok(format!("{} free on {}", human(free), on.display()))
    }

    /// Preflight: the data is there, and its restore point will fit.
    pub fn check_data(&mut self, name: &str) -> Result<String, StepError> {
        let (size, needs, room, what) = {
            let b = self.backend(name)?;
            let (size, room) = b.size()?;
            (size, b.needs(size), room, b.describe())
        };
        let room = match room {
            Room::StateDir => {
                let state = self.restore_points.root().to_path_buf();
                self.check_room(needs, &state)?
            }
            Room::At(_) if needs == 0 => "a clone takes no room until it is written".to_string(),
            Room::At(dir) => self.check_room(needs, &dir)?,
            Room::Unknown => "the server's free space cannot be checked from here".to_string(),
        };
        Ok(format!("{what} ({}); {room}", human(size)))
    }

    fn schema_version_of(&self, name: &str, b: &dyn Backend) -> Result<Option<String>, StepError> {
        match &self.data_set(name)?.schema_version {
            Some(sv) => b.schema_version(&sv.query),
            None => Ok(None),
        }
    }

    /// Preflight and verify: the schema version, compared with what is expected.
    pub fn check_schema_version(
        &self,
        name: &str,
        expect: Option<&str>,
    ) -> Result<String, StepError> {
        let b = self.backend(name)?;
        match (self.schema_version_of(name, b.as_ref())?, expect) {
            (None, _) => Err(StepError::new(format!(
                "`{name}`: the schema version query returned no row"
            ))),
            (Some(v), Some(want)) if v.trim() != want.trim() => Err(StepError::new(format!(
                "`{name}`: schema version is {v}, expected {want}"
            ))),
            (Some(v), _) => Ok(format!("schema version of `{name}` is {v}")),
        }
    }

    /// A rollback with `--data keep`: the data's schema must be the one release `release`
    /// ran on.
    pub fn check_schema_kept(
        &self,
        name: &str,
        release: u64,
        version: &str,
    ) -> Result<String, StepError> {
        let b = self.backend(name)?;
        match self.schema_version_of(name, b.as_ref())? {
            Some(v) if v.trim() == version.trim() => Ok(format!(
                "schema version of `{name}` is {v}, as when release {release} ran"
            )),
            found => Err(StepError::new(format!(
                "`{name}`: the schema version is {}, but release {release} ran on {version}: its images would start on a schema they cannot read; roll back with `--data restore` to put release {release}'s data back with it (`cutover restore-points list` shows what is kept); nothing was changed",
                found
                    .as_deref()
                    .unwrap_or("unreadable (the query returned no row)")
            ))),
        }
    }

    /// After a revert: every data set restored by this operation reports the schema version
    /// its restore point recorded. Returns the differences.
    pub fn schema_differences(&self) -> Vec<String> {
        let Ok(all) = self.restore_points.list() else {
            return vec!["cannot list the restore points".into()];
        };
        let mut diffs = Vec::new();
        for m in all.iter().filter(|m| {
            m.release == self.release && m.status == Status::Restored && m.schema_version.is_some()
        }) {
            let now = self
                .backend(&m.data)
                .and_then(|b| self.schema_version_of(&m.data, b.as_ref()));
            match now {
                Ok(v) if v == m.schema_version => {}
                Ok(v) => diffs.push(format!(
                    "schema version of `{}` is {} (was {})",
                    m.data,
                    v.as_deref().unwrap_or("unreadable"),
                    m.schema_version.as_deref().unwrap_or("?")
                )),
                Err(e) => diffs.push(format!("schema version of `{}`: {}", m.data, e.message)),
            }
        }
        diffs
    }

    /// Takes the restore point (writers are stopped). Complete ones are not taken twice; an
    /// incomplete one (an interrupted run) is cleaned up and taken again.
    pub fn take_restore_point(&mut self, name: &str) -> Result<String, StepError> {
        let result = self.take_inner(name);
        if result.is_err() {
            // What a failed take left (an archive, a `creating` manifest) must neither look
            // like a restore point nor hold on to the disk it filled; the data was not touched.
            let _ = self.restore_points.remove(self.release, name);
        }
        result
    }

    fn take_inner(&mut self, name: &str) -> Result<String, StepError> {
        let rps = self.restore_points.clone();
        if let Some(m) = rps.load(self.release, name).map_err(fail)?
            && m.status == Status::Complete
        {
            return Ok(format!(
                "restore point of `{name}` exists already (release {})",
                m.release
            ));
        }
        rps.remove(self.release, name).map_err(fail)?;
        let b = self.backend(name)?;
        let (kind, source) = b.source();
        let schema_version = self.schema_version_of(name, b.as_ref())?;
        let mut m = Manifest {
            schema: manifest::MANIFEST_SCHEMA.into(),
            stack: self.desired.name.clone(),
            release: self.release,
            taken_from: self.from_release,
            data: name.to_string(),
            kind,
            source,
            status: Status::Creating,
            created_at: manifest::now(),
            schema_version,
            source_bytes: 0,
            artifacts: Vec::new(),
            files: Vec::new(),
            failed_copy: None,
            postgres: None,
            postgres_tables: None,
            snapshot: None,
        };
        rps.save(&m).map_err(fail)?;
        let started = std::time::Instant::now();
        let what = b.take(&mut m, &rps.dir(self.release, name))?;
        m.status = Status::Complete;
        rps.save(&m).map_err(fail)?;
        Ok(format!(
            "{what} in {:.2}s{}",
            started.elapsed().as_secs_f64(),
            m.schema_version
                .as_deref()
                .map(|v| format!("; schema version {v}"))
                .unwrap_or_default()
        ))
    }

    /// `rollback --data restore`: puts back the data of release `live`, from the restore
    /// point taken when the stack moved on from it.
    pub fn restore_data_from(&mut self, name: &str, live: u64) -> Result<String, StepError> {
        match self.restore_points.of_release(name, live).map_err(fail)? {
            Some(m) => self.restore_point_of(name, m.release),
            None => {
                // Done already (a step run again after a crash) or never there.
                let restored = self
                    .restore_points
                    .list()
                    .map_err(fail)?
                    .into_iter()
                    .any(|m| {
                        m.data == name && m.taken_from == Some(live) && m.status == Status::Restored
                    });
                if restored {
                    Ok(format!(
                        "the data of release {live} is back in `{name}` already"
                    ))
                } else {
                    Err(StepError::new(format!(
                        "`{name}` has no complete restore point of release {live}'s data"
                    )))
                }
            }
        }
    }

    /// Revert: puts the restore point back (the writers are stopped).
    pub fn restore_data(&mut self, name: &str) -> Result<String, StepError> {
        self.restore_point_of(name, self.release)
    }

    /// What a restore is about to do, said before it does: how old the restore point is,
    /// and where what was written since it was taken is kept.
    pub fn notice(&self, name: &str, m: &Manifest, b: &dyn Backend) -> String {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(m.created_at);
        format!(
            "restoring `{name}` to its restore point of {} ({} old, taken before release {}'s upgrade); what was written to it since is {}",
            humantime::format_rfc3339_seconds(at),
            age(m.created_at),
            m.release,
            b.kept_where(m, &self.restoring())
        )
    }

    /// Puts back the restore point that release `rp_release`'s upgrade took of `name`.
    fn restore_point_of(&mut self, name: &str, rp_release: u64) -> Result<String, StepError> {
        let rps = self.restore_points.clone();
        let Some(mut m) = rps.load(rp_release, name).map_err(fail)? else {
            return Ok(format!(
                "no restore point of `{name}` was taken in this operation: nothing to restore"
            ));
        };
        let b = self.backend(name)?;
        if m.status == Status::Creating {
            // Taking it failed midway; the data itself was never touched by it.
            rps.remove(rp_release, name).map_err(fail)?;
            b.discard(&m);
            return Ok(format!(
                "the restore point of `{name}` was never completed; the data was not changed after it: nothing to restore"
            ));
        }
        if m.status == Status::Complete {
            let said = self.notice(name, &m, b.as_ref());
            (self.notice)(&said);
        }
        let started = std::time::Instant::now();
        let what = b.restore(&rps, &mut m, &self.restoring())?;
        m.status = Status::Restored;
        rps.save(&m).map_err(fail)?;
        Ok(format!("{what} ({:.2}s)", started.elapsed().as_secs_f64()))
    }
}

/// Refuses a restore point whose files do not match their checksums.
pub fn refuse_if_tampered(rps: &RestorePoints, m: &Manifest) -> Result<(), StepError> {
    let problems = rps.verify_files(m);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(StepError::new(format!(
            "the restore point of `{}` does not match its manifest, it is not restored: {}",
            m.data,
            problems.join("; ")
        )))
    }
}

#[cfg(test)]
mod tests;
