//! Configuration: every setting has one name in four places, later wins:
//! built-in default → TOML file (`--config FILE`; key = the name in lower
//! case without `SESSION_`; unknown keys refused) → environment
//! `SESSION_NAME` → flag `--name-in-kebab-case`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ipnet::IpNet;
pub use session_axum::{PublicUrl, ValidationMode};
use session_core::AnomalyAction;
use session_core::keys::SigningAlgorithm;
use time::Duration;

/// One row of the settings table: the name (lower case, without
/// `SESSION_`), its default (`None`: unset) and what it means.
#[derive(Debug, Clone, Copy)]
pub struct SettingSpec {
    /// Name in the TOML file; `SESSION_<NAME>` in the environment;
    /// `--<name-with-dashes>` as a flag.
    pub name: &'static str,
    /// Built-in default, as text.
    pub default: Option<&'static str>,
    /// For `print-default-config` and `--help`.
    pub help: &'static str,
    /// Whether the value is a secret (never printed, never logged).
    pub secret: bool,
}

const fn s(name: &'static str, default: Option<&'static str>, help: &'static str) -> SettingSpec {
    SettingSpec {
        name,
        default,
        help,
        secret: false,
    }
}

/// The contract's Configuration table.
pub const SETTINGS: &[SettingSpec] = &[
    s(
        "public_addr",
        Some("127.0.0.1:8080"),
        "public listener (browsers, apps, proxies)",
    ),
    s(
        "admin_addr",
        Some("127.0.0.1:8081"),
        "admin listener (trusted backends, operators)",
    ),
    s(
        "data_dir",
        Some("./data"),
        "embedded store, generated admin token and keys",
    ),
    SettingSpec {
        name: "admin_token",
        default: None,
        help: "admin bearer token; generated into <data dir>/admin-token when unset",
        secret: true,
    },
    s(
        "store",
        None,
        "sqlite://PATH (default <data dir>/sessions.db), redis://HOST:PORT/DB, redis+cluster://HOST:PORT,HOST:PORT",
    ),
    s(
        "redis_prefix",
        Some("session"),
        "prefix of every Redis key and of the revocation channel; deployments sharing one Redis need different prefixes",
    ),
    s(
        "redis_allow_eviction",
        Some("false"),
        "true: start on a Redis whose maxmemory-policy is not noeviction (or cannot be read); an evicted user index or epoch lets a revoke-all miss sessions",
    ),
    s(
        "audit",
        None,
        "sqlite://PATH (default <data dir>/audit.db) or postgres://… for the PostgreSQL audit log",
    ),
    s("validation", Some("cached"), "stateless, strict or cached"),
    s("issuer", Some("session-server"), "iss of access tokens"),
    s("audience", Some("session-server"), "aud of access tokens"),
    s(
        "client_id",
        Some("session-server"),
        "client_id claim of access tokens (RFC 9068)",
    ),
    s("jwt_alg", Some("EdDSA"), "EdDSA, ES256 or HS256"),
    SettingSpec {
        name: "master_key",
        default: None,
        help: "64 hex digits; seals every private key and secret; generated into <data dir>/master-key (embedded store only) when neither it nor master_key_file is set",
        secret: true,
    },
    s(
        "master_key_file",
        None,
        "a file holding the master key (64 hex digits)",
    ),
    s(
        "key_rotation",
        Some("30d"),
        "signing keys rotate by themselves this often; 0: only by hand",
    ),
    s(
        "key_prepublish",
        Some("15m"),
        "a new signing key is in the JWKS this long before it signs (the JWKS max-age is at most half of it)",
    ),
    SettingSpec {
        name: "jwt_hs256_secret",
        default: None,
        help: "hex, at least 64 digits; required for HS256",
        secret: true,
    },
    s("access_token_ttl", Some("15m"), "access token lifetime"),
    s(
        "refresh_grace",
        Some("10s"),
        "grace window for a duplicate refresh; 0 turns it off",
    ),
    s(
        "idle_timeout",
        Some("14d"),
        "a session not refreshed for this long is dead",
    ),
    s(
        "absolute_lifetime",
        Some("90d"),
        "a session dies this long after login",
    ),
    s(
        "max_sessions_per_user",
        Some("0"),
        "active sessions per user; 0 is unlimited",
    ),
    s(
        "anomaly_user_agent",
        Some("revoke"),
        "ignore, log or revoke",
    ),
    s("anomaly_ip", Some("log"), "ignore, log or revoke"),
    s(
        "anomaly_rapid_refresh",
        Some("revoke"),
        "ignore, log or revoke",
    ),
    s(
        "rapid_refresh_limit",
        Some("10"),
        "refreshes of one session allowed within the window",
    ),
    s(
        "rapid_refresh_window",
        Some("60s"),
        "window of the rapid-refresh rule",
    ),
    s(
        "geoip_db",
        None,
        "a MaxMind DB file (GeoLite2 / GeoIP2 / DB-IP, City or Country format) for the location rules and device lists; re-read when it changes",
    ),
    s(
        "anomaly_country",
        Some("log"),
        "ignore, log or revoke: a refresh from another country than the session's last use (needs geoip_db)",
    ),
    s(
        "anomaly_travel",
        Some("log"),
        "ignore, log or revoke: impossible travel since the session's last use (needs geoip_db)",
    ),
    s(
        "travel_speed_kmh",
        Some("1000"),
        "faster than this (km/h) between two uses of a session is impossible travel",
    ),
    s(
        "allowed_origins",
        Some(""),
        "origins allowed on cookie-transport requests and given CORS (comma-separated); the service's own origin is always allowed",
    ),
    s(
        "public_url",
        None,
        "the public listener's URL as browsers see it (e.g. https://example.com/auth): the own origin, the refresh cookie's path prefix and the DPoP htu",
    ),
    s(
        "ui",
        Some("on"),
        "the built-in account page at /ui/: on or off",
    ),
    s(
        "trusted_proxies",
        Some(""),
        "CIDRs whose X-Forwarded-For is believed (comma-separated)",
    ),
    s(
        "rate_limit_login",
        Some("300"),
        "login requests per minute per client (IPv6: per /64; bursts of at most 20); a username is locked for a client after 10 failures from it within 60 s; 0 turns both off",
    ),
    s(
        "rate_limit_refresh",
        Some("600"),
        "refresh requests per minute per client IP; 0 turns it off",
    ),
    s(
        "rate_limit_create",
        Some("6000"),
        "admin session creations per minute per client IP; 0 turns it off",
    ),
    s("body_limit", Some("65536"), "request body limit in bytes"),
    s(
        "header_read_timeout",
        Some("10s"),
        "a connection that has started a request must send its whole head within this, or is closed",
    ),
    s(
        "request_timeout",
        Some("30s"),
        "a request (reading its body included) not answered within this gets 503 request_timeout",
    ),
    s(
        "keepalive_timeout",
        Some("60s"),
        "an idle kept-alive connection is closed after this",
    ),
    s(
        "max_connections",
        Some("4096"),
        "open connections per listener; further clients wait to be accepted",
    ),
    s(
        "otlp_endpoint",
        None,
        "OpenTelemetry OTLP/HTTP endpoint; off when unset",
    ),
    s("log_format", Some("text"), "text or json"),
    s(
        "dpop_nonce",
        Some("off"),
        "on: DPoP proofs must carry a server nonce (RFC 9449 section 8; DPoP-Nonce header)",
    ),
];

/// A secret string: `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret text.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable.
    Text,
    /// One JSON object per line.
    Json,
}

/// The typed settings.
#[derive(Debug, Clone)]
#[allow(missing_docs)] // reason: each field is documented in SETTINGS
pub struct Settings {
    pub public_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub data_dir: PathBuf,
    pub admin_token: Option<Secret>,
    pub store: String,
    pub redis_prefix: String,
    pub redis_allow_eviction: bool,
    pub audit: Option<String>,
    pub validation: ValidationMode,
    pub issuer: String,
    pub audience: String,
    pub client_id: String,
    pub jwt_alg: SigningAlgorithm,
    pub jwt_hs256_secret: Option<Secret>,
    pub master_key: Option<Secret>,
    pub master_key_file: Option<PathBuf>,
    pub key_rotation: Duration,
    pub key_prepublish: Duration,
    pub access_token_ttl: Duration,
    pub refresh_grace: Duration,
    pub idle_timeout: Duration,
    pub absolute_lifetime: Duration,
    pub max_sessions_per_user: u32,
    pub anomaly_user_agent: AnomalyAction,
    pub anomaly_ip: AnomalyAction,
    pub anomaly_rapid_refresh: AnomalyAction,
    pub rapid_refresh_limit: u32,
    pub rapid_refresh_window: Duration,
    pub geoip_db: Option<PathBuf>,
    pub anomaly_country: AnomalyAction,
    pub anomaly_travel: AnomalyAction,
    pub travel_speed_kmh: u32,
    pub allowed_origins: Vec<String>,
    pub public_url: Option<PublicUrl>,
    pub ui: bool,
    pub trusted_proxies: Vec<IpNet>,
    pub rate_limit_login: u32,
    pub rate_limit_refresh: u32,
    pub rate_limit_create: u32,
    pub body_limit: usize,
    pub header_read_timeout: Duration,
    pub request_timeout: Duration,
    pub keepalive_timeout: Duration,
    pub max_connections: u32,
    pub otlp_endpoint: Option<String>,
    pub log_format: LogFormat,
    pub dpop_nonce: bool,
}

/// A setting that could not be read. Never carries a secret's value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The TOML file could not be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TOML file is not valid TOML.
    #[error("config file {path} is not valid TOML")]
    Toml {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: toml::de::Error,
    },
    /// A key that is not a setting.
    #[error("unknown setting {0:?} in config file")]
    UnknownKey(String),
    /// A value of the wrong shape.
    #[error("setting {name}: {message}")]
    Invalid {
        /// The setting.
        name: &'static str,
        /// What is wrong (never the value of a secret).
        message: String,
    },
}

/// Raw text values, one layer merged over the other.
#[derive(Debug, Clone, Default)]
pub struct RawSettings(BTreeMap<&'static str, String>);

fn spec(name: &str) -> Option<&'static SettingSpec> {
    SETTINGS.iter().find(|s| s.name == name)
}

impl RawSettings {
    /// The built-in defaults.
    pub fn defaults() -> Self {
        let mut map = BTreeMap::new();
        for s in SETTINGS {
            if let Some(d) = s.default {
                map.insert(s.name, d.to_owned());
            }
        }
        Self(map)
    }

    /// The value set for `name`, if any (a default counts).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// Sets one value by name.
    pub fn set(&mut self, name: &str, value: impl Into<String>) -> Result<(), ConfigError> {
        let spec = spec(name).ok_or_else(|| ConfigError::UnknownKey(name.to_owned()))?;
        self.0.insert(spec.name, value.into());
        Ok(())
    }

    /// Merges a TOML file's keys over these values.
    pub fn merge_toml_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        self.merge_toml(&text).map_err(|e| match e {
            ConfigError::Toml { source, .. } => ConfigError::Toml {
                path: path.to_owned(),
                source,
            },
            other => other,
        })
    }

    /// Merges TOML text over these values.
    pub fn merge_toml(&mut self, text: &str) -> Result<(), ConfigError> {
        let table: toml::Table = toml::from_str(text).map_err(|source| ConfigError::Toml {
            path: PathBuf::new(),
            source,
        })?;
        for (key, value) in table {
            let spec = spec(&key).ok_or_else(|| ConfigError::UnknownKey(key.clone()))?;
            let text = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Array(items) => items
                    .into_iter()
                    .map(|v| match v {
                        toml::Value::String(s) => Ok(s),
                        _ => Err(ConfigError::Invalid {
                            name: spec.name,
                            message: "list items must be strings".into(),
                        }),
                    })
                    .collect::<Result<Vec<_>, _>>()?
                    .join(","),
                _ => {
                    return Err(ConfigError::Invalid {
                        name: spec.name,
                        message: "expected a string, a whole number or a list of strings".into(),
                    });
                }
            };
            self.0.insert(spec.name, text);
        }
        Ok(())
    }

    /// Merges `SESSION_*` variables from `vars` over these values.
    pub fn merge_env<I: IntoIterator<Item = (String, String)>>(&mut self, vars: I) {
        for (key, value) in vars {
            let Some(rest) = key.strip_prefix("SESSION_") else {
                continue;
            };
            let name = rest.to_ascii_lowercase();
            if let Some(spec) = spec(&name) {
                self.0.insert(spec.name, value);
            }
        }
    }

    /// Parses the merged values.
    pub fn parse(&self) -> Result<Settings, ConfigError> {
        let get = |name: &'static str| {
            self.0
                .get(name)
                .map(String::as_str)
                .filter(|v| !v.is_empty())
        };
        let req = |name: &'static str| {
            get(name).ok_or(ConfigError::Invalid {
                name,
                message: "must be set".into(),
            })
        };
        let data_dir = PathBuf::from(req("data_dir")?);
        let store = get("store").map_or_else(
            || format!("sqlite://{}", data_dir.join("sessions.db").display()),
            str::to_owned,
        );
        Ok(Settings {
            public_addr: parse_with("public_addr", req("public_addr")?)?,
            admin_addr: parse_with("admin_addr", req("admin_addr")?)?,
            admin_token: get("admin_token").map(Secret::new),
            store,
            redis_prefix: req("redis_prefix")?.to_owned(),
            redis_allow_eviction: parse_with("redis_allow_eviction", req("redis_allow_eviction")?)?,
            audit: get("audit").map(str::to_owned),
            validation: parse_with("validation", req("validation")?)?,
            issuer: req("issuer")?.to_owned(),
            audience: req("audience")?.to_owned(),
            client_id: req("client_id")?.to_owned(),
            jwt_alg: parse_with("jwt_alg", req("jwt_alg")?)?,
            jwt_hs256_secret: get("jwt_hs256_secret").map(Secret::new),
            master_key: get("master_key").map(Secret::new),
            master_key_file: get("master_key_file").map(PathBuf::from),
            key_rotation: parse_duration("key_rotation", req("key_rotation")?)?,
            key_prepublish: parse_duration("key_prepublish", req("key_prepublish")?)?,
            access_token_ttl: positive("access_token_ttl", req("access_token_ttl")?)?,
            refresh_grace: parse_duration("refresh_grace", req("refresh_grace")?)?,
            idle_timeout: positive("idle_timeout", req("idle_timeout")?)?,
            absolute_lifetime: positive("absolute_lifetime", req("absolute_lifetime")?)?,
            max_sessions_per_user: parse_with(
                "max_sessions_per_user",
                req("max_sessions_per_user")?,
            )?,
            anomaly_user_agent: parse_with("anomaly_user_agent", req("anomaly_user_agent")?)?,
            anomaly_ip: parse_with("anomaly_ip", req("anomaly_ip")?)?,
            anomaly_rapid_refresh: parse_with(
                "anomaly_rapid_refresh",
                req("anomaly_rapid_refresh")?,
            )?,
            rapid_refresh_limit: parse_with("rapid_refresh_limit", req("rapid_refresh_limit")?)?,
            rapid_refresh_window: positive("rapid_refresh_window", req("rapid_refresh_window")?)?,
            geoip_db: get("geoip_db").filter(|p| !p.is_empty()).map(PathBuf::from),
            anomaly_country: parse_with("anomaly_country", req("anomaly_country")?)?,
            anomaly_travel: parse_with("anomaly_travel", req("anomaly_travel")?)?,
            travel_speed_kmh: parse_with("travel_speed_kmh", req("travel_speed_kmh")?)?,
            allowed_origins: list(get("allowed_origins")),
            public_url: get("public_url")
                .map(|v| {
                    PublicUrl::parse(v).map_err(|e| ConfigError::Invalid {
                        name: "public_url",
                        message: e.to_string(),
                    })
                })
                .transpose()?,
            ui: parse_switch("ui", req("ui")?)?,
            trusted_proxies: list(get("trusted_proxies"))
                .iter()
                .map(|c| parse_cidr(c))
                .collect::<Result<_, _>>()?,
            rate_limit_login: parse_with("rate_limit_login", req("rate_limit_login")?)?,
            rate_limit_refresh: parse_with("rate_limit_refresh", req("rate_limit_refresh")?)?,
            rate_limit_create: parse_with("rate_limit_create", req("rate_limit_create")?)?,
            body_limit: parse_with("body_limit", req("body_limit")?)?,
            header_read_timeout: positive("header_read_timeout", req("header_read_timeout")?)?,
            request_timeout: positive("request_timeout", req("request_timeout")?)?,
            keepalive_timeout: positive("keepalive_timeout", req("keepalive_timeout")?)?,
            max_connections: parse_with("max_connections", req("max_connections")?)?,
            otlp_endpoint: get("otlp_endpoint").map(str::to_owned),
            log_format: match req("log_format")? {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => {
                    return Err(ConfigError::Invalid {
                        name: "log_format",
                        message: "expected text or json".into(),
                    });
                }
            },
            dpop_nonce: match req("dpop_nonce")? {
                "on" | "true" => true,
                "off" | "false" => false,
                _ => {
                    return Err(ConfigError::Invalid {
                        name: "dpop_nonce",
                        message: "expected on or off".into(),
                    });
                }
            },
            data_dir,
        })
        .and_then(Settings::validated)
    }
}

impl Settings {
    fn validated(self) -> Result<Self, ConfigError> {
        if self.jwt_alg == SigningAlgorithm::HS256 {
            let Some(secret) = &self.jwt_hs256_secret else {
                return Err(ConfigError::Invalid {
                    name: "jwt_hs256_secret",
                    message: "required when jwt_alg is HS256".into(),
                });
            };
            self.hs256_secret_bytes_of(secret)?;
        }
        if self.key_rotation > Duration::ZERO && self.key_rotation <= self.key_prepublish {
            return Err(ConfigError::Invalid {
                name: "key_rotation",
                message: "must be longer than key_prepublish (or 0: only by hand)".into(),
            });
        }
        if self.max_connections == 0 {
            return Err(ConfigError::Invalid {
                name: "max_connections",
                message: "must be positive".into(),
            });
        }
        if self.body_limit == 0 {
            return Err(ConfigError::Invalid {
                name: "body_limit",
                message: "must be positive".into(),
            });
        }
        Ok(self)
    }

    fn hs256_secret_bytes_of(&self, secret: &Secret) -> Result<Vec<u8>, ConfigError> {
        let hex = secret.expose();
        let invalid = || ConfigError::Invalid {
            name: "jwt_hs256_secret",
            message: "expected at least 64 hex digits (32 bytes)".into(),
        };
        if hex.len() < 64 || !hex.len().is_multiple_of(2) {
            return Err(invalid());
        }
        (0..hex.len())
            .step_by(2)
            .map(|i| {
                u8::from_str_radix(hex.get(i..i + 2).unwrap_or("zz"), 16).map_err(|_| invalid())
            })
            .collect()
    }

    /// The HS256 secret's bytes, when configured.
    pub fn hs256_secret_bytes(&self) -> Result<Option<Vec<u8>>, ConfigError> {
        self.jwt_hs256_secret
            .as_ref()
            .map(|s| self.hs256_secret_bytes_of(s))
            .transpose()
    }

    /// Defaults only, with `data_dir` replaced (for tests and embedding).
    pub fn defaults_in(data_dir: &Path) -> Result<Self, ConfigError> {
        let mut raw = RawSettings::defaults();
        raw.set("data_dir", data_dir.display().to_string())?;
        raw.parse()
    }
}

fn parse_with<T: FromStr>(name: &'static str, v: &str) -> Result<T, ConfigError>
where
    T::Err: fmt::Display,
{
    v.trim().parse::<T>().map_err(|e| ConfigError::Invalid {
        name,
        message: e.to_string(),
    })
}

fn list(v: Option<&str>) -> Vec<String> {
    v.map(|v| {
        v.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    })
    .unwrap_or_default()
}

fn parse_switch(name: &'static str, v: &str) -> Result<bool, ConfigError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "1" | "yes" => Ok(true),
        "off" | "false" | "0" | "no" => Ok(false),
        _ => Err(ConfigError::Invalid {
            name,
            message: "expected on or off".into(),
        }),
    }
}

fn parse_cidr(v: &str) -> Result<IpNet, ConfigError> {
    v.parse::<IpNet>()
        .or_else(|_| v.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| ConfigError::Invalid {
            name: "trusted_proxies",
            message: format!("{v:?} is not a CIDR"),
        })
}

/// Parses a duration: whole seconds (`900`) or a number with a unit
/// (`s`, `m`, `h`, `d`).
pub fn parse_duration(name: &'static str, v: &str) -> Result<Duration, ConfigError> {
    let v = v.trim();
    let invalid = || ConfigError::Invalid {
        name,
        message: format!("{v:?} is not a duration (e.g. 900, 15m, 14d)"),
    };
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (digits, unit) = v.split_at(split);
    let n: i64 = digits.parse().map_err(|_| invalid())?;
    let secs_per = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(invalid()),
    };
    n.checked_mul(secs_per)
        .filter(|s| *s <= 10 * 365 * 86_400)
        .map(Duration::seconds)
        .ok_or_else(invalid)
}

fn positive(name: &'static str, v: &str) -> Result<Duration, ConfigError> {
    let d = parse_duration(name, v)?;
    if d <= Duration::ZERO {
        return Err(ConfigError::Invalid {
            name,
            message: "must be positive".into(),
        });
    }
    Ok(d)
}

/// The commented TOML file `print-default-config` prints.
pub fn default_config_toml() -> String {
    let mut out = String::from(
        "# session-server configuration.\n\
         # Every setting also reads from the environment as SESSION_<NAME> and\n\
         # from a flag --<name-with-dashes>; later wins: default, this file,\n\
         # environment, flag. Durations: whole seconds or 30s, 15m, 2h, 14d.\n\n",
    );
    for s in SETTINGS {
        out.push_str(&format!("# {}\n", s.help));
        match s.default {
            Some(d) if d.parse::<i64>().is_ok() => out.push_str(&format!("{} = {d}\n\n", s.name)),
            Some(d) => out.push_str(&format!("{} = {d:?}\n\n", s.name)),
            None => out.push_str(&format!("# {} = \"\"\n\n", s.name)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_to_the_contract_values() {
        let s = RawSettings::defaults().parse().unwrap();
        assert_eq!(s.public_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(s.admin_addr.to_string(), "127.0.0.1:8081");
        assert_eq!(s.store, "sqlite://./data/sessions.db");
        assert_eq!(s.validation, ValidationMode::Cached);
        assert_eq!(s.access_token_ttl, Duration::minutes(15));
        assert_eq!(s.refresh_grace, Duration::seconds(10));
        assert_eq!(s.idle_timeout, Duration::days(14));
        assert_eq!(s.absolute_lifetime, Duration::days(90));
        assert_eq!(s.anomaly_user_agent, AnomalyAction::Revoke);
        assert_eq!(s.anomaly_ip, AnomalyAction::Log);
        assert_eq!(s.body_limit, 65_536);
        assert_eq!(s.jwt_alg, SigningAlgorithm::EdDSA);
        assert_eq!(s.header_read_timeout, Duration::seconds(10));
        assert_eq!(s.request_timeout, Duration::seconds(30));
        assert_eq!(s.keepalive_timeout, Duration::seconds(60));
        assert_eq!(s.max_connections, 4096);
    }

    #[test]
    fn later_layers_win() {
        let mut raw = RawSettings::defaults();
        raw.merge_toml("access_token_ttl = \"5m\"\nrefresh_grace = 0\nallowed_origins = [\"https://a\", \"https://b\"]\n")
            .unwrap();
        raw.merge_env([
            ("SESSION_ACCESS_TOKEN_TTL".to_owned(), "120".to_owned()),
            ("OTHER".to_owned(), "x".to_owned()),
        ]);
        let s = raw.parse().unwrap();
        assert_eq!(s.access_token_ttl, Duration::seconds(120));
        assert_eq!(s.refresh_grace, Duration::ZERO);
        assert_eq!(s.allowed_origins, vec!["https://a", "https://b"]);
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        let mut raw = RawSettings::defaults();
        assert!(matches!(
            raw.merge_toml("acess_token_ttl = 5"),
            Err(ConfigError::UnknownKey(_))
        ));
    }

    #[test]
    fn durations_take_seconds_or_a_unit() {
        assert_eq!(parse_duration("x", "900").unwrap(), Duration::seconds(900));
        assert_eq!(parse_duration("x", "15m").unwrap(), Duration::minutes(15));
        assert_eq!(parse_duration("x", "14d").unwrap(), Duration::days(14));
        assert_eq!(parse_duration("x", "0").unwrap(), Duration::ZERO);
        for bad in ["", "m", "15 m", "-5", "5w", "99999999999999999999"] {
            assert!(parse_duration("x", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hs256_needs_a_long_hex_secret_and_errors_never_show_it() {
        let mut raw = RawSettings::defaults();
        raw.set("jwt_alg", "HS256").unwrap();
        assert!(raw.parse().is_err());
        raw.set("jwt_hs256_secret", "abcd").unwrap();
        let err = raw.parse().unwrap_err().to_string();
        assert!(!err.contains("abcd"));
        raw.set("jwt_hs256_secret", "ab".repeat(32)).unwrap();
        let s = raw.parse().unwrap();
        assert_eq!(s.hs256_secret_bytes().unwrap().unwrap().len(), 32);
        assert!(!format!("{s:?}").contains(&"ab".repeat(32)));
    }

    #[test]
    fn an_absolute_lifetime_shorter_than_the_access_token_lifetime_is_allowed() {
        let mut raw = RawSettings::defaults();
        raw.set("access_token_ttl", "15m").unwrap();
        raw.set("absolute_lifetime", "5m").unwrap();
        let s = raw.parse().unwrap();
        assert_eq!(s.absolute_lifetime, Duration::minutes(5));
        assert_eq!(s.client_id, "session-server");
    }

    #[test]
    fn public_url_gives_the_own_origin_and_the_path_prefix() {
        let u = PublicUrl::parse("https://Example.com/auth/").unwrap();
        assert_eq!(u.origin, "https://example.com");
        assert_eq!(u.prefix, "/auth");
        let u = PublicUrl::parse("http://localhost:8080").unwrap();
        assert_eq!(u.origin, "http://localhost:8080");
        assert_eq!(u.prefix, "");
        for bad in [
            "example.com/auth",
            "ftp://x",
            "https://x/a?b=1",
            "https://u@x/",
        ] {
            assert!(PublicUrl::parse(bad).is_err(), "{bad:?}");
        }
        let mut raw = RawSettings::defaults();
        assert!(raw.parse().unwrap().public_url.is_none());
        assert!(raw.parse().unwrap().ui);
        raw.set("ui", "off").unwrap();
        assert!(!raw.parse().unwrap().ui);
        raw.set("ui", "maybe").unwrap();
        assert!(raw.parse().is_err());
    }

    #[test]
    fn the_default_config_file_parses_back_to_the_defaults() {
        let mut raw = RawSettings::defaults();
        raw.merge_toml(&default_config_toml()).unwrap();
        assert_eq!(raw.parse().unwrap().store, "sqlite://./data/sessions.db");
    }
}
