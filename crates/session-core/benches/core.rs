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
// Reserved for the rotation bench (another helper adds it here): define a
// `fn rotation(c: &mut Criterion)` and add it to `criterion_group!` below.
// -----------------------------------------------------------------------------

criterion_group!(benches, refresh, access);
criterion_main!(benches);
