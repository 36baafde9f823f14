/**
 * Opens the PostgreSQL or Redis store on a schema / key prefix of its own, for integration tests and
 * benchmarks, in this process or (by name) in a child process sharing the same tasks.
 */
import pg from 'pg'
import { Redis } from 'ioredis'
import { randomUUID } from 'node:crypto'
import type { CallbackStore, NewCallbackTask } from 'endpoint-callback'
import { createPostgresStore, migratePostgres } from 'endpoint-callback/postgres'
import { createRedisStore } from 'endpoint-callback/redis'
import { DATABASE_URL, REDIS_URL, uniqueName } from './services.ts'

export type DurableKind = 'postgres' | 'redis'

export interface DurableStore {
  kind: DurableKind
  /** The schema or key prefix: pass it to a child process to open the same store. */
  name: string
  store: CallbackStore
  /** Runs raw SQL (Postgres) — for tests that look under the store. */
  sql?: (text: string, values?: unknown[]) => Promise<Array<Record<string, unknown>>>
  /** The store's own ioredis client (Redis). */
  redis?: Redis
  /** Closes the store and its client. */
  close(): Promise<void>
  /** Deletes the schema / keys, then closes. */
  drop(): Promise<void>
}

export interface OpenOptions {
  /** An existing schema / prefix (a child process joining the parent's store). */
  name?: string
  /** Connect here instead of DATABASE_URL / REDIS_URL (e.g. through a proxy). */
  url?: string
  /** Pool size (Postgres). Default 10. */
  max?: number
}

export async function openDurableStore(kind: DurableKind, options: OpenOptions = {}): Promise<DurableStore> {
  const name = options.name ?? uniqueName(kind === 'postgres' ? 'ec_it' : 'ec_it_redis')
  if (kind === 'postgres') {
    const pool = new pg.Pool({ connectionString: options.url ?? DATABASE_URL, max: options.max ?? 10 })
    // idle connections the server (or a cut proxy) closes must not take the process down
    pool.on('error', () => {})
    await migratePostgres(pool, { schema: name })
    const store = createPostgresStore({ pool, schema: name })
    const close = async () => {
      await store.close()
      await pool.end()
    }
    return {
      kind,
      name,
      store,
      sql: async (text, values) => (await pool.query(text, values)).rows,
      close,
      async drop() {
        await pool.query(`DROP SCHEMA IF EXISTS "${name}" CASCADE`)
        await close()
      }
    }
  }
  const redis = new Redis(options.url ?? REDIS_URL, { maxRetriesPerRequest: null })
  redis.on('error', () => {})
  const store = createRedisStore({ client: redis, prefix: name })
  const close = async () => {
    await store.close()
    redis.disconnect()
  }
  return {
    kind,
    name,
    store,
    redis,
    close,
    async drop() {
      let cursor = '0'
      do {
        const [next, keys] = await redis.scan(cursor, 'MATCH', `${name}:*`, 'COUNT', 1000)
        cursor = next
        if (keys.length > 0) await redis.del(...keys)
      } while (cursor !== '0')
      await close()
    }
  }
}

/**
 * Attaches a result to a pending task and gives it back due at once, as if its first attempt were
 * left to the workers: the body is the envelope `deliver` builds.
 */
export async function makeDue(store: CallbackStore, task: { id: string; event: string }, data: unknown = { ok: true }): Promise<void> {
  const now = new Date()
  const body = JSON.stringify({ type: task.event, timestamp: now.toISOString(), data })
  const lease = await store.attach(task.id, { body }, { now, leaseMs: 60_000 })
  if (!lease) throw new Error(`task ${task.id} is not pending`)
  if (!(await store.release(lease, now))) throw new Error(`task ${task.id} could not be released`)
}

/** Runs `each` over `items` with at most `width` at a time. */
export async function inParallel<T>(items: T[], width: number, each: (item: T) => Promise<void>): Promise<void> {
  let next = 0
  await Promise.all(
    Array.from({ length: Math.min(width, items.length) }, async () => {
      while (next < items.length) await each(items[next++]!)
    })
  )
}

/** The instant the store tests start from: fixed, so that no test depends on the wall clock. */
export const t0 = Date.UTC(2030, 0, 1)

/** A task to insert, created at `t0` unless overridden. */
export function newTask(overrides: Partial<NewCallbackTask> = {}): NewCallbackTask {
  const id = randomUUID()
  return { id, callbackUrl: `https://client.example/callbacks/${id}`, event: 'report.ready', createdAt: new Date(t0), ...overrides }
}

/** Inserts a task and leaves it scheduled for a retry at `t0` + 1 s, as a failed first attempt does. */
export async function scheduleOneRetry(store: CallbackStore): Promise<void> {
  const input = newTask()
  await store.insert(input)
  const lease = (await store.attach(input.id, { body: '{}' }, { now: new Date(t0), leaseMs: 1000 }))!
  await store.complete(lease, { attempt: 1, startedAt: new Date(t0), durationMs: 5, status: 503, outcome: 'retry' }, {
    status: 'scheduled',
    nextAttemptAt: new Date(t0 + 1000),
  })
}
