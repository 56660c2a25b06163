//! An operation's timeline, drawn on the server as SVG: each journal step a bar on a time
//! axis, coloured by how it ended, and the window in which the app was stopped or held
//! (from the first quiesce step to the last step that brought it back: the upgrade's, or
//! the revert's) shaded and measured.

use std::fmt::Write;

use cutover_store::{StepRecord, StepStatus};

const WIDTH: f64 = 960.0;
const LABEL: f64 = 300.0;
const ROW: f64 = 20.0;
const TOP: f64 = 34.0;

/// The window the app was stopped or held, in unix millis, when the journal shows one.
pub fn downtime(steps: &[StepRecord], now: i64) -> Option<(i64, i64)> {
    let stopping = ["quiesce"];
    let back = ["quiesce", "restore_point", "upgrade", "revert"];
    let start = steps
        .iter()
        .filter(|s| stopping.contains(&s.phase.as_str()))
        .map(|s| s.started_at)
        .min()
        .or_else(|| {
            steps
                .iter()
                .filter(|s| s.phase == "upgrade")
                .map(|s| s.started_at)
                .min()
        })?;
    let end = steps
        .iter()
        .filter(|s| back.contains(&s.phase.as_str()))
        .map(|s| s.finished_at.unwrap_or(now))
        .max()?;
    Some((start, end.max(start)))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn color(status: StepStatus) -> &'static str {
    match status {
        StepStatus::Started => "#3b82f6",
        StepStatus::Succeeded => "#16a34a",
        StepStatus::Failed => "#dc2626",
        StepStatus::Skipped => "#9ca3af",
    }
}

/// The SVG of `steps` (one operation's journal), `now` closing the bars still running.
pub fn svg(steps: &[StepRecord], now: i64) -> String {
    let mut out = String::new();
    let height = TOP + ROW * steps.len() as f64 + 12.0;
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="timeline" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11">"#
    );
    let Some(t0) = steps.iter().map(|s| s.started_at).min() else {
        out.push_str(r#"<text x="4" y="20">no step has started</text></svg>"#);
        return out;
    };
    let t1 = steps
        .iter()
        .map(|s| s.finished_at.unwrap_or(now))
        .max()
        .unwrap_or(t0)
        .max(t0 + 1);
    let span = (t1 - t0) as f64;
    let plot = WIDTH - LABEL - 10.0;
    let x = |t: i64| LABEL + plot * ((t - t0) as f64 / span);
    // The axis: four ticks.
    for i in 0..=4 {
        let t = t0 + (span * f64::from(i) / 4.0) as i64;
        let _ = write!(
            out,
            r##"<line x1="{x:.1}" y1="{y0}" x2="{x:.1}" y2="{height}" stroke="#e5e7eb"/><text x="{x:.1}" y="{ty}" text-anchor="{anchor}" fill="#6b7280">{ms} ms</text>"##,
            x = x(t),
            anchor = if i == 4 { "end" } else { "middle" },
            y0 = TOP - 6.0,
            ty = TOP - 10.0,
            ms = t - t0
        );
    }
    if let Some((a, b)) = downtime(steps, now) {
        let _ = write!(
            out,
            r##"<rect class="window" x="{x:.1}" y="{y}" width="{w:.1}" height="{h}" fill="#fde68a" fill-opacity="0.5"/><text x="{x:.1}" y="12" fill="#92400e">app stopped or held: {ms} ms</text>"##,
            x = x(a),
            y = TOP - 6.0,
            w = (x(b) - x(a)).max(1.0),
            h = height - TOP,
            ms = b - a
        );
    }
    for (i, s) in steps.iter().enumerate() {
        let y = TOP + ROW * i as f64;
        let end = s.finished_at.unwrap_or(now);
        let _ = write!(
            out,
            r##"<text x="4" y="{ty:.1}" fill="#111827">{label}</text><rect class="bar {status}" x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h}" rx="2" fill="{color}"><title>{title}: {status}, {ms} ms</title></rect>"##,
            ty = y + 13.0,
            label = escape(&truncate(&s.step_id, 46)),
            x = x(s.started_at),
            w = (x(end) - x(s.started_at)).max(2.0),
            h = ROW - 6.0,
            color = color(s.status),
            title = escape(&s.title),
            status = s.status.as_str(),
            ms = end - s.started_at
        );
    }
    out.push_str("</svg>");
    out
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(
        seq: u64,
        id: &str,
        phase: &str,
        status: StepStatus,
        at: i64,
        end: Option<i64>,
    ) -> StepRecord {
        StepRecord {
            op: 1,
            seq,
            step_id: id.into(),
            phase: phase.into(),
            title: format!("{id} <title>"),
            status,
            started_at: at,
            finished_at: end,
            output_tail: String::new(),
        }
    }

    #[test]
    fn the_window_runs_from_the_quiesce_to_the_app_back_and_is_drawn() {
        let steps = vec![
            step(
                1,
                "preflight.image.app",
                "preflight",
                StepStatus::Succeeded,
                1000,
                Some(1100),
            ),
            step(
                2,
                "quiesce.stop.app",
                "quiesce",
                StepStatus::Succeeded,
                1100,
                Some(1400),
            ),
            step(
                3,
                "restore_point.app_data",
                "restore_point",
                StepStatus::Succeeded,
                1400,
                Some(1450),
            ),
            step(
                4,
                "upgrade.recreate.app",
                "upgrade",
                StepStatus::Failed,
                1450,
                Some(2450),
            ),
            step(
                5,
                "revert.app",
                "revert",
                StepStatus::Succeeded,
                2450,
                Some(2900),
            ),
            step(6, "verify.http", "verify", StepStatus::Started, 2900, None),
        ];
        assert_eq!(downtime(&steps, 3000), Some((1100, 2900)));
        let svg = svg(&steps, 3000);
        assert!(svg.contains("app stopped or held: 1800 ms"), "{svg}");
        assert_eq!(svg.matches("<rect class=\"bar").count(), 6);
        assert!(svg.contains("class=\"bar failed\""));
        assert!(svg.contains("&lt;title&gt;"), "titles are escaped");
        // Nothing stopped: no window.
        assert_eq!(downtime(&steps[..1], 3000), None);
    }

    #[test]
    fn an_empty_journal_says_so() {
        assert!(svg(&[], 0).contains("no step has started"));
    }
}
