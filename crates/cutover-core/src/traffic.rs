//! The seam between the engine and the traffic layer.
//!
//! A blue-green step starts the new container, waits for it to be healthy, then asks the
//! traffic layer to send the service's new requests to it and to let the old one drain
//! before it is stopped; a recreate of a routed service holds its requests meanwhile; the
//! quiesce phase can put up a maintenance page. The embedded proxy (`cutover serve`)
//! implements this for stacks with `traffic:`; [`NoProxy`] stands in for stacks without.

use std::net::SocketAddr;

pub trait TrafficSwitch {
    /// From now on, every new request for `service` goes to `upstreams`. Returns what was
    /// done, for the journal.
    fn switch(&mut self, service: &str, upstreams: &[SocketAddr]) -> Result<String, String>;

    /// Waits until requests in flight to `old` have finished (up to the drain timeout);
    /// after it returns, `old` may be stopped.
    fn drain(&mut self, service: &str, old: &[SocketAddr]) -> Result<String, String>;

    /// New requests for `service` wait (up to the stack's `max_hold`) until `release`:
    /// a recreate without failed requests.
    fn hold(&mut self, service: &str) -> Result<String, String>;

    fn release(&mut self, service: &str) -> Result<String, String>;

    /// The maintenance page on every route of the stack (`on`), or off.
    fn maintenance(&mut self, on: bool) -> Result<String, String>;
}

/// No traffic layer (the stack has no `traffic:`): clients reach containers on their
/// published ports.
#[derive(Debug, Default)]
pub struct NoProxy;

impl TrafficSwitch for NoProxy {
    fn switch(&mut self, service: &str, upstreams: &[SocketAddr]) -> Result<String, String> {
        let list: Vec<String> = upstreams.iter().map(ToString::to_string).collect();
        Ok(format!(
            "no traffic proxy in front of `{service}`: its new upstream is {} (the switch lands with the proxy, issue #5)",
            if list.is_empty() {
                "unpublished".to_string()
            } else {
                list.join(", ")
            }
        ))
    }

    fn drain(&mut self, _service: &str, _old: &[SocketAddr]) -> Result<String, String> {
        Ok("nothing to drain without a proxy".into())
    }

    fn hold(&mut self, _service: &str) -> Result<String, String> {
        Ok("no traffic proxy: nothing to hold".into())
    }

    fn release(&mut self, _service: &str) -> Result<String, String> {
        Ok("no traffic proxy: nothing to release".into())
    }

    fn maintenance(&mut self, _on: bool) -> Result<String, String> {
        Err("the stack has no traffic proxy to show a maintenance page".into())
    }
}
