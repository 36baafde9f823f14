/**
 * The user's pg Pool as the store finds it: a pool of one connection has none left for queries
 * once the store LISTENs on it.
 */
import assert from 'node:assert/strict'
import pg from 'pg'
import { createCallbackTask, createWorker, deliver, generateSecret } from 'endpoint-callback'
import { createPostgresStore, migratePostgres } from 'endpoint-callback/postgres'
import { createTestTransport } from '../support/sender.ts'
import { DATABASE_URL, serviceSkip, serviceTests, uniqueName } from '../support/services.ts'

const skip = await serviceSkip('postgres')
const { after, describe, it } = serviceTests(skip)

describe('postgres store on a pool of one connection', { timeout: 30_000 }, () => {
  const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 1 })
  const schema = uniqueName('ec_pg_max1')
  after(async () => {
    await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`)
    await pool.end()
  })

  it('is refused with a clear error while it would LISTEN on the only connection', async () => {
    await migratePostgres(pool, { schema })
    assert.throws(() => createPostgresStore({ pool, schema }), (error: unknown) => {
      assert.ok(error instanceof TypeError)
      assert.match(error.message, /`max: 1`.*`listen: false`/)
      return true
    })
  })

  it('delivers with listen: false, polling instead', async () => {
    await migratePostgres(pool, { schema })
    const store = createPostgresStore({ pool, schema, listen: false })
    // the first attempt meets a busy receiver, so the worker makes the second
    const transport = createTestTransport((_, index) => ({ status: index === 0 ? 503 : 200 }))
    const sender = { store, transport, secret: generateSecret(), retry: { schedule: [50] } }
    const task = await createCallbackTask({ callbackUrl: 'https://client.example/callbacks', event: 'report.ready' }, sender)
    assert.equal((await deliver(task, { ok: true }, sender)).status, 'retrying')
    const worker = createWorker({ ...sender, pollIntervalMs: 50 })
    worker.start()
    try {
      const deadline = Date.now() + 10_000
      while ((await store.get(task.id))?.status !== 'delivered') {
        if (Date.now() > deadline) throw new Error('the task was not delivered within 10 s')
        await new Promise((resolve) => setTimeout(resolve, 25))
      }
    } finally {
      await worker.stop()
      await store.close()
    }
  })
})
