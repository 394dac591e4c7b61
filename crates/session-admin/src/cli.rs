//! The command line, as clap types only; the bodies live in `cmd`.

use std::path::PathBuf;
use std::time::Duration as StdDuration;

use clap::builder::PossibleValuesParser;
use clap::{Args, Parser, Subcommand};
use reqwest::Url;
use session_core::AuditKind;
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

/// Printed after `--help`: what the exit status means and where the
/// connection settings come from.
const AFTER_HELP: &str = "\
Exit status:
  0  done
  1  the server refused (its error code is shown: `error: unauthorized: ...`)
  2  usage: bad arguments, no admin token, a confirmation declined or impossible
  3  cannot reach the server
  4  not found (unknown session or user)

Connection:
  The admin listener is --url, else SESSION_ADMIN_URL, else http://127.0.0.1:8081.
  The admin token is read from --token-file, else the environment variable
  SESSION_ADMIN_TOKEN, else <data dir>/admin-token (--data-dir, SESSION_DATA_DIR,
  default ./data), the file the server writes at first start.
  Tokens and passwords are never taken from arguments and never printed.";

/// Operate a session service through its admin listener.
#[derive(Debug, Parser)]
#[command(name = "session-admin", version, after_help = AFTER_HELP, propagate_version = true)]
pub(crate) struct Cli {
    /// Where and how to connect.
    #[command(flatten)]
    pub(crate) conn: Connection,

    /// Print JSON instead of tables: one document, or JSON lines for streams.
    #[arg(long, global = true)]
    pub(crate) json: bool,

    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Connection settings shared by every command.
#[derive(Debug, Args)]
pub(crate) struct Connection {
    /// Base URL of the admin listener.
    #[arg(
        long,
        env = "SESSION_ADMIN_URL",
        default_value = "http://127.0.0.1:8081",
        global = true,
        value_name = "URL"
    )]
    pub(crate) url: Url,

    /// File holding the admin token [default: admin-token in the data directory].
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) token_file: Option<PathBuf>,

    /// The server's data directory, where it writes `admin-token`.
    #[arg(
        long,
        env = "SESSION_DATA_DIR",
        default_value = "./data",
        global = true,
        value_name = "DIR"
    )]
    pub(crate) data_dir: PathBuf,

    /// How long to wait for each request (seconds, or with a unit: 500ms, 1m).
    #[arg(long, default_value = "30s", global = true, value_parser = parse_std_duration, value_name = "DURATION")]
    pub(crate) timeout: StdDuration,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// List, show and revoke sessions.
    #[command(subcommand)]
    Sessions(SessionsCommand),

    /// Manage built-in password users.
    #[command(subcommand)]
    Users(UsersCommand),

    /// Read, follow, export or verify the audit log.
    Audit(AuditArgs),

    /// List or rotate the token signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),

    /// Whether the server is reachable and ready, key ages and clock skew.
    Status,

    /// Print a shell completion script.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },

    /// Print the manual page (roff) to stdout.
    Man,
}

/// `sessions …`
#[derive(Debug, Subcommand)]
pub(crate) enum SessionsCommand {
    /// List a user's active sessions.
    List {
        /// The user id.
        #[arg(long, value_name = "USER")]
        user: String,
    },

    /// Show one session.
    Show {
        /// The full session id (ids may begin with `-`).
        #[arg(allow_hyphen_values = true)]
        id: String,
    },

    /// Revoke one session, or every session of a user.
    #[command(
        after_help = "With --user, asks for confirmation when stdin is a terminal; \
                            scripts must pass --yes (without it, and without a terminal, nothing is revoked)."
    )]
    Revoke(RevokeArgs),
}

/// `sessions revoke`
#[derive(Debug, Args)]
pub(crate) struct RevokeArgs {
    /// The session to revoke.
    #[arg(
        required_unless_present = "user",
        conflicts_with = "user",
        value_name = "ID",
        allow_hyphen_values = true
    )]
    pub(crate) id: Option<String>,

    /// Revoke every active session of this user instead.
    #[arg(long, value_name = "USER")]
    pub(crate) user: Option<String>,

    /// Why, for the audit log.
    #[arg(long, value_name = "TEXT")]
    pub(crate) reason: Option<String>,

    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub(crate) yes: bool,
}

/// `users …`
#[derive(Debug, Subcommand)]
pub(crate) enum UsersCommand {
    /// Add a user; the password is prompted for (or read from stdin).
    Add(PasswordArgs),

    /// Remove a user.
    Remove {
        /// The user name.
        name: String,
    },

    /// Set a user's password; revokes all of that user's sessions.
    Passwd(PasswordArgs),
}

/// A user name and where its new password comes from.
#[derive(Debug, Args)]
pub(crate) struct PasswordArgs {
    /// The user name.
    pub(crate) name: String,

    /// Read the password from stdin even when it is a terminal (one line).
    /// Without a terminal, stdin is always where it comes from.
    #[arg(long)]
    pub(crate) password_stdin: bool,
}

/// `audit …`
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct AuditArgs {
    /// Export or verify instead of listing.
    #[command(subcommand)]
    pub(crate) action: Option<AuditCommand>,

    /// Which events.
    #[command(flatten)]
    pub(crate) filter: AuditFilter,

    /// At most this many events (the server's default is 100, its maximum 1000).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub(crate) limit: Option<u32>,

    /// Keep polling and print new events as they come (Ctrl-C stops).
    #[arg(long, short = 'f')]
    pub(crate) follow: bool,

    /// With --follow: how often to poll.
    #[arg(long, default_value = "2s", value_parser = parse_std_duration, requires = "follow", value_name = "DURATION")]
    pub(crate) interval: StdDuration,
}

/// `audit export` / `audit verify`
#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// Write every matching event to stdout as JSON lines, oldest first.
    Export {
        /// Which events.
        #[command(flatten)]
        filter: AuditFilter,

        /// Events per request (tests use small pages to prove the paging).
        #[arg(long, hide = true, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1000))]
        page_size: u32,
    },

    /// Check the audit log's hash chain and every checkpoint's signature
    /// (PostgreSQL audit log only).
    Verify {
        /// Checkpoints exported earlier (`audit checkpoints --export`): the
        /// database must still agree with each, and a tail lost since the
        /// export is found.
        #[arg(long, value_name = "FILE")]
        checkpoints: Option<PathBuf>,
    },

    /// List the chain's signed checkpoints, or keep them outside the
    /// database (PostgreSQL audit log only).
    Checkpoints {
        /// Sign the current head, then add every checkpoint to FILE (JSON),
        /// keeping the ones already in it: a checkpoint the database has
        /// since lost stays in the file as evidence.
        #[arg(long, value_name = "FILE")]
        export: Option<PathBuf>,
    },
}

/// Filters common to the audit commands.
#[derive(Debug, Args, Clone, Default)]
pub(crate) struct AuditFilter {
    /// Only this user's events.
    #[arg(long, value_name = "USER")]
    pub(crate) user: Option<String>,

    /// Only this session's events.
    #[arg(long, value_name = "ID")]
    pub(crate) session: Option<String>,

    /// Only events of this kind.
    #[arg(long, value_parser = PossibleValuesParser::new(AuditKind::ALL.map(AuditKind::as_str)))]
    pub(crate) kind: Option<String>,

    /// Only events at or after this time: RFC 3339 (2026-01-31T12:00:00Z) or an
    /// age (90s, 15m, 12h, 7d).
    #[arg(long, value_parser = parse_since, value_name = "WHEN")]
    pub(crate) since: Option<Since>,
}

/// `keys …`
#[derive(Debug, Subcommand)]
pub(crate) enum KeysCommand {
    /// List the signing keys (public parts and state).
    List,
    /// Schedule a new signing key: published in the JWKS now, it signs
    /// after the server's prepublish time; the old one then retires but
    /// still verifies its tokens.
    Rotate {
        /// A suspected compromise: the new key signs now, and the old one
        /// leaves the JWKS now (tokens it signed are refused).
        #[arg(long)]
        immediate: bool,
    },
}

/// A `--since` value, resolved against the clock only when used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Since {
    /// An absolute instant.
    At(OffsetDateTime),
    /// This long before now.
    Ago(Duration),
}

impl Since {
    /// The instant meant, given `now`.
    pub(crate) fn resolve(self, now: OffsetDateTime) -> OffsetDateTime {
        match self {
            Self::At(t) => t,
            Self::Ago(d) => now - d,
        }
    }
}

fn parse_since(s: &str) -> Result<Since, String> {
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(Since::At(t));
    }
    parse_duration(s).map(Since::Ago).map_err(|_| {
        format!(
            "expected an RFC 3339 time (2026-01-31T12:00:00Z) or an age (15m, 12h, 7d), not {s:?}"
        )
    })
}

fn parse_std_duration(s: &str) -> Result<StdDuration, String> {
    let d = parse_duration(s)?;
    StdDuration::try_from(d).map_err(|_| format!("{s:?} is not a positive duration"))
}

/// Parses `90`, `90s`, `500ms`, `15m`, `12h`, `7d`, `2w`.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: i64 = digits.parse().map_err(|_| {
        format!("expected a number with an optional unit (ms, s, m, h, d, w), not {s:?}")
    })?;
    let d = match unit {
        "ms" => Duration::milliseconds(n),
        "" | "s" => Duration::seconds(n),
        "m" => Duration::minutes(n),
        "h" => Duration::hours(n),
        "d" => Duration::days(n),
        "w" => Duration::weeks(n),
        other => {
            return Err(format!(
                "unknown unit {other:?} in {s:?}; use ms, s, m, h, d or w"
            ));
        }
    };
    Ok(d)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;
    use time::macros::datetime;

    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("session-admin").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn help_documents_the_exit_codes() {
        let help = Cli::command().render_long_help().to_string();
        for line in [
            "0  done",
            "1  the server refused",
            "2  usage",
            "3  cannot reach",
            "4  not found",
        ] {
            assert!(help.contains(line), "{line:?} missing from --help");
        }
    }

    #[test]
    fn revoke_needs_exactly_one_of_an_id_or_a_user() {
        assert!(parse(&["sessions", "revoke"]).is_err());
        assert!(parse(&["sessions", "revoke", "abc", "--user", "alice"]).is_err());
        let cli = parse(&["sessions", "revoke", "--user", "alice", "--yes"]).unwrap();
        let Command::Sessions(SessionsCommand::Revoke(args)) = cli.command else {
            panic!("parsed as {:?}", cli.command)
        };
        assert_eq!(args.user.as_deref(), Some("alice"));
        assert!(args.yes);
        assert!(args.id.is_none());
    }

    #[test]
    fn session_ids_that_begin_with_a_hyphen_are_ids_not_flags() {
        // One id in 64 begins with `-` (base64url).
        let cli = parse(&["sessions", "show", "-oAbcdefgh", "--json"]).unwrap();
        let Command::Sessions(SessionsCommand::Show { id }) = &cli.command else {
            panic!("parsed as {:?}", cli.command)
        };
        assert_eq!(id, "-oAbcdefgh");
        assert!(cli.json);
        let cli = parse(&["sessions", "revoke", "-oAbcdefgh", "--reason", "x"]).unwrap();
        let Command::Sessions(SessionsCommand::Revoke(args)) = cli.command else {
            panic!("parsed as {:?}", cli.command)
        };
        assert_eq!(args.id.as_deref(), Some("-oAbcdefgh"));
    }

    #[test]
    fn passwords_cannot_be_given_as_arguments() {
        assert!(parse(&["users", "add", "alice", "hunter2"]).is_err());
        assert!(parse(&["users", "passwd", "alice", "--password", "hunter2"]).is_err());
    }

    #[test]
    fn global_flags_are_accepted_after_the_subcommand() {
        let cli = parse(&["keys", "list", "--json", "--url", "http://10.0.0.1:9000"]).unwrap();
        assert!(cli.json);
        assert_eq!(cli.conn.url.as_str(), "http://10.0.0.1:9000/");
    }

    #[test]
    fn audit_kinds_are_checked_against_the_contract() {
        assert!(parse(&["audit", "--kind", "session_revoked"]).is_ok());
        assert!(parse(&["audit", "--kind", "session_deleted"]).is_err());
    }

    #[test]
    fn audit_limit_is_bounded_like_the_server() {
        assert!(parse(&["audit", "--limit", "0"]).is_err());
        assert!(parse(&["audit", "--limit", "1001"]).is_err());
        assert!(parse(&["audit", "--limit", "1000"]).is_ok());
    }

    #[test]
    fn since_takes_an_instant_or_an_age() {
        assert_eq!(
            parse_since("2026-01-31T12:00:00Z"),
            Ok(Since::At(datetime!(2026-01-31 12:00:00 UTC)))
        );
        let now = datetime!(2026-02-01 00:00:00 UTC);
        assert_eq!(
            parse_since("7d").unwrap().resolve(now),
            datetime!(2026-01-25 00:00:00 UTC)
        );
        assert_eq!(
            parse_since("90").unwrap().resolve(now),
            datetime!(2026-01-31 23:58:30 UTC)
        );
        assert!(parse_since("yesterday").is_err());
        assert!(parse_since("5y").is_err());
    }

    #[test]
    fn export_takes_its_own_filters() {
        let cli = parse(&["audit", "export", "--since", "1h", "--kind", "login_failed"]).unwrap();
        let Command::Audit(AuditArgs {
            action: Some(AuditCommand::Export { filter, page_size }),
            ..
        }) = cli.command
        else {
            panic!("parsed as {:?}", cli.command)
        };
        assert_eq!(filter.since, Some(Since::Ago(Duration::hours(1))));
        assert_eq!(filter.kind.as_deref(), Some("login_failed"));
        assert_eq!(page_size, 1000);
    }
}
