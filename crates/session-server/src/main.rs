//! `session-server`: a thin binary over the `session_server` library.

use std::sync::Arc;

use anyhow::Context as _;
use clap::{Arg, ArgAction, Command};
use session_core::SystemClock;
use session_server::AppState;
use session_server::app::serve_opened;
use session_server::config::{RawSettings, SETTINGS, default_config_toml};
use session_server::state::Opened;
use tokio::net::TcpListener;

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn cli() -> Command {
    let mut cmd = Command::new("session-server")
        .about(
            "Session security service: signed access tokens, rotating refresh tokens, revocation.",
        )
        .version(env!("CARGO_PKG_VERSION"))
        .subcommand(
            Command::new("print-default-config")
                .about("Print a commented TOML file with every default"),
        )
        .subcommand(Command::new("migrate").about(
            "Apply the PostgreSQL audit log's migrations (to `--audit`) as the schema owner, then exit",
        ))
        .subcommand(
            Command::new("rewrap")
                .about("Re-seal every stored secret and private key under a new master key, then exit (run it with the server stopped)")
                .arg(
                    Arg::new("old-master-key-file")
                        .long("old-master-key-file")
                        .value_name("FILE")
                        .required(true)
                        .help("the master key everything is sealed under now"),
                )
                .arg(
                    Arg::new("new-master-key-file")
                        .long("new-master-key-file")
                        .value_name("FILE")
                        .required(true)
                        .help("the master key to seal everything under"),
                ),
        )
        .arg(
            Arg::new("config")
                .long("config")
                .value_name("FILE")
                .help("TOML configuration file (keys: the setting names below, lower case)")
                .global(true),
        );
    for s in SETTINGS {
        let long: &'static str = Box::leak(s.name.replace('_', "-").into_boxed_str());
        let help: &'static str = Box::leak(
            format!("{} [env: SESSION_{}]", s.help, s.name.to_uppercase()).into_boxed_str(),
        );
        cmd = cmd.arg(
            Arg::new(s.name)
                .long(long)
                .value_name("VALUE")
                .help(help)
                .action(ArgAction::Set)
                .global(true),
        );
    }
    cmd
}

/// Errors end the process with one line on stderr (the cause chain, no
/// backtrace, whatever `RUST_BACKTRACE` says) and exit status 1.
fn main() -> std::process::ExitCode {
    let scheduler = session_server::runtime::Scheduler::for_process();
    let runtime = match scheduler.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("session-server: error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(scheduler)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "stopped on error");
            eprintln!("session-server: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(scheduler: session_server::runtime::Scheduler) -> anyhow::Result<()> {
    let matches = cli().get_matches();
    if matches.subcommand_matches("print-default-config").is_some() {
        print!("{}", default_config_toml());
        return Ok(());
    }
    let mut raw = RawSettings::defaults();
    if let Some(path) = matches.get_one::<String>("config") {
        raw.merge_toml_file(std::path::Path::new(path))?;
    }
    raw.merge_env(std::env::vars());
    for s in SETTINGS {
        if let Some(v) = matches.get_one::<String>(s.name) {
            raw.set(s.name, v.clone())?;
        }
    }
    let settings = raw.parse()?;
    if matches.subcommand_matches("migrate").is_some() {
        let url = settings.audit.as_deref().context(
            "migrate needs the PostgreSQL audit URL: --audit postgres://… or SESSION_AUDIT",
        )?;
        session_server::compose::migrate_audit(url)
            .await
            .with_context(|| format!("migrating {}", session_server::compose::redact(url)))?;
        println!("audit log schema is up to date");
        return Ok(());
    }
    if let Some(m) = matches.subcommand_matches("rewrap") {
        let file = |name: &str| {
            m.get_one::<String>(name)
                .map(std::path::PathBuf::from)
                .context("missing master key file")
        };
        let (old_file, new_file) = (file("old-master-key-file")?, file("new-master-key-file")?);
        let done = session_server::master::rewrap(&settings, &old_file, &new_file)?;
        for path in &done.files {
            println!("sealed {} under the new master key", path.display());
        }
        println!("rewrapped {} file(s)", done.files.len());
        if let Some(values) = session_server::compose::shared_values(&settings).await? {
            let old = session_server::master::read_file(&old_file)?;
            let new = session_server::master::read_file(&new_file)?;
            let names = session_server::keyring::rewrap_shared(&*values, &old, &new).await?;
            for name in &names {
                println!("sealed the store's shared {name} under the new master key");
            }
            println!("rewrapped {} shared value(s) in the store", names.len());
        }
        return Ok(());
    }
    let telemetry = session_server::telemetry::init(&settings)?;
    tracing::info!(public = %settings.public_addr, admin = %settings.admin_addr, validation = settings.validation.as_str(), scheduler = scheduler.as_str(), "starting");

    let backends = session_server::compose::open_backends(&settings).await?;
    // Listen only once the state is built (or, with a shared store that
    // does not answer yet, once the admin token is in place), so that
    // whoever sees the port open also finds the generated admin token and
    // keys in the data dir.
    let (public_addr, admin_addr) = (settings.public_addr, settings.admin_addr);
    let opened = AppState::try_open(settings, backends, Arc::new(SystemClock)).await?;
    if let Opened::Waiting(pending) = &opened {
        session_server::files::create_private_dir(&pending.settings().data_dir)?;
        session_server::state::admin_token(pending.settings())?;
    }
    let public = TcpListener::bind(public_addr)
        .await
        .with_context(|| format!("cannot listen on {public_addr}"))?;
    let admin = TcpListener::bind(admin_addr)
        .await
        .with_context(|| format!("cannot listen on {admin_addr}"))?;
    tracing::info!(
        public = %public.local_addr()?, admin = %admin.local_addr()?,
        "listening"
    );
    let served = serve_opened(opened, public, admin, shutdown_signal()).await;
    telemetry.shutdown().await;
    served?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down; finishing in-flight requests");
}
