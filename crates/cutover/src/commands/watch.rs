//! `cutover watch --git REPO`: each new commit of the branch is planned and applied through
//! the same path as `apply`, the release recording the commit. A release that is reverted
//! (or refused, or fails) pauses the watch until `--ack`; with `watch: { git_revert: true }`
//! the commit is also reverted in git and the revert pushed, so the branch says again what
//! runs.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow};
use cutover_core::spec::{Stack, WebhookFormat};
use cutover_watch::git::{Checkout, Source};
use cutover_watch::notify::{self, Event, FailedStep, Notice};
use cutover_watch::state::{Pause, WatchState};

use crate::cli::{Cli, ConfirmArgs};
use crate::commands::{self, apply};
use crate::exit::{self, with_code};
use crate::output;

pub struct Args {
    pub repository: Option<String>,
    pub images: bool,
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
    if args.images && args.repository.is_none() {
        loop {
            let code = images_pass(cli, &state_path)?;
            if args.once {
                return Ok(code);
            }
            std::thread::sleep(args.interval);
        }
    }
    let Some(repository) = args.repository.clone() else {
        return Err(with_code(
            exit::INVALID,
            anyhow!("watch needs --git REPO or --images"),
        ));
    };
    let checkout = Checkout::open(
        Source {
            repository,
            branch: args.branch.clone(),
            path: args.path.clone(),
        },
        &state_dir.join("watch").join("repo"),
    )?;
    loop {
        let code = pass(cli, &state_dir, &state_path, &checkout, args.images)?;
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

/// One pass of `--images`: the newest tag each service's `update` policy allows, newer than
/// the live release's; applied together as one upgrade (`--set SERVICE.image=…`). A revert
/// pauses the watch and the tags it tried are never picked again.
fn images_pass(cli: &Cli, state_path: &std::path::Path) -> anyhow::Result<u8> {
    let mut state = WatchState::load(state_path)?;
    if let Some(p) = &state.paused {
        output::print(&format!(
            "paused since {} by {} ({}); `cutover watch --ack` resumes\n",
            p.since, p.commit, p.reason
        ))?;
        return Ok(exit::OK);
    }
    let loaded = commands::load(cli, &[])?;
    let updates = image_updates(cli, &loaded.stack, &state)?;
    let sets: Vec<String> = updates
        .iter()
        .filter(|u| !u.digest)
        .map(|u| format!("{}.image={}", u.service, u.to))
        .collect();
    if updates.is_empty() {
        for line in drift(cli, &loaded.stack.name) {
            eprintln!("watch: drift: {line}");
        }
        output::print("up to date: no service's policy allows a newer tag\n")?;
        return Ok(exit::OK);
    }
    let said = updates
        .iter()
        .map(|u| format!("{}={}", u.service, u.to))
        .collect::<Vec<_>>()
        .join(", ");
    eprintln!("watch: applying {said}");
    let source = serde_json::json!({ "kind": "images", "updates": updates }).to_string();
    let confirm = ConfirmArgs {
        yes: true,
        reason: Some(format!("cutover watch --images: {said}")),
    };
    let result = apply::run_from(cli, &sets, &confirm, false, Some(&source));
    match &result {
        Ok(code) if *code == exit::OK => return Ok(exit::OK),
        _ => {}
    }
    let reason = match &result {
        Ok(code) if *code == exit::REVERTED => "its release was reverted".to_string(),
        Ok(code) => format!("its release failed (exit {code})"),
        Err(e) => format!("it was refused: {e:#}"),
    };
    state
        .rejected
        .extend(updates.iter().map(|u| format!("{}={}", u.service, u.to)));
    state.paused = Some(Pause {
        commit: said.clone(),
        subject: "image update".into(),
        reason,
        since: now_rfc3339(),
        revert_commit: None,
    });
    state.save(state_path)?;
    eprintln!(
        "watch: paused: {said}; `cutover watch --ack` resumes (these tags are not tried again)"
    );
    result
}

/// Image automation with a git source: the newest tags the services' policies allow,
/// written into the stack file (each image reference replaced where it is written, once)
/// and committed on the branch. `None` when there is nothing to move.
fn commit_image_updates(
    cli: &Cli,
    stack: &Stack,
    checkout: &Checkout,
    state: &WatchState,
) -> anyhow::Result<Option<cutover_watch::Commit>> {
    let (updates, floating): (Vec<_>, Vec<_>) = image_updates(cli, stack, state)?
        .into_iter()
        .partition(|u| !u.digest);
    for u in &floating {
        eprintln!(
            "watch: `{}`: {} names a new image; a git source does not change for it: pin the digest in the stack file",
            u.service, u.to
        );
    }
    if updates.is_empty() {
        return Ok(None);
    }
    let mut text = std::fs::read_to_string(&cli.file)
        .with_context(|| format!("cannot read {}", cli.file.display()))?;
    for u in &updates {
        match text.matches(u.from.as_str()).count() {
            1 => text = text.replacen(u.from.as_str(), &u.to, 1),
            0 => {
                return Err(anyhow!(
                    "`{}`: {} is not written as such in {} (built from variables?): write {} there by hand",
                    u.service,
                    u.from,
                    cli.file.display(),
                    u.to
                ));
            }
            n => {
                return Err(anyhow!(
                    "`{}`: {} is written {n} times in {}: which to change is not clear; write {} by hand",
                    u.service,
                    u.from,
                    cli.file.display(),
                    u.to
                ));
            }
        }
    }
    let subject = updates
        .iter()
        .map(|u| format!("{} to {}", u.service, u.to))
        .collect::<Vec<_>>()
        .join(", ");
    let message = format!(
        "Update {subject}\n\nThe newest tag{} the `update` polic{} allow{}, found by cutover watch.\n",
        if updates.len() == 1 { "" } else { "s" },
        if updates.len() == 1 { "y" } else { "ies" },
        if updates.len() == 1 { "s" } else { "" },
    );
    Ok(Some(checkout.commit_stack_file(&text, &message)?))
}

/// A tag an `update` policy moves a service to.
#[derive(serde::Serialize)]
struct ImageUpdate {
    service: String,
    from: String,
    to: String,
    /// A floating tag that names a new image (the reference stays; `to` ends `@digest`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    digest: bool,
}

/// The newest tag each service's `update` policy allows, newer than what the live release
/// runs (the stack file's, before a first release), leaving out tags already rejected.
fn image_updates(
    cli: &Cli,
    stack: &cutover_core::spec::Stack,
    state: &WatchState,
) -> anyhow::Result<Vec<ImageUpdate>> {
    use cutover_watch::images::{Policy, pick, split_tag, tags};
    let live = commands::open_store_if_present(cli, &stack.name)?
        .map(|s| commands::observed(&s))
        .transpose()?
        .and_then(|o| o.stack);
    let rt = commands::tokio()?;
    let mut updates = Vec::new();
    for (name, svc) in &stack.services {
        let Some(policy) = &svc.update else { continue };
        let current = live
            .as_ref()
            .and_then(|l| l.services.get(name))
            .map_or(svc.image.as_str(), |s| s.image.as_str());
        let policy = match policy {
            cutover_core::spec::UpdatePolicy::Semver(r) => Policy::semver(r),
            cutover_core::spec::UpdatePolicy::Regex(r) => Policy::regex(r),
            cutover_core::spec::UpdatePolicy::Digest => {
                updates.extend(moved_digest(&rt, name, current, state)?);
                continue;
            }
        }
        .map_err(|e| with_code(exit::INVALID, anyhow!("`{name}`: update: {e}")))?;
        let Some((repo, tag)) = split_tag(current) else {
            eprintln!("watch: `{name}` runs {current}, which has no tag to move: skipped");
            continue;
        };
        let (credentials, loopback) = registry_access(current);
        let found = rt
            .block_on(tags(repo, credentials, loopback, Duration::from_secs(30)))
            .map_err(|e| anyhow!("`{name}`: {e}"))?;
        let allowed: Vec<String> = found
            .into_iter()
            .filter(|t| !state.rejected.contains(&format!("{name}={repo}:{t}")))
            .collect();
        if let Some(new) = pick(&policy, tag, &allowed) {
            updates.push(ImageUpdate {
                service: name.clone(),
                from: current.to_string(),
                to: format!("{repo}:{new}"),
                digest: false,
            });
        }
    }
    Ok(updates)
}

/// How to reach the registry of `image`: the credentials `docker login` stored for it, and
/// whether it is on loopback (plain HTTP, as the engine itself allows there).
fn registry_access(image: &str) -> (Option<(String, String)>, bool) {
    let registry = cutover_docker::registry_of(image);
    let loopback = registry.starts_with("127.") || registry.starts_with("localhost");
    let credentials =
        cutover_docker::credentials_for(image).and_then(|c| Some((c.username?, c.password?)));
    (credentials, loopback)
}

/// `update: { digest: true }`: whether the registry serves another image under the tag
/// `current` than the one this engine has; if so it is pulled, and is the update.
fn moved_digest(
    rt: &tokio::runtime::Runtime,
    name: &str,
    current: &str,
    state: &WatchState,
) -> anyhow::Result<Option<ImageUpdate>> {
    let (credentials, loopback) = registry_access(current);
    let now = rt
        .block_on(cutover_watch::images::digest(
            current,
            credentials,
            loopback,
            Duration::from_secs(30),
        ))
        .map_err(|e| anyhow!("`{name}`: {e}"))?;
    if state.rejected.contains(&format!("{name}={current}@{now}")) {
        return Ok(None);
    }
    let docker = commands::connect(rt)?;
    let have = rt.block_on(docker.inspect_image(current))?;
    let digests: Vec<&str> = have
        .iter()
        .flat_map(|i| i.repo_digests.iter())
        .filter_map(|d| d.split_once('@').map(|(_, d)| d))
        .collect();
    if digests.contains(&now.as_str()) {
        return Ok(None);
    }
    let had = digests.first().map(|d| d.to_string());
    rt.block_on(docker.pull_image(current))?;
    Ok(Some(ImageUpdate {
        service: name.to_string(),
        from: format!("{current}@{}", had.unwrap_or_else(|| "?".into())),
        to: format!("{current}@{now}"),
        digest: true,
    }))
}

/// Services whose running containers differ from the live release: another image, or none
/// running. Said, not put back: a person decides.
fn drift(cli: &Cli, stack: &str) -> Vec<String> {
    let Ok(Some(store)) = commands::open_store_if_present(cli, stack) else {
        return Vec::new();
    };
    let Ok(observed) = commands::observed(&store) else {
        return Vec::new();
    };
    let (Ok(rt), Some(release)) = (commands::tokio(), observed.release) else {
        return Vec::new();
    };
    let Ok(docker) = rt.block_on(cutover_docker::Runtime::connect()) else {
        return Vec::new();
    };
    let Ok(containers) = rt.block_on(docker.containers(stack)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (service, id) in &observed.image_ids {
        let running: Vec<_> = containers
            .iter()
            .filter(|c| &c.service == service && c.running())
            .collect();
        if running.is_empty() {
            out.push(format!(
                "`{service}` has no running container (release {release} runs one)"
            ));
        }
        for c in running.iter().filter(|c| &c.image_id != id) {
            out.push(format!(
                "`{service}` runs {} in {}, release {release} says {}",
                cutover_core::runtime::short_id(&c.image_id),
                c.name,
                cutover_core::runtime::short_id(id)
            ));
        }
    }
    out
}

/// The command line for the stack file of the watch's checkout, with the watch's state dir.
fn stack_cli(cli: &Cli, state_dir: &std::path::Path, checkout: &Checkout) -> Cli {
    let mut sub = cli.clone();
    sub.file = checkout.stack_file();
    sub.state_dir = Some(state_dir.to_path_buf());
    sub
}

/// One pass: fetch, and apply the branch's tip when it is new and the watch is not paused.
fn pass(
    cli: &Cli,
    state_dir: &std::path::Path,
    state_path: &std::path::Path,
    checkout: &Checkout,
    images: bool,
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
        let sub = stack_cli(cli, state_dir, checkout);
        let loaded = commands::load(&sub, &[])?;
        if images && let Some(commit) = commit_image_updates(&sub, &loaded.stack, checkout, &state)?
        {
            // Git stays the truth: the new tag is a commit, which this pass goes on to apply.
            eprintln!("watch: pushed {}", commit.describe());
            return pass(cli, state_dir, state_path, checkout, false);
        }
        for line in drift(&sub, &loaded.stack.name) {
            eprintln!("watch: drift: {line}");
        }
        output::print(&format!("up to date: {} was applied\n", head.describe()))?;
        return Ok(exit::OK);
    }
    let sub = stack_cli(cli, state_dir, checkout);
    // Read once for the pass. A stack file that does not load goes on to `apply`, which
    // says why and is refused, and the watch pauses on it like on any refusal.
    let loaded = commands::load(&sub, &[]).ok();
    let stack = loaded.as_ref().map(|l| &l.stack);
    let hooks = Hooks::of(&sub, stack, &head);
    if let Some(opens) = stack.map(closed_until).transpose()?.flatten() {
        let said = format!(
            "{} waits for its maintenance window, which opens at {opens}",
            head.describe()
        );
        if state.announced.as_deref() != Some(head.commit.as_str()) {
            // Announced once per commit, with the plan, ahead of its window.
            let plan = stack.and_then(|s| checklist(&sub, s));
            hooks.send(Event::Planned, None, said.clone(), plan, None);
            state.announced = Some(head.commit.clone());
            state.save(state_path)?;
        }
        output::print(&format!("{said}\n"))?;
        return Ok(exit::OK);
    }
    eprintln!("watch: applying {}", head.describe());
    hooks.send(
        Event::Planned,
        None,
        "a new commit is planned".into(),
        stack.and_then(|s| checklist(&sub, s)),
        None,
    );
    hooks.send(Event::Started, None, "applying it".into(), None, None);
    let source_json = serde_json::to_string(&head)?;
    let confirm = ConfirmArgs {
        yes: true,
        reason: Some(format!("cutover watch: {}", head.describe())),
    };
    let result = apply::run_from(&sub, &[], &confirm, false, Some(&source_json));
    state.last_commit = Some(head.commit.clone());
    let (release, failed) = hooks.outcome(&sub);
    let (code, reason) = match &result {
        Ok(code) if *code == exit::OK => {
            state.save(state_path)?;
            hooks.send(
                Event::Succeeded,
                release,
                format!("release {} runs it", release.unwrap_or(0)),
                None,
                None,
            );
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
        since: now_rfc3339(),
        revert_commit: None,
    };
    hooks.send(
        if code == exit::REVERTED {
            Event::Reverted
        } else {
            Event::Failed
        },
        release,
        pause.reason.clone(),
        None,
        failed,
    );
    if code == exit::REVERTED && stack.is_some_and(|s| s.watch_git_revert) {
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
    hooks.send(
        Event::Paused,
        release,
        "later commits wait for `cutover watch --ack`".into(),
        None,
        None,
    );
    state.paused = Some(pause);
    state.save(state_path)?;
    result
}

/// The webhooks of the commit's stack file, and what they are told about.
struct Hooks {
    stack: String,
    hooks: Vec<cutover_core::spec::Webhook>,
    commit: cutover_watch::Commit,
    /// The newest operation before this pass: one after it is this pass's.
    op_before: Option<u64>,
}

impl Hooks {
    fn of(cli: &Cli, stack: Option<&Stack>, commit: &cutover_watch::Commit) -> Hooks {
        let (stack, hooks) = stack
            .map(|s| (s.name.clone(), s.webhooks.clone()))
            .unwrap_or_default();
        let op_before = commands::open_store_if_present(cli, &stack)
            .ok()
            .flatten()
            .and_then(|s| s.operations(1).ok())
            .and_then(|o| o.first().map(|o| o.id));
        Hooks {
            stack,
            hooks,
            commit: commit.clone(),
            op_before,
        }
    }

    /// The release the apply made and the step it failed at, from the store.
    fn outcome(&self, cli: &Cli) -> (Option<u64>, Option<FailedStep>) {
        let Ok(store) = commands::open_store(cli, &self.stack) else {
            return (None, None);
        };
        let Some(op) = store
            .operations(1)
            .ok()
            .and_then(|o| o.into_iter().next())
            .filter(|o| Some(o.id) > self.op_before)
        else {
            return (None, None);
        };
        let failed = store.journal(op.id).ok().and_then(|j| {
            commands::history::failed_step(&j).map(|s| FailedStep {
                id: s.step_id,
                output_tail: s.output_tail,
            })
        });
        (op.release, failed)
    }

    fn send(
        &self,
        event: Event,
        release: Option<u64>,
        summary: String,
        checklist: Option<String>,
        failed_step: Option<FailedStep>,
    ) {
        if self.hooks.is_empty() {
            return;
        }
        let notice = Notice {
            event,
            stack: self.stack.clone(),
            release,
            commit: self.commit.clone(),
            summary,
            checklist,
            failed_step,
            at: now_rfc3339(),
        };
        let Ok(rt) = commands::tokio() else { return };
        for hook in &self.hooks {
            let Some(url) = hook.url.expose() else {
                eprintln!(
                    "watch: webhook {} not sent: its secret is not set",
                    hook.url.shown()
                );
                continue;
            };
            let body = match hook.format {
                WebhookFormat::Json => notify::json_body(&notice),
                WebhookFormat::Slack => notify::slack_body(&notice),
            };
            let sent = rt.block_on(notify::post(url, hook.url.shown(), &body, WEBHOOK_TIMEOUT));
            match sent {
                Ok(status) if (200..300).contains(&status) => {}
                Ok(status) => eprintln!(
                    "watch: webhook {} answered {status} to `{event:?}`",
                    hook.url.shown()
                ),
                Err(e) => eprintln!("watch: webhook not sent: {e}"),
            }
        }
    }
}

/// A webhook gets this long to answer; the watch goes on either way.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

fn now_rfc3339() -> String {
    cutover_store::format_millis(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
    )
}

/// The plan of the commit's stack file as the markdown checklist, for `planned`.
fn checklist(cli: &Cli, stack: &Stack) -> Option<String> {
    let store = commands::open_store_if_present(cli, &stack.name).ok()?;
    let observed = match &store {
        Some(store) => commands::observed(store).ok()?,
        None => cutover_core::plan::Observed::default(),
    };
    let plan = cutover_core::plan::plan(stack, &observed, &cutover_core::plan::Resolved::default());
    Some(cutover_core::plan::render::markdown(&plan))
}

/// `Some(when it opens)` while the commit's stack file declares maintenance windows and none
/// is open now; `None` when the watch may apply.
fn closed_until(stack: &Stack) -> anyhow::Result<Option<String>> {
    let mut windows = Vec::new();
    for (i, w) in stack.watch_windows.iter().enumerate() {
        windows.push(
            cutover_watch::window::Window::parse(&w.days, &w.from, &w.to, &w.tz)
                .map_err(|e| with_code(exit::INVALID, anyhow!("watch.windows[{i}]: {e}")))?,
        );
    }
    let now = now_timestamp();
    if cutover_watch::window::open(&windows, now) {
        return Ok(None);
    }
    Ok(Some(
        cutover_watch::window::next_open(&windows, now)
            .map_or_else(|| "no time in the next two weeks".into(), |t| t.to_string()),
    ))
}

/// The clock the windows are read by. With the `test-hooks` feature,
/// `CUTOVER_TEST_NOW=<RFC 3339>` sets it.
fn now_timestamp() -> jiff::Timestamp {
    #[cfg(feature = "test-hooks")]
    if let Some(t) = std::env::var("CUTOVER_TEST_NOW")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return t;
    }
    jiff::Timestamp::now()
}
