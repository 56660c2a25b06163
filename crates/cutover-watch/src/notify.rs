//! What `cutover watch` tells its webhooks: planned, started, succeeded, reverted, failed,
//! paused — as cutover's own JSON (docs/json.md, "Webhook") or as a Slack-style `{"text"}`.
//! [`post`] sends one over HTTP or HTTPS (rustls with Mozilla's roots, plus the PEM
//! certificates of `SSL_CERT_FILE` when it is set: a private CA).

use serde::Serialize;
use serde_json::{Value, json};

use crate::{Commit, short};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    Planned,
    Started,
    Succeeded,
    Reverted,
    Failed,
    Paused,
}

/// The step that failed, for a revert.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FailedStep {
    pub id: String,
    pub output_tail: String,
}

/// One notification.
#[derive(Clone, Debug, Serialize)]
pub struct Notice {
    pub event: Event,
    pub stack: String,
    /// The release made (absent for `planned`, or when none was made).
    pub release: Option<u64>,
    pub commit: Commit,
    /// One line for a person.
    pub summary: String,
    /// The plan's markdown checklist (`planned`, `started`).
    pub checklist: Option<String>,
    pub failed_step: Option<FailedStep>,
    /// RFC 3339.
    pub at: String,
}

/// cutover's JSON body: the notice as it is, `event` first.
pub fn json_body(n: &Notice) -> Value {
    json!({
        "event": n.event,
        "stack": n.stack,
        "release": n.release,
        "commit": n.commit,
        "summary": n.summary,
        "checklist": n.checklist,
        "failed_step": n.failed_step,
        "at": n.at,
    })
}

/// A Slack-compatible body: one `text` in Slack's markdown.
pub fn slack_body(n: &Notice) -> Value {
    let mut text = format!(
        "*{}* `{}` — {} (commit `{}` \"{}\" by {})",
        match n.event {
            Event::Planned => "Planned",
            Event::Started => "Started",
            Event::Succeeded => "Succeeded",
            Event::Reverted => "Reverted",
            Event::Failed => "Failed",
            Event::Paused => "Paused",
        },
        n.stack,
        n.summary,
        short(&n.commit.commit),
        n.commit.subject,
        n.commit.author
    );
    if let Some(f) = &n.failed_step {
        text.push_str(&format!(
            "\nFailed at `{}`:\n```\n{}\n```",
            f.id,
            f.output_tail.trim_end()
        ));
    }
    if let Some(c) = &n.checklist {
        text.push_str(&format!("\n{c}"));
    }
    json!({ "text": text })
}

/// POSTs `body` to `url` within `timeout`; the status. Errors name the URL as `shown` (a
/// webhook URL is often a secret).
pub async fn post(
    url: &str,
    shown: &str,
    body: &Value,
    timeout: std::time::Duration,
) -> Result<u16, String> {
    let mut builder = reqwest::Client::builder().timeout(timeout);
    if let Some(file) = std::env::var_os("SSL_CERT_FILE") {
        let pem = std::fs::read(&file).map_err(|e| {
            format!(
                "POST {shown}: cannot read SSL_CERT_FILE {}: {e}",
                std::path::Path::new(&file).display()
            )
        })?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("POST {shown}: SSL_CERT_FILE: {e}"))?
        {
            builder = builder.add_root_certificate(cert);
        }
    }
    let client = builder.build().map_err(|e| format!("POST {shown}: {e}"))?;
    let resp = client.post(url).json(body).send().await.map_err(|e| {
        // reqwest's message carries the URL: say it as shown.
        let why = e.without_url().to_string();
        format!("POST {shown}: {why}")
    })?;
    Ok(resp.status().as_u16())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(event: Event) -> Notice {
        Notice {
            event,
            stack: "demo".into(),
            release: Some(3),
            commit: Commit {
                kind: "git".into(),
                repository: "/srv/git/demo.git".into(),
                branch: "main".into(),
                path: "cutover.yaml".into(),
                commit: "0123456789abcdef".into(),
                author: "Ana <ana@example.org>".into(),
                subject: "Upgrade to v3".into(),
            },
            summary: "release 3 was reverted".into(),
            checklist: None,
            failed_step: Some(FailedStep {
                id: "upgrade.recreate.app".into(),
                output_tail: "`app` did not become healthy".into(),
            }),
            at: "2026-12-06T10:00:00Z".into(),
        }
    }

    #[test]
    fn the_json_body_nests_the_commit_and_the_failed_step() {
        let v = json_body(&notice(Event::Reverted));
        assert_eq!(v["event"], "reverted");
        assert_eq!(v["release"], 3);
        assert_eq!(v["commit"]["subject"], "Upgrade to v3");
        assert_eq!(v["failed_step"]["id"], "upgrade.recreate.app");
        assert!(v["checklist"].is_null());
    }

    #[test]
    fn the_slack_body_is_one_text_naming_the_commit_and_quoting_the_failure() {
        let v = slack_body(&notice(Event::Reverted));
        let text = v["text"].as_str().expect("text");
        assert!(
            text.starts_with("*Reverted* `demo` — release 3 was reverted (commit `01234567`"),
            "{text}"
        );
        assert!(
            text.contains(
                "Failed at `upgrade.recreate.app`:\n```\n`app` did not become healthy\n```"
            )
        );
        assert_eq!(v.as_object().map(|o| o.len()), Some(1));
    }
}
