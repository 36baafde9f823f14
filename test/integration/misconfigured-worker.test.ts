/**
 * A misconfigured worker is never silent: with no `onEvent` listener, its store errors reach stderr,
 * once per distinct cause, with the fix — as Node prints an unhandled `'error'`.
 */
import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import pg from 'pg'
import { Redis } from 'ioredis'
import { createMemoryStore, createWorker, deliver, generateSecret } from 'endpoint-callback'
import type { CallbackStore } from 'endpoint-callback'
import { createPostgresStore } from 'endpoint-callback/postgres'
import { createRedisStore } from 'endpoint-callback/redis'
import { DATABASE_URL, REDIS_URL, serviceSkip, uniqueName } from '../support/services.ts'

/** Runs `body` with what is written to stderr meanwhile collected (and not printed). */
async function capturingStderr(body: (written: string[]) => Promise<void>): Promise<void> {
  const written: string[] = []
  const original = process.stderr.write
  process.stderr.write = ((chunk: string | Uint8Array) => {
    written.push(String(chunk))
    return true
  }) as typeof process.stderr.write
  try {
    await body(written)
  } finally {
    process.stderr.write = original
  }
}

async function until(check: () => boolean, what: string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms
  while (!check()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

/** Starts a worker without onEvent on `store`, lets it poll a while, and returns what it printed. */
async function printedBy(store: CallbackStore): Promise<string[]> {
  let printed: string[] = []
  await capturingStderr(async (written) => {
    const worker = createWorker({ store, secret: generateSecret(), pollIntervalMs: 10 })
    worker.start()
    try {
      await until(() => written.length > 0, 'the worker to report its store error')
      await new Promise((resolve) => setTimeout(resolve, 300)) // many more polls, each failing alike
    } finally {
      await worker.stop()
    }
    printed = written
  })
  return printed
}

describe('a worker on a PostgreSQL schema that was never migrated', { skip: await serviceSkip('postgres') }, () => {
  let pool: pg.Pool
  before(() => {
    pool = new pg.Pool({ connectionString: DATABASE_URL, max: 2 })
  })
  after(async () => {
    await pool?.end()
  })

  it('prints the cause and the fix to stderr, once per cause', async () => {
    const schema = uniqueName('ec_never_migrated')
    const printed = await printedBy(createPostgresStore({ pool, schema, listen: false }))
    const text = printed.join('')
    assert.match(text, /migratePostgres/)
    assert.match(text, new RegExp(schema))
    assert.equal(new Set(printed).size, printed.length, `each cause once: ${text}`)
    assert.ok(printed.length <= 3, `a few distinct causes at most, not one line per poll: ${text}`)
  })
})

describe('a worker on a Redis prefix that something else uses', { skip: await serviceSkip('redis') }, () => {
  let redis: Redis
  let prefix: string
  before(async () => {
    redis = new Redis(REDIS_URL)
    prefix = uniqueName('ec_taken')
    await redis.set(`${prefix}:due`, 'not a sorted set')
  })
  after(async () => {
    await redis?.del(`${prefix}:due`)
    redis?.disconnect()
  })

  it('says at start which key is in the way and that another prefix is needed', async () => {
    const printed = await printedBy(createRedisStore({ client: redis, prefix, subscribe: false }))
    const text = printed.join('')
    assert.match(text, new RegExp(`${prefix}:due is a string`))
    assert.match(text, /choose another `prefix`/)
    assert.equal(new Set(printed).size, printed.length, `each cause once: ${text}`)
  })
})

describe('signing material', () => {
  it('a worker or deliver with no key is refused when its options are first resolved', async () => {
    const store = createMemoryStore()
    assert.throws(() => createWorker({ store }), { name: 'TypeError', message: /secret, signingKey or keyRing is required/ })
    await assert.rejects(deliver('msg_x', {}, { store }), { name: 'TypeError', message: /secret, signingKey or keyRing is required/ })
    // said out loud: every task brings its own secret
    const worker = createWorker({ store, requireTaskSecret: true })
    assert.equal(worker.running, false)
  })
})
