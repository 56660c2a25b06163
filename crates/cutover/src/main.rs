//! `cutover`: upgrades of self-hosted, stateful container applications, run as code.
//!
//! This file only parses the command line, sets up output, dispatches to one module per verb
//! and turns the outcome into an exit code (see [`exit`]).

mod backends;
mod cli;
mod commands;
mod exit;
mod host;
mod output;
mod progress;
mod runner;
mod settings;
mod traffic;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of glibc's malloc: `cutover serve` allocates and frees per request on
/// every worker thread, where glibc's arenas cost ~13% more CPU per proxied request (measured
/// with `crates/cutover-proxy/examples/bare_proxy.rs`, see bench/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let result = commands::run(&cli);
    exit::report(result)
}
