#![doc = include_str!("../README.md")]

pub mod anomaly;
pub mod audit;
pub mod clock;
pub mod dpop;
pub mod geo;
mod jws;
pub mod keys;
pub mod memory;
#[cfg(feature = "outbox")]
pub mod outbox;
pub mod recent;
pub mod record;
pub mod rotation;
pub mod sealing;
pub mod secret;
pub mod service;
pub mod session;
pub mod shared;
pub mod store;
pub mod user;
pub mod wire;

pub use anomaly::{AnomalyAction, AnomalyPolicy, ClientInfo, Signal};
pub use audit::{Actor, AuditEvent, AuditKind, AuditQuery, TracingAuditLog};
pub use clock::{Clock, ManualClock, SystemClock};
pub use geo::Location;
pub use secret::{CsrfToken, PresentedRefresh, RefreshToken, SessionId, TokenDigest, TokenSecrets};
pub use session::{Lifetimes, RevokeReason, Session};
pub use store::{
    ApplyRefresh, AuditLog, FeedEvent, GuessedCreate, RevocationFeed, SessionStore, StoreError,
    UserStore, WriteHints,
};
