//! Signing keys, access tokens (JWT) and JWKS.
//!
//! SKELETON: the API below is fixed; the bodies are being written.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

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

/// Lifecycle of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    /// Signs new tokens.
    Active,
    /// Verifies tokens it signed until they have all expired.
    Retired,
}

/// Public facts about one key.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeyInfo {
    /// Key id.
    pub kid: String,
    /// Algorithm.
    pub alg: SigningAlgorithm,
    /// Active or retired.
    pub state: KeyState,
    /// Created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Retired (when it is).
    #[serde(with = "time::serde::rfc3339::option")]
    pub retired_at: Option<OffsetDateTime>,
    /// Kept for verification until.
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// Public JWK (none for HS256).
    pub public_jwk: Option<serde_json::Value>,
}
