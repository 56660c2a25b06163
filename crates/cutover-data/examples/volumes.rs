//! The restore-point operations of a directory, one per process, for `bench/volumes` to
//! time against its anchors:
//!
//!   volumes snapshot-take SRC DEST RECORD      snapshot of SRC at DEST, its record to RECORD
//!   volumes snapshot-restore RECORD TARGET FAILED
//!   volumes archive-take SRC ARCHIVE RECORD    tar+zstd with a blake3 manifest
//!   volumes archive-restore ARCHIVE RECORD TARGET
//!
//! Prints the method used (snapshot) and exits 1 with the error on failure.

use std::path::Path;

use cutover_data::{archive, snapshot};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let result: Result<String, Box<dyn std::error::Error>> = match a.as_slice() {
        ["snapshot-take", src, dest, record] => (|| {
            let s = snapshot::take(Path::new(src), Path::new(dest))?;
            std::fs::write(record, serde_json::to_vec(&s)?)?;
            Ok(format!("{:?} {} files", s.method, s.files))
        })(),
        ["snapshot-restore", record, target, failed] => (|| {
            let s: snapshot::Snapshot = serde_json::from_slice(&std::fs::read(record)?)?;
            let state = snapshot::swap_in(&s, Path::new(target), Path::new(failed))?;
            Ok(format!("{state:?}"))
        })(),
        ["archive-take", src, file, record] => (|| {
            let r = archive::create(Path::new(src), Path::new(file))?;
            std::fs::write(record, serde_json::to_vec(&r)?)?;
            Ok(format!("{} files", r.files))
        })(),
        ["archive-restore", file, record, target] => (|| {
            let r: archive::ArchiveReport = serde_json::from_slice(&std::fs::read(record)?)?;
            let done = archive::restore(
                Path::new(file),
                &r.archive_blake3,
                &r.manifest,
                Path::new(target),
            )?;
            Ok(done.failed_dir.display().to_string())
        })(),
        _ => Err("usage: see the header of examples/volumes.rs".into()),
    };
    match result {
        Ok(out) => println!("{out}"),
        Err(e) => {
            eprintln!("volumes: {e}");
            std::process::exit(1);
        }
    }
}
