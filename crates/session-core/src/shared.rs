//! Small named values every instance of a deployment shares through its
//! store: the key ring and the server secrets, always sealed under the
//! master key before they get here. Created once (the first writer wins,
//! so two instances starting together agree on one value) and changed only
//! by compare-and-set.

use async_trait::async_trait;

use crate::store::StoreError;

/// Named values shared by every instance (a Redis key per name).
#[async_trait]
pub trait SharedValues: Send + Sync + std::fmt::Debug {
    /// The value stored under `name`, if any.
    async fn get_shared(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Stores `value` under `name` unless a value is there already; true
    /// when this call stored it.
    async fn create_shared(&self, name: &str, value: &[u8]) -> Result<bool, StoreError>;
    /// Replaces the value under `name` by `value` if it is still exactly
    /// `expected`; true when replaced.
    async fn replace_shared(
        &self,
        name: &str,
        expected: &[u8],
        value: &[u8],
    ) -> Result<bool, StoreError>;
}
