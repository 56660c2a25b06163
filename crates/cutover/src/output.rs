//! Writing to the terminal: colors when wanted, and a closed pipe ends quietly.

use std::io::{IsTerminal, Write};
use std::sync::RwLock;

use cutover_core::spec::Redactor;

use crate::cli::{Cli, ColorChoice};

/// The secret values of every stack this process loaded (see [`commands::load`]): whatever
/// this module prints, and every error `exit::report` prints, passes through it.
///
/// [`commands::load`]: crate::commands::load
static REDACTOR: RwLock<Option<Redactor>> = RwLock::new(None);

/// Adds the secrets of a loaded stack to what is redacted from now on.
pub fn add_secrets(r: &Redactor) {
    if let Ok(mut g) = REDACTOR.write() {
        g.get_or_insert_with(Redactor::default).extend(r);
    }
}

/// The redactor of this process: the secrets of every stack loaded so far.
pub fn redactor() -> Redactor {
    REDACTOR
        .read()
        .ok()
        .and_then(|g| g.clone())
        .unwrap_or_default()
}

/// `text` without the secret values this process knows.
pub fn redact(text: &str) -> String {
    match REDACTOR.read().ok().as_deref().and_then(Option::as_ref) {
        Some(r) => r.redact(text).into_owned(),
        None => text.to_string(),
    }
}

/// Writes `text` to stdout, secrets redacted; a closed pipe surfaces as an `io::Error` the
/// caller returns, and `exit::report` turns it into a quiet exit 0.
pub fn print(text: &str) -> std::io::Result<()> {
    let text = redact(text);
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
