//! The settings review's inputs: the operators' config files and the defaults files the
//! old and new images ship, read without starting them.

/// The settings review of every `config_files` entry of `stack` whose service changes
/// image: the operator's keys against the defaults file in the live release's image and in
/// the new one (both read without starting them). A file either image lacks is said on
/// stderr and skipped: there is nothing to compare.
pub fn review_files(
    rt: &tokio::runtime::Runtime,
    docker: &cutover_docker::Runtime,
    stack: &cutover_core::spec::Stack,
    observed: &cutover_core::plan::Observed,
    new_ids: &indexmap::IndexMap<String, String>,
) -> anyhow::Result<Vec<cutover_core::settings::FileReview>> {
    use anyhow::Context;
    use cutover_core::settings::{keys, review};
    let mut out = Vec::new();
    for (name, svc) in &stack.services {
        let (Some(old_id), Some(new_id)) = (observed.image_ids.get(name), new_ids.get(name)) else {
            continue;
        };
        if old_id == new_id {
            continue;
        }
        for f in &svc.config_files {
            let text = std::fs::read_to_string(&f.host_path)
                .with_context(|| format!("cannot read config file {} of `{name}`", f.path))?;
            let operator = keys(f.format, &text, false);
            let mut defaults = Vec::new();
            for id in [old_id, new_id] {
                let bytes = rt.block_on(docker.read_image_file(id, &f.defaults))?;
                defaults.push(
                    bytes.map(|b| keys(f.defaults_format, &String::from_utf8_lossy(&b), true)),
                );
            }
            match (&defaults[0], &defaults[1]) {
                (Some(old), Some(new)) => out.push(review(name, &f.path, &operator, old, new)),
                _ => eprintln!(
                    "cutover: settings review of {} skipped: {} of `{name}` has no {}",
                    f.path,
                    if defaults[0].is_none() {
                        "the live image"
                    } else {
                        "the new image"
                    },
                    f.defaults
                ),
            }
        }
    }
    Ok(out)
}
