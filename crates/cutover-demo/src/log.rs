//! Log lines on stdout.
//!
//! Docker collects a container's stdout line by line, so every line is written whole, in one
//! write, and flushed at once: a line still sitting in a buffer when the process is killed is a
//! line the operator never sees.

use std::io::Write as _;

/// Writes one line (a newline is added) to stdout and flushes it.
///
/// A line that cannot be written (stdout closed) is dropped: losing a log line is better than
/// taking the app down with it.
pub fn line(args: std::fmt::Arguments<'_>) {
    let mut text = args.to_string();
    text.push('\n');
    // Under `cargo test`, go through `print!`, which the test harness captures.
    if cfg!(test) {
        print!("{text}");
        return;
    }
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// `log!("...", args)`: [`line()`] with `format!` syntax.
macro_rules! log {
    ($($arg:tt)*) => {
        $crate::log::line(format_args!($($arg)*))
    };
}
pub(crate) use log;
