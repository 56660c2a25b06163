//! The promotion gate (`promote_from`): an image is applied in this environment only after
//! another environment ran it, verified, for at least the soak time.
//!
//! "Ran, verified" means a release of the other environment that reached its release step:
//! `deployed` (it runs now) or `superseded` (it ran until a later one). Its time there is
//! from its record to now, or to when it was superseded. Images are compared by ID (the
//! content digest), never by tag: a tag moved since staging ran it is a different image.

use std::time::Duration;

use cutover_store::{Millis, Release, ReleaseStatus, Store, StoreError, format_millis};
use indexmap::IndexMap;

use crate::record::ReleaseImages;

/// How many of the other environment's releases are looked at, newest first.
const LOOK_BACK: usize = 200;

/// Whether every image `wanted` (service → image ID) ran in `source` (the other
/// environment's store, called `env`) for at least `soak`, as of `now`. `Ok` says which
/// releases satisfied it; `Err` says, per service, why not and what would.
pub fn check(
    source: &Store,
    env: &str,
    wanted: &IndexMap<String, String>,
    soak: Duration,
    now: Millis,
) -> Result<Result<String, String>, StoreError> {
    let releases = source.releases(LOOK_BACK)?;
    let soak_ms = i64::try_from(soak.as_millis()).unwrap_or(i64::MAX);
    let mut ok = Vec::new();
    let mut refused = Vec::new();
    for (service, id) in wanted {
        let ran: Vec<(&Release, Millis)> = releases
            .iter()
            .filter(|r| {
                matches!(
                    r.status,
                    ReleaseStatus::Deployed | ReleaseStatus::Superseded
                )
            })
            .filter(|r| {
                ReleaseImages::of_release(r.revision, &r.images_json)
                    .is_ok_and(|i| i.0.get(service).is_some_and(|img| &img.id == id))
            })
            .map(|r| {
                let until = if r.status == ReleaseStatus::Deployed {
                    now
                } else {
                    r.updated_at
                };
                (r, until - r.created_at)
            })
            .collect();
        let short = cutover_core::runtime::short_id(id);
        match ran.iter().find(|(_, for_ms)| *for_ms >= soak_ms) {
            Some((r, _)) => ok.push(format!("`{service}` {short}: {env}'s release {}", r.revision)),
            None => match ran.iter().max_by_key(|(_, for_ms)| *for_ms) {
                Some((r, for_ms)) => refused.push(format!(
                    "`{service}` would run {short}, which {env}'s release {} has run for {} of the {} soak; it may be promoted after {}",
                    r.revision,
                    human_ms(*for_ms),
                    human_ms(soak_ms),
                    format_millis(r.created_at + soak_ms)
                )),
                None => refused.push(format!(
                    "`{service}` would run {short}, which {env} never ran verified{}",
                    releases
                        .iter()
                        .find(|r| r.status == ReleaseStatus::Deployed)
                        .and_then(|r| {
                            let images = ReleaseImages::of_release(r.revision, &r.images_json).ok()?;
                            let img = images.0.get(service)?.clone();
                            Some(format!(
                                " ({env}'s release {} runs {} = {}: promote that one)",
                                r.revision,
                                img.reference,
                                cutover_core::runtime::short_id(&img.id)
                            ))
                        })
                        .unwrap_or_default()
                )),
            },
        }
    }
    Ok(if refused.is_empty() {
        Ok(format!("ran in {env} first: {}", ok.join("; ")))
    } else {
        Err(refused.join("; "))
    })
}

fn human_ms(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{release, store};
    use cutover_core::runtime::ImageInfo;

    fn with_image(store: &Store, status: ReleaseStatus, id: &str) -> u64 {
        let rev = release(store, ReleaseStatus::Pending);
        let mut images = ReleaseImages::default();
        images.0.insert(
            "app".into(),
            ImageInfo {
                reference: "app:tag".into(),
                id: id.into(),
                ..ImageInfo::default()
            },
        );
        store
            .set_release_images(rev, &images.to_json())
            .expect("images");
        store.set_release_status(rev, status).expect("status");
        rev
    }

    fn want(id: &str) -> IndexMap<String, String> {
        [("app".to_string(), id.to_string())].into_iter().collect()
    }

    #[test]
    fn an_image_staging_never_ran_is_refused_naming_what_it_runs() {
        let (_dir, s) = store();
        with_image(&s, ReleaseStatus::Deployed, "sha256:aaaa");
        with_image(&s, ReleaseStatus::Reverted, "sha256:bbbb");
        let now = cutover_store_now(&s);
        let e = check(&s, "staging", &want("sha256:bbbb"), Duration::ZERO, now)
            .expect("store")
            .expect_err("a reverted release is not verified");
        assert!(e.contains("which staging never ran verified"), "{e}");
        assert!(e.contains("staging's release 1 runs app:tag"), "{e}");
        let ok = check(&s, "staging", &want("sha256:aaaa"), Duration::ZERO, now)
            .expect("store")
            .expect("it runs there");
        assert!(ok.contains("staging's release 1"), "{ok}");
    }

    #[test]
    fn the_soak_time_counts_from_the_record_until_now_or_until_superseded() {
        let (_dir, s) = store();
        with_image(&s, ReleaseStatus::Deployed, "sha256:aaaa");
        let now = cutover_store_now(&s);
        let e = check(
            &s,
            "staging",
            &want("sha256:aaaa"),
            Duration::from_secs(3600),
            now,
        )
        .expect("store")
        .expect_err("not soaked");
        assert!(e.contains("has run for 0s of the 60m soak"), "{e}");
        let later = now + 3_600_000;
        assert!(
            check(
                &s,
                "staging",
                &want("sha256:aaaa"),
                Duration::from_secs(3600),
                later
            )
            .expect("store")
            .is_ok()
        );
    }

    fn cutover_store_now(s: &Store) -> Millis {
        s.releases(1).expect("releases")[0].created_at
    }
}
