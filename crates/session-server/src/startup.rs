//! Why the server could not start: one error for configuration, the data
//! directory, the stores, the keys and the listeners, each with its source.

use std::path::PathBuf;

use session_core::StoreError;
use session_core::keys::KeyError;

use crate::config::ConfigError;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartupError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A file in the data directory.
    #[error("{what} at {path}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A stored file could not be read back.
    #[error("{path} is corrupt")]
    Corrupt {
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A store could not be opened.
    #[error("cannot open the {what}")]
    Store {
        /// Which store.
        what: &'static str,
        /// Why.
        #[source]
        source: StoreError,
    },
    /// Keys could not be made.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A sealed file does not open under the master key given.
    #[error("cannot open {path} with this master key")]
    Sealed {
        /// Where.
        path: PathBuf,
        /// Why (a wrong master key names both key ids).
        #[source]
        source: session_core::sealing::SealError,
    },
    /// A store URL this build does not know.
    #[error("unsupported {what} URL scheme in {url:?}")]
    Unsupported {
        /// Which setting.
        what: &'static str,
        /// The URL without credentials.
        url: String,
    },
    /// A store this build left out (a cargo feature of session-server).
    #[error("this build has no {what}: build session-server with its `{feature}` feature")]
    NotBuilt {
        /// Which store.
        what: &'static str,
        /// The feature that brings it.
        feature: &'static str,
    },
    /// A listener could not be bound or served.
    #[error("listener {addr}")]
    Listen {
        /// Address.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The GeoIP database named by `geoip_db` does not open.
    #[error(transparent)]
    GeoIp(#[from] crate::geoip::GeoIpError),
}
