//! Pulling from a registry with the credentials `docker login` stored: a real registry
//! (Debian's `docker-registry`, the CNCF distribution server) on loopback with htpasswd
//! auth, the real Docker Engine, the real `cutover` binary. CI installs the registry.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use cutover_testkit::cmd::{docker, ok};
use cutover_testkit::net::free_port;

fn sh(cmd: &mut Command) -> Output {
    cmd.output().expect("command runs")
}

struct Registry {
    child: Child,
    stack: String,
    image: String,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let ids = docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=io.cutover.stack={}", self.stack),
        ]);
        for id in ids.lines() {
            docker(&["rm", "-f", id]);
        }
        docker(&["network", "rm", &format!("cutover-{}", self.stack)]);
        docker(&["rmi", &self.image]);
    }
}

fn start_registry(dir: &Path, port: u16) -> Child {
    let htpasswd = sh(Command::new("htpasswd").args(["-Bbn", "ci", "s3cret-pw"]));
    ok(&htpasswd, "htpasswd (Debian package apache2-utils)");
    std::fs::write(dir.join("htpasswd"), &htpasswd.stdout).expect("htpasswd file");
    let config = format!(
        "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\nauth:\n  htpasswd:\n    realm: cutover-test\n    path: {}\n",
        dir.join("data").display(),
        dir.join("htpasswd").display()
    );
    std::fs::write(dir.join("config.yml"), config).expect("config");
    let child = Command::new("docker-registry")
        .args(["serve", &dir.join("config.yml").to_string_lossy()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect(
            "docker-registry (Debian package docker-registry) must be installed: CI installs it",
        );
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the registry did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

#[test]
fn images_are_pulled_with_the_credentials_docker_login_stored() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let port = free_port();
    let stack = format!("t-registry-{}", std::process::id());
    let image = format!("127.0.0.1:{port}/cutover-demo:v2");
    let _registry = Registry {
        child: start_registry(dir, port),
        stack: stack.clone(),
        image: image.clone(),
    };
    let base = sh(Command::new("docker").args(["image", "inspect", "cutover-demo:v2"]));
    ok(
        &base,
        "the demo image cutover-demo:v2 (examples/demo/build-images)",
    );

    // Log in with a config dir of our own, push, and drop the local tag.
    let docker_config = dir.join("docker-config");
    std::fs::create_dir_all(&docker_config).expect("config dir");
    let docker = |args: &[&str]| {
        sh(Command::new("docker")
            .env("DOCKER_CONFIG", &docker_config)
            .args(args))
    };
    let login = Command::new("docker")
        .env("DOCKER_CONFIG", &docker_config)
        .args([
            "login",
            "--username",
            "ci",
            "--password-stdin",
            &format!("127.0.0.1:{port}"),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().expect("stdin").write_all(b"s3cret-pw")?;
            c.wait_with_output()
        })
        .expect("docker login");
    ok(&login, "docker login");
    ok(&docker(&["tag", "cutover-demo:v2", &image]), "docker tag");
    ok(&docker(&["push", &image]), "docker push");
    ok(&docker(&["rmi", &image]), "docker rmi");

    let host_port = free_port();
    std::fs::write(
        dir.join("cutover.yaml"),
        format!(
            "name: {stack}\nservices:\n  app:\n    image: {image}\n    port: 8080\n    ports: [\"127.0.0.1:{host_port}:8080\"]\n    health: {{ http: /health, interval: 200ms, deadline: 30s }}\n"
        ),
    )
    .expect("stack file");
    let cutover = |config: &Path| {
        sh(Command::new(env!("CARGO_BIN_EXE_cutover"))
            .current_dir(dir)
            .env("DOCKER_CONFIG", config)
            .env("NO_COLOR", "1")
            .args(["apply", "--yes"])
            .stdin(Stdio::null()))
    };

    // Without the credentials the pull is refused, in preflight: nothing changes.
    let anonymous = dir.join("no-credentials");
    std::fs::create_dir_all(&anonymous).expect("dir");
    let o = cutover(&anonymous);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&image) && err.contains("pulling it failed"),
        "{err}"
    );
    assert!(err.contains("refused in preflight"), "{err}");

    // With them, the image is pulled and runs; the release records its registry digest.
    let o = cutover(&docker_config);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(
        !err.contains("s3cret-pw"),
        "the password must never be printed: {err}"
    );
    let history = sh(Command::new(env!("CARGO_BIN_EXE_cutover"))
        .current_dir(dir)
        .args(["history", "-o", "json"]));
    let v: serde_json::Value = serde_json::from_slice(&history.stdout).expect("json");
    let release = &v["releases"][0];
    assert_eq!(release["status"], "deployed", "{v}");
    let digests = release["images"]["app"]["repo_digests"]
        .as_array()
        .expect("repo_digests");
    assert!(
        digests.iter().any(|d| d
            .as_str()
            .is_some_and(|d| d.starts_with(&format!("127.0.0.1:{port}/cutover-demo@sha256:")))),
        "{v}"
    );
    let want_id =
        sh(Command::new("docker").args(["image", "inspect", "-f", "{{.Id}}", "cutover-demo:v2"]));
    assert_eq!(
        release["images"]["app"]["id"].as_str(),
        Some(String::from_utf8_lossy(&want_id.stdout).trim()),
        "the pulled image is the pushed one"
    );
    for f in std::fs::read_dir(dir.join(".cutover")).expect("state dir") {
        let f = f.expect("entry").path();
        let bytes = std::fs::read(&f).expect("state file");
        assert!(
            !String::from_utf8_lossy(&bytes).contains("s3cret-pw"),
            "the password must never reach the state ({})",
            f.display()
        );
    }
}
