//! The engine's traffic seam over the proxy that `cutover serve` runs for a stack.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cutover_core::spec::Stack;
use cutover_core::traffic::TrafficSwitch;
use cutover_proxy::client::Client;
use cutover_proxy::proxy::MaintenancePage;

/// Where `cutover serve` listens for control calls: beside the state.
pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join("proxy.sock")
}

/// How long an old upstream may take to finish what it is doing after a switch.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The page shown when the stack file names none. `{{message}}` and `{{until}}` are
/// filled in (escaped) by the proxy.
pub const DEFAULT_PAGE: &str = "<!doctype html>
<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Down for maintenance</title>
<style>body{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;color:#222}</style>
</head><body><h1>Down for maintenance</h1><p>{{message}}</p><p>Expected back: {{until}}.</p></body></html>
";

/// The maintenance page of a stack: its `traffic.maintenance_page` file, or the default.
pub fn page(
    stack: &Stack,
    message: &str,
    until: &str,
    retry_after: Duration,
) -> Result<MaintenancePage, String> {
    let html = match stack
        .traffic
        .as_ref()
        .and_then(|t| t.maintenance_page.as_ref())
    {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the maintenance page {path}: {e}"))?,
        None => DEFAULT_PAGE.to_string(),
    };
    Ok(MaintenancePage {
        html,
        retry_after_secs: retry_after.as_secs().max(1),
        message: Some(message.to_string()),
        until: Some(until.to_string()),
    })
}

/// The proxy of one stack, driven from the (synchronous) engine.
pub struct ProxyTraffic<'a> {
    pub rt: &'a tokio::runtime::Runtime,
    pub client: Client,
    pub max_hold: Duration,
    /// The page to show, built before the operation starts (a bad page file fails the
    /// preflight, not the quiesce).
    pub page: MaintenancePage,
}

impl TrafficSwitch for ProxyTraffic<'_> {
    fn switch(&mut self, service: &str, upstreams: &[SocketAddr]) -> Result<String, String> {
        let previous = self
            .rt
            .block_on(self.client.switch(service, upstreams))
            .map_err(|e| e.to_string())?;
        Ok(format!(
            "proxy: `{service}` → {} (was {})",
            list(upstreams),
            list(&previous)
        ))
    }

    fn drain(&mut self, service: &str, old: &[SocketAddr]) -> Result<String, String> {
        if old.is_empty() {
            return Ok("nothing to drain".into());
        }
        let r = self
            .rt
            .block_on(self.client.drain(old, DRAIN_TIMEOUT))
            .map_err(|e| e.to_string())?;
        Ok(if r.in_flight == 0 {
            format!("`{service}`: {} drained in {} ms", list(old), r.waited_ms)
        } else {
            format!(
                "`{service}`: {} request(s) to {} still in flight after {} ms; stopping anyway",
                r.in_flight,
                list(old),
                r.waited_ms
            )
        })
    }

    fn hold(&mut self, service: &str) -> Result<String, String> {
        self.rt
            .block_on(self.client.hold(service, self.max_hold))
            .map_err(|e| e.to_string())?;
        Ok(format!(
            "proxy: requests for `{service}` are held (up to {}s each)",
            self.max_hold.as_secs()
        ))
    }

    fn release(&mut self, service: &str) -> Result<String, String> {
        self.rt
            .block_on(self.client.release(service))
            .map_err(|e| e.to_string())?;
        Ok(format!("proxy: requests for `{service}` flow again"))
    }

    fn maintenance(&mut self, on: bool) -> Result<String, String> {
        let page = on.then(|| self.page.clone());
        self.rt
            .block_on(self.client.maintenance(None, page))
            .map_err(|e| e.to_string())?;
        Ok(if on {
            "proxy: maintenance page on for every route".into()
        } else {
            "proxy: maintenance page off".into()
        })
    }
}

fn list(addrs: &[SocketAddr]) -> String {
    if addrs.is_empty() {
        return "nothing".into();
    }
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
