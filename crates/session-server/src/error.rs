//! The contract's error shape: `{"error": "<code>", "message": "<text>"}`.
//! Internal causes are logged with their chain, never returned.

use std::time::Duration as StdDuration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use session_axum::Rejection;
use session_core::StoreError;
use session_core::service::ServiceError;
use session_core::wire::ErrorBody;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<StdDuration>,
    www_authenticate: bool,
    /// (DPoP) The error of a `WWW-Authenticate: DPoP` challenge.
    dpop_challenge: Option<&'static str>,
    /// (DPoP) A fresh server nonce for `DPoP-Nonce`.
    dpop_nonce: Option<String>,
}

impl ApiError {
    /// An error with a status, a fixed code and a message for humans.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
            www_authenticate: false,
            dpop_challenge: None,
            dpop_nonce: None,
        }
    }

    /// 401 `invalid_dpop_proof` with `WWW-Authenticate: DPoP
    /// error="invalid_dpop_proof", algs="ES256 EdDSA"`: a DPoP proof is
    /// missing, malformed, replayed or does not match.
    pub fn invalid_dpop_proof(message: impl Into<String>) -> Self {
        Self {
            dpop_challenge: Some("invalid_dpop_proof"),
            ..Self::new(StatusCode::UNAUTHORIZED, "invalid_dpop_proof", message)
        }
    }

    /// `use_dpop_nonce` with the nonce to use in `DPoP-Nonce` (RFC 9449
    /// §8, §9): 400 at login and refresh, 401 with a `DPoP` challenge
    /// elsewhere.
    pub fn use_dpop_nonce(nonce: String, token_endpoint: bool) -> Self {
        let status = if token_endpoint {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::UNAUTHORIZED
        };
        Self {
            dpop_challenge: (!token_endpoint).then_some("use_dpop_nonce"),
            dpop_nonce: Some(nonce),
            ..Self::new(
                status,
                "use_dpop_nonce",
                "this server requires a DPoP nonce: retry with the one in DPoP-Nonce",
            )
        }
    }

    /// 400 `invalid_request`.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// 401 with `WWW-Authenticate: Bearer error="invalid_token"`.
    pub fn invalid_token() -> Self {
        Self {
            www_authenticate: true,
            ..Self::new(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "the access token is missing, invalid, expired or revoked",
            )
        }
    }

    /// 403 `csrf_failed`.
    pub fn csrf_failed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "csrf_failed", message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 422 `invalid_field`.
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", message)
    }

    /// 429 `rate_limited` with `Retry-After`.
    pub fn rate_limited(wait: StdDuration) -> Self {
        Self {
            retry_after: Some(wait),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests; retry later",
            )
        }
    }

    /// 503 `overloaded` with `Retry-After`: refused at once because the
    /// server is at its bound of concurrent work (password hashing).
    pub fn overloaded() -> Self {
        Self {
            retry_after: Some(StdDuration::from_secs(1)),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "too many requests in progress; retry shortly",
            )
        }
    }

    /// 503 `store_unavailable`.
    pub fn store_unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the session store cannot be reached; try again shortly",
        )
    }

    /// 409 `conflict`: a session opened (by a trusted backend) while a
    /// revoke-all or password change of its user was landing.
    pub fn superseded() -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "conflict",
            "the user's sessions were revoked while this one was being opened",
        )
    }

    /// 500 `internal_error` (the cause is logged, not returned).
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "internal error",
        )
    }

    /// How long a rate-limited client should wait.
    pub fn retry_after(&self) -> Option<StdDuration> {
        self.retry_after
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The code.
    pub fn code(&self) -> &'static str {
        self.code
    }
}

fn log_chain(what: &str, e: &(dyn std::error::Error + 'static)) {
    let mut chain = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        chain.push_str(": ");
        chain.push_str(&s.to_string());
        source = s.source();
    }
    tracing::error!(error = %chain, "{what}");
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        log_chain("store error", &e);
        metrics::counter!("session_store_errors_total", "kind" => store_error_kind(&e))
            .increment(1);
        match e {
            StoreError::Unavailable(_) | StoreError::Contention => Self::store_unavailable(),
            StoreError::Conflict => Self::new(StatusCode::CONFLICT, "conflict", "already exists"),
            StoreError::Superseded => Self::superseded(),
            // Corrupt, Backend, and any kind added later: refused, not
            // waved through.
            _ => Self::store_unavailable(),
        }
    }
}

fn store_error_kind(e: &StoreError) -> &'static str {
    match e {
        StoreError::Unavailable(_) => "unavailable",
        StoreError::Conflict => "conflict",
        StoreError::Contention => "contention",
        StoreError::Superseded => "superseded",
        StoreError::Corrupt(_) => "corrupt",
        _ => "backend",
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::InvalidCredentials => Self::new(
                StatusCode::UNAUTHORIZED,
                "invalid_credentials",
                "unknown user or wrong password",
            ),
            ServiceError::InvalidRefreshToken => Self::new(
                StatusCode::UNAUTHORIZED,
                "invalid_refresh_token",
                "the refresh token is missing, invalid or expired",
            ),
            ServiceError::RefreshTokenReused => Self::new(
                StatusCode::UNAUTHORIZED,
                "refresh_token_reused",
                "this refresh token was already used; the session has been revoked",
            ),
            ServiceError::SessionRevoked => Self::new(
                StatusCode::UNAUTHORIZED,
                "session_revoked",
                "the session has been revoked",
            ),
            ServiceError::DpopKeyMismatch => Self::invalid_dpop_proof(
                "this session is bound to a DPoP key: a proof by that key is required",
            ),
            ServiceError::Conflict => Self::new(StatusCode::CONFLICT, "conflict", "already exists"),
            ServiceError::Superseded => Self::superseded(),
            ServiceError::Store(e) => e.into(),
            ServiceError::Key(e) => {
                log_chain("signing failed", &e);
                Self::internal()
            }
            ServiceError::Password(e) => {
                log_chain("password hashing failed", &e);
                Self::internal()
            }
            ServiceError::Internal(e) => {
                log_chain("a task of the session service failed", &e);
                Self::internal()
            }
            e => {
                log_chain("service error", &e);
                Self::internal()
            }
        }
    }
}

/// session-axum's refusals, answered exactly as the server's own errors.
impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        match r {
            Rejection::InvalidToken => Self::invalid_token(),
            Rejection::CsrfFailed(why) => Self::csrf_failed(why),
            Rejection::InvalidDpopProof(why) => Self::invalid_dpop_proof(why),
            Rejection::UseDpopNonce {
                nonce,
                token_endpoint,
            } => Self::use_dpop_nonce(nonce, token_endpoint),
            Rejection::StoreUnavailable(e) => e.into(),
            // MissingLayer (a wiring mistake), and any kind added later.
            e => {
                log_chain("request check failed", &e);
                Self::internal()
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = (
            self.status,
            Json(ErrorBody {
                error: self.code.to_owned(),
                message: self.message.clone(),
            }),
        )
            .into_response();
        let headers = res.headers_mut();
        if let Some(wait) = self.retry_after {
            let secs = wait.as_secs().max(1);
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                headers.insert(header::RETRY_AFTER, v);
            }
        }
        if self.www_authenticate {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
        }
        if let Some(code) = self.dpop_challenge
            && let Some(v) = session_axum::dpop::challenge(code)
        {
            headers.insert(header::WWW_AUTHENTICATE, v);
        }
        if let Some(nonce) = &self.dpop_nonce
            && let Ok(v) = HeaderValue::from_str(nonce)
        {
            headers.insert("dpop-nonce", v);
        }
        res
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // reason: tests

    use super::*;

    #[tokio::test]
    async fn a_failed_service_task_is_a_500_with_the_contracts_error_body() {
        let task = tokio::spawn(std::future::pending::<()>());
        task.abort();
        let e = ServiceError::from(task.await.unwrap_err());
        let res = ApiError::from(e).into_response();
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(res.into_body(), 1024).await.unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
            serde_json::json!({ "error": "internal_error", "message": "internal error" })
        );
    }
}
