//! The restore-point backends of this host (`cutover_ops::data::Backend`): a PostgreSQL
//! database (same-server template copy, its dump as the durable copy), selected PostgreSQL
//! tables, a SQLite file (online backup), a directory or Docker volume (tar+zstd with a
//! blake3 manifest). Each resolves where its data is — a volume's mountpoint and a stack
//! service's data directory through the container runtime — and does the copying through
//! cutover-data.

use std::path::{Path, PathBuf};

use cutover_core::engine::StepError;
use cutover_core::runtime::ContainerRuntime;
use cutover_core::spec::{CopyMethod, DataKind, DataSet, Stack};
use cutover_data::manifest::{self, Artifact, Kind, Manifest, RestorePoints, Status};
use cutover_data::postgres::Admin;
use cutover_data::{archive, snapshot, sqlite};
use cutover_ops::data::{Backend, Backends, Restoring, Room, fail, human, refuse_if_tampered};

/// The directory a PostgreSQL restore point's dump is stored in.
pub const DUMP_DIR: &str = "pg_dump";
/// Parallel jobs of pg_dump and pg_restore.
pub const DUMP_JOBS: u32 = 2;

/// The file a directory's archive is stored in.
const ARCHIVE: &str = "content.tar.zst";

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

/// The backends of one stack on this host.
pub struct Local<'a> {
    /// For the PostgreSQL driver, which is async.
    pub rt: &'a tokio::runtime::Runtime,
    pub runtime: &'a dyn ContainerRuntime,
    pub stack: &'a Stack,
}

impl Local<'_> {
    /// Where data set `name` is.
    pub fn target(&self, name: &str, ds: &DataSet) -> Result<Target, StepError> {
        Ok(match &ds.kind {
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

    /// Where a PostgreSQL copy takes its room: beside the database, on the server's disk —
    /// checkable when the server runs here (as a process, or as a service of this stack whose
    /// data directory is a volume).
    fn room_on_server(&self, url: &str, data_dir: Option<String>) -> Room {
        match self.server_data_dir(url, data_dir) {
            Some(dir) => Room::At(dir),
            None => Room::Unknown,
        }
    }

    fn schema_version(
        &self,
        url: &str,
        database: &str,
        query: &str,
    ) -> Result<Option<String>, StepError> {
        self.rt
            .block_on(Admin::schema_version(url, database, query))
            .map_err(fail)
    }

    /// Where a PostgreSQL server's data directory is on this host: the path itself when the
    /// server runs here, or, when it is a service of this stack (the URL reaches it), the
    /// host side of the container mount that holds it.
    fn server_data_dir(&self, url: &str, data_dir: Option<String>) -> Option<PathBuf> {
        let data_dir = data_dir?;
        if let Some(service) = cutover_core::spec::serving_service(url, &self.stack.services) {
            let container = self
                .runtime
                .containers(&self.stack.name)
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
}

impl Backends for Local<'_> {
    fn backend<'s>(
        &'s self,
        name: &str,
        data: &DataSet,
    ) -> Result<Box<dyn Backend + 's>, StepError> {
        Ok(match self.target(name, data)? {
            Target::Postgres { url, database } => Box::new(PgDatabase {
                local: self,
                url,
                database,
            }),
            Target::PostgresTables {
                url,
                database,
                tables,
            } => Box::new(PgTables {
                local: self,
                url,
                database,
                tables,
            }),
            Target::Sqlite { path } => Box::new(SqliteFile { path }),
            Target::Directory { path, kind } => Box::new(Directory {
                name: name.to_string(),
                path,
                kind,
                method: data.method,
                probed: std::cell::OnceCell::new(),
            }),
        })
    }

    fn free_space(&self, path: &Path) -> Result<u64, String> {
        manifest::free_space(path).map_err(|e| e.to_string())
    }
}

/// A whole PostgreSQL database: a template copy on the same server, swapped back by rename.
struct PgDatabase<'a> {
    local: &'a Local<'a>,
    url: String,
    database: String,
}

impl PgDatabase<'_> {
    fn admin<T>(
        &self,
        f: impl AsyncFnOnce(Admin) -> Result<T, cutover_data::postgres::PgError>,
    ) -> Result<T, StepError> {
        self.local
            .rt
            .block_on(async {
                let admin = Admin::connect(&self.url, &self.database).await?;
                f(admin).await
            })
            .map_err(fail)
    }
}

impl Backend for PgDatabase<'_> {
    fn describe(&self) -> String {
        format!("PostgreSQL database `{}`", self.database)
    }

    fn source(&self) -> (Kind, String) {
        (Kind::Postgres, self.database.clone())
    }

    fn size(&self) -> Result<(u64, Room), StepError> {
        let database = self.database.clone();
        let (size, data_dir) = self.admin(async |admin| {
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
        })?;
        Ok((
            size.max(0) as u64,
            self.local.room_on_server(&self.url, data_dir),
        ))
    }

    fn schema_version(&self, query: &str) -> Result<Option<String>, StepError> {
        self.local.schema_version(&self.url, &self.database, query)
    }

    fn take(&self, m: &mut Manifest, _dir: &Path) -> Result<String, StepError> {
        let (database, release) = (self.database.clone(), m.release);
        let copy = self.admin(async |admin| admin.take(&database, release).await)?;
        m.source_bytes = copy.size_bytes.max(0) as u64;
        let what = format!("`{}` copied to `{}`", self.database, copy.copy);
        m.postgres = Some(copy);
        Ok(what)
    }

    fn restore(
        &self,
        rps: &RestorePoints,
        m: &mut Manifest,
        r: &Restoring,
    ) -> Result<String, StepError> {
        let mut pg = m.postgres.clone().ok_or_else(|| {
            StepError::new(format!(
                "the manifest of `{}` lacks its PostgreSQL copy",
                m.data
            ))
        })?;
        // The durable dump stands in when the copy is gone, or when asked for.
        let copy = pg.copy.clone();
        let copy_there = self
            .admin(async |admin| admin.oid_of(&copy).await)?
            .is_some();
        let swapped_already = m.status == Status::Restored;
        if !swapped_already && (r.from_dump || !copy_there) {
            let dump_dir = rps.dir(m.release, &m.data).join(DUMP_DIR);
            if !dump_dir.exists() {
                return Err(StepError::new(format!(
                    "the same-server copy `{}` is gone and no dump of it was made (`cutover restore-points dump`): `{}` cannot be restored",
                    pg.copy, m.data
                )));
            }
            refuse_if_tampered(rps, m)?;
            let started = std::time::Instant::now();
            self.admin(async |admin| admin.drop_database(&copy).await)?;
            cutover_data::pg_dump::restore(&self.url, &dump_dir, &pg.copy, &pg.owner, DUMP_JOBS)
                .map_err(fail)?;
            pg.copy_oid = self
                .admin(async |admin| admin.oid_of(&copy).await)?
                .ok_or_else(|| StepError::new("pg_restore created no database"))?;
            m.postgres = Some(pg.clone());
            eprintln!(
                "  restored `{}` from its dump in {:.1}s",
                pg.copy,
                started.elapsed().as_secs_f64()
            );
        }
        let report = self.admin(async |mut admin| admin.restore(&pg).await)?;
        m.failed_copy = report.failed_copy.clone();
        Ok(format!(
            "`{}` swapped back in {:.1} ms{}",
            pg.database,
            report.swap.as_secs_f64() * 1000.0,
            report
                .failed_copy
                .map(|f| format!("; the failed database is kept as `{f}`"))
                .unwrap_or_default()
        ))
    }

    fn discard(&self, m: &Manifest) {
        if let Some(pg) = &m.postgres {
            let copy = pg.copy.clone();
            let _ = self.admin(async |admin| admin.drop_database(&copy).await);
        }
    }

    fn kept_where(&self, m: &Manifest, _r: &Restoring) -> String {
        match &m.postgres {
            Some(pg) => format!("kept as database `{}`", pg.failed_name),
            None => "kept as a database beside it".into(),
        }
    }
}

/// Selected tables of a PostgreSQL database: copies in one snapshot, restored row by row.
struct PgTables<'a> {
    local: &'a Local<'a>,
    url: String,
    database: String,
    tables: Vec<String>,
}

impl Backend for PgTables<'_> {
    fn describe(&self) -> String {
        format!("tables {} of `{}`", self.tables.join(", "), self.database)
    }

    fn source(&self) -> (Kind, String) {
        (
            Kind::Postgres,
            format!("{}: {}", self.database, self.tables.join(", ")),
        )
    }

    fn size(&self) -> Result<(u64, Room), StepError> {
        let (size, data_dir) = self
            .local
            .rt
            .block_on(async {
                let client = cutover_data::postgres::connect_db(&self.url, &self.database).await?;
                let size = cutover_data::pg_tables::size_of(&client, &self.tables).await?;
                let admin = Admin::connect(&self.url, &self.database).await?;
                Ok::<_, cutover_data::postgres::PgError>((size, admin.data_directory().await))
            })
            .map_err(fail)?;
        Ok((
            size.max(0) as u64,
            self.local.room_on_server(&self.url, data_dir),
        ))
    }

    fn schema_version(&self, query: &str) -> Result<Option<String>, StepError> {
        self.local.schema_version(&self.url, &self.database, query)
    }

    fn take(&self, m: &mut Manifest, _dir: &Path) -> Result<String, StepError> {
        let release = m.release;
        let copy = self
            .local
            .rt
            .block_on(async {
                let mut client =
                    cutover_data::postgres::connect_db(&self.url, &self.database).await?;
                cutover_data::pg_tables::take(&mut client, &self.database, &self.tables, release)
                    .await
            })
            .map_err(fail)?;
        m.source_bytes = copy.bytes.max(0) as u64;
        let what = format!(
            "tables {} of `{}` copied to schema `{}`",
            copy.tables
                .iter()
                .map(|t| format!("{}.{} ({} rows)", t.schema, t.table, t.rows))
                .collect::<Vec<_>>()
                .join(", "),
            self.database,
            copy.schema
        );
        m.postgres_tables = Some(copy);
        Ok(what)
    }

    fn restore(
        &self,
        _rps: &RestorePoints,
        m: &mut Manifest,
        _r: &Restoring,
    ) -> Result<String, StepError> {
        let rp = m.postgres_tables.clone().ok_or_else(|| {
            StepError::new(format!(
                "the manifest of `{}` lacks its table copies",
                m.data
            ))
        })?;
        if m.status == Status::Complete {
            self.local
                .rt
                .block_on(async {
                    let mut client =
                        cutover_data::postgres::connect_db(&self.url, &self.database).await?;
                    cutover_data::pg_tables::restore(&mut client, &rp).await
                })
                .map_err(fail)?;
            m.failed_copy = Some(format!("{}.{}", self.database, rp.failed_schema));
        }
        Ok(format!(
            "tables of `{}` restored; the rows the upgrade left are kept in schema `{}`",
            self.database, rp.failed_schema
        ))
    }

    fn discard(&self, _m: &Manifest) {}

    fn kept_where(&self, m: &Manifest, _r: &Restoring) -> String {
        match &m.postgres_tables {
            Some(t) => format!("kept in schema `{}`", t.failed_schema),
            None => "kept in a schema beside the tables".into(),
        }
    }
}

/// A SQLite database file: an online backup, restored by atomic replace.
struct SqliteFile {
    path: PathBuf,
}

impl Backend for SqliteFile {
    fn describe(&self) -> String {
        format!("SQLite database {}", self.path.display())
    }

    fn source(&self) -> (Kind, String) {
        (Kind::Sqlite, self.path.display().to_string())
    }

    fn size(&self) -> Result<(u64, Room), StepError> {
        let size = std::fs::metadata(&self.path)
            .map_err(|e| StepError::new(format!("SQLite database {}: {e}", self.path.display())))?
            .len();
        Ok((size, Room::StateDir))
    }

    fn schema_version(&self, query: &str) -> Result<Option<String>, StepError> {
        sqlite::schema_version(&self.path, query).map_err(fail)
    }

    fn take(&self, m: &mut Manifest, dir: &Path) -> Result<String, StepError> {
        let file = self
            .path
            .file_name()
            .map_or_else(|| "db.sqlite".into(), |f| f.to_string_lossy().into_owned());
        let dest = dir.join(&file);
        m.source_bytes = sqlite::backup(&self.path, &dest).map_err(fail)?;
        let (bytes, blake3) = manifest::checksum(&dest).map_err(fail)?;
        m.artifacts.push(Artifact {
            file,
            bytes,
            blake3,
        });
        Ok(format!("{} backed up", self.path.display()))
    }

    fn restore(
        &self,
        rps: &RestorePoints,
        m: &mut Manifest,
        r: &Restoring,
    ) -> Result<String, StepError> {
        if m.status != Status::Complete {
            return Ok(format!("{} was restored already", self.path.display()));
        }
        refuse_if_tampered(rps, m)?;
        let file = &m
            .artifacts
            .first()
            .ok_or_else(|| StepError::new("no artifact"))?
            .file;
        let dir = rps.dir(m.release, &m.data);
        let failed = sqlite::restore(&dir.join(file), &self.path, r.release).map_err(fail)?;
        m.failed_copy = failed.as_ref().map(|f| f.display().to_string());
        Ok(format!(
            "{} restored{}",
            self.path.display(),
            failed
                .map(|f| format!("; the failed database is kept as {}", f.display()))
                .unwrap_or_default()
        ))
    }

    fn discard(&self, _m: &Manifest) {}

    fn kept_where(&self, _m: &Manifest, r: &Restoring) -> String {
        format!(
            "kept beside it as `{}.failed-{}`",
            self.path.display(),
            r.release
        )
    }
}

/// A directory or a Docker volume's content. By default a snapshot on its own filesystem
/// (a reflink clone where the filesystem shares extents, else a copy), put back by two
/// renames; the tar+zstd archive with a blake3 manifest is the durable copy, written from the
/// snapshot after the window (`restore-points dump`, `durable: true`), or the only copy with
/// `method: archive`. A restore uses the snapshot when it is there and unchanged, else the
/// archive.
struct Directory {
    /// The data set's name in the stack file.
    name: String,
    path: PathBuf,
    kind: Kind,
    method: CopyMethod,
    /// What the filesystem does, asked once (a probe file is cloned beside the data).
    probed: std::cell::OnceCell<Option<snapshot::Method>>,
}

/// Where the snapshot of `path` taken before release `release`'s upgrade lives: beside it.
pub fn snapshot_path(path: &Path, release: u64) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".cutover-rp-r{release}"));
    PathBuf::from(s)
}

/// What copying each volume or directory data set of `stack` would cost on this host: how
/// (asked of its filesystem), its size, and the time expected with the writers stopped, at
/// the rates `bench/volumes` measured here (conservative: the slower filesystem's medians).
/// A data set that cannot be measured now (a volume not created yet) is left out.
pub fn copy_estimates(
    rt: &tokio::runtime::Runtime,
    runtime: &dyn ContainerRuntime,
    stack: &Stack,
) -> indexmap::IndexMap<String, cutover_core::plan::DataCopy> {
    /// Per file of a clone or copy (create, clone, owner, mode, times), and the flush.
    const PER_FILE_US: u64 = 60;
    const FLUSH_MS: u64 = 20;
    /// Bytes per millisecond of an in-kernel copy, and of tar+zstd (level 3).
    const COPY_BYTES_PER_MS: u64 = 500_000;
    const ARCHIVE_BYTES_PER_MS: u64 = 350_000;
    let local = Local { rt, runtime, stack };
    let mut out = indexmap::IndexMap::new();
    for (name, ds) in &stack.data {
        let Ok(Target::Directory { path, .. }) = local.target(name, ds) else {
            continue;
        };
        let Ok((files, bytes)) = archive::tree_size(&path) else {
            continue;
        };
        let dir = Directory {
            name: name.clone(),
            path: path.clone(),
            kind: Kind::Directory,
            method: ds.method,
            probed: std::cell::OnceCell::new(),
        };
        let per_file = files * PER_FILE_US / 1000 + FLUSH_MS;
        let (how, estimate_ms, room_bytes) = match dir.snapshot_method() {
            Some(snapshot::Method::Reflink) => (snapshot::Method::Reflink.describe(), per_file, 0),
            Some(snapshot::Method::Copy) => (
                snapshot::Method::Copy.describe(),
                per_file + bytes / COPY_BYTES_PER_MS,
                bytes,
            ),
            None => (
                "tar+zstd archive",
                bytes / ARCHIVE_BYTES_PER_MS + FLUSH_MS,
                bytes,
            ),
        };
        out.insert(
            name.clone(),
            cutover_core::plan::DataCopy {
                how: how.to_string(),
                files,
                bytes,
                estimate_ms,
                room_bytes,
            },
        );
    }
    out
}

/// The durable copy of a snapshot restore point: the tar+zstd archive of the snapshot (which
/// nothing writes to, so the application may run meanwhile), with the blake3 of every file,
/// in the restore point's directory. Returns what it did; `None` when there is nothing to do.
pub fn archive_snapshot(
    rps: &RestorePoints,
    m: &mut Manifest,
) -> Result<Option<String>, StepError> {
    let Some(snap) = m.snapshot.clone() else {
        return Ok(None);
    };
    if !m.artifacts.is_empty() || m.status != Status::Complete {
        return Ok(None);
    }
    let problems = snapshot::verify(&snap);
    if !problems.is_empty() {
        return Err(StepError::new(format!(
            "the snapshot {} changed since it was taken, it is not archived: {}",
            snap.path.display(),
            problems.join("; ")
        )));
    }
    let started = std::time::Instant::now();
    let dir = rps.dir(m.release, &m.data);
    let report = archive::create(&snap.path, &dir.join(ARCHIVE)).map_err(fail)?;
    m.artifacts.push(Artifact {
        file: ARCHIVE.into(),
        bytes: report.archive_bytes,
        blake3: report.archive_blake3.clone(),
    });
    m.files = report.manifest;
    rps.save(m).map_err(fail)?;
    Ok(Some(format!(
        "archived r{} {}: {} files, {} → {} in {:.1}s",
        m.release,
        m.data,
        report.files,
        human(report.bytes),
        human(report.archive_bytes),
        started.elapsed().as_secs_f64()
    )))
}

impl Directory {
    /// The filesystem the snapshot is made on: the one holding the data's directory.
    fn parent(&self) -> PathBuf {
        self.path
            .parent()
            .map_or_else(|| PathBuf::from("/"), Path::to_path_buf)
    }

    fn snapshot_method(&self) -> Option<snapshot::Method> {
        *self.probed.get_or_init(|| match self.method {
            CopyMethod::Snapshot => snapshot::probe(&self.parent()).ok(),
            CopyMethod::Archive => None,
        })
    }

    fn take_archive(&self, m: &mut Manifest, dir: &Path) -> Result<String, StepError> {
        let report = archive::create(&self.path, &dir.join(ARCHIVE)).map_err(fail)?;
        m.source_bytes = report.bytes;
        m.artifacts.push(Artifact {
            file: ARCHIVE.into(),
            bytes: report.archive_bytes,
            blake3: report.archive_blake3.clone(),
        });
        let what = format!(
            "{} archived: {} files, {} → {}",
            self.path.display(),
            report.files,
            human(report.bytes),
            human(report.archive_bytes)
        );
        m.files = report.manifest;
        Ok(what)
    }

    fn restore_archive(&self, rps: &RestorePoints, m: &mut Manifest) -> Result<String, StepError> {
        refuse_if_tampered(rps, m)?;
        let a = m
            .artifacts
            .first()
            .ok_or_else(|| StepError::new("no artifact"))?;
        let dir = rps.dir(m.release, &m.data);
        let report =
            archive::restore(&dir.join(&a.file), &a.blake3, &m.files, &self.path).map_err(fail)?;
        m.failed_copy = Some(report.failed_dir.display().to_string());
        Ok(format!(
            "{} restored from its archive: {} files, {}; what was there is kept in {}",
            self.path.display(),
            report.files,
            human(report.bytes),
            report.failed_dir.display()
        ))
    }

    /// The swap: the failed path is recorded before the first rename, so a run after a
    /// crash between the two renames finds both halves and finishes.
    fn restore_snapshot(
        &self,
        rps: &RestorePoints,
        m: &mut Manifest,
        snap: &snapshot::Snapshot,
    ) -> Result<String, StepError> {
        let failed = match &m.failed_copy {
            Some(f) => PathBuf::from(f),
            None => {
                let failed = snapshot::failed_path(&self.path);
                m.failed_copy = Some(failed.display().to_string());
                rps.save(m).map_err(fail)?;
                failed
            }
        };
        let started = std::time::Instant::now();
        let state = snapshot::swap_state(snap, &failed);
        if state == snapshot::SwapState::NotStarted {
            let problems = snapshot::verify(snap);
            if !problems.is_empty() {
                return Err(StepError::new(
                    snapshot::SnapshotError::Tampered {
                        path: snap.path.clone(),
                        problems,
                    }
                    .to_string(),
                ));
            }
            snapshot::set_aside(&self.path, &failed).map_err(fail)?;
            cutover_ops::journal::hooks::crash_at("snapshot-swap:between");
        }
        snapshot::swap_in(snap, &self.path, &failed).map_err(fail)?;
        Ok(format!(
            "{} swapped back to its snapshot in {:.1} ms{}; what was there is kept in {}",
            self.path.display(),
            started.elapsed().as_secs_f64() * 1000.0,
            match state {
                snapshot::SwapState::NotStarted => "",
                _ => " (the swap an interrupted run began, finished)",
            },
            failed.display()
        ))
    }
}

impl Backend for Directory {
    fn describe(&self) -> String {
        match self.snapshot_method() {
            Some(method) => format!("{}, by {}", self.path.display(), method.describe()),
            None => format!("{}, by tar+zstd archive", self.path.display()),
        }
    }

    fn source(&self) -> (Kind, String) {
        (self.kind.clone(), self.path.display().to_string())
    }

    fn size(&self) -> Result<(u64, Room), StepError> {
        let bytes = archive::estimate_size(&self.path).map_err(fail)?;
        Ok(match self.method {
            CopyMethod::Snapshot => (bytes, Room::At(self.parent())),
            CopyMethod::Archive => (bytes, Room::StateDir),
        })
    }

    fn needs(&self, bytes: u64) -> u64 {
        // A clone shares its extents until either side is written.
        match self.snapshot_method() {
            Some(snapshot::Method::Reflink) => 0,
            _ => bytes,
        }
    }

    fn schema_version(&self, _query: &str) -> Result<Option<String>, StepError> {
        Err(StepError::new(format!(
            "`{}`: a schema version query needs a postgres or sqlite data set",
            self.name
        )))
    }

    fn take(&self, m: &mut Manifest, dir: &Path) -> Result<String, StepError> {
        if self.method == CopyMethod::Archive {
            return self.take_archive(m, dir);
        }
        let dest = snapshot_path(&self.path, m.release);
        // Left by a take whose manifest never said `complete`: not a restore point.
        snapshot::remove(&dest).map_err(|e| {
            StepError::new(format!(
                "cannot remove the unfinished snapshot {}: {e}",
                dest.display()
            ))
        })?;
        let snap = snapshot::take(&self.path, &dest).map_err(fail)?;
        m.source_bytes = snap.bytes;
        let what = format!(
            "{} → {} by {}: {} files, {}",
            self.path.display(),
            dest.display(),
            snap.method.describe(),
            snap.files,
            human(snap.bytes)
        );
        m.snapshot = Some(snap);
        Ok(what)
    }

    fn restore(
        &self,
        rps: &RestorePoints,
        m: &mut Manifest,
        _r: &Restoring,
    ) -> Result<String, StepError> {
        if m.status != Status::Complete {
            return Ok(format!("{} was restored already", self.path.display()));
        }
        let Some(snap) = m.snapshot.clone() else {
            return self.restore_archive(rps, m);
        };
        let failed = m.failed_copy.as_deref().map(PathBuf::from);
        let begun = failed
            .as_deref()
            .is_some_and(|f| snapshot::swap_state(&snap, f) != snapshot::SwapState::NotStarted);
        if begun || snap.path.exists() {
            match self.restore_snapshot(rps, m, &snap) {
                Ok(what) => return Ok(what),
                Err(e) if m.artifacts.is_empty() || begun => return Err(e),
                Err(e) => eprintln!(
                    "  the snapshot of `{}` cannot be used ({}); restoring its durable archive",
                    self.name, e.message
                ),
            }
        } else if m.artifacts.is_empty() {
            return Err(StepError::new(format!(
                "the snapshot {} of `{}` is gone and no durable archive of it was made (`cutover restore-points dump`): it cannot be restored",
                snap.path.display(),
                self.name
            )));
        }
        m.failed_copy = None;
        self.restore_archive(rps, m)
    }

    fn discard(&self, m: &Manifest) {
        let _ = snapshot::remove(&snapshot_path(&self.path, m.release));
    }

    fn kept_where(&self, m: &Manifest, _r: &Restoring) -> String {
        match &m.failed_copy {
            Some(f) => format!("kept in `{f}`"),
            None => format!("kept in `{}.cutover-failed-<time>`", self.path.display()),
        }
    }
}
