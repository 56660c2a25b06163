//! Commands the tests run: a command's outcome in words, the docker CLI, the demo images and
//! the test hooks of the `cutover` binary.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// The exit code; -1 when a signal ended the command.
pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Both streams of a command, for an assertion's message.
pub fn text(o: &Output) -> String {
    format!("--- stdout\n{}\n--- stderr\n{}", stdout(o), stderr(o))
}

/// The command `what` must have succeeded; its output says why not.
pub fn ok(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Whether the tests run as root (some server binaries refuse to, some faults need it).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// `docker ARGS` with no standard input: its output, whatever the exit status.
pub fn docker_output(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("the docker CLI runs")
}

/// `docker ARGS`: its standard output, trimmed (failures show up as empty output).
pub fn docker(args: &[&str]) -> String {
    String::from_utf8_lossy(&docker_output(args).stdout)
        .trim()
        .to_string()
}

/// Creates `dir` and a Docker volume `name` bound to it (the local driver's `type=none,
/// o=bind, device=DIR`, compose's `driver_opts`): the volume's data lives in `dir`.
pub fn bind_volume(name: &str, dir: &std::path::Path) {
    std::fs::create_dir_all(dir).expect("the volume's directory");
    let o = docker_output(&[
        "volume",
        "create",
        "--driver",
        "local",
        "--opt",
        "type=none",
        "--opt",
        "o=bind",
        "--opt",
        &format!("device={}", dir.display()),
        name,
    ]);
    assert!(
        o.status.success(),
        "docker volume create {name}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The demo images these tests run must exist (CI builds them before the tests).
pub fn demo_images() {
    let ok = docker_output(&["image", "inspect", "cutover-demo:v1", "cutover-demo:v2"])
        .status
        .success();
    assert!(
        ok,
        "the cutover-demo images are missing: run examples/demo/build-images"
    );
}

/// Checks the engine answers and builds the demo images when one is missing; once per run.
pub fn build_demo_images() {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        match Command::new("docker")
            .args(["info", "--format", "{{.ServerVersion}}"])
            .stdin(Stdio::null())
            .output()
        {
            Ok(o) if o.status.success() => {}
            Ok(o) => panic!(
                "Docker Engine not reachable: these tests need it (CI starts it in .ci/run)\n`docker info` said: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => panic!(
                "Docker Engine not reachable: these tests need it (CI starts it in .ci/run)\ncannot run `docker info`: {e}"
            ),
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let script = root.join("examples/demo/build-images");
        // Its own target dir: the nested cargo must not wait for the lock this build holds.
        let out = Command::new(&script)
            .arg("--if-missing")
            .env("CARGO_TARGET_DIR", root.join("target/demo-images"))
            .current_dir(&root)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "{} --if-missing failed ({}); the Docker tests need the cutover-demo images:\n{}\n{}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// The CUTOVER_TEST_* hooks (stop at a step boundary, hold the lease) are compiled only with
/// `--features cutover/test-hooks`, which `tests/run` passes: a test that drives them says
/// so rather than waiting for a hook that is not there. `bin` is the `cutover` binary.
pub fn require_test_hooks(bin: &Path) {
    let o = Command::new(bin)
        .arg("--version")
        .output()
        .expect("cutover --version");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("(test hooks)"),
        "this test drives the CUTOVER_TEST_* hooks: run it through tests/run, or with `--features cutover/test-hooks`"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Output {
        Command::new("sh")
            .args(["-c", script])
            .output()
            .expect("sh runs")
    }

    #[test]
    fn an_outcome_in_words() {
        let o = sh("echo out; echo err >&2; exit 3");
        assert_eq!(code(&o), 3);
        assert_eq!(stdout(&o), "out\n");
        assert_eq!(stderr(&o), "err\n");
        assert_eq!(text(&o), "--- stdout\nout\n\n--- stderr\nerr\n");
        ok(&sh("true"), "true");
    }

    #[test]
    fn a_command_ended_by_a_signal_has_no_code() {
        assert_eq!(code(&sh("kill -9 $$")), -1);
    }

    #[test]
    #[should_panic(expected = "false failed: out")]
    fn a_failed_command_is_named() {
        ok(&sh("echo out; exit 1"), "false");
    }
}
