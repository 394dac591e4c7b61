//! A backend that checks users itself (SSO, a legacy database…) and lets
//! session-server hold their sessions, through the admin API: open one
//! (`POST /admin/v1/sessions`), check a token (`POST
//! /admin/v1/introspect`), end it (`DELETE /admin/v1/sessions/{id}`).

use anyhow::{Context as _, bail};
use serde::Deserialize;
use serde_json::json;

/// The admin listener and its bearer token.
#[derive(Debug, Clone)]
pub struct Admin {
    /// e.g. `http://127.0.0.1:8081`.
    pub url: String,
    /// The admin token (`<data dir>/admin-token`, or `SESSION_ADMIN_TOKEN`).
    pub token: String,
    /// The client.
    pub http: reqwest::Client,
}

/// What the server issued for a new session.
#[derive(Debug, Deserialize)]
pub struct Opened {
    /// The session id.
    pub session_id: String,
    /// Its access token, for the user's client.
    pub access_token: String,
    /// Its refresh token, for the user's client.
    pub refresh_token: String,
}

impl Admin {
    /// Opens a session for `user_id`, whom this backend has authenticated.
    pub async fn open(&self, user_id: &str, user_agent: &str) -> anyhow::Result<Opened> {
        let r = self
            .http
            .post(format!("{}/admin/v1/sessions", self.url))
            .bearer_auth(&self.token)
            .json(&json!({ "user_id": user_id, "user_agent": user_agent }))
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("opening a session: {}", r.status());
        }
        r.json()
            .await
            .context("the answer of POST /admin/v1/sessions")
    }

    /// Whether `access_token` is active (RFC 7662 introspection).
    pub async fn is_active(&self, access_token: &str) -> anyhow::Result<bool> {
        let r: serde_json::Value = self
            .http
            .post(format!("{}/admin/v1/introspect", self.url))
            .bearer_auth(&self.token)
            .json(&json!({ "token": access_token }))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(r["active"] == true)
    }

    /// Ends a session.
    pub async fn end(&self, session_id: &str) -> anyhow::Result<()> {
        self.http
            .delete(format!("{}/admin/v1/sessions/{session_id}", self.url))
            .bearer_auth(&self.token)
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }
}
