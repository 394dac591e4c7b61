//! How the listeners answer: the helpers every router uses to send a body
//! (`issued_response`, `no_store`, `log_session`). The bodies themselves
//! are `session_core::wire`'s, the one definition the server and
//! `session-admin` share. Routers import from here; nothing here imports a
//! router.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use session_axum::IssuedCookies;
use session_core::SessionId;
use session_core::service::Issued;
use session_core::wire::TokenResponse;

use crate::state::AppState;

/// Makes a response never cacheable: every answer that carries or names
/// a token, or says who the caller is.
pub(crate) fn no_store(res: &mut Response) {
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res.headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

/// The answer that carries newly issued tokens: JSON, plus cookies in
/// cookie transport, and never cacheable.
pub(crate) fn issued_response(
    state: &AppState,
    issued: &Issued,
    bearer: bool,
    status: StatusCode,
) -> Response {
    let now = state.service.now();
    let expires_in = (issued.access_expires_at - now).whole_seconds().max(0);
    let body = TokenResponse {
        session_id: issued.session.id.to_string(),
        user_id: issued.session.user_id.clone(),
        csrf_token: issued.csrf_token.expose().to_owned(),
        access_expires_at: issued.access_expires_at.into(),
        expires_at: issued.session.expires_at().into(),
        access_token: bearer.then(|| issued.access_token.expose().to_owned()),
        refresh_token: bearer.then(|| issued.refresh_token.expose().to_owned()),
        token_type: bearer.then(|| {
            if issued.session.dpop_jkt.is_some() {
                "DPoP"
            } else {
                "Bearer"
            }
            .to_owned()
        }),
        expires_in: bearer.then_some(expires_in),
    };
    let mut res = (status, Json(body)).into_response();
    if !bearer {
        let session_left = (issued.session.expires_at() - now).whole_seconds().max(0);
        let tokens = IssuedCookies {
            access: issued.access_token.expose(),
            refresh: issued.refresh_token.expose(),
            csrf: issued.csrf_token.expose(),
        };
        state
            .cookies
            .set_tokens(&mut res, tokens, expires_in, session_left);
    }
    no_store(&mut res);
    log_session(&mut res, &issued.session.id);
    res
}

/// Names the session in the request's log line (a session id is not a
/// secret; tokens never are logged).
pub(crate) fn log_session(res: &mut Response, id: &SessionId) {
    res.extensions_mut()
        .insert(crate::telemetry::LoggedSession(id.to_string()));
}
