//! The [`UserStore`] implementation: one hash per built-in user.

use std::collections::HashMap;

use async_trait::async_trait;
use session_core::user::User;
use session_core::{StoreError, UserStore};
use time::OffsetDateTime;

use crate::error::Unexpected;
use crate::{RedisStore, scripts};

#[async_trait]
impl UserStore for RedisStore {
    async fn create_user(&self, user: &User) -> Result<(), StoreError> {
        let added: i64 = self
            .invoke(
                scripts::CREATE_USER
                    .key(self.keys.user(&user.username))
                    .arg(&user.password_hash)
                    .arg(user.created_at.unix_timestamp_nanos().to_string()),
            )
            .await?;
        if added == 1 {
            Ok(())
        } else {
            Err(StoreError::Conflict)
        }
    }

    async fn get_user(&self, username: &str) -> Result<Option<User>, StoreError> {
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(self.keys.user(username));
        let fields: HashMap<String, String> = self.query(&cmd).await?;
        if fields.is_empty() {
            return Ok(None);
        }
        let password_hash = fields
            .get("h")
            .cloned()
            .ok_or_else(|| StoreError::corrupt(Unexpected("user without a password hash")))?;
        let created_at = fields
            .get("c")
            .and_then(|c| c.parse::<i128>().ok())
            .and_then(|n| OffsetDateTime::from_unix_timestamp_nanos(n).ok())
            .ok_or_else(|| StoreError::corrupt(Unexpected("user without a creation time")))?;
        Ok(Some(User {
            username: username.to_owned(),
            password_hash,
            created_at,
        }))
    }

    async fn set_password(&self, username: &str, password_hash: &str) -> Result<bool, StoreError> {
        let set: i64 = self
            .invoke(
                scripts::SET_PASSWORD
                    .key(self.keys.user(username))
                    .key(self.keys.epoch(username))
                    .arg(password_hash),
            )
            .await?;
        Ok(set == 1)
    }

    async fn delete_user(&self, username: &str) -> Result<bool, StoreError> {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(self.keys.user(username));
        let n: i64 = self.query(&cmd).await?;
        Ok(n > 0)
    }
}
