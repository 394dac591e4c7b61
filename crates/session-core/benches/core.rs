//! Criterion benches of session-core's hot paths: refresh tokens and
//! access tokens. Run with
//! `cargo bench -p session-core --bench core -- --warm-up-time 1 --measurement-time 3`;
//! results are recorded in the workspace's `BENCHMARKS.md`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: benches

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use session_core::keys::{AccessClaims, KeyRing, SigningAlgorithm, VerifyPolicy};
use session_core::{SessionId, TokenSecrets};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

const NOW: OffsetDateTime = datetime!(2026-01-01 00:00 UTC);

fn refresh(c: &mut Criterion) {
    let secrets = TokenSecrets::from_master(&TokenSecrets::generate_master());
    let sid = SessionId::generate();
    let mut g = c.benchmark_group("refresh");
    g.throughput(Throughput::Elements(1));
    g.bench_function("issue+digest", |b| {
        b.iter(|| {
            let (token, _) = secrets.issue_refresh(black_box(&sid), black_box(7));
            black_box(token.digest())
        })
    });
    let (token, _) = secrets.issue_refresh(&sid, 7);
    g.bench_function("parse", |b| {
        b.iter(|| secrets.parse_refresh(black_box(token.expose())).unwrap())
    });
    g.finish();
}

fn access(c: &mut Criterion) {
    let policy = VerifyPolicy {
        issuer: "session-server".into(),
        audience: "session-server".into(),
        leeway: Duration::seconds(30),
    };
    let claims = AccessClaims {
        iss: "session-server".into(),
        aud: "session-server".into(),
        sub: "0190f1b2-7c3e-7a51-9d2e-2f6b8c1d4e5f".into(),
        sid: SessionId::generate().to_string(),
        iat: NOW.unix_timestamp(),
        exp: (NOW + Duration::minutes(15)).unix_timestamp(),
        nbf: None,
        jti: "0190f1b2-7c3e-7a51-9d2e-2f6b8c1d4e60".into(),
        client_id: None,
        auth_time: None,
        cnf: None,
    };
    let mut g = c.benchmark_group("access_token");
    g.throughput(Throughput::Elements(1));
    for alg in [
        SigningAlgorithm::EdDSA,
        SigningAlgorithm::ES256,
        SigningAlgorithm::HS256,
    ] {
        let ring = KeyRing::generate(alg, policy.clone(), NOW, None).unwrap();
        g.bench_with_input(BenchmarkId::new("sign", alg), &claims, |b, claims| {
            b.iter(|| ring.sign(black_box(claims)).unwrap())
        });
        let token = ring.sign(&claims).unwrap();
        // The full strict verification: header, signature and claims.
        g.bench_with_input(BenchmarkId::new("verify", alg), &token, |b, token| {
            b.iter(|| ring.verify(black_box(token), black_box(NOW)).unwrap())
        });
    }
    g.finish();
}

// --- Rotation on the in-memory store -----------------------------------------

use criterion::BatchSize;
use session_core::ApplyRefresh as _;
use session_core::memory::MemoryStore;
use session_core::rotation::{NextRefresh, RefreshOutcome, RefreshParams};
use session_core::store::SessionStore;
use session_core::{
    AnomalyAction, AnomalyPolicy, ClientInfo, Lifetimes, PresentedRefresh, Session,
};
use tokio::runtime::Runtime;

/// A session opened at `NOW` in `store`, with its live token.
fn opened(store: &MemoryStore, rt: &Runtime, secrets: &TokenSecrets) -> PresentedRefresh {
    let sid = SessionId::generate();
    let (_, live) = secrets.issue_refresh(&sid, 0);
    let session = Session::new(sid, "bench".into(), live.digest, &Lifetimes::default(), NOW);
    rt.block_on(store.create(&session)).unwrap();
    live
}

/// What the service does per refresh: mint and seal a successor, then let
/// the store decide and compare-and-swap.
fn refresh_once(
    store: &MemoryStore,
    rt: &Runtime,
    secrets: &TokenSecrets,
    params: &RefreshParams,
    presented: &PresentedRefresh,
) -> (RefreshOutcome, PresentedRefresh) {
    let (token, next_presented) =
        secrets.issue_refresh(&presented.session_id, presented.generation + 1);
    let next = NextRefresh {
        digest: next_presented.digest,
        sealed: Some(secrets.seal_successor(&presented.session_id, &token)),
    };
    let result = rt
        .block_on(store.refresh(presented, &next, params, NOW))
        .unwrap();
    (result.outcome, next_presented)
}

fn rotation(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let secrets = TokenSecrets::from_master(&TokenSecrets::generate_master());
    // One clock instant throughout, so the rapid-refresh rule would fire:
    // it is off here, the bench measures rotation itself.
    let params = RefreshParams {
        grace: Duration::seconds(10),
        idle_timeout: Duration::days(14),
        anomaly: AnomalyPolicy {
            rapid_refresh: AnomalyAction::Ignore,
            ..AnomalyPolicy::default()
        },
        client: ClientInfo::default(),
    };
    let mut g = c.benchmark_group("rotation on the in-memory store");
    g.throughput(Throughput::Elements(1));

    let store = MemoryStore::new();
    let mut live = opened(&store, &rt, &secrets);
    g.bench_function("rotate the live token", |b| {
        b.iter(|| {
            let (outcome, next) = refresh_once(&store, &rt, &secrets, &params, black_box(&live));
            assert_eq!(outcome, RefreshOutcome::Rotated);
            live = next;
        })
    });

    let previous = live;
    refresh_once(&store, &rt, &secrets, &params, &previous);
    g.bench_function("grace replay of the previous token", |b| {
        b.iter(|| {
            let (outcome, _) = refresh_once(&store, &rt, &secrets, &params, black_box(&previous));
            assert!(matches!(outcome, RefreshOutcome::GraceReplay { .. }));
        })
    });

    g.bench_function("reuse detection revokes the family", |b| {
        b.iter_batched(
            || {
                let store = MemoryStore::new();
                let first = opened(&store, &rt, &secrets);
                let (_, second) = refresh_once(&store, &rt, &secrets, &params, &first);
                refresh_once(&store, &rt, &secrets, &params, &second);
                (store, first)
            },
            |(store, first)| {
                let (outcome, _) = refresh_once(&store, &rt, &secrets, &params, black_box(&first));
                assert_eq!(outcome, RefreshOutcome::Reused);
                store
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

// -----------------------------------------------------------------------------

/// One DPoP proof check (RFC 9449) as `GET /v1/session` does it: parse,
/// the signature under the proof's own key, claims, `ath`, thumbprint.
fn dpop(c: &mut Criterion) {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use session_core::dpop::{RequestFacts, access_token_hash, verify_proof};

    const URL: &str = "https://auth.example/v1/session";
    let token = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ1In0.c2ln";
    let claims = serde_json::json!({
        "jti": "0190f1b2-7c3e-7a51-9d2e-2f6b8c1d4e61", "htm": "GET", "htu": URL,
        "iat": NOW.unix_timestamp(), "ath": access_token_hash(token),
    });
    let ec = {
        use p256::elliptic_curve::Generate as _;
        p256::ecdsa::SigningKey::generate_from_rng(&mut session_core::secret::os_rng())
    };
    let ed = ed25519_dalek::SigningKey::generate(&mut session_core::secret::os_rng());
    let point = ec.verifying_key().to_sec1_point(false);
    let ec_jwk = serde_json::json!({"kty": "EC", "crv": "P-256",
        "x": B64.encode(point.x().unwrap()), "y": B64.encode(point.y().unwrap())});
    let ed_jwk = serde_json::json!({"kty": "OKP", "crv": "Ed25519",
        "x": B64.encode(ed.verifying_key().as_bytes())});
    let signing_input = |alg: &str, jwk: &serde_json::Value| {
        let header = serde_json::json!({"typ": "dpop+jwt", "alg": alg, "jwk": jwk});
        format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        )
    };
    let es256 = {
        use p256::ecdsa::signature::Signer as _;
        let input = signing_input("ES256", &ec_jwk);
        let sig: p256::ecdsa::Signature = ec.sign(input.as_bytes());
        format!("{input}.{}", B64.encode(sig.to_bytes()))
    };
    let eddsa = {
        use ed25519_dalek::Signer as _;
        let input = signing_input("EdDSA", &ed_jwk);
        format!(
            "{input}.{}",
            B64.encode(ed.sign(input.as_bytes()).to_bytes())
        )
    };
    let facts = RequestFacts {
        method: "GET",
        urls: &[URL],
        access_token: Some(token),
        now: NOW,
    };
    let mut g = c.benchmark_group("dpop_proof");
    g.throughput(Throughput::Elements(1));
    for (alg, proof) in [("ES256", &es256), ("EdDSA", &eddsa)] {
        assert!(verify_proof(proof, &facts).is_ok());
        g.bench_function(BenchmarkId::new("verify", alg), |b| {
            b.iter(|| verify_proof(black_box(proof), black_box(&facts)).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, refresh, access, rotation, dpop);
criterion_main!(benches);
