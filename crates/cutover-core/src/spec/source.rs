//! Where a value came from: which file, which line and column.
//!
//! Every value of the stack file that validation may complain about is a [`Located`]: it keeps
//! the file it was read from and its 1-based line and column, so diagnostics can say
//! `cutover.yaml:12:5`. The file is stamped while deserializing through a scoped thread-local
//! (`SourceScope`): one parse runs on one thread, start to end, so the stamp is exact.

use std::cell::Cell;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

/// Index of a source in [`Sources`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SourceId(pub u16);

impl SourceId {
    /// Values given on the command line (`--set`).
    pub const COMMAND_LINE: SourceId = SourceId(u16::MAX);
}

/// A position in a source. Line and column are 1-based; 0 means "unknown".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Loc {
    pub source: SourceId,
    pub line: u32,
    pub col: u32,
}

/// The files (and the command line) that a stack was read from.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    files: Vec<PathBuf>,
}

impl Sources {
    /// Registers a file and returns its id.
    pub fn add(&mut self, path: &Path) -> SourceId {
        if let Some(i) = self.files.iter().position(|p| p == path) {
            return SourceId(i as u16);
        }
        self.files.push(path.to_path_buf());
        SourceId((self.files.len() - 1) as u16)
    }

    /// The path of a source, or `None` for the command line.
    pub fn path(&self, id: SourceId) -> Option<&Path> {
        self.files.get(id.0 as usize).map(PathBuf::as_path)
    }

    /// `file:line:col`, `file`, or `command line`, as shown in diagnostics.
    pub fn describe(&self, loc: Loc) -> String {
        match self.path(loc.source) {
            None => "command line".to_string(),
            Some(p) if loc.line == 0 => p.display().to_string(),
            Some(p) => format!("{}:{}:{}", p.display(), loc.line, loc.col),
        }
    }
}

thread_local! {
    static CURRENT: Cell<SourceId> = const { Cell::new(SourceId(0)) };
}

/// While alive, values deserialized on this thread are stamped with `source`.
pub(crate) struct SourceScope {
    previous: SourceId,
}

impl SourceScope {
    pub(crate) fn enter(source: SourceId) -> SourceScope {
        let previous = CURRENT.with(|c| c.replace(source));
        SourceScope { previous }
    }
}

impl Drop for SourceScope {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.previous));
    }
}

/// A value with the place it was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located<T> {
    pub value: T,
    pub at: Loc,
}

/// A located string: the leaf type of the raw stack file.
pub type Text = Located<String>;

impl<T> Located<T> {
    pub fn new(value: T, at: Loc) -> Self {
        Located { value, at }
    }

    /// A value given on the command line.
    pub fn command_line(value: T) -> Self {
        Located {
            value,
            at: Loc {
                source: SourceId::COMMAND_LINE,
                line: 0,
                col: 0,
            },
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Located<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = serde_saphyr::Spanned::<T>::deserialize(deserializer)?;
        let at = Loc {
            source: CURRENT.with(Cell::get),
            line: u32::try_from(spanned.referenced.line()).unwrap_or(u32::MAX),
            col: u32::try_from(spanned.referenced.column()).unwrap_or(u32::MAX),
        };
        Ok(Located {
            value: spanned.value,
            at,
        })
    }
}

impl<T: Serialize> Serialize for Located<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(serializer)
    }
}

impl<T: fmt::Display> fmt::Display for Located<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.value.fmt(f)
    }
}
