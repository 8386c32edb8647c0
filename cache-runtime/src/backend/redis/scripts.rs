//! The Lua scripts of the Redis backend. Each runs atomically on the server,
//! so a conditional store's check and its write have nothing in between.
//!
//! A shard state is stored as the text `<generation>:<epoch>` (two decimal
//! numbers, readable in `redis-cli`) under `{shard}:gen`; an entry as its
//! 8-byte version followed by its envelope. Keys of another Redis type where
//! ours should be are treated as absent and replaced.
//!
//! What counts as a shard state is decided the same way here ([`OURS`]) and
//! in Rust (`parse_shard`): a generation of 1 to 20 digits without a leading
//! zero, at most `u64::MAX`; an epoch of 1 to 15 digits without a leading
//! zero (below 2^53, so that Lua's numbers count it exactly). Anything else,
//! written by another program or another release, is no state: reads treat
//! the shard as having none, and the next use replaces it.

/// `ours(text)`: the generation and epoch of a shard state, or nil.
macro_rules! ours {
    () => {
        r"
local function ours(v)
  if type(v) ~= 'string' then return nil end
  local g, e = string.match(v, '^([1-9]%d*):(%d+)$')
  if g == nil or #g > 20 or (#g == 20 and g > '18446744073709551615') then return nil end
  if #e > 15 or (#e > 1 and string.sub(e, 1, 1) == '0') then return nil end
  return g, e
end
"
    };
}

/// `lease_holder(key)`: the token in lease key `key` if it is one of ours
/// (a string of 1 to 20 digits with a TTL), `false` if the key holds
/// something else, nil if there is no key.
macro_rules! lease_holder {
    () => {
        r"
local function lease_holder(key)
  local kind = redis.call('TYPE', key).ok
  if kind == 'none' then return nil end
  if kind ~= 'string' or redis.call('PTTL', key) <= 0 then return false end
  local token = redis.call('GET', key)
  if #token > 20 or not string.match(token, '^[1-9]%d*$') then return false end
  return token
end
"
    };
}

/// The largest epoch a shard state holds; one more starts a fresh state.
pub(super) const MAX_EPOCH: u64 = 999_999_999_999_999;

/// Returns the shard state under KEYS[1], creating ARGV[1] (with a TTL of
/// ARGV[2] seconds) if there is none or it is not ours.
pub(super) const SHARD: &str = concat!(
    ours!(),
    r"
local kind = redis.call('TYPE', KEYS[1]).ok
if kind == 'string' then
  local v = redis.call('GET', KEYS[1])
  if ours(v) then return v end
elseif kind ~= 'none' then
  redis.call('DEL', KEYS[1])
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return ARGV[1]
"
);

/// The conditional store of entry KEYS[1] in the shard of state key KEYS[2].
///
/// ARGV: 1 the shard state the reader saw, 2 whether it saw an entry (`1`)
/// or none (`0`), 3 that entry's version, 4 the new value (version and
/// envelope), 5 its TTL in milliseconds, 6 the least TTL in seconds the shard
/// state must then have.
///
/// With KEYS[3] and ARGV[7], also gives up the caller's lease KEYS[3] if
/// token ARGV[7] holds it, whatever the store does: the store and the
/// release in one round trip, and no moment between them.
///
/// Returns 0 stored, 1 the generation changed (or was lost), 2 the entry
/// changed, 3 stored over a key of another type. The rule is
/// `PutCondition::holds`.
pub(super) const PUT: &str = concat!(
    ours!(),
    lease_holder!(),
    r"
if KEYS[3] and lease_holder(KEYS[3]) == ARGV[7] then
  redis.call('DEL', KEYS[3])
end
local shard = redis.call('GET', KEYS[2])
local generation = ours(shard)
if generation == nil or generation ~= ours(ARGV[1]) then return 1 end
local kind = redis.call('TYPE', KEYS[1]).ok
local result = 0
if kind == 'string' then
  if ARGV[2] ~= '1' or redis.call('GETRANGE', KEYS[1], 0, 7) ~= ARGV[3] then return 2 end
elseif ARGV[2] ~= '0' or shard ~= ARGV[1] then
  return 2
elseif kind ~= 'none' then
  redis.call('DEL', KEYS[1])
  result = 3
end
redis.call('SET', KEYS[1], ARGV[4], 'PX', ARGV[5])
if redis.call('TTL', KEYS[2]) < tonumber(ARGV[6]) then
  redis.call('EXPIRE', KEYS[2], ARGV[6])
end
return result
"
);

/// Invalidates entry KEYS[1]: deletes it and increments the epoch of its
/// shard's state KEYS[2], or replaces that state with ARGV[1] (TTL ARGV[2]
/// seconds) if the shard has none, none of ours, or one whose epoch is at
/// ARGV[3], the largest: either way no store conditioned on an earlier read
/// succeeds.
///
/// With KEYS[3], also deletes the entry's lease (if it is one): callers
/// after the invalidation do not wait for a holder computing from before
/// it.
pub(super) const INVALIDATE: &str = concat!(
    ours!(),
    lease_holder!(),
    r"
redis.call('DEL', KEYS[1])
if KEYS[3] and lease_holder(KEYS[3]) then redis.call('DEL', KEYS[3]) end
local kind = redis.call('TYPE', KEYS[2]).ok
local generation, epoch
if kind == 'string' then
  generation, epoch = ours(redis.call('GET', KEYS[2]))
end
if generation and epoch ~= ARGV[3] then
  redis.call('SET', KEYS[2], generation .. ':' .. string.format('%d', tonumber(epoch) + 1), 'KEEPTTL')
else
  if kind ~= 'none' then redis.call('DEL', KEYS[2]) end
  redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
end
return 0
"
);

/// Takes lease KEYS[1] for token ARGV[1] for ARGV[2] milliseconds if no one
/// holds it: 1 taken, 0 held by a token, 2 the key holds something that is
/// not a lease (written by another program): no lease for this key, the
/// caller computes without one (it is never waited on).
pub(super) const LEASE: &str = concat!(
    lease_holder!(),
    r"
local holder = lease_holder(KEYS[1])
if holder == nil then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder then return 0 end
return 2
"
);

/// Extends lease KEYS[1] to ARGV[2] milliseconds if token ARGV[1] holds it:
/// 1 extended, 0 not held by it.
pub(super) const RENEW_LEASE: &str = concat!(
    lease_holder!(),
    r"
if lease_holder(KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"
);

/// Gives lease KEYS[1] up without a value if token ARGV[1] holds it: `0`
/// (no token, so `lease_holder` reads it as not a lease, and LEASE answers
/// 2: compute without one) for ARGV[2] milliseconds.
pub(super) const ABANDON_LEASE: &str = concat!(
    lease_holder!(),
    r"
if lease_holder(KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], '0', 'PX', ARGV[2])
end
return 0
"
);

/// Deletes lease KEYS[1] if token ARGV[1] holds it.
pub(super) const RELEASE_LEASE: &str = concat!(
    lease_holder!(),
    r"
if lease_holder(KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
return 0
"
);
