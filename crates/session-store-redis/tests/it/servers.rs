//! Redis servers the tests start themselves: throwaway single nodes (to stop,
//! freeze and restart) and, when `REDIS_CLUSTER_NODES` is unset, one 3-node
//! cluster shared by the whole test binary.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A port that is free now, and whose cluster-bus port (+10000) is free too.
pub(crate) fn free_port() -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

fn scratch_dir(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "session-store-redis-it-{label}-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn wait_until(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(
            start.elapsed() < limit,
            "{what} did not happen within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn answers(port: u16) -> bool {
    redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
        .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
        .is_ok()
}

/// A throwaway `redis-server` on its own port, killed on drop.
#[derive(Debug)]
pub(crate) struct Throwaway {
    pub(crate) port: u16,
    child: Option<Child>,
    dir: PathBuf,
    args: Vec<String>,
}

impl Throwaway {
    pub(crate) fn start() -> Self {
        Self::start_with(&[])
    }

    /// A throwaway server started with extra command-line arguments.
    pub(crate) fn start_with(args: &[&str]) -> Self {
        let port = free_port();
        let mut s = Self {
            port,
            child: None,
            dir: scratch_dir("single"),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
        };
        s.restart();
        s
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on the same port.
    pub(crate) fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the server before restarting it");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        self.child = Some(child);
        let port = self.port;
        wait_until("throwaway redis answering", Duration::from_secs(10), || {
            answers(port)
        });
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server (SIGSTOP): it keeps its sockets but never answers.
    pub(crate) fn freeze(&self) {
        self.signal("STOP");
    }

    /// Thaws a frozen server.
    pub(crate) fn thaw(&self) {
        self.signal("CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("server running").id();
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} {pid}");
    }
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.thaw_quietly();
        }
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Throwaway {
    fn thaw_quietly(&self) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
        }
    }
}

/// The cluster's `host:port` list: `REDIS_CLUSTER_NODES`, or a cluster this
/// test binary starts once (and whose servers die with it).
pub(crate) fn cluster_nodes() -> Vec<String> {
    static NODES: OnceLock<Vec<String>> = OnceLock::new();
    NODES
        .get_or_init(|| match std::env::var("REDIS_CLUSTER_NODES") {
            Ok(v) if !v.trim().is_empty() => v.split(',').map(|s| s.trim().to_owned()).collect(),
            _ => start_cluster(),
        })
        .clone()
}

/// Starts three cluster-enabled servers, each under a small shell watchdog
/// that kills it when this test process exits, and joins them into one
/// cluster with `redis-cli --cluster create`.
fn start_cluster() -> Vec<String> {
    let dir = scratch_dir("cluster");
    let me = std::process::id();
    let ports: Vec<u16> = {
        let mut ports: Vec<u16> = Vec::new();
        while ports.len() < 3 {
            let p = free_port();
            if !ports.contains(&p) {
                ports.push(p);
            }
        }
        ports
    };
    for port in &ports {
        let conf = dir.join(format!("nodes-{port}.conf"));
        let script = format!(
            "redis-server --port {port} --bind 127.0.0.1 --cluster-enabled yes \
             --cluster-config-file {conf} --dir {dir} --save '' --appendonly no \
             >/dev/null 2>&1 & r=$!; \
             while kill -0 {me} 2>/dev/null && kill -0 $r 2>/dev/null; do sleep 0.5; done; \
             kill $r 2>/dev/null; rm -rf {dir}",
            conf = conf.display(),
            dir = dir.display(),
        );
        // The watchdog shell is deliberately left running: it ends (and
        // takes its server with it) when this test process exits.
        #[allow(clippy::zombie_processes)] // reason: see above; reaped by init after we exit
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sh and redis-server are installed");
    }
    for &port in &ports {
        wait_until("cluster node answering", Duration::from_secs(10), || {
            answers(port)
        });
    }
    let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let status = Command::new("redis-cli")
        .arg("--cluster")
        .arg("create")
        .args(&nodes)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("redis-cli is installed");
    assert!(status.success(), "redis-cli --cluster create failed");
    for &port in &ports {
        wait_until("cluster state ok", Duration::from_secs(20), || {
            let info = Command::new("redis-cli")
                .args(["-p", &port.to_string(), "cluster", "info"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            info.contains("cluster_state:ok")
        });
    }
    nodes
}

/// Which cluster node (`host:port`) serves `key`.
pub(crate) fn cluster_node_of(key: &str) -> String {
    let nodes = cluster_nodes();
    let mut con = redis::Client::open(format!("redis://{}", nodes[0]))
        .unwrap()
        .get_connection()
        .unwrap();
    let slot: i64 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query(&mut con)
        .unwrap();
    let slots: Vec<Vec<redis::Value>> = redis::cmd("CLUSTER").arg("SLOTS").query(&mut con).unwrap();
    for entry in slots {
        let start: i64 = redis::from_redis_value_ref(&entry[0]).unwrap();
        let end: i64 = redis::from_redis_value_ref(&entry[1]).unwrap();
        let master: Vec<redis::Value> = redis::from_redis_value_ref(&entry[2]).unwrap();
        if (start..=end).contains(&slot) {
            let host: String = redis::from_redis_value_ref(&master[0]).unwrap();
            let port: i64 = redis::from_redis_value_ref(&master[1]).unwrap();
            return format!("{host}:{port}");
        }
    }
    panic!("no node serves slot {slot}");
}
