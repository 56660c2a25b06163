//! The place of every mapping key of a YAML document, by path.
//!
//! serde tells us *which* keys it did not know (through `serde_ignored`), but not where they
//! are. This walks the parser's events once and remembers where each key was written, so an
//! unknown key can be reported at its own line and column — all of them, not just the first.

use std::collections::HashMap;

use serde_saphyr::granit_parser::{Event, Parser};

use super::source::{Loc, SourceId};

/// One step of a path into a YAML document.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// `services.web.imagee` for humans.
pub fn display_path(path: &[Segment]) -> String {
    let mut out = String::new();
    for (i, s) in path.iter().enumerate() {
        match s {
            Segment::Key(k) => {
                if i > 0 {
                    out.push('.');
                }
                out.push_str(k);
            }
            Segment::Index(n) => out.push_str(&format!("[{n}]")),
        }
    }
    out
}

/// Converts a `serde_ignored` path to segments, dropping the `Option`/newtype layers.
pub fn from_ignored(path: &serde_ignored::Path<'_>) -> Vec<Segment> {
    fn walk(path: &serde_ignored::Path<'_>, out: &mut Vec<Segment>) {
        match path {
            serde_ignored::Path::Root => {}
            serde_ignored::Path::Seq { parent, index } => {
                walk(parent, out);
                out.push(Segment::Index(*index));
            }
            serde_ignored::Path::Map { parent, key } => {
                walk(parent, out);
                out.push(Segment::Key(key.clone()));
            }
            serde_ignored::Path::Some { parent }
            | serde_ignored::Path::NewtypeStruct { parent }
            | serde_ignored::Path::NewtypeVariant { parent } => walk(parent, out),
        }
    }
    let mut out = Vec::new();
    walk(path, &mut out);
    out
}

/// Key locations of one document.
#[derive(Debug, Default)]
pub struct KeyMap {
    keys: HashMap<Vec<Segment>, Loc>,
}

enum Frame {
    Map {
        key: Option<String>,
        expect_key: bool,
    },
    Seq {
        next: usize,
    },
}

impl KeyMap {
    /// Walks `text`. A document the parser rejects yields what was read up to the error; the
    /// error itself is reported by the deserializer, which has the better message.
    pub fn build(text: &str, source: SourceId) -> KeyMap {
        let mut keys = HashMap::new();
        let mut stack: Vec<Frame> = Vec::new();
        let mut path: Vec<Segment> = Vec::new();
        for item in Parser::new_from_str(text) {
            let Ok((event, span)) = item else { break };
            let opens = matches!(event, Event::MappingStart(..) | Event::SequenceStart(..));
            let closes = matches!(event, Event::MappingEnd | Event::SequenceEnd);
            if closes {
                stack.pop();
                // The collection that closed was the value of its parent's current slot.
                Self::value_done(&mut stack, &mut path);
                continue;
            }
            let is_node = opens || matches!(event, Event::Scalar(..) | Event::Alias(..));
            if !is_node {
                continue;
            }
            // A node in key position of a mapping: remember where the key is.
            if let Some(Frame::Map { key, expect_key }) = stack.last_mut()
                && *expect_key
            {
                let name = match &event {
                    Event::Scalar(v, ..) => v.to_string(),
                    _ => String::from("?"),
                };
                path.push(Segment::Key(name.clone()));
                keys.entry(path.clone()).or_insert(Loc {
                    source,
                    line: span.start.line() as u32,
                    col: span.start.col() as u32 + 1,
                });
                *key = Some(name);
                *expect_key = false;
                if opens {
                    // A complex key: skip its contents as an anonymous value.
                    stack.push(Self::frame_for(&event));
                }
                continue;
            }
            if let Some(Frame::Seq { next }) = stack.last_mut() {
                path.push(Segment::Index(*next));
                *next += 1;
            }
            if opens {
                stack.push(Self::frame_for(&event));
            } else {
                Self::value_done(&mut stack, &mut path);
            }
        }
        // Keys merged in with `<<: {...}` belong to the mapping that merges them.
        let merged: Vec<(Vec<Segment>, Loc)> = keys
            .iter()
            .filter(|(p, _)| p.iter().any(|s| matches!(s, Segment::Key(k) if k == "<<")))
            .map(|(p, l)| {
                let flat = p
                    .iter()
                    .filter(|s| !matches!(s, Segment::Key(k) if k == "<<"))
                    .cloned()
                    .collect();
                (flat, *l)
            })
            .collect();
        for (p, l) in merged {
            keys.entry(p).or_insert(l);
        }
        KeyMap { keys }
    }

    fn frame_for(event: &Event<'_>) -> Frame {
        match event {
            Event::MappingStart(..) => Frame::Map {
                key: None,
                expect_key: true,
            },
            _ => Frame::Seq { next: 0 },
        }
    }

    /// A value (scalar or closed collection) finished: pop its path segment, flip the parent
    /// mapping back to expecting a key.
    fn value_done(stack: &mut [Frame], path: &mut Vec<Segment>) {
        match stack.last_mut() {
            Some(Frame::Map { key, expect_key }) => {
                if key.take().is_some() {
                    path.pop();
                }
                *expect_key = true;
            }
            Some(Frame::Seq { .. }) => {
                path.pop();
            }
            None => {}
        }
    }

    /// Where the key at `path` was written.
    pub fn get(&self, path: &[Segment]) -> Option<Loc> {
        self.keys.get(path).copied()
    }

    /// Where `path` was written, or the nearest ancestor that was.
    pub fn nearest(&self, path: &[Segment]) -> Option<Loc> {
        (0..=path.len()).rev().find_map(|n| self.get(&path[..n]))
    }

    /// Where `path` was written under some other key — an environment overlay's
    /// (`environments.prod.secrets.X` for `secrets.X`) — the first such place in the file.
    pub fn under_any(&self, path: &[Segment]) -> Option<Loc> {
        if path.is_empty() {
            return None;
        }
        self.keys
            .iter()
            .filter(|(k, _)| k.len() > path.len() && k.ends_with(path))
            .map(|(_, loc)| *loc)
            .min_by_key(|l| (l.line, l.col))
    }

    /// The first key of the document: where a diagnostic with no better place points.
    pub fn first(&self) -> Option<Loc> {
        self.keys.values().copied().min_by_key(|l| (l.line, l.col))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(p: &[&str]) -> Vec<Segment> {
        p.iter()
            .map(|s| match s.parse::<usize>() {
                Ok(n) => Segment::Index(n),
                Err(_) => Segment::Key((*s).to_string()),
            })
            .collect()
    }

    #[test]
    fn finds_nested_keys_in_block_and_flow_style() {
        let text = "name: x\nservices:\n  web:\n    image: a\n    env: {A: 1, B: 2}\n  db:\n    ports:\n      - p: 1\n        q: 2\n";
        let m = KeyMap::build(text, SourceId(0));
        let at = |p: &[&str]| m.get(&key(p)).map(|l| (l.line, l.col));
        assert_eq!(at(&["name"]), Some((1, 1)));
        assert_eq!(at(&["services", "web", "image"]), Some((4, 5)));
        assert_eq!(at(&["services", "web", "env", "B"]), Some((5, 17)));
        assert_eq!(at(&["services", "db"]), Some((6, 3)));
        assert_eq!(at(&["services", "db", "ports", "0", "q"]), Some((9, 9)));
        assert_eq!(at(&["services", "nope"]), None);
        let near = m
            .nearest(&key(&["services", "web", "nope"]))
            .map(|l| l.line);
        assert_eq!(near, Some(3));
    }
}
