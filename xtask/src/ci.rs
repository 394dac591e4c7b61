//! `cargo xtask ci`: the whole gate, stopping at the first failure.

use std::time::Instant;

use anyhow::{Context as _, Result};

use crate::cmd;
use crate::deploy;
use crate::deps;
use crate::layers;
use crate::policy;
use crate::services::Services;
use crate::setup;
use crate::suite;

pub(crate) fn run() -> Result<()> {
    let started = Instant::now();
    step(0, "tools the tests need", setup::ensure)?;
    step(1, "formatting", || {
        cmd::run(cmd::cargo().args(["fmt", "--all", "--", "--check"]))
    })?;
    step(2, "dependency directions", || {
        deps::check_workspace()?;
        layers::check()
    })?;
    step(3, "dependency policy (cargo-deny)", policy::check)?;
    step(4, "deployment files", deploy::check)?;
    step(5, "packages", || {
        // Every library crate packages on its own (versions on path
        // dependencies, metadata, the files it embeds): publishing is one
        // command away. `--no-verify`: building each package again from
        // its tarball would double the CI's compile time; the files a
        // crate embeds from outside its directory (the migrations) come
        // in through symlinks, which the package resolves.
        let mut package = cmd::cargo();
        package.args(["package", "--no-verify", "--allow-dirty", "--quiet"]);
        for krate in PUBLISHED {
            package.args(["-p", krate]);
        }
        cmd::run(&mut package)
    })?;
    step(6, "clippy", || {
        cmd::run(cmd::cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))
    })?;
    step(7, "backend features", || {
        // A team on one backend builds the server without the others (and
        // their SQL drivers): every feature is on in one of these builds
        // and off in another, so each side of every `cfg` is linted.
        for features in BACKEND_BUILDS {
            cmd::run(cmd::cargo().args([
                "clippy",
                "-p",
                "session-server",
                "--no-default-features",
                "--features",
                features,
                "--",
                "-D",
                "warnings",
            ]))?;
        }
        Ok(())
    })?;
    step(8, "tests", || {
        let services = Services::start(false).context("starting the test services")?;
        suite::run(&services, &[])
    })?;
    eprintln!("ci: all {STEPS} steps passed in {:.0?}", started.elapsed());
    Ok(())
}

const STEPS: usize = 8;

/// The server's backend features, built apart from the default (all of
/// them): Redis sessions with the PostgreSQL audit log (no SQLite), and
/// the embedded store alone (no Redis, no PostgreSQL).
const BACKEND_BUILDS: [&str; 2] = ["redis,postgres", "sqlite"];

/// The crates published to a registry (examples and xtask are not).
const PUBLISHED: [&str; 8] = [
    "session-core",
    "session-conformance",
    "session-store-sqlite",
    "session-store-redis",
    "session-store-postgres",
    "session-axum",
    "session-server",
    "session-admin",
];

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
