//! HTTP to the admin listener: one place that knows URLs, the bearer
//! header and the contract's error shape.

use std::path::Path;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use session_core::wire::ErrorBody;
use zeroize::Zeroizing;

/// Why a request did not give the answer wanted. Never holds a token.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// No HTTP answer at all: refused connection, DNS, TLS, timeout.
    #[error("cannot reach the server at {url}: {reason}")]
    Unreachable {
        /// The base URL tried.
        url: String,
        /// The innermost cause, for the one-line message.
        reason: String,
        /// The client's error.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with a 4xx or 5xx.
    #[error("{code}: {message}")]
    Refused {
        /// HTTP status.
        status: StatusCode,
        /// The contract's `error` code (or one derived from the status).
        code: String,
        /// The contract's `message`.
        message: String,
    },
    /// A 2xx whose body is not what the contract says.
    #[error("unexpected answer from the server: {reason}")]
    Unexpected {
        /// What was wrong.
        reason: String,
    },
}

impl ApiError {
    /// Whether this is the server's "no such thing".
    pub(crate) fn is_not_found(&self) -> bool {
        matches!(self, Self::Refused { status, .. } if *status == StatusCode::NOT_FOUND)
    }
}

/// For requests without a body.
pub(crate) const NO_BODY: Option<&Value> = None;

/// An answer: status, headers and the JSON body (`Null` when empty).
#[derive(Debug)]
pub(crate) struct Answer {
    /// HTTP status.
    pub(crate) status: StatusCode,
    /// Response headers.
    pub(crate) headers: HeaderMap,
    /// Parsed body; `Value::Null` for an empty one.
    pub(crate) body: Value,
}

impl Answer {
    /// The refusal this answer is, when its status is 4xx or 5xx.
    pub(crate) fn refusal(&self) -> Option<ApiError> {
        if !(self.status.is_client_error() || self.status.is_server_error()) {
            return None;
        }
        let (code, message) = match ErrorBody::deserialize(&self.body) {
            Ok(b) => (b.error, b.message),
            Err(_) => (
                code_for(self.status),
                format!("HTTP {} without the contract's error body", self.status),
            ),
        };
        Some(ApiError::Refused {
            status: self.status,
            code,
            message,
        })
    }
}

/// A client of one admin listener.
#[derive(Debug)]
pub(crate) struct AdminClient {
    http: reqwest::Client,
    base: Url,
    auth: Option<HeaderValue>,
}

impl AdminClient {
    /// A client for `base` that sends `token` (when there is one) on every
    /// route but `/healthz`.
    pub(crate) fn new(base: Url, token: Option<&str>, timeout: Duration) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("session-admin/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let auth = match token {
            Some(token) => {
                let value = Zeroizing::new(format!("Bearer {token}"));
                let mut header = HeaderValue::from_str(&value).map_err(|_| {
                    anyhow::anyhow!("the admin token holds characters a header cannot carry")
                })?;
                header.set_sensitive(true);
                Some(header)
            }
            None => None,
        };
        Ok(Self { http, base, auth })
    }

    /// The base URL for messages: without any user name or password in it.
    pub(crate) fn shown_url(&self) -> String {
        let mut url = self.base.clone();
        let _ = url.set_password(None);
        let _ = url.set_username("");
        url.to_string()
    }

    /// `base` joined with `segments`, each percent-encoded as one segment.
    pub(crate) fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// Sends a request and returns the answer whatever its status.
    pub(crate) async fn raw<B: Serialize + ?Sized>(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&B>,
    ) -> Result<Answer, ApiError> {
        let mut url = self.url(segments);
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        let mut request = self.http.request(method, url);
        if segments != ["healthz"]
            && let Some(auth) = &self.auth
        {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| self.unreachable(e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.map_err(|e| self.unreachable(e))?;
        if status.is_client_error() || status.is_server_error() {
            // The server answered: keep its JSON body when there is one (a
            // 503 from /readyz still says what is not ready).
            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            return Ok(Answer {
                status,
                headers,
                body,
            });
        }
        let body = if bytes.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            // `/healthz` may answer plain text; everything else is JSON.
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    /// Sends a request; a 4xx/5xx becomes [`ApiError::Refused`].
    pub(crate) async fn call<B: Serialize + ?Sized>(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&B>,
    ) -> Result<Answer, ApiError> {
        let answer = self.raw(method, segments, query, body).await?;
        match answer.refusal() {
            Some(e) => Err(e),
            None => Ok(answer),
        }
    }

    /// `GET` and the JSON body.
    pub(crate) async fn get(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> Result<Value, ApiError> {
        Ok(self.call(Method::GET, segments, query, NO_BODY).await?.body)
    }

    fn unreachable(&self, e: reqwest::Error) -> ApiError {
        let reason = if e.is_timeout() {
            "timed out".to_owned()
        } else {
            innermost(&e)
        };
        ApiError::Unreachable {
            url: self.shown_url(),
            reason,
            source: e,
        }
    }
}

/// The innermost error message: "Connection refused (os error 111)" rather
/// than the client's "error sending request for url (…)".
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// A snake_case code for a status whose body did not carry one.
fn code_for(status: StatusCode) -> String {
    status
        .canonical_reason()
        .unwrap_or("http_error")
        .to_ascii_lowercase()
        .replace([' ', '-'], "_")
        .replace('\'', "")
}

/// Where the admin token comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TokenSource<'a> {
    /// `--token-file`.
    Flag(&'a Path),
    /// `SESSION_ADMIN_TOKEN`.
    Env,
    /// `<data dir>/admin-token`.
    DataDir(std::path::PathBuf),
}

/// Reads the admin token: `--token-file`, else `env_token`, else
/// `<data_dir>/admin-token`. The error names the file, never the token.
pub(crate) fn load_token(
    token_file: Option<&Path>,
    env_token: Option<Zeroizing<String>>,
    data_dir: &Path,
) -> Result<Zeroizing<String>, String> {
    let source = match (token_file, &env_token) {
        (Some(path), _) => TokenSource::Flag(path),
        (None, Some(_)) => TokenSource::Env,
        (None, None) => TokenSource::DataDir(data_dir.join("admin-token")),
    };
    let token = match &source {
        TokenSource::Env => env_token.unwrap_or_default(),
        TokenSource::Flag(path) => read_token_file(path)?,
        TokenSource::DataDir(path) => read_token_file(path).map_err(|e| {
            format!("{e} (the server writes it at first start; or pass --token-file, or set SESSION_ADMIN_TOKEN)")
        })?,
    };
    let trimmed = Zeroizing::new(token.trim().to_owned());
    if trimmed.is_empty() {
        return Err(match source {
            TokenSource::Env => "SESSION_ADMIN_TOKEN is empty".to_owned(),
            TokenSource::Flag(p) => format!("the token file {} is empty", p.display()),
            TokenSource::DataDir(p) => format!("the token file {} is empty", p.display()),
        });
    }
    Ok(trimmed)
}

fn read_token_file(path: &Path) -> Result<Zeroizing<String>, String> {
    std::fs::read_to_string(path)
        .map(Zeroizing::new)
        .map_err(|e| format!("cannot read the admin token from {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_encoded_one_by_one() {
        let c = AdminClient::new(
            "http://127.0.0.1:8081".parse().unwrap(),
            None,
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(
            c.url(&["admin", "v1", "users", "a/b c", "sessions"])
                .as_str(),
            "http://127.0.0.1:8081/admin/v1/users/a%2Fb%20c/sessions"
        );
        let prefixed = AdminClient::new(
            "https://proxy.example/sessions/".parse().unwrap(),
            None,
            Duration::from_secs(1),
        )
        .unwrap();
        let with_credentials = AdminClient::new(
            "http://ops:hunter2@10.0.0.1:8081".parse().unwrap(),
            None,
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(with_credentials.shown_url(), "http://10.0.0.1:8081/");
        assert_eq!(
            prefixed.url(&["healthz"]).as_str(),
            "https://proxy.example/sessions/healthz"
        );
    }

    #[test]
    fn statuses_without_a_body_get_a_snake_case_code() {
        assert_eq!(code_for(StatusCode::NOT_FOUND), "not_found");
        assert_eq!(
            code_for(StatusCode::UNSUPPORTED_MEDIA_TYPE),
            "unsupported_media_type"
        );
        assert_eq!(code_for(StatusCode::IM_A_TEAPOT), "im_a_teapot");
    }

    #[test]
    fn the_token_file_flag_wins_over_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t");
        std::fs::write(&file, "from-file\n").unwrap();
        let env = Some(Zeroizing::new("from-env".to_owned()));
        assert_eq!(
            *load_token(Some(&file), env.clone(), dir.path()).unwrap(),
            "from-file"
        );
        assert_eq!(*load_token(None, env, dir.path()).unwrap(), "from-env");
    }

    #[test]
    fn the_data_dir_token_is_the_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let err = load_token(None, None, dir.path()).unwrap_err();
        assert!(err.contains("admin-token"), "{err}");
        std::fs::write(dir.path().join("admin-token"), "  secret-token \n").unwrap();
        assert_eq!(*load_token(None, None, dir.path()).unwrap(), "secret-token");
    }

    #[test]
    fn an_empty_token_is_refused_without_showing_anything() {
        let dir = tempfile::tempdir().unwrap();
        let err = load_token(None, Some(Zeroizing::new(" ".into())), dir.path()).unwrap_err();
        assert_eq!(err, "SESSION_ADMIN_TOKEN is empty");
    }
}
