//! The dependency policy (`deny.toml` at the root), checked with
//! cargo-deny: no second major of redis, sqlx, rand, hyper or http;
//! licenses from the allow-list only; crates.io as the only source. Step 3
//! of `ci`, and `cargo xtask deny`.
//!
//! The advisories check reads the RustSec database, a git repository on
//! github.com, which CI's network does not reach. cargo-deny is never asked
//! to fetch it (`--offline`): the check runs when a copy is already
//! where cargo-deny keeps it (`$CARGO_HOME/advisory-dbs`, filled by `cargo
//! deny fetch` on a machine that reaches github.com), and is skipped with
//! the reason printed otherwise.

use std::path::PathBuf;

use anyhow::Result;

use crate::{cmd, setup};

/// The checks that need nothing but the lockfile and the registry.
const CHECKS: [&str; 3] = ["bans", "licenses", "sources"];

/// `cargo deny check` with the workspace's `deny.toml`.
pub(crate) fn check() -> Result<()> {
    setup::ensure_cargo_deny()?;
    cmd::run(cargo_deny().arg("check").args(CHECKS))?;
    match advisory_db() {
        Some(db) => {
            eprintln!(
                "dependency policy: advisories against the local RustSec copy in {} (not refreshed)",
                db.display()
            );
            // `--offline`: open the copy, never fetch it.
            cmd::run(cargo_deny().args(["--offline", "check", "advisories"]))
        }
        None => {
            eprintln!(
                "dependency policy: advisories SKIPPED: the RustSec advisory database is a git \
                 repository on github.com, which this machine cannot reach, and no copy is in {} \
                 (`cargo deny fetch` where github.com is reachable puts one there)",
                advisory_dbs().display()
            );
            Ok(())
        }
    }
}

/// `cargo deny`, asserting that `Cargo.lock` stays as it is.
fn cargo_deny() -> std::process::Command {
    let mut deny = cmd::cargo();
    deny.args(["deny", "--locked"]);
    deny
}

/// Where cargo-deny keeps advisory databases by default.
fn advisory_dbs() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
        .unwrap_or_default()
        .join("advisory-dbs")
}

/// A database cargo-deny fetched earlier, if there is one.
fn advisory_db() -> Option<PathBuf> {
    std::fs::read_dir(advisory_dbs())
        .ok()?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .find(|path| path.join("crates").is_dir())
}
