/**
 * Completions whose reply is lost: the statement committed on the real PostgreSQL, but the
 * connection broke before its answer came back (a socket error, no SQLSTATE). The store must find
 * out what committed instead of reading the error as "refused, nothing committed".
 */
import assert from 'node:assert/strict'
import pg from 'pg'
import type { AttemptRecord } from 'endpoint-callback'
import { createPostgresStore, migratePostgres, type PostgresQueryable } from 'endpoint-callback/postgres'
import { newTask, t0 } from '../support/durable-stores.ts'
import { DATABASE_URL, serviceSkip, serviceTests, uniqueName } from '../support/services.ts'

const skip = await serviceSkip('postgres')
const { after, describe, it } = serviceTests(skip)

describe('postgres completions whose reply is lost', () => {
  const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 4 })
  pool.on('error', () => {})
  const schemas: string[] = []
  after(async () => {
    for (const schema of schemas) await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`)
    await pool.end()
  })

  /** The store on a pool whose completion statements run, commit, and then lose their reply (once each). */
  async function storeLosingReplies(lose: { replies: number }) {
    const schema = uniqueName('ec_pg_lost')
    schemas.push(schema)
    await migratePostgres(pool, { schema })
    const lossy: PostgresQueryable = {
      async query(text: unknown, values?: unknown[]) {
        const statement = typeof text === 'string' ? text : (text as { text: string }).text
        const result = await pool.query(text as string, values)
        if (lose.replies > 0 && /INSERT INTO .*attempts/s.test(statement)) {
          lose.replies--
          throw Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET', errno: -104, syscall: 'read' })
        }
        return result
      },
    }
    return createPostgresStore({ pool: lossy, schema, listen: false })
  }

  const delivered = (n: number): AttemptRecord => ({ attempt: 1, startedAt: new Date(t0 + n), durationMs: 3, status: 200, outcome: 'delivered' })

  async function leased(store: Awaited<ReturnType<typeof storeLosingReplies>>) {
    const input = newTask()
    await store.insert(input)
    return (await store.attach(input.id, { body: '{}' }, { now: new Date(t0), leaseMs: 60_000 }))!
  }

  it('reports a grouped completion that committed as completed, not as a lost lease', async () => {
    const lose = { replies: 0 }
    const store = await storeLosingReplies(lose)
    const leases = [await leased(store), await leased(store), await leased(store)]
    lose.replies = 1
    const reported: Error[] = []
    const unsubscribe = store.subscribeErrors((error) => reported.push(error))
    // completions of one turn of the event loop share one statement
    const completed = await Promise.all(leases.map((lease, n) => store.complete(lease, delivered(n), { status: 'delivered' })))
    unsubscribe()
    assert.equal(lose.replies, 0, 'the grouped statement lost its reply')
    assert.deepEqual(completed, [true, true, true])
    assert.equal(reported.length, 1, 'the lost reply is reported once for the statement, though no call failed')
    assert.equal((reported[0] as { code?: string }).code, 'ERR_CALLBACK_STORE')
    assert.equal((reported[0]!.cause as { code?: string }).code, 'ECONNRESET')
    for (const lease of leases) {
      assert.equal((await store.get(lease.task.id))?.status, 'delivered')
      assert.equal((await store.attempts(lease.task.id)).length, 1, 'recorded once')
    }
  })

  it('reports a single completion that committed as completed', async () => {
    const lose = { replies: 0 }
    const store = await storeLosingReplies(lose)
    const lease = await leased(store)
    lose.replies = 1
    const reported: Error[] = []
    store.subscribeErrors((error) => reported.push(error))
    assert.equal(await store.complete(lease, delivered(0), { status: 'delivered' }), true)
    assert.equal((await store.get(lease.task.id))?.status, 'delivered')
    assert.deepEqual(reported.map((error) => error.message), ['PostgreSQL complete failed: read ECONNRESET'], 'the lost reply is reported')
  })
})
