//! The validated stack: what the plan and the engine work from.
//!
//! Everything here has been checked: names resolve, durations parsed, variables expanded. It
//! is also what a release records (serialized as JSON), so it crosses a boundary: secrets are
//! stored as references (`${DB_PASSWORD}`), never as values.

use std::fmt;
use std::time::Duration;

use indexmap::IndexMap;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A string value after interpolation.
#[derive(Clone, Debug)]
pub enum Value {
    Plain(String),
    Secret(SecretValue),
}

/// A value that took a secret in. `shown` is the value with every secret left as its
/// `${NAME}` reference; the real value is only reachable through [`SecretValue::expose`].
#[derive(Clone)]
pub struct SecretValue {
    shown: String,
    value: Option<SecretString>,
}

impl SecretValue {
    pub fn new(shown: String, value: Option<SecretString>) -> Self {
        SecretValue { shown, value }
    }

    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// The real value; `None` when this came back from the store, which never holds secrets.
    pub fn expose(&self) -> Option<&str> {
        self.value.as_ref().map(|v| v.expose_secret())
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({:?})", self.shown)
    }
}

impl Value {
    /// The value as it may be printed: secrets as their references.
    pub fn shown(&self) -> &str {
        match self {
            Value::Plain(s) => s,
            Value::Secret(s) => s.shown(),
        }
    }

    pub fn is_secret(&self) -> bool {
        matches!(self, Value::Secret(_))
    }

    /// The value to hand to a container or a database driver. `None` for a secret whose
    /// value is not known here (a release read back from the store).
    pub fn expose(&self) -> Option<&str> {
        match self {
            Value::Plain(s) => Some(s),
            Value::Secret(s) => s.expose(),
        }
    }
}

/// Equal when they would print the same: two secrets compare by reference, not by value.
impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        self.is_secret() == other.is_secret() && self.shown() == other.shown()
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct SecretRef<'a> {
            secret: &'a str,
        }
        match self {
            Value::Plain(v) => s.serialize_str(v),
            Value::Secret(v) => SecretRef { secret: v.shown() }.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Plain(String),
            Secret { secret: String },
        }
        Ok(match Repr::deserialize(d)? {
            Repr::Plain(v) => Value::Plain(v),
            Repr::Secret { secret } => Value::Secret(SecretValue::new(secret, None)),
        })
    }
}

/// Durations are written as `10s`, `2m`, `1h30m` in files and JSON alike.
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(serde::de::Error::custom)
    }

    pub mod option {
        use super::*;

        pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => super::serialize(d, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|s| humantime::parse_duration(&s).map_err(serde::de::Error::custom))
                .transpose()
        }
    }
}

/// A stack, validated and resolved for one environment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stack {
    pub name: String,
    /// What runs the services (`runtime:`); releases recorded before it existed are Docker.
    #[serde(default)]
    pub runtime: RuntimeKind,
    /// The `--env` overlay it was resolved with.
    pub environment: Option<String>,
    pub protected: bool,
    pub services: IndexMap<String, Service>,
    pub data: IndexMap<String, DataSet>,
    pub checks: IndexMap<String, Check>,
    pub steps: Steps,
    pub traffic: Option<Traffic>,
    /// How many releases' restore points a successful apply keeps (`restore_points.keep`,
    /// default 3; 0 keeps all): older ones, and the copies a revert set aside with them, are
    /// removed, so database copies and archives do not pile up on the server.
    #[serde(default = "default_keep_restore_points")]
    pub keep_restore_points: usize,
    /// `cutover watch` commits and pushes a `git revert` of a commit whose release it had to
    /// revert (`watch.git_revert`), so the branch says again what runs.
    #[serde(default)]
    pub watch_git_revert: bool,
    /// Where `cutover watch` posts what it plans and does (`watch.webhooks`).
    #[serde(default)]
    pub webhooks: Vec<Webhook>,
    /// When `cutover watch` may apply on its own (`watch.windows`; none: any time). Read by
    /// the watch, which knows time zones.
    #[serde(default)]
    pub watch_windows: Vec<WatchWindow>,
    /// The promotion gate: every image must have run in another environment first.
    #[serde(default)]
    pub promote_from: Option<Promotion>,
    /// The compose project the stack's services come from (`include_compose`): its running
    /// containers are taken over by the first apply.
    #[serde(default)]
    pub compose_project: Option<String>,
    /// Volumes the compose file marks `external:`: made and removed outside the stack, so
    /// `down --volumes` leaves them.
    #[serde(default)]
    pub external_volumes: Vec<String>,
    /// The stack file's directory (absolute): the working directory of host commands (`run`
    /// steps, `command` checks), as relative volumes and env files are resolved against it.
    /// Not recorded in releases: a rollback takes it from the stack file it loads.
    #[serde(skip)]
    pub base_dir: std::path::PathBuf,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Service {
    pub image: String,
    pub command: Option<Command>,
    pub env: IndexMap<String, Value>,
    pub ports: Vec<PortMapping>,
    pub port: Option<u16>,
    pub volumes: Vec<Mount>,
    pub depends_on: Vec<String>,
    pub strategy: Strategy,
    pub health: Option<Health>,
    #[serde(with = "duration")]
    pub stop_grace: Duration,
    pub restart: RestartPolicy,
    /// Run once with the new image, the service's env, volumes and network, before the new
    /// containers start; a failure reverts.
    #[serde(default)]
    pub migrate: Option<Migrate>,
    /// The operator's configuration files, reviewed against the new image's defaults.
    #[serde(default)]
    pub config_files: Vec<ConfigFile>,
    /// An init process as PID 1 (Docker's tini): a process that ignores SIGTERM as PID 1
    /// gets it forwarded, so a stop does not wait out the whole grace period.
    #[serde(default)]
    pub init: bool,
    /// tmpfs mounts: `PATH` or `PATH:OPTIONS` (`/tmp:size=64m`).
    #[serde(default)]
    pub tmpfs: Vec<String>,
    /// Containers started by hand that the first apply takes over (stops, replaces with
    /// its own on the same volumes and ports, removes once the release is recorded).
    #[serde(default)]
    pub adopt: Vec<String>,
    /// How `cutover watch --images` moves the image's tag, if it does.
    #[serde(default)]
    pub update: Option<UpdatePolicy>,
    /// Replicas, placement and update order on `runtime: swarm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swarm: Option<SwarmService>,
}

/// A service's update policy, as written (the watch checks it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdatePolicy {
    /// A semver range: `~2.6`, `^2`, `>=1.4, <2`.
    Semver(String),
    /// A regex the whole tag must match.
    Regex(String),
    /// The tag stays; a new image under it (a new digest) is an update.
    Digest,
}

/// An operator's configuration file and where each image keeps its defaults.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigFile {
    /// As the stack file names it (for messages).
    pub path: String,
    /// The file on this host (absolute).
    pub host_path: std::path::PathBuf,
    /// The defaults file in the image (absolute path inside it).
    pub defaults: String,
    pub format: crate::settings::ConfigFormat,
    /// The defaults file's own format (a sample `.ini` for an `.ini`, or a key list).
    pub defaults_format: crate::settings::ConfigFormat,
}

/// A command: an argv, or a string for `/bin/sh -c` (Docker's "shell form").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    Exec(Vec<String>),
    Shell(String),
}

impl Command {
    /// The argv to run.
    pub fn argv(&self) -> Vec<String> {
        match self {
            Command::Exec(v) => v.clone(),
            Command::Shell(s) => vec!["/bin/sh".into(), "-c".into(), s.clone()],
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Exec(v) => write!(f, "{}", v.join(" ")),
            Command::Shell(s) => write!(f, "sh -c {s:?}"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

/// What runs a stack's services.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    /// One Docker Engine: containers.
    #[default]
    Docker,
    /// A Docker Swarm, through a manager: each service a replicated Swarm service.
    Swarm,
}

impl RuntimeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeKind::Docker => "docker",
            RuntimeKind::Swarm => "swarm",
        }
    }
}

/// How Swarm replaces a service's replicas.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SwarmOrder {
    /// The new replica first: no gap, but not with a host port its node already serves.
    StartFirst,
    /// The old replica first.
    StopFirst,
}

/// A service on `runtime: swarm`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwarmService {
    pub replicas: u64,
    /// Placement constraints (`node.labels.zone==a`).
    pub constraints: Vec<String>,
    /// At most this many replicas on one node.
    pub max_per_node: Option<u64>,
    pub order: SwarmOrder,
    /// Replicas replaced at once.
    pub parallelism: u64,
    /// Between two batches.
    #[serde(with = "duration")]
    pub delay: Duration,
}

/// `[IP:]HOST:CONTAINER[/PROTO]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub host_ip: Option<String>,
    pub host: u16,
    pub container: u16,
    pub protocol: Protocol,
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(ip) = &self.host_ip {
            write!(f, "{ip}:")?;
        }
        write!(f, "{}:{}", self.host, self.container)?;
        if self.protocol == Protocol::Udp {
            f.write_str("/udp")?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MountSource {
    /// A Docker named volume.
    Volume(String),
    /// A host path, absolute after resolution against the stack file's directory.
    Bind(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    pub source: MountSource,
    pub target: String,
    pub read_only: bool,
    /// Other bind options Docker takes after the target: SELinux relabelling (`z`, `Z`),
    /// propagation (`rshared`, ...), `nocopy`, and the consistency hints it accepts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Mount {
    /// The `binds` entry of the engine API: `SOURCE:TARGET[:OPTIONS]`.
    pub fn bind_spec(&self) -> String {
        let src = match &self.source {
            MountSource::Volume(v) | MountSource::Bind(v) => v,
        };
        let mut opts: Vec<&str> = Vec::new();
        if self.read_only {
            opts.push("ro");
        }
        opts.extend(self.options.iter().map(String::as_str));
        if opts.is_empty() {
            format!("{src}:{}", self.target)
        } else {
            format!("{src}:{}:{}", self.target, opts.join(","))
        }
    }
}

impl fmt::Display for Mount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.bind_spec())
    }
}

/// How a service moves from one release to the next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Stop the old container, start the new one. For singletons that own state.
    Recreate,
    /// Start the new one beside the old, wait for health, switch traffic, stop the old.
    BlueGreen,
    /// Stay on the old release until `cutover upgrade-service NAME`.
    Manual,
}

impl Strategy {
    pub const ALL: [&'static str; 3] = ["recreate", "blue-green", "manual"];

    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Recreate => "recreate",
            Strategy::BlueGreen => "blue-green",
            Strategy::Manual => "manual",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    No,
    Always,
    UnlessStopped,
    OnFailure,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub probe: Probe,
    #[serde(with = "duration")]
    pub interval: Duration,
    #[serde(with = "duration")]
    pub timeout: Duration,
    #[serde(with = "duration")]
    pub start_period: Duration,
    #[serde(with = "duration")]
    pub deadline: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Probe {
    Http {
        path: String,
        port: u16,
        expect_status: u16,
        body_contains: Option<String>,
    },
    Tcp {
        port: u16,
    },
    Command(Command),
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Probe::Http {
                path,
                port,
                expect_status,
                body_contains,
            } => {
                write!(f, "GET :{port}{path} → {expect_status}")?;
                if let Some(b) = body_contains {
                    write!(f, " containing {b:?}")?;
                }
                Ok(())
            }
            Probe::Tcp { port } => write!(f, "TCP :{port}"),
            Probe::Command(c) => write!(f, "`{c}` exits 0"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataSet {
    pub kind: DataKind,
    /// Services stopped while the restore point is taken.
    pub writers: Vec<String>,
    pub schema_version: Option<SchemaVersion>,
    /// How a volume's or a directory's restore point is made (the others have one way).
    #[serde(default)]
    pub method: CopyMethod,
    /// Write the durable archive of the restore point after a successful apply.
    #[serde(default)]
    pub durable: bool,
}

/// How a volume's or a directory's restore point is made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CopyMethod {
    /// On the data's own filesystem: a reflink clone where it shares extents, else a copy;
    /// put back by two renames.
    #[default]
    Snapshot,
    /// A tar+zstd archive in the state dir, extracted beside the data and swapped in.
    Archive,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataKind {
    Postgres {
        url: Value,
        database: String,
        tables: Vec<String>,
    },
    Sqlite {
        path: String,
    },
    Volume {
        name: String,
    },
    Directory {
        path: String,
    },
}

impl DataKind {
    pub fn describe(&self) -> String {
        match self {
            DataKind::Postgres {
                database, tables, ..
            } if tables.is_empty() => format!("PostgreSQL database `{database}`"),
            DataKind::Postgres {
                database, tables, ..
            } => format!("PostgreSQL tables {} of `{database}`", tables.join(", ")),
            DataKind::Sqlite { path } => format!("SQLite file {path}"),
            DataKind::Volume { name } => format!("Docker volume `{name}`"),
            DataKind::Directory { path } => format!("directory {path}"),
        }
    }
}

/// `promote_from`: an image is applied here only after it ran, verified, in `environment`
/// (whose state is in `state_dir`) for at least `soak`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Promotion {
    pub environment: String,
    pub state_dir: std::path::PathBuf,
    #[serde(with = "duration")]
    pub soak: Duration,
}

/// A maintenance window of `cutover watch`, as written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchWindow {
    pub days: Vec<String>,
    pub from: String,
    pub to: String,
    pub tz: String,
}

/// A webhook of `cutover watch`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Webhook {
    pub url: Value,
    pub format: WebhookFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// cutover's own JSON body (docs/json.md, "Webhook").
    Json,
    /// `{"text": …}`, as Slack's (and Mattermost's, Rocket.Chat's) incoming webhooks take.
    Slack,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaVersion {
    pub query: String,
    pub expect: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub kind: CheckKind,
    #[serde(with = "duration")]
    pub timeout: Duration,
    #[serde(with = "duration")]
    pub interval: Duration,
    pub retries: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    Http {
        /// Either a full URL, or a path on a service's port.
        url: Option<String>,
        service: Option<String>,
        path: Option<String>,
        status: u16,
        body_contains: Option<String>,
        body_regex: Option<String>,
    },
    Tcp {
        target: String,
    },
    Sql {
        data: String,
        query: String,
        expect: Option<String>,
    },
    Exec {
        service: String,
        command: Command,
        output_contains: Option<String>,
    },
    Command(Command),
    Logs {
        service: String,
        absent: Option<String>,
        present: Option<String>,
    },
    ContainerHealth {
        service: String,
    },
}

impl fmt::Display for CheckKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckKind::Http {
                url,
                service,
                path,
                status,
                body_contains,
                body_regex,
            } => {
                match (url, service) {
                    (Some(u), _) => write!(f, "GET {u}")?,
                    (None, Some(s)) => write!(f, "GET {s}{}", path.as_deref().unwrap_or("/"))?,
                    (None, None) => f.write_str("GET ?")?,
                }
                write!(f, " → {status}")?;
                if let Some(b) = body_contains {
                    write!(f, " containing {b:?}")?;
                }
                if let Some(r) = body_regex {
                    write!(f, " matching /{r}/")?;
                }
                Ok(())
            }
            CheckKind::Tcp { target } => write!(f, "TCP {target}"),
            CheckKind::Sql {
                data,
                query,
                expect,
            } => {
                write!(f, "SQL on {data}: {query}")?;
                if let Some(e) = expect {
                    write!(f, " = {e:?}")?;
                }
                Ok(())
            }
            CheckKind::Exec {
                service,
                command,
                output_contains,
            } => {
                write!(f, "in {service}: `{command}`")?;
                if let Some(o) = output_contains {
                    write!(f, " prints {o:?}")?;
                }
                Ok(())
            }
            CheckKind::Command(c) => write!(f, "`{c}` exits 0"),
            CheckKind::Logs {
                service,
                absent,
                present,
            } => {
                write!(f, "logs of {service}")?;
                if let Some(a) = absent {
                    write!(f, " never show {a:?}")?;
                }
                if let Some(p) = present {
                    write!(f, " show {p:?}")?;
                }
                Ok(())
            }
            CheckKind::ContainerHealth { service } => write!(f, "{service} reports healthy"),
        }
    }
}

/// The phases of an operation, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Plan,
    Preflight,
    Quiesce,
    RestorePoint,
    Upgrade,
    Verify,
    Release,
    Revert,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Plan => "plan",
            Phase::Preflight => "preflight",
            Phase::Quiesce => "quiesce",
            Phase::RestorePoint => "restore_point",
            Phase::Upgrade => "upgrade",
            Phase::Verify => "verify",
            Phase::Release => "release",
            Phase::Revert => "revert",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Phase::Plan => "Plan",
            Phase::Preflight => "Preflight",
            Phase::Quiesce => "Quiesce",
            Phase::RestorePoint => "Restore point",
            Phase::Upgrade => "Upgrade",
            Phase::Verify => "Verify",
            Phase::Release => "Release",
            Phase::Revert => "Revert",
        }
    }
}

/// Custom steps by phase. Restore points are built in: there is no custom phase for them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Steps {
    pub plan: Vec<CustomStep>,
    pub preflight: Vec<CustomStep>,
    pub quiesce: Vec<CustomStep>,
    pub upgrade: Vec<CustomStep>,
    pub verify: Vec<CustomStep>,
    pub release: Vec<CustomStep>,
    pub revert: Vec<CustomStep>,
}

impl Steps {
    pub fn of(&self, phase: Phase) -> &[CustomStep] {
        match phase {
            Phase::Plan => &self.plan,
            Phase::Preflight => &self.preflight,
            Phase::Quiesce => &self.quiesce,
            Phase::RestorePoint => &[],
            Phase::Upgrade => &self.upgrade,
            Phase::Verify => &self.verify,
            Phase::Release => &self.release,
            Phase::Revert => &self.revert,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CustomStep {
    pub name: String,
    pub action: StepAction,
    #[serde(with = "duration::option", default)]
    pub timeout: Option<Duration>,
    /// May run again after a crash without asking.
    pub rerun_safe: bool,
    /// On which operations the step is planned.
    #[serde(default)]
    pub when: When,
}

/// On which operations a custom step is planned: a check of data the app creates on its
/// first start cannot pass on a first deploy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum When {
    #[default]
    Always,
    /// Only when a release is live already (not on a first deploy).
    Upgrade,
    /// Only on a first deploy.
    FirstDeploy,
}

impl When {
    /// Whether a step with this `when` belongs in a plan; `first_deploy` when no release
    /// is live.
    pub fn applies(self, first_deploy: bool) -> bool {
        match self {
            When::Always => true,
            When::Upgrade => !first_deploy,
            When::FirstDeploy => first_deploy,
        }
    }
}

/// A one-shot job a service runs with its new image before its new containers start: the
/// schema migration (`app db upgrade`, `manage.py migrate`, `rails db:migrate`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Migrate {
    /// Replaces the image's command; the image's entrypoint stays.
    pub command: Command,
    /// How long the job may run before it is stopped and the upgrade reverted.
    #[serde(with = "duration")]
    pub timeout: Duration,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepAction {
    Manual { text: String },
    Approval { text: String },
    Run { command: Command },
    Exec { service: String, command: Command },
    Sql { data: String, query: String },
    Http { check: CheckKind },
    Check { check: String },
    Wait { check: String },
}

impl fmt::Display for StepAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StepAction::Manual { text } => write!(f, "confirm: {text}"),
            StepAction::Approval { text } => write!(f, "approval by a second person: {text}"),
            StepAction::Run { command } => write!(f, "run `{command}`"),
            StepAction::Exec { service, command } => write!(f, "in {service}: `{command}`"),
            StepAction::Sql { data, query } => write!(f, "SQL on {data}: {query}"),
            StepAction::Http { check } => write!(f, "{check}"),
            StepAction::Check { check } => write!(f, "check `{check}`"),
            StepAction::Wait { check } => write!(f, "wait until `{check}` passes"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Traffic {
    pub listen: String,
    pub routes: Vec<Route>,
    #[serde(with = "duration")]
    pub max_hold: Duration,
    pub maintenance_page: Option<String>,
    /// TLS termination, when set.
    #[serde(default)]
    pub tls: Option<Tls>,
}

/// A PEM certificate chain and its private key (paths, resolved against the stack file).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tls {
    pub cert: String,
    pub key: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub host: Option<String>,
    pub path: Option<String>,
    pub service: String,
}

/// `restore_points.keep` when the stack file does not say.
pub const DEFAULT_KEEP_RESTORE_POINTS: usize = 3;

fn default_keep_restore_points() -> usize {
    DEFAULT_KEEP_RESTORE_POINTS
}

impl Stack {
    /// Corrects one value of a stack read back from a release (`rollback --set`):
    /// `SERVICE.stop_grace=DURATION`, `SERVICE.health.deadline=DURATION` or
    /// `SERVICE.env.KEY=VALUE`. Images stay what the release recorded.
    pub fn correct(&mut self, set: &str) -> Result<(), String> {
        let (key, value) = set
            .split_once('=')
            .ok_or_else(|| "expected KEY=VALUE".to_string())?;
        let parts: Vec<&str> = key.split('.').collect();
        let duration = |v: &str| {
            humantime::parse_duration(v.trim()).map_err(|_| format!("`{v}` is not a duration"))
        };
        let svc_name = parts.first().copied().unwrap_or_default();
        let known: Vec<String> = self.services.keys().cloned().collect();
        let svc = self.services.get_mut(svc_name).ok_or_else(|| {
            format!(
                "the release has no service `{svc_name}` (it has {})",
                known.join(", ")
            )
        })?;
        match parts.as_slice() {
            [_, "stop_grace"] => svc.stop_grace = duration(value)?,
            [_, "health", "deadline"] => match svc.health.as_mut() {
                Some(h) => h.deadline = duration(value)?,
                None => return Err(format!("`{svc_name}` has no health check")),
            },
            [_, "env", k] => {
                svc.env
                    .insert((*k).to_string(), Value::Plain(value.to_string()));
            }
            _ => {
                return Err(format!(
                    "cannot set `{key}` on a recorded release: SERVICE.stop_grace, SERVICE.health.deadline or SERVICE.env.KEY"
                ));
            }
        }
        Ok(())
    }

    /// Gives a stack read back from the store what the store does not hold, from the stack
    /// file loaded now (`current`): its secrets their values, matching by reference
    /// (`${NAME}` as written), and its base directory. Returns the references it could not
    /// find, so a caller can refuse with a reason.
    pub fn rebind_secrets(&mut self, current: &Stack) -> Vec<String> {
        self.base_dir = current.base_dir.clone();
        let mut known: IndexMap<String, Value> = IndexMap::new();
        for v in current.values() {
            if v.is_secret() && v.expose().is_some() {
                known.insert(v.shown().to_string(), v.clone());
            }
        }
        let mut missing = Vec::new();
        for v in self.values_mut() {
            if v.is_secret() && v.expose().is_none() {
                match known.get(v.shown()) {
                    Some(found) => *v = found.clone(),
                    None if !missing.contains(&v.shown().to_string()) => {
                        missing.push(v.shown().to_string());
                    }
                    None => {}
                }
            }
        }
        missing
    }

    /// Every value that may hold a secret: service environments and database URLs.
    fn values(&self) -> impl Iterator<Item = &Value> {
        let env = self.services.values().flat_map(|s| s.env.values());
        let urls = self.data.values().filter_map(|d| match &d.kind {
            DataKind::Postgres { url, .. } => Some(url),
            _ => None,
        });
        env.chain(urls)
    }

    fn values_mut(&mut self) -> impl Iterator<Item = &mut Value> {
        let env = self.services.values_mut().flat_map(|s| s.env.values_mut());
        let urls = self.data.values_mut().filter_map(|d| match &mut d.kind {
            DataKind::Postgres { url, .. } => Some(url),
            _ => None,
        });
        env.chain(urls)
    }

    /// Services routed by the traffic layer.
    pub fn is_routed(&self, service: &str) -> bool {
        self.traffic
            .as_ref()
            .is_some_and(|t| t.routes.iter().any(|r| r.service == service))
    }
}
