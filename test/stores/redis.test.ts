import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { EventEmitter } from 'node:events'
import { newTask, scheduleOneRetry, t0 } from '../support/durable-stores.ts'
import { Redis } from 'ioredis'
import { CallbackError } from 'endpoint-callback'
import { storeContract } from 'endpoint-callback/testing'
import { createRedisReplayGuard, createRedisStore, type RedisStore } from 'endpoint-callback/redis'
import { REDIS_URL, serviceSkip, serviceTests, uniqueName } from '../support/services.ts'

const skip = await serviceSkip('redis')
const { after, describe, it } = serviceTests(skip)
const client = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 3 })
client.on('error', () => {})
after(() => client.disconnect())

/** Deletes every key under `prefix` (SCAN, never KEYS on a shared server). */
async function dropPrefix(prefix: string): Promise<void> {
  let cursor = '0'
  do {
    const [next, keys] = await client.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 500)
    cursor = next
    if (keys.length > 0) await client.del(...keys)
  } while (cursor !== '0')
}

function freshStore(options: { attemptHistory?: number; retentionSeconds?: number } = {}): RedisStore {
  return createRedisStore({ client, prefix: uniqueName('ec_redis'), ...options })
}

storeContract('redis', () => freshStore(), {
  skip,
  cleanup: (store) => dropPrefix((store as RedisStore).prefix)
})



describe('redis store', () => {
  const stores: RedisStore[] = []
  const track = (store: RedisStore) => {
    stores.push(store)
    return store
  }
  after(async () => {
    for (const store of stores) {
      await store.close()
      await dropPrefix(store.prefix)
    }
  })

  it('refuses a client without eval and bad options, naming the option', () => {
    assert.throws(() => createRedisStore({ client: {} as never }), { name: 'TypeError', message: /`client`/ })
    assert.throws(() => createRedisStore({ client, prefix: '' }), { name: 'TypeError', message: /`prefix`/ })
    assert.throws(() => createRedisStore({ client, attemptHistory: 5 }), { name: 'TypeError', message: /`attemptHistory`/ })
    assert.throws(() => createRedisStore({ client, retentionSeconds: -1 }), { name: 'TypeError', message: /`retentionSeconds`/ })
  })

  it('refuses to insert inside a transaction it cannot join, storing nothing', async () => {
    const store = track(freshStore())
    const input = newTask()
    await assert.rejects(store.insert(input, { transaction: {} }), { name: 'TypeError', message: /`transaction`/ })
    assert.equal(await store.get(input.id), undefined)
  })

  it('keeps the tasks of two prefixes apart, idempotency keys included', async () => {
    const a = track(freshStore())
    const b = track(freshStore())
    const input = newTask({ idempotencyKey: 'same-key' })
    await a.insert(input)
    await a.release((await a.attach(input.id, { body: '{}' }, { now: new Date(t0), leaseMs: 1000 }))!)
    assert.equal(await b.get(input.id), undefined)
    assert.deepEqual(await b.claim({ now: new Date(t0 + 60_000), limit: 10, leaseMs: 1000 }), [])
    assert.equal((await b.insert(newTask({ idempotencyKey: 'same-key' }))).created, true)
    assert.equal((await a.claim({ now: new Date(t0 + 60_000), limit: 10, leaseMs: 1000 })).length, 1)
  })

  it('puts a delivering task back in the due set scored by its lease expiry', async () => {
    const store = track(freshStore())
    const input = newTask()
    await store.insert(input)
    const lease = (await store.attach(input.id, { body: '{}' }, { now: new Date(t0), leaseMs: 2000 }))!
    assert.equal(Number(await client.zscore(`${store.prefix}:due`, input.id)), t0 + 2000)
    assert.deepEqual(await store.claim({ now: new Date(t0 + 1999), limit: 1, leaseMs: 2000 }), [])
    const [again] = await store.claim({ now: new Date(t0 + 2000), limit: 1, leaseMs: 2000 })
    assert.equal(again?.task.id, input.id)
    assert.notEqual(again?.token, lease.token)
    assert.equal(await store.complete(lease, { attempt: 1, startedAt: new Date(t0), durationMs: 1, outcome: 'delivered' }, { status: 'delivered' }), false)
    assert.equal(await store.complete(again!, { attempt: 1, startedAt: new Date(t0 + 2000), durationMs: 1, outcome: 'delivered' }, { status: 'delivered' }), true)
    assert.equal(await client.zscore(`${store.prefix}:due`, input.id), null, 'a finished task leaves the due set')
  })

  it('hands out a claimed task with every character of its body and fields as stored', async () => {
    const store = track(freshStore())
    const body = JSON.stringify({ text: 'ünïcødé 😀 "quoted" back\\slash / slash \u0001 ctl \u2028 tab\t', n: [1.5, -0, 1e21] })
    const input = newTask({ event: 'rëport/ready "x"', metadata: { note: 'ÿ \\ " / 😀', nested: { a: [null, true] } } })
    await store.insert({ ...input, body, contentType: 'application/json; charset=utf-8', nextAttemptAt: new Date(t0) })
    const [lease] = await store.claim({ now: new Date(t0), limit: 1, leaseMs: 1000 })
    assert.equal(lease?.task.body, body)
    assert.equal(lease?.task.event, input.event)
    assert.deepEqual(lease?.task.metadata, input.metadata)
    assert.equal(lease?.task.contentType, 'application/json; charset=utf-8')
    assert.deepEqual(lease?.task, await store.get(input.id))
  })

  it('records the completions of one moment in one call, each fenced by its own lease, one that fails failing alone', async () => {
    let calls = 0
    // the user's client, counting the scripts the store sends
    const counting = new Proxy(client, {
      get(target, name, receiver) {
        if (name === 'evalsha' || name === 'eval') {
          return (...args: unknown[]) => {
            calls++
            return (target[name] as (...a: unknown[]) => Promise<unknown>).apply(target, args)
          }
        }
        return Reflect.get(target, name, receiver)
      }
    })
    const store = track(createRedisStore({ client: counting, prefix: uniqueName('ec_redis') }))
    const inputs = Array.from({ length: 12 }, () => newTask())
    for (const input of inputs) await store.insert(input)
    const leases = await Promise.all(inputs.map((input) => store.attach(input.id, { body: '{}' }, { now: new Date(t0), leaseMs: 5000 })))
    // one lease is stale (its task was claimed again), one task's history cannot take the record
    const [stale, broken] = [leases[3]!, leases[7]!]
    await client.set(`${store.prefix}:attempts:${broken.task.id}`, 'not a list')
    const record = (attempt: number) => ({ attempt, startedAt: new Date(t0 + 10), durationMs: 4, status: 204, outcome: 'delivered' as const })
    calls = 0
    const results = await Promise.allSettled(
      leases.map((lease, index) =>
        store.complete(index === 3 ? { ...stale, token: 'a token never handed out' } : lease!, record(1), index % 2 === 0
          ? { status: 'delivered' }
          : { status: 'scheduled', nextAttemptAt: new Date(t0 + 60_000), lastError: 'HTTP 503' })
      )
    )
    assert.ok(calls <= 2, `${calls} calls for 12 completions`)
    results.forEach((result, index) => {
      if (index === 7) {
        assert.equal(result.status, 'rejected')
        assert.equal((result as PromiseRejectedResult).reason.code, 'ERR_CALLBACK_STORE')
        assert.match((result as PromiseRejectedResult).reason.message, /WRONGTYPE/)
      } else {
        assert.deepEqual(result, { status: 'fulfilled', value: index !== 3 }, `completion ${index}`)
      }
    })
    const tasks = await Promise.all(inputs.map((input) => store.get(input.id)))
    tasks.forEach((task, index) => {
      if (index === 3 || index === 7) {
        // not recorded: still leased, no attempt counted
        assert.equal(task?.status, 'delivering', `task ${index}`)
        assert.equal(task?.attempts, 0, `task ${index}`)
      } else {
        assert.equal(task?.status, index % 2 === 0 ? 'delivered' : 'scheduled', `task ${index}`)
        assert.equal(task?.attempts, 1, `task ${index}`)
        assert.equal(task?.lastError, index % 2 === 0 ? undefined : 'HTTP 503', `task ${index}`)
      }
    })
    assert.deepEqual((await store.attempts(inputs[0]!.id)).map((entry) => entry.status), [204])
  })

  it('caps the attempt history at the latest attemptHistory entries', async () => {
    const store = track(freshStore({ attemptHistory: 20 }))
    const input = newTask()
    await store.insert(input)
    let lease = (await store.attach(input.id, { body: '{}' }, { now: new Date(t0), leaseMs: 1000 }))!
    for (let attempt = 1; attempt <= 25; attempt++) {
      const at = t0 + attempt * 10_000
      await store.complete(lease, { attempt, startedAt: new Date(at), durationMs: 3, status: 503, outcome: 'retry' }, {
        status: 'scheduled',
        nextAttemptAt: new Date(at + 1000)
      })
      ;[lease] = (await store.claim({ now: new Date(at + 1000), limit: 1, leaseMs: 1000 })) as [typeof lease]
    }
    const history = await store.attempts(input.id)
    assert.equal(history.length, 20)
    assert.deepEqual(history.map((record) => record.attempt), Array.from({ length: 20 }, (_, i) => i + 6))
    assert.equal((await store.get(input.id))?.attempts, 25)
  })

  it('lets finished tasks expire after retentionSeconds and keeps unfinished ones', async () => {
    const store = track(freshStore({ retentionSeconds: 3600 }))
    const done = newTask({ idempotencyKey: randomUUID() })
    const waiting = newTask()
    await store.insert(done)
    await store.insert(waiting)
    const lease = (await store.attach(done.id, { body: '{}' }, { now: new Date(t0), leaseMs: 1000 }))!
    await store.complete(lease, { attempt: 1, startedAt: new Date(t0), durationMs: 1, outcome: 'delivered' }, { status: 'delivered' })
    const ttl = await client.ttl(`${store.prefix}:task:${done.id}`)
    assert.ok(ttl > 3500 && ttl <= 3600, `task ttl ${ttl}`)
    assert.ok((await client.ttl(`${store.prefix}:attempts:${done.id}`)) > 3500)
    assert.ok((await client.ttl(`${store.prefix}:key:${done.idempotencyKey}`)) > 3500)
    assert.equal(await client.ttl(`${store.prefix}:task:${waiting.id}`), -1)

    const forever = track(freshStore({ retentionSeconds: 0 }))
    const kept = newTask()
    await forever.insert(kept)
    assert.equal(await forever.cancel(kept.id), true)
    assert.equal(await client.ttl(`${forever.prefix}:task:${kept.id}`), -1)
  })

  it('accepts a new task for an idempotency key whose task has expired', async () => {
    const store = track(freshStore())
    const first = newTask({ idempotencyKey: 'expiring' })
    await store.insert(first)
    await client.del(`${store.prefix}:task:${first.id}`) // as EXPIRE would
    const second = newTask({ idempotencyKey: 'expiring' })
    const answer = await store.insert(second)
    assert.equal(answer.created, true)
    assert.equal(answer.task.id, second.id)
  })

  it('ends a task whose stored hash no longer parses as failed, and still hands out the others', async () => {
    const store = track(freshStore())
    const ids: string[] = []
    for (let i = 0; i < 3; i++) {
      const input = newTask()
      ids.push(input.id)
      await store.insert(input)
      await store.release((await store.attach(input.id, { body: '{}' }, { now: new Date(t0 + i), leaseMs: 1000 }))!)
    }
    await client.rpush(`${store.prefix}:attempts:${ids[1]}`, '{"attempt":1}') // history from an earlier attempt
    await client.hset(`${store.prefix}:task:${ids[1]}`, 'metadata', '{not json')
    const leases = await store.claim({ now: new Date(t0 + 60_000), limit: 10, leaseMs: 1000 })
    assert.deepEqual(leases.map((lease) => lease.task.id), [ids[0], ids[2]])
    await assert.rejects(store.get(ids[1]!), { code: 'ERR_CALLBACK_STORE', message: /cannot be read/ })
    assert.equal(await client.hget(`${store.prefix}:task:${ids[1]}`, 'status'), 'failed')
    assert.match((await client.hget(`${store.prefix}:task:${ids[1]}`, 'lastError')) ?? '', /cannot be read/)
    // it ends like any failed task: the hash and its history expire after the retention
    assert.ok((await client.ttl(`${store.prefix}:task:${ids[1]}`)) > 0)
    assert.ok((await client.ttl(`${store.prefix}:attempts:${ids[1]}`)) > 0, 'the history of an unreadable task never expires')
    const again = await store.claim({ now: new Date(t0 + 120_000), limit: 10, leaseMs: 1000 })
    assert.deepEqual(again.map((lease) => lease.task.id).sort(), [ids[0], ids[2]].sort(), 'never handed out again')
  })

  it('wakes a subscriber on another connection when a retry is scheduled', async () => {
    const prefix = uniqueName('ec_redis_pubsub')
    const otherClient = new Redis(REDIS_URL)
    const listening = createRedisStore({ client: otherClient, prefix })
    const writing = track(createRedisStore({ client, prefix, subscribe: false }))
    try {
      let wakes = 0
      const unsubscribe = listening.subscribe(() => wakes++)
      await waitFor(() => wakes >= 1) // subscribed: it says so by waking once
      const before = wakes
      await scheduleOneRetry(writing)
      await waitFor(() => wakes > before)
      unsubscribe()
    } finally {
      await listening.close()
      otherClient.disconnect()
    }
  })

  it('reports the breaks ioredis gets over by itself to subscribeErrors, and leaves the client as it found it', async () => {
    const own = new Redis(REDIS_URL, { lazyConnect: true })
    const pubsub = new EventEmitter()
    const store = createRedisStore({
      client: Object.assign(own, { duplicate: () => Object.assign(pubsub, { subscribe: async () => 1, disconnect() {} }) }),
      prefix: uniqueName('ec_redis'),
    })
    const listenersBefore = own.listenerCount('error')
    const reported: Error[] = []
    const unsubscribeDue = store.subscribe(() => {})
    const unsubscribe = store.subscribeErrors((error) => reported.push(error))
    try {
      own.emit('error', Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }))
      pubsub.emit('error', Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:6379'), { code: 'ECONNREFUSED' }))
      assert.deepEqual(reported.map((error) => error.message), [
        'Redis connection failed: read ECONNRESET',
        'Redis pub/sub connection failed: connect ECONNREFUSED 127.0.0.1:6379',
      ])
      assert.ok(reported.every((error) => error instanceof CallbackError && error.code === 'ERR_CALLBACK_STORE' && error.cause instanceof Error))
    } finally {
      unsubscribe()
      unsubscribe()
      unsubscribeDue()
      await store.close()
    }
    assert.equal(own.listenerCount('error'), listenersBefore, "the store's listener is gone from the user's client")
    own.disconnect()
  })

  it('limits the tasks stored before destinations (no destination field) as tasks of their origin, and keeps it', async () => {
    const store = track(freshStore())
    const url = 'https://user:pw@Client.Example:8443/cb?q=1'
    const ids: string[] = []
    for (let n = 1; n <= 3; n++) {
      // as the code before destinations stored them: no destination in the hash
      const input = newTask({ callbackUrl: url, createdAt: new Date(t0) })
      await store.insert(input)
      assert.equal(await client.hexists(`${store.prefix}:task:${input.id}`, 'destination'), 0)
      const held = await store.attach(input.id, { body: '{}' }, { now: new Date(t0), leaseMs: 60_000 })
      assert.ok(held)
      await store.release(held, new Date(t0 + n))
      ids.push(input.id)
    }
    const claimed = await store.claim({ now: new Date(t0 + 10), limit: 10, leaseMs: 60_000, perDestination: 2, inFlight: new Map() })
    assert.deepEqual(claimed.map((lease) => lease.task.id), ids.slice(0, 2))
    assert.deepEqual(claimed.map((lease) => lease.task.destination), [new URL(url).origin, new URL(url).origin])
    assert.equal((await store.get(ids[2]!))?.destination, new URL(url).origin, 'the one passed over has its destination now too')
  })

  it('reports a failing server as a StoreError with the cause kept', async () => {
    const broken = new Redis('redis://127.0.0.1:1', { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null })
    broken.on('error', () => {})
    const store = createRedisStore({ client: broken, prefix: 'unreachable', subscribe: false })
    await assert.rejects(store.get('x'), (error: unknown) => {
      assert.ok(error instanceof CallbackError)
      assert.equal(error.code, 'ERR_CALLBACK_STORE')
      assert.ok(error.cause)
      return true
    })
    broken.disconnect()
  })
})

describe('redis replay guard', () => {
  const prefixes: string[] = []
  const guard = (options: { ttlSeconds?: number; inFlightSeconds?: number } = {}) => {
    const prefix = uniqueName('ec_replay')
    prefixes.push(prefix)
    return { prefix, guard: createRedisReplayGuard({ client, prefix, ...options }) }
  }
  after(async () => {
    for (const prefix of prefixes) await dropPrefix(prefix)
  })

  it('answers new once, in-flight while the handler runs, and done after it succeeded', async () => {
    const { guard: replay } = guard()
    assert.equal(await replay.begin('msg_1'), 'new')
    assert.equal(await replay.begin('msg_1'), 'in-flight')
    await replay.remember('msg_1')
    assert.equal(await replay.begin('msg_1'), 'done')
    assert.equal(await replay.begin('msg_2'), 'new')
  })

  it('forgets a delivery whose handler failed, so the retry is processed again', async () => {
    const { guard: replay } = guard()
    assert.equal(await replay.begin('msg_1'), 'new')
    await replay.forget('msg_1')
    assert.equal(await replay.begin('msg_1'), 'new')
  })

  it('does not forget a delivery that already succeeded', async () => {
    const { guard: replay } = guard()
    await replay.begin('msg_1')
    await replay.remember('msg_1')
    await replay.forget('msg_1')
    assert.equal(await replay.begin('msg_1'), 'done')
  })

  it('lets exactly one of 20 concurrent receivers process an id, across connections', async () => {
    const prefix = uniqueName('ec_replay_race')
    prefixes.push(prefix)
    const clients = Array.from({ length: 4 }, () => new Redis(REDIS_URL))
    try {
      const guards = clients.map((each) => createRedisReplayGuard({ client: each, prefix }))
      const answers = await Promise.all(Array.from({ length: 20 }, (_, i) => guards[i % guards.length]!.begin('msg_race')))
      assert.equal(answers.filter((answer) => answer === 'new').length, 1)
      assert.equal(answers.filter((answer) => answer === 'in-flight').length, 19)
    } finally {
      for (const each of clients) each.disconnect()
    }
  })

  it('remembers a processed id for ttlSeconds and an unfinished one for inFlightSeconds', async () => {
    const { prefix, guard: replay } = guard({ ttlSeconds: 600, inFlightSeconds: 1 })
    await replay.begin('msg_done')
    await replay.remember('msg_done')
    const ttl = await client.ttl(`${prefix}:msg_done`)
    assert.ok(ttl > 590 && ttl <= 600, `ttl ${ttl}`)
    assert.equal(await replay.begin('msg_crashed'), 'new') // its handler never reports back
    await new Promise((resolve) => setTimeout(resolve, 1100))
    assert.equal(await replay.begin('msg_crashed'), 'new')
  })

  it('remembers a processed id for 3 days by default', async () => {
    const { prefix, guard: replay } = guard()
    await replay.begin('msg_done')
    await replay.remember('msg_done')
    const ttl = await client.ttl(`${prefix}:msg_done`)
    assert.ok(ttl > 3 * 86_400 - 60 && ttl <= 3 * 86_400, `a processed id is kept ${ttl} s, not 3 days`)
  })

  it('refuses bad options, naming the option', () => {
    assert.throws(() => createRedisReplayGuard({ client: {} as never }), { name: 'TypeError', message: /`client`/ })
    assert.throws(() => createRedisReplayGuard({ client, ttlSeconds: 0 }), { name: 'TypeError', message: /`ttlSeconds`/ })
    assert.throws(() => createRedisReplayGuard({ client, inFlightSeconds: 1.5 }), {
      name: 'TypeError',
      message: /`inFlightSeconds`/
    })
  })
})

async function waitFor(condition: () => boolean, timeoutMs = 10_000): Promise<void> {
  const until = Date.now() + timeoutMs
  while (!condition()) {
    if (Date.now() > until) throw new Error(`not within ${timeoutMs} ms: ${String(condition)}`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}
