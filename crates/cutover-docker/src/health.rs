//! Waiting until a new container is healthy.
//!
//! The service's `health` probe (HTTP, TCP or a command in the container), when the stack
//! file has one, is run from here from the container's start, the pauses growing from 50 ms
//! to the probe's interval; it must keep passing for 300 ms (no exit, no restart) before the
//! container counts as healthy. The image's Docker HEALTHCHECK, when it has one, must not say
//! unhealthy — and decides alone when the stack file has no probe. Either way
//! the service's `deadline` bounds the wait, a container that exits fails at once, and a
//! failure names the service, the last probe output and the last 50 log lines.

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cutover_core::spec::{Health, Probe};
use futures_util::TryStreamExt;

use crate::{Runtime, RuntimeError};

/// How many log lines a health failure carries.
pub const LOG_LINES: usize = 50;

/// Without a `health` section and without an image HEALTHCHECK, a container counts as up
/// when it still runs after this long.
const SETTLE: Duration = Duration::from_secs(2);
/// The overall limit when the stack file sets none.
const DEFAULT_DEADLINE: Duration = Duration::from_secs(60);
/// The pause before the second check. The pauses double up to the probe's `interval`: an
/// app ready in milliseconds is seen ready in milliseconds, and one that is not is not
/// flooded with probes (its log tail is what a failure quotes).
const FIRST_PAUSE: Duration = Duration::from_millis(50);
/// The stack's probe must keep passing this long, the container neither exiting nor
/// restarting, before the container counts as healthy: a version that answers once, then
/// crashes, is not ready.
const READY_SETTLE: Duration = Duration::from_millis(300);
/// The pause between checks while a passing probe settles.
const SETTLE_PAUSE: Duration = Duration::from_millis(100);

/// Why a container did not become healthy.
#[derive(Debug, Clone)]
pub struct HealthFailure {
    pub service: String,
    pub container: String,
    /// What went wrong: the deadline passed, the container exited, Docker says unhealthy.
    pub reason: String,
    /// The last probe's output.
    pub last_check: String,
    /// The container's last log lines.
    pub logs: String,
}

impl fmt::Display for HealthFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` did not become healthy: {} (container {})",
            self.service, self.reason, self.container
        )?;
        if !self.last_check.is_empty() {
            write!(f, "\n  last check: {}", self.last_check.trim_end())?;
        }
        if !self.logs.trim().is_empty() {
            write!(f, "\n  last {LOG_LINES} log lines:")?;
            for line in self.logs.lines() {
                write!(f, "\n    {line}")?;
            }
        }
        Ok(())
    }
}

enum Verdict {
    Healthy(String),
    NotYet(String),
    /// No point waiting: the container exited, or Docker gave up on it.
    Failed(String),
}

impl Runtime {
    /// Waits until container `id` of `service` is healthy, or fails with a [`HealthFailure`].
    /// Returns the last check's output on success.
    pub async fn wait_healthy(
        &self,
        stack: &str,
        service: &str,
        id: &str,
        health: Option<&Health>,
    ) -> Result<String, RuntimeError> {
        let deadline = health.map_or(DEFAULT_DEADLINE, |h| h.deadline);
        let interval = health.map_or(Duration::from_millis(500), |h| {
            h.interval.max(Duration::from_millis(100))
        });
        let started = Instant::now();
        let mut last = String::new();
        let mut restarts = None;
        let mut pause = FIRST_PAUSE.min(interval);
        let mut passing_since: Option<Instant> = None;
        loop {
            let verdict = self
                .check_once(stack, id, health, started, &mut restarts)
                .await?;
            let reason = match verdict {
                // The stack's own probe passed: ready once it has kept passing a while.
                Verdict::Healthy(out) if health.is_some() => {
                    let since = *passing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= READY_SETTLE {
                        return Ok(out);
                    }
                    last = out;
                    None
                }
                Verdict::Healthy(out) => return Ok(out),
                Verdict::Failed(why) => {
                    // The reason carries the last check already.
                    last.clear();
                    Some(why)
                }
                Verdict::NotYet(out) => {
                    passing_since = None;
                    last = out;
                    None
                }
            };
            let reason = reason.or_else(|| {
                (started.elapsed() >= deadline).then(|| {
                    format!(
                        "still not healthy after the deadline of {}",
                        cutover_http::seconds(deadline)
                    )
                })
            });
            if let Some(reason) = reason {
                let logs = self.logs_tail(id, LOG_LINES).await.unwrap_or_default();
                return Err(RuntimeError::Unhealthy(Box::new(HealthFailure {
                    service: service.to_string(),
                    container: id[..id.len().min(12)].to_string(),
                    reason,
                    last_check: last,
                    logs,
                })));
            }
            let next = if passing_since.is_some() {
                SETTLE_PAUSE
            } else {
                let p = pause;
                pause = (pause * 2).min(interval);
                p
            };
            tokio::time::sleep(next.min(deadline.saturating_sub(started.elapsed()))).await;
        }
    }

    async fn check_once(
        &self,
        stack: &str,
        id: &str,
        health: Option<&Health>,
        started: Instant,
        restarts: &mut Option<i64>,
    ) -> Result<Verdict, RuntimeError> {
        let inspect =
            self.docker
                .inspect_container(id, None)
                .await
                .map_err(RuntimeError::docker(format!(
                    "cannot inspect container {id}"
                )))?;
        let state = inspect.state.unwrap_or_default();
        // A restart policy hides an exit: the engine starts the process again and the
        // container counts as running. Any restart since the wait began is a crash loop.
        let count = inspect.restart_count.unwrap_or(0);
        let baseline = *restarts.get_or_insert(count);
        if state.restarting.unwrap_or(false) || count > baseline {
            // Once restarted, the state's exit code is the new process's (0): the engine's
            // `die` events keep the real ones.
            let codes = self.exit_codes_since(id, started).await;
            let codes = if codes.is_empty() {
                state.exit_code.unwrap_or(-1).to_string()
            } else {
                codes.join(", ")
            };
            return Ok(Verdict::Failed(format!(
                "the container exited with code {codes} and the engine restarted it ({} restart(s) since it started; restart policy): a crash loop",
                (count - baseline).max(1)
            )));
        }
        if !state.running.unwrap_or(false) {
            return Ok(Verdict::Failed(format!(
                "the container exited with code {}{}",
                state.exit_code.unwrap_or(-1),
                state
                    .error
                    .filter(|e| !e.is_empty())
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            )));
        }
        // The image (or container) has a Docker HEALTHCHECK: its status decides.
        if let Some(h) = state.health.filter(|h| {
            h.status
                .as_ref()
                .is_some_and(|s| !matches!(s.to_string().as_str(), "" | "none"))
        }) {
            let last = h
                .log
                .as_ref()
                .and_then(|l| l.last())
                .map(|r| {
                    format!(
                        "exit {}: {}",
                        r.exit_code.unwrap_or(-1),
                        r.output.as_deref().unwrap_or("").trim()
                    )
                })
                .unwrap_or_default();
            match h.status.map(|s| s.to_string()).as_deref() {
                Some("healthy") if health.is_none() => {
                    return Ok(Verdict::Healthy(format!(
                        "Docker HEALTHCHECK: healthy ({last})"
                    )));
                }
                // Healthy for Docker; the stack's own probe, when it has one, must pass too.
                Some("healthy") => {}
                // Docker asks at its HEALTHCHECK's interval (30 s by default): the stack's
                // own probe, asked from the container's start, decides sooner.
                Some("starting") if health.is_some() => {}
                Some("unhealthy") => {
                    return Ok(Verdict::Failed(format!(
                        "Docker HEALTHCHECK reports unhealthy after {} failed checks",
                        h.failing_streak.unwrap_or(0)
                    ))
                    .with_last(last));
                }
                _ => {
                    return Ok(Verdict::NotYet(format!(
                        "Docker HEALTHCHECK: starting ({last})"
                    )));
                }
            }
        }
        let Some(health) = health else {
            return Ok(if started.elapsed() >= SETTLE {
                Verdict::Healthy(format!(
                    "no health check configured: running for {}",
                    cutover_http::seconds(SETTLE)
                ))
            } else {
                Verdict::NotYet("running; no health check configured".into())
            });
        };
        let in_start_period = started.elapsed() < health.start_period;
        let result = self
            .probe(stack, id, &inspect.network_settings, health)
            .await?;
        Ok(match result {
            Ok(out) => Verdict::Healthy(out),
            Err(out) if in_start_period => Verdict::NotYet(format!("{out} (in start period)")),
            Err(out) => Verdict::NotYet(out),
        })
    }

    /// The exit codes of container `id` since `since`, oldest first, from the engine's `die`
    /// events; empty when they cannot be read within a few seconds.
    async fn exit_codes_since(&self, id: &str, since: Instant) -> Vec<String> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let since = now.saturating_sub(since.elapsed() + Duration::from_secs(1));
        let options = bollard::query_parameters::EventsOptions {
            since: Some(since.as_secs().to_string()),
            until: Some((now.as_secs() + 1).to_string()),
            filters: Some(std::collections::HashMap::from([
                ("container".to_string(), vec![id.to_string()]),
                ("event".to_string(), vec!["die".to_string()]),
            ])),
        };
        let events = self.docker.events(Some(options)).try_collect::<Vec<_>>();
        match tokio::time::timeout(Duration::from_secs(5), events).await {
            Ok(Ok(events)) => events
                .into_iter()
                .filter_map(|e| e.actor?.attributes?.get("exitCode").cloned())
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Runs the service's probe once. The outer result is the engine failing; the inner one
    /// is the probe's verdict with its output.
    async fn probe(
        &self,
        stack: &str,
        id: &str,
        net: &Option<bollard::models::NetworkSettings>,
        health: &Health,
    ) -> Result<Result<String, String>, RuntimeError> {
        let target = |port: u16| -> Option<SocketAddr> { probe_address(stack, net, port) };
        let timeout = health.timeout.max(Duration::from_millis(100));
        Ok(match &health.probe {
            Probe::Http {
                path,
                port,
                expect_status,
                body_contains,
            } => match target(*port) {
                None => Err(format!("port {port} has no address to probe")),
                Some(addr) => {
                    http_probe(
                        addr,
                        path,
                        *expect_status,
                        body_contains.as_deref(),
                        timeout,
                    )
                    .await
                }
            },
            Probe::Tcp { port } => match target(*port) {
                None => Err(format!("port {port} has no address to probe")),
                Some(addr) => {
                    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await
                    {
                        Ok(Ok(_)) => Ok(format!("TCP connect to {addr}: ok")),
                        Ok(Err(e)) => Err(format!("TCP connect to {addr}: {e}")),
                        Err(_) => Err(format!("TCP connect to {addr}: timed out")),
                    }
                }
            },
            Probe::Command(cmd) => {
                let argv = cmd.argv();
                match tokio::time::timeout(timeout, self.exec(id, &argv)).await {
                    Ok(Ok((0, out))) => Ok(format!("`{cmd}` exited 0: {}", out.trim())),
                    Ok(Ok((code, out))) => Err(format!("`{cmd}` exited {code}: {}", out.trim())),
                    Ok(Err(e)) => Err(format!("`{cmd}`: {e}")),
                    Err(_) => Err(format!(
                        "`{cmd}` timed out after {}",
                        cutover_http::seconds(timeout)
                    )),
                }
            }
        })
    }
}

impl Verdict {
    fn with_last(self, last: String) -> Verdict {
        match self {
            Verdict::Failed(why) if !last.is_empty() => {
                Verdict::Failed(format!("{why}; last: {last}"))
            }
            v => v,
        }
    }
}

/// Where to reach a container port from this host: its published loopback port when it has
/// one, else its address on the stack network.
fn probe_address(
    stack: &str,
    net: &Option<bollard::models::NetworkSettings>,
    port: u16,
) -> Option<SocketAddr> {
    let net = net.as_ref()?;
    let published = net
        .ports
        .as_ref()
        .and_then(|p| p.get(&format!("{port}/tcp")))
        .and_then(|b| b.as_ref())
        .and_then(|b| b.first())
        .and_then(|b| {
            let ip = match b.host_ip.as_deref() {
                None | Some("" | "0.0.0.0" | "::") => "127.0.0.1",
                Some(ip) => ip,
            };
            format!("{ip}:{}", b.host_port.as_deref()?).parse().ok()
        });
    published.or_else(|| {
        let ip = net
            .networks
            .as_ref()?
            .get(&Runtime::network_name(stack))?
            .ip_address
            .as_deref()?
            .parse()
            .ok()?;
        Some(SocketAddr::new(ip, port))
    })
}

async fn http_probe(
    addr: SocketAddr,
    path: &str,
    expect_status: u16,
    body_contains: Option<&str>,
    timeout: Duration,
) -> Result<String, String> {
    let url = format!("http://{addr}{path}");
    let (status, body) = cutover_http::get(&url, timeout).await?;
    let snippet: String = body.chars().take(200).collect();
    let snippet = snippet.trim();
    if status != expect_status {
        return Err(format!(
            "GET {url} → {status} (want {expect_status}): {snippet}"
        ));
    }
    if let Some(want) = body_contains
        && !body.contains(want)
    {
        return Err(format!(
            "GET {url} → {status}, body lacks {want:?}: {snippet}"
        ));
    }
    Ok(format!("GET {url} → {status}: {snippet}"))
}
