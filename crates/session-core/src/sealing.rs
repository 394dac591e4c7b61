//! The master key and what it seals: every private key and server secret
//! the service stores (in the data directory or a shared store) is kept as
//! `sealed:v1:<master key id>:<base64url(nonce ‖ ciphertext)>`, encrypted
//! with XChaCha20-Poly1305 under a key derived from the master key, with
//! the item's purpose (`signing-key:<kid>`, `token-secret`) as associated
//! data, so a sealed value cannot be moved to another place unnoticed.
//! The key id names the master key that sealed it, so a wrong master key
//! is told apart from a damaged value, and a rewrap knows what it holds.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, Generate as _, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use zeroize::Zeroizing;

/// Length of a master key in bytes (64 hex digits).
pub const MASTER_KEY_BYTES: usize = 32;
/// The prefix of every sealed value.
pub const SEALED_PREFIX: &str = "sealed:v1:";
const NONCE_BYTES: usize = 24;

/// Why a master key or a sealed value was refused. Never carries key
/// material or plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The master key is not 64 hex digits.
    #[error("a master key is 64 hex digits (32 bytes)")]
    BadMasterKey,
    /// Not a sealed value.
    #[error("not a sealed value")]
    Malformed,
    /// Sealed under another master key.
    #[error("sealed under master key {sealed_with}, not under this one ({this})")]
    WrongMasterKey {
        /// The id of the master key that sealed it.
        sealed_with: String,
        /// The id of the master key given.
        this: String,
    },
    /// The value was altered, or belongs to another purpose.
    #[error("sealed value does not authenticate (altered or moved)")]
    Tampered,
}

/// The master key. Wiped on drop; `Debug` shows only its id.
#[derive(Clone)]
pub struct MasterKey {
    seal_key: Zeroizing<[u8; 32]>,
    derive_key: Zeroizing<[u8; 32]>,
    id: String,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey(id {}, <redacted>)", self.id)
    }
}

fn hmac(key: &[u8], label: &[u8]) -> [u8; 32] {
    #[allow(clippy::expect_used)] // reason: HMAC accepts keys of any length
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(label);
    mac.finalize().into_bytes().into()
}

impl MasterKey {
    /// A master key from its 32 bytes.
    pub fn from_bytes(bytes: &[u8; MASTER_KEY_BYTES]) -> Self {
        let id_bytes = hmac(bytes, b"session-security master key id v1");
        let id = id_bytes[..8].iter().map(|b| format!("{b:02x}")).collect();
        Self {
            seal_key: Zeroizing::new(hmac(bytes, b"session-security seal v1")),
            derive_key: Zeroizing::new(hmac(bytes, b"session-security derive v1")),
            id,
        }
    }

    /// Parses 64 hex digits (surrounding whitespace ignored).
    pub fn from_hex(text: &str) -> Result<Self, SealError> {
        let text = text.trim();
        if text.len() != MASTER_KEY_BYTES * 2 {
            return Err(SealError::BadMasterKey);
        }
        let mut bytes = Zeroizing::new([0u8; MASTER_KEY_BYTES]);
        for (i, pair) in text.as_bytes().chunks_exact(2).enumerate() {
            let pair = std::str::from_utf8(pair).map_err(|_| SealError::BadMasterKey)?;
            bytes[i] = u8::from_str_radix(pair, 16).map_err(|_| SealError::BadMasterKey)?;
        }
        Ok(Self::from_bytes(&bytes))
    }

    /// 64 hex digits of a new random master key (OS CSPRNG).
    pub fn generate_hex() -> Zeroizing<String> {
        let bytes = Zeroizing::new(crate::secret::random_bytes::<MASTER_KEY_BYTES>());
        Zeroizing::new(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The key id: 16 hex digits that name this master key (not secret).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// A 32-byte key for `purpose`, derived from the master key (for keys
    /// that are never stored, such as the record encryption key).
    pub fn derive(&self, purpose: &str) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(hmac(&*self.derive_key, purpose.as_bytes()))
    }

    fn aad(&self, purpose: &str) -> Vec<u8> {
        let mut aad = Vec::with_capacity(purpose.len() + 1 + self.id.len());
        aad.extend_from_slice(purpose.as_bytes());
        aad.push(0);
        aad.extend_from_slice(self.id.as_bytes());
        aad
    }

    /// Seals `plaintext` for `purpose`.
    pub fn seal(&self, purpose: &str, plaintext: &[u8]) -> String {
        let cipher = XChaCha20Poly1305::new((&*self.seal_key).into());
        let nonce = XNonce::generate_from_rng(&mut crate::secret::os_rng());
        let aad = self.aad(purpose);
        // Encryption into a Vec cannot fail for inputs this size.
        let ct = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .unwrap_or_default();
        let mut raw = Vec::with_capacity(NONCE_BYTES + ct.len());
        raw.extend_from_slice(&nonce);
        raw.extend_from_slice(&ct);
        format!("{SEALED_PREFIX}{}:{}", self.id, URL_SAFE_NO_PAD.encode(raw))
    }

    /// Opens a value [`MasterKey::seal`]ed for `purpose`.
    pub fn open(&self, purpose: &str, sealed: &str) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let (id, body) = sealed_parts(sealed).ok_or(SealError::Malformed)?;
        if id != self.id {
            return Err(SealError::WrongMasterKey {
                sealed_with: id.to_owned(),
                this: self.id.clone(),
            });
        }
        let raw = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| SealError::Malformed)?;
        if raw.len() < NONCE_BYTES + 16 {
            return Err(SealError::Malformed);
        }
        let (nonce, ct) = raw.split_at(NONCE_BYTES);
        let nonce = <&XNonce>::try_from(nonce).map_err(|_| SealError::Malformed)?;
        let cipher = XChaCha20Poly1305::new((&*self.seal_key).into());
        let aad = self.aad(purpose);
        cipher
            .decrypt(nonce, Payload { msg: ct, aad: &aad })
            .map(Zeroizing::new)
            .map_err(|_| SealError::Tampered)
    }
}

/// Whether `value` is a sealed value (of any master key).
pub fn is_sealed(value: &str) -> bool {
    sealed_parts(value).is_some()
}

/// The master key id a sealed value names.
pub fn sealed_with(value: &str) -> Option<&str> {
    sealed_parts(value).map(|(id, _)| id)
}

fn sealed_parts(value: &str) -> Option<(&str, &str)> {
    let rest = value.trim().strip_prefix(SEALED_PREFIX)?;
    let (id, body) = rest.split_once(':')?;
    (id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some((id, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> MasterKey {
        MasterKey::from_bytes(&[b; 32])
    }

    #[test]
    fn a_sealed_value_opens_under_its_master_key_and_purpose_only() {
        let k = key(1);
        let sealed = k.seal("token-secret", b"the secret");
        assert!(is_sealed(&sealed));
        assert_eq!(sealed_with(&sealed), Some(k.id()));
        assert_eq!(&*k.open("token-secret", &sealed).unwrap(), b"the secret");
        assert_eq!(
            k.open("signing-key:x", &sealed),
            Err(SealError::Tampered),
            "moved to another purpose"
        );
        assert!(matches!(
            key(2).open("token-secret", &sealed),
            Err(SealError::WrongMasterKey { .. })
        ));
        assert!(!sealed.contains("the secret"));
    }

    #[test]
    fn an_altered_sealed_value_is_refused() {
        let k = key(1);
        let sealed = k.seal("p", b"data");
        let mut bytes = sealed.into_bytes();
        let last = bytes.len() - 2;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(bytes).unwrap();
        assert!(k.open("p", &altered).is_err());
        assert_eq!(k.open("p", "not sealed"), Err(SealError::Malformed));
    }

    #[test]
    fn master_keys_are_64_hex_digits() {
        let hex = MasterKey::generate_hex();
        assert_eq!(hex.len(), 64);
        let k = MasterKey::from_hex(&hex).unwrap();
        assert_eq!(
            k.id(),
            MasterKey::from_hex(&format!(" {}\n", &*hex)).unwrap().id()
        );
        for bad in [
            "",
            "abc",
            &"zz".repeat(32),
            &"a".repeat(63),
            &"a".repeat(66),
        ] {
            assert_eq!(
                MasterKey::from_hex(bad).unwrap_err(),
                SealError::BadMasterKey
            );
        }
        assert!(!format!("{k:?}").contains(&hex[..16]));
    }

    #[test]
    fn derived_keys_differ_by_purpose_and_master_key() {
        let a = key(1);
        assert_ne!(*a.derive("records"), *a.derive("other"));
        assert_ne!(*a.derive("records"), *key(2).derive("records"));
        assert_eq!(*a.derive("records"), *key(1).derive("records"));
    }
}
