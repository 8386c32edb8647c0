//! The Lua scripts of the Redis backend. Each runs atomically on the server,
//! so a conditional store's check and its write have nothing in between.
//!
//! A shard state is stored as the text `<generation>:<epoch>` (two decimal
//! numbers, readable in `redis-cli`) under `{shard}:gen`; an entry as its
//! 8-byte version followed by its envelope. Keys of another Redis type where
//! ours should be are treated as absent and replaced.

/// Returns the shard state under KEYS[1], creating ARGV[1] (with a TTL of
/// ARGV[2] seconds) if there is none or it is not ours.
pub(super) const SHARD: &str = r"
local kind = redis.call('TYPE', KEYS[1]).ok
if kind == 'string' then
  local v = redis.call('GET', KEYS[1])
  if string.match(v, '^%d+:%d+$') then return v end
elseif kind ~= 'none' then
  redis.call('DEL', KEYS[1])
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return ARGV[1]
";

/// The conditional store of entry KEYS[1] in the shard of state key KEYS[2].
///
/// ARGV: 1 the shard state the reader saw, 2 the version of the entry it saw
/// (empty: none), 3 the new value (version and envelope), 4 its TTL in
/// milliseconds, 5 the least TTL in seconds the shard state must then have.
///
/// Returns 0 stored, 1 the generation changed (or was lost), 2 the entry
/// changed, 3 stored over a key of another type. The rule is
/// `PutCondition::holds`.
pub(super) const PUT: &str = r"
local shard = redis.call('GET', KEYS[2])
if not shard then return 1 end
local generation = string.match(shard, '^(%d+):%d+$')
if generation == nil or generation ~= string.match(ARGV[1], '^(%d+):') then return 1 end
local kind = redis.call('TYPE', KEYS[1]).ok
local result = 0
if kind == 'string' then
  if ARGV[2] == '' or redis.call('GETRANGE', KEYS[1], 0, 7) ~= ARGV[2] then return 2 end
elseif ARGV[2] ~= '' or shard ~= ARGV[1] then
  return 2
elseif kind ~= 'none' then
  redis.call('DEL', KEYS[1])
  result = 3
end
redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
if redis.call('TTL', KEYS[2]) < tonumber(ARGV[5]) then
  redis.call('EXPIRE', KEYS[2], ARGV[5])
end
return result
";

/// Invalidates entry KEYS[1]: deletes it and increments the epoch of its
/// shard's state KEYS[2], creating ARGV[1] (TTL ARGV[2] seconds) if the shard
/// has none, so that no store conditioned on an earlier read succeeds.
pub(super) const INVALIDATE: &str = r"
redis.call('DEL', KEYS[1])
local kind = redis.call('TYPE', KEYS[2]).ok
local generation, epoch
if kind == 'string' then
  generation, epoch = string.match(redis.call('GET', KEYS[2]), '^(%d+):(%d+)$')
end
if generation then
  redis.call('SET', KEYS[2], generation .. ':' .. string.format('%d', tonumber(epoch) + 1), 'KEEPTTL')
else
  if kind ~= 'none' then redis.call('DEL', KEYS[2]) end
  redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
end
return 0
";
