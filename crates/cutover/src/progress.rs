//! How an operation's steps are shown while they run: an observer of its journal
//! (`cutover_ops::journal`), so what is shown is what was recorded.

use cutover_ops::journal::{Event, Observer};
use cutover_store::StepStatus;

/// How steps are reported while they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// On a terminal: a spinner while a step runs, then its line.
    Terminal,
    /// A line per step start and end on stderr.
    Lines,
    /// One JSON object per event on stdout (`-o json`), for scripts (docs/json.md).
    Json,
}

pub struct Progress {
    style: Style,
    /// The running step's spinner, on a terminal.
    spinner: Option<indicatif::ProgressBar>,
}

impl Progress {
    /// JSON events for `-o json`; else a spinner on a terminal, plain lines elsewhere.
    pub fn new(json: bool) -> Progress {
        let style = if json {
            Style::Json
        } else if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            Style::Terminal
        } else {
            Style::Lines
        };
        Progress {
            style,
            spinner: None,
        }
    }
}

fn json_line(e: &Event<'_>) -> String {
    let (operation, step, finished) = match e {
        Event::Started { operation, step } => (*operation, step, None),
        Event::Finished {
            operation,
            step,
            status,
            output,
        } => (*operation, step, Some((*status, *output))),
    };
    cutover_ops::shapes::event(&cutover_ops::shapes::StepEvent {
        operation,
        step: &step.id,
        phase: step.phase.as_str(),
        title: &step.title,
        finished,
        at: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
    })
    .to_string()
}

impl Observer for Progress {
    fn event(&mut self, e: &Event<'_>) {
        match (self.style, e) {
            (Style::Json, e) => println!("{}", json_line(e)),
            (Style::Terminal, Event::Started { step, .. }) => {
                let pb = indicatif::ProgressBar::new_spinner();
                pb.set_style(
                    indicatif::ProgressStyle::with_template(
                        "  {spinner} {prefix:<13} {msg} {elapsed}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
                );
                pb.set_prefix(step.phase.as_str().to_string());
                pb.set_message(step.title.clone());
                pb.enable_steady_tick(std::time::Duration::from_millis(120));
                self.spinner = Some(pb);
            }
            (Style::Lines, Event::Started { step, .. }) => {
                eprintln!("  {:<13} {} …", step.phase.as_str(), step.title);
            }
            (
                Style::Terminal,
                Event::Finished {
                    step,
                    status,
                    output,
                    ..
                },
            ) => {
                let mark = if *status == StepStatus::Succeeded {
                    "✓"
                } else {
                    "✗"
                };
                let first = output.lines().next().unwrap_or("");
                if let Some(pb) = self.spinner.take() {
                    pb.finish_and_clear();
                }
                eprintln!(
                    "  {mark} {:<13} {} — {first}",
                    step.phase.as_str(),
                    step.title
                );
            }
            (Style::Lines, Event::Finished { status, output, .. }) => {
                let mark = if *status == StepStatus::Succeeded {
                    "ok"
                } else {
                    "FAILED"
                };
                let first = output.lines().next().unwrap_or("");
                eprintln!("  {:<13} {mark}: {first}", "");
            }
        }
    }
}
