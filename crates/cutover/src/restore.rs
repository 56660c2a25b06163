//! The data steps of a plan: check that data is reachable and fits, take its restore point,
//! put it back, read its schema version. PostgreSQL, SQLite and directories (a Docker
//! volume's files or a bind path) each go to their module in cutover-data; this module
//! resolves a data set to where it is and keeps the manifest.

use std::path::{Path, PathBuf};

use cutover_core::engine::StepError;
use cutover_core::spec::{DataKind, DataSet};
use cutover_data::manifest::{self, Artifact, Kind, Manifest, RestorePoints, Status};
use cutover_data::postgres::Admin;
use cutover_data::{archive, sqlite};

use cutover_core::runtime::ContainerRuntime;
use cutover_core::spec::Stack;

/// What the data steps of one operation need: where the data is (the stack, the runtime
/// that knows where a volume lives), where restore points are kept, and the release.
pub struct DataSteps<'a> {
    /// For the PostgreSQL driver, which is async.
    pub rt: &'a tokio::runtime::Runtime,
    pub runtime: &'a dyn ContainerRuntime,
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
}

/// Where a data set is, resolved for this host.
pub enum Target {
    Postgres {
        url: String,
        database: String,
    },
    PostgresTables {
        url: String,
        database: String,
        tables: Vec<String>,
    },
    Sqlite {
        path: PathBuf,
    },
    Directory {
        path: PathBuf,
        kind: Kind,
    },
}

/// The directory a PostgreSQL restore point's dump is stored in.
pub const DUMP_DIR: &str = "pg_dump";
/// Parallel jobs of pg_dump and pg_restore.
pub const DUMP_JOBS: u32 = 2;

/// The file a directory's archive is stored in.
const ARCHIVE: &str = "content.tar.zst";

impl DataSteps<'_> {
    /// After a revert: every data set restored by this operation reports the schema version
    /// its restore point recorded (the Inmanta seed's "the dry-run after revert must equal
    /// the one before"). Returns the differences.
    pub(crate) fn schema_differences(&self) -> Vec<String> {
        let Ok(all) = self.restore_points.list() else {
            return vec!["cannot list the restore points".into()];
        };
        let mut diffs = Vec::new();
        for m in all.iter().filter(|m| {
            m.release == self.release && m.status == Status::Restored && m.schema_version.is_some()
        }) {
            let now = self
                .target(&m.data)
                .and_then(|t| self.schema_version_of(&m.data, &t));
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
}

/// Room asked beyond the estimate: a copy that fills the disk to the last byte is a copy
/// that breaks the service it protects.
const MARGIN: f64 = 1.1;

/// The error and its causes, one line: "cannot write …: No space left on device".
fn fail(e: impl std::error::Error) -> StepError {
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

pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

impl DataSteps<'_> {
    fn data_set(&self, name: &str) -> Result<&DataSet, StepError> {
        self.desired
            .data
            .get(name)
            .or_else(|| self.previous.and_then(|p| p.data.get(name)))
            .ok_or_else(|| StepError::new(format!("data set `{name}` is not in the stack")))
    }

    pub(crate) fn target(&self, name: &str) -> Result<Target, StepError> {
        Ok(match &self.data_set(name)?.kind {
            DataKind::Postgres {
                url,
                database,
                tables,
            } => {
                let url = url.expose().ok_or_else(|| {
                    StepError::new(format!(
                        "`{name}`: the admin URL ({}) is not available here",
                        url.shown()
                    ))
                })?;
                if tables.is_empty() {
                    Target::Postgres {
                        url: url.to_string(),
                        database: database.clone(),
                    }
                } else {
                    Target::PostgresTables {
                        url: url.to_string(),
                        database: database.clone(),
                        tables: tables.clone(),
                    }
                }
            }
            DataKind::Sqlite { path } => Target::Sqlite {
                path: PathBuf::from(path),
            },
            DataKind::Directory { path } => Target::Directory {
                path: PathBuf::from(path),
                kind: Kind::Directory,
            },
            DataKind::Volume { name: volume } => {
                let path = self
                    .runtime
                    .volume_path(volume)
                    .map_err(fail)?
                    .ok_or_else(|| {
                        StepError::new(format!("Docker volume `{volume}` does not exist"))
                    })?;
                Target::Directory {
                    path,
                    kind: Kind::Volume,
                }
            }
        })
    }

    fn check_room(&mut self, needed: u64, on: &Path) -> Result<String, StepError> {
        let free = manifest::free_space(on).map_err(|e| {
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

    /// Where a PostgreSQL server's data directory is on this host: the path itself when the
    /// server runs here, or, when it is a service of this stack (the URL reaches it), the
    /// host side of the container mount that holds it.
    fn server_data_dir(&self, url: &str, data_dir: Option<String>) -> Option<PathBuf> {
        let data_dir = data_dir?;
        if let Some(service) = cutover_core::spec::serving_service(url, &self.desired.services) {
            let container = self
                .runtime
                .containers(&self.desired.name)
                .ok()?
                .into_iter()
                .find(|c| c.service == service && c.running())?;
            return self
                .runtime
                .host_path(&container.id, &data_dir)
                .ok()
                .flatten()
                .filter(|p| p.exists());
        }
        Some(PathBuf::from(data_dir)).filter(|d| d.exists())
    }

    /// Preflight: the data is there, and its restore point will fit.
    pub(crate) fn check_data(&mut self, name: &str) -> Result<String, StepError> {
        let state = self.restore_points.root().to_path_buf();
        match self.target(name)? {
            Target::Postgres { url, database } => {
                let (size, data_dir) = self
                    .rt
                    .block_on(async {
                        let admin = Admin::connect(&url, &database).await?;
                        if admin.oid_of(&database).await?.is_none() {
                            return Err(cutover_data::postgres::PgError::Invalid(format!(
                                "database `{database}` does not exist on {}",
                                admin.target()
                            )));
                        }
                        Ok((
                            admin.size_of(&database).await?,
                            admin.data_directory().await,
                        ))
                    })
                    .map_err(fail)?;
                let size = size.max(0) as u64;
                // The copy lives beside the database, on the server's disk: check it when
                // the server runs here (as a process, or as a service of this stack whose
                // data directory is a volume), say so when it does not.
                let room = match self.server_data_dir(&url, data_dir) {
                    Some(dir) => self.check_room(size, &dir)?,
                    None => "the server's free space cannot be checked from here".to_string(),
                };
                Ok(format!(
                    "PostgreSQL database `{database}` ({}); {room}",
                    human(size)
                ))
            }
            Target::PostgresTables {
                url,
                database,
                tables,
            } => {
                let (size, data_dir) = self
                    .rt
                    .block_on(async {
                        let client = cutover_data::postgres::connect_db(&url, &database).await?;
                        let size = cutover_data::pg_tables::size_of(&client, &tables).await?;
                        let admin = Admin::connect(&url, &database).await?;
                        Ok::<_, cutover_data::postgres::PgError>((
                            size,
                            admin.data_directory().await,
                        ))
                    })
                    .map_err(fail)?;
                let size = size.max(0) as u64;
                let room = match self.server_data_dir(&url, data_dir) {
                    Some(dir) => self.check_room(size, &dir)?,
                    None => "the server's free space cannot be checked from here".to_string(),
                };
                Ok(format!(
                    "tables {} of `{database}` ({}); {room}",
                    tables.join(", "),
                    human(size)
                ))
            }
            Target::Sqlite { path } => {
                let size = std::fs::metadata(&path)
                    .map_err(|e| {
                        StepError::new(format!("SQLite database {}: {e}", path.display()))
                    })?
                    .len();
                let room = self.check_room(size, &state)?;
                Ok(format!(
                    "SQLite database {} ({}); {room}",
                    path.display(),
                    human(size)
                ))
            }
            Target::Directory { path, .. } => {
                let size = archive::estimate_size(&path).map_err(fail)?;
                let room = self.check_room(size, &state)?;
                Ok(format!("{} ({}); {room}", path.display(), human(size)))
            }
        }
    }

    pub(crate) fn schema_version_of(
        &self,
        name: &str,
        target: &Target,
    ) -> Result<Option<String>, StepError> {
        let Some(sv) = &self.data_set(name)?.schema_version else {
            return Ok(None);
        };
        match target {
            Target::Postgres { url, database } | Target::PostgresTables { url, database, .. } => {
                self.rt
                    .block_on(Admin::schema_version(url, database, &sv.query))
                    .map_err(fail)
            }
            Target::Sqlite { path } => sqlite::schema_version(path, &sv.query).map_err(fail),
            Target::Directory { .. } => Err(StepError::new(format!(
                "`{name}`: a schema version query needs a postgres or sqlite data set"
            ))),
        }
    }

    /// Preflight and verify: the schema version, compared with what is expected.
    pub(crate) fn check_schema_version(
        &self,
        name: &str,
        expect: Option<&str>,
    ) -> Result<String, StepError> {
        let target = self.target(name)?;
        let found = self.schema_version_of(name, &target)?;
        match (found, expect) {
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
    pub(crate) fn check_schema_kept(
        &self,
        name: &str,
        release: u64,
        version: &str,
    ) -> Result<String, StepError> {
        let target = self.target(name)?;
        match self.schema_version_of(name, &target)? {
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

    /// Takes the restore point (writers are stopped). Complete ones are not taken twice; an
    /// incomplete one (an interrupted run) is cleaned up and taken again.
    pub(crate) fn take_restore_point(&mut self, name: &str) -> Result<String, StepError> {
        let result = self.take_restore_point_inner(name);
        if result.is_err() {
            // What a failed take left (an archive, a `creating` manifest) must neither look
            // like a restore point nor hold on to the disk it filled; the data was not touched.
            let _ = self.restore_points.remove(self.release, name);
        }
        result
    }

    fn take_restore_point_inner(&mut self, name: &str) -> Result<String, StepError> {
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
        let target = self.target(name)?;
        let (kind, source) = match &target {
            Target::Postgres { database, .. } => (Kind::Postgres, database.clone()),
            Target::PostgresTables {
                database, tables, ..
            } => (Kind::Postgres, format!("{database}: {}", tables.join(", "))),
            Target::Sqlite { path } => (Kind::Sqlite, path.display().to_string()),
            Target::Directory { path, kind } => (kind.clone(), path.display().to_string()),
        };
        let schema_version = self.schema_version_of(name, &target)?;
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
        };
        rps.save(&m).map_err(fail)?;
        let dir = rps.dir(self.release, name);
        let started = std::time::Instant::now();
        let what = match &target {
            Target::Postgres { url, database } => {
                let release = self.release;
                let copy = self
                    .rt
                    .block_on(async {
                        let admin = Admin::connect(url, database).await?;
                        admin.take(database, release).await
                    })
                    .map_err(fail)?;
                m.source_bytes = copy.size_bytes.max(0) as u64;
                let what = format!("`{}` copied to `{}`", database, copy.copy);
                m.postgres = Some(copy);
                what
            }
            Target::PostgresTables {
                url,
                database,
                tables,
            } => {
                let release = self.release;
                let copy = self
                    .rt
                    .block_on(async {
                        let mut client = cutover_data::postgres::connect_db(url, database).await?;
                        cutover_data::pg_tables::take(&mut client, database, tables, release).await
                    })
                    .map_err(fail)?;
                m.source_bytes = copy.bytes.max(0) as u64;
                let what = format!(
                    "tables {} of `{database}` copied to schema `{}`",
                    copy.tables
                        .iter()
                        .map(|t| format!("{}.{} ({} rows)", t.schema, t.table, t.rows))
                        .collect::<Vec<_>>()
                        .join(", "),
                    copy.schema
                );
                m.postgres_tables = Some(copy);
                what
            }
            Target::Sqlite { path } => {
                let file = path
                    .file_name()
                    .map_or_else(|| "db.sqlite".into(), |f| f.to_string_lossy().into_owned());
                let dest = dir.join(&file);
                m.source_bytes = sqlite::backup(path, &dest).map_err(fail)?;
                let (bytes, blake3) = manifest::checksum(&dest).map_err(fail)?;
                m.artifacts.push(Artifact {
                    file,
                    bytes,
                    blake3,
                });
                format!("{} backed up", path.display())
            }
            Target::Directory { path, .. } => {
                let report = archive::create(path, &dir.join(ARCHIVE)).map_err(fail)?;
                m.source_bytes = report.bytes;
                m.artifacts.push(Artifact {
                    file: ARCHIVE.into(),
                    bytes: report.archive_bytes,
                    blake3: report.archive_blake3.clone(),
                });
                let what = format!(
                    "{} archived: {} files, {} → {}",
                    path.display(),
                    report.files,
                    human(report.bytes),
                    human(report.archive_bytes)
                );
                m.files = report.manifest;
                what
            }
        };
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
    pub(crate) fn restore_data_from(&mut self, name: &str, live: u64) -> Result<String, StepError> {
        let m = self.restore_points.of_release(name, live).map_err(fail)?;
        match m {
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
    pub(crate) fn restore_data(&mut self, name: &str) -> Result<String, StepError> {
        self.restore_point_of(name, self.release)
    }

    /// Puts back the restore point that release `rp_release`'s upgrade took of `name`.
    fn restore_point_of(&mut self, name: &str, rp_release: u64) -> Result<String, StepError> {
        let rps = self.restore_points.clone();
        let Some(mut m) = rps.load(rp_release, name).map_err(fail)? else {
            return Ok(format!(
                "no restore point of `{name}` was taken in this operation: nothing to restore"
            ));
        };
        if m.status == Status::Creating {
            // Taking it failed midway; the data itself was never touched by it.
            rps.remove(rp_release, name).map_err(fail)?;
            if let Some(pg) = &m.postgres {
                let _ = self.rt.block_on(async {
                    let url = match self.target(name) {
                        Ok(Target::Postgres { url, .. }) => url,
                        _ => return Ok(false),
                    };
                    Admin::connect(&url, &pg.database)
                        .await?
                        .drop_database(&pg.copy)
                        .await
                });
            }
            return Ok(format!(
                "the restore point of `{name}` was never completed; the data was not changed after it: nothing to restore"
            ));
        }
        let dir = rps.dir(rp_release, name);
        if m.status == Status::Complete {
            // Said before it happens: the restore replaces what was written since.
            eprintln!("  {}", restore_notice(name, &m, self.release));
        }
        let started = std::time::Instant::now();
        let what = match self.target(name)? {
            Target::Postgres { url, .. } => {
                let mut pg = m.postgres.clone().ok_or_else(|| {
                    StepError::new(format!(
                        "the manifest of `{name}` lacks its PostgreSQL copy"
                    ))
                })?;
                // The durable dump stands in when the copy is gone, or when asked for.
                let copy_there = self
                    .rt
                    .block_on(async {
                        Admin::connect(&url, &pg.database)
                            .await?
                            .oid_of(&pg.copy)
                            .await
                    })
                    .map_err(fail)?
                    .is_some();
                let swapped_already = m.status == Status::Restored;
                if !swapped_already && (self.from_dump || !copy_there) {
                    let dump_dir = dir.join(DUMP_DIR);
                    if !dump_dir.exists() {
                        return Err(StepError::new(format!(
                            "the same-server copy `{}` is gone and no dump of it was made (`cutover restore-points dump`): `{name}` cannot be restored",
                            pg.copy
                        )));
                    }
                    refuse_if_tampered(&rps, &m)?;
                    let started = std::time::Instant::now();
                    self.rt
                        .block_on(async {
                            let admin = Admin::connect(&url, &pg.database).await?;
                            admin.drop_database(&pg.copy).await
                        })
                        .map_err(fail)?;
                    cutover_data::pg_dump::restore(&url, &dump_dir, &pg.copy, &pg.owner, DUMP_JOBS)
                        .map_err(fail)?;
                    pg.copy_oid = self
                        .rt
                        .block_on(async {
                            Admin::connect(&url, &pg.database)
                                .await?
                                .oid_of(&pg.copy)
                                .await
                        })
                        .map_err(fail)?
                        .ok_or_else(|| StepError::new("pg_restore created no database"))?;
                    m.postgres = Some(pg.clone());
                    eprintln!(
                        "  restored `{}` from its dump in {:.1}s",
                        pg.copy,
                        started.elapsed().as_secs_f64()
                    );
                }
                let report = self
                    .rt
                    .block_on(async {
                        let mut admin = Admin::connect(&url, &pg.database).await?;
                        admin.restore(&pg).await
                    })
                    .map_err(fail)?;
                m.failed_copy = report.failed_copy.clone();
                format!(
                    "`{}` swapped back in {:.1} ms{}",
                    pg.database,
                    report.swap.as_secs_f64() * 1000.0,
                    report
                        .failed_copy
                        .map(|f| format!("; the failed database is kept as `{f}`"))
                        .unwrap_or_default()
                )
            }
            Target::PostgresTables { url, database, .. } => {
                let rp = m.postgres_tables.clone().ok_or_else(|| {
                    StepError::new(format!("the manifest of `{name}` lacks its table copies"))
                })?;
                if m.status == Status::Complete {
                    self.rt
                        .block_on(async {
                            let mut client =
                                cutover_data::postgres::connect_db(&url, &database).await?;
                            cutover_data::pg_tables::restore(&mut client, &rp).await
                        })
                        .map_err(fail)?;
                    m.failed_copy = Some(format!("{database}.{}", rp.failed_schema));
                }
                format!(
                    "tables of `{database}` restored; the rows the upgrade left are kept in schema `{}`",
                    rp.failed_schema
                )
            }
            Target::Sqlite { path } => {
                if m.status == Status::Complete {
                    refuse_if_tampered(&rps, &m)?;
                    let file = &m
                        .artifacts
                        .first()
                        .ok_or_else(|| StepError::new("no artifact"))?
                        .file;
                    let failed =
                        sqlite::restore(&dir.join(file), &path, self.release).map_err(fail)?;
                    m.failed_copy = failed.as_ref().map(|f| f.display().to_string());
                    format!(
                        "{} restored{}",
                        path.display(),
                        failed
                            .map(|f| format!("; the failed database is kept as {}", f.display()))
                            .unwrap_or_default()
                    )
                } else {
                    format!("{} was restored already", path.display())
                }
            }
            Target::Directory { path, .. } => {
                if m.status == Status::Complete {
                    refuse_if_tampered(&rps, &m)?;
                    let a = m
                        .artifacts
                        .first()
                        .ok_or_else(|| StepError::new("no artifact"))?;
                    let report = archive::restore(&dir.join(&a.file), &a.blake3, &m.files, &path)
                        .map_err(fail)?;
                    m.failed_copy = Some(report.failed_dir.display().to_string());
                    format!(
                        "{} restored: {} files, {}; what was there is kept in {}",
                        path.display(),
                        report.files,
                        human(report.bytes),
                        report.failed_dir.display()
                    )
                } else {
                    format!("{} was restored already", path.display())
                }
            }
        };
        m.status = Status::Restored;
        rps.save(&m).map_err(fail)?;
        Ok(format!("{what} ({:.2}s)", started.elapsed().as_secs_f64()))
    }
}

/// What a restore is about to do to `name`, said before it does: how old the restore point
/// is, and where what was written since it was taken is kept.
pub fn restore_notice(name: &str, m: &Manifest, restoring_in: u64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(m.created_at);
    let age = std::time::SystemTime::now()
        .duration_since(at)
        .map_or(0, |d| d.as_secs());
    let age = match age {
        0..=119 => format!("{age} s"),
        120..=7199 => format!("{} min", age / 60),
        7200..=172_799 => format!("{} h", age / 3600),
        _ => format!("{} days", age / 86_400),
    };
    let kept = if let Some(pg) = &m.postgres {
        format!("kept as database `{}`", pg.failed_name)
    } else if let Some(t) = &m.postgres_tables {
        format!("kept in schema `{}`", t.failed_schema)
    } else {
        match m.kind {
            Kind::Sqlite => format!("kept beside it as `{}.failed-{restoring_in}`", m.source),
            _ => "kept beside it in a `…cutover-failed-…` directory (named when the restore ends)"
                .to_string(),
        }
    };
    format!(
        "restoring `{name}` to its restore point of {} ({age} old, taken before release {}'s upgrade); what was written to it since is {kept}",
        humantime::format_rfc3339_seconds(at),
        m.release
    )
}

fn refuse_if_tampered(rps: &RestorePoints, m: &Manifest) -> Result<(), StepError> {
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
mod tests {
    use super::human;

    #[test]
    fn sizes_read_like_df() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(1_073_741_824), "1.0 GiB");
    }
}
