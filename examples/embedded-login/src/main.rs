//! `REDIS_URL` (default `redis://127.0.0.1:6379`), `LISTEN` (default
//! `127.0.0.1:3000`), `APP_MASTER_KEY` (64 hex digits), `APP_USER` /
//! `APP_PASSWORD` (a user created at start).

use anyhow::Context as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let redis = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let hex = std::env::var("APP_MASTER_KEY").context("APP_MASTER_KEY (64 hex digits)")?;
    let mut master = [0u8; 32];
    anyhow::ensure!(hex.len() == 64, "APP_MASTER_KEY is 64 hex digits");
    for (i, b) in master.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).context("APP_MASTER_KEY is hex")?;
    }
    let (service, store) = example_embedded_login::service(&redis, "example:", &master).await?;
    if let (Ok(user), Ok(password)) = (std::env::var("APP_USER"), std::env::var("APP_PASSWORD")) {
        service.create_user(&user, &password).await.ok();
    }
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    axum::serve(listener, example_embedded_login::app(service, store)).await?;
    Ok(())
}
