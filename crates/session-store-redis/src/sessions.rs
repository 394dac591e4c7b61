//! The [`SessionStore`] implementation: sessions encoded by `codec` and
//! written by the compare-and-swap scripts, each user's index and epoch,
//! the login lock behind the session limit, and the DPoP replay set.

use std::time::Duration;

use async_trait::async_trait;
use redis::Value;
use session_core::record::RecordError;
use session_core::store::{MAX_CAS_ATTEMPTS, create_reading_epoch, replace_beside_epoch};
use session_core::{
    GuessedCreate, RevokeReason, Session, SessionId, SessionStore, StoreError, WriteHints,
};
use time::OffsetDateTime;

use crate::error::Unexpected;
use crate::{RedisStore, codec, scripts};

/// How long the sealed grace successor outlives the grace window, so that
/// clock skew between a server and Redis never drops it early.
const GRACE_SKEW_MARGIN: time::Duration = time::Duration::seconds(60);

/// Index entries whose session is gone are dropped once they are this old
/// (younger ones may belong to a create in flight).
const PRUNE_AFTER: time::Duration = time::Duration::minutes(1);

/// How long a user's login lock lives if its holder dies.
const LOCK_TTL: Duration = Duration::from_secs(10);

impl RedisStore {
    /// The stored string of `session`, sealed where the store has a cipher.
    fn encode(&self, session: &Session) -> Result<Vec<u8>, StoreError> {
        codec::encode(session, self.records.as_ref()).map_err(StoreError::unavailable)
    }

    /// Reads the user's session epoch (0 when never moved).
    async fn read_epoch(&self, user_id: &str) -> Result<u64, StoreError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.keys.epoch(user_id));
        let epoch: Option<String> = self.query(&cmd).await?;
        epoch.map_or(Ok(0), |e| parse_epoch(&e))
    }

    /// Undoes a create refused after the fact: nobody was given this
    /// session's tokens, so it is removed as if never created. A failure
    /// leaves a session whose tokens nobody holds (and whose stale epoch no
    /// refresh accepts).
    async fn undo_create(&self, session: &Session) {
        let mut del = redis::cmd("DEL");
        del.arg(self.keys.session(&session.id))
            .arg(self.keys.grace(&session.id));
        let mut zrem = redis::cmd("ZREM");
        zrem.arg(self.keys.index(&session.user_id))
            .arg(session.id.to_string());
        if let Err(e) = self.query::<i64>(&del).await {
            tracing::warn!(error = %e, "could not remove a session refused after its creation");
        }
        if let Err(e) = self.query::<i64>(&zrem).await {
            tracing::debug!(error = %e, "could not unindex a session refused after its creation");
        }
    }

    /// Reads session `id` and its grace successor (one slot, one round trip).
    async fn read(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        let mut cmd = redis::cmd("MGET");
        cmd.arg(self.keys.session(id)).arg(self.keys.grace(id));
        let (value, grace): (Option<Vec<u8>>, Option<Vec<u8>>) = self.query(&cmd).await?;
        let Some(value) = value else { return Ok(None) };
        match codec::decode(*id, &value, grace, self.records.as_ref()) {
            Ok(s) => Ok(Some(s)),
            // The record key is not loaded yet: not an answer, not corrupt.
            Err(codec::DecodeError::Sealed(RecordError::NoKey)) => {
                Err(StoreError::unavailable(RecordError::NoKey))
            }
            Err(e) => Err(StoreError::corrupt(e)),
        }
    }

    /// The compare-and-swap behind every write to an existing session.
    /// `hints.grace_until` (known on the refresh path) bounds how long the
    /// sealed successor is kept; without it, it is kept to the session's
    /// deadline.
    async fn write(
        &self,
        session: &Session,
        expected_version: u64,
        hints: WriteHints,
        read_epoch: bool,
    ) -> Result<(bool, u64), StoreError> {
        let value = self.encode(session)?;
        let deadline = codec::deadline_ms(session.expires_at());
        let (g, g_deadline) = grace_field(session, hints);
        let script = if read_epoch {
            &*scripts::REPLACE_READING_EPOCH
        } else {
            &*scripts::REPLACE
        };
        let mut invocation = script.key(self.keys.session(&session.id));
        invocation.key(self.keys.grace(&session.id));
        if read_epoch {
            invocation.key(self.keys.epoch(&session.user_id));
        }
        invocation
            .arg(expected_version.to_string())
            .arg(value)
            .arg(deadline)
            .arg(g)
            .arg(g_deadline)
            .arg(if session.revoked.is_some() { "1" } else { "0" })
            .arg(self.keys.channel())
            .arg(session.id.to_string());
        let answer = if read_epoch {
            match self.invoke::<(i64, String)>(&invocation).await {
                Ok((written, epoch)) => parse_epoch(&epoch).map(|epoch| (written, epoch)),
                Err(e) => Err(e),
            }
        } else {
            self.invoke::<i64>(&invocation)
                .await
                .map(|written| (written, 0))
        };
        // The copy follows what is stored: the written session, or none
        // when this write lost or its outcome is unknown.
        match answer {
            Ok((1, epoch)) => {
                self.recent.wrote(session);
                Ok((true, epoch))
            }
            Ok((_, epoch)) => {
                self.recent.forget(&session.id);
                Ok((false, epoch))
            }
            Err(e) => {
                self.recent.forget(&session.id);
                Err(e)
            }
        }
    }

    /// A create on a single node: the epoch check, the index entry and the
    /// session in one script (`CREATE_INDEXED`), so nothing can fall
    /// between them and there is nothing to undo. With `exact`, the
    /// session's epoch is a guess that must equal the user's. Answers
    /// whether it was created and the user's epoch.
    async fn create_in_one_step(
        &self,
        session: &Session,
        value: Vec<u8>,
        exact: bool,
    ) -> Result<(bool, u64), StoreError> {
        let (g, g_deadline) = grace_field(session, WriteHints::NONE);
        let (created, epoch): (i64, u64) = self
            .invoke(
                scripts::CREATE_INDEXED
                    .key(self.keys.index(&session.user_id))
                    .key(self.keys.epoch(&session.user_id))
                    .key(self.keys.session(&session.id))
                    .key(self.keys.grace(&session.id))
                    .arg(codec::index_score(session.created_at))
                    .arg(session.id.to_string())
                    .arg(codec::deadline_ms(
                        session.absolute_expires_at.max(session.expires_at()),
                    ))
                    .arg(session.epoch)
                    .arg(value)
                    .arg(codec::deadline_ms(session.expires_at()))
                    .arg(g)
                    .arg(g_deadline)
                    .arg(if exact { "exact" } else { "" }),
            )
            .await?;
        match created {
            1 => {
                self.recent.wrote(session);
                Ok((true, epoch))
            }
            0 => Ok((false, epoch)),
            _ => Err(StoreError::Conflict),
        }
    }

    /// Revokes one session if it is active at `now`, starting from
    /// `snapshot` when the caller has just read it, and re-reading whenever
    /// a concurrent write moves its version.
    async fn revoke_one(
        &self,
        id: &SessionId,
        reason: RevokeReason,
        now: OffsetDateTime,
        owner: Option<&str>,
        mut snapshot: Option<Session>,
    ) -> Result<Option<Session>, StoreError> {
        for _ in 0..MAX_CAS_ATTEMPTS {
            let read = match snapshot.take() {
                Some(s) => Some(s),
                None => self.read(id).await?,
            };
            let Some(mut session) = read else {
                return Ok(None);
            };
            if !session.is_active(now) || owner.is_some_and(|u| u != session.user_id) {
                return Ok(None);
            }
            let expected = session.version;
            session.revoke(reason, now);
            if self
                .write(&session, expected, WriteHints::NONE, false)
                .await?
                .0
            {
                return Ok(Some(session));
            }
        }
        Err(StoreError::Contention)
    }

    /// The sessions the user's index points to (revoked and expired ones
    /// included), oldest first. Entries whose session is gone and that are
    /// older than [`PRUNE_AFTER`] are dropped from the index; younger ones
    /// may belong to a create in flight (which adds the index entry first).
    /// Entries pointing at another user's session are ignored.
    async fn user_sessions(
        &self,
        user_id: &str,
        now: OffsetDateTime,
    ) -> Result<Vec<Session>, StoreError> {
        let index = self.keys.index(user_id);
        let mut cmd = redis::cmd("ZRANGE");
        cmd.arg(&index).arg(0).arg(-1).arg("WITHSCORES");
        let entries: Vec<(String, f64)> = self.query(&cmd).await?;
        let ids: Vec<(SessionId, f64)> = entries
            .into_iter()
            .filter_map(|(m, score)| m.parse().ok().map(|id| (id, score)))
            .collect();
        let reads = futures::future::join_all(ids.iter().map(|(id, _)| self.read(id))).await;
        let prune_before = codec::index_score(now - PRUNE_AFTER) as f64;
        let mut gone = Vec::new();
        let mut out = Vec::new();
        for ((id, score), read) in ids.into_iter().zip(reads) {
            match read? {
                Some(s) if s.user_id == user_id => out.push(s),
                Some(_) => {}
                None if score < prune_before => gone.push(id.to_string()),
                None => {}
            }
        }
        if !gone.is_empty() {
            let mut zrem = redis::cmd("ZREM");
            zrem.arg(&index).arg(gone);
            // Pruning is housekeeping: a failure leaves entries for later.
            if let Err(e) = self.query::<i64>(&zrem).await {
                tracing::debug!(error = %e, "could not prune a user index");
            }
        }
        out.sort_by_key(|s| (s.created_at, s.id.to_string()));
        Ok(out)
    }

    /// Takes the user's limit lock, polling until the command timeout.
    async fn lock_user(&self, user_id: &str) -> Result<String, StoreError> {
        let token = SessionId::generate().to_string();
        let key = self.keys.lock(user_id);
        let start = tokio::time::Instant::now();
        let mut pause = Duration::from_millis(5);
        loop {
            let mut cmd = redis::cmd("SET");
            cmd.arg(&key)
                .arg(&token)
                .arg("NX")
                .arg("PX")
                .arg(u64::try_from(LOCK_TTL.as_millis()).unwrap_or(u64::MAX));
            let got: Option<String> = self.query(&cmd).await?;
            if got.is_some() {
                return Ok(token);
            }
            if start.elapsed() >= self.timeout {
                return Err(StoreError::Contention);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    async fn unlock_user(&self, user_id: &str, token: &str) {
        let unlocked = self
            .invoke::<i64>(scripts::UNLOCK.key(self.keys.lock(user_id)).arg(token))
            .await;
        if let Err(e) = unlocked {
            tracing::warn!(error = %e, "could not release a user's login lock; it expires by itself");
        }
    }

    async fn create_then_evict(
        &self,
        session: &Session,
        max: u32,
        now: OffsetDateTime,
    ) -> Result<Vec<Session>, StoreError> {
        self.create(session).await?;
        let others: Vec<Session> = self
            .user_sessions(&session.user_id, now)
            .await?
            .into_iter()
            .filter(|s| s.id != session.id && s.is_active(now))
            .collect();
        let keep = usize::try_from(max - 1).unwrap_or(usize::MAX);
        let excess = others.len().saturating_sub(keep);
        let mut evicted = Vec::new();
        for old in others.into_iter().take(excess) {
            let id = old.id;
            if let Some(s) = self
                .revoke_one(
                    &id,
                    RevokeReason::SessionLimit,
                    now,
                    Some(&session.user_id),
                    Some(old),
                )
                .await?
            {
                evicted.push(s);
            }
        }
        Ok(evicted)
    }
}

/// A user epoch as Redis keeps it (a decimal string).
fn parse_epoch(epoch: &str) -> Result<u64, StoreError> {
    epoch
        .parse()
        .map_err(|_| StoreError::corrupt(Unexpected("a user epoch that is not a number")))
}

/// The grace successor to store, and until when: the grace window (plus a
/// margin for clock skew between servers and Redis) after the rotation,
/// never past the session's deadline.
fn grace_field(session: &Session, hints: WriteHints) -> (Vec<u8>, i64) {
    let deadline = session.expires_at();
    let Some(sealed) = session.refresh.grace_successor.clone() else {
        return (Vec::new(), codec::deadline_ms(deadline));
    };
    let until = hints
        .grace_until
        .map_or(deadline, |until| (until + GRACE_SKEW_MARGIN).min(deadline));
    (sealed, codec::deadline_ms(until))
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn create(&self, session: &Session) -> Result<(), StoreError> {
        // Sealed before anything is written: a cipher without its key yet
        // refuses here, leaving no index entry behind.
        let value = self.encode(session)?;
        if !self.cluster {
            return match self.create_in_one_step(session, value, false).await? {
                (true, _) => Ok(()),
                (false, _) => Err(StoreError::Superseded),
            };
        }
        // On a cluster the index and epoch live in the user's slot and the
        // session in its own, so the create takes three steps.
        // The index entry first: a session that exists is always in its
        // user's index (revoke_user must find it); an entry whose create
        // then fails is dropped later. The index script refuses a session
        // whose user's epoch has already moved on.
        let indexed: i64 = self
            .invoke(
                scripts::INDEX_ADD
                    .key(self.keys.index(&session.user_id))
                    .key(self.keys.epoch(&session.user_id))
                    .arg(codec::index_score(session.created_at))
                    .arg(session.id.to_string())
                    .arg(codec::deadline_ms(
                        session.absolute_expires_at.max(session.expires_at()),
                    ))
                    .arg(session.epoch),
            )
            .await?;
        if indexed != 1 {
            return Err(StoreError::Superseded);
        }
        let (g, g_deadline) = grace_field(session, WriteHints::NONE);
        let created: i64 = self
            .invoke(
                scripts::CREATE
                    .key(self.keys.session(&session.id))
                    .key(self.keys.grace(&session.id))
                    .arg(value)
                    .arg(codec::deadline_ms(session.expires_at()))
                    .arg(g)
                    .arg(g_deadline),
            )
            .await?;
        if created != 1 {
            return Err(StoreError::Conflict);
        }
        // The session lives in another slot than the epoch, so a revoke-all
        // may have moved the epoch between the index script and the
        // create, and read the index before this session existed. Looking
        // again closes that gap: if the epoch is still the session's here,
        // any later revoke-all finds the session; if not, it is undone.
        let epoch = match self.read_epoch(&session.user_id).await {
            Ok(e) => e,
            Err(e) => {
                self.undo_create(session).await;
                return Err(e);
            }
        };
        if epoch > session.epoch {
            self.undo_create(session).await;
            return Err(StoreError::Superseded);
        }
        self.recent.wrote(session);
        Ok(())
    }

    async fn create_limited(
        &self,
        session: &Session,
        max: u32,
        now: OffsetDateTime,
    ) -> Result<Vec<Session>, StoreError> {
        if max == 0 {
            self.create(session).await?;
            return Ok(Vec::new());
        }
        let token = self.lock_user(&session.user_id).await?;
        let result = self.create_then_evict(session, max, now).await;
        self.unlock_user(&session.user_id, &token).await;
        result
    }

    /// On a single node without a session limit, one script checks the
    /// guess and writes (one round trip); else as the default, a read of
    /// the epoch and then `create_limited`.
    async fn create_at_guessed_epoch(
        &self,
        session: &Session,
        max: u32,
        now: OffsetDateTime,
    ) -> Result<GuessedCreate, StoreError> {
        if self.cluster || max > 0 {
            return create_reading_epoch(self, session, max, now).await;
        }
        let value = self.encode(session)?;
        Ok(match self.create_in_one_step(session, value, true).await? {
            (true, _) => GuessedCreate::Created(Vec::new()),
            (false, epoch) => GuessedCreate::EpochIs(epoch),
        })
    }

    async fn get(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        self.read(id).await
    }

    /// Kept by `write` and `create`: every script write moves the version,
    /// so a compare-and-swap planned on a stale copy loses.
    fn recent(&self, id: &SessionId) -> Option<Session> {
        self.recent.get(id)
    }

    async fn replace(
        &self,
        session: &Session,
        expected_version: u64,
        hints: WriteHints,
    ) -> Result<bool, StoreError> {
        Ok(self.write(session, expected_version, hints, false).await?.0)
    }

    /// On a single node, one script writes and reads the epoch after the
    /// write; on a cluster the epoch lives in another slot, so the two run
    /// side by side (one round trip either way).
    async fn replace_reading_epoch(
        &self,
        session: &Session,
        expected_version: u64,
        hints: WriteHints,
    ) -> Result<(bool, u64), StoreError> {
        if self.cluster {
            return replace_beside_epoch(self, session, expected_version, hints).await;
        }
        self.write(session, expected_version, hints, true).await
    }

    async fn revoke(
        &self,
        id: &SessionId,
        reason: RevokeReason,
        now: OffsetDateTime,
    ) -> Result<Option<Session>, StoreError> {
        self.revoke_one(id, reason, now, None, None).await
    }

    async fn user_epoch(&self, user_id: &str) -> Result<u64, StoreError> {
        self.read_epoch(user_id).await
    }

    /// Moves the user's epoch on (`INCR`) before reading the index: a
    /// create begun before is then refused by the index script, or undone
    /// by its own look at the epoch after creating, or already in the
    /// index and revoked here.
    async fn revoke_user(
        &self,
        user_id: &str,
        reason: RevokeReason,
        now: OffsetDateTime,
    ) -> Result<Vec<Session>, StoreError> {
        let mut incr = redis::cmd("INCR");
        incr.arg(self.keys.epoch(user_id));
        self.query::<i64>(&incr).await?;
        let active: Vec<Session> = self
            .user_sessions(user_id, now)
            .await?
            .into_iter()
            .filter(|s| s.is_active(now))
            .collect();
        let revoked = futures::future::join_all(active.into_iter().map(|s| async move {
            let id = s.id;
            self.revoke_one(&id, reason, now, Some(user_id), Some(s))
                .await
        }))
        .await;
        let mut out = Vec::new();
        for r in revoked {
            out.extend(r?);
        }
        Ok(out)
    }

    async fn list_user(
        &self,
        user_id: &str,
        now: OffsetDateTime,
    ) -> Result<Vec<Session>, StoreError> {
        let mut all = self.user_sessions(user_id, now).await?;
        all.retain(|s| s.is_active(now));
        Ok(all)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.query::<Value>(&redis::cmd("PING")).await.map(|_| ())
    }

    /// `SET key 1 NX PXAT <expires_at>`: one command on one key, so it is
    /// atomic on a single node and on a cluster, and Redis forgets the
    /// proof by itself when it expires (`now` is Redis's own clock).
    async fn remember_dpop_proof(
        &self,
        key: &[u8; 32],
        expires_at: OffsetDateTime,
        _now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.keys.dpop_proof(key))
            .arg(1)
            .arg("NX")
            .arg("PXAT")
            .arg(codec::deadline_ms(expires_at));
        let set: Option<String> = self.query(&cmd).await?;
        Ok(set.is_some())
    }
}
