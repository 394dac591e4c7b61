#![doc = include_str!("../README.md")]

pub mod chain;
mod error;
mod log;
mod outbox;

pub use error::{SchemaError, classify, is_unavailable, is_unique_violation};
pub use log::{
    BrokenLink, CHAIN_LOCK, ChainCheck, ChainReport, Checkpoint, CheckpointVerifier, LinkProblem,
    MIGRATOR, MigrateMode, PostgresAuditLog, SignatureFault, check_schema, connect_options,
    migrate, pool_options, prepare_schema,
};
pub use outbox::{FILES, LOCK_FILE, OUTBOX_FILE, OutboxAuditLog, OutboxConfig, REJECTED_FILE};
