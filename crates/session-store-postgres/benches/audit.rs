//! The audit log's query and append benchmark (not criterion: one load of a
//! million events is the expensive part, and each figure is measured once).
//!
//! ```text
//! cargo bench -p session-store-postgres --bench audit
//! ```
//!
//! Uses the PostgreSQL at `DATABASE_URL` (default
//! `postgres://root@127.0.0.1:5432/postgres`) and a dedicated database,
//! `audit_bench`, which it drops and re-creates. `AUDIT_BENCH_EVENTS`
//! changes the size of the load (default 1,000,000).

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: a benchmark binary
#![allow(clippy::cast_precision_loss)] // reason: reporting rates

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use session_core::{Actor, AuditEvent, AuditKind, AuditLog, AuditQuery};
use session_store_postgres::chain::{self, GENESIS};
use session_store_postgres::{MigrateMode, OutboxAuditLog, OutboxConfig, PostgresAuditLog};
use sqlx::{Connection, Executor, PgConnection};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const DB: &str = "audit_bench";
/// Events per session in the load.
const PER_SESSION: i64 = 50;
/// Ordinary users (each has 1/`USERS` of the non-hot sessions).
const USERS: i64 = 2000;

fn t0() -> OffsetDateTime {
    time::macros::datetime!(2026-01-01 00:00:00 UTC)
}

/// Event `i` of the load: sessions of 50 consecutive events (created,
/// refreshed…, revoked); every tenth session belongs to `user-hot`.
fn load_event(i: i64) -> AuditEvent {
    let s = i / PER_SESSION;
    let user = if s % 10 == 0 {
        "user-hot".to_owned()
    } else {
        format!("user-{}", s % USERS)
    };
    let (kind, reason) = match i % PER_SESSION {
        0 => (AuditKind::SessionCreated, None),
        n if n == PER_SESSION - 1 => (AuditKind::SessionRevoked, Some("logout".to_owned())),
        _ => (AuditKind::SessionRefreshed, None),
    };
    let mut e = AuditEvent::new(
        kind,
        Actor::User,
        t0() + time::Duration::milliseconds(10 * i),
    )
    .session(format!("session-{s}"), user);
    e.reason = reason;
    e.ip = Some(format!(
        "10.{}.{}.{}",
        (s >> 16) & 255,
        (s >> 8) & 255,
        s & 255
    ));
    e.user_agent = Some("Mozilla/5.0 (X11; Linux x86_64) bench".to_owned());
    e.details = serde_json::json!({ "generation": i % PER_SESSION });
    e
}

/// One value in COPY's text format.
fn copy_text(out: &mut String, v: Option<&str>) {
    match v {
        None => out.push_str("\\N"),
        Some(s) => {
            for c in s.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\t' => out.push_str("\\t"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    c => out.push(c),
                }
            }
        }
    }
}

fn copy_bytea(out: &mut String, bytes: &[u8]) {
    out.push_str("\\\\x");
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
}

fn with_database(url: &str, db: &str) -> String {
    let authority = url.find("://").map_or(0, |i| i + 3);
    let (base, query) = url.find('?').map_or((url, ""), |q| (&url[..q], &url[q..]));
    let base = base[authority..]
        .find('/')
        .map_or(base, |slash| &base[..authority + slash]);
    format!("{base}/{db}{query}")
}

/// Loads `n` events with a valid chain through `COPY … FROM STDIN`.
async fn load(url: &str, n: i64) -> Duration {
    let mut conn = PgConnection::connect(url).await.unwrap();
    let started = Instant::now();
    let mut copy = conn
        .copy_in_raw(
            "COPY audit_events (id, at, kind, session_id, user_id, actor, ip, user_agent, reason, details, \
             prev_hash, hash) FROM STDIN",
        )
        .await
        .unwrap();
    let mut prev = GENESIS;
    let mut buf = String::with_capacity(16 << 20);
    for i in 0..n {
        let e = chain::normalize(&load_event(i));
        let hash = chain::link_event(&prev, &e);
        let at = e.at.format(&Rfc3339).unwrap();
        let id = e.id.to_string();
        let details = e.details.to_string();
        for v in [Some(id.as_str()), Some(at.as_str()), Some(e.kind.as_str())] {
            copy_text(&mut buf, v);
            buf.push('\t');
        }
        for v in [
            e.session_id.as_deref(),
            e.user_id.as_deref(),
            Some(e.actor.as_str()),
        ] {
            copy_text(&mut buf, v);
            buf.push('\t');
        }
        for v in [
            e.ip.as_deref(),
            e.user_agent.as_deref(),
            e.reason.as_deref(),
            Some(details.as_str()),
        ] {
            copy_text(&mut buf, v);
            buf.push('\t');
        }
        copy_bytea(&mut buf, &prev);
        buf.push('\t');
        copy_bytea(&mut buf, &hash);
        buf.push('\n');
        prev = hash;
        if buf.len() > (8 << 20) {
            copy.send(buf.as_bytes()).await.unwrap();
            buf.clear();
        }
    }
    copy.send(buf.as_bytes()).await.unwrap();
    copy.finish().await.unwrap();
    conn.execute("VACUUM ANALYZE audit_events").await.unwrap();
    started.elapsed()
}

/// The `p`th percentile (in per cent) of sorted samples.
fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() - 1) * p / 100]
}

/// Times `query` through the log: median and p99 of `runs` runs after a
/// warm-up.
async fn time_query(log: &PostgresAuditLog, name: &str, q: &AuditQuery, runs: usize) {
    let mut got = 0;
    for _ in 0..20 {
        got = log.query(q).await.unwrap().len();
    }
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let page = log.query(q).await.unwrap();
        times.push(t.elapsed());
        assert_eq!(page.len(), got);
    }
    times.sort();
    println!(
        "query {name}: {got} events, median {:.3} ms, p99 {:.3} ms ({runs} runs)",
        percentile(&times, 50).as_secs_f64() * 1e3,
        percentile(&times, 99).as_secs_f64() * 1e3,
    );
}

async fn explain(conn: &mut PgConnection, sql: &str) {
    let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {sql}"
    )))
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    println!("EXPLAIN {sql}");
    for line in plan {
        println!("    {line}");
    }
}

fn fresh(i: i64) -> AuditEvent {
    AuditEvent::new(
        AuditKind::SessionRevoked,
        Actor::Admin,
        t0() + time::Duration::days(400),
    )
    .session(
        format!("bench-session-{i}"),
        format!("bench-user-{}", i % 97),
    )
    .details(serde_json::json!({ "n": i }))
}

#[tokio::main]
async fn main() {
    let admin_url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/postgres".into());
    let n: i64 = std::env::var("AUDIT_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let mut admin = PgConnection::connect(&admin_url)
        .await
        .unwrap_or_else(|e| panic!("the benchmark needs PostgreSQL at {admin_url}: {e}"));
    admin
        .execute(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {DB} WITH (FORCE)"
        )))
        .await
        .unwrap();
    admin
        .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {DB}")))
        .await
        .unwrap();
    let url = with_database(&admin_url, DB);
    let log = PostgresAuditLog::connect(&url, MigrateMode::Apply)
        .await
        .unwrap();

    let took = load(&url, n).await;
    println!(
        "loaded {n} events with COPY in {:.1} s ({:.0} events/s, chain computed in Rust)",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );

    let by_user = |u: &str| AuditQuery {
        user_id: Some(u.to_owned()),
        limit: 50,
        ..AuditQuery::default()
    };
    time_query(
        &log,
        "newest 50 of one user (500 events)",
        &by_user("user-17"),
        500,
    )
    .await;
    time_query(
        &log,
        "newest 50 of the hot user (100,000 events)",
        &by_user("user-hot"),
        500,
    )
    .await;
    let session = AuditQuery {
        session_id: Some("session-12345".into()),
        limit: 50,
        ..AuditQuery::default()
    };
    time_query(&log, "newest 50 of one session (50 events)", &session, 500).await;
    let oldest_page = log.query(&by_user("user-17")).await.unwrap();
    let next_page = AuditQuery {
        before: oldest_page.last().map(|e| e.id),
        ..by_user("user-17")
    };
    time_query(
        &log,
        "second page of one user (before cursor)",
        &next_page,
        500,
    )
    .await;
    let kind = AuditQuery {
        kind: Some(AuditKind::SessionRevoked),
        limit: 50,
        ..AuditQuery::default()
    };
    time_query(&log, "newest 50 session_revoked", &kind, 500).await;

    let mut conn = PgConnection::connect(&url).await.unwrap();
    explain(
        &mut conn,
        "SELECT id, at, kind FROM audit_events WHERE user_id = 'user-17' ORDER BY seq DESC LIMIT 50",
    )
    .await;
    explain(
        &mut conn,
        "SELECT id, at, kind FROM audit_events WHERE session_id = 'session-12345' ORDER BY seq DESC LIMIT 50",
    )
    .await;

    // Appends through the writer: many concurrent callers, batched into
    // one transaction per group, chain computed in the writer.
    let log = Arc::new(log);
    for (round, (tasks, each)) in [(256_i64, 200_i64), (1024, 100)].into_iter().enumerate() {
        let base = 1_000_000 * i64::try_from(round).unwrap();
        let started = Instant::now();
        let mut handles = Vec::new();
        for t in 0..tasks {
            let log = Arc::clone(&log);
            handles.push(tokio::spawn(async move {
                for i in 0..each {
                    log.append(&fresh(base + t * each + i)).await.unwrap();
                }
            }));
        }
        for h in handles {
            h.await.unwrap();
        }
        let took = started.elapsed();
        println!(
            "append via the writer: {} events from {tasks} concurrent tasks in {:.2} s = {:.0} events/s",
            tasks * each,
            took.as_secs_f64(),
            (tasks * each) as f64 / took.as_secs_f64()
        );
    }

    let batches = 50_i64;
    let started = Instant::now();
    for b in 0..batches {
        let events: Vec<_> = (0..1000)
            .map(|i| fresh(10_000_000 + b * 1000 + i))
            .collect();
        log.append_batch(&events).await.unwrap();
    }
    let took = started.elapsed();
    println!(
        "append_batch of 1000: {} events in {:.2} s = {:.0} events/s",
        batches * 1000,
        took.as_secs_f64(),
        (batches * 1000) as f64 / took.as_secs_f64()
    );

    // Through the outbox: durable local appends (group fsync), then delivery.
    let dir = tempfile::tempdir().unwrap();
    let outbox = Arc::new(
        OutboxAuditLog::open(
            dir.path(),
            &url,
            OutboxConfig {
                outbox: session_core::outbox::OutboxConfig {
                    batch_size: 1000,
                    ..session_core::outbox::OutboxConfig::default()
                },
                ..OutboxConfig::default()
            },
        )
        .await
        .unwrap(),
    );
    let (tasks, each) = (256_i64, 200_i64);
    let started = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let outbox = Arc::clone(&outbox);
        handles.push(tokio::spawn(async move {
            for i in 0..each {
                outbox
                    .append(&fresh(20_000_000 + t * each + i))
                    .await
                    .unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let appended = started.elapsed();
    assert!(outbox.flush(Duration::from_secs(300)).await);
    let delivered = started.elapsed();
    println!(
        "append via the outbox: {} events durable in {:.2} s = {:.0} events/s; all in PostgreSQL after {:.2} s = {:.0} events/s",
        tasks * each,
        appended.as_secs_f64(),
        (tasks * each) as f64 / appended.as_secs_f64(),
        delivered.as_secs_f64(),
        (tasks * each) as f64 / delivered.as_secs_f64()
    );

    let started = Instant::now();
    let report = log.verify_chain().await.unwrap();
    let took = started.elapsed();
    assert!(report.is_intact(), "{report:?}");
    println!(
        "verify_chain: {} events in {:.1} s = {:.0} events/s (streamed)",
        report.events,
        took.as_secs_f64(),
        report.events as f64 / took.as_secs_f64()
    );
}
