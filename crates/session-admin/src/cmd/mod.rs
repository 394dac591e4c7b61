//! Command bodies. Each takes a [`Ctx`] and prints either a table or
//! JSON; errors carry their exit code (see `crate::error`).

mod audit;
mod keys;
mod sessions;
mod status;
mod users;

use clap::CommandFactory;
use serde::de::DeserializeOwned;
use serde_json::Value;
use session_core::{Clock, SystemClock};
use zeroize::Zeroizing;

use crate::cli::{Cli, Command};
use crate::client::{AdminClient, ApiError, load_token};
use crate::error::Failure;
use crate::output::Local;

/// What every command body needs.
#[derive(Debug)]
pub(crate) struct Ctx {
    client: AdminClient,
    /// Why there is no token, when there is none (only `status` goes on without one).
    token_problem: Option<String>,
    json: bool,
    local: Local,
    clock: SystemClock,
}

impl Ctx {
    /// The client, for routes that need the admin token.
    fn authed(&self) -> Result<&AdminClient, Failure> {
        match &self.token_problem {
            Some(problem) => Err(Failure::Usage(problem.clone())),
            None => Ok(&self.client),
        }
    }

    fn now(&self) -> time::OffsetDateTime {
        self.clock.now()
    }
}

/// Runs the parsed command line.
pub(crate) async fn run(cli: Cli, local: Local) -> anyhow::Result<()> {
    match cli.command {
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "session-admin", &mut out);
            return crate::output::print(&String::from_utf8_lossy(&out));
        }
        Command::Man => {
            let mut out = Vec::new();
            clap_mangen::Man::new(Cli::command()).render(&mut out)?;
            return crate::output::print(&String::from_utf8_lossy(&out));
        }
        _ => {}
    }

    let env_token = std::env::var("SESSION_ADMIN_TOKEN")
        .ok()
        .map(Zeroizing::new);
    let (token, token_problem) = match load_token(
        cli.conn.token_file.as_deref(),
        env_token,
        &cli.conn.data_dir,
    ) {
        Ok(token) => (Some(token), None),
        Err(problem) => (None, Some(problem)),
    };
    let client = AdminClient::new(
        cli.conn.url,
        token.as_deref().map(String::as_str),
        cli.conn.timeout,
    )?;
    drop(token);
    let ctx = Ctx {
        client,
        token_problem,
        json: cli.json,
        local,
        clock: SystemClock,
    };
    match cli.command {
        Command::Sessions(c) => sessions::run(&ctx, c).await,
        Command::Users(c) => users::run(&ctx, c).await,
        Command::Audit(a) => audit::run(&ctx, a).await,
        Command::Keys(c) => keys::run(&ctx, c).await,
        Command::Status => status::run(&ctx).await,
        Command::Completions { .. } | Command::Man => Ok(()),
    }
}

/// `body[key]` as a list of the contract's `T` (a body type of
/// `session_core::wire`), or an [`ApiError::Unexpected`] saying what is
/// wrong.
fn list<T: DeserializeOwned>(body: &Value, key: &str) -> Result<Vec<T>, ApiError> {
    array(body, key)?.iter().map(read).collect()
}

/// One of the contract's bodies, or an [`ApiError::Unexpected`].
fn read<T: DeserializeOwned>(value: &Value) -> Result<T, ApiError> {
    T::deserialize(value).map_err(|e| ApiError::Unexpected {
        reason: format!("the answer is not the contract's: {e}"),
    })
}

/// `body[key]` as an array, or an [`ApiError::Unexpected`].
fn array<'a>(body: &'a Value, key: &str) -> Result<&'a Vec<Value>, ApiError> {
    body.get(key)
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::Unexpected {
            reason: format!("the answer has no {key:?} list"),
        })
}
