//! PostgreSQL: the shared server when it takes a trust login, else a
//! throwaway cluster made with `initdb`.

use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

use super::process::{Ports, RunDir, Server};
use crate::cmd;

const SHARED_PORT: u16 = 5432;
const MISSING: &str = "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found: install them with `apt-get install postgresql`";

/// The directory holding `initdb`, `pg_ctl` and `postgres`.
pub(super) fn bindir() -> Result<PathBuf> {
    let has_all = |dir: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|bin| dir.join(bin).is_file())
    };
    let from_pg_config = cmd::output(Command::new("pg_config").arg("--bindir"))
        .ok()
        .map(|out| PathBuf::from(out.trim()));
    let mut versioned: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versioned.sort();
    // Debian links /usr/local/bin/initdb into the versioned bindir.
    let from_path = cmd::find_program("initdb")
        .and_then(|initdb| std::fs::canonicalize(initdb).ok())
        .and_then(|initdb| initdb.parent().map(Path::to_owned));
    from_pg_config
        .into_iter()
        .chain(versioned.into_iter().rev().map(|(_, dir)| dir))
        .chain(from_path)
        .find(|dir| has_all(dir))
        .context(MISSING)
}

/// `DATABASE_URL` of the shared server on 127.0.0.1:5432 if it accepts a
/// passwordless login as `root` or `postgres`.
pub(super) fn shared_url(bindir: &Path) -> Option<String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], SHARED_PORT));
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    let psql = [bindir.join("psql")]
        .into_iter()
        .find(|psql| psql.is_file())
        .or_else(|| cmd::find_program("psql"))?;
    ["root", "postgres"].into_iter().find_map(|user| {
        let answer = cmd::output(
            Command::new(&psql)
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &SHARED_PORT.to_string(),
                    "-U",
                    user,
                ])
                .args(["-d", "postgres", "-w", "-XAtqc", "select 1"])
                .env("PGCONNECT_TIMEOUT", "3")
                .env_remove("PGPASSWORD"),
        )
        .ok()?;
        (answer.trim() == "1")
            .then(|| format!("postgres://{user}@127.0.0.1:{SHARED_PORT}/postgres"))
    })
}

/// A throwaway cluster on a free port, run as `postgres` when xtask runs as
/// root (PostgreSQL refuses to run as root); returns its `DATABASE_URL`.
pub(super) fn start_throwaway(
    bindir: &Path,
    dir: &RunDir,
    ports: &mut Ports,
) -> Result<(Server, String)> {
    let home = dir.subdir("postgres")?;
    let owner = unprivileged_owner()?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(&home, Some(uid), Some(gid))
            .with_context(|| format!("giving {} to the postgres user", home.display()))?;
    }
    let as_owner = |program: &str| {
        let mut command = Command::new(bindir.join(program));
        command.current_dir(&home);
        if let Some((uid, gid)) = owner {
            command.uid(uid).gid(gid);
        }
        command
    };
    let data = home.join("data");
    cmd::output(as_owner("initdb").arg("-D").arg(&data).args([
        "-U",
        "postgres",
        "-A",
        "trust",
        "-E",
        "UTF8",
        "--no-locale",
        "--no-sync",
    ]))
    .context("initdb of a throwaway PostgreSQL cluster")?;

    let port = ports.free(false)?;
    let mut postgres = as_owner("postgres");
    postgres
        .arg("-D")
        .arg(&data)
        .args(["-p", &port.to_string(), "-h", "127.0.0.1", "-k"])
        .arg(&home)
        .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
        .args(["-c", "synchronous_commit=off", "-c", "max_connections=200"]);
    // Fast shutdown: disconnects clients and stops every backend, which a
    // kill of the postmaster alone would leave behind.
    let mut stop = as_owner("pg_ctl");
    stop.arg("-D").arg(&data).args(["stop", "-m", "fast", "-w"]);
    let mut server = Server::spawn(
        format!("postgres on port {port}"),
        postgres,
        home.join("postgres.log"),
        Some(stop),
    )?;
    let pg_isready = bindir.join("pg_isready");
    server.wait_until(Duration::from_secs(30), || {
        if pg_isready.is_file() {
            cmd::succeeds(Command::new(&pg_isready).args([
                "-q",
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ]))
        } else {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        }
    })?;
    Ok((
        server,
        format!("postgres://postgres@127.0.0.1:{port}/postgres"),
    ))
}

/// `Some((uid, gid))` of the `postgres` user when running as root.
fn unprivileged_owner() -> Result<Option<(u32, u32)>> {
    if std::fs::metadata("/proc/self")
        .context("reading /proc/self")?
        .uid()
        != 0
    {
        return Ok(None);
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let postgres = passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        match fields.as_slice() {
            ["postgres", _, uid, gid, ..] => Some((uid.parse().ok()?, gid.parse().ok()?)),
            _ => None,
        }
    });
    match postgres {
        Some(ids) => Ok(Some(ids)),
        None => bail!(
            "running as root, and there is no `postgres` user to run a throwaway PostgreSQL: install it with `apt-get install postgresql`"
        ),
    }
}
