//! Small helpers the process-level tests share: ports, the docker CLI, and a command's
//! outcome in words.

#![allow(dead_code)]

use std::net::TcpListener;
use std::process::{Command, Output, Stdio};

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// `docker ARGS`: its standard output, trimmed (failures show up as empty output).
pub fn docker(args: &[&str]) -> String {
    let o = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("the docker CLI runs");
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// The demo images these tests run must exist (CI builds them before the tests).
pub fn demo_images() {
    let ok = Command::new("docker")
        .args(["image", "inspect", "cutover-demo:v1", "cutover-demo:v2"])
        .output()
        .expect("docker")
        .status
        .success();
    assert!(
        ok,
        "the cutover-demo images are missing: run examples/demo/build-images"
    );
}

pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// Both streams of a command, for an assertion's message.
pub fn text(o: &Output) -> String {
    format!(
        "--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The CUTOVER_TEST_* hooks (stop at a step boundary, hold the lease) are compiled only with
/// `--features cutover/test-hooks`, which `tests/run` passes: a test that drives them says
/// so rather than waiting for a hook that is not there.
pub fn require_test_hooks() {
    let o = Command::new(env!("CARGO_BIN_EXE_cutover"))
        .arg("--version")
        .output()
        .expect("cutover --version");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("(test hooks)"),
        "this test drives the CUTOVER_TEST_* hooks: run it through tests/run, or with `--features cutover/test-hooks`"
    );
}
