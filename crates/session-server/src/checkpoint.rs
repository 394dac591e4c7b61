//! Audit-chain checkpoints on the wire: between the server's
//! `SignedHead` and `session_core::wire::CheckpointView`, the form `GET
//! /admin/v1/audit/checkpoints` lists them in, `session-admin audit
//! checkpoints --export` keeps them in outside the database, and `POST
//! /admin/v1/audit/verify` takes them back in to check the database against.

use session_core::TokenDigest;
use session_core::keys::MAX_KID_LEN;
use session_core::wire::CheckpointView;

use crate::error::ApiError;
use crate::state::SignedHead;

/// Longest signature accepted back (base64url of a 64-byte signature is 86
/// characters; room for other algorithms).
const MAX_SIGNATURE_LEN: usize = 512;

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

impl TryFrom<&CheckpointView> for SignedHead {
    type Error = ApiError;

    /// The checkpoint, its fields checked for shape (not for truth: that is
    /// the verifier's job).
    fn try_from(view: &CheckpointView) -> Result<Self, ApiError> {
        let bad = |what: &str| {
            ApiError::invalid_request(format!("checkpoint at seq {}: {what}", view.seq))
        };
        if view.seq < 1 {
            return Err(ApiError::invalid_request(
                "a checkpoint's seq is a positive integer",
            ));
        }
        // The chain hash is a SHA-256 digest: the digests' hex codec.
        let head_hash = *TokenDigest::from_hex(&view.head_hash)
            .ok_or_else(|| bad("head_hash is 64 hex digits"))?
            .as_bytes();
        if view.kid.is_empty() || view.kid.len() > MAX_KID_LEN {
            return Err(bad("kid is 1 to 64 characters"));
        }
        if view.signature.is_empty() || view.signature.len() > MAX_SIGNATURE_LEN {
            return Err(bad("signature is 1 to 512 characters"));
        }
        Ok(Self {
            seq: view.seq,
            head_hash,
            signature: view.signature.clone().into_bytes(),
            kid: view.kid.clone(),
            at: view.at.0,
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
        let c = SignedHead::try_from(&view()).unwrap();
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
            assert!(SignedHead::try_from(&v).is_err(), "{v:?}");
        }
    }
}
