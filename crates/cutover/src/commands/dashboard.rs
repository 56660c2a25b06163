//! `cutover dashboard`, `cutover user`, `cutover token`: the arguments mapped onto
//! `cutover_dashboard`, which holds the server, its people and its audit log.

use std::io::{BufRead, IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, anyhow};
use cutover_dashboard::auth::{Role, TrustedHeader};
use cutover_dashboard::home::Home;
use cutover_dashboard::stacks::{Cutover, StackRef};
use cutover_dashboard::{App, Listen};

use crate::cli::{Cli, TokenAction, UserAction};
use crate::commands;
use crate::exit::{self, with_code};
use crate::output;

pub struct Args {
    pub listen: SocketAddr,
    pub stack_files: Vec<PathBuf>,
    pub stacks_dir: Option<PathBuf>,
    pub home: Option<PathBuf>,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub trusted_header: Option<String>,
    pub trusted_proxy: Vec<std::net::IpAddr>,
    pub trusted_default_role: String,
}

fn invalid(e: impl std::fmt::Display) -> anyhow::Error {
    with_code(exit::INVALID, anyhow!("{e}"))
}

fn open_home(dir: Option<&Path>) -> anyhow::Result<Home> {
    let dir = dir.map(Path::to_path_buf).unwrap_or_else(Home::default_dir);
    Home::open(&dir).map_err(|e| anyhow!("{e}"))
}

fn role(s: &str) -> anyhow::Result<Role> {
    s.parse::<Role>().map_err(invalid)
}

/// The stack files to serve: `--stack` ones, those in `--stacks DIR`, else `-f`.
fn stack_files(cli: &Cli, a: &Args) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = a.stack_files.clone();
    if let Some(dir) = &a.stacks_dir {
        let mut found = Vec::new();
        let entries = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read the stacks directory {}", dir.display()))?;
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() && p.join("cutover.yaml").is_file() {
                found.push(p.join("cutover.yaml"));
            } else if p.is_file()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.ends_with(".cutover.yaml"))
            {
                found.push(p);
            }
        }
        if found.is_empty() {
            return Err(invalid(format!(
                "{} holds no stack file (*/cutover.yaml or *.cutover.yaml)",
                dir.display()
            )));
        }
        found.sort();
        files.extend(found);
    }
    if files.is_empty() {
        files.push(cli.file.clone());
    }
    Ok(files)
}

pub fn run(cli: &Cli, a: &Args) -> anyhow::Result<u8> {
    let files = stack_files(cli, a)?;
    if cli.state_dir.is_some() && files.len() > 1 {
        return Err(invalid(
            "--state-dir names one stack's state: with several stacks each keeps its own \
             (.cutover/ beside its file)",
        ));
    }
    let mut stacks: Vec<StackRef> = Vec::new();
    for f in &files {
        let mut one = cli.clone();
        one.file = f.clone();
        let name = commands::stack_name(&one)
            .with_context(|| format!("cannot read the stack file {}", f.display()))?;
        if stacks.iter().any(|s| s.name == name) {
            return Err(invalid(format!(
                "two stack files name the stack `{name}`: {} and another",
                f.display()
            )));
        }
        let file = std::fs::canonicalize(f).unwrap_or_else(|_| f.clone());
        stacks.push(StackRef::new(name, file, cli.state_dir.clone()));
    }
    let home = open_home(a.home.as_deref())?;
    if home.users().map_err(|e| anyhow!("{e}"))?.is_empty() && a.trusted_header.is_none() {
        eprintln!(
            "cutover dashboard: no users yet: add one with `cutover user add NAME --role admin` \
             (the password on stdin)"
        );
    }
    let trusted = a
        .trusted_header
        .as_ref()
        .map(|h| -> anyhow::Result<TrustedHeader> {
            Ok(TrustedHeader {
                header: h.to_ascii_lowercase(),
                proxies: a.trusted_proxy.clone(),
                default_role: role(&a.trusted_default_role)?,
            })
        })
        .transpose()?;
    let program = std::env::current_exe().context("cannot find the cutover binary")?;
    let app = Arc::new(App {
        cutover: Cutover {
            program,
            environment: cli.environment.clone(),
            runs_dir: home.dir().join("runs"),
        },
        home: Mutex::new(home),
        stacks,
        trusted,
        tls: a.tls.is_some(),
        limiter: Mutex::new(Default::default()),
    });
    let names: Vec<String> = app.stacks.iter().map(|s| s.name.clone()).collect();
    let scheme = if a.tls.is_some() { "https" } else { "http" };
    let rt = commands::tokio()?;
    rt.block_on(cutover_dashboard::serve(
        app,
        Listen {
            addr: a.listen,
            tls: a.tls.clone(),
        },
        |bound| {
            eprintln!(
                "cutover dashboard: {scheme}://{bound}/ serving {}",
                names.join(", ")
            );
        },
        super::serve::shutdown_signal(),
    ))
    .map_err(|e| with_code(exit::INVALID, anyhow!(e)))?;
    Ok(exit::OK)
}

fn read_password() -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("password: ");
        let _ = std::io::stderr().flush();
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from stdin")?;
    let pw = line.trim_end_matches(['\n', '\r']).to_string();
    if pw.is_empty() {
        return Err(invalid(
            "no password on stdin (give --no-password for a user who signs in through a trusted proxy)",
        ));
    }
    Ok(pw)
}

pub fn user(action: &UserAction) -> anyhow::Result<u8> {
    match action {
        UserAction::Add {
            name,
            role: r,
            no_password,
            home,
        } => {
            let r = role(r)?;
            let pw = if *no_password {
                None
            } else {
                Some(read_password()?)
            };
            let home = open_home(home.dir.as_deref())?;
            home.put_user(name, r, pw.as_deref()).map_err(invalid)?;
            output::print(&format!("user `{name}`: {r}\n"))?;
        }
        UserAction::Remove { name, home } => {
            let home = open_home(home.dir.as_deref())?;
            if !home.remove_user(name).map_err(|e| anyhow!("{e}"))? {
                return Err(invalid(format!("no user named `{name}`")));
            }
            output::print(&format!("user `{name}` removed\n"))?;
        }
        UserAction::List { home } => {
            let home = open_home(home.dir.as_deref())?;
            let users = home.users().map_err(|e| anyhow!("{e}"))?;
            let mut out = String::new();
            for u in users {
                out.push_str(&format!("{}\t{}\n", u.name, u.role));
            }
            output::print(&out)?;
        }
    }
    Ok(exit::OK)
}

pub fn token(action: &TokenAction) -> anyhow::Result<u8> {
    match action {
        TokenAction::Create {
            name,
            role: r,
            home,
        } => {
            let r = role(r)?;
            let home = open_home(home.dir.as_deref())?;
            let token = home.create_token(name, r).map_err(invalid)?;
            // The token itself, alone on stdout, for `$(cutover token create ci)`.
            println!("{token}");
            eprintln!("token `{name}` ({r}): shown once; send it as `Authorization: Bearer …`");
        }
        TokenAction::Revoke { name, home } => {
            let home = open_home(home.dir.as_deref())?;
            if !home.revoke_token(name).map_err(|e| anyhow!("{e}"))? {
                return Err(invalid(format!("no token named `{name}`")));
            }
            output::print(&format!("token `{name}` revoked\n"))?;
        }
    }
    Ok(exit::OK)
}
