/**
 * The database's side of a connection dies without FIN or RST (a TCP proxy the test controls stops
 * forwarding; the shared servers are never touched): every store call is bounded, fails with an
 * `error` event, and the worker carries on over new connections until every task is delivered.
 */
import assert from 'node:assert/strict'
import pg from 'pg'
import { Redis } from 'ioredis'
import { createCallbackTask, createHttpTransport, createWorker, generateSecret } from 'endpoint-callback'
import type { CallbackStore, DeliveryEvent } from 'endpoint-callback'
import { createPostgresStore } from 'endpoint-callback/postgres'
import { createRedisStore } from 'endpoint-callback/redis'
import { inParallel, makeDue, openDurableStore, type DurableKind, type DurableStore } from '../support/durable-stores.ts'
import { startLoopbackReceiver, type LoopbackReceiver } from '../support/loopback-receiver.ts'
import { DATABASE_URL, REDIS_URL, serviceSkip, serviceTests } from '../support/services.ts'
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy.ts'

const LEASE_MS = 2000
const urlPolicy = { allowHttp: true, allowHosts: ['127.0.0.1'] }

async function until(condition: () => boolean | Promise<boolean>, what: string, timeoutMs: number) {
  const deadline = Date.now() + timeoutMs
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 25))
  }
}

/** The store of `kind` on schema / prefix `name`, reached through `url` (the proxy). */
function storeThrough(kind: DurableKind, name: string, url: string): { store: CallbackStore; close(): Promise<void> } {
  if (kind === 'postgres') {
    const pool = new pg.Pool({ connectionString: url, max: 4 })
    pool.on('error', () => {})
    const store = createPostgresStore({ pool, schema: name, timeoutMs: 1000 })
    return { store, close: async () => {
      await store.close()
      await pool.end()
    } }
  }
  const client = new Redis(url, { maxRetriesPerRequest: null })
  client.on('error', () => {})
  const store = createRedisStore({ client, prefix: name, timeoutMs: 1000 })
  return { store, close: async () => {
    await store.close()
    client.disconnect()
  } }
}

for (const kind of ['postgres', 'redis'] as const satisfies DurableKind[]) {
  const skip = await serviceSkip(kind)
  const { after, before, describe, it } = serviceTests(skip)

  describe(`${kind} store whose connections die silently`, { timeout: 120_000 }, () => {
    let direct: DurableStore
    let receiver: LoopbackReceiver
    let proxy: TcpProxy
    const secret = generateSecret()

    before(async () => {
      direct = await openDurableStore(kind)
      // slow enough (8 in flight, 40 ms each) that the cut surely comes while tasks still wait
      receiver = await startLoopbackReceiver({ delayMs: 40 })
      const target = new URL(kind === 'postgres' ? DATABASE_URL : REDIS_URL)
      proxy = await startTcpProxy({ host: target.hostname, port: Number(target.port || (kind === 'postgres' ? 5432 : 6379)) })
    })
    after(async () => {
      await proxy?.close()
      await receiver?.close()
      await direct?.drop()
    })

    it('fails the stuck calls with error events and delivers every task over new connections', async (t) => {
      const sender = { store: direct.store, secret, urlPolicy }
      const ids: string[] = []
      await inParallel(Array.from({ length: 300 }, (_, i) => i), 10, async () => {
        const task = await createCallbackTask({ callbackUrl: receiver.url, event: 'report.ready' }, sender)
        ids.push(task.id)
        await makeDue(direct.store, task)
      })

      const proxied = new URL(kind === 'postgres' ? DATABASE_URL : REDIS_URL)
      proxied.hostname = '127.0.0.1'
      proxied.port = String(proxy.port)
      const through = storeThrough(kind, direct.name, proxied.href)
      const errors: unknown[] = []
      const transport = createHttpTransport({ timeoutMs: 1000, urlPolicy })
      const worker = createWorker({
        store: through.store,
        transport,
        secret,
        urlPolicy,
        leaseMs: LEASE_MS,
        concurrency: 8,
        pollIntervalMs: 100,
        onEvent: (event: DeliveryEvent) => {
          if (event.type === 'error') errors.push(event.error)
        },
      })
      worker.start()
      try {
        await until(() => receiver.seen.size >= 50, '50 callbacks arrived', 30_000)
        proxy.silence()
        assert.ok(receiver.seen.size < ids.length - 50, `the cut came while tasks were still waiting (${receiver.seen.size} arrived)`)
        await until(() => ids.every((id) => receiver.seen.has(id)), 'every callback arrived after the silent cut', 60_000)
        await until(async () => {
          const tasks = await Promise.all(ids.map((id) => direct.store.get(id)))
          return tasks.every((task) => task?.status === 'delivered')
        }, 'every task is recorded as delivered', 30_000)
        await until(() => worker.active === 0, 'no attempt is left hanging', 10_000)
      } finally {
        await worker.stop()
        await transport.close()
        await through.close()
      }
      assert.ok(errors.length > 0, 'the stuck calls were reported as error events')
      assert.ok(
        errors.every((error) => (error as { code?: string }).code === 'ERR_CALLBACK_STORE'),
        'every error is a store error'
      )
      const messages = [...new Set(errors.map((error) => (error as Error).message))]
      t.diagnostic(`${kind}: ${errors.length} store errors (${messages.join('; ')}), ${receiver.requests} requests for ${ids.length} tasks`)
    })
  })
}

const restart = serviceTests(await serviceSkip('postgres'))
restart.describe('a pg Pool set up as the README shows, on a PostgreSQL restart', { timeout: 60_000 }, () => {
  restart.it('does not take the process down when its idle connections break, and works again after', async () => {
    const direct = await openDurableStore('postgres')
    const target = new URL(DATABASE_URL)
    const proxy = await startTcpProxy({ host: target.hostname, port: Number(target.port || 5432) })
    const proxied = new URL(DATABASE_URL)
    proxied.hostname = '127.0.0.1'
    proxied.port = String(proxy.port)
    // as in the README: no pool.on('error') of the user's own
    const pool = new pg.Pool({ connectionString: proxied.href })
    const store = createPostgresStore({ pool, schema: direct.name })
    const uncaught: unknown[] = []
    const onUncaught = (error: unknown) => uncaught.push(error)
    process.on('uncaughtException', onUncaught)
    try {
      assert.equal(await store.get('nothing'), undefined)
      assert.equal(pool.idleCount, 1, 'one idle connection to break')
      const removed = new Promise((resolve) => pool.once('remove', resolve))
      // the server restarts: every connection is reset
      proxy.cut()
      await Promise.race([removed, new Promise((_, reject) => setTimeout(() => reject(new Error('the pool never dropped the broken connection')), 5000))])
      await new Promise((resolve) => setImmediate(resolve))
      assert.deepEqual(uncaught, [], 'no uncaught exception')
      proxy.restore()
      assert.equal(await store.get('nothing'), undefined, 'the store works again')
    } finally {
      process.off('uncaughtException', onUncaught)
      await store.close()
      await pool.end()
      await proxy.close()
      await direct.drop()
    }
  })
})
