/**
 * createCallbackTasks on PostgreSQL and Redis: inside the caller's transaction (committed: a worker
 * woken at the commit delivers every task; rolled back: nothing stored, nothing sent), and the
 * largest batch a call takes.
 */
import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import pg from 'pg'
import { createCallbackTasks, createWorker, generateSecret, UrlPolicyError } from 'endpoint-callback'
import type { CallbackTaskResult, CreatedCallbackTask, SenderOptions } from 'endpoint-callback'
import { openDurableStore } from '../support/durable-stores.ts'
import { startLoopbackReceiver } from '../support/loopback-receiver.ts'
import { DATABASE_URL, serviceSkip } from '../support/services.ts'
import { eventually } from '../support/waits.ts'

const callbackUrl = 'https://client.example.com/callbacks'

function task(result: CallbackTaskResult | undefined): CreatedCallbackTask {
  assert.ok(result?.ok, `expected a stored task, got ${result?.ok === false ? result.error.message : 'nothing'}`)
  return result.task
}

function refused(result: CallbackTaskResult | undefined): Error {
  assert.ok(result !== undefined && !result.ok, 'expected a refused item')
  return result.error
}

const postgresSkip = await serviceSkip('postgres')

describe('createCallbackTasks inside a PostgreSQL transaction', { skip: postgresSkip }, () => {
  async function withTransaction<T>(finish: 'COMMIT' | 'ROLLBACK', body: (client: pg.PoolClient) => Promise<T>) {
    const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 1 })
    const client = await pool.connect()
    try {
      await client.query('BEGIN')
      const result = await body(client)
      await client.query(finish)
      return result
    } finally {
      client.release()
      await pool.end()
    }
  }

  test('commits with the caller: nobody sees the tasks before, a worker woken at the commit delivers them all', async () => {
    const durable = await openDurableStore('postgres')
    const receiver = await startLoopbackReceiver()
    const sender: SenderOptions = { store: durable.store, secret: generateSecret(), urlPolicy: { allowHttp: true, allowHosts: ['127.0.0.1'] } }
    const worker = createWorker({ ...sender, pollIntervalMs: 60_000 }) // only NOTIFY can wake it in time
    worker.start()
    try {
      const ids = await withTransaction('COMMIT', async (client) => {
        const results = await createCallbackTasks(
          [
            ...Array.from({ length: 20 }, (_, n) => ({ callbackUrl: receiver.url, event: 'order.placed', idempotencyKey: `order-${n}`, payload: { n } })),
            { callbackUrl: receiver.url, event: 'order.placed', idempotencyKey: 'order-0', payload: { n: 0 } },
            { callbackUrl: 'https://10.0.0.7/callbacks', event: 'order.placed', payload: {} },
          ],
          { ...sender, transaction: client }
        )
        assert.equal(task(results[20]).id, task(results[0]).id, 'a key twice in the batch: one task')
        assert.equal(task(results[20]).created, false)
        assert.ok(refused(results[21]) instanceof UrlPolicyError)
        const ids = results.slice(0, 20).map((result) => task(result).id)
        assert.equal(await durable.store.get(ids[0]!), undefined, 'nobody else sees a task before the commit')
        return ids
      })
      await eventually(() => ids.every((id) => receiver.seen.get(id) === 1), 'all 20 delivered after the commit', {
        describe: () => `${ids.filter((id) => receiver.seen.has(id)).length} delivered`,
      })
      assert.equal(receiver.requests, 20, 'each once')
    } finally {
      await worker.stop()
      await receiver.close()
      await durable.drop()
    }
  })

  test('rolls back with the caller: nothing stored, nothing sent', async () => {
    const durable = await openDurableStore('postgres')
    const receiver = await startLoopbackReceiver()
    const sender: SenderOptions = { store: durable.store, secret: generateSecret(), urlPolicy: { allowHttp: true, allowHosts: ['127.0.0.1'] } }
    const worker = createWorker({ ...sender, pollIntervalMs: 20 })
    worker.start()
    try {
      const results = await withTransaction('ROLLBACK', (client) =>
        createCallbackTasks(
          Array.from({ length: 10 }, (_, n) => ({ callbackUrl: receiver.url, event: 'order.placed', idempotencyKey: `order-${n}`, payload: { n } })),
          { ...sender, transaction: client }
        )
      )
      const ids = results.map((result) => task(result).id)
      // a worker polling every 20 ms has looked many times by now
      await new Promise((resolve) => setTimeout(resolve, 300))
      for (const id of ids) assert.equal(await durable.store.get(id), undefined)
      assert.equal(receiver.requests, 0)
      // the keys are free again
      const again = await createCallbackTasks([{ callbackUrl: receiver.url, event: 'order.placed', idempotencyKey: 'order-0' }], sender)
      assert.equal(task(again[0]).created, true)
    } finally {
      await worker.stop()
      await receiver.close()
      await durable.drop()
    }
  })
})

for (const kind of ['postgres', 'redis'] as const) {
  const skip = await serviceSkip(kind)
  test(`takes the maximum, 10,000 items, in one call on ${kind} (too many arguments to spread into one function call)`, { skip }, async () => {
    const durable = await openDurableStore(kind)
    try {
      const sender: SenderOptions = { store: durable.store, secret: generateSecret() }
      const inputs = Array.from({ length: 10_000 }, (_, n) => ({ callbackUrl, event: 'report.ready', idempotencyKey: `job-${n}`, payload: { n } }))
      const results = await createCallbackTasks(inputs, sender)
      assert.equal(results.filter((result) => result.ok && result.task.created).length, 10_000)
      const replayed = await createCallbackTasks(inputs, sender)
      assert.equal(replayed.filter((result) => result.ok && !result.task.created).length, 10_000, 'a replay finds every one')
      assert.equal(task(replayed[9_999]).id, task(results[9_999]).id)
    } finally {
      await durable.drop()
    }
  })
}

for (const kind of ['postgres', 'redis'] as const) {
  const skip = await serviceSkip(kind)
  test(`refuses an event or key with a lone surrogate alone, and stores such payloads and metadata as given, on ${kind}`, { skip }, async () => {
    const durable = await openDurableStore(kind)
    try {
      const sender: SenderOptions = { store: durable.store, secret: generateSecret() }
      // a JavaScript string need not be valid UTF-16: such a key has no UTF-8 form to store and find again
      const results = await createCallbackTasks(
        [
          { callbackUrl, event: 'report.ready', idempotencyKey: 'job-1', metadata: { note: 'a\ud83dz' }, payload: { n: '\udc00' } },
          { callbackUrl, event: 'report.\ud800ready', payload: {} },
          { callbackUrl, event: 'report.ready', idempotencyKey: 'job-\udfff', payload: {} },
        ],
        sender
      )
      assert.match(refused(results[1]).message, /^event must be well-formed text/)
      assert.match(refused(results[2]).message, /^idempotencyKey must be well-formed text/)
      const stored = task(results[0])
      assert.equal(stored.created, true)
      const read = await durable.store.get(stored.id)
      assert.equal(read?.status, 'scheduled')
      assert.deepEqual(read?.metadata, { note: 'a\ud83dz' })
      assert.deepEqual(JSON.parse(read!.body!).data, { n: '\udc00' })
      const again = await createCallbackTasks([{ callbackUrl, event: 'report.ready', idempotencyKey: 'job-1' }], sender)
      assert.equal(task(again[0]).id, stored.id)
    } finally {
      await durable.drop()
    }
  })
}
