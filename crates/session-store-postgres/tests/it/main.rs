//! Integration tests against a real PostgreSQL (`DATABASE_URL`, default
//! `postgres://root@127.0.0.1:5432/postgres`); each test gets a database of
//! its own, created and dropped by the harness.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

mod chain;
mod conformance;
mod fault;
mod harness;
mod outbox;
mod role;
