//! Continuous delivery for cutover: a git branch as the source of a stack's releases.
//!
//! - [`git`]: the watch's own clone of the repository. [`git::Checkout::sync`] fetches the
//!   branch and checks out its tip; [`git::Checkout::revert`] commits a `git revert` of a
//!   commit on the branch's tip and pushes it.
//! - [`images`]: the image source: a registry's tags and the newest one a policy allows.
//! - [`notify`]: the bodies of its webhooks (cutover's JSON, or Slack's `{"text"}`).
//! - [`state`]: what the watch applied last, and the pause a reverted commit leaves until a
//!   person acknowledges it.
//!
//! The binary's `cutover watch` plans and applies through the same path as `apply`, and
//! records the [`Commit`] with the release.

pub mod git;
pub mod images;
pub mod notify;
pub mod state;
pub mod window;

use serde::{Deserialize, Serialize};

/// The commit a release was made from, as the release records it (`source` in `history -o
/// json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    /// Always `git`.
    pub kind: String,
    /// The repository as given to `cutover watch --git` (a path or URL; credentials never).
    pub repository: String,
    pub branch: String,
    /// The stack file's path in the repository.
    pub path: String,
    /// The full commit id.
    pub commit: String,
    /// `Name <email>`.
    pub author: String,
    /// The first line of the message.
    pub subject: String,
}

impl Commit {
    /// `commit 1a2b3c4d "Upgrade to v2" by Ana <ana@example.org>`.
    pub fn describe(&self) -> String {
        format!(
            "commit {} \"{}\" by {}",
            short(&self.commit),
            self.subject,
            self.author
        )
    }
}

/// The first 8 characters of a commit id.
pub fn short(id: &str) -> &str {
    &id[..id.len().min(8)]
}

/// A URL's password, if it has one, replaced: `https://user:***@host/repo`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) if !host.is_empty() && userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}")
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_in_the_repository_url_is_never_recorded() {
        assert_eq!(
            redact_url("https://bot:s3cret@git.example.org/ops/stack.git"),
            "https://bot:***@git.example.org/ops/stack.git"
        );
        assert_eq!(redact_url("/srv/git/stack.git"), "/srv/git/stack.git");
        assert_eq!(
            redact_url("ssh://git@host/ops/stack.git"),
            "ssh://git@host/ops/stack.git"
        );
    }
}
