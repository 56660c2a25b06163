//! A directory as a restore point: a tar+zstd archive with a blake3 manifest, put back by
//! swapping the directory's contents.
//!
//! # The archive
//!
//! [`create`] writes a GNU tar of the directory, compressed with zstd (level 3, the frame
//! checksum on). Entries come depth first with names sorted bytewise, so the same tree gives
//! the same bytes. The first entry, `./`, is the directory itself: its mode, owner and mtime
//! are put back on the target. Each entry keeps its permission bits (setuid, setgid and
//! sticky included), its numeric uid and gid (the data belongs to a container's user, whose
//! name means nothing on the host) and its mtime in seconds; symlinks stay symlinks. The
//! archive is an ordinary `.tar.zst`: `tar --zstd --numeric-owner -xpf` extracts it by hand.
//!
//! Alongside come the blake3 of the archive file and a manifest, one [`FileEntry`] per entry
//! in archive order with the blake3 of every file's content. Both are computed while the
//! archive is written, in one pass: each file is read once, in chunks.
//!
//! What is refused or left out, and why:
//! - **FIFOs and device nodes are refused**, with their path: a FIFO can't be copied as
//!   content, and a device node in an application's data is unusual enough to need a person.
//! - **Sockets are skipped** and listed in [`ArchiveReport::skipped`]: a socket has no
//!   content, it is a rendezvous a running server creates, and the server creates it again
//!   when it starts. Refusing them would let a stale socket file block an upgrade.
//! - **Mount points inside the directory are refused**: the restore moves entries by rename,
//!   which can't cross filesystems.
//! - **Names that aren't UTF-8 are refused**: manifest paths are strings.
//! - **Not kept**: hard links (each name is archived as a file of its own), extended
//!   attributes (ACLs, file capabilities), sub-second mtimes, atimes, sparseness.
//!
//! A file whose size changes while it is read fails [`create`] ([`ArchiveError::Changed`]):
//! the application has to be stopped, and a silently torn copy is worse than no copy.
//!
//! # Durability
//!
//! The archive is written to `<archive>.partial`, fsync'd, renamed to its name and the
//! directory fsync'd, so a crash never leaves a complete-looking archive. A leftover
//! `.partial` is not an archive; the next [`create`] overwrites it. An existing archive is
//! never replaced: a restore point is written once.
//!
//! # Restore
//!
//! [`restore`] first checks the archive file's blake3 (the target is untouched if it is
//! wrong), then extracts into `<target>.cutover-restore-<random>` beside the target,
//! checking each entry against the manifest as it comes, exactly as [`verify`] does. Any
//! mismatch removes the staging directory and leaves the target untouched.
//!
//! Then it swaps **contents**, not directories: the target may be a Docker volume's `_data`
//! directory, which containers find by path and which must keep its identity. The target's
//! entries are moved into `<target>.cutover-failed-<UTC timestamp>` (kept for inspection,
//! [`RestoreReport::failed_dir`]), the restored entries are moved into the target, the
//! target gets the mode, owner and mtime of the archive's root entry, and the empty staging
//! directory is removed. Every move is a rename within one filesystem (checked before
//! anything is extracted) that never replaces an existing name.
//!
//! If the swap fails midway, [`ArchiveError::Swap`] says where every piece is. A failure
//! while setting the old entries aside is undone (they are moved back); a failure after that
//! is not, because the old entries are complete in the failed directory and the restored ones
//! are complete between the target and the staging directory: what's left is one `mv`, and
//! the error says which.
//!
//! The restore is made durable with `syncfs` after extraction and after the swap: one flush
//! of the filesystem is much cheaper than an fsync per file.
//!
//! Ownership: every entry is chowned to its recorded uid and gid, which needs root (or
//! `CAP_CHOWN`) as soon as one of them is not the caller's. A failure is an error, not a
//! note: a data directory with the wrong owner is a service that won't start (PostgreSQL
//! refuses a data directory it doesn't own). Entries are chowned in the staging directory,
//! and the staging directory gets the root entry's owner, so the error comes before the
//! target is touched.
//!
//! Leftovers of a crash during a restore (`<target>.cutover-restore-*`) are never reused
//! and never deleted automatically; they are safe to delete once no restore runs.

use std::ffi::{OsStr, OsString};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// zstd's default level: fast enough that the disk, not the compressor, sets the pace.
const ZSTD_LEVEL: i32 = 3;
/// Chunk size for reading files and the archive: big enough that blake3 uses its SIMD lanes
/// and syscalls are few, small enough not to matter in memory.
const CHUNK: usize = 256 * 1024;
/// The manifest path of the archived directory itself.
const ROOT: &str = ".";
/// Permission bits, setuid/setgid/sticky included.
const MODE_BITS: u32 = 0o7777;

/// What kind of entry a [`FileEntry`] is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
}

/// One entry of an archive, as the manifest records it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct FileEntry {
    /// Relative to the archived directory, `/`-separated; the directory itself is `.`.
    pub path: String,
    pub kind: EntryKind,
    /// Content length of a file; 0 for directories and symlinks.
    pub size: u64,
    /// Permission bits, setuid/setgid/sticky included (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// blake3 of the content, lowercase hex; files only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blake3: Option<String>,
    /// The symlink's target, as stored (not resolved); symlinks only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

/// What [`create`] wrote.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ArchiveReport {
    /// Regular files archived.
    pub files: u64,
    /// Their content bytes, uncompressed.
    pub bytes: u64,
    /// Size of the archive file.
    pub archive_bytes: u64,
    /// blake3 of the archive file, lowercase hex.
    pub archive_blake3: String,
    /// Every entry, in archive order; the first is the directory itself (`.`).
    pub manifest: Vec<FileEntry>,
    /// Sockets left out (relative paths): see the module documentation.
    pub skipped: Vec<String>,
}

/// What [`restore`] did.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct RestoreReport {
    /// Regular files restored.
    pub files: u64,
    /// Their content bytes.
    pub bytes: u64,
    /// Where the target's previous entries are now: `<target>.cutover-failed-<timestamp>`,
    /// created even when the target was empty, so the report always names it.
    pub failed_dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("cannot {op} {}: {source}", .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is not a directory", .path.display())]
    NotADirectory { path: PathBuf },
    #[error(
        "{} is a {kind}; an archive holds regular files, directories and symlinks only \
         (remove it or move it out of the directory)",
        .path.display()
    )]
    Unsupported { path: PathBuf, kind: &'static str },
    #[error("the name of {} is not valid UTF-8; rename it to archive the directory", .path.display())]
    NonUtf8 { path: PathBuf },
    #[error(
        "{} is a mount point inside the archived directory; a restore moves entries by \
         rename, which cannot cross filesystems",
        .path.display()
    )]
    NestedMount { path: PathBuf },
    #[error("{} changed while it was archived; is the application stopped?", .path.display())]
    Changed { path: PathBuf },
    #[error("archive {} already exists; an archive is written once, never replaced", .path.display())]
    Exists { path: PathBuf },
    #[error("archive {} would be inside the directory it archives, {}", .archive.display(), .dir.display())]
    InsideSource { archive: PathBuf, dir: PathBuf },
    #[error(
        "archive {} has blake3 {actual}, expected {expected}: it is damaged, or not the \
         archive this restore point recorded",
        .archive.display()
    )]
    Checksum {
        archive: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("archive {} does not match its manifest at `{entry}`: {detail}", .archive.display())]
    Mismatch {
        archive: PathBuf,
        entry: String,
        detail: String,
    },
    #[error("archive {} cannot be decoded", .archive.display())]
    Corrupt {
        archive: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("invalid manifest: {0}")]
    Manifest(String),
    #[error(
        "cannot restore into {}: it is a mount point, and a restore moves entries by \
         rename from a staging directory beside it, on its parent's filesystem",
        .target.display()
    )]
    CrossDevice { target: PathBuf },
    #[error(
        "cannot give {} its owner {uid}:{gid} (restoring ownership needs root); \
         the target is untouched",
        .path.display()
    )]
    Owner {
        path: PathBuf,
        uid: u32,
        gid: u32,
        #[source]
        source: io::Error,
    },
    /// The swap of a restore failed midway; `state` says where every piece is.
    #[error("restore into {} failed while {step}: {state}", .target.display())]
    Swap {
        target: PathBuf,
        step: String,
        state: String,
        #[source]
        source: io::Error,
    },
    /// A restore failed before the swap and its staging directory could not be removed.
    #[error("{error}; and the staging directory {} could not be removed", .path.display())]
    Leftover {
        error: Box<ArchiveError>,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ArchiveError {
    let path = path.to_owned();
    move |source| ArchiveError::Io { op, path, source }
}

/// Archives `src_dir` to `archive_path` (see the module documentation for the format).
///
/// Refuses an existing `archive_path`, an archive inside `src_dir`, FIFOs, device nodes,
/// nested mount points, non-UTF-8 names and files that change while they are read. On any
/// error, nothing is left at `archive_path` and the `.partial` file is removed.
pub fn create(src_dir: &Path, archive_path: &Path) -> Result<ArchiveReport, ArchiveError> {
    let root_meta = fs::symlink_metadata(src_dir).map_err(io_err("read", src_dir))?;
    if !root_meta.is_dir() {
        return Err(ArchiveError::NotADirectory {
            path: src_dir.to_owned(),
        });
    }
    if fs::symlink_metadata(archive_path).is_ok() {
        return Err(ArchiveError::Exists {
            path: archive_path.to_owned(),
        });
    }
    let archive_dir = parent_dir(archive_path);
    let canonical_src = fs::canonicalize(src_dir).map_err(io_err("resolve", src_dir))?;
    let canonical_dir = fs::canonicalize(archive_dir).map_err(io_err("resolve", archive_dir))?;
    if canonical_dir.starts_with(&canonical_src) {
        return Err(ArchiveError::InsideSource {
            archive: archive_path.to_owned(),
            dir: src_dir.to_owned(),
        });
    }

    let partial = partial_path(archive_path);
    let out = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)
        .map_err(io_err("create", &partial))?;
    let written = write_archive(src_dir, &root_meta, out, &partial).and_then(|(report, out)| {
        out.sync_all().map_err(io_err("fsync", &partial))?;
        drop(out);
        rename_noreplace(&partial, archive_path).map_err(|source| {
            if source.kind() == io::ErrorKind::AlreadyExists {
                ArchiveError::Exists {
                    path: archive_path.to_owned(),
                }
            } else {
                ArchiveError::Io {
                    op: "rename the finished archive into place at",
                    path: archive_path.to_owned(),
                    source,
                }
            }
        })?;
        Ok(report)
    });
    let report = match written {
        Ok(report) => report,
        Err(err) => {
            // Best effort: the error at hand is the one to report, and a leftover .partial
            // is harmless (never taken for an archive, overwritten by the next attempt).
            let _ = fs::remove_file(&partial);
            return Err(err);
        }
    };
    fsync_dir(archive_dir)?;
    Ok(report)
}

/// Writes the tar+zstd of `src_dir` to `out`; returns the report and the file to fsync.
fn write_archive(
    src_dir: &Path,
    root_meta: &fs::Metadata,
    out: File,
    partial: &Path,
) -> Result<(ArchiveReport, File), ArchiveError> {
    let write_err = io_err("write archive", partial);
    let sink = HashingWriter {
        inner: BufWriter::with_capacity(CHUNK * 4, out),
        hasher: blake3::Hasher::new(),
        count: 0,
    };
    let mut encoder =
        zstd::Encoder::new(sink, ZSTD_LEVEL).map_err(io_err("start zstd for", partial))?;
    encoder
        .include_checksum(true)
        .map_err(io_err("configure zstd for", partial))?;
    // Compression on worker threads, so that reading and hashing the files overlaps it. The
    // output doesn't depend on the number of workers.
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(8)) as u32;
    encoder
        .multithread(workers)
        .map_err(io_err("configure zstd for", partial))?;

    let mut walk = Walk {
        tar: tar::Builder::new(encoder),
        partial,
        dev: root_meta.dev(),
        manifest: Vec::new(),
        skipped: Vec::new(),
        files: 0,
        bytes: 0,
    };
    walk.append_dir(ROOT, root_meta)?;
    walk.walk(src_dir, ROOT)?;
    let Walk {
        tar,
        manifest,
        skipped,
        files,
        bytes,
        ..
    } = walk;
    let encoder = tar.into_inner().map_err(io_err("write archive", partial))?;
    let sink = encoder.finish().map_err(io_err("write archive", partial))?;
    let archive_blake3 = sink.hasher.finalize().to_hex().to_string();
    let archive_bytes = sink.count;
    let out = sink
        .inner
        .into_inner()
        .map_err(|e| write_err(e.into_error()))?;
    let report = ArchiveReport {
        files,
        bytes,
        archive_bytes,
        archive_blake3,
        manifest,
        skipped,
    };
    Ok((report, out))
}

type Encoder = zstd::Encoder<'static, HashingWriter<BufWriter<File>>>;

/// The walk of [`create`]: appends each entry to the tar and to the manifest.
struct Walk<'a> {
    tar: tar::Builder<Encoder>,
    partial: &'a Path,
    /// The filesystem of the archived directory: a directory on another is a mount point.
    dev: u64,
    manifest: Vec<FileEntry>,
    skipped: Vec<String>,
    files: u64,
    bytes: u64,
}

impl Walk<'_> {
    /// Appends the children of `dir` (at `rel` in the archive), depth first, sorted by name.
    fn walk(&mut self, dir: &Path, rel: &str) -> Result<(), ArchiveError> {
        let mut names = fs::read_dir(dir)
            .map_err(io_err("list", dir))?
            .map(|entry| entry.map(|e| e.file_name()))
            .collect::<Result<Vec<OsString>, _>>()
            .map_err(io_err("list", dir))?;
        // OsString orders bytewise on Unix: the order doesn't depend on the locale.
        names.sort_unstable();
        for name in names {
            let path = dir.join(&name);
            let Some(name) = name.to_str() else {
                return Err(ArchiveError::NonUtf8 { path });
            };
            let rel = join_rel(rel, name);
            let meta = fs::symlink_metadata(&path).map_err(io_err("read", &path))?;
            let kind = meta.file_type();
            if kind.is_dir() {
                if meta.dev() != self.dev {
                    return Err(ArchiveError::NestedMount { path });
                }
                self.append_dir(&rel, &meta)?;
                self.walk(&path, &rel)?;
            } else if kind.is_file() {
                self.append_file(&rel, &path)?;
            } else if kind.is_symlink() {
                self.append_symlink(&rel, &path, &meta)?;
            } else if kind.is_socket() {
                self.skipped.push(rel);
            } else {
                let kind = if kind.is_fifo() {
                    "FIFO"
                } else if kind.is_char_device() {
                    "character device"
                } else if kind.is_block_device() {
                    "block device"
                } else {
                    "file of unknown type"
                };
                return Err(ArchiveError::Unsupported { path, kind });
            }
        }
        Ok(())
    }

    fn append_dir(&mut self, rel: &str, meta: &fs::Metadata) -> Result<(), ArchiveError> {
        let mut header = header(tar::EntryType::Directory, meta, 0);
        // Directories end with `/` in a tar, as GNU tar writes them.
        let name = if rel == ROOT {
            "./".to_owned()
        } else {
            format!("{rel}/")
        };
        self.tar
            .append_data(&mut header, name, io::empty())
            .map_err(io_err("write archive", self.partial))?;
        self.manifest
            .push(entry(rel, EntryKind::Dir, meta, 0, None, None));
        Ok(())
    }

    fn append_symlink(
        &mut self,
        rel: &str,
        path: &Path,
        meta: &fs::Metadata,
    ) -> Result<(), ArchiveError> {
        let target = fs::read_link(path).map_err(io_err("read symlink", path))?;
        let Some(link) = target.to_str() else {
            return Err(ArchiveError::NonUtf8 {
                path: path.to_owned(),
            });
        };
        let mut header = header(tar::EntryType::Symlink, meta, 0);
        self.tar
            .append_link(&mut header, rel, link)
            .map_err(io_err("write archive", self.partial))?;
        let link = Some(link.to_owned());
        self.manifest
            .push(entry(rel, EntryKind::Symlink, meta, 0, None, link));
        Ok(())
    }

    /// Appends a regular file, hashing it as it is read. The header comes from the open file;
    /// a file written to meanwhile (its size, mtime or ctime differ after reading, or it had
    /// fewer bytes than its size) is an error, not a torn copy.
    fn append_file(&mut self, rel: &str, path: &Path) -> Result<(), ArchiveError> {
        // O_NOFOLLOW: the name was a regular file when listed; if it is a symlink now, fail
        // rather than archive whatever it points to.
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(path)
            .map_err(io_err("open", path))?;
        let meta = file.metadata().map_err(io_err("read", path))?;
        let size = meta.len();
        let mut header = header(tar::EntryType::Regular, &meta, size);
        let mut reader = BufReader::with_capacity(
            CHUNK,
            HashingReader {
                inner: (&file).take(size),
                hasher: blake3::Hasher::new(),
                count: 0,
                failed: false,
            },
        );
        if let Err(err) = self.tar.append_data(&mut header, rel, &mut reader) {
            let read_failed = reader.get_ref().failed;
            return Err(if read_failed {
                io_err("read", path)(err)
            } else {
                io_err("write archive", self.partial)(err)
            });
        }
        let hashing = reader.into_inner();
        let after = file.metadata().map_err(io_err("read", path))?;
        let stamp = |m: &fs::Metadata| {
            (
                m.len(),
                m.mtime(),
                m.mtime_nsec(),
                m.ctime(),
                m.ctime_nsec(),
            )
        };
        if hashing.count != size || stamp(&after) != stamp(&meta) {
            return Err(ArchiveError::Changed {
                path: path.to_owned(),
            });
        }
        self.files += 1;
        self.bytes += size;
        let hash = Some(hashing.hasher.finalize().to_hex().to_string());
        self.manifest
            .push(entry(rel, EntryKind::File, &meta, size, hash, None));
        Ok(())
    }
}

/// A GNU header (numbers too big for octal fields, like a uid from a user namespace, are
/// stored in binary) with numeric ownership and no user or group names.
fn header(kind: tar::EntryType, meta: &fs::Metadata, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(meta.mode() & MODE_BITS);
    header.set_uid(meta.uid().into());
    header.set_gid(meta.gid().into());
    // A tar stores unsigned seconds; a file dated before 1970 is dated 1970.
    header.set_mtime(u64::try_from(meta.mtime()).unwrap_or(0));
    header.set_size(size);
    header
}

fn entry(
    rel: &str,
    kind: EntryKind,
    meta: &fs::Metadata,
    size: u64,
    blake3: Option<String>,
    link: Option<String>,
) -> FileEntry {
    FileEntry {
        path: rel.to_owned(),
        kind,
        size,
        mode: meta.mode() & MODE_BITS,
        uid: meta.uid(),
        gid: meta.gid(),
        blake3,
        link,
    }
}

/// Checks an archive without extracting it: the archive file's blake3 first, then every
/// entry (kind, mode, owner, size, content blake3, symlink target) and the set of paths
/// against `manifest`. The error names the first entry that differs, in archive order.
pub fn verify(
    archive_path: &Path,
    expected_archive_blake3: &str,
    manifest: &[FileEntry],
) -> Result<(), ArchiveError> {
    let index = Index::new(manifest)?;
    check_archive_blake3(archive_path, expected_archive_blake3)?;
    stream(archive_path, &index, None)?;
    Ok(())
}

/// Puts the archive back as the contents of `target_dir` (see the module documentation):
/// verified while extracted beside the target, then swapped in by renames. On any mismatch
/// the target is untouched; a failure during the swap is an [`ArchiveError::Swap`] that says
/// where every piece is.
pub fn restore(
    archive_path: &Path,
    expected_archive_blake3: &str,
    manifest: &[FileEntry],
    target_dir: &Path,
) -> Result<RestoreReport, ArchiveError> {
    let index = Index::new(manifest)?;
    check_archive_blake3(archive_path, expected_archive_blake3)?;

    let meta = fs::symlink_metadata(target_dir).map_err(io_err("read", target_dir))?;
    if !meta.is_dir() {
        return Err(ArchiveError::NotADirectory {
            path: target_dir.to_owned(),
        });
    }
    // Renames need the real path; and a trailing `.` or `/` would make a bad sibling name.
    let target = fs::canonicalize(target_dir).map_err(io_err("resolve", target_dir))?;
    let (Some(parent), Some(name)) = (target.parent(), target.file_name()) else {
        return Err(ArchiveError::NotADirectory { path: target });
    };

    let staging = unique_dir(parent, name, "cutover-restore", |_| random_suffix())?;
    let extracted = fs::symlink_metadata(&staging)
        .map_err(io_err("read", &staging))
        .and_then(|staging_meta| {
            if staging_meta.dev() != meta.dev() {
                return Err(ArchiveError::CrossDevice {
                    target: target.clone(),
                });
            }
            let streamed = stream(archive_path, &index, Some(&staging))?;
            syncfs(&staging)?;
            Ok(streamed)
        });
    let streamed = match extracted {
        Ok(streamed) => streamed,
        Err(err) => return Err(discard(&staging, err)),
    };

    let stamp = utc_stamp(SystemTime::now());
    let failed = match unique_dir(parent, name, "cutover-failed", |n| match n {
        0 => stamp.clone(),
        n => format!("{stamp}-{n}"),
    }) {
        Ok(failed) => failed,
        Err(err) => return Err(discard(&staging, err)),
    };
    swap(&target, &staging, &failed, &streamed)?;
    Ok(RestoreReport {
        files: streamed.files,
        bytes: streamed.bytes,
        failed_dir: failed,
    })
}

/// Bytes of the regular files under `dir` (symlinks not followed): what an archive of it holds
/// uncompressed, and what a restore of it writes (files are restored whole, not sparse).
pub fn estimate_size(dir: &Path) -> Result<u64, ArchiveError> {
    tree_size(dir).map(|(_, bytes)| bytes)
}

/// Regular files under `dir` (symlinks not followed), and their bytes.
pub fn tree_size(dir: &Path) -> Result<(u64, u64), ArchiveError> {
    let (mut files, mut total) = (0, 0);
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).map_err(io_err("list", &dir))? {
            let entry = entry.map_err(io_err("list", &dir))?;
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).map_err(io_err("read", &path))?;
            if meta.is_dir() {
                pending.push(path);
            } else if meta.is_file() {
                files += 1;
                total += meta.len();
            }
        }
    }
    Ok((files, total))
}

/// The manifest, checked and indexed by path.
struct Index<'m> {
    entries: &'m [FileEntry],
    by_path: std::collections::HashMap<&'m str, usize>,
}

impl<'m> Index<'m> {
    /// Checks that the manifest describes a tree that can be extracted safely: relative paths
    /// without `.` or `..` components, each once, the root a directory, every parent a
    /// directory of the manifest. Since every archive entry must match an entry here and come
    /// after its parent, extraction never writes outside the staging directory, nor through a
    /// symlink.
    fn new(entries: &'m [FileEntry]) -> Result<Self, ArchiveError> {
        let bad = |e: &FileEntry, why: &str| ArchiveError::Manifest(format!("`{}` {why}", e.path));
        let mut by_path = std::collections::HashMap::with_capacity(entries.len());
        for (i, e) in entries.iter().enumerate() {
            if e.path != ROOT
                && (e.path.is_empty()
                    || e.path.contains('\0')
                    || e.path
                        .split('/')
                        .any(|c| c.is_empty() || c == "." || c == ".."))
            {
                return Err(bad(e, "is not a plain relative path"));
            }
            if by_path.insert(e.path.as_str(), i).is_some() {
                return Err(bad(e, "is listed twice"));
            }
            let shape_ok = match e.kind {
                EntryKind::File => {
                    e.blake3.as_ref().is_some_and(|h| is_blake3_hex(h)) && e.link.is_none()
                }
                EntryKind::Dir => e.blake3.is_none() && e.link.is_none() && e.size == 0,
                EntryKind::Symlink => e.blake3.is_none() && e.link.is_some() && e.size == 0,
            };
            if !shape_ok {
                return Err(bad(e, "has fields that don't fit its kind"));
            }
        }
        match by_path.get(ROOT).map(|&i| entries[i].kind) {
            Some(EntryKind::Dir) => {}
            _ => {
                return Err(ArchiveError::Manifest(
                    "no root directory entry `.`".to_owned(),
                ));
            }
        }
        for e in entries.iter().filter(|e| e.path != ROOT) {
            let parent = parent_rel(&e.path);
            if by_path.get(parent).map(|&i| entries[i].kind) != Some(EntryKind::Dir) {
                return Err(bad(
                    e,
                    &format!("has no parent directory `{parent}` in the manifest"),
                ));
            }
        }
        Ok(Index { entries, by_path })
    }
}

/// Metadata of an extracted entry, applied after its content.
#[derive(Clone, Copy, Debug)]
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
}

/// What a pass over an archive found.
struct Streamed {
    files: u64,
    bytes: u64,
    /// The root entry's metadata, for the target directory.
    root: Meta,
    /// The top-level directories, whose mtime a move into the target may change.
    top_dirs: Vec<(String, Meta)>,
}

/// Reads the archive through, checking every entry against the manifest; with `out`,
/// extracts it there (an empty directory) as it goes.
fn stream(
    archive_path: &Path,
    index: &Index<'_>,
    out: Option<&Path>,
) -> Result<Streamed, ArchiveError> {
    let file = File::open(archive_path).map_err(io_err("open", archive_path))?;
    let mut pass = Pass {
        archive: archive_path,
        index,
        out,
        seen: vec![false; index.entries.len()],
        dirs: Vec::new(),
        root: None,
        files: 0,
        bytes: 0,
        buf: vec![0; CHUNK],
    };
    let decoder = zstd::Decoder::new(file).map_err(|e| pass.corrupt(e))?;
    let mut tar = tar::Archive::new(decoder);
    for entry in tar.entries().map_err(|e| pass.corrupt(e))? {
        let entry = entry.map_err(|e| pass.corrupt(e))?;
        pass.entry(entry)?;
    }
    pass.finish()
}

/// The state of one [`stream`].
struct Pass<'a, 'm> {
    archive: &'a Path,
    index: &'a Index<'m>,
    out: Option<&'a Path>,
    /// Which manifest entries the archive has had, by manifest position.
    seen: Vec<bool>,
    /// The directories extracted, in archive order; their metadata comes last.
    dirs: Vec<(String, Meta)>,
    root: Option<Meta>,
    files: u64,
    bytes: u64,
    buf: Vec<u8>,
}

impl<'m> Pass<'_, 'm> {
    fn corrupt(&self, source: io::Error) -> ArchiveError {
        ArchiveError::Corrupt {
            archive: self.archive.to_owned(),
            source,
        }
    }

    fn mismatch(&self, entry: &str, detail: impl Into<String>) -> ArchiveError {
        ArchiveError::Mismatch {
            archive: self.archive.to_owned(),
            entry: entry.to_owned(),
            detail: detail.into(),
        }
    }

    fn differs(
        &self,
        entry: &str,
        what: &str,
        in_archive: impl std::fmt::Display,
        in_manifest: impl std::fmt::Display,
    ) -> ArchiveError {
        let detail =
            format!("{what} is {in_archive} in the archive, {in_manifest} in the manifest");
        self.mismatch(entry, detail)
    }

    fn entry(&mut self, mut entry: tar::Entry<'_, impl Read>) -> Result<(), ArchiveError> {
        let raw = entry.path_bytes();
        let Some(rel) = normalize(&raw) else {
            let name = String::from_utf8_lossy(&raw);
            return Err(self.mismatch(&name, "the name is not a plain relative UTF-8 path"));
        };
        let want = self.claim(&rel)?;
        let header = entry.header();
        let kind = match header.entry_type() {
            tar::EntryType::Regular => EntryKind::File,
            tar::EntryType::Directory => EntryKind::Dir,
            tar::EntryType::Symlink => EntryKind::Symlink,
            other => {
                let detail = format!("unexpected tar entry type {other:?}");
                return Err(self.mismatch(&rel, detail));
            }
        };
        let id = |value: u64, what: &str| {
            u32::try_from(value)
                .map_err(|_| self.mismatch(&rel, format!("{what} {value} is out of range")))
        };
        let meta = Meta {
            mode: header.mode().map_err(|e| self.corrupt(e))? & MODE_BITS,
            uid: id(header.uid().map_err(|e| self.corrupt(e))?, "uid")?,
            gid: id(header.gid().map_err(|e| self.corrupt(e))?, "gid")?,
            mtime: i64::try_from(header.mtime().map_err(|e| self.corrupt(e))?).unwrap_or(i64::MAX),
        };
        let size = header.size().map_err(|e| self.corrupt(e))?;
        if kind != want.kind {
            return Err(self.differs(
                &rel,
                "the kind",
                format!("{kind:?}"),
                format!("{:?}", want.kind),
            ));
        }
        if meta.mode != want.mode {
            let (a, m) = (format!("{:o}", meta.mode), format!("{:o}", want.mode));
            return Err(self.differs(&rel, "the mode", a, m));
        }
        if (meta.uid, meta.gid) != (want.uid, want.gid) {
            let (a, m) = (
                format!("{}:{}", meta.uid, meta.gid),
                format!("{}:{}", want.uid, want.gid),
            );
            return Err(self.differs(&rel, "the owner", a, m));
        }
        let dest = self.out.map(|out| out.join(&rel));
        match kind {
            EntryKind::Dir if rel == ROOT => self.root = Some(meta),
            EntryKind::Dir => {
                if let Some(dest) = &dest {
                    // Owner-only until its metadata is applied, after its children are in.
                    DirBuilder::new()
                        .mode(0o700)
                        .create(dest)
                        .map_err(io_err("create directory", dest))?;
                    self.dirs.push((rel, meta));
                }
            }
            EntryKind::Symlink => {
                let link = entry.link_name_bytes().unwrap_or_default();
                let link = String::from_utf8_lossy(&link);
                let want_link = want.link.as_deref().unwrap_or_default();
                if link != want_link {
                    return Err(self.differs(
                        &rel,
                        "the symlink target",
                        format!("`{link}`"),
                        format!("`{want_link}`"),
                    ));
                }
                if let Some(dest) = &dest {
                    std::os::unix::fs::symlink(link.as_ref(), dest)
                        .map_err(io_err("create symlink", dest))?;
                    chown(dest, meta)?;
                    set_mtime(dest, meta.mtime).map_err(io_err("set the mtime of", dest))?;
                }
            }
            EntryKind::File => {
                if size != want.size {
                    return Err(self.differs(&rel, "the size", size, want.size));
                }
                self.file(&rel, &mut entry, want, meta, dest.as_deref())?;
                self.files += 1;
                self.bytes += size;
            }
        }
        Ok(())
    }

    /// Looks `rel` up in the manifest and marks it seen: once only, after its parent.
    fn claim(&mut self, rel: &str) -> Result<&'m FileEntry, ArchiveError> {
        let entries: &'m [FileEntry] = self.index.entries;
        let Some(&i) = self.index.by_path.get(rel) else {
            return Err(self.mismatch(rel, "in the archive but not in the manifest"));
        };
        if std::mem::replace(&mut self.seen[i], true) {
            return Err(self.mismatch(rel, "in the archive twice"));
        }
        if rel != ROOT && !self.seen[self.index.by_path[parent_rel(rel)]] {
            return Err(self.mismatch(rel, "comes before its parent directory"));
        }
        Ok(&entries[i])
    }

    /// Hashes a file's content, writing it to `dest` when extracting, then gives it its
    /// owner, mode and mtime.
    fn file(
        &mut self,
        rel: &str,
        content: &mut impl Read,
        want: &FileEntry,
        meta: Meta,
        dest: Option<&Path>,
    ) -> Result<(), ArchiveError> {
        let mut out = match dest {
            Some(dest) => Some(
                OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(dest)
                    .map_err(io_err("create", dest))?,
            ),
            None => None,
        };
        let mut hasher = blake3::Hasher::new();
        loop {
            let n = match content.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.corrupt(e)),
            };
            hasher.update(&self.buf[..n]);
            if let (Some(out), Some(dest)) = (&mut out, dest) {
                out.write_all(&self.buf[..n])
                    .map_err(io_err("write", dest))?;
            }
        }
        let hash = hasher.finalize().to_hex();
        let want_hash = want.blake3.as_deref().unwrap_or_default();
        if hash.as_str() != want_hash {
            return Err(self.differs(rel, "the content's blake3", hash, want_hash));
        }
        let (Some(out), Some(dest)) = (out, dest) else {
            return Ok(());
        };
        // chown before chmod: chown clears setuid and setgid.
        std::os::unix::fs::fchown(&out, Some(meta.uid), Some(meta.gid)).map_err(|source| {
            ArchiveError::Owner {
                path: dest.to_owned(),
                uid: meta.uid,
                gid: meta.gid,
                source,
            }
        })?;
        out.set_permissions(fs::Permissions::from_mode(meta.mode))
            .map_err(io_err("set the mode of", dest))?;
        out.set_modified(system_time(meta.mtime))
            .map_err(io_err("set the mtime of", dest))
    }

    /// Checks that the archive had every manifest entry; when extracting, gives the
    /// directories their metadata.
    fn finish(self) -> Result<Streamed, ArchiveError> {
        let missing = self
            .index
            .entries
            .iter()
            .zip(&self.seen)
            .find(|(_, seen)| !**seen);
        if let Some((missing, _)) = missing {
            return Err(self.mismatch(&missing.path, "in the manifest but not in the archive"));
        }
        // Index::new guarantees a root entry, and every manifest entry was seen.
        let Some(root) = self.root else {
            return Err(self.mismatch(ROOT, "in the manifest but not in the archive"));
        };
        let mut top_dirs = Vec::new();
        if let Some(out) = self.out {
            // Deepest first, so that setting a directory's mtime is the last change inside
            // its parent, and a read-only directory is made read-only after its children.
            for (rel, meta) in self.dirs.into_iter().rev() {
                apply_dir_meta(&out.join(&rel), meta)?;
                if !rel.contains('/') {
                    top_dirs.push((rel, meta));
                }
            }
            // The staging directory takes the root's owner now, so that a caller who may
            // not give it learns before the target is touched.
            chown(out, root)?;
        }
        Ok(Streamed {
            files: self.files,
            bytes: self.bytes,
            root,
            top_dirs,
        })
    }
}

/// A tar entry name as a manifest path: `./` is the root, a directory's trailing `/` goes.
fn normalize(raw: &[u8]) -> Option<String> {
    let name = std::str::from_utf8(raw).ok()?;
    let name = name.strip_suffix('/').unwrap_or(name);
    if name == ROOT {
        return Some(ROOT.to_owned());
    }
    let plain = !name.is_empty()
        && name
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    plain.then(|| name.to_owned())
}

fn apply_dir_meta(path: &Path, meta: Meta) -> Result<(), ArchiveError> {
    chown(path, meta)?;
    fs::set_permissions(path, fs::Permissions::from_mode(meta.mode))
        .map_err(io_err("set the mode of", path))?;
    set_mtime(path, meta.mtime).map_err(io_err("set the mtime of", path))
}

fn chown(path: &Path, meta: Meta) -> Result<(), ArchiveError> {
    std::os::unix::fs::lchown(path, Some(meta.uid), Some(meta.gid)).map_err(|source| {
        ArchiveError::Owner {
            path: path.to_owned(),
            uid: meta.uid,
            gid: meta.gid,
            source,
        }
    })
}

/// Sets the mtime of `path` itself (a symlink's own, not its target's), leaving the atime.
fn set_mtime(path: &Path, mtime: i64) -> io::Result<()> {
    use rustix::fs::{AtFlags, CWD, Timespec, Timestamps, UTIME_OMIT};
    let times = Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: UTIME_OMIT,
        },
        last_modification: Timespec {
            tv_sec: mtime,
            tv_nsec: 0,
        },
    };
    rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(())
}

fn system_time(mtime: i64) -> SystemTime {
    let offset = std::time::Duration::from_secs(mtime.unsigned_abs());
    if mtime >= 0 {
        UNIX_EPOCH + offset
    } else {
        UNIX_EPOCH - offset
    }
}

/// Moves the target's entries aside and the staged ones in, then gives the target the root
/// entry's metadata. See the module documentation for the states a failure can leave.
fn swap(
    target: &Path,
    staging: &Path,
    failed: &Path,
    streamed: &Streamed,
) -> Result<(), ArchiveError> {
    let (t, s, f) = (target.display(), staging.display(), failed.display());
    let swap_err = |step: String, state: String, source| ArchiveError::Swap {
        target: target.to_owned(),
        step,
        state,
        source,
    };

    // 1. The target's entries into the failed directory; on failure, back again.
    let previous = match sorted_names(target) {
        Ok(names) => names,
        Err(source) => {
            let cleanup = remove_both(staging, failed);
            let step = format!("listing {t}");
            return Err(swap_err(
                step,
                format!("the target is untouched{cleanup}"),
                source,
            ));
        }
    };
    // Moving entries out and back changes the directory's own mtime: an undo puts it back.
    let target_mtime = std::fs::symlink_metadata(target).map(|m| m.mtime()).ok();
    if let Err(stop) = move_all(target, failed, &previous) {
        let step = format!("moving {} aside into {f}", stop.from.display());
        let state = match move_all(failed, target, &stop.moved) {
            Ok(()) => {
                if let Some(mtime) = target_mtime {
                    let _ = set_mtime(target, mtime);
                }
                format!(
                    "the target is unchanged (the entries already moved were moved back){}",
                    remove_both(staging, failed)
                )
            }
            Err(undo) => format!(
                "the target holds part of its previous entries and the rest are in {f} \
                 (moving them back failed at {}: {}); the verified restored entries are \
                 complete in {s}",
                undo.from.display(),
                undo.source
            ),
        };
        return Err(swap_err(step, state, stop.source));
    }

    // 2. The restored entries into the target.
    let in_place = format!("the target's previous entries are all in {f}");
    let restored = sorted_names(staging).map_err(|source| {
        let state = format!("{in_place}; the target is empty; the restored entries are all in {s}");
        swap_err(format!("listing {s}"), state, source)
    })?;
    if let Err(stop) = move_all(staging, target, &restored) {
        let step = format!("moving {} into {t}", stop.from.display());
        let state = format!(
            "{in_place}; the target holds part of the restored entries and the rest are in \
             {s}: move them into {t} to finish the restore"
        );
        return Err(swap_err(step, state, stop.source));
    }

    // 3. The target's own metadata, the staging directory gone, all of it durable.
    let finishing = |step: String, source| {
        let state = format!("the restored entries are all in place, and {in_place}");
        swap_err(step, state, source)
    };
    for (rel, meta) in &streamed.top_dirs {
        // Moving a directory to another parent rewrites its `..` entry; whether that
        // changes its mtime is up to the filesystem.
        let path = target.join(rel);
        set_mtime(&path, meta.mtime)
            .map_err(|e| finishing(format!("setting the mtime of {}", path.display()), e))?;
    }
    let root = streamed.root;
    std::os::unix::fs::chown(target, Some(root.uid), Some(root.gid))
        .map_err(|e| finishing(format!("giving {t} its owner {}:{}", root.uid, root.gid), e))?;
    fs::set_permissions(target, fs::Permissions::from_mode(root.mode))
        .map_err(|e| finishing(format!("setting the mode of {t}"), e))?;
    fs::remove_dir(staging).map_err(|e| finishing(format!("removing the empty {s}"), e))?;
    set_mtime(target, root.mtime).map_err(|e| finishing(format!("setting the mtime of {t}"), e))?;
    let sync = File::open(target).and_then(|dir| Ok(rustix::fs::syncfs(&dir)?));
    sync.map_err(|e| finishing(format!("flushing the filesystem of {t}"), e))?;
    Ok(())
}

/// Removes the staging directory and the (empty) failed directory after a swap that changed
/// nothing; returns a note for the error message if either stays behind.
fn remove_both(staging: &Path, failed: &Path) -> String {
    let mut note = String::new();
    if let Err(e) = fs::remove_dir_all(staging) {
        note += &format!(
            "; the verified restored entries stay in {} ({e})",
            staging.display()
        );
    }
    if let Err(e) = fs::remove_dir(failed) {
        note += &format!("; {} stays behind ({e})", failed.display());
    }
    note
}

/// Where a [`move_all`] stopped.
struct MoveStop {
    moved: Vec<OsString>,
    from: PathBuf,
    source: io::Error,
}

/// Renames each of `names` from `from_dir` into `to_dir`, never replacing an existing name.
fn move_all(from_dir: &Path, to_dir: &Path, names: &[OsString]) -> Result<(), MoveStop> {
    let mut moved = Vec::with_capacity(names.len());
    for name in names {
        let from = from_dir.join(name);
        if let Err(source) = rename_noreplace(&from, &to_dir.join(name)) {
            return Err(MoveStop {
                moved,
                from,
                source,
            });
        }
        moved.push(name.clone());
    }
    Ok(())
}

fn sorted_names(dir: &Path) -> io::Result<Vec<OsString>> {
    let mut names = fs::read_dir(dir)?
        .map(|entry| entry.map(|e| e.file_name()))
        .collect::<io::Result<Vec<_>>>()?;
    names.sort_unstable();
    Ok(names)
}

/// `rename(2)` that fails with `AlreadyExists` instead of replacing `to`. Filesystems without
/// `RENAME_NOREPLACE` (NFS, some FUSE) get a check then a plain rename: racy in principle,
/// but the stack's lease keeps other cutover processes out, and the application is stopped.
pub(crate) fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    #[cfg(test)]
    if tests::fail_rename(from) {
        return Err(io::Error::other("injected failure"));
    }
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    use rustix::io::Errno;
    match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(Errno::INVAL | Errno::NOSYS | Errno::NOTSUP) => {
            if fs::symlink_metadata(to).is_ok() {
                return Err(io::Error::from(io::ErrorKind::AlreadyExists));
            }
            fs::rename(from, to)
        }
        Err(e) => Err(e.into()),
    }
}

/// Creates `<parent>/<name>.<tag>-<suffix(n)>`, owner-only, trying the next `n` while the
/// name is taken.
fn unique_dir(
    parent: &Path,
    name: &OsStr,
    tag: &str,
    suffix: impl Fn(u32) -> String,
) -> Result<PathBuf, ArchiveError> {
    let mut attempt = 0;
    loop {
        let mut dir_name = name.to_owned();
        dir_name.push(format!(".{tag}-{}", suffix(attempt)));
        let dir = parent.join(dir_name);
        match DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 1000 => attempt += 1,
            Err(e) => return Err(io_err("create directory", &dir)(e)),
        }
    }
}

/// Removes a staging directory after a failed extraction; its error joins the one at hand.
fn discard(staging: &Path, error: ArchiveError) -> ArchiveError {
    match fs::remove_dir_all(staging) {
        Ok(()) => error,
        Err(source) => ArchiveError::Leftover {
            error: Box::new(error),
            path: staging.to_owned(),
            source,
        },
    }
}

/// Checks the blake3 of the archive file, before anything is decoded from it.
fn check_archive_blake3(archive_path: &Path, expected: &str) -> Result<(), ArchiveError> {
    let file = File::open(archive_path).map_err(io_err("open", archive_path))?;
    let mut hasher = blake3::Hasher::new();
    hasher
        .update_reader(BufReader::with_capacity(CHUNK, file))
        .map_err(io_err("read", archive_path))?;
    let actual = hasher.finalize().to_hex();
    if !actual.as_str().eq_ignore_ascii_case(expected) {
        return Err(ArchiveError::Checksum {
            archive: archive_path.to_owned(),
            expected: expected.to_owned(),
            actual: actual.to_string(),
        });
    }
    Ok(())
}

fn syncfs(path: &Path) -> Result<(), ArchiveError> {
    let dir = File::open(path).map_err(io_err("open", path))?;
    rustix::fs::syncfs(&dir).map_err(|e| io_err("flush the filesystem of", path)(e.into()))
}

fn fsync_dir(dir: &Path) -> Result<(), ArchiveError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

fn partial_path(archive_path: &Path) -> PathBuf {
    let mut name = archive_path.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

pub(crate) fn join_rel(parent: &str, name: &str) -> String {
    if parent == ROOT {
        name.to_owned()
    } else {
        format!("{parent}/{name}")
    }
}

fn parent_rel(rel: &str) -> &str {
    rel.rsplit_once('/').map_or(ROOT, |(parent, _)| parent)
}

/// 64 lowercase hex digits, as blake3's `to_hex` writes them (and as they are compared).
fn is_blake3_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A name suffix unlikely to be taken: std's per-process random hash keys over the pid and
/// the time. [`unique_dir`] makes it unique.
fn random_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("{:016x}", hasher.finish())
}

/// `20250314T093000Z`: sorts by time, and reads as UTC whatever the host's zone.
pub(crate) fn utc_stamp(t: SystemTime) -> String {
    jiff::Timestamp::try_from(t)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .strftime("%Y%m%dT%H%M%SZ")
        .to_string()
}

/// Hashes and counts what is read through it; remembers whether reading failed, so that an
/// error from the tar writer can be told apart from an error reading the source file.
struct HashingReader<R> {
    inner: R,
    hasher: blake3::Hasher,
    count: u64,
    failed: bool,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.hasher.update(&buf[..n]);
                self.count += n as u64;
                Ok(n)
            }
            Err(e) => {
                self.failed |= e.kind() != io::ErrorKind::Interrupted;
                Err(e)
            }
        }
    }
}

/// Hashes and counts what is written through it: the archive's blake3 and size come from
/// the same pass that writes it.
struct HashingWriter<W> {
    inner: W,
    hasher: blake3::Hasher,
    count: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::os::unix::fs::symlink;
    use std::time::Instant;

    use super::*;

    type RenamePredicate = Box<dyn Fn(&Path) -> bool>;

    thread_local! {
        /// A rename whose source this predicate accepts fails: the swap's failure paths.
        static FAIL_RENAME: std::cell::RefCell<Option<RenamePredicate>> =
            const { std::cell::RefCell::new(None) };
    }

    pub(super) fn fail_rename(from: &Path) -> bool {
        FAIL_RENAME.with(|f| f.borrow().as_ref().is_some_and(|pred| pred(from)))
    }

    fn set_fail_rename(pred: impl Fn(&Path) -> bool + 'static) {
        FAIL_RENAME.with(|f| *f.borrow_mut() = Some(Box::new(pred)));
    }

    /// Deterministic incompressible bytes (xorshift64*).
    fn noise(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed | 1;
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
        out.truncate(len);
        out
    }

    fn write(path: &Path, data: &[u8], mode: u32) {
        fs::write(path, data).expect("write fixture file");
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod fixture file");
    }

    fn mkdir(path: &Path, mode: u32) {
        fs::create_dir(path).expect("create fixture dir");
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod fixture dir");
    }

    const LONG_DIR: &str =
        "a-directory-name-long-enough-that-the-path-needs-the-gnu-long-name-extension";

    /// A tree with what a data directory holds: nested and read-only directories, an empty
    /// file, a large one, a SQLite pair, symlinks (one dangling), unusual modes, an old
    /// mtime, and names longer than a tar header's 100 bytes.
    fn fixture(dir: &Path) {
        mkdir(&dir.join("a"), 0o755);
        mkdir(&dir.join("a/b"), 0o700);
        write(&dir.join("a/b/deep.txt"), b"deep\n", 0o644);
        write(&dir.join("a/empty"), b"", 0o600);
        write(&dir.join("big.bin"), &noise(1, 20 << 20), 0o644);
        write(&dir.join("run.sh"), b"#!/bin/sh\necho hi\n", 0o755);
        write(&dir.join("secret"), b"hunter2", 0o600);
        let mut db = b"SQLite format 3\0".to_vec();
        db.extend(noise(2, 64 << 10));
        write(&dir.join("db.sqlite"), &db, 0o644);
        write(&dir.join("db.sqlite-wal"), &noise(3, 32 << 10), 0o644);
        symlink("a/b/deep.txt", dir.join("link")).expect("symlink");
        symlink("/nonexistent/elsewhere", dir.join("dangling")).expect("symlink");
        mkdir(&dir.join("shared"), 0o2775);
        write(&dir.join("shared/f"), b"shared", 0o664);
        mkdir(&dir.join(LONG_DIR), 0o755);
        let long_file = format!("{LONG_DIR}/and-a-file-name-that-is-long-as-well.txt");
        write(&dir.join(&long_file), b"long", 0o644);
        symlink(
            format!("../{long_file}"),
            dir.join(LONG_DIR).join("long-link"),
        )
        .expect("symlink");
        write(&dir.join("old"), b"old", 0o640);
        File::options()
            .write(true)
            .open(dir.join("old"))
            .and_then(|f| {
                f.set_modified(UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000))
            })
            .expect("set mtime");
        mkdir(&dir.join("readonly"), 0o755);
        write(&dir.join("readonly/file"), b"ro", 0o444);
        fs::set_permissions(dir.join("readonly"), fs::Permissions::from_mode(0o555))
            .expect("chmod");
        fs::set_permissions(dir, fs::Permissions::from_mode(0o750)).expect("chmod root");
    }

    /// Everything a restore must give back, per relative path (`.` for the root): kind,
    /// mode, owner, mtime, and the blake3 of the content or the symlink target.
    type Listing = BTreeMap<String, (char, u32, u32, u32, i64, String)>;

    fn listing(root: &Path) -> Listing {
        fn visit(path: &Path, rel: &str, out: &mut Listing) {
            let meta = fs::symlink_metadata(path).expect("lstat");
            let (kind, content) = if meta.is_dir() {
                ('d', String::new())
            } else if meta.is_file() {
                let data = fs::read(path).expect("read");
                ('f', blake3::hash(&data).to_hex().to_string())
            } else {
                let link = fs::read_link(path).expect("readlink");
                ('l', link.to_string_lossy().into_owned())
            };
            let mode = meta.mode() & MODE_BITS;
            out.insert(
                rel.to_owned(),
                (kind, mode, meta.uid(), meta.gid(), meta.mtime(), content),
            );
            if meta.is_dir() {
                for name in sorted_names(path).expect("list") {
                    let name = name.to_str().expect("utf-8 name");
                    visit(&path.join(name), &join_rel(rel, name), out);
                }
            }
        }
        let mut out = Listing::new();
        visit(root, ROOT, &mut out);
        out
    }

    /// The names in `dir`'s parent that a restore of `dir` may leave.
    fn siblings(dir: &Path, tag: &str) -> Vec<PathBuf> {
        let name = dir.file_name().expect("name").to_str().expect("utf-8");
        let prefix = format!("{name}.{tag}-");
        sorted_names(dir.parent().expect("parent"))
            .expect("list")
            .into_iter()
            .filter(|n| n.to_str().is_some_and(|n| n.starts_with(&prefix)))
            .map(|n| dir.with_file_name(n))
            .collect()
    }

    struct Setup {
        _tmp: tempfile::TempDir,
        data: PathBuf,
        archive: PathBuf,
        report: ArchiveReport,
        original: Listing,
    }

    fn setup() -> Setup {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = tmp.path().join("data");
        mkdir(&data, 0o755);
        fixture(&data);
        fs::create_dir(tmp.path().join("rp")).expect("mkdir rp");
        let archive = tmp.path().join("rp/data.tar.zst");
        let original = listing(&data);
        let report = create(&data, &archive).expect("create");
        Setup {
            _tmp: tmp,
            data,
            archive,
            report,
            original,
        }
    }

    fn flip_middle_byte(path: &Path) {
        let mut bytes = fs::read(path).expect("read archive");
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x55;
        fs::write(path, bytes).expect("write archive");
    }

    #[test]
    fn round_trip_restores_the_tree_exactly() {
        let s = setup();
        let r = &s.report;
        assert_eq!(r.files, 11);
        assert_eq!(r.bytes, estimate_size(&s.data).expect("estimate"));
        assert_eq!(
            r.archive_bytes,
            fs::metadata(&s.archive).expect("stat").len()
        );
        assert_eq!(r.manifest[0].path, ".");
        assert_eq!(r.manifest[0].mode, 0o750);
        assert_eq!(r.manifest.len(), s.original.len());
        assert!(r.skipped.is_empty());
        let wal = r
            .manifest
            .iter()
            .find(|e| e.path == "db.sqlite-wal")
            .expect("wal entry");
        assert_eq!(wal.size, 32 << 10);
        let link = r
            .manifest
            .iter()
            .find(|e| e.path == "link")
            .expect("link entry");
        assert_eq!(
            (link.kind, link.link.as_deref()),
            (EntryKind::Symlink, Some("a/b/deep.txt"))
        );
        assert!(!partial_path(&s.archive).exists());

        verify(&s.archive, &r.archive_blake3, &r.manifest).expect("verify");
        let target = s.data.with_file_name("restored");
        mkdir(&target, 0o700);
        let restored =
            restore(&s.archive, &r.archive_blake3, &r.manifest, &target).expect("restore");
        assert_eq!((restored.files, restored.bytes), (r.files, r.bytes));
        assert_eq!(listing(&target), s.original);
        assert_eq!(
            sorted_names(&restored.failed_dir).expect("list"),
            Vec::<OsString>::new()
        );
        assert!(siblings(&target, "cutover-restore").is_empty());
    }

    #[test]
    fn restore_undoes_changes_and_keeps_the_target_directory() {
        let s = setup();
        let inode = fs::metadata(&s.data).expect("stat").ino();
        write(
            &s.data.join("a/b/deep.txt"),
            b"changed by the upgrade\n",
            0o644,
        );
        write(&s.data.join("new.txt"), b"new", 0o644);
        fs::create_dir_all(s.data.join("newdir/x")).expect("mkdir");
        fs::remove_file(s.data.join("db.sqlite-wal")).expect("rm");
        fs::remove_file(s.data.join("link")).expect("rm");
        fs::set_permissions(s.data.join("secret"), fs::Permissions::from_mode(0o644))
            .expect("chmod");
        fs::set_permissions(&s.data, fs::Permissions::from_mode(0o777)).expect("chmod");
        let changed = listing(&s.data);

        let r = restore(
            &s.archive,
            &s.report.archive_blake3,
            &s.report.manifest,
            &s.data,
        )
        .expect("restore");
        assert_eq!(listing(&s.data), s.original);
        assert_eq!(fs::metadata(&s.data).expect("stat").ino(), inode);
        // What the upgrade left is kept whole for inspection.
        let mut kept = listing(&r.failed_dir);
        kept.remove(ROOT);
        let mut changed_entries = changed.clone();
        changed_entries.remove(ROOT);
        assert_eq!(kept, changed_entries);
        assert_eq!(
            siblings(&s.data, "cutover-failed"),
            vec![r.failed_dir.clone()]
        );
        assert!(siblings(&s.data, "cutover-restore").is_empty());

        // A second restore sets the (restored) entries aside under a name of its own.
        let again = restore(
            &s.archive,
            &s.report.archive_blake3,
            &s.report.manifest,
            &s.data,
        )
        .expect("restore");
        assert_ne!(again.failed_dir, r.failed_dir);
        assert_eq!(listing(&s.data), s.original);
    }

    #[test]
    fn corrupted_archive_is_refused_and_the_target_untouched() {
        let s = setup();
        write(
            &s.data.join("new.txt"),
            b"written after the restore point",
            0o644,
        );
        let before = listing(&s.data);
        flip_middle_byte(&s.archive);
        let (hash, manifest) = (&s.report.archive_blake3, &s.report.manifest);

        let err = verify(&s.archive, hash, manifest).expect_err("verify must fail");
        assert!(matches!(err, ArchiveError::Checksum { .. }), "{err}");
        assert!(
            err.to_string().contains(&s.archive.display().to_string()),
            "{err}"
        );
        let err = restore(&s.archive, hash, manifest, &s.data).expect_err("restore must fail");
        assert!(matches!(err, ArchiveError::Checksum { .. }), "{err}");
        assert_eq!(listing(&s.data), before);
        assert!(siblings(&s.data, "cutover-restore").is_empty());
        assert!(siblings(&s.data, "cutover-failed").is_empty());
    }

    /// The second line of defence: an archive damaged before its checksum was recorded is
    /// still refused, by zstd's frame checksum or the manifest, and the staging is removed.
    #[test]
    fn damaged_archive_with_a_matching_checksum_is_refused_before_the_swap() {
        let s = setup();
        let before = listing(&s.data);
        flip_middle_byte(&s.archive);
        let hash = blake3::hash(&fs::read(&s.archive).expect("read"))
            .to_hex()
            .to_string();

        let err = verify(&s.archive, &hash, &s.report.manifest).expect_err("verify must fail");
        assert!(
            matches!(
                err,
                ArchiveError::Corrupt { .. } | ArchiveError::Mismatch { .. }
            ),
            "{err}"
        );
        let err =
            restore(&s.archive, &hash, &s.report.manifest, &s.data).expect_err("restore must fail");
        assert!(
            matches!(
                err,
                ArchiveError::Corrupt { .. } | ArchiveError::Mismatch { .. }
            ),
            "{err}"
        );
        assert_eq!(listing(&s.data), before);
        assert!(siblings(&s.data, "cutover-restore").is_empty());
        assert!(siblings(&s.data, "cutover-failed").is_empty());
    }

    fn assert_mismatch_at(err: &ArchiveError, path: &str, detail: &str) {
        match err {
            ArchiveError::Mismatch {
                entry, detail: d, ..
            } => {
                assert_eq!(entry, path, "{err}");
                assert!(d.contains(detail), "{err}");
            }
            other => panic!("expected a mismatch at {path}, got: {other}"),
        }
    }

    #[test]
    fn manifest_that_lacks_a_file_is_refused() {
        let s = setup();
        let before = listing(&s.data);
        let manifest: Vec<_> = s
            .report
            .manifest
            .iter()
            .filter(|e| e.path != "a/b/deep.txt")
            .cloned()
            .collect();
        let hash = &s.report.archive_blake3;

        let err = verify(&s.archive, hash, &manifest).expect_err("verify must fail");
        assert_mismatch_at(&err, "a/b/deep.txt", "not in the manifest");
        let err = restore(&s.archive, hash, &manifest, &s.data).expect_err("restore must fail");
        assert_mismatch_at(&err, "a/b/deep.txt", "not in the manifest");
        assert_eq!(listing(&s.data), before);
        assert!(siblings(&s.data, "cutover-restore").is_empty());
    }

    #[test]
    fn manifest_with_another_content_hash_or_an_extra_file_is_refused() {
        let s = setup();
        let hash = &s.report.archive_blake3;
        let mut manifest = s.report.manifest.clone();
        let wal = manifest
            .iter_mut()
            .find(|e| e.path == "db.sqlite-wal")
            .expect("wal entry");
        wal.blake3 = Some(blake3::hash(b"other").to_hex().to_string());
        let err = verify(&s.archive, hash, &manifest).expect_err("verify must fail");
        assert_mismatch_at(&err, "db.sqlite-wal", "blake3");

        let mut manifest = s.report.manifest.clone();
        let mut ghost = manifest[1].clone();
        ghost.path = "ghost".into();
        manifest.push(ghost);
        let err = verify(&s.archive, hash, &manifest).expect_err("verify must fail");
        assert_mismatch_at(&err, "ghost", "not in the archive");

        let mut manifest = s.report.manifest.clone();
        manifest
            .iter_mut()
            .find(|e| e.path == "secret")
            .expect("secret")
            .mode = 0o644;
        let err = verify(&s.archive, hash, &manifest).expect_err("verify must fail");
        assert_mismatch_at(
            &err,
            "secret",
            "mode is 600 in the archive, 644 in the manifest",
        );
    }

    #[test]
    fn manifest_paths_that_could_escape_are_refused() {
        let s = setup();
        for bad in [
            "../escape",
            "/etc/passwd",
            "a//b",
            "a/./b",
            "",
            "a/b/deep.txt/x",
            "link/x",
        ] {
            let mut manifest = s.report.manifest.clone();
            let mut entry = manifest
                .iter()
                .find(|e| e.path == "secret")
                .expect("secret")
                .clone();
            entry.path = bad.into();
            manifest.push(entry);
            let err = verify(&s.archive, &s.report.archive_blake3, &manifest).expect_err(bad);
            assert!(matches!(err, ArchiveError::Manifest(_)), "{bad}: {err}");
        }
    }

    #[test]
    fn estimate_size_counts_regular_file_bytes() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        write(&dir.join("a"), &[0; 1000], 0o644);
        fs::create_dir(dir.join("sub")).expect("mkdir");
        write(&dir.join("sub/b"), &[0; 234], 0o644);
        write(&dir.join("sub/empty"), b"", 0o644);
        symlink("a", dir.join("link")).expect("symlink");
        assert_eq!(estimate_size(dir).expect("estimate"), 1234);
        let err = estimate_size(&dir.join("missing")).expect_err("missing dir");
        assert!(err.to_string().contains("missing"), "{err}");
    }

    /// A crash while writing leaves `<archive>.partial`, which is not an archive; the next
    /// create overwrites it.
    #[test]
    fn a_leftover_partial_is_not_an_archive_and_create_overwrites_it() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = tmp.path().join("data");
        fs::create_dir(&data).expect("mkdir");
        write(&data.join("f"), b"content", 0o644);
        let archive = tmp.path().join("data.tar.zst");
        let partial = partial_path(&archive);
        write(&partial, &noise(9, 4096), 0o644);

        let hash = blake3::hash(&fs::read(&partial).expect("read"))
            .to_hex()
            .to_string();
        // Even with the partial's own checksum, and a manifest that fits a directory.
        let root = FileEntry {
            path: ROOT.into(),
            kind: EntryKind::Dir,
            size: 0,
            mode: 0o755,
            uid: 0,
            gid: 0,
            blake3: None,
            link: None,
        };
        let err = verify(&archive, &hash, &[root]).expect_err("no archive yet");
        assert!(
            matches!(&err, ArchiveError::Io { path, source, .. }
                if *path == archive && source.kind() == io::ErrorKind::NotFound),
            "{err}"
        );

        let report = create(&data, &archive).expect("create over a leftover partial");
        assert!(!partial.exists());
        verify(&archive, &report.archive_blake3, &report.manifest).expect("verify");
    }

    #[test]
    fn create_refuses_an_existing_archive_and_one_inside_its_directory() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = tmp.path().join("data");
        fs::create_dir(&data).expect("mkdir");
        let archive = tmp.path().join("data.tar.zst");
        write(&archive, b"a previous restore point", 0o600);
        let err = create(&data, &archive).expect_err("existing archive");
        assert!(matches!(err, ArchiveError::Exists { .. }), "{err}");
        assert_eq!(
            fs::read(&archive).expect("read"),
            b"a previous restore point"
        );

        let err = create(&data, &data.join("self.tar.zst")).expect_err("archive inside");
        assert!(matches!(err, ArchiveError::InsideSource { .. }), "{err}");
        let err =
            create(&data.join("missing"), &tmp.path().join("x.tar.zst")).expect_err("missing");
        assert!(err.to_string().contains("missing"), "{err}");
    }

    #[test]
    fn a_fifo_is_refused_with_its_path_and_nothing_is_left_behind() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = tmp.path().join("data");
        fs::create_dir_all(data.join("sub")).expect("mkdir");
        write(&data.join("a"), b"a", 0o644);
        let fifo = data.join("sub/pipe");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            0o644.into(),
            0,
        )
        .expect("mkfifo");
        let archive = tmp.path().join("data.tar.zst");
        let err = create(&data, &archive).expect_err("fifo");
        assert!(
            matches!(&err, ArchiveError::Unsupported { path, kind: "FIFO" } if *path == fifo),
            "{err}"
        );
        assert!(!archive.exists());
        assert!(!partial_path(&archive).exists());
    }

    #[test]
    fn a_socket_is_skipped_and_reported() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = tmp.path().join("data");
        fs::create_dir(&data).expect("mkdir");
        write(&data.join("a"), b"a", 0o644);
        let _listener =
            std::os::unix::net::UnixListener::bind(data.join("app.sock")).expect("bind");
        let report = create(&data, &tmp.path().join("data.tar.zst")).expect("create");
        assert_eq!(report.skipped, vec!["app.sock".to_owned()]);
        let paths: Vec<_> = report.manifest.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, [".", "a"]);
    }

    #[test]
    fn the_same_tree_gives_the_same_archive() {
        let s = setup();
        let again = s.archive.with_file_name("again.tar.zst");
        let report = create(&s.data, &again).expect("create");
        assert_eq!(report.archive_blake3, s.report.archive_blake3);
        assert_eq!(report.manifest, s.report.manifest);
        assert_eq!(
            fs::read(&again).expect("read"),
            fs::read(&s.archive).expect("read")
        );
    }

    #[test]
    fn ownership_is_restored() {
        let s = setup();
        // What we create is ours: its owner is our effective uid.
        if fs::metadata(&s.archive).expect("stat").uid() != 0 {
            eprintln!("skipped: restoring foreign ownership needs root");
            return;
        }
        let chown = |rel: &str, uid, gid| {
            std::os::unix::fs::lchown(s.data.join(rel), Some(uid), Some(gid)).expect("chown");
        };
        chown("a", 999, 999);
        chown("a/b/deep.txt", 4242, 4343);
        // A user namespace's ids are too big for a tar header's octal fields.
        chown("big.bin", 3_000_000, 3_000_001);
        chown("link", 70, 71);
        chown(".", 1000, 1000);
        // chown clears setgid: put it back to check the order in which restore applies them.
        fs::set_permissions(s.data.join("shared"), fs::Permissions::from_mode(0o2775))
            .expect("chmod");
        chown("shared/f", 1000, 1000);
        let original = listing(&s.data);
        let archive = s.archive.with_file_name("owned.tar.zst");
        let report = create(&s.data, &archive).expect("create");
        let target = s.data.with_file_name("restored");
        fs::create_dir(&target).expect("mkdir");
        restore(&archive, &report.archive_blake3, &report.manifest, &target).expect("restore");
        assert_eq!(listing(&target), original);
    }

    #[test]
    fn a_failure_while_setting_entries_aside_is_undone() {
        let s = setup();
        write(&s.data.join("new.txt"), b"new", 0o644);
        // An mtime in the past: the moves aside and back would leave "now" (this was a
        // flake: it failed only when the moves crossed a second boundary).
        set_mtime(&s.data, 1_000_000_000).expect("set the directory's mtime");
        let before = listing(&s.data);
        let target = s.data.clone();
        // "db.sqlite" comes after "a", "big.bin", ... have been moved aside.
        set_fail_rename(move |from| from.parent() == Some(&target) && from.ends_with("db.sqlite"));
        let err = restore(
            &s.archive,
            &s.report.archive_blake3,
            &s.report.manifest,
            &s.data,
        )
        .expect_err("injected failure");
        let message = err.to_string();
        assert!(matches!(err, ArchiveError::Swap { .. }), "{message}");
        assert!(message.contains("the target is unchanged"), "{message}");
        assert_eq!(listing(&s.data), before);
        assert!(siblings(&s.data, "cutover-restore").is_empty());
        assert!(siblings(&s.data, "cutover-failed").is_empty());
    }

    #[test]
    fn a_failure_while_moving_entries_in_says_where_the_pieces_are() {
        let s = setup();
        write(&s.data.join("new.txt"), b"new", 0o644);
        let before = listing(&s.data);
        set_fail_rename(|from| {
            let staged = from
                .parent()
                .and_then(|p| p.to_str())
                .is_some_and(|p| p.contains(".cutover-restore-"));
            staged && from.ends_with("db.sqlite")
        });
        let err = restore(
            &s.archive,
            &s.report.archive_blake3,
            &s.report.manifest,
            &s.data,
        )
        .expect_err("injected failure");
        let message = err.to_string();
        let [failed] = siblings(&s.data, "cutover-failed")
            .try_into()
            .expect("one failed dir");
        let [staging] = siblings(&s.data, "cutover-restore")
            .try_into()
            .expect("one staging dir");
        assert!(message.contains(&failed.display().to_string()), "{message}");
        assert!(
            message.contains(&staging.display().to_string()),
            "{message}"
        );
        assert!(message.contains("move them into"), "{message}");

        // The previous entries are whole in the failed dir ...
        let mut kept = listing(&failed);
        kept.remove(ROOT);
        let mut previous = before.clone();
        previous.remove(ROOT);
        assert_eq!(kept, previous);
        // ... and finishing by hand, as the message says, gives the restore point.
        FAIL_RENAME.with(|f| f.borrow_mut().take());
        for name in sorted_names(&staging).expect("list") {
            fs::rename(staging.join(&name), s.data.join(&name)).expect("mv");
        }
        let mut restored = listing(&s.data);
        let mut original = s.original.clone();
        restored.remove(ROOT);
        original.remove(ROOT);
        assert_eq!(restored, original);
    }

    #[test]
    fn restore_refuses_a_target_that_is_not_a_directory() {
        let s = setup();
        let link = s.data.with_file_name("link-to-data");
        symlink(&s.data, &link).expect("symlink");
        let (hash, manifest) = (&s.report.archive_blake3, &s.report.manifest);
        let err = restore(&s.archive, hash, manifest, &link).expect_err("symlink target");
        assert!(matches!(err, ArchiveError::NotADirectory { .. }), "{err}");
        let err =
            restore(&s.archive, hash, manifest, &s.data.join("secret")).expect_err("file target");
        assert!(matches!(err, ArchiveError::NotADirectory { .. }), "{err}");
        let err =
            restore(&s.archive, hash, manifest, &s.data.join("nope")).expect_err("missing target");
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn utc_stamps() {
        let at = |secs| utc_stamp(UNIX_EPOCH + std::time::Duration::from_secs(secs));
        assert_eq!(at(0), "19700101T000000Z");
        assert_eq!(at(951_782_400), "20000229T000000Z");
        assert_eq!(at(1_000_000_000), "20010909T014640Z");
        assert_eq!(at(4_102_444_799), "20991231T235959Z");
        // 2100 is not a leap year.
        assert_eq!(at(4_107_542_400), "21000301T000000Z");
    }

    /// Create, verify and restore of a 200 MB directory of mixed files. Timings only, no
    /// assertions on them:
    /// `cargo test -p cutover-data --release -- --ignored --nocapture measure`
    #[test]
    #[ignore = "a measurement, not a check"]
    fn measure_200mb() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = tmp.path().join("data");
        fs::create_dir(&data).expect("mkdir");
        // 100 MB in four incompressible files (database pages, media) ...
        for i in 0..4 {
            write(
                &data.join(format!("blob-{i}.bin")),
                &noise(i + 10, 25 << 20),
                0o644,
            );
        }
        // ... 50 MB of text in 1000 files of 50 KB (logs, JSON) ...
        let mut text = Vec::new();
        let mut i = 0u64;
        while text.len() < 50 << 10 {
            let line = format!(
                "2025-01-01T00:00:{:02}Z INFO request id={:016x} path=/api/items/{} status=200\n",
                i % 60,
                i.wrapping_mul(0x9e37_79b9_7f4a_7c15),
                i % 997
            );
            text.extend_from_slice(line.as_bytes());
            i += 1;
        }
        text.truncate(50 << 10);
        for d in 0..20 {
            let dir = data.join(format!("logs-{d:02}"));
            fs::create_dir(&dir).expect("mkdir");
            for f in 0..50 {
                let mut t = text.clone();
                t[..8].copy_from_slice(&((d * 50 + f) as u64).to_le_bytes());
                write(&dir.join(format!("{f:03}.log")), &t, 0o644);
            }
        }
        // ... and 50 MB in 6400 small files of 8 KB, half text, half noise (uploads, caches).
        for d in 0..64 {
            let dir = data.join(format!("small-{d:02}"));
            fs::create_dir(&dir).expect("mkdir");
            for f in 0..100u64 {
                let content = if f % 2 == 0 {
                    text[..8 << 10].to_vec()
                } else {
                    noise(d * 100 + f, 8 << 10)
                };
                write(&dir.join(format!("{f:03}")), &content, 0o644);
            }
        }
        let total = estimate_size(&data).expect("estimate");
        let archive = tmp.path().join("data.tar.zst");
        syncfs(tmp.path()).expect("sync");

        let t = Instant::now();
        let report = create(&data, &archive).expect("create");
        let create_time = t.elapsed();
        syncfs(tmp.path()).expect("sync");
        let t = Instant::now();
        verify(&archive, &report.archive_blake3, &report.manifest).expect("verify");
        let verify_time = t.elapsed();
        let t = Instant::now();
        let restored =
            restore(&archive, &report.archive_blake3, &report.manifest, &data).expect("restore");
        let restore_time = t.elapsed();
        let mb = |b: u64| b as f64 / 1e6;
        eprintln!(
            "{} files, {:.0} MB -> archive {:.0} MB; create {create_time:.2?} ({:.0} MB/s), verify {verify_time:.2?}, restore {restore_time:.2?} ({:.0} MB/s)",
            report.files,
            mb(total),
            mb(report.archive_bytes),
            mb(total) / create_time.as_secs_f64(),
            mb(total) / restore_time.as_secs_f64(),
        );
        assert_eq!(restored.bytes, total);
    }
}
