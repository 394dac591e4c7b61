#![doc = include_str!("../README.md")]

pub mod cookie;
pub mod cors;
pub mod csrf;
pub mod dpop;
pub mod guard;
pub mod jwks;
pub mod layer;
pub mod public_url;
pub mod token;
pub mod validate;

pub use cookie::{CookieWriter, IssuedCookies};
pub use csrf::OriginPolicy;
pub use dpop::{DpopRequest, DpopTarget, DpopVerifier};
pub use guard::Guard;
pub use jwks::{FetchError, JwksVerifier};
pub use layer::{OptionalSession, Rejection, SessionLayer, SessionMiddleware};
pub use public_url::{InvalidPublicUrl, PublicUrl};
pub use token::{Scheme, Source};
pub use validate::{AuthError, Authenticated, ValidationMode, Validator};
