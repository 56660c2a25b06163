//! `cutover restore-points list | verify [REV] | prune --keep N`.

use anyhow::anyhow;
use cutover_data::manifest::{Kind, Manifest, RestorePoints, Status};
use cutover_data::postgres::Admin;
use cutover_store::Holder;

use crate::cli::{Cli, OutputFormat, RestorePointsAction};
use crate::commands::{self, lock};
use crate::exit::{self, with_code};
use crate::output;
use cutover_ops::data::human;

pub fn run(cli: &Cli, action: &RestorePointsAction) -> anyhow::Result<u8> {
    let name = commands::stack_name(cli)?;
    let rps = RestorePoints::new(&commands::state_dir(cli));
    match action {
        RestorePointsAction::List => list(cli, &rps),
        RestorePointsAction::Verify { release } => verify(cli, &rps, *release),
        RestorePointsAction::Dump { release } => dump(cli, &rps, *release),
        RestorePointsAction::Prune { keep, confirm } => {
            let store = commands::open_store(cli, &name)?;
            if !confirm.yes && !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                return Err(with_code(
                    exit::INVALID,
                    anyhow!("not on a terminal: pass --yes to prune restore points"),
                ));
            }
            // Never while an operation is unfinished: its revert may need what would go.
            let lock = lock::take_lock(
                cli,
                &store,
                &Holder::current(),
                "restore-points prune",
                &name,
            )?;
            let live = store.current_release()?.map(|r| r.revision);
            let result = prune(cli, &rps, *keep, live);
            if let Err(e) = lock.release(&store) {
                eprintln!("cutover: could not release the lease ({e}); it expires by itself");
            }
            result
        }
    }
}

/// Whether a restore point's copy is still there, and the copy a revert set aside.
struct Presence {
    /// `None`: not known (its PostgreSQL server cannot be asked from here).
    present: Option<bool>,
    /// What a revert set aside and is still there: a database, a file or a directory.
    failed_copy: Option<String>,
}

/// Looks for a restore point's copy where it should be: the database copies on their
/// server (gone after `down --volumes` of a server that is a stack service, or a manual
/// drop), the archive files in the state dir.
fn presence(
    cli: &Cli,
    rps: &RestorePoints,
    m: &Manifest,
    rt: &tokio::runtime::Runtime,
) -> Presence {
    if let Some(pg) = &m.postgres {
        let Some(url) = pg_url(cli, &m.data) else {
            return Presence {
                present: None,
                failed_copy: None,
            };
        };
        let names = [pg.copy.clone(), pg.failed_name.clone()];
        let found = rt.block_on(async {
            let ask = async {
                let client = cutover_data::postgres::connect_db(&url, "postgres")
                    .await
                    .ok()?;
                let rows = client
                    .query(
                        "SELECT datname FROM pg_database WHERE datname = ANY($1)",
                        &[&names.as_slice()],
                    )
                    .await
                    .ok()?;
                Some(
                    rows.iter()
                        .map(|r| r.get::<_, String>(0))
                        .collect::<Vec<_>>(),
                )
            };
            tokio::time::timeout(std::time::Duration::from_secs(5), ask)
                .await
                .ok()
                .flatten()
        });
        return match found {
            Some(found) => Presence {
                present: Some(m.status == Status::Restored || found.contains(&pg.copy)),
                failed_copy: found
                    .contains(&pg.failed_name)
                    .then(|| pg.failed_name.clone()),
            },
            None => Presence {
                present: None,
                failed_copy: None,
            },
        };
    }
    let dir = rps.dir(m.release, &m.data);
    let archived =
        !m.artifacts.is_empty() && m.artifacts.iter().all(|a| dir.join(&a.file).exists());
    let present = m.status == Status::Restored
        || m.postgres_tables.is_some()
        || match &m.snapshot {
            Some(snap) => snap.path.exists() || archived,
            None => archived,
        };
    Presence {
        present: Some(present),
        failed_copy: m
            .failed_copy
            .clone()
            .filter(|f| m.postgres_tables.is_some() || std::path::Path::new(f).exists()),
    }
}

fn list(cli: &Cli, rps: &RestorePoints) -> anyhow::Result<u8> {
    let all = rps.list()?;
    let rt = commands::tokio()?;
    let presences: Vec<Presence> = all.iter().map(|m| presence(cli, rps, m, &rt)).collect();
    if cli.output == OutputFormat::Json {
        let mut items = Vec::new();
        for (m, p) in all.iter().zip(&presences) {
            let mut v = serde_json::to_value(m)?;
            if let Some(obj) = v.as_object_mut() {
                obj.insert("present".into(), serde_json::json!(p.present));
                obj.insert("failed_copy".into(), serde_json::json!(p.failed_copy));
            }
            items.push(v);
        }
        output::print_json(&items)?;
        return Ok(exit::OK);
    }
    if all.is_empty() {
        output::print("no restore points\n")?;
        return Ok(exit::OK);
    }
    let mut out = format!(
        "{:>7}  {:<14}  {:<9}  {:<9}  {:>10}  {:<8}  where\n",
        "release", "data", "kind", "status", "size", "schema"
    );
    for (m, p) in all.iter().zip(&presences) {
        let status = match p.present {
            Some(false) => "missing",
            _ => status(m),
        };
        let mut place = where_(rps, m);
        if p.present == Some(false) {
            place.push_str(" — gone");
        }
        if p.present.is_none() && m.postgres.is_some() {
            place.push_str(" — not checked: the server cannot be asked from here");
        }
        if let Some(f) = &p.failed_copy {
            place.push_str(&format!("; set aside by its revert: {f}"));
        }
        out.push_str(&format!(
            "{:>7}  {:<14}  {:<9}  {:<9}  {:>10}  {:<8}  {}\n",
            m.release,
            m.data,
            kind(m),
            status,
            human(m.source_bytes),
            m.schema_version.as_deref().unwrap_or("-"),
            place
        ));
    }
    output::print(&out)?;
    Ok(exit::OK)
}

fn kind(m: &Manifest) -> &'static str {
    match m.kind {
        Kind::Postgres => "postgres",
        Kind::Sqlite => "sqlite",
        Kind::Volume => "volume",
        Kind::Directory => "directory",
    }
}

fn status(m: &Manifest) -> &'static str {
    match m.status {
        Status::Creating => "partial",
        Status::Complete => "complete",
        Status::Restored => "restored",
    }
}

fn where_(rps: &RestorePoints, m: &Manifest) -> String {
    match (&m.postgres, &m.snapshot) {
        (Some(pg), _) => format!("database `{}` (same server)", pg.copy),
        (None, Some(snap)) if m.artifacts.is_empty() => {
            format!("{} ({})", snap.path.display(), snap.method.describe())
        }
        (None, Some(snap)) => format!(
            "{} ({}); durable archive in {}",
            snap.path.display(),
            snap.method.describe(),
            rps.dir(m.release, &m.data).display()
        ),
        (None, None) => rps.dir(m.release, &m.data).display().to_string(),
    }
}

/// The admin URL of a PostgreSQL data set, from the stack file (a secret: never printed).
/// The stack file is loaded once per process: every restore point of a listing or a prune
/// asks, and each load would read the file again and print its warnings again.
fn pg_url(cli: &Cli, data: &str) -> Option<String> {
    static STACK: std::sync::OnceLock<Option<cutover_core::spec::Stack>> =
        std::sync::OnceLock::new();
    let stack = STACK
        .get_or_init(|| commands::load(cli, &[]).ok().map(|l| l.stack))
        .as_ref()?;
    match &stack.data.get(data)?.kind {
        cutover_core::spec::DataKind::Postgres { url, .. } => url.expose().map(str::to_string),
        _ => None,
    }
}

fn verify(cli: &Cli, rps: &RestorePoints, release: Option<u64>) -> anyhow::Result<u8> {
    let all: Vec<Manifest> = rps
        .list()?
        .into_iter()
        .filter(|m| release.is_none_or(|r| m.release == r))
        .filter(|m| m.status == Status::Complete)
        .collect();
    if all.is_empty() {
        output::print("no complete restore point to verify\n")?;
        return Ok(exit::OK);
    }
    let rt = commands::tokio()?;
    let mut bad = 0;
    let mut out = String::new();
    for m in &all {
        let problems: Vec<String> = match &m.postgres {
            Some(pg) => match pg_url(cli, &m.data) {
                None => vec![format!(
                    "the admin URL of `{}` is not available here",
                    m.data
                )],
                Some(url) => rt
                    .block_on(async {
                        let admin = Admin::connect(&url, &pg.database).await?;
                        admin.verify(pg).await
                    })
                    .err()
                    .map(|e| vec![e.to_string()])
                    .unwrap_or_default(),
            },
            None => match (&m.postgres_tables, pg_url(cli, &m.data)) {
                (Some(_), None) => vec![format!(
                    "the admin URL of `{}` is not available here",
                    m.data
                )],
                (Some(t), Some(url)) => rt
                    .block_on(async {
                        let client = cutover_data::postgres::connect_db(&url, &t.database).await?;
                        cutover_data::pg_tables::verify(&client, t).await
                    })
                    .err()
                    .map(|e| vec![e.to_string()])
                    .unwrap_or_default(),
                (None, _) => {
                    let mut problems = rps.verify_files(m);
                    if let Some(snap) = &m.snapshot {
                        if snap.path.exists() {
                            problems.extend(cutover_data::snapshot::verify(snap));
                        } else if m.artifacts.is_empty() {
                            problems.push(format!("the snapshot {} is gone", snap.path.display()));
                        }
                    }
                    problems
                }
            },
        };
        if problems.is_empty() {
            out.push_str(&format!("ok       r{} {}\n", m.release, m.data));
        } else {
            bad += 1;
            out.push_str(&format!(
                "MISMATCH r{} {}: {}\n",
                m.release,
                m.data,
                problems.join("; ")
            ));
        }
    }
    output::print(&out)?;
    if bad > 0 {
        return Err(with_code(
            exit::INVALID,
            anyhow!(
                "{bad} restore point(s) do not match their manifests; a revert would refuse them"
            ),
        ));
    }
    Ok(exit::OK)
}

/// `pg_dump -Fd` of each PostgreSQL same-server copy of a release into its restore point's
/// directory, with a checksum of every file of the dump in the manifest.
fn dump(cli: &Cli, rps: &RestorePoints, release: Option<u64>) -> anyhow::Result<u8> {
    let all = rps.list()?;
    let release = match release {
        Some(r) => r,
        None => all
            .iter()
            .filter(|m| {
                (m.postgres.is_some() || m.snapshot.is_some()) && m.status == Status::Complete
            })
            .map(|m| m.release)
            .max()
            .ok_or_else(|| {
                with_code(
                    exit::INVALID,
                    anyhow!("no PostgreSQL or snapshot restore point to dump"),
                )
            })?,
    };
    let mut out = String::new();
    for mut m in all
        .into_iter()
        .filter(|m| m.release == release && m.status == Status::Complete)
    {
        if m.snapshot.is_some() {
            match crate::backends::archive_snapshot(rps, &mut m) {
                Ok(Some(what)) => out.push_str(&format!("{what}\n")),
                Ok(None) => out.push_str(&format!(
                    "exists   r{} {}: {}\n",
                    m.release,
                    m.data,
                    rps.dir(m.release, &m.data).display()
                )),
                Err(e) => return Err(with_code(exit::INVALID, anyhow!("{}", e.message))),
            }
            continue;
        }
        let Some(pg) = m.postgres.clone() else {
            continue;
        };
        let url = pg_url(cli, &m.data).ok_or_else(|| {
            with_code(
                exit::INVALID,
                anyhow!("the admin URL of `{}` is not available here", m.data),
            )
        })?;
        let dir = rps.dir(m.release, &m.data);
        let target = dir.join(crate::backends::DUMP_DIR);
        if target.exists() {
            out.push_str(&format!(
                "exists   r{} {}: {}\n",
                m.release,
                m.data,
                target.display()
            ));
            continue;
        }
        let partial = dir.join(format!("{}.partial", crate::backends::DUMP_DIR));
        let _ = std::fs::remove_dir_all(&partial);
        let started = std::time::Instant::now();
        // The copy takes no connections (nothing may write to it): open it for the dump only.
        let rt = commands::tokio()?;
        let admin = rt.block_on(Admin::connect(&url, &pg.database))?;
        rt.block_on(admin.open_copy(&pg, true))?;
        let dumped =
            cutover_data::pg_dump::dump(&url, &pg.copy, &partial, crate::backends::DUMP_JOBS);
        rt.block_on(admin.open_copy(&pg, false))?;
        dumped?;
        std::fs::rename(&partial, &target)?;
        let mut files: Vec<_> = std::fs::read_dir(&target)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        files.sort();
        let mut bytes = 0;
        for f in files {
            let (n, blake3) = cutover_data::manifest::checksum(&f)?;
            bytes += n;
            let rel = f
                .strip_prefix(&dir)
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            m.artifacts.push(cutover_data::manifest::Artifact {
                file: rel,
                bytes: n,
                blake3,
            });
        }
        rps.save(&m)?;
        out.push_str(&format!(
            "dumped   r{} {}: `{}` → {} ({}) in {:.1}s\n",
            m.release,
            m.data,
            pg.copy,
            target.display(),
            human(bytes),
            started.elapsed().as_secs_f64()
        ));
    }
    if out.is_empty() {
        out.push_str(&format!(
            "release {release} has no PostgreSQL or snapshot restore point to dump\n"
        ));
    }
    output::print(&out)?;
    Ok(exit::OK)
}

fn prune(cli: &Cli, rps: &RestorePoints, keep: usize, live: Option<u64>) -> anyhow::Result<u8> {
    let out = prune_report(cli, rps, keep, live, true)?;
    output::print(&out)?;
    Ok(exit::OK)
}

/// Removes the restore points of all but the newest `keep` releases (never the live
/// release's), with the copies a revert set aside with them (a failed database, a failed
/// directory); `failed_of_kept` removes those of the kept releases too (`prune`), else
/// they stay for inspection (the retention after an apply). Says what it did.
pub fn prune_report(
    cli: &Cli,
    rps: &RestorePoints,
    keep: usize,
    live: Option<u64>,
    failed_of_kept: bool,
) -> anyhow::Result<String> {
    let all = rps.list()?;
    let mut releases: Vec<u64> = all.iter().map(|m| m.release).collect();
    releases.sort_unstable();
    releases.dedup();
    let kept: Vec<u64> = releases.iter().rev().take(keep).copied().collect();
    let rt = commands::tokio()?;
    let mut out = String::new();
    for m in &all {
        // The live release's restore point holds the data to roll back to: never pruned.
        let protected = Some(m.release) == live;
        let failed_copy_only = kept.contains(&m.release) || protected;
        if failed_copy_only && !failed_of_kept {
            continue;
        }
        if let Some(pg) = &m.postgres {
            let Some(url) = pg_url(cli, &m.data) else {
                out.push_str(&format!(
                    "skipped  r{} {}: the admin URL is not available here\n",
                    m.release, m.data
                ));
                continue;
            };
            let dropped = rt.block_on(async {
                let admin = Admin::connect(&url, &pg.database).await?;
                let mut dropped = Vec::new();
                if admin.drop_database(&pg.failed_name).await? {
                    dropped.push(pg.failed_name.clone());
                }
                if !failed_copy_only
                    && m.status != Status::Restored
                    && admin.drop_database(&pg.copy).await?
                {
                    dropped.push(pg.copy.clone());
                }
                Ok::<_, cutover_data::postgres::PgError>(dropped)
            })?;
            for d in dropped {
                out.push_str(&format!("dropped  database `{d}`\n"));
            }
        }
        if let Some(t) = &m.postgres_tables
            && let Some(url) = pg_url(cli, &m.data)
        {
            let drop_copy = !failed_copy_only;
            rt.block_on(async {
                let client = cutover_data::postgres::connect_db(&url, &t.database).await?;
                if drop_copy {
                    cutover_data::pg_tables::drop(&client, t, true).await
                } else {
                    client
                        .batch_execute(&format!(
                            "DROP SCHEMA IF EXISTS {} CASCADE",
                            cutover_data::postgres::quote_ident(&t.failed_schema)
                        ))
                        .await
                        .map_err(|source| cutover_data::postgres::PgError::Sql {
                            what: "cannot drop the failed rows".into(),
                            source,
                        })
                }
            })?;
            out.push_str(&format!(
                "dropped  schema(s) of r{} {} in `{}`\n",
                m.release, m.data, t.database
            ));
        } else if m.postgres.is_none()
            && let Some(failed) = &m.failed_copy
        {
            let path = std::path::Path::new(failed);
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(path)
            } else {
                std::fs::remove_file(path).map(|()| {
                    // A SQLite database's companions go with it.
                    for suffix in ["-wal", "-shm"] {
                        let _ = std::fs::remove_file(format!("{failed}{suffix}"));
                    }
                })
            };
            match removed {
                Ok(()) => out.push_str(&format!("removed  {failed} (set aside by a revert)\n")),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(anyhow!("cannot remove {failed}: {e}")),
            }
        }
        if !failed_copy_only {
            if let Some(snap) = &m.snapshot
                && m.status != Status::Restored
            {
                cutover_data::snapshot::remove(&snap.path)
                    .map_err(|e| anyhow!("cannot remove {}: {e}", snap.path.display()))?;
                out.push_str(&format!("removed  {} (snapshot)\n", snap.path.display()));
            }
            rps.remove(m.release, &m.data)?;
            out.push_str(&format!("removed  r{} {}\n", m.release, m.data));
        } else if protected {
            out.push_str(&format!(
                "kept     r{} {} (the live release's: the data to roll back to)\n",
                m.release, m.data
            ));
        }
    }
    if out.is_empty() {
        out.push_str("nothing to prune\n");
    }
    Ok(out)
}
