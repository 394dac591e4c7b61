//! `session-loadgen`: the HTTP load generator behind `cargo xtask bench`,
//! a crate of its own so that xtask (built first by every `cargo xtask`
//! command) does not compile an HTTP client and the DPoP signer.
//!
//! `bench` runs it as a subprocess (pinned with `taskset` to its own core)
//! against a running `session-server`. It runs on a tokio current-thread
//! runtime: one OS thread, one keep-alive HTTP/1.1 connection per task,
//! each task sending its next request when the previous answer has been
//! read (a closed loop). Every job is bounded in time and in count, speaks
//! only to loopback addresses, and prints one JSON [`Report`] on stdout;
//! progress goes to stderr. The admin token is read from its file, never
//! taken on the command line.

use session_bench_report::Report;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signer as _, SigningKey};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use tokio::net::TcpStream;

mod soak;

/// No single request may take longer than this; a request that does is
/// counted as an error and its connection is replaced.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Highest latency the histograms hold (longer ones are clamped).
const MAX_LATENCY_US: u64 = 60_000_000;
/// The user agent of every request (constant per refresh chain, as the
/// user-agent anomaly rule requires).
const USER_AGENT: &str = "xtask-bench/1";

/// One load job; run by `cargo xtask bench`, not by hand.
#[derive(Debug, clap::Parser)]
#[command(name = "session-loadgen")]
struct LoadArgs {
    #[command(subcommand)]
    job: Job,
}

/// What every closed-loop job shares.
#[derive(Debug, clap::Args)]
struct Common {
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Seconds of load before measuring starts.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Hard cap on the requests sent (warm-up included).
    #[arg(long, default_value_t = 20_000_000)]
    max_requests: u64,
    /// Processes whose CPU use during the measured window is reported
    /// (the servers).
    #[arg(long = "server-pid")]
    server_pids: Vec<u32>,
}

#[derive(Debug, clap::Subcommand)]
enum Job {
    /// Create `count` sessions through the admin API and write
    /// `session_id<TAB>access_token<TAB>refresh_token` lines to `out`.
    Prepare {
        #[command(flatten)]
        admin: Admin,
        #[arg(long)]
        count: usize,
        #[arg(long, default_value_t = 32)]
        connections: usize,
        #[arg(long)]
        out: PathBuf,
    },
    /// `GET /v1/session` with access tokens from a pool file: the first
    /// `hot` tokens round-robin, or (with `--fresh`) each token after
    /// them once.
    Validate {
        #[arg(long)]
        public: SocketAddr,
        #[arg(long)]
        pool: PathBuf,
        #[arg(long, default_value_t = 1000)]
        hot: usize,
        #[arg(long)]
        fresh: bool,
        #[command(flatten)]
        common: Common,
    },
    /// `GET /v1/session` with DPoP-bound access tokens (`Authorization:
    /// DPoP`), each request with a fresh proof (new `jti`, `ath` of its
    /// token) signed by this generator's Ed25519 key; `hot` sessions bound
    /// to that key are opened through the admin API first (`dpop_jkt`).
    ValidateDpop {
        #[arg(long)]
        public: SocketAddr,
        #[command(flatten)]
        admin: Admin,
        #[arg(long, default_value_t = 1000)]
        hot: usize,
        #[command(flatten)]
        common: Common,
    },
    /// `POST /v1/auth/refresh`, one rotation chain per connection.
    Refresh {
        #[arg(long)]
        public: SocketAddr,
        #[command(flatten)]
        admin: Admin,
        #[command(flatten)]
        common: Common,
    },
    /// `POST /v1/auth/login` (bearer transport) round-robin over `users`
    /// password users made for this run through the admin API.
    Login {
        #[arg(long)]
        public: SocketAddr,
        #[command(flatten)]
        admin: Admin,
        #[arg(long, default_value_t = 32)]
        users: usize,
        #[command(flatten)]
        common: Common,
    },
    /// `POST /admin/v1/sessions` for `bench-<n>` users.
    Create {
        #[command(flatten)]
        admin: Admin,
        #[command(flatten)]
        common: Common,
    },
    /// Refresh chains paced at `rate` requests/s for `duration` seconds,
    /// printing one JSON line of figures per `slice` seconds (the soak).
    Soak {
        #[arg(long)]
        public: SocketAddr,
        #[command(flatten)]
        admin: Admin,
        /// Requests per second, spread over the connections.
        #[arg(long)]
        rate: f64,
        #[arg(long, default_value_t = 32)]
        connections: usize,
        /// Seconds of load.
        #[arg(long)]
        duration: f64,
        /// Seconds per reported slice.
        #[arg(long, default_value_t = 60.0)]
        slice: f64,
        #[arg(long = "server-pid")]
        server_pids: Vec<u32>,
    },
    /// Revoke on instance A, poll instance B until it answers 401.
    Propagate {
        /// Instance A's admin API.
        #[command(flatten)]
        admin: Admin,
        /// Instance B's public listener.
        #[arg(long)]
        public_b: SocketAddr,
        #[arg(long, default_value_t = 1000)]
        count: usize,
        #[arg(long = "server-pid")]
        server_pids: Vec<u32>,
    },
}

/// The admin API a job opens sessions and users through.
#[derive(Debug, clap::Args)]
struct Admin {
    /// Its listener.
    #[arg(long)]
    admin: SocketAddr,
    /// The file holding its bearer token.
    #[arg(long)]
    admin_token_file: PathBuf,
}

fn main() -> std::process::ExitCode {
    let args = <LoadArgs as clap::Parser>::parse();
    match run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("session-loadgen: error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: LoadArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the generator's runtime")?;
    let report = runtime.block_on(async move {
        match args.job {
            Job::Prepare {
                admin:
                    Admin {
                        admin,
                        admin_token_file,
                    },
                count,
                connections,
                out,
            } => prepare(admin, &admin_token_file, count, connections, &out).await,
            Job::Validate {
                public,
                pool,
                hot,
                fresh,
                common,
            } => {
                let tokens = read_pool(&pool)?;
                ensure!(
                    tokens.len() > hot,
                    "the pool holds {} tokens, fewer than the {hot} hot ones",
                    tokens.len()
                );
                let workload = Workload::Validate {
                    host: public.to_string(),
                    tokens: tokens.into_iter().map(|t| t.access).collect(),
                    hot,
                    fresh,
                    next: AtomicUsize::new(if fresh { hot } else { 0 }),
                };
                closed_loop(public, Arc::new(workload), &common, Vec::new()).await
            }
            Job::ValidateDpop {
                public,
                admin:
                    Admin {
                        admin,
                        admin_token_file,
                    },
                hot,
                common,
            } => {
                let admin_token = read_admin_token(&admin_token_file)?;
                let prover = Prover::generate();
                let issued = create_sessions_bound(
                    admin,
                    &admin_token,
                    hot,
                    common.connections,
                    Some(&prover.jkt),
                )
                .await?;
                let workload = Workload::ValidateDpop {
                    host: public.to_string(),
                    htu: format!("http://{public}/v1/session"),
                    tokens: issued
                        .into_iter()
                        .map(|t| {
                            let ath = URL_SAFE_NO_PAD.encode(Sha256::digest(t.access.as_bytes()));
                            (format!("DPoP {}", t.access), ath)
                        })
                        .collect(),
                    prover: Box::new(prover),
                    next: AtomicUsize::new(0),
                };
                closed_loop(public, Arc::new(workload), &common, Vec::new()).await
            }
            Job::Refresh {
                public,
                admin:
                    Admin {
                        admin,
                        admin_token_file,
                    },
                common,
            } => {
                let admin_token = read_admin_token(&admin_token_file)?;
                let chains =
                    create_sessions(admin, &admin_token, common.connections, common.connections)
                        .await?
                        .into_iter()
                        .map(|t| Some(t.refresh))
                        .collect();
                let workload = Workload::Refresh {
                    host: public.to_string(),
                };
                closed_loop(public, Arc::new(workload), &common, chains).await
            }
            Job::Login {
                public,
                admin:
                    Admin {
                        admin,
                        admin_token_file,
                    },
                users,
                common,
            } => {
                let admin_token = read_admin_token(&admin_token_file)?;
                let bodies = create_users(admin, &admin_token, users).await?;
                let workload = Workload::Login {
                    host: public.to_string(),
                    bodies,
                    next: AtomicUsize::new(0),
                };
                closed_loop(public, Arc::new(workload), &common, Vec::new()).await
            }
            Job::Create {
                admin:
                    Admin {
                        admin,
                        admin_token_file,
                    },
                common,
            } => {
                let workload = Workload::Create {
                    host: admin.to_string(),
                    authorization: format!("Bearer {}", read_admin_token(&admin_token_file)?),
                    next: AtomicU64::new(0),
                };
                closed_loop(admin, Arc::new(workload), &common, Vec::new()).await
            }
            Job::Soak {
                public,
                admin:
                    Admin {
                        admin,
                        admin_token_file,
                    },
                rate,
                connections,
                duration,
                slice,
                server_pids,
            } => {
                soak::run(soak::Plan {
                    public,
                    admin,
                    admin_token_file: &admin_token_file,
                    rate,
                    connections,
                    duration: Duration::try_from_secs_f64(duration)?,
                    slice: Duration::try_from_secs_f64(slice)?,
                    server_pids: &server_pids,
                })
                .await
            }
            Job::Propagate {
                admin:
                    Admin {
                        admin,
                        admin_token_file,
                    },
                public_b,
                count,
                server_pids,
            } => propagate(admin, &admin_token_file, public_b, count, &server_pids).await,
        }
    })?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

// ---------------------------------------------------------------- HTTP

type Sender = SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr) -> Result<Sender> {
    ensure!(
        addr.ip().is_loopback(),
        "the load generator speaks only to loopback addresses, not {addr}"
    );
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP/1.1 handshake")?;
    tokio::spawn(async move {
        // The connection ends when its sender is dropped or the server
        // closes it; either is seen by the next request on it.
        let _ = connection.await;
    });
    Ok(sender)
}

/// Sends one request and reads the whole answer.
async fn exchange(
    sender: &mut Sender,
    request: Request<Full<Bytes>>,
) -> Result<(StatusCode, Bytes)> {
    let work = async {
        sender.ready().await?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, body))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, work)
        .await
        .context("request timed out")?
}

fn request(
    method: Method,
    host: &str,
    path: &str,
    authorization: Option<&str>,
    json: Option<String>,
) -> Result<Request<Full<Bytes>>> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, host)
        .header(header::USER_AGENT, USER_AGENT);
    if let Some(authorization) = authorization {
        builder = builder.header(header::AUTHORIZATION, authorization);
    }
    let body = match json {
        Some(json) => {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
            Full::new(Bytes::from(json))
        }
        None => Full::new(Bytes::new()),
    };
    Ok(builder.body(body)?)
}

fn read_admin_token(path: &Path) -> Result<String> {
    let token = std::fs::read_to_string(path)
        .with_context(|| format!("reading the admin token from {}", path.display()))?;
    Ok(token.trim().to_owned())
}

/// The tokens of one session, as the admin API issued them.
#[derive(Debug, Clone)]
struct Issued {
    session_id: String,
    access: String,
    refresh: String,
}

#[derive(Debug, Deserialize)]
struct TokenResponse {
    session_id: String,
    access_token: String,
    refresh_token: String,
}

fn read_pool(path: &Path) -> Result<Vec<Issued>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .map(|line| {
            let mut fields = line.split('\t');
            match (fields.next(), fields.next(), fields.next()) {
                (Some(session_id), Some(access), Some(refresh)) => Ok(Issued {
                    session_id: session_id.to_owned(),
                    access: access.to_owned(),
                    refresh: refresh.to_owned(),
                }),
                _ => bail!("{}: malformed pool line", path.display()),
            }
        })
        .collect()
}

/// `count` sessions through `POST /admin/v1/sessions` on `connections`
/// connections; any failure is an error (setup must not fail quietly).
async fn create_sessions(
    admin: SocketAddr,
    admin_token: &str,
    count: usize,
    connections: usize,
) -> Result<Vec<Issued>> {
    create_sessions_bound(admin, admin_token, count, connections, None).await
}

/// [`create_sessions`], each session bound to the DPoP key `jkt` where
/// one is given.
async fn create_sessions_bound(
    admin: SocketAddr,
    admin_token: &str,
    count: usize,
    connections: usize,
    jkt: Option<&str>,
) -> Result<Vec<Issued>> {
    let jkt: Option<Arc<str>> = jkt.map(Into::into);
    let next = Arc::new(AtomicUsize::new(0));
    let authorization: Arc<str> = format!("Bearer {admin_token}").into();
    let host: Arc<str> = admin.to_string().into();
    let mut tasks = Vec::new();
    for _ in 0..connections.clamp(1, count.max(1)) {
        let (next, authorization, host) = (next.clone(), authorization.clone(), host.clone());
        let jkt = jkt.clone();
        tasks.push(tokio::spawn(async move {
            let mut sender = connect(admin).await?;
            let mut issued = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= count {
                    return anyhow::Ok(issued);
                }
                let mut body = serde_json::json!({
                    "user_id": format!("bench-setup-{n}"),
                    "ip": "127.0.0.1",
                    "user_agent": USER_AGENT,
                });
                if let Some(jkt) = &jkt {
                    body["dpop_jkt"] = serde_json::Value::from(&**jkt);
                }
                let body = admin_create(
                    &mut sender,
                    &host,
                    &authorization,
                    "/admin/v1/sessions",
                    body.to_string(),
                )
                .await?;
                let t: TokenResponse =
                    serde_json::from_slice(&body).context("reading the created session")?;
                issued.push(Issued {
                    session_id: t.session_id,
                    access: t.access_token,
                    refresh: t.refresh_token,
                });
            }
        }));
    }
    let mut all = Vec::with_capacity(count);
    for task in tasks {
        all.extend(task.await??);
    }
    Ok(all)
}

/// `POST` of `json` to the admin API's `path`; its body if it answered
/// 201, else an error (set-up must not fail quietly).
async fn admin_create(
    sender: &mut Sender,
    host: &str,
    authorization: &str,
    path: &str,
    json: String,
) -> Result<Bytes> {
    let req = request(Method::POST, host, path, Some(authorization), Some(json))?;
    let (status, body) = exchange(sender, req).await?;
    ensure!(
        status == StatusCode::CREATED,
        "POST {path} answered {status}: {}",
        String::from_utf8_lossy(&body)
    );
    Ok(body)
}

/// `count` password users made through `POST /admin/v1/users` (names
/// unique to this run, random passwords); their login bodies.
async fn create_users(admin: SocketAddr, admin_token: &str, count: usize) -> Result<Vec<String>> {
    ensure!(count > 0, "at least one user is needed");
    let run: u64 = rand::random();
    let authorization = format!("Bearer {admin_token}");
    let host = admin.to_string();
    let mut sender = connect(admin).await?;
    let mut bodies = Vec::with_capacity(count);
    for n in 0..count {
        let password: [u8; 18] = rand::random();
        let body = serde_json::json!({
            "username": format!("bench-login-{run:x}-{n}"),
            "password": URL_SAFE_NO_PAD.encode(password),
        })
        .to_string();
        admin_create(
            &mut sender,
            &host,
            &authorization,
            "/admin/v1/users",
            body.clone(),
        )
        .await?;
        bodies.push(body);
    }
    Ok(bodies)
}

async fn prepare(
    admin: SocketAddr,
    admin_token_file: &Path,
    count: usize,
    connections: usize,
    out: &Path,
) -> Result<Report> {
    let admin_token = read_admin_token(admin_token_file)?;
    let started = Instant::now();
    let issued = create_sessions(admin, &admin_token, count, connections).await?;
    let took = started.elapsed().as_secs_f64();
    let mut text = String::with_capacity(issued.len() * 420);
    for t in &issued {
        text.push_str(&format!("{}\t{}\t{}\n", t.session_id, t.access, t.refresh));
    }
    std::fs::write(out, text).with_context(|| format!("writing {}", out.display()))?;
    Ok(Report {
        requests: u64::try_from(issued.len())?,
        window_s: took,
        rps: issued.len() as f64 / took,
        ..Report::default()
    })
}

// ---------------------------------------------------------- workloads

#[derive(Debug)]
enum Workload {
    Validate {
        host: String,
        tokens: Vec<String>,
        hot: usize,
        fresh: bool,
        next: AtomicUsize,
    },
    ValidateDpop {
        host: String,
        htu: String,
        /// `(Authorization value, ath)` of each hot session.
        tokens: Vec<(String, String)>,
        prover: Box<Prover>,
        next: AtomicUsize,
    },
    Refresh {
        host: String,
    },
    Login {
        host: String,
        /// The login bodies (`{"username","password"}`), one per user.
        bodies: Vec<String>,
        next: AtomicUsize,
    },
    Create {
        host: String,
        authorization: String,
        next: AtomicU64,
    },
}

#[derive(Debug, Deserialize)]
struct Rotated {
    refresh_token: String,
}

impl Workload {
    /// The next request of a connection whose chain (refresh only) is
    /// `chain`; `None` when there is nothing left to send.
    fn next(&self, chain: &Option<String>) -> Result<Option<Request<Full<Bytes>>>> {
        Ok(Some(match self {
            Self::Validate {
                host,
                tokens,
                hot,
                fresh,
                next,
            } => {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let token = if *fresh {
                    match tokens.get(n) {
                        Some(token) => token,
                        None => return Ok(None),
                    }
                } else {
                    &tokens[n % hot]
                };
                request(
                    Method::GET,
                    host,
                    "/v1/session",
                    Some(&format!("Bearer {token}")),
                    None,
                )?
            }
            Self::ValidateDpop {
                host,
                htu,
                tokens,
                prover,
                next,
            } => {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let (authorization, ath) = &tokens[n % tokens.len()];
                let mut req = request(Method::GET, host, "/v1/session", Some(authorization), None)?;
                let proof = prover.proof(n, "GET", htu, ath);
                req.headers_mut()
                    .insert("dpop", header::HeaderValue::from_str(&proof)?);
                req
            }
            Self::Refresh { host } => {
                let Some(token) = chain else {
                    return Ok(None);
                };
                let mut req = request(
                    Method::POST,
                    host,
                    "/v1/auth/refresh",
                    None,
                    Some(serde_json::json!({ "refresh_token": token }).to_string()),
                )?;
                req.headers_mut().insert(
                    "x-session-transport",
                    header::HeaderValue::from_static("bearer"),
                );
                req
            }
            Self::Login { host, bodies, next } => {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let mut req = request(
                    Method::POST,
                    host,
                    "/v1/auth/login",
                    None,
                    Some(bodies[n % bodies.len()].clone()),
                )?;
                req.headers_mut().insert(
                    "x-session-transport",
                    header::HeaderValue::from_static("bearer"),
                );
                req
            }
            Self::Create {
                host,
                authorization,
                next,
            } => {
                let n = next.fetch_add(1, Ordering::Relaxed);
                request(
                    Method::POST,
                    host,
                    "/admin/v1/sessions",
                    Some(authorization),
                    Some(serde_json::json!({ "user_id": format!("bench-{n}") }).to_string()),
                )?
            }
        }))
    }

    /// Sends `req` on `sender` and takes in the answer: when it completed,
    /// and what went wrong if it counts as an error. A transport error
    /// replaces the connection.
    async fn send(
        &self,
        sender: &mut Sender,
        addr: SocketAddr,
        req: Request<Full<Bytes>>,
        chain: &mut Option<String>,
    ) -> Result<(Instant, Option<String>)> {
        let outcome = exchange(sender, req).await;
        let done = Instant::now();
        let failure = match outcome {
            Ok((status, body)) => {
                (!self.answer(chain, status, &body)).then(|| format!("HTTP {}", status.as_u16()))
            }
            Err(error) => {
                *sender = connect(addr).await?;
                Some(format!("{error:#}"))
            }
        };
        Ok((done, failure))
    }

    /// Takes in an answer; `false` if it counts as an error. A refresh
    /// chain that fails is over (its token may be dead).
    fn answer(&self, chain: &mut Option<String>, status: StatusCode, body: &[u8]) -> bool {
        if !status.is_success() {
            if matches!(self, Self::Refresh { .. }) {
                *chain = None;
            }
            return false;
        }
        if let Self::Refresh { .. } = self {
            match serde_json::from_slice::<Rotated>(body) {
                Ok(rotated) => *chain = Some(rotated.refresh_token),
                Err(_) => {
                    *chain = None;
                    return false;
                }
            }
        }
        true
    }
}

// --------------------------------------------------------------- DPoP

/// The generator's DPoP key: an Ed25519 key made for this run, with its
/// proof header (which never changes) encoded once.
struct Prover {
    key: SigningKey,
    header: String,
    jkt: String,
    run: u64,
}

impl std::fmt::Debug for Prover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prover")
            .field("jkt", &self.jkt)
            .finish_non_exhaustive()
    }
}

impl Prover {
    fn generate() -> Self {
        let key = SigningKey::generate(&mut rand::rand_core::UnwrapErr(rand::rngs::SysRng));
        let x = URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes());
        // RFC 7638: the required members, lexicographic order, no spaces.
        let thumbprint_input = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
        let jkt = URL_SAFE_NO_PAD.encode(Sha256::digest(thumbprint_input.as_bytes()));
        let header = serde_json::json!({
            "typ": "dpop+jwt",
            "alg": "EdDSA",
            "jwk": {"kty": "OKP", "crv": "Ed25519", "x": x},
        });
        Self {
            key,
            header: URL_SAFE_NO_PAD.encode(header.to_string()),
            jkt,
            run: rand::random(),
        }
    }

    /// A proof for request `n` of this run.
    fn proof(&self, n: usize, htm: &str, htu: &str, ath: &str) -> String {
        #[allow(clippy::disallowed_methods)]
        // reason: a client stamps its proofs with the wall clock, as any DPoP client does
        let iat = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let claims = serde_json::json!({
            "jti": format!("{:x}-{n:x}", self.run),
            "htm": htm,
            "htu": htu,
            "iat": iat,
            "ath": ath,
        });
        let input = format!(
            "{}.{}",
            self.header,
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self.key.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
    }
}

// ------------------------------------------------------------ the loop

/// What one connection measured.
#[derive(Debug)]
struct Tally {
    histogram: Histogram<u64>,
    errors: u64,
    error_kinds: Vec<(String, u64)>,
    /// When its last measured request completed.
    last: Option<Instant>,
}

impl Tally {
    fn new() -> Result<Self> {
        Ok(Self {
            histogram: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)?,
            errors: 0,
            error_kinds: Vec::new(),
            last: None,
        })
    }

    /// Adds what `other` measured to this tally.
    fn merge(&mut self, other: Self) -> Result<()> {
        self.histogram.add(&other.histogram)?;
        self.errors += other.errors;
        for (kind, n) in other.error_kinds {
            match self.error_kinds.iter_mut().find(|(k, _)| *k == kind) {
                Some((_, m)) => *m += n,
                None => self.error_kinds.push((kind, n)),
            }
        }
        self.last = self.last.max(other.last);
        Ok(())
    }

    fn error(&mut self, kind: String) {
        self.errors += 1;
        if let Some((_, n)) = self.error_kinds.iter_mut().find(|(k, _)| *k == kind) {
            *n += 1;
        } else if self.error_kinds.len() < 8 {
            self.error_kinds.push((kind, 1));
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros())
        .unwrap_or(u64::MAX)
        .clamp(1, MAX_LATENCY_US)
}

/// Seconds of CPU (user + system) a process has used so far.
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, fields) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = fields.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // Linux reports clock ticks of USER_HZ, which is 100 on every
    // architecture it runs on.
    Some((utime + stime) / 100.0)
}

fn cpu_of(pids: &[String]) -> f64 {
    pids.iter().filter_map(|pid| cpu_seconds(pid)).sum()
}

/// Runs `workload` on `common.connections` connections: warm-up, then the
/// measured window, stopping early when the workload runs dry or the
/// request cap is reached.
async fn closed_loop(
    addr: SocketAddr,
    workload: Arc<Workload>,
    common: &Common,
    chains: Vec<Option<String>>,
) -> Result<Report> {
    ensure!(common.connections > 0, "at least one connection is needed");
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(common.warmup);
    let end = measure_from + Duration::from_secs_f64(common.duration);
    let sent = Arc::new(AtomicU64::new(0));
    let ran_dry = Arc::new(AtomicBool::new(false));
    let max_requests = common.max_requests;

    let mut tasks = Vec::new();
    for i in 0..common.connections {
        let workload = workload.clone();
        let (sent, ran_dry) = (sent.clone(), ran_dry.clone());
        let mut chain = chains.get(i).cloned().flatten();
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::new()?;
            let mut sender = connect(addr).await?;
            loop {
                if Instant::now() >= end || sent.fetch_add(1, Ordering::Relaxed) >= max_requests {
                    break;
                }
                let Some(req) = workload.next(&chain)? else {
                    ran_dry.store(true, Ordering::Relaxed);
                    break;
                };
                let began = Instant::now();
                let (done, failure) = workload.send(&mut sender, addr, req, &mut chain).await?;
                let measured = began >= measure_from && done <= end;
                if measured {
                    tally.histogram.saturating_record(micros(done - began));
                    tally.last = Some(done);
                    if let Some(kind) = failure {
                        tally.error(kind);
                    }
                }
            }
            anyhow::Ok(tally)
        }));
    }

    let pids: Vec<String> = common.server_pids.iter().map(u32::to_string).collect();
    let own = vec![std::process::id().to_string()];
    tokio::time::sleep_until(measure_from.into()).await;
    let (server_before, own_before, cpu_from) = (cpu_of(&pids), cpu_of(&own), Instant::now());

    let mut total = Tally::new()?;
    let mut cpu_to = None;
    for task in tasks {
        let tally = task.await??;
        if cpu_to.is_none() {
            // Read the CPU counters as soon as the first connection stops:
            // by then the window is over or nearly so.
            cpu_to = Some((cpu_of(&pids), cpu_of(&own), Instant::now()));
        }
        total.merge(tally)?;
    }
    let (server_after, own_after, cpu_until) =
        cpu_to.unwrap_or((server_before, own_before, cpu_from));
    let cpu_span = (cpu_until - cpu_from).as_secs_f64().max(1e-3);

    let window = match total.last {
        Some(last) if ran_dry.load(Ordering::Relaxed) => last.min(end) - measure_from,
        Some(_) => end - measure_from,
        None => Duration::ZERO,
    };
    let requests = total.histogram.len();
    let mut note = String::new();
    if ran_dry.load(Ordering::Relaxed) {
        note = format!("token pool ran out after {:.1} s", window.as_secs_f64());
    }
    if sent.load(Ordering::Relaxed) >= max_requests {
        note = format!("stopped at the cap of {max_requests} requests");
    }
    Ok(Report {
        requests,
        errors: total.errors,
        error_kinds: total.error_kinds,
        window_s: window.as_secs_f64(),
        rps: if window.is_zero() {
            0.0
        } else {
            requests as f64 / window.as_secs_f64()
        },
        p50_us: total.histogram.value_at_quantile(0.5),
        p99_us: total.histogram.value_at_quantile(0.99),
        max_us: total.histogram.max(),
        server_cpu: (server_after - server_before) / cpu_span,
        generator_cpu: (own_after - own_before) / cpu_span,
        note,
    })
}

// -------------------------------------------------------- propagation

/// How long B may keep accepting a revoked token before it counts as an
/// error.
const PROPAGATION_TIMEOUT: Duration = Duration::from_secs(2);

async fn propagate(
    admin: SocketAddr,
    admin_token_file: &Path,
    public_b: SocketAddr,
    count: usize,
    server_pids: &[u32],
) -> Result<Report> {
    let admin_token = read_admin_token(admin_token_file)?;
    let sessions = create_sessions(admin, &admin_token, count, 32).await?;
    let authorization = format!("Bearer {admin_token}");
    let (admin_host, b_host) = (admin.to_string(), public_b.to_string());
    let mut a = connect(admin).await?;
    let mut b = connect(public_b).await?;
    let mut tally = Tally::new()?;
    let pids: Vec<String> = server_pids.iter().map(u32::to_string).collect();
    let (cpu_before, started) = (cpu_of(&pids), Instant::now());
    let own_before = cpu_of(&[std::process::id().to_string()]);

    for session in &sessions {
        let bearer = format!("Bearer {}", session.access);
        let verify = || request(Method::GET, &b_host, "/v1/auth/verify", Some(&bearer), None);
        // B must have seen (and, in cached mode, cached) the token first.
        let (status, _) = exchange(&mut b, verify()?).await?;
        if status != StatusCode::OK {
            tally.error(format!("B answered {status} before the revocation"));
            continue;
        }
        let delete = request(
            Method::DELETE,
            &admin_host,
            &format!("/admin/v1/sessions/{}", session.session_id),
            Some(&authorization),
            None,
        )?;
        let revoked_at = Instant::now();
        let revoke = exchange(&mut a, delete);
        let poll = async {
            loop {
                let (status, _) = exchange(&mut b, verify()?).await?;
                let now = Instant::now();
                if status == StatusCode::UNAUTHORIZED {
                    return anyhow::Ok(Some(now));
                }
                if now - revoked_at > PROPAGATION_TIMEOUT {
                    return Ok(None);
                }
            }
        };
        let (revoked, seen) = tokio::join!(revoke, poll);
        match (revoked, seen) {
            (Err(error), _) | (_, Err(error)) => tally.error(format!("{error:#}")),
            (Ok((status, _)), _) if status != StatusCode::NO_CONTENT => {
                tally.error(format!("DELETE answered {status}"));
            }
            (Ok(_), Ok(None)) => tally.error("B still accepted the token after 2 s".to_owned()),
            (Ok(_), Ok(Some(at))) => {
                tally.histogram.saturating_record(micros(at - revoked_at));
            }
        }
    }
    let window = started.elapsed();
    let span = window.as_secs_f64().max(1e-3);
    Ok(Report {
        requests: u64::try_from(sessions.len())?,
        errors: tally.errors,
        error_kinds: tally.error_kinds,
        window_s: window.as_secs_f64(),
        rps: sessions.len() as f64 / span,
        p50_us: tally.histogram.value_at_quantile(0.5),
        p99_us: tally.histogram.value_at_quantile(0.99),
        max_us: tally.histogram.max(),
        server_cpu: (cpu_of(&pids) - cpu_before) / span,
        generator_cpu: (cpu_of(&[std::process::id().to_string()]) - own_before) / span,
        note: "latency = DELETE sent on A → first 401 from B".to_owned(),
    })
}
