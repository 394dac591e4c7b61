//! `SESSION_ADMIN_URL` (default `http://127.0.0.1:8081`),
//! `SESSION_ADMIN_TOKEN`; opens a session for the user named on the
//! command line, checks it, and ends it.

use anyhow::Context as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let admin = example_admin_backend::Admin {
        url: std::env::var("SESSION_ADMIN_URL").unwrap_or_else(|_| "http://127.0.0.1:8081".into()),
        token: std::env::var("SESSION_ADMIN_TOKEN").context("SESSION_ADMIN_TOKEN")?,
        http: reqwest::Client::new(),
    };
    let user = std::env::args()
        .nth(1)
        .context("usage: admin-backend USER_ID")?;
    let opened = admin.open(&user, "example-admin-backend").await?;
    println!(
        "opened {} (active: {})",
        opened.session_id,
        admin.is_active(&opened.access_token).await?
    );
    admin.end(&opened.session_id).await?;
    println!(
        "ended {} (active: {})",
        opened.session_id,
        admin.is_active(&opened.access_token).await?
    );
    Ok(())
}
