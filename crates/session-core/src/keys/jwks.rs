//! [`PublicKeySet`]: the strict verification of
//! [`KeyRing::verify`](super::KeyRing::verify) against a JWKS someone else
//! publishes.

use std::fmt;
use std::sync::{PoisonError, RwLock};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::DecodingKey;
use time::{Duration, OffsetDateTime};

use super::material::{MAX_KID_LEN, SigningAlgorithm, kid_is_well_formed, public_key};
use super::token::{
    AccessClaims, MAX_LEEWAY, TokenError, VerifyPolicy, check_signature, verify_strictly,
};

/// The public keys an issuer publishes as a JWKS (RFC 7517), for a service
/// that verifies access tokens it does not sign (an app in front of
/// session-server): the same strict checks as
/// [`KeyRing::verify`](super::KeyRing::verify), with the keys taken from the
/// issuer's `/.well-known/jwks.json`.
///
/// Only keys of the configured algorithm are taken (`kty`/`crv` to match,
/// `use` absent or `sig`, `alg` absent or equal); each is checked to be a
/// valid curve point. A set that fails to load leaves the keys as they
/// were. HS256 has no public key and is refused.
pub struct PublicKeySet {
    alg: SigningAlgorithm,
    policy: VerifyPolicy,
    leeway_secs: i64,
    keys: RwLock<Vec<(String, DecodingKey)>>,
}

impl fmt::Debug for PublicKeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKeySet")
            .field("alg", &self.alg)
            .field("policy", &self.policy)
            .field("kids", &self.kids())
            .finish()
    }
}

/// Why a JWKS was not loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwksError {
    /// HS256 keys are secret: there is no public key set to verify with.
    #[error("HS256 has no public keys")]
    NoPublicKeys,
    /// Not a JSON object with a `keys` array.
    #[error("not a JWKS: no \"keys\" array")]
    NotAJwks,
    /// A key of the configured algorithm is malformed.
    #[error("key {kid:?} of the JWKS is malformed")]
    BadKey {
        /// Its `kid`, as given.
        kid: String,
    },
    /// No key of the configured algorithm.
    #[error("the JWKS has no {0} key")]
    NoKey(SigningAlgorithm),
}

impl PublicKeySet {
    /// An empty set for tokens signed with `alg` and checked against
    /// `policy` (its leeway clamped to `0..=`[`MAX_LEEWAY`]).
    pub fn new(alg: SigningAlgorithm, mut policy: VerifyPolicy) -> Result<Self, JwksError> {
        if alg == SigningAlgorithm::HS256 {
            return Err(JwksError::NoPublicKeys);
        }
        policy.leeway = policy.leeway.clamp(Duration::ZERO, MAX_LEEWAY);
        Ok(Self {
            alg,
            leeway_secs: policy.leeway.whole_seconds(),
            policy,
            keys: RwLock::default(),
        })
    }

    /// Replaces the keys by those of `jwks`; how many were taken.
    pub fn load_jwks(&self, jwks: &serde_json::Value) -> Result<usize, JwksError> {
        let list = jwks
            .get("keys")
            .and_then(serde_json::Value::as_array)
            .ok_or(JwksError::NotAJwks)?;
        let (kty, crv) = match self.alg {
            SigningAlgorithm::EdDSA => ("OKP", "Ed25519"),
            _ => ("EC", "P-256"),
        };
        let mut keys = Vec::new();
        for jwk in list {
            let field = |name: &str| jwk.get(name).and_then(serde_json::Value::as_str);
            let ours = field("kty") == Some(kty)
                && field("crv") == Some(crv)
                && field("use").is_none_or(|u| u == "sig")
                && field("alg").is_none_or(|a| a == self.alg.as_str());
            if !ours {
                continue;
            }
            let kid = field("kid").unwrap_or_default();
            let bad = || JwksError::BadKey {
                kid: kid.chars().take(MAX_KID_LEN).collect(),
            };
            if !kid_is_well_formed(kid) || keys.iter().any(|(k, _)| k == kid) {
                return Err(bad());
            }
            let coordinate = |name: &str| {
                field(name)
                    .and_then(|v| URL_SAFE_NO_PAD.decode(v).ok())
                    .filter(|b| b.len() == 32)
                    .ok_or_else(bad)
            };
            let raw = match self.alg {
                SigningAlgorithm::EdDSA => coordinate("x")?,
                _ => [&[4u8][..], &coordinate("x")?, &coordinate("y")?].concat(),
            };
            let (decoding, _) = public_key(self.alg, kid, &raw).map_err(|_| bad())?;
            keys.push((kid.to_owned(), decoding));
        }
        if keys.is_empty() {
            return Err(JwksError::NoKey(self.alg));
        }
        let n = keys.len();
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = keys;
        Ok(n)
    }

    /// The key ids loaded.
    pub fn kids(&self) -> Vec<String> {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Whether a key of this id is loaded.
    pub fn contains(&self, kid: &str) -> bool {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .any(|(k, _)| k == kid)
    }

    /// Verifies an access token as [`KeyRing::verify`](super::KeyRing::verify)
    /// does, against the keys loaded; a `kid` not loaded is
    /// [`TokenError::UnknownKey`].
    pub fn verify(&self, token: &str, now: OffsetDateTime) -> Result<AccessClaims, TokenError> {
        verify_strictly(
            token,
            now,
            self.alg,
            &self.policy,
            self.leeway_secs,
            |kid, signed, signature_b64| {
                let keys = self.keys.read().unwrap_or_else(PoisonError::into_inner);
                let (_, key) = keys
                    .iter()
                    .find(|(k, _)| k == kid)
                    .ok_or(TokenError::UnknownKey)?;
                check_signature(signed, signature_b64, key, self.alg)
            },
        )
    }
}
