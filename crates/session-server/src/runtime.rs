//! The tokio runtime the binary runs on: which scheduler, for how many
//! worker threads.
//!
//! With more than one worker, tokio's multi-thread scheduler: tasks move
//! between the workers (work stealing). With exactly one, there is no one
//! to steal from, and that scheduler only costs: every wake-up from the
//! I/O driver, from a store's writer thread or from the audit outbox goes
//! through its shared queues and atomics, and the future passed to
//! `block_on` runs on a thread of its own beside the worker. The
//! current-thread scheduler runs everything on the one thread. On one core
//! it answers more strict validations (every one a store read) per second:
//! see BENCHMARKS.md, "One worker, one thread".
//!
//! The worker count is tokio's own rule: `TOKIO_WORKER_THREADS` when set,
//! else the CPUs this process may use (`available_parallelism`, which
//! honours a container's CPU quota).

use std::io;
use std::num::NonZeroUsize;

/// Which scheduler a runtime uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheduler {
    /// One thread runs every task (one worker).
    CurrentThread,
    /// Work-stealing workers (more than one).
    MultiThread,
}

impl Scheduler {
    /// The scheduler for this process: see the module doc.
    pub fn for_process() -> Self {
        Self::choose(
            std::env::var("TOKIO_WORKER_THREADS").ok().as_deref(),
            std::thread::available_parallelism().ok(),
        )
    }

    /// The scheduler for `TOKIO_WORKER_THREADS` = `workers_env` (if set)
    /// on a machine that gives this process `available` CPUs (if known).
    /// A variable that is set but not a count is left to tokio, which
    /// refuses it: the multi-thread builder reads it.
    pub fn choose(workers_env: Option<&str>, available: Option<NonZeroUsize>) -> Self {
        let workers = match workers_env {
            Some(v) => v.trim().parse::<usize>().ok(),
            None => available.map(NonZeroUsize::get),
        };
        if workers == Some(1) {
            Self::CurrentThread
        } else {
            Self::MultiThread
        }
    }

    /// Its name, for the start-up log.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CurrentThread => "current_thread",
            Self::MultiThread => "multi_thread",
        }
    }

    /// Builds a runtime with this scheduler, every driver enabled.
    pub fn build(self) -> io::Result<tokio::runtime::Runtime> {
        let mut builder = match self {
            Self::CurrentThread => tokio::runtime::Builder::new_current_thread(),
            Self::MultiThread => tokio::runtime::Builder::new_multi_thread(),
        };
        builder.enable_all().build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpus(n: usize) -> Option<NonZeroUsize> {
        NonZeroUsize::new(n)
    }

    #[test]
    fn one_worker_runs_on_the_current_thread() {
        assert_eq!(
            Scheduler::choose(Some("1"), cpus(8)),
            Scheduler::CurrentThread
        );
        assert_eq!(
            Scheduler::choose(Some(" 1 "), cpus(8)),
            Scheduler::CurrentThread
        );
        assert_eq!(Scheduler::choose(None, cpus(1)), Scheduler::CurrentThread);
    }

    #[test]
    fn more_workers_or_an_unknown_count_steal_work() {
        assert_eq!(
            Scheduler::choose(Some("2"), cpus(1)),
            Scheduler::MultiThread
        );
        assert_eq!(Scheduler::choose(None, cpus(2)), Scheduler::MultiThread);
        assert_eq!(Scheduler::choose(None, None), Scheduler::MultiThread);
        // Not a count: tokio's multi-thread builder reads it and says so.
        assert_eq!(
            Scheduler::choose(Some("one"), cpus(1)),
            Scheduler::MultiThread
        );
        assert_eq!(
            Scheduler::choose(Some("0"), cpus(1)),
            Scheduler::MultiThread
        );
    }

    #[test]
    fn each_scheduler_builds_a_runtime_that_runs_tasks_and_blocking_work() {
        for scheduler in [Scheduler::CurrentThread, Scheduler::MultiThread] {
            let rt = scheduler.build().expect("runtime");
            let got = rt.block_on(async {
                let blocking = tokio::task::spawn_blocking(|| 40).await.expect("blocking");
                let task = tokio::spawn(async { 2 }).await.expect("task");
                blocking + task
            });
            assert_eq!(got, 42, "{}", scheduler.as_str());
        }
    }
}
