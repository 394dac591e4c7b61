//! Running commands from the workspace root, echoing them first.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail};

/// The workspace root (the parent of this crate's directory).
pub(crate) fn root() -> &'static Path {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir)
}

/// A `cargo` command run from the workspace root, using the same cargo
/// that runs xtask.
pub(crate) fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.current_dir(root());
    command
}

/// The command as a user would type it (program name without its path).
pub(crate) fn display(command: &Command) -> String {
    let program = Path::new(command.get_program())
        .file_name()
        .unwrap_or(command.get_program())
        .to_string_lossy()
        .into_owned();
    std::iter::once(program)
        .chain(command.get_args().map(quote))
        .collect::<Vec<_>>()
        .join(" ")
}

fn quote(arg: &OsStr) -> String {
    let arg = arg.to_string_lossy();
    if !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_=./:,@+".contains(c))
    {
        arg.into_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// Runs `command` with inherited stdio; an error unless it exits with 0.
pub(crate) fn run(command: &mut Command) -> Result<()> {
    let shown = display(command);
    eprintln!("$ {shown}");
    let status = command
        .status()
        .with_context(|| format!("could not start `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}

/// Runs `command` quietly and returns its stdout; an error unless it exits
/// with 0 (the error carries its stderr).
pub(crate) fn output(command: &mut Command) -> Result<String> {
    let shown = display(command);
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not start `{shown}`"))?;
    if !output.status.success() {
        bail!(
            "`{shown}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    String::from_utf8(output.stdout).with_context(|| format!("`{shown}` printed non-UTF-8"))
}

/// Whether `command` can be started and exits with 0 (output discarded).
pub(crate) fn succeeds(command: &mut Command) -> bool {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// An executable named `name` on `PATH` or in the sbin and bin
/// directories, which are often not on an unprivileged user's `PATH`
/// (nginx lives there); as found, symlinks not resolved (Debian's
/// `redis-server` is a link to `redis-check-rdb`, which picks its role
/// from its name). xtask's one way of finding a program.
pub(crate) fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from));
    first_executable(dirs, name)
}

/// The first `dir/name` that is an executable file.
fn first_executable(dirs: impl IntoIterator<Item = PathBuf>, name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    dirs.into_iter()
        .map(|dir| dir.join(name))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn find_program_finds_executables_only() {
        assert!(find_program("sh").is_some());
        assert_eq!(find_program("no-such-program-in-xtask"), None);

        let plain = tempfile::tempdir().unwrap();
        let runnable = tempfile::tempdir().unwrap();
        std::fs::write(plain.path().join("tool"), "").unwrap();
        std::fs::create_dir(plain.path().join("dir")).unwrap();
        let tool = runnable.path().join("tool");
        std::fs::write(&tool, "").unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        let dirs = || [plain.path().to_owned(), runnable.path().to_owned()];
        assert_eq!(first_executable(dirs(), "tool"), Some(tool));
        assert_eq!(first_executable(dirs(), "dir"), None);
    }
}
