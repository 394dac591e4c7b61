//! The Lua scripts. Each touches only keys that share one hash tag, so each
//! runs atomically on one cluster slot: a session's scripts touch
//! `…:s:{<sid>}` and `…:g:{<sid>}`; the index, lock and user scripts touch
//! `…:u:{<user>}`, `…:l:{<user>}`, `…:user:{<user>}` and the epoch
//! `…:e:{<user>}`, which share the user's tag.
//!
//! The scripts read only the stored string's text header
//! (`<version>;<A|R>`, see `codec`): the version for the compare-and-swap
//! and the flag to tell whether a write revokes.

use std::sync::LazyLock;

use redis::Script;

/// Creates a session unless its id exists.
///
/// KEYS: 1 session, 2 grace successor.
/// ARGV: 1 stored string, 2 deadline ms, 3 grace successor ("" = none),
/// 4 its deadline ms.
/// Returns 1 when created, 0 when the id exists (nothing written).
pub(crate) static CREATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PXAT', ARGV[2]) then return 0 end
if ARGV[3] ~= '' then redis.call('SET', KEYS[2], ARGV[3], 'PXAT', ARGV[4]) end
return 1
",
    )
});

/// Compare-and-swap on the version: every write to an existing session
/// (rotation, reuse revocation, anomaly revocation, revoke) goes through it.
///
/// KEYS: 1 session, 2 grace successor.
/// ARGV: 1 expected version, 2 new stored string, 3 its deadline ms,
/// 4 grace successor ("" = none), 5 its deadline ms, 6 "1" if the new
/// string is revoked, 7 channel, 8 session id.
///
/// Returns 1 when written; 0 when the session is gone, its version moved,
/// or the write would clear a revocation (a revocation is never undone).
/// Publishes the session id when this write is the one that revokes.
pub(crate) static REPLACE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
local semi = string.find(cur, ';', 1, true)
if not semi or string.sub(cur, 1, semi - 1) ~= ARGV[1] then return 0 end
local was_revoked = string.sub(cur, semi + 1, semi + 1) == 'R'
local revokes = ARGV[6] == '1'
if was_revoked and not revokes then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PXAT', ARGV[3])
if ARGV[4] ~= '' then
  redis.call('SET', KEYS[2], ARGV[4], 'PXAT', ARGV[5])
else
  redis.call('DEL', KEYS[2])
end
if revokes and not was_revoked then redis.call('PUBLISH', ARGV[7], ARGV[8]) end
return 1
",
    )
});

/// Adds a session to its user's index, unless the user's epoch has moved
/// past the session's (a revoke-all or password change landed since its
/// login began), and makes the index live at least as long as the session
/// can (its absolute deadline). Never moves an entry that exists.
///
/// KEYS: 1 index, 2 the user's epoch. ARGV: 1 score, 2 session id,
/// 3 deadline ms, 4 the session's epoch.
/// Returns 1 when added, 0 when the epoch moved on (nothing written).
pub(crate) static INDEX_ADD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if tonumber(redis.call('GET', KEYS[2]) or '0') > tonumber(ARGV[4]) then return 0 end
redis.call('ZADD', KEYS[1], 'NX', ARGV[1], ARGV[2])
local t = redis.call('PEXPIRETIME', KEYS[1])
if t < tonumber(ARGV[3]) then redis.call('PEXPIREAT', KEYS[1], ARGV[3]) end
return 1
",
    )
});

/// Releases a lock if this holder still owns it.
///
/// KEYS: 1 lock. ARGV: 1 holder token.
pub(crate) static UNLOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
",
    )
});

/// Adds a user unless the name is taken.
///
/// KEYS: 1 user. ARGV: 1 password hash, 2 created-at (Unix nanos).
/// Returns 1 when added, 0 when the name exists.
pub(crate) static CREATE_USER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'h', ARGV[1], 'c', ARGV[2])
return 1
",
    )
});

/// Sets a user's password hash if the user exists, and moves the user's
/// session epoch on in the same step.
///
/// KEYS: 1 user, 2 the user's epoch. ARGV: 1 password hash.
/// Returns 1 when set, 0 when absent.
pub(crate) static SET_PASSWORD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'h', ARGV[1])
redis.call('INCR', KEYS[2])
return 1
",
    )
});

/// Replaces a shared value only while it still holds the expected bytes.
/// KEYS: the value. ARGV: expected, new. Returns 1 when replaced.
pub(crate) static REPLACE_SHARED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('GET', KEYS[1]) == ARGV[1] then
            redis.call('SET', KEYS[1], ARGV[2])
            return 1
        end
        return 0
        ",
    )
});
