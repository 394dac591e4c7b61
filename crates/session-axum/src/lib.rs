#![doc = include_str!("../README.md")]

pub mod cookie;
pub mod jwks;
pub mod layer;
pub mod public_url;
pub mod token;
pub mod validate;

pub use cookie::{CookieWriter, IssuedCookies};
pub use jwks::{FetchError, JwksVerifier};
pub use layer::{OptionalSession, Rejection, SessionLayer, SessionMiddleware};
pub use public_url::{InvalidPublicUrl, PublicUrl};
pub use validate::{AuthError, Authenticated, ValidationMode, Validator};
