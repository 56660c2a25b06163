//! The plan: what an apply will change and the exact procedure it will follow.
//!
//! [`plan`] is a pure function of the desired stack and the observed state. Its output is
//! both the dry-run an operator reads (`cutover plan`, as text, JSON or a markdown checklist)
//! and the list of steps the engine executes and journals, so what was reviewed is what runs.
//!
//! The JSON form is a stable, documented schema (`cutover.plan/v1`, see docs/plan-json.md):
//! fields are only ever added.

pub mod render;

use std::time::Duration;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use crate::graph;
use crate::settings::FileReview;
use crate::spec::{
    CopyMethod, CustomStep, DataKind, DataSet, Phase, SchemaVersion, Service, Stack, Strategy,
    Value,
};

/// The schema name of the JSON plan.
pub const PLAN_SCHEMA: &str = "cutover.plan/v1";

/// What runs now, as far as cutover knows it.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// The release that is live, if any.
    pub release: Option<u64>,
    /// Its resolved stack.
    pub stack: Option<Stack>,
    /// The image each of its services runs, by ID (`sha256:…`) when known.
    pub image_ids: IndexMap<String, String>,
    /// How long each service's container of the live release took from start to healthy,
    /// when it was measured: the downtime estimate says so beside its bound.
    pub started_in: IndexMap<String, Duration>,
    /// Containers of the stack's compose project (`include_compose`) that the first apply
    /// takes over, by service: they stop inside the window, ours start on their volumes and
    /// ports, and they are removed once the release is recorded.
    pub adoptable: IndexMap<String, Vec<String>>,
}

/// Facts about the desired images, when the runtime could resolve them.
#[derive(Clone, Debug, Default)]
pub struct Resolved {
    /// Service → image ID the new release would start.
    pub image_ids: IndexMap<String, String>,
    /// The review of the operators' configuration files against the defaults the old and
    /// the new images ship (`config_files`), where the images could be read.
    pub settings: Vec<FileReview>,
    /// How each data set's restore point would be copied here, where it could be measured.
    pub data: IndexMap<String, DataCopy>,
}

/// How a data set's restore point is copied on this host, and what that costs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataCopy {
    /// `reflink clone`, `copy on the same filesystem`, `tar+zstd archive`.
    pub how: String,
    pub files: u64,
    pub bytes: u64,
    /// Expected time of the copy, with the writers stopped.
    pub estimate_ms: u64,
    /// Room it takes on the data's disk (0 for a clone: nothing until written).
    pub room_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Always [`PLAN_SCHEMA`].
    pub schema: String,
    pub stack: String,
    pub environment: Option<String>,
    /// The live release, or `None` for a first deploy.
    pub from_release: Option<u64>,
    /// The revision the new release will get.
    pub to_release: u64,
    /// False when applying would change nothing.
    pub changes: bool,
    /// Every service, in upgrade (dependency) order.
    pub services: Vec<ServiceChange>,
    /// Data that gets a restore point.
    pub data: Vec<DataPlan>,
    /// The procedure, phase by phase.
    pub procedure: Vec<PlanPhase>,
    /// What a revert does, should any step fail after quiesce.
    pub revert: Vec<PlanStep>,
    /// The settings review of the operators' configuration files: keys the new version
    /// removed or renamed (refused in preflight unless acknowledged), keys it added.
    #[serde(default)]
    pub settings: Vec<FileReview>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// New service.
    Create,
    /// New image or configuration.
    Upgrade,
    /// Unchanged, but stopped while a restore point is taken, then started again.
    Restart,
    /// Nothing happens to it.
    Unchanged,
    /// In the live release but not in the stack any more.
    Remove,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRef {
    pub reference: String,
    /// `sha256:…` when known.
    pub id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyChangeKind {
    Added,
    Changed,
    Removed,
}

/// One environment key that changes. Secret values are shown as their `${NAME}` reference.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyChange {
    pub key: String,
    pub change: KeyChangeKind,
    pub from: Option<String>,
    pub to: Option<String>,
    pub secret: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DowntimeKind {
    /// Traffic keeps flowing (blue-green, or a new service).
    None,
    /// The service is down for at most `max`.
    Window,
    /// Until an operator runs `cutover upgrade-service`.
    Deferred,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Downtime {
    pub kind: DowntimeKind,
    /// Upper bound in seconds for a window, not counting the restore point.
    pub max_seconds: Option<u64>,
    /// Why, in words.
    pub because: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceChange {
    pub service: String,
    pub action: Action,
    /// Services of one wave do not depend on each other.
    pub wave: usize,
    pub strategy: Strategy,
    pub image_from: Option<ImageRef>,
    pub image_to: Option<ImageRef>,
    pub env: Vec<KeyChange>,
    /// Other settings that change: `command`, `ports`, `volumes`, `health`, ...
    pub config: Vec<String>,
    pub downtime: Downtime,
    /// Stopped while a restore point of its data is taken.
    pub quiesced: bool,
    /// Containers not made by cutover that this service takes over (a compose project's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adopts: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataPlan {
    pub name: String,
    pub describe: String,
    pub writers: Vec<String>,
    /// How the restore point is taken and restored.
    pub method: String,
    /// What the copy costs here, when it was measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy: Option<DataCopy>,
    pub schema_version: Option<SchemaVersion>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanPhase {
    pub phase: Phase,
    pub steps: Vec<PlanStep>,
}

/// One step, as the engine runs it and the journal records it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanStep {
    /// Stable within a plan: `upgrade.recreate.daemon`. The journal keys on it.
    pub id: String,
    pub phase: Phase,
    pub title: String,
    pub action: StepKind,
    /// May run again after a crash without asking.
    pub rerun_safe: bool,
}

impl Eq for PlanStep {}

/// The engine's instruction set. Every step is idempotent unless marked otherwise.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StepKind {
    /// A step from the stack file.
    Custom {
        step: CustomStep,
    },
    /// Make sure the image is present locally (pull if needed); record its ID.
    EnsureImage {
        service: String,
        image: String,
    },
    /// Connect to the data's server or open its file.
    CheckData {
        data: String,
    },
    /// The live service is healthy before anything is touched.
    CheckHealthy {
        service: String,
    },
    /// Read the schema version; compare with `expect` when given.
    CheckSchemaVersion {
        data: String,
        expect: Option<String>,
    },
    /// A rollback that keeps the data: the data's schema version must still be the one
    /// release `release` ran on (`version`, recorded by the restore point taken when an
    /// upgrade moved on from it), or that release's images would start on a schema they
    /// cannot read.
    CheckSchemaKept {
        data: String,
        release: u64,
        version: String,
    },
    /// Run the service's `migrate` job once with the new image (its env, volumes and
    /// network), before its new containers start; a non-zero exit fails the step.
    Migrate {
        service: String,
    },
    /// The operator's `file` still sets `keys` the new image removed or renamed (the
    /// settings review): refused unless acknowledged (`--ack-settings`).
    SettingsRemoved {
        service: String,
        file: String,
        keys: Vec<String>,
    },
    /// The host ports new containers publish (service, port) are free, or published by a
    /// container this upgrade replaces (the service's own, or one it takes over).
    CheckPorts {
        ports: Vec<(String, u16)>,
    },
    /// A first apply takes a service over from containers cutover did not make (a compose
    /// project's): they are stopped, not removed, so a revert can start them again.
    Adopt {
        service: String,
        containers: Vec<String>,
    },
    /// Revert of [`StepKind::Adopt`]: the containers taken over run again.
    GiveBack {
        service: String,
        containers: Vec<String>,
    },
    /// After the release is recorded: the containers taken over are removed (their volumes
    /// stay: the stack runs on them).
    RemoveAdopted {
        containers: Vec<String>,
    },
    /// Answer 503 with the maintenance page on every route of the stack.
    MaintenanceOn,
    MaintenanceOff,
    /// Stop a service (SIGTERM, grace, SIGKILL).
    Stop {
        service: String,
    },
    TakeRestorePoint {
        data: String,
    },
    /// Start a new service.
    Create {
        service: String,
    },
    /// Stop old, start new, wait for health.
    Recreate {
        service: String,
    },
    /// Start new beside old, wait for health, switch traffic, drain, stop old.
    BlueGreen {
        service: String,
    },
    /// Start an unchanged service that was stopped for a restore point.
    Start {
        service: String,
    },
    /// Leave on the old release until `cutover upgrade-service`.
    MarkPending {
        service: String,
    },
    Remove {
        service: String,
    },
    /// Record the release as deployed.
    RecordRelease,
    /// Revert: put a data set back to its restore point.
    RestoreData {
        data: String,
    },
    /// `rollback --data restore`: put a data set back as it was while `release` was live,
    /// from the restore point taken when the stack moved on from it.
    RestoreFrom {
        data: String,
        release: u64,
    },
    /// Revert: run the previous release's exact image again.
    StartPrevious {
        service: String,
    },
    /// Revert: compare what runs with what ran before the upgrade.
    CompareWithBefore,
}

/// Makes the plan. Pure: no I/O, same input, same plan.
pub fn plan(desired: &Stack, observed: &Observed, resolved: &Resolved) -> Plan {
    let previous = observed.stack.as_ref();
    let deps: IndexMap<String, Vec<String>> = desired
        .services
        .iter()
        .map(|(n, s)| (n.clone(), s.depends_on.clone()))
        .collect();
    // Validation rejects cycles; should one get here anyway, file order is still an order.
    let waves =
        graph::waves(&deps).unwrap_or_else(|_| vec![desired.services.keys().cloned().collect()]);

    // First pass: what changes.
    let mut changes: IndexMap<String, ServiceChange> = IndexMap::new();
    for (wave, names) in waves.iter().enumerate() {
        for name in names {
            let Some(svc) = desired.services.get(name) else {
                continue;
            };
            let before = previous.and_then(|p| p.services.get(name));
            changes.insert(
                name.clone(),
                service_change(name, wave, svc, before, observed, resolved),
            );
        }
    }

    // Data that gets a restore point: some writer is upgraded, or taken over from containers
    // cutover did not make (a first deploy otherwise has nothing to go back to).
    let mut data = Vec::new();
    for (name, ds) in &desired.data {
        let upgraded = ds.writers.iter().any(|w| {
            changes.get(w).is_some_and(|c| {
                c.action == Action::Upgrade || (c.action == Action::Create && !c.adopts.is_empty())
            })
        });
        if !upgraded {
            continue;
        }
        data.push(DataPlan {
            name: name.clone(),
            describe: ds.kind.describe(),
            writers: ds.writers.clone(),
            method: restore_method(ds, name),
            copy: resolved.data.get(name).cloned(),
            schema_version: ds.schema_version.clone(),
        });
        for w in &ds.writers {
            if let Some(c) = changes.get_mut(w) {
                c.quiesced = true;
                if c.action == Action::Unchanged {
                    c.action = Action::Restart;
                }
            }
        }
    }
    for c in changes.values_mut() {
        if let Some(svc) = desired.services.get(&c.service) {
            let hold = desired
                .traffic
                .as_ref()
                .filter(|_| desired.is_routed(&c.service))
                .map(|t| t.max_hold);
            // The restore points taken while this service is stopped, as measured here.
            let copies: Vec<&DataCopy> = data
                .iter()
                .filter(|d| d.writers.contains(&c.service))
                .filter_map(|d| d.copy.as_ref())
                .collect();
            let copy = (!copies.is_empty()).then(|| {
                let ms: u64 = copies.iter().map(|c| c.estimate_ms).sum();
                let how: Vec<String> = copies
                    .iter()
                    .map(|c| format!("{} of {}", c.how, human_bytes(c.bytes)))
                    .collect();
                (how.join(", "), Duration::from_millis(ms))
            });
            c.downtime = downtime(
                c,
                svc,
                hold,
                observed.started_in.get(&c.service).copied(),
                copy,
            );
        }
    }
    let mut services: Vec<ServiceChange> = changes.into_values().collect();
    if let Some(prev) = previous {
        for name in prev.services.keys() {
            if !desired.services.contains_key(name) {
                services.push(ServiceChange {
                    service: name.clone(),
                    action: Action::Remove,
                    wave: waves.len(),
                    strategy: Strategy::Recreate,
                    image_from: prev.services.get(name).map(|s| ImageRef {
                        reference: s.image.clone(),
                        id: observed.image_ids.get(name).cloned(),
                    }),
                    image_to: None,
                    env: Vec::new(),
                    config: Vec::new(),
                    adopts: Vec::new(),
                    downtime: Downtime {
                        kind: DowntimeKind::Window,
                        max_seconds: None,
                        because: "removed from the stack".into(),
                    },
                    quiesced: false,
                });
            }
        }
    }
    let changes_anything = services
        .iter()
        .any(|s| !matches!(s.action, Action::Unchanged));
    let procedure = if changes_anything {
        procedure(desired, previous, &services, &data)
    } else {
        Vec::new()
    };
    let revert = if changes_anything {
        revert_steps(desired, previous.is_none(), &services, &data)
    } else {
        Vec::new()
    };
    let settings: Vec<FileReview> = resolved
        .settings
        .iter()
        .filter(|r| !r.removed.is_empty() || !r.added.is_empty())
        .cloned()
        .collect();
    let mut procedure = procedure;
    if let Some(preflight) = procedure.iter_mut().find(|p| p.phase == Phase::Preflight) {
        for (i, r) in settings
            .iter()
            .filter(|r| !r.removed.is_empty())
            .enumerate()
        {
            let image = desired
                .services
                .get(&r.service)
                .map_or("the new image", |s| s.image.as_str());
            preflight.steps.push(PlanStep {
                id: format!("preflight.settings.{}.{}", r.service, i + 1),
                phase: Phase::Preflight,
                title: format!(
                    "`{}` still sets in {} what {image} removed or renamed: {}",
                    r.service,
                    r.file,
                    r.removed
                        .iter()
                        .map(|k| format!("{} (line {})", k.key, k.line))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                action: StepKind::SettingsRemoved {
                    service: r.service.clone(),
                    file: r.file.clone(),
                    keys: r.removed.iter().map(|k| k.key.clone()).collect(),
                },
                rerun_safe: true,
            });
        }
    }
    Plan {
        schema: PLAN_SCHEMA.to_string(),
        stack: desired.name.clone(),
        environment: desired.environment.clone(),
        from_release: observed.release,
        to_release: observed.release.map_or(1, |r| r + 1),
        changes: changes_anything,
        services,
        data,
        procedure,
        revert,
        settings,
    }
}

fn service_change(
    name: &str,
    wave: usize,
    svc: &Service,
    before: Option<&Service>,
    observed: &Observed,
    resolved: &Resolved,
) -> ServiceChange {
    let image_to = Some(ImageRef {
        reference: svc.image.clone(),
        id: resolved.image_ids.get(name).cloned(),
    });
    let image_from = before.map(|b| ImageRef {
        reference: b.image.clone(),
        id: observed.image_ids.get(name).cloned(),
    });
    let env = before
        .map(|b| env_changes(&b.env, &svc.env))
        .unwrap_or_default();
    let config = before.map(|b| config_changes(b, svc)).unwrap_or_default();
    let image_changed = match (&image_from, &image_to) {
        (Some(f), Some(t)) => {
            f.reference != t.reference || matches!((&f.id, &t.id), (Some(a), Some(b)) if a != b)
        }
        _ => false,
    };
    let action = match before {
        None => Action::Create,
        Some(_) if image_changed || !env.is_empty() || !config.is_empty() => Action::Upgrade,
        Some(_) => Action::Unchanged,
    };
    ServiceChange {
        service: name.to_string(),
        action,
        wave,
        strategy: svc.strategy,
        image_from,
        image_to,
        env,
        config,
        downtime: Downtime {
            kind: DowntimeKind::None,
            max_seconds: None,
            because: String::new(),
        },
        quiesced: false,
        adopts: if action == Action::Create {
            observed.adoptable.get(name).cloned().unwrap_or_default()
        } else {
            Vec::new()
        },
    }
}

fn env_changes(
    before: &IndexMap<String, Value>,
    after: &IndexMap<String, Value>,
) -> Vec<KeyChange> {
    let mut out = Vec::new();
    for (k, v) in after {
        match before.get(k) {
            None => out.push(KeyChange {
                key: k.clone(),
                change: KeyChangeKind::Added,
                from: None,
                to: Some(v.shown().to_string()),
                secret: v.is_secret(),
            }),
            Some(old) if old != v => out.push(KeyChange {
                key: k.clone(),
                change: KeyChangeKind::Changed,
                from: Some(old.shown().to_string()),
                to: Some(v.shown().to_string()),
                secret: v.is_secret() || old.is_secret(),
            }),
            Some(_) => {}
        }
    }
    for (k, old) in before {
        if !after.contains_key(k) {
            out.push(KeyChange {
                key: k.clone(),
                change: KeyChangeKind::Removed,
                from: Some(old.shown().to_string()),
                to: None,
                secret: old.is_secret(),
            });
        }
    }
    out
}

fn config_changes(before: &Service, after: &Service) -> Vec<String> {
    let mut out = Vec::new();
    let mut diff = |name: &str, changed: bool| {
        if changed {
            out.push(name.to_string());
        }
    };
    diff("command", before.command != after.command);
    diff("ports", before.ports != after.ports);
    diff("port", before.port != after.port);
    diff("volumes", before.volumes != after.volumes);
    diff("depends_on", before.depends_on != after.depends_on);
    diff("health", before.health != after.health);
    diff("restart", before.restart != after.restart);
    out
}

fn restore_method(ds: &DataSet, name: &str) -> String {
    match &ds.kind {
        DataKind::Postgres {
            database, tables, ..
        } if tables.is_empty() => format!(
            "CREATE DATABASE {database}__rp_<release> TEMPLATE {database} STRATEGY FILE_COPY; revert renames it back in one transaction"
        ),
        DataKind::Postgres { tables, .. } => format!(
            "copy of tables {} inside the database; revert swaps them back",
            tables.join(", ")
        ),
        DataKind::Sqlite { .. } => {
            "SQLite online backup to the state dir; revert replaces the file atomically".into()
        }
        DataKind::Volume { .. } | DataKind::Directory { .. } => match ds.method {
            CopyMethod::Snapshot => format!(
                "snapshot of `{name}` beside it, on its filesystem (a reflink clone where it shares extents, else a copy){}; revert checks it is untouched, then swaps its entries in by renames",
                if ds.durable {
                    "; its tar+zstd archive is written after the release"
                } else {
                    ""
                }
            ),
            CopyMethod::Archive => format!(
                "archive of `{name}` with a checksum of every file; revert verifies it, then swaps the content in"
            ),
        },
    }
}

/// Bytes as `1.5 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// `hold`: the proxy's `max_hold`, when the service is routed. `copy`: the restore points
/// taken while it is stopped, in words, and their expected time, when measured.
fn downtime(
    c: &ServiceChange,
    svc: &Service,
    hold: Option<Duration>,
    started_in: Option<Duration>,
    copy: Option<(String, Duration)>,
) -> Downtime {
    let health = svc.health.as_ref().map_or(Duration::ZERO, |h| h.deadline);
    let copy_time = if c.quiesced {
        copy.as_ref().map_or(Duration::ZERO, |(_, d)| *d)
    } else {
        Duration::ZERO
    };
    let window = |because: String| Downtime {
        kind: DowntimeKind::Window,
        max_seconds: Some((svc.stop_grace + health + copy_time).as_secs_f64().ceil() as u64),
        because,
    };
    let restore_point = match &copy {
        Some((how, d)) => format!(
            "plus the restore point ({how}: ≈ {})",
            if d.as_millis() < 1000 {
                format!("{} ms", d.as_millis())
            } else {
                format!("{:.1}s", d.as_secs_f64())
            }
        ),
        None => "plus the restore point".to_string(),
    };
    let measured = started_in
        .map(|d| format!("; the last start took {:.1}s", d.as_secs_f64()))
        .unwrap_or_default();
    let bound = format!(
        "stop (≤ {}) + start until healthy (≤ {}{measured})",
        humantime::format_duration(svc.stop_grace),
        humantime::format_duration(health)
    );
    match c.action {
        Action::Unchanged => Downtime {
            kind: DowntimeKind::None,
            max_seconds: None,
            because: "unchanged".into(),
        },
        // Taken over: down from the stop of the containers it replaces until ours is healthy.
        Action::Create if !c.adopts.is_empty() => {
            window(format!("taken over from {}: {bound}", c.adopts.join(", ")))
        }
        Action::Create => Downtime {
            kind: DowntimeKind::None,
            max_seconds: None,
            because: "new service".into(),
        },
        Action::Remove => window("removed".into()),
        Action::Restart => window(format!(
            "stopped while the restore point is taken: {bound}, {restore_point}"
        )),
        // Blue-green needs the old container serving while the new one starts; a service
        // that writes data with a restore point is stopped for it first, so it cannot be.
        Action::Upgrade if c.quiesced && svc.strategy == Strategy::BlueGreen => window(format!(
            "recreated, not blue-green: it writes data that gets a restore point, which is taken while it is stopped; {}{bound}, {restore_point}",
            if hold.is_some() {
                "the maintenance page shows meanwhile; "
            } else {
                ""
            }
        )),
        Action::Upgrade if c.quiesced => window(format!(
            "writes data that gets a restore point: {bound}, {restore_point}"
        )),
        Action::Upgrade => match svc.strategy {
            Strategy::BlueGreen => Downtime {
                kind: DowntimeKind::None,
                max_seconds: None,
                because: "blue-green: the old container serves until the new one is healthy".into(),
            },
            Strategy::Manual => Downtime {
                kind: DowntimeKind::Deferred,
                max_seconds: None,
                because: "manual: stays on the old release until `cutover upgrade-service`".into(),
            },
            Strategy::Recreate => match hold {
                Some(max) if svc.stop_grace + health <= max => window(format!(
                    "recreate, requests held (≤ {}): {bound}",
                    humantime::format_duration(max)
                )),
                Some(_) => window(format!(
                    "recreate, longer than requests may be held: maintenance page; {bound}"
                )),
                None => window(format!("recreate: {bound}")),
            },
        },
    }
}

struct Steps {
    out: Vec<PlanStep>,
    phase: Phase,
}

impl Steps {
    fn push(&mut self, id: impl Into<String>, title: impl Into<String>, action: StepKind) {
        let rerun_safe = match &action {
            StepKind::Custom { step } => step.rerun_safe,
            _ => true,
        };
        self.out.push(PlanStep {
            id: format!("{}.{}", self.phase.as_str(), id.into()),
            phase: self.phase,
            title: title.into(),
            action,
            rerun_safe,
        });
    }

    fn custom(&mut self, stack: &Stack, first_deploy: bool) {
        for (i, step) in stack.steps.of(self.phase).iter().enumerate() {
            if !step.when.applies(first_deploy) {
                continue;
            }
            self.push(
                format!("custom.{}", i + 1),
                step.name.clone(),
                StepKind::Custom { step: step.clone() },
            );
        }
    }

    fn finish(self) -> PlanPhase {
        PlanPhase {
            phase: self.phase,
            steps: self.out,
        }
    }
}

fn phase(p: Phase) -> Steps {
    Steps {
        out: Vec::new(),
        phase: p,
    }
}

fn procedure(
    desired: &Stack,
    previous: Option<&Stack>,
    services: &[ServiceChange],
    data: &[DataPlan],
) -> Vec<PlanPhase> {
    let mut phases = Vec::new();
    let changing = |c: &&ServiceChange| matches!(c.action, Action::Create | Action::Upgrade);
    // Steps with `when: upgrade` are left out of a first deploy, `when: first-deploy` ones
    // out of an upgrade.
    let first_deploy = previous.is_none();

    let mut p = phase(Phase::Plan);
    p.custom(desired, first_deploy);
    phases.push(p.finish());

    let mut p = phase(Phase::Preflight);
    for c in services.iter().filter(changing) {
        if let Some(img) = &c.image_to {
            p.push(
                format!("image.{}", c.service),
                format!("image {} of `{}` is present", img.reference, c.service),
                StepKind::EnsureImage {
                    service: c.service.clone(),
                    image: img.reference.clone(),
                },
            );
        }
    }
    for d in data {
        p.push(
            format!("data.{}", d.name),
            format!("{} is reachable", d.describe),
            StepKind::CheckData {
                data: d.name.clone(),
            },
        );
    }
    // Host ports the new containers publish must be free, or held by what this upgrade
    // replaces: found now, not when a container fails to start in the upgrade phase.
    let ports: Vec<(String, u16)> = services
        .iter()
        .filter(changing)
        .filter_map(|c| desired.services.get(&c.service).map(|s| (c, s)))
        .flat_map(|(c, s)| s.ports.iter().map(move |p| (c.service.clone(), p.host)))
        .collect();
    if !ports.is_empty() {
        p.push(
            "ports",
            format!(
                "host ports {} are free, or held by what this upgrade replaces",
                ports
                    .iter()
                    .map(|(_, p)| p.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            StepKind::CheckPorts { ports },
        );
    }
    if let Some(prev) = previous {
        for c in services.iter().filter(|c| c.action != Action::Create) {
            if prev
                .services
                .get(&c.service)
                .is_some_and(|s| s.health.is_some())
            {
                p.push(
                    format!("healthy.{}", c.service),
                    format!("`{}` is healthy now", c.service),
                    StepKind::CheckHealthy {
                        service: c.service.clone(),
                    },
                );
            }
        }
        for d in data {
            // The live schema must match what the live release expects.
            let expect = prev
                .data
                .get(&d.name)
                .and_then(|ds| ds.schema_version.as_ref())
                .map(|sv| sv.expect.clone());
            if let Some(expect) = expect {
                p.push(
                    format!("schema.{}", d.name),
                    format!(
                        "schema version of `{}` matches the live release{}",
                        d.name,
                        expect
                            .as_deref()
                            .map(|e| format!(" ({e})"))
                            .unwrap_or_default()
                    ),
                    StepKind::CheckSchemaVersion {
                        data: d.name.clone(),
                        expect,
                    },
                );
            }
        }
    }
    p.custom(desired, first_deploy);
    phases.push(p.finish());

    let mut p = phase(Phase::Quiesce);
    p.custom(desired, first_deploy);
    if needs_maintenance(desired, services) {
        p.push(
            "maintenance",
            "maintenance page on (503 + Retry-After)",
            StepKind::MaintenanceOn,
        );
    }
    for c in services.iter().rev().filter(|c| c.quiesced) {
        // A writer taken over is stopped here, so its data's restore point is consistent.
        if c.action == Action::Create && !c.adopts.is_empty() {
            p.push(
                format!("adopt.{}", c.service),
                format!(
                    "take `{}` over from {}: stop it (SIGTERM, stop_grace; it writes data that gets a restore point), so ours gets its ports and volumes",
                    c.service,
                    c.adopts.join(", ")
                ),
                StepKind::Adopt {
                    service: c.service.clone(),
                    containers: c.adopts.clone(),
                },
            );
            continue;
        }
        p.push(
            format!("stop.{}", c.service),
            format!(
                "stop `{}` (it writes data that gets a restore point)",
                c.service
            ),
            StepKind::Stop {
                service: c.service.clone(),
            },
        );
    }
    phases.push(p.finish());

    let mut p = phase(Phase::RestorePoint);
    for d in data {
        p.push(
            d.name.clone(),
            format!("restore point of {}", d.describe),
            StepKind::TakeRestorePoint {
                data: d.name.clone(),
            },
        );
    }
    phases.push(p.finish());

    let mut p = phase(Phase::Upgrade);
    for c in services {
        let s = c.service.clone();
        let (id, title, action) = match (c.action, c.strategy) {
            (Action::Unchanged, _) => continue,
            (Action::Create, _) => (
                "create",
                format!("start `{s}`"),
                StepKind::Create { service: s.clone() },
            ),
            (Action::Restart, _) => (
                "start",
                format!("start `{s}` again"),
                StepKind::Start { service: s.clone() },
            ),
            (Action::Remove, _) => (
                "remove",
                format!("remove `{s}`"),
                StepKind::Remove { service: s.clone() },
            ),
            (Action::Upgrade, Strategy::Manual) => (
                "pending",
                format!("`{s}` stays on the old release until `cutover upgrade-service {s}`"),
                StepKind::MarkPending { service: s.clone() },
            ),
            (Action::Upgrade, _) if c.quiesced => (
                "recreate",
                format!("start `{s}` on {}, wait until healthy", image_of(c)),
                StepKind::Recreate { service: s.clone() },
            ),
            (Action::Upgrade, Strategy::BlueGreen) => (
                "blue-green",
                format!(
                    "start `{s}` on {} beside the old one, wait until healthy, switch traffic, drain, stop the old one",
                    image_of(c)
                ),
                StepKind::BlueGreen { service: s.clone() },
            ),
            (Action::Upgrade, Strategy::Recreate) => (
                "recreate",
                format!("recreate `{s}` on {}, wait until healthy", image_of(c)),
                StepKind::Recreate { service: s.clone() },
            ),
        };
        let migrates = matches!(
            action,
            StepKind::Create { .. } | StepKind::Recreate { .. } | StepKind::BlueGreen { .. }
        ) && c.image_from.as_ref().map(|i| (&i.reference, &i.id))
            != c.image_to.as_ref().map(|i| (&i.reference, &i.id));
        if !c.adopts.is_empty() && !c.quiesced {
            p.push(
                format!("adopt.{s}"),
                format!(
                    "take `{s}` over from {}: stop it (SIGTERM, stop_grace), so ours gets its ports and volumes",
                    c.adopts.join(", ")
                ),
                StepKind::Adopt {
                    service: s.clone(),
                    containers: c.adopts.clone(),
                },
            );
        }
        if migrates && let Some(m) = desired.services.get(&s).and_then(|d| d.migrate.as_ref()) {
            p.push(
                format!("migrate.{s}"),
                format!(
                    "run the migration of `{s}` once on {}: `{}` (at most {})",
                    image_of(c),
                    m.command,
                    humantime::format_duration(m.timeout)
                ),
                StepKind::Migrate { service: s.clone() },
            );
        }
        p.push(format!("{id}.{}", c.service), title, action);
    }
    p.custom(desired, first_deploy);
    phases.push(p.finish());

    let mut p = phase(Phase::Verify);
    for d in data {
        if let Some(sv) = &d.schema_version {
            p.push(
                format!("schema.{}", d.name),
                match &sv.expect {
                    Some(e) => format!("schema version of `{}` is {e}", d.name),
                    None => format!("schema version of `{}` is readable", d.name),
                },
                StepKind::CheckSchemaVersion {
                    data: d.name.clone(),
                    expect: sv.expect.clone(),
                },
            );
        }
    }
    p.custom(desired, first_deploy);
    phases.push(p.finish());

    let mut p = phase(Phase::Release);
    if phases
        .iter()
        .flat_map(|ph| &ph.steps)
        .any(|s| s.action == StepKind::MaintenanceOn)
    {
        p.push(
            "maintenance",
            "maintenance page off",
            StepKind::MaintenanceOff,
        );
    }
    p.custom(desired, first_deploy);
    p.push(
        "record",
        "record the release as deployed",
        StepKind::RecordRelease,
    );
    let adopted: Vec<String> = services.iter().flat_map(|c| c.adopts.clone()).collect();
    if !adopted.is_empty() {
        p.push(
            "remove-adopted",
            format!(
                "remove the containers taken over: {} (their volumes stay)",
                adopted.join(", ")
            ),
            StepKind::RemoveAdopted {
                containers: adopted,
            },
        );
    }
    phases.push(p.finish());

    phases.retain(|ph| !ph.steps.is_empty());
    phases
}

/// A routed service will be down longer than the proxy may hold its requests — a restore
/// point is taken (its length is unknown), or its stop and start may outlast `max_hold` —
/// so its clients get the maintenance page instead of waiting.
fn needs_maintenance(desired: &Stack, services: &[ServiceChange]) -> bool {
    let Some(traffic) = &desired.traffic else {
        return false;
    };
    services.iter().any(|c| {
        c.downtime.kind == DowntimeKind::Window
            && desired.is_routed(&c.service)
            && (c.quiesced
                || c.action == Action::Remove
                || c.downtime
                    .max_seconds
                    .is_none_or(|s| Duration::from_secs(s) > traffic.max_hold))
    })
}

/// The plan of `upgrade-service SERVICE`: the pending part of live release `current` for
/// one `strategy: manual` service — its recorded image present, the service recreated on
/// it; reverted by taking the new container away and starting the one that ran.
pub fn upgrade_service(live: &Stack, current: u64, service: &str, image: &str) -> Plan {
    let step = |phase: Phase, id: &str, title: String, action: StepKind| PlanStep {
        id: format!("{}.{id}", phase.as_str()),
        phase,
        title,
        action,
        rerun_safe: true,
    };
    let s = service.to_string();
    Plan {
        schema: PLAN_SCHEMA.into(),
        stack: live.name.clone(),
        environment: live.environment.clone(),
        from_release: Some(current),
        to_release: current,
        changes: true,
        services: Vec::new(),
        data: Vec::new(),
        procedure: vec![
            PlanPhase {
                phase: Phase::Preflight,
                steps: vec![step(
                    Phase::Preflight,
                    &format!("image.{s}"),
                    format!("image {image} of `{s}` is present"),
                    StepKind::EnsureImage {
                        service: s.clone(),
                        image: image.to_string(),
                    },
                )],
            },
            PlanPhase {
                phase: Phase::Upgrade,
                steps: vec![step(
                    Phase::Upgrade,
                    &format!("recreate.{s}"),
                    format!("recreate `{s}` on {image}, wait until healthy"),
                    StepKind::Recreate { service: s.clone() },
                )],
            },
        ],
        revert: vec![
            step(
                Phase::Revert,
                &format!("stop.{s}"),
                format!("stop the new `{s}`"),
                StepKind::Stop { service: s.clone() },
            ),
            step(
                Phase::Revert,
                &format!("start.{s}"),
                format!("start `{s}` on its previous image again"),
                StepKind::StartPrevious { service: s.clone() },
            ),
            step(
                Phase::Revert,
                "compare",
                "compare images with the state before".into(),
                StepKind::CompareWithBefore,
            ),
        ],
        settings: Vec::new(),
    }
}

/// A routed service recreated within `max_hold`: its requests wait instead.
pub fn holds_requests(desired: &Stack, c: &ServiceChange) -> bool {
    desired.traffic.is_some()
        && desired.is_routed(&c.service)
        && c.downtime.kind == DowntimeKind::Window
        && !needs_maintenance(desired, std::slice::from_ref(c))
}

fn image_of(c: &ServiceChange) -> String {
    c.image_to
        .as_ref()
        .map_or_else(|| "?".into(), |i| i.reference.clone())
}

fn revert_steps(
    desired: &Stack,
    first_deploy: bool,
    services: &[ServiceChange],
    data: &[DataPlan],
) -> Vec<PlanStep> {
    let mut p = phase(Phase::Revert);
    // A PostgreSQL server whose database is restored keeps running until the restore has
    // run on it: its own undo comes after the data's.
    let servers: Vec<String> = data
        .iter()
        .filter_map(|d| match &desired.data.get(&d.name)?.kind {
            DataKind::Postgres { url, .. } => {
                crate::spec::serving_service(url.expose().unwrap_or(url.shown()), &desired.services)
            }
            _ => None,
        })
        .collect();
    let undo = |p: &mut Steps, c: &ServiceChange| {
        let s = c.service.clone();
        match (c.action, c.strategy) {
            (Action::Create, _) => p.push(
                format!("remove.{s}"),
                format!("remove the new `{s}`"),
                StepKind::Remove { service: s },
            ),
            (Action::Upgrade, Strategy::Manual) if !c.quiesced => {}
            (Action::Upgrade | Action::Restart, _) => p.push(
                format!("stop.{s}"),
                format!("stop `{s}`"),
                StepKind::Stop { service: s },
            ),
            (Action::Unchanged | Action::Remove, _) => {}
        }
    };
    // Undo in reverse dependency order: what was started last goes first.
    for c in services
        .iter()
        .rev()
        .filter(|c| !servers.contains(&c.service))
    {
        undo(&mut p, c);
    }
    for d in data {
        p.push(
            format!("restore.{}", d.name),
            format!("restore {} to its restore point", d.describe),
            StepKind::RestoreData {
                data: d.name.clone(),
            },
        );
    }
    for c in services
        .iter()
        .rev()
        .filter(|c| servers.contains(&c.service))
    {
        undo(&mut p, c);
    }
    p.custom(desired, first_deploy);
    for c in services {
        let s = c.service.clone();
        // Containers taken over run again, on the data as it was (restored above).
        if c.action == Action::Create && !c.adopts.is_empty() {
            p.push(
                format!("give-back.{s}"),
                format!("start {} again", c.adopts.join(", ")),
                StepKind::GiveBack {
                    service: s.clone(),
                    containers: c.adopts.clone(),
                },
            );
        }
        let restart = match (c.action, c.strategy) {
            (Action::Upgrade, Strategy::Manual) => c.quiesced,
            (Action::Upgrade | Action::Restart | Action::Remove, _) => true,
            (Action::Create | Action::Unchanged, _) => false,
        };
        if restart {
            let img = c
                .image_from
                .as_ref()
                .map_or_else(|| "its previous image".to_string(), |i| i.reference.clone());
            p.push(
                format!("start.{s}"),
                format!("start `{s}` on {img} again (the same image ID), wait until healthy"),
                StepKind::StartPrevious { service: s },
            );
        }
    }
    if needs_maintenance(desired, services) {
        p.push(
            "maintenance",
            "maintenance page off",
            StepKind::MaintenanceOff,
        );
    }
    p.push(
        "compare",
        "check that every service runs the containers and image IDs it ran before the upgrade, and restored data its schema version",
        StepKind::CompareWithBefore,
    );
    p.out
}

impl Plan {
    /// For `rollback --data restore`: each data set that has a restore point of release
    /// `release`'s data is put back right after this rollback's own restore points (the
    /// writers are stopped then), before any service starts on the old images.
    pub fn restore_data_of(&mut self, release: u64, data: &[(String, String)]) {
        let steps: Vec<PlanStep> = data
            .iter()
            .map(|(name, describe)| PlanStep {
                id: format!("upgrade.restore.{name}"),
                phase: Phase::Upgrade,
                title: format!("put {describe} back as it was in release {release}"),
                action: StepKind::RestoreFrom {
                    data: name.clone(),
                    release,
                },
                rerun_safe: true,
            })
            .collect();
        if let Some(upgrade) = self
            .procedure
            .iter_mut()
            .find(|p| p.phase == Phase::Upgrade)
        {
            upgrade.steps.splice(0..0, steps);
        }
    }

    /// A rollback to `release` that keeps the data: before anything changes, check that each
    /// data set in `versions` (name, the schema version that release ran on) still has it.
    pub fn require_schema_of(&mut self, release: u64, versions: &[(String, String)]) {
        let Some(preflight) = self
            .procedure
            .iter_mut()
            .find(|p| p.phase == Phase::Preflight)
        else {
            return;
        };
        for (name, version) in versions {
            preflight.steps.push(PlanStep {
                id: format!("preflight.schema_kept.{name}"),
                phase: Phase::Preflight,
                title: format!(
                    "schema version of `{name}` is {version}, the one release {release} ran on (--data keep)"
                ),
                action: StepKind::CheckSchemaKept {
                    data: name.clone(),
                    release,
                    version: version.clone(),
                },
                rerun_safe: true,
            });
        }
    }

    /// A rollback runs recorded images on data that a later release may have migrated: the
    /// older version's `migrate` would meet a schema it does not know. Its migrations are
    /// left out (`--data restore` brings back the data they belong to).
    pub fn drop_migrations(&mut self) {
        for phase in &mut self.procedure {
            phase
                .steps
                .retain(|s| !matches!(s.action, StepKind::Migrate { .. }));
        }
    }

    /// The containers this plan takes over, by service (`adopts` of its service changes).
    pub fn adopting(&self) -> IndexMap<String, Vec<String>> {
        self.services
            .iter()
            .filter(|c| !c.adopts.is_empty())
            .map(|c| (c.service.clone(), c.adopts.clone()))
            .collect()
    }

    /// All steps in execution order.
    pub fn steps(&self) -> impl Iterator<Item = &PlanStep> {
        self.procedure.iter().flat_map(|p| p.steps.iter())
    }
}

#[cfg(test)]
mod tests;
