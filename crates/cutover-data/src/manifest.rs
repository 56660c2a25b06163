//! What a restore point holds, recorded beside it.
//!
//! Layout under the state dir: `restore-points/r<release>/<data>/manifest.json` and the
//! artifacts next to it. A manifest is written `creating` before anything is copied and
//! `complete` after every artifact is checksummed, each time atomically (write, fsync,
//! rename), so an interrupted restore point is recognisable as such: it is never restored
//! from, and the next attempt or a prune removes what it left.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::archive::FileEntry;
use crate::postgres::PgCopy;

/// The schema name of `manifest.json`.
pub const MANIFEST_SCHEMA: &str = "cutover.restore-point/v1";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Being taken; incomplete if still so after the operation ended.
    Creating,
    /// Taken and checksummed: a revert may restore it.
    Complete,
    /// Put back by a revert (a PostgreSQL copy is the live database now).
    Restored,
}

/// One file of a restore point.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// Relative to the restore point's directory.
    pub file: String,
    pub bytes: u64,
    pub blake3: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Postgres,
    Sqlite,
    Volume,
    Directory,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub schema: String,
    pub stack: String,
    /// The release whose upgrade took it: it holds the data as it was before that release.
    pub release: u64,
    /// The release that was live when it was taken (whose data it holds).
    #[serde(default)]
    pub taken_from: Option<u64>,
    /// The data set's name in the stack file.
    pub data: String,
    pub kind: Kind,
    /// What was copied: the database, the file, the volume, the directory.
    pub source: String,
    pub status: Status,
    /// Unix seconds.
    pub created_at: u64,
    /// The schema version read from the application's version table, when configured.
    pub schema_version: Option<String>,
    /// Bytes of the data when the restore point was taken.
    pub source_bytes: u64,
    pub artifacts: Vec<Artifact>,
    /// Every file of an archived directory, with its checksum.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileEntry>,
    /// What a revert set aside (the data as the failed release left it), kept for
    /// inspection until pruned: a path, or a PostgreSQL database name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_copy: Option<String>,
    /// The same-server copy of a PostgreSQL database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PgCopy>,
    /// The copies of selected PostgreSQL tables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres_tables: Option<crate::pg_tables::PgTables>,
    /// The snapshot of a volume or directory, beside it on its filesystem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<crate::snapshot::Snapshot>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{what} ({path}): {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> ManifestError + 'a {
    move |source| ManifestError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// The restore points of one stack, in its state dir.
#[derive(Clone, Debug)]
pub struct RestorePoints {
    root: PathBuf,
}

impl RestorePoints {
    pub fn new(state_dir: &Path) -> RestorePoints {
        RestorePoints {
            root: state_dir.join("restore-points"),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of one restore point.
    pub fn dir(&self, release: u64, data: &str) -> PathBuf {
        self.root.join(format!("r{release}")).join(data)
    }

    /// Writes `m` atomically to its directory.
    pub fn save(&self, m: &Manifest) -> Result<PathBuf, ManifestError> {
        let dir = self.dir(m.release, &m.data);
        std::fs::create_dir_all(&dir)
            .map_err(io("cannot create the restore point directory", &dir))?;
        let path = dir.join("manifest.json");
        let tmp = dir.join("manifest.json.tmp");
        let text = serde_json::to_string_pretty(m).map_err(|e| ManifestError::Invalid {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let written = File::create(&tmp).and_then(|mut f| {
            f.write_all(text.as_bytes())?;
            f.sync_all()
        });
        if let Err(e) = written {
            // A half-written manifest must not hold on to the space it could not fill.
            let _ = std::fs::remove_file(&tmp);
            return Err(io("cannot write the manifest", &tmp)(e));
        }
        std::fs::rename(&tmp, &path).map_err(io("cannot move the manifest into place", &path))?;
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io("cannot sync the restore point directory", &dir))?;
        Ok(path)
    }

    /// The manifest of one restore point, if there is one.
    pub fn load(&self, release: u64, data: &str) -> Result<Option<Manifest>, ManifestError> {
        let path = self.dir(release, data).join("manifest.json");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("cannot read the manifest", &path)(e)),
        };
        let m: Manifest = serde_json::from_str(&text).map_err(|e| ManifestError::Invalid {
            path: path.clone(),
            message: format!("unreadable manifest: {e}"),
        })?;
        if m.schema != MANIFEST_SCHEMA {
            return Err(ManifestError::Invalid {
                path,
                message: format!("unknown manifest schema `{}`", m.schema),
            });
        }
        Ok(Some(m))
    }

    /// Every restore point, oldest release first.
    pub fn list(&self) -> Result<Vec<Manifest>, ManifestError> {
        let mut out = Vec::new();
        let releases = match std::fs::read_dir(&self.root) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io("cannot list restore points", &self.root)(e)),
        };
        for rel in releases {
            let rel = rel.map_err(io("cannot list restore points", &self.root))?;
            let Some(release) = rel
                .file_name()
                .to_str()
                .and_then(|n| n.strip_prefix('r'))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            let sets = std::fs::read_dir(rel.path()).map_err(io("cannot list", &self.root))?;
            for set in sets {
                let set = set.map_err(io("cannot list", &self.root))?;
                if let Some(name) = set.file_name().to_str()
                    && let Some(m) = self.load(release, name)?
                {
                    out.push(m);
                }
            }
        }
        out.sort_by(|a, b| (a.release, &a.data).cmp(&(b.release, &b.data)));
        Ok(out)
    }

    /// The newest complete restore point of `data` holding the data of release `live`.
    pub fn of_release(&self, data: &str, live: u64) -> Result<Option<Manifest>, ManifestError> {
        Ok(self
            .list()?
            .into_iter()
            .filter(|m| {
                m.data == data && m.taken_from == Some(live) && m.status == Status::Complete
            })
            .max_by_key(|m| m.release))
    }

    /// Checks every artifact's size and blake3 against the manifest; returns the problems.
    pub fn verify_files(&self, m: &Manifest) -> Vec<String> {
        let dir = self.dir(m.release, &m.data);
        let mut problems = Vec::new();
        for a in &m.artifacts {
            let path = dir.join(&a.file);
            match checksum(&path) {
                Err(e) => problems.push(format!("{}: {e}", path.display())),
                Ok((bytes, _)) if bytes != a.bytes => problems.push(format!(
                    "{}: {bytes} bytes, the manifest says {}",
                    path.display(),
                    a.bytes
                )),
                Ok((_, sum)) if sum != a.blake3 => problems.push(format!(
                    "{}: checksum {sum} does not match the manifest's {}",
                    path.display(),
                    a.blake3
                )),
                Ok(_) => {}
            }
        }
        problems
    }

    /// Removes a restore point's directory (its files; a PostgreSQL copy is dropped by the
    /// caller first).
    pub fn remove(&self, release: u64, data: &str) -> Result<(), ManifestError> {
        let dir = self.dir(release, data);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("cannot remove the restore point", &dir)(e)),
        }
        let parent = self.root.join(format!("r{release}"));
        let _ = std::fs::remove_dir(parent); // only when empty
        Ok(())
    }
}

/// Size and blake3 of a file, streamed.
pub fn checksum(path: &Path) -> Result<(u64, String), std::io::Error> {
    let mut f = File::open(path)?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        bytes += n as u64;
    }
    Ok((bytes, hasher.finalize().to_hex().to_string()))
}

/// Free bytes on the filesystem that holds `path` (or its nearest existing ancestor).
pub fn free_space(path: &Path) -> Result<u64, std::io::Error> {
    let mut p = path;
    while !p.exists() {
        p = p.parent().unwrap_or(Path::new("/"));
    }
    let st = rustix::fs::statvfs(p)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Now, in unix seconds.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(release: u64, data: &str) -> Manifest {
        Manifest {
            schema: MANIFEST_SCHEMA.into(),
            stack: "demo".into(),
            release,
            taken_from: release.checked_sub(1),
            data: data.into(),
            kind: Kind::Sqlite,
            source: "/srv/app.sqlite".into(),
            status: Status::Creating,
            created_at: now(),
            schema_version: Some("2".into()),
            source_bytes: 5,
            artifacts: Vec::new(),
            files: Vec::new(),
            failed_copy: None,
            postgres: None,
            postgres_tables: None,
            snapshot: None,
        }
    }

    #[test]
    fn manifests_round_trip_list_and_verify() {
        let tmp = tempfile::tempdir().expect("tmp");
        let rps = RestorePoints::new(tmp.path());
        assert!(rps.list().expect("empty").is_empty());
        let mut m = manifest(3, "db");
        rps.save(&m).expect("save");
        let dir = rps.dir(3, "db");
        std::fs::write(dir.join("db.sqlite"), b"hello").expect("artifact");
        let (bytes, sum) = checksum(&dir.join("db.sqlite")).expect("sum");
        m.artifacts.push(Artifact {
            file: "db.sqlite".into(),
            bytes,
            blake3: sum,
        });
        m.status = Status::Complete;
        rps.save(&m).expect("save");
        rps.save(&manifest(1, "files")).expect("save");
        let all = rps.list().expect("list");
        assert_eq!(
            all.iter()
                .map(|m| (m.release, m.data.as_str()))
                .collect::<Vec<_>>(),
            [(1, "files"), (3, "db")]
        );
        assert_eq!(rps.load(3, "db").expect("load"), Some(m.clone()));
        assert!(rps.verify_files(&m).is_empty());

        std::fs::write(dir.join("db.sqlite"), b"hellO").expect("tamper");
        let problems = rps.verify_files(&m);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("does not match"), "{problems:?}");

        rps.remove(3, "db").expect("remove");
        assert!(rps.load(3, "db").expect("load").is_none());
        assert!(free_space(&tmp.path().join("not/yet/there")).expect("free") > 0);
    }
}
