//! Built-in password users and password hashing (argon2id).

use std::fmt;

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use time::OffsetDateTime;

/// A built-in user. Its id is its username.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    /// Login name, also the `user_id` of its sessions.
    pub username: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// When it was added.
    pub created_at: OffsetDateTime,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("username", &self.username)
            .field("password_hash", &"<redacted>")
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// Errors of password hashing.
#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct PasswordError(String);

/// Argon2id with OWASP's second recommended setting (19 MiB, t=2, p=1).
fn argon2() -> Argon2<'static> {
    #[allow(clippy::expect_used)] // reason: constant, valid parameters
    let params = Params::new(19 * 1024, 2, 1, None).expect("valid argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes `password` with a fresh random salt.
pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    argon2()
        .hash_password_with_rng(&mut crate::secret::os_rng(), password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| PasswordError(e.to_string()))
}

/// Whether `password` matches `phc`. A malformed hash never matches.
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| argon2().verify_password(password.as_bytes(), &h).is_ok())
}

/// A hash of a random password, verified against when the user does not
/// exist so that an unknown user costs the same time as a wrong password.
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        let random: [u8; 16] = crate::secret::random_bytes();
        let pw: String = random.iter().map(|b| format!("{b:02x}")).collect();
        hash_password(&pw).unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_against_their_own_hash() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong horse", &h));
        assert!(!verify_password("correct horse", "not a hash"));
        assert!(!verify_password("x", dummy_hash()));
    }

    #[test]
    fn user_debug_hides_the_hash() {
        let u = User {
            username: "a".into(),
            password_hash: "$argon2id$secret".into(),
            created_at: OffsetDateTime::UNIX_EPOCH,
        };
        assert!(!format!("{u:?}").contains("secret"));
    }
}
