#![doc = include_str!("../README.md")]

mod cli;
mod client;
mod cmd;
mod error;
mod output;
mod prompt;

use std::process::ExitCode;

use clap::Parser;
use time::UtcOffset;

use crate::cli::Cli;
use crate::output::Local;

fn main() -> ExitCode {
    // Read the local offset first, while the process has one thread: the
    // `time` crate refuses to read it later.
    let local = Local {
        offset: UtcOffset::current_local_offset().unwrap_or(UtcOffset::UTC),
    };
    // Usage errors exit 2 here, help and version 0.
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return error::report(&anyhow::Error::new(e).context("cannot start the async runtime"));
        }
    };
    match runtime.block_on(cmd::run(cli, local)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => error::report(&e),
    }
}
