#![doc = include_str!("../README.md")]

pub mod admin;
pub mod app;
pub mod browser;
pub mod checkpoint;
pub mod compose;
pub mod config;
pub mod conn;
pub mod error;
pub mod extract;
pub mod files;
pub mod geoip;
pub mod health;
pub mod keyring;
pub mod master;
pub mod metrics;
pub mod openapi;
pub mod public;
pub mod ratelimit;
pub mod runtime;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod testing;
pub mod ui;
pub mod wire;

pub use app::{admin_app, public_app, serve};
pub use config::{RawSettings, Settings};
pub use startup::StartupError;
pub use state::{AppState, Backends};
