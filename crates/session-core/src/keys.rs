//! Signing keys, access tokens (JWT) and JWKS.
//!
//! A [`KeyRing`] holds one active signing key and the retired keys that
//! still verify tokens they signed. Verification is strict and takes the
//! time as a parameter: the token's length is bounded before parsing, the
//! header is read here (not by the JWT library) so that `alg` must equal
//! the ring's own algorithm, `typ` must be `at+jwt`, headers that point a
//! verifier elsewhere are refused and the `kid` is checked for shape before
//! it is looked up; only then is the signature checked (by `jsonwebtoken`),
//! and the claims last.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{DecodingKey, EncodingKey};
use rand::rngs::OsRng;
use serde::de::{IgnoredAny, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};
use zeroize::{Zeroize, Zeroizing};

use crate::secret::random_bytes;

/// Longest accepted access token, checked before any parsing.
pub const MAX_ACCESS_TOKEN_LEN: usize = 4096;
/// Largest clock leeway a verifier may be configured with.
pub const MAX_LEEWAY: Duration = Duration::seconds(60);

/// The signing algorithms the service offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SigningAlgorithm {
    /// Ed25519 (the default).
    EdDSA,
    /// ECDSA P-256 with SHA-256.
    ES256,
    /// HMAC-SHA-256 with a shared secret.
    HS256,
}

impl FromStr for SigningAlgorithm {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "EdDSA" => Ok(Self::EdDSA),
            "ES256" => Ok(Self::ES256),
            "HS256" => Ok(Self::HS256),
            other => Err(format!("expected EdDSA, ES256 or HS256, not {other:?}")),
        }
    }
}

impl fmt::Display for SigningAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::EdDSA => "EdDSA",
            Self::ES256 => "ES256",
            Self::HS256 => "HS256",
        })
    }
}

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// Issuer.
    pub iss: String,
    /// Audience (a single string).
    pub aud: String,
    /// User id.
    pub sub: String,
    /// Session id.
    pub sid: String,
    /// Issued at (unix seconds).
    pub iat: i64,
    /// Expires at (unix seconds).
    pub exp: i64,
    /// Not before (unix seconds), when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Unique token id.
    pub jti: String,
    /// The client the token was issued to (RFC 9068 `client_id`). Every
    /// token this service signs carries it; a verifier does not require it
    /// so that tokens signed before it existed stay valid until they expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// When the user authenticated: the session's opening (unix seconds,
    /// RFC 9068 `auth_time`); optional to a verifier like `client_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<i64>,
    /// (v1.1) Confirmation of a DPoP-bound token: `{"jkt": <thumbprint>}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
}

/// The `cnf` claim of a DPoP-bound access token (RFC 9449 §6.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    /// Thumbprint of the key the token is bound to.
    pub jkt: crate::dpop::Jkt,
}

/// What a verifier accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyPolicy {
    /// Exact `iss`.
    pub issuer: String,
    /// Required `aud`.
    pub audience: String,
    /// Clock leeway, at most [`MAX_LEEWAY`].
    pub leeway: Duration,
}

/// Why an access token was refused. Carries no part of the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Longer than [`MAX_ACCESS_TOKEN_LEN`].
    #[error("token too long")]
    TooLong,
    /// Not three base64url segments of JSON.
    #[error("malformed token")]
    Malformed,
    /// Algorithm other than the ring's own.
    #[error("algorithm not accepted")]
    AlgorithmNotAccepted,
    /// `typ` other than `at+jwt`.
    #[error("wrong token type")]
    WrongType,
    /// A header that could point the verifier elsewhere (`jku`, `x5u`, `jwk`, `x5c`, `crit`).
    #[error("forbidden header {0}")]
    ForbiddenHeader(&'static str),
    /// `kid` missing, too long or outside `[A-Za-z0-9_-]`.
    #[error("malformed key id")]
    BadKeyId,
    /// No such key.
    #[error("unknown key id")]
    UnknownKey,
    /// Signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// A required claim is missing or of the wrong type.
    #[error("invalid claims")]
    InvalidClaims,
    /// `exp` passed (beyond leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` (or `iat`) in the future (beyond leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// Wrong `iss`.
    #[error("wrong issuer")]
    WrongIssuer,
    /// Wrong or missing `aud`.
    #[error("wrong audience")]
    WrongAudience,
}

/// Key-management failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Key material could not be made or read.
    #[error("invalid key material")]
    InvalidKey(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// HS256 needs a secret of at least 32 bytes.
    #[error("HS256 needs a secret of at least 32 bytes")]
    WeakSecret,
    /// Signing failed.
    #[error("signing failed")]
    Sign(#[source] Box<dyn std::error::Error + Send + Sync>),
}

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
#[derive(Debug, Clone, PartialEq, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize)]
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

// ---------------------------------------------------------------------------
// Key ring
// ---------------------------------------------------------------------------

/// The one `typ` an access token may carry (RFC 9068).
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";
/// Longest accepted `kid`.
pub const MAX_KID_LEN: usize = 64;
/// Shortest HS256 secret, in bytes.
pub const MIN_HS256_SECRET_LEN: usize = 32;
/// Version of the [`StoredKeys`] format written; version 1 (keys with a
/// stored state) is still read.
const STORED_KEYS_VERSION: u32 = 2;
/// Random bytes in a generated `kid`.
const KID_BYTES: usize = 16;
/// Largest decoded size of any segment of a token no longer than
/// [`MAX_ACCESS_TOKEN_LEN`] (4 base64 characters carry 3 bytes).
const MAX_SEGMENT_BYTES: usize = MAX_ACCESS_TOKEN_LEN / 4 * 3 + 3;
/// Largest signature of the offered algorithms (EdDSA and ES256: 64 bytes).
const MAX_SIGNATURE_BYTES: usize = 64;

impl SigningAlgorithm {
    /// The JOSE `alg` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EdDSA => "EdDSA",
            Self::ES256 => "ES256",
            Self::HS256 => "HS256",
        }
    }

    fn jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            Self::EdDSA => jsonwebtoken::Algorithm::EdDSA,
            Self::ES256 => jsonwebtoken::Algorithm::ES256,
            Self::HS256 => jsonwebtoken::Algorithm::HS256,
        }
    }
}

/// What was wrong with key material or a stored key file. Names the
/// problem, never the material.
#[derive(Debug, thiserror::Error)]
enum MaterialError {
    #[error("key material is not valid base64")]
    Base64(#[source] base64::DecodeError),
    #[error("EdDSA key is not a valid PKCS#8 Ed25519 private key")]
    Ed25519(#[source] ed25519_dalek::pkcs8::Error),
    #[error("ES256 key is not a valid PKCS#8 P-256 private key")]
    P256(#[source] p256::pkcs8::Error),
    #[error("stored key file has version {0}, expected 1 or {STORED_KEYS_VERSION}")]
    Version(u32),
    #[error("stored key file must hold exactly one active key, holds {0}")]
    ActiveCount(usize),
    #[error("stored key file holds no key that can sign")]
    NoLiveKey,
    #[error("stored key {0:?} is {1}, the active key is {2}: a ring holds one algorithm")]
    MixedAlgorithms(String, SigningAlgorithm, SigningAlgorithm),
    #[error("stored key id is malformed")]
    BadKid,
    #[error("stored key id {0:?} appears twice")]
    DuplicateKid(String),
    #[error("stored retired key {0:?} has no expiry")]
    RetiredWithoutExpiry(String),
    #[error("archived key {0:?} has no valid public key")]
    BadPublicKey(String),
}

impl From<MaterialError> for KeyError {
    fn from(e: MaterialError) -> Self {
        KeyError::InvalidKey(Box::new(e))
    }
}

/// Private key material: PKCS#8 DER (EdDSA, ES256) or the raw HMAC secret
/// (HS256). Wiped on drop; never printed.
struct Material(Zeroizing<Vec<u8>>);

impl fmt::Debug for Material {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A parsed asymmetric private key (zeroized on drop by its crate).
enum Signer {
    Ed25519(Box<ed25519_dalek::SigningKey>),
    P256(Box<p256::ecdsa::SigningKey>),
}

/// One key of the ring, with everything verification needs built once.
struct Key {
    kid: String,
    alg: SigningAlgorithm,
    created_at: OffsetDateTime,
    /// Signs from then on, until its successor's activation.
    activates_at: OffsetDateTime,
    /// Taken out at once (a suspected compromise): never verifies again.
    revoked_at: Option<OffsetDateTime>,
    material: Material,
    encoding: EncodingKey,
    /// The parsed private key, so signing does not re-read PKCS#8 and
    /// re-derive the public point on every token (jsonwebtoken's
    /// `crypto::sign` does both); `None` for HS256, which signs through
    /// `encoding`.
    signer: Option<Signer>,
    decoding: DecodingKey,
    /// The base64url of this key's JWS header, the same for every token.
    header_b64: String,
    public_jwk: Option<serde_json::Value>,
    /// The raw public key (Ed25519: 32 bytes; P-256: the uncompressed SEC1
    /// point), kept in the archive once the key is dropped; `None` for HS256.
    public: Option<Vec<u8>>,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("created_at", &self.created_at)
            .field("activates_at", &self.activates_at)
            .field("revoked_at", &self.revoked_at)
            .field("material", &self.material)
            .finish_non_exhaustive()
    }
}

impl Key {
    /// The base64url JWS signature of `message` with this key.
    fn sign(&self, message: &[u8]) -> Result<String, KeyError> {
        match &self.signer {
            Some(Signer::Ed25519(sk)) => {
                use ed25519_dalek::Signer as _;
                Ok(URL_SAFE_NO_PAD.encode(sk.sign(message).to_bytes()))
            }
            Some(Signer::P256(sk)) => {
                use p256::ecdsa::signature::Signer as _;
                let signature: p256::ecdsa::Signature = sk.sign(message);
                Ok(URL_SAFE_NO_PAD.encode(signature.to_bytes()))
            }
            None => jsonwebtoken::crypto::sign(message, &self.encoding, self.alg.jwt())
                .map_err(|e| KeyError::Sign(Box::new(e))),
        }
    }

    /// Builds a key from its private material; derives the public half,
    /// the JWK and the header once.
    fn from_material(
        kid: String,
        alg: SigningAlgorithm,
        material: Zeroizing<Vec<u8>>,
        created_at: OffsetDateTime,
    ) -> Result<Self, KeyError> {
        let (encoding, public, signer) = match alg {
            SigningAlgorithm::EdDSA => {
                use ed25519_dalek::pkcs8::DecodePrivateKey as _;
                let sk = ed25519_dalek::SigningKey::from_pkcs8_der(&material)
                    .map_err(MaterialError::Ed25519)?;
                (
                    EncodingKey::from_ed_der(&material),
                    Some(sk.verifying_key().to_bytes().to_vec()),
                    Some(Signer::Ed25519(Box::new(sk))),
                )
            }
            SigningAlgorithm::ES256 => {
                use p256::pkcs8::DecodePrivateKey as _;
                let sk = p256::ecdsa::SigningKey::from_pkcs8_der(&material)
                    .map_err(MaterialError::P256)?;
                let point = sk.verifying_key().to_encoded_point(false);
                (
                    EncodingKey::from_ec_der(&material),
                    Some(point.as_bytes().to_vec()),
                    Some(Signer::P256(Box::new(sk))),
                )
            }
            SigningAlgorithm::HS256 => {
                if material.len() < MIN_HS256_SECRET_LEN {
                    return Err(KeyError::WeakSecret);
                }
                (EncodingKey::from_secret(&material), None, None)
            }
        };
        let (decoding, public_jwk) = match &public {
            Some(public) => {
                let (decoding, jwk) = public_key(alg, &kid, public)?;
                (decoding, Some(jwk))
            }
            None => (DecodingKey::from_secret(&material), None),
        };
        let header = serde_json::json!({
            "alg": alg.as_str(),
            "typ": ACCESS_TOKEN_TYPE,
            "kid": kid,
        });
        let header_b64 = URL_SAFE_NO_PAD.encode(header.to_string());
        Ok(Self {
            kid,
            alg,
            created_at,
            activates_at: created_at,
            revoked_at: None,
            material: Material(material),
            encoding,
            signer,
            decoding,
            header_b64,
            public_jwk,
            public,
        })
    }

    /// A brand-new key of `alg`; HS256 takes `secret` when given.
    fn generate(
        alg: SigningAlgorithm,
        now: OffsetDateTime,
        secret: Option<&[u8]>,
    ) -> Result<Self, KeyError> {
        let material = match alg {
            SigningAlgorithm::EdDSA => {
                use ed25519_dalek::pkcs8::EncodePrivateKey as _;
                let sk = ed25519_dalek::SigningKey::generate(&mut OsRng);
                let der = sk
                    .to_pkcs8_der()
                    .map_err(|e| KeyError::InvalidKey(Box::new(e)))?;
                Zeroizing::new(der.as_bytes().to_vec())
            }
            SigningAlgorithm::ES256 => {
                use p256::pkcs8::EncodePrivateKey as _;
                let sk = p256::ecdsa::SigningKey::random(&mut OsRng);
                let der = sk
                    .to_pkcs8_der()
                    .map_err(|e| KeyError::InvalidKey(Box::new(e)))?;
                Zeroizing::new(der.as_bytes().to_vec())
            }
            SigningAlgorithm::HS256 => match secret {
                Some(s) if s.len() < MIN_HS256_SECRET_LEN => return Err(KeyError::WeakSecret),
                Some(s) => Zeroizing::new(s.to_vec()),
                None => Zeroizing::new(random_bytes::<32>().to_vec()),
            },
        };
        Self::from_material(new_kid(), alg, material, whole_seconds(now))
    }

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

    fn stored(&self) -> StoredKey {
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

/// Whole seconds, so that a key's activation compares the same against a
/// token's `iat` as against the clock.
fn whole_seconds(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).unwrap_or(t)
}

fn new_kid() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes::<KID_BYTES>())
}

/// Whether `kid` is 1..=64 characters of `[A-Za-z0-9_-]`.
fn kid_is_well_formed(kid: &str) -> bool {
    (1..=MAX_KID_LEN).contains(&kid.len())
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The verifying key and public JWK of an asymmetric key from its raw
/// public half (Ed25519: 32 bytes; P-256: an uncompressed SEC1 point),
/// which is checked to be a valid point first.
fn public_key(
    alg: SigningAlgorithm,
    kid: &str,
    public: &[u8],
) -> Result<(DecodingKey, serde_json::Value), KeyError> {
    let jwk = match alg {
        SigningAlgorithm::EdDSA => {
            let bytes: &[u8; 32] = public
                .try_into()
                .map_err(|_| MaterialError::BadPublicKey(kid.to_owned()))?;
            ed25519_dalek::VerifyingKey::from_bytes(bytes)
                .map_err(|_| MaterialError::BadPublicKey(kid.to_owned()))?;
            serde_json::json!({
                "kty": "OKP",
                "crv": "Ed25519",
                "x": URL_SAFE_NO_PAD.encode(public),
                "kid": kid,
                "alg": "EdDSA",
                "use": "sig",
            })
        }
        SigningAlgorithm::ES256 => {
            if public.len() != 65 || public[0] != 4 {
                return Err(MaterialError::BadPublicKey(kid.to_owned()).into());
            }
            p256::ecdsa::VerifyingKey::from_sec1_bytes(public)
                .map_err(|_| MaterialError::BadPublicKey(kid.to_owned()))?;
            serde_json::json!({
                "kty": "EC",
                "crv": "P-256",
                "x": URL_SAFE_NO_PAD.encode(&public[1..33]),
                "y": URL_SAFE_NO_PAD.encode(&public[33..]),
                "kid": kid,
                "alg": "ES256",
                "use": "sig",
            })
        }
        SigningAlgorithm::HS256 => {
            return Err(MaterialError::BadPublicKey(kid.to_owned()).into());
        }
    };
    let decoding = match alg {
        SigningAlgorithm::EdDSA => DecodingKey::from_ed_der(public),
        _ => DecodingKey::from_ec_der(public),
    };
    Ok((decoding, jwk))
}

/// A key dropped from the ring once nothing it signed for clients can still
/// be live, kept for good for what it signed that lasts (audit-chain
/// checkpoints): its public half and dates, no private material. It never
/// signs, never verifies an access token and is never in the JWKS.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredArchived {
    kid: String,
    alg: SigningAlgorithm,
    /// Unpadded base64url of the raw public key.
    public: String,
    #[serde(with = "time::serde::rfc3339")]
    activated_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    dropped_at: OffsetDateTime,
    #[serde(
        with = "time::serde::rfc3339::option",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    revoked_at: Option<OffsetDateTime>,
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
struct Archived {
    stored: StoredArchived,
    decoding: DecodingKey,
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

    fn info(&self) -> ArchivedKeyInfo {
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
struct Keys {
    generation: u64,
    list: Vec<Key>,
    /// Keys dropped from `list`, public halves only, oldest first.
    archive: Vec<Archived>,
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

/// The ring's keys as persisted by the server. Holds private material:
/// `Debug` redacts it, and the server stores it only sealed or with
/// owner-only permissions. `generation` grows by one with every change, so
/// a store can apply a change as a compare-and-set.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredKeys {
    version: u32,
    #[serde(default)]
    generation: u64,
    keys: Vec<StoredKey>,
    /// Public halves of the keys dropped from `keys`, never deleted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    archive: Vec<StoredArchived>,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredKey {
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
    revoked_at: Option<OffsetDateTime>,
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

    fn read(&self) -> RwLockReadGuard<'_, Keys> {
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
    fn sign_raw(&self, header: &[u8], claims: &[u8]) -> String {
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
    fn active_kid(&self) -> String {
        let keys = self.read();
        keys.list[active_index(&keys.list, time::macros::datetime!(9999-12-31 0:00 UTC)).unwrap()]
            .kid
            .clone()
    }
}

/// The public keys an issuer publishes as a JWKS (RFC 7517), for a service
/// that verifies access tokens it does not sign (an app in front of
/// session-server): the same strict checks as [`KeyRing::verify`], with the
/// keys taken from the issuer's `/.well-known/jwks.json`.
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

    /// Verifies an access token as [`KeyRing::verify`] does, against the
    /// keys loaded; a `kid` not loaded is [`TokenError::UnknownKey`].
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

/// Inserts `key` after every key activated no later than it.
fn insert_sorted(list: &mut Vec<StoredKey>, key: StoredKey) {
    let at = key.activates_at.unwrap_or(key.created_at);
    let pos = list
        .iter()
        .position(|k| k.activates_at.unwrap_or(k.created_at) > at)
        .unwrap_or(list.len());
    list.insert(pos, key);
}

/// The algorithm of a stored document (of its first key; every key must
/// share it).
fn stored_algorithm(stored: &StoredKeys) -> Result<SigningAlgorithm, KeyError> {
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
fn parse_stored(
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

fn configured_secret(
    alg: SigningAlgorithm,
    hs256_secret: Option<&[u8]>,
) -> Result<Option<Material>, KeyError> {
    match (alg, hs256_secret) {
        (SigningAlgorithm::HS256, Some(s)) if s.len() < MIN_HS256_SECRET_LEN => {
            Err(KeyError::WeakSecret)
        }
        (SigningAlgorithm::HS256, Some(s)) => Ok(Some(Material(Zeroizing::new(s.to_vec())))),
        _ => Ok(None),
    }
}

/// The strict checks of an access token, in order: length; three segments
/// of unpadded base64url; a header whose `alg` is exactly `alg`, whose `typ`
/// is `at+jwt`, with none of `jku`, `x5u`, `jwk`, `x5c`, `crit`, and a
/// well-formed `kid`; then `signature(kid, signed bytes, signature)` (the
/// key lookup and the signature check of the caller's key set); then the
/// claims against `policy` and `now`.
fn verify_strictly(
    token: &str,
    now: OffsetDateTime,
    alg: SigningAlgorithm,
    policy: &VerifyPolicy,
    leeway_secs: i64,
    signature: impl FnOnce(&str, &[u8], &str) -> Result<(), TokenError>,
) -> Result<AccessClaims, TokenError> {
    if token.len() > MAX_ACCESS_TOKEN_LEN {
        return Err(TokenError::TooLong);
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };

    let mut header_buf = [0u8; MAX_SEGMENT_BYTES];
    let header_len = decode_segment(header_b64, &mut header_buf)?;
    let header: RawHeader<'_> =
        serde_json::from_slice(&header_buf[..header_len]).map_err(|_| TokenError::Malformed)?;
    match &header.alg {
        Some(a) if a.as_str() == alg.as_str() => {}
        _ => return Err(TokenError::AlgorithmNotAccepted),
    }
    if header.typ.as_ref().map(Str::as_str) != Some(ACCESS_TOKEN_TYPE) {
        return Err(TokenError::WrongType);
    }
    if let Some(name) = header.forbidden() {
        return Err(TokenError::ForbiddenHeader(name));
    }
    let kid = match &header.kid {
        Some(kid) if kid_is_well_formed(kid.as_str()) => kid.as_str(),
        _ => return Err(TokenError::BadKeyId),
    };

    let signed = &token[..header_b64.len() + 1 + payload_b64.len()];
    signature(kid, signed.as_bytes(), signature_b64)?;

    let mut payload_buf = [0u8; MAX_SEGMENT_BYTES];
    let payload_len = decode_segment(payload_b64, &mut payload_buf)?;
    let claims: RawClaims<'_> =
        serde_json::from_slice(&payload_buf[..payload_len]).map_err(|e| {
            if e.is_data() {
                TokenError::InvalidClaims
            } else {
                TokenError::Malformed
            }
        })?;
    check_claims(claims, now, policy, leeway_secs)
}

/// The JWS signature check of `signed` under `key`: strict base64url of
/// at most the longest signature first.
fn check_signature(
    signed: &[u8],
    signature_b64: &str,
    key: &DecodingKey,
    alg: SigningAlgorithm,
) -> Result<(), TokenError> {
    let mut signature_buf = [0u8; MAX_SIGNATURE_BYTES];
    decode_segment(signature_b64, &mut signature_buf).map_err(|_| TokenError::BadSignature)?;
    match jsonwebtoken::crypto::verify(signature_b64, signed, key, alg.jwt()) {
        Ok(true) => Ok(()),
        _ => Err(TokenError::BadSignature),
    }
}

fn check_claims(
    claims: RawClaims<'_>,
    now: OffsetDateTime,
    policy: &VerifyPolicy,
    leeway_secs: i64,
) -> Result<AccessClaims, TokenError> {
    let (Some(exp), Some(iat)) = (claims.exp, claims.iat) else {
        return Err(TokenError::InvalidClaims);
    };
    match &claims.iss {
        Some(iss) if iss.as_str() == policy.issuer => {}
        _ => return Err(TokenError::WrongIssuer),
    }
    let audience_ok = match &claims.aud {
        Some(Audience::One(aud)) => aud.as_str() == policy.audience,
        Some(Audience::Many(auds)) => auds.iter().any(|a| a.as_str() == policy.audience),
        None => false,
    };
    if !audience_ok {
        return Err(TokenError::WrongAudience);
    }
    let now = now.unix_timestamp();
    if now >= exp.saturating_add(leeway_secs) {
        return Err(TokenError::Expired);
    }
    let latest = now.saturating_add(leeway_secs);
    if claims.nbf.is_some_and(|nbf| nbf > latest) || iat > latest {
        return Err(TokenError::NotYetValid);
    }
    let (Some(sub), Some(sid), Some(jti)) = (claims.sub, claims.sid, claims.jti) else {
        return Err(TokenError::InvalidClaims);
    };
    if sub.is_empty() || sid.is_empty() || jti.is_empty() {
        return Err(TokenError::InvalidClaims);
    }
    Ok(AccessClaims {
        iss: policy.issuer.clone(),
        aud: policy.audience.clone(),
        sub,
        sid,
        iat,
        exp,
        nbf: claims.nbf,
        jti,
        client_id: claims.client_id,
        auth_time: claims.auth_time,
        cnf: claims.cnf,
    })
}

/// Decodes one segment as strict base64url: no padding, no standard
/// alphabet, no non-canonical trailing bits.
fn decode_segment(segment: &str, out: &mut [u8]) -> Result<usize, TokenError> {
    URL_SAFE_NO_PAD
        .decode_slice(segment.as_bytes(), out)
        .map_err(|_| TokenError::Malformed)
}

// ---------------------------------------------------------------------------
// Wire shapes of header and claims, read without copying where possible.
// Derived `Deserialize` refuses duplicate fields, which is what keeps a
// `{"alg":"EdDSA","alg":"none"}` header from meaning two things.
// ---------------------------------------------------------------------------

/// A JSON string, borrowed from the input unless it had escapes.
struct Str<'a>(Cow<'a, str>);

impl Str<'_> {
    fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(StrVisitor)
    }
}

struct StrVisitor;

impl<'de> Visitor<'de> for StrVisitor {
    type Value = Str<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Str(Cow::Borrowed(v)))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Str(Cow::Owned(v.to_owned())))
    }
}

/// `true` once the field appeared, whatever its value (even `null`).
#[derive(Default)]
struct Present(bool);

impl<'de> Deserialize<'de> for Present {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        IgnoredAny::deserialize(d)?;
        Ok(Present(true))
    }
}

#[derive(Deserialize)]
struct RawHeader<'a> {
    #[serde(borrow, default)]
    alg: Option<Str<'a>>,
    #[serde(borrow, default)]
    typ: Option<Str<'a>>,
    #[serde(borrow, default)]
    kid: Option<Str<'a>>,
    #[serde(default)]
    jku: Present,
    #[serde(default)]
    x5u: Present,
    #[serde(default)]
    jwk: Present,
    #[serde(default)]
    x5c: Present,
    #[serde(default)]
    crit: Present,
}

impl RawHeader<'_> {
    fn forbidden(&self) -> Option<&'static str> {
        [
            (self.jku.0, "jku"),
            (self.x5u.0, "x5u"),
            (self.jwk.0, "jwk"),
            (self.x5c.0, "x5c"),
            (self.crit.0, "crit"),
        ]
        .into_iter()
        .find_map(|(present, name)| present.then_some(name))
    }
}

/// `aud`: one string, or an array of strings.
enum Audience<'a> {
    One(Str<'a>),
    Many(Vec<Str<'a>>),
}

impl<'de: 'a, 'a> Deserialize<'de> for Audience<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct AudVisitor;

        impl<'de> Visitor<'de> for AudVisitor {
            type Value = Audience<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of strings")
            }

            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                v: &'de str,
            ) -> Result<Self::Value, E> {
                Ok(Audience::One(Str(Cow::Borrowed(v))))
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Audience::One(Str(Cow::Owned(v.to_owned()))))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut all = Vec::with_capacity(seq.size_hint().unwrap_or(1).min(8));
                while let Some(s) = seq.next_element::<Str<'de>>()? {
                    all.push(s);
                }
                Ok(Audience::Many(all))
            }
        }

        d.deserialize_any(AudVisitor)
    }
}

#[derive(Deserialize)]
struct RawClaims<'a> {
    #[serde(borrow, default)]
    iss: Option<Str<'a>>,
    #[serde(borrow, default)]
    aud: Option<Audience<'a>>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    sid: Option<String>,
    #[serde(default)]
    jti: Option<String>,
    #[serde(default)]
    iat: Option<i64>,
    #[serde(default)]
    exp: Option<i64>,
    #[serde(default)]
    nbf: Option<i64>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    auth_time: Option<i64>,
    cnf: Option<Confirmation>,
}

#[cfg(test)]
mod tests {
    //! One test per hostile token: each is refused with its own typed error,
    //! never a panic. Tokens that must fail a later check are correctly
    //! signed by the ring's own key (`sign_raw`), so that the check under
    //! test is the one that refuses them.

    use super::*;
    use serde_json::json;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-01-01 00:00 UTC);

    fn policy() -> VerifyPolicy {
        VerifyPolicy {
            issuer: "session-server".into(),
            audience: "session-server".into(),
            leeway: Duration::seconds(30),
        }
    }

    fn ring() -> KeyRing {
        KeyRing::generate(SigningAlgorithm::EdDSA, policy(), NOW, None).unwrap()
    }

    fn claims_json() -> serde_json::Value {
        let now = NOW.unix_timestamp();
        json!({
            "iss": "session-server",
            "aud": "session-server",
            "sub": "user-1",
            "sid": "session-1",
            "iat": now,
            "exp": now + 900,
            "jti": "jti-1",
        })
    }

    fn header_json(ring: &KeyRing) -> serde_json::Value {
        json!({"alg": "EdDSA", "typ": "at+jwt", "kid": ring.active_kid()})
    }

    /// A token signed by `ring` with the given header and claims.
    fn signed(ring: &KeyRing, header: &serde_json::Value, claims: &serde_json::Value) -> String {
        ring.sign_raw(header.to_string().as_bytes(), claims.to_string().as_bytes())
    }

    fn with_claim(name: &str, value: serde_json::Value) -> serde_json::Value {
        let mut c = claims_json();
        c[name] = value;
        c
    }

    fn without_claim(name: &str) -> serde_json::Value {
        let mut c = claims_json();
        c.as_object_mut().unwrap().remove(name);
        c
    }

    fn with_header(ring: &KeyRing, name: &str, value: serde_json::Value) -> serde_json::Value {
        let mut h = header_json(ring);
        h[name] = value;
        h
    }

    fn refused(ring: &KeyRing, token: &str) -> TokenError {
        ring.verify(token, NOW).unwrap_err()
    }

    fn b64(bytes: impl AsRef<[u8]>) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    #[test]
    fn a_well_formed_hostile_free_token_is_accepted() {
        let ring = ring();
        let token = signed(&ring, &header_json(&ring), &claims_json());
        let claims = ring.verify(&token, NOW).unwrap();
        assert_eq!(claims.sub, "user-1");
        assert_eq!(claims.sid, "session-1");
        assert_eq!(claims.jti, "jti-1");
    }

    #[test]
    fn alg_none_in_any_casing_with_an_empty_signature_is_not_accepted() {
        let ring = ring();
        for alg in ["none", "None", "NONE", "nOnE"] {
            let header = with_header(&ring, "alg", json!(alg));
            let token = format!(
                "{}.{}.",
                b64(header.to_string()),
                b64(claims_json().to_string())
            );
            assert_eq!(
                refused(&ring, &token),
                TokenError::AlgorithmNotAccepted,
                "{alg}"
            );
        }
    }

    #[test]
    fn an_hs256_token_signed_with_the_eddsa_public_key_as_secret_is_not_accepted() {
        let ring = ring();
        let public = ring.read().list[0].decoding.as_bytes().to_vec();
        let header = with_header(&ring, "alg", json!("HS256"));
        let mut token = format!(
            "{}.{}",
            b64(header.to_string()),
            b64(claims_json().to_string())
        );
        let sig = jsonwebtoken::crypto::sign(
            token.as_bytes(),
            &EncodingKey::from_secret(&public),
            jsonwebtoken::Algorithm::HS256,
        )
        .unwrap();
        token.push('.');
        token.push_str(&sig);
        assert_eq!(refused(&ring, &token), TokenError::AlgorithmNotAccepted);
    }

    #[test]
    fn another_algorithm_of_the_ring_family_is_not_accepted() {
        let ring = ring();
        for alg in ["eddsa", "EDDSA", "Ed25519", "ES256", "RS256", ""] {
            let token = signed(
                &ring,
                &with_header(&ring, "alg", json!(alg)),
                &claims_json(),
            );
            assert_eq!(
                refused(&ring, &token),
                TokenError::AlgorithmNotAccepted,
                "{alg}"
            );
        }
    }

    #[test]
    fn a_header_without_alg_is_not_accepted() {
        let ring = ring();
        let mut h = header_json(&ring);
        h.as_object_mut().unwrap().remove("alg");
        let token = signed(&ring, &h, &claims_json());
        assert_eq!(refused(&ring, &token), TokenError::AlgorithmNotAccepted);
    }

    #[test]
    fn an_unknown_kid_is_refused() {
        let ring = ring();
        let token = signed(
            &ring,
            &with_header(&ring, "kid", json!("no-such-key")),
            &claims_json(),
        );
        assert_eq!(refused(&ring, &token), TokenError::UnknownKey);
    }

    #[test]
    fn a_kid_with_path_characters_is_refused_before_lookup() {
        let ring = ring();
        let token = signed(
            &ring,
            &with_header(&ring, "kid", json!("../../etc/passwd")),
            &claims_json(),
        );
        assert_eq!(refused(&ring, &token), TokenError::BadKeyId);
    }

    #[test]
    fn a_kid_with_sql_characters_is_refused_before_lookup() {
        let ring = ring();
        let token = signed(
            &ring,
            &with_header(&ring, "kid", json!("1' OR '1'='1")),
            &claims_json(),
        );
        assert_eq!(refused(&ring, &token), TokenError::BadKeyId);
    }

    #[test]
    fn a_kid_of_1000_characters_is_refused() {
        let ring = ring();
        let token = signed(
            &ring,
            &with_header(&ring, "kid", json!("a".repeat(1000))),
            &claims_json(),
        );
        assert!(token.len() <= MAX_ACCESS_TOKEN_LEN);
        assert_eq!(refused(&ring, &token), TokenError::BadKeyId);
    }

    #[test]
    fn an_empty_or_missing_or_non_string_kid_is_refused() {
        let ring = ring();
        let token = signed(&ring, &with_header(&ring, "kid", json!("")), &claims_json());
        assert_eq!(refused(&ring, &token), TokenError::BadKeyId);
        let mut h = header_json(&ring);
        h.as_object_mut().unwrap().remove("kid");
        assert_eq!(
            refused(&ring, &signed(&ring, &h, &claims_json())),
            TokenError::BadKeyId
        );
        let token = signed(&ring, &with_header(&ring, "kid", json!(7)), &claims_json());
        assert_eq!(refused(&ring, &token), TokenError::Malformed);
    }

    #[test]
    fn a_token_expired_beyond_the_leeway_is_refused() {
        let ring = ring();
        let now = NOW.unix_timestamp();
        let token = signed(
            &ring,
            &header_json(&ring),
            &with_claim("exp", json!(now - 31)),
        );
        assert_eq!(refused(&ring, &token), TokenError::Expired);
    }

    #[test]
    fn a_token_expired_within_the_leeway_is_accepted() {
        let ring = ring();
        let now = NOW.unix_timestamp();
        let token = signed(
            &ring,
            &header_json(&ring),
            &with_claim("exp", json!(now - 29)),
        );
        assert!(ring.verify(&token, NOW).is_ok());
    }

    #[test]
    fn a_leeway_above_sixty_seconds_is_clamped() {
        let mut p = policy();
        p.leeway = Duration::hours(1);
        let ring = KeyRing::generate(SigningAlgorithm::EdDSA, p, NOW, None).unwrap();
        assert_eq!(ring.policy().leeway, MAX_LEEWAY);
        let now = NOW.unix_timestamp();
        let token = signed(
            &ring,
            &header_json(&ring),
            &with_claim("exp", json!(now - 61)),
        );
        assert_eq!(refused(&ring, &token), TokenError::Expired);
    }

    #[test]
    fn a_token_whose_nbf_is_in_the_future_is_refused() {
        let ring = ring();
        let now = NOW.unix_timestamp();
        let token = signed(
            &ring,
            &header_json(&ring),
            &with_claim("nbf", json!(now + 120)),
        );
        assert_eq!(refused(&ring, &token), TokenError::NotYetValid);
    }

    #[test]
    fn a_token_issued_in_the_future_is_refused() {
        let ring = ring();
        let now = NOW.unix_timestamp();
        let token = signed(
            &ring,
            &header_json(&ring),
            &with_claim("iat", json!(now + 120)),
        );
        assert_eq!(refused(&ring, &token), TokenError::NotYetValid);
    }

    #[test]
    fn a_token_from_another_issuer_is_refused() {
        let ring = ring();
        let token = signed(
            &ring,
            &header_json(&ring),
            &with_claim("iss", json!("evil")),
        );
        assert_eq!(refused(&ring, &token), TokenError::WrongIssuer);
        let token = signed(&ring, &header_json(&ring), &without_claim("iss"));
        assert_eq!(refused(&ring, &token), TokenError::WrongIssuer);
    }

    #[test]
    fn a_token_without_aud_is_refused() {
        let ring = ring();
        let token = signed(&ring, &header_json(&ring), &without_claim("aud"));
        assert_eq!(refused(&ring, &token), TokenError::WrongAudience);
    }

    #[test]
    fn a_token_for_another_audience_is_refused() {
        let ring = ring();
        let token = signed(
            &ring,
            &header_json(&ring),
            &with_claim("aud", json!("other")),
        );
        assert_eq!(refused(&ring, &token), TokenError::WrongAudience);
        let token = signed(
            &ring,
            &header_json(&ring),
            &with_claim("aud", json!(["a", "b"])),
        );
        assert_eq!(refused(&ring, &token), TokenError::WrongAudience);
    }

    #[test]
    fn an_audience_array_containing_ours_is_accepted() {
        let ring = ring();
        let token = signed(
            &ring,
            &header_json(&ring),
            &with_claim("aud", json!(["other", "session-server"])),
        );
        assert_eq!(ring.verify(&token, NOW).unwrap().aud, "session-server");
    }

    #[test]
    fn exp_as_a_string_is_invalid() {
        let ring = ring();
        let exp = (NOW.unix_timestamp() + 900).to_string();
        let token = signed(&ring, &header_json(&ring), &with_claim("exp", json!(exp)));
        assert_eq!(refused(&ring, &token), TokenError::InvalidClaims);
    }

    #[test]
    fn a_missing_exp_or_iat_is_invalid() {
        let ring = ring();
        for claim in ["exp", "iat"] {
            let token = signed(&ring, &header_json(&ring), &without_claim(claim));
            assert_eq!(refused(&ring, &token), TokenError::InvalidClaims, "{claim}");
        }
    }

    #[test]
    fn a_tampered_payload_fails_the_signature() {
        let ring = ring();
        let token = signed(&ring, &header_json(&ring), &claims_json());
        let (head, rest) = token.split_once('.').unwrap();
        let (_, sig) = rest.split_once('.').unwrap();
        let forged = format!(
            "{head}.{}.{sig}",
            b64(with_claim("sub", json!("admin")).to_string())
        );
        assert_eq!(refused(&ring, &forged), TokenError::BadSignature);
    }

    #[test]
    fn a_stripped_signature_is_refused() {
        let ring = ring();
        let token = signed(&ring, &header_json(&ring), &claims_json());
        let stripped = &token[..=token.rfind('.').unwrap()];
        assert_eq!(refused(&ring, stripped), TokenError::BadSignature);
        let two_segments = &token[..token.rfind('.').unwrap()];
        assert_eq!(refused(&ring, two_segments), TokenError::Malformed);
    }

    #[test]
    fn padded_base64_segments_are_malformed() {
        let ring = ring();
        // A header whose length needs padding, padded explicitly.
        let header = json!({"alg": "EdDSA", "typ": "at+jwt", "kid": ring.active_kid(), "x": "y"});
        let mut h = header.to_string();
        while URL_SAFE_NO_PAD.encode(&h).len().is_multiple_of(4) {
            h.push(' ');
        }
        let token = ring.sign_raw(h.as_bytes(), claims_json().to_string().as_bytes());
        assert!(ring.verify(&token, NOW).is_ok());
        let (head, rest) = token.split_once('.').unwrap();
        let padded = base64::engine::general_purpose::URL_SAFE.encode(&h);
        assert!(padded.ends_with('='));
        assert_ne!(head, padded);
        assert_eq!(
            refused(&ring, &format!("{padded}.{rest}")),
            TokenError::Malformed
        );
    }

    #[test]
    fn standard_alphabet_base64_is_malformed() {
        let ring = ring();
        // "??>" encodes to "Pz8+" in the standard alphabet, "Pz8-" in base64url.
        let header = format!(
            r#"{{"alg":"EdDSA","typ":"at+jwt","kid":"{}","pad":"??>"}}"#,
            ring.active_kid()
        );
        let mut h = header.clone();
        while !STANDARD.encode(&h).contains(['+', '/']) {
            h.insert(h.len() - 1, ' ');
        }
        let token = ring.sign_raw(h.as_bytes(), claims_json().to_string().as_bytes());
        assert!(ring.verify(&token, NOW).is_ok());
        let (_, rest) = token.split_once('.').unwrap();
        let standard = base64::engine::general_purpose::STANDARD_NO_PAD.encode(&h);
        assert!(standard.contains(['+', '/']));
        assert_eq!(
            refused(&ring, &format!("{standard}.{rest}")),
            TokenError::Malformed
        );
    }

    #[test]
    fn a_jwe_shaped_five_segment_token_is_malformed() {
        let ring = ring();
        let header = b64(r#"{"alg":"RSA-OAEP","enc":"A256GCM"}"#);
        let token = format!(
            "{header}.{}.{}.{}.{}",
            b64("k"),
            b64("iv"),
            b64("ct"),
            b64("tag")
        );
        assert_eq!(refused(&ring, &token), TokenError::Malformed);
    }

    #[test]
    fn duplicate_claim_keys_are_refused() {
        let ring = ring();
        let now = NOW.unix_timestamp();
        let claims = format!(
            r#"{{"iss":"session-server","aud":"session-server","sub":"user-1","sub":"admin","sid":"s","iat":{now},"exp":{},"jti":"j"}}"#,
            now + 900
        );
        let header = header_json(&ring).to_string();
        let token = ring.sign_raw(header.as_bytes(), claims.as_bytes());
        assert_eq!(refused(&ring, &token), TokenError::InvalidClaims);
    }

    #[test]
    fn duplicate_exp_keys_are_refused() {
        let ring = ring();
        let now = NOW.unix_timestamp();
        let claims = format!(
            r#"{{"iss":"session-server","aud":"session-server","sub":"u","sid":"s","iat":{now},"exp":{},"exp":{},"jti":"j"}}"#,
            now - 3600,
            now + 3600
        );
        let header = header_json(&ring).to_string();
        let token = ring.sign_raw(header.as_bytes(), claims.as_bytes());
        assert_eq!(refused(&ring, &token), TokenError::InvalidClaims);
    }

    #[test]
    fn duplicate_header_keys_are_refused() {
        let ring = ring();
        let kid = ring.active_kid();
        for header in [
            format!(r#"{{"alg":"EdDSA","alg":"none","typ":"at+jwt","kid":"{kid}"}}"#),
            format!(r#"{{"alg":"EdDSA","typ":"at+jwt","kid":"{kid}","kid":"other"}}"#),
            format!(r#"{{"alg":"EdDSA","typ":"JWT","typ":"at+jwt","kid":"{kid}"}}"#),
        ] {
            let token = ring.sign_raw(header.as_bytes(), claims_json().to_string().as_bytes());
            assert_eq!(refused(&ring, &token), TokenError::Malformed, "{header}");
        }
    }

    #[test]
    fn a_100_kb_token_is_refused_as_too_long() {
        let ring = ring();
        let token = format!(
            "{}.{}.{}",
            "a".repeat(50_000),
            "b".repeat(50_000),
            "c".repeat(2_400)
        );
        assert_eq!(refused(&ring, &token), TokenError::TooLong);
        let just_over = "a".repeat(MAX_ACCESS_TOKEN_LEN + 1);
        assert_eq!(refused(&ring, &just_over), TokenError::TooLong);
    }

    #[test]
    fn headers_that_point_elsewhere_are_forbidden() {
        let ring = ring();
        for (name, value) in [
            ("jku", json!("https://evil.example/jwks.json")),
            ("x5u", json!("https://evil.example/cert.pem")),
            ("jwk", json!({"kty": "OKP", "crv": "Ed25519", "x": "AAAA"})),
            ("x5c", json!(["MIIB"])),
            ("crit", json!(["exp"])),
            ("jku", json!(null)),
        ] {
            let token = signed(&ring, &with_header(&ring, name, value), &claims_json());
            match refused(&ring, &token) {
                TokenError::ForbiddenHeader(n) => assert_eq!(n, name),
                other => panic!("{name}: {other:?}"),
            }
        }
    }

    #[test]
    fn typ_jwt_instead_of_at_jwt_is_the_wrong_type() {
        let ring = ring();
        for typ in [
            json!("JWT"),
            json!("AT+JWT"),
            json!("application/jwt"),
            json!(null),
        ] {
            let token = signed(
                &ring,
                &with_header(&ring, "typ", typ.clone()),
                &claims_json(),
            );
            assert_eq!(refused(&ring, &token), TokenError::WrongType, "{typ}");
        }
        let mut h = header_json(&ring);
        h.as_object_mut().unwrap().remove("typ");
        assert_eq!(
            refused(&ring, &signed(&ring, &h, &claims_json())),
            TokenError::WrongType
        );
    }

    #[test]
    fn missing_sub_sid_or_jti_is_invalid() {
        let ring = ring();
        for claim in ["sub", "sid", "jti"] {
            let token = signed(&ring, &header_json(&ring), &without_claim(claim));
            assert_eq!(
                refused(&ring, &token),
                TokenError::InvalidClaims,
                "missing {claim}"
            );
            let token = signed(&ring, &header_json(&ring), &with_claim(claim, json!("")));
            assert_eq!(
                refused(&ring, &token),
                TokenError::InvalidClaims,
                "empty {claim}"
            );
        }
    }

    #[test]
    fn non_json_segments_are_malformed() {
        let ring = ring();
        for token in [
            "..",
            "a.b.c",
            &format!("{}.{}.", b64("{"), b64("{}")),
            ".....",
        ] {
            assert_eq!(refused(&ring, token), TokenError::Malformed, "{token}");
        }
        let header = header_json(&ring).to_string();
        let token = ring.sign_raw(header.as_bytes(), b"not json");
        assert_eq!(refused(&ring, &token), TokenError::Malformed);
    }

    #[test]
    fn arbitrary_short_inputs_never_panic() {
        let ring = ring();
        let kid = ring.active_kid();
        let header = b64(format!(r#"{{"alg":"EdDSA","typ":"at+jwt","kid":"{kid}"}}"#));
        for sig in [
            "",
            "A",
            "AA",
            "AAA",
            "AAAA",
            &"A".repeat(86),
            &"A".repeat(200),
            "====",
            "é",
        ] {
            let token = format!("{header}.{}.{sig}", b64(claims_json().to_string()));
            let err = refused(&ring, &token);
            assert!(matches!(err, TokenError::BadSignature), "{sig}: {err:?}");
        }
    }

    #[test]
    fn a_signed_token_carries_exactly_alg_typ_and_kid_in_its_header() {
        let ring = ring();
        let token = ring
            .sign(&AccessClaims {
                iss: "session-server".into(),
                aud: "session-server".into(),
                sub: "u".into(),
                sid: "s".into(),
                iat: NOW.unix_timestamp(),
                exp: NOW.unix_timestamp() + 60,
                nbf: None,
                jti: "j".into(),
                client_id: None,
                auth_time: None,
                cnf: None,
            })
            .unwrap();
        let head = token.split('.').next().unwrap();
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(head).unwrap()).unwrap();
        assert_eq!(
            header,
            json!({"alg": "EdDSA", "typ": "at+jwt", "kid": ring.active_kid()})
        );
    }

    #[test]
    fn a_bound_token_carries_cnf_jkt_and_it_verifies_back() {
        let ring = ring();
        let jkt = crate::dpop::Jkt::from_digest([9; 32]);
        let claims = AccessClaims {
            iss: "session-server".into(),
            aud: "session-server".into(),
            sub: "u".into(),
            sid: "s".into(),
            iat: NOW.unix_timestamp(),
            exp: NOW.unix_timestamp() + 60,
            nbf: None,
            jti: "j".into(),
            client_id: None,
            auth_time: None,
            cnf: Some(Confirmation { jkt: jkt.clone() }),
        };
        let token = ring.sign(&claims).unwrap();
        let payload = token.split('.').nth(1).unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        assert_eq!(json["cnf"], json!({"jkt": jkt.as_str()}));
        assert_eq!(
            ring.verify(&token, NOW).unwrap().cnf,
            Some(Confirmation { jkt })
        );
        let bad = signed(
            &ring,
            &header_json(&ring),
            &with_claim("cnf", json!({"jkt": "short"})),
        );
        assert_eq!(refused(&ring, &bad), TokenError::InvalidClaims);
    }

    #[test]
    fn generated_kids_are_url_safe_and_unique() {
        let a = ring().active_kid();
        let b = ring().active_kid();
        assert_ne!(a, b);
        assert!(kid_is_well_formed(&a));
        assert!(a.len() >= 16);
    }
}
