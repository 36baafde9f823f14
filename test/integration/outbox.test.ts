/**
 * The outbox: a callback task written with the caller's own PostgreSQL transaction commits or rolls
 * back together with the caller's business write.
 */
import assert from 'node:assert/strict'
import pg from 'pg'
import { createCallbackTask, createWorker, deliver, generateSecret } from 'endpoint-callback'
import type { CallbackTask } from 'endpoint-callback'
import { openDurableStore, type DurableStore } from '../support/durable-stores.ts'
import { startLoopbackReceiver, type LoopbackReceiver } from '../support/loopback-receiver.ts'
import { DATABASE_URL, serviceSkip, serviceTests } from '../support/services.ts'
import { eventually } from '../support/waits.ts'

const skip = await serviceSkip('postgres')
const { after, before, describe, it } = serviceTests(skip)

describe('outbox on PostgreSQL', () => {
  let durable: DurableStore
  let receiver: LoopbackReceiver
  let pool: pg.Pool
  let sender: Parameters<typeof createCallbackTask>[1]

  before(async () => {
    durable = await openDurableStore('postgres')
    receiver = await startLoopbackReceiver()
    pool = new pg.Pool({ connectionString: DATABASE_URL, max: 3 })
    await pool.query(`CREATE TABLE "${durable.name}".orders (id text PRIMARY KEY)`)
    sender = { store: durable.store, secret: generateSecret(), urlPolicy: { allowHttp: true, allowHosts: ['127.0.0.1'] } }
  })

  after(async () => {
    await pool?.end()
    await receiver?.close()
    await durable?.drop()
  })

  /** Places an order and records its callback in one transaction; `finish` decides its fate. */
  async function placeOrder(orderId: string, finish: 'COMMIT' | 'ROLLBACK') {
    const client = await pool.connect()
    try {
      await client.query('BEGIN')
      await client.query(`INSERT INTO "${durable.name}".orders (id) VALUES ($1)`, [orderId])
      const task = await createCallbackTask(
        { callbackUrl: receiver.url, event: 'order.placed', idempotencyKey: orderId },
        { ...sender, transaction: client }
      )
      assert.equal(await durable.store.get(task.id), undefined, 'nobody else sees the task before the commit')
      await client.query(finish)
      return task
    } finally {
      client.release()
    }
  }

  const orderExists = async (id: string) =>
    (await pool.query(`SELECT 1 FROM "${durable.name}".orders WHERE id = $1`, [id])).rowCount === 1

  it('leaves no callback when the business transaction rolls back', async () => {
    const task = await placeOrder('order-rolled-back', 'ROLLBACK')
    assert.equal(await orderExists('order-rolled-back'), false)
    assert.equal(await durable.store.get(task.id), undefined)
    await assert.rejects(deliver(task.id, { total: 1 }, sender), { code: 'ERR_CALLBACK_TASK_NOT_FOUND' })
    assert.equal(receiver.seen.has(task.id), false)
  })

  it('delivers the callback when the business transaction commits', async () => {
    const task = await placeOrder('order-committed', 'COMMIT')
    assert.equal(await orderExists('order-committed'), true)
    assert.equal((await durable.store.get(task.id))?.status, 'pending')
    const report = await deliver(task.id, { total: 2 }, sender)
    assert.equal(report.status, 'delivered')
    assert.equal(receiver.seen.get(task.id), 1)
    assert.equal((await durable.store.get(task.id))?.status, 'delivered')
  })

  it('drops the callback with the transaction when the business write after it fails', async () => {
    await placeOrder('order-duplicate', 'COMMIT')
    const client = await pool.connect()
    let taskId: string | undefined
    try {
      await client.query('BEGIN')
      const task = await createCallbackTask(
        { callbackUrl: receiver.url, event: 'order.placed', idempotencyKey: 'order-duplicate-second' },
        { ...sender, transaction: client }
      )
      taskId = task.id
      await assert.rejects(client.query(`INSERT INTO "${durable.name}".orders (id) VALUES ('order-duplicate')`), { code: '23505' })
      await client.query('ROLLBACK')
    } finally {
      client.release()
    }
    assert.equal(await durable.store.get(taskId!), undefined)
  })

  it('lets a worker deliver only the committed callbacks of a mixed batch', async () => {
    const committed: CallbackTask[] = []
    const rolledBack: CallbackTask[] = []
    for (let i = 0; i < 10; i++) {
      const fate = i % 2 === 0 ? 'COMMIT' : 'ROLLBACK'
      const task = await placeOrder(`batch-${i}`, fate)
      ;(fate === 'COMMIT' ? committed : rolledBack).push(task)
    }
    assert.equal(committed.length, 5)
    assert.equal(rolledBack.length, 5)
    for (const task of rolledBack) assert.equal(await durable.store.get(task.id), undefined, `rolled-back task ${task.id} is stored`)
    const seenBefore = new Set(receiver.seen.keys())
    // the first attempts fail, so the worker has to pick the retries up from the store
    const failing = { ...sender, transport: { send: async () => ({ status: 503, headers: {}, body: '', durationMs: 1 }) }, retry: { schedule: [50] } }
    for (const task of committed) assert.equal((await deliver(task.id, { batch: true }, failing)).status, 'retrying')
    const worker = createWorker({ ...sender, pollIntervalMs: 50 })
    worker.start()
    try {
      await eventually(() => committed.every((task) => receiver.seen.has(task.id)), 'the worker delivering every committed callback', {
        ms: 15_000,
        describe: () => `${committed.filter((task) => receiver.seen.has(task.id)).length} of ${committed.length} arrived`,
      })
    } finally {
      await worker.stop()
    }
    for (const task of committed) assert.equal(receiver.seen.get(task.id), 1, `committed task ${task.id} arrived ${receiver.seen.get(task.id) ?? 0} times`)
    const arrived = [...receiver.seen.keys()].filter((id) => !seenBefore.has(id)).sort()
    assert.deepEqual(arrived, committed.map((task) => task.id).sort(), 'exactly the committed callbacks arrived')
  })
})
