//! The compact JWS serialization (RFC 7515 §7.1) as both of core's
//! parsers of one read it, access tokens (`keys::token`) and DPoP proofs
//! (`dpop`): a length bound, exactly three segments, each strict unpadded
//! base64url. What the segments must then hold is each parser's own.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Largest decoded size of any segment of a JWS no longer than `max_len`
/// (4 base64 characters carry 3 bytes).
pub(crate) const fn max_segment_bytes(max_len: usize) -> usize {
    max_len / 4 * 3 + 3
}

/// Why [`split_jws`] refused its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SplitError {
    /// Longer than the caller's bound.
    TooLong,
    /// Not exactly three `.`-separated segments.
    Malformed,
}

/// The three segments of a compact JWS, still encoded.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CompactJws<'a> {
    /// The protected header, base64url.
    pub(crate) header: &'a str,
    /// The payload, base64url.
    pub(crate) payload: &'a str,
    /// The signature, base64url.
    pub(crate) signature: &'a str,
    /// What the signature is over: `header.payload`.
    pub(crate) signing_input: &'a str,
}

/// Splits `jws` into its three segments after checking its length against
/// `max_len`. Segments are not decoded here: each parser decodes them with
/// [`decode_segment`] in the order its checks need them.
pub(crate) fn split_jws(jws: &str, max_len: usize) -> Result<CompactJws<'_>, SplitError> {
    if jws.len() > max_len {
        return Err(SplitError::TooLong);
    }
    let mut parts = jws.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SplitError::Malformed);
    };
    Ok(CompactJws {
        header,
        payload,
        signature,
        signing_input: &jws[..header.len() + 1 + payload.len()],
    })
}

/// Decodes one segment into `out` as strict base64url (no padding, no
/// standard alphabet, no non-canonical trailing bits); its length, or
/// `None` for anything else, including a segment larger than `out`.
pub(crate) fn decode_segment(segment: &str, out: &mut [u8]) -> Option<usize> {
    URL_SAFE_NO_PAD.decode_slice(segment.as_bytes(), out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jws_splits_into_exactly_three_segments() {
        let jws = split_jws("aGVhZA.cGF5bG9hZA.c2ln", 100).unwrap();
        assert_eq!(jws.header, "aGVhZA");
        assert_eq!(jws.payload, "cGF5bG9hZA");
        assert_eq!(jws.signature, "c2ln");
        assert_eq!(jws.signing_input, "aGVhZA.cGF5bG9hZA");
        for bad in ["a.b", "a.b.c.d", "abc", "", "a..b.c"] {
            assert_eq!(
                split_jws(bad, 100).err(),
                Some(SplitError::Malformed),
                "{bad}"
            );
        }
        assert!(split_jws("..", 100).is_ok());
    }

    #[test]
    fn a_jws_over_the_bound_is_refused_before_it_is_read() {
        assert!(split_jws("a.b.c", 5).is_ok());
        assert_eq!(split_jws("a.b.c", 4).err(), Some(SplitError::TooLong));
        assert_eq!(split_jws("abcdef", 4).err(), Some(SplitError::TooLong));
    }

    #[test]
    fn segments_decode_as_strict_base64url_only() {
        let mut out = [0u8; 16];
        assert_eq!(decode_segment("aGk", &mut out), Some(2));
        assert_eq!(&out[..2], b"hi");
        for bad in ["aGk=", "a+/b", "aGl", "a"] {
            assert_eq!(decode_segment(bad, &mut out), None, "{bad}");
        }
        let mut small = [0u8; 1];
        assert_eq!(decode_segment("aGk", &mut small), None);
    }

    #[test]
    fn the_segment_bound_fits_any_segment_within_the_length_bound() {
        let max = 4096;
        let segment = "A".repeat(max);
        let mut out = vec![0u8; max_segment_bytes(max)];
        assert!(decode_segment(&segment, &mut out).is_some());
    }
}
