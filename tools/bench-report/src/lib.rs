#![doc = include_str!("../README.md")]

use serde::{Deserialize, Serialize};

/// What a closed-loop job measured: the last line it prints on stdout.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Requests completed inside the measured window.
    pub requests: u64,
    /// Of those, non-2xx answers and transport errors.
    pub errors: u64,
    /// The first few error causes with their counts.
    pub error_kinds: Vec<(String, u64)>,
    /// Seconds measured (shorter than asked when a pool ran out).
    pub window_s: f64,
    /// Requests per second over the window.
    pub rps: f64,
    /// Median latency, µs.
    pub p50_us: u64,
    /// 99th-percentile latency, µs.
    pub p99_us: u64,
    /// Slowest request, µs.
    pub max_us: u64,
    /// CPU use of the server processes in the window (1.0 = one core).
    pub server_cpu: f64,
    /// CPU use of the generator in the window.
    pub generator_cpu: f64,
    /// Anything the reader must know (pool exhausted, …).
    pub note: String,
}

/// One slice of a soak, printed as one JSON line when it ends.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Slice {
    /// Which slice (from 0).
    pub slice: u64,
    /// Seconds since the paced load started, at the slice's end.
    pub t_s: f64,
    /// Requests completed in the slice.
    pub requests: u64,
    /// Of those, non-2xx answers and transport errors.
    pub errors: u64,
    /// The first few error causes with their counts.
    pub error_kinds: Vec<(String, u64)>,
    /// Requests per second over the slice.
    pub rps: f64,
    /// Median latency from each request's due time, µs.
    pub p50_us: u64,
    /// 99th-percentile latency from each request's due time, µs.
    pub p99_us: u64,
    /// Slowest request, µs.
    pub max_us: u64,
    /// CPU use of the server processes in the slice (1.0 = one core).
    pub server_cpu: f64,
    /// Resident set of the first server process, KiB.
    pub server_rss_kib: u64,
    /// Open file descriptors of the first server process.
    pub server_fds: u64,
    /// Refresh chains still alive (a chain that got an error ends).
    pub chains: u64,
}
