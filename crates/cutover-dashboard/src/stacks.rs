//! The stacks the dashboard serves, what their stores say, and the `cutover` commands it
//! runs for them.
//!
//! Reads (releases, operations, the journal, approvals, the lease) come from each stack's
//! store directly. Every change — apply, rollback, maintenance, abort, resume, a plan — is
//! the `cutover` binary run as a child process with the person's name as its actor
//! (`CUTOVER_ACTOR`): the same code path, lock and journal as at the terminal, and an
//! operation that outlives the dashboard (its own process group; its output goes to a log in
//! the dashboard's home, not to a pipe that would close).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cutover_store::{Operation, Store};

/// One stack: its name, stack file and state dir.
#[derive(Debug)]
pub struct StackRef {
    pub name: String,
    pub file: PathBuf,
    pub state_dir: PathBuf,
    /// Whether `state_dir` was given (passed on to the commands) or is the default.
    pub explicit_state_dir: bool,
    store: Mutex<Option<Store>>,
}

impl StackRef {
    pub fn new(name: String, file: PathBuf, state_dir: Option<PathBuf>) -> StackRef {
        let explicit_state_dir = state_dir.is_some();
        let state_dir = state_dir.unwrap_or_else(|| {
            file.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .join(".cutover")
        });
        StackRef {
            name,
            file,
            state_dir,
            explicit_state_dir,
            store: Mutex::new(None),
        }
    }

    /// Runs `f` on the stack's store; `None` while the stack has no state yet (nothing is
    /// created by reading).
    pub fn with_store<T>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, cutover_store::StoreError>,
    ) -> Result<Option<T>, String> {
        let mut guard = self.store.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            if !Store::exists(&self.state_dir) {
                return Ok(None);
            }
            *guard = Some(Store::open(&self.state_dir, &self.name).map_err(|e| e.to_string())?);
        }
        match guard.as_ref() {
            Some(store) => f(store).map(Some).map_err(|e| e.to_string()),
            None => Ok(None),
        }
    }
}

/// What a short command said.
#[derive(Debug)]
pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn ok(&self) -> bool {
        self.code == 0
    }
    /// What to show when it did not succeed: its own error lines.
    pub fn message(&self) -> String {
        let text = if self.stderr.trim().is_empty() {
            &self.stdout
        } else {
            &self.stderr
        };
        text.trim().to_string()
    }
}

/// A long command started in the background.
#[derive(Debug)]
pub enum Started {
    /// Its operation, recorded in the store, and the command's exit code once it ends.
    Operation {
        id: u64,
        exit: tokio::sync::oneshot::Receiver<i32>,
    },
    /// It ended before it began an operation (an invalid stack, a held lock): the exit
    /// code and what it said.
    Ended { code: i32, message: String },
}

/// The exit codes of `cutover` (docs: the exit-code table), as words for the audit log.
pub fn exit_meaning(code: i32) -> &'static str {
    match code {
        0 => "succeeded",
        1 => "reverted",
        2 => "refused",
        3 => "revert failed",
        4 => "locked",
        _ => "failed",
    }
}

/// The `cutover` binary, run for the stacks.
pub struct Cutover {
    pub program: PathBuf,
    /// The environment overlay (`--env`) every command gets.
    pub environment: Option<String>,
    /// Where a background command's output is kept (in the dashboard's home).
    pub runs_dir: PathBuf,
}

impl Cutover {
    fn command(&self, stack: &StackRef, args: &[String], actor: &str) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.arg("-f").arg(&stack.file).arg("--color").arg("never");
        if stack.explicit_state_dir {
            cmd.arg("--state-dir").arg(&stack.state_dir);
        }
        if let Some(env) = &self.environment {
            cmd.arg("--env").arg(env);
        }
        cmd.args(args)
            .env("CUTOVER_ACTOR", actor)
            .stdin(Stdio::null())
            // Not the dashboard's terminal's: a Ctrl-C there must not stop an upgrade.
            .process_group(0);
        cmd
    }

    /// Runs a short command (plan, status, restore points, maintenance) to its end, within
    /// `limit`.
    pub async fn run(
        &self,
        stack: &StackRef,
        args: &[String],
        actor: &str,
        limit: Duration,
    ) -> Result<Ran, String> {
        let mut cmd = self.command(stack, args, actor);
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.program.display()))?;
        let out = tokio::time::timeout(limit, child.wait_with_output())
            .await
            .map_err(|_| {
                format!(
                    "`cutover {}` did not finish within {}s",
                    args.join(" "),
                    limit.as_secs()
                )
            })?
            .map_err(|e| format!("`cutover {}`: {e}", args.join(" ")))?;
        Ok(Ran {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Starts a long command (apply, rollback, resume, abort) in the background and returns
    /// once its operation is in the store — found by the child's pid, which the operation
    /// records as its holder — or once it ended without one.
    pub async fn start(
        &self,
        stack: &StackRef,
        args: &[String],
        actor: &str,
    ) -> Result<Started, String> {
        std::fs::create_dir_all(&self.runs_dir)
            .map_err(|e| format!("cannot create {}: {e}", self.runs_dir.display()))?;
        let log_path = self.runs_dir.join(format!(
            "{}-{}-{}.log",
            stack.name,
            args.first().map(String::as_str).unwrap_or("run"),
            jiff::Timestamp::now().as_millisecond()
        ));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
        let err_log = log
            .try_clone()
            .map_err(|e| format!("cannot use {}: {e}", log_path.display()))?;
        let mut cmd = self.command(stack, args, actor);
        cmd.stdout(Stdio::from(log)).stderr(Stdio::from(err_log));
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.program.display()))?;
        let pid = child.id().unwrap_or(0);
        let operation_of_child = || {
            stack
                .with_store(|s| s.operations(20))
                .ok()
                .flatten()
                .and_then(|ops| ops.into_iter().find(|o: &Operation| o.holder.pid == pid))
                .map(|o| o.id)
        };
        let begun = Instant::now();
        let (tx, exit) = tokio::sync::oneshot::channel();
        let id = loop {
            if let Some(id) = operation_of_child() {
                break id;
            }
            match child.try_wait() {
                Ok(Some(status)) => {
                    let code = status.code().unwrap_or(-1);
                    // One more look: it may have begun and ended between two polls.
                    if let Some(id) = operation_of_child() {
                        let _ = tx.send(code);
                        return Ok(Started::Operation { id, exit });
                    }
                    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
                    return Ok(Started::Ended {
                        code,
                        message: tail(&text, 3000),
                    });
                }
                Ok(None) => {}
                Err(e) => return Err(format!("cannot wait for `cutover {}`: {e}", args[0])),
            }
            if begun.elapsed() > Duration::from_secs(300) {
                // Left to run (and reaped when it ends): it may still begin; its output
                // says what it does.
                tokio::spawn(async move {
                    let _ = child.wait().await;
                });
                return Ok(Started::Ended {
                    code: -1,
                    message: format!(
                        "`cutover {}` (pid {pid}) began no operation within 5 minutes; its \
                         output is in {}",
                        args.join(" "),
                        log_path.display()
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(40)).await;
        };
        tokio::spawn(async move {
            let code = child.wait().await.ok().and_then(|s| s.code()).unwrap_or(-1);
            let _ = tx.send(code);
        });
        Ok(Started::Operation { id, exit })
    }
}

fn tail(text: &str, max: usize) -> String {
    let t = text.trim();
    if t.len() <= max {
        return t.to_string();
    }
    let mut start = t.len() - max;
    while !t.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &t[start..])
}
