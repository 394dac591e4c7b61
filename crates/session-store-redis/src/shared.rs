//! The [`SharedValues`] implementation: named values (the key ring) with a
//! compare-and-swap replace.

use async_trait::async_trait;
use session_core::StoreError;
use session_core::shared::SharedValues;

use crate::{RedisStore, scripts};

#[async_trait]
impl SharedValues for RedisStore {
    async fn get_shared(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.keys.shared(name));
        self.query(&cmd).await
    }

    async fn create_shared(&self, name: &str, value: &[u8]) -> Result<bool, StoreError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.keys.shared(name)).arg(value).arg("NX");
        let set: Option<String> = self.query(&cmd).await?;
        Ok(set.is_some())
    }

    async fn replace_shared(
        &self,
        name: &str,
        expected: &[u8],
        value: &[u8],
    ) -> Result<bool, StoreError> {
        let replaced: i64 = self
            .invoke(
                scripts::REPLACE_SHARED
                    .key(self.keys.shared(name))
                    .arg(expected)
                    .arg(value),
            )
            .await?;
        Ok(replaced == 1)
    }
}
