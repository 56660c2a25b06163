//! One module per verb. Each takes the parsed command line and returns an exit code or an
//! error (which `exit::report` prints and classifies).

mod apply;
mod approve;
mod dashboard;
mod docs;
mod down;
pub(crate) mod history;
mod lock;
mod maintenance;
mod plan;
pub mod restore_points;
mod resume;
mod serve;
pub use cutover_ops::shapes;
mod status;
mod unlock;
mod validate;
mod watch;

use std::path::{Path, PathBuf};

use anyhow::Context;
use cutover_core::plan::Observed;
use cutover_core::spec::{self, LoadOptions, Loaded, Stack};
use cutover_docker::Runtime;
use cutover_store::{Release, Store};
use indexmap::IndexMap;

use crate::exit::{self, with_code};
use cutover_ops::record::ReleaseImages;

use crate::cli::{Cli, Command};

pub fn run(cli: &Cli) -> anyhow::Result<u8> {
    match &cli.command {
        Command::Validate => validate::run(cli),
        Command::Plan { set } => plan::run(cli, &set.sets),
        Command::Apply {
            set,
            confirm,
            ack_settings,
        } => apply::run(cli, &set.sets, confirm, *ack_settings),
        Command::Status => status::run(cli),
        Command::History { limit, operation } => history::run(cli, *limit, *operation),
        Command::Rollback {
            revision,
            data,
            from_dump,
            sets,
            confirm,
        } => apply::rollback(cli, *revision, *data, *from_dump, sets, confirm),
        Command::UpgradeService { service, confirm } => {
            apply::upgrade_service(cli, service, confirm)
        }
        Command::Down { volumes, confirm } => down::run(cli, *volumes, confirm),
        Command::Resume { yes } => resume::run(cli, false, *yes),
        Command::Approve { operation } => approve::run(cli, *operation),
        Command::Abort { yes } => resume::run(cli, true, *yes),
        Command::Unlock { force } => unlock::run(cli, *force),
        Command::RestorePoints { action } => restore_points::run(cli, action),
        Command::Serve {
            access_log,
            metrics_listen,
        } => serve::run(cli, *access_log, *metrics_listen),
        Command::Maintenance { action } => maintenance::run(cli, action),
        Command::Dashboard {
            listen,
            stack_files,
            stacks_dir,
            home,
            tls_cert,
            tls_key,
            trusted_header,
            trusted_proxy,
            trusted_default_role,
        } => dashboard::run(
            cli,
            &dashboard::Args {
                listen: *listen,
                stack_files: stack_files.clone(),
                stacks_dir: stacks_dir.clone(),
                home: home.dir.clone(),
                tls: tls_cert.clone().zip(tls_key.clone()),
                trusted_header: trusted_header.clone(),
                trusted_proxy: trusted_proxy.clone(),
                trusted_default_role: trusted_default_role.clone(),
            },
        ),
        Command::User { action } => dashboard::user(action),
        Command::Token { action } => dashboard::token(action),
        Command::Watch {
            git,
            images,
            branch,
            path,
            once,
            ack,
            interval,
        } => watch::run(
            cli,
            &watch::Args {
                repository: git.clone(),
                images: *images,
                branch: branch.clone(),
                path: path.clone(),
                once: *once,
                ack: *ack,
                interval: *interval,
            },
        ),
        Command::Completions { shell } => docs::completions(*shell),
        Command::Man => docs::man(),
    }
}

/// Loads and validates the stack file; diagnostics come back as the error.
pub fn load(cli: &Cli, sets: &[String]) -> anyhow::Result<Loaded> {
    let opts = LoadOptions {
        environment: cli.environment.clone(),
        sets: sets.to_vec(),
        profiles: cli.profiles.clone(),
        ..LoadOptions::from_process()
    };
    let loaded = spec::load(&cli.file, &opts)?;
    crate::output::add_secrets(&loaded.redactor);
    if !loaded.warnings.items.is_empty() && cli.output == crate::cli::OutputFormat::Text {
        eprintln!("{}", loaded.warnings);
    }
    Ok(loaded)
}

/// `--state-dir`, or `.cutover/` beside the stack file.
pub fn state_dir(cli: &Cli) -> PathBuf {
    cli.state_dir.clone().unwrap_or_else(|| {
        cli.file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .join(".cutover")
    })
}

pub fn open_store(cli: &Cli, stack: &str) -> anyhow::Result<Store> {
    let dir = state_dir(cli);
    Store::open(&dir, stack).with_context(|| format!("cannot open the state in {}", dir.display()))
}

/// The state when there is some: read-only verbs (`plan`) create nothing, so a dry-run on a
/// read-only checkout (CI, a GitOps clone) writes nothing.
pub fn open_store_if_present(cli: &Cli, stack: &str) -> anyhow::Result<Option<Store>> {
    if Store::exists(&state_dir(cli)) {
        open_store(cli, stack).map(Some)
    } else {
        Ok(None)
    }
}

/// The stack name without validating the whole file: read-only verbs (`status`, `history`,
/// `unlock`) must work even when the file has a mistake in it.
pub fn stack_name(cli: &Cli) -> anyhow::Result<String> {
    match load(cli, &[]) {
        Ok(l) => Ok(l.stack.name),
        Err(e) => {
            #[derive(serde::Deserialize)]
            struct NameOnly {
                name: Option<String>,
            }
            let text = std::fs::read_to_string(&cli.file)
                .with_context(|| format!("cannot read {}", cli.file.display()))?;
            let name = serde_saphyr::from_str::<NameOnly>(&text)
                .ok()
                .and_then(|n| n.name)
                .ok_or(e)?;
            Ok(name)
        }
    }
}

/// What the live release says runs.
pub fn observed(store: &Store) -> anyhow::Result<Observed> {
    let Some(rel) = store.current_release()? else {
        return Ok(Observed::default());
    };
    observed_from(&rel)
}

pub fn observed_from(rel: &Release) -> anyhow::Result<Observed> {
    let stack: Stack = serde_json::from_str(&rel.spec_json)
        .with_context(|| format!("release {} has an unreadable spec", rel.revision))?;
    let images = ReleaseImages::of_release(rel.revision, &rel.images_json)?;
    let image_ids = images.ids();
    let started_in = images
        .0
        .iter()
        .filter_map(|(s, i)| {
            Some((
                s.clone(),
                std::time::Duration::from_millis(i.started_in_ms?),
            ))
        })
        .collect();
    Ok(Observed {
        release: Some(rel.revision),
        stack: Some(stack),
        image_ids,
        adoptable: IndexMap::new(),
        started_in,
    })
}

/// On a first apply: the containers to take over, by service — those of the compose project
/// the stack imports (only services the stack has), and those a service names in `adopt`.
pub fn adoptable(
    rt: &tokio::runtime::Runtime,
    docker: &Runtime,
    stack: &Stack,
    observed: &Observed,
) -> anyhow::Result<IndexMap<String, Vec<String>>> {
    let mut out: IndexMap<String, Vec<String>> = IndexMap::new();
    if observed.release.is_some() {
        return Ok(out);
    }
    if let Some(project) = &stack.compose_project {
        for (service, name) in rt.block_on(docker.compose_containers(project))? {
            if stack.services.contains_key(&service) {
                out.entry(service).or_default().push(name);
            }
        }
    }
    // Containers started by hand that the stack file names (`adopt:`).
    for (service, svc) in &stack.services {
        for name in &svc.adopt {
            if let Some(found) = rt.block_on(docker.foreign_container(name))?
                && !out.get(service).is_some_and(|v| v.contains(&found))
            {
                out.entry(service.clone()).or_default().push(found);
            }
        }
    }
    Ok(out)
}

/// The revision the next release will get: revisions are never reused, also after a
/// failed or reverted one.
pub fn next_revision(store: &Store) -> anyhow::Result<u64> {
    Ok(store.releases(1)?.first().map_or(1, |r| r.revision + 1))
}

/// The async runtime the Docker client runs on; commands stay synchronous around it.
pub fn tokio() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Connects to the Docker Engine; unreachable is exit 2 (nothing was changed).
/// What a stack's steps run on: its engine, or — `runtime: swarm` — the swarm that engine
/// manages (refused, with nothing changed, when it manages none).
pub fn runtime_for<'a>(
    rt: &'a tokio::runtime::Runtime,
    docker: &'a Runtime,
    stack: &cutover_core::spec::Stack,
) -> anyhow::Result<cutover_docker::Blocking<'a>> {
    match stack.runtime {
        cutover_core::spec::RuntimeKind::Docker => Ok(cutover_docker::Blocking::new(rt, docker)),
        cutover_core::spec::RuntimeKind::Swarm => {
            rt.block_on(docker.swarm_manager()).map_err(|e| {
                with_code(exit::INVALID, anyhow::anyhow!("{e}; nothing was changed"))
            })?;
            Ok(cutover_docker::Blocking::swarm(rt, docker))
        }
    }
}

pub fn connect(rt: &tokio::runtime::Runtime) -> anyhow::Result<Runtime> {
    rt.block_on(Runtime::connect())
        .map_err(|e| with_code(exit::INVALID, anyhow::anyhow!("{e}; nothing was changed")))
}

pub use cutover_ops::shapes::when;
