//! `cutover watch --git REPO`: each new commit of the branch is planned and applied through
//! the same path as `apply`, the release recording the commit. A release that is reverted
//! (or refused, or fails) pauses the watch until `--ack`; with `watch: { git_revert: true }`
//! the commit is also reverted in git and the revert pushed, so the branch says again what
//! runs.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow};
use cutover_watch::git::{Checkout, Source};
use cutover_watch::state::{Pause, WatchState};

use crate::cli::{Cli, ConfirmArgs};
use crate::commands::{self, apply};
use crate::exit::{self, with_code};
use crate::output;

pub struct Args {
    pub repository: String,
    pub branch: String,
    pub path: PathBuf,
    pub once: bool,
    pub ack: bool,
    pub interval: Duration,
}

pub fn run(cli: &Cli, args: &Args) -> anyhow::Result<u8> {
    let Some(state_dir) = cli.state_dir.clone() else {
        return Err(with_code(
            exit::INVALID,
            anyhow!(
                "watch needs --state-dir (or CUTOVER_STATE_DIR): it keeps the stack's state, its clone of the repository and its own state there"
            ),
        ));
    };
    let state_path = state_dir.join("watch").join("state.json");
    if args.ack {
        return ack(&state_path);
    }
    let checkout = Checkout::open(
        Source {
            repository: args.repository.clone(),
            branch: args.branch.clone(),
            path: args.path.clone(),
        },
        &state_dir.join("watch").join("repo"),
    )?;
    loop {
        let code = pass(cli, &state_dir, &state_path, &checkout)?;
        if args.once {
            return Ok(code);
        }
        std::thread::sleep(args.interval);
    }
}

fn ack(state_path: &std::path::Path) -> anyhow::Result<u8> {
    let mut state = WatchState::load(state_path)?;
    match state.paused.take() {
        Some(p) => {
            state.save(state_path)?;
            output::print(&format!(
                "acknowledged: the watch applies new commits again (it was paused since {} by commit {} \"{}\": {})\n",
                p.since,
                cutover_watch::short(&p.commit),
                p.subject,
                p.reason
            ))?;
        }
        None => output::print("the watch is not paused\n")?,
    }
    Ok(exit::OK)
}

/// One pass: fetch, and apply the branch's tip when it is new and the watch is not paused.
fn pass(
    cli: &Cli,
    state_dir: &std::path::Path,
    state_path: &std::path::Path,
    checkout: &Checkout,
) -> anyhow::Result<u8> {
    let head = checkout.sync()?;
    let mut state = WatchState::load(state_path)?;
    if let Some(p) = &state.paused {
        output::print(&format!(
            "paused since {} by commit {} \"{}\" ({}); {} waits: `cutover watch --ack` resumes\n",
            p.since,
            cutover_watch::short(&p.commit),
            p.subject,
            p.reason,
            if state.last_commit.as_deref() == Some(head.commit.as_str()) {
                "nothing new".to_string()
            } else {
                head.describe()
            }
        ))?;
        return Ok(exit::OK);
    }
    if state.last_commit.as_deref() == Some(head.commit.as_str()) {
        output::print(&format!("up to date: {} was applied\n", head.describe()))?;
        return Ok(exit::OK);
    }
    eprintln!("watch: applying {}", head.describe());
    let mut sub = cli.clone();
    sub.file = checkout.stack_file();
    sub.state_dir = Some(state_dir.to_path_buf());
    let source_json = serde_json::to_string(&head)?;
    let confirm = ConfirmArgs {
        yes: true,
        reason: Some(format!("cutover watch: {}", head.describe())),
    };
    let result = apply::run_from(&sub, &[], &confirm, false, Some(&source_json));
    state.last_commit = Some(head.commit.clone());
    let (code, reason) = match &result {
        Ok(code) if *code == exit::OK => {
            state.save(state_path)?;
            return Ok(exit::OK);
        }
        Ok(code) if *code == exit::REVERTED => (*code, "its release was reverted".to_string()),
        Ok(code) => (*code, format!("its release failed (exit {code})")),
        Err(e) => (exit::code_of(e), format!("it was refused: {e:#}")),
    };
    let mut pause = Pause {
        commit: head.commit.clone(),
        subject: head.subject.clone(),
        reason,
        since: cutover_store::format_millis(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        ),
        revert_commit: None,
    };
    if code == exit::REVERTED && git_revert_asked(&sub) {
        match checkout.revert(
            &head.commit,
            "cutover watch: the release made from it was reverted (images and data).",
        ) {
            Ok(r) => {
                eprintln!("watch: pushed {}", r.describe());
                pause.revert_commit = Some(r.commit);
            }
            Err(e) => eprintln!("watch: the commit could not be reverted in git: {e}"),
        }
    }
    eprintln!(
        "watch: paused: commit {} \"{}\": {}; `cutover watch --ack` resumes",
        cutover_watch::short(&pause.commit),
        pause.subject,
        pause.reason
    );
    state.paused = Some(pause);
    state.save(state_path)?;
    result
}

/// Whether the stack file of the commit asks for a `git revert` of a reverted release.
fn git_revert_asked(cli: &Cli) -> bool {
    commands::load(cli, &[])
        .context("cannot read the stack file")
        .is_ok_and(|l| l.stack.watch_git_revert)
}
