//! `bench/dashboard`'s measurements: the history page of a stack with N releases, rendered
//! by the real server over loopback, and the time from a journal write (by another
//! connection, as an operation's process writes it) to the event arriving over SSE.
//!
//! usage: bench [RELEASES] [ROUNDS]      (CUTOVER_BIN: the cutover binary, for the anchor)

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use cutover_dashboard::auth::Role;
use cutover_dashboard::home::Home;
use cutover_dashboard::stacks::{Cutover, StackRef};
use cutover_dashboard::{App, Listen};
use cutover_store::{Holder, NewRelease, OperationStatus, ReleaseStatus, StepStatus, Store};

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let releases: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let tmp = tempfile::tempdir().expect("tempdir");
    let state = tmp.path().join("state");
    let stack = "bench";
    let file = tmp.path().join("cutover.yaml");
    std::fs::write(
        &file,
        "name: bench\nservices:\n  app:\n    image: cutover-demo:v1\n",
    )
    .expect("stack file");

    // A store with `releases` releases, each with its apply operation and a short journal.
    let store = Store::open(&state, stack).expect("store");
    let spec = r#"{"name":"bench","services":{"app":{"image":"cutover-demo:v1"}}}"#;
    let t = Instant::now();
    for r in 1..=releases {
        let images = format!(
            r#"{{"app":{{"reference":"registry.example/app:1.{r}.0","id":"sha256:{r:064x}","repo_digests":[]}}}}"#
        );
        let rel = store
            .insert_release(&NewRelease {
                spec_json: spec,
                images_json: &images,
                created_by: "alice",
                host: "ops-1",
                reason: None,
                status: ReleaseStatus::Deployed,
                source_json: None,
            })
            .expect("release");
        let op = store
            .begin_operation("apply", Some(rel.revision), &Holder::current())
            .expect("op");
        for step in [
            "preflight.image.app",
            "quiesce.stop.app",
            "upgrade.recreate.app",
        ] {
            let seq = store
                .step_started(op.id, step, "upgrade", step)
                .expect("step");
            store
                .step_finished(op.id, seq, StepStatus::Succeeded, "ok")
                .expect("step");
        }
        store
            .finish_operation(op.id, OperationStatus::Succeeded, None)
            .expect("finish");
    }
    eprintln!(
        "seeded {releases} releases in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let home = Home::open(&tmp.path().join("home")).expect("home");
    home.put_user("bench", Role::Viewer, Some("bench-pw"))
        .expect("user");
    let session = home.start_session("bench").expect("session");
    let program = std::env::var_os("CUTOVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| "cutover".into());
    let app = Arc::new(App {
        home: Mutex::new(home),
        stacks: vec![StackRef::new(
            stack.into(),
            file.clone(),
            Some(state.clone()),
        )],
        cutover: Cutover {
            program: program.clone(),
            environment: None,
            runs_dir: tmp.path().join("runs"),
        },
        trusted: None,
        tls: false,
        limiter: Mutex::new(Default::default()),
    });
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("rt");
        rt.block_on(cutover_dashboard::serve(
            app,
            Listen {
                addr: "127.0.0.1:0".parse().expect("addr"),
                tls: None,
            },
            move |a| {
                let _ = tx.send(a);
            },
            std::future::pending(),
        ))
        .expect("serve");
    });
    let addr = rx.recv_timeout(Duration::from_secs(10)).expect("listening");
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let cookie = format!("cutover_session={session}");

    // The history page with every release on it.
    let url = format!("http://{addr}/stacks/{stack}/history?limit={releases}");
    let mut page = Vec::new();
    let mut bytes = 0;
    for i in 0..rounds + 5 {
        let t = Instant::now();
        let body = client
            .get(&url)
            .header("cookie", &cookie)
            .send()
            .expect("page")
            .text()
            .expect("body");
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        assert!(
            body.contains(&format!("release-{releases}")) && body.contains("id=\"release-1\""),
            "the whole history"
        );
        bytes = body.len();
        if i >= 5 {
            page.push(ms);
        }
    }
    // The anchor: the same history at the terminal, `cutover history -o json`.
    let mut cli = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let o = std::process::Command::new(&program)
            .arg("-f")
            .arg(&file)
            .arg("--state-dir")
            .arg(&state)
            .args(["history", "--limit", &releases.to_string(), "-o", "json"])
            .output()
            .expect("cutover history");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        cli.push(t.elapsed().as_secs_f64() * 1000.0);
    }

    // Journal write → SSE event delivered.
    let op = store
        .begin_operation("apply", None, &Holder::current())
        .expect("op");
    let events = client
        .get(format!(
            "http://{addr}/api/v1/stacks/{stack}/operations/{}/events",
            op.id
        ))
        .header("cookie", &cookie)
        .timeout(Duration::from_secs(600))
        .send()
        .expect("events");
    let (etx, erx) = mpsc::channel::<(Instant, String)>();
    std::thread::spawn(move || {
        for line in BufReader::new(events).lines() {
            let Ok(line) = line else { return };
            if let Some(d) = line.strip_prefix("data: ") {
                let v: serde_json::Value = serde_json::from_str(d).expect("json");
                if v["event"] == "step_started" {
                    let _ =
                        etx.send((Instant::now(), v["step"].as_str().unwrap_or("").to_string()));
                }
            }
        }
    });
    let writer = Store::open(&state, stack).expect("writer");
    let mut sse = Vec::new();
    for i in 0..rounds {
        // Writes land at every phase of the server's look.
        std::thread::sleep(Duration::from_millis(20 + (i as u64 * 7) % 40));
        let id = format!("step.{i}");
        let t = Instant::now();
        let seq = writer
            .step_started(op.id, &id, "upgrade", "a step")
            .expect("write");
        let (at, got) = erx
            .recv_timeout(Duration::from_secs(10))
            .expect("the event arrives");
        assert_eq!(got, id);
        sse.push(at.duration_since(t).as_secs_f64() * 1000.0);
        writer
            .step_finished(op.id, seq, StepStatus::Succeeded, "")
            .expect("write");
    }

    let (p50, p99) = (pct(&mut page.clone(), 0.5), pct(&mut page, 0.99));
    let cli50 = pct(&mut cli, 0.5);
    let (s50, s99) = (pct(&mut sse.clone(), 0.5), pct(&mut sse, 0.99));
    println!("| measure | p50 ms | p99 ms | goal |");
    println!("|---|---|---|---|");
    println!(
        "| history page, {releases} releases ({} KiB), {rounds} requests | {p50:.1} | {p99:.1} | p99 < 50 ms |",
        bytes / 1024
    );
    println!("| anchor: `cutover history -o json` at the terminal, same store | {cli50:.1} | | |");
    println!(
        "| journal write → SSE event delivered, {rounds} writes | {s50:.1} | {s99:.1} | p99 < 250 ms |"
    );
    println!("page p50 vs the terminal: {:.2}x faster", cli50 / p50);
    println!("RESULT page_p99_ms={p99:.1} sse_p99_ms={s99:.1}");
}
