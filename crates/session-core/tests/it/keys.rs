//! The key ring through its public API: round trips for every algorithm,
//! rotation, JWKS, persistence and redaction.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use session_core::keys::{
    AccessClaims, DetachedError, JwksError, KeyError, KeyInfo, KeyRing, KeySchedule, KeyState,
    PublicKeySet, RotateError, SigningAlgorithm, StoredKeys, TokenError, VerifyPolicy,
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
        client_id: None,
        auth_time: None,
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

/// Saves nothing, loads the change at once (what the server does after
/// saving it).
fn apply(ring: &KeyRing, change: (StoredKeys, KeyInfo)) -> KeyInfo {
    ring.load(&change.0).unwrap();
    change.1
}

fn schedule() -> KeySchedule {
    KeySchedule {
        prepublish: Duration::minutes(15),
        rotation: Some(Duration::days(30)),
        retain: Duration::minutes(16),
    }
}

fn scheduled_ring(alg: SigningAlgorithm) -> KeyRing {
    ring(alg).with_schedule(schedule())
}

fn jwks_kids(ring: &KeyRing, at: OffsetDateTime) -> Vec<String> {
    ring.jwks(at)["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_scheduled_key_is_published_before_it_signs_and_the_old_one_verifies_until_retention_passes() {
    for alg in [SigningAlgorithm::EdDSA, SigningAlgorithm::ES256] {
        let ring = scheduled_ring(alg);
        // Valid for an hour, so that only the key's retention can refuse it.
        let mut long = claims(NOW);
        long.exp = (NOW + Duration::hours(1)).unix_timestamp();
        let old = ring.sign(&long).unwrap();
        let info = apply(&ring, ring.scheduled(NOW).unwrap());
        assert_eq!(info.state, KeyState::Next);
        let activation = NOW + Duration::minutes(15);
        assert_eq!(info.activated_at, activation);
        assert_eq!(jwks_kids(&ring, NOW), [kid_of(&old), info.kid.clone()]);

        // Until the activation the old key signs.
        let before = activation - Duration::seconds(1);
        assert_eq!(kid_of(&ring.sign(&claims(before)).unwrap()), kid_of(&old));
        let listed = ring.keys(before);
        assert_eq!(listed[0].state, KeyState::Active);
        assert_eq!(
            listed[0].retired_at,
            Some(activation),
            "scheduled retirement"
        );
        assert_eq!(listed[1].state, KeyState::Next);

        // From it the new one does.
        let new = ring.sign(&claims(activation)).unwrap();
        assert_eq!(kid_of(&new), info.kid);
        let later = activation + Duration::minutes(10);
        assert!(ring.verify(&old, later).is_ok(), "{alg}");
        assert!(ring.verify(&new, later).is_ok(), "{alg}");
        let keys = ring.keys(later);
        let retired = keys.iter().find(|k| k.state == KeyState::Retired).unwrap();
        assert_eq!(retired.kid, kid_of(&old));
        assert_eq!(retired.retired_at, Some(activation));
        assert_eq!(retired.expires_at, Some(activation + Duration::minutes(16)));

        // From the end of retention the old key no longer verifies, and the
        // clock's next step drops it.
        let past = activation + Duration::minutes(16);
        assert_eq!(
            ring.verify(&old, past),
            Err(TokenError::UnknownKey),
            "{alg}"
        );
        assert_eq!(jwks_kids(&ring, past), std::slice::from_ref(&info.kid));
        let (doc, none) = ring.ticked(past).unwrap().unwrap();
        assert!(none.is_none());
        ring.load(&doc).unwrap();
        assert_eq!(ring.keys(past).len(), 1);
        assert!(
            ring.verify(&new, activation + Duration::minutes(14))
                .is_ok()
        );
        let fresh = ring.sign(&claims(past)).unwrap();
        assert_eq!(kid_of(&fresh), info.kid);
        assert!(ring.verify(&fresh, past).is_ok());
    }
}

#[test]
fn a_dropped_key_is_archived_public_half_only_and_still_verifies_what_it_signed_detached() {
    for alg in [SigningAlgorithm::EdDSA, SigningAlgorithm::ES256] {
        let ring = scheduled_ring(alg);
        let (first_kid, first_sig) = ring.sign_detached_at(b"checkpoint 1", NOW).unwrap();
        let token = ring.sign(&claims(NOW)).unwrap();
        // A scheduled rotation, then an immediate one: two keys leave the
        // ring in turn, one retired, one revoked.
        let second = apply(&ring, ring.scheduled(NOW).unwrap());
        let active = NOW + Duration::minutes(15);
        let (second_kid, second_sig) = ring.sign_detached_at(b"checkpoint 2", active).unwrap();
        assert_eq!(second_kid, second.kid);
        let compromise = active + Duration::minutes(1);
        apply(&ring, ring.rotated_now(compromise).unwrap());
        // The first key retires when the third one signs (the revoked
        // second is no successor), and is kept for its retention.
        let past = compromise + Duration::minutes(16);
        let (doc, _) = ring.ticked(past).unwrap().unwrap();
        ring.load(&doc).unwrap();
        assert_eq!(
            ring.keys(past).len(),
            1,
            "{alg}: both dropped from the ring"
        );

        // Nothing private is kept; the document survives a round trip.
        let json = serde_json::to_value(&doc).unwrap();
        let archive = json["archive"].as_array().expect("an archive");
        assert_eq!(archive.len(), 2, "{alg}: {archive:?}");
        for entry in archive {
            assert!(entry.get("private").is_none());
        }
        let reread = KeyRing::from_stored(
            serde_json::from_value(json.clone()).unwrap(),
            policy(),
            None,
        )
        .unwrap();
        let archived = reread.archived();
        assert_eq!(
            archived.iter().map(|a| a.kid.as_str()).collect::<Vec<_>>(),
            [first_kid.as_str(), second_kid.as_str()]
        );
        assert_eq!(archived[0].revoked_at, None);
        assert_eq!(archived[1].revoked_at, Some(compromise));
        assert_eq!(archived[0].dropped_at, past);

        // Their old detached signatures still verify; nothing else does.
        assert_eq!(
            reread.verify_detached(&first_kid, b"checkpoint 1", &first_sig),
            Ok(())
        );
        assert_eq!(
            reread.verify_detached(&second_kid, b"checkpoint 2", &second_sig),
            Ok(())
        );
        assert_eq!(
            reread.verify_detached(&first_kid, b"checkpoint 2", &first_sig),
            Err(DetachedError::BadSignature)
        );
        assert_eq!(
            reread.verify_detached(&first_kid, b"checkpoint 1", &second_sig),
            Err(DetachedError::BadSignature)
        );
        assert_eq!(
            reread.verify_detached("nobody", b"checkpoint 1", &first_sig),
            Err(DetachedError::UnknownKey)
        );
        // An archived key never verifies an access token or joins the JWKS.
        assert_eq!(reread.verify(&token, NOW), Err(TokenError::UnknownKey));
        assert!(!jwks_kids(&reread, past).contains(&first_kid));

        // Later changes keep the archive.
        let (doc, _) = reread.scheduled(past).unwrap();
        let json = serde_json::to_value(&doc).unwrap();
        assert_eq!(json["archive"].as_array().unwrap().len(), 2);

        // A forged public key in the archive is refused at load.
        let mut forged = serde_json::to_value(reread.to_stored()).unwrap();
        forged["archive"][0]["public"] = "AAAA".into();
        let forged: StoredKeys = serde_json::from_value(forged).unwrap();
        assert!(matches!(
            KeyRing::from_stored(forged, policy(), None),
            Err(KeyError::InvalidKey(_))
        ));
    }
}

#[test]
fn a_scheduled_rotation_while_a_next_key_is_pending_is_refused() {
    let ring = scheduled_ring(SigningAlgorithm::EdDSA);
    apply(&ring, ring.scheduled(NOW).unwrap());
    assert!(matches!(
        ring.scheduled(NOW + Duration::minutes(14)),
        Err(RotateError::Pending)
    ));
    // Once it signs, the next one may be scheduled.
    let info = apply(&ring, ring.scheduled(NOW + Duration::minutes(15)).unwrap());
    assert_eq!(info.activated_at, NOW + Duration::minutes(30));
}

#[test]
fn an_immediate_rotation_signs_at_once_and_takes_the_old_key_out_at_once() {
    let ring = scheduled_ring(SigningAlgorithm::EdDSA);
    let old = ring.sign(&claims(NOW)).unwrap();
    let pending = apply(&ring, ring.scheduled(NOW).unwrap());
    let at = NOW + Duration::minutes(1);
    let info = apply(&ring, ring.rotated_now(at).unwrap());
    assert_eq!(info.state, KeyState::Active);
    assert_eq!(kid_of(&ring.sign(&claims(at)).unwrap()), info.kid);
    assert_eq!(ring.verify(&old, at), Err(TokenError::UnknownKey));
    assert_eq!(
        jwks_kids(&ring, at),
        [info.kid.clone(), pending.kid.clone()]
    );
    let listed = ring.keys(at);
    let revoked = listed.iter().find(|k| k.kid == kid_of(&old)).unwrap();
    assert_eq!(revoked.state, KeyState::Retired);
    assert_eq!(revoked.retired_at, Some(at));
    // The pending key still takes over at its time.
    let activation = NOW + Duration::minutes(15);
    assert_eq!(
        kid_of(&ring.sign(&claims(activation)).unwrap()),
        pending.kid
    );
}

#[test]
fn hs256_keys_do_not_rotate() {
    let ring = KeyRing::generate(SigningAlgorithm::HS256, policy(), NOW, Some(&[3u8; 32]))
        .unwrap()
        .with_schedule(schedule());
    assert!(matches!(
        ring.scheduled(NOW),
        Err(RotateError::NotSupported)
    ));
    assert!(matches!(
        ring.rotated_now(NOW),
        Err(RotateError::NotSupported)
    ));
    assert!(ring.ticked(NOW + Duration::days(60)).unwrap().is_none());
}

#[test]
fn automatic_rotation_publishes_the_next_key_prepublish_before_the_period_ends() {
    let ring = scheduled_ring(SigningAlgorithm::EdDSA);
    let first = ring.keys(NOW)[0].kid.clone();
    let due = NOW + Duration::days(30);
    assert!(ring.ticked(due - Duration::minutes(16)).unwrap().is_none());
    let (doc, info) = ring.ticked(due - Duration::minutes(15)).unwrap().unwrap();
    let info = info.unwrap();
    assert_eq!(info.state, KeyState::Next);
    assert_eq!(info.activated_at, due);
    ring.load(&doc).unwrap();
    assert!(
        ring.ticked(due - Duration::minutes(1)).unwrap().is_none(),
        "already pending"
    );
    assert_eq!(
        kid_of(&ring.sign(&claims(due - Duration::seconds(1))).unwrap()),
        first
    );
    assert_eq!(kid_of(&ring.sign(&claims(due)).unwrap()), info.kid);
}

#[test]
fn an_overdue_rotation_still_publishes_before_signing() {
    // A server that was down through the rotation time: the new key still
    // spends the whole prepublish time in the JWKS first.
    let ring = scheduled_ring(SigningAlgorithm::EdDSA);
    let late = NOW + Duration::days(45);
    let (_, info) = ring.ticked(late).unwrap().unwrap();
    assert_eq!(info.unwrap().activated_at, late + Duration::minutes(15));
}

#[test]
fn without_a_rotation_period_keys_change_only_by_hand() {
    let ring = ring(SigningAlgorithm::EdDSA).with_schedule(KeySchedule {
        rotation: None,
        ..schedule()
    });
    assert!(ring.ticked(NOW + Duration::days(400)).unwrap().is_none());
}

#[test]
fn no_key_signs_a_token_before_it_has_been_in_the_jwks_for_the_prepublish_time() {
    // Two simulated months, minute by minute, with rotations by the clock
    // and one by hand: every key that signs at t was already published at
    // t - prepublish, and every kid that signed is in the JWKS until its
    // tokens have expired.
    let ring = scheduled_ring(SigningAlgorithm::EdDSA);
    let prepublish = schedule().prepublish;
    let mut published: Vec<(OffsetDateTime, Vec<String>)> = Vec::new();
    let mut signed: Vec<(OffsetDateTime, String)> = Vec::new();
    let mut t = NOW;
    while t < NOW + Duration::days(61) {
        if t == NOW + Duration::days(10) {
            apply(&ring, ring.scheduled(t).unwrap());
        }
        if let Some((doc, _)) = ring.ticked(t).unwrap() {
            ring.load(&doc).unwrap();
        }
        published.push((t, jwks_kids(&ring, t)));
        let kid = kid_of(&ring.sign(&claims(t)).unwrap());
        let then = t - prepublish;
        if then >= NOW + prepublish {
            let (_, kids) = published.iter().rev().find(|(at, _)| *at <= then).unwrap();
            assert!(
                kids.contains(&kid),
                "{kid} signs at {t} but was not published at {then}"
            );
        }
        signed.retain(|(at, _)| *at + Duration::minutes(15) > t);
        for (_, old) in &signed {
            assert!(
                published.last().unwrap().1.contains(old),
                "{old} left the JWKS early at {t}"
            );
        }
        signed.push((t, kid));
        t += Duration::minutes(5);
    }
    let kids: std::collections::BTreeSet<String> =
        published.iter().flat_map(|(_, k)| k.clone()).collect();
    // The first key, the one by hand at day 10, and the one the clock
    // made 30 days after that.
    assert_eq!(kids.len(), 3, "rotations happened: {kids:?}");
}

#[test]
fn a_token_signed_by_a_key_another_instance_already_activated_verifies() {
    // Instance clocks differ by a moment: B, slightly behind, still sees the
    // key as next when A's first token under it arrives.
    let a = scheduled_ring(SigningAlgorithm::EdDSA);
    let (doc, _) = a.scheduled(NOW).unwrap();
    a.load(&doc).unwrap();
    let b = KeyRing::from_stored(doc, policy(), None)
        .unwrap()
        .with_schedule(schedule());
    let activation = NOW + Duration::minutes(15);
    let token = a.sign(&claims(activation)).unwrap();
    assert!(b.verify(&token, activation - Duration::seconds(1)).is_ok());
}

#[test]
fn a_version_1_key_file_still_loads() {
    let ring = scheduled_ring(SigningAlgorithm::EdDSA);
    let token = ring.sign(&claims(NOW)).unwrap();
    let mut json = serde_json::to_value(ring.to_stored()).unwrap();
    json["version"] = 1.into();
    json.as_object_mut().unwrap().remove("generation");
    let key = json["keys"][0].as_object_mut().unwrap();
    key.remove("activates_at");
    key.insert("state".into(), "active".into());
    let stored: StoredKeys = serde_json::from_value(json).unwrap();
    let loaded = KeyRing::from_stored(stored, policy(), None).unwrap();
    assert!(loaded.verify(&token, NOW).is_ok());
    assert_eq!(kid_of(&loaded.sign(&claims(NOW)).unwrap()), kid_of(&token));
}

#[test]
fn jwks_lists_the_next_active_and_retired_public_keys_and_nothing_private() {
    let ring = scheduled_ring(SigningAlgorithm::EdDSA);
    let first = ring.keys(NOW)[0].kid.clone();
    let second = apply(&ring, ring.scheduled(NOW).unwrap()).kid;
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
    let later = ring.jwks(NOW + Duration::minutes(15 + 16));
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
        if alg != SigningAlgorithm::HS256 {
            apply(&ring, ring.rotated_now(NOW).unwrap());
            assert_eq!(ring.verify(&old, NOW), Err(TokenError::UnknownKey));
        }
        let new = ring.sign(&claims(NOW)).unwrap();
        let json = serde_json::to_string_pretty(&ring.to_stored()).unwrap();
        let stored: StoredKeys = serde_json::from_str(&json).unwrap();
        let loaded = KeyRing::from_stored(stored, policy(), None).unwrap();
        assert_eq!(loaded.algorithm(), alg);
        assert_eq!(
            loaded.verify(&old, NOW).is_ok(),
            alg == SigningAlgorithm::HS256,
            "{alg}"
        );
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
                    ring.load(&ring.scheduled(NOW).unwrap().0).unwrap();
                }
                ring.verify(&token, NOW).is_ok()
            })
        })
        .collect();
    for h in handles {
        assert!(h.join().unwrap());
    }
}

#[test]
fn a_public_key_set_from_the_jwks_verifies_what_the_ring_signs_and_nothing_else() {
    for alg in [SigningAlgorithm::EdDSA, SigningAlgorithm::ES256] {
        let ring = scheduled_ring(alg);
        let set = PublicKeySet::new(alg, policy()).unwrap();
        assert_eq!(set.load_jwks(&ring.jwks(NOW)).unwrap(), 1, "{alg}");
        let token = ring.sign(&claims(NOW)).unwrap();
        assert_eq!(set.verify(&token, NOW), ring.verify(&token, NOW), "{alg}");
        assert!(set.verify(&token, NOW).is_ok());

        // Another issuer's key, a tampered payload, an expired token.
        let other = scheduled_ring(alg).sign(&claims(NOW)).unwrap();
        assert_eq!(set.verify(&other, NOW), Err(TokenError::UnknownKey));
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged_claims = {
            let mut c = claims(NOW);
            c.sub = "mallory".into();
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&c).unwrap())
        };
        parts[1] = &forged_claims;
        assert_eq!(
            set.verify(&parts.join("."), NOW),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            set.verify(&token, NOW + Duration::hours(1)),
            Err(TokenError::Expired)
        );

        // A published next key is taken; once it signs, its tokens verify.
        let next = apply(&ring, ring.scheduled(NOW).unwrap());
        assert_eq!(set.load_jwks(&ring.jwks(NOW)).unwrap(), 2);
        assert!(set.contains(&next.kid));
        let later = NOW + Duration::minutes(15);
        let new = ring.sign(&claims(later)).unwrap();
        assert_eq!(kid_of(&new), next.kid);
        assert!(set.verify(&new, later).is_ok());

        // A malformed key refuses the whole set and keeps the last good one.
        let mut broken = ring.jwks(NOW);
        broken["keys"][0]["x"] = "AAAA".into();
        assert!(matches!(
            set.load_jwks(&broken),
            Err(JwksError::BadKey { .. })
        ));
        assert_eq!(set.kids().len(), 2);
        assert!(matches!(
            set.load_jwks(&serde_json::json!({ "keys": [] })),
            Err(JwksError::NoKey(_))
        ));
        assert!(matches!(
            set.load_jwks(&serde_json::json!([])),
            Err(JwksError::NotAJwks)
        ));
        // Keys of the other curve are not ours.
        let foreign = if alg == SigningAlgorithm::EdDSA {
            SigningAlgorithm::ES256
        } else {
            SigningAlgorithm::EdDSA
        };
        assert!(matches!(
            set.load_jwks(&scheduled_ring(foreign).jwks(NOW)),
            Err(JwksError::NoKey(_))
        ));
    }
    assert!(matches!(
        PublicKeySet::new(SigningAlgorithm::HS256, policy()),
        Err(JwksError::NoPublicKeys)
    ));
}
