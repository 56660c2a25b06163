//! `cutover resume` and `cutover abort`: finish an operation that was interrupted (cutover
//! itself crashed or was killed), or stop one — continuing from its journal when that is
//! safe, reverting when it is not.
//!
//! Which operation, and from where, is the operations layer's decision
//! (`cutover_ops::resume`): only the newest unfinished one, and never one that later
//! operations overtook. The operation's plan and revert target were recorded before its
//! first step; the journal says which steps finished.

use anyhow::anyhow;
use cutover_core::engine::{self, Resume};
use cutover_ops::conclude::Concluding;
use cutover_ops::lock::Lock;
use cutover_ops::record::{OperationContext, ReleaseImages};
use cutover_ops::resume::Pick;
use cutover_store::{Holder, Operation, OperationStatus, ReleaseStatus, Store, StoreError};

use crate::cli::Cli;
use crate::commands::apply::{self};
use crate::commands::{self};
use crate::exit::{self, with_code};
use crate::output;
use cutover_ops::journal::StoreJournal;

pub fn run(cli: &Cli, abort: bool, yes: bool) -> anyhow::Result<u8> {
    let loaded = commands::load(cli, &[])?;
    let name = loaded.stack.name.clone();
    let store = commands::open_store(cli, &name)?;
    let holder = Holder::current();
    // The lease first: what to act on is decided by its holder only.
    let mut lock = match Lock::take_any(&store, &holder, if abort { "abort" } else { "resume" }) {
        Ok(l) => l,
        Err(StoreError::LeaseHeld { lease }) if abort => {
            return ask_to_stop(&store, &holder, &lease);
        }
        Err(e) => return Err(e.into()),
    };
    lock.renew_in_background(&commands::state_dir(cli), &name);
    let result: anyhow::Result<u8> = match cutover_ops::resume::pick(&store) {
        Err(e) => Err(e.into()),
        Ok(Pick::Nothing) => output::print(&format!("stack `{name}`: no interrupted operation\n"))
            .map(|()| exit::OK)
            .map_err(anyhow::Error::from),
        Ok(Pick::Overtaken { op, by }) => overtaken(&store, &op, &by, abort, yes),
        Ok(Pick::Interrupted(op)) => finish(
            cli,
            &store,
            &loaded.stack,
            &op,
            (abort, yes, false),
            lock.token(),
        ),
        Ok(Pick::RevertFailed(op)) => finish(
            cli,
            &store,
            &loaded.stack,
            &op,
            (abort, yes, true),
            lock.token(),
        ),
    };
    // The outcome matters more than the lease: a lease that cannot be released expires.
    if let Err(e) = lock.release(&store) {
        eprintln!("cutover: could not release the lease ({e}); it expires by itself");
    }
    result
}

/// `abort` while a live process holds the lease: asks its running operation to stop at its
/// next step boundary and revert.
fn ask_to_stop(store: &Store, holder: &Holder, lease: &cutover_store::Lease) -> anyhow::Result<u8> {
    let running = store
        .unfinished_operations()?
        .into_iter()
        .next()
        .filter(|op| op.holder == lease.holder);
    let Some(op) = running else {
        return Err(with_code(
            exit::LOCKED,
            anyhow!(
                "stack `{}` is locked by {} running `{}`, which is no operation that can be aborted; try again when it is done",
                store.stack(),
                lease.holder,
                lease.operation
            ),
        ));
    };
    let who = format!("{}@{}", holder.user, holder.host);
    if store.request_abort(op.id, &who)? {
        output::print(&format!(
            "asked operation {} ({}) to stop at its next step and revert; `cutover status` follows it\n",
            op.id, op.kind
        ))?;
        return Ok(exit::OK);
    }
    Err(with_code(
        exit::INVALID,
        anyhow!(
            "operation {} cannot be asked to stop: it recorded no plan",
            op.id
        ),
    ))
}

/// Without `--yes`, asks on a terminal; refuses without one.
fn ask(yes: bool, what: &str) -> anyhow::Result<()> {
    if yes {
        return Ok(());
    }
    if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        return Err(with_code(
            exit::INVALID,
            anyhow!("not on a terminal: pass --yes to {what}"),
        ));
    }
    eprint!("{what}? [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
        Ok(())
    } else {
        Err(with_code(
            exit::INVALID,
            anyhow!("cancelled; nothing was changed"),
        ))
    }
}

/// An unfinished operation that later ones overtook: finishing it would overwrite what they
/// did. `resume` refuses; `abort` closes it without acting.
fn overtaken(
    store: &Store,
    op: &Operation,
    by: &Operation,
    abort: bool,
    yes: bool,
) -> anyhow::Result<u8> {
    let what = format!(
        "operation {} ({}{}) was interrupted, and operation {} ({}, {}) ran after it",
        op.id,
        op.kind,
        op.release
            .map(|r| format!(" of release {r}"))
            .unwrap_or_default(),
        by.id,
        by.kind,
        by.status.as_str()
    );
    if !abort {
        return Err(with_code(
            exit::INVALID,
            anyhow!(
                "{what}: finishing it now would overwrite what ran since; nothing was changed. `cutover abort` closes it without changing the stack"
            ),
        ));
    }
    ask(yes, &format!("close operation {} without acting", op.id))?;
    (|| -> Result<(), StoreError> {
        store.finish_operation(
            op.id,
            OperationStatus::Aborted,
            Some(&format!(
                "overtaken by operation {}; closed without acting",
                by.id
            )),
        )?;
        if let Some(r) = op.release
            && store
                .release(r)?
                .is_some_and(|rel| rel.status == ReleaseStatus::Pending)
        {
            store.set_release_status(r, ReleaseStatus::Failed)?;
        }
        Ok(())
    })()?;
    output::print(&format!(
        "{what}: closed it without changing the stack (it runs what operation {} left)\n",
        by.id
    ))?;
    Ok(exit::OK)
}

fn finish(
    cli: &Cli,
    store: &Store,
    current: &cutover_core::spec::Stack,
    op: &Operation,
    // Abort rather than resume; asked with --yes; a failed revert to run again.
    (abort, yes, reopen): (bool, bool, bool),
    // The lease this process holds: once it is not the stack's any more, the engine stops.
    lease: &str,
) -> anyhow::Result<u8> {
    let Some(json) = store.operation_context(op.id)? else {
        // Interrupted before its plan was recorded: before its first step, nothing ran.
        store.finish_operation(
            op.id,
            OperationStatus::Aborted,
            Some("interrupted before its first step"),
        )?;
        // Only a release that operation was making: `upgrade-service` works within the
        // live one, which stays deployed.
        if let Some(r) = op.release
            && store
                .release(r)?
                .is_some_and(|rel| rel.status == ReleaseStatus::Pending)
        {
            let _ = store.set_release_status(r, ReleaseStatus::Failed);
        }
        output::print(&format!(
            "operation {} was interrupted before its first step: nothing had changed; closed\n",
            op.id
        ))?;
        return Ok(exit::OK);
    };
    let mut ctx = OperationContext::of_operation(op.id, &json)?;
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
    let journaled = cutover_ops::resume::journaled(store, op.id)?;
    let by = format!("{}@{}", Holder::current().user, Holder::current().host);
    let at = cutover_ops::resume::decide(&ctx.plan, &journaled, abort.then_some(by.as_str()));
    let verb = match &at {
        Resume::Revert(_) => "revert",
        _ => "continue",
    };
    let finished = journaled
        .iter()
        .filter(|j| j.finished_ok == Some(true))
        .count();
    ask(
        yes,
        &format!(
            "{verb} operation {} ({} of release {}){}",
            op.id,
            ctx.kind,
            ctx.release,
            if reopen {
                " again: its revert failed".to_string()
            } else {
                format!(", interrupted after {finished} finished step(s)")
            }
        ),
    )?;
    eprintln!(
        "{}ing operation {} ({} of release {}); {finished} step(s) had finished",
        verb.trim_end_matches('e'),
        op.id,
        ctx.kind,
        ctx.release,
    );

    let rt = commands::tokio()?;
    let docker = commands::connect(&rt)?;
    let runtime = commands::runtime_for(&rt, &docker, &ctx.desired)?;
    let traffic = apply::traffic_for(cli, &rt, &ctx.desired, &ctx.plan, ctx.release)?;
    let images = match store.release(ctx.release)? {
        Some(r) => ReleaseImages::of_release(ctx.release, &r.images_json)?,
        None => ReleaseImages::default(),
    };
    let host = crate::host::Host { rt: &rt };
    let backends = crate::backends::Local {
        rt: &rt,
        runtime: &runtime,
        stack: &ctx.desired,
    };
    if reopen {
        // Everything is in place: only now is the operation running again.
        store.reopen_operation(op.id)?;
    }
    let mut runner = apply::runner(
        cli, &runtime, &backends, &host, store, &ctx, op.id, images, traffic,
    );
    let mut progress = crate::progress::Progress::new(cli.output == crate::cli::OutputFormat::Json);
    let mut journal = StoreJournal {
        store,
        operation: op.id,
        observer: &mut progress,
        lease: Some(lease.to_string()),
    };
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
        cli,
        store,
        &Concluding {
            kind: &ctx.kind,
            operation: op.id,
            release: ctx.release,
            record_release: ctx.record_release,
            from_release: ctx.from_release,
        },
        &outcome,
        &runner.containers.images,
    )
}
