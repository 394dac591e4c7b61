//! Prometheus metrics. Names are documented in `docs/operations.md`.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// The process-wide exposition handle (the recorder is installed once,
/// however many servers a process starts).
pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Suffix("duration_seconds".into()),
                    &[
                        0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
                        0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                    ],
                )
                .map(PrometheusBuilder::build_recorder)
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            // Fails only if another recorder was installed first (an
            // embedding app's); then that app exports our metrics.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// How often [`upkeep`] runs.
pub const UPKEEP_EVERY: Duration = Duration::from_secs(1);

/// Folds the histogram samples recorded since the last pass into their
/// buckets, every `every`, for as long as the server runs.
///
/// The exporter keeps each histogram sample until the next scrape or
/// upkeep pass; with neither, a server that nobody scrapes grows by every
/// request it times (≈ 16 bytes a request, and a scrape after a quiet
/// month would fold millions at once). `cargo xtask soak` found it: 5 MiB
/// a minute at 5,800 refreshes/s.
pub async fn upkeep(handle: PrometheusHandle, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        handle.run_upkeep();
    }
}
