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

/// The body of the compare-and-swap scripts: a Lua function `replace()`
/// returning 1 when written, 0 when not (see [`REPLACE`]).
macro_rules! replace_fn {
    () => {
        r"
local function replace()
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
end
"
    };
}

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
pub(crate) static REPLACE: LazyLock<Script> =
    LazyLock::new(|| Script::new(concat!(replace_fn!(), "return replace()\n")));

/// [`REPLACE`], then the user's epoch, in one script: on a single node only
/// (the epoch key is in the user's slot, not the session's).
///
/// KEYS: 1 session, 2 grace successor, 3 the user's epoch. ARGV: as
/// [`REPLACE`].
/// Returns `{written, epoch}`: 1 or 0 as [`REPLACE`], and the epoch as a
/// string ("0" when never moved).
pub(crate) static REPLACE_READING_EPOCH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        replace_fn!(),
        "local written = replace()\n",
        "return {written, redis.call('GET', KEYS[3]) or '0'}\n"
    ))
});

/// A create in one step, on a single node only (the keys span the user's
/// and the session's slots): refuses a session whose user's epoch has
/// moved past its own, refuses an id that exists, else indexes the
/// session (as [`INDEX_ADD`]) and stores it with its grace successor (as
/// [`CREATE`]). Atomic, so no revoke-all can fall between the epoch check
/// and the write.
///
/// KEYS: 1 index, 2 the user's epoch, 3 session, 4 grace successor.
/// ARGV: 1 score, 2 session id, 3 index deadline ms, 4 the session's
/// epoch, 5 stored string, 6 its deadline ms, 7 grace successor ("" =
/// none), 8 its deadline ms, 9 `exact` when the session's epoch is a
/// guess that must equal the user's ("" = must not be behind it).
/// Returns `{outcome, the user's epoch}`: outcome 1 when created, 0 when
/// the epoch moved on (or, `exact`, differs), -1 when the id exists
/// (nothing written in either case).
pub(crate) static CREATE_INDEXED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local current = tonumber(redis.call('GET', KEYS[2]) or '0')
local epoch = tonumber(ARGV[4])
if current > epoch or (ARGV[9] == 'exact' and current ~= epoch) then return {0, current} end
if redis.call('EXISTS', KEYS[3]) == 1 then return {-1, current} end
redis.call('ZADD', KEYS[1], 'NX', ARGV[1], ARGV[2])
local t = redis.call('PEXPIRETIME', KEYS[1])
if t < tonumber(ARGV[3]) then redis.call('PEXPIREAT', KEYS[1], ARGV[3]) end
redis.call('SET', KEYS[3], ARGV[5], 'PXAT', ARGV[6])
if ARGV[7] ~= '' then redis.call('SET', KEYS[4], ARGV[7], 'PXAT', ARGV[8]) end
return {1, current}
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
