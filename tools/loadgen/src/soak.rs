//! The `soak` job: refresh chains at a fixed rate for a long time, with
//! one line of figures per slice of time, so that `cargo xtask soak` can
//! tell whether anything grows.
//!
//! The load is paced, not closed: request `k` of the run is due at
//! `start + k / rate`, whichever connection is free sends it, and its
//! latency counts from when it was due, not from when it was sent. A
//! server that falls behind therefore shows as latency, instead of
//! slowing the generator down with it (coordinated omission).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};

use session_bench_report::{Report, Slice};

use crate::{Tally, Workload, connect, cpu_of, create_sessions, micros};

/// What the job was asked to do.
#[derive(Debug)]
pub(crate) struct Plan<'a> {
    pub(crate) public: SocketAddr,
    pub(crate) admin: SocketAddr,
    pub(crate) admin_token_file: &'a Path,
    pub(crate) rate: f64,
    pub(crate) connections: usize,
    pub(crate) duration: Duration,
    pub(crate) slice: Duration,
    pub(crate) server_pids: &'a [u32],
}

/// The resident set (KiB) of a process, from `/proc/<pid>/status`.
fn rss_kib(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

/// How many file descriptors a process holds open.
fn open_fds(pid: &str) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |dir| dir.count() as u64)
}

/// Runs the soak and returns the report over the whole run; the slices go
/// to stdout as they end.
pub(crate) async fn run(plan: Plan<'_>) -> Result<Report> {
    ensure!(plan.rate > 0.0, "the rate must be positive");
    ensure!(plan.connections > 0, "at least one connection is needed");
    ensure!(
        plan.slice >= Duration::from_secs(1),
        "a slice is at least a second"
    );
    let admin_token = crate::read_admin_token(plan.admin_token_file)?;
    let chains = create_sessions(plan.admin, &admin_token, plan.connections, plan.connections)
        .await?
        .into_iter()
        .map(|t| Some(t.refresh));
    let workload = Arc::new(Workload::Refresh {
        host: plan.public.to_string(),
    });
    let current = Arc::new(Mutex::new(Tally::new()?));
    let next = Arc::new(AtomicU64::new(0));
    let alive = Arc::new(AtomicU64::new(plan.connections as u64));
    let start = Instant::now();
    let end = start + plan.duration;
    let interval = Duration::from_secs_f64(1.0 / plan.rate);

    let mut tasks = Vec::new();
    for mut chain in chains {
        let (workload, current, next, alive) = (
            workload.clone(),
            current.clone(),
            next.clone(),
            alive.clone(),
        );
        let addr = plan.public;
        tasks.push(tokio::spawn(async move {
            let mut sender = connect(addr).await?;
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let due = start + interval.mul_f64(k as f64);
                if due >= end {
                    break;
                }
                tokio::time::sleep_until(due.into()).await;
                let Some(req) = workload.next(&chain)? else {
                    break;
                };
                let (done, failure) = workload.send(&mut sender, addr, req, &mut chain).await?;
                let mut tally = current.lock().unwrap_or_else(PoisonError::into_inner);
                tally.histogram.saturating_record(micros(done - due));
                if let Some(kind) = failure {
                    tally.error(kind);
                }
                drop(tally);
                if chain.is_none() {
                    break;
                }
            }
            alive.fetch_sub(1, Ordering::Relaxed);
            anyhow::Ok(())
        }));
    }

    let pids: Vec<String> = plan.server_pids.iter().map(u32::to_string).collect();
    let first = pids.first().cloned().unwrap_or_default();
    let mut total = Tally::new()?;
    let own = vec![std::process::id().to_string()];
    let (own_at_start, cpu_at_start) = (cpu_of(&own), cpu_of(&pids));
    let (mut cpu_before, mut before) = (cpu_at_start, start);
    let slices = u64::try_from(plan.duration.as_nanos().div_ceil(plan.slice.as_nanos()))?;
    for i in 0..slices {
        let until = (start + plan.slice.mul_f64((i + 1) as f64)).min(end);
        tokio::time::sleep_until(until.into()).await;
        let tally = std::mem::replace(
            &mut *current.lock().unwrap_or_else(PoisonError::into_inner),
            Tally::new()?,
        );
        let (cpu_now, now) = (cpu_of(&pids), Instant::now());
        let span = (now - before).as_secs_f64().max(1e-3);
        let line = Slice {
            slice: i,
            t_s: (now - start).as_secs_f64(),
            requests: tally.histogram.len(),
            errors: tally.errors,
            error_kinds: tally.error_kinds.clone(),
            rps: tally.histogram.len() as f64 / span,
            p50_us: tally.histogram.value_at_quantile(0.5),
            p99_us: tally.histogram.value_at_quantile(0.99),
            max_us: tally.histogram.max(),
            server_cpu: (cpu_now - cpu_before) / span,
            server_rss_kib: rss_kib(&first),
            server_fds: open_fds(&first),
            chains: alive.load(Ordering::Relaxed),
        };
        println!("{}", serde_json::to_string(&line)?);
        total.merge(tally)?;
        (cpu_before, before) = (cpu_now, now);
    }
    for task in tasks {
        task.await??;
    }
    // What completed after the last slice closed (at most one request per
    // connection) joins the total.
    let rest = std::mem::replace(
        &mut *current.lock().unwrap_or_else(PoisonError::into_inner),
        Tally::new()?,
    );
    total.merge(rest)?;
    let window = start.elapsed().as_secs_f64().max(1e-3);
    let requests = total.histogram.len();
    Ok(Report {
        requests,
        errors: total.errors,
        error_kinds: total.error_kinds,
        window_s: window,
        rps: requests as f64 / window,
        p50_us: total.histogram.value_at_quantile(0.5),
        p99_us: total.histogram.value_at_quantile(0.99),
        max_us: total.histogram.max(),
        server_cpu: (cpu_of(&pids) - cpu_at_start) / window,
        generator_cpu: (cpu_of(&own) - own_at_start) / window,
        note: format!(
            "paced at {:.0} requests/s; latency from each request's due time",
            plan.rate
        ),
    })
}
