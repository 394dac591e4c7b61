//! `cargo xtask`: the project's build orchestrator (a binary, not a library).
//!
//! Run it from anywhere in the workspace; every command runs from the
//! workspace root.
//!
//! - `cargo xtask ci` — the whole gate, in order, stopping at the first
//!   failure: `setup` (find or install the tools the tests need);
//!   `cargo fmt --check`; the dependency-direction check (from
//!   `cargo metadata`) and the server's module layers; the dependency
//!   policy (`deny`); `deploy-check`;
//!   `cargo clippy --workspace --all-targets -D warnings`; clippy on
//!   session-server built with some of its backend features only;
//!   the tests (see `test`), against the services. `.ci/run` runs exactly
//!   this.
//! - `cargo xtask deps` — only the dependency-direction check and the
//!   module-layer check.
//! - `cargo xtask deny` — only the dependency policy: `cargo deny check`
//!   with `deny.toml` (bans, licenses, sources; advisories where a local
//!   copy of the RustSec database exists), installing cargo-deny if needed.
//! - `cargo xtask test [--throwaway] [-- ARGS]` — start the services, then
//!   run `cargo nextest run --workspace --lib --bins --tests --no-fail-fast` (or
//!   `cargo test` when nextest is not installed) with `ARGS` appended, and
//!   the doctests when no `ARGS` are given (neither nextest nor
//!   `cargo test --all-targets` runs them).
//! - `cargo xtask services [--throwaway]` — start the services, print their
//!   environment as `export` lines and keep them running until Ctrl-C.
//! - `cargo xtask bench [--micro] [--duration SECS] [--connections N]
//!   [--store sqlite|redis] [--only WORKLOADS] [--json]` — the HTTP
//!   benchmark of `session-server` (server pinned to core 0, the
//!   `session-loadgen` generator of `tools/loadgen` to core 1); `--micro`
//!   adds the criterion benches.
//! - `cargo xtask soak [--minutes 30] [--share 0.8 | --rate N]` — measure
//!   the refresh capacity, then refresh at a share of it for the whole
//!   run, one line of figures a minute (latency from each request's due
//!   time, server RSS and fds, the Redis database's keys and bytes), and
//!   fail if a request failed or anything but the audit log kept growing.
//! - `cargo xtask deploy-check` — check the deployment files in `deploy/`.
//! - `cargo xtask setup` — find or install redis-server, PostgreSQL, nginx,
//!   chromium + chromedriver and the tests' Python venv (as root on
//!   Debian with apt-get; elsewhere it stops with the install command),
//!   and cargo-deny (`cargo install` from crates.io).
//!
//! The services are Redis, PostgreSQL and a three-node Redis Cluster. The
//! shared Redis (127.0.0.1:6379) and PostgreSQL (127.0.0.1:5432, trust auth)
//! are used when they answer (unless `--throwaway` is given); otherwise
//! throwaway servers are started on free loopback ports. The cluster is
//! always a throwaway one. `REDIS_URL`, `DATABASE_URL` or
//! `REDIS_CLUSTER_NODES` already set in the environment win. Throwaway
//! servers live in a temporary directory and are stopped when xtask exits,
//! on success or error. Tests receive `REDIS_URL`, `DATABASE_URL`,
//! `REDIS_CLUSTER_NODES` (comma-separated `host:port`),
//! `SESSION_TEST_REDIS_SERVER` (the `redis-server` binary) and
//! `SESSION_TEST_PG_BINDIR` (the directory holding `initdb`, `pg_ctl` and
//! `postgres`), so that they can also start servers of their own. A missing
//! server binary is an error naming the Debian package to install; nothing
//! is skipped.

mod bench;
mod ci;
mod cmd;
mod deploy;
mod deps;
mod flags;
mod layers;
mod load_resp;
mod policy;
mod services;
mod setup;
mod soak;
mod suite;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let flags = flags::Xtask::parse();
    let result = match flags.command {
        flags::Command::Ci => ci::run(),
        flags::Command::Deps => deps::check_workspace().and_then(|()| layers::check()),
        flags::Command::Deny => policy::check(),
        flags::Command::Test { throwaway, args } => suite::run_with_services(throwaway, &args),
        flags::Command::Services { throwaway } => services::serve_until_interrupted(throwaway),
        flags::Command::Bench(args) => bench::run(&args),
        flags::Command::Soak(args) => soak::run(&args),
        flags::Command::DeployCheck => deploy::check(),
        flags::Command::Setup => setup::run(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
