/**
 * A single `pg.Client` as the store's connection, as the docs allow: it runs the migration and the
 * store, and the store never tries to take a second connection from it for LISTEN.
 */
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import pg from 'pg'
import { createCallbackTask, createWorker, deliver, generateSecret } from 'endpoint-callback'
import { createPostgresStore, migratePostgres } from 'endpoint-callback/postgres'
import { createTestClock, createTestTransport } from '../support/sender.ts'
import { DATABASE_URL, serviceSkip, uniqueName } from '../support/services.ts'

const skip = await serviceSkip('postgres')
const schema = uniqueName('ec_pg_client')
let client: pg.Client

before(async () => {
  if (skip) return
  client = new pg.Client({ connectionString: DATABASE_URL })
  await client.connect()
})

after(async () => {
  if (skip) return
  await client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`)
  await client.end()
})

test('a connected pg.Client runs the migration, stores and delivers, and is never connect()ed again for LISTEN', { skip }, async () => {
  let connects = 0
  const connect = client.connect.bind(client)
  client.connect = (() => {
    connects += 1
    return connect()
  }) as typeof client.connect

  await migratePostgres(client, { schema })
  const store = createPostgresStore({ pool: client, schema })
  const clock = createTestClock()
  const transport = createTestTransport(() => ({ status: 503 }))
  const sender = { store, transport, secret: generateSecret(), now: clock.now, retry: { schedule: [1000], jitter: 0 } }
  const task = await createCallbackTask({ callbackUrl: 'https://client.example/hooks', event: 'report.ready' }, sender)
  assert.equal((await deliver(task, { n: 1 }, sender)).status, 'retrying')

  // A worker subscribes to the store's wake-ups; with a Client it polls instead of LISTENing.
  const worker = createWorker({ ...sender, pollIntervalMs: 20 })
  worker.start()
  await new Promise((resolve) => setTimeout(resolve, 300))
  await worker.stop()
  await store.close()
  assert.equal(connects, 0, 'the store called client.connect() on a connected pg.Client')
  assert.equal((await store.get(task.id))?.status, 'scheduled')

  assert.throws(() => createPostgresStore({ pool: client, schema, listen: true }), /`listen` needs a `pool` whose connect\(\) hands out a connection/)
})
