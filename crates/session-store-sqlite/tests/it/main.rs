//! The SQLite store's one integration test binary: the shared conformance
//! suite, plus what only a file-backed store can show (durability across
//! reopening, concurrency between handles on one file, corrupt rows, what
//! the bytes on disk hold).

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

mod support;

mod concurrency;
mod conformance;
mod corruption;
mod durability;
mod outbox;
mod schema;
mod secrecy;
