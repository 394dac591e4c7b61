//! The Lua scripts. Each one touches only keys that share one user's hash
//! tag (`{<user>}`), so it runs atomically on one cluster slot. Session keys
//! that a script derives from index members are in that same slot, because
//! they carry the same tag.
//!
//! Instants arrive as fixed-width decimal strings (`codec::sortable`), so
//! "expired" is a plain string comparison: `e <= now`.

use std::sync::LazyLock;

use redis::Script;

/// Revokes session key `k` if it is active at `now`; publishes its id.
/// Shared by the scripts below (prepended to their bodies).
const REVOKE_FN: &str = r"
local function revoke_if_active(k, sid, now, rev, channel)
  if redis.call('HEXISTS', k, 'r') == 1 then return false end
  local e = redis.call('HGET', k, 'e')
  if not e or e <= now then return false end
  redis.call('HSET', k, 'r', rev)
  redis.call('HDEL', k, 'g')
  redis.call('HINCRBY', k, 'v', 1)
  redis.call('PUBLISH', channel, sid)
  return true
end
local function extend(k, ms)
  local t = redis.call('PEXPIRETIME', k)
  if t < tonumber(ms) then redis.call('PEXPIREAT', k, ms) end
end
";

/// Create, optionally keeping the user at most `max` active sessions.
///
/// KEYS: 1 session, 2 user index.
/// ARGV: 1 v, 2 e, 3 d, 4 g ("" = none), 5 r ("" = none), 6 deadline ms,
/// 7 index score, 8 session id, 9 max (0 = unlimited), 10 now,
/// 11 revocation value for evicted sessions, 12 session key prefix,
/// 13 channel.
///
/// Returns `{0}` when the session exists (nothing written), else
/// `{1, sid, hgetall, sid, hgetall, ...}` with the evicted sessions.
pub(crate) static CREATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{REVOKE_FN}{}",
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then return {0} end
local out = {1}
local max = tonumber(ARGV[9])
if max > 0 then
  local active = {}
  for _, m in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
    local k = ARGV[12] .. m
    if redis.call('EXISTS', k) == 0 then
      redis.call('ZREM', KEYS[2], m)
    elseif redis.call('HEXISTS', k, 'r') == 0 and redis.call('HGET', k, 'e') > ARGV[10] then
      active[#active + 1] = m
    end
  end
  for i = 1, #active - (max - 1) do
    local m = active[i]
    local k = ARGV[12] .. m
    if revoke_if_active(k, m, ARGV[10], ARGV[11], ARGV[13]) then
      out[#out + 1] = m
      out[#out + 1] = redis.call('HGETALL', k)
    end
  end
end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'e', ARGV[2], 'd', ARGV[3])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'g', ARGV[4]) end
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'r', ARGV[5]) end
redis.call('PEXPIREAT', KEYS[1], ARGV[6])
redis.call('ZADD', KEYS[2], ARGV[7], ARGV[8])
extend(KEYS[2], ARGV[6])
return out
"
    ))
});

/// Compare-and-swap on the version.
///
/// KEYS: 1 session, 2 user index.
/// ARGV: 1 expected v, 2 new v, 3 e, 4 d, 5 g, 6 r, 7 deadline ms,
/// 8 channel, 9 session id.
///
/// Returns 1 when written, 0 when the version moved, the session is gone,
/// or the write would clear a revocation (revocation is never undone).
/// Publishes the id when this write revokes the session.
pub(crate) static REPLACE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{REVOKE_FN}{}",
        r"
local cur = redis.call('HGET', KEYS[1], 'v')
if not cur or cur ~= ARGV[1] then return 0 end
local was_revoked = redis.call('HEXISTS', KEYS[1], 'r') == 1
if was_revoked and ARGV[6] == '' then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'e', ARGV[3], 'd', ARGV[4])
if ARGV[5] == '' then redis.call('HDEL', KEYS[1], 'g') else redis.call('HSET', KEYS[1], 'g', ARGV[5]) end
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'r', ARGV[6]) end
redis.call('PEXPIREAT', KEYS[1], ARGV[7])
extend(KEYS[2], ARGV[7])
if not was_revoked and ARGV[6] ~= '' then redis.call('PUBLISH', ARGV[8], ARGV[9]) end
return 1
"
    ))
});

/// Revokes one session if active.
///
/// KEYS: 1 session. ARGV: 1 now, 2 revocation value, 3 channel, 4 session id.
/// Returns the session's `HGETALL` after revoking, or an empty array.
pub(crate) static REVOKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{REVOKE_FN}{}",
        r"
if revoke_if_active(KEYS[1], ARGV[4], ARGV[1], ARGV[2], ARGV[3]) then
  return redis.call('HGETALL', KEYS[1])
end
return {}
"
    ))
});

/// Revokes every active session of one user.
///
/// KEYS: 1 user index. ARGV: 1 session key prefix, 2 now, 3 revocation
/// value, 4 channel. Returns `{sid, hgetall, ...}` of those revoked; drops
/// index entries whose session key is gone.
pub(crate) static REVOKE_USER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{REVOKE_FN}{}",
        r"
local out = {}
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local k = ARGV[1] .. m
  if redis.call('EXISTS', k) == 0 then
    redis.call('ZREM', KEYS[1], m)
  elseif revoke_if_active(k, m, ARGV[2], ARGV[3], ARGV[4]) then
    out[#out + 1] = m
    out[#out + 1] = redis.call('HGETALL', k)
  end
end
return out
"
    ))
});

/// Reads every session in one user's index, oldest first.
///
/// KEYS: 1 user index. ARGV: 1 session key prefix. Returns
/// `{sid, hgetall, ...}`; drops index entries whose session key is gone.
pub(crate) static LIST_USER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local out = {}
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local k = ARGV[1] .. m
  local h = redis.call('HGETALL', k)
  if #h == 0 then
    redis.call('ZREM', KEYS[1], m)
  else
    out[#out + 1] = m
    out[#out + 1] = h
  end
end
return out
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

/// Sets a user's password hash if the user exists.
///
/// KEYS: 1 user. ARGV: 1 password hash. Returns 1 when set, 0 when absent.
pub(crate) static SET_PASSWORD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'h', ARGV[1])
return 1
",
    )
});
