//! Diagnostics: what is wrong with a stack, where, and what to do about it.

use std::fmt;

use serde::Serialize;

use super::source::{Loc, Sources};

/// What kind of mistake a diagnostic reports. Stable names: they appear in `--output json`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DiagKind {
    /// The file could not be read.
    Io,
    /// Not YAML, or YAML of the wrong shape (a list where a map belongs, a word where a number does).
    Syntax,
    /// A key the stack file does not know (usually a typo).
    UnknownKey,
    /// A value that is well-formed YAML but not an accepted value (a strategy, a duration, a port).
    InvalidValue,
    /// A required key is missing.
    Missing,
    /// `depends_on`, a route or a step names a service that does not exist.
    DanglingReference,
    /// Services depend on each other in a circle.
    DependencyCycle,
    /// Two services publish the same host port.
    DuplicatePort,
    /// `${VAR}` names a variable that is set nowhere.
    UndefinedVariable,
    /// A strategy the service cannot use as configured.
    StrategyNotUsable,
    /// A secret used where values are printed.
    SecretNotAllowed,
}

/// One problem in a stack file, with its place and a one-line hint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub kind: DiagKind,
    pub at: Loc,
    pub message: String,
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn new(kind: DiagKind, at: Loc, message: impl Into<String>) -> Self {
        Diagnostic {
            kind,
            at,
            message: message.into(),
            hint: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// Every problem found in a stack, in file order. Loading never stops at the first one it can
/// get past.
#[derive(Clone, Debug)]
pub struct Diagnostics {
    pub sources: Sources,
    pub items: Vec<Diagnostic>,
}

/// The JSON shape of one diagnostic (`cutover validate --output json`).
#[derive(Serialize)]
pub struct DiagnosticJson<'a> {
    pub kind: DiagKind,
    pub file: Option<String>,
    pub line: u32,
    pub column: u32,
    pub message: &'a str,
    pub hint: Option<&'a str>,
}

impl Diagnostics {
    /// Items sorted by file, line, column, for reading top to bottom.
    pub fn sorted(mut self) -> Self {
        self.items.sort_by_key(|d| d.at);
        self
    }

    pub fn to_json(&self) -> Vec<DiagnosticJson<'_>> {
        self.items
            .iter()
            .map(|d| DiagnosticJson {
                kind: d.kind,
                file: self
                    .sources
                    .path(d.at.source)
                    .map(|p| p.display().to_string()),
                line: d.at.line,
                column: d.at.col,
                message: &d.message,
                hint: d.hint.as_deref(),
            })
            .collect()
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.items.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {}", self.sources.describe(d.at), d.message)?;
            if let Some(h) = &d.hint {
                write!(f, "\n  hint: {h}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}
