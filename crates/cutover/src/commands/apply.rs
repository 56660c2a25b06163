//! `cutover apply`: validate, plan, confirm, take the lease, run the procedure.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use anyhow::anyhow;
use cutover_core::plan::{self, Plan, Resolved, render};
use cutover_store::Holder;

use crate::cli::{Cli, ConfirmArgs, OutputFormat};
use crate::commands;
use crate::exit::{self, with_code};
use crate::output;

/// How long a lease lives without renewal. The engine renews it while it runs.
pub const LEASE_TTL: Duration = Duration::from_secs(60);

pub fn run(cli: &Cli, sets: &[String], confirm: &ConfirmArgs) -> anyhow::Result<u8> {
    let loaded = commands::load(cli, sets)?;
    if !loaded.missing_secrets.is_empty() {
        let list: Vec<String> = loaded
            .missing_secrets
            .iter()
            .map(|(n, why)| format!("`{n}` ({why})"))
            .collect();
        return Err(with_code(
            exit::INVALID,
            anyhow!(
                "secrets not available: {}; nothing was changed",
                list.join(", ")
            ),
        ));
    }
    let store = commands::open_store(cli, &loaded.stack.name)?;
    let observed = commands::observed(&store)?;
    let plan = plan::plan(&loaded.stack, &observed, &Resolved::default());
    if !plan.changes {
        output::print(&format!(
            "stack `{}`: nothing to do, release {} already runs what the stack file says\n",
            plan.stack,
            plan.from_release.unwrap_or(0)
        ))?;
        return Ok(exit::OK);
    }
    if cli.output == OutputFormat::Text {
        output::print(&render::text(&plan, output::color(cli)))?;
    }
    confirm_or_refuse(&plan, confirm, "apply")?;

    let holder = Holder::current();
    let grant = store.acquire_lease(&holder, "apply", LEASE_TTL)?;
    if let Some(old) = &grant.took_over {
        eprintln!(
            "cutover: took over a stale lease of {}@{} (pid {}), recorded in the lease log",
            old.holder.user, old.holder.host, old.holder.pid
        );
    }
    // Test hook: hold the lease for a while, so a test can race a second apply against it.
    if let Some(ms) = std::env::var("CUTOVER_TEST_HOLD_LEASE_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        std::thread::sleep(Duration::from_millis(ms));
    }
    let outcome = Err(with_code(
        exit::INVALID,
        anyhow!(
            "apply cannot change containers yet: the Docker runtime adapter is not built (issue #3); the lease was taken and released, nothing was changed"
        ),
    ));
    store.release_lease(&grant.lease.token)?;
    outcome
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
