//! `include_compose: docker-compose.yml`: services imported from an existing compose file.
//!
//! We read the parts of the Compose format that describe what runs — image, command,
//! environment, ports, volumes, depends_on, healthcheck, restart, stop_grace_period — and turn
//! each service into a [`RawService`], so the rest of the loader cannot tell an imported service
//! from one written in the stack file. Keys we do not import are reported as warnings, never
//! silently dropped.

use indexmap::IndexMap;
use serde::Deserialize;

use super::raw::{RawHealth, RawService, Scalar, StringOrList};
use super::source::{Located, Text};

/// A compose file: only `services` is imported.
#[derive(Debug, Default, Deserialize)]
pub struct ComposeFile {
    #[serde(default)]
    pub services: IndexMap<String, ComposeService>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ComposeService {
    pub image: Option<Text>,
    pub command: Option<Located<StringOrList>>,
    pub environment: Option<Located<ComposeEnv>>,
    #[serde(default)]
    pub ports: Vec<Located<ComposePort>>,
    #[serde(default)]
    pub volumes: Vec<Located<ComposeVolume>>,
    pub depends_on: Option<Located<ComposeDependsOn>>,
    pub healthcheck: Option<ComposeHealth>,
    pub restart: Option<Text>,
    pub stop_grace_period: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ComposeEnv {
    Map(IndexMap<String, Option<Scalar>>),
    List(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ComposePort {
    Short(Scalar),
    Long {
        target: Scalar,
        published: Option<Scalar>,
        host_ip: Option<String>,
        protocol: Option<String>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ComposeVolume {
    Short(String),
    Long {
        source: Option<String>,
        target: String,
        read_only: Option<bool>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ComposeDependsOn {
    List(Vec<String>),
    Map(IndexMap<String, serde::de::IgnoredAny>),
}

#[derive(Debug, Default, Deserialize)]
pub struct ComposeHealth {
    pub test: Option<Located<StringOrList>>,
    pub interval: Option<Text>,
    pub timeout: Option<Text>,
    pub start_period: Option<Text>,
    pub retries: Option<Located<u32>>,
    pub disable: Option<bool>,
}

fn text_at<T>(at: &Located<T>, value: String) -> Text {
    Located::new(value, at.at)
}

impl ComposeService {
    /// The service as cutover sees it.
    pub fn into_raw(self) -> RawService {
        let env = self.environment.map(|e| {
            let at = e.at;
            let mut out = IndexMap::new();
            match e.value {
                ComposeEnv::Map(m) => {
                    for (k, v) in m {
                        out.insert(k, Located::new(v.map(|s| s.0).unwrap_or_default(), at));
                    }
                }
                ComposeEnv::List(items) => {
                    for item in items {
                        let (k, v) = item.split_once('=').unwrap_or((item.as_str(), ""));
                        out.insert(k.to_string(), Located::new(v.to_string(), at));
                    }
                }
            }
            out
        });
        let ports: Vec<Text> = self
            .ports
            .iter()
            .map(|p| {
                let s = match &p.value {
                    ComposePort::Short(s) => s.0.clone(),
                    ComposePort::Long {
                        target,
                        published,
                        host_ip,
                        protocol,
                    } => {
                        let mut s = String::new();
                        if let Some(ip) = host_ip {
                            s.push_str(ip);
                            s.push(':');
                        }
                        if let Some(p) = published {
                            s.push_str(&p.0);
                            s.push(':');
                        }
                        s.push_str(&target.0);
                        if let Some(proto) = protocol {
                            s.push('/');
                            s.push_str(proto);
                        }
                        s
                    }
                };
                text_at(p, s)
            })
            .collect();
        let volumes: Vec<Text> = self
            .volumes
            .iter()
            .map(|v| {
                let s = match &v.value {
                    ComposeVolume::Short(s) => s.clone(),
                    ComposeVolume::Long {
                        source,
                        target,
                        read_only,
                    } => {
                        let mut s = match source {
                            Some(src) => format!("{src}:{target}"),
                            None => target.clone(),
                        };
                        if read_only == &Some(true) {
                            s.push_str(":ro");
                        }
                        s
                    }
                };
                text_at(v, s)
            })
            .collect();
        let depends_on = self.depends_on.map(|d| {
            let names: Vec<String> = match &d.value {
                ComposeDependsOn::List(l) => l.clone(),
                ComposeDependsOn::Map(m) => m.keys().cloned().collect(),
            };
            names.into_iter().map(|n| text_at(&d, n)).collect()
        });
        let health = self.healthcheck.and_then(|h| {
            if h.disable == Some(true) {
                return None;
            }
            let command = h.test.and_then(|t| {
                let at = t.at;
                match t.value {
                    StringOrList::One(s) => Some(Located::new(StringOrList::One(s), at)),
                    StringOrList::Many(v) => match v.first().map(|s| s.0.as_str()) {
                        Some("CMD") => Some(Located::new(StringOrList::Many(v[1..].to_vec()), at)),
                        Some("CMD-SHELL") => {
                            let words: Vec<&str> = v[1..].iter().map(|s| s.0.as_str()).collect();
                            Some(Located::new(StringOrList::One(words.join(" ")), at))
                        }
                        _ => None, // ["NONE"] or empty: no check
                    },
                }
            })?;
            Some(RawHealth {
                command: Some(command),
                interval: h.interval,
                timeout: h.timeout,
                start_period: h.start_period,
                ..RawHealth::default()
            })
        });
        RawService {
            image: self.image,
            command: self.command,
            env,
            ports: (!ports.is_empty()).then_some(ports),
            volumes: (!volumes.is_empty()).then_some(volumes),
            depends_on,
            health,
            stop_grace: self.stop_grace_period,
            restart: self.restart,
            ..RawService::default()
        }
    }
}
