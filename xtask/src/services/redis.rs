//! Redis: the shared server when it answers, else a throwaway one; and a
//! throwaway three-node Redis Cluster. Spoken to in RESP (`load_resp`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result};

use super::process::{Ports, RunDir, Server};
use crate::cmd;
use crate::load_resp::{Reply, Resp};

pub(super) const SHARED_PORT: u16 = 6379;

/// Sends one command and returns its reply (simple string, integer or bulk
/// string); a Redis error reply is an error.
pub(super) fn query(port: u16, args: &[&str]) -> Result<String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut conn = Resp::connect_with_timeout(addr, Duration::from_secs(2))?;
    match conn.cmd(args)? {
        Reply::Int(n) => Ok(n.to_string()),
        reply => reply.text(),
    }
}

pub(super) fn answers_ping(port: u16) -> bool {
    query(port, &["PING"]).is_ok_and(|reply| reply == "PONG")
}

/// The `redis-server` binary (not resolved through symlinks: Debian's is a
/// link to `redis-check-rdb`, which picks its role from its name).
pub(super) fn server_binary() -> Result<PathBuf> {
    cmd::find_program("redis-server")
        .context("redis-server not found: install it with `apt-get install redis-server`")
}

fn start(binary: &Path, dir: &Path, port: u16, extra: &[&str]) -> Result<Server> {
    let mut command = Command::new(binary);
    command
        .current_dir(dir)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .arg("--dir")
        .arg(dir)
        .args(extra);
    let mut server = Server::spawn(
        format!("redis-server on port {port}"),
        command,
        dir.join("redis.log"),
        None,
    )?;
    server.wait_until(Duration::from_secs(15), || answers_ping(port))?;
    Ok(server)
}

/// A throwaway standalone Redis on a free port.
pub(super) fn start_standalone(
    binary: &Path,
    dir: &RunDir,
    ports: &mut Ports,
) -> Result<(Server, u16)> {
    let port = ports.free(false)?;
    let server = start(binary, &dir.subdir("redis")?, port, &[])?;
    Ok((server, port))
}

/// A throwaway Redis Cluster of three masters (no replicas), all slots
/// covered; returns the servers and their `127.0.0.1:port` addresses.
pub(super) fn start_cluster(
    binary: &Path,
    dir: &RunDir,
    ports: &mut Ports,
) -> Result<(Vec<Server>, Vec<String>)> {
    let cli = cmd::find_program("redis-cli")
        .context("redis-cli not found: install it with `apt-get install redis-tools`")?;
    let mut servers = Vec::new();
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let port = ports.free(true)?;
        let node_dir = dir.subdir(&format!("cluster-{port}"))?;
        let config = node_dir.join(format!("nodes-{port}.conf"));
        let config = config
            .to_str()
            .context("temporary directory path is not UTF-8")?;
        servers.push(start(
            binary,
            &node_dir,
            port,
            &["--cluster-enabled", "yes", "--cluster-config-file", config],
        )?);
        nodes.push((port, format!("127.0.0.1:{port}")));
    }
    let mut create = Command::new(cli);
    create
        .args(["--cluster", "create"])
        .args(nodes.iter().map(|(_, addr)| addr))
        .args(["--cluster-replicas", "0", "--cluster-yes"]);
    cmd::output(&mut create).context("creating the Redis Cluster")?;
    for ((port, _), server) in nodes.iter().zip(&mut servers) {
        server
            .wait_until(Duration::from_secs(30), || cluster_ok(*port))
            .context("waiting for `cluster_state:ok`")?;
    }
    Ok((servers, nodes.into_iter().map(|(_, addr)| addr).collect()))
}

fn cluster_ok(port: u16) -> bool {
    query(port, &["CLUSTER", "INFO"]).is_ok_and(|info| {
        info.lines().any(|line| line.trim() == "cluster_state:ok")
            && info
                .lines()
                .any(|line| line.trim() == "cluster_known_nodes:3")
    })
}
