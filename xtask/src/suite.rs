//! The tests: every library, binary and test target of every crate,
//! against the services. Benchmarks are built (by clippy `--all-targets`)
//! but run only by `cargo xtask bench`: a `harness = false` bench does not
//! answer a test runner's `--list` and would run in full.

use std::process::Command;

use anyhow::Result;

use crate::cmd;
use crate::services::Services;

/// `cargo xtask test`: start the services, then run the tests.
pub(crate) fn run_with_services(throwaway: bool, extra: &[String]) -> Result<()> {
    let services = Services::start(throwaway)?;
    run(&services, extra)
}

/// Runs the tests with `extra` arguments appended: nextest when installed,
/// else `cargo test`; plus the doctests (which neither runs with
/// target selection) when no `extra` arguments narrow the run.
pub(crate) fn run(services: &Services, extra: &[String]) -> Result<()> {
    let selects_packages = extra.iter().any(|arg| {
        arg == "-p" || arg.starts_with("--package") || (arg.starts_with("-p") && arg.len() > 2)
    });
    let nextest = cmd::succeeds(cmd::cargo().args(["nextest", "--version"]));
    let mut tests = cmd::cargo();
    if nextest {
        tests.args(["nextest", "run"]);
    } else {
        eprintln!("tests: cargo-nextest not installed, using `cargo test`");
        tests.arg("test");
    }
    if !selects_packages {
        tests.arg("--workspace");
    }
    tests
        .args(["--lib", "--bins", "--tests", "--no-fail-fast"])
        .args(extra);
    run_against(services, &mut tests)?;
    if extra.is_empty() {
        run_against(
            services,
            cmd::cargo().args(["test", "--workspace", "--doc", "--no-fail-fast"]),
        )?;
    }
    Ok(())
}

fn run_against(services: &Services, command: &mut Command) -> Result<()> {
    services.apply(command);
    cmd::run(command)
}
