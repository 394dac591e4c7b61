//! `cargo xtask ci`: the whole gate, stopping at the first failure.

use std::time::Instant;

use anyhow::{Context as _, Result};

use crate::cmd;
use crate::deploy;
use crate::deps;
use crate::services::Services;
use crate::setup;
use crate::suite;

pub(crate) fn run() -> Result<()> {
    let started = Instant::now();
    step(0, "tools the tests need", setup::ensure)?;
    step(1, "formatting", || {
        cmd::run(cmd::cargo().args(["fmt", "--all", "--", "--check"]))
    })?;
    step(2, "dependency directions", deps::check_workspace)?;
    step(3, "deployment files", deploy::check)?;
    step(4, "clippy", || {
        cmd::run(cmd::cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))
    })?;
    step(5, "tests", || {
        let services = Services::start(false).context("starting the test services")?;
        suite::run(&services, &[])
    })?;
    eprintln!("ci: all {STEPS} steps passed in {:.0?}", started.elapsed());
    Ok(())
}

const STEPS: usize = 5;

fn step(number: usize, name: &str, body: impl FnOnce() -> Result<()>) -> Result<()> {
    eprintln!("==> ci step {number}/{STEPS}: {name}");
    let started = Instant::now();
    body().with_context(|| format!("ci step {number}/{STEPS} ({name}) failed"))?;
    eprintln!(
        "==> ci step {number}/{STEPS}: {name} passed in {:.1?}",
        started.elapsed()
    );
    Ok(())
}
