//! Audit-chain checkpoints on the wire: the form `GET
//! /admin/v1/audit/checkpoints` lists them in, `session-admin audit
//! checkpoints --export` keeps them in outside the database, and `POST
//! /admin/v1/audit/verify` takes them back in to check the database against.

use serde::{Deserialize, Serialize};
use session_core::TokenDigest;
use session_core::keys::MAX_KID_LEN;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::state::SignedHead;
use crate::wire::Timestamp;

/// Longest signature accepted back (base64url of a 64-byte signature is 86
/// characters; room for other algorithms).
const MAX_SIGNATURE_LEN: usize = 512;

/// One signed head of the audit chain.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckpointView {
    /// The `seq` of the last event it covers.
    pub seq: i64,
    /// That event's chain hash, 64 lowercase hex digits.
    pub head_hash: String,
    /// The signing key's id (a key of the ring, or of its archive).
    pub kid: String,
    /// The base64url signature over `session-audit-checkpoint/v1\n`, the
    /// `seq` as 8 big-endian bytes and the 32 hash bytes.
    pub signature: String,
    /// When it was written (the database's clock).
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
}

/// `{"checkpoints": [...]}`: the export file, and the body of `POST
/// /admin/v1/audit/verify` (optional).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckpointList {
    /// Oldest first.
    pub checkpoints: Vec<CheckpointView>,
}

impl From<&SignedHead> for CheckpointView {
    fn from(c: &SignedHead) -> Self {
        Self {
            seq: c.seq,
            head_hash: TokenDigest::from_bytes(c.head_hash).to_hex(),
            kid: c.kid.clone(),
            // Written by the server as base64url text; anything else was
            // not, and shows as such.
            signature: String::from_utf8_lossy(&c.signature).into_owned(),
            at: c.at.into(),
        }
    }
}

impl CheckpointView {
    /// The checkpoint, its fields checked for shape (not for truth: that is
    /// the verifier's job).
    pub fn to_checkpoint(&self) -> Result<SignedHead, ApiError> {
        let bad = |what: &str| {
            ApiError::invalid_request(format!("checkpoint at seq {}: {what}", self.seq))
        };
        if self.seq < 1 {
            return Err(ApiError::invalid_request(
                "a checkpoint's seq is a positive integer",
            ));
        }
        // The chain hash is a SHA-256 digest: the digests' hex codec.
        let head_hash = *TokenDigest::from_hex(&self.head_hash)
            .ok_or_else(|| bad("head_hash is 64 hex digits"))?
            .as_bytes();
        if self.kid.is_empty() || self.kid.len() > MAX_KID_LEN {
            return Err(bad("kid is 1 to 64 characters"));
        }
        if self.signature.is_empty() || self.signature.len() > MAX_SIGNATURE_LEN {
            return Err(bad("signature is 1 to 512 characters"));
        }
        Ok(SignedHead {
            seq: self.seq,
            head_hash,
            signature: self.signature.clone().into_bytes(),
            kid: self.kid.clone(),
            at: self.at.0,
        })
    }
}

#[cfg(test)]
mod tests {
    use time::OffsetDateTime;

    use super::*;

    fn view() -> CheckpointView {
        CheckpointView {
            seq: 7,
            head_hash: "ab".repeat(32),
            kid: "k1".into(),
            signature: "c2ln".into(),
            at: OffsetDateTime::UNIX_EPOCH.into(),
        }
    }

    #[test]
    fn a_checkpoint_survives_the_wire() {
        let c = view().to_checkpoint().unwrap();
        assert_eq!(c.head_hash, [0xab; 32]);
        let back = CheckpointView::from(&c);
        assert_eq!(back.head_hash, view().head_hash);
        assert_eq!(back.signature, "c2ln");
    }

    #[test]
    fn malformed_fields_are_refused() {
        let cases: [fn(&mut CheckpointView); 6] = [
            |v| v.seq = 0,
            |v| v.head_hash = "ab".repeat(31),
            |v| v.head_hash = "zz".repeat(32),
            |v| v.kid = String::new(),
            |v| v.kid = "k".repeat(65),
            |v| v.signature = "s".repeat(513),
        ];
        for edit in cases {
            let mut v = view();
            edit(&mut v);
            assert!(v.to_checkpoint().is_err(), "{v:?}");
        }
    }
}
