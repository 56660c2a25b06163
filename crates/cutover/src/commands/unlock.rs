//! `cutover unlock`: remove a lease whose holder is gone.

use anyhow::anyhow;
use cutover_store::Holder;

use crate::cli::Cli;
use crate::commands::{self, when};
use crate::exit::{self, with_code};
use crate::output;

pub fn run(cli: &Cli, force: bool) -> anyhow::Result<u8> {
    let name = commands::stack_name(cli)?;
    let store = commands::open_store(cli, &name)?;
    let Some(lease) = store.current_lease()? else {
        output::print(&format!("stack `{name}`: the lease is free\n"))?;
        return Ok(exit::OK);
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let expired = lease.expires_at <= now;
    if !expired && !force {
        return Err(with_code(
            exit::LOCKED,
            anyhow!(
                "the lease of stack `{name}` is held by {}@{} (pid {}) for `{}` until {}; if that process is gone, `cutover unlock --force`",
                lease.holder.user,
                lease.holder.host,
                lease.holder.pid,
                lease.operation,
                when(lease.expires_at)
            ),
        ));
    }
    store.force_unlock(&Holder::current())?;
    output::print(&format!(
        "stack `{name}`: removed the lease of {}@{} (pid {}) for `{}`; recorded in the lease log\n",
        lease.holder.user, lease.holder.host, lease.holder.pid, lease.operation
    ))?;
    Ok(exit::OK)
}
