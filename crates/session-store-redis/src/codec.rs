//! The compact encoding of a session as one Redis string.
//!
//! ```text
//! <version, decimal> ";" <"A" active | "R" revoked> <body>
//! ```
//!
//! The text header is all the Lua scripts read: the version for the
//! compare-and-swap and the flag to know whether a write revokes. The body
//! is binary: format byte `1`, user id, the four timestamps, ip, user
//! agent, metadata (JSON text), generation, current digest (32 bytes),
//! previous digest (flag + 32), rotated-at (flag + timestamp), recent
//! refreshes (count + timestamps), revocation (flag + timestamp + reason
//! byte), and (format 2) the user epoch the session was opened under,
//! then optional tagged fields, each a tag byte and its value:
//! `J` + string, the DPoP key thumbprint (v1.1; records without it decode
//! as unbound). Strings are a varint length and bytes; optional strings use
//! length + 1 with 0 for none; timestamps are zig-zag varints of Unix
//! nanoseconds (an exact round trip).
//!
//! The sealed grace successor is not in the body: it lives in its own key
//! that expires with the grace window (see the crate documentation).

use session_core::dpop::Jkt;
use session_core::record::{ClearFields, RecordCipher, RecordError};
use session_core::secret::TokenDigest;
use session_core::session::{RefreshState, Revocation};
use session_core::{RevokeReason, Session, SessionId};
use time::OffsetDateTime;

/// The body format written. Format 1 (before session epochs) is still read,
/// as epoch 0.
const FORMAT: u8 = 2;

/// The stored byte of a revoke reason. Exhaustive on purpose: a new
/// reason does not compile until it has its own byte here and in
/// [`reason_from_byte`]. Bytes are part of the stored format: never reuse one.
fn reason_byte(reason: RevokeReason) -> u8 {
    match reason {
        RevokeReason::Logout => 0,
        RevokeReason::Admin => 1,
        RevokeReason::UserRevoked => 2,
        RevokeReason::RevokeAll => 3,
        RevokeReason::PasswordChanged => 4,
        RevokeReason::ReuseDetected => 5,
        RevokeReason::Anomaly => 6,
        RevokeReason::SessionLimit => 7,
    }
}

/// The revoke reason of a stored byte; a byte no reason has is an error,
/// never a guess (a tombstone must keep why it was revoked).
fn reason_from_byte(byte: u8) -> Result<RevokeReason, DecodeError> {
    Ok(match byte {
        0 => RevokeReason::Logout,
        1 => RevokeReason::Admin,
        2 => RevokeReason::UserRevoked,
        3 => RevokeReason::RevokeAll,
        4 => RevokeReason::PasswordChanged,
        5 => RevokeReason::ReuseDetected,
        6 => RevokeReason::Anomaly,
        7 => RevokeReason::SessionLimit,
        other => return Err(DecodeError::Reason(other)),
    })
}

/// Why a stored session could not be decoded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DecodeError {
    #[error("session record header is malformed")]
    Header,
    #[error("session record has unknown format {0}")]
    Format(u8),
    #[error("session record is truncated")]
    Truncated,
    #[error("session record body is malformed")]
    Malformed,
    #[error("session record has unknown revoke reason {0}")]
    Reason(u8),
    #[error("session metadata is not JSON")]
    Metadata(#[source] serde_json::Error),
    #[error("session record's sealed fields do not open")]
    Sealed(#[source] RecordError),
}

/// The instant in Unix milliseconds, rounded up, never below 1 (Redis
/// refuses non-positive absolute expiries). Used for every `PXAT`.
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

/// The stored string of a session (header and body; not its grace
/// successor). With `records`, the private fields (IP, user agent,
/// metadata, location, DPoP thumbprint) are sealed into one `S` field and
/// left out of the clear ones.
pub(crate) fn encode(s: &Session, records: Option<&RecordCipher>) -> Result<Vec<u8>, RecordError> {
    let sealed = records.map(|r| r.seal(s)).transpose()?;
    let clear = ClearFields::of(s, sealed.is_some());
    let mut d = Vec::with_capacity(320);
    d.extend_from_slice(s.version.to_string().as_bytes());
    d.push(b';');
    d.push(if s.revoked.is_some() { b'R' } else { b'A' });
    d.push(FORMAT);
    put_str(&mut d, s.user_id.as_bytes());
    put_ts(&mut d, s.created_at);
    put_ts(&mut d, s.last_seen_at);
    put_ts(&mut d, s.idle_expires_at);
    put_ts(&mut d, s.absolute_expires_at);
    put_opt_str(&mut d, clear.ip);
    put_opt_str(&mut d, clear.user_agent);
    // A `Value` always serializes.
    let meta = serde_json::to_vec(clear.metadata).unwrap_or_else(|_| b"null".to_vec());
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
    match s.revoked {
        Some(rv) => {
            d.push(1);
            put_ts(&mut d, rv.at);
            d.push(reason_byte(rv.reason));
        }
        None => d.push(0),
    }
    put_varint(&mut d, u128::from(s.epoch));
    if let Some(jkt) = clear.dpop_jkt {
        d.push(TAG_DPOP_JKT);
        put_str(&mut d, jkt.as_str().as_bytes());
    }
    if let Some(place) = clear.location
        && let Ok(json) = serde_json::to_vec(place)
    {
        d.push(TAG_LOCATION);
        put_str(&mut d, &json);
    }
    if let Some(blob) = sealed {
        d.push(TAG_SEALED);
        put_str(&mut d, &blob);
    }
    Ok(d)
}

/// Tag of the optional DPoP thumbprint field.
const TAG_DPOP_JKT: u8 = b'J';
/// Tag of the optional GeoIP location field (JSON of `geo::Location`).
const TAG_LOCATION: u8 = b'L';
/// Tag of the sealed private fields (`record::RecordCipher`).
const TAG_SEALED: u8 = b'S';

/// Decodes the stored string of session `id` and its grace successor.
pub(crate) fn decode(
    id: SessionId,
    value: &[u8],
    grace: Option<Vec<u8>>,
    records: Option<&RecordCipher>,
) -> Result<Session, DecodeError> {
    let semi = value
        .iter()
        .position(|b| *b == b';')
        .ok_or(DecodeError::Header)?;
    let version = std::str::from_utf8(&value[..semi])
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or(DecodeError::Header)?;
    let mut rd = Reader(&value[semi + 1..]);
    let flag = rd.byte()?;
    if flag != b'A' && flag != b'R' {
        return Err(DecodeError::Header);
    }
    let format = rd.byte()?;
    if format != 1 && format != FORMAT {
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
    let generation = u64::try_from(rd.varint()?).map_err(|_| DecodeError::Malformed)?;
    let current = rd.digest()?;
    let previous = if rd.byte()? == 1 {
        Some(rd.digest()?)
    } else {
        None
    };
    let rotated_at = if rd.byte()? == 1 {
        Some(rd.ts()?)
    } else {
        None
    };
    let n = rd.varint()?;
    let mut recent_refreshes = Vec::new();
    for _ in 0..n {
        recent_refreshes.push(rd.ts()?);
    }
    let revoked = if rd.byte()? == 1 {
        let at = rd.ts()?;
        let reason = reason_from_byte(rd.byte()?)?;
        Some(Revocation { at, reason })
    } else {
        None
    };
    if revoked.is_some() != (flag == b'R') {
        return Err(DecodeError::Header);
    }
    let epoch = if format == 1 {
        0
    } else {
        u64::try_from(rd.varint()?).map_err(|_| DecodeError::Malformed)?
    };
    let mut dpop_jkt = None;
    let mut location = None;
    let mut sealed = None;
    while !rd.0.is_empty() {
        match rd.byte()? {
            TAG_DPOP_JKT if dpop_jkt.is_none() => {
                let s = rd.string()?;
                dpop_jkt = Some(Jkt::parse(&s).ok_or(DecodeError::Malformed)?);
            }
            TAG_SEALED if sealed.is_none() => sealed = Some(rd.bytes()?),
            TAG_LOCATION if location.is_none() => {
                location =
                    Some(serde_json::from_slice(rd.bytes()?).map_err(|_| DecodeError::Malformed)?);
            }
            _ => return Err(DecodeError::Malformed),
        }
    }
    let mut session = Session {
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
            grace_successor: grace,
            recent_refreshes,
        },
        revoked,
        epoch,
        version,
        dpop_jkt,
        location,
    };
    if let Some(blob) = sealed {
        records
            .ok_or(DecodeError::Sealed(RecordError::NoKey))?
            .open_into(&mut session, blob)
            .map_err(DecodeError::Sealed)?;
    }
    Ok(session)
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
        Err(DecodeError::Malformed)
    }

    fn len(&mut self) -> Result<usize, DecodeError> {
        usize::try_from(self.varint()?).map_err(|_| DecodeError::Malformed)
    }

    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.len()?;
        self.take(n)
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError::Malformed)
    }

    fn opt_string(&mut self) -> Result<Option<String>, DecodeError> {
        match self.len()? {
            0 => Ok(None),
            n => {
                let b = self.take(n - 1)?;
                String::from_utf8(b.to_vec())
                    .map(Some)
                    .map_err(|_| DecodeError::Malformed)
            }
        }
    }

    fn ts(&mut self) -> Result<OffsetDateTime, DecodeError> {
        let z = self.varint()?;
        #[allow(clippy::cast_possible_wrap)] // reason: undoing the zig-zag bit reinterpretation
        let n = ((z >> 1) as i128) ^ -((z & 1) as i128);
        OffsetDateTime::from_unix_timestamp_nanos(n).map_err(|_| DecodeError::Malformed)
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

    fn arb_time() -> impl Strategy<Value = OffsetDateTime> {
        (-2_000_000_000_i64..8_000_000_000, 0_u32..1_000_000_000).prop_map(|(s, n)| {
            OffsetDateTime::from_unix_timestamp(s).unwrap() + Duration::nanoseconds(i64::from(n))
        })
    }

    const REASONS: [RevokeReason; 8] = [
        RevokeReason::Logout,
        RevokeReason::Admin,
        RevokeReason::UserRevoked,
        RevokeReason::RevokeAll,
        RevokeReason::PasswordChanged,
        RevokeReason::ReuseDetected,
        RevokeReason::Anomaly,
        RevokeReason::SessionLimit,
    ];

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
            jkt in proptest::option::of(any::<[u8; 32]>()),
            epoch in any::<u64>(),
            place in proptest::option::of((
                proptest::option::of("[A-Z]{2}"),
                proptest::option::of(".{0,30}"),
                proptest::option::of((-900_000_i32..=900_000, -1_800_000_i32..=1_800_000, proptest::option::of(any::<u32>()))),
                proptest::option::of(0_i64..4_000_000_000),
            )),
        ) -> Session {
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
            s.revoked = revoked.map(|(at, i)| Revocation { at, reason: REASONS[i] });
            s.version = version;
            s.dpop_jkt = jkt.map(Jkt::from_digest);
            s.epoch = epoch;
            s.location = place.map(|(country, city, point, seen)| session_core::geo::Location {
                country,
                city,
                coordinates: point.map(|(lat, lon, r)| session_core::geo::Coordinates {
                    latitude: f64::from(lat) / 10_000.0,
                    longitude: f64::from(lon) / 10_000.0,
                    accuracy_km: r,
                }),
                seen_at: seen.map(|t| OffsetDateTime::from_unix_timestamp(t).unwrap()),
            });
            s
        }
    }

    proptest! {
        #[test]
        fn every_sealed_session_survives_a_round_trip_and_keeps_its_private_fields_out_of_the_clear(s in arb_session()) {
            let records = RecordCipher::from_secrets(&session_core::TokenSecrets::from_master(&[7; 32]));
            let stored = encode(&s, Some(&records)).unwrap();
            let clear = decode(s.id, &stored, s.refresh.grace_successor.clone(), None);
            prop_assert!(clear.is_err(), "a sealed record needs the key");
            let back = decode(s.id, &stored, s.refresh.grace_successor.clone(), Some(&records)).unwrap();
            prop_assert_eq!(back, s);
        }

        #[test]
        fn every_session_survives_an_encode_decode_round_trip(s in arb_session()) {
            let back = decode(s.id, &encode(&s, None).unwrap(), s.refresh.grace_successor.clone(), None).unwrap();
            prop_assert_eq!(back, s);
        }

        #[test]
        fn the_header_holds_the_version_and_the_revoked_flag(s in arb_session()) {
            let v = encode(&s, None).unwrap();
            let flag = if s.revoked.is_some() { "R" } else { "A" };
            let header = format!("{};{flag}", s.version);
            prop_assert!(v.starts_with(header.as_bytes()));
        }
    }

    #[test]
    fn deadlines_round_up_to_the_next_millisecond() {
        let t = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        assert_eq!(deadline_ms(t), 1_800_000_000_000);
        assert_eq!(deadline_ms(t + Duration::nanoseconds(1)), 1_800_000_000_001);
        assert_eq!(
            deadline_ms(OffsetDateTime::UNIX_EPOCH - Duration::days(1)),
            1
        );
    }

    #[test]
    fn every_reason_keeps_its_stored_byte() {
        for (byte, reason) in REASONS.iter().enumerate() {
            let byte = u8::try_from(byte).unwrap();
            assert_eq!(reason_byte(*reason), byte, "{reason:?}");
            assert_eq!(reason_from_byte(byte).unwrap(), *reason);
        }
    }

    #[test]
    fn an_unknown_revoke_reason_is_a_decode_error_not_a_logout() {
        let id = SessionId::generate();
        let mut s = Session::new(
            id,
            "u".into(),
            TokenDigest::of("t"),
            &Lifetimes::default(),
            OffsetDateTime::UNIX_EPOCH,
        );
        s.revoke(RevokeReason::Admin, OffsetDateTime::UNIX_EPOCH);
        let mut v = encode(&s, None).unwrap();
        // The reason byte is followed by the epoch (one byte for 0).
        let at = v.len() - 2;
        v[at] = 200;
        assert!(matches!(
            decode(id, &v, None, None),
            Err(DecodeError::Reason(200))
        ));
        for byte in 8..=u8::MAX {
            assert!(reason_from_byte(byte).is_err(), "{byte}");
        }
    }

    #[test]
    fn a_record_written_before_epochs_reads_as_epoch_zero() {
        let s = Session::new(
            SessionId::generate(),
            "u".into(),
            TokenDigest::of("t"),
            &Lifetimes::default(),
            OffsetDateTime::UNIX_EPOCH,
        );
        let mut v = encode(&s, None).unwrap();
        // Format 1: the same body without the trailing epoch.
        let format_at = v.iter().position(|b| *b == b';').unwrap() + 2;
        v[format_at] = 1;
        v.pop();
        assert_eq!(decode(s.id, &v, None, None).unwrap(), s);
    }

    #[test]
    fn mangled_records_are_errors_not_panics() {
        let id = SessionId::generate();
        for bad in [
            &b""[..],
            b"1",
            b"1;",
            b"1;A",
            b"1;A\x01\xff",
            b"x;A\x01",
            b"1;Q\x01",
        ] {
            assert!(decode(id, bad, None, None).is_err(), "{bad:?}");
        }
        let s = Session::new(
            id,
            "u".into(),
            TokenDigest::of("t"),
            &Lifetimes::default(),
            OffsetDateTime::UNIX_EPOCH,
        );
        let mut v = encode(&s, None).unwrap();
        v.truncate(v.len() - 1);
        assert!(decode(id, &v, None, None).is_err());
    }
}
