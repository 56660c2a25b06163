//! One JSON shape per concept, shared by every command's `-o json` and the dashboard's API
//! (docs/json.md): a release, an operation, a journal step and its events, the lease, who
//! did something. Times are RFC 3339
//! (UTC, seconds); records are nested objects, never JSON inside a string; the lease's
//! token, which renews and releases it, is never shown.

use cutover_store::{Holder, Lease, Operation, Release, StepRecord, StepStatus};
use serde_json::{Value, json};

use crate::record::ReleaseImages;

/// A timestamp (unix millis) as RFC 3339, to the second: the store's format.
pub fn when(millis: i64) -> String {
    cutover_store::format_millis(millis)
}

pub fn holder(h: &Holder) -> Value {
    json!({ "user": h.user, "host": h.host, "pid": h.pid })
}

/// A release; `images` nested (a damaged record is `null` with `images_error` saying why);
/// `operation` the last one that worked on it, when known.
pub fn release(r: &Release, operation: Option<Value>) -> Value {
    let (images, images_error) = match ReleaseImages::of_release(r.revision, &r.images_json) {
        Ok(i) => (serde_json::to_value(&i.0).unwrap_or(Value::Null), None),
        Err(e) => (Value::Null, Some(e.to_string())),
    };
    let mut v = json!({
        "revision": r.revision,
        "status": r.status,
        "created_at": when(r.created_at),
        "updated_at": when(r.updated_at),
        "created_by": r.created_by,
        "host": r.host,
        "reason": r.reason,
        // Where the change came from: a git commit `cutover watch` applied; null for a person.
        "source": r
            .source_json
            .as_deref()
            .and_then(|j| serde_json::from_str::<Value>(j).ok())
            .unwrap_or(Value::Null),
        "images": images,
        "operation": operation.unwrap_or(Value::Null),
    });
    if let Some(e) = images_error {
        v["images_error"] = Value::String(e);
    }
    v
}

/// An operation, with the step it failed at or stopped at when the caller knows it.
pub fn operation(o: &Operation, failed: Option<&StepRecord>, last: Option<&StepRecord>) -> Value {
    json!({
        "id": o.id,
        "kind": o.kind,
        "release": o.release,
        "status": o.status,
        "started_at": when(o.started_at),
        "finished_at": o.finished_at.map(when),
        "started_by": holder(&o.holder),
        "failed_step": failed.map(step),
        "last_step": last.map(step),
    })
}

pub fn step(s: &StepRecord) -> Value {
    json!({
        "seq": s.seq,
        "id": s.step_id,
        "phase": s.phase,
        "title": s.title,
        "status": s.status,
        "started_at": when(s.started_at),
        "finished_at": s.finished_at.map(when),
        "output": s.output_tail,
    })
}

pub fn lease(l: &Lease) -> Value {
    json!({
        "holder": holder(&l.holder),
        "operation": l.operation,
        "acquired_at": when(l.acquired_at),
        "renewed_at": when(l.renewed_at),
        "expires_at": when(l.expires_at),
    })
}

/// What happened to a journal step, as `-o json` streams it while an operation runs and
/// the dashboard's event stream sends it: `step_started`, or `step_finished` with the
/// status and the output's tail. `at` is RFC 3339.
pub struct StepEvent<'a> {
    pub operation: u64,
    pub step: &'a str,
    pub phase: &'a str,
    pub title: &'a str,
    /// `None` when the step started; its status once it finished.
    pub finished: Option<(StepStatus, &'a str)>,
    pub at: String,
}

pub fn event(e: &StepEvent<'_>) -> Value {
    json!({
        "event": if e.finished.is_some() { "step_finished" } else { "step_started" },
        "operation": e.operation,
        "step": e.step,
        "phase": e.phase,
        "title": e.title,
        "status": e.finished.map(|(s, _)| s.as_str()),
        "output": e.finished.map(|(_, o)| o),
        "at": e.at,
    })
}

/// A timestamp (unix millis) as RFC 3339 to the millisecond: when a step started or ended.
pub fn when_ms(millis: i64) -> String {
    jiff::Timestamp::from_millisecond(millis)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// The events a journal record stands for: its start, and its end once it finished.
pub fn events_of(operation: u64, s: &StepRecord) -> Vec<Value> {
    let mut out = vec![event(&StepEvent {
        operation,
        step: &s.step_id,
        phase: &s.phase,
        title: &s.title,
        finished: None,
        at: when_ms(s.started_at),
    })];
    if let (Some(at), false) = (s.finished_at, s.status == StepStatus::Started) {
        out.push(event(&StepEvent {
            operation,
            step: &s.step_id,
            phase: &s.phase,
            title: &s.title,
            finished: Some((s.status, s.output_tail.as_str())),
            at: when_ms(at),
        }));
    }
    out
}

/// The last event of an operation, as `-o json` prints it when the command ends and the
/// event stream sends it: how it ended, the exit code that says so, and the summary.
pub fn finished(
    operation: u64,
    kind: &str,
    release: Option<u64>,
    outcome: &str,
    exit_code: u8,
    summary: &str,
) -> Value {
    json!({
        "event": "finished",
        "operation": operation,
        "kind": kind,
        "release": release,
        "outcome": outcome,
        "exit_code": exit_code,
        "summary": summary,
    })
}

/// The `finished` event of an operation read back from the store: the exit code its
/// command ended with follows from its status (and a refusal from its release's).
pub fn finished_from_store(o: &Operation, release_refused: bool) -> Value {
    use cutover_store::OperationStatus as S;
    let code = match o.status {
        S::Succeeded => 0,
        S::Failed if release_refused => 2,
        S::RevertFailed => 3,
        S::Running => 4,
        S::Failed | S::Reverted | S::Aborted => 1,
    };
    let summary = o.error.clone().unwrap_or_else(|| match o.release {
        Some(r) => format!("{} {}: release {r} runs", o.kind, o.status),
        None => format!("{} {}", o.kind, o.status),
    });
    finished(o.id, &o.kind, o.release, o.status.as_str(), code, &summary)
}
