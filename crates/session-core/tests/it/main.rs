//! The one integration-test binary of session-core.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

mod access_tokens;
mod keys;
mod memory;
mod rotation_props;
