//! Records a stack file as the deployed release in a state directory, without deploying
//! anything: a stand-in for `cutover apply` when a benchmark or a demo needs a "previous
//! release" to plan an upgrade from.
//!
//! ```text
//! cargo run --release -p cutover --example seed_release -- STACK_FILE STATE_DIR
//! ```
//!
//! The stack is loaded as `cutover` would load it (process environment included), stored as
//! its spec JSON with no image IDs, then marked deployed, superseding any deployed release.

use std::path::PathBuf;

use anyhow::{Context, bail};
use cutover_core::spec::{self, LoadOptions};
use cutover_store::{NewRelease, ReleaseStatus, Store};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [stack_file, state_dir] = args.as_slice() else {
        bail!("usage: seed_release STACK_FILE STATE_DIR");
    };
    let (stack_file, state_dir) = (PathBuf::from(stack_file), PathBuf::from(state_dir));

    let loaded = spec::load(&stack_file, &LoadOptions::from_process())
        .with_context(|| format!("{} does not load", stack_file.display()))?;
    let spec_json = serde_json::to_string(&loaded.stack).context("cannot serialize the stack")?;

    let store = Store::open(&state_dir, &loaded.stack.name)
        .with_context(|| format!("cannot open the state in {}", state_dir.display()))?;
    let release = store.insert_release(&NewRelease {
        spec_json: &spec_json,
        images_json: "{}",
        created_by: "seed_release",
        host: "bench",
        reason: Some("seeded without deploying (benchmark)"),
        status: ReleaseStatus::Pending,
        source_json: None,
    })?;
    store.set_release_status(release.revision, ReleaseStatus::Deployed)?;
    println!(
        "release {} of `{}` recorded as deployed in {}",
        release.revision,
        loaded.stack.name,
        store.path().display()
    );
    Ok(())
}
