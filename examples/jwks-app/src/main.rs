//! `JWKS_URL` (default `http://127.0.0.1:8080/.well-known/jwks.json`),
//! `LISTEN` (default `127.0.0.1:3001`).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let jwks = std::env::var("JWKS_URL")
        .unwrap_or_else(|_| "http://127.0.0.1:8080/.well-known/jwks.json".into());
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:3001".into());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    axum::serve(listener, example_jwks_app::app(&jwks).await?).await?;
    Ok(())
}
