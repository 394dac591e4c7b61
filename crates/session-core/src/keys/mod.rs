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
//!
//! - `token`: the claims, the verifier's policy and the strict checks;
//! - `material`: the algorithms and one key's material, built once;
//! - `stored`: the persisted document ([`StoredKeys`]) and its archive;
//! - `ring`: the [`KeyRing`] and its key lifecycle;
//! - `jwks`: [`PublicKeySet`], the same checks against someone else's JWKS.

mod jwks;
mod material;
mod ring;
mod stored;
mod token;

pub use jwks::{JwksError, PublicKeySet};
pub use material::{KeyError, MAX_KID_LEN, MIN_HS256_SECRET_LEN, SigningAlgorithm};
pub use ring::{
    ArchivedKeyInfo, DetachedError, KeyInfo, KeyRing, KeySchedule, KeyState, RotateError,
};
pub use stored::StoredKeys;
pub use token::{
    ACCESS_TOKEN_TYPE, AccessClaims, Confirmation, MAX_ACCESS_TOKEN_LEN, MAX_LEEWAY, TokenError,
    VerifyPolicy,
};
