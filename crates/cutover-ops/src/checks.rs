//! The stack file's own steps and checks: what the seed runbooks did by hand, run and
//! journaled like the built-in steps.
//!
//! A check passes or fails with its output; it is tried `retries` times, `interval` apart,
//! each try bounded by `timeout`. A `wait` step tries its check until it passes or the
//! step's timeout (default: the check's timeout × its retries, at least 10 minutes for a
//! wait) runs out — "daemons turn green, it may take a while".

use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

use cutover_core::engine::StepError;
use cutover_core::runtime::{ContainerInfo, ContainerRuntime};
use cutover_core::spec::{Check, CheckKind, Command, CustomStep, DataKind, Stack, StepAction};
use cutover_store::Store;

/// What the checks reach beyond the container runtime: HTTP, TCP and PostgreSQL, each
/// bounded. The binary's implementation drives the real ones; unit tests script them.
pub trait Probes {
    /// `GET url`: the status and the body.
    fn http_get(&self, url: &str, timeout: Duration) -> Result<(u16, String), String>;
    /// A TCP connection to `addr` is accepted.
    fn tcp_connect(&self, addr: SocketAddr, timeout: Duration) -> Result<(), String>;
    /// The first column of the first row of `query` (text), on PostgreSQL.
    fn postgres_value(
        &self,
        url: &str,
        database: &str,
        query: &str,
    ) -> Result<Option<String>, String>;
    /// Runs `query` (statements) on PostgreSQL.
    fn postgres_execute(&self, url: &str, database: &str, query: &str) -> Result<(), String>;
}

/// The person running the operation, for the steps that need one.
pub trait Operator {
    /// Says something they should know now (an approval is awaited, and how to give it).
    fn say(&self, text: &str);
    /// A manual step: who confirmed it is done, or why it is not.
    fn confirm(&self, text: &str) -> Result<String, String>;
}

/// What the stack file's own steps and checks need: the stack, the runtime to find and
/// exec into its containers, the probes, the operator, the store (approvals), and the
/// operation they belong to.
pub struct Checks<'a> {
    pub runtime: &'a dyn ContainerRuntime,
    pub probes: &'a dyn Probes,
    pub operator: &'a dyn Operator,
    pub store: &'a Store,
    pub desired: &'a Stack,
    /// The operation these steps belong to (approvals and aborts are keyed on it).
    pub operation: u64,
}

/// How long an approval waits when the step does not say.
const APPROVAL_DEFAULT: Duration = Duration::from_secs(3600);
/// How long a `wait` step waits when neither it nor its check says.
const WAIT_DEFAULT: Duration = Duration::from_secs(600);
/// How much of a step's output the journal keeps (the store cuts at 8 KiB too).
const OUTPUT_TAIL: usize = 4000;

fn tail(s: &str) -> String {
    let s = s.trim();
    if s.len() <= OUTPUT_TAIL {
        return s.to_string();
    }
    let mut start = s.len() - OUTPUT_TAIL;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &s[start..])
}

impl Checks<'_> {
    /// Runs one custom step.
    pub fn custom_step(&self, id: &str, step: &CustomStep) -> Result<String, StepError> {
        let timeout = step.timeout;
        match &step.action {
            StepAction::Manual { text } => self.manual(text),
            StepAction::Approval { text } => {
                self.approval(id, text, timeout.unwrap_or(APPROVAL_DEFAULT))
            }
            StepAction::Run { command } => run_host(
                command,
                &self.desired.base_dir,
                timeout.unwrap_or(WAIT_DEFAULT),
            ),
            StepAction::Exec { service, command } => {
                let (code, out) = self.exec_in(service, command, timeout)?;
                if code == 0 {
                    Ok(tail(&out))
                } else {
                    Err(StepError {
                        message: format!("`{command}` in `{service}` exited {code}"),
                        output: tail(&out),
                    })
                }
            }
            StepAction::Sql { data, query } => self.sql_execute(data, query),
            StepAction::Http { check } => {
                let once = Check {
                    kind: check.clone(),
                    timeout: timeout.unwrap_or(Duration::from_secs(10)),
                    interval: Duration::ZERO,
                    retries: 1,
                };
                self.check(&once).map_err(StepError::new)
            }
            StepAction::Check { check } => {
                let c = self.named_check(check)?.clone();
                self.check(&c).map_err(StepError::new)
            }
            StepAction::Wait { check } => {
                let c = self.named_check(check)?.clone();
                let limit = timeout.unwrap_or(WAIT_DEFAULT);
                self.wait_for(check, &c, limit)
            }
        }
    }

    /// Waits until a person other than the one running the operation approves it with
    /// `cutover approve` (or the operation is aborted, or `limit` passes).
    fn approval(&self, id: &str, text: &str, limit: Duration) -> Result<String, StepError> {
        let fail = |e: cutover_store::StoreError| StepError::new(e.to_string());
        self.store
            .request_approval(self.operation, id, text)
            .map_err(fail)?;
        self.operator.say(&format!(
            "waiting for approval: {text}\n  another person approves with `cutover approve {}`",
            self.operation
        ));
        let started = Instant::now();
        loop {
            if let Some(d) = self.store.decision(self.operation, id).map_err(fail)? {
                let comment = d.comment.map(|c| format!(": {c}")).unwrap_or_default();
                return if d.approved {
                    Ok(format!("approved by {}{comment}", d.by))
                } else {
                    Err(StepError::new(format!("refused by {}{comment}", d.by)))
                };
            }
            if let Some(by) = self.store.abort_requested(self.operation).map_err(fail)? {
                return Err(StepError::new(format!(
                    "aborted by {by} while waiting for approval"
                )));
            }
            if started.elapsed() > limit {
                return Err(StepError::new(format!(
                    "no approval within {}s: `{text}`",
                    limit.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn named_check(&self, name: &str) -> Result<&Check, StepError> {
        self.desired
            .checks
            .get(name)
            .ok_or_else(|| StepError::new(format!("check `{name}` is not in the stack")))
    }

    /// A human confirms; who confirmed goes to the journal.
    fn manual(&self, text: &str) -> Result<String, StepError> {
        self.operator.confirm(text).map_err(StepError::new)
    }

    /// Tries `check` up to its retries; the last failure is the error.
    pub fn check(&self, check: &Check) -> Result<String, String> {
        let tries = check.retries.max(1);
        let mut last = String::new();
        for attempt in 1..=tries {
            match self.check_once(&check.kind, check.timeout) {
                Ok(out) => return Ok(out),
                Err(e) => last = e,
            }
            if attempt < tries {
                std::thread::sleep(check.interval);
            }
        }
        Err(if tries > 1 {
            format!("{last} (after {tries} tries)")
        } else {
            last
        })
    }

    fn wait_for(&self, name: &str, check: &Check, limit: Duration) -> Result<String, StepError> {
        let started = Instant::now();
        let interval = check.interval.max(Duration::from_millis(200));
        let mut tries = 0;
        loop {
            tries += 1;
            match self.check_once(&check.kind, check.timeout) {
                Ok(out) => {
                    return Ok(format!(
                        "`{name}` passed after {tries} tries ({:.1}s): {out}",
                        started.elapsed().as_secs_f64()
                    ));
                }
                Err(e) if started.elapsed() + interval > limit => {
                    return Err(StepError::new(format!(
                        "`{name}` did not pass within {}s ({tries} tries); last: {e}",
                        limit.as_secs()
                    )));
                }
                Err(_) => std::thread::sleep(interval),
            }
        }
    }

    fn running_container(&self, service: &str) -> Result<ContainerInfo, String> {
        self.runtime
            .containers(&self.desired.name)
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|c| c.service == service && c.running())
            .max_by_key(|c| c.release)
            .ok_or_else(|| format!("`{service}` has no running container"))
    }

    /// One try of a check kind: its output, or why it failed.
    fn check_once(&self, kind: &CheckKind, timeout: Duration) -> Result<String, String> {
        match kind {
            CheckKind::Http {
                url,
                service,
                path,
                status,
                body_contains,
                body_regex,
            } => {
                let url = match (url, service) {
                    (Some(u), _) => u.clone(),
                    (None, Some(svc)) => {
                        let c = self.running_container(svc)?;
                        let port = self.desired.services.get(svc).and_then(|s| s.port);
                        let addr = c
                            .published
                            .iter()
                            .find(|(p, _)| port.is_none_or(|want| *p == want))
                            .map(|(_, a)| *a)
                            .ok_or_else(|| format!("`{svc}` publishes no port to check"))?;
                        format!("http://{addr}{}", path.as_deref().unwrap_or("/"))
                    }
                    (None, None) => return Err("an http check needs a url or a service".into()),
                };
                let (got, body) = self.probes.http_get(&url, timeout)?;
                let snippet: String = body.trim().chars().take(200).collect();
                if got != *status {
                    return Err(format!("GET {url} → {got} (want {status}): {snippet}"));
                }
                if let Some(want) = body_contains
                    && !body.contains(want.as_str())
                {
                    return Err(format!("GET {url} → {got}, body lacks {want:?}: {snippet}"));
                }
                if let Some(re) = body_regex {
                    let re = regex::Regex::new(re).map_err(|e| format!("bad body_regex: {e}"))?;
                    if !re.is_match(&body) {
                        return Err(format!(
                            "GET {url} → {got}, body does not match /{re}/: {snippet}"
                        ));
                    }
                }
                Ok(format!("GET {url} → {got}: {snippet}"))
            }
            CheckKind::Tcp { target } => {
                let addr = self.resolve_target(target)?;
                self.probes
                    .tcp_connect(addr, timeout)
                    .map(|()| format!("TCP {target} ({addr}): connected"))
                    .map_err(|e| format!("TCP {target} ({addr}): {e}"))
            }
            CheckKind::Sql {
                data,
                query,
                expect,
            } => {
                let got = self.sql_value(data, query)?;
                match (got, expect) {
                    (None, Some(want)) => Err(format!("`{query}` returned no row (want {want})")),
                    (Some(v), Some(want)) if v.trim() != want.trim() => {
                        Err(format!("`{query}` returned {v} (want {want})"))
                    }
                    (v, _) => Ok(format!("`{query}` → {}", v.as_deref().unwrap_or("no row"))),
                }
            }
            CheckKind::Exec {
                service,
                command,
                output_contains,
            } => {
                let (code, out) = self
                    .exec_in(service, command, Some(timeout))
                    .map_err(|e| e.message)?;
                if code != 0 {
                    return Err(format!(
                        "`{command}` in `{service}` exited {code}: {}",
                        tail(&out)
                    ));
                }
                if let Some(want) = output_contains
                    && !out.contains(want.as_str())
                {
                    return Err(format!(
                        "`{command}` in `{service}`: output lacks {want:?}: {}",
                        tail(&out)
                    ));
                }
                Ok(format!("`{command}` in `{service}`: {}", tail(&out)))
            }
            CheckKind::Command(command) => run_host(command, &self.desired.base_dir, timeout)
                .map_err(|e| {
                    if e.output.is_empty() {
                        e.message
                    } else {
                        format!("{}: {}", e.message, e.output)
                    }
                }),
            CheckKind::Logs {
                service,
                absent,
                present,
            } => {
                let c = self.running_container(service)?;
                // Since the container started: its whole log, bounded.
                let logs = self
                    .runtime
                    .logs_tail(&c.id, 20_000)
                    .map_err(|e| e.to_string())?;
                if let Some(bad) = absent
                    && let Some(line) = logs.lines().find(|l| l.contains(bad.as_str()))
                {
                    return Err(format!("`{service}` logged {bad:?}: {}", line.trim()));
                }
                if let Some(good) = present
                    && !logs.contains(good.as_str())
                {
                    return Err(format!("`{service}` has not logged {good:?} yet"));
                }
                Ok(format!("logs of `{service}` ({}) look right", c.name))
            }
            CheckKind::ContainerHealth { service } => {
                let c = self.running_container(service)?;
                match c.health.as_deref() {
                    Some("healthy") => Ok(format!("{} is healthy", c.name)),
                    Some(h) => Err(format!("{} is {h}", c.name)),
                    None => Err(format!("{} has no Docker health check", c.name)),
                }
            }
        }
    }

    /// `host:port`; a service name as host means its published port (or its address on
    /// the stack network).
    fn resolve_target(&self, target: &str) -> Result<SocketAddr, String> {
        if let Ok(a) = target.parse::<SocketAddr>() {
            return Ok(a);
        }
        let (host, port) = target
            .rsplit_once(':')
            .ok_or_else(|| format!("`{target}` is not host:port"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| format!("bad port in `{target}`"))?;
        if self.desired.services.contains_key(host) {
            let c = self.running_container(host)?;
            if let Some((_, a)) = c.published.iter().find(|(p, _)| *p == port) {
                return Ok(*a);
            }
            let ip = self
                .runtime
                .address_on_network(&c.id, &self.desired.name)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("`{host}` has no address on the stack network"))?;
            return Ok(SocketAddr::new(ip, port));
        }
        std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
            .map_err(|e| format!("cannot resolve `{host}`: {e}"))?
            .next()
            .ok_or_else(|| format!("`{host}` resolves to nothing"))
    }

    fn exec_in(
        &self,
        service: &str,
        command: &Command,
        timeout: Option<Duration>,
    ) -> Result<(i64, String), StepError> {
        let c = self.running_container(service).map_err(StepError::new)?;
        let argv = command.argv();
        self.runtime
            .exec(&c.id, &argv, timeout)
            .map_err(|e| StepError::new(format!("`{command}` in `{service}`: {e}")))
    }

    fn sql_value(&self, data: &str, query: &str) -> Result<Option<String>, String> {
        let ds = self
            .desired
            .data
            .get(data)
            .ok_or_else(|| format!("data set `{data}` is not in the stack"))?;
        match &ds.kind {
            DataKind::Postgres { url, database, .. } => {
                let url = url.expose().ok_or("the admin URL is not available here")?;
                self.probes.postgres_value(url, database, query)
            }
            DataKind::Sqlite { path } => {
                cutover_data::sqlite::schema_version(std::path::Path::new(path), query)
                    .map_err(|e| e.to_string())
            }
            _ => Err(format!("`{data}` is not a database")),
        }
    }

    fn sql_execute(&self, data: &str, query: &str) -> Result<String, StepError> {
        let ds = self
            .desired
            .data
            .get(data)
            .ok_or_else(|| StepError::new(format!("data set `{data}` is not in the stack")))?;
        match &ds.kind {
            DataKind::Postgres { url, database, .. } => {
                let url = url
                    .expose()
                    .ok_or_else(|| StepError::new("the admin URL is not available here"))?;
                self.probes
                    .postgres_execute(url, database, query)
                    .map_err(StepError::new)?;
            }
            DataKind::Sqlite { path } => {
                cutover_data::sqlite::execute(std::path::Path::new(path), query)
                    .map_err(|e| StepError::new(e.to_string()))?;
            }
            _ => return Err(StepError::new(format!("`{data}` is not a database"))),
        }
        Ok(format!("ran on `{data}`: {query}"))
    }
}

/// Runs a host command (argv; a string through `/bin/sh -c`), bounded by `timeout`.
/// Runs `command` on this host in `dir` (the stack file's directory; the current one when
/// empty, for a stack read back from a release).
pub(crate) fn run_host(
    command: &Command,
    dir: &Path,
    timeout: Duration,
) -> Result<String, StepError> {
    let argv = command.argv();
    let Some((program, args)) = argv.split_first() else {
        return Err(StepError::new("an empty command"));
    };
    let mut process = Process::new(program);
    if !dir.as_os_str().is_empty() {
        process.current_dir(dir);
    }
    let mut child = process
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| StepError::new(format!("cannot run `{command}`: {e}")))?;
    // Read both pipes on threads so a chatty command cannot block on a full pipe.
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(o) = out.as_mut() {
            let _ = o.read_to_string(&mut s);
        }
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(e) = err.as_mut() {
            let _ = e.read_to_string(&mut s);
        }
        s
    });
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(StepError::new(format!(
                    "`{command}` did not finish within {}s and was killed",
                    timeout.as_secs()
                )));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(StepError::new(format!("`{command}`: {e}"))),
        }
    };
    let output = format!(
        "{}{}",
        out_t.join().unwrap_or_default(),
        err_t.join().unwrap_or_default()
    );
    if status.success() {
        Ok(tail(&output))
    } else {
        Err(StepError {
            message: format!("`{command}` failed ({status})"),
            output: tail(&output),
        })
    }
}

#[cfg(test)]
mod tests;
