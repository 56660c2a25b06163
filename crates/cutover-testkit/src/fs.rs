//! Real filesystems for the tests of restore points: an XFS made with `reflink=1` on a loop
//! device, mounted in a temporary directory and removed when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

/// An XFS filesystem (reflink on) mounted from a sparse image file.
pub struct Xfs {
    /// Holds the image file; removed after the unmount.
    _dir: tempfile::TempDir,
    mount: PathBuf,
}

impl Xfs {
    /// Makes and mounts a `size_mib` XFS. `None`, with the reason printed, where this machine
    /// cannot (no loop devices, not root, no `mkfs.xfs`) — unless `CUTOVER_REQUIRE_LOOP` is
    /// set (CI sets it), which makes that a failure: there the tests must never skip.
    pub fn new(size_mib: u64) -> Option<Xfs> {
        match Xfs::try_new(size_mib) {
            Ok(x) => Some(x),
            Err(why) if std::env::var_os("CUTOVER_REQUIRE_LOOP").is_some() => {
                panic!("an XFS loop mount is required here (CUTOVER_REQUIRE_LOOP): {why}")
            }
            Err(why) => {
                eprintln!("SKIPPED: this test needs an XFS loop mount: {why}");
                None
            }
        }
    }

    fn try_new(size_mib: u64) -> Result<Xfs, String> {
        if !Path::new("/dev/loop-control").exists() {
            return Err("no /dev/loop-control on this machine".into());
        }
        let dir = tempfile::Builder::new()
            .prefix("cutover-xfs")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let image = dir.path().join("fs.img");
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount).map_err(|e| e.to_string())?;
        let file = std::fs::File::create(&image).map_err(|e| e.to_string())?;
        file.set_len(size_mib << 20).map_err(|e| e.to_string())?;
        run(Command::new("mkfs.xfs")
            .args(["-q", "-m", "reflink=1"])
            .arg(&image))?;
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&mount))?;
        Ok(Xfs { _dir: dir, mount })
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.mount
    }
}

impl Drop for Xfs {
    fn drop(&mut self) {
        // The image file goes with the temporary directory, after this.
        let _ = Command::new("umount").arg(&self.mount).status();
    }
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
