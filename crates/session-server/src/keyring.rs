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
use session_core::sealing::{MasterKey, SealError, is_sealed};
use session_core::service::SessionService;
use session_core::{Actor, Clock, StoreError};

use crate::state::StartupError;

/// How often the clock is asked whether a step is due.
pub const TICK: StdDuration = StdDuration::from_secs(1);

/// How many times a change is recomputed after losing a race to another
/// instance's change.
const ATTEMPTS: usize = 5;

/// Why the ring could not be read or written.
#[derive(Debug, thiserror::Error)]
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

/// The ring of this instance and where it lives.
#[derive(Debug)]
pub struct KeyManager {
    ring: Arc<KeyRing>,
    home: Arc<dyn RingHome>,
    clock: Arc<dyn Clock>,
}

impl KeyManager {
    /// Wraps a loaded ring and its home.
    pub fn new(ring: Arc<KeyRing>, home: Arc<dyn RingHome>, clock: Arc<dyn Clock>) -> Self {
        Self { ring, home, clock }
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

/// Runs the schedule until the task is aborted: every [`TICK`], re-reads a
/// shared ring and applies the steps due; an automatic rotation is audited.
pub async fn run_schedule(keys: Arc<KeyManager>, service: Arc<SessionService>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = keys.reload().await {
            tracing::warn!(error = %e, "cannot re-read the key ring; keeping the last good copy");
            continue;
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
        crate::state::write_private(&self.path, &json).map_err(|e| RingError::Io {
            what: "write",
            source: Box::new(e),
        })
    }
}

/// `doc` with every private part sealed under `master`.
pub fn seal_keys(master: &MasterKey, doc: StoredKeys) -> StoredKeys {
    let sealed: Result<StoredKeys, std::convert::Infallible> = doc.map_private(|kid, private| {
        Ok(master.seal(&crate::master::signing_key_purpose(kid), private.as_bytes()))
    });
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
        let plain = master.open(&crate::master::signing_key_purpose(kid), private)?;
        String::from_utf8(plain.to_vec()).map_err(|_| SealError::Malformed)
    })?;
    Ok((doc, legacy))
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
