//! Key names. The only module that knows how keys are spelled.

use session_core::SessionId;

/// Version of the key layout; bumped when the layout or encoding changes
/// incompatibly, so old and new servers never read each other's records.
pub(crate) const LAYOUT_VERSION: &str = "v1";

/// Builds every key and channel name under one prefix.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    /// `{prefix}:v1:`
    base: String,
    channel: String,
}

/// Why a prefix was refused.
#[derive(Debug, thiserror::Error)]
#[error("key prefix must be non-empty and free of '{{', '}}' and whitespace")]
pub(crate) struct BadPrefix;

impl Keys {
    pub(crate) fn new(prefix: &str) -> Result<Self, BadPrefix> {
        // Braces in the prefix would move the hash tag and break the
        // one-slot guarantee of every script.
        if prefix.is_empty() || prefix.contains(['{', '}']) || prefix.contains(char::is_whitespace)
        {
            return Err(BadPrefix);
        }
        Ok(Self {
            base: format!("{prefix}:{LAYOUT_VERSION}:"),
            channel: format!("{prefix}:revocations"),
        })
    }

    /// The pub/sub channel every revocation is published on.
    pub(crate) fn channel(&self) -> &str {
        &self.channel
    }

    /// `…:shared:<name>` — a value every instance shares (the sealed key
    /// ring, sealed server secrets).
    pub(crate) fn shared(&self, name: &str) -> String {
        format!("{}shared:{name}", self.base)
    }

    /// `…:s:{<sid>}` — one session (a string; see `codec`).
    pub(crate) fn session(&self, sid: &SessionId) -> String {
        format!("{}s:{{{sid}}}", self.base)
    }

    /// `…:p:<hex>` — one remembered DPoP proof (the replay set), keyed by
    /// the digest of its key thumbprint and `jti`; expires with the proof.
    pub(crate) fn dpop_proof(&self, key: &[u8; 32]) -> String {
        use std::fmt::Write as _;
        let mut k = String::with_capacity(self.base.len() + 2 + 64);
        k.push_str(&self.base);
        k.push_str("p:");
        for b in key {
            let _ = write!(k, "{b:02x}");
        }
        k
    }

    /// `…:g:{<sid>}` — the sealed grace successor of a session, alive only
    /// for the grace window. Same slot as the session.
    pub(crate) fn grace(&self, sid: &SessionId) -> String {
        format!("{}g:{{{sid}}}", self.base)
    }

    /// `…:u:{<user>}` — the user's index: a sorted set of session ids scored
    /// by creation time (microseconds).
    pub(crate) fn index(&self, user_id: &str) -> String {
        format!("{}u:{{{}}}", self.base, tag(user_id))
    }

    /// `…:l:{<user>}` — the short-lived lock that serializes one user's
    /// limited logins. Same slot as the index.
    pub(crate) fn lock(&self, user_id: &str) -> String {
        format!("{}l:{{{}}}", self.base, tag(user_id))
    }

    /// `…:e:{<user>}` — the user's session epoch (an integer, no expiry),
    /// moved on by every revoke-all and password change. Same slot as the
    /// index, the lock and the built-in user of that name, so the index
    /// and password scripts read or move it atomically.
    pub(crate) fn epoch(&self, user_id: &str) -> String {
        format!("{}e:{{{}}}", self.base, tag(user_id))
    }

    /// `…:user:{<username>}` — a built-in password user (a hash).
    pub(crate) fn user(&self, username: &str) -> String {
        format!("{}user:{{{}}}", self.base, tag(username))
    }

    /// Pattern matching every key under this prefix (for tests and tools).
    pub(crate) fn pattern(&self) -> String {
        format!("{}*", self.base)
    }
}

/// The hash-tag body for an arbitrary string: `%`, `{` and `}` are
/// percent-encoded so the tag ends where we mean it to, and the empty string
/// becomes a lone `%` (which no encoding of a non-empty string produces), so
/// the tag is never empty (an empty tag would hash the whole key).
pub(crate) fn tag(s: &str) -> String {
    if s.is_empty() {
        return "%".to_owned();
    }
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '%' => out.push_str("%25"),
            '{' => out.push_str("%7B"),
            '}' => out.push_str("%7D"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The slot a key hashes to, following the cluster spec's hash-tag rule.
    fn hash_tag(key: &str) -> &str {
        if let Some(open) = key.find('{')
            && let Some(len) = key[open + 1..].find('}')
            && len > 0
        {
            return &key[open + 1..open + 1 + len];
        }
        key
    }

    #[test]
    fn keys_that_one_script_touches_share_one_hash_tag() {
        let keys = Keys::new("app").unwrap();
        let sid = SessionId::generate();
        assert_eq!(hash_tag(&keys.session(&sid)), hash_tag(&keys.grace(&sid)));
        for user in ["alice", "", "a}b", "{x}", "%", "%25", "x{", "}"] {
            let u = keys.index(user);
            assert_eq!(hash_tag(&u), hash_tag(&keys.lock(user)), "{user:?}");
            assert_eq!(hash_tag(&u), hash_tag(&keys.epoch(user)), "{user:?}");
            assert_eq!(hash_tag(&u), hash_tag(&keys.user(user)), "{user:?}");
            assert!(!hash_tag(&u).is_empty());
        }
    }

    #[test]
    fn distinct_user_ids_get_distinct_tags() {
        let users = ["", "%", "%25", "{", "%7B", "}", "%7D", "a", "a%"];
        let tags: std::collections::HashSet<_> = users.iter().map(|u| tag(u)).collect();
        assert_eq!(tags.len(), users.len());
    }

    #[test]
    fn prefixes_with_braces_are_refused() {
        assert!(Keys::new("a{b").is_err());
        assert!(Keys::new("a}b").is_err());
        assert!(Keys::new("").is_err());
        assert!(Keys::new("sessions").is_ok());
    }
}
