//! The watch's own clone of the repository that holds the stack file.
//!
//! The clone lives in the state dir (`watch/repo`) and belongs to cutover: each
//! [`Checkout::sync`] fetches the branch and checks out its tip by force, so nothing an
//! operator edits there survives, and the stack file applied is exactly the commit's. A
//! revert is committed on the tip of the fetched branch and pushed to it; a push refused
//! because the branch moved meanwhile is an error that says so (the next pass sees the new
//! commits).

use std::path::{Path, PathBuf};

use std::cell::Cell;

use git2::{
    Cred, CredentialType, FetchOptions, Oid, PushOptions, RemoteCallbacks, Repository, Signature,
};

use crate::{Commit, redact_url};

/// How often the credentials callback was asked, per kind: libgit2 asks again after each
/// refusal, and each ask must try the next way.
#[derive(Default)]
struct Attempts {
    ssh: Cell<u32>,
    other: Cell<u32>,
}

/// Callbacks that find credentials where git and ssh find them: for SSH the ssh-agent
/// (`SSH_AUTH_SOCK`), then `~/.ssh/id_ed25519`, `id_ecdsa`, `id_rsa`; for HTTPS git's
/// credential helpers (`credential.helper`), or a `user:password@` in the URL. Host keys are
/// checked against `~/.ssh/known_hosts` by libgit2; an unknown host is refused.
fn callbacks(attempts: &Attempts) -> RemoteCallbacks<'_> {
    let mut cb = RemoteCallbacks::new();
    cb.credentials(move |url, username, allowed| {
        let user = username.unwrap_or("git");
        if allowed.contains(CredentialType::USERNAME) {
            return Cred::username(user);
        }
        if allowed.contains(CredentialType::SSH_KEY) {
            let n = attempts.ssh.get();
            attempts.ssh.set(n + 1);
            let mut ways: Vec<Box<dyn Fn() -> Result<Cred, git2::Error> + '_>> = Vec::new();
            if std::env::var_os("SSH_AUTH_SOCK").is_some() {
                ways.push(Box::new(move || Cred::ssh_key_from_agent(user)));
            }
            let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
            for name in ["id_ed25519", "id_ecdsa", "id_rsa"] {
                if let Some(key) = home.as_ref().map(|h| h.join(".ssh").join(name))
                    && key.exists()
                {
                    ways.push(Box::new(move || Cred::ssh_key(user, None, &key, None)));
                }
            }
            return match ways.get(n as usize) {
                Some(way) => way(),
                None => Err(git2::Error::from_str(
                    "no SSH key was accepted (tried the ssh-agent, ~/.ssh/id_ed25519, id_ecdsa and id_rsa)",
                )),
            };
        }
        let n = attempts.other.get();
        attempts.other.set(n + 1);
        if allowed.contains(CredentialType::USER_PASS_PLAINTEXT)
            && n == 0
            && let Ok(config) = git2::Config::open_default()
            && let Ok(cred) = Cred::credential_helper(&config, url, username)
        {
            return Ok(cred);
        }
        if n > 0 {
            return Err(git2::Error::from_str(
                "the credentials were refused (git's credential helpers, or the URL's)",
            ));
        }
        Cred::default()
    });
    cb
}

/// Where the stack comes from.
#[derive(Clone, Debug)]
pub struct Source {
    /// A path or a `file://` URL (TLS and SSH transports are not built in).
    pub repository: String,
    pub branch: String,
    /// The stack file's path in the repository.
    pub path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct GitError {
    what: String,
    #[source]
    source: git2::Error,
}

fn err(what: impl Into<String>) -> impl FnOnce(git2::Error) -> GitError {
    let what = what.into();
    move |source| GitError { what, source }
}

/// The watch's clone.
pub struct Checkout {
    repo: Repository,
    source: Source,
}

impl Checkout {
    /// Opens the clone in `dir`, cloning the repository there the first time.
    pub fn open(source: Source, dir: &Path) -> Result<Checkout, GitError> {
        let shown = redact_url(&source.repository);
        let repo = if dir.join(".git").exists() {
            Repository::open(dir).map_err(err(format!("cannot open {}", dir.display())))?
        } else {
            let attempts = Attempts::default();
            let mut fetch = FetchOptions::new();
            fetch.remote_callbacks(callbacks(&attempts));
            git2::build::RepoBuilder::new()
                .fetch_options(fetch)
                .clone(&source.repository, dir)
                .map_err(err(format!("cannot clone {shown} into {}", dir.display())))?
        };
        Ok(Checkout { repo, source })
    }

    /// Where the stack file is in the working tree.
    pub fn stack_file(&self) -> PathBuf {
        self.repo
            .workdir()
            .unwrap_or_else(|| Path::new("."))
            .join(&self.source.path)
    }

    /// Fetches the branch and checks its tip out by force; returns the tip.
    pub fn sync(&self) -> Result<Commit, GitError> {
        let branch = &self.source.branch;
        let shown = redact_url(&self.source.repository);
        let mut remote = self
            .repo
            .find_remote("origin")
            .map_err(err("the clone has no `origin`"))?;
        let refspec = format!("+refs/heads/{branch}:refs/remotes/origin/{branch}");
        let attempts = Attempts::default();
        let mut fetch = FetchOptions::new();
        fetch.remote_callbacks(callbacks(&attempts));
        remote
            .fetch(&[refspec.as_str()], Some(&mut fetch), None)
            .map_err(err(format!("cannot fetch `{branch}` from {shown}")))?;
        let tip = self
            .repo
            .find_reference(&format!("refs/remotes/origin/{branch}"))
            .and_then(|r| r.peel_to_commit())
            .map_err(err(format!("{shown} has no branch `{branch}`")))?;
        self.repo
            .checkout_tree(
                tip.as_object(),
                Some(
                    git2::build::CheckoutBuilder::new()
                        .force()
                        .remove_untracked(true),
                ),
            )
            .map_err(err(format!("cannot check out {}", tip.id())))?;
        self.repo
            .set_head_detached(tip.id())
            .map_err(err("cannot move HEAD"))?;
        Ok(self.commit_of(&tip))
    }

    fn commit_of(&self, c: &git2::Commit<'_>) -> Commit {
        let author = c.author();
        Commit {
            kind: "git".into(),
            repository: redact_url(&self.source.repository),
            branch: self.source.branch.clone(),
            path: self.source.path.display().to_string(),
            commit: c.id().to_string(),
            author: format!(
                "{} <{}>",
                author.name().unwrap_or("?"),
                author.email().unwrap_or("?")
            ),
            subject: c.summary().unwrap_or("").to_string(),
        }
    }

    /// Commits the revert of `id` on the branch's tip (as fetched by the last
    /// [`Checkout::sync`]) and pushes it to the branch. `why` ends the message.
    pub fn revert(&self, id: &str, why: &str) -> Result<Commit, GitError> {
        let branch = &self.source.branch;
        let bad = Oid::from_str(id)
            .and_then(|oid| self.repo.find_commit(oid))
            .map_err(err(format!("commit {id} is not in the clone")))?;
        let tip = self
            .repo
            .find_reference(&format!("refs/remotes/origin/{branch}"))
            .and_then(|r| r.peel_to_commit())
            .map_err(err(format!("no fetched branch `{branch}`")))?;
        let mut index = self
            .repo
            .revert_commit(&bad, &tip, 0, None)
            .map_err(err(format!("cannot revert {id}")))?;
        if index.has_conflicts() {
            return Err(GitError {
                what: format!("reverting {id} on the tip of `{branch}` conflicts"),
                source: git2::Error::from_str("later commits changed the same lines"),
            });
        }
        let tree = index
            .write_tree_to(&self.repo)
            .map_err(err("cannot write the revert's tree"))?;
        let message = format!(
            "Revert \"{}\"\n\nThis reverts commit {}.\n\n{why}\n",
            bad.summary().unwrap_or(""),
            bad.id()
        );
        self.commit_and_push(tree, &message, &tip)
    }

    /// Commits `content` as the stack file on the branch's tip (as fetched by the last
    /// [`Checkout::sync`]) with `message`, and pushes it: image automation, so git stays
    /// the truth.
    pub fn commit_stack_file(&self, content: &str, message: &str) -> Result<Commit, GitError> {
        let branch = &self.source.branch;
        let tip = self
            .repo
            .find_reference(&format!("refs/remotes/origin/{branch}"))
            .and_then(|r| r.peel_to_commit())
            .map_err(err(format!("no fetched branch `{branch}`")))?;
        let blob = self
            .repo
            .blob(content.as_bytes())
            .map_err(err("cannot write the stack file's blob"))?;
        let mut builder = git2::build::TreeUpdateBuilder::new();
        builder.upsert(&self.source.path, blob, git2::FileMode::Blob);
        let base = tip.tree().map_err(err("cannot read the tip's tree"))?;
        let tree = builder
            .create_updated(&self.repo, &base)
            .map_err(err("cannot write the updated tree"))?;
        self.commit_and_push(tree, message, &tip)
    }

    /// Commits `tree` on `tip` and pushes it to the branch; a refused push is an error.
    fn commit_and_push(
        &self,
        tree: Oid,
        message: &str,
        tip: &git2::Commit<'_>,
    ) -> Result<Commit, GitError> {
        let branch = &self.source.branch;
        let tree = self
            .repo
            .find_tree(tree)
            .map_err(err("cannot read the new tree"))?;
        let sig = Signature::now("cutover watch", "cutover@localhost")
            .map_err(err("cannot make a signature"))?;
        let oid = self
            .repo
            .commit(None, &sig, &sig, message, &tree, &[tip])
            .map_err(err("cannot commit"))?;
        // A local branch to push from: libgit2 pushes references, not bare commits.
        let local = "refs/heads/cutover-watch";
        self.repo
            .reference(local, oid, true, "cutover watch")
            .map_err(err("cannot point the watch's branch at the commit"))?;
        let mut remote = self
            .repo
            .find_remote("origin")
            .map_err(err("the clone has no `origin`"))?;
        let mut refused: Option<String> = None;
        let attempts = Attempts::default();
        let mut cb = callbacks(&attempts);
        cb.push_update_reference(|_, status| {
            refused = status.map(str::to_string);
            Ok(())
        });
        let mut opts = PushOptions::new();
        opts.remote_callbacks(cb);
        remote
            .push(&[format!("{local}:refs/heads/{branch}")], Some(&mut opts))
            .map_err(err(format!(
                "cannot push to `{branch}` of {}",
                redact_url(&self.source.repository)
            )))?;
        drop(opts);
        if let Some(why) = refused {
            return Err(GitError {
                what: format!("the push to `{branch}` was refused (did the branch move?)"),
                source: git2::Error::from_str(&why),
            });
        }
        let commit = self
            .repo
            .find_commit(oid)
            .map_err(err("cannot read the commit back"))?;
        Ok(self.commit_of(&commit))
    }
}
