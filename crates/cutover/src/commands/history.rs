//! `cutover history`: the releases, newest first, each with the operation that made it and,
//! when it failed, the step that failed and why; `--operation N`: one operation's journal.

use anyhow::anyhow;
use cutover_store::{Release, StepRecord, StepStatus, Store};
use serde_json::{Value, json};

use crate::cli::{Cli, OutputFormat};
use crate::commands::{self, shapes, when};
use crate::exit::{self, with_code};
use crate::output;
use cutover_ops::record::ReleaseImages;

/// How many operations are looked through for the releases shown.
const OPERATIONS_SCANNED: usize = 10_000;

pub fn run(cli: &Cli, limit: usize, operation: Option<u64>) -> anyhow::Result<u8> {
    let name = commands::stack_name(cli)?;
    let store = commands::open_store(cli, &name)?;
    if let Some(id) = operation {
        return show_operation(cli, &store, &name, id);
    }
    let releases = store.releases(limit)?;
    let operations = store.operations(OPERATIONS_SCANNED)?;
    // The last operation that worked on each release: the one that made it, or the last
    // resume or abort of it.
    let op_of = |r: &Release| {
        operations
            .iter()
            .filter(|o| o.release == Some(r.revision))
            .max_by_key(|o| o.id)
    };
    if cli.output == OutputFormat::Json {
        let mut items = Vec::new();
        for r in &releases {
            let op = match op_of(r) {
                Some(o) => shapes::operation(o, failed_step(&store.journal(o.id)?).as_ref(), None),
                None => Value::Null,
            };
            items.push(shapes::release(r, Some(op)));
        }
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
    let mut failed_ops = Vec::new();
    for r in &releases {
        // A damaged record is shown as such, never as "no images".
        let images: Vec<String> = match ReleaseImages::of_release(r.revision, &r.images_json) {
            Ok(images) => images
                .0
                .iter()
                .map(|(svc, i)| {
                    format!(
                        "{svc}={}@{}",
                        i.reference,
                        cutover_core::runtime::short_id(&i.id)
                    )
                })
                .collect(),
            Err(_) => vec!["(images record unreadable)".into()],
        };
        let mut reason = r.reason.clone().unwrap_or_default();
        if let Some(commit) = r
            .source_json
            .as_deref()
            .and_then(|j| serde_json::from_str::<cutover_watch::Commit>(j).ok())
        {
            if !reason.is_empty() {
                reason.push_str("; ");
            }
            reason.push_str(&commit.describe());
        }
        if let Some(op) = op_of(r)
            && let Some(f) = failed_step(&store.journal(op.id)?)
        {
            if !reason.is_empty() {
                reason.push_str("; ");
            }
            reason.push_str(&format!(
                "failed at {}: {}",
                f.step_id,
                f.output_tail.lines().next().unwrap_or("")
            ));
            failed_ops.push(op.id);
        }
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
            reason
        ));
    }
    if let Some(op) = failed_ops.first() {
        out.push_str(&format!(
            "\n`cutover history --operation {op}` shows an operation's journal\n"
        ));
    }
    output::print(&out)?;
    Ok(exit::OK)
}

/// The step an operation failed at: its first failed step outside the revert (a failed
/// revert step, when the revert is all that failed).
pub(crate) fn failed_step(journal: &[StepRecord]) -> Option<StepRecord> {
    let failed = journal.iter().filter(|s| s.status == StepStatus::Failed);
    failed
        .clone()
        .find(|s| s.phase != "revert")
        .or_else(|| failed.clone().next())
        .cloned()
}

/// `history --operation N`: the operation and every step of its journal with its output.
fn show_operation(cli: &Cli, store: &Store, name: &str, id: u64) -> anyhow::Result<u8> {
    let op = store.operation(id)?.ok_or_else(|| {
        with_code(
            exit::INVALID,
            anyhow!("stack `{name}` has no operation {id}; `cutover history` lists the releases and their operations"),
        )
    })?;
    let journal = store.journal(id)?;
    if cli.output == OutputFormat::Json {
        output::print_json(&json!({
            "stack": name,
            "release": op.release,
            "operation": shapes::operation(&op, failed_step(&journal).as_ref(), journal.last()),
            "steps": journal.iter().map(shapes::step).collect::<Vec<_>>(),
        }))?;
        return Ok(exit::OK);
    }
    let mut out = format!(
        "operation {id} of stack `{name}`: {} {}, {}, started {} by {}@{}{}\n",
        op.kind,
        op.release
            .map_or_else(|| "(no release)".to_string(), |r| format!("release {r}")),
        op.status.as_str(),
        when(op.started_at),
        op.holder.user,
        op.holder.host,
        op.finished_at
            .map(|t| format!(", finished {}", when(t)))
            .unwrap_or_default()
    );
    for s in &journal {
        let took = s
            .finished_at
            .map(|f| format!(" ({:.1}s)", (f - s.started_at) as f64 / 1000.0))
            .unwrap_or_default();
        out.push_str(&format!(
            "{:>4}  {:<11} {:<9} {}{took}\n",
            s.seq,
            s.phase,
            s.status.as_str(),
            s.title
        ));
        for line in s.output_tail.lines() {
            out.push_str(&format!("            {line}\n"));
        }
    }
    output::print(&out)?;
    Ok(exit::OK)
}
