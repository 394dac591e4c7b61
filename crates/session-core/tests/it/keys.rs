//! The key ring through its public API: round trips for every algorithm,
//! rotation, JWKS, persistence and redaction.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use session_core::keys::{
    AccessClaims, KeyError, KeyRing, KeyState, SigningAlgorithm, StoredKeys, TokenError,
    VerifyPolicy,
};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

const NOW: OffsetDateTime = datetime!(2026-01-01 00:00 UTC);
const ALL: [SigningAlgorithm; 3] = [
    SigningAlgorithm::EdDSA,
    SigningAlgorithm::ES256,
    SigningAlgorithm::HS256,
];

fn policy() -> VerifyPolicy {
    VerifyPolicy {
        issuer: "session-server".into(),
        audience: "session-server".into(),
        leeway: Duration::seconds(30),
    }
}

fn claims(at: OffsetDateTime) -> AccessClaims {
    AccessClaims {
        iss: "session-server".into(),
        aud: "session-server".into(),
        sub: "user-1".into(),
        sid: "session-1".into(),
        iat: at.unix_timestamp(),
        exp: (at + Duration::minutes(15)).unix_timestamp(),
        nbf: None,
        jti: "jti-1".into(),
        cnf: None,
    }
}

fn ring(alg: SigningAlgorithm) -> KeyRing {
    KeyRing::generate(alg, policy(), NOW, None).unwrap()
}

fn kid_of(token: &str) -> String {
    let head = token.split('.').next().unwrap();
    let header: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(head).unwrap()).unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

#[test]
fn every_algorithm_signs_and_verifies_its_own_tokens() {
    // Also proves that exactly one jsonwebtoken crypto backend is compiled
    // in: with none or two, signing panics.
    for alg in ALL {
        let ring = ring(alg);
        assert_eq!(ring.algorithm(), alg);
        let token = ring.sign(&claims(NOW)).unwrap();
        assert_eq!(ring.verify(&token, NOW).unwrap(), claims(NOW), "{alg}");
    }
}

#[test]
fn a_token_of_one_algorithm_is_not_accepted_by_a_ring_of_another() {
    for signer in ALL {
        let token = ring(signer).sign(&claims(NOW)).unwrap();
        for verifier in ALL.into_iter().filter(|a| *a != signer) {
            assert_eq!(
                ring(verifier).verify(&token, NOW),
                Err(TokenError::AlgorithmNotAccepted),
                "{signer} token at {verifier} ring"
            );
        }
    }
}

#[test]
fn a_token_from_another_ring_of_the_same_algorithm_has_an_unknown_key() {
    for alg in ALL {
        let token = ring(alg).sign(&claims(NOW)).unwrap();
        assert_eq!(ring(alg).verify(&token, NOW), Err(TokenError::UnknownKey));
    }
}

#[test]
fn a_token_is_refused_once_expired_beyond_the_leeway() {
    let ring = ring(SigningAlgorithm::EdDSA);
    let token = ring.sign(&claims(NOW)).unwrap();
    let exp = NOW + Duration::minutes(15);
    assert!(ring.verify(&token, exp + Duration::seconds(29)).is_ok());
    assert_eq!(
        ring.verify(&token, exp + Duration::seconds(30)),
        Err(TokenError::Expired)
    );
}

#[test]
fn hs256_refuses_a_secret_shorter_than_32_bytes() {
    let err = KeyRing::generate(SigningAlgorithm::HS256, policy(), NOW, Some(&[1u8; 31]));
    assert!(matches!(err, Err(KeyError::WeakSecret)));
    assert!(KeyRing::generate(SigningAlgorithm::HS256, policy(), NOW, Some(&[1u8; 32])).is_ok());
}

#[test]
fn hs256_tokens_verify_under_the_configured_secret_in_another_ring() {
    let secret = [42u8; 48];
    let a = KeyRing::generate(SigningAlgorithm::HS256, policy(), NOW, Some(&secret)).unwrap();
    let token = a.sign(&claims(NOW)).unwrap();
    let b = KeyRing::from_stored(a.to_stored(), policy(), Some(&secret)).unwrap();
    assert!(b.verify(&token, NOW).is_ok());
}

#[test]
fn rotation_keeps_old_tokens_verifiable_until_retention_passes() {
    for alg in ALL {
        let ring = ring(alg);
        // Valid for an hour, so that only the key's retention can refuse it.
        let mut long = claims(NOW);
        long.exp = (NOW + Duration::hours(1)).unix_timestamp();
        let old = ring.sign(&long).unwrap();
        let retain = Duration::minutes(16);
        let rotated_at = NOW + Duration::minutes(1);
        let info = ring.rotate(rotated_at, retain).unwrap();
        assert_eq!(info.state, KeyState::Active);
        let new = ring.sign(&claims(rotated_at)).unwrap();
        assert_eq!(kid_of(&new), info.kid);
        assert_ne!(kid_of(&old), kid_of(&new));

        let later = rotated_at + Duration::minutes(10);
        assert!(ring.verify(&old, later).is_ok(), "{alg}");
        assert!(ring.verify(&new, later).is_ok(), "{alg}");

        let keys = ring.keys(later);
        assert_eq!(keys.len(), 2);
        let retired = keys.iter().find(|k| k.state == KeyState::Retired).unwrap();
        assert_eq!(retired.kid, kid_of(&old));
        assert_eq!(retired.retired_at, Some(rotated_at));
        assert_eq!(retired.expires_at, Some(rotated_at + retain));

        // From the end of retention the old key no longer verifies,
        // whether or not it has been pruned yet.
        let past = rotated_at + retain;
        assert_eq!(
            ring.verify(&old, past),
            Err(TokenError::UnknownKey),
            "{alg}"
        );
        assert_eq!(ring.keys(past).len(), 1);
        assert_eq!(ring.prune(past), 1);
        assert_eq!(
            ring.verify(&old, past),
            Err(TokenError::UnknownKey),
            "{alg}"
        );
        assert!(
            ring.verify(&ring.sign(&claims(past)).unwrap(), past)
                .is_ok()
        );
    }
}

#[test]
fn prune_keeps_retired_keys_still_within_retention() {
    let ring = ring(SigningAlgorithm::EdDSA);
    ring.rotate(NOW, Duration::minutes(16)).unwrap();
    assert_eq!(ring.prune(NOW + Duration::minutes(15)), 0);
    assert_eq!(ring.keys(NOW).len(), 2);
}

#[test]
fn jwks_lists_the_current_and_retired_public_keys() {
    let ring = ring(SigningAlgorithm::EdDSA);
    let first = ring.keys(NOW)[0].kid.clone();
    let second = ring.rotate(NOW, Duration::minutes(16)).unwrap().kid;
    let jwks = ring.jwks(NOW);
    let keys = jwks["keys"].as_array().unwrap();
    let kids: Vec<&str> = keys.iter().map(|k| k["kid"].as_str().unwrap()).collect();
    assert_eq!(kids, [first.as_str(), second.as_str()]);
    for k in keys {
        assert_eq!(k["kty"], "OKP");
        assert_eq!(k["crv"], "Ed25519");
        assert_eq!(k["alg"], "EdDSA");
        assert_eq!(k["use"], "sig");
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(k["x"].as_str().unwrap())
                .unwrap()
                .len(),
            32
        );
        assert!(k.get("d").is_none(), "private part leaked");
    }
    let later = ring.jwks(NOW + Duration::minutes(16));
    assert_eq!(later["keys"].as_array().unwrap().len(), 1);
}

#[test]
fn jwks_of_es256_carries_both_coordinates() {
    let ring = ring(SigningAlgorithm::ES256);
    let jwks = ring.jwks(NOW);
    let k = &jwks["keys"][0];
    assert_eq!(k["kty"], "EC");
    assert_eq!(k["crv"], "P-256");
    assert_eq!(k["alg"], "ES256");
    for c in ["x", "y"] {
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(k[c].as_str().unwrap())
                .unwrap()
                .len(),
            32
        );
    }
    assert!(k.get("d").is_none(), "private part leaked");
}

#[test]
fn jwks_never_holds_hmac_keys() {
    let secret = [7u8; 32];
    let ring = KeyRing::generate(SigningAlgorithm::HS256, policy(), NOW, Some(&secret)).unwrap();
    ring.rotate(NOW, Duration::minutes(16)).unwrap();
    let jwks = ring.jwks(NOW);
    assert_eq!(jwks, serde_json::json!({"keys": []}));
    assert!(ring.keys(NOW).iter().all(|k| k.public_jwk.is_none()));
    let text = serde_json::to_string(&ring.keys(NOW)).unwrap();
    assert!(!text.contains(&URL_SAFE_NO_PAD.encode(secret)));
}

#[test]
fn stored_keys_round_trip_and_verify_tokens_signed_before() {
    for alg in ALL {
        let ring = ring(alg);
        let old = ring.sign(&claims(NOW)).unwrap();
        ring.rotate(NOW, Duration::minutes(16)).unwrap();
        let new = ring.sign(&claims(NOW)).unwrap();
        let json = serde_json::to_string_pretty(&ring.to_stored()).unwrap();
        let stored: StoredKeys = serde_json::from_str(&json).unwrap();
        let loaded = KeyRing::from_stored(stored, policy(), None).unwrap();
        assert_eq!(loaded.algorithm(), alg);
        assert!(loaded.verify(&old, NOW).is_ok(), "{alg}");
        assert!(loaded.verify(&new, NOW).is_ok(), "{alg}");
        assert_eq!(loaded.keys(NOW), ring.keys(NOW));
        // The loaded ring signs with the same active key.
        assert_eq!(kid_of(&loaded.sign(&claims(NOW)).unwrap()), kid_of(&new));
    }
}

#[test]
fn a_configured_hs256_secret_wins_over_the_stored_one() {
    let ring = ring(SigningAlgorithm::HS256);
    let stored_secret_token = ring.sign(&claims(NOW)).unwrap();
    let configured = [9u8; 32];
    let loaded = KeyRing::from_stored(ring.to_stored(), policy(), Some(&configured)).unwrap();
    assert_eq!(
        loaded.verify(&stored_secret_token, NOW),
        Err(TokenError::BadSignature)
    );
    let token = loaded.sign(&claims(NOW)).unwrap();
    let by_config = KeyRing::from_stored(loaded.to_stored(), policy(), Some(&configured)).unwrap();
    assert!(by_config.verify(&token, NOW).is_ok());
}

#[test]
fn stored_keys_refuse_tampered_files() {
    let ring = ring(SigningAlgorithm::EdDSA);
    let mut json = serde_json::to_value(ring.to_stored()).unwrap();
    json["keys"][0]["private"] = "bm90IGEga2V5".into();
    let stored: StoredKeys = serde_json::from_value(json.clone()).unwrap();
    assert!(matches!(
        KeyRing::from_stored(stored, policy(), None),
        Err(KeyError::InvalidKey(_))
    ));
    json["keys"][0]["surprise"] = true.into();
    assert!(serde_json::from_value::<StoredKeys>(json).is_err());

    let mut two_active = serde_json::to_value(ring.to_stored()).unwrap();
    let k = two_active["keys"][0].clone();
    two_active["keys"].as_array_mut().unwrap().push(k);
    let stored: StoredKeys = serde_json::from_value(two_active).unwrap();
    assert!(matches!(
        KeyRing::from_stored(stored, policy(), None),
        Err(KeyError::InvalidKey(_))
    ));
}

#[test]
fn debug_output_never_shows_private_material() {
    for alg in ALL {
        let secret = [0xABu8; 32];
        let ring = KeyRing::generate(alg, policy(), NOW, Some(&secret)).unwrap();
        let stored = ring.to_stored();
        let json = serde_json::to_value(&stored).unwrap();
        let private = json["keys"][0]["private"].as_str().unwrap().to_owned();
        assert!(private.len() >= 40);
        for shown in [
            format!("{ring:?}"),
            format!("{stored:?}"),
            format!("{ring:#?}"),
        ] {
            assert!(!shown.contains(&private), "{alg}: {shown}");
            assert!(!shown.contains(&private[..16]), "{alg}: {shown}");
            assert!(
                !shown.contains("171, 171"),
                "{alg}: raw secret bytes in {shown}"
            );
            assert!(shown.contains("redacted"), "{alg}: {shown}");
        }
    }
}

#[test]
fn the_key_ring_is_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<KeyRing>();
    let ring = std::sync::Arc::new(ring(SigningAlgorithm::EdDSA));
    let token = ring.sign(&claims(NOW)).unwrap();
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let ring = ring.clone();
            let token = token.clone();
            std::thread::spawn(move || {
                if i == 0 {
                    ring.rotate(NOW, Duration::minutes(16)).unwrap();
                }
                ring.verify(&token, NOW).is_ok()
            })
        })
        .collect();
    for h in handles {
        assert!(h.join().unwrap());
    }
}
