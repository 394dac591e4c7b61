//! Session records encrypted at rest (contract v1.1, "At rest"): a
//! session's IP, user agent, metadata, location and DPoP thumbprint are
//! sealed together with XChaCha20-Poly1305 under a key derived from the
//! server's token secret (itself sealed under the master key, shared by
//! every instance and re-sealed by `rewrap`), with the session id as
//! associated data, so a sealed blob moved to another record does not
//! open. Ids, deadlines, versions and digests stay in the clear, so
//! lookups, expiry and the stores' compare-and-swap work unchanged.
//!
//! A store given a [`RecordCipher`] writes every record sealed and reads
//! both sealed and older clear records; the cipher gets its key once the
//! server's secrets are loaded, and until then sealing and opening fail
//! (closed) rather than write in the clear.

use std::sync::{Arc, OnceLock};

use chacha20poly1305::aead::{Aead, Generate as _, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::dpop::Jkt;
use crate::geo::Location;
use crate::secret::{SessionId, TokenSecrets};
use crate::session::Session;

const VERSION: u8 = 1;
const NONCE_BYTES: usize = 24;
const AAD_LABEL: &[u8] = b"session-record/v1\0";

/// Why a record could not be sealed or opened. Never carries plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The cipher has no key yet (the server's secrets are not loaded).
    #[error("the record key is not loaded yet")]
    NoKey,
    /// Not a sealed record of a known version.
    #[error("malformed sealed record")]
    Malformed,
    /// Does not authenticate: altered, moved from another session, or
    /// sealed under another token secret.
    #[error("sealed record does not authenticate")]
    Tampered,
}

/// The fields of a session that are sealed at rest.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Private {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ua: Option<String>,
    #[serde(default)]
    meta: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    loc: Option<Location>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    jkt: Option<Jkt>,
}

/// Seals and opens the private fields of session records. Cheap to clone;
/// every clone shares the key once it is set.
#[derive(Clone, Default)]
pub struct RecordCipher {
    key: Arc<OnceLock<Zeroizing<[u8; 32]>>>,
}

impl std::fmt::Debug for RecordCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordCipher")
            .field("ready", &self.is_ready())
            .finish_non_exhaustive()
    }
}

fn aad(id: &SessionId) -> Vec<u8> {
    let mut aad = AAD_LABEL.to_vec();
    aad.extend_from_slice(id.as_bytes());
    aad
}

impl RecordCipher {
    /// A cipher without a key yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A cipher keyed from `secrets` at once.
    pub fn from_secrets(secrets: &TokenSecrets) -> Self {
        let cipher = Self::new();
        cipher.set_key(secrets);
        cipher
    }

    /// Gives the cipher its key (the first call wins; a later one with
    /// other secrets is ignored and returns `false`).
    pub fn set_key(&self, secrets: &TokenSecrets) -> bool {
        self.key.set(Zeroizing::new(*secrets.record_key())).is_ok()
    }

    /// Whether the key is set.
    pub fn is_ready(&self) -> bool {
        self.key.get().is_some()
    }

    fn cipher(&self) -> Result<XChaCha20Poly1305, RecordError> {
        let key = self.key.get().ok_or(RecordError::NoKey)?;
        Ok(XChaCha20Poly1305::new((&**key).into()))
    }

    /// Seals `session`'s private fields: `version ‖ nonce ‖ ciphertext`.
    pub fn seal(&self, session: &Session) -> Result<Vec<u8>, RecordError> {
        let cipher = self.cipher()?;
        let private = Private {
            ip: session.ip.clone(),
            ua: session.user_agent.clone(),
            meta: session.metadata.clone(),
            loc: session.location.clone(),
            jkt: session.dpop_jkt.clone(),
        };
        let plain =
            Zeroizing::new(serde_json::to_vec(&private).map_err(|_| RecordError::Malformed)?);
        let nonce = XNonce::generate_from_rng(&mut crate::secret::os_rng());
        let aad = aad(&session.id);
        let ct = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: &plain,
                    aad: &aad,
                },
            )
            .map_err(|_| RecordError::Malformed)?;
        let mut out = Vec::with_capacity(1 + NONCE_BYTES + ct.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Opens what [`RecordCipher::seal`] made of `session`'s fields and
    /// puts them back into `session` (whose id must be the one it was
    /// sealed with).
    pub fn open_into(&self, session: &mut Session, sealed: &[u8]) -> Result<(), RecordError> {
        let cipher = self.cipher()?;
        let (&version, rest) = sealed.split_first().ok_or(RecordError::Malformed)?;
        if version != VERSION || rest.len() < NONCE_BYTES + 16 {
            return Err(RecordError::Malformed);
        }
        let (nonce, ct) = rest.split_at(NONCE_BYTES);
        let nonce = <&XNonce>::try_from(nonce).map_err(|_| RecordError::Malformed)?;
        let aad = aad(&session.id);
        let plain = Zeroizing::new(
            cipher
                .decrypt(nonce, Payload { msg: ct, aad: &aad })
                .map_err(|_| RecordError::Tampered)?,
        );
        let private: Private =
            serde_json::from_slice(&plain).map_err(|_| RecordError::Malformed)?;
        session.ip = private.ip;
        session.user_agent = private.ua;
        session.metadata = private.meta;
        session.location = private.loc;
        session.dpop_jkt = private.jkt;
        Ok(())
    }
}

/// The private fields as a store writes them in the clear: the session's
/// own where the record is not sealed, none (metadata `null`) where it is.
/// Borrowed, so that sealing costs no copy of the session on the write
/// path.
#[derive(Debug, Clone, Copy)]
pub struct ClearFields<'a> {
    /// Client IP.
    pub ip: Option<&'a str>,
    /// User agent.
    pub user_agent: Option<&'a str>,
    /// Metadata.
    pub metadata: &'a serde_json::Value,
    /// Location of the last use.
    pub location: Option<&'a Location>,
    /// DPoP key thumbprint.
    pub dpop_jkt: Option<&'a Jkt>,
}

static NULL: serde_json::Value = serde_json::Value::Null;

impl<'a> ClearFields<'a> {
    /// What of `session` goes in the clear, `sealed` or not.
    pub fn of(session: &'a Session, sealed: bool) -> Self {
        if sealed {
            Self {
                ip: None,
                user_agent: None,
                metadata: &NULL,
                location: None,
                dpop_jkt: None,
            }
        } else {
            Self {
                ip: session.ip.as_deref(),
                user_agent: session.user_agent.as_deref(),
                metadata: &session.metadata,
                location: session.location.as_ref(),
                dpop_jkt: session.dpop_jkt.as_ref(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::TokenDigest;
    use crate::session::Lifetimes;
    use time::OffsetDateTime;

    fn session() -> Session {
        let mut s = Session::new(
            SessionId::generate(),
            "u".into(),
            TokenDigest::of("t"),
            &Lifetimes::default(),
            OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap(),
        );
        s.ip = Some("203.0.113.7".into());
        s.user_agent = Some("Firefox/140 secret-ua-marker".into());
        s.metadata = serde_json::json!({"device": "phone"});
        s.location = Some(Location {
            country: Some("FR".into()),
            ..Location::default()
        });
        s
    }

    fn secrets(seed: u8) -> TokenSecrets {
        TokenSecrets::from_master(&[seed; 32])
    }

    #[test]
    fn a_sealed_record_opens_to_the_same_fields_and_hides_them() {
        let c = RecordCipher::from_secrets(&secrets(1));
        let s = session();
        let sealed = c.seal(&s).unwrap();
        let hay = String::from_utf8_lossy(&sealed);
        assert!(!hay.contains("secret-ua-marker") && !hay.contains("203.0.113.7"));
        let clear = ClearFields::of(&s, true);
        assert_eq!(
            (clear.ip, clear.user_agent, clear.metadata),
            (None, None, &NULL)
        );
        let mut back = s.clone();
        (back.ip, back.user_agent, back.metadata, back.location) =
            (None, None, serde_json::Value::Null, None);
        c.open_into(&mut back, &sealed).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn a_record_does_not_open_under_another_key_another_session_or_altered() {
        let c = RecordCipher::from_secrets(&secrets(1));
        let s = session();
        let sealed = c.seal(&s).unwrap();
        let other = RecordCipher::from_secrets(&secrets(2));
        assert_eq!(
            other.open_into(&mut s.clone(), &sealed),
            Err(RecordError::Tampered)
        );
        let mut moved = session();
        assert_eq!(c.open_into(&mut moved, &sealed), Err(RecordError::Tampered));
        let mut bent = sealed.clone();
        *bent.last_mut().unwrap() ^= 1;
        assert_eq!(
            c.open_into(&mut s.clone(), &bent),
            Err(RecordError::Tampered)
        );
        assert_eq!(
            c.open_into(&mut s.clone(), &[]),
            Err(RecordError::Malformed)
        );
        assert_eq!(
            c.open_into(&mut s.clone(), &[9; 60]),
            Err(RecordError::Malformed)
        );
    }

    #[test]
    fn without_a_key_nothing_is_sealed_or_opened() {
        let c = RecordCipher::new();
        assert_eq!(c.seal(&session()), Err(RecordError::NoKey));
        let keyed = c.clone();
        assert!(keyed.set_key(&secrets(3)));
        assert!(c.is_ready(), "clones share the key");
        assert!(!c.set_key(&secrets(4)), "the first key stays");
    }
}
