/**
 * The outbox: a callback task written with the caller's own PostgreSQL transaction commits or rolls
 * back together with the caller's business write.
 */
import assert from 'node:assert/strict'
import pg from 'pg'
import { readFile } from 'node:fs/promises'
import { createCallbackTask, createWorker, deliver, generateSecret } from 'endpoint-callback'
import type { CallbackTask, Worker, WorkerOptions } from 'endpoint-callback'
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

  /** Waits until `check` holds, at most `ms`, failing with `what`. */
  async function until(check: () => boolean | Promise<boolean>, what: string, ms = 10_000) {
    const deadline = Date.now() + ms
    while (!(await check())) {
      if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`)
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
  }

  it("runs the README's outbox snippet as written: the committed callback is delivered by the worker", async () => {
    const readme = await readFile(new URL('../../README.md', import.meta.url), 'utf8')
    const start = readme.indexOf('const client = await pool.connect()')
    const end = readme.indexOf('createWorker(sender).start()', start)
    assert.ok(start > 0 && end > start, 'the README still has its outbox snippet')
    const snippet = readme.slice(start, readme.indexOf('\n', end))
    // `orders` as the snippet names it, in this test's schema
    const scoped = new pg.Pool({ connectionString: DATABASE_URL, max: 2, options: `-c search_path="${durable.name}"` })
    const workers: Worker[] = []
    const orderId = 'order-from-readme'
    try {
      const run = new Function(
        'pool', 'sender', 'orderId', 'callbackUrl', 'createCallbackTask', 'createWorker',
        `return (async () => {\n${snippet}\n})()`
      ) as (...args: unknown[]) => Promise<void>
      const recordingCreateWorker = (options: WorkerOptions) => {
        const worker = createWorker({ ...options, pollIntervalMs: 60_000 }) // only NOTIFY can wake it in time
        workers.push(worker)
        return worker
      }
      await run(scoped, sender, orderId, receiver.url, createCallbackTask, recordingCreateWorker)
      assert.equal(workers.length, 1)
      const { rows } = await pool.query(`SELECT id FROM "${durable.name}".tasks WHERE idempotency_key = $1`, [orderId])
      const id = rows[0]?.id as string
      await until(() => receiver.seen.get(id) === 1, 'the README outbox callback to arrive')
      await until(async () => (await durable.store.get(id))?.status === 'delivered', 'the task to be recorded delivered')
    } finally {
      for (const worker of workers) await worker.stop()
      await scoped.end()
    }
  })

  it('deliver inside the transaction attaches the result there and leaves the sending to a worker woken at commit', async () => {
    const worker = createWorker({ ...sender, pollIntervalMs: 60_000 }) // only NOTIFY can wake it in time
    worker.start()
    try {
      const kept = await createCallbackTask({ callbackUrl: receiver.url, event: 'report.ready' }, sender)
      const dropped = await createCallbackTask({ callbackUrl: receiver.url, event: 'report.ready' }, sender)
      for (const [task, finish] of [[dropped, 'ROLLBACK'], [kept, 'COMMIT']] as const) {
        const client = await pool.connect()
        try {
          await client.query('BEGIN')
          const report = await deliver(task, { reportUrl: 'https://files.example.com/r/1' }, { ...sender, transaction: client })
          assert.equal(report.status, 'retrying')
          assert.equal(report.attempts, 0)
          assert.equal((await durable.store.get(task.id))?.status, 'pending', 'nobody else sees the result before the commit')
          await client.query(finish)
        } finally {
          client.release()
        }
      }
      await until(() => receiver.seen.get(kept.id) === 1, 'the committed callback to arrive')
      assert.equal((await durable.store.get(dropped.id))?.status, 'pending', 'a rolled-back result is never attached')
      assert.equal(receiver.seen.has(dropped.id), false)
      // the request is replayed: deliver answers what happened, sends nothing more
      await until(async () => (await durable.store.get(kept.id))?.status === 'delivered', 'the task to be recorded delivered')
      assert.equal((await deliver(kept, { reportUrl: 'x' }, sender)).status, 'delivered')
      assert.equal(receiver.seen.get(kept.id), 1)
    } finally {
      await worker.stop()
    }
  })

  it('refuses the pool as a transaction, which would write outside any BEGIN', async () => {
    await assert.rejects(createCallbackTask({ callbackUrl: receiver.url, event: 'e', payload: 1 }, { ...sender, transaction: pool }), {
      name: 'TypeError',
      message: /`transaction` is a pool, not a transaction/,
    })
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
    // the first attempts fail, so the worker has to pick the retries up from the store (staged
    // failures: they are not to open the destination's breaker, as five real ones in a row would)
    const failing = { ...sender, transport: { send: async () => ({ status: 503, headers: {}, body: '', durationMs: 1 }) }, retry: { schedule: [50] }, breaker: false }
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
