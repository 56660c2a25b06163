//! An operation's journal as a stream of events — the same objects `-o json` prints while
//! it runs (`cutover_ops::shapes::event`) — for the Server-Sent Events endpoint and the live
//! page. Operations run in other processes (the CLI, or a command the dashboard started), so
//! the journal is read from the store: a look every `POLL`, events for what is new.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use cutover_store::{OperationStatus, StepStatus, Store};
use serde_json::Value;
use tokio::sync::mpsc;

/// How often the journal is looked at.
pub const POLL: Duration = Duration::from_millis(25);

/// What changed since the last look.
#[derive(Default)]
pub struct Follower {
    /// seq → whether its end was sent.
    seen: HashMap<u64, bool>,
    ended: bool,
}

impl Follower {
    /// The events not sent yet, in journal order; `finished` last once the operation has
    /// ended (as `-o json` prints it: outcome, exit code, summary), after which
    /// [`ended`](Follower::ended) says so.
    pub fn look(&mut self, store: &Store, op: u64) -> Result<Vec<Value>, String> {
        let Some(operation) = store.operation(op).map_err(|e| e.to_string())? else {
            return Err(format!("operation {op} is not in the store"));
        };
        let journal = store.journal(op).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for s in &journal {
            let finished = s.status != StepStatus::Started;
            match self.seen.get(&s.seq) {
                Some(true) => {}
                Some(false) if !finished => {}
                Some(false) => {
                    out.extend(cutover_ops::shapes::events_of(op, s).into_iter().skip(1));
                    self.seen.insert(s.seq, true);
                }
                None => {
                    out.extend(cutover_ops::shapes::events_of(op, s));
                    self.seen.insert(s.seq, finished);
                }
            }
        }
        if operation.status != OperationStatus::Running {
            let refused = match operation.release {
                Some(r) => store
                    .release(r)
                    .map_err(|e| e.to_string())?
                    .is_some_and(|r| r.status == cutover_store::ReleaseStatus::Refused),
                None => false,
            };
            out.push(cutover_ops::shapes::finished_from_store(
                &operation, refused,
            ));
            self.ended = true;
        }
        Ok(out)
    }

    /// Whether the operation's end was in the last look: the stream is over.
    pub fn ended(&self) -> bool {
        self.ended
    }
}

/// Follows operation `op` of the stack whose state is in `state_dir` on a thread of its
/// own, sending each event; ends when the operation has ended or nobody listens.
pub fn follow(state_dir: PathBuf, stack: String, op: u64) -> mpsc::Receiver<Value> {
    let (tx, rx) = mpsc::channel(256);
    std::thread::spawn(move || {
        let store = match Store::open(&state_dir, &stack) {
            Ok(s) => s,
            Err(e) => {
                let _ = tx
                    .blocking_send(serde_json::json!({"event": "error", "message": e.to_string()}));
                return;
            }
        };
        let mut f = Follower::default();
        loop {
            match f.look(&store, op) {
                Ok(events) => {
                    for e in events {
                        if tx.blocking_send(e).is_err() {
                            return;
                        }
                    }
                }
                Err(message) => {
                    let _ =
                        tx.blocking_send(serde_json::json!({"event": "error", "message": message}));
                    return;
                }
            }
            if f.ended() || tx.is_closed() {
                return;
            }
            std::thread::sleep(POLL);
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;
    use cutover_store::Holder;

    #[test]
    fn each_start_and_end_is_sent_once_and_the_operation_closes_the_stream() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = Store::open(tmp.path(), "demo").expect("store");
        let op = store
            .begin_operation("apply", None, &Holder::current())
            .expect("op");
        let mut f = Follower::default();
        let kinds = |v: &[Value]| -> Vec<String> {
            v.iter()
                .map(|e| {
                    format!(
                        "{}:{}",
                        e["event"].as_str().unwrap_or("?"),
                        e["step"].as_str().unwrap_or("")
                    )
                })
                .collect()
        };
        assert!(f.look(&store, op.id).expect("look").is_empty());
        let seq = store
            .step_started(op.id, "preflight.image.app", "preflight", "image present")
            .expect("start");
        let got = f.look(&store, op.id).expect("look");
        assert_eq!(kinds(&got), ["step_started:preflight.image.app"]);
        assert!(f.look(&store, op.id).expect("look").is_empty(), "once");
        store
            .step_finished(op.id, seq, StepStatus::Succeeded, "ok")
            .expect("finish");
        let got = f.look(&store, op.id).expect("look");
        assert_eq!(kinds(&got), ["step_finished:preflight.image.app"]);
        assert_eq!(got[0]["status"], "succeeded");
        assert_eq!(got[0]["output"], "ok");
        store
            .finish_operation(op.id, OperationStatus::Succeeded, None)
            .expect("finish op");
        let got = f.look(&store, op.id).expect("look");
        assert_eq!(kinds(&got), ["finished:"]);
        assert_eq!(got[0]["outcome"], "succeeded");
        assert_eq!(got[0]["exit_code"], 0);
        assert!(f.ended());
    }
}
