//! The stored form of a ring ([`StoredKeys`]): what the server persists,
//! its archive of dropped keys' public halves, and how a document is
//! checked and read back into keys.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::DecodingKey;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use zeroize::{Zeroize, Zeroizing};

use super::material::{
    Key, KeyError, Material, MaterialError, SigningAlgorithm, kid_is_well_formed, public_key,
    whole_seconds,
};
use super::ring::{ArchivedKeyInfo, KeyState, Keys};

/// Version of the [`StoredKeys`] format written; version 1 (keys with a
/// stored state) is still read.
pub(super) const STORED_KEYS_VERSION: u32 = 2;

/// A key dropped from the ring once nothing it signed for clients can still
/// be live, kept for good for what it signed that lasts (audit-chain
/// checkpoints): its public half and dates, no private material. It never
/// signs, never verifies an access token and is never in the JWKS.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StoredArchived {
    pub(super) kid: String,
    pub(super) alg: SigningAlgorithm,
    /// Unpadded base64url of the raw public key.
    pub(super) public: String,
    #[serde(with = "time::serde::rfc3339")]
    pub(super) activated_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub(super) dropped_at: OffsetDateTime,
    #[serde(
        with = "time::serde::rfc3339::option",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub(super) revoked_at: Option<OffsetDateTime>,
}

impl fmt::Debug for StoredArchived {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredArchived")
            .field("kid", &self.kid)
            .field("dropped_at", &self.dropped_at)
            .finish_non_exhaustive()
    }
}

/// An archived key, its verifying key built once.
pub(super) struct Archived {
    pub(super) stored: StoredArchived,
    pub(super) decoding: DecodingKey,
    public_jwk: serde_json::Value,
}

impl Archived {
    fn parse(stored: &StoredArchived, alg: SigningAlgorithm) -> Result<Self, KeyError> {
        if stored.alg != alg {
            return Err(MaterialError::MixedAlgorithms(stored.kid.clone(), stored.alg, alg).into());
        }
        if !kid_is_well_formed(&stored.kid) {
            return Err(MaterialError::BadKid.into());
        }
        let public = URL_SAFE_NO_PAD
            .decode(stored.public.as_bytes())
            .map_err(MaterialError::Base64)?;
        let (decoding, public_jwk) = public_key(alg, &stored.kid, &public)?;
        Ok(Self {
            stored: stored.clone(),
            decoding,
            public_jwk,
        })
    }

    pub(super) fn info(&self) -> ArchivedKeyInfo {
        ArchivedKeyInfo {
            kid: self.stored.kid.clone(),
            alg: self.stored.alg,
            activated_at: self.stored.activated_at,
            dropped_at: self.stored.dropped_at,
            revoked_at: self.stored.revoked_at,
            public_jwk: self.public_jwk.clone(),
        }
    }
}

/// The ring's keys as persisted by the server. Holds private material:
/// `Debug` redacts it, and the server stores it only sealed or with
/// owner-only permissions. `generation` grows by one with every change, so
/// a store can apply a change as a compare-and-set.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredKeys {
    pub(super) version: u32,
    #[serde(default)]
    pub(super) generation: u64,
    pub(super) keys: Vec<StoredKey>,
    /// Public halves of the keys dropped from `keys`, never deleted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) archive: Vec<StoredArchived>,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StoredKey {
    kid: String,
    alg: SigningAlgorithm,
    /// Version 1 only: the state as it was when written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    state: Option<KeyState>,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(
        with = "time::serde::rfc3339::option",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    activates_at: Option<OffsetDateTime>,
    #[serde(
        with = "time::serde::rfc3339::option",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub(super) revoked_at: Option<OffsetDateTime>,
    /// Version 1 only.
    #[serde(
        with = "time::serde::rfc3339::option",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    retired_at: Option<OffsetDateTime>,
    /// Version 1 only.
    #[serde(
        with = "time::serde::rfc3339::option",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    expires_at: Option<OffsetDateTime>,
    /// Standard base64 of the PKCS#8 DER (EdDSA, ES256) or raw secret
    /// (HS256); or, once sealed by the server, its sealed form.
    private: StoredSecret,
}

/// Base64 private material; wiped on drop, never printed.
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
struct StoredSecret(String);

impl Drop for StoredSecret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for StoredKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredKeys")
            .field("version", &self.version)
            .field("generation", &self.generation)
            .field("keys", &self.keys)
            .field("archive", &self.archive)
            .finish()
    }
}

impl fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("created_at", &self.created_at)
            .field("activates_at", &self.activates_at)
            .field("revoked_at", &self.revoked_at)
            .field("private", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl StoredKeys {
    /// The change counter: one more for every change of the ring.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The key ids, in activation order.
    pub fn kids(&self) -> Vec<String> {
        self.keys.iter().map(|k| k.kid.clone()).collect()
    }

    /// Replaces every key's private part by `f(kid, private)` (the server
    /// seals and opens it with its master key this way).
    pub fn map_private<E>(
        mut self,
        mut f: impl FnMut(&str, &str) -> Result<String, E>,
    ) -> Result<Self, E> {
        for k in &mut self.keys {
            let mapped = f(&k.kid, &k.private.0)?;
            k.private = StoredSecret(mapped);
        }
        Ok(self)
    }
}

impl Key {
    /// The key as stored: its material in standard base64 and the dates
    /// its state is derived from.
    pub(super) fn stored(&self) -> StoredKey {
        StoredKey {
            kid: self.kid.clone(),
            alg: self.alg,
            state: None,
            created_at: self.created_at,
            activates_at: Some(self.activates_at),
            revoked_at: self.revoked_at,
            retired_at: None,
            expires_at: None,
            private: StoredSecret(STANDARD.encode(&*self.material.0)),
        }
    }
}

/// Inserts `key` after every key activated no later than it.
pub(super) fn insert_sorted(list: &mut Vec<StoredKey>, key: StoredKey) {
    let at = key.activates_at.unwrap_or(key.created_at);
    let pos = list
        .iter()
        .position(|k| k.activates_at.unwrap_or(k.created_at) > at)
        .unwrap_or(list.len());
    list.insert(pos, key);
}

/// The algorithm of a stored document (of its first key; every key must
/// share it).
pub(super) fn stored_algorithm(stored: &StoredKeys) -> Result<SigningAlgorithm, KeyError> {
    if stored.version != 1 && stored.version != STORED_KEYS_VERSION {
        return Err(MaterialError::Version(stored.version).into());
    }
    stored
        .keys
        .first()
        .map(|k| k.alg)
        .ok_or_else(|| MaterialError::NoLiveKey.into())
}

/// The keys of a stored document, checked and sorted by activation.
pub(super) fn parse_stored(
    stored: &StoredKeys,
    alg: SigningAlgorithm,
    secret: Option<&Material>,
) -> Result<Keys, KeyError> {
    if stored.version == 1 {
        let actives = stored
            .keys
            .iter()
            .filter(|k| k.state == Some(KeyState::Active))
            .count();
        if actives != 1 {
            return Err(MaterialError::ActiveCount(actives).into());
        }
    }
    let mut keys: Vec<Key> = Vec::with_capacity(stored.keys.len());
    for s in &stored.keys {
        if s.alg != alg {
            return Err(MaterialError::MixedAlgorithms(s.kid.clone(), s.alg, alg).into());
        }
        if !kid_is_well_formed(&s.kid) {
            return Err(MaterialError::BadKid.into());
        }
        if keys.iter().any(|k| k.kid == s.kid) {
            return Err(MaterialError::DuplicateKid(s.kid.clone()).into());
        }
        if s.state == Some(KeyState::Retired) && s.expires_at.is_none() {
            return Err(MaterialError::RetiredWithoutExpiry(s.kid.clone()).into());
        }
        let material = match secret {
            Some(configured) => Zeroizing::new(configured.0.to_vec()),
            None => Zeroizing::new(
                STANDARD
                    .decode(s.private.0.as_bytes())
                    .map_err(MaterialError::Base64)?,
            ),
        };
        let mut key = Key::from_material(s.kid.clone(), alg, material, s.created_at)?;
        // Version 1 keys were active from their creation.
        key.activates_at = whole_seconds(s.activates_at.unwrap_or(s.created_at));
        key.revoked_at = s.revoked_at;
        keys.push(key);
    }
    if !keys.iter().any(|k| k.revoked_at.is_none()) {
        return Err(MaterialError::NoLiveKey.into());
    }
    keys.sort_by_key(|k| k.activates_at);
    let mut archive: Vec<Archived> = Vec::with_capacity(stored.archive.len());
    for a in &stored.archive {
        if keys.iter().any(|k| k.kid == a.kid) || archive.iter().any(|b| b.stored.kid == a.kid) {
            return Err(MaterialError::DuplicateKid(a.kid.clone()).into());
        }
        archive.push(Archived::parse(a, alg)?);
    }
    Ok(Keys {
        generation: stored.generation,
        list: keys,
        archive,
    })
}
