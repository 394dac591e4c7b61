//! Integration tests: the real server on loopback ports, real HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)] // reason: tests (they may read the wall clock to forge tokens)
#![allow(unreachable_pub)] // reason: a test binary has no public API; `pub` marks the harness surface

mod harness;

mod admin;
mod at_rest;
mod audit;
mod auth;
mod browser;
mod chromium;
mod dpop;
mod edge;
mod fleet;
mod forward_auth;
mod geoip;
mod hostile;
mod hostile_input;
mod jwks_client;
mod keys;
mod master_key;
mod openapi;
mod persistence;
mod postgres;
mod races;
mod redis;
mod secrets;
mod telemetry;
mod tokens;
mod ui;
mod webdriver;
