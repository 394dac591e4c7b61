//! `REDIS_URL` (default `redis://127.0.0.1:6379`), `LISTEN` (default
//! `127.0.0.1:3000`), `APP_MASTER_KEY` (64 hex digits), `APP_USER` /
//! `APP_PASSWORD` (a user created at start).

use anyhow::Context as _;
use session_core::sealing::MasterKey;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let redis = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let hex = std::env::var("APP_MASTER_KEY").context("APP_MASTER_KEY (64 hex digits)")?;
    // Parsed as session-server parses its own; the token secret is derived
    // from it for one purpose.
    let master = MasterKey::from_hex(&hex).context("APP_MASTER_KEY is 64 hex digits")?;
    let secret = master.derive("example-embedded-login/token-secrets");
    let (service, store) = example_embedded_login::service(&redis, "example:", &secret).await?;
    if let (Ok(user), Ok(password)) = (std::env::var("APP_USER"), std::env::var("APP_PASSWORD")) {
        service.create_user(&user, &password).await.ok();
    }
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    axum::serve(listener, example_embedded_login::app(service, store)).await?;
    Ok(())
}
