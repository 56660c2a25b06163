//! This host, as the check family sees it (`cutover_ops::checks`): the real HTTP, TCP and
//! PostgreSQL probes, and the person at the terminal.

use std::io::{BufRead, IsTerminal};
use std::net::SocketAddr;
use std::time::Duration;

use cutover_data::postgres::Admin;
use cutover_ops::checks::{Operator, Probes};

pub struct Host<'a> {
    /// For the async HTTP client and PostgreSQL driver.
    pub rt: &'a tokio::runtime::Runtime,
}

impl Probes for Host<'_> {
    fn http_get(&self, url: &str, timeout: Duration) -> Result<(u16, String), String> {
        self.rt.block_on(cutover_http::get(url, timeout))
    }

    fn tcp_connect(&self, addr: SocketAddr, timeout: Duration) -> Result<(), String> {
        self.rt.block_on(async {
            match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("timed out".into()),
            }
        })
    }

    fn postgres_value(
        &self,
        url: &str,
        database: &str,
        query: &str,
    ) -> Result<Option<String>, String> {
        self.rt
            .block_on(Admin::schema_version(url, database, query))
            .map_err(|e| e.to_string())
    }

    fn postgres_execute(&self, url: &str, database: &str, query: &str) -> Result<(), String> {
        self.rt
            .block_on(cutover_data::postgres::execute(url, database, query))
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

impl Operator for Host<'_> {
    fn say(&self, text: &str) {
        eprintln!("  {}", crate::output::redact(text));
    }

    /// In the terminal: `yes` goes on, anything else stops (and reverts).
    fn confirm(&self, text: &str) -> Result<String, String> {
        if !std::io::stdin().is_terminal() {
            return Err(format!(
                "manual step `{text}` needs someone at a terminal to confirm it"
            ));
        }
        eprintln!("\n  MANUAL STEP: {text}");
        eprint!("  done? type `yes` to go on, anything else stops (and reverts): ");
        let mut answer = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut answer)
            .map_err(|e| format!("cannot read the answer: {e}"))?;
        if answer.trim() == "yes" {
            let who = cutover_store::Holder::current();
            Ok(format!("confirmed by {}@{}", who.user, who.host))
        } else {
            Err(format!("manual step `{text}` was not confirmed"))
        }
    }
}
