//! The master key: where it comes from, and the server secrets in the data
//! directory that it seals (`token-secret`, the private keys of
//! `keys.json`). Files written before the master key existed hold those in
//! the clear; they are sealed at the first start that reads them.

use std::path::{Path, PathBuf};

use session_core::keys::StoredKeys;
use session_core::sealing::{MasterKey, SealError, is_sealed};

use crate::config::{ConfigError, Settings};
use crate::files::write_private;
use crate::startup::StartupError;

/// What seals the token secret in its file.
pub const TOKEN_SECRET_PURPOSE: &str = "token-secret";

/// What seals a signing key's private part.
pub fn signing_key_purpose(kid: &str) -> String {
    format!("signing-key:{kid}")
}

/// Where the key ring is kept.
pub fn keys_path(settings: &Settings) -> PathBuf {
    settings.data_dir.join("keys.json")
}

/// Where the generated master key is kept (embedded store only).
pub fn generated_path(settings: &Settings) -> PathBuf {
    settings.data_dir.join("master-key")
}

/// Whether the session store is the embedded one (only it may generate a
/// master key: every instance on a shared store must be given the same).
pub fn embedded(settings: &Settings) -> bool {
    settings.store.starts_with("sqlite://")
}

fn invalid(message: impl Into<String>) -> StartupError {
    StartupError::Config(ConfigError::Invalid {
        name: "master_key",
        message: message.into(),
    })
}

/// Reads a master key file (64 hex digits).
pub fn read_file(path: &Path) -> Result<MasterKey, StartupError> {
    let text = std::fs::read_to_string(path).map_err(|source| StartupError::Io {
        what: "cannot read the master key",
        path: path.to_owned(),
        source,
    })?;
    MasterKey::from_hex(&text).map_err(|e| invalid(format!("{}: {e}", path.display())))
}

/// The master key: `master_key`, else `master_key_file`, else (embedded
/// store only) `<data dir>/master-key`, generated at first start.
pub fn master_key(settings: &Settings) -> Result<MasterKey, StartupError> {
    if let Some(hex) = &settings.master_key {
        return MasterKey::from_hex(hex.expose()).map_err(|e| invalid(e.to_string()));
    }
    if let Some(path) = &settings.master_key_file {
        return read_file(path);
    }
    if !embedded(settings) {
        return Err(invalid(
            "a shared store needs SESSION_MASTER_KEY or SESSION_MASTER_KEY_FILE (the same on every instance)",
        ));
    }
    let path = generated_path(settings);
    match std::fs::metadata(&path) {
        Ok(_) => {
            let key = read_file(&path)?;
            tracing::info!(path = %path.display(), id = key.id(), "using the master key file");
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let hex = MasterKey::generate_hex();
            write_private(&path, format!("{}\n", &*hex).as_bytes())?;
            let key = MasterKey::from_hex(&hex).map_err(|e| invalid(e.to_string()))?;
            tracing::info!(
                path = %path.display(), id = key.id(),
                "generated a master key; back it up: without it the signing keys and secrets cannot be read"
            );
            Ok(key)
        }
        Err(source) => Err(StartupError::Io {
            what: "cannot read the master key",
            path,
            source,
        }),
    }
}

/// A value read from a sealed file: the plaintext, and whether the file
/// still held it in the clear (and should be rewritten sealed).
#[derive(Debug)]
pub struct Opened<T> {
    /// The plaintext.
    pub value: T,
    /// Found in the clear.
    pub legacy: bool,
}

/// Opens a sealed text file (`purpose` as associated data); a file that is
/// not sealed is returned as it is, marked legacy.
pub fn open_text(
    master: &MasterKey,
    purpose: &str,
    path: &Path,
    text: &str,
) -> Result<Opened<zeroize::Zeroizing<Vec<u8>>>, StartupError> {
    if !is_sealed(text) {
        return Ok(Opened {
            value: zeroize::Zeroizing::new(text.trim().as_bytes().to_vec()),
            legacy: true,
        });
    }
    master
        .open(purpose, text.trim())
        .map(|value| Opened {
            value,
            legacy: false,
        })
        .map_err(|source| sealed_error(path, source))
}

/// `doc` with every private part sealed under `master`.
pub fn seal_keys(master: &MasterKey, doc: StoredKeys) -> StoredKeys {
    let sealed: Result<StoredKeys, std::convert::Infallible> = doc
        .map_private(|kid, private| Ok(master.seal(&signing_key_purpose(kid), private.as_bytes())));
    match sealed {
        Ok(doc) => doc,
        Err(never) => match never {},
    }
}

/// `doc` with every private part opened; whether some were in the clear.
pub fn open_keys(master: &MasterKey, doc: StoredKeys) -> Result<(StoredKeys, bool), SealError> {
    let mut legacy = false;
    let doc = doc.map_private(|kid, private| {
        if !is_sealed(private) {
            legacy = true;
            return Ok(private.to_owned());
        }
        let plain = master.open(&signing_key_purpose(kid), private)?;
        String::from_utf8(plain.to_vec()).map_err(|_| SealError::Malformed)
    })?;
    Ok((doc, legacy))
}

/// The startup error for a sealed value that does not open.
pub fn sealed_error(path: &Path, source: SealError) -> StartupError {
    StartupError::Sealed {
        path: path.to_owned(),
        source,
    }
}

/// What a rewrap changed.
#[derive(Debug, Default)]
pub struct Rewrapped {
    /// Files sealed anew.
    pub files: Vec<PathBuf>,
}

/// Re-seals every secret of the data directory from the master key in
/// `old_file` to the one in `new_file`: everything is opened first, so a
/// wrong old key changes nothing. Where `<data dir>/master-key` holds the
/// old key, it is replaced by the new one.
pub fn rewrap(
    settings: &Settings,
    old_file: &Path,
    new_file: &Path,
) -> Result<Rewrapped, StartupError> {
    let old = read_file(old_file)?;
    let new = read_file(new_file)?;
    let mut writes: Vec<(PathBuf, Vec<u8>)> = Vec::new();

    let secret_path = settings.data_dir.join("token-secret");
    if let Some(text) = read_text(&secret_path)? {
        let opened = open_text(&old, TOKEN_SECRET_PURPOSE, &secret_path, &text)?;
        let raw = if opened.legacy {
            use base64::Engine as _;
            zeroize::Zeroizing::new(
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(&*opened.value)
                    .map_err(|e| StartupError::Corrupt {
                        path: secret_path.clone(),
                        source: Box::new(e),
                    })?,
            )
        } else {
            opened.value
        };
        writes.push((
            secret_path,
            new.seal(TOKEN_SECRET_PURPOSE, &raw).into_bytes(),
        ));
    }

    let keys_path = keys_path(settings);
    if let Some(text) = read_text(&keys_path)? {
        let doc: session_core::keys::StoredKeys =
            serde_json::from_str(&text).map_err(|e| StartupError::Corrupt {
                path: keys_path.clone(),
                source: Box::new(e),
            })?;
        let (doc, _) = open_keys(&old, doc).map_err(|e| sealed_error(&keys_path, e))?;
        let sealed = seal_keys(&new, doc);
        let json = serde_json::to_vec_pretty(&sealed).map_err(|e| StartupError::Corrupt {
            path: keys_path.clone(),
            source: Box::new(e),
        })?;
        writes.push((keys_path, json));
    }

    let generated = generated_path(settings);
    if generated != new_file
        && let Some(text) = read_text(&generated)?
        && MasterKey::from_hex(&text).is_ok_and(|k| k.id() == old.id())
    {
        let hex = std::fs::read_to_string(new_file).map_err(|source| StartupError::Io {
            what: "cannot read the master key",
            path: new_file.to_owned(),
            source,
        })?;
        writes.push((generated, format!("{}\n", hex.trim()).into_bytes()));
    }

    let mut done = Rewrapped::default();
    for (path, bytes) in writes {
        write_private(&path, &bytes)?;
        done.files.push(path);
    }
    Ok(done)
}

fn read_text(path: &Path) -> Result<Option<String>, StartupError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StartupError::Io {
            what: "cannot read",
            path: path.to_owned(),
            source,
        }),
    }
}
