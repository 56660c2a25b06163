//! The image source of `cutover watch --images`: for a service with an update policy, the
//! registry's tags (the OCI distribution API, through oci-client) and the newest one the
//! policy allows.
//!
//! Policies: a semver range (`~2.6`, `^2`, `>=1.4, <2`; a leading `v` on tags is allowed), or
//! a regex the whole tag must match (the newest match by semver when tags parse as versions,
//! else by name). Only a tag newer than the one the stack runs is an update: a policy never
//! moves a service back.

use std::time::Duration;

use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use semver::{Version, VersionReq};

/// A service's update policy, checked.
#[derive(Clone, Debug)]
pub enum Policy {
    Semver(VersionReq),
    Regex(regex::Regex),
    /// The tag stays; the image it names moves (`latest`, `stable`): followed by digest.
    Digest,
}

impl Policy {
    pub fn semver(range: &str) -> Result<Policy, String> {
        VersionReq::parse(range)
            .map(Policy::Semver)
            .map_err(|e| format!("`{range}` is not a semver range: {e}"))
    }

    pub fn regex(pattern: &str) -> Result<Policy, String> {
        regex::Regex::new(&format!("^(?:{pattern})$"))
            .map(Policy::Regex)
            .map_err(|e| format!("`{pattern}` is not a regex: {e}"))
    }

    fn allows(&self, tag: &str) -> bool {
        match self {
            Policy::Semver(req) => version(tag).is_some_and(|v| req.matches(&v)),
            Policy::Regex(re) => re.is_match(tag),
            Policy::Digest => false,
        }
    }
}

/// `v2.1.0` and `2.1.0` as versions; `latest` is none.
fn version(tag: &str) -> Option<Version> {
    Version::parse(tag.strip_prefix('v').unwrap_or(tag)).ok()
}

/// Orders tags: versions by semver (before anything that is not one), others by name.
fn newer(a: &str, b: &str) -> std::cmp::Ordering {
    match (version(a), version(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => std::cmp::Ordering::Greater,
        (None, Some(_)) => std::cmp::Ordering::Less,
        (None, None) => a.cmp(b),
    }
}

/// The newest tag of `tags` that `policy` allows and that is newer than `current`.
pub fn pick<'t>(policy: &Policy, current: &str, tags: &'t [String]) -> Option<&'t str> {
    tags.iter()
        .map(String::as_str)
        .filter(|t| policy.allows(t))
        .filter(|t| newer(t, current) == std::cmp::Ordering::Greater)
        .max_by(|a, b| newer(a, b))
}

/// `registry/repo:tag` split at its tag: (`registry/repo`, `tag`).
pub fn split_tag(image: &str) -> Option<(&str, &str)> {
    let (repo, tag) = image.rsplit_once(':')?;
    (!tag.contains('/')).then_some((repo, tag))
}

fn client(http: bool) -> Client {
    Client::new(oci_client::client::ClientConfig {
        protocol: if http {
            oci_client::client::ClientProtocol::Http
        } else {
            oci_client::client::ClientProtocol::Https
        },
        ..Default::default()
    })
}

fn auth(credentials: Option<(String, String)>) -> RegistryAuth {
    match credentials {
        Some((user, password)) => RegistryAuth::Basic(user, password),
        None => RegistryAuth::Anonymous,
    }
}

/// The manifest digest (`sha256:…`) the registry serves for `image` (`repo:tag`) now.
pub async fn digest(
    image: &str,
    credentials: Option<(String, String)>,
    http: bool,
    timeout: Duration,
) -> Result<String, String> {
    let reference: Reference = image
        .parse()
        .map_err(|e| format!("`{image}` is not an image reference: {e}"))?;
    let c = client(http);
    let auth = auth(credentials);
    let ask = c.fetch_manifest_digest(&reference, &auth);
    match tokio::time::timeout(timeout, ask).await {
        Ok(Ok(d)) => Ok(d),
        Ok(Err(e)) => Err(format!("cannot read the digest of {image}: {e}")),
        Err(_) => Err(format!(
            "cannot read the digest of {image}: no answer within {}s",
            timeout.as_secs()
        )),
    }
}

/// The tags of `repository` (`host:port/name`). `http`: the registry speaks plain HTTP (a
/// registry on loopback). Credentials as `docker login` stored them, or none.
pub async fn tags(
    repository: &str,
    credentials: Option<(String, String)>,
    http: bool,
    timeout: Duration,
) -> Result<Vec<String>, String> {
    let reference: Reference = format!("{repository}:latest")
        .parse()
        .map_err(|e| format!("`{repository}` is not an image repository: {e}"))?;
    let client = client(http);
    let auth = auth(credentials);
    let list = client.list_tags(&reference, &auth, None, None);
    match tokio::time::timeout(timeout, list).await {
        Ok(Ok(r)) => Ok(r.tags),
        Ok(Err(e)) => Err(format!("cannot list the tags of {repository}: {e}")),
        Err(_) => Err(format!(
            "cannot list the tags of {repository}: no answer within {}s",
            timeout.as_secs()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_tilde_range_takes_the_newest_patch_and_minor_of_its_major_only() {
        let p = Policy::semver("~2").expect("range");
        let t = tags(&["v1.9.0", "v2.0.0", "v2.1.0", "v2.0.5", "v3.0.0", "latest"]);
        assert_eq!(pick(&p, "v2.0.0", &t), Some("v2.1.0"));
        assert_eq!(pick(&p, "v2.1.0", &t), None, "nothing newer is allowed");
        let p = Policy::semver("~2.0").expect("range");
        assert_eq!(pick(&p, "v2.0.0", &t), Some("v2.0.5"));
    }

    #[test]
    fn a_policy_never_moves_a_service_back() {
        let p = Policy::semver("^2").expect("range");
        assert_eq!(pick(&p, "2.4.0", &tags(&["2.1.0", "2.3.9"])), None);
    }

    #[test]
    fn a_regex_must_match_the_whole_tag() {
        let p = Policy::regex(r"2\.\d+-alpine").expect("regex");
        let t = tags(&[
            "2.1-alpine",
            "2.10-alpine",
            "2.9-alpine-rc1",
            "x2.11-alpine",
        ]);
        assert_eq!(pick(&p, "2.1-alpine", &t), Some("2.10-alpine"));
        assert!(Policy::semver("not a range").is_err());
        assert!(Policy::regex("(").is_err());
    }

    #[test]
    fn an_image_splits_at_its_tag_not_at_a_registry_port() {
        assert_eq!(
            split_tag("127.0.0.1:5000/demo:v2.0.0"),
            Some(("127.0.0.1:5000/demo", "v2.0.0"))
        );
        assert_eq!(split_tag("127.0.0.1:5000/demo"), None);
    }
}
