//! `cutover completions SHELL` and `cutover man`: generated from the same definitions as
//! `--help`.

use clap::CommandFactory;

use crate::cli::Cli;
use crate::exit;

pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<u8> {
    let mut cmd = Cli::command();
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, "cutover", &mut buf);
    crate::output::print(&String::from_utf8_lossy(&buf))?;
    Ok(exit::OK)
}

pub fn man() -> anyhow::Result<u8> {
    let cmd = Cli::command();
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut buf)?;
    crate::output::print(&String::from_utf8_lossy(&buf))?;
    Ok(exit::OK)
}
