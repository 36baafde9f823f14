/**
 * A `CallbackStore` on Redis, and a Redis-backed `ReplayGuard` for receivers.
 *
 * It takes the user's own ioredis client (anything with `eval`/`evalsha`); `ioredis` is never
 * imported. Due tasks sit in one sorted set scored by due time; a task being delivered stays in it
 * scored by its lease expiry, so a lease whose holder died simply falls due again. Every change of
 * state is one Lua script, so claims and fenced completions are atomic. Scripts take the time from
 * their caller, never from the Redis clock.
 *
 * Searching (`list`): an `id` or an `idempotencyKey` is a key lookup, and failed tasks are indexed
 * in a sorted set by when they failed; every other search SCANs the task hashes (a few fields of
 * each, 1,000 keys per script call) and sorts the matches, so its cost grows with the tasks
 * stored — an operator's occasional look, not a hot path. The inspector's overview (`summarize`)
 * is one such SCAN. On Redis Cluster the SCAN sees the node the client talks to.
 *
 * @module endpoint-callback/redis
 */
import { announcedDueAt, createDueListeners } from './due-listeners.ts'
import { createRecoveredErrors } from './recovered-errors.ts'
import { missedDeadline, withinDeadline } from '../store-deadline.ts'
import { answerBatch, dedupeBatch, earliestDue, insertedTask } from './batch.ts'
import { callbackHost, checkListQuery, listOrder, matchesListQuery, parseStoredJson, readTaskPage, unreadableReason } from './task-list.ts'
import { createHash, randomUUID } from 'node:crypto'
import { StoreError } from '../errors.ts'
import { checkOptionNames } from '../option-names.ts'
import type {
  AttemptRecord,
  AttemptResolution,
  CallbackStore,
  CallbackTask,
  DestinationHold,
  DestinationState,
  Lease,
  NewCallbackTask,
  ReplayGuard,
  StoreCallOptions,
  TaskListQuery,
  TaskStatus,
  TaskSummary,
  TaskSummaryQuery
} from '../types.ts'

/**
 * What the store needs of an ioredis client: running Lua scripts. A call with many arguments (a
 * bulk insert) passes them as one array after `numKeys`, which ioredis spreads into the command.
 */
export interface RedisScriptClient {
  evalsha(sha: string, numKeys: number, ...args: Array<string | number>): Promise<unknown>
  eval(script: string, numKeys: number, ...args: Array<string | number>): Promise<unknown>
}

/** A connection in subscriber mode, made by `client.duplicate()`. */
export interface RedisSubscriber {
  subscribe(channel: string): Promise<unknown>
  on(event: string, listener: (...args: any[]) => void): unknown
  disconnect(): void
}

/** An ioredis client: scripts, and optionally `duplicate()` for pub/sub wake-ups. */
export interface RedisClient extends RedisScriptClient {
  duplicate?(): RedisSubscriber
  /** ioredis: closes the connection; with `true`, opens a new one (and sends unanswered commands again). */
  disconnect?(reconnect?: boolean): void
  /**
   * ioredis: `error` when the connection breaks (it then reconnects and sends the unanswered
   * commands again). Listened to while a worker subscribes to the store's errors.
   */
  on?(event: 'error', listener: (error: unknown) => void): unknown
  removeListener?(event: 'error', listener: (error: unknown) => void): unknown
}

/** Options of {@link createRedisStore}. */
export interface RedisStoreOptions {
  /** The user's ioredis client. The store never closes it. */
  client: RedisClient
  /**
   * Prefix of every key (and of the wake-up channel), so several stores share one Redis. Default
   * `endpoint-callback`. On Redis Cluster, put a hash tag in it (`{callbacks}`) so all keys of a
   * store share a slot.
   */
  prefix?: string | undefined
  /** How many attempts each task's history keeps (the latest). Default 50, at least 20. */
  attemptHistory?: number | undefined
  /**
   * How long a finished (delivered, failed, cancelled) task, its history and its idempotency key
   * stay readable, in seconds; 0 keeps them forever. Default 7 days.
   */
  retentionSeconds?: number | undefined
  /** Wake subscribed workers through pub/sub on `client.duplicate()`. Default `true` when available. */
  subscribe?: boolean | undefined
  /**
   * How long one store call may wait for Redis, ms. Default 30 000. Past it the call fails with
   * `ERR_CALLBACK_STORE` (the worker reports an `error` event and carries on) and the store asks
   * the client to reconnect (`client.disconnect(true)`): a connection whose far side died without
   * FIN or RST would otherwise hold every later command until the operating system gives up on it,
   * hours later. ioredis sends the commands still unanswered again on the new connection; the
   * store's scripts are fenced by lease tokens, so a repeated one changes nothing.
   */
  timeoutMs?: number | undefined
}

/** The Redis store, with the key prefix it uses. */
export interface RedisStore extends CallbackStore {
  readonly prefix: string
  /** Many tasks in one round trip: see {@link CallbackStore.insertMany}. */
  insertMany(tasks: readonly NewCallbackTask[], options?: StoreCallOptions): Promise<Array<{ task: CallbackTask; created: boolean }>>
  subscribe(listener: (dueAt?: number) => void): () => void
  subscribeErrors(listener: (error: Error) => void): () => void
  close(): Promise<void>
}

interface Script {
  source: string
  sha: string
}

function script(source: string): Script {
  return { source, sha: createHash('sha1').update(source).digest('hex') }
}

/** The most completions one call carries: their keys and arguments stay well below {@link MAX_SPREAD_ARGUMENTS}. */
const MAX_COMPLETION_GROUP = 256

interface QueuedCompletion {
  keys: [task: string, history: string]
  args: Array<string | number>
  resolve(completed: boolean): void
  reject(error: unknown): void
}

/**
 * Completions that arrive while one call is in flight wait for it and go out together in the next
 * (`many`); a completion alone goes out on its own (`one`), so a quiet store answers as soon as
 * before. A failed call fails each completion it carried, as it would have failed each on its own;
 * a completion the script could not record fails alone, the others of its group are recorded.
 */
function createCompletionGroup(send: {
  one(keys: [string, string], args: Array<string | number>): Promise<unknown>
  many(keys: string[], args: Array<string | number>): Promise<unknown>
}) {
  let queue: QueuedCompletion[] = []
  let inFlight = false
  let flushQueued = false

  const settle = (completion: QueuedCompletion, reply: unknown) => {
    if (typeof reply === 'number') completion.resolve(reply === 1)
    else completion.reject(new StoreError('ERR_CALLBACK_STORE', `Redis complete failed: ${String(reply)}`))
  }

  const sendGroup = async (group: QueuedCompletion[]) => {
    try {
      if (group.length === 1) {
        const [completion] = group as [QueuedCompletion]
        return settle(completion, await send.one(completion.keys, completion.args))
      }
      const replies = (await send.many(
        group.flatMap((completion) => completion.keys),
        group.flatMap((completion) => completion.args)
      )) as unknown[]
      group.forEach((completion, index) => settle(completion, replies[index]))
    } catch (error) {
      for (const completion of group) completion.reject(error)
    }
  }

  const flush = () => {
    flushQueued = false
    if (inFlight || queue.length === 0) return
    const group = queue.length <= MAX_COMPLETION_GROUP ? queue : queue.slice(0, MAX_COMPLETION_GROUP)
    queue = queue.length <= MAX_COMPLETION_GROUP ? [] : queue.slice(MAX_COMPLETION_GROUP)
    inFlight = true
    void sendGroup(group).finally(() => {
      inFlight = false
      flush()
    })
  }

  return {
    add(task: string, history: string, args: Array<string | number>): Promise<boolean> {
      return new Promise<boolean>((resolve, reject) => {
        queue.push({ keys: [task, history], args, resolve, reject })
        // completions made in the same turn of the event loop share a call
        if (!flushQueued && !inFlight) {
          flushQueued = true
          queueMicrotask(flush)
        }
      })
    }
  }
}

/** Script arguments passed one by one; more go as one array (see {@link RedisScriptClient}). */
const MAX_SPREAD_ARGUMENTS = 4096

async function runScript(
  client: RedisScriptClient,
  { source, sha }: Script,
  keys: string[],
  args: Array<string | number>
): Promise<unknown> {
  // A bulk insert has too many arguments to spread into a call (the stack overflows): they go as
  // one array then, which ioredis spreads into the command itself.
  const many = keys.length + args.length > MAX_SPREAD_ARGUMENTS
  const all = many ? [keys.concat(args as string[]) as unknown as string] : undefined
  try {
    return await (all === undefined ? client.evalsha(sha, keys.length, ...keys, ...args) : client.evalsha(sha, keys.length, ...all))
  } catch (error) {
    // The script cache is empty after a restart or SCRIPT FLUSH: send the source once.
    if (!String((error as Error | null)?.message).includes('NOSCRIPT')) throw error
    return all === undefined ? client.eval(source, keys.length, ...keys, ...args) : client.eval(source, keys.length, ...all)
  }
}

/**
 * KEYS: task, due, pending expiry, pending list, idempotency key (only when the task has one).
 * ARGV: task key prefix, id, due ms ('' = pending), pending expiry ms ('' = never), created ms,
 * channel, then the hash's field/value pairs. SET NX on the idempotency key decides which of two
 * racing inserts wins. A task with its body (outbox) is due at once; a pending one is listed, and
 * indexed by when it expires.
 */
const insertScript = script(`
if redis.call('EXISTS', KEYS[1]) == 1 then return {2} end
if #KEYS == 5 then
  if not redis.call('SET', KEYS[5], ARGV[2], 'NX') then
    local stored = redis.call('HGETALL', ARGV[1] .. redis.call('GET', KEYS[5]))
    if #stored > 0 then return {0, stored} end
    -- the task the key named has expired: the key is free again
    redis.call('SET', KEYS[5], ARGV[2])
  end
end
redis.call('HSET', KEYS[1], unpack(ARGV, 7))
if ARGV[3] ~= '' then
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
  redis.call('PUBLISH', ARGV[6], ARGV[3])
else
  redis.call('ZADD', KEYS[4], ARGV[5], ARGV[2])
  if ARGV[4] ~= '' then redis.call('ZADD', KEYS[3], ARGV[4], ARGV[2]) end
end
return {1, redis.call('HGETALL', KEYS[1])}
`)

/**
 * Many tasks as {@link insertScript} inserts one, in one call. KEYS: due, pending expiry, pending
 * list, then per task its key and, when it has one, its idempotency key's. ARGV: task key prefix,
 * channel, then per task: '1' when it has an idempotency key ('0' otherwise), id, due ms ('' =
 * pending), pending expiry ms ('' = never), created ms, the number of hash arguments, the hash's
 * field/value pairs. An id already stored refuses the batch before anything is written ({2, its
 * index}). Answers {1, replies}: per task 1 when it was inserted, or the stored task's fields when
 * its key named one. One PUBLISH for the batch, with the earliest due instant of the tasks inserted
 * with their body.
 */
const insertManyScript = script(`
local items = {}
local k, a = 4, 3
while a <= #ARGV do
  local keyed = ARGV[a] == '1'
  local item = { task = KEYS[k], key = keyed and KEYS[k + 1] or false, at = a }
  k = k + (keyed and 2 or 1)
  a = a + 6 + tonumber(ARGV[a + 5])
  items[#items + 1] = item
  if redis.call('EXISTS', item.task) == 1 then return {2, #items} end
end
local replies = {}
local earliest = false
for i, item in ipairs(items) do
  local a = item.at
  local id = ARGV[a + 1]
  local stored = false
  if item.key and not redis.call('SET', item.key, id, 'NX') then
    stored = redis.call('HGETALL', ARGV[1] .. redis.call('GET', item.key))
    if #stored == 0 then
      -- the task the key named has expired: the key is free again
      stored = false
      redis.call('SET', item.key, id)
    end
  end
  if stored then
    replies[i] = stored
  else
    redis.call('HSET', item.task, unpack(ARGV, a + 6, a + 5 + tonumber(ARGV[a + 5])))
    if ARGV[a + 2] ~= '' then
      redis.call('ZADD', KEYS[1], ARGV[a + 2], id)
      local due = tonumber(ARGV[a + 2])
      if not earliest or due < earliest then earliest = due end
    else
      redis.call('ZADD', KEYS[3], ARGV[a + 4], id)
      if ARGV[a + 3] ~= '' then redis.call('ZADD', KEYS[2], ARGV[a + 3], id) end
    end
    replies[i] = 1
  end
end
if earliest then redis.call('PUBLISH', ARGV[2], string.format('%d', earliest)) end
return {1, replies}
`)

const getScript = script(`return redis.call('HGETALL', KEYS[1])`)

/**
 * Lua: the destination of the task at `key` — its own, or for a task stored before destinations
 * existed, its callback URL's origin (the default destination), written into the task then.
 */
const DESTINATION_OF = `
local function destinationOf(key, d)
  if d then return d end
  local url = redis.call('HGET', key, 'callbackUrl')
  if not url then return nil end
  local scheme, authority = string.match(url, '^(%a[%w+.-]*://)([^/?#]*)')
  if not scheme then return nil end
  d = string.lower(scheme .. string.gsub(authority, '^.*@', ''))
  redis.call('HSET', key, 'destination', d)
  return d
end`

/**
 * KEYS: task, due, pending expiry, pending list. ARGV: id, body, contentType ('' = none), now,
 * lease expiry, token, destination hold prefix, channel. When the task's destination is held back
 * at `now` (as a limited claim would skip it), the task is scheduled, due now, unleased, and
 * announced; the reply is then 2.
 */
const attachScript = script(`${DESTINATION_OF}
if redis.call('HGET', KEYS[1], 'status') ~= 'pending' then return false end
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'contentType', ARGV[3]) end
local d = destinationOf(KEYS[1], redis.call('HGET', KEYS[1], 'destination'))
if d then
  local hold = redis.call('HMGET', ARGV[7] .. d, 'state', 'until')
  if hold[1] and (tonumber(hold[2]) > tonumber(ARGV[4]) or hold[1] ~= 'throttled') then
    redis.call('HSET', KEYS[1], 'status', 'scheduled', 'body', ARGV[2], 'nextAttemptAt', ARGV[4], 'updatedAt', ARGV[4])
    redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
    redis.call('PUBLISH', ARGV[8], ARGV[4])
    return 2
  end
end
redis.call('HSET', KEYS[1], 'status', 'delivering', 'body', ARGV[2], 'nextAttemptAt', ARGV[5],
  'token', ARGV[6], 'leasedAt', ARGV[4], 'updatedAt', ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[1])
return redis.call('HGETALL', KEYS[1])
`)

/**
 * Outbox: the result attached to a pending task, which is due at once, unleased.
 * KEYS: task, due, pending expiry, pending list. ARGV: id, body, contentType ('' = none), now, channel.
 */
const scheduleScript = script(`
if redis.call('HGET', KEYS[1], 'status') ~= 'pending' then return false end
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
local updated = math.max(tonumber(redis.call('HGET', KEYS[1], 'updatedAt')), tonumber(ARGV[4]))
redis.call('HSET', KEYS[1], 'status', 'scheduled', 'body', ARGV[2], 'nextAttemptAt', ARGV[4], 'updatedAt', updated)
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'contentType', ARGV[3]) end
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
redis.call('PUBLISH', ARGV[5], ARGV[4])
return redis.call('HGETALL', KEYS[1])
`)

/**
 * Fails the pending tasks whose expiry has come. KEYS: pending expiry, pending list, failed.
 * ARGV: task key prefix, now ms, limit, reason, retention seconds, idempotency key prefix,
 * attempts key prefix.
 */
const expirePendingScript = script(`
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, ARGV[3])
local expired = {}
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
  local task = ARGV[1] .. id
  if redis.call('HGET', task, 'status') == 'pending' then
    local updated = math.max(tonumber(redis.call('HGET', task, 'updatedAt')), tonumber(ARGV[2]))
    redis.call('HDEL', task, 'nextAttemptAt')
    redis.call('HSET', task, 'status', 'failed', 'lastError', ARGV[4], 'updatedAt', updated)
    redis.call('ZADD', KEYS[3], updated, id)
    ${expireFinished('task', 'ARGV[7] .. id', 'ARGV[5]', 'ARGV[6]')}
    expired[#expired + 1] = redis.call('HGETALL', task)
  end
end
return expired
`)

/**
 * Checks that the store's keys are free or of the types the scripts write, so a prefix shared with
 * something else is reported at start rather than as a failure on every claim. KEYS: the sorted sets.
 */
const checkScript = script(`
for _, key in ipairs(KEYS) do
  local kind = redis.call('TYPE', key).ok
  if kind ~= 'none' and kind ~= 'zset' then return key .. ' is a ' .. kind end
end
return 'ok'
`)

/**
 * KEYS: due. ARGV: task key prefix, now, limit, lease expiry, token base. Returns each leased
 * hash as JSON text (its HGETALL array).
 * A delivering task's score is its lease expiry, so expired leases come out with the due tasks.
 */
const claimScript = script(`
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, ARGV[3])
local leased = {}
for i, id in ipairs(ids) do
  local key = ARGV[1] .. id
  local status = redis.call('HGET', key, 'status')
  if status == 'scheduled' or status == 'delivering' then
    redis.call('HSET', key, 'status', 'delivering', 'nextAttemptAt', ARGV[4],
      'token', ARGV[5] .. ':' .. i, 'leasedAt', ARGV[2], 'updatedAt', ARGV[2])
    redis.call('ZADD', KEYS[1], ARGV[4], id)
    leased[#leased + 1] = cjson.encode(redis.call('HGETALL', key))
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return leased
`)

/**
 * A claim that limits destinations (see `CallbackStore.claim` with `perDestination`). Leases are
 * also noted in their destination's in-flight set, scored by lease expiry, for listing (a member
 * whose task no longer holds that lease is not counted there). Tasks are chosen in a first pass
 * and leased in a second, since leasing moves them within the due set being read.
 * KEYS: due. ARGV: task key prefix, now, limit, lease expiry, token base, perDestination,
 * destination hold prefix, in-flight prefix, how many due tasks to look past at most, destinations
 * set, the caller's attempts in flight per destination (JSON object).
 * Returns { leased task hashes (each its HGETALL array as JSON text), probe openings per lease (-1: not a probe) }.
 */
const claimLimitedScript = script(`${DESTINATION_OF}
local now = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local cap = tonumber(ARGV[6])
local busy = cjson.decode(ARGV[11])
local room = {}
local probeOf = {}
local function roomFor(d)
  local holdKey = ARGV[7] .. d
  local hold = redis.call('HMGET', holdKey, 'state', 'until', 'openings')
  local c = cap
  if hold[1] then
    if tonumber(hold[2]) > now then return 0 end
    if hold[1] == 'throttled' then
      redis.call('DEL', holdKey)
    else
      c = 1
      probeOf[d] = tonumber(hold[3]) or 0
    end
  end
  local n = busy[d] or 0
  if probeOf[d] and n < 0 then n = 0 end
  return math.max(0, c - n)
end
local chosen = {}
local stale = {}
local offset = 0
-- a destination without room (held, at its cap, or out of it in this claim) is looked past up to
-- maxScan tasks, so its backlog does not hide the others' due tasks behind it
local maxScan = tonumber(ARGV[9]) + limit
while #chosen < limit and offset < maxScan do
  -- the first page is what the claim wants: the common case (no destination over its room) reads no more
  local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', offset, offset == 0 and limit or 200)
  if #ids == 0 then break end
  offset = offset + #ids
  for _, id in ipairs(ids) do
    if #chosen >= limit then break end
    local task = redis.call('HMGET', ARGV[1] .. id, 'status', 'destination', 'deadline')
    if task[1] == 'scheduled' or task[1] == 'delivering' then
      local d = destinationOf(ARGV[1] .. id, task[2])
      if not d or (task[3] and tonumber(task[3]) < now) then
        chosen[#chosen + 1] = { id, false }
      else
        if room[d] == nil then room[d] = roomFor(d) end
        if room[d] > 0 then
          room[d] = room[d] - 1
          chosen[#chosen + 1] = { id, d }
        end
      end
    else
      stale[#stale + 1] = id
    end
  end
end
for _, id in ipairs(stale) do redis.call('ZREM', KEYS[1], id) end
local leased = {}
local probes = {}
local noted = {}
for i, pick in ipairs(chosen) do
  local id = pick[1]
  local key = ARGV[1] .. id
  redis.call('HSET', key, 'status', 'delivering', 'nextAttemptAt', ARGV[4],
    'token', ARGV[5] .. ':' .. i, 'leasedAt', ARGV[2], 'updatedAt', ARGV[2])
  redis.call('ZADD', KEYS[1], ARGV[4], id)
  local probe = -1
  local d = pick[2]
  if d then
    redis.call('ZADD', ARGV[8] .. d, ARGV[4], id)
    if not noted[d] then
      -- once per destination and claim: forget expired leases, list the destination
      noted[d] = true
      redis.call('ZREMRANGEBYSCORE', ARGV[8] .. d, '-inf', now)
      redis.call('SADD', ARGV[10], d)
    end
    if probeOf[d] then
      probe = probeOf[d]
      probeOf[d] = nil
      redis.call('HSET', ARGV[7] .. d, 'state', 'probing', 'until', ARGV[4], 'updatedAt', ARGV[2])
    end
  end
  leased[#leased + 1] = cjson.encode(redis.call('HGETALL', key))
  probes[#probes + 1] = probe
end
return { leased, probes }
`)

/**
 * KEYS: hold, destinations set, failure tally. ARGV: destination, state ('' = healthy again), until,
 * reason, openings, now. The tally goes either way: counting starts afresh.
 */
const setDestinationScript = script(`
redis.call('DEL', KEYS[3])
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
  return 1
end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'until', ARGV[3], 'reason', ARGV[4], 'openings', ARGV[5], 'updatedAt', ARGV[6])
redis.call('SADD', KEYS[2], ARGV[1])
return 1
`)

/**
 * Counts a failed attempt of a destination for every worker (see `CallbackStore.countDestinationFailure`).
 * KEYS: failure tally. ARGV: now, the end of a window starting now, how long the tally outlives its last failure (ms).
 */
const countDestinationFailureScript = script(`
local ends = tonumber(redis.call('HGET', KEYS[1], 'windowEnds') or '0')
if ends <= tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'attempts', 0, 'failures', 0, 'windowEnds', ARGV[2])
end
local tally = { redis.call('HINCRBY', KEYS[1], 'inARow', 1), redis.call('HINCRBY', KEYS[1], 'attempts', 1),
  redis.call('HINCRBY', KEYS[1], 'failures', 1) }
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return tally
`)

/**
 * KEYS: due, destinations set. ARGV: task key prefix, now, hold prefix, in-flight prefix.
 * Destinations that are held, have leases in flight or tasks due; the others leave the set.
 */
const listDestinationsScript = script(`
local now = tonumber(ARGV[2])
local due = {}
local names = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
  local d = redis.call('HGET', ARGV[1] .. id, 'destination')
  if d then
    if not due[d] then names[#names + 1] = d end
    due[d] = (due[d] or 0) + 1
  end
end
for _, d in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if not due[d] then names[#names + 1] = d end
end
local out = {}
for _, d in ipairs(names) do
  local hold = redis.call('HMGET', ARGV[3] .. d, 'state', 'until', 'openings', 'reason')
  local n = 0
  local members = redis.call('ZRANGEBYSCORE', ARGV[4] .. d, '(' .. now, '+inf', 'WITHSCORES')
  for i = 1, #members, 2 do
    local held = redis.call('HMGET', ARGV[1] .. members[i], 'status', 'nextAttemptAt')
    if held[1] == 'delivering' and tonumber(held[2]) == tonumber(members[i + 1]) then n = n + 1 end
  end
  if not hold[1] and n == 0 and not due[d] then
    redis.call('SREM', KEYS[2], d)
  else
    out[#out + 1] = { d, hold[1] or '', hold[2] or '', hold[3] or '0', hold[4] or '', n, due[d] or 0 }
  end
end
return out
`)

/**
 * Lua that lets a finished task, its attempt history and its idempotency key expire after the
 * retention, shared by every script that ends a task. `ttl` and `keyPrefix` are Lua expressions.
 */
function expireFinished(taskKey: string, attemptsKey: string, ttl: string, keyPrefix: string, idempotencyKey?: string): string {
  return `
local ttl = tonumber(${ttl})
if ttl > 0 then
  redis.call('EXPIRE', ${taskKey}, ttl)
  redis.call('EXPIRE', ${attemptsKey}, ttl)
  local key = ${idempotencyKey ?? `redis.call('HGET', ${taskKey}, 'idempotencyKey')`}
  if key then redis.call('EXPIRE', ${keyPrefix} .. key, ttl) end
end`
}

/**
 * Lua defining `complete_one`, which records one attempt: fenced by the lease's token (0 when the
 * lease is no longer held), it counts a healthy answer toward the destination's breaker tally,
 * appends the attempt to the history and either schedules the next attempt or ends the task.
 */
const completeOne = `
local function complete_one(task, due, history, failed, id, token, status, nextAt, hasError, lastError, finishedAt, record, historyLength, retention, channel, keyPrefix, tallyPrefix, answerStatus)
  -- one read for everything the completion needs to know of the task
  local now = redis.call('HMGET', task, 'token', 'status', 'destination', 'updatedAt', 'attempts', 'idempotencyKey')
  if now[1] ~= token or now[2] ~= 'delivering' then
    return 0
  end
  local answer = tonumber(answerStatus)
  if answer and answer < 500 and answer ~= 408 and now[3] then
    local tally = tallyPrefix .. now[3]
    local ends = redis.call('HGET', tally, 'windowEnds')
    if ends then
      if tonumber(ends) <= tonumber(finishedAt) then
        redis.call('DEL', tally)
      else
        redis.call('HSET', tally, 'inARow', 0)
        redis.call('HINCRBY', tally, 'attempts', 1)
      end
    end
  end
  local updated = math.max(tonumber(now[4]), tonumber(finishedAt))
  local attempts = (tonumber(now[5]) or 0) + 1
  -- the history is trimmed only once it has grown past its length (RPUSH answers the new length)
  if redis.call('RPUSH', history, record) > tonumber(historyLength) then
    redis.call('LTRIM', history, -tonumber(historyLength), -1)
  end
  if status == 'scheduled' then
    if hasError == '1' then
      redis.call('HSET', task, 'status', status, 'updatedAt', updated, 'attempts', attempts, 'nextAttemptAt', nextAt, 'lastError', lastError)
    else
      redis.call('HSET', task, 'status', status, 'updatedAt', updated, 'attempts', attempts, 'nextAttemptAt', nextAt)
    end
    redis.call('HDEL', task, 'token', 'leasedAt')
    redis.call('ZADD', due, nextAt, id)
    redis.call('PUBLISH', channel, nextAt)
    return 1
  end
  if status == 'delivered' then
    redis.call('HSET', task, 'status', status, 'updatedAt', updated, 'attempts', attempts)
    redis.call('HDEL', task, 'token', 'leasedAt', 'nextAttemptAt', 'lastError')
  elseif hasError == '1' then
    redis.call('HSET', task, 'status', status, 'updatedAt', updated, 'attempts', attempts, 'lastError', lastError)
    redis.call('HDEL', task, 'token', 'leasedAt', 'nextAttemptAt')
  else
    redis.call('HSET', task, 'status', status, 'updatedAt', updated, 'attempts', attempts)
    redis.call('HDEL', task, 'token', 'leasedAt', 'nextAttemptAt')
  end
  redis.call('ZREM', due, id)
  ${expireFinished('task', 'history', 'retention', 'keyPrefix', 'now[6]')}
  if status == 'failed' then
    redis.call('ZADD', failed, updated, id)
    -- entries whose task has expired by now leave with the failures that come later
    if ttl > 0 then redis.call('ZREMRANGEBYSCORE', failed, '-inf', string.format('(%d', updated - ttl * 1000)) end
  end
  return 1
end
`

/**
 * KEYS: task, due, attempts, failed. ARGV: id, token, status, next attempt ms ('' when terminal),
 * has last error ('1'/'0'), last error, updated ms, attempt JSON, history cap, retention seconds,
 * channel, idempotency key prefix, failure tally prefix, the attempt's HTTP status ('' = none).
 * An answer (below 500, not 408) counts toward its destination's failure tally when it has one.
 */
const completeScript = script(`${completeOne}
return complete_one(KEYS[1], KEYS[2], KEYS[3], KEYS[4], unpack(ARGV, 1, 14))
`)

/** What a task's completion passes in a group: its two keys and {@link COMPLETION_ARGS} arguments. */
const COMPLETION_ARGS = 9

/**
 * Many completions in one call (group commit). KEYS: due, failed, then each completion's task and
 * attempt history. ARGV: history length, retention seconds, channel, idempotency key prefix, tally
 * prefix, then per completion: id, token, status, next attempt ms, has error, last error, finished
 * ms, record, answer status. Returns one entry per completion: 1 recorded, 0 the lease is no longer
 * held, or the error that completion met (the others are recorded all the same).
 */
const completeManyScript = script(`${completeOne}
local out = {}
local count = (#KEYS - 2) / 2
for i = 0, count - 1 do
  local a = 5 + i * ${COMPLETION_ARGS}
  local ok, result = pcall(complete_one, KEYS[3 + i * 2], KEYS[1], KEYS[4 + i * 2], KEYS[2], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6], ARGV[a + 7], ARGV[a + 8], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[a + 9])
  if ok then out[i + 1] = result
  elseif type(result) == 'table' and result.err then out[i + 1] = tostring(result.err)
  else out[i + 1] = tostring(result) end
end
return out
`)

/** KEYS: task, due. ARGV: id, token, next attempt ms ('' = when the lease was taken), channel. */
const releaseScript = script(`
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[2] or redis.call('HGET', KEYS[1], 'status') ~= 'delivering' then
  return 0
end
local due = ARGV[3]
if due == '' then due = redis.call('HGET', KEYS[1], 'leasedAt') end
redis.call('HDEL', KEYS[1], 'token', 'leasedAt')
redis.call('HSET', KEYS[1], 'status', 'scheduled', 'nextAttemptAt', due)
redis.call('ZADD', KEYS[2], due, ARGV[1])
redis.call('PUBLISH', ARGV[4], due)
return 1
`)

/** KEYS: task, due, attempts, pending expiry, pending list. ARGV: id, now ms, retention seconds, idempotency key prefix. */
const cancelScript = script(`
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'pending' and status ~= 'scheduled' and status ~= 'delivering' then return 0 end
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('HDEL', KEYS[1], 'token', 'leasedAt', 'nextAttemptAt')
local updated = math.max(tonumber(redis.call('HGET', KEYS[1], 'updatedAt')), tonumber(ARGV[2]))
redis.call('HSET', KEYS[1], 'status', 'cancelled', 'updatedAt', updated)
redis.call('ZREM', KEYS[2], ARGV[1])
${expireFinished('KEYS[1]', 'KEYS[3]', 'ARGV[3]', 'ARGV[4]')}
return 1
`)

/**
 * KEYS: task, due, failed, attempts. ARGV: id, token, reason, now ms, retention seconds, idempotency key
 * prefix. Ends a task that cannot be read back (its hash was corrupted), so it cannot block every claim.
 */
const failUnreadableScript = script(`
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], 'token', 'leasedAt', 'nextAttemptAt')
redis.call('HSET', KEYS[1], 'status', 'failed', 'lastError', ARGV[3], 'updatedAt', ARGV[4])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
${expireFinished('KEYS[1]', 'KEYS[4]', 'ARGV[5]', 'ARGV[6]')}
return 1
`)

const attemptsScript = script(`return redis.call('LRANGE', KEYS[1], 0, -1)`)

// ---- inspection: failed tasks sit in a sorted set scored by when they failed -------------------

/**
 * KEYS: failed. ARGV: task key prefix, since ms ('-inf'), cursor score ('+inf'), cursor id ('' =
 * none), how many. Newest first; members that share a score come in reverse byte order, as ZREVRANGE
 * gives them. Tasks whose hash has expired are skipped (the set is trimmed as later tasks fail).
 */
const listFailedScript = script(`
local found = {}
local wanted = tonumber(ARGV[5])
local offset = 0
while #found < wanted do
  local chunk = redis.call('ZREVRANGEBYSCORE', KEYS[1], ARGV[3], ARGV[2], 'WITHSCORES', 'LIMIT', offset, 200)
  if #chunk == 0 then break end
  offset = offset + #chunk / 2
  for i = 1, #chunk, 2 do
    local id = chunk[i]
    local seen = ARGV[4] ~= '' and tonumber(chunk[i + 1]) == tonumber(ARGV[3]) and id >= ARGV[4]
    if not seen then
      local fields = redis.call('HGETALL', ARGV[1] .. id)
      if #fields > 0 then
        found[#found + 1] = fields
        if #found == wanted then break end
      end
    end
  end
end
return found
`)

/**
 * KEYS: task, due, failed, attempts. ARGV: id, now ms, idempotency key prefix, channel.
 * A failed task had its keys set to expire: they are kept again while it is on its way.
 */
const redeliverScript = script(`
if redis.call('HGET', KEYS[1], 'status') ~= 'failed' then return 0 end
local updated = math.max(tonumber(redis.call('HGET', KEYS[1], 'updatedAt')), tonumber(ARGV[2]))
redis.call('HDEL', KEYS[1], 'token', 'leasedAt')
redis.call('HSET', KEYS[1], 'status', 'scheduled', 'nextAttemptAt', ARGV[2], 'updatedAt', updated)
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('PERSIST', KEYS[1])
redis.call('PERSIST', KEYS[4])
local key = redis.call('HGET', KEYS[1], 'idempotencyKey')
if key then redis.call('PERSIST', ARGV[3] .. key) end
redis.call('PUBLISH', ARGV[4], ARGV[2])
return 1
`)

// ---- search: an id or an idempotency key is a key lookup, failed tasks have their sorted set, ----
// ---- everything else is a SCAN of the task hashes (an operator's occasional look)            ----

/** KEYS: idempotency key. ARGV: task key prefix. The task the key names, or an empty list. */
const byIdempotencyKeyScript = script(`
local id = redis.call('GET', KEYS[1])
if not id then return {} end
return redis.call('HGETALL', ARGV[1] .. id)
`)

/** KEYS: tasks. Each task's hash (empty when it has gone). */
const getManyScript = script(`
local found = {}
for i = 1, #KEYS do found[i] = redis.call('HGETALL', KEYS[i]) end
return found
`)

/**
 * ARGV: SCAN cursor, MATCH pattern, COUNT. The next cursor, then per task hash seen the fields a
 * search filters on: id, status, event, callbackUrl, idempotencyKey ('' for none), updatedAt.
 */
const scanTasksScript = script(`
local reply = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', tonumber(ARGV[3]))
local found = {reply[1]}
for _, key in ipairs(reply[2]) do
  local ok, fields = pcall(redis.call, 'HMGET', key, 'id', 'status', 'event', 'callbackUrl', 'idempotencyKey', 'updatedAt')
  if ok and fields[1] then
    for i = 1, 6 do found[#found + 1] = fields[i] or '' end
  end
end
return found
`)

/**
 * ARGV: SCAN cursor, MATCH pattern, COUNT, attempts key prefix, from ms. The next cursor, then per
 * task hash: status, callbackUrl, updatedAt, lastError ('' for none), the number n of attempts
 * that follow, then those n attempt records (only for tasks updated after `from`: an attempt
 * before that cannot be in the span).
 */
const scanSummaryScript = script(`
local reply = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', tonumber(ARGV[3]))
local found = {reply[1]}
local from = tonumber(ARGV[5])
for _, key in ipairs(reply[2]) do
  local ok, fields = pcall(redis.call, 'HMGET', key, 'id', 'status', 'callbackUrl', 'updatedAt', 'lastError')
  if ok and fields[1] then
    found[#found + 1] = fields[2]
    found[#found + 1] = fields[3] or ''
    found[#found + 1] = fields[4] or '0'
    found[#found + 1] = fields[5] or ''
    local attempts = {}
    if tonumber(fields[4] or '0') > from then attempts = redis.call('LRANGE', ARGV[4] .. fields[1], 0, -1) end
    found[#found + 1] = #attempts
    for _, attempt in ipairs(attempts) do found[#found + 1] = attempt end
  end
end
return found
`)

/** KEYS: due. ARGV: now ms. The earliest due score, when one is due. */
const oldestDueScript = script(`return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, 1)`)

/** Due tasks a limited claim looks past (held or capped destinations) before it stops looking. */
const MAX_SKIPPED_PER_CLAIM = 10_000

/** KEYS: due. ARGV: now ms. A delivering task's score is its lease expiry, so expired leases count. */
const countDueScript = script(`return redis.call('ZCOUNT', KEYS[1], '-inf', ARGV[1])`)

/**
 * Creates a store on the user's ioredis client. Nothing to migrate: keys appear as tasks do.
 *
 * @example
 * ```ts
 * import { Redis } from 'ioredis'
 * import { createWorker } from 'endpoint-callback'
 * import { createRedisStore } from 'endpoint-callback/redis'
 *
 * const store = createRedisStore({ client: new Redis(process.env.REDIS_URL), prefix: 'billing-callbacks' })
 * createWorker({ store, secret: process.env.CALLBACK_SECRET }).start()
 * ```
 */
export function createRedisStore(options: RedisStoreOptions): RedisStore {
  const client = checkClient(options, 'createRedisStore')
  checkOptionNames(options, REDIS_STORE_OPTION_NAMES, 'createRedisStore')
  const prefix = checkPrefix(options.prefix ?? 'endpoint-callback', 'createRedisStore')
  const attemptHistory = options.attemptHistory ?? 50
  if (!Number.isInteger(attemptHistory) || attemptHistory < 20) {
    throw new TypeError('createRedisStore: `attemptHistory` must be an integer >= 20')
  }
  const retentionSeconds = options.retentionSeconds ?? 7 * 86_400
  if (!Number.isInteger(retentionSeconds) || retentionSeconds < 0) {
    throw new TypeError('createRedisStore: `retentionSeconds` must be an integer >= 0')
  }
  const timeoutMs = options.timeoutMs ?? 30_000
  if (!Number.isSafeInteger(timeoutMs) || timeoutMs <= 0) {
    throw new TypeError('createRedisStore: `timeoutMs` must be a positive integer of milliseconds')
  }
  const pubsub = options.subscribe ?? typeof client.duplicate === 'function'
  if (typeof pubsub !== 'boolean') throw new TypeError('createRedisStore: `subscribe` must be a boolean')
  if (pubsub && typeof client.duplicate !== 'function') {
    throw new TypeError('createRedisStore: `subscribe` needs a `client` with duplicate() (an ioredis client)')
  }

  const taskPrefix = `${prefix}:task:`
  const keyPrefix = `${prefix}:key:`
  const dueKey = `${prefix}:due`
  const failedKey = `${prefix}:failed`
  // pending tasks twice: by when they expire (for the sweep), and by when they were created (to list them)
  const pendingExpiryKey = `${prefix}:pending-expiry`
  const pendingKey = `${prefix}:pending`
  const channel = `${prefix}:due`
  const holdPrefix = `${prefix}:destination:`
  const inFlightPrefix = `${prefix}:in-flight:`
  const destinationsKey = `${prefix}:destinations`
  const tallyPrefix = `${prefix}:tally:`
  const taskKey = (id: string) => `${taskPrefix}${id}`
  const attemptsKey = (id: string) => `${prefix}:attempts:${id}`
  const listeners = createDueListeners()
  // Workers in this process need not wait for the notification's round trip through the server.
  const wakeHere = listeners.wakeSoon
  let subscriber: RedisSubscriber | undefined

  // One reconnect for every call that timed out together.
  let reconnecting = false
  const reconnect = () => {
    if (reconnecting || typeof client.disconnect !== 'function') return
    reconnecting = true
    setTimeout(() => (reconnecting = false), timeoutMs).unref()
    client.disconnect(true)
  }

  async function run(operation: string, which: Script, keys: string[], args: Array<string | number>) {
    try {
      return await withinDeadline(runScript(client, which, keys, args), timeoutMs, operation)
    } catch (error) {
      if (missedDeadline(error)) reconnect()
      const reason = error instanceof Error ? `: ${error.message}` : ''
      throw new StoreError('ERR_CALLBACK_STORE', `Redis ${operation} failed${reason}`, { cause: error })
    }
  }

  /**
   * Group commit: the first completion goes out at once, and those that arrive while it is in
   * flight go out together in the next call, one script for them all. A busy worker then sends
   * one command per group instead of one per attempt (each a socket write on both sides). Each
   * completion stays fenced by its own token and resolves only once its call has returned.
   */
  const completions = createCompletionGroup({
    one: (keys, args) => run('complete', completeScript, [keys[0], dueKey, keys[1], failedKey], completionArgs(args)),
    many: (keys, args) => run('complete', completeManyScript, [dueKey, failedKey, ...keys], [attemptHistory, retentionSeconds, channel, keyPrefix, tallyPrefix, ...args])
  })
  /** One completion's arguments ({@link COMPLETION_ARGS} of them) as the single-completion script takes them. */
  const completionArgs = (args: Array<string | number>) => [...args.slice(0, 8), attemptHistory, retentionSeconds, channel, keyPrefix, tallyPrefix, args[8]!]

  // A connection that breaks is reopened by ioredis, which sends the unanswered commands again:
  // every call may still end well, so the break is reported to whoever subscribed to the errors.
  const recovered = createRecoveredErrors()
  const connectionError = (which: string) => (error: unknown) => {
    const reason = error instanceof Error ? `: ${error.message}` : ''
    recovered.report(new StoreError('ERR_CALLBACK_STORE', `Redis ${which} failed${reason}`, { cause: error }))
  }
  const clientError = connectionError('connection')

  const closeSubscriber = () => {
    const current = subscriber
    subscriber = undefined
    current?.disconnect()
  }

  return {
    prefix,

    async insert(task: NewCallbackTask, callOptions?: StoreCallOptions) {
      refuseTransaction(callOptions)
      const withBody = task.body !== undefined
      const due = withBody ? (task.nextAttemptAt ?? task.createdAt).getTime() : undefined
      const fields = taskFields(task, due)
      const keys = [taskKey(task.id), dueKey, pendingExpiryKey, pendingKey]
      if (task.idempotencyKey !== undefined) keys.push(`${keyPrefix}${task.idempotencyKey}`)
      const reply = (await run('insert', insertScript, keys, [
        taskPrefix,
        task.id,
        due ?? '',
        withBody || task.nextAttemptAt === undefined ? '' : task.nextAttemptAt.getTime(),
        task.createdAt.getTime(),
        channel,
        ...fields
      ])) as [number, string[]?]
      if (reply[0] === 2 || !reply[1]) {
        throw new StoreError('ERR_CALLBACK_STORE', `Redis insert failed: task id ${task.id} is already stored`)
      }
      if (reply[0] === 1 && withBody) wakeHere()
      return { task: toTask(reply[1]), created: reply[0] === 1 }
    },

    async insertMany(tasks: readonly NewCallbackTask[], callOptions?: StoreCallOptions) {
      refuseTransaction(callOptions)
      const batch = dedupeBatch(tasks)
      if (batch.unique.length === 0) return []
      const keys = [dueKey, pendingExpiryKey, pendingKey]
      const args: Array<string | number> = [taskPrefix, channel]
      for (const task of batch.unique) {
        const withBody = task.body !== undefined
        const due = withBody ? (task.nextAttemptAt ?? task.createdAt).getTime() : undefined
        const fields = taskFields(task, due)
        keys.push(taskKey(task.id))
        if (task.idempotencyKey !== undefined) keys.push(`${keyPrefix}${task.idempotencyKey}`)
        args.push(
          task.idempotencyKey === undefined ? '0' : '1',
          task.id,
          due ?? '',
          withBody || task.nextAttemptAt === undefined ? '' : task.nextAttemptAt.getTime(),
          task.createdAt.getTime(),
          fields.length
        )
        for (const field of fields) args.push(field)
      }
      const reply = (await run('insertMany', insertManyScript, keys, args)) as [number, Array<number | string[]>]
      if (reply[0] === 2) {
        throw new StoreError('ERR_CALLBACK_STORE', `Redis insert failed: task id ${batch.unique[Number(reply[1]) - 1]?.id} is already stored`)
      }
      const answers = batch.unique.map((task, index) => {
        const stored = reply[1][index]
        return Array.isArray(stored) ? { task: toTask(stored), created: false } : { task: insertedTask(task), created: true }
      })
      const due = earliestDue(batch.unique.filter((_, index) => !Array.isArray(reply[1][index])))
      if (due !== undefined) wakeHere(due)
      return answerBatch(batch, answers)
    },

    async get(id) {
      const fields = (await run('get', getScript, [taskKey(id)], [])) as string[]
      if (fields.length === 0) return undefined
      try {
        return toTask(fields)
      } catch (error) {
        // No cause: a parser's message quotes the stored text, which may be a secret.
        throw new StoreError('ERR_CALLBACK_STORE', `Redis get failed: task ${id} cannot be read: ${unreadableReason(error)}`)
      }
    },

    async attach(id, result, lease) {
      const token = randomUUID()
      const expiresAt = new Date(lease.now.getTime() + lease.leaseMs)
      const fields = (await run('attach', attachScript, [taskKey(id), dueKey, pendingExpiryKey, pendingKey], [
        id,
        result.body,
        result.contentType ?? '',
        lease.now.getTime(),
        expiresAt.getTime(),
        token,
        holdPrefix,
        channel
      ])) as string[] | number | null
      if (fields === 2) {
        // its destination is held back: scheduled for a worker, not leased
        wakeHere()
        return undefined
      }
      return Array.isArray(fields) ? { task: toTask(fields), token, expiresAt } : undefined
    },

    async schedule(id, result, { now }, callOptions) {
      refuseTransaction(callOptions)
      const fields = (await run('schedule', scheduleScript, [taskKey(id), dueKey, pendingExpiryKey, pendingKey], [
        id,
        result.body,
        result.contentType ?? '',
        now.getTime(),
        channel
      ])) as string[] | null
      if (!fields) return undefined
      wakeHere()
      return toTask(fields)
    },

    async expirePending({ now, limit, reason }) {
      if (limit <= 0) return []
      const expired = (await run('expirePending', expirePendingScript, [pendingExpiryKey, pendingKey, failedKey], [
        taskPrefix,
        now.getTime(),
        limit,
        reason,
        retentionSeconds,
        keyPrefix,
        `${prefix}:attempts:`
      ])) as string[][]
      return expired.map(toTask)
    },

    async check() {
      const reply = await run('check', checkScript, [dueKey, failedKey, pendingExpiryKey, pendingKey], [])
      if (reply !== 'ok') {
        throw new StoreError(
          'ERR_CALLBACK_STORE',
          `Redis store with prefix "${prefix}" cannot use its keys: ${String(reply)}; another application uses this prefix — choose another \`prefix\``
        )
      }
    },

    async claim({ now, limit, leaseMs, perDestination, inFlight }) {
      if (limit <= 0) return []
      const expiresAt = now.getTime() + leaseMs
      // Each leased hash comes as one JSON text (its HGETALL, field after value): one string to
      // parse natively instead of two per field through the client's reply parser.
      let leased: string[]
      let probes: number[] | undefined
      if (perDestination === undefined) {
        leased = (await run('claim', claimScript, [dueKey], [taskPrefix, now.getTime(), limit, expiresAt, randomUUID()])) as string[]
      } else {
        ;[leased, probes] = (await run('claim', claimLimitedScript, [dueKey], [
          taskPrefix,
          now.getTime(),
          limit,
          expiresAt,
          randomUUID(),
          perDestination,
          holdPrefix,
          inFlightPrefix,
          MAX_SKIPPED_PER_CLAIM,
          destinationsKey,
          JSON.stringify(inFlight === undefined || inFlight.size === 0 ? {} : Object.fromEntries(inFlight))
        ])) as [string[], number[]]
      }
      const leases: Lease[] = []
      for (const [index, text] of leased.entries()) {
        const fields = JSON.parse(text) as string[]
        const token = field(fields, 'token') ?? ''
        try {
          const lease: Lease = { task: toTask(fields), token, expiresAt: new Date(expiresAt) }
          const openings = probes?.[index] ?? -1
          if (openings >= 0) lease.probe = { openings }
          leases.push(lease)
        } catch (error) {
          // A hash that no longer parses would fail every claim that meets it and starve the
          // tasks leased with it: end it as failed, with the reason, and hand out the others.
          const id = field(fields, 'id') ?? ''
          const reason = `ERR_CALLBACK_STORE: the stored task cannot be read: ${unreadableReason(error)}`
          await run('claim', failUnreadableScript, [taskKey(id), dueKey, failedKey, attemptsKey(id)], [
            id,
            token,
            reason,
            now.getTime(),
            retentionSeconds,
            keyPrefix
          ])
        }
      }
      return leases
    },

    async complete(lease: Lease, attempt: AttemptRecord, resolution: AttemptResolution) {
      const id = lease.task.id
      const finishedAt = attempt.startedAt.getTime() + Math.max(0, attempt.durationMs)
      const completed = await completions.add(taskKey(id), attemptsKey(id), [
        id,
        lease.token,
        resolution.status,
        resolution.status === 'scheduled' ? resolution.nextAttemptAt.getTime() : '',
        resolution.lastError === undefined ? '0' : '1',
        resolution.lastError ?? '',
        finishedAt,
        JSON.stringify({ ...attempt, startedAt: attempt.startedAt.getTime() }),
        attempt.status ?? ''
      ])
      if (completed && resolution.status === 'scheduled') wakeHere(resolution.nextAttemptAt.getTime())
      return completed
    },

    async release(lease: Lease, nextAttemptAt?: Date) {
      const id = lease.task.id
      const reply = await run('release', releaseScript, [taskKey(id), dueKey], [
        id,
        lease.token,
        nextAttemptAt?.getTime() ?? '',
        channel
      ])
      if (reply === 1) wakeHere(nextAttemptAt?.getTime())
      return reply === 1
    },

    async cancel(id) {
      const reply = await run('cancel', cancelScript, [taskKey(id), dueKey, attemptsKey(id), pendingExpiryKey, pendingKey], [
        id,
        Date.now(),
        retentionSeconds,
        keyPrefix
      ])
      return reply === 1
    },

    async attempts(id) {
      const entries = (await run('attempts', attemptsScript, [attemptsKey(id)], [])) as string[]
      return entries.map((entry) => {
        const { startedAt, ...rest } = JSON.parse(entry) as Omit<AttemptRecord, 'startedAt'> & { startedAt: number }
        return { ...rest, startedAt: new Date(startedAt) }
      })
    },

    async list(query: TaskListQuery) {
      const checked = checkListQuery(query)
      const { limit } = checked
      const idOf = (fields: string[]) => field(fields, 'id') ?? ''
      // a hash that cannot be read is kept, so the page names it as unreadable (readTaskPage)
      const keep = (fields: string[]) => {
        let task: CallbackTask
        try {
          task = toTask(fields)
        } catch {
          return true
        }
        return matchesListQuery(task, task.updatedAt.getTime(), checked)
      }
      if (checked.id !== undefined || checked.idempotencyKey !== undefined) {
        const fields = (checked.id !== undefined
          ? await run('list', getScript, [taskKey(checked.id)], [])
          : await run('list', byIdempotencyKeyScript, [`${keyPrefix}${checked.idempotencyKey}`], [taskPrefix])) as string[]
        return readTaskPage(fields.length === 0 ? [] : [fields].filter(keep), limit, toTask, idOf)
      }
      if (checked.status === 'failed') {
        // the failed set, newest first, a chunk at a time until the page is full
        const found: string[][] = []
        let from = checked.after
        const chunk = Math.max(limit + 1, 100)
        for (;;) {
          const hashes = (await run('list', listFailedScript, [failedKey], [
            taskPrefix,
            checked.since === undefined ? '-inf' : checked.since.getTime(),
            from === undefined ? '+inf' : from.updatedAt,
            from?.id ?? '',
            chunk
          ])) as string[][]
          for (const fields of hashes) if (found.length <= limit && keep(fields)) found.push(fields)
          const last = hashes[hashes.length - 1]
          if (found.length > limit || hashes.length < chunk || last === undefined) return readTaskPage(found, limit, toTask, idOf)
          from = { updatedAt: Number(field(last, 'updatedAt')), id: idOf(last) }
        }
      }
      // every other search: SCAN the task hashes, filter and sort here, then read the page's tasks
      const listed: { id: string; updatedAt: number }[] = []
      const pattern = `${taskPrefix.replace(/[*?[\]\\]/g, '\\$&')}*`
      let cursor = '0'
      do {
        const reply = (await run('list', scanTasksScript, [], [cursor, pattern, 1000])) as string[]
        cursor = reply[0]!
        for (let i = 1; i + 5 < reply.length; i += 6) {
          const [id, status, event, callbackUrl, idempotencyKey, updated] = reply.slice(i, i + 6) as [string, TaskStatus, string, string, string, string]
          const updatedAt = Number(updated)
          if (matchesListQuery({ id, status, event, callbackUrl, idempotencyKey: idempotencyKey === '' ? undefined : idempotencyKey }, updatedAt, checked)) {
            listed.push({ id, updatedAt })
          }
        }
      } while (cursor !== '0')
      listed.sort(listOrder)
      const ids = listed.slice(0, limit + 1).map((each) => each.id)
      if (ids.length === 0) return { tasks: [] }
      const hashes = (await run('list', getManyScript, ids.map(taskKey), [])) as string[][]
      return readTaskPage(hashes.filter((fields) => fields.length > 0), limit, toTask, idOf)
    },

    async redeliver(id: string, { now }: { now: Date }) {
      const reply = await run('redeliver', redeliverScript, [taskKey(id), dueKey, failedKey, attemptsKey(id)], [
        id,
        now.getTime(),
        keyPrefix,
        channel
      ])
      if (reply === 1) wakeHere()
      return reply === 1
    },

    async setDestination(destination: string, hold: DestinationHold | null, now: Date) {
      await run('setDestination', setDestinationScript, [`${holdPrefix}${destination}`, destinationsKey, `${tallyPrefix}${destination}`], [
        destination,
        hold?.state ?? '',
        hold?.until.getTime() ?? '',
        hold?.reason ?? '',
        hold?.openings ?? 0,
        now.getTime()
      ])
    },

    async countDestinationFailure(destination: string, now: Date, windowMs: number) {
      const at = now.getTime()
      const [inARow, attempts, failures] = (await run('countDestinationFailure', countDestinationFailureScript, [`${tallyPrefix}${destination}`], [
        at,
        at + windowMs,
        // a tally with no failure for a day (or a window, if longer) is let go
        Math.max(windowMs, 86_400_000)
      ])) as number[]
      return { inARow: Number(inARow), attempts: Number(attempts), failures: Number(failures) }
    },

    async listDestinations(now: Date) {
      const at = now.getTime()
      const rows = (await run('listDestinations', listDestinationsScript, [dueKey, destinationsKey], [
        taskPrefix,
        at,
        holdPrefix,
        inFlightPrefix
      ])) as [string, string, string, string, string, number, number][]
      const found = rows.map(([destination, state, until, openings, reason, inFlight, due]): DestinationState => {
        const held = state !== '' && !(state === 'throttled' && Number(until) <= at)
        const one: DestinationState = {
          destination,
          state: held ? (state as DestinationState['state']) : 'closed',
          openings: Number(openings),
          inFlight: Number(inFlight),
          due: Number(due)
        }
        if (held) one.until = new Date(Number(until))
        if (reason !== '') one.lastError = reason
        return one
      })
      return found.sort((a, b) => b.due - a.due || (a.destination < b.destination ? -1 : 1)).slice(0, 1000)
    },

    async countDue(now: Date) {
      return Number(await run('countDue', countDueScript, [dueKey], [now.getTime()]))
    },

    // One SCAN of the task hashes (and of the attempts of the tasks updated in the span): its cost
    // grows with the tasks stored, like every search that is not by id, key or failed.
    async summarize({ now, bucketMs, buckets, countCap, hosts }: TaskSummaryQuery): Promise<TaskSummary> {
      const at = now.getTime()
      const from = at - bucketMs * buckets
      const summary: TaskSummary = {
        counts: { pending: 0, scheduled: 0, delivering: 0, delivered: 0, failed: 0, cancelled: 0 },
        due: Math.min(Number(await run('summarize', countDueScript, [dueKey], [at])), countCap),
        attempts: Array.from({ length: buckets }, (_, index) => ({ start: new Date(at - bucketMs * (buckets - index)), delivered: 0, failed: 0 })),
        failingHosts: []
      }
      const oldest = (await run('summarize', oldestDueScript, [dueKey], [at])) as string[]
      if (oldest[1] !== undefined) summary.oldestDueAt = new Date(Number(oldest[1]))
      const failing = new Map<string, TaskSummary['failingHosts'][number]>()
      const pattern = `${taskPrefix.replace(/[*?[\]\\]/g, '\\$&')}*`
      let cursor = '0'
      do {
        const reply = (await run('summarize', scanSummaryScript, [], [cursor, pattern, 1000, `${prefix}:attempts:`, from])) as Array<string | number>
        cursor = String(reply[0])
        for (let i = 1; i + 4 < reply.length; ) {
          const status = String(reply[i]) as TaskStatus
          const callbackUrl = String(reply[i + 1])
          const updatedAt = Number(reply[i + 2])
          const lastError = String(reply[i + 3])
          const count = Number(reply[i + 4])
          const records = reply.slice(i + 5, i + 5 + count)
          i += 5 + count
          if (status in summary.counts) summary.counts[status] = Math.min(summary.counts[status] + 1, countCap)
          for (const record of records) {
            const { startedAt, outcome } = JSON.parse(String(record)) as { startedAt: number; outcome: string }
            if (startedAt <= from || startedAt > at) continue
            const bucket = summary.attempts[buckets - 1 - Math.floor((at - startedAt) / bucketMs)]
            if (bucket !== undefined) bucket[outcome === 'delivered' ? 'delivered' : 'failed'] += 1
          }
          if ((status === 'failed' || status === 'scheduled') && lastError !== '' && updatedAt >= from) {
            const host = callbackHost(callbackUrl)
            const seen = failing.get(host)
            if (seen === undefined) failing.set(host, { host, tasks: 1, lastError, lastFailedAt: new Date(updatedAt) })
            else {
              seen.tasks += 1
              if (updatedAt > seen.lastFailedAt.getTime()) Object.assign(seen, { lastError, lastFailedAt: new Date(updatedAt) })
            }
          }
        }
      } while (cursor !== '0')
      summary.failingHosts = [...failing.values()]
        .sort((a, b) => b.tasks - a.tasks || b.lastFailedAt.getTime() - a.lastFailedAt.getTime())
        .slice(0, hosts)
      return summary
    },

    subscribe(fn: (dueAt?: number) => void) {
      const remove = listeners.add(fn)
      if (pubsub && !subscriber) {
        const current = client.duplicate!()
        subscriber = current
        let ready = 0
        // ioredis reconnects by itself and polling covers the gap, but the break is heard of
        current.on('error', connectionError('pub/sub connection'))
        current.on('ready', () => {
          // messages published while disconnected are lost: look once after every reconnect
          if (ready++ > 0 && subscriber === current) listeners.wakeAll()
        })
        current.on('message', (from: string, message: string) => {
          if (from === channel) listeners.wakeAll(announcedDueAt(message))
        })
        current.subscribe(channel).then(
          () => listeners.wakeAll(),
          () => {}
        )
      }
      let removed = false
      return () => {
        if (removed) return
        removed = true
        remove()
        if (listeners.size === 0) closeSubscriber()
      }
    },

    subscribeErrors(fn: (error: Error) => void) {
      const remove = recovered.add(fn)
      if (recovered.size === 1) client.on?.('error', clientError)
      let removed = false
      return () => {
        if (removed) return
        removed = true
        remove()
        // the user's client is left as it was found
        if (recovered.size === 0) client.removeListener?.('error', clientError)
      }
    },

    async close() {
      closeSubscriber()
    }
  }
}

/** Redis has no transaction a caller could hand over: refused rather than written outside it. */
function refuseTransaction(options: StoreCallOptions | undefined): void {
  if (options?.transaction !== undefined) {
    throw new TypeError('`transaction`: the Redis store cannot join a database transaction; use the PostgreSQL store for the outbox pattern')
  }
}

const REDIS_STORE_OPTION_NAMES: ReadonlySet<string> = new Set(['client', 'prefix', 'attemptHistory', 'retentionSeconds', 'subscribe', 'timeoutMs'])

/** Options of {@link createRedisReplayGuard}. */
export interface RedisReplayGuardOptions {
  /** The user's ioredis client. */
  client: RedisScriptClient
  /** Key prefix. Default `endpoint-callback:replay`. */
  prefix?: string | undefined
  /**
   * How long a processed `webhook-id` is remembered, seconds. Default 3 days, longer than the
   * default retry schedule (about 28 h) so every redelivery is recognised.
   */
  ttlSeconds?: number | undefined
  /**
   * How long an id stays "in flight" when its handler never reports back (the process died),
   * seconds; after that the sender's next retry is processed again. Default 120.
   */
  inFlightSeconds?: number | undefined
}

const beginScript = script(`
local seen = redis.call('GET', KEYS[1])
if seen then return seen end
redis.call('SET', KEYS[1], 'in-flight', 'EX', ARGV[1])
return 'new'
`)

const forgetScript = script(`
if redis.call('GET', KEYS[1]) == 'in-flight' then redis.call('DEL', KEYS[1]) end
return 1
`)

const rememberScript = script(`redis.call('SET', KEYS[1], 'done', 'EX', ARGV[1]) return 1`)

/**
 * A `ReplayGuard` shared by every receiver process through Redis: a redelivered `webhook-id` is
 * acknowledged without running the handler twice, across processes and restarts.
 *
 * @example
 * ```ts
 * import { Redis } from 'ioredis'
 * import { callbackReceiver } from 'endpoint-callback/express'
 * import { createRedisReplayGuard } from 'endpoint-callback/redis'
 *
 * const replayGuard = createRedisReplayGuard({ client: new Redis(process.env.REDIS_URL) })
 * app.post('/callbacks', callbackReceiver({ secret, replayGuard }), handler)
 * ```
 */
export function createRedisReplayGuard(options: RedisReplayGuardOptions): ReplayGuard {
  const client = checkClient(options, 'createRedisReplayGuard')
  const prefix = checkPrefix(options.prefix ?? 'endpoint-callback:replay', 'createRedisReplayGuard')
  const ttlSeconds = options.ttlSeconds ?? 3 * 86_400
  if (!Number.isInteger(ttlSeconds) || ttlSeconds < 1) {
    throw new TypeError('createRedisReplayGuard: `ttlSeconds` must be a positive integer')
  }
  const inFlightSeconds = options.inFlightSeconds ?? 120
  if (!Number.isInteger(inFlightSeconds) || inFlightSeconds < 1) {
    throw new TypeError('createRedisReplayGuard: `inFlightSeconds` must be a positive integer')
  }
  const key = (id: string) => `${prefix}:${id}`
  const run = async (operation: string, which: Script, id: string, args: Array<string | number>) => {
    try {
      return await runScript(client, which, [key(id)], args)
    } catch (error) {
      const reason = error instanceof Error ? `: ${error.message}` : ''
      throw new StoreError('ERR_CALLBACK_STORE', `Redis replay guard ${operation} failed${reason}`, { cause: error })
    }
  }
  return {
    async begin(id) {
      return (await run('begin', beginScript, id, [inFlightSeconds])) as 'new' | 'in-flight' | 'done'
    },
    async remember(id) {
      await run('remember', rememberScript, id, [ttlSeconds])
    },
    async forget(id) {
      await run('forget', forgetScript, id, [])
    }
  }
}

/** The user's ioredis client, checked once: the scripts need `eval` and `evalsha`. */
function checkClient<C extends { eval: unknown; evalsha: unknown }>(options: { client: C } | null | undefined, who: string): C {
  if (options === null || typeof options !== 'object') {
    throw new TypeError(`${who}: options must be an object with a \`client\``)
  }
  const { client } = options
  if (client === null || typeof client !== 'object' || typeof client.evalsha !== 'function' || typeof client.eval !== 'function') {
    throw new TypeError(`${who}: \`client\` must be an ioredis client (it has no eval/evalsha)`)
  }
  return client
}

function checkPrefix(prefix: unknown, where: string): string {
  if (typeof prefix !== 'string' || prefix.length === 0 || prefix.length > 200) {
    throw new TypeError(`${where}: \`prefix\` must be a non-empty string of at most 200 characters`)
  }
  return prefix
}

function field(fields: string[], name: string): string | undefined {
  for (let i = 0; i < fields.length; i += 2) if (fields[i] === name) return fields[i + 1]
  return undefined
}

/** The task hash's field/value pairs as `insert` writes them; `due` is when a task with a body falls due. */
function taskFields(task: NewCallbackTask, due: number | undefined): string[] {
  const withBody = task.body !== undefined
  const fields: string[] = [
    'id', task.id,
    'status', withBody ? 'scheduled' : 'pending',
    'callbackUrl', task.callbackUrl,
    'event', task.event,
    'attempts', '0',
    'createdAt', String(task.createdAt.getTime()),
    'updatedAt', String(task.createdAt.getTime())
  ]
  if (task.idempotencyKey !== undefined) fields.push('idempotencyKey', task.idempotencyKey)
  if (task.secret !== undefined) fields.push('secret', JSON.stringify(task.secret))
  if (task.encryptionKey !== undefined) fields.push('encryptionKey', JSON.stringify(task.encryptionKey))
  if (task.verifyIntent === true) fields.push('verifyIntent', '1')
  if (task.metadata !== undefined) fields.push('metadata', JSON.stringify(task.metadata))
  if (task.deadline !== undefined) fields.push('deadline', String(task.deadline.getTime()))
  if (task.destination !== undefined) fields.push('destination', task.destination)
  if (withBody) {
    fields.push('body', task.body!, 'nextAttemptAt', String(due))
    if (task.contentType !== undefined) fields.push('contentType', task.contentType)
  } else if (task.nextAttemptAt !== undefined) {
    fields.push('nextAttemptAt', String(task.nextAttemptAt.getTime()))
  }
  return fields
}

function toTask(fields: string[]): CallbackTask {
  const hash: Record<string, string> = {}
  for (let i = 0; i + 1 < fields.length; i += 2) hash[fields[i]!] = fields[i + 1]!
  const task: CallbackTask = {
    id: hash.id!,
    status: hash.status as TaskStatus,
    callbackUrl: hash.callbackUrl!,
    event: hash.event!,
    attempts: Number(hash.attempts),
    createdAt: new Date(Number(hash.createdAt)),
    updatedAt: new Date(Number(hash.updatedAt))
  }
  if (hash.idempotencyKey !== undefined) task.idempotencyKey = hash.idempotencyKey
  if (hash.secret !== undefined) task.secret = parseStoredJson(hash.secret, 'secret')
  if (hash.encryptionKey !== undefined) task.encryptionKey = parseStoredJson(hash.encryptionKey, 'encryptionKey')
  if (hash.verifyIntent === '1') task.verifyIntent = true
  if (hash.metadata !== undefined) task.metadata = parseStoredJson(hash.metadata, 'metadata')
  if (hash.body !== undefined) task.body = hash.body
  if (hash.contentType !== undefined) task.contentType = hash.contentType
  if (hash.nextAttemptAt !== undefined) task.nextAttemptAt = new Date(Number(hash.nextAttemptAt))
  if (hash.deadline !== undefined) task.deadline = new Date(Number(hash.deadline))
  if (hash.lastError !== undefined) task.lastError = hash.lastError
  if (hash.destination !== undefined) task.destination = hash.destination
  return task
}

