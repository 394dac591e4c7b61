//! Access tokens: the claims, what a verifier accepts, and the strict
//! checks shared by [`KeyRing::verify`](super::KeyRing::verify) and
//! [`PublicKeySet::verify`](super::PublicKeySet::verify), with the wire
//! shapes of header and claims they read.

use std::borrow::Cow;
use std::fmt;

use jsonwebtoken::DecodingKey;
use serde::de::{IgnoredAny, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::jws::{self, SplitError};

use super::material::{SigningAlgorithm, kid_is_well_formed};

/// Longest accepted access token, checked before any parsing.
pub const MAX_ACCESS_TOKEN_LEN: usize = 4096;
/// Largest clock leeway a verifier may be configured with.
pub const MAX_LEEWAY: Duration = Duration::seconds(60);

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

/// The one `typ` an access token may carry (RFC 9068).
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";

/// Largest decoded size of any segment of a token no longer than
/// [`MAX_ACCESS_TOKEN_LEN`].
const MAX_SEGMENT_BYTES: usize = jws::max_segment_bytes(MAX_ACCESS_TOKEN_LEN);
/// Largest signature of the offered algorithms (EdDSA and ES256: 64 bytes).
pub(super) const MAX_SIGNATURE_BYTES: usize = 64;

/// The strict checks of an access token, in order: length; three segments
/// of unpadded base64url; a header whose `alg` is exactly `alg`, whose `typ`
/// is `at+jwt`, with none of `jku`, `x5u`, `jwk`, `x5c`, `crit`, and a
/// well-formed `kid`; then `signature(kid, signed bytes, signature)` (the
/// key lookup and the signature check of the caller's key set); then the
/// claims against `policy` and `now`.
pub(super) fn verify_strictly(
    token: &str,
    now: OffsetDateTime,
    alg: SigningAlgorithm,
    policy: &VerifyPolicy,
    leeway_secs: i64,
    signature: impl FnOnce(&str, &[u8], &str) -> Result<(), TokenError>,
) -> Result<AccessClaims, TokenError> {
    let jws = jws::split_jws(token, MAX_ACCESS_TOKEN_LEN).map_err(|e| match e {
        SplitError::TooLong => TokenError::TooLong,
        SplitError::Malformed => TokenError::Malformed,
    })?;

    let mut header_buf = [0u8; MAX_SEGMENT_BYTES];
    let header_len = decode_segment(jws.header, &mut header_buf)?;
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

    signature(kid, jws.signing_input.as_bytes(), jws.signature)?;

    let mut payload_buf = [0u8; MAX_SEGMENT_BYTES];
    let payload_len = decode_segment(jws.payload, &mut payload_buf)?;
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
pub(super) fn check_signature(
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

/// Decodes one segment as strict base64url (see [`jws::decode_segment`]).
fn decode_segment(segment: &str, out: &mut [u8]) -> Result<usize, TokenError> {
    jws::decode_segment(segment, out).ok_or(TokenError::Malformed)
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

    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    use jsonwebtoken::EncodingKey;
    use serde_json::json;
    use time::macros::datetime;

    use super::*;
    use crate::keys::{KeyRing, SigningAlgorithm};

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
        let public = ring.read().list[0].public.clone().unwrap();
        let header = with_header(&ring, "alg", json!("HS256"));
        let mut token = format!(
            "{}.{}",
            b64(header.to_string()),
            b64(claims_json().to_string())
        );
        let sig = jsonwebtoken::crypto::sign(
            token.as_bytes(),
            &EncodingKey::from_secret(&public).unwrap(),
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
}
