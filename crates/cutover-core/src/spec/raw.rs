//! The stack file as written: every key it accepts, nothing checked yet.
//!
//! Leaves are [`Text`] (a string with its place) so that validation can check values and report
//! each problem where it was written. Values with a closed set of choices (strategies,
//! durations) stay strings here; validation parses them, so a bad one is one more diagnostic
//! instead of a parse that stops. Unknown keys are collected by the loader, not refused here.

use indexmap::IndexMap;
use serde::Deserialize;

use super::source::{Located, Text};

/// `command: ["gsh", "-check"]` or `command: gsh -check`. List items may be written as
/// numbers or booleans (`[sleep, 5]`, `[true]`): they are taken as written.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum StringOrList {
    One(String),
    Many(Vec<Scalar>),
}

/// A YAML scalar of any type, as the text it was written as (`8080`, `true`, `"x"`; null is "").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scalar(pub String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{Error, Visitor};
        use std::fmt;
        struct V;
        impl Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_bool<E: Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E: Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_unit<E: Error>(self) -> Result<Scalar, E> {
                Ok(Scalar(String::new()))
            }
            fn visit_none<E: Error>(self) -> Result<Scalar, E> {
                Ok(Scalar(String::new()))
            }
        }
        d.deserialize_any(V)
    }
}

/// The whole stack file.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RawStack {
    pub name: Option<Text>,
    pub protected: Option<Located<bool>>,
    /// What runs the services: `docker` (one engine, the default) or `swarm` (a Docker Swarm,
    /// through its manager).
    pub runtime: Option<Text>,
    #[serde(default)]
    pub vars: IndexMap<String, Text>,
    pub env_files: Option<Vec<Text>>,
    #[serde(default)]
    pub secrets: IndexMap<String, RawSecret>,
    pub include_compose: Option<Text>,
    #[serde(default)]
    pub services: IndexMap<String, RawService>,
    #[serde(default)]
    pub data: IndexMap<String, RawData>,
    #[serde(default)]
    pub checks: IndexMap<String, RawCheck>,
    #[serde(default)]
    pub steps: RawSteps,
    pub traffic: Option<RawTraffic>,
    #[serde(default)]
    pub environments: IndexMap<String, RawEnvironment>,
    /// Retention of restore points.
    pub restore_points: Option<RawRestorePoints>,
    /// What `cutover watch` does beyond applying each commit.
    pub watch: Option<RawWatch>,
    /// A promotion gate, usually set by an environment overlay.
    pub promote_from: Option<RawPromote>,
}

/// `promote_from: { environment: staging, state_dir: /srv/cutover/staging, soak: 1h }`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RawPromote {
    /// The environment (of this stack file) whose releases must have run each image first.
    pub environment: Option<Text>,
    /// Where that environment's state is.
    pub state_dir: Option<Text>,
    /// How long an image must have run there (default 0).
    pub soak: Option<Text>,
}

/// `watch: { git_revert: true, webhooks: [...] }`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RawWatch {
    /// After a commit's release was reverted, commit a `git revert` of it and push it.
    pub git_revert: Option<Located<bool>>,
    /// Where `cutover watch` posts what it does.
    pub webhooks: Option<Vec<RawWebhook>>,
    /// When `cutover watch` may apply on its own (default: any time).
    pub windows: Option<Vec<RawWindow>>,
}

/// `{ days: [sat, sun], from: "02:00", to: "05:00", tz: Europe/Berlin }`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RawWindow {
    pub days: Option<Vec<Text>>,
    pub from: Option<Text>,
    pub to: Option<Text>,
    /// Default `UTC`.
    pub tz: Option<Text>,
}

/// `{ url: ${SLACK_URL}, format: slack }`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RawWebhook {
    /// Often a secret (a Slack webhook URL is one).
    pub url: Option<Text>,
    /// `json` (default) or `slack`.
    pub format: Option<Text>,
}

/// `restore_points: { keep: 3 }`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RawRestorePoints {
    /// How many releases' restore points a successful apply keeps (0: all).
    pub keep: Option<Located<usize>>,
}

/// Where a secret's value comes from. Exactly one of the two.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RawSecret {
    /// The name of a process environment variable (or one from an env file).
    pub env: Option<Text>,
    /// A file whose content (trailing newline removed) is the value.
    pub file: Option<Text>,
}

/// A service. Every field is optional so the same type serves as an environment overlay and as
/// the cutover-specific extension of a service imported from a compose file.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RawService {
    pub image: Option<Text>,
    pub command: Option<Located<StringOrList>>,
    pub env: Option<IndexMap<String, Text>>,
    /// Published ports, `HOST:CONTAINER` or `IP:HOST:CONTAINER`, optional `/tcp|/udp`.
    pub ports: Option<Vec<Text>>,
    /// The container port that serves HTTP: the target of traffic routes and of `health.http`.
    pub port: Option<Located<u16>>,
    /// `NAME:/path[:ro]` for a named volume, `./dir:/path[:ro]` for a bind mount.
    pub volumes: Option<Vec<Text>>,
    pub depends_on: Option<Vec<Text>>,
    /// `recreate` (default), `blue-green` or `manual`.
    pub strategy: Option<Text>,
    pub health: Option<RawHealth>,
    /// How long a stop waits after SIGTERM before SIGKILL (default 10s).
    pub stop_grace: Option<Text>,
    /// `no`, `always`, `unless-stopped` (default) or `on-failure`.
    pub restart: Option<Text>,
    /// A one-shot job with the new image before the new containers start.
    pub migrate: Option<RawMigrate>,
    /// The operator's configuration files, reviewed against the defaults each image ships.
    pub config_files: Option<Vec<RawConfigFile>>,
    /// Run an init process as PID 1 (Docker's tini), which forwards signals to the app.
    pub init: Option<Located<bool>>,
    /// Paths mounted as tmpfs (`/run`, `/tmp:size=64m`).
    pub tmpfs: Option<Vec<Text>>,
    /// Containers started by hand (`docker run --name …`) that the first apply takes over.
    pub adopt: Option<Vec<Text>>,
    /// How `cutover watch --images` moves the image's tag: `{ semver: "~2" }` or
    /// `{ regex: "2\\.\\d+-alpine" }`.
    pub update: Option<RawUpdate>,
    /// On `runtime: swarm`: replicas, placement and how Swarm replaces them.
    pub swarm: Option<RawSwarm>,
}

/// `swarm: { replicas: 3, constraints: [node.labels.zone==a], max_per_node: 1,
/// order: stop-first, parallelism: 1, delay: 2s }`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RawSwarm {
    pub replicas: Option<Located<u64>>,
    pub constraints: Option<Vec<Text>>,
    pub max_per_node: Option<Located<u64>>,
    pub order: Option<Text>,
    pub parallelism: Option<Located<u64>>,
    pub delay: Option<Text>,
}

/// A service's update policy: exactly one of the three.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RawUpdate {
    pub semver: Option<Text>,
    pub regex: Option<Text>,
    /// Follow a floating tag (`latest`, `stable`) by its digest.
    pub digest: Option<Located<bool>>,
}

/// `config_files: [{ path: ./conf/app.ini, defaults: /etc/app/app.example.ini }]`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RawConfigFile {
    /// The operator's file on this host (relative to the stack file).
    pub path: Option<Text>,
    /// The file in the image that lists the version's settings (a sample config).
    pub defaults: Option<Text>,
    /// `yaml`, `ini`, `toml` or `env`; by default from the file names' extensions.
    pub format: Option<Text>,
}

/// `migrate: { command: [...], timeout: 10m }`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RawMigrate {
    pub command: Option<Located<StringOrList>>,
    pub timeout: Option<Text>,
}

/// How to tell that a service is up.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RawHealth {
    /// An HTTP path on the service's `port`.
    pub http: Option<Text>,
    pub expect_status: Option<Located<u16>>,
    pub body_contains: Option<Text>,
    /// A container port that must accept TCP connections.
    pub tcp: Option<Located<u16>>,
    /// A command run in the container; exit 0 is healthy.
    pub command: Option<Located<StringOrList>>,
    pub interval: Option<Text>,
    /// Time one probe may take.
    pub timeout: Option<Text>,
    /// Failures during this time after start do not count.
    pub start_period: Option<Text>,
    /// Give up when not healthy after this long.
    pub deadline: Option<Text>,
}

/// One data set that gets a restore point.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RawData {
    pub postgres: Option<RawPostgres>,
    pub sqlite: Option<RawSqlite>,
    pub volume: Option<RawVolume>,
    /// Services that write this data: stopped while its restore point is taken.
    /// Default: every service of the stack.
    pub writers: Option<Vec<Text>>,
    pub schema_version: Option<RawSchemaVersion>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct RawPostgres {
    /// Admin connection URL (usually a secret).
    pub url: Option<Text>,
    pub database: Option<Text>,
    /// Snapshot and restore only these tables.
    pub tables: Option<Vec<Text>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct RawSqlite {
    pub path: Option<Text>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct RawVolume {
    /// A Docker named volume.
    pub name: Option<Text>,
    /// A directory on the host.
    pub path: Option<Text>,
    /// How the restore point is made: `snapshot` (default: a reflink clone or a copy on the
    /// data's own filesystem, put back by rename) or `archive` (tar+zstd in the state dir).
    pub method: Option<Text>,
    /// Also write the durable tar+zstd archive of the snapshot after a successful apply.
    pub durable: Option<Located<bool>>,
}

/// A query whose single value is the data's schema version.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RawSchemaVersion {
    pub query: Option<Text>,
    /// The value expected after the upgrade (usually `${version}`).
    pub expect: Option<Text>,
}

/// Something that must hold. Exactly one kind key.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RawCheck {
    pub http: Option<RawHttpCheck>,
    /// `SERVICE:PORT` or `HOST:PORT`.
    pub tcp: Option<Text>,
    pub sql: Option<RawSqlCheck>,
    pub exec: Option<RawExec>,
    pub command: Option<Located<StringOrList>>,
    pub logs: Option<RawLogsCheck>,
    /// A service whose containers must report healthy.
    pub container_health: Option<Text>,
    pub timeout: Option<Text>,
    pub interval: Option<Text>,
    pub retries: Option<Located<u32>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct RawHttpCheck {
    pub url: Option<Text>,
    pub service: Option<Text>,
    pub path: Option<Text>,
    pub status: Option<Located<u16>>,
    pub body_contains: Option<Text>,
    pub body_regex: Option<Text>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct RawSqlCheck {
    pub data: Option<Text>,
    pub query: Option<Text>,
    pub expect: Option<Text>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct RawExec {
    pub service: Option<Text>,
    pub command: Option<Located<StringOrList>>,
    /// For checks: the output must contain this.
    pub output_contains: Option<Text>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct RawLogsCheck {
    pub service: Option<Text>,
    /// No line since the container started may contain this.
    pub absent: Option<Text>,
    /// Some line since the container started must contain this.
    pub present: Option<Text>,
}

/// Custom steps, per phase.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RawSteps {
    #[serde(default)]
    pub plan: Vec<RawStep>,
    #[serde(default)]
    pub preflight: Vec<RawStep>,
    #[serde(default)]
    pub quiesce: Vec<RawStep>,
    #[serde(default)]
    pub upgrade: Vec<RawStep>,
    #[serde(default)]
    pub verify: Vec<RawStep>,
    #[serde(default)]
    pub release: Vec<RawStep>,
    #[serde(default)]
    pub revert: Vec<RawStep>,
}

/// One custom step. Exactly one kind key.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RawStep {
    pub name: Option<Text>,
    /// A human confirms in the terminal.
    pub manual: Option<Text>,
    /// A different person than the one running the operation approves.
    pub approval: Option<Text>,
    /// A host command (argv; a string is split on whitespace unless `shell: true`).
    pub run: Option<Located<StringOrList>>,
    pub shell: Option<Located<bool>>,
    pub exec: Option<RawExec>,
    pub sql: Option<RawSqlCheck>,
    pub http: Option<RawHttpCheck>,
    /// Run the named check once.
    pub check: Option<Text>,
    /// Wait until the named check passes.
    pub wait: Option<Text>,
    pub timeout: Option<Text>,
    /// May the engine run this step again after a crash without asking? Default: false for
    /// `run`, `exec`, `sql` and `http`; true for checks, waits, manual and approval.
    pub rerun_safe: Option<Located<bool>>,
    /// `always` (default), `upgrade` (not on a first deploy) or `first-deploy`.
    pub when: Option<Text>,
}

/// The embedded proxy in front of the services.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RawTraffic {
    pub listen: Option<Text>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    /// The longest a request is held during a short switch (default 10s).
    pub max_hold: Option<Text>,
    /// An HTML file shown with 503 during maintenance.
    pub maintenance_page: Option<Text>,
    /// TLS termination: a PEM certificate chain and its private key.
    pub tls: Option<RawTls>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct RawTls {
    pub cert: Option<Text>,
    pub key: Option<Text>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct RawRoute {
    pub host: Option<Text>,
    pub path: Option<Text>,
    pub service: Option<Text>,
}

/// A named overlay (`--env prod`): merged over the base stack.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RawEnvironment {
    #[serde(default)]
    pub vars: IndexMap<String, Text>,
    pub env_files: Option<Vec<Text>>,
    #[serde(default)]
    pub secrets: IndexMap<String, RawSecret>,
    pub protected: Option<Located<bool>>,
    #[serde(default)]
    pub services: IndexMap<String, RawService>,
    pub traffic: Option<RawTraffic>,
    pub promote_from: Option<RawPromote>,
}

impl RawService {
    /// Lays `over` on top of `self`: fields `over` sets win; `env` merges key by key.
    pub fn overlay(&mut self, over: RawService) {
        macro_rules! take {
            ($($f:ident),*) => { $( if over.$f.is_some() { self.$f = over.$f; } )* };
        }
        take!(
            image,
            command,
            ports,
            port,
            volumes,
            depends_on,
            strategy,
            health,
            stop_grace,
            restart,
            migrate,
            config_files,
            init,
            tmpfs,
            adopt,
            update,
            swarm
        );
        if let Some(env) = over.env {
            self.env.get_or_insert_with(IndexMap::new).extend(env);
        }
    }
}
