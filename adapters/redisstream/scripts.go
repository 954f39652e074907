package redisstream

import "github.com/redis/go-redis/v9"

// The Lua scripts below make each multi-step change of a group's state
// atomic on the server: an XACK never happens without the XADD that
// replaces it, and no other consumer acts between a check and its action.
// Every script is given all the keys it touches.

// luaCommon is shared by the scripts.
//
// The delayed set of a group holds its delayed retries, scored by due time
// in server milliseconds; each member is a msgpack array of the retry
// entry's field/value pairs.
const luaCommon = `
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function promote(delayed, retry, now, limit)
  local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, limit)
  for _, m in ipairs(due) do
    redis.call('XADD', retry, '*', unpack(cmsgpack.unpack(m)))
    redis.call('ZREM', delayed, m)
  end
end

local function next_due(delayed, now)
  local first = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
  if first[2] then return math.max(0, tonumber(first[2]) - now) end
  return -1
end

-- owner returns the consumer that holds id in the group's pending list and
-- the entry's delivery count, or false when the entry is not pending.
local function owner(key, group, id)
  local p = redis.call('XPENDING', key, group, id, id, 1)
  if p[1] then return p[1][2], p[1][4] end
  return false, 0
end
`

// fetchScript promotes due retries, then takes up to want entries for one
// consumer: first entries idle past the visibility time (when asked to
// claim), then new entries of the retry stream, then, when asked, new
// entries of the main stream. Each entry comes back as {stream index,
// entry ID, delivery count, fields}. When nothing is taken it also
// returns the newest entry ID of each stream, from which the caller
// blocks on XREAD until something new arrives.
//
// Entries read here pass through Lua tables, which costs Redis a copy of
// every field each way; large batches of the main stream are therefore
// read with a plain XREADGROUP beside the script (see subscription.fetch).
//
// KEYS: main stream, retry stream, delayed set.
// ARGV: group, consumer, want, claim (0/1), min idle ms, main cursor,
// retry cursor, read the main stream (0/1).
// Returns {entries, ms until the next delayed retry is due or -1,
// newest main ID, newest retry ID, main cursor, retry cursor}.
var fetchScript = redis.NewScript(luaCommon + `
local keys = {KEYS[1], KEYS[2]}
local group, consumer = ARGV[1], ARGV[2]
local want = tonumber(ARGV[3])
local cursors = {ARGV[6], ARGV[7]}
local now = now_ms()
promote(KEYS[3], KEYS[2], now, 100)
local out = {}
if ARGV[4] == '1' then
  for i = 2, 1, -1 do
    local room = want - #out
    if room > 0 then
      local r = redis.call('XAUTOCLAIM', keys[i], group, consumer, ARGV[5], cursors[i], 'COUNT', room)
      cursors[i] = r[1]
      for _, e in ipairs(r[2]) do
        if e and e[2] then
          local _, count = owner(keys[i], group, e[1])
          out[#out + 1] = {i - 1, e[1], count, e[2]}
        end
      end
    end
  end
end
local lowest = ARGV[8] == '1' and 1 or 2
for i = 2, lowest, -1 do
  local room = want - #out
  if room > 0 then
    local r = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', room, 'STREAMS', keys[i], '>')
    if r then
      for _, e in ipairs(r[1][2]) do
        out[#out + 1] = {i - 1, e[1], 1, e[2]}
      end
    end
  end
end
local last = {'', ''}
if #out == 0 then
  for i = 1, 2 do
    local r = redis.call('XREVRANGE', keys[i], '+', '-', 'COUNT', 1)
    last[i] = r[1] and r[1][1] or '0-0'
  end
end
return {out, next_due(KEYS[3], now), last[1], last[2], cursors[1], cursors[2]}
`)

// promoteScript moves due retries into the retry stream.
//
// KEYS: delayed set, retry stream.
// Returns ms until the next retry is due, or -1.
var promoteScript = redis.NewScript(luaCommon + `
local now = now_ms()
promote(KEYS[1], KEYS[2], now, 1000)
return next_due(KEYS[1], now)
`)

// renewScript resets the idle time of the entries a consumer still holds,
// so that nobody claims work in progress. Entries claimed away meanwhile
// are left alone and reported.
//
// KEYS: main stream, retry stream.
// ARGV: group, consumer, then stream index and entry ID pairs.
// Returns {stream index, entry ID} of each entry the consumer lost.
var renewScript = redis.NewScript(luaCommon + `
local group, consumer = ARGV[1], ARGV[2]
local mine = {{}, {}}
local lost = {}
for j = 3, #ARGV, 2 do
  local i = tonumber(ARGV[j]) + 1
  local id = ARGV[j + 1]
  if owner(KEYS[i], group, id) == consumer then
    mine[i][#mine[i] + 1] = id
  else
    lost[#lost + 1] = {i - 1, id}
  end
end
for i = 1, 2 do
  -- In chunks, as unpack has a limit; JUSTID keeps delivery counts.
  for from = 1, #mine[i], 500 do
    local args = {'XCLAIM', KEYS[i], group, consumer, 0}
    for k = from, math.min(from + 499, #mine[i]) do args[#args + 1] = mine[i][k] end
    args[#args + 1] = 'JUSTID'
    redis.call(unpack(args))
  end
end
return lost
`)

// releaseScript gives a closing consumer's entries back to its group: they
// move to the parking consumer with an idle time past any visibility
// timeout, so the group's next claim takes them at once. Entries the
// consumer fetched but never handed out get their delivery count lowered
// back, since nobody saw that delivery. The emptied consumer is deleted.
//
// KEYS: main stream, retry stream.
// ARGV: group, consumer, parking consumer, idle ms, then (stream index,
// entry ID, delivery count to set) triples for entries never handed out.
var releaseScript = redis.NewScript(luaCommon + `
local group, consumer, parking, idle = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
for j = 5, #ARGV, 3 do
  local key = KEYS[tonumber(ARGV[j]) + 1]
  local id = ARGV[j + 1]
  if owner(key, group, id) == consumer then
    redis.call('XCLAIM', key, group, parking, 0, id, 'IDLE', idle, 'RETRYCOUNT', ARGV[j + 2], 'JUSTID')
  end
end
local moved = 0
for i = 1, 2 do
  while true do
    local p = redis.call('XPENDING', KEYS[i], group, '-', '+', 100, consumer)
    if #p == 0 then break end
    local args = {'XCLAIM', KEYS[i], group, parking, 0}
    for _, e in ipairs(p) do args[#args + 1] = e[1] end
    args[#args + 1] = 'IDLE'
    args[#args + 1] = idle
    args[#args + 1] = 'JUSTID'
    redis.call(unpack(args))
    moved = moved + #p
  end
  redis.call('XGROUP', 'DELCONSUMER', KEYS[i], group, consumer)
end
return moved
`)

// retryScript acks a failed delivery and enqueues its retry for the same
// group only: straight into the group's retry stream, or into its delayed
// set when there is a delay.
//
// KEYS: source stream, retry stream, delayed set.
// ARGV: group, consumer, entry ID, source is the retry stream (0/1),
// delay ms, then the retry entry's field/value pairs.
// Returns 1 when done, 0 when the entry was no longer pending, -1 when
// another consumer holds it.
var retryScript = redis.NewScript(luaCommon + `
local who = owner(KEYS[1], ARGV[1], ARGV[3])
if not who then return 0 end
if who ~= ARGV[2] then return -1 end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
if ARGV[4] == '1' then redis.call('XDEL', KEYS[1], ARGV[3]) end
local delay = tonumber(ARGV[5])
if delay <= 0 then
  redis.call('XADD', KEYS[2], '*', unpack(ARGV, 6))
  return 1
end
local fields = {}
for j = 6, #ARGV do fields[#fields + 1] = ARGV[j] end
redis.call('ZADD', KEYS[3], now_ms() + delay, cmsgpack.pack(fields))
return 1
`)

// deadLetterScript acks a delivery and appends its dead-letter copy to
// the dead-letter stream, in one step; without a dead-letter stream key it
// only acks (the copy was appended before, in another slot of a cluster).
//
// KEYS: source stream, dead-letter stream (optional).
// ARGV: group, consumer, entry ID, source is the retry stream (0/1), then
// the dead-letter entry's field/value pairs.
// Returns as retryScript.
var deadLetterScript = redis.NewScript(luaCommon + `
local who = owner(KEYS[1], ARGV[1], ARGV[3])
if not who then return 0 end
if who ~= ARGV[2] then return -1 end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
if ARGV[4] == '1' then redis.call('XDEL', KEYS[1], ARGV[3]) end
if KEYS[2] then redis.call('XADD', KEYS[2], '*', unpack(ARGV, 5)) end
return 1
`)

// trimScript deletes the entries of a stream that every group has
// acknowledged: those below the lowest bound over the groups, where a
// group's bound is its oldest pending entry, or its last delivered entry
// when nothing is pending. A stream without groups keeps everything, for
// the first group to come.
//
// KEYS: stream. Returns the number of entries deleted.
var trimScript = redis.NewScript(`
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
if #groups == 0 then return 0 end
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function less(a, b)
  local am, as = parse(a)
  local bm, bs = parse(b)
  return am < bm or (am == bm and as < bs)
end
local bound
for _, g in ipairs(groups) do
  local info = {}
  for j = 1, #g, 2 do info[g[j]] = g[j + 1] end
  local b = info['last-delivered-id']
  if tonumber(info['pending']) > 0 then
    b = redis.call('XPENDING', KEYS[1], info['name'])[2]
  end
  if not bound or less(b, bound) then bound = b end
end
return redis.call('XTRIM', KEYS[1], 'MINID', bound)
`)

// reapScript deletes the consumers of a group that hold nothing and have
// been idle for a while: those of processes that died, whose entries live
// consumers claimed. A consumer deleted while alive comes back with its
// next read, and holding nothing it loses nothing.
//
// KEYS: main stream, retry stream. ARGV: group, idle ms.
// Returns the number of consumers deleted.
var reapScript = redis.NewScript(`
local deleted = 0
for i = 1, 2 do
  for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[i], ARGV[1])) do
    local info = {}
    for j = 1, #c, 2 do info[c[j]] = c[j + 1] end
    if tonumber(info['pending']) == 0 and tonumber(info['idle']) >= tonumber(ARGV[2]) then
      redis.call('XGROUP', 'DELCONSUMER', KEYS[i], ARGV[1], info['name'])
      deleted = deleted + 1
    end
  end
end
return deleted
`)
