//! `cargo xtask soak`: refresh at a steady share of the measured capacity
//! for a long time (30 minutes by default) and check that nothing grows.
//!
//! The run reuses the benchmark's set-up (release binaries, the server on
//! core 0 with one worker thread and the Redis store, the generator on
//! core 1). First a closed-loop refresh probe measures the capacity; then
//! `session-loadgen soak` paces refreshes at `--share` of it (80 % by
//! default) and prints one line of figures per slice (a minute by
//! default). For each slice this command adds the Redis side (the bench
//! database's keys and their `MEMORY USAGE`, the server's `used_memory`)
//! and the size of the server's data directory (the SQLite audit log grows
//! by one event per refresh, by design), and what the machine did in the
//! slice (steal, iowait, CPU and I/O pressure, dirty pages), so that a slow
//! minute can be told apart from a busy host; it prints the table, and ends with a
//! drift verdict: the last slices against the first ones after warm-up.
//! The command fails when any request failed or anything but the audit
//! log kept growing. Loopback only, bounded by `--minutes`.

use std::io::{BufRead as _, BufReader};
use std::process::Stdio;

use anyhow::{Context as _, Result, bail, ensure};

use session_bench_report::{Report, Slice};

use crate::bench::{self, RedisDb, Server};
use crate::cmd;

/// The longest soak this command runs.
const MAX_MINUTES: f64 = 240.0;
/// Slices compared at each end of the run for the drift verdict.
const ENDS: usize = 3;

/// `cargo xtask soak`.
#[derive(Debug, clap::Args)]
pub(crate) struct SoakArgs {
    /// Minutes of paced load (at most 240).
    #[arg(long, default_value_t = 30.0)]
    minutes: f64,
    /// Seconds per reported slice.
    #[arg(long, default_value_t = 60)]
    slice: u64,
    /// Requests per second; by default `--share` of the capacity that a
    /// closed-loop probe measures first.
    #[arg(long)]
    rate: Option<f64>,
    /// The share of the measured capacity to run at.
    #[arg(long, default_value_t = 0.8)]
    share: f64,
    /// Seconds of the capacity probe.
    #[arg(long, default_value_t = 10)]
    probe: u64,
    /// Concurrent keep-alive connections (one refresh chain each).
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// The server's audit log (`SESSION_AUDIT`); by default SQLite in its
    /// data directory.
    #[arg(long, value_name = "URL")]
    audit: Option<String>,
    /// Use the release binaries already in `target/release`.
    #[arg(long)]
    no_build: bool,
}

/// A slice with what this side measured at its end.
#[derive(Debug)]
struct Row {
    slice: Slice,
    redis_used_memory: i64,
    db_bytes: i64,
    db_keys: i64,
    data_dir_bytes: u64,
    /// Audit events appended but not yet delivered (`/readyz`): the
    /// PostgreSQL outbox's backlog; none for the SQLite log.
    audit_backlog: Option<u64>,
    /// What the machine did in the slice, for telling a slow minute of the
    /// server from one of the host.
    host: HostSlice,
}

pub(crate) fn run(args: &SoakArgs) -> Result<()> {
    ensure!(
        args.minutes > 0.0 && args.minutes <= MAX_MINUTES,
        "--minutes must be in (0, {MAX_MINUTES}]"
    );
    ensure!(args.slice >= 1, "--slice is at least one second");
    ensure!(
        args.share > 0.0 && args.share <= 1.0,
        "--share is in (0, 1]"
    );
    let (setup, _dir) = bench::prepare(
        args.no_build,
        args.connections,
        args.probe,
        args.audit.clone(),
        false,
    )?;
    let mut redis = RedisDb::pick(RedisDb::addr()?).context("the soak needs a Redis")?;
    let server = Server::start(&setup, "server-soak", &redis.url(), "cached")?;
    let token_file = setup.admin_token_file().display().to_string();

    let rate = if let Some(rate) = args.rate {
        rate
    } else {
        eprintln!("soak: measuring the refresh capacity ({} s)", args.probe);
        let mut probe = bench::public_and_admin("refresh", &server, &token_file);
        probe.extend(setup.common(&[&server], 2.0));
        let report = setup.load(&probe)?;
        ensure!(
            report.errors == 0,
            "the capacity probe had {} errors: {:?}",
            report.errors,
            report.error_kinds
        );
        eprintln!(
            "soak: capacity {:.0} refreshes/s (p99 {:.2} ms, server CPU {:.0} %)",
            report.rps,
            report.p99_us as f64 / 1000.0,
            report.server_cpu * 100.0
        );
        report.rps * args.share
    };
    let seconds = args.minutes * 60.0;
    eprintln!(
        "soak: {rate:.0} refreshes/s for {:.0} s on {} connections; a line every {} s",
        seconds, args.connections, args.slice
    );

    let mut command = setup.pinned_command(&setup.loader_bin, 1);
    command.args(bench::public_and_admin("soak", &server, &token_file));
    command.args([
        "--rate".to_owned(),
        format!("{rate:.1}"),
        "--connections".to_owned(),
        args.connections.to_string(),
        "--duration".to_owned(),
        seconds.to_string(),
        "--slice".to_owned(),
        args.slice.to_string(),
        "--server-pid".to_owned(),
        server.child.id().to_string(),
    ]);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let shown = cmd::display(&command);
    let mut child = command
        .spawn()
        .with_context(|| format!("could not start `{shown}`"))?;
    let stdout = child.stdout.take().context("the generator's stdout")?;
    let mut rows = Vec::new();
    let mut last = String::new();
    let mut host = HostSample::read();
    eprintln!("{}", header());
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if let Ok(slice) = serde_json::from_str::<Slice>(&line) {
            let now = HostSample::read();
            let host_slice = now.since(&host);
            host = now;
            let (db_bytes, db_keys) = redis.conn.memory_usage_of_db()?;
            let row = Row {
                slice,
                redis_used_memory: redis.conn.used_memory()?,
                db_bytes,
                db_keys,
                data_dir_bytes: dir_bytes(&setup.data_dir),
                audit_backlog: bench::http_json(server.public, "/readyz")
                    .ok()
                    .and_then(|ready| ready["audit_backlog"].as_u64()),
                host: host_slice,
            };
            eprintln!("{}", format_row(&row));
            rows.push(row);
        } else {
            last = line;
        }
    }
    let status = child.wait()?;
    ensure!(status.success(), "`{shown}` failed ({status})");
    let total: Report =
        serde_json::from_str(&last).with_context(|| format!("reading the report of `{shown}`"))?;
    drop(server);
    drop(redis);

    println!(
        "\nsoak: {:.0} refreshes/s asked, {:.0} done over {:.0} s; p50 {:.2} ms, p99 {:.2} ms, \
         max {:.2} ms; {} errors of {}; server CPU {:.0} %; load average {}\n",
        rate,
        total.rps,
        total.window_s,
        total.p50_us as f64 / 1000.0,
        total.p99_us as f64 / 1000.0,
        total.max_us as f64 / 1000.0,
        total.errors,
        total.requests,
        total.server_cpu * 100.0,
        bench::loadavg(),
    );
    println!("{}", header());
    for row in &rows {
        println!("{}", format_row(row));
    }
    let postgres = args
        .audit
        .as_deref()
        .is_some_and(|url| url.starts_with("postgres"));
    let verdict = drift(&rows, postgres);
    println!();
    for line in &verdict.lines {
        println!("{line}");
    }
    if total.errors > 0 {
        bail!(
            "{} of {} refreshes failed: {:?}",
            total.errors,
            total.requests,
            total.error_kinds
        );
    }
    if !verdict.flat {
        bail!("something kept growing during the soak (see the verdict above)");
    }
    Ok(())
}

fn header() -> String {
    "| t (s) | req/s | p50 | p99 | max | errors | chains | server CPU | CPU per request | RSS (MiB) | fds | \
     Redis db keys | Redis db bytes | Redis used_memory (MiB) | data dir (MiB) | audit backlog | \
     steal | iowait | CPU pressure | I/O pressure | dirty (MiB) |\n\
     |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        .to_owned()
}

fn format_row(row: &Row) -> String {
    let s = &row.slice;
    let ms = |us: u64| format!("{:.2} ms", us as f64 / 1000.0);
    let mib = |bytes: f64| format!("{:.1}", bytes / 1_048_576.0);
    let mut errors = s.errors.to_string();
    for (kind, n) in &s.error_kinds {
        errors.push_str(&format!(" ({n}× {kind})"));
    }
    let pct = |share: Option<f64>| {
        share.map_or_else(|| "–".to_owned(), |x| format!("{:.1} %", x * 100.0))
    };
    let h = &row.host;
    format!(
        "| {:.0} | {:.0} | {} | {} | {} | {} | {} | {:.0} % | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        s.t_s,
        s.rps,
        ms(s.p50_us),
        ms(s.p99_us),
        ms(s.max_us),
        errors,
        s.chains,
        s.server_cpu * 100.0,
        // At a fixed rate, a host that runs slower shows here first: the
        // same requests take more of the server's CPU each.
        if s.rps > 0.0 {
            format!("{:.0} µs", s.server_cpu * 1e6 / s.rps)
        } else {
            "–".to_owned()
        },
        mib(s.server_rss_kib as f64 * 1024.0),
        s.server_fds,
        row.db_keys,
        row.db_bytes,
        mib(row.redis_used_memory as f64),
        mib(row.data_dir_bytes as f64),
        row.audit_backlog
            .map_or_else(|| "–".to_owned(), |n| n.to_string()),
        pct(h.steal),
        pct(h.iowait),
        pct(h.cpu_pressure),
        pct(h.io_pressure),
        h.dirty_kib
            .map_or_else(|| "–".to_owned(), |k| mib(k as f64 * 1024.0)),
    )
}

/// Counters of the whole machine at one moment (Linux's `/proc`); a figure
/// this kernel does not offer is `None`.
#[derive(Debug)]
struct HostSample {
    /// `/proc/stat`'s first line: (steal, iowait, all) in clock ticks.
    ticks: Option<(u64, u64, u64)>,
    /// Microseconds in which some task waited for a CPU (PSI, `some`).
    cpu_stall_us: Option<u64>,
    /// Microseconds in which some task waited for I/O (PSI, `some`).
    io_stall_us: Option<u64>,
    /// When this was read.
    at: std::time::Instant,
}

/// What the machine did between two samples.
#[derive(Debug, Default)]
struct HostSlice {
    /// Share of the CPU time the hypervisor gave to someone else.
    steal: Option<f64>,
    /// Share of the CPU time idle with I/O outstanding.
    iowait: Option<f64>,
    /// Share of the wall time in which some task waited for a CPU.
    cpu_pressure: Option<f64>,
    /// Share of the wall time in which some task waited for I/O.
    io_pressure: Option<f64>,
    /// Page cache waiting to be written back (`Dirty` + `Writeback`), at
    /// the slice's end.
    dirty_kib: Option<u64>,
}

impl HostSample {
    fn read() -> Self {
        let ticks = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|stat| cpu_ticks(&stat));
        Self {
            ticks,
            cpu_stall_us: pressure_total("/proc/pressure/cpu"),
            io_stall_us: pressure_total("/proc/pressure/io"),
            at: std::time::Instant::now(),
        }
    }

    fn since(&self, earlier: &Self) -> HostSlice {
        let share = |a: u64, b: u64, of: f64| (of > 0.0).then(|| a.saturating_sub(b) as f64 / of);
        let (steal, iowait) = match (self.ticks, earlier.ticks) {
            (Some((s1, w1, t1)), Some((s0, w0, t0))) => {
                let all = t1.saturating_sub(t0) as f64;
                (share(s1, s0, all), share(w1, w0, all))
            }
            _ => (None, None),
        };
        let wall_us = self.at.duration_since(earlier.at).as_micros() as f64;
        let stall = |b: Option<u64>, a: Option<u64>| share(b?, a?, wall_us);
        HostSlice {
            steal,
            iowait,
            cpu_pressure: stall(self.cpu_stall_us, earlier.cpu_stall_us),
            io_pressure: stall(self.io_stall_us, earlier.io_stall_us),
            dirty_kib: dirty_kib(),
        }
    }
}

/// (steal, iowait, all) clock ticks of `/proc/stat`'s first line.
fn cpu_ticks(stat: &str) -> Option<(u64, u64, u64)> {
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let n: Vec<u64> = line
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    // user nice system idle iowait irq softirq steal (guest time is
    // already counted in user).
    Some((*n.get(7)?, *n.get(4)?, n.iter().take(8).sum()))
}

/// The `total=` of a PSI file's `some` line.
fn pressure_total(path: &str) -> Option<u64> {
    pressure_some(&std::fs::read_to_string(path).ok()?)
}

fn pressure_some(text: &str) -> Option<u64> {
    let some = text.lines().find(|l| l.starts_with("some "))?;
    some.split_whitespace()
        .find_map(|f| f.strip_prefix("total="))?
        .parse()
        .ok()
}

/// `Dirty` plus `Writeback` of `/proc/meminfo`, in KiB.
fn dirty_kib() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    Some(field("Dirty:")? + field("Writeback:")?)
}

/// The bytes of the regular files under `dir` (its subdirectories too).
fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_bytes(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

#[derive(Debug)]
struct Verdict {
    flat: bool,
    lines: Vec<String>,
}

/// The mean of the first [`ENDS`] slices after the first (warm-up) against
/// the mean of the last [`ENDS`] before the last, for each figure that
/// must stay flat.
fn drift(rows: &[Row], postgres: bool) -> Verdict {
    if rows.len() < 2 + 2 * ENDS {
        return Verdict {
            flat: true,
            lines: vec![format!(
                "drift: not judged: {} slices, {} needed (warm-up, {ENDS} at each end, the last)",
                rows.len(),
                2 + 2 * ENDS
            )],
        };
    }
    // The first slice warms up; the last is read as the connections close.
    let early = &rows[1..=ENDS];
    let late = &rows[rows.len() - 1 - ENDS..rows.len() - 1];
    let mean =
        |part: &[Row], f: &dyn Fn(&Row) -> f64| part.iter().map(f).sum::<f64>() / part.len() as f64;
    // (what, unit, figure, growth allowed: factor, plus absolute slack)
    type Figure<'a> = (&'a str, &'a str, &'a dyn Fn(&Row) -> f64, f64, f64);
    let figures: [Figure<'_>; 6] = [
        (
            "server RSS",
            "MiB",
            &|r| r.slice.server_rss_kib as f64 / 1024.0,
            1.2,
            8.0,
        ),
        (
            "server open fds",
            "",
            &|r| r.slice.server_fds as f64,
            1.0,
            16.0,
        ),
        (
            "Redis bytes of the bench db",
            "KiB",
            &|r| r.db_bytes as f64 / 1024.0,
            1.2,
            64.0,
        ),
        (
            "Redis keys of the bench db",
            "",
            &|r| r.db_keys as f64,
            1.2,
            100.0,
        ),
        (
            // An outbox that its log does not keep up with grows without
            // bound.
            "audit events not yet delivered",
            "",
            &|r| r.audit_backlog.unwrap_or(0) as f64,
            2.0,
            10_000.0,
        ),
        (
            "p99 latency",
            "ms",
            &|r| r.slice.p99_us as f64 / 1000.0,
            2.0,
            2.0,
        ),
    ];
    let mut verdict = Verdict {
        flat: true,
        lines: Vec::new(),
    };
    for (what, unit, figure, factor, slack) in figures {
        let (a, b) = (mean(early, figure), mean(late, figure));
        let ok = b <= a * factor + slack;
        verdict.flat &= ok;
        verdict.lines.push(format!(
            "drift: {what}: {a:.1} {unit} early, {b:.1} {unit} late: {} (allowed: ×{factor} + {slack} {unit})",
            if ok { "flat" } else { "GREW" }
        ));
    }
    let (a, b) = (
        mean(early, &|r| r.data_dir_bytes as f64),
        mean(late, &|r| r.data_dir_bytes as f64),
    );
    let audited: f64 = rows[1..].iter().map(|r| r.slice.requests as f64).sum();
    if postgres {
        verdict.lines.push(format!(
            "data dir: {:.1} MiB early, {:.1} MiB late (the audit outbox, emptied as PostgreSQL takes its events; not judged)",
            a / 1_048_576.0,
            b / 1_048_576.0,
        ));
        return verdict;
    }
    verdict.lines.push(format!(
        "data dir: {:.1} MiB early, {:.1} MiB late (the audit log keeps every refresh: ≈ {:.0} bytes per event; not judged)",
        a / 1_048_576.0,
        b / 1_048_576.0,
        (rows[rows.len() - 1].data_dir_bytes as f64 - rows[0].data_dir_bytes as f64) / audited.max(1.0),
    ));
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_reads_steal_iowait_and_the_sum_of_the_first_eight() {
        let stat = "cpu  3585 0 2492 18218 272 0 53 8 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        assert_eq!(
            cpu_ticks(stat),
            Some((8, 272, 3585 + 2492 + 18218 + 272 + 53 + 8))
        );
        assert_eq!(cpu_ticks("cpu0 1 2 3 4 5 6 7 8\n"), None);
        assert_eq!(cpu_ticks("cpu  1 2 3\n"), None);
    }

    #[test]
    fn pressure_reads_the_total_of_the_some_line() {
        let text = "some avg10=0.00 avg60=0.12 avg300=0.05 total=123456\n\
                    full avg10=0.00 avg60=0.00 avg300=0.00 total=999\n";
        assert_eq!(pressure_some(text), Some(123_456));
        assert_eq!(pressure_some("full avg10=0.00 total=5\n"), None);
    }

    #[test]
    fn a_slice_is_the_share_of_ticks_and_of_wall_time() {
        let t0 = std::time::Instant::now();
        let earlier = HostSample {
            ticks: Some((10, 100, 1_000)),
            cpu_stall_us: Some(0),
            io_stall_us: None,
            at: t0,
        };
        let later = HostSample {
            ticks: Some((60, 150, 2_000)),
            cpu_stall_us: Some(250_000),
            io_stall_us: Some(7),
            at: t0 + std::time::Duration::from_secs(1),
        };
        let slice = later.since(&earlier);
        assert_eq!(slice.steal, Some(0.05));
        assert_eq!(slice.iowait, Some(0.05));
        assert_eq!(slice.cpu_pressure, Some(0.25));
        assert_eq!(slice.io_pressure, None);
    }
}
