//! DPoP proofs (RFC 9449): parsing and checking a proof JWT, and the
//! RFC 7638 thumbprint (`jkt`) of the key that signed it.
//!
//! No I/O and no clock: the request's method and URL, the access token it
//! carries and the time are parameters. Checks, in order: length (before
//! any parsing); three segments of strict base64url; a header with `typ`
//! `dpop+jwt`, `alg` `ES256` or `EdDSA` and a public `jwk` of the matching
//! type (P-256 or Ed25519; any private member or a symmetric key is
//! refused), nothing that points elsewhere (`jku`, `x5u`, `x5c`, `crit`);
//! the signature under that `jwk`; then the claims: `jti` (bounded), `htm`,
//! `htu` (compared after RFC 3986 normalisation, query and fragment
//! ignored), `iat` within [`IAT_WINDOW`], `ath` when an access token is
//! presented. Duplicate keys anywhere are refused. Whether a `jti` was
//! seen before is the store's question ([`VerifiedProof::replay_key`]).
//!
//! ```
//! use session_core::dpop::{ProofError, RequestFacts, verify_proof};
//! let facts = RequestFacts {
//!     method: "POST",
//!     urls: &["https://auth.example/v1/auth/login"],
//!     access_token: None,
//!     now: time::OffsetDateTime::UNIX_EPOCH,
//! };
//! assert_eq!(verify_proof("not.a.proof", &facts).unwrap_err(), ProofError::Malformed);
//! ```

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;
use time::{Duration, OffsetDateTime};

use crate::jws::{self, SplitError};

/// Longest accepted proof, checked before any parsing.
pub const MAX_PROOF_LEN: usize = 4096;
/// Longest accepted `jti`.
pub const MAX_JTI_LEN: usize = 256;
/// Longest accepted `nonce`.
pub const MAX_NONCE_LEN: usize = 256;
/// How far `iat` may be from now, either way.
pub const IAT_WINDOW: Duration = Duration::seconds(60);
/// The one `typ` a proof may carry.
pub const PROOF_TYPE: &str = "dpop+jwt";
/// The algorithms accepted, as `WWW-Authenticate` lists them.
pub const ALGORITHMS: &str = "ES256 EdDSA";
/// Length of a thumbprint: base64url of 32 bytes, unpadded.
pub const JKT_LEN: usize = 43;

/// Largest decoded size of a segment of a proof within [`MAX_PROOF_LEN`].
const MAX_SEGMENT_BYTES: usize = jws::max_segment_bytes(MAX_PROOF_LEN);

/// Why a proof was refused. Carries no part of the proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// Longer than [`MAX_PROOF_LEN`].
    #[error("proof too long")]
    TooLong,
    /// Not three strict base64url segments of JSON objects.
    #[error("malformed proof")]
    Malformed,
    /// `typ` other than `dpop+jwt`.
    #[error("wrong proof type")]
    WrongType,
    /// `alg` other than `ES256` / `EdDSA` (`none`, `HS256`, …).
    #[error("algorithm not accepted")]
    AlgorithmNotAccepted,
    /// A header that points the verifier elsewhere (`jku`, `x5u`, `x5c`, `crit`).
    #[error("forbidden header {0}")]
    ForbiddenHeader(&'static str),
    /// `jwk` missing, not a P-256 / Ed25519 public key, or not matching `alg`.
    #[error("invalid jwk")]
    InvalidKey,
    /// `jwk` holds private or symmetric key material.
    #[error("jwk holds private key material")]
    PrivateKey,
    /// The signature does not verify under the `jwk`.
    #[error("bad signature")]
    BadSignature,
    /// A required claim is missing, of the wrong type or out of bounds.
    #[error("invalid claims")]
    InvalidClaims,
    /// `htm` is not this request's method.
    #[error("htm does not match the request method")]
    MethodMismatch,
    /// `htu` is not this request's URL.
    #[error("htu does not match the request URL")]
    UrlMismatch,
    /// `iat` further than [`IAT_WINDOW`] from now.
    #[error("iat outside the accepted window")]
    IatOutOfWindow,
    /// `ath` missing or not the hash of the presented access token.
    #[error("ath does not match the access token")]
    AthMismatch,
}

/// An RFC 7638 JWK SHA-256 thumbprint: 43 characters of base64url.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Jkt(String);

impl Jkt {
    /// Parses a thumbprint: exactly 43 characters of unpadded base64url that
    /// decode canonically to 32 bytes.
    pub fn parse(s: &str) -> Option<Jkt> {
        if s.len() != JKT_LEN {
            return None;
        }
        let mut out = [0u8; 33];
        match URL_SAFE_NO_PAD.decode_slice(s.as_bytes(), &mut out) {
            Ok(32) => Some(Jkt(s.to_owned())),
            _ => None,
        }
    }

    /// The thumbprint whose SHA-256 digest is `digest`.
    pub fn from_digest(digest: [u8; 32]) -> Jkt {
        Jkt(URL_SAFE_NO_PAD.encode(digest))
    }

    /// The thumbprint text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn of_canonical_json(json: &str) -> Jkt {
        Jkt::from_digest(Sha256::digest(json.as_bytes()).into())
    }
}

impl fmt::Debug for Jkt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Jkt({})", self.0)
    }
}

impl fmt::Display for Jkt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Jkt {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Jkt::parse(&s).ok_or_else(|| "not a 43-character base64url SHA-256 thumbprint".to_owned())
    }
}

impl From<Jkt> for String {
    fn from(j: Jkt) -> String {
        j.0
    }
}

/// What the proof must match: this request.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// The request method (`GET`, `POST`, …), compared exactly.
    pub method: &'a str,
    /// The URLs this request may be known by (scheme, host, path; query and
    /// fragment are ignored); `htu` must equal one of them after RFC 3986
    /// normalisation.
    pub urls: &'a [&'a str],
    /// The access token presented with the proof, if any: `ath` must then
    /// be its base64url SHA-256.
    pub access_token: Option<&'a str>,
    /// Now.
    pub now: OffsetDateTime,
}

/// A proof that passed every check.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifiedProof {
    /// Thumbprint of the key that signed it.
    pub jkt: Jkt,
    /// `iat`.
    pub iat: OffsetDateTime,
    /// `nonce`, when the proof carries one (the server compares it).
    pub nonce: Option<String>,
    /// SHA-256 over the thumbprint and the `jti`: what a replay set keeps.
    pub replay_key: [u8; 32],
    /// Until when the proof could be accepted: a replay set must remember
    /// `replay_key` at least this long.
    pub remember_until: OffsetDateTime,
}

impl fmt::Debug for VerifiedProof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifiedProof")
            .field("jkt", &self.jkt)
            .field("iat", &self.iat)
            .finish_non_exhaustive()
    }
}

/// The base64url SHA-256 of an access token: the `ath` a proof sent with it carries.
pub fn access_token_hash(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()))
}

/// Checks a proof against this request; see the module documentation.
pub fn verify_proof(proof: &str, facts: &RequestFacts<'_>) -> Result<VerifiedProof, ProofError> {
    let jws = jws::split_jws(proof, MAX_PROOF_LEN).map_err(|e| match e {
        SplitError::TooLong => ProofError::TooLong,
        SplitError::Malformed => ProofError::Malformed,
    })?;

    let mut buf = [0u8; MAX_SEGMENT_BYTES];
    let n = decode_segment(jws.header, &mut buf)?;
    let header: RawHeader = serde_json::from_slice(&buf[..n]).map_err(|_| ProofError::Malformed)?;
    if header.typ.as_deref() != Some(PROOF_TYPE) {
        return Err(ProofError::WrongType);
    }
    let alg = match header.alg.as_deref() {
        Some("ES256") => Alg::Es256,
        Some("EdDSA") => Alg::EdDsa,
        _ => return Err(ProofError::AlgorithmNotAccepted),
    };
    if let Some(name) = header.forbidden() {
        return Err(ProofError::ForbiddenHeader(name));
    }
    let jwk = header.jwk.ok_or(ProofError::InvalidKey)?;
    let key = ParsedKey::of_jwk(&jwk, alg)?;

    let mut sig = [0u8; 65];
    let sig_len = jws::decode_segment(jws.signature, &mut sig).ok_or(ProofError::BadSignature)?;
    key.key.verify(
        jws.signing_input.as_bytes(),
        sig.get(..sig_len).ok_or(ProofError::BadSignature)?,
    )?;

    let n = decode_segment(jws.payload, &mut buf)?;
    let claims: RawClaims = serde_json::from_slice(&buf[..n]).map_err(|e| {
        if e.is_data() {
            ProofError::InvalidClaims
        } else {
            ProofError::Malformed
        }
    })?;
    let (Some(jti), Some(htm), Some(htu), Some(iat)) =
        (claims.jti, claims.htm, claims.htu, claims.iat)
    else {
        return Err(ProofError::InvalidClaims);
    };
    if jti.is_empty() || jti.len() > MAX_JTI_LEN {
        return Err(ProofError::InvalidClaims);
    }
    if claims
        .nonce
        .as_ref()
        .is_some_and(|n| n.is_empty() || n.len() > MAX_NONCE_LEN)
    {
        return Err(ProofError::InvalidClaims);
    }
    if htm != facts.method {
        return Err(ProofError::MethodMismatch);
    }
    let htu = normalise_url(&htu).ok_or(ProofError::UrlMismatch)?;
    if !facts
        .urls
        .iter()
        .any(|u| normalise_url(u).is_some_and(|u| u == htu))
    {
        return Err(ProofError::UrlMismatch);
    }
    let now = facts.now.unix_timestamp();
    let window = IAT_WINDOW.whole_seconds();
    if iat < now.saturating_sub(window) || iat > now.saturating_add(window) {
        return Err(ProofError::IatOutOfWindow);
    }
    let iat = OffsetDateTime::from_unix_timestamp(iat).map_err(|_| ProofError::IatOutOfWindow)?;
    if let Some(token) = facts.access_token {
        let expected = access_token_hash(token);
        let ok = claims
            .ath
            .as_ref()
            .is_some_and(|ath| bool::from(ath.as_bytes().ct_eq(expected.as_bytes())));
        if !ok {
            return Err(ProofError::AthMismatch);
        }
    }

    let jkt = key.jkt.clone();
    let mut h = Sha256::new();
    h.update(b"dpop-jti\0");
    h.update(jkt.as_str().as_bytes());
    h.update([0]);
    h.update(jti.as_bytes());
    Ok(VerifiedProof {
        jkt,
        iat,
        nonce: claims.nonce,
        replay_key: h.finalize().into(),
        remember_until: iat + IAT_WINDOW + Duration::seconds(1),
    })
}

fn decode_segment(segment: &str, out: &mut [u8]) -> Result<usize, ProofError> {
    jws::decode_segment(segment, out).ok_or(ProofError::Malformed)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Alg {
    Es256,
    EdDsa,
}

/// A proof's public key, parsed once by aws-lc (the workspace's one
/// signature backend: it verifies ES256 about five times faster than the
/// `p256` crate, and Ed25519 as fast as ed25519-dalek), with the raw
/// coordinates its thumbprint is made of.
struct PublicKey {
    parsed: aws_lc_rs::signature::ParsedPublicKey,
    bytes: KeyBytes,
}

/// Decodes a base64url coordinate of exactly 32 bytes.
fn coordinate(v: Option<&str>) -> Result<[u8; 32], ProofError> {
    let v = v.ok_or(ProofError::InvalidKey)?;
    let mut out = [0u8; 33];
    match URL_SAFE_NO_PAD.decode_slice(v.as_bytes(), &mut out) {
        Ok(32) => {
            let mut c = [0u8; 32];
            c.copy_from_slice(&out[..32]);
            Ok(c)
        }
        _ => Err(ProofError::InvalidKey),
    }
}

/// A `jwk`'s public key as raw coordinates: what the parsed key and its
/// thumbprint are a pure function of.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum KeyBytes {
    P256 { x: [u8; 32], y: [u8; 32] },
    Ed25519([u8; 32]),
}

impl KeyBytes {
    /// Checks the `jwk`'s members against `alg` and decodes its coordinates.
    fn of_jwk(jwk: &RawJwk, alg: Alg) -> Result<Self, ProofError> {
        if jwk.has_private_member() {
            return Err(ProofError::PrivateKey);
        }
        match (alg, jwk.kty.as_deref(), jwk.crv.as_deref()) {
            (Alg::Es256, Some("EC"), Some("P-256")) => Ok(Self::P256 {
                x: coordinate(jwk.x.as_deref())?,
                y: coordinate(jwk.y.as_deref())?,
            }),
            (Alg::EdDsa, Some("OKP"), Some("Ed25519")) => {
                if jwk.y.is_some() {
                    return Err(ProofError::InvalidKey);
                }
                Ok(Self::Ed25519(coordinate(jwk.x.as_deref())?))
            }
            _ => Err(ProofError::InvalidKey),
        }
    }
}

/// A proof's key, parsed and checked, with its thumbprint.
struct ParsedKey {
    key: PublicKey,
    jkt: Jkt,
}

/// Keys parsed per thread, so a client that sends a proof with every
/// request pays for decoding its point (a square root on the curve for
/// Ed25519) and hashing its thumbprint once, not per request. Keyed by the
/// raw coordinates, of which both are pure functions, so a hit gives the
/// very answer a miss would; a key that fails to parse is never stored.
/// Bounded: when full it is emptied, so a flood of one-off keys costs what
/// it would cost without a cache and no more memory than this.
const PARSED_KEYS_PER_THREAD: usize = 1024;

thread_local! {
    static PARSED_KEYS: std::cell::RefCell<std::collections::HashMap<KeyBytes, std::rc::Rc<ParsedKey>>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

impl ParsedKey {
    fn of_jwk(jwk: &RawJwk, alg: Alg) -> Result<std::rc::Rc<Self>, ProofError> {
        let bytes = KeyBytes::of_jwk(jwk, alg)?;
        if let Some(hit) = PARSED_KEYS.with_borrow(|keys| keys.get(&bytes).cloned()) {
            return Ok(hit);
        }
        let key = PublicKey::from_bytes(bytes)?;
        let parsed = std::rc::Rc::new(Self {
            jkt: key.thumbprint(),
            key,
        });
        PARSED_KEYS.with_borrow_mut(|keys| {
            if keys.len() >= PARSED_KEYS_PER_THREAD {
                keys.clear();
            }
            keys.insert(bytes, std::rc::Rc::clone(&parsed));
        });
        Ok(parsed)
    }
}

impl PublicKey {
    fn from_bytes(bytes: KeyBytes) -> Result<Self, ProofError> {
        use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, ED25519, ParsedPublicKey};
        let parsed = match bytes {
            KeyBytes::P256 { x, y } => {
                let mut point = [0u8; 65];
                point[0] = 4;
                point[1..33].copy_from_slice(&x);
                point[33..].copy_from_slice(&y);
                // Parsing checks that the point is on the curve.
                ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
            }
            KeyBytes::Ed25519(x) => {
                // aws-lc takes any 32 bytes; refuse what does not decode to
                // a point and the small-order (weak) keys here.
                let key = ed25519_dalek::VerifyingKey::from_bytes(&x)
                    .map_err(|_| ProofError::InvalidKey)?;
                if key.is_weak() {
                    return Err(ProofError::InvalidKey);
                }
                ParsedPublicKey::new(&ED25519, x)
            }
        }
        .map_err(|_| ProofError::InvalidKey)?;
        Ok(Self { parsed, bytes })
    }

    fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), ProofError> {
        // ES256 is the 64-byte r || s form; Ed25519 64 bytes. Anything else
        // is refused before the backend sees it.
        if signature.len() != 64 {
            return Err(ProofError::BadSignature);
        }
        self.parsed
            .verify_sig(message, signature)
            .map_err(|_| ProofError::BadSignature)
    }

    /// RFC 7638: SHA-256 of the required members, in lexicographic order,
    /// without whitespace.
    fn thumbprint(&self) -> Jkt {
        match &self.bytes {
            KeyBytes::P256 { x, y } => Jkt::of_canonical_json(&format!(
                r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
                URL_SAFE_NO_PAD.encode(x),
                URL_SAFE_NO_PAD.encode(y)
            )),
            KeyBytes::Ed25519(x) => Jkt::of_canonical_json(&format!(
                r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
                URL_SAFE_NO_PAD.encode(x)
            )),
        }
    }
}

/// The RFC 7638 thumbprint of a public JWK given as JSON (P-256 or Ed25519
/// only), e.g. for a backend that checked a proof itself. `None` for any
/// other key, or one with private members.
pub fn thumbprint_of_jwk(jwk: &serde_json::Value) -> Option<Jkt> {
    let raw: RawJwk = serde_json::from_value(jwk.clone()).ok()?;
    let alg = match raw.kty.as_deref() {
        Some("EC") => Alg::Es256,
        Some("OKP") => Alg::EdDsa,
        _ => return None,
    };
    KeyBytes::of_jwk(&raw, alg)
        .and_then(PublicKey::from_bytes)
        .ok()
        .map(|k| k.thumbprint())
}

/// Normalises an absolute `http`/`https` URL for comparison (RFC 3986
/// §6.2.2 and §6.2.3, as RFC 9449 §4.3 asks): lower-case scheme and host,
/// default port dropped, empty path as `/`, percent-encoding of unreserved
/// characters decoded and hex digits upper-cased, dot segments removed;
/// query and fragment dropped. `None` for anything else (relative, other
/// schemes, user info, bad percent-encoding, non-ASCII).
pub fn normalise_url(url: &str) -> Option<String> {
    if !url.is_ascii() || url.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return None;
    }
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => "80",
        "https" => "443",
        _ => return None,
    };
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let authority = authority.to_ascii_lowercase();
    let (host, port) = match authority.rsplit_once(':') {
        // `[::1]:8080` or `host:8080`; a bare IPv6 literal has no port.
        Some((h, p)) if !p.contains(']') => (h, Some(p)),
        _ => (authority.as_str(), None),
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        Some("") | None => None,
        Some(p) if p.bytes().all(|b| b.is_ascii_digit()) && p.len() <= 5 => {
            let n: u32 = p.parse().ok()?;
            if n > 65_535 {
                return None;
            }
            (n.to_string() != default_port).then(|| n.to_string())
        }
        Some(_) => return None,
    };
    let path = normalise_path(if path.is_empty() { "/" } else { path })?;
    let mut out = format!("{scheme}://{host}");
    if let Some(p) = port {
        out.push(':');
        out.push_str(&p);
    }
    out.push_str(&path);
    Some(out)
}

fn normalise_path(path: &str) -> Option<String> {
    // Percent-encoding: decode unreserved, upper-case the rest.
    let bytes = path.as_bytes();
    let mut decoded = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = path.get(i + 1..i + 3)?;
            let v = u8::from_str_radix(hex, 16).ok()?;
            if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~') {
                decoded.push(char::from(v));
            } else {
                decoded.push('%');
                decoded.push_str(&hex.to_ascii_uppercase());
            }
            i += 3;
        } else {
            decoded.push(char::from(bytes[i]));
            i += 1;
        }
    }
    // Dot segments (RFC 3986 §5.2.4), on whole segments.
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = decoded.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "." => {
                if i == last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if i == last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    Some(format!("/{}", out.join("/")))
}

// ---------------------------------------------------------------------------
// Wire shapes. Derived `Deserialize` refuses duplicate known fields.
// ---------------------------------------------------------------------------

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
struct RawHeader {
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default)]
    jwk: Option<RawJwk>,
    #[serde(default)]
    jku: Present,
    #[serde(default)]
    x5u: Present,
    #[serde(default)]
    x5c: Present,
    #[serde(default)]
    crit: Present,
}

impl RawHeader {
    fn forbidden(&self) -> Option<&'static str> {
        [
            (self.jku.0, "jku"),
            (self.x5u.0, "x5u"),
            (self.x5c.0, "x5c"),
            (self.crit.0, "crit"),
        ]
        .into_iter()
        .find_map(|(present, name)| present.then_some(name))
    }
}

#[derive(Deserialize)]
struct RawJwk {
    #[serde(default)]
    kty: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
    // Private (EC, OKP, RSA) and symmetric members: any of them refuses the key.
    #[serde(default)]
    d: Present,
    #[serde(default)]
    p: Present,
    #[serde(default)]
    q: Present,
    #[serde(default)]
    dp: Present,
    #[serde(default)]
    dq: Present,
    #[serde(default)]
    qi: Present,
    #[serde(default)]
    oth: Present,
    #[serde(default)]
    k: Present,
}

impl RawJwk {
    fn has_private_member(&self) -> bool {
        [
            &self.d, &self.p, &self.q, &self.dp, &self.dq, &self.qi, &self.oth, &self.k,
        ]
        .iter()
        .any(|m| m.0)
            || self.kty.as_deref() == Some("oct")
    }
}

#[derive(Deserialize)]
struct RawClaims {
    #[serde(default)]
    jti: Option<String>,
    #[serde(default)]
    htm: Option<String>,
    #[serde(default)]
    htu: Option<String>,
    #[serde(default)]
    iat: Option<i64>,
    #[serde(default)]
    ath: Option<String>,
    #[serde(default)]
    nonce: Option<String>,
}

#[cfg(test)]
mod tests {
    //! Proofs are signed here with the same crates the module verifies
    //! with; the server's tests use proofs made by an independent
    //! implementation (Python `cryptography`).

    use super::*;
    use p256::elliptic_curve::Generate as _;
    use proptest::prelude::*;
    use serde_json::{Value, json};
    use time::macros::datetime;

    use crate::secret::os_rng;

    const NOW: OffsetDateTime = datetime!(2026-01-01 00:00 UTC);
    const URL: &str = "https://auth.example/v1/auth/refresh";

    enum Signer {
        Ec(p256::ecdsa::SigningKey),
        Ed(ed25519_dalek::SigningKey),
    }

    impl Signer {
        fn ec() -> Self {
            Self::Ec(p256::ecdsa::SigningKey::generate_from_rng(&mut os_rng()))
        }
        fn ed() -> Self {
            Self::Ed(ed25519_dalek::SigningKey::generate(&mut os_rng()))
        }
        fn alg(&self) -> &'static str {
            match self {
                Self::Ec(_) => "ES256",
                Self::Ed(_) => "EdDSA",
            }
        }
        fn jwk(&self) -> Value {
            match self {
                Self::Ec(k) => {
                    let p = k.verifying_key().to_sec1_point(false);
                    json!({"kty": "EC", "crv": "P-256",
                        "x": URL_SAFE_NO_PAD.encode(p.x().unwrap()),
                        "y": URL_SAFE_NO_PAD.encode(p.y().unwrap())})
                }
                Self::Ed(k) => json!({"kty": "OKP", "crv": "Ed25519",
                    "x": URL_SAFE_NO_PAD.encode(k.verifying_key().as_bytes())}),
            }
        }
        fn header(&self) -> Value {
            json!({"typ": "dpop+jwt", "alg": self.alg(), "jwk": self.jwk()})
        }
        fn sign_raw(&self, header: &str, claims: &str) -> String {
            let mut t = URL_SAFE_NO_PAD.encode(header);
            t.push('.');
            t.push_str(&URL_SAFE_NO_PAD.encode(claims));
            let sig = match self {
                Self::Ec(k) => {
                    use p256::ecdsa::signature::Signer as _;
                    let s: p256::ecdsa::Signature = k.sign(t.as_bytes());
                    s.to_bytes().to_vec()
                }
                Self::Ed(k) => {
                    use ed25519_dalek::Signer as _;
                    k.sign(t.as_bytes()).to_bytes().to_vec()
                }
            };
            t.push('.');
            t.push_str(&URL_SAFE_NO_PAD.encode(sig));
            t
        }
        fn sign(&self, header: &Value, claims: &Value) -> String {
            self.sign_raw(&header.to_string(), &claims.to_string())
        }
        fn proof(&self, claims: &Value) -> String {
            self.sign(&self.header(), claims)
        }
    }

    fn claims() -> Value {
        json!({"jti": "j-1", "htm": "POST", "htu": URL, "iat": NOW.unix_timestamp()})
    }

    fn with(name: &str, v: Value) -> Value {
        let mut c = claims();
        c[name] = v;
        c
    }

    fn facts() -> RequestFacts<'static> {
        RequestFacts {
            method: "POST",
            urls: &[URL],
            access_token: None,
            now: NOW,
        }
    }

    fn check(proof: &str) -> Result<VerifiedProof, ProofError> {
        verify_proof(proof, &facts())
    }

    fn both() -> [Signer; 2] {
        [Signer::ec(), Signer::ed()]
    }

    #[test]
    fn a_good_proof_by_either_algorithm_is_accepted_with_its_thumbprint() {
        for s in both() {
            let v = check(&s.proof(&claims())).unwrap();
            assert_eq!(v.jkt, thumbprint_of_jwk(&s.jwk()).unwrap(), "{}", s.alg());
            assert_eq!(v.jkt.as_str().len(), JKT_LEN);
            assert_eq!(v.iat, NOW);
            assert!(v.remember_until > NOW + IAT_WINDOW);
        }
    }

    #[test]
    fn the_thumbprints_match_rfc_7638_and_rfc_8037_examples() {
        // RFC 8037 appendix A.3.
        let ed = json!({"kty": "OKP", "crv": "Ed25519",
            "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"});
        assert_eq!(
            thumbprint_of_jwk(&ed).unwrap().as_str(),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
        // RFC 9449 §6.1: the key of its example proofs and its `cnf.jkt`.
        let ec = json!({"kty": "EC", "crv": "P-256",
            "x": "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs",
            "y": "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA"});
        assert_eq!(
            thumbprint_of_jwk(&ec).unwrap().as_str(),
            "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"
        );
    }

    #[test]
    fn a_replay_key_is_per_key_and_per_jti() {
        let [a, b] = both();
        let k1 = check(&a.proof(&claims())).unwrap().replay_key;
        let k2 = check(&a.proof(&with("jti", json!("j-2"))))
            .unwrap()
            .replay_key;
        let k3 = check(&b.proof(&claims())).unwrap().replay_key;
        assert_ne!(k1, k2);
        assert_ne!(k1, k3);
        assert_eq!(k1, check(&a.proof(&claims())).unwrap().replay_key);
    }

    #[test]
    fn a_wrong_typ_is_refused() {
        let s = Signer::ed();
        for typ in [
            json!("JWT"),
            json!("at+jwt"),
            json!("DPOP+JWT"),
            json!(null),
        ] {
            let mut h = s.header();
            h["typ"] = typ.clone();
            assert_eq!(
                check(&s.sign(&h, &claims())),
                Err(ProofError::WrongType),
                "{typ}"
            );
        }
        let mut h = s.header();
        h.as_object_mut().unwrap().remove("typ");
        assert_eq!(check(&s.sign(&h, &claims())), Err(ProofError::WrongType));
    }

    #[test]
    fn none_hmac_and_other_algorithms_are_refused() {
        let s = Signer::ed();
        for alg in ["none", "HS256", "RS256", "ES384", "eddsa", "Ed25519", ""] {
            let mut h = s.header();
            h["alg"] = json!(alg);
            assert_eq!(
                check(&s.sign(&h, &claims())),
                Err(ProofError::AlgorithmNotAccepted),
                "{alg}"
            );
        }
        // alg none with an empty signature.
        let mut h = s.header();
        h["alg"] = json!("none");
        let t = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(h.to_string()),
            URL_SAFE_NO_PAD.encode(claims().to_string())
        );
        assert_eq!(check(&t), Err(ProofError::AlgorithmNotAccepted));
    }

    #[test]
    fn an_alg_that_does_not_match_the_key_type_is_refused() {
        let s = Signer::ed();
        let mut h = s.header();
        h["alg"] = json!("ES256");
        assert_eq!(check(&s.sign(&h, &claims())), Err(ProofError::InvalidKey));
        let s = Signer::ec();
        let mut h = s.header();
        h["alg"] = json!("EdDSA");
        assert_eq!(check(&s.sign(&h, &claims())), Err(ProofError::InvalidKey));
    }

    #[test]
    fn private_or_symmetric_key_material_in_the_jwk_is_refused() {
        for s in both() {
            for member in ["d", "p", "q", "dp", "dq", "qi", "oth", "k"] {
                let mut h = s.header();
                h["jwk"][member] = json!("AAAA");
                assert_eq!(
                    check(&s.sign(&h, &claims())),
                    Err(ProofError::PrivateKey),
                    "{member}"
                );
            }
        }
        let s = Signer::ed();
        let mut h = s.header();
        h["jwk"] = json!({"kty": "oct", "k": "c2VjcmV0"});
        assert_eq!(check(&s.sign(&h, &claims())), Err(ProofError::PrivateKey));
    }

    #[test]
    fn a_missing_or_malformed_jwk_is_refused() {
        let s = Signer::ec();
        let mut h = s.header();
        h.as_object_mut().unwrap().remove("jwk");
        assert_eq!(check(&s.sign(&h, &claims())), Err(ProofError::InvalidKey));
        for (k, v) in [
            ("x", json!("AAAA")),
            ("y", json!(URL_SAFE_NO_PAD.encode([0u8; 32]))),
            ("crv", json!("P-384")),
            ("kty", json!("RSA")),
        ] {
            let mut h = s.header();
            h["jwk"][k] = v;
            assert_eq!(
                check(&s.sign(&h, &claims())),
                Err(ProofError::InvalidKey),
                "{k}"
            );
        }
        let mut h = s.header();
        h["jwk"] = json!("a string");
        assert_eq!(check(&s.sign(&h, &claims())), Err(ProofError::Malformed));
    }

    #[test]
    fn small_order_ed25519_keys_are_refused() {
        // The identity (order 1) and the point with y = 0 (order 4): any
        // signature "verifies" under such a key for many messages, and
        // aws-lc takes any 32 bytes, so the check happens at parse time.
        let s = Signer::ed();
        let mut identity = [0u8; 32];
        identity[0] = 1;
        for weak in [identity, [0u8; 32]] {
            let mut h = s.header();
            h["jwk"]["x"] = json!(URL_SAFE_NO_PAD.encode(weak));
            assert_eq!(check(&s.sign(&h, &claims())), Err(ProofError::InvalidKey));
        }
    }

    #[test]
    fn a_signature_of_the_wrong_length_is_refused() {
        for s in both() {
            let t = s.proof(&claims());
            let (signed, sig) = t.rsplit_once('.').unwrap();
            let mut raw = URL_SAFE_NO_PAD.decode(sig).unwrap();
            raw.pop();
            let short = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(&raw));
            assert_eq!(check(&short), Err(ProofError::BadSignature), "{}", s.alg());
            raw.extend_from_slice(&[0, 0]);
            let long = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(&raw));
            assert_eq!(check(&long), Err(ProofError::BadSignature), "{}", s.alg());
        }
    }

    #[test]
    fn headers_that_point_elsewhere_are_forbidden() {
        let s = Signer::ed();
        for name in ["jku", "x5u", "x5c", "crit"] {
            let mut h = s.header();
            h[name] = json!(["x"]);
            assert_eq!(
                check(&s.sign(&h, &claims())),
                Err(ProofError::ForbiddenHeader(name))
            );
        }
    }

    #[test]
    fn a_signature_by_another_key_or_over_other_bytes_is_refused() {
        let [a, b] = [Signer::ed(), Signer::ed()];
        let t = b.sign(&a.header(), &claims());
        assert_eq!(check(&t), Err(ProofError::BadSignature));
        let t = a.proof(&claims());
        let (head, rest) = t.split_once('.').unwrap();
        let (_, sig) = rest.split_once('.').unwrap();
        let forged = format!(
            "{head}.{}.{sig}",
            URL_SAFE_NO_PAD.encode(with("htm", json!("GET")).to_string())
        );
        assert_eq!(check(&forged), Err(ProofError::BadSignature));
        let ec = Signer::ec();
        let t = ec.proof(&claims());
        let stripped = &t[..=t.rfind('.').unwrap()];
        assert_eq!(check(stripped), Err(ProofError::BadSignature));
    }

    #[test]
    fn a_key_seen_before_gives_the_answers_a_new_one_would() {
        for s in both() {
            let fresh = check(&s.proof(&claims())).unwrap();
            // Now the key is parsed and kept: the same key still checks
            // every signature, and an impostor signing under its jwk fails.
            let again = check(&s.proof(&claims())).unwrap();
            assert_eq!(again.jkt, fresh.jkt);
            assert_eq!(Some(fresh.jkt.clone()), thumbprint_of_jwk(&s.jwk()));
            let impostor = match s {
                Signer::Ec(_) => Signer::ec(),
                Signer::Ed(_) => Signer::ed(),
            };
            let forged = impostor.sign(&s.header(), &claims());
            assert_eq!(check(&forged), Err(ProofError::BadSignature));
        }
        // More keys than the cache holds: it empties and starts again, and
        // every key is still judged by its own bytes.
        let first = Signer::ed();
        check(&first.proof(&claims())).unwrap();
        for _ in 0..=PARSED_KEYS_PER_THREAD {
            let k = Signer::ed();
            assert_eq!(
                check(&k.proof(&claims())).unwrap().jkt,
                thumbprint_of_jwk(&k.jwk()).unwrap()
            );
        }
        assert!(PARSED_KEYS.with_borrow(|keys| keys.len() <= PARSED_KEYS_PER_THREAD));
        assert_eq!(
            check(&first.proof(&claims())).unwrap().jkt,
            thumbprint_of_jwk(&first.jwk()).unwrap()
        );
    }

    #[test]
    fn htm_must_be_the_request_method() {
        for s in both() {
            for htm in ["GET", "post", "PUT"] {
                assert_eq!(
                    check(&s.proof(&with("htm", json!(htm)))),
                    Err(ProofError::MethodMismatch)
                );
            }
        }
    }

    #[test]
    fn htu_must_be_the_request_url_after_normalisation() {
        let s = Signer::ed();
        for ok in [
            URL,
            "HTTPS://Auth.Example/v1/auth/refresh",
            "https://auth.example:443/v1/auth/refresh",
            "https://auth.example/v1/auth/refresh?x=1#frag",
            "https://auth.example/v1/%61uth/refresh",
            "https://auth.example/v1/x/../auth/./refresh",
        ] {
            assert!(check(&s.proof(&with("htu", json!(ok)))).is_ok(), "{ok}");
        }
        for bad in [
            "http://auth.example/v1/auth/refresh",
            "https://auth.example:8443/v1/auth/refresh",
            "https://evil.example/v1/auth/refresh",
            "https://auth.example/v1/auth/login",
            "https://auth.example/v1/auth/refresh/",
            "https://user@auth.example/v1/auth/refresh",
            "/v1/auth/refresh",
            "ftp://auth.example/v1/auth/refresh",
            "https://auth.example/v1/auth/refresh%",
            "https://auth.example/v1/auth/réfresh",
        ] {
            assert_eq!(
                check(&s.proof(&with("htu", json!(bad)))),
                Err(ProofError::UrlMismatch),
                "{bad}"
            );
        }
    }

    #[test]
    fn iat_must_be_within_sixty_seconds() {
        let s = Signer::ec();
        let now = NOW.unix_timestamp();
        for ok in [now - 60, now + 60, now] {
            assert!(check(&s.proof(&with("iat", json!(ok)))).is_ok());
        }
        for bad in [now - 61, now + 61, 0, i64::MAX, i64::MIN] {
            assert_eq!(
                check(&s.proof(&with("iat", json!(bad)))),
                Err(ProofError::IatOutOfWindow),
                "{bad}"
            );
        }
        assert_eq!(
            check(&s.proof(&with("iat", json!(now.to_string())))),
            Err(ProofError::InvalidClaims)
        );
        assert_eq!(
            check(&s.proof(&with("iat", json!(1.5)))),
            Err(ProofError::InvalidClaims)
        );
    }

    #[test]
    fn ath_must_hash_the_presented_access_token() {
        let s = Signer::ed();
        let token = "eyJ.access.token";
        let f = RequestFacts {
            access_token: Some(token),
            ..facts()
        };
        let good = with("ath", json!(access_token_hash(token)));
        assert!(verify_proof(&s.proof(&good), &f).is_ok());
        for bad in [
            with("ath", json!(access_token_hash("another"))),
            with("ath", json!("")),
            claims(),
        ] {
            assert_eq!(
                verify_proof(&s.proof(&bad), &f),
                Err(ProofError::AthMismatch)
            );
        }
    }

    #[test]
    fn missing_or_oversized_claims_are_invalid() {
        let s = Signer::ed();
        for name in ["jti", "htm", "htu", "iat"] {
            let mut c = claims();
            c.as_object_mut().unwrap().remove(name);
            assert_eq!(
                check(&s.proof(&c)),
                Err(ProofError::InvalidClaims),
                "{name}"
            );
        }
        assert_eq!(
            check(&s.proof(&with("jti", json!("")))),
            Err(ProofError::InvalidClaims)
        );
        assert_eq!(
            check(&s.proof(&with("jti", json!("j".repeat(MAX_JTI_LEN + 1))))),
            Err(ProofError::InvalidClaims)
        );
        assert_eq!(
            check(&s.proof(&with("nonce", json!("")))),
            Err(ProofError::InvalidClaims)
        );
        let v = check(&s.proof(&with("nonce", json!("n-1")))).unwrap();
        assert_eq!(v.nonce.as_deref(), Some("n-1"));
    }

    #[test]
    fn duplicate_keys_in_header_claims_or_jwk_are_refused() {
        let s = Signer::ed();
        let jwk = s.jwk().to_string();
        let c = claims().to_string();
        for header in [
            format!(r#"{{"typ":"dpop+jwt","alg":"EdDSA","alg":"none","jwk":{jwk}}}"#),
            format!(r#"{{"typ":"dpop+jwt","alg":"EdDSA","jwk":{jwk},"jwk":{jwk}}}"#),
            format!(
                r#"{{"typ":"dpop+jwt","alg":"EdDSA","jwk":{}}}"#,
                jwk.replacen('{', r#"{"x":"AAAA","#, 1)
            ),
        ] {
            assert_eq!(
                check(&s.sign_raw(&header, &c)),
                Err(ProofError::Malformed),
                "{header}"
            );
        }
        let dup = c.replacen('{', r#"{"htm":"GET","#, 1);
        assert_eq!(
            check(&s.sign_raw(&s.header().to_string(), &dup)),
            Err(ProofError::InvalidClaims)
        );
    }

    #[test]
    fn padded_or_standard_alphabet_or_oversized_proofs_are_refused() {
        let s = Signer::ed();
        let t = s.proof(&claims());
        assert_eq!(check(&format!("{t}=")), Err(ProofError::BadSignature));
        assert_eq!(
            check(&"a".repeat(MAX_PROOF_LEN + 1)),
            Err(ProofError::TooLong)
        );
        for junk in ["", ".", "..", "a.b.c", "a.b.c.d", "....."] {
            assert!(check(junk).is_err(), "{junk}");
        }
    }

    #[test]
    fn jkt_parse_accepts_only_43_base64url_characters() {
        let good = URL_SAFE_NO_PAD.encode([7u8; 32]);
        assert!(Jkt::parse(&good).is_some());
        assert!(Jkt::parse(&format!("{good}=")).is_none());
        assert!(Jkt::parse(&good[..42]).is_none());
        assert!(Jkt::parse(&good.replace('B', "+")).is_none());
        assert!(Jkt::parse("").is_none());
        // 43 characters whose last one carries non-zero spare bits.
        let mut odd = good.clone();
        odd.pop();
        odd.push('D');
        assert!(Jkt::parse(&odd).is_none());
    }

    #[test]
    fn url_normalisation_handles_ports_and_ipv6() {
        assert_eq!(
            normalise_url("http://[::1]:80").as_deref(),
            Some("http://[::1]/")
        );
        assert_eq!(
            normalise_url("http://[::1]:8080/a").as_deref(),
            Some("http://[::1]:8080/a")
        );
        assert_eq!(
            normalise_url("http://127.0.0.1:08080/a").as_deref(),
            Some("http://127.0.0.1:8080/a")
        );
        assert_eq!(normalise_url("http://h:99999/"), None);
        assert_eq!(normalise_url("http://h:x/"), None);
        assert_eq!(normalise_url("http:///a"), None);
        assert_eq!(
            normalise_url("https://h/a/%2f/b").as_deref(),
            Some("https://h/a/%2F/b")
        );
    }

    proptest! {
        #[test]
        fn arbitrary_proof_text_never_panics(s in ".{0,600}") {
            let _ = check(&s);
        }

        #[test]
        fn arbitrary_segments_never_panic(h in "[A-Za-z0-9_-]{0,300}", p in "[A-Za-z0-9_-]{0,300}", sig in "[A-Za-z0-9_-]{0,120}") {
            let _ = check(&format!("{h}.{p}.{sig}"));
        }

        #[test]
        fn arbitrary_json_in_a_signed_proof_never_panics(header in "\\PC{0,200}", claims in "\\PC{0,200}") {
            let s = Signer::ed();
            let _ = check(&s.sign_raw(&header, &claims));
        }

        #[test]
        fn arbitrary_urls_never_panic(u in "\\PC{0,200}") {
            let _ = normalise_url(&u);
            let _ = normalise_url(&format!("https://{u}"));
        }
    }
}
