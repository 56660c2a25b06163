//! `cutover plan`: the dry-run.

use cutover_core::plan::{self, Resolved, render};
use indexmap::IndexMap;

use crate::cli::{Cli, OutputFormat};
use crate::commands;
use crate::exit;
use crate::output;

pub fn run(cli: &Cli, sets: &[String]) -> anyhow::Result<u8> {
    let loaded = commands::load(cli, sets)?;
    let store = commands::open_store_if_present(cli, &loaded.stack.name)?;
    let mut observed = match &store {
        Some(store) => commands::observed(store)?,
        None => cutover_core::plan::Observed::default(),
    };
    // With the engine at hand the plan knows the image IDs and reviews the configuration
    // files; without it, it says what it can from the stack file alone.
    let rt = commands::tokio()?;
    let resolved = match rt.block_on(cutover_docker::Runtime::connect()) {
        Ok(docker) => {
            observed.adoptable = commands::adoptable(&rt, &docker, &loaded.stack, &observed)?;
            crate::commands::apply::resolve(
                &rt,
                &docker,
                &loaded.stack,
                &observed,
                &IndexMap::new(),
                false,
            )?
        }
        Err(e) => {
            if cli.output == OutputFormat::Text {
                eprintln!("cutover: the images were not inspected ({e})");
            }
            Resolved::default()
        }
    };
    let mut plan = plan::plan(&loaded.stack, &observed, &resolved);
    // Revisions are never reused: after a reverted or failed release the next one is not
    // the live one plus one. The number shown is the one an apply would make.
    if plan.changes {
        plan.to_release = match &store {
            Some(store) => commands::next_revision(store)?,
            None => 1,
        };
    }
    match cli.output {
        OutputFormat::Json => output::print_json(&plan)?,
        OutputFormat::Markdown => output::print(&render::markdown(&plan))?,
        OutputFormat::Text => output::print(&render::text(&plan, output::color(cli)))?,
    }
    Ok(exit::OK)
}
