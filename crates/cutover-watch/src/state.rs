//! What the watch remembers between passes, in the state dir (`watch/state.json`, owner
//! only, replaced atomically): the commit it applied last, and the pause a reverted commit
//! leaves — no further automatic apply until a person acknowledges it.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchState {
    /// The last commit the watch planned and applied (whatever the outcome): it is not
    /// applied again.
    #[serde(default)]
    pub last_commit: Option<String>,
    /// Set when a commit's release was reverted or failed.
    #[serde(default)]
    pub paused: Option<Pause>,
    /// The commit last announced as waiting for its maintenance window.
    #[serde(default)]
    pub announced: Option<String>,
    /// Images (`service=repo:tag`) whose update was reverted: `--images` never picks them
    /// again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rejected: Vec<String>,
}

/// Why the watch stopped applying.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pause {
    /// The commit whose release did not go through.
    pub commit: String,
    pub subject: String,
    /// `reverted` or `failed`, and what failed.
    pub reason: String,
    /// RFC 3339.
    pub since: String,
    /// The revert commit pushed, when the stack asked for one.
    #[serde(default)]
    pub revert_commit: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot {what} {}: {source}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is damaged ({source}); move it aside to start the watch afresh", .path.display())]
    Damaged {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

impl WatchState {
    /// The state at `path`; the default when there is none yet.
    pub fn load(path: &Path) -> Result<WatchState, StateError> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StateError::Damaged {
                path: path.to_owned(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(WatchState::default()),
            Err(source) => Err(StateError::Io {
                what: "read",
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Writes the state to `path` (0600), atomically.
    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        let io = |what| {
            let path = path.to_owned();
            move |source| StateError::Io { what, path, source }
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io("create the directory of"))?;
        }
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io("write"))?;
        f.write_all(&bytes).map_err(io("write"))?;
        f.sync_all().map_err(io("flush"))?;
        std::fs::rename(&tmp, path).map_err(io("replace"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_round_trips_privately_and_a_damaged_one_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("watch/state.json");
        assert_eq!(
            WatchState::load(&path).expect("none yet"),
            WatchState::default()
        );
        let s = WatchState {
            last_commit: Some("abc".into()),
            paused: Some(Pause {
                commit: "abc".into(),
                subject: "v3".into(),
                reason: "reverted".into(),
                since: "2026-12-06T10:00:00Z".into(),
                revert_commit: None,
            }),
            announced: None,
            rejected: Vec::new(),
        };
        s.save(&path).expect("save");
        assert_eq!(WatchState::load(&path).expect("load"), s);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).expect("meta").permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(&path, "{ not json").expect("damage");
        let e = WatchState::load(&path).expect_err("damaged");
        assert!(e.to_string().contains("is damaged"), "{e}");
    }
}
