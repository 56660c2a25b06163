//! A directory's restore point made by its own filesystem: a clone of the tree beside it,
//! put back by two renames.
//!
//! # Take
//!
//! [`take`] copies `source` into `<dest>.partial` on the same filesystem, then renames it to
//! `dest`. Each file is cloned with `FICLONE` where the filesystem shares extents (XFS made
//! with `reflink=1`, btrfs, bcachefs): the clone costs a little metadata, whatever the file's
//! size, and no room until either side is written. Elsewhere (ext4, or an `EXDEV`) the file is
//! copied in the kernel (`copy_file_range`) — the data's size in time and room. Which one is
//! used is found out, never configured: [`probe`] asks the filesystem once for the plan and
//! the space check, and [`take`] reports what each file got.
//!
//! Directories, files and symlinks keep their permission bits (setuid, setgid, sticky), their
//! numeric owner and group, and their mtime. The rules of the archive apply: FIFOs and device
//! nodes are refused, sockets skipped, mount points inside the tree refused, names that are
//! not UTF-8 refused, and a file whose size changes while it is copied fails the take (the
//! writers must be stopped). Hard links become separate files; extended attributes are not
//! kept.
//!
//! The copy is flushed with one `syncfs` before it is renamed to its name, so a crash never
//! leaves a complete-looking snapshot: a leftover `.partial` is removed by the next take.
//!
//! # The record
//!
//! Each entry of the finished snapshot is recorded with its kind, size, mode, owner, symlink
//! target and **ctime**. The kernel sets the ctime of any inode that is written, truncated,
//! chmod'ed, chown'ed or has its times set, and no caller can set it back, so [`verify`], a
//! walk of `stat` calls (milliseconds for thousands of files), proves that nothing touched the
//! snapshot since it was taken, without reading its content. The content's checksums come
//! with the durable copy, the tar+zstd archive made from the snapshot after the window.
//!
//! # Restore
//!
//! [`swap_in`] verifies the snapshot, then swaps **contents**, not directories, in two
//! halves of renames, none replacing an existing name: every entry of the target moves into
//! the `failed` directory given (kept for inspection), then every entry of the snapshot
//! moves into the target, which takes the snapshot root's mode and owner. The target keeps
//! its identity — a Docker volume's `_data`, or a bind volume's directory, is what running
//! containers (readers that were not stopped) have mounted, and they see the restored data.
//! The cost is one rename per entry at the top of the tree: microseconds each. Running again
//! after a crash finishes the swap from wherever it stopped: see [`SwapState`].

use std::fs::{self, DirBuilder, File, FileTimes, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::archive::{EntryKind, join_rel, rename_noreplace};

/// Permission bits, setuid/setgid/sticky included.
const MODE_BITS: u32 = 0o7777;

/// How the filesystem copies a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Extents shared with the source (`FICLONE`): constant time, no room until written.
    Reflink,
    /// A full copy in the kernel (`copy_file_range`): the data's size in time and room.
    Copy,
}

impl Method {
    pub fn describe(self) -> &'static str {
        match self {
            Method::Reflink => "reflink clone",
            Method::Copy => "copy on the same filesystem",
        }
    }
}

/// One entry of a snapshot, as it was when the snapshot was finished.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Relative to the snapshot, `/`-separated; the root is `.`.
    pub path: String,
    pub kind: EntryKind,
    /// Content length of a file; 0 otherwise.
    pub size: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// The inode's change time, nanoseconds since the epoch: set by the kernel on any change.
    pub ctime_ns: i128,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

/// A finished snapshot, as a restore point's manifest records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Where the snapshot is: beside the data, on its filesystem.
    pub path: PathBuf,
    /// `reflink` when every file was cloned; `copy` when any was copied.
    pub method: Method,
    /// Regular files, and their bytes.
    pub files: u64,
    pub bytes: u64,
    /// Sockets left out (relative paths).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
    pub entries: Vec<Entry>,
}

/// Where a swap stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwapState {
    /// Nothing moved yet.
    NotStarted,
    /// The target's entries are (being) set aside in `failed`; the snapshot still holds all
    /// of its own (a crash in the first half, or between the two).
    SetAside,
    /// The snapshot's entries are being moved into the target (a crash in the second half).
    PuttingIn,
    /// The snapshot is the target's content; what was there is in `failed`.
    Done,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
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
        "{} is a {kind}; a snapshot holds regular files, directories and symlinks only",
        .path.display()
    )]
    Unsupported { path: PathBuf, kind: &'static str },
    #[error("the name of {} is not valid UTF-8", .path.display())]
    NonUtf8 { path: PathBuf },
    #[error(
        "{} is a mount point inside the directory; a snapshot is one filesystem's",
        .path.display()
    )]
    NestedMount { path: PathBuf },
    #[error("{} changed while it was copied; is the application stopped?", .path.display())]
    Changed { path: PathBuf },
    #[error("{} exists already; a snapshot is written once, never replaced", .path.display())]
    Exists { path: PathBuf },
    #[error(
        "the snapshot {} does not match its record, it is not restored: {}",
        .path.display(),
        .problems.join("; ")
    )]
    Tampered {
        path: PathBuf,
        problems: Vec<String>,
    },
    #[error(
        "cannot swap {} back: {state}",
        .target.display()
    )]
    Swap { target: PathBuf, state: String },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SnapshotError {
    let path = path.to_owned();
    move |source| SnapshotError::Io { op, path, source }
}

/// How the filesystem of `dir` copies a file: a clone of a probe file made in `dir`, removed
/// after.
pub fn probe(dir: &Path) -> Result<Method, SnapshotError> {
    let a = dir.join(format!(".cutover-probe-{}", std::process::id()));
    let b = dir.join(format!(".cutover-probe-{}.clone", std::process::id()));
    let result = (|| {
        fs::write(&a, b"cutover")?;
        let src = File::open(&a)?;
        let dst = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&b)?;
        Ok::<_, io::Error>(match rustix::fs::ioctl_ficlone(&dst, &src) {
            Ok(()) => Method::Reflink,
            Err(_) => Method::Copy,
        })
    })();
    let _ = fs::remove_file(&a);
    let _ = fs::remove_file(&b);
    result.map_err(io_err("probe the filesystem of", dir))
}

/// Copies `source` (a directory) to `dest` on the same filesystem, cloning files where it
/// can (see the module documentation). `dest` must not exist; a `.partial` left by an
/// interrupted take is removed first.
pub fn take(source: &Path, dest: &Path) -> Result<Snapshot, SnapshotError> {
    let meta = fs::symlink_metadata(source).map_err(io_err("read", source))?;
    if !meta.is_dir() {
        return Err(SnapshotError::NotADirectory {
            path: source.to_owned(),
        });
    }
    if fs::symlink_metadata(dest).is_ok() {
        return Err(SnapshotError::Exists {
            path: dest.to_owned(),
        });
    }
    let partial = with_suffix(dest, ".partial");
    if fs::symlink_metadata(&partial).is_ok() {
        fs::remove_dir_all(&partial).map_err(io_err("remove the leftover", &partial))?;
    }
    let mut copy = Copier {
        dev: meta.dev(),
        cloned: 0,
        copied: 0,
        bytes: 0,
        skipped: Vec::new(),
    };
    let result = (|| {
        DirBuilder::new()
            .mode(0o700)
            .create(&partial)
            .map_err(io_err("create", &partial))?;
        copy.tree(source, &partial, ".")?;
        set_meta(&partial, &meta, false)?;
        syncfs(&partial)?;
        rename_noreplace(&partial, dest).map_err(io_err("rename the snapshot to", dest))?;
        fsync_dir(parent(dest))
    })();
    if let Err(e) = result {
        let _ = fs::remove_dir_all(&partial);
        return Err(e);
    }
    let entries = record(dest)?;
    Ok(Snapshot {
        path: dest.to_owned(),
        method: if copy.copied == 0 {
            Method::Reflink
        } else {
            Method::Copy
        },
        files: copy.cloned + copy.copied,
        bytes: copy.bytes,
        skipped: copy.skipped,
        entries,
    })
}

struct Copier {
    dev: u64,
    cloned: u64,
    copied: u64,
    bytes: u64,
    skipped: Vec<String>,
}

impl Copier {
    /// Copies the children of `from` into `to` (which exists), depth first.
    fn tree(&mut self, from: &Path, to: &Path, rel: &str) -> Result<(), SnapshotError> {
        for name in sorted_names(from)? {
            let src = from.join(&name);
            let Some(name_str) = name.to_str() else {
                return Err(SnapshotError::NonUtf8 { path: src });
            };
            let rel = join_rel(rel, name_str);
            let dst = to.join(&name);
            let meta = fs::symlink_metadata(&src).map_err(io_err("read", &src))?;
            let ft = meta.file_type();
            if ft.is_dir() {
                if meta.dev() != self.dev {
                    return Err(SnapshotError::NestedMount { path: src });
                }
                DirBuilder::new()
                    .mode(0o700)
                    .create(&dst)
                    .map_err(io_err("create", &dst))?;
                self.tree(&src, &dst, &rel)?;
                set_meta(&dst, &meta, false)?;
            } else if ft.is_file() {
                self.file(&src, &dst, &meta)?;
            } else if ft.is_symlink() {
                let target = fs::read_link(&src).map_err(io_err("read symlink", &src))?;
                std::os::unix::fs::symlink(&target, &dst).map_err(io_err("create", &dst))?;
                set_meta(&dst, &meta, true)?;
            } else if is_socket(&ft) {
                self.skipped.push(rel);
            } else {
                return Err(SnapshotError::Unsupported {
                    path: src,
                    kind: kind_name(&ft),
                });
            }
        }
        Ok(())
    }

    fn file(&mut self, src: &Path, dst: &Path, meta: &fs::Metadata) -> Result<(), SnapshotError> {
        let from = File::open(src).map_err(io_err("open", src))?;
        let to = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dst)
            .map_err(io_err("create", dst))?;
        match rustix::fs::ioctl_ficlone(&to, &from) {
            Ok(()) => self.cloned += 1,
            Err(_) => {
                copy_range(&from, &to, meta.len()).map_err(io_err("copy", src))?;
                self.copied += 1;
            }
        }
        let after = from.metadata().map_err(io_err("read", src))?;
        if after.len() != meta.len() || after.mtime_nsec() != meta.mtime_nsec() {
            return Err(SnapshotError::Changed {
                path: src.to_owned(),
            });
        }
        self.bytes += meta.len();
        let mtime = std::time::UNIX_EPOCH
            + std::time::Duration::new(meta.mtime().max(0) as u64, meta.mtime_nsec() as u32);
        to.set_times(FileTimes::new().set_modified(mtime))
            .map_err(io_err("set the times of", dst))?;
        std::os::unix::fs::fchown(&to, Some(meta.uid()), Some(meta.gid())).map_err(|e| {
            SnapshotError::Io {
                op: "give its owner (needs root) to",
                path: dst.to_owned(),
                source: e,
            }
        })?;
        to.set_permissions(fs::Permissions::from_mode(meta.mode() & MODE_BITS))
            .map_err(io_err("set the mode of", dst))
    }
}

fn is_socket(ft: &fs::FileType) -> bool {
    use std::os::unix::fs::FileTypeExt;
    ft.is_socket()
}

fn kind_name(ft: &fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_fifo() {
        "FIFO"
    } else if ft.is_char_device() {
        "character device"
    } else if ft.is_block_device() {
        "block device"
    } else {
        "file of unknown type"
    }
}

/// Copies `len` bytes in the kernel, falling back to a read/write copy where
/// `copy_file_range` is refused.
fn copy_range(from: &File, to: &File, len: u64) -> io::Result<()> {
    let mut left = len;
    while left > 0 {
        let chunk = left.min(1 << 30) as usize;
        match rustix::fs::copy_file_range(from, None, to, None, chunk) {
            Ok(0) => break,
            Ok(n) => left -= n as u64,
            Err(rustix::io::Errno::XDEV | rustix::io::Errno::NOSYS | rustix::io::Errno::INVAL)
                if left == len =>
            {
                let (mut r, mut w) = (from, to);
                io::copy(&mut r, &mut w)?;
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Gives `path` the owner, mode and mtime of `meta` (a symlink: owner and mtime).
fn set_meta(path: &Path, meta: &fs::Metadata, symlink: bool) -> Result<(), SnapshotError> {
    let owner = |e| SnapshotError::Io {
        op: "give its owner (needs root) to",
        path: path.to_owned(),
        source: e,
    };
    let mtime = std::time::UNIX_EPOCH
        + std::time::Duration::new(meta.mtime().max(0) as u64, meta.mtime_nsec() as u32);
    if symlink {
        std::os::unix::fs::lchown(path, Some(meta.uid()), Some(meta.gid())).map_err(owner)?;
        let ts = rustix::fs::Timestamps {
            last_access: rustix::fs::Timespec {
                tv_sec: meta.atime(),
                tv_nsec: meta.atime_nsec() as _,
            },
            last_modification: rustix::fs::Timespec {
                tv_sec: meta.mtime(),
                tv_nsec: meta.mtime_nsec() as _,
            },
        };
        return rustix::fs::utimensat(
            rustix::fs::CWD,
            path,
            &ts,
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| io_err("set the times of", path)(e.into()));
    }
    std::os::unix::fs::chown(path, Some(meta.uid()), Some(meta.gid())).map_err(owner)?;
    fs::set_permissions(path, fs::Permissions::from_mode(meta.mode() & MODE_BITS))
        .map_err(io_err("set the mode of", path))?;
    File::open(path)
        .and_then(|f| f.set_times(FileTimes::new().set_modified(mtime)))
        .map_err(io_err("set the times of", path))
}

/// Every entry of the tree at `root`, sorted, with its ctime.
pub fn record(root: &Path) -> Result<Vec<Entry>, SnapshotError> {
    let mut entries = Vec::new();
    let meta = fs::symlink_metadata(root).map_err(io_err("read", root))?;
    entries.push(entry(".", &meta, None));
    record_dir(root, ".", &mut entries)?;
    Ok(entries)
}

fn record_dir(dir: &Path, rel: &str, out: &mut Vec<Entry>) -> Result<(), SnapshotError> {
    for name in sorted_names(dir)? {
        let path = dir.join(&name);
        let rel = join_rel(rel, &name.to_string_lossy());
        let meta = fs::symlink_metadata(&path).map_err(io_err("read", &path))?;
        let link = if meta.file_type().is_symlink() {
            Some(
                fs::read_link(&path)
                    .map_err(io_err("read symlink", &path))?
                    .to_string_lossy()
                    .into_owned(),
            )
        } else {
            None
        };
        out.push(entry(&rel, &meta, link));
        if meta.is_dir() {
            record_dir(&path, &rel, out)?;
        }
    }
    Ok(())
}

fn entry(rel: &str, meta: &fs::Metadata, link: Option<String>) -> Entry {
    let ft = meta.file_type();
    let kind = if ft.is_dir() {
        EntryKind::Dir
    } else if ft.is_symlink() {
        EntryKind::Symlink
    } else {
        EntryKind::File
    };
    Entry {
        path: rel.to_owned(),
        kind,
        size: if kind == EntryKind::File {
            meta.len()
        } else {
            0
        },
        mode: meta.mode() & MODE_BITS,
        uid: meta.uid(),
        gid: meta.gid(),
        ctime_ns: meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128,
        link,
    }
}

/// What differs between the snapshot on disk and its record (at most 10 lines); empty when
/// it is as it was taken.
pub fn verify(s: &Snapshot) -> Vec<String> {
    let found = match record(&s.path) {
        Ok(found) => found,
        Err(e) => return vec![e.to_string()],
    };
    let mut have: std::collections::BTreeMap<&str, &Entry> =
        found.iter().map(|e| (e.path.as_str(), e)).collect();
    let mut problems = Vec::new();
    for w in &s.entries {
        match have.remove(w.path.as_str()) {
            None => problems.push(format!("`{}` is missing", w.path)),
            Some(h) => {
                if let Some(d) = differ(w, h) {
                    problems.push(format!("`{}`: {d}", w.path));
                }
            }
        }
    }
    problems.extend(have.keys().map(|p| format!("`{p}` was added")));
    if problems.len() > 10 {
        let more = problems.len() - 10;
        problems.truncate(10);
        problems.push(format!("and {more} more"));
    }
    problems
}

fn differ(w: &Entry, h: &Entry) -> Option<String> {
    if w.kind != h.kind {
        return Some(format!("was a {:?}, is a {:?}", w.kind, h.kind));
    }
    if w.size != h.size {
        return Some(format!("was {} bytes, is {}", w.size, h.size));
    }
    if (w.mode, w.uid, w.gid) != (h.mode, h.uid, h.gid) {
        return Some(format!(
            "mode/owner was {:o} {}:{}, is {:o} {}:{}",
            w.mode, w.uid, w.gid, h.mode, h.uid, h.gid
        ));
    }
    if w.link != h.link {
        return Some("the symlink points elsewhere".into());
    }
    if w.ctime_ns != h.ctime_ns {
        return Some("changed since the snapshot was taken".into());
    }
    None
}

/// The names directly under the snapshot's root, as recorded.
fn top_names(s: &Snapshot) -> Vec<&str> {
    s.entries
        .iter()
        .map(|e| e.path.as_str())
        .filter(|p| *p != "." && !p.contains('/'))
        .collect()
}

/// Where the swap of snapshot `s` into `target` stands, `failed` being where the target's
/// entries are set aside. The entries move one by one; which half a crash cut is told by
/// the snapshot: while it still holds every entry it had, nothing was put in yet.
pub fn swap_state(s: &Snapshot, failed: &Path) -> SwapState {
    let exists = |p: &Path| fs::symlink_metadata(p).is_ok();
    match (exists(&s.path), exists(failed)) {
        (false, true) => SwapState::Done,
        (true, true) => match sorted_names(&s.path) {
            Ok(left) if left.len() == top_names(s).len() => SwapState::SetAside,
            _ => SwapState::PuttingIn,
        },
        _ => SwapState::NotStarted,
    }
}

/// Puts snapshot `s` back into `target`, the target's entries kept in `failed` (see the
/// module documentation). Verifies the snapshot first; run again after a crash, it finishes
/// from where it stopped. Returns where it found the swap.
pub fn swap_in(s: &Snapshot, target: &Path, failed: &Path) -> Result<SwapState, SnapshotError> {
    let state = swap_state(s, failed);
    match state {
        SwapState::Done => return Ok(state),
        SwapState::SetAside => set_aside(target, failed)?,
        SwapState::PuttingIn => {}
        SwapState::NotStarted => {
            if fs::symlink_metadata(&s.path).is_err() {
                return Err(SnapshotError::Swap {
                    target: target.to_owned(),
                    state: format!(
                        "the snapshot {} is gone (pruned, or the volume was recreated); nothing was changed",
                        s.path.display()
                    ),
                });
            }
            let problems = verify(s);
            if !problems.is_empty() {
                return Err(SnapshotError::Tampered {
                    path: s.path.clone(),
                    problems,
                });
            }
            set_aside(target, failed)?;
        }
    }
    put_in(s, target, failed)?;
    Ok(state)
}

/// The first half: every entry of the target moves into `failed` (created beside it,
/// owner-only). Safe to run again: what already moved is not there any more.
pub fn set_aside(target: &Path, failed: &Path) -> Result<(), SnapshotError> {
    match DirBuilder::new().mode(0o700).create(failed) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_err("create", failed)(e)),
    }
    for name in sorted_names(target)? {
        rename_noreplace(&target.join(&name), &failed.join(&name)).map_err(|e| {
            SnapshotError::Swap {
                target: target.to_owned(),
                state: format!(
                    "moving `{}` aside into {} failed ({e}); what moved is there, the rest is in place, and running the restore again goes on",
                    name.to_string_lossy(),
                    failed.display()
                ),
            }
        })?;
    }
    fsync_dir(target)?;
    fsync_dir(failed)
}

/// The second half: every entry of the snapshot moves into the (now empty) target, the
/// target takes the snapshot root's mode and owner, and the emptied snapshot is removed.
pub fn put_in(s: &Snapshot, target: &Path, failed: &Path) -> Result<(), SnapshotError> {
    for name in sorted_names(&s.path)? {
        rename_noreplace(&s.path.join(&name), &target.join(&name)).map_err(|e| {
            SnapshotError::Swap {
                target: target.to_owned(),
                state: format!(
                    "moving `{}` back from the snapshot {} failed ({e}); the target's own entries are all in {}, running the restore again goes on",
                    name.to_string_lossy(),
                    s.path.display(),
                    failed.display()
                ),
            }
        })?;
    }
    if let Some(root) = s.entries.iter().find(|e| e.path == ".") {
        std::os::unix::fs::chown(target, Some(root.uid), Some(root.gid)).map_err(|e| {
            SnapshotError::Io {
                op: "give its owner (needs root) to",
                path: target.to_owned(),
                source: e,
            }
        })?;
        fs::set_permissions(target, fs::Permissions::from_mode(root.mode))
            .map_err(io_err("set the mode of", target))?;
    }
    fsync_dir(target)?;
    fs::remove_dir(&s.path).map_err(io_err("remove the emptied snapshot", &s.path))?;
    fsync_dir(parent(target))
}

/// A name beside `target` for what a restore sets aside, not taken yet:
/// `<target>.cutover-failed-<UTC time>` (with `-N` when that exists).
pub fn failed_path(target: &Path) -> PathBuf {
    let stamp = crate::archive::utc_stamp(std::time::SystemTime::now());
    (0..)
        .map(|n| match n {
            0 => with_suffix(target, &format!(".cutover-failed-{stamp}")),
            n => with_suffix(target, &format!(".cutover-failed-{stamp}-{n}")),
        })
        .find(|p| fs::symlink_metadata(p).is_err())
        .unwrap_or_else(|| with_suffix(target, ".cutover-failed"))
}

/// Removes a snapshot (or what a take left).
pub fn remove(path: &Path) -> io::Result<()> {
    let partial = with_suffix(path, ".partial");
    for p in [path, partial.as_path()] {
        match fs::remove_dir_all(p) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn sorted_names(dir: &Path) -> Result<Vec<std::ffi::OsString>, SnapshotError> {
    let mut names = fs::read_dir(dir)
        .map_err(io_err("list", dir))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<Vec<_>>>()
        .map_err(io_err("list", dir))?;
    names.sort_unstable();
    Ok(names)
}

fn syncfs(path: &Path) -> Result<(), SnapshotError> {
    let dir = File::open(path).map_err(io_err("open", path))?;
    rustix::fs::syncfs(&dir).map_err(|e| io_err("flush the filesystem of", path)(e.into()))
}

fn fsync_dir(dir: &Path) -> Result<(), SnapshotError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

#[cfg(test)]
mod tests;
