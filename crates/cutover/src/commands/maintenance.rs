//! `cutover maintenance on|off|status`: the maintenance page by hand, through the proxy.

use std::time::Duration;

use anyhow::anyhow;

use crate::cli::{Cli, MaintenanceAction, OutputFormat};
use crate::commands;
use crate::exit::{self, with_code};
use crate::output;
use crate::traffic;

pub fn run(cli: &Cli, action: &MaintenanceAction) -> anyhow::Result<u8> {
    let loaded = commands::load(cli, &[])?;
    let client =
        cutover_proxy::client::Client::new(&traffic::socket_path(&commands::state_dir(cli)));
    let rt = commands::tokio()?;
    let unreachable =
        |e: cutover_proxy::client::ClientError| with_code(exit::INVALID, anyhow!("{e}"));
    match action {
        MaintenanceAction::On {
            message,
            service,
            retry_after,
        } => {
            let until =
                humantime::format_rfc3339_seconds(std::time::SystemTime::now() + *retry_after)
                    .to_string();
            let page = traffic::page(
                &loaded.stack,
                message
                    .as_deref()
                    .unwrap_or("We are upgrading. Back shortly."),
                &until,
                *retry_after,
            )
            .map_err(|e| with_code(exit::INVALID, anyhow!(e)))?;
            rt.block_on(client.maintenance(service.as_deref(), Some(page)))
                .map_err(unreachable)?;
            output::print(&format!(
                "maintenance page on for {}\n",
                service
                    .as_deref()
                    .map_or("every route".to_string(), |s| format!("`{s}`"))
            ))?;
        }
        MaintenanceAction::Off { service } => {
            rt.block_on(client.maintenance(service.as_deref(), None))
                .map_err(unreachable)?;
            output::print("maintenance page off\n")?;
        }
        MaintenanceAction::Status => {
            let state = rt.block_on(client.state()).map_err(unreachable)?;
            if cli.output == OutputFormat::Json {
                output::print_json(&state)?;
            } else {
                let mut out = String::new();
                // The stack-wide page answers for every route, whatever a service's own is.
                if state.maintenance.is_some() {
                    out.push_str("maintenance page on for every route\n");
                }
                for (svc, s) in &state.services {
                    out.push_str(&format!(
                        "{svc:<12} {:<12} {}{}\n",
                        if s.maintenance.is_some() || state.maintenance.is_some() {
                            "MAINTENANCE"
                        } else {
                            "serving"
                        },
                        s.upstreams
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", "),
                        if s.held { " (held)" } else { "" }
                    ));
                }
                output::print(&out)?;
            }
        }
    }
    let _ = Duration::ZERO;
    Ok(exit::OK)
}
