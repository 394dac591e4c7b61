//! [`UserStore`] over the `users` table.

use async_trait::async_trait;
use session_core::user::User;
use session_core::{StoreError, UserStore};

use crate::SqliteStore;
use crate::codec::{instant, user_from_row};
use crate::error::classify;

#[async_trait]
impl UserStore for SqliteStore {
    async fn create_user(&self, user: &User) -> Result<(), StoreError> {
        let done = sqlx::query(
            "INSERT INTO users (username, password_hash, created_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (username) DO NOTHING",
        )
        .bind(&user.username)
        .bind(&user.password_hash)
        .bind(instant(user.created_at)?)
        .execute(&self.pool)
        .await
        .map_err(classify)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Conflict);
        }
        Ok(())
    }

    async fn get_user(&self, username: &str) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(
            "SELECT username, password_hash, created_at FROM users WHERE username = ?1",
        )
        .bind(username)
        .fetch_optional(&self.pool)
        .await
        .map_err(classify)?;
        row.as_ref().map(user_from_row).transpose()
    }

    /// One `BEGIN IMMEDIATE` transaction: the new hash and the user's moved
    /// session epoch (so no login that read the old hash can create its
    /// session afterwards).
    async fn set_password(&self, username: &str, password_hash: &str) -> Result<bool, StoreError> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(classify)?;
        let done = sqlx::query("UPDATE users SET password_hash = ?2 WHERE username = ?1")
            .bind(username)
            .bind(password_hash)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query(crate::sessions::BUMP_EPOCH)
            .bind(username)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        tx.commit().await.map_err(classify)?;
        Ok(true)
    }

    async fn delete_user(&self, username: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM users WHERE username = ?1")
            .bind(username)
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        Ok(done.rows_affected() > 0)
    }
}
