//! The shared state of both routers, and what it is built from: the
//! backends, and the secrets kept in the data directory.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use metrics_exporter_prometheus::PrometheusHandle;
use session_core::keys::{KeyRing, VerifyPolicy};
use session_core::service::{ServiceConfig, ServiceParts, SessionService};
use session_core::{
    AnomalyPolicy, AuditLog, Clock, Lifetimes, RevocationFeed, SessionStore, StoreError,
    TokenSecrets, UserStore,
};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;

use crate::config::Settings;
use crate::files::{create_private_dir, write_private};
use crate::geoip::GeoIp;
use crate::keyring::{FileHome, KeyManager};
use crate::master::keys_path;
use crate::ratelimit::RateLimits;
use crate::startup::StartupError;
use session_axum::{CookieWriter, DpopVerifier, Guard, OriginPolicy, Validator};
use session_core::sealing::MasterKey;

/// A signed head of an audit chain, in the server's own terms: what
/// [`AuditChain`] lists, signs and checks (the composition root converts
/// to and from the log's own type, so nothing else names the log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHead {
    /// The `seq` of the last event it covers.
    pub seq: i64,
    /// That event's chain hash.
    pub head_hash: [u8; 32],
    /// The signature over the log's checkpoint message.
    pub signature: Vec<u8>,
    /// The signing key's id.
    pub kid: String,
    /// When it was written (the database's clock).
    pub at: time::OffsetDateTime,
}

/// The durable outbox in front of the audit log, where it has one.
#[async_trait::async_trait]
pub trait AuditOutbox: Send + Sync {
    /// Events appended (durable) but not yet delivered to the log.
    fn backlog(&self) -> u64;

    /// Waits until every event appended before the call is delivered, or
    /// `timeout` passes; true when delivered.
    async fn flush(&self, timeout: std::time::Duration) -> bool;
}

/// A tamper-evident audit log's chain: verified on demand, signed
/// periodically with the service's signing key.
#[async_trait::async_trait]
pub trait AuditChain: Send + Sync {
    /// Walks the chain, checking every checkpoint's signature against
    /// `keys` (its live keys and its archive) and the `exported` checkpoints
    /// as well; the report as JSON (`intact`, `events`, `broken`…).
    async fn verify(
        &self,
        keys: &KeyRing,
        exported: &[SignedHead],
    ) -> Result<serde_json::Value, StoreError>;
    /// Signs the current head with the key active at `now`; `None` when
    /// the log is empty.
    async fn checkpoint(
        &self,
        keys: &KeyRing,
        now: time::OffsetDateTime,
    ) -> Result<Option<SignedHead>, StoreError>;
    /// Every stored checkpoint, oldest first.
    async fn checkpoints(&self) -> Result<Vec<SignedHead>, StoreError>;
}

/// The stores a server runs on, chosen by the composition root.
#[derive(Clone)]
pub struct Backends {
    /// Sessions.
    pub sessions: Arc<dyn SessionStore>,
    /// Built-in users.
    pub users: Arc<dyn UserStore>,
    /// Audit log.
    pub audit: Arc<dyn AuditLog>,
    /// Cross-instance revocation feed (Redis), if any.
    pub feed: Option<Arc<dyn RevocationFeed>>,
    /// What the session store is (`sqlite`, `redis`, `redis-cluster`).
    pub store_kind: &'static str,
    /// What the audit log is (`sqlite`, `postgres`).
    pub audit_kind: &'static str,
    /// The audit log's outbox, where it has one.
    pub audit_outbox: Option<Arc<dyn AuditOutbox>>,
    /// The audit log's hash chain, where it has one.
    pub audit_chain: Option<Arc<dyn AuditChain>>,
    /// Values every instance shares (key ring, token secret), where the
    /// session store is shared.
    pub shared: Option<Arc<dyn session_core::shared::SharedValues>>,
    /// The cipher the session store seals records with, keyed here once
    /// the token secret is loaded (none for stores that keep records in
    /// the clear, such as the in-memory one).
    pub records: Option<session_core::record::RecordCipher>,
}

impl std::fmt::Debug for Backends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backends")
            .field("store_kind", &self.store_kind)
            .field("audit_kind", &self.audit_kind)
            .finish_non_exhaustive()
    }
}

fn read_or_create(
    path: &Path,
    make: impl FnOnce() -> Vec<u8>,
) -> Result<(Vec<u8>, bool), StartupError> {
    match fs::read(path) {
        Ok(bytes) => Ok((bytes, false)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let bytes = make();
            write_private(path, &bytes)?;
            Ok((bytes, true))
        }
        Err(e) => Err(StartupError::Io {
            what: "cannot read",
            path: path.to_owned(),
            source: e,
        }),
    }
}

/// The admin token: configured, or generated once into
/// `<data dir>/admin-token` (0600). Only the path is ever logged.
pub fn admin_token(settings: &Settings) -> Result<String, StartupError> {
    if let Some(t) = &settings.admin_token {
        return Ok(t.expose().to_owned());
    }
    let path = settings.data_dir.join("admin-token");
    let (bytes, created) = read_or_create(&path, || {
        let raw: [u8; 32] = session_core::secret::random_bytes();
        format!("sat_{}\n", URL_SAFE_NO_PAD.encode(raw)).into_bytes()
    })?;
    if created {
        tracing::info!(path = %path.display(), "generated an admin token");
    } else {
        tracing::info!(path = %path.display(), "using the admin token file");
    }
    let token = String::from_utf8(bytes).map_err(|e| StartupError::Corrupt {
        path: path.clone(),
        source: Box::new(e),
    })?;
    let token = token.trim().to_owned();
    if token.len() < 16 {
        return Err(StartupError::Corrupt {
            path,
            source: "admin token shorter than 16 characters".into(),
        });
    }
    Ok(token)
}

/// The master secret behind refresh-token tags, grace sealing and CSRF
/// tokens: `<data dir>/token-secret` (0600), made at first start, sealed
/// under the master key. A file from before the master key (base64 in the
/// clear) is read, and returned as still to be sealed.
pub fn token_secrets(
    settings: &Settings,
    master: &MasterKey,
) -> Result<(TokenSecrets, Option<Vec<u8>>), StartupError> {
    let path = settings.data_dir.join("token-secret");
    let seal = |raw: &[u8]| {
        master
            .seal(crate::master::TOKEN_SECRET_PURPOSE, raw)
            .into_bytes()
    };
    let (bytes, _) = read_or_create(&path, || seal(&TokenSecrets::generate_master()))?;
    let corrupt = |source: Box<dyn std::error::Error + Send + Sync>| StartupError::Corrupt {
        path: path.clone(),
        source,
    };
    let text = String::from_utf8(bytes).map_err(|e| corrupt(Box::new(e)))?;
    let opened =
        crate::master::open_text(master, crate::master::TOKEN_SECRET_PURPOSE, &path, &text)?;
    let raw: zeroize::Zeroizing<Vec<u8>> = if opened.legacy {
        zeroize::Zeroizing::new(
            URL_SAFE_NO_PAD
                .decode(&*opened.value)
                .map_err(|e| corrupt(Box::new(e)))?,
        )
    } else {
        opened.value
    };
    let master_secret: [u8; 32] = raw
        .as_slice()
        .try_into()
        .map_err(|_| corrupt("token secret is not 32 bytes".into()))?;
    let pending = opened.legacy.then(|| seal(&master_secret));
    Ok((TokenSecrets::from_master(&master_secret), pending))
}

/// The signing keys: `<data dir>/keys.json` (0600, private parts sealed
/// under the master key), made at first start, on the schedule the
/// settings ask for. The last value says whether the file still held
/// private keys in the clear (and should be rewritten sealed).
pub fn key_ring(
    settings: &Settings,
    master: &MasterKey,
    now: time::OffsetDateTime,
) -> Result<(KeyRing, FileHome, bool), StartupError> {
    let path = keys_path(settings);
    let home = FileHome::new(path.clone(), master.clone());
    let policy = VerifyPolicy {
        issuer: settings.issuer.clone(),
        audience: settings.audience.clone(),
        leeway: session_core::keys::MAX_LEEWAY,
    };
    let schedule = crate::keyring::schedule(settings);
    let hs = settings.hs256_secret_bytes()?;
    if let Some((stored, legacy)) = home.read_now()? {
        let ring = KeyRing::from_stored(stored, policy.clone(), hs.as_deref())?;
        if ring.algorithm() == settings.jwt_alg {
            return Ok((ring.with_schedule(schedule), home, legacy));
        }
        tracing::warn!(
            from = %ring.algorithm(), to = %settings.jwt_alg,
            "jwt_alg changed; starting a new key ring (tokens signed before are refused)"
        );
    }
    let ring = KeyRing::generate(settings.jwt_alg, policy, now, hs.as_deref())?;
    home.write_now(&ring.to_stored())
        .map_err(|e| StartupError::Corrupt {
            path: path.clone(),
            source: Box::new(e),
        })?;
    Ok((ring.with_schedule(schedule), home, false))
}

/// Facts about the running server for readiness and status.
#[derive(Clone)]
pub struct ServerInfo {
    /// Session store kind.
    pub store_kind: &'static str,
    /// Audit log kind.
    pub audit_kind: &'static str,
    /// The audit log's outbox (undelivered events), where it has one.
    pub audit_outbox: Option<Arc<dyn AuditOutbox>>,
    /// The audit log's hash chain, where it has one.
    pub audit_chain: Option<Arc<dyn AuditChain>>,
}

impl std::fmt::Debug for ServerInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerInfo")
            .field("store_kind", &self.store_kind)
            .field("audit_kind", &self.audit_kind)
            .finish_non_exhaustive()
    }
}

/// What [`AppState::try_open`] found.
#[derive(Debug)]
pub enum Opened {
    /// Everything is in place: serve.
    Ready(AppState),
    /// The shared store holding the key ring does not answer yet.
    Waiting(Box<Pending>),
}

/// A state that waits for its shared store: the key ring lives there, so
/// until it answers there is nothing to sign or verify with.
pub struct Pending {
    settings: Settings,
    backends: Backends,
    clock: Arc<dyn Clock>,
    master: MasterKey,
    geoip: Option<Arc<GeoIp>>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("store", &self.backends.store_kind)
            .finish_non_exhaustive()
    }
}

impl Pending {
    /// The settings the state will be built with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Re-reads the shared key ring, backing off from 100 ms to 5 s, until
    /// the store answers (the state) or `stop` resolves (`None`). An error
    /// other than an unreachable store (a wrong master key, a corrupt
    /// ring) ends the wait.
    pub async fn wait(
        self,
        stop: impl Future<Output = ()> + Send,
    ) -> Result<Option<AppState>, StartupError> {
        tokio::select! {
            () = stop => Ok(None),
            state = self.wait_until_ready() => state.map(Some),
        }
    }

    async fn wait_until_ready(self) -> Result<AppState, StartupError> {
        let Some(values) = self.backends.shared.clone() else {
            return AppState::build_with(
                self.settings,
                self.backends,
                self.clock,
                None,
                self.geoip,
            );
        };
        let mut pause = std::time::Duration::from_millis(100);
        loop {
            tokio::time::sleep(pause).await;
            match crate::keyring::open_shared(
                values.clone(),
                &self.settings,
                &self.master,
                self.clock.clone(),
            )
            .await
            {
                Err(StartupError::Store {
                    what,
                    source: StoreError::Unavailable(e),
                }) => {
                    pause = (pause * 2).min(std::time::Duration::from_secs(5));
                    tracing::warn!(what, error = %e, ?pause, "the shared store is still unreachable");
                }
                Err(e) => return Err(e),
                Ok(shared) => {
                    tracing::info!("the shared store answers; serving");
                    return AppState::build_with(
                        self.settings,
                        self.backends,
                        self.clock,
                        Some(shared),
                        self.geoip,
                    );
                }
            }
        }
    }
}

/// What every handler sees: one reference-counted [`Shared`], so that the
/// clones axum makes for each request's middleware and extractors cost one
/// atomic increment each.
#[derive(Clone, Debug)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The parts of an [`AppState`].
#[derive(Debug)]
pub struct Shared {
    /// The session service.
    pub service: Arc<SessionService>,
    /// Settings.
    pub settings: Arc<Settings>,
    /// Access-token validation and the request rules around it (token
    /// sources, DPoP, CSRF and origins).
    pub guard: Guard,
    /// The cookies of cookie transport (paths from `SESSION_PUBLIC_URL`).
    pub cookies: CookieWriter,
    /// Rate limits.
    pub limits: Arc<RateLimits>,
    /// SHA-256 of the admin token.
    admin_token_digest: [u8; 32],
    /// Prometheus exposition.
    pub metrics: PrometheusHandle,
    /// Backend facts.
    pub info: ServerInfo,
    /// The signing-key ring and where it lives.
    pub keys: Arc<KeyManager>,
    /// The GeoIP database, where `geoip_db` names one.
    pub geoip: Option<Arc<GeoIp>>,
}

impl Shared {
    /// Where the GeoIP database places `client`'s address, where there is
    /// a database and it knows the address.
    pub fn locate(&self, ip: Option<&str>) -> Option<session_core::Location> {
        self.geoip.as_ref()?.lookup_str(ip?)
    }
}

fn open_geoip(settings: &Settings) -> Result<Option<Arc<GeoIp>>, StartupError> {
    match &settings.geoip_db {
        Some(path) => Ok(Some(Arc::new(GeoIp::open(path)?))),
        None => Ok(None),
    }
}

impl AppState {
    /// Builds the state: loads or makes the secrets in the data directory
    /// and wires the service over `backends`.
    pub fn build(
        settings: Settings,
        backends: Backends,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StartupError> {
        let geoip = open_geoip(&settings)?;
        Self::build_with(settings, backends, clock, None, geoip)
    }

    /// [`AppState::build`], reading the key ring and the token secret from
    /// the shared store where the backends have one (every instance on it
    /// then shares them); else from the data directory. Where the shared
    /// store cannot be reached yet, waits for it (backing off).
    pub async fn open(
        settings: Settings,
        backends: Backends,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StartupError> {
        match Self::try_open(settings, backends, clock).await? {
            Opened::Ready(state) => Ok(state),
            Opened::Waiting(pending) => pending.wait_until_ready().await,
        }
    }

    /// One attempt at [`AppState::open`]: the state, or, where the shared
    /// store that holds the key ring cannot be reached, what is needed to
    /// build it once it can ([`Pending::wait`]). The server listens in the
    /// meantime and answers 503 (contract v1.1, "Starting and failing").
    pub async fn try_open(
        settings: Settings,
        backends: Backends,
        clock: Arc<dyn Clock>,
    ) -> Result<Opened, StartupError> {
        // A missing or malformed master key or GeoIP database is a
        // configuration error: it stops the start now, whatever the store
        // does.
        let geoip = open_geoip(&settings)?;
        let Some(values) = backends.shared.clone() else {
            return Self::build_with(settings, backends, clock, None, geoip).map(Opened::Ready);
        };
        let master = crate::master::master_key(&settings)?;
        match crate::keyring::open_shared(values, &settings, &master, clock.clone()).await {
            Ok(shared) => {
                Self::build_with(settings, backends, clock, Some(shared), geoip).map(Opened::Ready)
            }
            Err(StartupError::Store {
                what,
                source: StoreError::Unavailable(e),
            }) => {
                tracing::warn!(what, error = %e, "the shared store is unreachable; answering 503 until it is back");
                Ok(Opened::Waiting(Box::new(Pending {
                    settings,
                    backends,
                    clock,
                    master,
                    geoip,
                })))
            }
            Err(e) => Err(e),
        }
    }

    fn build_with(
        settings: Settings,
        backends: Backends,
        clock: Arc<dyn Clock>,
        shared: Option<(TokenSecrets, KeyManager)>,
        geoip: Option<Arc<GeoIp>>,
    ) -> Result<Self, StartupError> {
        create_private_dir(&settings.data_dir)?;
        let admin = admin_token(&settings)?;
        let (secrets, key_manager) = match shared {
            Some((secrets, manager)) => (secrets, Arc::new(manager)),
            None => Self::local_keys(&settings, clock.clone())?,
        };
        if let Some(records) = &backends.records {
            records.set_key(&secrets);
        }
        let keys = key_manager.ring().clone();
        let config = ServiceConfig {
            lifetimes: Lifetimes {
                access_token: settings.access_token_ttl,
                idle_timeout: settings.idle_timeout,
                absolute_lifetime: settings.absolute_lifetime,
                refresh_grace: settings.refresh_grace,
                max_sessions_per_user: settings.max_sessions_per_user,
            },
            anomaly: AnomalyPolicy {
                user_agent: settings.anomaly_user_agent,
                ip: settings.anomaly_ip,
                rapid_refresh: settings.anomaly_rapid_refresh,
                rapid_refresh_limit: settings.rapid_refresh_limit,
                rapid_refresh_window: settings.rapid_refresh_window,
                country: settings.anomaly_country,
                travel: settings.anomaly_travel,
                travel_speed_kmh: settings.travel_speed_kmh,
            },
            client_id: settings.client_id.clone(),
        };
        let service = Arc::new(SessionService::new(ServiceParts {
            sessions: backends.sessions.clone(),
            users: backends.users.clone(),
            audit: backends.audit.clone(),
            keys,
            secrets,
            clock,
            config,
        }));
        let validator = Arc::new(Validator::new(
            settings.validation,
            service.clone(),
            backends.feed.is_some(),
        ));
        validator.follow_service();
        if let Some(feed) = backends.feed.clone() {
            validator.follow_feed(feed);
        }
        // The request rules, configured: own origin and DPoP `htu` from the
        // public URL, the allowed origins, server nonces.
        let guard = Guard::new(validator)
            .with_origins(OriginPolicy::new(
                settings.public_url.as_ref(),
                settings.allowed_origins.clone(),
            ))
            .with_dpop(Some(
                DpopVerifier::for_service(&service)
                    .with_public_url(settings.public_url.clone())
                    .with_nonces(settings.dpop_nonce),
            ));
        let limits = Arc::new(RateLimits::new(
            settings.rate_limit_login,
            settings.rate_limit_refresh,
            settings.rate_limit_create,
        ));
        Ok(Self(Arc::new(Shared {
            geoip,
            keys: key_manager,
            service,
            guard,
            cookies: CookieWriter::new(settings.public_url.as_ref()),
            limits,
            admin_token_digest: Sha256::digest(admin.as_bytes()).into(),
            metrics: crate::metrics::handle(),
            info: ServerInfo {
                store_kind: backends.store_kind,
                audit_kind: backends.audit_kind,
                audit_outbox: backends.audit_outbox,
                audit_chain: backends.audit_chain,
            },
            settings: Arc::new(settings),
        })))
    }

    /// The token secret and key ring of the data directory, sealed under
    /// the master key.
    fn local_keys(
        settings: &Settings,
        clock: Arc<dyn Clock>,
    ) -> Result<(TokenSecrets, Arc<KeyManager>), StartupError> {
        let master = crate::master::master_key(settings)?;
        let (secrets, clear_secret) = token_secrets(settings, &master)?;
        let (ring, home, clear_keys) = key_ring(settings, &master, clock.now())?;
        // Everything opened under this master key: only now seal what an
        // older version kept in the clear, so a wrong key changes nothing.
        if let Some(sealed) = clear_secret {
            write_private(&settings.data_dir.join("token-secret"), &sealed)?;
            tracing::info!("sealed the token secret under the master key");
        }
        if clear_keys {
            home.write_now(&ring.to_stored())
                .map_err(|e| StartupError::Corrupt {
                    path: keys_path(settings),
                    source: Box::new(e),
                })?;
            tracing::info!("sealed the signing keys under the master key");
        }
        let manager = KeyManager::new(Arc::new(ring), Arc::new(home), clock);
        Ok((secrets, Arc::new(manager)))
    }

    /// Whether `presented` is the admin token (constant time).
    pub fn is_admin_token(&self, presented: &str) -> bool {
        let d: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        d.ct_eq(&self.admin_token_digest).into()
    }
}
