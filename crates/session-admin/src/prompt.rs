//! Questions to the operator: confirmations and new passwords.

use std::io::{BufRead, IsTerminal, Read, Write};

use zeroize::Zeroizing;

use crate::error::Failure;

/// Refuses (a usage error) when stdin is not a terminal, so that nobody
/// is asked a question no one can answer; `what` says what was refused.
pub(crate) fn require_terminal(what: &str) -> Result<(), Failure> {
    if std::io::stdin().is_terminal() {
        Ok(())
    } else {
        Err(Failure::Usage(format!(
            "refusing to {what} without --yes: stdin is not a terminal"
        )))
    }
}

/// Asks `question` on stderr and reads the answer from stdin (see
/// [`require_terminal`]). `Ok(true)` only for `y` or `yes`.
pub(crate) fn confirm(question: &str) -> anyhow::Result<bool> {
    let mut stderr = std::io::stderr().lock();
    write!(stderr, "{question} [y/N] ")?;
    stderr.flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(is_yes(&answer))
}

fn is_yes(answer: &str) -> bool {
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

/// A new password for `user`: prompted twice without echo when stdin is a
/// terminal (and `from_stdin` is not set), else one line of stdin.
pub(crate) fn new_password(user: &str, from_stdin: bool) -> anyhow::Result<Zeroizing<String>> {
    let password = if from_stdin || !std::io::stdin().is_terminal() {
        let mut raw = Zeroizing::new(String::new());
        std::io::stdin()
            .lock()
            .read_to_string(&mut raw)
            .map_err(|e| Failure::Usage(format!("cannot read the password from stdin: {e}")))?;
        one_line(&raw)?
    } else {
        let first = Zeroizing::new(rpassword::prompt_password(format!(
            "New password for {user}: "
        ))?);
        let second = Zeroizing::new(rpassword::prompt_password("Repeat it: ")?);
        if *first != *second {
            return Err(
                Failure::Usage("the two passwords differ; nothing was changed".to_owned()).into(),
            );
        }
        first
    };
    if password.is_empty() {
        return Err(Failure::Usage("the password is empty; nothing was changed".to_owned()).into());
    }
    Ok(password)
}

/// `raw` without its one trailing line break; more than one line is refused
/// (a file of several lines is more likely a mistake than a password).
fn one_line(raw: &str) -> Result<Zeroizing<String>, Failure> {
    let line = raw.strip_suffix('\n').unwrap_or(raw);
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.contains('\n') {
        return Err(Failure::Usage(
            "the password from stdin must be a single line".to_owned(),
        ));
    }
    Ok(Zeroizing::new(line.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_yes_confirms() {
        for yes in ["y\n", "YES\n", " yes \r\n"] {
            assert!(is_yes(yes), "{yes:?}");
        }
        for no in ["\n", "n\n", "yess\n", "ok\n", ""] {
            assert!(!is_yes(no), "{no:?}");
        }
    }

    #[test]
    fn a_password_from_stdin_loses_only_its_line_break() {
        assert_eq!(*one_line("s3cret pass\n").unwrap(), "s3cret pass");
        assert_eq!(*one_line("s3cret\r\n").unwrap(), "s3cret");
        assert_eq!(*one_line(" padded ").unwrap(), " padded ");
        assert!(one_line("one\ntwo\n").is_err());
    }
}
