//! Verbs whose machinery lands with later work: they check what they can and say so plainly.

use anyhow::anyhow;

use crate::cli::Cli;
use crate::commands;
use crate::exit::{self, with_code};

pub fn resume(cli: &Cli) -> anyhow::Result<u8> {
    let name = commands::stack_name(cli)?;
    let store = commands::open_store(cli, &name)?;
    let ops = store.unfinished_operations()?;
    if ops.is_empty() {
        println!("stack `{name}`: no interrupted operation");
        return Ok(exit::OK);
    }
    Err(with_code(
        exit::INVALID,
        anyhow!(
            "{} interrupted operation(s) found; resuming them is the runbook engine's job (issue #6)",
            ops.len()
        ),
    ))
}

pub fn abort(cli: &Cli) -> anyhow::Result<u8> {
    let name = commands::stack_name(cli)?;
    let store = commands::open_store(cli, &name)?;
    if store.current_lease()?.is_none() {
        println!("stack `{name}`: no operation is running");
        return Ok(exit::OK);
    }
    Err(with_code(
        exit::INVALID,
        anyhow!("abort signals the running engine at a step boundary (issue #6); not built yet"),
    ))
}
