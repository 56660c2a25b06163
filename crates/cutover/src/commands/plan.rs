//! `cutover plan`: the dry-run.

use cutover_core::plan::{self, Resolved, render};

use crate::cli::{Cli, OutputFormat};
use crate::commands;
use crate::exit;
use crate::output;

pub fn run(cli: &Cli, sets: &[String]) -> anyhow::Result<u8> {
    let loaded = commands::load(cli, sets)?;
    let store = commands::open_store(cli, &loaded.stack.name)?;
    let observed = commands::observed(&store)?;
    let mut plan = plan::plan(&loaded.stack, &observed, &Resolved::default());
    // Revisions are never reused: after a reverted or failed release the next one is not
    // the live one plus one. The number shown is the one an apply would make.
    if plan.changes {
        plan.to_release = commands::next_revision(&store)?;
    }
    match cli.output {
        OutputFormat::Json => output::print_json(&plan)?,
        OutputFormat::Markdown => output::print(&render::markdown(&plan))?,
        OutputFormat::Text => output::print(&render::text(&plan, output::color(cli)))?,
    }
    Ok(exit::OK)
}
