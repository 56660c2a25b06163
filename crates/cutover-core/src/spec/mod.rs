//! The stack file: from text to a validated [`Stack`].
//!
//! `raw` (as written) → `load` (overlays, interpolation, validation) → `model` (validated).

pub mod compose;
pub mod diag;
mod fields;
pub mod interp;
pub mod keymap;
pub mod load;
pub mod model;
pub mod raw;
pub mod redact;
pub mod source;

pub use diag::{DiagKind, Diagnostic, Diagnostics};
pub use load::{LoadOptions, Loaded, load, load_str, serving_service};
pub use model::*;
pub use redact::Redactor;

#[cfg(test)]
mod tests;
