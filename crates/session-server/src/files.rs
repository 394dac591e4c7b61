//! The data directory's private files: directories with mode 0700, files
//! with mode 0600, written atomically.

use std::fs;
use std::io::Write as _;
use std::path::Path;

use crate::startup::StartupError;

fn io_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> StartupError + 'a {
    move |source| StartupError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// Creates `dir` and any missing parents with mode 0700 (a directory that
/// exists is left as it is).
pub fn create_private_dir(dir: &Path) -> Result<(), StartupError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .map_err(io_err("cannot create the data directory", dir))
}

/// Makes sure the database file at `path` exists with mode 0600 before a
/// store opens it: SQLite creates its `-wal` and `-shm` files with the
/// database's own mode, so they are private too. An existing file and
/// the companions it has now are narrowed to 0600.
pub fn prepare_private_file(path: &Path) -> Result<(), StartupError> {
    if path.as_os_str() == ":memory:" {
        return Ok(());
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_private_dir(dir)?;
    }
    let mut options = fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let file = options.open(path).map_err(io_err("cannot create", path))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(io_err("cannot chmod", path))?;
        for suffix in ["-wal", "-shm"] {
            let mut companion = path.as_os_str().to_owned();
            companion.push(suffix);
            let companion = std::path::PathBuf::from(companion);
            // SQLite deletes these when its last connection closes, which
            // may be a previous process (or a test's previous server)
            // finishing its shutdown right now: gone is fine.
            match fs::set_permissions(&companion, fs::Permissions::from_mode(0o600)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io_err("cannot chmod", &companion)(e));
                }
                _ => {}
            }
        }
    }
    drop(file);
    Ok(())
}

/// Writes `contents` to `path` with mode 0600, atomically (temp + rename).
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), StartupError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    create_private_dir(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io_err("cannot write", path))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o600))
            .map_err(io_err("cannot chmod", path))?;
    }
    tmp.write_all(contents)
        .map_err(io_err("cannot write", path))?;
    tmp.as_file()
        .sync_all()
        .map_err(io_err("cannot sync", path))?;
    tmp.persist(path).map_err(|e| StartupError::Io {
        what: "cannot write",
        path: path.to_owned(),
        source: e.error,
    })?;
    Ok(())
}
