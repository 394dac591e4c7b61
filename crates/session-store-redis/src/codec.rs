//! The compact encoding of a session as a Redis hash.
//!
//! | field | holds | written by |
//! |---|---|---|
//! | `v` | version, decimal | Rust; `HINCRBY` in the revoking scripts |
//! | `e` | deadline (`expires_at`) as a fixed-width decimal, so Lua compares it as a string | Rust |
//! | `r` | revocation `"<unix nanos> <reason>"`, absent while active | Rust or the revoking scripts |
//! | `g` | the sealed grace successor, absent when none | Rust; deleted by the revoking scripts |
//! | `d` | everything else, in the binary format below | Rust |
//!
//! `d` is: format byte `1`, user id, the four timestamps, ip, user agent,
//! metadata (JSON text), generation, current digest (32 bytes), previous
//! digest (flag + 32 bytes), rotated-at (flag + timestamp), recent
//! refreshes (count + timestamps). Strings are a varint length and bytes;
//! optional strings use length + 1 with 0 for none; timestamps are
//! zig-zag varints of Unix nanoseconds (exact round trip).

use session_core::secret::TokenDigest;
use session_core::session::{RefreshState, Revocation};
use session_core::{RevokeReason, Session, SessionId};
use time::OffsetDateTime;

const FORMAT: u8 = 1;
/// Added to Unix nanoseconds so every representable instant is a positive
/// number of exactly [`SORT_WIDTH`] digits.
const SORT_OFFSET: i128 = 1_000_000_000_000_000_000_000;
const SORT_WIDTH: usize = 22;

/// Why a stored session could not be decoded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DecodeError {
    #[error("session record is missing field {0:?}")]
    Missing(&'static str),
    #[error("session record field {0:?} is malformed")]
    Malformed(&'static str),
    #[error("session record has unknown format {0}")]
    Format(u8),
    #[error("session record is truncated")]
    Truncated,
    #[error("session metadata is not JSON")]
    Metadata(#[source] serde_json::Error),
}

/// A session split into its hash fields.
#[derive(Debug, Clone)]
pub(crate) struct Fields {
    pub(crate) v: String,
    pub(crate) e: String,
    pub(crate) d: Vec<u8>,
    /// Empty when none (Lua then deletes the field).
    pub(crate) g: Vec<u8>,
    /// Empty when active.
    pub(crate) r: String,
    /// `PEXPIREAT` argument: the deadline in Unix ms, rounded up.
    pub(crate) deadline_ms: i64,
}

/// The sortable form of an instant (see [`SORT_OFFSET`]).
pub(crate) fn sortable(t: OffsetDateTime) -> String {
    let n = (t.unix_timestamp_nanos() + SORT_OFFSET).clamp(0, SORT_OFFSET * 2);
    format!("{n:0SORT_WIDTH$}")
}

/// The instant in Unix milliseconds, rounded up, never below 1 (Redis
/// refuses non-positive absolute expiries).
pub(crate) fn deadline_ms(t: OffsetDateTime) -> i64 {
    let nanos = t.unix_timestamp_nanos();
    let ms = nanos.div_euclid(1_000_000) + i128::from(nanos.rem_euclid(1_000_000) != 0);
    i64::try_from(ms.max(1)).unwrap_or(i64::MAX)
}

/// Index score: creation time in Unix microseconds (exact in an f64 until
/// the year 2255).
pub(crate) fn index_score(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos().div_euclid(1_000)).unwrap_or(i64::MAX)
}

/// The `r` field for a revocation.
pub(crate) fn revocation_field(at: OffsetDateTime, reason: RevokeReason) -> String {
    format!("{} {}", at.unix_timestamp_nanos(), reason.as_str())
}

fn parse_revocation(s: &[u8]) -> Result<Revocation, DecodeError> {
    let bad = || DecodeError::Malformed("r");
    let s = std::str::from_utf8(s).map_err(|_| bad())?;
    let (at, reason) = s.split_once(' ').ok_or_else(bad)?;
    let at: i128 = at.parse().map_err(|_| bad())?;
    Ok(Revocation {
        at: OffsetDateTime::from_unix_timestamp_nanos(at).map_err(|_| bad())?,
        reason: RevokeReason::parse(reason).ok_or_else(bad)?,
    })
}

pub(crate) fn encode(s: &Session) -> Fields {
    let mut d = Vec::with_capacity(192);
    d.push(FORMAT);
    put_str(&mut d, s.user_id.as_bytes());
    put_ts(&mut d, s.created_at);
    put_ts(&mut d, s.last_seen_at);
    put_ts(&mut d, s.idle_expires_at);
    put_ts(&mut d, s.absolute_expires_at);
    put_opt_str(&mut d, s.ip.as_deref());
    put_opt_str(&mut d, s.user_agent.as_deref());
    // A `Value` always serializes.
    let meta = serde_json::to_vec(&s.metadata).unwrap_or_else(|_| b"null".to_vec());
    put_str(&mut d, &meta);
    let r = &s.refresh;
    put_varint(&mut d, u128::from(r.generation));
    d.extend_from_slice(r.current.as_bytes());
    match &r.previous {
        Some(p) => {
            d.push(1);
            d.extend_from_slice(p.as_bytes());
        }
        None => d.push(0),
    }
    match r.rotated_at {
        Some(t) => {
            d.push(1);
            put_ts(&mut d, t);
        }
        None => d.push(0),
    }
    put_varint(&mut d, r.recent_refreshes.len() as u128);
    for t in &r.recent_refreshes {
        put_ts(&mut d, *t);
    }
    Fields {
        v: s.version.to_string(),
        e: sortable(s.expires_at()),
        d,
        g: r.grace_successor.clone().unwrap_or_default(),
        r: s
            .revoked
            .map(|rv| revocation_field(rv.at, rv.reason))
            .unwrap_or_default(),
        deadline_ms: deadline_ms(s.expires_at()),
    }
}

/// Decodes the flat `HGETALL` reply of session `id`. `None` for an empty
/// reply (no such key).
pub(crate) fn decode(id: SessionId, hgetall: &[Vec<u8>]) -> Result<Option<Session>, DecodeError> {
    if hgetall.is_empty() {
        return Ok(None);
    }
    let (mut v, mut d, mut g, mut r) = (None, None, None, None);
    for pair in hgetall.chunks(2) {
        let [name, value] = pair else {
            return Err(DecodeError::Truncated);
        };
        match name.as_slice() {
            b"v" => v = Some(value),
            b"d" => d = Some(value),
            b"g" => g = Some(value),
            b"r" => r = Some(value),
            _ => {}
        }
    }
    let version = std::str::from_utf8(v.ok_or(DecodeError::Missing("v"))?)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or(DecodeError::Malformed("v"))?;
    let revoked = r.map(|r| parse_revocation(r)).transpose()?;
    let mut rd = Reader(d.ok_or(DecodeError::Missing("d"))?);
    let format = rd.byte()?;
    if format != FORMAT {
        return Err(DecodeError::Format(format));
    }
    let user_id = rd.string()?;
    let created_at = rd.ts()?;
    let last_seen_at = rd.ts()?;
    let idle_expires_at = rd.ts()?;
    let absolute_expires_at = rd.ts()?;
    let ip = rd.opt_string()?;
    let user_agent = rd.opt_string()?;
    let metadata = serde_json::from_slice(rd.bytes()?).map_err(DecodeError::Metadata)?;
    let generation = u64::try_from(rd.varint()?).map_err(|_| DecodeError::Malformed("d"))?;
    let current = rd.digest()?;
    let previous = if rd.byte()? == 1 { Some(rd.digest()?) } else { None };
    let rotated_at = if rd.byte()? == 1 { Some(rd.ts()?) } else { None };
    let n = rd.varint()?;
    let mut recent_refreshes = Vec::new();
    for _ in 0..n {
        recent_refreshes.push(rd.ts()?);
    }
    Ok(Some(Session {
        id,
        user_id,
        created_at,
        last_seen_at,
        idle_expires_at,
        absolute_expires_at,
        ip,
        user_agent,
        metadata,
        refresh: RefreshState {
            generation,
            current,
            previous,
            rotated_at,
            grace_successor: g.cloned(),
            recent_refreshes,
        },
        revoked,
        version,
    }))
}

fn put_varint(out: &mut Vec<u8>, mut n: u128) {
    loop {
        let low = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(low);
            return;
        }
        out.push(low | 0x80);
    }
}

fn put_ts(out: &mut Vec<u8>, t: OffsetDateTime) {
    let n = t.unix_timestamp_nanos();
    // Zig-zag: small magnitudes of either sign stay short.
    #[allow(clippy::cast_sign_loss)] // reason: zig-zag reinterprets the bits on purpose
    let z = ((n << 1) ^ (n >> 127)) as u128;
    put_varint(out, z);
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    put_varint(out, s.len() as u128);
    out.extend_from_slice(s);
}

fn put_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => {
            put_varint(out, s.len() as u128 + 1);
            out.extend_from_slice(s.as_bytes());
        }
        None => put_varint(out, 0),
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, DecodeError> {
        let (&b, rest) = self.0.split_first().ok_or(DecodeError::Truncated)?;
        self.0 = rest;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn varint(&mut self) -> Result<u128, DecodeError> {
        let mut n: u128 = 0;
        for shift in (0..128).step_by(7) {
            let b = self.byte()?;
            n |= u128::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(DecodeError::Malformed("d"))
    }

    fn len(&mut self) -> Result<usize, DecodeError> {
        usize::try_from(self.varint()?).map_err(|_| DecodeError::Malformed("d"))
    }

    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.len()?;
        self.take(n)
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError::Malformed("d"))
    }

    fn opt_string(&mut self) -> Result<Option<String>, DecodeError> {
        match self.len()? {
            0 => Ok(None),
            n => {
                let b = self.take(n - 1)?;
                String::from_utf8(b.to_vec())
                    .map(Some)
                    .map_err(|_| DecodeError::Malformed("d"))
            }
        }
    }

    fn ts(&mut self) -> Result<OffsetDateTime, DecodeError> {
        let z = self.varint()?;
        #[allow(clippy::cast_possible_wrap)] // reason: undoing the zig-zag bit reinterpretation
        let n = ((z >> 1) as i128) ^ -((z & 1) as i128);
        OffsetDateTime::from_unix_timestamp_nanos(n).map_err(|_| DecodeError::Malformed("d"))
    }

    fn digest(&mut self) -> Result<TokenDigest, DecodeError> {
        let b = self.take(32)?;
        let mut arr = [0u8; 32];
        arr.copy_from_slice(b);
        Ok(TokenDigest::from_bytes(arr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use session_core::Lifetimes;
    use time::Duration;

    fn fields_to_hgetall(f: &Fields) -> Vec<Vec<u8>> {
        let mut out = vec![b"v".to_vec(), f.v.clone().into_bytes(), b"e".to_vec(), f.e.clone().into_bytes()];
        out.extend([b"d".to_vec(), f.d.clone()]);
        if !f.g.is_empty() {
            out.extend([b"g".to_vec(), f.g.clone()]);
        }
        if !f.r.is_empty() {
            out.extend([b"r".to_vec(), f.r.clone().into_bytes()]);
        }
        out
    }

    fn arb_time() -> impl Strategy<Value = OffsetDateTime> {
        (-2_000_000_000_i64..8_000_000_000, 0_u32..1_000_000_000).prop_map(|(s, n)| {
            OffsetDateTime::from_unix_timestamp(s).unwrap() + Duration::nanoseconds(i64::from(n))
        })
    }

    prop_compose! {
        fn arb_session()(
            user in ".{0,40}",
            times in proptest::collection::vec(arb_time(), 5),
            ip in proptest::option::of("[0-9.:a-f]{0,40}"),
            ua in proptest::option::of(".{0,200}"),
            meta in proptest::option::of(("[a-z]{1,8}", any::<i64>())),
            generation in any::<u64>(),
            cur in any::<[u8; 32]>(),
            prev in proptest::option::of(any::<[u8; 32]>()),
            rotated in any::<bool>(),
            grace in proptest::option::of(proptest::collection::vec(any::<u8>(), 1..200)),
            recent in proptest::collection::vec(arb_time(), 0..12),
            revoked in proptest::option::of((arb_time(), 0_usize..8)),
            version in any::<u64>(),
        ) -> Session {
            let reasons = [
                RevokeReason::Logout, RevokeReason::Admin, RevokeReason::UserRevoked,
                RevokeReason::RevokeAll, RevokeReason::PasswordChanged,
                RevokeReason::ReuseDetected, RevokeReason::Anomaly, RevokeReason::SessionLimit,
            ];
            let mut s = Session::new(SessionId::generate(), user, TokenDigest::from_bytes(cur), &Lifetimes::default(), times[0]);
            s.last_seen_at = times[1];
            s.idle_expires_at = times[2];
            s.absolute_expires_at = times[3];
            s.ip = ip;
            s.user_agent = ua;
            if let Some((k, v)) = meta {
                s.metadata = serde_json::json!({ k: v, "nested": [1, "two", null] });
            }
            s.refresh.generation = generation;
            s.refresh.previous = prev.map(TokenDigest::from_bytes);
            s.refresh.rotated_at = rotated.then_some(times[4]);
            s.refresh.grace_successor = grace;
            s.refresh.recent_refreshes = recent;
            s.revoked = revoked.map(|(at, i)| Revocation { at, reason: reasons[i] });
            s.version = version;
            s
        }
    }

    proptest! {
        #[test]
        fn every_session_survives_an_encode_decode_round_trip(s in arb_session()) {
            let f = encode(&s);
            let back = decode(s.id, &fields_to_hgetall(&f)).unwrap().unwrap();
            prop_assert_eq!(back, s);
        }

        #[test]
        fn sortable_instants_compare_like_the_instants(a in arb_time(), b in arb_time()) {
            let (sa, sb) = (sortable(a), sortable(b));
            prop_assert_eq!(sa.len(), SORT_WIDTH);
            prop_assert_eq!(sa.cmp(&sb), a.cmp(&b));
        }
    }

    #[test]
    fn deadlines_round_up_to_the_next_millisecond() {
        let t = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        assert_eq!(deadline_ms(t), 1_800_000_000_000);
        assert_eq!(deadline_ms(t + Duration::nanoseconds(1)), 1_800_000_000_001);
        assert_eq!(deadline_ms(OffsetDateTime::UNIX_EPOCH - Duration::days(1)), 1);
    }

    #[test]
    fn an_empty_reply_is_no_session_and_a_mangled_one_is_an_error() {
        assert!(decode(SessionId::generate(), &[]).unwrap().is_none());
        let bad = vec![b"v".to_vec(), b"1".to_vec(), b"d".to_vec(), vec![1, 200]];
        assert!(decode(SessionId::generate(), &bad).is_err());
        let no_v = vec![b"d".to_vec(), vec![1]];
        assert!(decode(SessionId::generate(), &no_v).is_err());
    }
}
