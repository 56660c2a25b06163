//! One JSON shape per concept, shared by every command's `-o json` (docs/json.md): a
//! release, an operation, a journal step, the lease, who did something. Times are RFC 3339
//! (UTC, seconds); records are nested objects, never JSON inside a string; the lease's
//! token, which renews and releases it, is never shown.

use cutover_ops::record::ReleaseImages;
use cutover_store::{Holder, Lease, Operation, Release, StepRecord};
use serde_json::{Value, json};

use crate::commands::when;

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
