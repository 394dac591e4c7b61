//! `cargo xtask bench`: every benchmark the project has, one after another.

use anyhow::Result;

use crate::cmd;

/// A criterion benchmark target.
#[derive(Debug)]
struct Bench {
    package: &'static str,
    bench: &'static str,
}

const BENCHES: &[Bench] = &[Bench {
    package: "session-core",
    bench: "core",
}];

pub(crate) fn run() -> Result<()> {
    for bench in BENCHES {
        cmd::run(cmd::cargo().args(["bench", "-p", bench.package, "--bench", bench.bench]))?;
    }
    eprintln!("bench: core benchmarks only; the HTTP benchmark arrives with the server");
    Ok(())
}
