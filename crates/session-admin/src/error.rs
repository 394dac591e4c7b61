//! Exit codes and the one line printed for an error.

use std::process::ExitCode;

use crate::client::ApiError;
use crate::output::StdoutClosed;

/// The exit codes documented in `--help`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// 0: done.
    Done = 0,
    /// 1: the server refused.
    Refused = 1,
    /// 2: usage.
    Usage = 2,
    /// 3: cannot reach the server.
    Unreachable = 3,
    /// 4: not found.
    NotFound = 4,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> Self {
        ExitCode::from(e as u8)
    }
}

/// Failures the CLI itself decides on, with their exit code.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Failure {
    /// Exit 2: a mistake in how the command was called or answered.
    #[error("{0}")]
    Usage(String),
    /// Exit 1: the server said no, in a way other than an error body.
    #[error("{0}")]
    Refused(String),
}

/// The exit code for `e`: the first error in its chain that decides one;
/// anything else (a local I/O error, say) counts as 1.
pub(crate) fn exit_code(e: &anyhow::Error) -> Exit {
    for cause in e.chain() {
        if let Some(api) = cause.downcast_ref::<ApiError>() {
            return match api {
                ApiError::Unreachable { .. } => Exit::Unreachable,
                _ if api.is_not_found() => Exit::NotFound,
                _ => Exit::Refused,
            };
        }
        if let Some(f) = cause.downcast_ref::<Failure>() {
            return match f {
                Failure::Usage(_) => Exit::Usage,
                Failure::Refused(_) => Exit::Refused,
            };
        }
        if cause.is::<StdoutClosed>() {
            return Exit::Done;
        }
    }
    Exit::Refused
}

/// The one line for `e` (without `error: `): its context, then its cause;
/// an [`ApiError`] already says everything an operator needs, so the
/// chain stops there.
pub(crate) fn one_line(e: &anyhow::Error) -> String {
    let mut parts = Vec::new();
    for cause in e.chain() {
        parts.push(cause.to_string());
        if cause.is::<ApiError>() {
            break;
        }
    }
    parts.join(": ")
}

/// Prints `e` on stderr as `error: …` (nothing for a closed stdout) and
/// returns its exit code.
pub(crate) fn report(e: &anyhow::Error) -> ExitCode {
    let code = exit_code(e);
    if !e.chain().any(|c| c.is::<StdoutClosed>()) {
        eprintln!("error: {}", one_line(e));
    }
    code.into()
}

#[cfg(test)]
mod tests {
    use reqwest::StatusCode;

    use super::*;

    fn refused(status: StatusCode, code: &str) -> anyhow::Error {
        ApiError::Refused {
            status,
            code: code.to_owned(),
            message: "because".to_owned(),
        }
        .into()
    }

    #[test]
    fn server_refusals_exit_1_and_show_the_code() {
        let e = refused(StatusCode::UNAUTHORIZED, "unauthorized");
        assert_eq!(exit_code(&e), Exit::Refused);
        assert_eq!(one_line(&e), "unauthorized: because");
    }

    #[test]
    fn not_found_exits_4_even_under_context() {
        let e = refused(StatusCode::NOT_FOUND, "not_found").context("session abc");
        assert_eq!(exit_code(&e), Exit::NotFound);
        assert_eq!(one_line(&e), "session abc: not_found: because");
    }

    #[test]
    fn usage_failures_exit_2_and_local_errors_exit_1() {
        assert_eq!(exit_code(&Failure::Usage("x".into()).into()), Exit::Usage);
        assert_eq!(
            exit_code(&Failure::Refused("x".into()).into()),
            Exit::Refused
        );
        let io = anyhow::Error::new(std::io::Error::other("disk full"));
        assert_eq!(exit_code(&io), Exit::Refused);
    }

    #[test]
    fn a_closed_stdout_is_not_an_error() {
        assert_eq!(exit_code(&StdoutClosed.into()), Exit::Done);
    }

    #[test]
    fn exit_codes_are_the_documented_numbers() {
        let codes = [
            Exit::Done,
            Exit::Refused,
            Exit::Usage,
            Exit::Unreachable,
            Exit::NotFound,
        ];
        assert_eq!(codes.map(|c| c as u8), [0, 1, 2, 3, 4]);
    }
}
