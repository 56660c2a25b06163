//! Writing to the terminal: colors when wanted, and a closed pipe ends quietly.

use std::io::{IsTerminal, Write};

use crate::cli::{Cli, ColorChoice};

/// Writes `text` to stdout; a closed pipe surfaces as an `io::Error` the caller returns, and
/// `exit::report` turns it into a quiet exit 0.
pub fn print(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

/// JSON for scripts, one document, pretty-printed.
pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    let mut s = serde_json::to_string_pretty(value)?;
    s.push('\n');
    print(&s)?;
    Ok(())
}

/// Whether to color stdout.
pub fn color(cli: &Cli) -> bool {
    match cli.color {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            std::env::var_os("NO_COLOR").is_none() && std::io::stdout().is_terminal()
        }
    }
}
