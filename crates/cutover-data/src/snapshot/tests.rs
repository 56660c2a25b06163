//! The snapshot on real filesystems: an XFS loop mount (reflink) and the temporary
//! directory's own filesystem (ext4 here: a copy).

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use cutover_testkit::fs::Xfs;

use super::*;

/// A small tree with what a data directory holds: nested files, an empty file, a symlink,
/// an unusual mode, a file owned by someone else.
fn fill(dir: &Path) {
    fs::create_dir_all(dir.join("base/16384")).expect("as set up");
    fs::write(dir.join("base/16384/1259"), vec![7u8; 300_000]).expect("as set up");
    fs::write(dir.join("PG_VERSION"), "15\n").expect("as set up");
    fs::write(dir.join("empty"), "").expect("as set up");
    std::os::unix::fs::symlink("base/16384", dir.join("latest")).expect("as set up");
    fs::set_permissions(dir.join("PG_VERSION"), fs::Permissions::from_mode(0o640))
        .expect("as set up");
    std::os::unix::fs::chown(dir.join("base/16384/1259"), Some(999), Some(998)).expect("as set up");
}

/// Every entry with the blake3 of its content, its mode and owner.
fn content(dir: &Path) -> Vec<(String, String, u32, u32)> {
    let mut out = Vec::new();
    for e in record(dir).expect("as set up") {
        let p = dir.join(&e.path);
        let hash = if e.kind == EntryKind::File {
            blake3::hash(&fs::read(&p).expect("as set up"))
                .to_hex()
                .to_string()
        } else {
            String::new()
        };
        out.push((e.path, hash, e.mode, e.uid));
    }
    out
}

/// The same, without the root entry (a directory a swap created has its own mode).
fn below_root(dir: &Path) -> Vec<(String, String, u32, u32)> {
    content(dir).split_off(1)
}

#[test]
fn on_xfs_every_file_is_a_reflink_clone_that_later_writes_do_not_reach() {
    let Some(xfs) = Xfs::new(300) else { return };
    let data = xfs.path().join("_data");
    fs::create_dir(&data).expect("as set up");
    fill(&data);
    assert_eq!(probe(xfs.path()).expect("as set up"), Method::Reflink);

    let snap = take(&data, &xfs.path().join("_data.rp")).expect("as set up");
    assert_eq!(snap.method, Method::Reflink);
    assert_eq!((snap.files, snap.bytes), (3, 300_003));
    assert_eq!(content(&snap.path), content(&data));
    let owned = fs::metadata(snap.path.join("base/16384/1259")).expect("as set up");
    assert_eq!((owned.uid(), owned.gid()), (999, 998));
    assert!(verify(&snap).is_empty(), "{:?}", verify(&snap));

    // The application writes after the snapshot: the clone keeps what was there.
    fs::write(data.join("base/16384/1259"), vec![9u8; 300_000]).expect("as set up");
    assert_eq!(
        fs::read(snap.path.join("base/16384/1259")).expect("as set up"),
        vec![7u8; 300_000]
    );
    assert!(verify(&snap).is_empty());
}

#[test]
fn elsewhere_the_files_are_copied_and_the_method_says_so() {
    let tmp = tempfile::tempdir().expect("as set up");
    let data = tmp.path().join("_data");
    fs::create_dir(&data).expect("as set up");
    fill(&data);
    let method = probe(tmp.path()).expect("as set up");
    let snap = take(&data, &tmp.path().join("_data.rp")).expect("as set up");
    assert_eq!(
        snap.method, method,
        "the probe foretells what the take does"
    );
    assert_eq!(content(&snap.path), content(&data));
}

#[test]
fn the_swap_puts_the_snapshot_back_and_keeps_what_was_there() {
    let Some(xfs) = Xfs::new(300) else { return };
    let data = xfs.path().join("_data");
    fs::create_dir(&data).expect("as set up");
    fill(&data);
    let before = content(&data);
    let snap = take(&data, &xfs.path().join("_data.rp")).expect("as set up");
    fs::write(data.join("PG_VERSION"), "16\n").expect("as set up");
    fs::write(data.join("new-file"), "written by the failed release").expect("as set up");
    let after_upgrade = content(&data);

    let failed = xfs.path().join("_data.failed");
    assert_eq!(
        swap_in(&snap, &data, &failed).expect("as set up"),
        SwapState::NotStarted
    );
    assert_eq!(content(&data), before);
    assert_eq!(below_root(&failed), after_upgrade[1..]);
    assert!(!snap.path.exists());
    // Run again (a step repeated after a crash): nothing more happens.
    assert_eq!(
        swap_in(&snap, &data, &failed).expect("as set up"),
        SwapState::Done
    );
    assert_eq!(content(&data), before);
}

#[test]
fn a_crash_between_the_two_renames_is_finished_by_running_the_swap_again() {
    let Some(xfs) = Xfs::new(300) else { return };
    let data = xfs.path().join("_data");
    fs::create_dir(&data).expect("as set up");
    fill(&data);
    let before = content(&data);
    let snap = take(&data, &xfs.path().join("_data.rp")).expect("as set up");
    fs::write(data.join("PG_VERSION"), "16\n").expect("as set up");
    let failed = xfs.path().join("_data.failed");
    set_aside(&data, &failed).expect("as set up");
    // The process died here: the target is empty, the snapshot waits beside it.
    assert_eq!(swap_state(&snap, &failed), SwapState::SetAside);
    assert_eq!(fs::read_dir(&data).expect("as set up").count(), 0);

    assert_eq!(
        swap_in(&snap, &data, &failed).expect("as set up"),
        SwapState::SetAside
    );
    assert_eq!(content(&data), before);
    assert_eq!(
        fs::read_to_string(failed.join("PG_VERSION")).expect("as set up"),
        "16\n"
    );
}

#[test]
fn a_crash_halfway_through_either_half_is_finished_too() {
    let tmp = tempfile::tempdir().expect("as set up");
    let data = tmp.path().join("_data");
    fs::create_dir(&data).expect("as set up");
    fill(&data);
    let before = content(&data);
    let snap = take(&data, &tmp.path().join("_data.rp")).expect("as set up");
    fs::write(data.join("PG_VERSION"), "16\n").expect("as set up");
    let failed = tmp.path().join("_data.failed");

    // First half cut after one entry.
    fs::create_dir(&failed).expect("as set up");
    fs::rename(data.join("PG_VERSION"), failed.join("PG_VERSION")).expect("as set up");
    assert_eq!(swap_state(&snap, &failed), SwapState::SetAside);
    // Second half cut after one entry (the rest of the first half done by hand).
    for name in ["base", "empty", "latest"] {
        fs::rename(data.join(name), failed.join(name)).expect("as set up");
    }
    fs::rename(snap.path.join("base"), data.join("base")).expect("as set up");
    assert_eq!(swap_state(&snap, &failed), SwapState::PuttingIn);

    assert_eq!(
        swap_in(&snap, &data, &failed).expect("as set up"),
        SwapState::PuttingIn
    );
    assert_eq!(content(&data), before);
    assert_eq!(swap_state(&snap, &failed), SwapState::Done);
}

#[test]
fn the_swap_keeps_the_target_directory_itself_for_whoever_has_it_open() {
    let tmp = tempfile::tempdir().expect("as set up");
    let data = tmp.path().join("_data");
    fs::create_dir(&data).expect("as set up");
    fill(&data);
    let inode = fs::metadata(&data).expect("as set up").ino();
    let snap = take(&data, &tmp.path().join("_data.rp")).expect("as set up");
    fs::set_permissions(&data, fs::Permissions::from_mode(0o700)).expect("as set up");
    swap_in(&snap, &data, &tmp.path().join("_data.failed")).expect("as set up");
    let after = fs::metadata(&data).expect("as set up");
    assert_eq!(
        after.ino(),
        inode,
        "a running reader's mount still shows the data"
    );
    assert_eq!(
        after.mode() & 0o7777,
        snap.entries[0].mode,
        "the root takes the snapshot's mode"
    );
}

#[test]
fn a_snapshot_touched_since_it_was_taken_is_refused_and_the_target_left_alone() {
    let Some(xfs) = Xfs::new(300) else { return };
    let data = xfs.path().join("_data");
    fs::create_dir(&data).expect("as set up");
    fill(&data);
    let snap = take(&data, &xfs.path().join("_data.rp")).expect("as set up");
    fs::write(data.join("PG_VERSION"), "16\n").expect("as set up");

    // Same size, same content even: the write alone is what the record catches.
    fs::write(snap.path.join("PG_VERSION"), "15\n").expect("as set up");
    fs::write(snap.path.join("stray"), "x").expect("as set up");
    let failed = xfs.path().join("_data.failed");
    let err = swap_in(&snap, &data, &failed)
        .expect_err("refused")
        .to_string();
    assert!(
        err.contains("`PG_VERSION`: changed since the snapshot was taken"),
        "{err}"
    );
    assert!(err.contains("`stray` was added"), "{err}");
    assert_eq!(
        fs::read_to_string(data.join("PG_VERSION")).expect("as set up"),
        "16\n"
    );
    assert!(!failed.exists());
}

#[test]
fn fifos_are_refused_sockets_skipped_and_a_leftover_partial_replaced() {
    let tmp = tempfile::tempdir().expect("as set up");
    let data = tmp.path().join("_data");
    fs::create_dir(&data).expect("as set up");
    fill(&data);
    let _listener =
        std::os::unix::net::UnixListener::bind(data.join(".s.PGSQL.5432")).expect("as set up");
    let dest = tmp.path().join("_data.rp");
    fs::create_dir(with_suffix(&dest, ".partial")).expect("as set up");
    fs::write(with_suffix(&dest, ".partial").join("junk"), "x").expect("as set up");
    let snap = take(&data, &dest).expect("as set up");
    assert_eq!(snap.skipped, vec![".s.PGSQL.5432".to_string()]);
    assert!(!dest.join("junk").exists());
    assert!(!with_suffix(&dest, ".partial").exists());
    assert!(matches!(
        take(&data, &dest),
        Err(SnapshotError::Exists { .. })
    ));

    rustix::fs::mknodat(
        rustix::fs::CWD,
        data.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .expect("as set up");
    let err = take(&data, &tmp.path().join("_data.rp2")).expect_err("refused");
    assert!(
        matches!(err, SnapshotError::Unsupported { kind: "FIFO", .. }),
        "{err}"
    );
    assert!(!tmp.path().join("_data.rp2.partial").exists());
}
