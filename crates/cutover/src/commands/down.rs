//! `cutover down`: remove a stack's containers and network; volumes only when asked. The
//! state (releases, journal) is kept: it is the stack's history.

use anyhow::anyhow;
use cutover_store::Holder;

use crate::cli::{Cli, ConfirmArgs};
use crate::commands::{self, lock};
use crate::exit::{self, with_code};
use crate::output;

pub fn run(cli: &Cli, volumes: bool, confirm: &ConfirmArgs) -> anyhow::Result<u8> {
    let name = commands::stack_name(cli)?;
    let store = commands::open_store(cli, &name)?;
    lock::refuse_if_unfinished(&store)?;
    let rt = commands::tokio()?;
    let docker = commands::connect(&rt)?;
    let containers = rt.block_on(docker.containers(&name))?;
    if !confirm.yes {
        if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
            return Err(with_code(
                exit::INVALID,
                anyhow!("not on a terminal: pass --yes to take stack `{name}` down"),
            ));
        }
        eprint!(
            "remove {} container(s) of stack `{name}`{}? [y/N] ",
            containers.len(),
            if volumes { " and their volumes" } else { "" }
        );
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Err(with_code(
                exit::INVALID,
                anyhow!("down cancelled; nothing was changed"),
            ));
        }
    }
    let holder = Holder::current();
    let lock = lock::take_lock(cli, &store, &holder, "down", &name)?;
    // The stack file's named volumes, when it loads: they may outlive every container.
    // Its start order, so dependents stop before what they depend on.
    let loaded = commands::load(cli, &[]).ok();
    let declared: Vec<String> = loaded
        .iter()
        .flat_map(|l| l.stack.services.values())
        .flat_map(|s| &s.volumes)
        .filter_map(|m| match &m.source {
            cutover_core::spec::MountSource::Volume(v) => Some(v.clone()),
            cutover_core::spec::MountSource::Bind(_) => None,
        })
        .collect();
    let start_order: Vec<String> = loaded
        .as_ref()
        .and_then(|l| {
            let deps = l
                .stack
                .services
                .iter()
                .map(|(n, s)| (n.clone(), s.depends_on.clone()))
                .collect();
            cutover_core::graph::order(&deps).ok()
        })
        .unwrap_or_default();
    let external: Vec<String> = loaded
        .as_ref()
        .map(|l| l.stack.external_volumes.clone())
        .unwrap_or_default();
    let result = rt.block_on(docker.down(&name, volumes, &declared, &start_order, &external));
    // Nothing is deployed any more: the next apply is a first deploy. The release stays in
    // the history, and a rollback target.
    let recorded = match (&result, store.current_release()) {
        (Ok(_), Ok(Some(rel))) => store
            .set_release_status(rel.revision, cutover_store::ReleaseStatus::Superseded)
            .map_err(anyhow::Error::from),
        (_, Err(e)) => Err(e.into()),
        _ => Ok(()),
    };
    if let Err(e) = lock.release(&store) {
        eprintln!("cutover: could not release the lease ({e}); it expires by itself");
    }
    let removed = result?;
    recorded?;
    let mut out = String::new();
    // A running `cutover serve` still points at the removed containers and would answer
    // 502: it now has no upstream for them (503, Retry-After) until the next apply routes.
    let socket = crate::traffic::socket_path(&commands::state_dir(cli));
    if socket.exists() {
        let client = cutover_proxy::client::Client::new(&socket);
        let cleared = rt.block_on(async {
            let state = client.state().await.ok()?;
            let mut cleared = Vec::new();
            for service in state.services.keys() {
                if client.switch(service, &[]).await.is_ok() {
                    cleared.push(service.clone());
                }
            }
            Some(cleared)
        });
        if let Some(cleared) = cleared.filter(|c| !c.is_empty()) {
            out.push_str(&format!(
                "the proxy has no upstream for {} now (it answers 503 until the next apply)\n",
                cleared.join(", ")
            ));
        }
    }
    if removed.is_empty() {
        out.push_str(&format!("stack `{name}`: nothing runs\n"));
    }
    for r in &removed {
        out.push_str(&format!("removed {r}\n"));
    }
    if !volumes {
        out.push_str(
            "volumes and the state in the state dir are kept (`--volumes` removes the volumes)\n",
        );
    }
    output::print(&out)?;
    Ok(exit::OK)
}
