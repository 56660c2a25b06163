//! `cutover status`: the live release and, per service, its image and the containers that
//! run it (from the engine); the lease and unfinished operations (from the store).

use cutover_docker::ContainerInfo;
use serde_json::json;

use crate::cli::{Cli, OutputFormat};
use crate::commands::{self, shapes, when};
use crate::exit;
use crate::output;
use cutover_ops::record::ReleaseImages;

pub fn run(cli: &Cli) -> anyhow::Result<u8> {
    let name = commands::stack_name(cli)?;
    let store = commands::open_store(cli, &name)?;
    let current = store.current_release()?;
    let lease = store.current_lease()?;
    let live = store.live_lease()?;
    let unfinished = store.unfinished_operations()?;
    let mut unfinished_json = Vec::new();
    let mut stopped_at = Vec::new();
    for op in &unfinished {
        let last = store.journal(op.id)?.pop();
        // Running in the store: in progress (its holder holds the lease) or unfinished (its
        // process is gone, and only `resume` or `abort` may act).
        let mut v = shapes::operation(op, None, last.as_ref());
        v["in_progress"] =
            serde_json::Value::Bool(live.as_ref().is_some_and(|l| l.holder == op.holder));
        unfinished_json.push(v);
        stopped_at.push(last);
    }
    // The engine is asked, not required: status must work when the daemon is down.
    let rt = commands::tokio()?;
    // A stack on a swarm lists its replicas (the live release says which runtime).
    let swarm = current.as_ref().is_some_and(|r| {
        serde_json::from_str::<serde_json::Value>(&r.spec_json)
            .is_ok_and(|s| s["runtime"] == "swarm")
    });
    let containers: Result<Vec<ContainerInfo>, String> = rt
        .block_on(async {
            let docker = cutover_docker::Runtime::connect().await?;
            if swarm {
                docker.swarm_replicas(&name).await
            } else {
                docker.containers(&name).await
            }
        })
        .map_err(|e| e.to_string());
    let images = current
        .as_ref()
        .map(|r| ReleaseImages::of_release(r.revision, &r.images_json))
        .transpose()
        // Said, and the rest of the status still shown (`-o json` carries it as
        // `images_error` on the release).
        .unwrap_or_else(|e| {
            eprintln!("cutover: {e}");
            None
        })
        .unwrap_or_default();
    let live = current.as_ref().map(commands::observed_from).transpose()?;
    let live_stack = live.as_ref().and_then(|o| o.stack.as_ref());

    // Per service: what the release recorded, what runs, whether it is still pending.
    let mut services = Vec::new();
    if let Some(stack) = live_stack {
        for (svc, s) in &stack.services {
            let recorded = images.0.get(svc);
            let of_svc: Vec<&ContainerInfo> = containers
                .as_ref()
                .map(|cs| cs.iter().filter(|c| &c.service == svc).collect())
                .unwrap_or_default();
            let running: Vec<&&ContainerInfo> = of_svc.iter().filter(|c| c.running()).collect();
            let differs = recorded.is_some_and(|r| {
                containers.is_ok()
                    && !running.is_empty()
                    && running.iter().all(|c| c.image_id != r.id)
            });
            // A manual service runs its old image until `upgrade-service`: that is pending.
            // Any other service running something else than its release recorded drifted.
            let pending = differs && s.strategy == cutover_core::spec::Strategy::Manual;
            let drift = differs && !pending;
            services.push(json!({
                "service": svc,
                "image": s.image,
                "image_id": recorded.map(|r| r.id.clone()),
                "repo_digests": recorded.map(|r| r.repo_digests.clone()).unwrap_or_default(),
                "strategy": s.strategy.as_str(),
                "pending_upgrade": pending,
                "drift": drift,
                "containers": of_svc,
            }));
        }
    }

    if cli.output == OutputFormat::Json {
        output::print_json(&json!({
            "stack": name,
            "release": current.as_ref().map(|r| shapes::release(r, None)),
            "services": services,
            "engine_error": containers.as_ref().err(),
            "lease": lease.as_ref().map(shapes::lease),
            "unfinished_operations": unfinished_json,
        }))?;
        return Ok(exit::OK);
    }
    let mut out = format!("stack `{name}`\n");
    match &current {
        None => out.push_str("  release   none deployed\n"),
        Some(r) => out.push_str(&format!(
            "  release   {} (deployed {} by {}@{})\n",
            r.revision,
            when(r.updated_at),
            r.created_by,
            r.host
        )),
    }
    if let Err(e) = &containers {
        out.push_str(&format!("  engine    {e}\n"));
    }
    for s in &services {
        let svc = s["service"].as_str().unwrap_or("");
        let id = s["image_id"]
            .as_str()
            .map(|i| format!(" ({})", &i[..i.len().min(19)]))
            .unwrap_or_default();
        out.push_str(&format!(
            "  {svc:<9} {}{id}  {}{}\n",
            s["image"].as_str().unwrap_or(""),
            s["strategy"].as_str().unwrap_or(""),
            if s["pending_upgrade"].as_bool() == Some(true) {
                format!("  PENDING: runs an older image until `cutover upgrade-service {svc}`")
            } else if s["drift"].as_bool() == Some(true) {
                "  DRIFT: what runs is not the image the release recorded".to_string()
            } else {
                String::new()
            }
        ));
        if let Ok(cs) = &containers {
            let of_svc: Vec<&ContainerInfo> = cs.iter().filter(|c| c.service == svc).collect();
            if of_svc.is_empty() {
                out.push_str("            no container\n");
            }
            for c in of_svc {
                let ports: Vec<String> = c
                    .published
                    .iter()
                    .map(|(p, a)| format!("{a}→{p}"))
                    .collect();
                out.push_str(&format!(
                    "            {} {} r{} {} {}{}{}\n",
                    c.name,
                    c.short_id(),
                    c.release,
                    c.slot.as_str(),
                    c.state,
                    c.health
                        .as_deref()
                        .filter(|_| c.running())
                        .map(|h| format!(" ({h})"))
                        .unwrap_or_default(),
                    if ports.is_empty() {
                        String::new()
                    } else {
                        format!(" {}", ports.join(" "))
                    }
                ));
            }
        }
    }
    match &lease {
        None => out.push_str("  lease     free\n"),
        Some(l) => out.push_str(&format!(
            "  lease     held by {}@{} (pid {}) for `{}` since {}, expires {}\n",
            l.holder.user,
            l.holder.host,
            l.holder.pid,
            l.operation,
            when(l.acquired_at),
            when(l.expires_at)
        )),
    }
    for (op, last) in unfinished.iter().zip(&stopped_at) {
        out.push_str(&format!(
            "  unfinished operation {} ({}) started {} by {}@{}{}: `cutover resume` finishes it, `cutover abort` reverts it\n",
            op.id,
            op.kind,
            when(op.started_at),
            op.holder.user,
            op.holder.host,
            last.as_ref()
                .map(|s| format!(", last step `{}` ({})", s.step_id, s.status.as_str()))
                .unwrap_or_default()
        ));
    }
    output::print(&out)?;
    Ok(exit::OK)
}
