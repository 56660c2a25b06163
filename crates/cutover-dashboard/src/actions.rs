//! What a person can do, the same from a page and from the API: each action checks the
//! role, writes the audit log (also when it is refused), and runs `cutover`.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use cutover_store::StepStatus;
use serde_json::Value;

use crate::auth::{Permission, Principal, require};
use crate::stacks::{Started, exit_meaning};
use crate::{App, Failure};

/// A short command's limit (plan, status, maintenance, the restore-point list).
const SHORT: Duration = Duration::from_secs(120);
/// Verifying restore points reads them all.
const VERIFY: Duration = Duration::from_secs(1800);

/// Writes one audit entry.
fn audit(
    app: &App,
    who: &Principal,
    action: &str,
    stack: Option<&str>,
    target: Option<&str>,
    outcome: &str,
) -> Result<u64, Failure> {
    Ok(app.home().audit(
        &who.name,
        who.via.as_str(),
        &who.remote,
        action,
        stack,
        target,
        outcome,
    )?)
}

/// The role check, audited when it refuses.
fn allowed(
    app: &App,
    who: &Principal,
    p: Permission,
    action: &str,
    stack: &str,
    target: Option<&str>,
) -> Result<(), Failure> {
    require(who, p).map_err(|d| {
        let f = Failure::from(d);
        let _ = audit(
            app,
            who,
            action,
            Some(stack),
            target,
            &format!("denied: {}", f.message),
        );
        f
    })
}

/// `--set` values: `KEY=VALUE` each, passed as `--set=…` so none reads as a flag.
pub fn set_args(sets: &[String]) -> Result<Vec<String>, Failure> {
    sets.iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|s| match s.split_once('=') {
            Some((k, _))
                if k.starts_with(|c: char| c.is_ascii_alphanumeric())
                    && k.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) =>
            {
                Ok(format!("--set={s}"))
            }
            _ => Err(Failure::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("`{s}` is not KEY=VALUE (e.g. app.image=cutover-demo:v2)"),
            )),
        })
        .collect()
}

/// How a plan is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanFormat {
    Text,
    Json,
    Markdown,
}

/// The plan of a proposed change, as `cutover plan` prints it.
pub async fn plan(
    app: &App,
    who: &Principal,
    stack: &str,
    sets: &[String],
    format: PlanFormat,
) -> Result<String, Failure> {
    let s = app.stack(stack)?;
    require(who, Permission::Read)?;
    let mut args = vec!["plan".to_string()];
    args.extend(set_args(sets)?);
    args.extend(
        match format {
            PlanFormat::Text => None,
            PlanFormat::Json => Some("json"),
            PlanFormat::Markdown => Some("markdown"),
        }
        .map(|f| ["-o".to_string(), f.to_string()])
        .into_iter()
        .flatten(),
    );
    let ran = app
        .cutover
        .run(s, &args, &who.actor(), SHORT)
        .await
        .map_err(Failure::internal)?;
    if ran.ok() {
        Ok(ran.stdout)
    } else {
        Err(Failure::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ran.message(),
        ))
    }
}

/// `cutover status -o json`: the live release, each service's containers (image, health,
/// slot), the lease and unfinished operations.
pub async fn status(app: &App, who: &Principal, stack: &str) -> Result<Value, Failure> {
    let s = app.stack(stack)?;
    require(who, Permission::Read)?;
    let args = ["status".to_string(), "-o".into(), "json".into()];
    let ran = app
        .cutover
        .run(s, &args, &who.actor(), SHORT)
        .await
        .map_err(Failure::internal)?;
    serde_json::from_str(&ran.stdout).map_err(|_| Failure::internal(ran.message()))
}

/// `cutover restore-points list -o json`.
pub async fn restore_points(app: &App, who: &Principal, stack: &str) -> Result<Value, Failure> {
    let s = app.stack(stack)?;
    require(who, Permission::Read)?;
    let args = ["restore-points", "list", "-o", "json"].map(String::from);
    let ran = app
        .cutover
        .run(s, &args, &who.actor(), SHORT)
        .await
        .map_err(Failure::internal)?;
    serde_json::from_str(&ran.stdout).map_err(|_| Failure::internal(ran.message()))
}

/// What a check of the restore points found.
pub struct Verified {
    pub ok: bool,
    pub report: String,
}

/// `cutover restore-points verify`: every restore point against its manifest.
pub async fn verify(app: &Arc<App>, who: &Principal, stack: &str) -> Result<Verified, Failure> {
    let s = app.stack(stack)?;
    allowed(app, who, Permission::Change, "verify", stack, None)?;
    let args = ["restore-points", "verify"].map(String::from);
    let ran = app
        .cutover
        .run(s, &args, &who.actor(), VERIFY)
        .await
        .map_err(Failure::internal)?;
    let outcome = if ran.ok() {
        "ok".to_string()
    } else {
        format!("damaged (exit {})", ran.code)
    };
    audit(app, who, "verify", Some(stack), None, &outcome)?;
    Ok(Verified {
        ok: ran.ok(),
        report: format!("{}{}", ran.stdout, ran.stderr).trim().to_string(),
    })
}

/// Starts a long command and audits it: `started operation N`, completed with how it ended.
async fn start(
    app: &Arc<App>,
    who: &Principal,
    action: &str,
    stack: &str,
    target: Option<&str>,
    args: Vec<String>,
) -> Result<u64, Failure> {
    let s = app.stack(stack)?;
    let entry = audit(app, who, action, Some(stack), target, "starting")?;
    let started = app.cutover.start(s, &args, &who.actor()).await;
    match started {
        Ok(Started::Operation { id, exit }) => {
            app.home()
                .audit_outcome(entry, &format!("operation {id}"))?;
            // Completed with how it ended, once its process has exited.
            let app = app.clone();
            tokio::spawn(async move {
                if let Ok(code) = exit.await {
                    let _ = app.home().audit_outcome(
                        entry,
                        &format!("operation {id}: {} (exit {code})", exit_meaning(code)),
                    );
                }
            });
            Ok(id)
        }
        Ok(Started::Ended { code, message }) => {
            let f = Failure::new(
                if code == 4 {
                    StatusCode::CONFLICT
                } else {
                    StatusCode::UNPROCESSABLE_ENTITY
                },
                message,
            );
            app.home().audit_outcome(
                entry,
                &format!(
                    "{} (exit {code}): {}",
                    exit_meaning(code),
                    first_line(&f.message)
                ),
            )?;
            Err(f)
        }
        Err(e) => {
            app.home().audit_outcome(entry, &format!("failed: {e}"))?;
            Err(Failure::internal(e))
        }
    }
}

fn first_line(s: &str) -> &str {
    s.lines()
        .rev()
        .find(|l| l.starts_with("cutover:"))
        .or_else(|| s.lines().next())
        .unwrap_or("")
}

/// `cutover apply --yes` with the changes asked for; the operation's id once it began.
pub async fn apply(
    app: &Arc<App>,
    who: &Principal,
    stack: &str,
    sets: &[String],
) -> Result<u64, Failure> {
    let target = sets.join(" ");
    allowed(app, who, Permission::Change, "apply", stack, Some(&target))?;
    let mut args = vec![
        "apply".to_string(),
        "--yes".into(),
        "-o".into(),
        "json".into(),
    ];
    args.extend(set_args(sets)?);
    start(app, who, "apply", stack, Some(&target), args).await
}

/// Whether a rollback puts the data back too.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum DataChoice {
    Keep,
    Restore,
}

/// `cutover rollback REVISION --data keep|restore --yes`.
pub async fn rollback(
    app: &Arc<App>,
    who: &Principal,
    stack: &str,
    revision: u64,
    data: DataChoice,
) -> Result<u64, Failure> {
    let data = match data {
        DataChoice::Keep => "keep",
        DataChoice::Restore => "restore",
    };
    let target = format!("release {revision}, data {data}");
    allowed(
        app,
        who,
        Permission::Change,
        "rollback",
        stack,
        Some(&target),
    )?;
    let args = [
        "rollback",
        &revision.to_string(),
        "--data",
        data,
        "--yes",
        "-o",
        "json",
    ]
    .map(String::from)
    .to_vec();
    start(app, who, "rollback", stack, Some(&target), args).await
}

/// `cutover resume --yes`: finishes the unfinished operation.
pub async fn resume(app: &Arc<App>, who: &Principal, stack: &str) -> Result<u64, Failure> {
    allowed(app, who, Permission::Change, "resume", stack, None)?;
    let unfinished = unfinished(app, stack)?;
    let args = ["resume", "--yes", "-o", "json"].map(String::from).to_vec();
    match start(app, who, "resume", stack, None, args).await {
        Ok(op) => Ok(op),
        // `resume` goes on with the operation it found: no new one begins.
        Err(f) if f.status != StatusCode::CONFLICT && unfinished.is_some() => unfinished.ok_or(f),
        Err(f) => Err(f),
    }
}

/// `cutover abort --yes`: stops the running operation at its next step boundary, or reverts
/// an interrupted one. Returns the operation it acted on.
pub async fn abort(app: &Arc<App>, who: &Principal, stack: &str) -> Result<u64, Failure> {
    allowed(app, who, Permission::Change, "abort", stack, None)?;
    let Some(op) = unfinished(app, stack)? else {
        let _ = audit(
            app,
            who,
            "abort",
            Some(stack),
            None,
            "refused: nothing to abort",
        );
        return Err(Failure::new(
            StatusCode::CONFLICT,
            format!("stack `{stack}` has no operation to abort"),
        ));
    };
    let s = app.stack(stack)?;
    let args = ["abort", "--yes"].map(String::from);
    let ran = app
        .cutover
        .run(s, &args, &who.actor(), Duration::from_secs(1800))
        .await
        .map_err(Failure::internal)?;
    audit(
        app,
        who,
        "abort",
        Some(stack),
        Some(&format!("operation {op}")),
        &format!(
            "{} (exit {})",
            if ran.ok() { "ok" } else { "failed" },
            ran.code
        ),
    )?;
    if ran.ok() || ran.code == 1 {
        Ok(op)
    } else {
        Err(Failure::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ran.message(),
        ))
    }
}

fn unfinished(app: &App, stack: &str) -> Result<Option<u64>, Failure> {
    Ok(app
        .stack(stack)?
        .with_store(|s| s.unfinished_operations())
        .map_err(Failure::internal)?
        .and_then(|ops| ops.first().map(|o| o.id)))
}

/// `cutover maintenance on|off`: the stack's maintenance page (a stack with `traffic:`).
pub async fn maintenance(
    app: &Arc<App>,
    who: &Principal,
    stack: &str,
    on: bool,
    message: Option<&str>,
) -> Result<String, Failure> {
    let what = if on { "on" } else { "off" };
    allowed(
        app,
        who,
        Permission::Change,
        "maintenance",
        stack,
        Some(what),
    )?;
    let s = app.stack(stack)?;
    let mut args = vec!["maintenance".to_string(), what.into()];
    if let (true, Some(m)) = (on, message.filter(|m| !m.trim().is_empty())) {
        args.push(format!("--message={m}"));
    }
    let ran = app
        .cutover
        .run(s, &args, &who.actor(), SHORT)
        .await
        .map_err(Failure::internal)?;
    let outcome = if ran.ok() {
        "ok".to_string()
    } else {
        format!("failed: {}", first_line(&ran.message()))
    };
    audit(app, who, "maintenance", Some(stack), Some(what), &outcome)?;
    if ran.ok() {
        Ok(ran.stdout.trim().to_string())
    } else {
        Err(Failure::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ran.message(),
        ))
    }
}

/// A second person approves, or refuses, what operation `op` waits for — never the person
/// who started it.
pub async fn decide(
    app: &Arc<App>,
    who: &Principal,
    stack: &str,
    op: u64,
    approve: bool,
    comment: Option<&str>,
) -> Result<String, Failure> {
    let action = if approve { "approve" } else { "reject" };
    let target = format!("operation {op}");
    allowed(app, who, Permission::Approve, action, stack, Some(&target))?;
    let s = app.stack(stack)?;
    let refuse = |status: StatusCode, message: String| {
        let _ = audit(
            app,
            who,
            action,
            Some(stack),
            Some(&target),
            &format!("refused: {message}"),
        );
        Err(Failure::new(status, message))
    };
    let Some(operation) = s
        .with_store(|st| st.operation(op))
        .map_err(Failure::internal)?
        .flatten()
    else {
        return refuse(
            StatusCode::NOT_FOUND,
            format!("operation {op} is not in stack `{stack}`"),
        );
    };
    if operation.holder.user == who.actor() {
        return refuse(
            StatusCode::FORBIDDEN,
            format!(
                "{} started operation {op}: a different person must approve it",
                who.name
            ),
        );
    }
    // The approval step records its request just after it starts: wait a moment for it.
    let mut pending = Vec::new();
    for _ in 0..40 {
        pending = s
            .with_store(|st| st.pending_approvals(op))
            .map_err(Failure::internal)?
            .unwrap_or_default();
        let waiting = s
            .with_store(|st| st.journal(op))
            .map_err(Failure::internal)?
            .unwrap_or_default()
            .iter()
            .any(|r| r.status == StepStatus::Started && r.step_id.contains("approval"));
        if !pending.is_empty() || !waiting {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if pending.is_empty() {
        return refuse(
            StatusCode::CONFLICT,
            format!("operation {op} waits for no approval"),
        );
    }
    let by = format!("{} (dashboard)", who.name);
    let comment = comment.map(str::trim).filter(|c| !c.is_empty());
    s.with_store(|st| st.decide(op, &by, approve, comment))
        .map_err(Failure::internal)?;
    let texts: Vec<&str> = pending.iter().map(|a| a.text.as_str()).collect();
    audit(
        app,
        who,
        action,
        Some(stack),
        Some(&target),
        &format!("ok: {}", texts.join(", ")),
    )?;
    Ok(format!(
        "{} by {by}: {}",
        if approve { "approved" } else { "refused" },
        texts.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_become_flags_that_cannot_be_read_as_others() {
        assert_eq!(
            set_args(&["app.image=cutover-demo:v2".into(), " ".into()]).expect("ok"),
            ["--set=app.image=cutover-demo:v2"]
        );
        assert!(set_args(&["--state-dir=/".into()]).is_err());
        assert!(set_args(&["no-equals".into()]).is_err());
    }
}
