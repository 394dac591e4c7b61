//! The real `session-admin` binary against a real `session-server`
//! started in-process on port 0 (`session_server::testing::TestServer`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

mod audit;
mod connection;
mod harness;
mod keys;
mod pty;
mod sessions;
mod status;
mod users;
