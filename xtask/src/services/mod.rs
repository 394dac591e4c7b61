//! The services the tests talk to: Redis, PostgreSQL and a three-node
//! Redis Cluster, plus the paths tests need to start servers of their own.

mod postgres;
mod process;
mod redis;

use std::path::PathBuf;
use std::process::Command;
use std::thread::sleep;
use std::time::Duration;

use anyhow::Result;

use process::{Ports, RunDir, Server};

/// Running services and the environment that points tests at them.
/// Dropping it stops every throwaway server and removes their directory.
#[derive(Debug)]
pub(crate) struct Services {
    env: Vec<(&'static str, String)>,
    // Fields drop in order: the servers before their directory.
    servers: Vec<Server>,
    _dir: RunDir,
}

impl Services {
    /// Starts what is needed; with `throwaway`, never uses the shared
    /// Redis and PostgreSQL.
    pub(crate) fn start(throwaway: bool) -> Result<Self> {
        let dir = RunDir::create()?;
        let mut servers = Vec::new();
        let mut ports = Ports::default();
        let mut env = Vec::new();

        let redis_server = redis::server_binary()?;
        let pg_bindir = postgres::bindir()?;

        let redis_url = if let Some(url) = preset("REDIS_URL") {
            url
        } else if !throwaway && redis::answers_ping(redis::SHARED_PORT) {
            format!("redis://127.0.0.1:{}", redis::SHARED_PORT)
        } else {
            if !throwaway {
                eprintln!("services: no Redis on 127.0.0.1:6379, starting a throwaway one");
            }
            let (server, port) = redis::start_standalone(&redis_server, &dir, &mut ports)?;
            servers.push(server);
            format!("redis://127.0.0.1:{port}")
        };
        env.push(("REDIS_URL", redis_url));

        let database_url = if let Some(url) = preset("DATABASE_URL") {
            url
        } else if let Some(url) = (!throwaway)
            .then(|| postgres::shared_url(&pg_bindir))
            .flatten()
        {
            url
        } else {
            if !throwaway {
                eprintln!(
                    "services: no PostgreSQL with trust login on 127.0.0.1:5432, starting a throwaway one"
                );
            }
            let (server, url) = postgres::start_throwaway(&pg_bindir, &dir, &mut ports)?;
            servers.push(server);
            url
        };
        env.push(("DATABASE_URL", database_url));

        let cluster_nodes = if let Some(nodes) = preset("REDIS_CLUSTER_NODES") {
            nodes
        } else {
            let (nodes, addrs) = redis::start_cluster(&redis_server, &dir, &mut ports)?;
            servers.extend(nodes);
            addrs.join(",")
        };
        env.push(("REDIS_CLUSTER_NODES", cluster_nodes));

        env.push((
            "SESSION_TEST_REDIS_SERVER",
            redis_server.to_string_lossy().into_owned(),
        ));
        env.push((
            "SESSION_TEST_PG_BINDIR",
            pg_bindir.to_string_lossy().into_owned(),
        ));
        for (key, value) in &env {
            // A value given by the developer may hold a password: not shown.
            if std::env::var(key).is_ok_and(|preset| preset == *value) {
                eprintln!("services: {key} (from the environment)");
            } else {
                eprintln!("services: {key}={value}");
            }
        }
        Ok(Self {
            env,
            servers,
            _dir: dir,
        })
    }

    /// Points `command` at the services.
    pub(crate) fn apply(&self, command: &mut Command) {
        command.envs(self.env.iter().map(|(key, value)| (key, value)));
    }

    /// The environment as shell `export` lines.
    pub(crate) fn export_lines(&self) -> String {
        self.env
            .iter()
            .map(|(key, value)| format!("export {key}='{}'\n", value.replace('\'', r"'\''")))
            .collect()
    }

    /// An error if a throwaway server has died.
    fn check_running(&mut self) -> Result<()> {
        self.servers.iter_mut().try_for_each(Server::check_running)
    }
}

/// The directory holding PostgreSQL's `initdb`, `pg_ctl` and `postgres`,
/// where the services look for it (`setup` asks the same).
pub(crate) fn pg_bindir() -> Result<PathBuf> {
    postgres::bindir()
}

/// A variable the developer set already, which then wins.
fn preset(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|value| !value.is_empty())
}

/// `cargo xtask services`: start, print the environment, wait for Ctrl-C.
pub(crate) fn serve_until_interrupted(throwaway: bool) -> Result<()> {
    let mut services = Services::start(throwaway)?;
    print!("{}", services.export_lines());
    eprintln!("services: running; press Ctrl-C to stop them");
    loop {
        sleep(Duration::from_secs(1));
        services.check_running()?;
    }
}
