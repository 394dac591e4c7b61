//! Secrets: session ids, refresh tokens, their digests, CSRF tokens, and the
//! server-side keys that bind them.
//!
//! A refresh token is `srt_` followed by the base64url (no padding) of
//! `session id (16) ‖ generation (8, big endian) ‖ random (32) ‖ tag (16)`.
//! The 32 random bytes come from the OS CSPRNG; the tag is an HMAC-SHA-256
//! under the server's token key. The tag lets the service tell a token it
//! really issued and later rotated away (a *reuse*) from a random or forged
//! value (merely *invalid*), so that no guess can ever log anyone out. The
//! stores keep only the SHA-256 [`TokenDigest`] of the whole token.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, Generate as _, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac as _};
use rand::Rng as _;
use rand::rand_core::UnwrapErr;
use rand::rngs::SysRng;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

type HmacSha256 = Hmac<Sha256>;

/// The fixed prefix of every refresh token, so a leaked one is recognisable.
pub const REFRESH_TOKEN_PREFIX: &str = "srt_";
/// Length of a session id in bytes (128 bits).
pub const SESSION_ID_BYTES: usize = 16;
const RANDOM_BYTES: usize = 32;
const _: () = assert!(
    RANDOM_BYTES * 8 >= 256,
    "refresh tokens carry at least 256 random bits"
);
const TAG_BYTES: usize = 16;
const RAW_REFRESH_BYTES: usize = SESSION_ID_BYTES + 8 + RANDOM_BYTES + TAG_BYTES;
/// Upper bound on the textual length of anything that could be a refresh
/// token; longer input is refused before decoding.
pub const MAX_REFRESH_TOKEN_LEN: usize = 128;

/// The operating system's CSPRNG (`getrandom`), as an infallible
/// [`rand::CryptoRng`]: should the OS fail to give random bytes it panics
/// rather than return anything weaker. Every random value the service
/// makes (tokens, ids, nonces, salts, keys) comes from it.
pub fn os_rng() -> UnwrapErr<SysRng> {
    UnwrapErr(SysRng)
}

/// Fills a fresh array from the operating system's CSPRNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    os_rng().fill_bytes(&mut out);
    out
}

/// Why a presented secret was refused. Carries no part of the secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// Not the shape of the secret asked for (length, prefix, alphabet).
    #[error("malformed token")]
    Malformed,
    /// Well-formed, but its tag does not verify under the server's key.
    #[error("token not issued by this service")]
    Forged,
}

/// A session id: 128 random bits, base64url. Not a secret by itself.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId([u8; SESSION_ID_BYTES]);

impl SessionId {
    /// A new random session id.
    pub fn generate() -> Self {
        Self(random_bytes())
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; SESSION_ID_BYTES] {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&URL_SAFE_NO_PAD.encode(self.0))
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({self})")
    }
}

impl FromStr for SessionId {
    type Err = SecretError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // 16 bytes are exactly 22 base64url characters.
        if s.len() != 22 {
            return Err(SecretError::Malformed);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| SecretError::Malformed)?;
        let arr: [u8; SESSION_ID_BYTES] = bytes.try_into().map_err(|_| SecretError::Malformed)?;
        // Reject non-canonical encodings (trailing bits set) so that one id
        // has exactly one spelling.
        let id = Self(arr);
        if id.to_string() != s {
            return Err(SecretError::Malformed);
        }
        Ok(id)
    }
}

impl Serialize for SessionId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SessionId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The SHA-256 digest of a token: what the stores keep instead of the token.
/// Equality is constant-time.
#[derive(Clone, Copy, Eq)]
pub struct TokenDigest([u8; 32]);

impl TokenDigest {
    /// The digest of `token`.
    pub fn of(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    /// Wraps raw digest bytes (as read back from a store).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex, as stored in text columns and Redis values.
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
        s
    }

    /// Parses lower- or upper-case hex of exactly 64 digits.
    pub fn from_hex(s: &str) -> Option<Self> {
        let bytes = s.as_bytes();
        if bytes.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let hi = hex_val(pair[0])?;
            let lo = hex_val(pair[1])?;
            out[i] = (hi << 4) | lo;
        }
        Some(Self(out))
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl PartialEq for TokenDigest {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A digest is not a secret, but a short form keeps logs readable.
        write!(f, "TokenDigest({}…)", &self.to_hex()[..12])
    }
}

impl Serialize for TokenDigest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for TokenDigest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::from_hex(&s).ok_or_else(|| serde::de::Error::custom("bad digest"))
    }
}

/// A plaintext refresh token. It never prints itself: `Debug` is opaque and
/// there is no `Display`; [`RefreshToken::expose`] is the one way out, for
/// the response that issues it.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct RefreshToken(String);

impl RefreshToken {
    /// The token text. Call only to put it in the response that issues it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Its storage digest.
    pub fn digest(&self) -> TokenDigest {
        TokenDigest::of(&self.0)
    }
}

impl fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RefreshToken(<redacted>)")
    }
}

/// What the service learns from a refresh token whose tag verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresentedRefresh {
    /// The session (token family) it belongs to.
    pub session_id: SessionId,
    /// Its generation within the family; 0 at login.
    pub generation: u64,
    /// The digest the store compares against.
    pub digest: TokenDigest,
}

/// A plaintext CSRF token (base64url of an HMAC), bound to one session and
/// one refresh generation.
#[derive(Clone, PartialEq, Eq)]
pub struct CsrfToken(String);

impl CsrfToken {
    /// The token text, for the response that issues it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for CsrfToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CsrfToken(<redacted>)")
    }
}

/// The server-side keys behind refresh tokens and CSRF tokens, derived from
/// one 32-byte master secret kept in the data directory.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct TokenSecrets {
    mac: [u8; 32],
    seal: [u8; 32],
    csrf: [u8; 32],
    record: [u8; 32],
}

impl fmt::Debug for TokenSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSecrets(<redacted>)")
    }
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    #[allow(clippy::expect_used)] // reason: HMAC accepts keys of any length
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

impl TokenSecrets {
    /// Derives the three keys from a master secret (HMAC-SHA-256 with a
    /// distinct label per key).
    pub fn from_master(master: &[u8; 32]) -> Self {
        Self {
            mac: hmac(master, &[b"session/refresh-tag/v1"]),
            seal: hmac(master, &[b"session/grace-seal/v1"]),
            csrf: hmac(master, &[b"session/csrf/v1"]),
            record: hmac(master, &[b"session/record/v1"]),
        }
    }

    /// The key that seals session records' private fields at rest
    /// ([`crate::record::RecordCipher`]).
    pub(crate) fn record_key(&self) -> &[u8; 32] {
        &self.record
    }

    /// A new random master secret.
    pub fn generate_master() -> [u8; 32] {
        random_bytes()
    }

    fn tag(&self, body: &[u8]) -> [u8; TAG_BYTES] {
        let full = hmac(&self.mac, &[body]);
        let mut tag = [0u8; TAG_BYTES];
        tag.copy_from_slice(&full[..TAG_BYTES]);
        tag
    }

    /// Issues a new refresh token of `generation` for `session_id`.
    pub fn issue_refresh(
        &self,
        session_id: &SessionId,
        generation: u64,
    ) -> (RefreshToken, PresentedRefresh) {
        let mut raw = [0u8; RAW_REFRESH_BYTES];
        raw[..SESSION_ID_BYTES].copy_from_slice(session_id.as_bytes());
        raw[SESSION_ID_BYTES..SESSION_ID_BYTES + 8].copy_from_slice(&generation.to_be_bytes());
        os_rng().fill_bytes(&mut raw[SESSION_ID_BYTES + 8..SESSION_ID_BYTES + 8 + RANDOM_BYTES]);
        let body_len = RAW_REFRESH_BYTES - TAG_BYTES;
        let tag = self.tag(&raw[..body_len]);
        raw[body_len..].copy_from_slice(&tag);
        let mut text = String::with_capacity(REFRESH_TOKEN_PREFIX.len() + 96);
        text.push_str(REFRESH_TOKEN_PREFIX);
        URL_SAFE_NO_PAD.encode_string(raw, &mut text);
        raw.zeroize();
        let token = RefreshToken(text);
        let presented = PresentedRefresh {
            session_id: *session_id,
            generation,
            digest: token.digest(),
        };
        (token, presented)
    }

    /// Parses and authenticates a presented refresh token. A random or
    /// edited value is refused here, before any store is asked.
    pub fn parse_refresh(&self, text: &str) -> Result<PresentedRefresh, SecretError> {
        if text.len() > MAX_REFRESH_TOKEN_LEN {
            return Err(SecretError::Malformed);
        }
        let body = text
            .strip_prefix(REFRESH_TOKEN_PREFIX)
            .ok_or(SecretError::Malformed)?;
        let raw = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| SecretError::Malformed)?;
        if raw.len() != RAW_REFRESH_BYTES {
            return Err(SecretError::Malformed);
        }
        let body_len = RAW_REFRESH_BYTES - TAG_BYTES;
        let expected = self.tag(&raw[..body_len]);
        if !bool::from(expected.ct_eq(&raw[body_len..])) {
            return Err(SecretError::Forged);
        }
        let mut sid = [0u8; SESSION_ID_BYTES];
        sid.copy_from_slice(&raw[..SESSION_ID_BYTES]);
        let mut generation = [0u8; 8];
        generation.copy_from_slice(&raw[SESSION_ID_BYTES..SESSION_ID_BYTES + 8]);
        Ok(PresentedRefresh {
            session_id: SessionId(sid),
            generation: u64::from_be_bytes(generation),
            digest: TokenDigest::of(text),
        })
    }

    /// Encrypts a successor token for the grace window (XChaCha20-Poly1305,
    /// random nonce, the session id as associated data). The store holds
    /// only this ciphertext, never a usable token.
    pub fn seal_successor(&self, session_id: &SessionId, token: &RefreshToken) -> Vec<u8> {
        let cipher = XChaCha20Poly1305::new((&self.seal).into());
        let nonce = XNonce::generate_from_rng(&mut os_rng());
        let payload = Payload {
            msg: token.expose().as_bytes(),
            aad: session_id.as_bytes(),
        };
        // Encryption only fails for messages beyond the cipher's size limit.
        let ct = cipher.encrypt(&nonce, payload).unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        out
    }

    /// Decrypts a sealed successor; `None` when it does not authenticate.
    pub fn unseal_successor(&self, session_id: &SessionId, sealed: &[u8]) -> Option<RefreshToken> {
        if sealed.len() < 24 {
            return None;
        }
        let (nonce, ct) = sealed.split_at(24);
        let nonce = <&XNonce>::try_from(nonce).ok()?;
        let cipher = XChaCha20Poly1305::new((&self.seal).into());
        let plain = cipher
            .decrypt(
                nonce,
                Payload {
                    msg: ct,
                    aad: session_id.as_bytes(),
                },
            )
            .ok()?;
        String::from_utf8(plain).ok().map(RefreshToken)
    }

    /// The CSRF token of `session_id` at refresh `generation`: the
    /// HMAC of both under the server's CSRF key. One value at a time: a
    /// refresh moves the session to the next generation, so its token
    /// changes and the previous one no longer verifies. A grace-window
    /// replay of a refresh answers the same generation, hence the same
    /// token, so two tabs refreshing at once agree on it.
    pub fn issue_csrf(&self, session_id: &SessionId, generation: u64) -> CsrfToken {
        CsrfToken(URL_SAFE_NO_PAD.encode(self.csrf_mac(session_id, generation)))
    }

    fn csrf_mac(&self, session_id: &SessionId, generation: u64) -> [u8; 32] {
        hmac(
            &self.csrf,
            &[session_id.as_bytes(), &generation.to_be_bytes()],
        )
    }

    /// Whether `presented` is the CSRF token of `session_id` at
    /// `generation`. Constant-time in the MAC comparison.
    pub fn verify_csrf(&self, session_id: &SessionId, generation: u64, presented: &str) -> bool {
        if presented.len() > 128 {
            return false;
        }
        let Ok(mac) = URL_SAFE_NO_PAD.decode(presented) else {
            return false;
        };
        if mac.len() != 32 {
            return false;
        }
        self.csrf_mac(session_id, generation)
            .ct_eq(mac.as_slice())
            .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets() -> TokenSecrets {
        TokenSecrets::from_master(&[7u8; 32])
    }

    #[test]
    fn refresh_tokens_round_trip_and_carry_their_family() {
        let s = secrets();
        let sid = SessionId::generate();
        let (token, issued) = s.issue_refresh(&sid, 41);
        assert!(token.expose().starts_with(REFRESH_TOKEN_PREFIX));
        let parsed = s.parse_refresh(token.expose()).unwrap();
        assert_eq!(parsed, issued);
        assert_eq!(parsed.session_id, sid);
        assert_eq!(parsed.generation, 41);
    }

    #[test]
    fn refresh_tokens_hold_256_random_bits_and_differ_each_time() {
        let s = secrets();
        let sid = SessionId::generate();
        let (a, _) = s.issue_refresh(&sid, 0);
        let (b, _) = s.issue_refresh(&sid, 0);
        assert_ne!(a.expose(), b.expose());
        let raw = URL_SAFE_NO_PAD
            .decode(&a.expose()[REFRESH_TOKEN_PREFIX.len()..])
            .unwrap();
        assert_eq!(raw.len(), RAW_REFRESH_BYTES);
    }

    #[test]
    fn an_edited_refresh_token_is_forged_not_reused() {
        let s = secrets();
        let (token, _) = s.issue_refresh(&SessionId::generate(), 3);
        let mut raw = URL_SAFE_NO_PAD
            .decode(&token.expose()[REFRESH_TOKEN_PREFIX.len()..])
            .unwrap();
        raw[SESSION_ID_BYTES + 7] ^= 1; // lower the generation by one
        let edited = format!("{REFRESH_TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(raw));
        assert_eq!(s.parse_refresh(&edited), Err(SecretError::Forged));
    }

    #[test]
    fn a_token_from_another_server_key_is_forged() {
        let (token, _) = secrets().issue_refresh(&SessionId::generate(), 0);
        let other = TokenSecrets::from_master(&[8u8; 32]);
        assert_eq!(
            other.parse_refresh(token.expose()),
            Err(SecretError::Forged)
        );
    }

    #[test]
    fn malformed_refresh_tokens_are_refused_before_decoding() {
        let s = secrets();
        for bad in [
            "",
            "srt_",
            "nope",
            "srt_!!!!",
            "srt_AAAA",
            &"srt_".repeat(100),
            "srt_ with spaces",
        ] {
            assert_eq!(s.parse_refresh(bad), Err(SecretError::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn refresh_token_debug_never_shows_the_token() {
        let (token, _) = secrets().issue_refresh(&SessionId::generate(), 0);
        let shown = format!("{token:?}");
        assert!(!shown.contains(&token.expose()[4..20]));
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn digests_compare_equal_only_for_the_same_token() {
        assert_eq!(TokenDigest::of("a"), TokenDigest::of("a"));
        assert_ne!(TokenDigest::of("a"), TokenDigest::of("b"));
        let d = TokenDigest::of("x");
        assert_eq!(TokenDigest::from_hex(&d.to_hex()), Some(d));
        assert_eq!(TokenDigest::from_hex("zz"), None);
    }

    #[test]
    fn session_ids_have_one_spelling() {
        let id = SessionId::generate();
        assert_eq!(id.to_string().len(), 22);
        assert_eq!(id.to_string().parse::<SessionId>(), Ok(id));
        assert!("not-an-id".parse::<SessionId>().is_err());
        assert!("../../etc/passwd000000".parse::<SessionId>().is_err());
    }

    #[test]
    fn sealed_successors_open_only_for_their_session() {
        let s = secrets();
        let sid = SessionId::generate();
        let (token, _) = s.issue_refresh(&sid, 1);
        let sealed = s.seal_successor(&sid, &token);
        assert!(
            !sealed
                .windows(8)
                .any(|w| token.expose().as_bytes().windows(8).any(|t| t == w))
        );
        assert_eq!(s.unseal_successor(&sid, &sealed), Some(token));
        assert_eq!(s.unseal_successor(&SessionId::generate(), &sealed), None);
    }

    #[test]
    fn csrf_tokens_are_bound_to_their_session() {
        let s = secrets();
        let sid = SessionId::generate();
        let csrf = s.issue_csrf(&sid, 0);
        assert!(s.verify_csrf(&sid, 0, csrf.expose()));
        assert!(!s.verify_csrf(&SessionId::generate(), 0, csrf.expose()));
        assert!(!s.verify_csrf(&sid, 0, ""));
        assert!(!s.verify_csrf(&sid, 0, "a.b"));
        assert!(!TokenSecrets::from_master(&[9; 32]).verify_csrf(&sid, 0, csrf.expose()));
    }

    #[test]
    fn a_csrf_token_is_refused_once_the_session_moved_to_the_next_generation() {
        let s = secrets();
        let sid = SessionId::generate();
        let first = s.issue_csrf(&sid, 4);
        let next = s.issue_csrf(&sid, 5);
        assert_ne!(first.expose(), next.expose());
        assert!(s.verify_csrf(&sid, 5, next.expose()));
        assert!(!s.verify_csrf(&sid, 5, first.expose()));
        // One value per generation: issuing again gives the same token.
        assert_eq!(s.issue_csrf(&sid, 5).expose(), next.expose());
    }
}
