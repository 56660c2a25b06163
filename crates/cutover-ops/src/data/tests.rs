//! The data steps' life of a restore point — take once, clean up a failed take, say before
//! restoring, restore once, find a release's data, refuse what does not fit — against a
//! backend that copies one file in a temporary directory.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use cutover_core::engine::StepError;
use cutover_core::spec::{DataSet, Stack, load::LoadOptions};
use cutover_data::manifest::{Artifact, Kind, Manifest, RestorePoints, Status};

use super::{Backend, Backends, Data, Restoring, Room};

/// One file, copied into the restore point and back; the failed content kept as `.failed`.
struct FileBackend {
    file: PathBuf,
    schema: Option<String>,
    fail_take: bool,
    log: Rc<RefCell<Vec<String>>>,
}

impl Backend for FileBackend {
    fn describe(&self) -> String {
        format!("file {}", self.file.display())
    }
    fn source(&self) -> (Kind, String) {
        (Kind::Directory, self.file.display().to_string())
    }
    fn size(&self) -> Result<(u64, Room), StepError> {
        let len = std::fs::metadata(&self.file).map(|m| m.len()).unwrap_or(0);
        Ok((len, Room::StateDir))
    }
    fn schema_version(&self, _query: &str) -> Result<Option<String>, StepError> {
        Ok(self.schema.clone())
    }
    fn take(&self, m: &mut Manifest, dir: &Path) -> Result<String, StepError> {
        self.log.borrow_mut().push("take".into());
        std::fs::create_dir_all(dir).expect("dir");
        std::fs::copy(&self.file, dir.join("copy")).expect("copy");
        if self.fail_take {
            return Err(StepError::new("disk full"));
        }
        m.artifacts.push(Artifact {
            file: "copy".into(),
            bytes: 1,
            blake3: String::new(),
        });
        Ok("copied".into())
    }
    fn restore(
        &self,
        rps: &RestorePoints,
        m: &mut Manifest,
        r: &Restoring,
    ) -> Result<String, StepError> {
        if m.status != Status::Complete {
            return Ok("restored already".into());
        }
        self.log
            .borrow_mut()
            .push(format!("restore for release {}", r.release));
        let failed = self.file.with_extension("failed");
        std::fs::rename(&self.file, &failed).expect("aside");
        std::fs::copy(rps.dir(m.release, &m.data).join("copy"), &self.file).expect("back");
        m.failed_copy = Some(failed.display().to_string());
        Ok("restored".into())
    }
    fn discard(&self, _m: &Manifest) {
        self.log.borrow_mut().push("discard".into());
    }
    fn kept_where(&self, _m: &Manifest, _r: &Restoring) -> String {
        "kept as `app.failed`".into()
    }
}

struct Fake {
    dir: tempfile::TempDir,
    free: u64,
    schema: RefCell<Option<String>>,
    fail_take: RefCell<bool>,
    log: Rc<RefCell<Vec<String>>>,
}

impl Fake {
    fn file(&self) -> PathBuf {
        self.dir.path().join("app.db")
    }
}

impl Backends for Fake {
    fn backend<'s>(
        &'s self,
        _name: &str,
        _data: &DataSet,
    ) -> Result<Box<dyn Backend + 's>, StepError> {
        Ok(Box::new(FileBackend {
            file: self.file(),
            schema: self.schema.borrow().clone(),
            fail_take: *self.fail_take.borrow(),
            log: self.log.clone(),
        }))
    }
    fn free_space(&self, _path: &Path) -> Result<u64, String> {
        Ok(self.free)
    }
}

fn stack() -> Stack {
    cutover_core::spec::load::load_str(
        Path::new("cutover.yaml"),
        "name: shop
services:
  web: { image: app:v2 }
data:
  app_db:
    sqlite: { path: /var/lib/app/app.db }
    writers: [web]
    schema_version: { query: SELECT v FROM version }
  uploads:
    volume: { path: /var/lib/app/uploads }
    writers: [web]
",
        &LoadOptions::default(),
    )
    .unwrap_or_else(|d| panic!("{d:?}"))
    .stack
}

fn fake(free: u64) -> Fake {
    let f = Fake {
        dir: tempfile::tempdir().expect("tempdir"),
        free,
        schema: RefCell::new(Some("2".into())),
        fail_take: RefCell::new(false),
        log: Rc::default(),
    };
    std::fs::write(f.file(), "v1 data").expect("data");
    f
}

struct Run {
    said: Rc<RefCell<Vec<String>>>,
    state: tempfile::TempDir,
}

fn data<'a>(f: &'a Fake, desired: &'a Stack, release: u64, run: &Run) -> Data<'a> {
    let said = run.said.clone();
    let log = f.log.clone();
    Data {
        backends: f,
        desired,
        previous: None,
        release,
        from_release: Some(release - 1),
        restore_points: RestorePoints::new(run.state.path()),
        from_dump: false,
        space_needed: 0,
        notice: Box::new(move |s: &str| {
            said.borrow_mut().push(s.to_string());
            log.borrow_mut().push("notice".into());
        }),
    }
}

fn run() -> Run {
    Run {
        said: Rc::default(),
        state: tempfile::tempdir().expect("state"),
    }
}

#[test]
fn a_restore_point_is_taken_once_and_a_failed_take_leaves_nothing() {
    let (f, s, r) = (fake(1 << 30), stack(), run());
    let mut d = data(&f, &s, 2, &r);
    let out = d.take_restore_point("app_db").expect("take");
    assert!(
        out.starts_with("copied in ") && out.ends_with("; schema version 2"),
        "{out}"
    );
    let m = d
        .restore_points
        .load(2, "app_db")
        .expect("read")
        .expect("manifest");
    assert_eq!(
        (m.status, m.taken_from, m.schema_version.as_deref()),
        (Status::Complete, Some(1), Some("2"))
    );
    let again = d.take_restore_point("app_db").expect("again");
    assert_eq!(
        again,
        "restore point of `app_db` exists already (release 2)"
    );
    assert_eq!(f.log.borrow().as_slice(), ["take"]);

    *f.fail_take.borrow_mut() = true;
    let err = d.take_restore_point("uploads").expect_err("fails");
    assert_eq!(err.message, "disk full");
    assert!(
        d.restore_points.load(2, "uploads").expect("read").is_none(),
        "no manifest left"
    );
    assert!(!d.restore_points.dir(2, "uploads").exists(), "no copy left");
}

#[test]
fn a_restore_says_first_how_old_the_point_is_and_where_the_writes_since_go_then_restores_once() {
    let (f, s, r) = (fake(1 << 30), stack(), run());
    let mut d = data(&f, &s, 2, &r);
    d.take_restore_point("app_db").expect("take");
    std::fs::write(f.file(), "v2 writes").expect("written since");
    let out = d.restore_data("app_db").expect("restore");
    assert!(out.starts_with("restored ("), "{out}");
    assert_eq!(
        f.log.borrow().as_slice(),
        ["take", "notice", "restore for release 2"]
    );
    let said = r.said.borrow();
    assert_eq!(said.len(), 1);
    assert!(
        said[0].starts_with("restoring `app_db` to its restore point of "),
        "{}",
        said[0]
    );
    assert!(said[0].contains(" s old, taken before release 2's upgrade); what was written to it since is kept as `app.failed`"), "{}", said[0]);
    assert_eq!(std::fs::read_to_string(f.file()).expect("back"), "v1 data");
    assert_eq!(
        std::fs::read_to_string(f.file().with_extension("failed")).expect("kept"),
        "v2 writes"
    );
    drop(said);
    // Again (a revert run again after a crash): nothing is restored twice, nothing said.
    d.restore_data("app_db").expect("again");
    assert_eq!(r.said.borrow().len(), 1);
    assert_eq!(f.log.borrow().len(), 3);
    assert_eq!(
        d.restore_points
            .load(2, "app_db")
            .expect("read")
            .map(|m| m.status),
        Some(Status::Restored)
    );
}

#[test]
fn an_incomplete_restore_point_is_discarded_never_restored() {
    let (f, s, r) = (fake(1 << 30), stack(), run());
    let mut d = data(&f, &s, 2, &r);
    d.take_restore_point("app_db").expect("take");
    let mut m = d
        .restore_points
        .load(2, "app_db")
        .expect("read")
        .expect("manifest");
    m.status = Status::Creating;
    d.restore_points.save(&m).expect("save");
    let out = d.restore_data("app_db").expect("nothing to restore");
    assert!(out.contains("was never completed"), "{out}");
    assert_eq!(f.log.borrow().as_slice(), ["take", "discard"]);
    assert!(r.said.borrow().is_empty());
    assert!(d.restore_points.load(2, "app_db").expect("read").is_none());
    // No restore point at all: nothing to restore, and that is no failure.
    let out = d.restore_data("uploads").expect("none");
    assert!(
        out.contains("no restore point of `uploads` was taken"),
        "{out}"
    );
}

#[test]
fn a_rollback_with_its_data_finds_the_restore_point_that_holds_that_release() {
    let (f, s, r) = (fake(1 << 30), stack(), run());
    // Release 2's upgrade took release 1's data.
    data(&f, &s, 2, &r)
        .take_restore_point("app_db")
        .expect("take");
    // Release 3 (a rollback to 1) puts it back.
    let mut d = data(&f, &s, 3, &r);
    d.restore_data_from("app_db", 1).expect("release 1's data");
    assert_eq!(
        f.log.borrow().last().map(String::as_str),
        Some("restore for release 3")
    );
    assert_eq!(
        d.restore_data_from("app_db", 1).expect("again"),
        "the data of release 1 is back in `app_db` already"
    );
    let err = d.restore_data_from("app_db", 7).expect_err("none");
    assert_eq!(
        err.message,
        "`app_db` has no complete restore point of release 7's data"
    );
}

#[test]
fn the_space_check_sums_every_restore_point_of_the_operation_with_a_margin() {
    let (f, s, r) = (fake(20), stack(), run());
    // 7 bytes: 7 × 1.1 fits in 20; the second data set's 7 more (14 × 1.1 = 15) too.
    let mut d = data(&f, &s, 2, &r);
    let out = d.check_data("app_db").expect("fits");
    assert!(
        out.starts_with("file ") && out.contains("(7 B); 20 B free on"),
        "{out}"
    );
    d.check_data("uploads").expect("still fits");
    // A third: 21 × 1.1 = 23 > 20.
    let err = d.check_data("app_db").expect_err("does not fit");
    assert!(
        err.message.starts_with(
            "not enough room for the restore points: 23 B needed (with a 10% margin), 20 B free on"
        ),
        "{}",
        err.message
    );
}

#[test]
fn the_revert_compares_schema_versions_with_what_the_restore_point_recorded() {
    let (f, s, r) = (fake(1 << 30), stack(), run());
    let mut d = data(&f, &s, 2, &r);
    d.take_restore_point("app_db").expect("take");
    d.restore_data("app_db").expect("restore");
    assert!(d.schema_differences().is_empty());
    *f.schema.borrow_mut() = Some("3".into());
    assert_eq!(
        d.schema_differences(),
        ["schema version of `app_db` is 3 (was 2)"]
    );
    let err = d
        .check_schema_kept("app_db", 1, "2")
        .expect_err("3 is not 2");
    assert!(
        err.message.contains("roll back with `--data restore`"),
        "{}",
        err.message
    );
    assert_eq!(
        d.check_schema_version("app_db", Some("3")).expect("3"),
        "schema version of `app_db` is 3"
    );
}
