//! The GeoIP database (`SESSION_GEOIP_DB`): where a client address is, for
//! the country-change and impossible-travel rules and the device lists.
//!
//! The file is a MaxMind DB (GeoLite2 / GeoIP2 / DB-IP, City or Country
//! format) read with the `maxminddb` crate. It is read into memory rather
//! than memory-mapped: the workspace forbids `unsafe` code, and a mapped
//! file that an operator truncates or rewrites in place takes the process
//! down with `SIGBUS`. Operators update it without a restart: a watcher
//! notices a changed file (size, modification time, inode) within a second
//! and swaps the new database in; a file that does not parse leaves the
//! old one in use and says so in the log.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use maxminddb::{Reader, geoip2};
use session_core::geo::{Coordinates, Location};

/// A record of the flat layout some free builds use.
#[derive(Debug, serde::Deserialize)]
struct Flat<'a> {
    #[serde(borrow, default)]
    country_code: Option<&'a str>,
    #[serde(borrow, default)]
    city: Option<&'a str>,
    #[serde(default)]
    latitude: Option<Degrees>,
    #[serde(default)]
    longitude: Option<Degrees>,
}

/// A coordinate stored as a double (MaxMind) or a float (some builds).
#[derive(Debug, Clone, Copy, serde::Deserialize)]
#[serde(untagged)]
enum Degrees {
    Double(f64),
    Float(f32),
}

impl Degrees {
    fn get(self) -> f64 {
        match self {
            Self::Double(d) => d,
            Self::Float(f) => f64::from(f),
        }
    }
}

/// A place from a record's parts; empty strings count as unknown.
fn place(
    country: Option<&str>,
    city: Option<&str>,
    latitude: Option<f64>,
    longitude: Option<f64>,
    accuracy_km: Option<u16>,
) -> Location {
    let text = |s: Option<&str>| s.filter(|s| !s.is_empty()).map(str::to_owned);
    Location {
        country: text(country),
        city: text(city),
        coordinates: match (latitude, longitude) {
            (Some(latitude), Some(longitude)) => Some(Coordinates {
                latitude,
                longitude,
                accuracy_km: accuracy_km.map(u32::from),
            }),
            _ => None,
        },
        seen_at: None,
    }
}

/// Why the database cannot be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the GeoIP database {path}")]
pub struct GeoIpError {
    path: PathBuf,
    #[source]
    source: maxminddb::MaxMindDbError,
}

/// What identifies one version of the file on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

impl Stamp {
    fn of(path: &Path) -> Option<Self> {
        let meta = std::fs::metadata(path).ok()?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&meta);
        #[cfg(not(unix))]
        let inode = 0;
        Some(Self {
            len: meta.len(),
            modified: meta.modified().ok(),
            inode,
        })
    }
}

/// A GeoIP database, swapped for a newer file while the server runs.
pub struct GeoIp {
    path: PathBuf,
    current: RwLock<Arc<Reader<Vec<u8>>>>,
    /// The file version last read, good or not.
    tried: Mutex<Option<Stamp>>,
}

impl std::fmt::Debug for GeoIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeoIp")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn load(path: &Path) -> Result<Reader<Vec<u8>>, GeoIpError> {
    Reader::open_readfile(path).map_err(|source| GeoIpError {
        path: path.to_owned(),
        source,
    })
}

impl GeoIp {
    /// Opens the database at `path`; an unreadable or malformed file is an
    /// error (the server stops at start with one line).
    pub fn open(path: &Path) -> Result<Self, GeoIpError> {
        let stamp = Stamp::of(path);
        let reader = load(path)?;
        tracing::info!(
            path = %path.display(),
            kind = reader.metadata().database_type,
            "GeoIP database opened"
        );
        Ok(Self {
            path: path.to_owned(),
            tried: Mutex::new(stamp),
            current: RwLock::new(Arc::new(reader)),
        })
    }

    fn reader(&self) -> Arc<Reader<Vec<u8>>> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Where `ip` is, or `None` where the database does not know it.
    pub fn lookup(&self, ip: IpAddr) -> Option<Location> {
        let reader = self.reader();
        let found = reader.lookup(ip).ok()?;
        if !found.has_data() {
            return None;
        }
        // The MaxMind layout (GeoLite2 / GeoIP2 / DB-IP); a Country
        // database decodes as a City record without city and coordinates.
        let city: Option<geoip2::City<'_>> = found.decode().ok().flatten();
        let location = match city {
            Some(city) if !city.country.is_empty() || !city.location.is_empty() => place(
                city.country.iso_code,
                city.city.names.english,
                city.location.latitude,
                city.location.longitude,
                city.location.accuracy_radius,
            ),
            // The flat layout of the ip-location-db builds of the same
            // data (`country_code`, `city`, `latitude`, `longitude`).
            _ => {
                let flat: Flat<'_> = found.decode().ok().flatten()?;
                place(
                    flat.country_code,
                    flat.city,
                    flat.latitude.map(Degrees::get),
                    flat.longitude.map(Degrees::get),
                    None,
                )
            }
        };
        (!location.is_unknown()).then_some(location)
    }

    /// [`GeoIp::lookup`] of an address as the server records it.
    pub fn lookup_str(&self, ip: &str) -> Option<Location> {
        self.lookup(ip.parse().ok()?)
    }

    /// Re-reads the file if it changed since it was last read. `true` when
    /// a new database is in use.
    pub fn reload_if_changed(&self) -> bool {
        let stamp = Stamp::of(&self.path);
        {
            let mut tried = self
                .tried
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if stamp.is_none() || stamp == *tried {
                return false;
            }
            *tried = stamp;
        }
        match load(&self.path) {
            Ok(reader) => {
                tracing::info!(path = %self.path.display(), "GeoIP database changed on disk; now in use");
                *self
                    .current
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(reader);
                true
            }
            Err(e) => {
                // Most often a copy still being written: it is tried again
                // when it changes; until then the last good file answers.
                tracing::warn!(error = %e, cause = %e.source, "the changed GeoIP database does not open; keeping the previous one");
                false
            }
        }
    }

    /// Checks the file every `every` for as long as the task runs.
    pub async fn watch(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let me = self.clone();
            let _ = tokio::task::spawn_blocking(move || me.reload_if_changed()).await;
        }
    }
}
