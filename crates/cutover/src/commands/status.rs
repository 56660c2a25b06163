//! `cutover status`: the live release, the lease and unfinished operations, from the store.

use serde_json::json;

use crate::cli::{Cli, OutputFormat};
use crate::commands::{self, when};
use crate::exit;
use crate::output;

pub fn run(cli: &Cli) -> anyhow::Result<u8> {
    let name = commands::stack_name(cli)?;
    let store = commands::open_store(cli, &name)?;
    let current = store.current_release()?;
    let lease = store.current_lease()?;
    let unfinished = store.unfinished_operations()?;
    if cli.output == OutputFormat::Json {
        output::print_json(&json!({
            "stack": name,
            "release": current,
            "lease": lease,
            "unfinished_operations": unfinished,
        }))?;
        return Ok(exit::OK);
    }
    let mut out = format!("stack `{name}`\n");
    match &current {
        None => out.push_str("  release   none deployed yet\n"),
        Some(r) => {
            out.push_str(&format!(
                "  release   {} (deployed {} by {}@{})\n",
                r.revision,
                when(r.updated_at),
                r.created_by,
                r.host
            ));
            let obs = commands::observed_from(r)?;
            if let Some(stack) = &obs.stack {
                for (svc, s) in &stack.services {
                    let id = obs
                        .image_ids
                        .get(svc)
                        .map(|i| format!(" ({})", &i[..i.len().min(19)]))
                        .unwrap_or_default();
                    out.push_str(&format!(
                        "  {svc:<9} {}{id}  {}\n",
                        s.image,
                        s.strategy.as_str()
                    ));
                }
            }
        }
    }
    match &lease {
        None => out.push_str("  lease     free\n"),
        Some(l) => out.push_str(&format!(
            "  lease     held by {}@{} (pid {}) for `{}` since {}, expires {}\n",
            l.holder.user,
            l.holder.host,
            l.holder.pid,
            l.operation,
            when(l.acquired_at),
            when(l.expires_at)
        )),
    }
    for op in &unfinished {
        out.push_str(&format!(
            "  unfinished operation {} ({}) started {} by {}@{}: run `cutover resume`\n",
            op.id,
            op.kind,
            when(op.started_at),
            op.holder.user,
            op.holder.host
        ));
    }
    output::print(&out)?;
    Ok(exit::OK)
}
