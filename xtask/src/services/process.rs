//! Throwaway servers: their directory, their ports, and guards that stop
//! them when dropped (on success, on error and on panic).

use std::collections::BTreeSet;
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::cmd;

/// The directory of this run's throwaway servers, removed when dropped.
///
/// Ctrl-C ends xtask without running destructors (the servers, in the same
/// process group, get the signal too and stop); the directory of such an
/// earlier run is removed by the next run, once its process is gone.
#[derive(Debug)]
pub(super) struct RunDir {
    path: PathBuf,
}

impl RunDir {
    pub(super) fn create() -> Result<Self> {
        let parent = std::env::temp_dir().join("session-xtask");
        std::fs::create_dir_all(&parent)
            .with_context(|| format!("creating {}", parent.display()))?;
        remove_stale_runs(&parent);
        let path = parent.join(format!("run-{}", std::process::id()));
        if path.exists() {
            std::fs::remove_dir_all(&path)
                .with_context(|| format!("removing {}", path.display()))?;
        }
        std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path })
    }

    /// A new subdirectory for one server.
    pub(super) fn subdir(&self, name: &str) -> Result<PathBuf> {
        let path = self.path.join(name);
        std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(path)
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn remove_stale_runs(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|name| name.strip_prefix("run-")) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Hands out free loopback ports, never the same one twice.
#[derive(Debug, Default)]
pub(super) struct Ports {
    given: BTreeSet<u16>,
}

impl Ports {
    /// A free port; with `bus`, `port + 10000` (Redis Cluster's bus port)
    /// is free too.
    pub(super) fn free(&mut self, bus: bool) -> Result<u16> {
        for _ in 0..200 {
            let listener =
                TcpListener::bind(("127.0.0.1", 0)).context("binding a loopback port")?;
            let port = listener.local_addr()?.port();
            if self.given.contains(&port) {
                continue;
            }
            if bus {
                let Some(bus_port) = port.checked_add(10_000) else {
                    continue;
                };
                if self.given.contains(&bus_port)
                    || TcpListener::bind(("127.0.0.1", bus_port)).is_err()
                {
                    continue;
                }
                self.given.insert(bus_port);
            }
            self.given.insert(port);
            return Ok(port);
        }
        bail!("found no free loopback port")
    }
}

/// A running throwaway server; stopped when dropped.
#[derive(Debug)]
pub(super) struct Server {
    name: String,
    child: Child,
    log: PathBuf,
    /// A command that stops the server gracefully; without one, or if the
    /// server still runs a while after it, the server is killed.
    graceful_stop: Option<Command>,
}

impl Server {
    /// Spawns `command` with its output going to `log`.
    pub(super) fn spawn(
        name: String,
        mut command: Command,
        log: PathBuf,
        graceful_stop: Option<Command>,
    ) -> Result<Self> {
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        command.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = command
            .spawn()
            .with_context(|| format!("starting {name}: `{}`", cmd::display(&command)))?;
        Ok(Self {
            name,
            child,
            log,
            graceful_stop,
        })
    }

    /// Waits until `ready` holds, failing early (with the log) if the
    /// server exits.
    pub(super) fn wait_until(
        &mut self,
        timeout: Duration,
        mut ready: impl FnMut() -> bool,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if ready() {
                return Ok(());
            }
            self.check_running()?;
            if Instant::now() > deadline {
                bail!(
                    "{} did not become ready within {timeout:?}; its log:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            sleep(Duration::from_millis(100));
        }
    }

    /// An error, with the end of its log, if the server has exited.
    pub(super) fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited ({status}); its log:\n{}",
                self.name,
                self.log_tail()
            );
        }
        Ok(())
    }

    pub(super) fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        if let Some(stop) = &mut self.graceful_stop {
            let stopping = stop
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success());
            let deadline = Instant::now() + Duration::from_secs(20);
            while stopping && Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                sleep(Duration::from_millis(50));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
