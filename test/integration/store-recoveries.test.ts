/**
 * A durable store that gets over a broken connection by itself still tells the operator: the
 * connection carrying a completion dies exactly while the completion is in flight (a TCP proxy the
 * test controls; the shared servers are never touched), the store recovers and the call succeeds,
 * and the worker's `onEvent` receives the original error as an `error` event — while the task is
 * delivered, and recorded, exactly once.
 */
import assert from 'node:assert/strict'
import pg from 'pg'
import { Redis } from 'ioredis'
import { createCallbackTask, createHttpTransport, createWorker, generateSecret } from 'endpoint-callback'
import type { CallbackStore, DeliveryEvent } from 'endpoint-callback'
import { createPostgresStore } from 'endpoint-callback/postgres'
import { createRedisStore, type RedisClient } from 'endpoint-callback/redis'
import { makeDue, openDurableStore, type DurableKind, type DurableStore } from '../support/durable-stores.ts'
import { startLoopbackReceiver, type LoopbackReceiver } from '../support/loopback-receiver.ts'
import { DATABASE_URL, REDIS_URL, serviceSkip, serviceTests } from '../support/services.ts'
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy.ts'
import { eventually } from '../support/waits.ts'

const urlPolicy = { allowHttp: true, allowHosts: ['127.0.0.1'] }
const STORE_TIMEOUT_MS = 1000

/**
 * The store of `kind` on schema / prefix `name`, through `proxy`, whose first completion statement's
 * connection dies as it is sent: for PostgreSQL it goes silent (no FIN, no RST: only the store's
 * own timeout tells), for Redis it is reset (ioredis reconnects and sends the command again).
 */
function storeBreakingFirstCompletion(kind: DurableKind, name: string, proxy: TcpProxy): { store: CallbackStore; broken(): boolean; close(): Promise<void> } {
  const url = new URL(kind === 'postgres' ? DATABASE_URL : REDIS_URL)
  url.hostname = '127.0.0.1'
  url.port = String(proxy.port)
  let armed = true
  if (kind === 'postgres') {
    const pool = new pg.Pool({ connectionString: url.href, max: 4 })
    pool.on('error', () => {})
    pool.on('connect', (client) => {
      const query = client.query.bind(client) as (...args: unknown[]) => unknown
      ;(client as { query: unknown }).query = (...args: unknown[]) => {
        const sent = query(...args)
        const text = typeof args[0] === 'string' ? args[0] : (args[0] as { text?: string }).text ?? ''
        // the statement is written; the proxy in this process has not read it yet
        if (armed && /INSERT INTO .*attempts/s.test(text)) {
          armed = false
          const socket = (client as unknown as { connection: { stream: { localPort: number } } }).connection.stream
          proxy.silence({ clientPort: socket.localPort })
        }
        return sent
      }
    })
    const store = createPostgresStore({ pool, schema: name, timeoutMs: STORE_TIMEOUT_MS })
    return { store, broken: () => !armed, close: async () => {
      await store.close()
      await pool.end()
    } }
  }
  const redis = new Redis(url.href, { maxRetriesPerRequest: null })
  redis.on('error', () => {})
  const evalsha = redis.evalsha.bind(redis) as (...args: Array<string | number>) => Promise<unknown>
  const client: RedisClient = {
    eval: redis.eval.bind(redis) as RedisClient['eval'],
    disconnect: (reconnect) => redis.disconnect(reconnect),
    on: (event, listener) => redis.on(event, listener),
    removeListener: (event, listener) => redis.removeListener(event, listener),
    evalsha(sha, numKeys, ...rest) {
      const sent = evalsha(sha, numKeys, ...rest)
      // the completion script: task, due, attempts and failed keys
      if (armed && numKeys === 4 && String(rest[2]).includes(':attempts:') && String(rest[3]).endsWith(':failed')) {
        armed = false
        proxy.cut()
        proxy.restore()
      }
      return sent
    },
  }
  const store = createRedisStore({ client, prefix: name, timeoutMs: STORE_TIMEOUT_MS, subscribe: false })
  return { store, broken: () => !armed, close: async () => {
    await store.close()
    redis.disconnect()
  } }
}

for (const kind of ['postgres', 'redis'] as const satisfies DurableKind[]) {
  const skip = await serviceSkip(kind)
  const { after, before, describe, it } = serviceTests(skip)

  describe(`${kind} store that recovers from a broken connection by itself`, { timeout: 60_000 }, () => {
    let direct: DurableStore
    let receiver: LoopbackReceiver
    let proxy: TcpProxy

    before(async () => {
      direct = await openDurableStore(kind)
      receiver = await startLoopbackReceiver()
      const target = new URL(kind === 'postgres' ? DATABASE_URL : REDIS_URL)
      proxy = await startTcpProxy({ host: target.hostname, port: Number(target.port || (kind === 'postgres' ? 5432 : 6379)) })
    })
    after(async () => {
      await proxy?.close()
      await receiver?.close()
      await direct?.drop()
    })

    it('reports the broken completion as an error event, and delivers and records the task once', async () => {
      const secret = generateSecret()
      const task = await createCallbackTask({ callbackUrl: receiver.url, event: 'report.ready' }, { store: direct.store, secret, urlPolicy })
      await makeDue(direct.store, task)

      const through = storeBreakingFirstCompletion(kind, direct.name, proxy)
      const events: DeliveryEvent[] = []
      const transport = createHttpTransport({ timeoutMs: 5000, urlPolicy })
      // the lease outlasts the store's timeout and its recovery: the task is not claimed twice
      const worker = createWorker({ store: through.store, transport, secret, urlPolicy, leaseMs: 20_000, concurrency: 1, pollIntervalMs: 100, onEvent: (event) => events.push(event) })
      worker.start()
      try {
        await eventually(() => events.some((event) => event.type === 'delivered'), 'the task was delivered', {
          ms: 15_000,
          describe: () => events.map((event) => event.type).join(', ')
        })
        await eventually(() => events.some((event) => event.type === 'error'), 'the broken completion was reported', {
          ms: 5000,
          describe: () => events.map((event) => event.type).join(', ')
        })
      } finally {
        await worker.stop()
        await transport.close()
        await through.close()
      }
      assert.ok(through.broken(), 'the completion statement was sent, and its connection broken')
      const errors = events.flatMap((event) => (event.type === 'error' ? [event.error as Error & { code?: string; cause?: unknown }] : []))
      // PostgreSQL: the completion timed out, was read back and sent again; Redis: the connection reset
      const reported = errors.find((error) => (kind === 'postgres' ? /^PostgreSQL complete failed/ : /^Redis connection failed/).test(error.message))
      assert.ok(reported, `the completion's broken connection is among the errors: ${errors.map((error) => error.message).join('; ')}`)
      assert.equal(reported.code, 'ERR_CALLBACK_STORE')
      assert.ok(reported.cause instanceof Error, 'the original error is kept as the cause')
      assert.ok(!reported.message.includes(task.id) && !reported.message.includes('report.ready'), 'no stored field is quoted')
      assert.ok(errors.every((error) => error.code === 'ERR_CALLBACK_STORE'), 'every error is a store error')

      assert.equal(receiver.seen.get(task.id), 1, 'sent once')
      assert.deepEqual(events.filter((event) => event.type === 'delivered' || event.type === 'lease-lost').map((event) => event.type), ['delivered'])
      assert.equal((await direct.store.get(task.id))?.status, 'delivered')
      assert.equal((await direct.store.attempts(task.id)).length, 1, 'recorded once')
    })
  })
}

const listening = serviceTests(await serviceSkip('postgres'))
listening.describe('postgres store whose LISTEN connection breaks', { timeout: 30_000 }, () => {
  listening.it('reports the break to subscribeErrors and listens again on a new connection', async () => {
    const direct = await openDurableStore('postgres')
    const target = new URL(DATABASE_URL)
    const proxy = await startTcpProxy({ host: target.hostname, port: Number(target.port || 5432) })
    const url = new URL(DATABASE_URL)
    url.hostname = '127.0.0.1'
    url.port = String(proxy.port)
    const pool = new pg.Pool({ connectionString: url.href, max: 4 })
    const store = createPostgresStore({ pool, schema: direct.name, timeoutMs: STORE_TIMEOUT_MS })
    const reported: Error[] = []
    let wakes = 0
    const unsubscribeErrors = store.subscribeErrors((error) => reported.push(error))
    const unsubscribe = store.subscribe(() => wakes++)
    try {
      // LISTEN holds: the store says so by waking once
      await eventually(() => wakes === 1, 'LISTEN took hold')
      proxy.cut()
      proxy.restore()
      await eventually(() => reported.length > 0, 'the broken LISTEN connection was reported')
      // listening again: the store wakes its subscribers once more, since announcements were lost
      await eventually(() => wakes === 2, 'LISTEN took hold again')
      assert.match(reported[0]!.message, /^PostgreSQL LISTEN failed/)
      assert.equal((reported[0] as Error & { code?: string }).code, 'ERR_CALLBACK_STORE')
      assert.ok(reported[0]!.cause instanceof Error, 'the original error is kept as the cause')
    } finally {
      unsubscribe()
      unsubscribeErrors()
      await store.close()
      await pool.end()
      await proxy.close()
      await direct.drop()
    }
  })
})
