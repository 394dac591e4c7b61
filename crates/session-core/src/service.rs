//! The `SessionService` facade the server and embedding apps share: every
//! session operation of the contract, each writing its audit events.

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use time::{Duration, OffsetDateTime};

use crate::anomaly::{AnomalyAction, AnomalyPolicy, ClientInfo};
use crate::audit::{Actor, AuditEvent, AuditKind, AuditQuery, details};
use crate::clock::Clock;
use crate::keys::{AccessClaims, KeyError, KeyInfo, KeyRing, TokenError};
use crate::rotation::{NextRefresh, RefreshOutcome, RefreshParams, RefreshStanding};
use crate::secret::{
    CsrfToken, PresentedRefresh, RefreshToken, SessionId, TokenSecrets, random_bytes,
};
use crate::session::{Lifetimes, RevokeReason, Session};
use crate::store::{
    ApplyRefresh as _, AuditLog, GuessedCreate, SessionStore, StoreError, UserStore,
};
use crate::user::{self, User};

/// A signed access token (JWT). Never prints itself.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken(String);

impl AccessToken {
    /// The token text, for the response that issues it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken(<redacted>)")
    }
}

/// Everything a login or refresh hands back to the client.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The session as stored.
    pub session: Session,
    /// The new access token.
    pub access_token: AccessToken,
    /// When it expires.
    pub access_expires_at: OffsetDateTime,
    /// The live refresh token.
    pub refresh_token: RefreshToken,
    /// A CSRF token bound to the session.
    pub csrf_token: CsrfToken,
}

/// Why an operation was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// Unknown user or wrong password (indistinguishable on purpose).
    #[error("invalid credentials")]
    InvalidCredentials,
    /// Not a live refresh token of a live session.
    #[error("invalid refresh token")]
    InvalidRefreshToken,
    /// A rotated-away refresh token came back; the session is now revoked.
    #[error("refresh token reused")]
    RefreshTokenReused,
    /// The session was revoked.
    #[error("session revoked")]
    SessionRevoked,
    /// The session is bound to a DPoP key and the request proved another,
    /// or none.
    #[error("DPoP proof by the session's key required")]
    DpopKeyMismatch,
    /// The record already exists.
    #[error("already exists")]
    Conflict,
    /// The user's sessions were revoked (a password change or revoke-all)
    /// while this session was being opened; nothing was created.
    #[error("the user's sessions were revoked while this one was being opened")]
    Superseded,
    /// A store could not answer.
    #[error(transparent)]
    Store(StoreError),
    /// Signing failed.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// Password hashing failed.
    #[error(transparent)]
    Password(#[from] user::PasswordError),
    /// A task the service ran on the blocking pool (hashing or checking a
    /// password) panicked or was cancelled: a fault of this process, not a
    /// store that cannot answer.
    #[error("a task of the session service failed")]
    Internal(#[from] tokio::task::JoinError),
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict => Self::Conflict,
            StoreError::Superseded => Self::Superseded,
            other => Self::Store(other),
        }
    }
}

/// Service settings beyond keys and stores.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Lifetimes and limits.
    pub lifetimes: Lifetimes,
    /// Anomaly rules.
    pub anomaly: AnomalyPolicy,
    /// The `client_id` claim of every access token (RFC 9068).
    pub client_id: String,
}

/// The `client_id` of access tokens unless configured otherwise.
pub const DEFAULT_CLIENT_ID: &str = "session-server";

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            lifetimes: Lifetimes::default(),
            anomaly: AnomalyPolicy::default(),
            client_id: DEFAULT_CLIENT_ID.to_owned(),
        }
    }
}

/// The parts a service is built from.
#[derive(Debug)]
pub struct ServiceParts {
    /// Sessions.
    pub sessions: Arc<dyn SessionStore>,
    /// Built-in users.
    pub users: Arc<dyn UserStore>,
    /// Audit log.
    pub audit: Arc<dyn AuditLog>,
    /// Signing keys.
    pub keys: Arc<KeyRing>,
    /// Token and CSRF keys.
    pub secrets: TokenSecrets,
    /// Clock.
    pub clock: Arc<dyn Clock>,
    /// Settings.
    pub config: ServiceConfig,
}

/// The session service.
///
/// **Audit.** Every method that changes state records its events before
/// it returns, and fails with [`ServiceError::Store`] (503
/// `store_unavailable`) when the audit log cannot take one: no event is
/// dropped silently. The change the store already applied stands (a
/// revocation is never undone; a rotated refresh token is answered again
/// within the grace window, which records the event on the retry); only
/// the answer becomes a 503. A session whose `session_created` event
/// cannot be recorded is ended at once, since no client holds its tokens.
/// Logs that queue durably (the PostgreSQL outbox) fail only when their
/// queue cannot be written.
#[derive(Debug)]
pub struct SessionService {
    sessions: Arc<dyn SessionStore>,
    users: Arc<dyn UserStore>,
    audit: Arc<dyn AuditLog>,
    keys: Arc<KeyRing>,
    secrets: TokenSecrets,
    clock: Arc<dyn Clock>,
    config: ServiceConfig,
    on_revoke: RevokeHooks,
}

/// The epoch a new session is opened under.
#[derive(Debug, Clone, Copy)]
enum Epoch {
    /// Read by the caller before it authenticated the user: a revoke-all
    /// since then refuses the session.
    Read(u64),
    /// A guess, checked by the store as it writes; when wrong, the session
    /// is opened under the epoch the store answers.
    Guess(u64),
}

#[derive(Default)]
struct RevokeHooks(std::sync::RwLock<Vec<RevokeHook>>);

impl fmt::Debug for RevokeHooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.read().map_or(0, |v| v.len());
        write!(f, "RevokeHooks({n})")
    }
}

/// Called synchronously with every session id this service revokes.
pub type RevokeHook = Arc<dyn Fn(SessionId) + Send + Sync>;

impl SessionService {
    /// Builds the service.
    pub fn new(parts: ServiceParts) -> Self {
        Self {
            sessions: parts.sessions,
            users: parts.users,
            audit: parts.audit,
            keys: parts.keys,
            secrets: parts.secrets,
            clock: parts.clock,
            config: parts.config,
            on_revoke: RevokeHooks::default(),
        }
    }

    /// The clock in use.
    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    /// The settings in use.
    pub fn config(&self) -> &ServiceConfig {
        &self.config
    }

    /// The key ring.
    pub fn keys(&self) -> &Arc<KeyRing> {
        &self.keys
    }

    /// The session store.
    pub fn sessions(&self) -> &Arc<dyn SessionStore> {
        &self.sessions
    }

    /// The audit log.
    pub fn audit_log(&self) -> &Arc<dyn AuditLog> {
        &self.audit
    }

    /// Registers a hook called synchronously, before the revoking call
    /// returns, with every session id this service revokes — so a cache
    /// that registers one can never answer for a session already revoked
    /// by this instance.
    pub fn on_revoke(&self, hook: RevokeHook) {
        self.on_revoke
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(hook);
    }

    /// Appends one audit event. The contract allows no silent loss: an
    /// event is durably recorded (by the log itself, or by a durable queue
    /// such as the PostgreSQL outbox) before the caller answers, or the
    /// caller fails with 503 `store_unavailable`. Any append failure is
    /// therefore a [`ServiceError::Store`], whatever its kind.
    async fn record(&self, event: AuditEvent) -> Result<(), ServiceError> {
        self.audit.append(&event).await.map_err(|e| {
            tracing::error!(error = %e, kind = %event.kind, "audit append failed; the request fails");
            metrics::counter!("session_audit_failures_total").increment(1);
            ServiceError::Store(match e {
                StoreError::Conflict => StoreError::backend(AuditConflict),
                other => other,
            })
        })
    }

    /// Runs the revocation hooks for `s` (always, before any audit write,
    /// so a failing audit log never keeps a revoked session in a cache),
    /// then records its `session_revoked` event.
    async fn revoked_event(
        &self,
        s: &Session,
        reason: RevokeReason,
        actor: Actor,
        client: &ClientInfo,
    ) -> Result<(), ServiceError> {
        self.revoked_event_noted(s, reason, actor, client, None)
            .await
    }

    async fn revoked_event_noted(
        &self,
        s: &Session,
        reason: RevokeReason,
        actor: Actor,
        client: &ClientInfo,
        note: Option<&str>,
    ) -> Result<(), ServiceError> {
        for hook in self
            .on_revoke
            .0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
        {
            hook(s.id);
        }
        metrics::counter!("session_revocations_total", "reason" => reason.as_str()).increment(1);
        let mut event = AuditEvent::new(AuditKind::SessionRevoked, actor, self.now())
            .session(s.id, s.user_id.clone())
            .client(client)
            .reason(reason);
        if let Some(note) = note {
            event = event.with_details(&details::RevocationNote { note });
        }
        self.record(event).await
    }

    fn issue(&self, session: Session, refresh_token: RefreshToken) -> Result<Issued, ServiceError> {
        let now = self.now();
        // Never past the session's deadlines (the absolute one included),
        // so an access token cannot outlive its session (RFC 9068 `exp`).
        let exp = (now + self.config.lifetimes.access_token).min(session.expires_at());
        let jti: [u8; 16] = random_bytes();
        let policy = self.keys.policy();
        let claims = AccessClaims {
            iss: policy.issuer,
            aud: policy.audience,
            sub: session.user_id.clone(),
            sid: session.id.to_string(),
            iat: now.unix_timestamp(),
            exp: exp.unix_timestamp(),
            nbf: None,
            jti: URL_SAFE_NO_PAD.encode(jti),
            client_id: Some(self.config.client_id.clone()),
            auth_time: Some(session.created_at.unix_timestamp()),
            cnf: session
                .dpop_jkt
                .clone()
                .map(|jkt| crate::keys::Confirmation { jkt }),
        };
        let access = self.keys.sign(&claims)?;
        let csrf_token = self.csrf_token(&session);
        Ok(Issued {
            session,
            access_token: AccessToken(access),
            access_expires_at: exp,
            refresh_token,
            csrf_token,
        })
    }

    /// Opens a session for `user_id` (after the caller authenticated the
    /// user). Always a new session id: no fixation. The session is opened
    /// under the user's epoch as the store holds it when the session is
    /// written, so no revoke-all or password change that completed before
    /// it survives in it; one that lands between fixing the epoch and the
    /// write makes this fail with [`ServiceError::Superseded`] (or revokes
    /// the session before this returns).
    ///
    /// The epoch is first guessed to be 0 (a user whose sessions were never
    /// revoked all at once), so that the store can check it in the same step
    /// as the insert; a user whose epoch moved on costs the store one more
    /// step, as a read of the epoch before the create would.
    pub async fn open_session(
        &self,
        user_id: &str,
        metadata: Option<serde_json::Value>,
        client: &ClientInfo,
        actor: Actor,
    ) -> Result<Issued, ServiceError> {
        self.open_session_at(user_id, Epoch::Guess(0), metadata, client, actor)
            .await
    }

    /// [`SessionService::open_session`] under `epoch`: read by the caller
    /// before it authenticated the user, or a guess the store checks.
    async fn open_session_at(
        &self,
        user_id: &str,
        epoch: Epoch,
        metadata: Option<serde_json::Value>,
        client: &ClientInfo,
        actor: Actor,
    ) -> Result<Issued, ServiceError> {
        let now = self.now();
        let id = SessionId::generate();
        let (refresh, presented) = self.secrets.issue_refresh(&id, 0);
        let mut session = Session::new(
            id,
            user_id.to_owned(),
            presented.digest,
            &self.config.lifetimes,
            now,
        );
        session.ip.clone_from(&client.ip);
        session.user_agent.clone_from(&client.user_agent);
        session.dpop_jkt.clone_from(&client.dpop_jkt);
        session.location = client.location.clone().map(|l| l.seen(now));
        if let Some(m) = metadata {
            session.metadata = m;
        }
        let max = self.config.lifetimes.max_sessions_per_user;
        let evicted = match epoch {
            Epoch::Read(epoch) => {
                session.epoch = epoch;
                self.sessions.create_limited(&session, max, now).await?
            }
            Epoch::Guess(guess) => {
                session.epoch = guess;
                match self
                    .sessions
                    .create_at_guessed_epoch(&session, max, now)
                    .await?
                {
                    GuessedCreate::Created(evicted) => evicted,
                    GuessedCreate::EpochIs(current) => {
                        session.epoch = current;
                        self.sessions.create_limited(&session, max, now).await?
                    }
                }
            }
        };
        let mut audit = AuditOutcome::default();
        for old in &evicted {
            audit.note(
                self.revoked_event(old, RevokeReason::SessionLimit, Actor::System, client)
                    .await,
            );
        }
        audit.note(
            self.record(
                AuditEvent::new(AuditKind::SessionCreated, actor, now)
                    .session(id, user_id)
                    .client(client),
            )
            .await,
        );
        if let Err(e) = audit.finish() {
            // Its tokens exist only in the answer we are not sending, so no
            // client holds this session: end it rather than leave a live,
            // unaudited session behind (best effort; it is unusable anyway).
            if let Err(revoke) = self.sessions.revoke(&id, RevokeReason::Logout, now).await {
                tracing::warn!(error = %revoke, "could not end a session whose creation was not audited");
            }
            return Err(e);
        }
        self.issue(session, refresh)
    }

    /// Password login for a built-in user. Unknown user and wrong password
    /// give the same error after the same amount of work.
    ///
    /// The user's session epoch is read before the password hash, so a
    /// password change (or revoke-all) that lands while the hash is being
    /// checked refuses this session, or revokes it if it was created first:
    /// a login with the old password never outlives the change. A refused
    /// login is [`ServiceError::InvalidCredentials`] (the password it
    /// checked is no longer the user's). A password check that does not
    /// finish (its task panicked) is [`ServiceError::Internal`], neither a
    /// failed login nor a success.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        client: &ClientInfo,
    ) -> Result<Issued, ServiceError> {
        let epoch = self.sessions.user_epoch(username).await?;
        let user = self.users.get_user(username).await?;
        let known = user.is_some();
        let hash = user.map_or_else(|| user::dummy_hash().to_owned(), |u| u.password_hash);
        let password = password.to_owned();
        let ok =
            tokio::task::spawn_blocking(move || user::verify_password(&password, &hash)).await?;
        if !(ok && known) {
            let mut event =
                AuditEvent::new(AuditKind::LoginFailed, Actor::User, self.now()).client(client);
            if known {
                event = event.user(username);
            }
            self.record(event.with_details(&details::LoginFailed {
                known_user: known,
                superseded: false,
            }))
            .await?;
            return Err(ServiceError::InvalidCredentials);
        }
        match self
            .open_session_at(username, Epoch::Read(epoch), None, client, Actor::User)
            .await
        {
            Err(ServiceError::Superseded) => {
                self.record(
                    AuditEvent::new(AuditKind::LoginFailed, Actor::User, self.now())
                        .client(client)
                        .user(username)
                        .with_details(&details::LoginFailed {
                            known_user: true,
                            superseded: true,
                        }),
                )
                .await?;
                Err(ServiceError::InvalidCredentials)
            }
            other => other,
        }
    }

    /// Rotates a refresh token (see [`crate::rotation`]).
    pub async fn refresh(&self, token: &str, client: &ClientInfo) -> Result<Issued, ServiceError> {
        let presented = self
            .secrets
            .parse_refresh(token)
            .map_err(|_| ServiceError::InvalidRefreshToken)?;
        let now = self.now();
        let generation = presented
            .generation
            .checked_add(1)
            .ok_or(ServiceError::InvalidRefreshToken)?;
        let (next_token, next) = self
            .secrets
            .issue_refresh(&presented.session_id, generation);
        let grace = self.config.lifetimes.refresh_grace;
        let sealed = (grace > Duration::ZERO).then(|| {
            self.secrets
                .seal_successor(&presented.session_id, &next_token)
        });
        let params = RefreshParams {
            grace,
            idle_timeout: self.config.lifetimes.idle_timeout,
            anomaly: self.config.anomaly,
            client: client.clone(),
        };
        let result = self
            .sessions
            .refresh(
                &presented,
                &NextRefresh {
                    digest: next.digest,
                    sealed,
                },
                &params,
                now,
            )
            .await?;
        // The store has applied the outcome. From here every event is
        // attempted (and the revocation hooks run) even when one append
        // fails; the first failure then turns the answer into a 503.
        let mut audit = AuditOutcome::default();
        if let Some(session) = &result.session {
            for a in &result.anomalies {
                metrics::counter!("session_anomalies_total", "signal" => a.signal.as_str())
                    .increment(1);
                audit.note(
                    self.record(
                        AuditEvent::new(AuditKind::AnomalyDetected, Actor::System, now)
                            .session(session.id, session.user_id.clone())
                            .client(client)
                            .with_details(&details::AnomalyDetected::from(a)),
                    )
                    .await,
                );
            }
        }
        match (result.outcome, result.session) {
            (RefreshOutcome::Rotated, Some(session)) => {
                self.record(
                    AuditEvent::new(AuditKind::SessionRefreshed, Actor::User, now)
                        .session(session.id, session.user_id.clone())
                        .client(client)
                        .with_details(&details::Refreshed {
                            grace_replay: false,
                            generation: session.refresh.generation,
                        }),
                )
                .await?;
                audit.finish()?;
                self.issue(session, next_token)
            }
            (RefreshOutcome::GraceReplay { sealed }, Some(session)) => {
                let successor = self
                    .secrets
                    .unseal_successor(&session.id, &sealed)
                    .ok_or(ServiceError::InvalidRefreshToken)?;
                self.record(
                    AuditEvent::new(AuditKind::SessionRefreshed, Actor::User, now)
                        .session(session.id, session.user_id.clone())
                        .client(client)
                        .with_details(&details::Refreshed {
                            grace_replay: true,
                            generation: session.refresh.generation,
                        }),
                )
                .await?;
                audit.finish()?;
                self.issue(session, successor)
            }
            (RefreshOutcome::Reused, Some(session)) => {
                metrics::counter!("session_reuse_detections_total").increment(1);
                let reused = self
                    .record(
                        AuditEvent::new(AuditKind::RefreshReuseDetected, Actor::System, now)
                            .session(session.id, session.user_id.clone())
                            .client(client)
                            .with_details(&details::ReuseDetected {
                                presented_generation: presented.generation,
                                live_generation: session.refresh.generation,
                            }),
                    )
                    .await;
                audit.note(reused);
                audit.note(
                    self.revoked_event(
                        &session,
                        RevokeReason::ReuseDetected,
                        Actor::System,
                        client,
                    )
                    .await,
                );
                audit.finish()?;
                Err(ServiceError::RefreshTokenReused)
            }
            (RefreshOutcome::AnomalyRevoked, Some(session)) => {
                audit.note(
                    self.revoked_event(&session, RevokeReason::Anomaly, Actor::System, client)
                        .await,
                );
                audit.finish()?;
                Err(ServiceError::SessionRevoked)
            }
            (RefreshOutcome::Revoked, Some(session)) if result.revoked_here => {
                audit.note(
                    self.revoked_event(&session, RevokeReason::RevokeAll, Actor::System, client)
                        .await,
                );
                audit.finish()?;
                Err(ServiceError::SessionRevoked)
            }
            (RefreshOutcome::Revoked, _) => {
                audit.finish()?;
                Err(ServiceError::SessionRevoked)
            }
            (RefreshOutcome::DpopKeyMismatch, _) => {
                audit.finish()?;
                Err(ServiceError::DpopKeyMismatch)
            }
            _ => {
                audit.finish()?;
                Err(ServiceError::InvalidRefreshToken)
            }
        }
    }

    /// The generation of the key ring [`SessionService::verify_access`]
    /// checks against: it moves whenever the ring's keys change (a
    /// rotation, a revoked key), so a cache of verified tokens can tell
    /// that a signature it checked may no longer be accepted.
    pub fn keys_generation(&self) -> u64 {
        self.keys.generation()
    }

    /// Verifies an access token's signature and claims (no store lookup).
    pub fn verify_access(&self, token: &str) -> Result<AccessClaims, TokenError> {
        self.keys.verify(token, self.now())
    }

    /// Whether `csrf` is the CSRF token of `session_id` at refresh
    /// `generation` (the session's live one; a refresh moves it on, so
    /// the previous token is refused from then on).
    pub fn csrf_valid(&self, session_id: &SessionId, generation: u64, csrf: &str) -> bool {
        self.secrets.verify_csrf(session_id, generation, csrf)
    }

    /// The session's CSRF token now (for `GET /v1/session`): the one its
    /// last login or refresh issued.
    pub fn csrf_token(&self, session: &Session) -> CsrfToken {
        self.secrets
            .issue_csrf(&session.id, session.refresh.generation)
    }

    /// The refresh token's session id and generation, if the token is
    /// authentic (no store lookup, no side effect).
    pub fn refresh_token_family(&self, token: &str) -> Option<PresentedRefresh> {
        self.secrets.parse_refresh(token).ok()
    }

    /// The refresh token's session id, if the token is authentic (no store
    /// lookup, no side effect).
    pub fn refresh_token_session(&self, token: &str) -> Option<SessionId> {
        self.secrets.parse_refresh(token).ok().map(|p| p.session_id)
    }

    /// Where a refresh token stands against its active session, by the one
    /// rule refresh itself uses ([`crate::rotation::classify_refresh`]), with
    /// what was presented; `None` when the token is not one this service
    /// issued or its session is not active. Reads the store, changes
    /// nothing.
    pub async fn refresh_standing(
        &self,
        token: &str,
    ) -> Result<Option<(Session, PresentedRefresh, RefreshStanding)>, ServiceError> {
        let Ok(presented) = self.secrets.parse_refresh(token) else {
            return Ok(None);
        };
        let now = self.now();
        let Some(session) = self
            .sessions
            .get(&presented.session_id)
            .await?
            .filter(|s| s.is_active(now))
        else {
            return Ok(None);
        };
        let standing = crate::rotation::classify_refresh(
            &session,
            &presented,
            self.config.lifetimes.refresh_grace,
            now,
        );
        Ok(Some((session, presented, standing)))
    }

    /// The session, while its record lives (revoked ones included).
    pub async fn get(&self, id: &SessionId) -> Result<Option<Session>, ServiceError> {
        Ok(self.sessions.get(id).await?)
    }

    /// The session if it is active now.
    pub async fn get_active(&self, id: &SessionId) -> Result<Option<Session>, ServiceError> {
        let now = self.now();
        Ok(self.sessions.get(id).await?.filter(|s| s.is_active(now)))
    }

    /// The user's active sessions, oldest first.
    pub async fn list(&self, user_id: &str) -> Result<Vec<Session>, ServiceError> {
        Ok(self.sessions.list_user(user_id, self.now()).await?)
    }

    /// Revokes one session; `None` when it was not active.
    pub async fn revoke(
        &self,
        id: &SessionId,
        reason: RevokeReason,
        actor: Actor,
        client: &ClientInfo,
    ) -> Result<Option<Session>, ServiceError> {
        self.revoke_noted(id, reason, actor, client, None).await
    }

    /// [`SessionService::revoke`] with an operator's note kept in the
    /// audit event's details.
    pub async fn revoke_noted(
        &self,
        id: &SessionId,
        reason: RevokeReason,
        actor: Actor,
        client: &ClientInfo,
        note: Option<&str>,
    ) -> Result<Option<Session>, ServiceError> {
        let revoked = self.sessions.revoke(id, reason, self.now()).await?;
        if let Some(s) = &revoked {
            self.revoked_event_noted(s, reason, actor, client, note)
                .await?;
        }
        Ok(revoked)
    }

    /// Revokes all of a user's sessions; returns how many.
    pub async fn revoke_user(
        &self,
        user_id: &str,
        reason: RevokeReason,
        actor: Actor,
        client: &ClientInfo,
    ) -> Result<usize, ServiceError> {
        self.revoke_user_noted(user_id, reason, actor, client, None)
            .await
    }

    /// [`SessionService::revoke_user`] with an operator's note kept in the
    /// audit events' details.
    pub async fn revoke_user_noted(
        &self,
        user_id: &str,
        reason: RevokeReason,
        actor: Actor,
        client: &ClientInfo,
        note: Option<&str>,
    ) -> Result<usize, ServiceError> {
        let mut revoked = self
            .sessions
            .revoke_user(user_id, reason, self.now())
            .await?;
        // A login that read the epoch the first pass moved on may have
        // opened its session while that pass ran. A second pass, right
        // before answering, ends it too: every login answered before this
        // call returns is dead.
        revoked.extend(
            self.sessions
                .revoke_user(user_id, reason, self.now())
                .await?,
        );
        let mut audit = AuditOutcome::default();
        for s in &revoked {
            audit.note(
                self.revoked_event_noted(s, reason, actor, client, note)
                    .await,
            );
        }
        audit.finish()?;
        Ok(revoked.len())
    }

    /// Adds a built-in user.
    pub async fn create_user(&self, username: &str, password: &str) -> Result<(), ServiceError> {
        let hash = hash_blocking(password).await?;
        let user = User {
            username: username.to_owned(),
            password_hash: hash,
            created_at: self.now(),
        };
        Ok(self.users.create_user(&user).await?)
    }

    /// Removes a built-in user and revokes its sessions; false if unknown.
    pub async fn delete_user(
        &self,
        username: &str,
        client: &ClientInfo,
    ) -> Result<bool, ServiceError> {
        if !self.users.delete_user(username).await? {
            return Ok(false);
        }
        self.revoke_user(username, RevokeReason::Admin, Actor::Admin, client)
            .await?;
        Ok(true)
    }

    /// Sets a new password and revokes all the user's sessions; `None`
    /// when there is no such user, else how many sessions were revoked.
    pub async fn set_password(
        &self,
        username: &str,
        password: &str,
        client: &ClientInfo,
    ) -> Result<Option<usize>, ServiceError> {
        let hash = hash_blocking(password).await?;
        if !self.users.set_password(username, &hash).await? {
            return Ok(None);
        }
        let changed = self
            .record(
                AuditEvent::new(AuditKind::PasswordChanged, Actor::Admin, self.now())
                    .user(username)
                    .client(client),
            )
            .await;
        // The sessions go whether or not the event above was recorded: a
        // failing audit log must never leave old sessions alive.
        let n = self
            .revoke_user(
                username,
                RevokeReason::PasswordChanged,
                Actor::Admin,
                client,
            )
            .await?;
        changed?;
        Ok(Some(n))
    }

    /// Records a key rotation that was saved and loaded into the ring (the
    /// caller keeps the ring where it lives: a file, a shared store):
    /// `key_rotated` with the new key's id, algorithm, activation time and
    /// whether it was immediate.
    pub async fn key_rotated(
        &self,
        info: &KeyInfo,
        actor: Actor,
        immediate: bool,
    ) -> Result<(), ServiceError> {
        self.record(
            AuditEvent::new(AuditKind::KeyRotated, actor, self.now()).with_details(
                &details::KeyRotated {
                    kid: &info.kid,
                    alg: info.alg.to_string(),
                    activated_at: info
                        .activated_at
                        .format(&time::format_description::well_known::Rfc3339)
                        .ok(),
                    immediate,
                },
            ),
        )
        .await
    }

    /// Audit events, newest first.
    pub async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, ServiceError> {
        Ok(self.audit.query(query).await?)
    }

    /// Whether every store answers.
    pub async fn ready(&self) -> Result<(), StoreError> {
        self.sessions.ping().await?;
        self.audit.ping().await
    }
}

/// An append that hit an id already stored: the log promises this is a
/// no-op, so a log answering `Conflict` is misbehaving.
#[derive(Debug, thiserror::Error)]
#[error("the audit log refused an event as a duplicate")]
struct AuditConflict;

/// The first failure among several audit appends, so that one failure
/// skips neither the others nor the revocation hooks.
#[derive(Debug, Default)]
struct AuditOutcome(Option<ServiceError>);

impl AuditOutcome {
    fn note(&mut self, result: Result<(), ServiceError>) {
        if let Err(e) = result {
            self.0.get_or_insert(e);
        }
    }

    fn finish(self) -> Result<(), ServiceError> {
        self.0.map_or(Ok(()), Err)
    }
}

async fn hash_blocking(password: &str) -> Result<String, ServiceError> {
    let password = password.to_owned();
    Ok(tokio::task::spawn_blocking(move || user::hash_password(&password)).await??)
}

/// Whether an anomaly action revokes (for callers that report policies).
pub fn revokes(action: AnomalyAction) -> bool {
    action == AnomalyAction::Revoke
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // reason: tests

    use std::error::Error as _;

    use super::*;

    #[tokio::test]
    async fn a_task_that_did_not_finish_is_an_internal_error_not_a_store_outage() {
        let task = tokio::spawn(std::future::pending::<()>());
        task.abort();
        let e = ServiceError::from(task.await.unwrap_err());
        assert!(matches!(e, ServiceError::Internal(_)), "{e:?}");
        assert!(
            e.source()
                .is_some_and(|s| s.to_string().contains("cancelled")),
            "the task's error is kept as the source: {e:?}"
        );
    }
}
