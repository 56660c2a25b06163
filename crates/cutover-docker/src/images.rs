//! Images: resolve a reference to the ID that would run, pull what is missing.

use bollard::query_parameters::CreateImageOptions;
use futures_util::TryStreamExt;

use crate::{Runtime, RuntimeError, auth};

/// A pull's overall limit: layers of a large image over a slow link take minutes, but a
/// registry that stops sending must not hold an upgrade window open for ever.
const PULL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30 * 60);

pub use cutover_core::runtime::ImageInfo;

fn not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

impl Runtime {
    /// The local image for `reference` (a tag or an ID), or `None` when it is not here.
    pub async fn inspect_image(&self, reference: &str) -> Result<Option<ImageInfo>, RuntimeError> {
        match self.docker.inspect_image(reference).await {
            Ok(img) => {
                let has_healthcheck = img
                    .config
                    .as_ref()
                    .and_then(|c| c.healthcheck.as_ref())
                    .and_then(|h| h.test.as_ref())
                    .is_some_and(|t| !t.is_empty() && t[0] != "NONE");
                let labels = img
                    .config
                    .as_ref()
                    .and_then(|c| c.labels.clone())
                    .unwrap_or_default()
                    .into_iter()
                    .collect();
                Ok(Some(ImageInfo {
                    started_in_ms: None,
                    reference: reference.to_string(),
                    id: img.id.unwrap_or_default(),
                    repo_digests: img.repo_digests.unwrap_or_default(),
                    has_healthcheck,
                    labels,
                }))
            }
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(RuntimeError::docker(format!(
                "cannot inspect image {reference}"
            ))(e)),
        }
    }

    /// Makes sure `reference` is here: local, or pulled (with the credentials `docker login`
    /// stored for its registry). An `sha256:` ID cannot be pulled: it must be local.
    pub async fn ensure_image(&self, reference: &str) -> Result<ImageInfo, RuntimeError> {
        if let Some(info) = self.inspect_image(reference).await? {
            return Ok(info);
        }
        if reference.starts_with("sha256:") {
            return Err(RuntimeError::ImageMissing {
                reference: reference.to_string(),
                reason: "no image with this ID is on this engine any more (was it pruned?)".into(),
            });
        }
        self.pull_image(reference).await
    }

    /// Pulls `reference` whether or not it is here (a floating tag that moved), with the
    /// credentials `docker login` stored; the image it now names.
    pub async fn pull_image(&self, reference: &str) -> Result<ImageInfo, RuntimeError> {
        let (repo, tag) = split_tag(reference);
        let options = CreateImageOptions {
            from_image: Some(repo.to_string()),
            tag: Some(tag.to_string()),
            ..Default::default()
        };
        let pull = self
            .docker
            .create_image(Some(options), None, auth::credentials_for(reference))
            .try_collect::<Vec<_>>();
        tokio::time::timeout(PULL_TIMEOUT, pull)
            .await
            .map_err(|_| RuntimeError::ImageMissing {
                reference: reference.to_string(),
                reason: format!(
                    "not on this engine, and pulling it did not finish within {} min (a stalled registry or a very slow link)",
                    PULL_TIMEOUT.as_secs() / 60
                ),
            })?
            .map_err(|e| RuntimeError::ImageMissing {
                reference: reference.to_string(),
                reason: format!("not on this engine, and pulling it failed: {e}"),
            })?;
        self.inspect_image(reference)
            .await?
            .ok_or_else(|| RuntimeError::ImageMissing {
                reference: reference.to_string(),
                reason: "the pull reported success but the image is not there".into(),
            })
    }
}

/// `repo[:tag][@digest]` → (repo, tag or digest). A colon inside the registry's host:port
/// is not a tag separator.
fn split_tag(reference: &str) -> (&str, &str) {
    if let Some((repo, digest)) = reference.split_once('@') {
        return (repo, digest);
    }
    let last_slash = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[last_slash..].rfind(':') {
        Some(i) => (
            &reference[..last_slash + i],
            &reference[last_slash + i + 1..],
        ),
        None => (reference, "latest"),
    }
}

/// The largest file [`Runtime::read_image_file`] reads: defaults files are text.
const IMAGE_FILE_MAX: u64 = 4 << 20;

impl Runtime {
    /// The content of the regular file at `path` in image `image`, read without starting
    /// anything (a container is created, its filesystem read through the archive API, and
    /// removed). `None` when the image has no such file.
    pub async fn read_image_file(
        &self,
        image: &str,
        path: &str,
    ) -> Result<Option<Vec<u8>>, RuntimeError> {
        use bollard::models::ContainerCreateBody;
        use bollard::query_parameters::{DownloadFromContainerOptions, RemoveContainerOptions};
        let created = self
            .docker
            .create_container(
                None::<bollard::query_parameters::CreateContainerOptions>,
                ContainerCreateBody {
                    image: Some(image.to_string()),
                    // Never started; an image with neither CMD nor ENTRYPOINT needs one to be
                    // created at all.
                    cmd: Some(vec!["cutover-read-only".to_string()]),
                    labels: Some(std::collections::HashMap::from([(
                        crate::label::JOB.to_string(),
                        "read-file".to_string(),
                    )])),
                    ..Default::default()
                },
            )
            .await
            .map_err(RuntimeError::docker(format!(
                "cannot create a container of {image} to read {path}"
            )))?;
        // A defaults file is small: a whole read bounded in time and size (a `defaults` that
        // names a directory must not pull a tree into memory).
        let download = self
            .docker
            .download_from_container(
                &created.id,
                Some(DownloadFromContainerOptions {
                    path: path.to_string(),
                }),
            )
            .try_fold(Vec::new(), |mut all, chunk| async move {
                all.extend_from_slice(&chunk);
                if all.len() as u64 > IMAGE_FILE_MAX + 64 * 1024 {
                    return Err(bollard::errors::Error::DockerResponseServerError {
                        status_code: 413,
                        message: format!("more than {IMAGE_FILE_MAX} bytes"),
                    });
                }
                Ok(all)
            });
        let read = match tokio::time::timeout(std::time::Duration::from_secs(30), download).await {
            Ok(r) => r,
            Err(_) => Err(bollard::errors::Error::RequestTimeoutError),
        };
        let removed = self
            .docker
            .remove_container(
                &created.id,
                Some(RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                }),
            )
            .await;
        let tarball: Vec<u8> = match read {
            Ok(all) => all,
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => return Ok(None),
            Err(e) => {
                return Err(RuntimeError::docker(format!(
                    "cannot read {path} in {image}"
                ))(e));
            }
        };
        removed.map_err(RuntimeError::docker(format!(
            "cannot remove the container that read {path} in {image}"
        )))?;
        let mut archive = tar::Archive::new(tarball.as_slice());
        let entries = archive.entries().map_err(|e| RuntimeError::ImageMissing {
            reference: image.to_string(),
            reason: format!("the archive of {path} is unreadable: {e}"),
        })?;
        for entry in entries {
            let mut entry = entry.map_err(|e| RuntimeError::ImageMissing {
                reference: image.to_string(),
                reason: format!("the archive of {path} is unreadable: {e}"),
            })?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            if entry.size() > IMAGE_FILE_MAX {
                return Err(RuntimeError::ImageMissing {
                    reference: image.to_string(),
                    reason: format!(
                        "{path} is {} bytes: more than the {} a defaults file may have",
                        entry.size(),
                        IMAGE_FILE_MAX
                    ),
                });
            }
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut out).map_err(|e| {
                RuntimeError::ImageMissing {
                    reference: image.to_string(),
                    reason: format!("cannot read {path}: {e}"),
                }
            })?;
            return Ok(Some(out));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::split_tag;

    #[test]
    fn tags_split_after_the_last_slash() {
        assert_eq!(split_tag("cutover-demo:v2"), ("cutover-demo", "v2"));
        assert_eq!(
            split_tag("localhost:5000/app"),
            ("localhost:5000/app", "latest")
        );
        assert_eq!(
            split_tag("localhost:5000/app:1.2"),
            ("localhost:5000/app", "1.2")
        );
        assert_eq!(split_tag("app@sha256:abcd"), ("app", "sha256:abcd"));
    }
}
