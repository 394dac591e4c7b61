//! The hash chain: the canonical form of an event and the link between two.
//!
//! Pure functions, no I/O. The README gives the format in full; this module
//! is its one implementation.

use serde_json::Value;
use session_core::AuditEvent;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

/// A SHA-256 digest: one link of the chain.
pub type Hash = [u8; 32];

/// The `prev_hash` of the first event.
pub const GENESIS: Hash = [0; 32];

/// The tag that opens every event's canonical form (its format's version).
const EVENT_TAG: &[u8] = b"session-audit-event/v1\n";

/// The tag that opens every checkpoint's signed message.
const CHECKPOINT_TAG: &[u8] = b"session-audit-checkpoint/v1\n";

/// What PostgreSQL keeps of an event, exactly: `at` cut to whole
/// microseconds (towards the past) and every NUL character, which
/// PostgreSQL text cannot hold, replaced by U+FFFD. The chain covers this
/// form, so it can be recomputed from the stored row.
pub fn normalize(event: &AuditEvent) -> AuditEvent {
    AuditEvent {
        id: event.id,
        at: truncate_to_micros(event.at),
        kind: event.kind,
        session_id: event.session_id.as_deref().map(no_nul),
        user_id: event.user_id.as_deref().map(no_nul),
        actor: event.actor,
        ip: event.ip.as_deref().map(no_nul),
        user_agent: event.user_agent.as_deref().map(no_nul),
        reason: event.reason.as_deref().map(no_nul),
        details: json_no_nul(&event.details),
    }
}

fn truncate_to_micros(at: OffsetDateTime) -> OffsetDateTime {
    let at = at.to_offset(time::UtcOffset::UTC);
    let nanos = at.nanosecond();
    at.replace_nanosecond(nanos - nanos % 1_000).unwrap_or(at)
}

fn no_nul(s: &str) -> String {
    s.replace('\0', "\u{FFFD}")
}

fn json_no_nul(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(no_nul(s)),
        Value::Array(items) => Value::Array(items.iter().map(json_no_nul).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (no_nul(k), json_no_nul(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Microseconds since the Unix epoch.
pub fn unix_micros(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos().div_euclid(1_000)).unwrap_or(i64::MAX)
}

/// An event's columns as stored, borrowed: what the chain covers. Kind and
/// actor are the stored text, so a row altered to an unknown kind still
/// hashes (and fails to match).
#[derive(Debug, Clone, Copy)]
pub struct Fields<'a> {
    /// `id`.
    pub id: &'a uuid::Uuid,
    /// `at`, in microseconds since the Unix epoch.
    pub at_micros: i64,
    /// `kind`.
    pub kind: &'a str,
    /// `session_id`.
    pub session_id: Option<&'a str>,
    /// `user_id`.
    pub user_id: Option<&'a str>,
    /// `actor`.
    pub actor: &'a str,
    /// `ip`.
    pub ip: Option<&'a str>,
    /// `user_agent`.
    pub user_agent: Option<&'a str>,
    /// `reason`.
    pub reason: Option<&'a str>,
    /// `details`.
    pub details: &'a Value,
}

impl<'a> Fields<'a> {
    /// The columns of an event (already [`normalize`]d).
    pub fn of(event: &'a AuditEvent) -> Self {
        Self {
            id: &event.id,
            at_micros: unix_micros(event.at),
            kind: event.kind.as_str(),
            session_id: event.session_id.as_deref(),
            user_id: event.user_id.as_deref(),
            actor: event.actor.as_str(),
            ip: event.ip.as_deref(),
            user_agent: event.user_agent.as_deref(),
            reason: event.reason.as_deref(),
            details: &event.details,
        }
    }
}

/// The canonical byte form of an event's stored columns.
pub fn canonical(f: &Fields<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(EVENT_TAG);
    field(&mut out, f.id.as_bytes());
    field(&mut out, &f.at_micros.to_be_bytes());
    field(&mut out, f.kind.as_bytes());
    optional(&mut out, f.session_id);
    optional(&mut out, f.user_id);
    field(&mut out, f.actor.as_bytes());
    optional(&mut out, f.ip);
    optional(&mut out, f.user_agent);
    optional(&mut out, f.reason);
    field(&mut out, canonical_json(f.details).as_bytes());
    out
}

/// `SHA-256(prev ‖ canonical(fields))`.
pub fn link(prev: &Hash, f: &Fields<'_>) -> Hash {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(canonical(f));
    h.finalize().into()
}

/// [`link`] for a whole (already [`normalize`]d) event.
pub fn link_event(prev: &Hash, event: &AuditEvent) -> Hash {
    link(prev, &Fields::of(event))
}

/// The message a checkpoint signs.
pub fn checkpoint_message(seq: i64, head: &Hash) -> Vec<u8> {
    let mut out = Vec::with_capacity(CHECKPOINT_TAG.len() + 40);
    out.extend_from_slice(CHECKPOINT_TAG);
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(head);
    out
}

fn field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&u64::try_from(bytes.len()).unwrap_or(u64::MAX).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn optional(out: &mut Vec<u8>, value: Option<&str>) {
    match value {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            field(out, s.as_bytes());
        }
    }
}

/// JSON with object keys sorted by their UTF-8 bytes at every level and no
/// whitespace; strings and numbers as `serde_json` writes them.
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_json(&mut out, v);
    out
}

fn write_json(out: &mut String, v: &Value) {
    match v {
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (k, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_json(out, item);
            }
            out.push('}');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use session_core::{Actor, AuditKind};

    fn event() -> AuditEvent {
        let at = time::macros::datetime!(2026-01-01 00:00:00.123456789 UTC);
        AuditEvent::new(AuditKind::SessionRevoked, Actor::Admin, at)
            .session("s1", "alice")
            .details(serde_json::json!({"b": [1, 2.5, "x"], "a": {"z": null, "y": true}}))
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        assert_eq!(
            canonical_json(&event().details),
            r#"{"a":{"y":true,"z":null},"b":[1,2.5,"x"]}"#
        );
    }

    #[test]
    fn normalizing_cuts_time_to_microseconds_and_replaces_nul() {
        let mut e = event();
        e.user_agent = Some("a\0b".into());
        let n = normalize(&e);
        assert_eq!(n.at.nanosecond(), 123_456_000);
        assert_eq!(n.user_agent.as_deref(), Some("a\u{FFFD}b"));
        assert_eq!(normalize(&n), n);
    }

    #[test]
    fn every_field_changes_the_hash() {
        let base = normalize(&event());
        let h = link_event(&GENESIS, &base);
        let mut variants = Vec::new();
        let mut e = base.clone();
        e.reason = Some(String::new());
        variants.push(e);
        let mut e = base.clone();
        e.session_id = None;
        variants.push(e);
        let mut e = base.clone();
        e.actor = Actor::User;
        variants.push(e);
        let mut e = base.clone();
        e.at += time::Duration::microseconds(1);
        variants.push(e);
        let mut e = base.clone();
        e.details = serde_json::json!({});
        variants.push(e);
        for v in variants {
            assert_ne!(link_event(&GENESIS, &v), h);
        }
        assert_ne!(
            link_event(&h, &base),
            h,
            "the previous hash is part of the link"
        );
    }

    #[test]
    fn moving_bytes_between_fields_changes_the_hash() {
        let mut a = normalize(&event());
        a.session_id = Some("ab".into());
        a.user_id = Some("c".into());
        let mut b = a.clone();
        b.session_id = Some("a".into());
        b.user_id = Some("bc".into());
        assert_ne!(canonical(&Fields::of(&a)), canonical(&Fields::of(&b)));
    }
}
