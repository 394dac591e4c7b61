//! The command line, apart from the commands' bodies.

use clap::{Parser, Subcommand};

/// The project's build orchestrator: the CI gate, test services and benches.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask")]
pub(crate) struct Xtask {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the whole gate: fmt, dependency directions and policy, clippy
    /// (and on the server's backend features), tests.
    Ci,
    /// Check only the dependency directions and the server's module
    /// layers (step 2 of `ci`).
    Deps,
    /// Check only the dependency policy in `deny.toml` with cargo-deny
    /// (step 3 of `ci`).
    Deny,
    /// Start the services and run the tests (extra arguments after `--`
    /// go to `cargo nextest run`, or to `cargo test` without nextest).
    Test {
        /// Start throwaway Redis and PostgreSQL even if shared ones answer.
        #[arg(long)]
        throwaway: bool,
        /// Extra arguments, e.g. `cargo xtask test -- -p session-core`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Start the services, print their environment and wait for Ctrl-C.
    Services {
        /// Start throwaway Redis and PostgreSQL even if shared ones answer.
        #[arg(long)]
        throwaway: bool,
    },
    /// Run the HTTP benchmark of session-server (and, with `--micro`, the
    /// criterion micro-benchmarks).
    Bench(crate::bench::BenchArgs),
    /// Refresh at a steady share of the measured capacity for a long time
    /// (30 minutes by default) and fail if anything but the audit log
    /// grows.
    Soak(crate::soak::SoakArgs),
    /// Check the deployment files.
    DeployCheck,
    /// Find or install what the tests need (step 0 of `ci`).
    Setup,
}
