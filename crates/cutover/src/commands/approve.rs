//! `cutover approve [OP]`: a second person approves an operation waiting at an approval
//! step (or a protected stack's apply). The person who started it cannot.

use anyhow::anyhow;
use cutover_store::Holder;

use crate::cli::Cli;
use crate::commands;
use crate::exit::{self, with_code};
use crate::output;

pub fn run(cli: &Cli, operation: Option<u64>) -> anyhow::Result<u8> {
    let name = commands::stack_name(cli)?;
    let store = commands::open_store(cli, &name)?;
    let op = match operation {
        Some(id) => store.operation(id)?,
        None => store.unfinished_operations()?.into_iter().next(),
    };
    let Some(op) = op else {
        return Err(with_code(
            exit::INVALID,
            anyhow!("stack `{name}` has no operation waiting for an approval"),
        ));
    };
    let pending = store.pending_approvals(op.id)?;
    if pending.is_empty() {
        return Err(with_code(
            exit::INVALID,
            anyhow!("operation {} ({}) waits for no approval", op.id, op.kind),
        ));
    }
    let me = Holder::current();
    if me.user == op.holder.user {
        return Err(with_code(
            exit::INVALID,
            anyhow!(
                "{} started operation {}: a different person must approve it",
                me.user,
                op.id
            ),
        ));
    }
    let by = format!("{}@{}", me.user, me.host);
    let n = store.approve(op.id, &by)?;
    let texts: Vec<String> = pending.iter().map(|a| format!("`{}`", a.text)).collect();
    output::print(&format!(
        "approved by {by}: {} ({n} step(s) of operation {})\n",
        texts.join(", "),
        op.id
    ))?;
    Ok(exit::OK)
}
