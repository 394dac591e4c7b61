//! `cargo xtask bench`: the HTTP benchmark of `session-server`, and (with
//! `--micro`) the criterion micro-benchmarks.
//!
//! The HTTP benchmark builds `session-server` and `session-loadgen` (the
//! load generator, `tools/loadgen`) in release, starts the server pinned
//! to core 0 with one tokio worker, and drives it from the generator
//! pinned to core 1. The store is
//! Redis (a fresh, empty database of the Redis at `REDIS_URL` or
//! 127.0.0.1:6379, flushed before and after) when Redis answers and the
//! server accepts it, else SQLite in a temporary directory; the output
//! says which. Workloads, each reported with requests/s, p50, p99, max and
//! errors:
//!
//! - `validate`: `GET /v1/session` in each validation mode (the server
//!   restarted per mode), over 1,000 hot sessions and, as "never-seen",
//!   with each request a token not used before from a pre-created pool;
//! - `refresh`: one rotation chain per connection;
//! - `create`: `POST /admin/v1/sessions`;
//! - `login`: `POST /v1/auth/login` of 32 password users made for the run
//!   (argon2id with the server's default parameters, so logins/s per core);
//! - `memory`: Redis bytes per live session after creating the pool
//!   (100,000 sessions by default);
//! - `propagation`: revoke on instance A, time until instance B answers
//!   401 (Redis only).

use session_bench_report::Report;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde::Serialize;

use crate::cmd;
use crate::load_resp::Resp;

/// A criterion benchmark target.
#[derive(Debug)]
struct Bench {
    package: &'static str,
    bench: &'static str,
}

const BENCHES: &[Bench] = &[
    Bench {
        package: "session-core",
        bench: "core",
    },
    Bench {
        package: "session-server",
        bench: "geoip",
    },
];

/// Concurrent logins: what a server pinned to one core admits at once (one
/// hashing, eight waiting) without shedding load.
const LOGIN_CONNECTIONS: usize = 8;

/// Sessions the validate workload spreads its requests over.
const HOT_SESSIONS: usize = 1000;

/// `cargo xtask bench`.
#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    /// Only the HTTP benchmark (what runs without flags; kept so that
    /// scripts can say it).
    #[arg(long, conflicts_with = "micro")]
    http_only: bool,
    /// Also run the criterion micro-benchmarks (long): `cargo bench -p
    /// session-core --bench core` and `--bench geoip` of session-server.
    #[arg(long)]
    micro: bool,
    /// Seconds measured per workload and mode (after a warm-up).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// The session store; by default Redis when it answers, else SQLite.
    #[arg(long, value_enum)]
    store: Option<StoreChoice>,
    /// The workloads to run (comma-separated); by default all.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Workload>,
    /// Sessions pre-created for the never-seen-token pool and the Redis
    /// memory figure.
    #[arg(long, default_value_t = 100_000)]
    pool: usize,
    /// Revocations timed by the propagation workload.
    #[arg(long, default_value_t = 1000)]
    revocations: usize,
    /// Also print the results as one JSON document on stdout.
    #[arg(long)]
    json: bool,
    /// The servers' audit log (`SESSION_AUDIT`, e.g. a `postgres://` URL);
    /// by default the store's (with Redis: SQLite in the data directory).
    #[arg(long, value_name = "URL")]
    audit: Option<String>,
    /// Use the release binaries already in `target/release` instead of
    /// building them (when the tree does not build at the moment).
    #[arg(long)]
    no_build: bool,
    /// Also sample each server with `perf record` during each workload and
    /// print its top symbols by share of the server's CPU.
    #[arg(long)]
    profile: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum StoreChoice {
    Sqlite,
    Redis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Workload {
    Validate,
    /// Validate with DPoP-bound tokens and a fresh proof per request.
    Dpop,
    Refresh,
    Create,
    /// Password login: argon2id with the server's default parameters.
    Login,
    Memory,
    Propagation,
}

pub(crate) fn run(args: &BenchArgs) -> Result<()> {
    http(args)?;
    if args.micro {
        for bench in BENCHES {
            cmd::run(cmd::cargo().args(["bench", "-p", bench.package, "--bench", bench.bench]))?;
        }
    }
    Ok(())
}

// ------------------------------------------------------------- results

#[derive(Debug, Serialize)]
struct Row {
    workload: String,
    mode: String,
    #[serde(flatten)]
    report: Report,
    /// The server's top symbols by share of its samples (`--profile`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    profile: Vec<Symbol>,
}

/// One line of a `perf report`: a symbol and its share of the samples.
#[derive(Debug, Serialize)]
struct Symbol {
    percent: f64,
    dso: String,
    symbol: String,
}

#[derive(Debug, Serialize)]
struct Memory {
    sessions: usize,
    /// `INFO memory` `used_memory` after − before, per session (the whole
    /// server: other clients of a shared Redis add noise).
    used_memory_per_session: f64,
    /// The sum of `MEMORY USAGE` over the benchmark database's keys, per
    /// session (exact for that database; leaves out the server's
    /// per-key dictionary and expiry overhead).
    memory_usage_per_session: f64,
    keys: i64,
}

#[derive(Debug, Serialize)]
struct Results {
    command: String,
    store: String,
    /// The audit log's kind (never its URL, which may hold a password).
    audit: String,
    pinned: bool,
    connections: usize,
    duration_s: u64,
    loadavg_before: String,
    loadavg_after: String,
    rows: Vec<Row>,
    memory: Option<Memory>,
    skipped: Vec<String>,
}

/// A URL's user part (which may hold a password) left out.
fn redact(arg: &str) -> String {
    match (arg.split_once("://"), arg.rsplit_once('@')) {
        (Some((scheme, _)), Some((_, host))) => format!("{scheme}://…@{host}"),
        _ => arg.to_owned(),
    }
}

pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

// -------------------------------------------------------------- Redis

/// An empty database of a Redis server, flushed when dropped.
#[derive(Debug)]
pub(crate) struct RedisDb {
    addr: SocketAddr,
    pub(crate) db: u32,
    pub(crate) conn: Resp,
}

impl RedisDb {
    /// The address of `REDIS_URL` (host must be loopback) or 127.0.0.1:6379.
    pub(crate) fn addr() -> Result<SocketAddr> {
        let Ok(url) = std::env::var("REDIS_URL") else {
            return Ok(SocketAddr::from(([127, 0, 0, 1], 6379)));
        };
        let rest = url
            .strip_prefix("redis://")
            .context("REDIS_URL is not redis://")?;
        let host_port = rest.split('/').next().unwrap_or(rest);
        if host_port.contains('@') {
            bail!("the benchmark does not take a Redis with a password");
        }
        let addr: SocketAddr = host_port
            .replace("localhost", "127.0.0.1")
            .parse()
            .context("REDIS_URL's host must be a loopback IP and port")?;
        if !addr.ip().is_loopback() {
            bail!("the benchmark runs on loopback only; REDIS_URL is {addr}");
        }
        Ok(addr)
    }

    /// The highest-numbered empty database (from 15 down), flushed.
    pub(crate) fn pick(addr: SocketAddr) -> Result<Self> {
        let mut conn = Resp::connect(addr)?;
        for db in (1..16u32).rev() {
            if conn.cmd(&["SELECT", &db.to_string()]).is_err() {
                continue;
            }
            if conn.cmd(&["DBSIZE"])?.int()? == 0 {
                conn.cmd(&["FLUSHDB"])?;
                return Ok(Self { addr, db, conn });
            }
        }
        bail!("Redis at {addr} has no empty database among 1..=15")
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://{}/{}", self.addr, self.db)
    }
}

impl Drop for RedisDb {
    fn drop(&mut self) {
        if let Err(error) = self.conn.cmd(&["FLUSHDB"]) {
            eprintln!("bench: could not flush Redis db {}: {error:#}", self.db);
        }
    }
}

// ------------------------------------------------------------ profiles

/// `perf record` attached to one server for the length of a workload.
struct Profiler {
    child: Child,
    data: PathBuf,
}

impl Profiler {
    /// Records `pid` into `target/bench-profiles/<name>.data`, kept for
    /// `perf report -i` afterwards.
    fn start(name: &str, pid: u32) -> Result<Self> {
        let dir = cmd::root().join("target").join("bench-profiles");
        std::fs::create_dir_all(&dir)?;
        let file: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let data = dir.join(format!("{file}.data"));
        let child = Command::new("perf")
            .args([
                "record",
                "-q",
                "-F",
                "1999",
                "-g",
                "-p",
                &pid.to_string(),
                "-o",
            ])
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("could not start `perf record` (is linux-perf installed?)")?;
        Ok(Self { child, data })
    }

    /// Stops the recording and reads the top symbols (at least 1 % each).
    fn finish(mut self) -> Result<Vec<Symbol>> {
        cmd::run(Command::new("kill").args(["-INT", &self.child.id().to_string()]))?;
        let status = self.child.wait()?;
        // perf finishes its file on SIGINT, then ends by that signal.
        if !status.success() && status.signal() != Some(2) {
            // A run too short for perf to start, or a kernel that refuses.
            eprintln!("bench: `perf record` ended with {status}; no profile for this run");
            return Ok(Vec::new());
        }
        let output = Command::new("perf")
            .args(["report", "--stdio", "--no-children", "--sort", "dso,symbol"])
            .args(["--percent-limit", "1", "-q", "-i"])
            .arg(&self.data)
            .output()
            .context("could not run `perf report`")?;
        eprintln!("bench: profile kept in {}", self.data.display());
        let text = String::from_utf8_lossy(&output.stdout);
        Ok(text.lines().filter_map(parse_perf_line).collect())
    }
}

/// `  12.34%  session-server  [.] symbol` → its share, object and symbol.
fn parse_perf_line(line: &str) -> Option<Symbol> {
    let mut words = line.split_whitespace();
    let percent = words.next()?.strip_suffix('%')?.parse().ok()?;
    let dso = words.next()?.to_owned();
    let _kind = words.next()?;
    let symbol = words
        .take_while(|w| *w != "-")
        .collect::<Vec<_>>()
        .join(" ");
    Some(Symbol {
        percent,
        dso,
        symbol,
    })
}

// ------------------------------------------------------------- servers

/// Where the binaries are and how to start them.
#[derive(Debug)]
pub(crate) struct Setup {
    server_bin: PathBuf,
    pub(crate) loader_bin: PathBuf,
    pub(crate) pinned: bool,
    dir: PathBuf,
    pub(crate) data_dir: PathBuf,
    pub(crate) connections: usize,
    duration: u64,
    audit: Option<String>,
    profile: bool,
}

impl Setup {
    pub(crate) fn admin_token_file(&self) -> PathBuf {
        self.data_dir.join("admin-token")
    }

    fn pool_file(&self) -> PathBuf {
        self.dir.join("pool.tsv")
    }

    /// `program` pinned to `core` when `taskset` works.
    pub(crate) fn pinned_command(&self, program: &Path, core: u8) -> Command {
        if self.pinned {
            let mut command = Command::new("taskset");
            command.args(["-c", &core.to_string()]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    /// Runs one `session-loadgen` job and reads its report.
    pub(crate) fn load(&self, args: &[String]) -> Result<Report> {
        let mut command = self.pinned_command(&self.loader_bin, 1);
        command
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit());
        let shown = cmd::display(&command);
        let output = command
            .output()
            .with_context(|| format!("could not start `{shown}`"))?;
        if !output.status.success() {
            bail!("`{shown}` failed ({})", output.status);
        }
        let stdout = String::from_utf8(output.stdout)?;
        let last = stdout.lines().last().unwrap_or_default();
        serde_json::from_str(last).with_context(|| format!("reading the report of `{shown}`"))
    }

    /// One table row: runs the load job and, with `--profile`, samples
    /// `server` with `perf record` while it runs.
    fn row(&self, workload: &str, mode: &str, server: &Server, args: &[String]) -> Result<Row> {
        let recording = if self.profile {
            Some(Profiler::start(
                &format!("{workload}-{mode}"),
                server.child.id(),
            )?)
        } else {
            None
        };
        let report = self.load(args)?;
        let profile = match recording {
            Some(recording) => recording.finish()?,
            None => Vec::new(),
        };
        Ok(Row {
            workload: workload.to_owned(),
            mode: mode.to_owned(),
            report,
            profile,
        })
    }

    /// The arguments every closed-loop job shares, `--connections N` first.
    pub(crate) fn common(&self, server: &[&Server], warmup: f64) -> Vec<String> {
        let mut args = vec![
            "--connections".to_owned(),
            self.connections.to_string(),
            "--duration".to_owned(),
            self.duration.to_string(),
            "--warmup".to_owned(),
            warmup.to_string(),
        ];
        for s in server {
            args.extend(["--server-pid".to_owned(), s.child.id().to_string()]);
        }
        args
    }
}

fn free_port() -> Result<SocketAddr> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).context("binding a loopback port")?;
    Ok(listener.local_addr()?)
}

/// A running `session-server`, stopped (SIGTERM, then SIGKILL) when dropped.
#[derive(Debug)]
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) public: SocketAddr,
    pub(crate) admin: SocketAddr,
    log: PathBuf,
}

/// The arguments of a `session-loadgen` job that drives `server`'s public
/// listener after setting up through its admin listener.
pub(crate) fn public_and_admin(job: &str, server: &Server, token_file: &str) -> Vec<String> {
    vec![
        job.to_owned(),
        "--public".to_owned(),
        server.public.to_string(),
        "--admin".to_owned(),
        server.admin.to_string(),
        "--admin-token-file".to_owned(),
        token_file.to_owned(),
    ]
}

impl Server {
    pub(crate) fn start(
        setup: &Setup,
        name: &str,
        store_url: &str,
        validation: &str,
    ) -> Result<Self> {
        let (public, admin) = (free_port()?, free_port()?);
        let log = setup.dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log)?;
        if let Some(audit) = &setup.audit {
            // The server only checks the audit schema; apply it first, as
            // its owner would.
            let status = Command::new(&setup.server_bin)
                .arg("migrate")
                .env("SESSION_AUDIT", audit)
                .env("SESSION_DATA_DIR", &setup.data_dir)
                .stdin(Stdio::null())
                .status()
                .context("session-server migrate")?;
            anyhow::ensure!(status.success(), "session-server migrate failed: {status}");
        }
        // One master key for every instance of the run (Redis needs one;
        // each instance must seal and open the shared ring with it).
        let master_key = setup.dir.join("master-key");
        if !master_key.exists() {
            let bytes: [u8; 32] = rand::random();
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            std::fs::write(&master_key, hex).context("writing the bench master key")?;
        }
        let mut command = setup.pinned_command(&setup.server_bin, 0);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("SESSION_") {
                command.env_remove(key);
            }
        }
        command
            .env("SESSION_DATA_DIR", &setup.data_dir)
            .env("SESSION_PUBLIC_ADDR", public.to_string())
            .env("SESSION_ADMIN_ADDR", admin.to_string())
            .env("SESSION_STORE", store_url)
            .env("SESSION_MASTER_KEY_FILE", &master_key)
            .env("SESSION_VALIDATION", validation)
            .env("SESSION_RATE_LIMIT_LOGIN", "0")
            .env("SESSION_RATE_LIMIT_REFRESH", "0")
            .env("SESSION_RATE_LIMIT_CREATE", "0")
            .env("SESSION_ANOMALY_RAPID_REFRESH", "ignore")
            .env("SESSION_LOG_FORMAT", "text")
            .env("RUST_LOG", "warn")
            .env("TOKIO_WORKER_THREADS", "1")
            .envs(setup.audit.iter().map(|url| ("SESSION_AUDIT", url)))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        eprintln!(
            "bench: starting {name} ({validation}, {}): {}",
            store_url.split("://").next().unwrap_or("?"),
            cmd::display(&command)
        );
        let child = command.spawn().context("starting session-server")?;
        let mut server = Self {
            child,
            public,
            admin,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = server.child.try_wait()? {
                bail!(
                    "session-server exited during start-up ({status}); its log:\n{}",
                    server.log_tail()
                );
            }
            if http_status(public, "/readyz").is_ok_and(|s| s == 200)
                && setup.admin_token_file().exists()
            {
                return Ok(server);
            }
            if Instant::now() > deadline {
                bail!(
                    "session-server was not ready within 60 s; its log:\n{}",
                    server.log_tail()
                );
            }
            sleep(Duration::from_millis(50));
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill")
            .args(["-TERM", &pid])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A connection that has sent a plain `GET path` and asked to be closed
/// after the answer.
fn get(addr: SocketAddr, path: &str) -> Result<TcpStream> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    Ok(stream)
}

/// The status code of a plain `GET` (for readiness).
fn http_status(addr: SocketAddr, path: &str) -> Result<u16> {
    let mut stream = get(addr, path)?;
    let mut head = [0; 12];
    stream.read_exact(&mut head)?;
    let head = String::from_utf8_lossy(&head);
    head.get(9..12)
        .and_then(|code| code.parse().ok())
        .context("not an HTTP answer")
}

/// The JSON body of `GET path` (a small answer with a `Content-Length`,
/// read to the end of a `Connection: close`).
pub(crate) fn http_json(addr: SocketAddr, path: &str) -> Result<serde_json::Value> {
    let mut answer = Vec::new();
    get(addr, path)?.read_to_end(&mut answer)?;
    let body = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| &answer[at + 4..])
        .context("not an HTTP answer")?;
    serde_json::from_slice(body).with_context(|| format!("the body of GET {path}"))
}

// ---------------------------------------------------------- the run

/// Builds the release binaries (unless `no_build`) and lays out a run: a
/// temporary directory (removed when the returned guard drops) with the
/// servers' data directory, and whether pinning works here.
pub(crate) fn prepare(
    no_build: bool,
    connections: usize,
    duration: u64,
    audit: Option<String>,
    profile: bool,
) -> Result<(Setup, tempfile::TempDir)> {
    if no_build {
        eprintln!("bench: --no-build: using the release binaries as they are");
    } else {
        let build = [
            "build",
            "--release",
            "-p",
            "session-server",
            "-p",
            "session-loadgen",
        ];
        cmd::run(cmd::cargo().args(build))?;
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| cmd::root().join("target"), PathBuf::from)
        .join("release");
    let pinned = cmd::succeeds(Command::new("taskset").args(["-c", "0", "true"]))
        && cmd::succeeds(Command::new("taskset").args(["-c", "1", "true"]));
    if !pinned {
        eprintln!("bench: `taskset -c 0/1` does not work here: server and generator run UNPINNED");
    }
    let dir = tempfile::Builder::new()
        .prefix("session-bench-")
        .tempdir()
        .context("creating the benchmark's temporary directory")?;
    let data_dir = dir.path().join("data");
    std::fs::create_dir(&data_dir)?;
    let setup = Setup {
        server_bin: target.join("session-server"),
        loader_bin: target.join("session-loadgen"),
        pinned,
        dir: dir.path().to_owned(),
        data_dir,
        connections,
        duration,
        audit,
        profile,
    };
    Ok((setup, dir))
}

fn http(args: &BenchArgs) -> Result<()> {
    let selected = |w: Workload| args.only.is_empty() || args.only.contains(&w);
    let (setup, _dir) = prepare(
        args.no_build,
        args.connections,
        args.duration,
        args.audit.clone(),
        args.profile,
    )?;
    let pinned = setup.pinned;
    let mut results = Results {
        command: std::iter::once("cargo xtask bench".to_owned())
            .chain(std::env::args().skip(2).map(|arg| redact(&arg)))
            .collect::<Vec<_>>()
            .join(" "),
        store: String::new(),
        audit: args.audit.as_deref().map_or_else(
            || "the default (SQLite)".to_owned(),
            |url| url.split("://").next().unwrap_or("?").to_owned(),
        ),
        pinned,
        connections: args.connections,
        duration_s: args.duration,
        loadavg_before: loadavg(),
        loadavg_after: String::new(),
        rows: Vec::new(),
        memory: None,
        skipped: Vec::new(),
    };

    // The store: Redis when asked or when it answers, if the server takes it.
    let sqlite_url = format!("sqlite://{}", setup.data_dir.join("sessions.db").display());
    let mut redis = None;
    if args.store != Some(StoreChoice::Sqlite) {
        match RedisDb::addr().and_then(RedisDb::pick) {
            Ok(db) => redis = Some(db),
            Err(error) if args.store == Some(StoreChoice::Redis) => return Err(error),
            Err(error) => eprintln!("bench: no usable Redis ({error:#}); using SQLite"),
        }
    }
    let mut store_url = redis
        .as_ref()
        .map_or_else(|| sqlite_url.clone(), RedisDb::url);
    let first = match Server::start(&setup, "server-cached", &store_url, "cached") {
        Ok(server) => server,
        Err(error) if redis.is_some() && args.store != Some(StoreChoice::Redis) => {
            eprintln!(
                "bench: session-server did not start on Redis, so it is not wired in yet; \
                 falling back to SQLite. The error: {error:#}"
            );
            redis = None;
            store_url.clone_from(&sqlite_url);
            Server::start(&setup, "server-cached", &store_url, "cached")?
        }
        Err(error) => return Err(error),
    };
    results.store = if let Some(db) = &redis {
        format!("redis (db {} of {})", db.db, db.addr)
    } else {
        "sqlite".to_owned()
    };
    eprintln!("bench: store: {}", results.store);
    let token_file = setup.admin_token_file().display().to_string();

    // The pool: hot sessions and never-seen tokens; with Redis, its memory.
    let needs_pool = selected(Workload::Validate) || selected(Workload::Memory);
    if needs_pool {
        let before = match &mut redis {
            Some(db) => Some(db.conn.used_memory()?),
            None => None,
        };
        eprintln!("bench: creating {} sessions (the pool)", args.pool);
        let created = setup.load(&[
            "prepare".to_owned(),
            "--admin".to_owned(),
            first.admin.to_string(),
            "--admin-token-file".to_owned(),
            token_file.clone(),
            "--count".to_owned(),
            args.pool.to_string(),
            "--connections".to_owned(),
            args.connections.to_string(),
            "--out".to_owned(),
            setup.pool_file().display().to_string(),
        ])?;
        eprintln!(
            "bench: pool created at {:.0} sessions/s ({:.1} s)",
            created.rps, created.window_s
        );
        if let (Some(db), Some(before)) = (&mut redis, before) {
            let after = db.conn.used_memory()?;
            let (bytes, keys) = db.conn.memory_usage_of_db()?;
            let n = args.pool as f64;
            results.memory = Some(Memory {
                sessions: args.pool,
                used_memory_per_session: (after - before) as f64 / n,
                memory_usage_per_session: bytes as f64 / n,
                keys,
            });
        } else if selected(Workload::Memory) {
            results
                .skipped
                .push("memory: Redis bytes per session needs the Redis store".to_owned());
        }
    }

    let mut first = Some(first);
    if selected(Workload::Validate) {
        for mode in ["cached", "strict", "stateless"] {
            let server = match first.take() {
                Some(server) => server,
                None => Server::start(&setup, &format!("server-{mode}"), &store_url, mode)?,
            };
            for fresh in [false, true] {
                let label = if fresh {
                    "validate (never-seen tokens)"
                } else {
                    "validate (1,000 sessions)"
                };
                eprintln!("bench: {label}, {mode}");
                let mut load_args = vec![
                    "validate".to_owned(),
                    "--public".to_owned(),
                    server.public.to_string(),
                    "--pool".to_owned(),
                    setup.pool_file().display().to_string(),
                    "--hot".to_owned(),
                    HOT_SESSIONS.to_string(),
                ];
                if fresh {
                    load_args.push("--fresh".to_owned());
                }
                load_args.extend(setup.common(&[&server], if fresh { 0.2 } else { 2.0 }));
                results
                    .rows
                    .push(setup.row(label, mode, &server, &load_args)?);
            }
        }
    }

    if selected(Workload::Dpop) {
        let server = match first.take() {
            Some(server) => server,
            None => Server::start(&setup, "server-dpop", &store_url, "cached")?,
        };
        eprintln!("bench: validate with DPoP, cached");
        let mut load_args = public_and_admin("validate-dpop", &server, &token_file);
        load_args.extend(["--hot".to_owned(), HOT_SESSIONS.to_string()]);
        load_args.extend(setup.common(&[&server], 2.0));
        results.rows.push(setup.row(
            "validate with DPoP (1,000 sessions, a new proof each)",
            "cached",
            &server,
            &load_args,
        )?);
    }

    if selected(Workload::Refresh) || selected(Workload::Create) {
        let server = match first.take() {
            Some(server) => server,
            None => Server::start(&setup, "server-cached", &store_url, "cached")?,
        };
        if selected(Workload::Refresh) {
            eprintln!("bench: refresh");
            let mut load_args = public_and_admin("refresh", &server, &token_file);
            load_args.extend(setup.common(&[&server], 2.0));
            results
                .rows
                .push(setup.row("refresh", "cached", &server, &load_args)?);
        }
        if selected(Workload::Create) {
            eprintln!("bench: create");
            let mut load_args = vec![
                "create".to_owned(),
                "--admin".to_owned(),
                server.admin.to_string(),
                "--admin-token-file".to_owned(),
                token_file.clone(),
            ];
            load_args.extend(setup.common(&[&server], 2.0));
            results
                .rows
                .push(setup.row("create", "cached", &server, &load_args)?);
        }
    }
    if selected(Workload::Login) {
        let server = match first.take() {
            Some(server) => server,
            None => Server::start(&setup, "server-cached", &store_url, "cached")?,
        };
        // The server hashes one password per core at a time and lets 8 per
        // core wait; more concurrent logins are refused with 503 by design
        // (load shedding), so the workload stays within what it admits.
        let connections = setup.connections.min(LOGIN_CONNECTIONS);
        eprintln!("bench: login, {connections} connections");
        let mut load_args = public_and_admin("login", &server, &token_file);
        let mut common = setup.common(&[&server], 2.0);
        common[1] = connections.to_string();
        load_args.extend(common);
        results.rows.push(setup.row(
            "login (argon2id, default parameters)",
            "cached",
            &server,
            &load_args,
        )?);
    }
    drop(first);

    if selected(Workload::Propagation) {
        if redis.is_some() {
            eprintln!(
                "bench: revocation propagation over {} sessions",
                args.revocations
            );
            let a = Server::start(&setup, "server-a", &store_url, "cached")?;
            let b = Server::start(&setup, "server-b", &store_url, "cached")?;
            let mut load_args = vec![
                "propagate".to_owned(),
                "--admin".to_owned(),
                a.admin.to_string(),
                "--admin-token-file".to_owned(),
                token_file.clone(),
                "--public-b".to_owned(),
                b.public.to_string(),
                "--count".to_owned(),
                args.revocations.to_string(),
            ];
            for s in [&a, &b] {
                load_args.extend(["--server-pid".to_owned(), s.child.id().to_string()]);
            }
            results.rows.push(Row {
                workload: "revoke propagation (A → B)".to_owned(),
                mode: "cached".to_owned(),
                report: setup.load(&load_args)?,
                profile: Vec::new(),
            });
        } else {
            results.skipped.push(
                "revoke propagation: needs two instances on one Redis; skipped on SQLite"
                    .to_owned(),
            );
        }
    }

    results.loadavg_after = loadavg();
    drop(redis);
    // The table goes to stdout, unless stdout carries the JSON.
    if args.json {
        eprint!("{}", table(&results));
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        print!("{}", table(&results));
    }
    let failed: Vec<&str> = results
        .rows
        .iter()
        .filter(|row| {
            (matches!(row.workload.as_str(), "refresh" | "create")
                || row.workload.starts_with("login"))
                && row.report.errors > 0
        })
        .map(|row| row.workload.as_str())
        .collect();
    if !failed.is_empty() {
        bail!("errors in {} (which must have none)", failed.join(" and "));
    }
    Ok(())
}

fn table(results: &Results) -> String {
    let ms = |us: u64| format!("{:.2} ms", us as f64 / 1000.0);
    // CPU counters tick at 10 ms: meaningless over a very short window.
    let cpu = |share: f64, window_s: f64| {
        if window_s >= 0.5 {
            format!("{:.0} %", share * 100.0)
        } else {
            "–".to_owned()
        }
    };
    let mut out = String::new();
    out.push_str(&format!(
        "\nsession-server HTTP benchmark: store {}, audit log {}, {} connections, {} s per run, \
         {}; load average {} before, {} after\n\n",
        results.store,
        results.audit,
        results.connections,
        results.duration_s,
        if results.pinned {
            "server on core 0, generator on core 1"
        } else {
            "UNPINNED (no working taskset)"
        },
        results.loadavg_before,
        results.loadavg_after,
    ));
    out.push_str("| workload | mode | req/s | p50 | p99 | max | errors | server CPU | generator CPU | note |\n");
    out.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---|\n");
    for row in &results.rows {
        let r = &row.report;
        let mut note = r.note.clone();
        for (kind, n) in &r.error_kinds {
            note.push_str(&format!("; {n}× {kind}"));
        }
        out.push_str(&format!(
            "| {} | {} | {:.0} | {} | {} | {} | {} of {} | {} | {} | {} |\n",
            row.workload,
            row.mode,
            r.rps,
            ms(r.p50_us),
            ms(r.p99_us),
            ms(r.max_us),
            r.errors,
            r.requests,
            cpu(r.server_cpu, r.window_s),
            cpu(r.generator_cpu, r.window_s),
            note.trim_start_matches("; "),
        ));
    }
    if let Some(m) = &results.memory {
        out.push_str(&format!(
            "\nRedis memory after creating {} sessions: {:.0} bytes/session by INFO used_memory \
             (whole server), {:.0} bytes/session by MEMORY USAGE over the {} keys of the \
             benchmark database\n",
            m.sessions, m.used_memory_per_session, m.memory_usage_per_session, m.keys
        ));
    }
    for row in results.rows.iter().filter(|r| !r.profile.is_empty()) {
        out.push_str(&format!(
            "\nperf: {}, {}: top symbols by share of the server's samples\n\n",
            row.workload, row.mode
        ));
        for s in &row.profile {
            out.push_str(&format!("- {:5.1} %  {}  {}\n", s.percent, s.dso, s.symbol));
        }
    }
    for skipped in &results.skipped {
        out.push_str(&format!("\nskipped: {skipped}\n"));
    }
    out
}
