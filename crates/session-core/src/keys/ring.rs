//! The key ring: keys ordered by activation, each one's `next` → `active`
//! → `retired` state derived from the activation times and the clock,
//! signing, verification, and changes returned as the next stored document.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use super::material::{
    Key, KeyError, Material, MaterialError, SigningAlgorithm, configured_secret, whole_seconds,
};
use super::stored::{
    Archived, STORED_KEYS_VERSION, StoredArchived, StoredKey, StoredKeys, insert_sorted,
    parse_stored, stored_algorithm,
};
use super::token::{
    AccessClaims, MAX_ACCESS_TOKEN_LEN, MAX_LEEWAY, MAX_SIGNATURE_BYTES, TokenError, VerifyPolicy,
    check_signature, verify_strictly,
};

/// Why a rotation was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RotateError {
    /// A scheduled rotation while a `next` key is already pending.
    #[error("a next key is already scheduled")]
    Pending,
    /// HS256: the secret comes from configuration; keys do not rotate.
    #[error("HS256 keys come from configuration and do not rotate")]
    NotSupported,
    /// The new key could not be made.
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// Lifecycle of a key: `next` (published, not signing yet) → `active`
/// (signs) → `retired` (verifies the tokens it signed until they have all
/// expired). A key's state is a function of its activation time, its
/// successor's and the clock, so every instance reading the same ring
/// agrees on it without a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    /// In the JWKS, signs from its activation time on.
    Next,
    /// Signs new tokens.
    Active,
    /// Verifies tokens it signed until they have all expired.
    Retired,
}

/// When keys change: how long a new key is published before it signs, how
/// often keys rotate by themselves, and how long a retired key keeps
/// verifying (the access-token lifetime plus the largest leeway).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySchedule {
    /// A new key is in the JWKS at least this long before it signs.
    pub prepublish: Duration,
    /// Automatic rotation period; `None`: only by hand.
    pub rotation: Option<Duration>,
    /// A retired key verifies for this long after its retirement.
    pub retain: Duration,
}

impl Default for KeySchedule {
    fn default() -> Self {
        Self {
            prepublish: Duration::minutes(15),
            rotation: Some(Duration::days(30)),
            retain: Duration::minutes(15) + MAX_LEEWAY,
        }
    }
}

/// Public facts about one key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyInfo {
    /// Key id.
    pub kid: String,
    /// Algorithm.
    pub alg: SigningAlgorithm,
    /// Next, active or retired.
    pub state: KeyState,
    /// Created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it was (or will be) activated: signs from then on.
    #[serde(with = "time::serde::rfc3339")]
    pub activated_at: OffsetDateTime,
    /// When it was (or, with a successor scheduled, will be) retired.
    #[serde(with = "time::serde::rfc3339::option")]
    pub retired_at: Option<OffsetDateTime>,
    /// Kept for verification until (retired keys).
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// Public JWK (none for HS256).
    pub public_jwk: Option<serde_json::Value>,
}

/// Public facts about a key dropped from the ring and kept in its archive
/// (see [`KeyRing::archived`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArchivedKeyInfo {
    /// Key id.
    pub kid: String,
    /// Algorithm.
    pub alg: SigningAlgorithm,
    /// When it began to sign.
    #[serde(with = "time::serde::rfc3339")]
    pub activated_at: OffsetDateTime,
    /// When it left the ring (and its private half was destroyed).
    #[serde(with = "time::serde::rfc3339")]
    pub dropped_at: OffsetDateTime,
    /// When it was revoked, if it was (a suspected compromise): what it
    /// signed after this instant proves nothing.
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    /// Public JWK.
    pub public_jwk: serde_json::Value,
}

/// Why [`KeyRing::verify_detached`] refused a signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DetachedError {
    /// No key of the ring, live or archived, has this id.
    #[error("no key of the ring, live or archived, has this id")]
    UnknownKey,
    /// The key is known and the signature does not verify under it.
    #[error("the signature does not verify")]
    BadSignature,
}

impl Key {
    /// Public facts about the key in `phase`.
    fn info(&self, phase: Phase) -> KeyInfo {
        KeyInfo {
            kid: self.kid.clone(),
            alg: self.alg,
            state: phase.state,
            created_at: self.created_at,
            activated_at: self.activates_at,
            retired_at: phase.retired_at,
            expires_at: phase.expires_at,
            public_jwk: self.public_jwk.clone(),
        }
    }
}

/// Where a key stands at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Phase {
    state: KeyState,
    retired_at: Option<OffsetDateTime>,
    expires_at: Option<OffsetDateTime>,
}

impl Phase {
    /// Whether tokens under the key are accepted: a next key's too, so an
    /// instance whose clock is a moment behind another's still accepts the
    /// tokens the other signs right after an activation.
    fn verifies(&self, now: OffsetDateTime) -> bool {
        match self.state {
            KeyState::Next | KeyState::Active => true,
            KeyState::Retired => self.expires_at.is_some_and(|e| now < e),
        }
    }
}

/// The phase of every key of `keys` (kept sorted by activation) at `now`.
fn phases(keys: &[Key], now: OffsetDateTime, retain: Duration) -> Vec<Phase> {
    (0..keys.len())
        .map(|i| phase_of(keys, i, now, retain))
        .collect()
}

/// The phase of `keys[i]` at `now`: its successor is the next key in
/// activation order that was not revoked.
fn phase_of(keys: &[Key], i: usize, now: OffsetDateTime, retain: Duration) -> Phase {
    let key = &keys[i];
    if let Some(at) = key.revoked_at {
        return Phase {
            state: KeyState::Retired,
            retired_at: Some(at),
            expires_at: Some(at),
        };
    }
    let successor = keys[i + 1..]
        .iter()
        .find(|k| k.revoked_at.is_none())
        .map(|k| k.activates_at);
    if key.activates_at > now {
        return Phase {
            state: KeyState::Next,
            retired_at: successor,
            expires_at: None,
        };
    }
    match successor {
        Some(s) if s <= now => Phase {
            state: KeyState::Retired,
            retired_at: Some(s),
            expires_at: Some(s + retain),
        },
        _ => Phase {
            state: KeyState::Active,
            retired_at: successor,
            expires_at: None,
        },
    }
}

/// The index of the key that signs at `now`: the last live key activated
/// by then.
fn active_index(keys: &[Key], now: OffsetDateTime) -> Option<usize> {
    keys.iter()
        .rposition(|k| k.revoked_at.is_none() && k.activates_at <= now)
}

/// The signing and verification keys of the service: keys ordered by
/// activation time. At any instant the last key activated signs; later
/// ones are `next` (published, not signing); earlier ones are retired and
/// verify the tokens they signed until those have expired.
///
/// All methods take `&self`; a [`RwLock`] inside lets verification run in
/// parallel with the rare change. Changes are made the way a shared store
/// needs them: [`KeyRing::scheduled`], [`KeyRing::rotated_now`] and
/// [`KeyRing::ticked`] return the next [`StoredKeys`] without touching the
/// ring; the caller saves it (a file, a compare-and-set in a store) and then
/// [`KeyRing::load`]s it. `Debug` shows key ids and times only.
pub struct KeyRing {
    alg: SigningAlgorithm,
    policy: VerifyPolicy,
    schedule: KeySchedule,
    leeway_secs: i64,
    /// The HS256 secret from configuration, reused on rotation.
    configured_secret: Option<Material>,
    keys: RwLock<Keys>,
    /// The latest instant (unix seconds) the ring was told of.
    observed: AtomicI64,
}

/// The keys, sorted by activation, and the version of the stored document
/// they were read from.
pub(super) struct Keys {
    pub(super) generation: u64,
    pub(super) list: Vec<Key>,
    /// Keys dropped from `list`, public halves only, oldest first.
    pub(super) archive: Vec<Archived>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = self.read();
        f.debug_struct("KeyRing")
            .field("alg", &self.alg)
            .field("policy", &self.policy)
            .field("schedule", &self.schedule)
            .field("configured_secret", &self.configured_secret.is_some())
            .field("generation", &keys.generation)
            .field("keys", &keys.list)
            .finish()
    }
}

impl KeyRing {
    /// A new ring with one fresh key of `alg`, active from `now`.
    ///
    /// HS256 uses `hs256_secret` (at least 32 bytes, else
    /// [`KeyError::WeakSecret`]) or 32 random bytes when `None`; the other
    /// algorithms ignore it. The policy's leeway is clamped to
    /// `0..=`[`MAX_LEEWAY`]. The schedule is the default one until
    /// [`KeyRing::with_schedule`].
    pub fn generate(
        alg: SigningAlgorithm,
        policy: VerifyPolicy,
        now: OffsetDateTime,
        hs256_secret: Option<&[u8]>,
    ) -> Result<KeyRing, KeyError> {
        let secret = configured_secret(alg, hs256_secret)?;
        let key = Key::generate(alg, now, secret.as_ref().map(|m| m.0.as_slice()))?;
        let keys = Keys {
            generation: 1,
            list: vec![key],
            archive: Vec::new(),
        };
        Ok(Self::assemble(alg, policy, secret, keys))
    }

    /// The same ring under another schedule.
    pub fn with_schedule(mut self, schedule: KeySchedule) -> Self {
        self.schedule = schedule;
        self
    }

    /// The schedule in force.
    pub fn schedule(&self) -> KeySchedule {
        self.schedule
    }

    fn assemble(
        alg: SigningAlgorithm,
        mut policy: VerifyPolicy,
        configured_secret: Option<Material>,
        keys: Keys,
    ) -> Self {
        policy.leeway = policy.leeway.clamp(Duration::ZERO, MAX_LEEWAY);
        let observed = keys
            .list
            .iter()
            .map(|k| k.created_at.unix_timestamp())
            .max()
            .unwrap_or(0);
        Self {
            observed: AtomicI64::new(observed),
            alg,
            leeway_secs: policy.leeway.whole_seconds(),
            policy,
            schedule: KeySchedule::default(),
            configured_secret,
            keys: RwLock::new(keys),
        }
    }

    pub(super) fn read(&self) -> RwLockReadGuard<'_, Keys> {
        // Every write replaces the whole list at once, so a poisoned lock
        // never holds a half-edited one and is still sound to read.
        self.keys.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Keys> {
        self.keys.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The ring's keys, private material included, for persisting.
    pub fn to_stored(&self) -> StoredKeys {
        let keys = self.read();
        StoredKeys {
            version: STORED_KEYS_VERSION,
            generation: keys.generation,
            keys: keys.list.iter().map(Key::stored).collect(),
            archive: keys.archive.iter().map(|a| a.stored.clone()).collect(),
        }
    }

    /// Rebuilds a ring from [`KeyRing::to_stored`] output (or a version 1
    /// file, whose keys were active from their creation).
    ///
    /// When the ring is HS256 and `hs256_secret` is given, the configured
    /// secret replaces the stored one (configuration wins). Refuses a
    /// document without a key that can sign, with mixed algorithms,
    /// duplicate or malformed key ids, or unreadable material.
    pub fn from_stored(
        stored: StoredKeys,
        policy: VerifyPolicy,
        hs256_secret: Option<&[u8]>,
    ) -> Result<KeyRing, KeyError> {
        let alg = stored_algorithm(&stored)?;
        let secret = configured_secret(alg, hs256_secret)?;
        let keys = parse_stored(&stored, alg, secret.as_ref())?;
        Ok(Self::assemble(alg, policy, secret, keys))
    }

    /// Replaces the ring's keys by `stored` (a newer document read back
    /// from where the ring is kept). Nothing changes when it is refused.
    pub fn load(&self, stored: &StoredKeys) -> Result<(), KeyError> {
        let alg = stored_algorithm(stored)?;
        if alg != self.alg {
            return Err(MaterialError::MixedAlgorithms(String::new(), alg, self.alg).into());
        }
        *self.write() = parse_stored(stored, alg, self.configured_secret.as_ref())?;
        Ok(())
    }

    /// The generation of the document the ring was last loaded from.
    pub fn generation(&self) -> u64 {
        self.read().generation
    }

    /// The algorithm every key of the ring uses.
    pub fn algorithm(&self) -> SigningAlgorithm {
        self.alg
    }

    /// What [`KeyRing::verify`] accepts (leeway already clamped).
    pub fn policy(&self) -> VerifyPolicy {
        self.policy.clone()
    }

    /// Signs `claims` with the key active at their `iat`. The header is
    /// exactly `{"alg": <alg>, "typ": "at+jwt", "kid": <that key's id>}`.
    pub fn sign(&self, claims: &AccessClaims) -> Result<String, KeyError> {
        let payload = serde_json::to_vec(claims).map_err(|e| KeyError::Sign(Box::new(e)))?;
        let at = OffsetDateTime::from_unix_timestamp(claims.iat)
            .map_err(|e| KeyError::Sign(Box::new(e)))?;
        self.observed.fetch_max(claims.iat, Ordering::Relaxed);
        let keys = self.read();
        let key = active_index(&keys.list, at)
            .map(|i| &keys.list[i])
            .ok_or_else(|| KeyError::Sign("the ring has no active key".into()))?;
        let mut token = String::with_capacity(
            key.header_b64.len() + payload.len() * 4 / 3 + 4 + MAX_SIGNATURE_BYTES * 4 / 3 + 4,
        );
        token.push_str(&key.header_b64);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&payload, &mut token);
        let signature = key.sign(token.as_bytes())?;
        token.push('.');
        token.push_str(&signature);
        if token.len() > MAX_ACCESS_TOKEN_LEN {
            return Err(KeyError::Sign(
                "token would exceed the longest accepted length".into(),
            ));
        }
        Ok(token)
    }

    /// Signs arbitrary bytes with the key active at `now` (for audit-chain
    /// checkpoints): the key id and the base64url signature, as a JWS
    /// signature over `message` would be.
    pub fn sign_detached_at(
        &self,
        message: &[u8],
        now: OffsetDateTime,
    ) -> Result<(String, String), KeyError> {
        let keys = self.read();
        let key = active_index(&keys.list, now)
            .map(|i| &keys.list[i])
            .ok_or_else(|| KeyError::Sign("the ring has no active key".into()))?;
        Ok((key.kid.clone(), key.sign(message)?))
    }

    /// [`KeyRing::sign_detached_at`] at the latest instant the ring has
    /// seen (a token's `iat`, a [`KeyRing::ticked`] call), so that it
    /// never signs with a `next` key.
    pub fn sign_detached(&self, message: &[u8]) -> Result<(String, String), KeyError> {
        let at = OffsetDateTime::from_unix_timestamp(self.observed.load(Ordering::Relaxed))
            .map_err(|e| KeyError::Sign(Box::new(e)))?;
        self.sign_detached_at(message, at)
    }

    /// Verifies an access token strictly and returns its claims.
    ///
    /// In order: length; three segments of unpadded base64url; a header
    /// whose `alg` is exactly the ring's, whose `typ` is `at+jwt`, with none
    /// of `jku`, `x5u`, `jwk`, `x5c`, `crit`, and a well-formed `kid` of a
    /// key still valid at `now`; the signature; then the claims, with time
    /// checked against `now` and the policy's leeway. Duplicate keys in
    /// header or claims are refused.
    pub fn verify(&self, token: &str, now: OffsetDateTime) -> Result<AccessClaims, TokenError> {
        verify_strictly(
            token,
            now,
            self.alg,
            &self.policy,
            self.leeway_secs,
            |kid, signed, signature_b64| {
                let keys = self.read();
                let key = keys
                    .list
                    .iter()
                    .position(|k| k.kid == kid)
                    .filter(|&i| phase_of(&keys.list, i, now, self.schedule.retain).verifies(now))
                    .map(|i| &keys.list[i])
                    .ok_or(TokenError::UnknownKey)?;
                check_signature(signed, signature_b64, &key.decoding, self.alg)
            },
        )
    }

    /// The document after a scheduled rotation: a new key, published now,
    /// that signs from `now + prepublish` on. Refused while a `next` key is
    /// pending, and for HS256. The ring itself is unchanged.
    pub fn scheduled(&self, now: OffsetDateTime) -> Result<(StoredKeys, KeyInfo), RotateError> {
        self.refuse_hs256()?;
        let now = whole_seconds(now);
        let keys = self.read();
        if keys
            .list
            .iter()
            .any(|k| k.revoked_at.is_none() && k.activates_at > now)
        {
            return Err(RotateError::Pending);
        }
        self.with_new_key(&keys, now, now + self.schedule.prepublish, false)
    }

    /// The document after an immediate rotation (a suspected compromise): a
    /// new key signs from `now`, and the key that was signing is revoked:
    /// out of the JWKS, its tokens refused. A pending `next` key stays
    /// scheduled. Refused for HS256. The ring itself is unchanged.
    pub fn rotated_now(&self, now: OffsetDateTime) -> Result<(StoredKeys, KeyInfo), RotateError> {
        self.refuse_hs256()?;
        let now = whole_seconds(now);
        let keys = self.read();
        self.with_new_key(&keys, now, now, true)
    }

    /// The document after what the clock asks for at `now`, or `None` when
    /// nothing is due: with automatic rotation, a `next` key once the active
    /// one is due for replacement within the prepublish time (it signs at
    /// the end of the rotation period, and never before `now + prepublish`);
    /// and retired keys past their retention dropped. The ring itself is
    /// unchanged.
    pub fn ticked(
        &self,
        now: OffsetDateTime,
    ) -> Result<Option<(StoredKeys, Option<KeyInfo>)>, KeyError> {
        self.observed
            .fetch_max(now.unix_timestamp(), Ordering::Relaxed);
        let now = whole_seconds(now);
        let keys = self.read();
        let retain = self.schedule.retain;
        let expired: Vec<usize> = (0..keys.list.len())
            .filter(|&i| {
                let p = phase_of(&keys.list, i, now, retain);
                p.state == KeyState::Retired && !p.verifies(now)
            })
            .collect();
        let due = match (self.schedule.rotation, active_index(&keys.list, now)) {
            (Some(period), Some(a)) if self.alg != SigningAlgorithm::HS256 => {
                let pending = keys.list[a + 1..].iter().any(|k| k.revoked_at.is_none());
                let replace_at = keys.list[a].activates_at + period;
                (!pending && now + self.schedule.prepublish >= replace_at)
                    .then(|| replace_at.max(now + self.schedule.prepublish))
            }
            _ => None,
        };
        if expired.is_empty() && due.is_none() {
            return Ok(None);
        }
        let dropped = expired.iter().filter_map(|&i| {
            let k = &keys.list[i];
            let public = k.public.as_ref()?;
            Some(StoredArchived {
                kid: k.kid.clone(),
                alg: k.alg,
                public: URL_SAFE_NO_PAD.encode(public),
                activated_at: k.activates_at,
                dropped_at: now,
                revoked_at: k.revoked_at,
            })
        });
        let mut stored = StoredKeys {
            version: STORED_KEYS_VERSION,
            generation: keys.generation + 1,
            keys: keys
                .list
                .iter()
                .enumerate()
                .filter(|(i, _)| !expired.contains(i))
                .map(|(_, k)| k.stored())
                .collect(),
            archive: keys
                .archive
                .iter()
                .map(|a| a.stored.clone())
                .chain(dropped)
                .collect(),
        };
        let mut info = None;
        if let Some(at) = due {
            let key = self.new_key(now, at)?;
            info = Some(key.info(phase_of(std::slice::from_ref(&key), 0, now, retain)));
            insert_sorted(&mut stored.keys, key.stored());
        }
        Ok(Some((stored, info)))
    }

    fn refuse_hs256(&self) -> Result<(), RotateError> {
        if self.alg == SigningAlgorithm::HS256 {
            return Err(RotateError::NotSupported);
        }
        Ok(())
    }

    fn new_key(&self, now: OffsetDateTime, activates_at: OffsetDateTime) -> Result<Key, KeyError> {
        let mut key = Key::generate(
            self.alg,
            now,
            self.configured_secret.as_ref().map(|m| m.0.as_slice()),
        )?;
        key.activates_at = activates_at;
        Ok(key)
    }

    fn with_new_key(
        &self,
        keys: &Keys,
        now: OffsetDateTime,
        activates_at: OffsetDateTime,
        revoke_active: bool,
    ) -> Result<(StoredKeys, KeyInfo), RotateError> {
        let revoke = revoke_active
            .then(|| active_index(&keys.list, now))
            .flatten();
        let mut list: Vec<StoredKey> = keys.list.iter().map(Key::stored).collect();
        if let Some(i) = revoke {
            list[i].revoked_at = Some(now);
        }
        let key = self.new_key(now, activates_at)?;
        insert_sorted(&mut list, key.stored());
        let stored = StoredKeys {
            version: STORED_KEYS_VERSION,
            generation: keys.generation + 1,
            keys: list,
            archive: keys.archive.iter().map(|a| a.stored.clone()).collect(),
        };
        let state = if activates_at > now {
            KeyState::Next
        } else {
            KeyState::Active
        };
        let info = key.info(Phase {
            state,
            retired_at: None,
            expires_at: None,
        });
        Ok((stored, info))
    }

    /// The RFC 7517 key set at `now`: public keys of the `next` keys, the
    /// active key and retired keys still verifying. HMAC keys never appear
    /// (HS256: empty).
    pub fn jwks(&self, now: OffsetDateTime) -> serde_json::Value {
        let keys = self.read();
        let phases = phases(&keys.list, now, self.schedule.retain);
        let list: Vec<serde_json::Value> = keys
            .list
            .iter()
            .zip(&phases)
            .filter(|(_, p)| p.verifies(now))
            .filter_map(|(k, _)| k.public_jwk.clone())
            .collect();
        serde_json::json!({ "keys": list })
    }

    /// Public facts about every key the ring holds at `now`, in activation
    /// order (revoked and expired ones until they are dropped).
    pub fn keys(&self, now: OffsetDateTime) -> Vec<KeyInfo> {
        let keys = self.read();
        let phases = phases(&keys.list, now, self.schedule.retain);
        keys.list
            .iter()
            .zip(phases)
            .map(|(k, p)| k.info(p))
            .collect()
    }

    /// The keys dropped from the ring and kept for what they signed, oldest
    /// first.
    pub fn archived(&self) -> Vec<ArchivedKeyInfo> {
        self.read().archive.iter().map(Archived::info).collect()
    }

    /// Checks a detached signature made by [`KeyRing::sign_detached_at`]
    /// (an audit checkpoint's) against the key `kid`: a key the ring holds,
    /// whatever its state, or one of its archive. Time plays no part: a
    /// retired or dropped key's old signatures stay good.
    pub fn verify_detached(
        &self,
        kid: &str,
        message: &[u8],
        signature: &str,
    ) -> Result<(), DetachedError> {
        let keys = self.read();
        let decoding = keys
            .list
            .iter()
            .find(|k| k.kid == kid)
            .map(|k| &k.decoding)
            .or_else(|| {
                keys.archive
                    .iter()
                    .find(|a| a.stored.kid == kid)
                    .map(|a| &a.decoding)
            })
            .ok_or(DetachedError::UnknownKey)?;
        match jsonwebtoken::crypto::verify(signature, message, decoding, self.alg.jwt()) {
            Ok(true) => Ok(()),
            _ => Err(DetachedError::BadSignature),
        }
    }

    /// Signs arbitrary header and claims bytes with the active key, for
    /// tests that need hostile but correctly signed tokens.
    #[cfg(test)]
    pub(super) fn sign_raw(&self, header: &[u8], claims: &[u8]) -> String {
        let keys = self.read();
        let key = &keys.list
            [active_index(&keys.list, time::macros::datetime!(9999-12-31 0:00 UTC)).unwrap()];
        let mut token = URL_SAFE_NO_PAD.encode(header);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(claims, &mut token);
        let sig =
            jsonwebtoken::crypto::sign(token.as_bytes(), &key.encoding, key.alg.jwt()).unwrap();
        token.push('.');
        token.push_str(&sig);
        token
    }

    #[cfg(test)]
    pub(super) fn active_kid(&self) -> String {
        let keys = self.read();
        keys.list[active_index(&keys.list, time::macros::datetime!(9999-12-31 0:00 UTC)).unwrap()]
            .kid
            .clone()
    }
}
