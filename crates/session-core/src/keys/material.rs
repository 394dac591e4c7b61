//! Key material: the algorithms, one key's private and public halves with
//! everything signing and verification need built once, and key ids.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{DecodingKey, EncodingKey};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::stored::STORED_KEYS_VERSION;
use super::token::ACCESS_TOKEN_TYPE;
use crate::secret::{os_rng, random_bytes};

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

/// Longest accepted `kid`.
pub const MAX_KID_LEN: usize = 64;
/// Shortest HS256 secret, in bytes.
pub const MIN_HS256_SECRET_LEN: usize = 32;

/// Random bytes in a generated `kid`.
const KID_BYTES: usize = 16;

impl SigningAlgorithm {
    /// The JOSE `alg` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EdDSA => "EdDSA",
            Self::ES256 => "ES256",
            Self::HS256 => "HS256",
        }
    }

    pub(super) fn jwt(self) -> jsonwebtoken::Algorithm {
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
pub(super) enum MaterialError {
    #[error("key material is not valid base64")]
    Base64(#[source] base64::DecodeError),
    #[error("EdDSA key is not a valid PKCS#8 Ed25519 private key")]
    Ed25519(#[source] aws_lc_rs::error::KeyRejected),
    #[error("ES256 key is not a valid PKCS#8 P-256 private key")]
    P256(#[source] aws_lc_rs::error::KeyRejected),
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
pub(super) struct Material(pub(super) Zeroizing<Vec<u8>>);

impl fmt::Debug for Material {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A parsed asymmetric private key, held by aws-lc (which cleanses a key's
/// memory when it frees it). aws-lc signs Ed25519 in ~11 µs where
/// ed25519-dalek takes ~29 µs (BENCHMARKS.md "One crypto backend"), and it
/// is the backend jsonwebtoken and rustls already use here.
enum Signer {
    Ed25519(aws_lc_rs::signature::Ed25519KeyPair),
    P256(aws_lc_rs::signature::EcdsaKeyPair),
}

/// One key of the ring, with everything verification needs built once.
pub(super) struct Key {
    pub(super) kid: String,
    pub(super) alg: SigningAlgorithm,
    pub(super) created_at: OffsetDateTime,
    /// Signs from then on, until its successor's activation.
    pub(super) activates_at: OffsetDateTime,
    /// Taken out at once (a suspected compromise): never verifies again.
    pub(super) revoked_at: Option<OffsetDateTime>,
    pub(super) material: Material,
    pub(super) encoding: EncodingKey,
    /// The parsed private key, so signing does not re-read PKCS#8 and
    /// re-derive the public point on every token (jsonwebtoken's
    /// `crypto::sign` does both); `None` for HS256, which signs through
    /// `encoding`.
    signer: Option<Signer>,
    pub(super) decoding: DecodingKey,
    /// The base64url of this key's JWS header, the same for every token.
    pub(super) header_b64: String,
    pub(super) public_jwk: Option<serde_json::Value>,
    /// The raw public key (Ed25519: 32 bytes; P-256: the uncompressed SEC1
    /// point), kept in the archive once the key is dropped; `None` for HS256.
    pub(super) public: Option<Vec<u8>>,
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
    pub(super) fn sign(&self, message: &[u8]) -> Result<String, KeyError> {
        match &self.signer {
            Some(Signer::Ed25519(sk)) => Ok(URL_SAFE_NO_PAD.encode(sk.sign(message))),
            Some(Signer::P256(sk)) => {
                // aws-lc draws the nonce from its own CSPRNG; the argument
                // is only there for the ring-compatible signature.
                let signature = sk
                    .sign(&aws_lc_rs::rand::SystemRandom::new(), message)
                    .map_err(|e| KeyError::Sign(Box::new(e)))?;
                Ok(URL_SAFE_NO_PAD.encode(signature))
            }
            None => jsonwebtoken::crypto::sign(message, &self.encoding, self.alg.jwt())
                .map_err(|e| KeyError::Sign(Box::new(e))),
        }
    }

    /// Builds a key from its private material; derives the public half,
    /// the JWK and the header once.
    pub(super) fn from_material(
        kid: String,
        alg: SigningAlgorithm,
        material: Zeroizing<Vec<u8>>,
        created_at: OffsetDateTime,
    ) -> Result<Self, KeyError> {
        let (encoding, public, signer) = match alg {
            SigningAlgorithm::EdDSA => {
                use aws_lc_rs::signature::KeyPair as _;
                // PKCS#8 v1 (what OpenSSL writes) or v2 (what this crate
                // writes); a v2 document's public key must match its
                // private key.
                let sk = aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8(&material)
                    .map_err(MaterialError::Ed25519)?;
                (
                    EncodingKey::from_ed_der(&material),
                    Some(sk.public_key().as_ref().to_vec()),
                    Some(Signer::Ed25519(sk)),
                )
            }
            SigningAlgorithm::ES256 => {
                use aws_lc_rs::signature::KeyPair as _;
                let sk = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
                    &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    &material,
                )
                .map_err(MaterialError::P256)?;
                (
                    EncodingKey::from_ec_der(&material),
                    Some(sk.public_key().as_ref().to_vec()),
                    Some(Signer::P256(sk)),
                )
            }
            SigningAlgorithm::HS256 => {
                if material.len() < MIN_HS256_SECRET_LEN {
                    return Err(KeyError::WeakSecret);
                }
                let encoding = EncodingKey::from_secret(&material)
                    .map_err(|e| KeyError::InvalidKey(Box::new(e)))?;
                (encoding, None, None)
            }
        };
        let (decoding, public_jwk) = match &public {
            Some(public) => {
                let (decoding, jwk) = public_key(alg, &kid, public)?;
                (decoding, Some(jwk))
            }
            None => (
                DecodingKey::from_secret(&material)
                    .map_err(|e| KeyError::InvalidKey(Box::new(e)))?,
                None,
            ),
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
    pub(super) fn generate(
        alg: SigningAlgorithm,
        now: OffsetDateTime,
        secret: Option<&[u8]>,
    ) -> Result<Self, KeyError> {
        let material = match alg {
            SigningAlgorithm::EdDSA => {
                use ed25519_dalek::pkcs8::EncodePrivateKey as _;
                let sk = ed25519_dalek::SigningKey::generate(&mut os_rng());
                let der = sk
                    .to_pkcs8_der()
                    .map_err(|e| KeyError::InvalidKey(Box::new(e)))?;
                Zeroizing::new(der.as_bytes().to_vec())
            }
            SigningAlgorithm::ES256 => {
                use p256::elliptic_curve::Generate as _;
                use p256::pkcs8::EncodePrivateKey as _;
                let sk = p256::ecdsa::SigningKey::generate_from_rng(&mut os_rng());
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
}

/// Whole seconds, so that a key's activation compares the same against a
/// token's `iat` as against the clock.
pub(super) fn whole_seconds(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).unwrap_or(t)
}

fn new_kid() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes::<KID_BYTES>())
}

/// Whether `kid` is 1..=64 characters of `[A-Za-z0-9_-]`.
pub(super) fn kid_is_well_formed(kid: &str) -> bool {
    (1..=MAX_KID_LEN).contains(&kid.len())
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The verifying key and public JWK of an asymmetric key from its raw
/// public half (Ed25519: 32 bytes; P-256: an uncompressed SEC1 point),
/// which is checked to be a valid point first.
pub(super) fn public_key(
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

pub(super) fn configured_secret(
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

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn an_openssl_style_v1_ed25519_key_loads_and_a_v2_key_with_a_foreign_public_half_does_not() {
        use ed25519_dalek::pkcs8::{EncodePrivateKey as _, KeypairBytes, PublicKeyBytes};

        let now = datetime!(2026-01-01 00:00 UTC);
        let seed = [7u8; 32];
        let public = ed25519_dalek::SigningKey::from_bytes(&seed)
            .verifying_key()
            .to_bytes();
        // RFC 8410's v1 form, as `openssl genpkey -algorithm ed25519` writes it.
        let mut v1 = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        v1.extend_from_slice(&seed);
        let key = Key::from_material(
            "v1".into(),
            SigningAlgorithm::EdDSA,
            Zeroizing::new(v1),
            now,
        )
        .unwrap();
        assert_eq!(key.public.as_deref(), Some(&public[..]));

        let v2 = |public| {
            let der = KeypairBytes {
                secret_key: seed,
                public_key: Some(PublicKeyBytes(public)),
            }
            .to_pkcs8_der()
            .unwrap();
            Zeroizing::new(der.as_bytes().to_vec())
        };
        let own = Key::from_material("v2".into(), SigningAlgorithm::EdDSA, v2(public), now);
        assert_eq!(own.unwrap().public.as_deref(), Some(&public[..]));
        let foreign = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32])
            .verifying_key()
            .to_bytes();
        let refused = Key::from_material("v2".into(), SigningAlgorithm::EdDSA, v2(foreign), now);
        assert!(
            refused.is_err(),
            "a v2 key whose public half is not its own"
        );
    }

    #[test]
    fn generated_kids_are_url_safe_and_unique() {
        let now = datetime!(2026-01-01 00:00 UTC);
        let a = Key::generate(SigningAlgorithm::EdDSA, now, None)
            .unwrap()
            .kid;
        let b = Key::generate(SigningAlgorithm::EdDSA, now, None)
            .unwrap()
            .kid;
        assert_ne!(a, b);
        assert!(kid_is_well_formed(&a));
        assert!(a.len() >= 16);
    }
}
