//! A plan as text for a terminal, or as a markdown checklist for a ticket.

use std::fmt::Write;

use owo_colors::{OwoColorize, Style};

use super::{Action, DowntimeKind, KeyChangeKind, Plan, PlanStep, ServiceChange};
use crate::spec::Strategy;

struct Paint {
    color: bool,
}

impl Paint {
    fn s(&self, text: &str, style: Style) -> String {
        if self.color {
            text.style(style).to_string()
        } else {
            text.to_string()
        }
    }
}

fn action_word(a: Action) -> &'static str {
    match a {
        Action::Create => "create",
        Action::Upgrade => "upgrade",
        Action::Restart => "restart",
        Action::Unchanged => "unchanged",
        Action::Remove => "remove",
    }
}

fn image_change(c: &ServiceChange) -> String {
    let show = |r: &super::ImageRef| match &r.id {
        Some(id) => format!("{} ({})", r.reference, crate::runtime::short_id(id)),
        None => r.reference.clone(),
    };
    match (&c.image_from, &c.image_to) {
        (Some(f), Some(t)) if f == t => show(t),
        (Some(f), Some(t)) => format!("{} → {}", show(f), show(t)),
        (None, Some(t)) => show(t),
        (Some(f), None) => show(f),
        (None, None) => String::new(),
    }
}

fn downtime_text(c: &ServiceChange) -> String {
    match c.downtime.kind {
        DowntimeKind::None => "none".into(),
        DowntimeKind::Deferred => "deferred".into(),
        DowntimeKind::Window => match c.downtime.max_seconds {
            Some(s) => format!(
                "≤ {}",
                humantime::format_duration(std::time::Duration::from_secs(s))
            ),
            None => "yes".into(),
        },
    }
}

/// The plan for a terminal. `color` adds ANSI colors.
pub fn text(plan: &Plan, color: bool) -> String {
    let p = Paint { color };
    let mut out = String::new();
    let env = plan
        .environment
        .as_deref()
        .map(|e| format!(" (environment {e})"))
        .unwrap_or_default();
    let from = plan
        .from_release
        .map_or_else(|| "first release".to_string(), |r| format!("release {r}"));
    let _ = writeln!(
        out,
        "{} `{}`{env}: {from} → release {}",
        p.s("Plan for stack", Style::new().bold()),
        plan.stack,
        plan.to_release
    );
    if !plan.changes {
        let _ = writeln!(
            out,
            "\nNo changes: every service already runs what the stack file says."
        );
        return out;
    }
    let _ = writeln!(
        out,
        "\n{}",
        p.s("Services, in upgrade order", Style::new().bold())
    );
    let width = plan
        .services
        .iter()
        .map(|s| s.service.len())
        .max()
        .unwrap_or(0);
    for c in &plan.services {
        let style = match c.action {
            Action::Create => Style::new().green(),
            Action::Upgrade => Style::new().yellow(),
            Action::Restart => Style::new().cyan(),
            Action::Remove => Style::new().red(),
            Action::Unchanged => Style::new().dimmed(),
        };
        let _ = writeln!(
            out,
            "  {:width$}  {}  {:10}  {}",
            c.service,
            p.s(&format!("{:9}", action_word(c.action)), style),
            // What will happen, not only what was asked: a quiesced blue-green is recreated.
            if c.quiesced && c.strategy == Strategy::BlueGreen && c.action == Action::Upgrade {
                "recreate*"
            } else {
                c.strategy.as_str()
            },
            image_change(c),
        );
        let pad = " ".repeat(width + 4);
        for k in &c.env {
            let line = match k.change {
                KeyChangeKind::Added => p.s(
                    &format!("+ {}={}", k.key, k.to.as_deref().unwrap_or_default()),
                    Style::new().green(),
                ),
                KeyChangeKind::Removed => p.s(&format!("- {}", k.key), Style::new().red()),
                KeyChangeKind::Changed => p.s(
                    &format!(
                        "~ {}: {} → {}",
                        k.key,
                        k.from.as_deref().unwrap_or_default(),
                        k.to.as_deref().unwrap_or_default()
                    ),
                    Style::new().yellow(),
                ),
            };
            let _ = writeln!(out, "{pad}env {line}");
        }
        if !c.config.is_empty() {
            let _ = writeln!(out, "{pad}changes {}", c.config.join(", "));
        }
        if c.action != Action::Unchanged {
            let _ = writeln!(
                out,
                "{pad}downtime {}: {}",
                downtime_text(c),
                c.downtime.because
            );
        }
    }
    if !plan.data.is_empty() {
        let _ = writeln!(out, "\n{}", p.s("Restore points", Style::new().bold()));
        for d in &plan.data {
            let _ = writeln!(
                out,
                "  {}  {} (writers stopped: {})",
                d.name,
                d.describe,
                d.writers.join(", ")
            );
            let _ = writeln!(out, "  {}  {}", " ".repeat(d.name.len()), d.method);
            if let Some(c) = &d.copy {
                let _ = writeln!(
                    out,
                    "  {}  here: {}",
                    " ".repeat(d.name.len()),
                    copy_text(c)
                );
            }
        }
    }
    if !plan.settings.is_empty() {
        let _ = writeln!(out, "\n{}", p.s("Settings review", Style::new().bold()));
        for line in settings_lines(plan) {
            let _ = writeln!(out, "  {line}");
        }
    }
    let _ = writeln!(out, "\n{}", p.s("Procedure", Style::new().bold()));
    let mut n = 0;
    for ph in &plan.procedure {
        let _ = writeln!(out, "  {}", p.s(ph.phase.title(), Style::new().underline()));
        for s in &ph.steps {
            n += 1;
            let _ = writeln!(out, "  {n:>3}. {}", s.title);
        }
    }
    let _ = writeln!(
        out,
        "\n{}",
        p.s(
            "If any step fails after quiesce, cutover reverts",
            Style::new().bold()
        )
    );
    for (i, s) in plan.revert.iter().enumerate() {
        let _ = writeln!(out, "  {:>3}. {}", i + 1, s.title);
    }
    out
}

/// One line per finding of the settings review.
fn settings_lines(plan: &Plan) -> Vec<String> {
    let mut out = Vec::new();
    for r in &plan.settings {
        for k in &r.removed {
            out.push(format!(
                "{} {}:{}: `{}` is set, and the new version removed or renamed it (refused unless --ack-settings)",
                r.service, r.file, k.line, k.key
            ));
        }
        if !r.added.is_empty() {
            // A long list is the JSON's to give; the text shows its start.
            const SHOWN: usize = 8;
            let more = r.added.len().saturating_sub(SHOWN);
            out.push(format!(
                "{} {}: {} setting(s) new in this version: {}{}",
                r.service,
                r.file,
                r.added.len(),
                r.added
                    .iter()
                    .take(SHOWN)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
                if more > 0 {
                    format!(", and {more} more (`plan -o json` lists them all)")
                } else {
                    String::new()
                }
            ));
        }
    }
    out
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|")
}

fn checklist(out: &mut String, steps: &[PlanStep]) {
    for s in steps {
        let _ = writeln!(out, "- [ ] {}", s.title);
    }
}

/// The plan as a markdown checklist: phases as headings, `- [ ]` steps, the revert at the end.
pub fn markdown(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Upgrade `{}` to release {}\n",
        plan.stack, plan.to_release
    );
    let from = plan.from_release.map_or_else(
        || "first release".to_string(),
        |r| format!("from release {r}"),
    );
    let env = plan
        .environment
        .as_deref()
        .map(|e| format!("environment `{e}` · "))
        .unwrap_or_default();
    let _ = writeln!(out, "{env}{from} · plan made by cutover\n");
    if !plan.changes {
        let _ = writeln!(out, "No changes.");
        return out;
    }
    let _ = writeln!(out, "## Changes\n");
    let _ = writeln!(out, "| service | action | strategy | image | downtime |");
    let _ = writeln!(out, "| --- | --- | --- | --- | --- |");
    for c in &plan.services {
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} | {} |",
            c.service,
            action_word(c.action),
            c.strategy.as_str(),
            md_escape(&image_change(c)),
            downtime_text(c)
        );
    }
    let env_changes: Vec<_> = plan
        .services
        .iter()
        .flat_map(|c| c.env.iter().map(move |k| (c, k)))
        .collect();
    if !env_changes.is_empty() {
        let _ = writeln!(out, "\nEnvironment:\n");
        for (c, k) in env_changes {
            let what = match k.change {
                KeyChangeKind::Added => format!("added `{}`", k.to.as_deref().unwrap_or_default()),
                KeyChangeKind::Removed => "removed".to_string(),
                KeyChangeKind::Changed => format!(
                    "`{}` → `{}`",
                    k.from.as_deref().unwrap_or_default(),
                    k.to.as_deref().unwrap_or_default()
                ),
            };
            let _ = writeln!(out, "- `{}`: `{}` {what}", c.service, k.key);
        }
    }
    if !plan.data.is_empty() {
        let _ = writeln!(out, "\n## Restore points\n");
        for d in &plan.data {
            let _ = writeln!(
                out,
                "- `{}`: {} — writers stopped: {}. {}{}",
                d.name,
                d.describe,
                d.writers.join(", "),
                d.method,
                d.copy
                    .as_ref()
                    .map(|c| format!(". Here: {}", copy_text(c)))
                    .unwrap_or_default()
            );
        }
    }
    if !plan.settings.is_empty() {
        let _ = writeln!(out, "\n## Settings review\n");
        for line in settings_lines(plan) {
            let _ = writeln!(out, "- {}", md_escape(&line));
        }
    }
    for ph in &plan.procedure {
        let _ = writeln!(out, "\n## {}\n", ph.phase.title());
        checklist(&mut out, &ph.steps);
    }
    let _ = writeln!(out, "\n## Revert (only if a step fails)\n");
    checklist(&mut out, &plan.revert);
    out
}

/// `reflink clone of 1.0 GiB in 4,120 files, ≈ 267 ms, no room until written`.
fn copy_text(c: &super::DataCopy) -> String {
    format!(
        "{} of {} in {} files, ≈ {} ms, {}",
        c.how,
        super::human_bytes(c.bytes),
        c.files,
        c.estimate_ms,
        if c.room_bytes == 0 {
            "no room until written".to_string()
        } else {
            format!("{} of room", super::human_bytes(c.room_bytes))
        }
    )
}
