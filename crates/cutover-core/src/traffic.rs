//! The seam between the engine and the traffic layer.
//!
//! A blue-green step starts the new container, waits for it to be healthy, then asks the
//! traffic layer to send the service's new requests to it and to let the old one drain
//! before it is stopped. The embedded proxy (issue #5) implements this; until it runs,
//! [`NoProxy`] reports where the new upstream is and that nothing was switched.

use std::net::SocketAddr;

pub trait TrafficSwitch {
    /// From now on, every new request for `service` goes to `upstreams`. Returns what was
    /// done, for the journal.
    fn switch(&mut self, service: &str, upstreams: &[SocketAddr]) -> Result<String, String>;

    /// Waits until requests in flight to `old` have finished (up to the drain timeout);
    /// after it returns, `old` may be stopped.
    fn drain(&mut self, service: &str, old: &[SocketAddr]) -> Result<String, String>;
}

/// No traffic layer: clients reach containers on their published ports.
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
}
