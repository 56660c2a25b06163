//! Exit codes, and how an error becomes one.
//!
//! | code | meaning |
//! | ---- | ------- |
//! | 0 | success (also: nothing to do) |
//! | 1 | the operation failed and was reverted: the stack runs what it ran before |
//! | 2 | invalid input or usage, or a problem found before anything was changed |
//! | 3 | the operation failed and the revert failed too: an operator must look |
//! | 4 | another operation holds the stack's lease, or one is unfinished (`resume`/`abort` it) |

use std::process::ExitCode;

use cutover_core::spec::Diagnostics;
use cutover_store::StoreError;

pub const OK: u8 = 0;
// Returned by apply and rollback once they can change containers (issue #3).
#[allow(dead_code)]
pub const REVERTED: u8 = 1;
pub const INVALID: u8 = 2;
#[allow(dead_code)]
pub const REVERT_FAILED: u8 = 3;
pub const LOCKED: u8 = 4;

/// The table above, for `--help`.
pub const TABLE: &str = "\
EXIT STATUS:
  0  success, or nothing to do
  1  the operation failed and was reverted: the stack runs what it ran before
  2  invalid input or usage, or a problem found before anything was changed
  3  the operation failed and its revert failed too: an operator must look
  4  another operation holds the stack's lease, or one is unfinished: its process
     died (cutover resume finishes it, cutover abort reverts it)";

/// An error that carries its exit code. Anything else is classified by [`code_of`].
#[derive(Debug)]
pub struct Exit {
    pub code: u8,
    pub error: anyhow::Error,
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.error)
    }
}

impl std::error::Error for Exit {}

/// Wraps an error with an explicit exit code.
pub fn with_code(code: u8, error: anyhow::Error) -> anyhow::Error {
    anyhow::Error::new(Exit { code, error })
}

/// The exit code an error carries (`INVALID` when it carries none).
pub fn code_of(err: &anyhow::Error) -> u8 {
    if let Some(e) = err.downcast_ref::<Exit>() {
        return e.code;
    }
    for cause in err.chain() {
        if let Some(StoreError::LeaseHeld { .. }) = cause.downcast_ref::<StoreError>() {
            return LOCKED;
        }
    }
    INVALID
}

/// Prints the error once, `cutover: ...`, and returns its code. A closed stdout (`| head`)
/// is not an error.
pub fn report(result: anyhow::Result<u8>) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            if err
                .chain()
                .filter_map(|c| c.downcast_ref::<std::io::Error>())
                .any(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            {
                return ExitCode::from(OK);
            }
            let code = code_of(&err);
            if let Some(d) = err.downcast_ref::<Diagnostics>() {
                eprintln!("{d}");
                let n = d.items.len();
                eprintln!(
                    "cutover: {n} problem{} in the stack file; nothing was changed",
                    if n == 1 { "" } else { "s" }
                );
            } else {
                eprintln!("cutover: {}", crate::output::redact(&format!("{err:#}")));
            }
            ExitCode::from(code)
        }
    }
}
