//! Where the signing-key ring lives, and the task that keeps it on
//! schedule.
//!
//! The ring's state (which key is `next`, `active`, `retired`) follows from
//! each key's activation time and the clock, so scheduled steps need no
//! write: every instance reading the same ring agrees. Writes happen only
//! when a key is added (a scheduled or immediate rotation, or the automatic
//! one the clock asks for) or dropped after its retention; each is saved
//! first (a compare-and-set where the ring is shared) and only then loaded.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use session_core::keys::{KeyError, KeyInfo, KeyRing, KeySchedule, RotateError, StoredKeys};
use session_core::sealing::{MasterKey, SealError};
use session_core::service::SessionService;
use session_core::shared::SharedValues;
use session_core::{Actor, Clock, StoreError};

use crate::master::{open_keys, seal_keys};
use crate::startup::StartupError;

/// How often the clock is asked whether a step is due.
pub const TICK: StdDuration = StdDuration::from_secs(1);

/// How many times a change is recomputed after losing a race to another
/// instance's change.
const ATTEMPTS: usize = 5;

/// Why the ring could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RingError {
    /// The ring's home could not be read or written.
    #[error("cannot {what} the signing keys")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A rotation was refused.
    #[error(transparent)]
    Rotate(#[from] RotateError),
    /// Stored keys could not be used.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// Other instances kept changing the ring first.
    #[error("the key ring kept changing under this instance")]
    Contended,
}

impl From<StoreError> for RingError {
    fn from(e: StoreError) -> Self {
        RingError::Io {
            what: "reach",
            source: Box::new(e),
        }
    }
}

/// Where a ring is kept: the data directory, or a store every instance
/// shares.
#[async_trait::async_trait]
pub trait RingHome: Send + Sync + std::fmt::Debug {
    /// The stored ring, if any.
    async fn read(&self) -> Result<Option<StoredKeys>, RingError>;
    /// Saves `doc` unless another writer changed the ring since the version
    /// it was made from (`doc.generation() - 1`); false when one did.
    async fn write(&self, doc: &StoredKeys) -> Result<bool, RingError>;
}

/// The key schedule the settings ask for.
pub fn schedule(settings: &crate::Settings) -> KeySchedule {
    KeySchedule {
        prepublish: settings.key_prepublish,
        rotation: (settings.key_rotation > time::Duration::ZERO).then_some(settings.key_rotation),
        retain: settings.access_token_ttl + session_core::keys::MAX_LEEWAY,
    }
}

/// The JWKS `max-age`: half the prepublish time, at most a minute, so a
/// verifier that caches the key set has fetched a new key before it signs.
pub fn jwks_max_age(schedule: &KeySchedule) -> u64 {
    let half = schedule.prepublish.whole_seconds() / 2;
    u64::try_from(half.clamp(0, 60)).unwrap_or(0)
}

/// How often a ring shared through a store is re-read, so that a change
/// made through another instance is in force here well within a second.
pub const SHARED_POLL: StdDuration = StdDuration::from_millis(200);

/// The ring of this instance and where it lives.
#[derive(Debug)]
pub struct KeyManager {
    ring: Arc<KeyRing>,
    home: Arc<dyn RingHome>,
    clock: Arc<dyn Clock>,
    poll: StdDuration,
    /// Set while the ring's home cannot be read: this instance serves its
    /// last good copy (readiness says so).
    stale: std::sync::atomic::AtomicBool,
}

impl KeyManager {
    /// Wraps a loaded ring and its home, re-read every [`TICK`].
    pub fn new(ring: Arc<KeyRing>, home: Arc<dyn RingHome>, clock: Arc<dyn Clock>) -> Self {
        Self {
            ring,
            home,
            clock,
            poll: TICK,
            stale: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The same, re-read every `poll` (a ring other instances change).
    pub fn polling(mut self, poll: StdDuration) -> Self {
        self.poll = poll;
        self
    }

    /// Whether the last re-read of the ring failed (the last good copy is
    /// in use).
    pub fn is_stale(&self) -> bool {
        self.stale.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The ring.
    pub fn ring(&self) -> &Arc<KeyRing> {
        &self.ring
    }

    /// Reads the ring back from its home and loads it when it changed.
    pub async fn reload(&self) -> Result<(), RingError> {
        if let Some(doc) = self.home.read().await?
            && doc.generation() != self.ring.generation()
        {
            self.ring.load(&doc)?;
        }
        Ok(())
    }

    /// Saves the change `make` computes from the ring as it is, then loads
    /// it; recomputes it from a fresh read when another writer won.
    async fn change<T>(
        &self,
        make: impl Fn(&KeyRing) -> Result<Option<(StoredKeys, T)>, RingError>,
    ) -> Result<Option<T>, RingError> {
        for _ in 0..ATTEMPTS {
            let Some((doc, out)) = make(&self.ring)? else {
                return Ok(None);
            };
            if self.home.write(&doc).await? {
                self.ring.load(&doc)?;
                return Ok(Some(out));
            }
            self.reload().await?;
        }
        Err(RingError::Contended)
    }

    /// A rotation by hand: scheduled (the new key signs after the prepublish
    /// time) or immediate (it signs now and the signing key is revoked).
    pub async fn rotate(&self, immediate: bool) -> Result<KeyInfo, RingError> {
        let now = self.clock.now();
        let info = self
            .change(|ring| {
                let made = if immediate {
                    ring.rotated_now(now)?
                } else {
                    ring.scheduled(now)?
                };
                Ok(Some(made))
            })
            .await?;
        info.ok_or(RingError::Contended)
    }

    /// Does what the clock asks for now; the key it scheduled, if any.
    pub async fn tick(&self) -> Result<Option<KeyInfo>, RingError> {
        let now = self.clock.now();
        Ok(self.change(|ring| Ok(ring.ticked(now)?)).await?.flatten())
    }
}

/// Runs the schedule until the task is aborted: at every poll, re-reads the
/// ring and applies the steps due; an automatic rotation is audited.
pub async fn run_schedule(keys: Arc<KeyManager>, service: Arc<SessionService>) {
    let mut tick = tokio::time::interval(keys.poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = keys.reload().await {
            if !keys.stale.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!(error = %e, "cannot re-read the key ring; keeping the last good copy");
            }
            continue;
        }
        if keys.stale.swap(false, std::sync::atomic::Ordering::Relaxed) {
            tracing::info!("the key ring can be read again");
        }
        match keys.tick().await {
            Ok(Some(info)) => {
                tracing::info!(kid = %info.kid, activates_at = %info.activated_at, "scheduled the next signing key");
                // The key is saved and in force either way; a failed event
                // is logged (and counted) by the service.
                if service
                    .key_rotated(&info, Actor::System, false)
                    .await
                    .is_err()
                {
                    tracing::warn!(kid = %info.kid, "the key_rotated event could not be recorded");
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "key schedule step failed; will retry"),
        }
    }
}

/// The ring in the data directory: `keys.json` (0600), one instance; its
/// private parts sealed under the master key.
#[derive(Debug)]
pub struct FileHome {
    path: std::path::PathBuf,
    master: MasterKey,
}

impl FileHome {
    /// The ring at `path`, sealed under `master`.
    pub fn new(path: std::path::PathBuf, master: MasterKey) -> Self {
        Self { path, master }
    }

    /// Reads and opens the file (synchronously: at start, before the
    /// runtime serves); whether it still held private keys in the clear.
    pub fn read_now(&self) -> Result<Option<(StoredKeys, bool)>, StartupError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StartupError::Io {
                    what: "cannot read",
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let doc: StoredKeys =
            serde_json::from_slice(&bytes).map_err(|e| StartupError::Corrupt {
                path: self.path.clone(),
                source: Box::new(e),
            })?;
        let (doc, legacy) =
            open_keys(&self.master, doc).map_err(|e| crate::master::sealed_error(&self.path, e))?;
        Ok(Some((doc, legacy)))
    }

    /// Seals and writes the file (0600, atomically).
    pub fn write_now(&self, doc: &StoredKeys) -> Result<(), RingError> {
        let sealed = seal_keys(&self.master, doc.clone());
        let json = serde_json::to_vec_pretty(&sealed).map_err(|e| RingError::Io {
            what: "encode",
            source: Box::new(e),
        })?;
        crate::files::write_private(&self.path, &json).map_err(|e| RingError::Io {
            what: "write",
            source: Box::new(e),
        })
    }
}

#[async_trait::async_trait]
impl RingHome for FileHome {
    async fn read(&self) -> Result<Option<StoredKeys>, RingError> {
        self.read_now()
            .map(|d| d.map(|(doc, _)| doc))
            .map_err(|e| RingError::Io {
                what: "read",
                source: Box::new(e),
            })
    }

    async fn write(&self, doc: &StoredKeys) -> Result<bool, RingError> {
        // One instance owns the data directory: nobody else writes.
        self.write_now(doc)?;
        Ok(true)
    }
}

/// The name of the shared ring in a shared store.
pub const SHARED_RING: &str = "keys";
/// The name of the shared token secret in a shared store.
pub const SHARED_TOKEN_SECRET: &str = "token-secret";

/// The ring in a store every instance shares (Redis), sealed under the
/// master key; every change a compare-and-set on the exact value read.
pub struct StoreHome {
    values: Arc<dyn SharedValues>,
    master: MasterKey,
    /// The stored bytes the ring was last read from or written as.
    last: std::sync::Mutex<Option<Vec<u8>>>,
}

impl std::fmt::Debug for StoreHome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreHome")
            .field("master", &self.master)
            .finish_non_exhaustive()
    }
}

impl StoreHome {
    /// The shared ring of `values`, sealed under `master`.
    pub fn new(values: Arc<dyn SharedValues>, master: MasterKey) -> Self {
        Self {
            values,
            master,
            last: std::sync::Mutex::new(None),
        }
    }

    fn remember(&self, bytes: Option<Vec<u8>>) {
        *self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = bytes;
    }

    fn encode(&self, doc: &StoredKeys) -> Result<Vec<u8>, RingError> {
        serde_json::to_vec(&seal_keys(&self.master, doc.clone())).map_err(|e| RingError::Io {
            what: "encode",
            source: Box::new(e),
        })
    }

    /// Stores `doc` as the ring unless one exists; true when this call did.
    pub async fn create(&self, doc: &StoredKeys) -> Result<bool, RingError> {
        let bytes = self.encode(doc)?;
        let created = self.values.create_shared(SHARED_RING, &bytes).await?;
        if created {
            self.remember(Some(bytes));
        }
        Ok(created)
    }
}

#[async_trait::async_trait]
impl RingHome for StoreHome {
    async fn read(&self) -> Result<Option<StoredKeys>, RingError> {
        let Some(bytes) = self.values.get_shared(SHARED_RING).await? else {
            return Ok(None);
        };
        let doc: StoredKeys = serde_json::from_slice(&bytes).map_err(|e| RingError::Io {
            what: "parse",
            source: Box::new(e),
        })?;
        let (doc, _) = open_keys(&self.master, doc).map_err(|e| RingError::Io {
            what: "open",
            source: Box::new(e),
        })?;
        self.remember(Some(bytes));
        Ok(Some(doc))
    }

    async fn write(&self, doc: &StoredKeys) -> Result<bool, RingError> {
        let bytes = self.encode(doc)?;
        let expected = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let written = match expected {
            Some(expected) => {
                self.values
                    .replace_shared(SHARED_RING, &expected, &bytes)
                    .await?
            }
            None => self.values.create_shared(SHARED_RING, &bytes).await?,
        };
        if written {
            self.remember(Some(bytes));
        }
        Ok(written)
    }
}

fn shared_error(name: &str, source: SealError) -> StartupError {
    StartupError::Sealed {
        path: std::path::PathBuf::from(format!("the store's shared {name}")),
        source,
    }
}

fn store_error(what: &'static str, source: StoreError) -> StartupError {
    StartupError::Store { what, source }
}

/// The token secret and the key ring of a deployment on a shared store:
/// read, or created by the first instance (create-once, so two instances
/// starting together use one), sealed under the master key. A wrong master
/// key is refused before anything is written.
pub async fn open_shared(
    values: Arc<dyn SharedValues>,
    settings: &crate::Settings,
    master: &MasterKey,
    clock: Arc<dyn Clock>,
) -> Result<(session_core::TokenSecrets, KeyManager), StartupError> {
    use session_core::TokenSecrets;
    // The ring first: it is what a wrong master key is noticed on.
    let home = StoreHome::new(values.clone(), master.clone());
    let policy = session_core::keys::VerifyPolicy {
        issuer: settings.issuer.clone(),
        audience: settings.audience.clone(),
        leeway: session_core::keys::MAX_LEEWAY,
    };
    let hs = settings.hs256_secret_bytes()?;
    let mut ring = None;
    for _ in 0..ATTEMPTS {
        if let Some((bytes, doc)) = read_shared_ring(&*values).await? {
            let (doc, _) = open_keys(master, doc).map_err(|e| shared_error("key ring", e))?;
            home.remember(Some(bytes));
            let loaded = KeyRing::from_stored(doc, policy.clone(), hs.as_deref())?;
            if loaded.algorithm() != settings.jwt_alg {
                return Err(StartupError::Config(crate::config::ConfigError::Invalid {
                    name: "jwt_alg",
                    message: format!(
                        "the shared key ring holds {} keys; every instance must use the same algorithm",
                        loaded.algorithm()
                    ),
                }));
            }
            ring = Some(loaded);
            break;
        }
        let fresh =
            KeyRing::generate(settings.jwt_alg, policy.clone(), clock.now(), hs.as_deref())?;
        let created = home.create(&fresh.to_stored()).await.map_err(|e| match e {
            RingError::Io { source, .. } => StartupError::Corrupt {
                path: std::path::PathBuf::from("the store's shared key ring"),
                source,
            },
            other => StartupError::Corrupt {
                path: std::path::PathBuf::from("the store's shared key ring"),
                source: Box::new(other),
            },
        })?;
        if created {
            tracing::info!("created the shared key ring");
            ring = Some(fresh);
            break;
        }
    }
    let ring = ring.ok_or_else(|| StartupError::Corrupt {
        path: std::path::PathBuf::from("the store's shared key ring"),
        source: "it kept changing while being created".into(),
    })?;

    let mut secret = None;
    for _ in 0..ATTEMPTS {
        if let Some(bytes) = values
            .get_shared(SHARED_TOKEN_SECRET)
            .await
            .map_err(|e| store_error("shared token secret", e))?
        {
            let text = String::from_utf8_lossy(&bytes);
            let raw = master
                .open(crate::master::TOKEN_SECRET_PURPOSE, &text)
                .map_err(|e| shared_error("token secret", e))?;
            let raw: [u8; 32] = raw
                .as_slice()
                .try_into()
                .map_err(|_| StartupError::Corrupt {
                    path: std::path::PathBuf::from("the store's shared token secret"),
                    source: "not 32 bytes".into(),
                })?;
            secret = Some(TokenSecrets::from_master(&raw));
            break;
        }
        let sealed = master.seal(
            crate::master::TOKEN_SECRET_PURPOSE,
            &TokenSecrets::generate_master(),
        );
        values
            .create_shared(SHARED_TOKEN_SECRET, sealed.as_bytes())
            .await
            .map_err(|e| store_error("shared token secret", e))?;
    }
    let secret = secret.ok_or_else(|| StartupError::Corrupt {
        path: std::path::PathBuf::from("the store's shared token secret"),
        source: "it could not be read back".into(),
    })?;
    let manager = KeyManager::new(
        Arc::new(ring.with_schedule(schedule(settings))),
        Arc::new(home),
        clock,
    )
    .polling(SHARED_POLL);
    Ok((secret, manager))
}

/// The shared ring as stored (its bytes, for a later compare-and-set) and
/// parsed, still sealed; `None` where there is none yet.
async fn read_shared_ring(
    values: &dyn SharedValues,
) -> Result<Option<(Vec<u8>, StoredKeys)>, StartupError> {
    let Some(bytes) = values
        .get_shared(SHARED_RING)
        .await
        .map_err(|e| store_error("shared key ring", e))?
    else {
        return Ok(None);
    };
    let doc = serde_json::from_slice(&bytes).map_err(|e| StartupError::Corrupt {
        path: std::path::PathBuf::from("the store's shared key ring"),
        source: Box::new(e),
    })?;
    Ok(Some((bytes, doc)))
}

/// Re-seals the key ring and the token secret a shared store keeps from
/// master key `old` to `new`, by compare-and-set: both are opened with
/// `old` first, so a wrong old key changes nothing, and a value that
/// changed meanwhile (an instance still running) stops the rewrap. A value
/// already sealed under `new` (a run that stopped half way) is left as it
/// is, so running it again finishes the job. Names the values it
/// re-sealed.
pub async fn rewrap_shared(
    values: &dyn SharedValues,
    old: &MasterKey,
    new: &MasterKey,
) -> Result<Vec<&'static str>, StartupError> {
    let mut writes: Vec<(&'static str, Vec<u8>, Vec<u8>)> = Vec::new();
    if let Some((bytes, doc)) = read_shared_ring(values).await? {
        match open_keys(old, doc.clone()) {
            Ok((doc, _)) => {
                let resealed = serde_json::to_vec(&seal_keys(new, doc)).map_err(|e| {
                    StartupError::Corrupt {
                        path: std::path::PathBuf::from("the store's shared key ring"),
                        source: Box::new(e),
                    }
                })?;
                writes.push((SHARED_RING, bytes, resealed));
            }
            // Re-sealed by an earlier run that stopped half way.
            Err(_) if open_keys(new, doc).is_ok() => {}
            Err(e) => return Err(shared_error("key ring", e)),
        }
    }
    if let Some(bytes) = values
        .get_shared(SHARED_TOKEN_SECRET)
        .await
        .map_err(|e| store_error("shared token secret", e))?
    {
        let text = String::from_utf8_lossy(&bytes).into_owned();
        match old.open(crate::master::TOKEN_SECRET_PURPOSE, &text) {
            Ok(raw) => {
                let resealed = new
                    .seal(crate::master::TOKEN_SECRET_PURPOSE, &raw)
                    .into_bytes();
                writes.push((SHARED_TOKEN_SECRET, bytes, resealed));
            }
            Err(_) if new.open(crate::master::TOKEN_SECRET_PURPOSE, &text).is_ok() => {}
            Err(e) => return Err(shared_error("token secret", e)),
        }
    }
    let mut done = Vec::new();
    for (name, expected, value) in writes {
        let replaced = values
            .replace_shared(name, &expected, &value)
            .await
            .map_err(|e| store_error("shared value", e))?;
        if !replaced {
            return Err(StartupError::Corrupt {
                path: std::path::PathBuf::from(format!("the store's shared {name}")),
                source: "it changed during the rewrap: stop every instance, then run it again"
                    .into(),
            });
        }
        done.push(name);
    }
    Ok(done)
}
