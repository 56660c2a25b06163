//! `cutover history`: the releases, newest first.

use serde_json::json;

use crate::cli::{Cli, OutputFormat};
use crate::commands::{self, when};
use crate::exit;
use crate::output;
use crate::runner::ReleaseImages;

pub fn run(cli: &Cli, limit: usize) -> anyhow::Result<u8> {
    let name = commands::stack_name(cli)?;
    let store = commands::open_store(cli, &name)?;
    let releases = store.releases(limit)?;
    if cli.output == OutputFormat::Json {
        let items: Vec<_> = releases
            .iter()
            .map(|r| {
                json!({
                    "revision": r.revision,
                    "status": r.status,
                    "created_at": when(r.created_at),
                    "updated_at": when(r.updated_at),
                    "created_by": r.created_by,
                    "host": r.host,
                    "reason": r.reason,
                    "images": serde_json::from_str::<serde_json::Value>(&r.images_json).unwrap_or_default(),
                })
            })
            .collect();
        output::print_json(&json!({ "stack": name, "releases": items }))?;
        return Ok(exit::OK);
    }
    if releases.is_empty() {
        output::print(&format!("stack `{name}`: no releases yet\n"))?;
        return Ok(exit::OK);
    }
    let mut out = format!(
        "{:>8}  {:<10}  {:<20}  {:<20}  {:<36}  reason\n",
        "revision", "status", "when", "by", "images"
    );
    for r in &releases {
        let images: Vec<String> = ReleaseImages::from_json(&r.images_json)
            .0
            .iter()
            .map(|(svc, i)| {
                let id = i.id.strip_prefix("sha256:").unwrap_or(&i.id);
                format!("{svc}={}@{}", i.reference, &id[..id.len().min(12)])
            })
            .collect();
        out.push_str(&format!(
            "{:>8}  {:<10}  {:<20}  {:<20}  {:<36}  {}\n",
            r.revision,
            r.status.as_str(),
            when(r.created_at),
            format!("{}@{}", r.created_by, r.host),
            if images.is_empty() {
                "-".to_string()
            } else {
                images.join(" ")
            },
            r.reason.as_deref().unwrap_or("")
        ));
    }
    output::print(&out)?;
    Ok(exit::OK)
}
