#![doc = include_str!("../README.md")]

pub mod layer;
pub mod token;
pub mod validate;

pub use layer::{OptionalSession, Rejection, SessionLayer, SessionMiddleware};
pub use validate::{AuthError, Authenticated, ValidationMode, Validator};
