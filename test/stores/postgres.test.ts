import assert from 'node:assert/strict'
import { newTask, scheduleOneRetry, t0 } from '../support/durable-stores.ts'
import pg from 'pg'
import { CallbackError } from 'endpoint-callback'
import type { CallbackStore } from 'endpoint-callback'
import { storeContract } from 'endpoint-callback/testing'
import {
  createPostgresStore,
  migratePostgres,
  postgresSchemaSql,
  pruneTasks,
  type PostgresStore
} from 'endpoint-callback/postgres'
import { claimSql, latestVersion, migrations, quoteIdentifier } from '../../src/stores/postgres-sql.ts'
import { DATABASE_URL, serviceSkip, serviceTests, uniqueName } from '../support/services.ts'

const skip = await serviceSkip('postgres')
const { after, before, describe, it } = serviceTests(skip)
const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 10 })
// an idle connection the server closes must not take the test process down
pool.on('error', () => {})
after(() => pool.end())

async function freshStore(): Promise<PostgresStore> {
  const schema = uniqueName('ec_pg')
  await migratePostgres(pool, { schema })
  return createPostgresStore({ pool, schema })
}

async function dropSchema(schema: string): Promise<void> {
  await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`)
}

storeContract('postgres', freshStore, {
  skip,
  cleanup: (store) => dropSchema((store as PostgresStore).schema)
})

// A `query` that only takes (text, values), as a user's own wrapper might.
storeContract(
  'postgres with prepare: false',
  async () => {
    const schema = uniqueName('ec_pg_plain')
    await migratePostgres(pool, { schema })
    const plain = {
      query: (text: unknown, values?: unknown[]) => {
        if (typeof text !== 'string') throw new TypeError('this query only takes (text, values)')
        return pool.query(text, values)
      }
    }
    return createPostgresStore({ pool: plain, schema, prepare: false, listen: false })
  },
  { skip, cleanup: (store) => dropSchema((store as PostgresStore).schema) }
)


const day = 86_400_000

describe('postgres store', () => {
  const schemas: string[] = []
  const stores: CallbackStore[] = []
  const track = (store: PostgresStore) => {
    schemas.push(store.schema)
    stores.push(store)
    return store
  }
  after(async () => {
    for (const store of stores) await store.close?.()
    for (const schema of schemas) await dropSchema(schema)
  })

  describe('migrations', () => {
    it('prints readable SQL that creates the tables, the due index and a version record', () => {
      const sql = postgresSchemaSql({ schema: 'callbacks' })
      assert.match(sql, /CREATE SCHEMA IF NOT EXISTS "callbacks";/)
      assert.match(sql, /CREATE TABLE IF NOT EXISTS "callbacks"\.tasks \(/)
      assert.match(sql, /CREATE TABLE IF NOT EXISTS "callbacks"\.attempts \(/)
      assert.match(sql, /CREATE INDEX IF NOT EXISTS tasks_due_idx ON "callbacks"\.tasks \(next_attempt_at\)\s+WHERE status IN \('scheduled', 'delivering'\)/)
      assert.match(sql, /INSERT INTO "callbacks"\.migrations \(version\) VALUES \(1\)/)
      assert.match(sql, /ALTER TABLE "callbacks"\.tasks ADD COLUMN IF NOT EXISTS encryption_key json;/)
      assert.match(sql, /INSERT INTO "callbacks"\.migrations \(version\) VALUES \(2\)/)
      assert.match(sql, /^BEGIN;$/m)
      assert.match(sql, /^COMMIT;$/m)
    })

    it('applies the printed SQL twice without error and without changing the tables the second time', async () => {
      const schema = uniqueName('ec_pg_sql')
      schemas.push(schema)
      const catalog = async () =>
        (
          await pool.query(
            `SELECT table_name, column_name, data_type FROM information_schema.columns WHERE table_schema = $1
             UNION ALL SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = $1
             ORDER BY 1, 2`,
            [schema]
          )
        ).rows
      await pool.query(postgresSchemaSql({ schema }))
      const first = await catalog()
      assert.ok(first.some((row) => row.column_name === 'tasks_due_idx'))
      await pool.query(postgresSchemaSql({ schema }))
      assert.deepEqual(await catalog(), first)
      assert.deepEqual(await migratePostgres(pool, { schema }), { schema, from: latestVersion, to: latestVersion })
    })

    it('upgrades a version 1 schema in place, keeping its tasks, so they and new ones with an encryption key read back', async () => {
      const schema = uniqueName('ec_pg_v1')
      schemas.push(schema)
      const s = quoteIdentifier(schema)
      // The schema as version 1 of this library left it, holding a task.
      await pool.query(`CREATE SCHEMA ${s}; CREATE TABLE ${s}.migrations (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now());
        ${migrations[0]!.sql(schema)}
        INSERT INTO ${s}.migrations (version) VALUES (1);
        INSERT INTO ${s}.tasks (id, status, callback_url, event, created_at, updated_at)
          VALUES ('old-task', 'pending', 'https://client.example/cb', 'report.ready', now(), now());`)
      assert.deepEqual(await migratePostgres(pool, { schema }), { schema, from: 1, to: latestVersion })
      const store = track(createPostgresStore({ pool, schema, listen: false }))
      const old = await store.get('old-task')
      assert.equal(old?.status, 'pending')
      assert.equal(old?.encryptionKey, undefined)
      assert.equal(old?.verifyIntent, undefined)
      const input = newTask({ encryptionKey: 'https://client.example/jwks.json', verifyIntent: true })
      await store.insert(input)
      assert.equal((await store.get(input.id))?.encryptionKey, 'https://client.example/jwks.json')
      assert.equal((await store.get(input.id))?.verifyIntent, true)
      assert.deepEqual(await migratePostgres(pool, { schema }), { schema, from: latestVersion, to: latestVersion })
    })

    it('upgrades a version 5 schema (destinations) to 6 (pending expiry index); a store says so until then', async () => {
      assert.deepEqual(migrations.map(({ version }) => version), [1, 2, 3, 4, 5, 6, 7])
      assert.match(migrations[4]!.description, /destination/)
      assert.match(migrations[5]!.description, /pending/)
      const schema = uniqueName('ec_pg_v5')
      schemas.push(schema)
      const s = quoteIdentifier(schema)
      // The schema as version 5 (per-destination fairness) left it, holding a pending task.
      await pool.query(`CREATE SCHEMA ${s}; CREATE TABLE ${s}.migrations (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now());
        ${migrations
          .filter(({ version }) => version <= 5)
          .map((migration) => `${migration.sql(schema)}\nINSERT INTO ${s}.migrations (version) VALUES (${migration.version});`)
          .join('\n')}
        INSERT INTO ${s}.tasks (id, status, callback_url, event, created_at, updated_at, destination)
          VALUES ('old-task', 'pending', 'https://client.example/cb', 'report.ready', now(), now(), 'https://client.example');`)
      const store = track(createPostgresStore({ pool, schema, listen: false }))
      await assert.rejects(store.check!(), new RegExp(`is at version 5, this version of endpoint-callback needs ${latestVersion}: run migratePostgres`))
      assert.deepEqual(await migratePostgres(pool, { schema }), { schema, from: 5, to: latestVersion })
      await store.check!()
      const { rows } = await pool.query(`SELECT indexname FROM pg_indexes WHERE schemaname = $1 AND indexname = 'tasks_pending_idx'`, [schema])
      assert.equal(rows.length, 1)
      const old = await store.get('old-task')
      assert.equal(old?.status, 'pending')
      assert.equal(old?.destination, 'https://client.example')
      assert.deepEqual(await migratePostgres(pool, { schema }), { schema, from: latestVersion, to: latestVersion })
    })

    it('gives the unfinished tasks stored before destinations (no destination) their origin at version 7, so claims limit them', async () => {
      const schema = uniqueName('ec_pg_v6')
      schemas.push(schema)
      const s = quoteIdentifier(schema)
      // The schema at version 6, holding tasks as the code before version 5 wrote them: no destination.
      await pool.query(`CREATE SCHEMA ${s}; CREATE TABLE ${s}.migrations (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now());
        ${migrations
          .filter(({ version }) => version <= 6)
          .map((migration) => `${migration.sql(schema)}\nINSERT INTO ${s}.migrations (version) VALUES (${migration.version});`)
          .join('\n')}
        INSERT INTO ${s}.tasks (id, status, callback_url, event, created_at, updated_at, body, next_attempt_at, attempts)
          SELECT 'old-' || n, 'scheduled', 'https://user:pw@Client.Example:8443/cb/' || n || '?q=1', 'report.ready', now(), now(), '{}',
            '2030-01-01T00:00:00Z'::timestamptz + n * interval '1 millisecond', 0
          FROM generate_series(1, 4) AS n;
        INSERT INTO ${s}.tasks (id, status, callback_url, event, created_at, updated_at, body, next_attempt_at)
          VALUES ('old-pending', 'pending', 'http://[::1]:3000/cb', 'report.ready', now(), now(), NULL, NULL),
            ('old-done', 'delivered', 'https://done.example/cb', 'report.ready', now(), now(), '{}', NULL);`)
      assert.deepEqual(await migratePostgres(pool, { schema }), { schema, from: 6, to: latestVersion })
      const store = track(createPostgresStore({ pool, schema, listen: false }))
      const origin = new URL('https://user:pw@Client.Example:8443/cb/1?q=1').origin
      assert.equal((await store.get('old-1'))?.destination, origin)
      assert.equal((await store.get('old-pending'))?.destination, new URL('http://[::1]:3000/cb').origin)
      assert.equal((await store.get('old-done'))?.destination, undefined, 'finished tasks are left as they were')
      const claimed = await store.claim({ now: new Date(Date.UTC(2030, 0, 1, 0, 0, 1)), limit: 10, leaseMs: 60_000, perDestination: 2, inFlight: new Map() })
      assert.deepEqual(claimed.map((lease) => lease.task.id), ['old-1', 'old-2'], 'limited to 2 like any task of its destination')
    })

    it('lets several processes migrate one schema at the same time', async () => {
      const schema = uniqueName('ec_pg_race')
      schemas.push(schema)
      const pools = [1, 2, 3].map(() => new pg.Pool({ connectionString: DATABASE_URL, max: 1 }))
      try {
        const results = await Promise.all(pools.map((each) => migratePostgres(each, { schema })))
        assert.ok(results.every((result) => result.to === latestVersion))
        const { rows } = await pool.query(`SELECT version FROM "${schema}".migrations ORDER BY version`)
        assert.deepEqual(rows, migrations.map(({ version }) => ({ version })))
      } finally {
        await Promise.all(pools.map((each) => each.end()))
      }
    })

    it('refuses a schema name that is not a plain identifier, naming the option', async () => {
      for (const schema of ['x"; DROP TABLE users; --', '', '1abc', 'a'.repeat(51), 'a-b']) {
        assert.throws(() => createPostgresStore({ pool, schema }), { name: 'TypeError', message: /`schema`/ })
        assert.throws(() => postgresSchemaSql({ schema }), { name: 'TypeError', message: /`schema`/ })
        await assert.rejects(migratePostgres(pool, { schema }), { name: 'TypeError', message: /`schema`/ })
      }
    })

    it('keeps mixed-case schema names as given', async () => {
      const schema = `Ec_${uniqueName('Mixed')}`
      schemas.push(schema)
      await migratePostgres(pool, { schema })
      const store = track(createPostgresStore({ pool, schema }))
      const input = newTask()
      await store.insert(input)
      assert.equal((await store.get(input.id))?.id, input.id)
    })

    it('says to run the migration when the tables are missing', async () => {
      const store = createPostgresStore({ pool, schema: uniqueName('ec_pg_missing'), listen: false })
      await assert.rejects(store.get('x'), (error: unknown) => {
        assert.ok(error instanceof CallbackError)
        assert.equal(error.code, 'ERR_CALLBACK_STORE')
        assert.match(error.message, /migratePostgres/)
        assert.ok(error.cause)
        return true
      })
    })
  })

  it('refuses a pool without query, naming the option', () => {
    assert.throws(() => createPostgresStore({ pool: {} as never }), { name: 'TypeError', message: /`pool`/ })
    assert.throws(() => createPostgresStore({ pool: { query: async () => ({ rows: [] }) }, listen: true }), {
      name: 'TypeError',
      message: /`listen`/
    })
  })

  it('keeps the tasks of two schemas apart', async () => {
    const a = track(await freshStore())
    const b = track(await freshStore())
    const input = newTask({ idempotencyKey: 'same-key' })
    await a.insert(input)
    await a.release((await a.attach(input.id, { body: '{}' }, { now: new Date(t0), leaseMs: 1000 }))!, new Date(t0))
    assert.equal(await b.get(input.id), undefined)
    assert.deepEqual(await b.claim({ now: new Date(t0 + day), limit: 10, leaseMs: 1000 }), [])
    const other = newTask({ idempotencyKey: 'same-key' })
    assert.equal((await b.insert(other)).created, true)
    assert.equal((await a.claim({ now: new Date(t0 + day), limit: 10, leaseMs: 1000 })).length, 1)
  })

  it('claims through the partial due index when 50 000 delivered rows surround 20 due ones', async () => {
    const store = track(await freshStore())
    const s = `"${store.schema}"`
    await pool.query(
      `INSERT INTO ${s}.tasks (id, status, callback_url, event, attempts, created_at, updated_at)
       SELECT 'done-' || n, 'delivered', 'https://client.example/cb', 'e', 1, now(), now() FROM generate_series(1, 50000) AS n`
    )
    await pool.query(
      `INSERT INTO ${s}.tasks (id, status, callback_url, event, attempts, next_attempt_at, created_at, updated_at)
       SELECT 'due-' || n, 'scheduled', 'https://client.example/cb', 'e', 1, now(), now(), now() FROM generate_series(1, 20) AS n`
    )
    await pool.query(`ANALYZE ${s}.tasks`)
    // the store's own claim statement, as the planner would run it
    const { rows } = await pool.query(`EXPLAIN ${claimSql(store.schema)}`, [new Date().toISOString(), 10, new Date().toISOString(), 'token'])
    const plan = rows.map((row) => row['QUERY PLAN']).join('\n')
    assert.match(plan, /tasks_due_idx/, plan)
    assert.doesNotMatch(plan, /Seq Scan/, plan)
    assert.equal((await store.claim({ now: new Date(Date.now() + day), limit: 50, leaseMs: 1000 })).length, 20)
  })

  it('insertMany stores every character as given: quotes, backslashes, braces, commas, "NULL", empty and multi-line text', async () => {
    const store = track(await freshStore())
    const awkward = ['say "hi"', 'C:\\path\\', '{a,b}', 'NULL', '', 'line one\nline two\ttab', 'é ✓ 😀', '\\"}', ' padded ']
    const inputs = awkward.map((text, n) =>
      newTask({ event: text === '' ? 'empty' : text, idempotencyKey: `${text}#${n}`, body: text, nextAttemptAt: new Date(t0), metadata: { text }, secret: [`whsec_${n}`, text] })
    )
    const answers = await store.insertMany(inputs)
    for (const [n, input] of inputs.entries()) {
      const stored = await store.get(input.id)
      assert.equal(answers[n]?.created, true)
      assert.equal(stored?.body, input.body, `body ${JSON.stringify(input.body)}`)
      assert.equal(stored?.event, input.event)
      assert.equal(stored?.idempotencyKey, input.idempotencyKey)
      assert.deepEqual(stored?.metadata, input.metadata)
      assert.deepEqual(stored?.secret, input.secret)
    }
    const replay = await store.insertMany(inputs.map((input) => ({ ...input, id: `${input.id}-again` })))
    assert.deepEqual(replay.map((answer) => [answer.task.id, answer.created]), inputs.map((input) => [input.id, false]), 'found again by each key')
  })

  describe('outbox: a task inside the caller’s transaction', () => {
    it('leaves no task when the transaction rolls back, and keeps it when it commits', async () => {
      const store = track(await freshStore())
      const client = await pool.connect()
      try {
        const rolledBack = newTask()
        await client.query('BEGIN')
        await store.insert(rolledBack, { transaction: client })
        assert.equal(await store.get(rolledBack.id), undefined, 'invisible to others before commit')
        await client.query('ROLLBACK')
        assert.equal(await store.get(rolledBack.id), undefined)

        const committed = newTask()
        await client.query('BEGIN')
        await store.insert(committed, { transaction: client })
        await client.query('COMMIT')
        assert.equal((await store.get(committed.id))?.status, 'pending')
      } finally {
        client.release()
      }
    })

    it('answers the committed task to a second transaction that raced it for one idempotency key', async () => {
      const store = track(await freshStore())
      const first = await pool.connect()
      const second = await pool.connect()
      try {
        await first.query('BEGIN')
        await second.query('BEGIN')
        const a = newTask({ idempotencyKey: 'order-42' })
        const b = newTask({ idempotencyKey: 'order-42' })
        assert.equal((await store.insert(a, { transaction: first })).created, true)
        const racing = store.insert(b, { transaction: second }) // waits for the first to finish
        await new Promise((resolve) => setTimeout(resolve, 100))
        await first.query('COMMIT')
        const answer = await racing
        await second.query('COMMIT')
        assert.equal(answer.created, false)
        assert.equal(answer.task.id, a.id)
        assert.equal(await store.get(b.id), undefined)
      } finally {
        first.release()
        second.release()
      }
    })

    it('refuses a transaction that is not a client, naming the option', async () => {
      const store = track(await freshStore())
      await assert.rejects(store.insert(newTask(), { transaction: {} }), { name: 'TypeError', message: /`transaction`/ })
    })
  })

  describe('retention', () => {
    it('deletes delivered tasks finished more than retentionSeconds ago with their attempts, and keeps the rest', async () => {
      const store = track(await freshStore())
      const finish = async (status: 'delivered' | 'failed', at: number) => {
        const input = newTask({ createdAt: new Date(at) })
        await store.insert(input)
        const lease = (await store.attach(input.id, { body: '{}' }, { now: new Date(at), leaseMs: 1000 }))!
        const outcome = status === 'delivered' ? 'delivered' : 'failed'
        await store.complete(lease, { attempt: 1, startedAt: new Date(at), durationMs: 5, outcome }, { status })
        return input.id
      }
      const now = t0 + 100 * day
      const old = await finish('delivered', now - 40 * day)
      const recent = await finish('delivered', now - 10 * day)
      const oldFailed = await finish('failed', now - 40 * day)
      const pending = newTask({ createdAt: new Date(now - 90 * day) })
      await store.insert(pending)

      const deleted = await pruneTasks(pool, { schema: store.schema, retentionSeconds: 30 * 86_400, now: () => new Date(now) })
      assert.equal(deleted, 1)
      assert.equal(await store.get(old), undefined)
      assert.deepEqual(await store.attempts(old), [])
      assert.equal((await store.get(recent))?.status, 'delivered')
      assert.equal((await store.get(oldFailed))?.status, 'failed')
      assert.equal((await store.get(pending.id))?.status, 'pending')

      const again = await pruneTasks(pool, {
        schema: store.schema,
        retentionSeconds: 30 * 86_400,
        statuses: ['failed'],
        batchSize: 1,
        now: () => new Date(now)
      })
      assert.equal(again, 1)
      assert.equal(await store.get(oldFailed), undefined)
    })

    it('refuses a negative age or an unknown status, naming the option', async () => {
      await assert.rejects(pruneTasks(pool, { retentionSeconds: -1 }), { name: 'TypeError', message: /`retentionSeconds`/ })
      await assert.rejects(pruneTasks(pool, { retentionSeconds: 1, statuses: ['scheduled' as never] }), {
        name: 'TypeError',
        message: /`statuses`/
      })
    })
  })

  describe('completions that arrive together', () => {
    // counts the statements the store sends, by their text
    function countingStore(schema: string) {
      const sent: string[] = []
      const counting = {
        query: (text: any, values?: unknown[]) => {
          sent.push(typeof text === 'string' ? text : text.text)
          return pool.query(text, values)
        }
      }
      return { store: track(createPostgresStore({ pool: counting, schema, listen: false })), sent }
    }

    async function leased(store: PostgresStore, count: number, leaseMs = 60_000) {
      const leases = []
      for (let i = 0; i < count; i++) {
        const input = newTask()
        await store.insert(input)
        leases.push((await store.attach(input.id, { body: '{}' }, { now: new Date(t0), leaseMs }))!)
      }
      return leases
    }

    it('records every attempt in fewer statements than completions, and still refuses a lease that was taken over', async () => {
      const { store, sent } = countingStore((await freshStore()).schema)
      const leases = await leased(store, 30)
      // one task's short lease runs out and another worker claims it: its first holder is stale
      const stale = (await leased(store, 1, 1_000))[0]!
      const [current] = await store.claim({ now: new Date(t0 + 2_000), limit: 1, leaseMs: 60_000 })
      assert.equal(current?.task.id, stale.task.id)
      sent.length = 0
      const results = await Promise.all([
        ...leases.map((lease, i) =>
          store.complete(
            lease,
            { attempt: 1, startedAt: new Date(t0), durationMs: 5, status: i % 2 ? 204 : 503, outcome: i % 2 ? 'delivered' : 'retry' },
            i % 2 ? { status: 'delivered' } : { status: 'scheduled', nextAttemptAt: new Date(t0 + 1000 * (i + 1)) }
          )
        ),
        store.complete(stale, { attempt: 1, startedAt: new Date(t0), durationMs: 5, status: 204, outcome: 'delivered' }, { status: 'delivered' })
      ])
      assert.deepEqual(results, [...leases.map(() => true), false])
      assert.ok(sent.length < leases.length, `${sent.length} statements for ${leases.length + 1} completions`)
      for (const [i, lease] of leases.entries()) {
        const task = (await store.get(lease.task.id))!
        assert.equal(task.status, i % 2 ? 'delivered' : 'scheduled')
        assert.equal(task.attempts, 1)
        if (i % 2 === 0) assert.equal(task.nextAttemptAt?.getTime(), t0 + 1000 * (i + 1))
        assert.deepEqual((await store.attempts(lease.task.id)).map((a) => a.status), [i % 2 ? 204 : 503])
      }
      // the stale holder recorded nothing; the current holder still completes
      assert.deepEqual(await store.attempts(stale.task.id), [])
      assert.equal((await store.get(stale.task.id))!.status, 'delivering')
      assert.equal(
        await store.complete(current!, { attempt: 1, startedAt: new Date(t0), durationMs: 5, status: 204, outcome: 'delivered' }, { status: 'delivered' }),
        true
      )
    })

    it("counts the answers of a batch toward their destinations' failure tallies, once each, batched like the records", async () => {
      const { store, sent } = countingStore((await freshStore()).schema)
      const leases = []
      for (const destination of ['a', 'a', 'a', 'b', 'b', 'c']) {
        const input = newTask({ destination })
        await store.insert(input)
        leases.push((await store.attach(input.id, { body: '{}' }, { now: new Date(t0), leaseMs: 60_000 }))!)
      }
      for (const destination of ['a', 'b']) await store.countDestinationFailure!(destination, new Date(t0), 60_000)
      sent.length = 0
      const statuses = [204, 503, 200, 404, 204, 204]
      await Promise.all(
        leases.map((lease, i) => store.complete(lease, { attempt: 1, startedAt: new Date(t0), durationMs: 5, status: statuses[i]!, outcome: 'delivered' }, { status: 'delivered' }))
      )
      assert.ok(sent.length < leases.length, `${sent.length} statements for ${leases.length} completions`)
      // a: 2 answers (the 503 is no answer); b: 2; c had no tally and gets none
      assert.deepEqual(await store.countDestinationFailure!('a', new Date(t0 + 10), 60_000), { inARow: 1, attempts: 4, failures: 2 })
      assert.deepEqual(await store.countDestinationFailure!('b', new Date(t0 + 10), 60_000), { inARow: 1, attempts: 4, failures: 2 })
      assert.deepEqual(await store.countDestinationFailure!('c', new Date(t0 + 10), 60_000), { inARow: 1, attempts: 1, failures: 1 })
    })

    it('fails only the completion whose attempt PostgreSQL cannot store, and records the others', async () => {
      const { store } = countingStore((await freshStore()).schema)
      const leases = await leased(store, 5)
      const settled = await Promise.allSettled(
        leases.map((lease, i) =>
          store.complete(
            lease,
            // text with a NUL character cannot be stored in a text column
            { attempt: 1, startedAt: new Date(t0), durationMs: 5, status: 200, outcome: 'delivered', ...(i === 2 ? { responseBody: 'a\u0000b' } : {}) },
            { status: 'delivered' }
          )
        )
      )
      assert.deepEqual(settled.map((result) => result.status), ['fulfilled', 'fulfilled', 'rejected', 'fulfilled', 'fulfilled'])
      const rejected = settled[2] as PromiseRejectedResult
      assert.ok(rejected.reason instanceof CallbackError)
      assert.equal(rejected.reason.code, 'ERR_CALLBACK_STORE')
      for (const [i, lease] of leases.entries()) {
        assert.equal((await store.get(lease.task.id))!.status, i === 2 ? 'delivering' : 'delivered')
        assert.equal((await store.attempts(lease.task.id)).length, i === 2 ? 0 : 1)
      }
    })
  })

  describe('LISTEN/NOTIFY', () => {
    it('wakes a worker of another process when a retry is scheduled', async () => {
      const schema = uniqueName('ec_pg_notify')
      await migratePostgres(pool, { schema })
      schemas.push(schema)
      const otherPool = new pg.Pool({ connectionString: DATABASE_URL, max: 2 })
      const listening = createPostgresStore({ pool: otherPool, schema })
      const writing = track(createPostgresStore({ pool, schema, listen: false }))
      try {
        let wakes = 0
        const unsubscribe = listening.subscribe(() => wakes++)
        await waitFor(() => wakes >= 1) // LISTEN holds: it says so by waking once
        const before = wakes
        await scheduleOneRetry(writing)
        await waitFor(() => wakes > before)
        unsubscribe()
      } finally {
        await listening.close()
        await otherPool.end()
      }
    })

    it('listens again after its connection is terminated, and wakes its listeners when it does', async () => {
      const store = track(await freshStore())
      const appName = uniqueName('ec_listen')
      const otherPool = new pg.Pool({ connectionString: DATABASE_URL, max: 2, application_name: appName })
      otherPool.on('error', () => {})
      const listening = createPostgresStore({ pool: otherPool, schema: store.schema })
      try {
        let wakes = 0
        listening.subscribe(() => wakes++)
        await waitFor(() => wakes >= 1)
        const { rows } = await pool.query(
          `SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE application_name = $1`,
          [appName]
        )
        assert.ok(rows.length >= 1, 'the listening connection was found and terminated')
        await waitFor(() => wakes >= 2) // reconnected and woke everyone
        const before = wakes
        const input = newTask()
        await store.insert(input)
        await store.release((await store.attach(input.id, { body: '{}' }, { now: new Date(t0), leaseMs: 1000 }))!)
        await waitFor(() => wakes > before) // notifications arrive again
      } finally {
        await listening.close()
        await otherPool.end()
      }
    })

    it('gives its LISTEN connection back to the pool without its listeners, however many stores come and go', async () => {
      const store = track(await freshStore())
      const otherPool = new pg.Pool({ connectionString: DATABASE_URL, max: 2 })
      const warnings: string[] = []
      const onWarning = (warning: Error) => warnings.push(warning.name)
      process.on('warning', onWarning)
      try {
        for (let i = 0; i < 15; i++) {
          const listening = createPostgresStore({ pool: otherPool, schema: store.schema })
          let wakes = 0
          const unsubscribe = listening.subscribe(() => wakes++)
          await waitFor(() => wakes >= 1)
          unsubscribe()
          await listening.close()
        }
        // every pooled connection, as the next user of the pool gets it
        const clients = await Promise.all([otherPool.connect(), otherPool.connect()])
        const left = clients.map((client) => ['notification', 'error', 'end'].map((event) => client.listenerCount(event)))
        for (const client of clients) client.release()
        // pg itself keeps one 'error' listener on an idle pooled client; ours must all be gone
        assert.deepEqual(left.map(([notification]) => notification), [0, 0], `notification listeners left: ${JSON.stringify(left)}`)
        assert.ok(left.every(([, error, end]) => error! <= 1 && end! <= 1), `listeners left: ${JSON.stringify(left)}`)
        await new Promise((resolve) => setImmediate(resolve))
        assert.deepEqual(warnings.filter((name) => name === 'MaxListenersExceededWarning'), [])
      } finally {
        process.off('warning', onWarning)
        await otherPool.end()
      }
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
