//! `cutover resume` and `cutover abort`: finish an operation that was interrupted (cutover
//! itself crashed or was killed), or stop one — continuing from its journal when that is
//! safe, reverting when it is not.
//!
//! The operation's plan and revert target were recorded before its first step; the journal
//! says which steps finished. A step that started and never finished runs again (steps are
//! idempotent) unless it is marked unsafe to re-run, in which case the operation reverts.

use anyhow::{Context as _, anyhow};
use cutover_core::engine::{self, Failure, Journaled, Resume};
use cutover_core::spec::Phase;
use cutover_store::{Holder, OperationStatus, StepStatus, StoreError};

use crate::cli::{Cli, OutputFormat};
use crate::commands::apply::{self, Concluding, LEASE_TTL, OperationContext};
use crate::commands::{self};
use crate::exit::{self, with_code};
use crate::output;
use crate::runner::{ReleaseImages, Runner, StoreJournal};

pub fn run(cli: &Cli, abort: bool) -> anyhow::Result<u8> {
    let loaded = commands::load(cli, &[])?;
    let name = loaded.stack.name.clone();
    let store = commands::open_store(cli, &name)?;
    // An interrupted operation, or the last one if its revert failed (its cause fixed
    // since, `resume` finishes the revert).
    let op = match store.unfinished_operations()?.into_iter().next() {
        Some(op) => op,
        None => match store
            .operations(1)?
            .into_iter()
            .next()
            .filter(|op| op.status == cutover_store::OperationStatus::RevertFailed)
        {
            Some(op) => {
                store.reopen_operation(op.id)?;
                eprintln!(
                    "operation {} ({}) ended with a failed revert: running its revert again",
                    op.id, op.kind
                );
                op
            }
            None => {
                output::print(&format!("stack `{name}`: no interrupted operation\n"))?;
                return Ok(exit::OK);
            }
        },
    };
    let holder = Holder::current();
    let grant = match store.acquire_lease(
        &holder,
        if abort { "abort" } else { "resume" },
        LEASE_TTL,
    ) {
        Ok(g) => g,
        // Its process is alive: an abort asks it to stop at its next step.
        Err(StoreError::LeaseHeld { .. }) if abort => {
            let who = format!("{}@{}", holder.user, holder.host);
            if store.request_abort(op.id, &who)? {
                output::print(&format!(
                    "asked operation {} ({}) to stop at its next step and revert; `cutover status` follows it\n",
                    op.id, op.kind
                ))?;
                return Ok(exit::OK);
            }
            return Err(with_code(
                exit::INVALID,
                anyhow!(
                    "operation {} cannot be asked to stop: it recorded no plan",
                    op.id
                ),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    // Renewed while it runs, released on every way out.
    let renewer = apply::renew_in_background(cli, &name, grant.lease.token.clone());
    let result = finish(cli, &store, &loaded.stack, &op, abort);
    drop(renewer);
    store.release_lease(&grant.lease.token)?;
    result
}

fn finish(
    cli: &Cli,
    store: &cutover_store::Store,
    current: &cutover_core::spec::Stack,
    op: &cutover_store::Operation,
    abort: bool,
) -> anyhow::Result<u8> {
    let Some(json) = store.operation_context(op.id)? else {
        // Interrupted before its plan was recorded: before its first step, nothing ran.
        store.finish_operation(
            op.id,
            OperationStatus::Aborted,
            Some("interrupted before its first step"),
        )?;
        if let Some(r) = op.release {
            let _ = store.set_release_status(r, cutover_store::ReleaseStatus::Failed);
        }
        output::print(&format!(
            "operation {} was interrupted before its first step: nothing had changed; closed\n",
            op.id
        ))?;
        return Ok(exit::OK);
    };
    let mut ctx: OperationContext =
        serde_json::from_str(&json).context("the operation's recorded context is unreadable")?;
    let missing = ctx.desired.rebind_secrets(current);
    if !missing.is_empty() {
        return Err(with_code(
            exit::INVALID,
            anyhow!(
                "operation {} needs secrets the stack file no longer declares: {}",
                op.id,
                missing.join(", ")
            ),
        ));
    }
    if let Some(prev) = ctx.previous.as_mut() {
        let _ = prev.rebind_secrets(current);
    }
    let journaled: Vec<Journaled> = store
        .journal(op.id)?
        .into_iter()
        .map(|r| Journaled {
            finished_ok: match r.status {
                StepStatus::Succeeded => Some(true),
                StepStatus::Failed => Some(false),
                _ => None,
            },
            error: (r.status == StepStatus::Failed).then(|| r.output_tail.clone()),
            step_id: r.step_id,
        })
        .collect();
    let at = if abort {
        let last = journaled
            .iter()
            .rev()
            .find_map(|j| ctx.plan.steps().find(|s| s.id == j.step_id))
            .map_or((String::from("abort"), Phase::Preflight), |s| {
                (s.id.clone(), s.phase)
            });
        Resume::Revert(Failure {
            step: last.0,
            phase: last.1,
            error: format!(
                "aborted by {}@{}",
                Holder::current().user,
                Holder::current().host
            ),
        })
    } else {
        engine::resume_point(&ctx.plan, &journaled)
    };
    let verb = match &at {
        Resume::Revert(_) => "reverting",
        _ => "continuing",
    };
    eprintln!(
        "{verb} operation {} ({} of release {}), interrupted; {} step(s) had finished",
        op.id,
        ctx.kind,
        ctx.release,
        journaled
            .iter()
            .filter(|j| j.finished_ok == Some(true))
            .count()
    );

    let rt = commands::tokio()?;
    let docker = commands::connect(&rt)?;
    let traffic = apply::traffic_for(cli, &rt, &ctx.desired, &ctx.plan, ctx.release)?;
    let images = store
        .release(ctx.release)?
        .map(|r| ReleaseImages::from_json(&r.images_json))
        .unwrap_or_default();
    let mut runner = Runner {
        rt: &rt,
        docker: &docker,
        store,
        desired: &ctx.desired,
        previous: ctx.previous.as_ref(),
        release: ctx.release,
        from_release: ctx.from_release,
        pins: ctx.pins.clone(),
        images,
        before: ctx.before.clone(),
        traffic,
        operation: op.id,
        ack_settings: ctx.ack_settings,
        from_dump: ctx.from_dump,
        restore_points: cutover_data::manifest::RestorePoints::new(&commands::state_dir(cli)),
        space_needed: 0,
        adopting: ctx.plan.adopting(),
    };
    let mut journal = StoreJournal::new(store, op.id, cli.output == OutputFormat::Json);
    let redactor = crate::output::redactor();
    let outcome = engine::resume(
        &ctx.plan,
        at,
        &mut engine::Redacting {
            inner: &mut runner,
            redactor: &redactor,
        },
        &mut journal,
    );
    apply::conclude(
        store,
        &Concluding {
            json: cli.output == OutputFormat::Json,
            kind: &ctx.kind,
            operation: op.id,
            release: ctx.release,
            record_release: ctx.record_release,
            from_release: ctx.from_release,
        },
        &outcome,
        &runner.images,
    )
}
