//! `cutover apply`, `rollback` and `upgrade-service`: plan, confirm, take the lease, record
//! the release, run the procedure through the engine, revert on failure.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use anyhow::{Context, anyhow};
use cutover_core::engine::{self, Outcome};
use cutover_core::plan::{self, Observed, Plan, Resolved, render};
use cutover_core::spec::{Stack, Strategy};
use cutover_core::traffic::NoProxy;
use cutover_docker::Runtime;
use cutover_ops::conclude::{Concluding, Ending};
use cutover_ops::containers::Containers;
use cutover_ops::data::Data;
use cutover_ops::record::{OperationContext, ReleaseImages};
use cutover_ops::rollback::TargetError;
use cutover_store::{Holder, Store};
use indexmap::IndexMap;

use crate::cli::{Cli, ConfirmArgs, DataChoice, OutputFormat};
use crate::commands;
use crate::commands::lock::{refuse_if_unfinished, take_lock};
use crate::exit::{self, with_code};
use crate::output;
use crate::runner::Runner;
use crate::traffic;
use cutover_ops::journal::StoreJournal;

pub fn run(
    cli: &Cli,
    sets: &[String],
    confirm: &ConfirmArgs,
    ack_settings: bool,
) -> anyhow::Result<u8> {
    run_from(cli, sets, confirm, ack_settings, None)
}

/// `apply`, recording where the change came from (`source_json`: a git commit `watch`
/// applies) with the release.
pub fn run_from(
    cli: &Cli,
    sets: &[String],
    confirm: &ConfirmArgs,
    ack_settings: bool,
    source_json: Option<&str>,
) -> anyhow::Result<u8> {
    let loaded = commands::load(cli, sets)?;
    refuse_missing_secrets(&loaded.missing_secrets)?;
    let store = commands::open_store(cli, &loaded.stack.name)?;
    let seen = refuse_if_unfinished(&store)?;
    let mut observed = commands::observed(&store)?;
    let rt = commands::tokio()?;
    let docker = commands::connect(&rt)?;
    observed.adoptable = commands::adoptable(&rt, &docker, &loaded.stack, &observed)?;
    let resolved = resolve(
        &rt,
        &docker,
        &loaded.stack,
        &observed,
        &IndexMap::new(),
        true,
    )?;
    promotion_gate(cli, &loaded.stack, &observed, &resolved)?;
    let plan = plan::plan(&loaded.stack, &observed, &resolved);
    operate(
        cli,
        Op {
            kind: "apply",
            store: &store,
            rt: &rt,
            docker: &docker,
            desired: &loaded.stack,
            observed: &observed,
            plan,
            pins: IndexMap::new(),
            confirm,
            record_release: true,
            ack_settings,
            from_dump: false,
            seen,
            source_json,
        },
    )
}

/// `cutover rollback [REV]`: deploy a recorded release again, with the exact image IDs it
/// ran, as a new release (like Helm). `--data keep` leaves the data as it is (refused when
/// its schema is one the release's images cannot read); `--data restore` puts back the
/// restore point taken when the stack moved on from that release.
pub fn rollback(
    cli: &Cli,
    revision: Option<u64>,
    data: DataChoice,
    from_dump: bool,
    sets: &[String],
    confirm: &ConfirmArgs,
) -> anyhow::Result<u8> {
    let loaded = commands::load(cli, &[])?;
    refuse_missing_secrets(&loaded.missing_secrets)?;
    let name = loaded.stack.name.clone();
    let store = commands::open_store(cli, &name)?;
    let seen = refuse_if_unfinished(&store)?;
    let observed = commands::observed(&store)?;
    let rel =
        cutover_ops::rollback::target(&store, observed.release, revision).map_err(|e| match e {
            TargetError::Store(e) => anyhow::Error::from(e),
            other => with_code(exit::INVALID, anyhow!(other)),
        })?;
    let target = rel.revision;
    let mut desired: Stack = serde_json::from_str(&rel.spec_json)
        .with_context(|| format!("release {target} has an unreadable spec"))?;
    let missing = desired.rebind_secrets(&loaded.stack);
    if !missing.is_empty() {
        return Err(with_code(
            exit::INVALID,
            anyhow!(
                "release {target} uses secrets the stack file no longer declares: {}; nothing was changed",
                missing.join(", ")
            ),
        ));
    }
    for set in sets {
        desired.correct(set).map_err(|e| {
            with_code(
                exit::INVALID,
                anyhow!("--set {set}: {e}; nothing was changed"),
            )
        })?;
    }
    let pins = ReleaseImages::of_release(target, &rel.images_json)?.ids();
    let confirm = &ConfirmArgs {
        yes: confirm.yes,
        reason: Some(
            confirm
                .reason
                .clone()
                .unwrap_or_else(|| format!("rollback to release {target}")),
        ),
    };
    let rt = commands::tokio()?;
    let docker = commands::connect(&rt)?;
    let resolved = resolve(&rt, &docker, &desired, &observed, &pins, false)?;
    let mut plan = plan::plan(&desired, &observed, &resolved);
    plan.drop_migrations();
    let rps = cutover_data::manifest::RestorePoints::new(&commands::state_dir(cli));
    let choice = match data {
        DataChoice::Restore => cutover_ops::rollback::DataChoice::Restore,
        DataChoice::Keep => cutover_ops::rollback::DataChoice::Keep,
    };
    cutover_ops::rollback::plan_data(&mut plan, &desired, &rps, target, choice).map_err(
        |e| match e {
            cutover_ops::rollback::DataError::RestorePoints(e) => anyhow::Error::from(e),
            other => with_code(exit::INVALID, anyhow!(other)),
        },
    )?;
    operate(
        cli,
        Op {
            kind: "rollback",
            store: &store,
            rt: &rt,
            docker: &docker,
            desired: &desired,
            observed: &observed,
            plan,
            pins,
            confirm,
            record_release: true,
            // The release ran with these settings on these images before.
            ack_settings: true,
            from_dump,
            seen,
            source_json: None,
        },
    )
}

/// `cutover upgrade-service NAME`: the pending part of the live release, for one
/// `strategy: manual` service. Recreates it on the image the release recorded; reverts to
/// the container it ran on failure.
pub fn upgrade_service(cli: &Cli, service: &str, confirm: &ConfirmArgs) -> anyhow::Result<u8> {
    let loaded = commands::load(cli, &[])?;
    refuse_missing_secrets(&loaded.missing_secrets)?;
    let store = commands::open_store(cli, &loaded.stack.name)?;
    let seen = refuse_if_unfinished(&store)?;
    let observed = commands::observed(&store)?;
    let (Some(current), Some(live)) = (observed.release, observed.stack.as_ref()) else {
        return Err(with_code(
            exit::INVALID,
            anyhow!("stack `{}` has no deployed release", loaded.stack.name),
        ));
    };
    let Some(svc) = live.services.get(service) else {
        return Err(with_code(
            exit::INVALID,
            anyhow!("release {current} has no service `{service}`"),
        ));
    };
    if svc.strategy != Strategy::Manual {
        return Err(with_code(
            exit::INVALID,
            anyhow!(
                "`{service}` uses strategy {}: `cutover apply` upgrades it; upgrade-service is for strategy manual",
                svc.strategy.as_str()
            ),
        ));
    }
    let images = match store.release(current)? {
        Some(r) => ReleaseImages::of_release(current, &r.images_json)?,
        None => ReleaseImages::default(),
    };
    let Some(want) = images.0.get(service).cloned() else {
        return Err(with_code(
            exit::INVALID,
            anyhow!("release {current} recorded no image for `{service}`"),
        ));
    };
    let rt = commands::tokio()?;
    let docker = commands::connect(&rt)?;
    let running = rt.block_on(docker.containers(&loaded.stack.name))?;
    if running
        .iter()
        .any(|c| c.service == service && c.running() && c.image_id == want.id)
    {
        output::print(&format!(
            "`{service}` already runs {} ({}): nothing to do\n",
            want.reference, want.id
        ))?;
        return Ok(exit::OK);
    }
    let mut desired = live.clone();
    let missing = desired.rebind_secrets(&loaded.stack);
    if !missing.is_empty() {
        return Err(with_code(
            exit::INVALID,
            anyhow!(
                "release {current} uses secrets the stack file no longer declares: {}",
                missing.join(", ")
            ),
        ));
    }
    let plan = plan::upgrade_service(&desired, current, service, &want.reference);
    let pins = IndexMap::from([(service.to_string(), want.id.clone())]);
    operate(
        cli,
        Op {
            kind: "upgrade-service",
            store: &store,
            rt: &rt,
            docker: &docker,
            desired: &desired,
            observed: &observed,
            plan,
            pins,
            confirm,
            record_release: false,
            ack_settings: false,
            from_dump: false,
            seen,
            source_json: None,
        },
    )
}

fn refuse_missing_secrets(missing: &[(String, String)]) -> anyhow::Result<()> {
    if missing.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = missing
        .iter()
        .map(|(n, why)| format!("`{n}` ({why})"))
        .collect();
    Err(with_code(
        exit::INVALID,
        anyhow!(
            "secrets not available: {}; nothing was changed",
            list.join(", ")
        ),
    ))
}

/// The image IDs the desired services would run, for those whose image is already here
/// (the plan shows them; `EnsureImage` pulls the rest in preflight).
/// What the engine knows of the desired images: their IDs, and the settings review of the
/// operators' configuration files against the defaults the old and new images ship.
/// How many image inspections `resolve` has in flight at once.
const INSPECT_AT_ONCE: usize = 16;

pub fn resolve(
    rt: &tokio::runtime::Runtime,
    docker: &Runtime,
    stack: &Stack,
    observed: &Observed,
    pins: &IndexMap<String, String>,
    pull_for_review: bool,
) -> anyhow::Result<Resolved> {
    // Every service's image, asked of the engine a few at a time: one inspection each, in
    // sequence, was most of a large stack's plan time (200 services: ~50 of ~75 ms).
    use futures_util::{StreamExt, TryStreamExt};
    let found: Vec<(String, Option<String>)> = rt.block_on(
        futures_util::stream::iter(&stack.services)
            .map(|(name, svc)| async move {
                let reference = pins.get(name).unwrap_or(&svc.image);
                let info = match docker.inspect_image(reference).await? {
                    // The settings review reads the new image: one not here yet is pulled
                    // now, as preflight would, rather than reviewed never.
                    None if pull_for_review && !svc.config_files.is_empty() => {
                        Some(docker.ensure_image(reference).await?)
                    }
                    other => other,
                };
                Ok::<_, cutover_docker::RuntimeError>((name.clone(), info.map(|i| i.id)))
            })
            .buffered(INSPECT_AT_ONCE)
            .try_collect(),
    )?;
    let image_ids: IndexMap<String, String> = found
        .into_iter()
        .filter_map(|(name, id)| id.map(|id| (name, id)))
        .collect();
    let settings = crate::settings::review_files(rt, docker, stack, observed, &image_ids)?;
    let runtime = commands::runtime_for(rt, docker, stack)?;
    Ok(Resolved {
        image_ids,
        settings,
        data: crate::backends::copy_estimates(rt, &runtime, stack),
    })
}

struct Op<'a> {
    kind: &'a str,
    store: &'a Store,
    rt: &'a tokio::runtime::Runtime,
    docker: &'a Runtime,
    desired: &'a Stack,
    observed: &'a Observed,
    plan: Plan,
    pins: IndexMap<String, String>,
    confirm: &'a ConfirmArgs,
    /// Make a new release (apply, rollback); `upgrade-service` completes the live one.
    record_release: bool,
    /// Settings the new images no longer accept are acknowledged.
    ack_settings: bool,
    /// PostgreSQL data comes back from dumps (`rollback --from-dump`).
    from_dump: bool,
    /// The newest operation when the plan was made: another one since makes it stale.
    seen: Option<u64>,
    /// Where the change came from (a git commit, as JSON), recorded with the release.
    source_json: Option<&'a str>,
}

fn operate(cli: &Cli, mut op: Op<'_>) -> anyhow::Result<u8> {
    if !op.plan.changes {
        output::print(&format!(
            "stack `{}`: nothing to do, release {} already runs what was asked\n",
            op.plan.stack,
            op.plan.from_release.unwrap_or(0)
        ))?;
        return Ok(exit::OK);
    }
    if op.record_release {
        op.plan.to_release = commands::next_revision(op.store)?;
    }
    if op.desired.protected {
        // A protected stack changes only with --yes and a second person's approval.
        if !op.confirm.yes {
            return Err(with_code(
                exit::INVALID,
                anyhow!(
                    "stack `{}` is protected: {} needs --yes, and then waits for a second person's `cutover approve`; nothing was changed",
                    op.desired.name,
                    op.kind
                ),
            ));
        }
        cutover_ops::approval::require_approval(&mut op.plan, op.kind);
    }
    if cli.output == OutputFormat::Text {
        output::print(&render::text(&op.plan, output::color(cli)))?;
    }
    // A stack that routes traffic is upgraded through its proxy: without it, a switch or a
    // maintenance page would silently not happen.
    if op.desired.traffic.is_some() {
        let client =
            cutover_proxy::client::Client::new(&traffic::socket_path(&commands::state_dir(cli)));
        op.rt.block_on(client.state()).map_err(|e| {
            with_code(
                exit::INVALID,
                anyhow!(
                    "stack `{}` routes traffic through its proxy: {e}; nothing was changed",
                    op.desired.name
                ),
            )
        })?;
    }
    confirm_or_refuse(&op.plan, op.confirm, op.kind)?;

    let holder = Holder::current();
    let lock = take_lock(cli, op.store, &holder, op.kind, &op.plan.stack)?;
    // Another operation ran between the plan and the lock: what was reviewed is not what
    // would run.
    let newest = op.store.operations(1).map(|o| o.first().cloned());
    if let Ok(Some(newest)) = &newest
        && Some(newest.id) != op.seen
    {
        let _ = lock.release(op.store);
        return Err(with_code(
            exit::LOCKED,
            anyhow!(
                "stack `{}` changed while this plan was made: operation {} ({}, {}) ran meanwhile; nothing was changed; plan again",
                op.plan.stack,
                newest.id,
                newest.kind,
                newest.status.as_str()
            ),
        ));
    }
    // Test hook (the `test-hooks` feature only): hold the lease for a while, so a test can
    // race a second apply against it.
    #[cfg(feature = "test-hooks")]
    if let Some(ms) = std::env::var("CUTOVER_TEST_HOLD_LEASE_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        std::thread::sleep(Duration::from_millis(ms));
    }
    let result = run_locked(cli, &op, &holder, lock.token());
    // The outcome matters more than the lease: a lease that cannot be released expires.
    if let Err(e) = lock.release(op.store) {
        eprintln!(
            "cutover: could not release the lease ({e}); it expires in {}s",
            cutover_ops::lock::LEASE_TTL.as_secs()
        );
    }
    result
}

fn run_locked(cli: &Cli, op: &Op<'_>, holder: &Holder, lease: &str) -> anyhow::Result<u8> {
    // Before anything is recorded: a maintenance page that cannot be read is bad input.
    let traffic = traffic_for(cli, op.rt, op.desired, &op.plan, op.plan.to_release)?;
    // The revert target: what runs now. Stopped containers of older releases are not.
    let runtime = commands::runtime_for(op.rt, op.docker, op.desired)?;
    let before: Vec<_> =
        cutover_core::runtime::ContainerRuntime::containers(&runtime, &op.desired.name)
            .map_err(|e| anyhow!("{e}"))?
            .into_iter()
            .filter(|c| c.running())
            .collect();
    let begun = cutover_ops::operation::begin(
        op.store,
        holder,
        cutover_ops::operation::Begin {
            kind: op.kind,
            plan: &op.plan,
            desired: op.desired,
            previous: op.observed.stack.as_ref(),
            from_release: op.observed.release,
            record_release: op.record_release,
            reason: op.confirm.reason.as_deref(),
            source_json: op.source_json,
            pins: &op.pins,
            ack_settings: op.ack_settings,
            from_dump: op.from_dump,
            before,
        },
    )
    .context("cannot record the operation; nothing was changed")?;
    let (operation, release, context) = (begun.operation, begun.release, begun.context);
    let host = crate::host::Host { rt: op.rt };
    let backends = crate::backends::Local {
        rt: op.rt,
        runtime: &runtime,
        stack: &context.desired,
    };
    let mut runner = runner(
        cli,
        &runtime,
        &backends,
        &host,
        op.store,
        &context,
        operation,
        ReleaseImages::default(),
        traffic,
    );
    let mut progress = crate::progress::Progress::new(cli.output == OutputFormat::Json);
    let mut journal = StoreJournal {
        store: op.store,
        operation,
        observer: &mut progress,
        lease: Some(lease.to_string()),
    };
    eprintln!(
        "{} {} of stack `{}` (operation {}):",
        op.kind,
        if op.record_release {
            format!("release {release}")
        } else {
            format!("within release {release}")
        },
        op.desired.name,
        operation
    );
    let redactor = crate::output::redactor();
    let outcome = engine::execute(
        &op.plan,
        &mut engine::Redacting {
            inner: &mut runner,
            redactor: &redactor,
        },
        &mut journal,
    );
    let code = conclude(
        cli,
        op.store,
        &Concluding {
            kind: op.kind,
            operation,
            release,
            record_release: op.record_release,
            from_release: op.observed.release,
        },
        &outcome,
        &runner.containers.images,
    )?;
    if outcome == engine::Outcome::Succeeded && op.record_release {
        durable_copies(cli, op.desired, release);
        retain_restore_points(cli, op.desired, release);
    }
    Ok(code)
}

/// `promote_from`: every image this apply changes must have run, verified, in the other
/// environment for its soak time (`cutover_ops::promotion`). Refused before anything runs.
fn promotion_gate(
    cli: &Cli,
    stack: &Stack,
    observed: &Observed,
    resolved: &cutover_core::plan::Resolved,
) -> anyhow::Result<()> {
    let Some(p) = &stack.promote_from else {
        return Ok(());
    };
    let refuse = |why: String| {
        with_code(
            exit::INVALID,
            anyhow!(
                "promotion gate (promote_from: {}): {why}; nothing was changed",
                p.environment
            ),
        )
    };
    let mut wanted = IndexMap::new();
    for (service, svc) in &stack.services {
        let Some(id) = resolved.image_ids.get(service) else {
            return Err(refuse(format!(
                "the image {} of `{service}` is not on this engine, so its ID cannot be compared",
                svc.image
            )));
        };
        if observed.image_ids.get(service) != Some(id) {
            wanted.insert(service.clone(), id.clone());
        }
    }
    if wanted.is_empty() {
        return Ok(());
    }
    // The other environment's stack name: this stack file with its overlay.
    let mut other = cli.clone();
    other.environment = Some(p.environment.clone());
    let name = commands::load(&other, &[])
        .map_err(|e| {
            refuse(format!(
                "cannot read environment `{}`: {e:#}",
                p.environment
            ))
        })?
        .stack
        .name;
    if !cutover_store::Store::exists(&p.state_dir) {
        return Err(refuse(format!(
            "{} holds no state of `{}`",
            p.state_dir.display(),
            p.environment
        )));
    }
    let source = cutover_store::Store::open(&p.state_dir, &name)
        .with_context(|| format!("cannot open the state in {}", p.state_dir.display()))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    match cutover_ops::promotion::check(&source, &p.environment, &wanted, p.soak, now)? {
        Ok(said) => {
            eprintln!("promotion gate: {said}");
            Ok(())
        }
        Err(why) => Err(refuse(why)),
    }
}

/// After a successful release, outside the window: the durable archive of each snapshot
/// restore point whose data set asks for one (`durable: true`). A failure is said and
/// changes nothing of the outcome: the snapshot is still there.
fn durable_copies(cli: &Cli, stack: &Stack, release: u64) {
    let rps = cutover_data::manifest::RestorePoints::new(&commands::state_dir(cli));
    let Ok(all) = rps.list() else { return };
    for mut m in all
        .into_iter()
        .filter(|m| m.release == release && stack.data.get(&m.data).is_some_and(|d| d.durable))
    {
        match crate::backends::archive_snapshot(&rps, &mut m) {
            Ok(Some(what)) => eprintln!("durable copy: {what}"),
            Ok(None) => {}
            Err(e) => eprintln!(
                "durable copy of `{}` failed ({}); its snapshot is the only copy: `cutover restore-points dump` tries again",
                m.data, e.message
            ),
        }
    }
}

/// After a successful release: the restore points of all but the newest
/// `restore_points.keep` releases go, with what their reverts set aside. A failure here is
/// said and changes nothing of the outcome: the release is deployed.
fn retain_restore_points(cli: &Cli, stack: &Stack, live: u64) {
    let keep = stack.keep_restore_points;
    if keep == 0 {
        return;
    }
    let rps = cutover_data::manifest::RestorePoints::new(&commands::state_dir(cli));
    match crate::commands::restore_points::prune_report(cli, &rps, keep, Some(live), false) {
        Ok(report) => {
            for line in report.lines().filter(|l| !l.starts_with("nothing")) {
                eprintln!("retention (restore_points.keep: {keep}): {line}");
            }
        }
        Err(e) => eprintln!(
            "cutover: release {live} is deployed, but pruning old restore points failed: {e:#}; `cutover restore-points prune` tries again"
        ),
    }
}

/// The executor of one operation: its step families over the runtime, the data and the
/// store, as the operation's recorded context describes it.
#[allow(clippy::too_many_arguments)]
pub fn runner<'a>(
    cli: &Cli,
    runtime: &'a dyn cutover_core::runtime::ContainerRuntime,
    backends: &'a dyn cutover_ops::data::Backends,
    host: &'a crate::host::Host<'a>,
    store: &'a Store,
    ctx: &'a OperationContext,
    operation: u64,
    images: ReleaseImages,
    traffic: Box<dyn cutover_core::traffic::TrafficSwitch + 'a>,
) -> Runner<'a> {
    Runner {
        containers: Containers {
            runtime,
            desired: &ctx.desired,
            previous: ctx.previous.as_ref(),
            release: ctx.release,
            from_release: ctx.from_release,
            pins: ctx.pins.clone(),
            images,
            before: ctx.before.clone(),
            traffic,
            ack_settings: ctx.ack_settings,
            adopting: ctx.plan.adopting(),
        },
        data: Data {
            backends,
            desired: &ctx.desired,
            previous: ctx.previous.as_ref(),
            release: ctx.release,
            from_release: ctx.from_release,
            restore_points: cutover_data::manifest::RestorePoints::new(&commands::state_dir(cli)),
            from_dump: ctx.from_dump,
            space_needed: 0,
            // Said before a restore changes anything.
            notice: Box::new(|s: &str| eprintln!("  {}", crate::output::redact(s))),
        },
        checks: cutover_ops::checks::Checks {
            runtime,
            probes: host,
            operator: host,
            store,
            desired: &ctx.desired,
            operation,
        },
        store,
    }
}

/// Records how an operation ended and turns it into the summary and the exit code.
pub fn conclude(
    cli: &Cli,
    store: &Store,
    c: &Concluding<'_>,
    outcome: &Outcome,
    images: &ReleaseImages,
) -> anyhow::Result<u8> {
    let done = cutover_ops::conclude::conclude(store, c, outcome, images);
    let code = match done.ending {
        Ending::Succeeded => exit::OK,
        Ending::Refused => exit::INVALID,
        Ending::Reverted => exit::REVERTED,
        Ending::RevertFailed => exit::REVERT_FAILED,
        // Another process holds the stack now.
        Ending::Lost => exit::LOCKED,
    };
    let json = cli.output == OutputFormat::Json;
    if json {
        output::print(&format!(
            "{}\n",
            cutover_ops::shapes::finished(
                c.operation,
                c.kind,
                Some(c.release),
                done.status.as_str(),
                code,
                &done.summary,
            )
        ))?;
    }
    if code == exit::OK {
        if !json {
            output::print(&format!("{}\n", done.summary))?;
        }
        Ok(code)
    } else {
        Err(with_code(code, anyhow!(done.summary)))
    }
}

/// The traffic seam: the stack's proxy when it routes traffic, else none.
pub fn traffic_for<'a>(
    cli: &Cli,
    rt: &'a tokio::runtime::Runtime,
    desired: &Stack,
    plan: &Plan,
    release: u64,
) -> anyhow::Result<Box<dyn cutover_core::traffic::TrafficSwitch + 'a>> {
    let Some(t) = &desired.traffic else {
        return Ok(Box::new(NoProxy));
    };
    // The expected window: the longest downtime the plan announces.
    let window = plan
        .services
        .iter()
        .filter_map(|c| c.downtime.max_seconds)
        .max()
        .map_or(Duration::from_secs(60), Duration::from_secs);
    let until =
        humantime::format_rfc3339_seconds(std::time::SystemTime::now() + window).to_string();
    let page = traffic::page(
        desired,
        &format!("{} is being upgraded to release {release}.", desired.name),
        &until,
        window,
    )
    .map_err(|e| with_code(exit::INVALID, anyhow!("{e}")))?;
    Ok(Box::new(traffic::ProxyTraffic {
        rt,
        client: cutover_proxy::client::Client::new(&traffic::socket_path(&commands::state_dir(
            cli,
        ))),
        max_hold: t.max_hold,
        page,
    }))
}

/// Asks on a terminal; without one, `--yes` is required.
pub fn confirm_or_refuse(plan: &Plan, confirm: &ConfirmArgs, verb: &str) -> anyhow::Result<()> {
    if confirm.yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(with_code(
            exit::INVALID,
            anyhow!("not on a terminal: pass --yes to {verb} without confirmation"),
        ));
    }
    eprint!(
        "{verb} release {} of stack `{}`? [y/N] ",
        plan.to_release, plan.stack
    );
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
        Ok(())
    } else {
        Err(with_code(
            exit::INVALID,
            anyhow!("{verb} cancelled; nothing was changed"),
        ))
    }
}
