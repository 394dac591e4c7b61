#![doc = include_str!("../README.md")]

pub mod jwks;
pub mod layer;
pub mod token;
pub mod validate;

pub use jwks::{FetchError, JwksVerifier};
pub use layer::{OptionalSession, Rejection, SessionLayer, SessionMiddleware};
pub use validate::{AuthError, Authenticated, ValidationMode, Validator};
