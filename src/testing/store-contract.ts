/**
 * The conformance suite every {@link CallbackStore} passes: the memory, PostgreSQL and Redis stores
 * here, and any store of your own. One call registers the whole suite with `node:test`; each test
 * gets a fresh store from your factory.
 *
 * What it holds a store to, in short:
 *
 * - **Insert** creates a `pending` task with no attempts (with a `body`: a `scheduled` one, see the
 *   lifecycle cases at the end). An `idempotencyKey` already stored inserts
 *   nothing and answers the stored task with `created: false`, also when many inserts race. Without
 *   a key every insert is a new task. An `id` already stored is refused, never overwritten.
 * - **Round trip**: every field comes back as given — `metadata` as equal JSON, `secret` as the same
 *   string or array, instants as `Date`s. Optional fields that were never set are absent (not
 *   `null`). Every object a store hands out is the caller's own copy.
 * - **Attach** works on a `pending` task only, stores the body and leases the task to the caller:
 *   status `delivering`, lease until `now + leaseMs`, which `nextAttemptAt` also shows.
 * - **Claim** leases tasks that are due — `scheduled` with `nextAttemptAt <= now`, or `delivering`
 *   with an expired lease (`expiresAt <= now`) — earliest due first, at most `limit`, each with a
 *   fresh token: every claim of a task hands out a token it never handed out before. Concurrent
 *   claims never hand out one task twice. Pending and terminal tasks are never claimed.
 * - **Complete** is fenced by the lease token: while the token holds it appends the attempt,
 *   increments `attempts`, and applies the resolution — the status; `nextAttemptAt` for `scheduled`
 *   (none for terminal states); `lastError` replaced when the resolution has one and kept when it
 *   has none (it is the reason of the last *failed* attempt), and cleared once `delivered`. Once
 *   the lease is void (reclaimed after expiry, completed, released or cancelled) it answers `false`
 *   and changes nothing — also for the lease of an earlier claim while a newer claim of the task
 *   still holds it.
 * - **Release** hands a leased task back unattempted: `scheduled` at the given instant, or, without
 *   one, due at once — at the instant its lease was taken. Fenced like `complete`.
 * - **Cancel** ends any task not yet terminal, `delivering` included (its lease is void from then
 *   on); terminal or unknown tasks answer `false`.
 * - **Attempt history** keeps at least 20 attempts per task, oldest first, every field intact.
 * - **Subscribe**, when a store offers it, calls its listener after every release, every completion
 *   that schedules a retry and every redelivery — not just once (a call at subscription proves
 *   nothing).
 * - **insertMany**, when a store offers it, answers every task in the order given as `insert`
 *   would, in one call: a key stored before, or given twice in the batch, answers the stored (or
 *   first) task with `created: false`, also when batches race; a batch with an id already stored
 *   stores nothing; subscribers hear of the batch, never with a due instant later than its earliest.
 * - **Inspection**, when a store offers it: `list({ status: 'failed' })` pages through failed tasks
 *   newest first (`since`, `limit`, `cursor`), and `list` finds tasks in any state by status,
 *   event, callback host, id, idempotency key and time range, every filter combined; `redeliver` makes a failed task — and only a failed
 *   one — due at `now`, keeping its body and history; `countDue(now)` counts what a claim would take.
 *
 * **Stores have no clock.** Every decision about time — is it due, has the lease expired — uses
 * only the `now` the caller passes, and every instant a store writes comes from the caller too. The
 * suite runs with instants in 2001 and in 2100, so a store that consults the wall clock (`Date.now()`,
 * SQL `now()`, Redis `TIME`) fails it. This is also what lets many machines agree on "due".
 *
 * **Deliberately left out** (as bullmq's backend contract does, the suite says what it does not
 * ask): full-text search, retention and pruning of finished tasks, payload encryption at
 * rest, migrations between stores, `updatedAt` beyond being a `Date` (stores stamp it as suits
 * them), the order of tasks due at the same instant, how tokens look (only that they are fresh and
 * unguessable strings), enforcement of `deadline` (the sender decides), running inside a caller's
 * transaction (the Postgres store tests that itself), and durability across restarts or
 * connections. A store may cap the attempt history above 20.
 *
 * @example
 * ```ts
 * // test/stores/my-store.test.ts
 * import { storeContract } from 'endpoint-callback/testing'
 * import { createMyStore } from '../../src/my-store.ts'
 *
 * storeContract('my store', () => createMyStore({ prefix: `test-${crypto.randomUUID()}` }), {
 *   skip: process.env.MY_DB_URL ? false : 'MY_DB_URL is not set',
 *   cleanup: (store) => dropEverything(store)
 * })
 * ```
 *
 * @module endpoint-callback/testing
 */
import { afterEach, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import type { AttemptRecord, CallbackStore, Lease, NewCallbackTask, TaskListQuery } from '../types.ts'

/** Options of {@link storeContract}. */
export interface StoreContractOptions {
  /** A reason to skip the suite (e.g. the database is unreachable), or false; each case is reported skipped. */
  skip?: string | false | undefined
  /** Called after each test with the store the factory made (drop the schema, delete the keys). */
  cleanup?: ((store: CallbackStore) => void | Promise<void>) | undefined
}

/** Two eras: a store that compares with the wall clock gets one of them wrong. */
const eras = [
  { name: 'in 2001', start: Date.UTC(2001, 1, 3, 4, 5, 6, 789) },
  { name: 'in 2100', start: Date.UTC(2100, 6, 7, 8, 9, 10, 123) }
] as const
const base = eras[1].start
const leaseMs = 30_000

/**
 * Registers the store conformance suite under `describe(name)`. `factory` is called once per test
 * for a fresh, empty store; after each test `options.cleanup` runs with it, then its `close()`.
 *
 * @example
 * ```ts
 * import { storeContract } from 'endpoint-callback/testing'
 * import { createMemoryStore } from 'endpoint-callback'
 *
 * storeContract('memory', () => createMemoryStore())
 * ```
 */
export function storeContract(
  name: string,
  factory: () => CallbackStore | Promise<CallbackStore>,
  options: StoreContractOptions = {}
): void {
  if (typeof name !== 'string' || name === '') throw new TypeError('name must be a non-empty string')
  if (typeof factory !== 'function') throw new TypeError('factory must be a function')
  if (options.cleanup !== undefined && typeof options.cleanup !== 'function') {
    throw new TypeError('cleanup must be a function')
  }
  // Skipped test by test, not as a whole describe: the run's summary then counts every skipped case.
  const skip = options.skip || false
  defineStoreContract(
    {
      describe: (title, body) => void describe(title, body),
      it: (title, body) => void it(title, { skip }, body),
      afterEach: (body) => afterEach(body),
    },
    name,
    factory,
    options.cleanup
  )
}

/**
 * What the contract needs of a test runner: `node:test`'s shape, so the cases can also be
 * collected and run one by one (this repository runs them against deliberately broken stores).
 *
 * @internal
 */
export interface ContractRunner {
  describe(title: string, body: () => void): void
  it(title: string, body: (t: { skip(reason?: string): void }) => Promise<void>): void
  afterEach(body: () => Promise<void>): void
}

/**
 * Registers the contract's cases through `runner`; {@link storeContract} is this with `node:test`.
 *
 * @internal
 */
export function defineStoreContract(
  runner: ContractRunner,
  name: string,
  factory: () => CallbackStore | Promise<CallbackStore>,
  cleanup?: (store: CallbackStore) => void | Promise<void>
): void {
  const { describe, it, afterEach } = runner
  const made: CallbackStore[] = []

  const fresh = async (): Promise<CallbackStore> => {
    const store = await factory()
    made.push(store)
    return store
  }

  describe(`${name} store contract`, () => {
    afterEach(async () => {
      for (const store of made.splice(0)) {
        await cleanup?.(store)
        await store.close?.()
      }
    })

    describe('insert and get', () => {
      it('inserts a pending task with no attempts and answers created: true', async () => {
        const store = await fresh()
        const input = newTask()
        const { task, created } = await store.insert(input)
        assert.equal(created, true)
        assert.equal(task.id, input.id)
        assert.equal(task.status, 'pending')
        assert.equal(task.attempts, 0)
        assert.equal(task.nextAttemptAt, undefined)
        assert.equal(task.body, undefined)
        assert.equal(task.lastError, undefined)
      })

      it('returns every field as given, with instants as Dates', async () => {
        const store = await fresh()
        const input = newTask({
          idempotencyKey: `key-${randomUUID()}`,
          secret: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw',
          metadata: { orderId: 'o-1', amount: 12.5, nested: { tags: ['a', 'b'], ok: true, none: null } },
          deadline: new Date(base + 86_400_000)
        })
        const inserted = await store.insert(input)
        const stored = await store.get(input.id)
        for (const task of [inserted.task, stored]) {
          assert.ok(task)
          assert.deepEqual(defined(task), {
            id: input.id,
            status: 'pending',
            callbackUrl: input.callbackUrl,
            event: input.event,
            idempotencyKey: input.idempotencyKey,
            secret: input.secret,
            metadata: { orderId: 'o-1', amount: 12.5, nested: { tags: ['a', 'b'], ok: true, none: null } },
            attempts: 0,
            deadline: new Date(base + 86_400_000),
            createdAt: new Date(base),
            updatedAt: task.updatedAt
          })
          assert.ok(task.updatedAt instanceof Date && !Number.isNaN(task.updatedAt.getTime()), 'updatedAt is a Date')
        }
      })

      it('returns a secret given as an array as the same array, in order', async () => {
        const store = await fresh()
        const secret = ['whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD']
        const input = newTask({ secret })
        await store.insert(input)
        assert.deepEqual((await store.get(input.id))?.secret, secret)
      })

      it('returns the encryption key (a JWK or a JWKS URL) and intent verification as given, through a claim too', async () => {
        const store = await fresh()
        const jwk = { kty: 'OKP', crv: 'X25519', x: 'hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo', use: 'enc', alg: 'ECDH-ES', kid: 'k-1' }
        const byJwk = newTask({ encryptionKey: jwk, verifyIntent: true })
        const byUrl = newTask({ encryptionKey: 'https://client.example/.well-known/jwks.json' })
        await store.insert(byJwk)
        await store.insert(byUrl)
        assert.deepEqual((await store.get(byJwk.id))?.encryptionKey, jwk)
        assert.equal((await store.get(byJwk.id))?.verifyIntent, true)
        assert.equal((await store.get(byUrl.id))?.encryptionKey, 'https://client.example/.well-known/jwks.json')
        assert.equal((await store.get(byUrl.id))?.verifyIntent, undefined)
        const held = await store.attach(byJwk.id, { body: 'eyJ.x.y.z.w', contentType: 'application/jose' }, { now: new Date(base), leaseMs })
        assert.deepEqual(held?.task.encryptionKey, jwk)
        await store.release(held!, new Date(base))
        const [claimed] = await store.claim({ now: new Date(base), limit: 1, leaseMs })
        assert.deepEqual(claimed?.task.encryptionKey, jwk)
        assert.equal(claimed?.task.verifyIntent, true)
        assert.equal(claimed?.task.contentType, 'application/jose')
      })

      it('leaves out the optional fields that were never given', async () => {
        const store = await fresh()
        const input = newTask()
        await store.insert(input)
        const task = await store.get(input.id)
        assert.ok(task)
        for (const field of ['idempotencyKey', 'secret', 'encryptionKey', 'verifyIntent', 'metadata', 'body', 'contentType', 'nextAttemptAt', 'deadline', 'lastError'] as const) {
          assert.equal(task[field], undefined, `${field} is absent`)
        }
      })

      it('answers undefined for an id it does not know', async () => {
        const store = await fresh()
        assert.equal(await store.get(`unknown-${randomUUID()}`), undefined)
      })

      it('inserts two tasks when the same input comes twice without an idempotency key', async () => {
        const store = await fresh()
        const first = newTask()
        const second = { ...first, id: randomUUID() }
        assert.equal((await store.insert(first)).created, true)
        assert.equal((await store.insert(second)).created, true)
        assert.equal((await store.get(first.id))?.id, first.id)
        assert.equal((await store.get(second.id))?.id, second.id)
      })

      it('answers the stored task with created: false for an idempotency key it has seen', async () => {
        const store = await fresh()
        const idempotencyKey = `key-${randomUUID()}`
        const first = newTask({ idempotencyKey, callbackUrl: 'https://first.example/callbacks' })
        const again = newTask({ idempotencyKey, callbackUrl: 'https://second.example/callbacks' })
        await store.insert(first)
        const { task, created } = await store.insert(again)
        assert.equal(created, false)
        assert.equal(task.id, first.id)
        assert.equal(task.callbackUrl, 'https://first.example/callbacks')
        assert.equal(await store.get(again.id), undefined, 'the second task was not stored')
      })

      it('still answers the stored task for its idempotency key once the task is delivered', async () => {
        const store = await fresh()
        const idempotencyKey = `key-${randomUUID()}`
        const first = newTask({ idempotencyKey })
        await store.insert(first)
        const held = await attachNow(store, first.id, base)
        assert.equal(await store.complete(held, attemptAt(1, base), { status: 'delivered' }), true)
        const { task, created } = await store.insert(newTask({ idempotencyKey }))
        assert.equal(created, false)
        assert.equal(task.id, first.id)
        assert.equal(task.status, 'delivered')
      })

      it('creates exactly one task when 20 inserts with one idempotency key race', async () => {
        const store = await fresh()
        const idempotencyKey = `key-${randomUUID()}`
        const inputs = Array.from({ length: 20 }, () => newTask({ idempotencyKey }))
        const results = await Promise.all(inputs.map((input) => store.insert(input)))
        assert.equal(results.filter((result) => result.created).length, 1, 'exactly one insert created the task')
        const ids = new Set(results.map((result) => result.task.id))
        assert.equal(ids.size, 1, 'every caller got the same task')
        const [id] = ids
        assert.ok(inputs.some((input) => input.id === id))
        for (const input of inputs) {
          if (input.id !== id) assert.equal(await store.get(input.id), undefined)
        }
      })

      it('keeps different idempotency keys apart', async () => {
        const store = await fresh()
        const a = await store.insert(newTask({ idempotencyKey: `a-${randomUUID()}` }))
        const b = await store.insert(newTask({ idempotencyKey: `b-${randomUUID()}` }))
        assert.equal(a.created, true)
        assert.equal(b.created, true)
        assert.notEqual(a.task.id, b.task.id)
      })

      it('refuses a second task with an id already stored and keeps the first', async () => {
        const store = await fresh()
        const first = newTask()
        await store.insert(first)
        await assert.rejects(store.insert({ ...first, callbackUrl: 'https://other.example/callbacks', event: 'other' }))
        const task = await store.get(first.id)
        assert.equal(task?.callbackUrl, first.callbackUrl)
        assert.equal(task?.event, first.event)
      })
    })

    describe('copies', () => {
      it('keeps its own copy of what it was given', async () => {
        const store = await fresh()
        const secret = ['whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw']
        const metadata = { nested: { count: 1 } }
        const input = newTask({ secret, metadata, deadline: new Date(base + 1000) })
        await store.insert(input)
        secret.push('whsec_added')
        metadata.nested.count = 2
        input.deadline!.setTime(0)
        input.createdAt.setTime(0)
        const task = await store.get(input.id)
        assert.deepEqual(task?.secret, ['whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'])
        assert.deepEqual(task?.metadata, { nested: { count: 1 } })
        assert.equal(task?.deadline?.getTime(), base + 1000)
        assert.equal(task?.createdAt.getTime(), base)
      })

      it('hands out tasks whose changes never reach the store', async () => {
        const store = await fresh()
        const input = newTask({ secret: ['whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'], metadata: { nested: { count: 1 } } })
        const { task: inserted } = await store.insert(input)
        const got = await store.get(input.id)
        assert.ok(got)
        assert.notEqual(got, inserted, 'two reads are two objects')
        for (const task of [inserted, got]) {
          task.status = 'delivered'
          task.attempts = 99
          ;(task.secret as string[]).push('whsec_added')
          ;(task.metadata!.nested as { count: number }).count = 2
          task.createdAt.setTime(0)
        }
        const again = await store.get(input.id)
        assert.equal(again?.status, 'pending')
        assert.equal(again?.attempts, 0)
        assert.deepEqual(again?.secret, ['whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'])
        assert.deepEqual(again?.metadata, { nested: { count: 1 } })
        assert.equal(again?.createdAt.getTime(), base)
      })

      it('hands out leases and attempt records whose changes never reach the store', async () => {
        const store = await fresh()
        const input = newTask()
        await store.insert(input)
        const held = await attachNow(store, input.id, base)
        held.task.status = 'pending'
        held.task.nextAttemptAt?.setTime(0)
        held.expiresAt.setTime(0)
        assert.equal((await store.get(input.id))?.status, 'delivering')
        assert.equal(await reclaimable(store, base), false, 'the lease still runs to its own expiry')

        const attempt = attemptAt(1, base, { status: 503, responseBody: 'busy' })
        assert.equal(await store.complete(held, attempt, retryAt(base + 5000)), true)
        attempt.startedAt.setTime(0)
        attempt.status = 200
        const history = await store.attempts(input.id)
        assert.equal(history[0]?.startedAt.getTime(), base)
        assert.equal(history[0]?.status, 503)
        history[0]!.status = 201
        history.push(attemptAt(2, base))
        const again = await store.attempts(input.id)
        assert.equal(again.length, 1)
        assert.equal(again[0]?.status, 503)
      })
    })

    describe('attach', () => {
      it('stores the body and leases a pending task to the caller until now + leaseMs', async () => {
        const store = await fresh()
        const input = newTask()
        await store.insert(input)
        const held = await store.attach(input.id, { body: '{"type":"report.ready","data":{}}', contentType: 'application/json; charset=utf-8' }, { now: new Date(base), leaseMs })
        assert.ok(held, 'a lease')
        assert.equal(typeof held.token, 'string')
        assert.ok(held.token.length >= 16, 'the token is long enough not to be guessed')
        assert.deepEqual(held.expiresAt, new Date(base + leaseMs))
        assert.equal(held.task.id, input.id)
        assert.equal(held.task.status, 'delivering')
        assert.equal(held.task.attempts, 0)
        assert.equal(held.task.body, '{"type":"report.ready","data":{}}')
        assert.equal(held.task.contentType, 'application/json; charset=utf-8')
        assert.deepEqual(held.task.nextAttemptAt, new Date(base + leaseMs))
        const stored = await store.get(input.id)
        assert.equal(stored?.status, 'delivering')
        assert.equal(stored?.body, '{"type":"report.ready","data":{}}')
        assert.equal(stored?.contentType, 'application/json; charset=utf-8')
        assert.deepEqual(stored?.nextAttemptAt, new Date(base + leaseMs))
      })

      it('leaves contentType out when none is given', async () => {
        const store = await fresh()
        const input = newTask()
        await store.insert(input)
        const held = await store.attach(input.id, { body: '{}' }, { now: new Date(base), leaseMs })
        assert.equal(held?.task.contentType, undefined)
        assert.equal((await store.get(input.id))?.contentType, undefined)
      })

      it('answers undefined, changing nothing, when the task was attached already', async () => {
        const store = await fresh()
        const input = newTask()
        await store.insert(input)
        const first = await store.attach(input.id, { body: 'first' }, { now: new Date(base), leaseMs })
        assert.ok(first)
        assert.equal(await store.attach(input.id, { body: 'second' }, { now: new Date(base + 1), leaseMs }), undefined)
        const task = await store.get(input.id)
        assert.equal(task?.body, 'first')
        assert.deepEqual(task?.nextAttemptAt, new Date(base + leaseMs))
        assert.equal(await store.complete(first, attemptAt(1, base), { status: 'delivered' }), true, 'the first lease still holds')
      })

      it('answers undefined for an id it does not know', async () => {
        const store = await fresh()
        assert.equal(await store.attach(`unknown-${randomUUID()}`, { body: '{}' }, { now: new Date(base), leaseMs }), undefined)
      })

      it('answers undefined for a task that is scheduled, delivered or cancelled', async () => {
        const store = await fresh()
        const scheduled = await scheduledTask(store, base + 1000)
        const delivered = newTask()
        await store.insert(delivered)
        await store.complete(await attachNow(store, delivered.id, base), attemptAt(1, base), { status: 'delivered' })
        const cancelled = newTask()
        await store.insert(cancelled)
        await store.cancel(cancelled.id)
        for (const id of [scheduled, delivered.id, cancelled.id]) {
          const before = await store.get(id)
          assert.equal(await store.attach(id, { body: 'late' }, { now: new Date(base), leaseMs }), undefined)
          const after = await store.get(id)
          assert.equal(after?.status, before?.status)
          assert.equal(after?.body, before?.body)
        }
      })
    })

    describe('claim', () => {
      for (const era of eras) {
        it(`leases the tasks that are due, earliest first, at most limit at a time (${era.name})`, async () => {
          const store = await fresh()
          const t = era.start
          // inserted out of order, so insertion order cannot pass for due order
          const offsets = [4000, 1000, 5000, 2000, 3000]
          const ids = new Map<number, string>()
          for (const offset of offsets) ids.set(offset, await scheduledTask(store, t + offset, t))
          const first = await store.claim({ now: new Date(t + 5000), limit: 3, leaseMs })
          assert.deepEqual(first.map((held) => held.task.id), [1000, 2000, 3000].map((offset) => ids.get(offset)))
          const second = await store.claim({ now: new Date(t + 5000), limit: 3, leaseMs })
          assert.deepEqual(second.map((held) => held.task.id), [4000, 5000].map((offset) => ids.get(offset)))
          assert.deepEqual(await store.claim({ now: new Date(t + 5000), limit: 3, leaseMs }), [])
        })

        it(`does not lease a task before its nextAttemptAt, and does at that instant (${era.name})`, async () => {
          const store = await fresh()
          const t = era.start
          const id = await scheduledTask(store, t + 10_000, t)
          assert.deepEqual(await store.claim({ now: new Date(t), limit: 10, leaseMs }), [])
          assert.deepEqual(await store.claim({ now: new Date(t + 9_999), limit: 10, leaseMs }), [])
          const claimed = await store.claim({ now: new Date(t + 10_000), limit: 10, leaseMs })
          assert.deepEqual(claimed.map((held) => held.task.id), [id])
        })

        it(`reclaims a delivering task once its lease expires, and not before (${era.name})`, async () => {
          const store = await fresh()
          const t = era.start
          const input = newTask({ createdAt: new Date(t) })
          await store.insert(input)
          const held = await attachNow(store, input.id, t)
          assert.deepEqual(await store.claim({ now: new Date(t + leaseMs - 1), limit: 10, leaseMs }), [])
          const reclaimed = await store.claim({ now: new Date(t + leaseMs), limit: 10, leaseMs })
          assert.deepEqual(reclaimed.map((next) => next.task.id), [input.id])
          assert.notEqual(reclaimed[0]?.token, held.token)
          assert.deepEqual(reclaimed[0]?.expiresAt, new Date(t + 2 * leaseMs))
        })

        it(`makes a task released without a date due at once (${era.name})`, async () => {
          const store = await fresh()
          const t = era.start
          const id = await scheduledTask(store, t, t)
          const [held] = await store.claim({ now: new Date(t), limit: 1, leaseMs })
          assert.equal(held?.task.id, id)
          assert.equal(await store.release(held!), true)
          const task = await store.get(id)
          assert.equal(task?.status, 'scheduled')
          assert.ok(task?.nextAttemptAt instanceof Date && task.nextAttemptAt.getTime() <= t, 'due no later than the claim')
          const again = await store.claim({ now: new Date(t), limit: 1, leaseMs })
          assert.deepEqual(again.map((next) => next.task.id), [id])
        })
      }

      it('gives each lease a fresh token, expiry now + leaseMs, and the task as delivering', async () => {
        const store = await fresh()
        const ids = [await scheduledTask(store, base), await scheduledTask(store, base + 1)]
        const claimed = await store.claim({ now: new Date(base + 10), limit: 10, leaseMs: 12_345 })
        assert.deepEqual(claimed.map((held) => held.task.id), ids)
        assert.equal(new Set(claimed.map((held) => held.token)).size, 2, 'tokens differ')
        for (const held of claimed) {
          assert.equal(typeof held.token, 'string')
          assert.ok(held.token.length >= 16)
          assert.deepEqual(held.expiresAt, new Date(base + 10 + 12_345))
          assert.equal(held.task.status, 'delivering')
          assert.equal(held.task.attempts, 0)
          assert.deepEqual(held.task.nextAttemptAt, new Date(base + 10 + 12_345))
          const stored = await store.get(held.task.id)
          assert.equal(stored?.status, 'delivering')
          assert.deepEqual(stored?.nextAttemptAt, new Date(base + 10 + 12_345))
        }
      })

      it('gives a task a new token at every claim, however it came due again', async () => {
        const store = await fresh()
        const id = await scheduledTask(store, base)
        const tokens: string[] = []
        const claimAt = async (now: number, after: string): Promise<Lease> => {
          const [held] = await store.claim({ now: new Date(now), limit: 1, leaseMs })
          assert.equal(held?.task.id, id, `claimed again after ${after}`)
          tokens.push(held!.token)
          return held!
        }
        let held = await claimAt(base, 'being released')
        assert.equal(await store.complete(held, attemptAt(1, base, { status: 503 }), retryAt(base + 1000, 'HTTP 503')), true)
        held = await claimAt(base + 1000, 'a completion that scheduled a retry')
        assert.equal(await store.release(held, new Date(base + 2000)), true)
        held = await claimAt(base + 2000, 'a release')
        await claimAt(base + 2000 + leaseMs, 'its lease expired')
        assert.equal(new Set(tokens).size, tokens.length, `successive claims of one task handed out a token twice: ${tokens.length} claims, ${new Set(tokens).size} tokens`)
      })

      it('hands out whole tasks, body and secret included', async () => {
        const store = await fresh()
        const input = newTask({ secret: ['whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'], metadata: { a: 1 } })
        await store.insert(input)
        const held = await store.attach(input.id, { body: '{"x":1}', contentType: 'application/json' }, { now: new Date(base), leaseMs })
        await store.release(held!, new Date(base))
        const [claimed] = await store.claim({ now: new Date(base), limit: 1, leaseMs })
        assert.equal(claimed?.task.body, '{"x":1}')
        assert.equal(claimed?.task.contentType, 'application/json')
        assert.deepEqual(claimed?.task.secret, ['whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'])
        assert.deepEqual(claimed?.task.metadata, { a: 1 })
        assert.equal(claimed?.task.callbackUrl, input.callbackUrl)
      })

      it('does not lease a task again while its lease holds', async () => {
        const store = await fresh()
        const id = await scheduledTask(store, base)
        const [held] = await store.claim({ now: new Date(base), limit: 10, leaseMs })
        assert.equal(held?.task.id, id)
        assert.deepEqual(await store.claim({ now: new Date(base + leaseMs - 1), limit: 10, leaseMs }), [])
      })

      it('orders scheduled tasks and expired leases together by when they fell due', async () => {
        const store = await fresh()
        const late = await scheduledTask(store, base + 3000)
        const abandoned = newTask()
        await store.insert(abandoned)
        await attachNow(store, abandoned.id, base + 2000 - leaseMs) // expires at base + 2000
        const early = await scheduledTask(store, base + 1000)
        const claimed = await store.claim({ now: new Date(base + 5000), limit: 10, leaseMs })
        assert.deepEqual(claimed.map((held) => held.task.id), [early, abandoned.id, late])
      })

      it('respects limit when many tasks are due', async () => {
        const store = await fresh()
        for (let i = 0; i < 30; i++) await scheduledTask(store, base + i)
        const claimed = await store.claim({ now: new Date(base + 100), limit: 7, leaseMs })
        assert.equal(claimed.length, 7)
        assert.equal(new Set(claimed.map((held) => held.task.id)).size, 7)
      })

      it('never leases pending, delivered, failed or cancelled tasks', async () => {
        const store = await fresh()
        const pending = newTask()
        await store.insert(pending)
        const ids = [pending.id]
        for (const status of ['delivered', 'failed', 'cancelled'] as const) {
          const input = newTask()
          await store.insert(input)
          const held = await attachNow(store, input.id, base)
          const resolution = status === 'delivered' ? { status } : { status, lastError: 'gone' }
          assert.equal(await store.complete(held, attemptAt(1, base), resolution), true)
          ids.push(input.id)
        }
        const cancelledWhileScheduled = await scheduledTask(store, base)
        assert.equal(await store.cancel(cancelledWhileScheduled), true)
        ids.push(cancelledWhileScheduled)
        const farFuture = new Date(base + 10 * 365 * 86_400_000)
        assert.deepEqual(await store.claim({ now: farFuture, limit: 100, leaseMs }), [])
        for (const id of ids) assert.notEqual((await store.get(id))?.status, 'delivering')
      })

      it('answers an empty list when nothing is stored', async () => {
        const store = await fresh()
        assert.deepEqual(await store.claim({ now: new Date(base), limit: 10, leaseMs }), [])
      })

      it('never hands one task to two of 10 concurrent claims over 50 due tasks', async () => {
        const store = await fresh()
        const ids = new Set<string>()
        for (let i = 0; i < 50; i++) ids.add(await scheduledTask(store, base + i))
        const now = new Date(base + 1000)
        const batches = await Promise.all(Array.from({ length: 10 }, () => store.claim({ now, limit: 10, leaseMs })))
        const handedOut = batches.flat().map((held) => held.task.id)
        assert.equal(new Set(handedOut).size, handedOut.length, 'no task was handed out twice')
        for (const batch of batches) assert.ok(batch.length <= 10)
        // whatever a claim skipped while another held it is still there for the next claim
        for (;;) {
          const more = await store.claim({ now, limit: 10, leaseMs })
          if (more.length === 0) break
          handedOut.push(...more.map((held) => held.task.id))
        }
        assert.equal(handedOut.length, 50, 'every task was handed out exactly once')
        assert.deepEqual(new Set(handedOut), ids)
      })
    })

    describe('complete', () => {
      it('records the attempt and schedules the next one when the resolution says so', async () => {
        const store = await fresh()
        const input = newTask()
        await store.insert(input)
        const held = await attachNow(store, input.id, base)
        const attempt = attemptAt(1, base, { status: 503, responseBody: 'busy', outcome: 'retry' })
        assert.equal(await store.complete(held, attempt, retryAt(base + 5000, 'HTTP 503')), true)
        const task = await store.get(input.id)
        assert.equal(task?.status, 'scheduled')
        assert.equal(task?.attempts, 1)
        assert.deepEqual(task?.nextAttemptAt, new Date(base + 5000))
        assert.equal(task?.lastError, 'HTTP 503')
        assert.deepEqual((await store.attempts(input.id)).map(defined), [defined(attempt)])
        assert.deepEqual(await store.claim({ now: new Date(base + 4999), limit: 10, leaseMs }), [])
        const [again] = await store.claim({ now: new Date(base + 5000), limit: 10, leaseMs })
        assert.equal(again?.task.id, input.id)
        assert.equal(again?.task.attempts, 1)
      })

      it('ends the task as delivered, with no next attempt and never claimed again', async () => {
        const store = await fresh()
        const input = newTask()
        await store.insert(input)
        const held = await attachNow(store, input.id, base)
        assert.equal(await store.complete(held, attemptAt(1, base, { status: 204, outcome: 'delivered' }), { status: 'delivered' }), true)
        const task = await store.get(input.id)
        assert.equal(task?.status, 'delivered')
        assert.equal(task?.attempts, 1)
        assert.equal(task?.nextAttemptAt, undefined)
        assert.equal(task?.lastError, undefined)
        assert.deepEqual(await store.claim({ now: new Date(base + 10 * leaseMs), limit: 10, leaseMs }), [])
        assert.equal(await store.cancel(input.id), false)
      })

      it('ends the task as failed or cancelled with the reason given', async () => {
        const store = await fresh()
        for (const status of ['failed', 'cancelled'] as const) {
          const input = newTask()
          await store.insert(input)
          const held = await attachNow(store, input.id, base)
          const attempt = attemptAt(1, base, { status: status === 'failed' ? 400 : 410, outcome: status })
          assert.equal(await store.complete(held, attempt, { status, lastError: `HTTP ${attempt.status}` }), true)
          const task = await store.get(input.id)
          assert.equal(task?.status, status)
          assert.equal(task?.attempts, 1)
          assert.equal(task?.nextAttemptAt, undefined)
          assert.equal(task?.lastError, `HTTP ${attempt.status}`)
        }
        assert.deepEqual(await store.claim({ now: new Date(base + 10 * leaseMs), limit: 10, leaseMs }), [])
      })

      it('replaces lastError when the resolution gives one, and clears it once delivered', async () => {
        const store = await fresh()
        const input = newTask()
        await store.insert(input)
        let held = await attachNow(store, input.id, base)
        await store.complete(held, attemptAt(1, base, { status: 500 }), retryAt(base + 1, 'HTTP 500'))
        ;[held] = (await store.claim({ now: new Date(base + 1), limit: 1, leaseMs })) as [Lease]
        await store.complete(held, attemptAt(2, base + 1, { error: 'ERR_CALLBACK_TIMEOUT: no answer' }), retryAt(base + 2, 'ERR_CALLBACK_TIMEOUT: no answer'))
        assert.equal((await store.get(input.id))?.lastError, 'ERR_CALLBACK_TIMEOUT: no answer')
        ;[held] = (await store.claim({ now: new Date(base + 2), limit: 1, leaseMs })) as [Lease]
        await store.complete(held, attemptAt(3, base + 2, { status: 200, outcome: 'delivered' }), { status: 'delivered' })
        const task = await store.get(input.id)
        assert.equal(task?.status, 'delivered')
        assert.equal(task?.lastError, undefined)
      })

      it('refuses a completion whose lease expired and was claimed again, changing nothing', async () => {
        const store = await fresh()
        const input = newTask()
        await store.insert(input)
        const stale = await attachNow(store, input.id, base)
        const [reclaimed] = await store.claim({ now: new Date(base + leaseMs), limit: 1, leaseMs })
        assert.ok(reclaimed)
        assert.equal(await store.complete(stale, attemptAt(1, base, { status: 200, outcome: 'delivered' }), { status: 'delivered' }), false)
        assert.equal(await store.release(stale, new Date(base)), false)
        let task = await store.get(input.id)
        assert.equal(task?.status, 'delivering')
        assert.equal(task?.attempts, 0)
        assert.deepEqual(task?.nextAttemptAt, new Date(base + 2 * leaseMs))
        assert.deepEqual(await store.attempts(input.id), [])
        // the new holder is unaffected
        assert.equal(await store.complete(reclaimed, attemptAt(1, base + leaseMs, { status: 200, outcome: 'delivered' }), { status: 'delivered' }), true)
        task = await store.get(input.id)
        assert.equal(task?.status, 'delivered')
        assert.equal(task?.attempts, 1)
        assert.equal((await store.attempts(input.id)).length, 1)
      })

      it('refuses a completion and a release with the lease of an earlier claim while a newer claim holds the task', async () => {
        const store = await fresh()
        const id = await scheduledTask(store, base)
        const [stale] = await store.claim({ now: new Date(base), limit: 1, leaseMs })
        assert.ok(stale, 'the first claim')
        // the first holder stalls past its lease; a second worker claims the task and is still sending
        const [current] = await store.claim({ now: new Date(base + leaseMs), limit: 1, leaseMs })
        assert.equal(current?.task.id, id, 'claimed again once the first lease expired')
        assert.equal(
          await store.complete(stale, attemptAt(1, base, { status: 200, outcome: 'delivered' }), { status: 'delivered' }),
          false,
          'the stale holder completed over the newer claim'
        )
        assert.equal(await store.release(stale, new Date(base)), false, 'the stale holder released the newer claim')
        let task = await store.get(id)
        assert.equal(task?.status, 'delivering')
        assert.equal(task?.attempts, 0)
        assert.deepEqual(task?.nextAttemptAt, new Date(base + 2 * leaseMs))
        assert.deepEqual(await store.attempts(id), [])
        assert.deepEqual(await store.claim({ now: new Date(base + leaseMs + 1), limit: 10, leaseMs }), [], 'the newer lease still holds')
        assert.equal(await store.complete(current!, attemptAt(1, base + leaseMs, { status: 503 }), retryAt(base + leaseMs + 1000, 'HTTP 503')), true)
        task = await store.get(id)
        assert.equal(task?.status, 'scheduled')
        assert.equal(task?.attempts, 1)
        assert.equal(task?.lastError, 'HTTP 503')
      })

      it('refuses a second completion with the same lease', async () => {
        const store = await fresh()
        const input = newTask()
        await store.insert(input)
        const held = await attachNow(store, input.id, base)
        assert.equal(await store.complete(held, attemptAt(1, base, { status: 500 }), retryAt(base + 1000, 'HTTP 500')), true)
        assert.equal(await store.complete(held, attemptAt(1, base, { status: 200, outcome: 'delivered' }), { status: 'delivered' }), false)
        assert.equal(await store.release(held), false)
        const task = await store.get(input.id)
        assert.equal(task?.status, 'scheduled')
        assert.equal(task?.attempts, 1)
        assert.deepEqual(task?.nextAttemptAt, new Date(base + 1000))
        assert.equal((await store.attempts(input.id)).length, 1)
      })

      it('refuses a completion with a token that was never handed out', async () => {
        const store = await fresh()
        const input = newTask()
        await store.insert(input)
        const held = await attachNow(store, input.id, base)
        const forged: Lease = { ...held, token: `${held.token}x` }
        assert.equal(await store.complete(forged, attemptAt(1, base), { status: 'delivered' }), false)
        assert.equal(await store.release(forged), false)
        assert.equal((await store.get(input.id))?.status, 'delivering')
        assert.equal(await store.complete(held, attemptAt(1, base), { status: 'delivered' }), true)
      })

      it('refuses a completion for a task it does not know', async () => {
        const store = await fresh()
        const input = newTask()
        await store.insert(input)
        const held = await attachNow(store, input.id, base)
        const elsewhere: Lease = { ...held, task: { ...held.task, id: `unknown-${randomUUID()}` } }
        assert.equal(await store.complete(elsewhere, attemptAt(1, base), { status: 'delivered' }), false)
        assert.equal(await store.release(elsewhere), false)
      })

      it('keeps a history of 20 attempts in order, every field intact', async () => {
        const store = await fresh()
        const input = newTask()
        await store.insert(input)
        let held = await attachNow(store, input.id, base)
        const recorded: AttemptRecord[] = []
        for (let n = 1; n <= 20; n++) {
          const startedAt = base + n * 1000
          const attempt: AttemptRecord =
            n === 20
              ? attemptAt(n, startedAt, { status: 200, responseBody: 'ok', outcome: 'delivered', durationMs: 12.5 })
              : n % 2 === 0
                ? attemptAt(n, startedAt, { error: `ERR_CALLBACK_CONNECTION: reset ${n}`, durationMs: n })
                : attemptAt(n, startedAt, { status: 500 + n, responseBody: `body ${n}`, durationMs: n })
          recorded.push(attempt)
          const resolution = n === 20 ? ({ status: 'delivered' } as const) : retryAt(startedAt + 500, `failure ${n}`)
          assert.equal(await store.complete(held, attempt, resolution), true)
          if (n < 20) {
            const [next] = await store.claim({ now: new Date(startedAt + 500), limit: 1, leaseMs })
            assert.ok(next, `claimed again for attempt ${n + 1}`)
            held = next
          }
        }
        const history = await store.attempts(input.id)
        assert.equal(history.length, 20)
        assert.deepEqual(history.map(defined), recorded.map(defined))
        for (const attempt of history) assert.ok(attempt.startedAt instanceof Date)
        const task = await store.get(input.id)
        assert.equal(task?.attempts, 20)
        assert.equal(task?.status, 'delivered')
      })

      it('answers an empty history for a task never attempted and for an unknown id', async () => {
        const store = await fresh()
        const input = newTask()
        await store.insert(input)
        assert.deepEqual(await store.attempts(input.id), [])
        assert.deepEqual(await store.attempts(`unknown-${randomUUID()}`), [])
      })
    })

    describe('release', () => {
      it('gives a leased task back unattempted, due at the instant given', async () => {
        const store = await fresh()
        const input = newTask()
        await store.insert(input)
        const held = await attachNow(store, input.id, base)
        assert.equal(await store.release(held, new Date(base + 7000)), true)
        const task = await store.get(input.id)
        assert.equal(task?.status, 'scheduled')
        assert.equal(task?.attempts, 0)
        assert.deepEqual(task?.nextAttemptAt, new Date(base + 7000))
        assert.deepEqual(await store.attempts(input.id), [])
        assert.deepEqual(await store.claim({ now: new Date(base + 6999), limit: 10, leaseMs }), [])
        const [again] = await store.claim({ now: new Date(base + 7000), limit: 10, leaseMs })
        assert.equal(again?.task.id, input.id)
        assert.notEqual(again?.token, held.token)
        assert.equal(again?.task.body, held.task.body)
      })

      it('refuses a second release and a completion after it', async () => {
        const store = await fresh()
        const input = newTask()
        await store.insert(input)
        const held = await attachNow(store, input.id, base)
        assert.equal(await store.release(held, new Date(base + 7000)), true)
        assert.equal(await store.release(held, new Date(base)), false)
        assert.equal(await store.complete(held, attemptAt(1, base), { status: 'delivered' }), false)
        const task = await store.get(input.id)
        assert.equal(task?.status, 'scheduled')
        assert.deepEqual(task?.nextAttemptAt, new Date(base + 7000))
        assert.equal(task?.attempts, 0)
      })

      it('keeps lastError and the attempt count of earlier attempts', async () => {
        const store = await fresh()
        const input = newTask()
        await store.insert(input)
        await store.complete(await attachNow(store, input.id, base), attemptAt(1, base, { status: 502 }), retryAt(base + 10, 'HTTP 502'))
        const [held] = await store.claim({ now: new Date(base + 10), limit: 1, leaseMs })
        assert.equal(await store.release(held!, new Date(base + 20)), true)
        const task = await store.get(input.id)
        assert.equal(task?.attempts, 1)
        assert.equal(task?.lastError, 'HTTP 502')
        assert.equal((await store.attempts(input.id)).length, 1)
      })
    })

    describe('cancel', () => {
      it('cancels a pending task, which can then not be attached', async () => {
        const store = await fresh()
        const input = newTask()
        await store.insert(input)
        assert.equal(await store.cancel(input.id), true)
        assert.equal((await store.get(input.id))?.status, 'cancelled')
        assert.equal(await store.attach(input.id, { body: '{}' }, { now: new Date(base), leaseMs }), undefined)
      })

      it('cancels a scheduled task, which is then never claimed', async () => {
        const store = await fresh()
        const id = await scheduledTask(store, base)
        assert.equal(await store.cancel(id), true)
        const task = await store.get(id)
        assert.equal(task?.status, 'cancelled')
        assert.equal(task?.nextAttemptAt, undefined)
        assert.deepEqual(await store.claim({ now: new Date(base + 10 * leaseMs), limit: 10, leaseMs }), [])
      })

      it('cancels a delivering task and voids its lease', async () => {
        const store = await fresh()
        const input = newTask()
        await store.insert(input)
        const held = await attachNow(store, input.id, base)
        assert.equal(await store.cancel(input.id), true)
        assert.equal(await store.complete(held, attemptAt(1, base, { status: 200, outcome: 'delivered' }), { status: 'delivered' }), false)
        assert.equal(await store.release(held), false)
        const task = await store.get(input.id)
        assert.equal(task?.status, 'cancelled')
        assert.equal(task?.attempts, 0)
        assert.equal(task?.nextAttemptAt, undefined)
        assert.deepEqual(await store.attempts(input.id), [])
        assert.deepEqual(await store.claim({ now: new Date(base + 10 * leaseMs), limit: 10, leaseMs }), [], 'not reclaimed when the lease would have expired')
      })

      it('answers false for a delivered, failed or cancelled task and changes nothing', async () => {
        const store = await fresh()
        for (const status of ['delivered', 'failed', 'cancelled'] as const) {
          const input = newTask()
          await store.insert(input)
          const held = await attachNow(store, input.id, base)
          await store.complete(held, attemptAt(1, base), status === 'delivered' ? { status } : { status, lastError: 'no' })
          assert.equal(await store.cancel(input.id), false)
          assert.equal((await store.get(input.id))?.status, status)
        }
        const cancelled = newTask()
        await store.insert(cancelled)
        assert.equal(await store.cancel(cancelled.id), true)
        assert.equal(await store.cancel(cancelled.id), false)
      })

      it('answers false for an id it does not know', async () => {
        const store = await fresh()
        assert.equal(await store.cancel(`unknown-${randomUUID()}`), false)
      })
    })

    describe('inspection (optional)', () => {
      it('lists failed tasks newest first, only those failed since a time, a page at a time', async (t) => {
        const store = await fresh()
        if (!skipUnless(t, store, 'list')) return
        const oldest = await failedTask(store, base + 1000, 'HTTP 400')
        const middle = await failedTask(store, base + 2000, 'HTTP 404')
        const newest = await failedTask(store, base + 3000, 'HTTP 422')
        // tasks in every other state, which a list of failed tasks never shows
        await store.insert(newTask())
        await scheduledTask(store, base + 5000)
        const delivered = newTask()
        await store.insert(delivered)
        assert.equal(await store.complete(await attachNow(store, delivered.id, base + 4000), attemptAt(1, base + 4000, { status: 200, outcome: 'delivered' }), { status: 'delivered' }), true)
        const cancelled = newTask()
        await store.insert(cancelled)
        await store.cancel(cancelled.id)

        const all = await store.list({ status: 'failed' })
        assert.deepEqual(all.tasks.map((task) => task.id), [newest, middle, oldest])
        assert.equal(all.cursor, undefined)
        const [first] = all.tasks
        assert.equal(first?.status, 'failed')
        assert.equal(first?.lastError, 'HTTP 422')
        assert.equal(first?.attempts, 1)
        assert.ok(first?.body?.includes(newest), 'tasks are whole, body included')

        const since = await store.list({ status: 'failed', since: new Date(base + 2000) })
        assert.deepEqual(since.tasks.map((task) => task.id), [newest, middle])

        const page1 = await store.list({ status: 'failed', limit: 2 })
        assert.deepEqual(page1.tasks.map((task) => task.id), [newest, middle])
        assert.equal(typeof page1.cursor, 'string')
        const page2 = await store.list({ status: 'failed', limit: 2, cursor: page1.cursor! })
        assert.deepEqual(page2.tasks.map((task) => task.id), [oldest])
        assert.equal(page2.cursor, undefined)
      })

      it('pages through tasks that failed at the same instant without repeating or skipping one', async (t) => {
        const store = await fresh()
        if (!skipUnless(t, store, 'list')) return
        const ids: string[] = []
        for (let i = 0; i < 5; i++) ids.push(await failedTask(store, base, 'HTTP 400'))
        const seen: string[] = []
        let cursor: string | undefined
        for (let pages = 0; pages < 5; pages++) {
          const page = await store.list({ status: 'failed', limit: 2, ...(cursor === undefined ? {} : { cursor }) })
          seen.push(...page.tasks.map((task) => task.id))
          cursor = page.cursor
          if (cursor === undefined) break
        }
        assert.deepEqual(seen, [...ids].sort().reverse())
      })

      it('redelivers a failed task: scheduled and due at now, with its body, attempts, history and last error kept', async (t) => {
        const store = await fresh()
        if (!skipUnless(t, store, 'redeliver')) return
        const input = newTask()
        await store.insert(input)
        const first = await attachNow(store, input.id, base)
        await store.complete(first, attemptAt(1, base, { status: 503 }), retryAt(base + 1000, 'HTTP 503'))
        const [second] = await store.claim({ now: new Date(base + 1000), limit: 1, leaseMs })
        assert.ok(second)
        await store.complete(second, attemptAt(2, base + 1000, { status: 400, outcome: 'failed' }), { status: 'failed', lastError: 'HTTP 400' })
        const before = await store.get(input.id)

        assert.equal(await store.redeliver(input.id, { now: new Date(base + 10_000) }), true)
        const task = await store.get(input.id)
        assert.equal(task?.status, 'scheduled')
        assert.equal(task?.nextAttemptAt?.getTime(), base + 10_000)
        assert.equal(task?.attempts, 2)
        assert.equal(task?.body, before?.body)
        assert.equal(task?.lastError, 'HTTP 400')
        assert.deepEqual((await store.attempts(input.id)).map((attempt) => attempt.status), [503, 400])
        assert.equal(await store.redeliver(input.id, { now: new Date(base + 10_000) }), false, 'it is no longer failed')
        if (store.list !== undefined) assert.deepEqual((await store.list({ status: 'failed' })).tasks, [])

        assert.equal(await reclaimable(store, base + 9_999), false)
        const [again] = await store.claim({ now: new Date(base + 10_000), limit: 10, leaseMs })
        assert.ok(again)
        assert.equal(again.task.id, input.id)
        assert.equal(await store.complete(again, attemptAt(3, base + 10_000, { status: 400, outcome: 'failed' }), { status: 'failed', lastError: 'HTTP 400 again' }), true)
        assert.equal((await store.get(input.id))?.attempts, 3)
        if (store.list !== undefined) {
          assert.deepEqual((await store.list({ status: 'failed' })).tasks.map((listed) => listed.id), [input.id], 'failing again lists it again')
        }
      })

      it('answers false when asked to redeliver a task that is not failed, changing nothing', async (t) => {
        const store = await fresh()
        if (!skipUnless(t, store, 'redeliver')) return
        const pending = newTask()
        await store.insert(pending)
        const scheduled = await scheduledTask(store, base + 5000)
        const delivering = newTask()
        await store.insert(delivering)
        await attachNow(store, delivering.id, base)
        const delivered = newTask()
        await store.insert(delivered)
        await store.complete(await attachNow(store, delivered.id, base), attemptAt(1, base, { status: 200, outcome: 'delivered' }), { status: 'delivered' })
        const cancelled = newTask()
        await store.insert(cancelled)
        await store.cancel(cancelled.id)

        for (const [id, status] of [
          [pending.id, 'pending'],
          [scheduled, 'scheduled'],
          [delivering.id, 'delivering'],
          [delivered.id, 'delivered'],
          [cancelled.id, 'cancelled']
        ] as const) {
          assert.equal(await store.redeliver(id, { now: new Date(base) }), false, status)
          assert.equal((await store.get(id))?.status, status)
        }
        assert.equal(await store.redeliver(`unknown-${randomUUID()}`, { now: new Date(base) }), false)
        assert.equal((await store.get(scheduled))?.nextAttemptAt?.getTime(), base + 5000)
      })

      it('counts the tasks due at now, expired leases included, as a claim would take them', async (t) => {
        const store = await fresh()
        if (!skipUnless(t, store, 'countDue')) return
        await scheduledTask(store, base + 1000)
        await scheduledTask(store, base + 100_000)
        const leased = newTask()
        await store.insert(leased)
        await attachNow(store, leased.id, base) // its lease ends at base + leaseMs
        await store.insert(newTask())
        await failedTask(store, base, 'HTTP 400')

        assert.equal(await store.countDue(new Date(base)), 0)
        assert.equal(await store.countDue(new Date(base + 1000)), 1)
        assert.equal(await store.countDue(new Date(base + leaseMs)), 2)
        assert.equal(await store.countDue(new Date(base + 100_000)), 3)
        assert.equal((await store.claim({ now: new Date(base + 100_000), limit: 100, leaseMs })).length, 3)
        assert.equal(await store.countDue(new Date(base + 100_000)), 0, 'claimed tasks are not due until their lease ends')
      })
    })

    searchCases(runner, fresh)

    describe('subscribe (optional)', () => {
      it('returns an unsubscribe function and calls the listener when a released task is due', async (t) => {
        const store = await fresh()
        if (!skipUnlessSubscribe(t, store)) return
        const input = newTask()
        await store.insert(input)
        const held = await attachNow(store, input.id, base)
        const woken = nextWake(store)
        assert.equal(await store.release(held, new Date(base)), true)
        await woken.called
        assert.equal(typeof woken.unsubscribe, 'function')
        woken.unsubscribe()
      })

      it('calls the listener when a completion schedules another attempt', async (t) => {
        const store = await fresh()
        if (!skipUnlessSubscribe(t, store)) return
        const input = newTask()
        await store.insert(input)
        const held = await attachNow(store, input.id, base)
        const woken = nextWake(store)
        assert.equal(await store.complete(held, attemptAt(1, base, { status: 503 }), retryAt(base, 'HTTP 503')), true)
        await woken.called
        woken.unsubscribe()
      })

      it('calls the listener again after each release, completion that schedules a retry, and redelivery', async (t) => {
        const store = await fresh()
        if (!skipUnlessSubscribe(t, store)) return
        const wakes = wakeCounter(store)
        try {
          // a store may call the listener once its subscription holds; that call answers none of the steps
          await wakes.quiet()
          const input = newTask()
          await store.insert(input)
          let seen = wakes.calls
          const held = await attachNow(store, input.id, base)
          assert.equal(await store.release(held, new Date(base)), true)
          seen = await wakes.after(seen, 'a release')
          const [claimed] = await store.claim({ now: new Date(base), limit: 1, leaseMs })
          assert.ok(claimed)
          assert.equal(await store.complete(claimed, attemptAt(1, base, { status: 503 }), retryAt(base, 'HTTP 503')), true)
          seen = await wakes.after(seen, 'a completion that scheduled a retry')
          if (typeof store.redeliver !== 'function') return
          const [again] = await store.claim({ now: new Date(base), limit: 1, leaseMs })
          assert.ok(again)
          assert.equal(await store.complete(again, attemptAt(2, base, { status: 400, outcome: 'failed' }), { status: 'failed', lastError: 'HTTP 400' }), true)
          await wakes.quiet()
          seen = wakes.calls
          assert.equal(await store.redeliver(input.id, { now: new Date(base) }), true)
          await wakes.after(seen, 'a redelivery')
        } finally {
          wakes.unsubscribe()
        }
      })
    })

    describe('destinations (optional)', () => {
      /** A due task of `destination` (none: unlimited), due at `dueAt`. Its id. */
      const destinationTask = async (store: CallbackStore, destination: string | undefined, dueAt: number, extra: Partial<NewCallbackTask> = {}) => {
        const input = newTask(destination === undefined ? extra : { ...extra, destination })
        await store.insert(input)
        const held = await attachNow(store, input.id, base)
        assert.equal(await store.release(held, new Date(dueAt)), true)
        return input.id
      }
      const claimAt = (store: CallbackStore, at: number, limit = 10, inFlight: Record<string, number> = {}) =>
        store.claim({ now: new Date(at), limit, leaseMs, perDestination: 2, inFlight: new Map(Object.entries(inFlight)) })
      const ids = (leases: Lease[]) => leases.map((held) => held.task.id)

      it("keeps a task's destination", async (t) => {
        const store = await fresh()
        if (!skipUnless(t, store, 'setDestination')) return
        const input = newTask({ destination: 'https://client.example' })
        await store.insert(input)
        assert.equal((await store.get(input.id))?.destination, 'https://client.example')
      })

      it('leases at most perDestination tasks of a destination, less those in flight; the others keep their place and attempts', async (t) => {
        const store = await fresh()
        if (!skipUnless(t, store, 'setDestination')) return
        const a1 = await destinationTask(store, 'a', base + 1)
        const a2 = await destinationTask(store, 'a', base + 2)
        const a3 = await destinationTask(store, 'a', base + 3)
        const b1 = await destinationTask(store, 'b', base + 4)
        const b2 = await destinationTask(store, 'b', base + 5)
        const free = await destinationTask(store, undefined, base + 6)
        const first = await claimAt(store, base + 10, 10, { b: 1 })
        assert.deepEqual(ids(first), [a1, a2, b1, free])
        assert.deepEqual(await claimAt(store, base + 10, 10, { a: 2, b: 2 }), [], 'both at their cap')
        for (const id of [a3, b2]) {
          const waiting = await store.get(id)
          assert.equal(waiting?.status, 'scheduled')
          assert.equal(waiting?.attempts, 0)
        }
        assert.deepEqual(ids(await claimAt(store, base + 11, 10, { a: 1, b: 2 })), [a3], 'a slot of a is free again')
      })

      it("looks past a destination's backlog once it used up its room in the claim: the others' tasks behind it are leased", async (t) => {
        const store = await fresh()
        if (!skipUnless(t, store, 'setDestination')) return
        const backlog: string[] = []
        for (let i = 0; i < 250; i++) backlog.push(await destinationTask(store, 'a', base + 1 + i))
        const b1 = await destinationTask(store, 'b', base + 300)
        const b2 = await destinationTask(store, 'b', base + 301)
        const leased = ids(await claimAt(store, base + 400))
        assert.deepEqual(leased, [backlog[0], backlog[1], b1, b2], "a's room is 2; b's tasks are behind a's other 248")
      })

      it('skips a held destination until its hold ends, spending nothing', async (t) => {
        const store = await fresh()
        if (!skipUnless(t, store, 'setDestination')) return
        const a1 = await destinationTask(store, 'a', base + 1)
        const b1 = await destinationTask(store, 'b', base + 2)
        await store.setDestination('a', { state: 'throttled', until: new Date(base + 20_000), reason: 'HTTP 429', openings: 0 }, new Date(base))
        assert.deepEqual(ids(await claimAt(store, base + 10)), [b1])
        assert.deepEqual(await claimAt(store, base + 19_999), [])
        const task = await store.get(a1)
        assert.equal(task?.status, 'scheduled')
        assert.equal(task?.attempts, 0)
        assert.deepEqual(ids(await claimAt(store, base + 20_000)), [a1])
      })

      it('gives a single probe of an open destination once its cool-down is over, then none until it is settled', async (t) => {
        const store = await fresh()
        if (!skipUnless(t, store, 'setDestination')) return
        const a1 = await destinationTask(store, 'a', base + 1)
        const a2 = await destinationTask(store, 'a', base + 2)
        const a3 = await destinationTask(store, 'a', base + 3)
        await store.setDestination('a', { state: 'open', until: new Date(base + 10_000), reason: 'HTTP 503', openings: 2 }, new Date(base))
        assert.deepEqual(await claimAt(store, base + 9_999), [])
        const probe = await claimAt(store, base + 10_000)
        assert.deepEqual(ids(probe), [a1])
        assert.deepEqual(probe[0]?.probe, { openings: 2 })
        assert.deepEqual(await claimAt(store, base + 10_001), [], 'one probe at a time')
        await store.setDestination('a', null, new Date(base + 10_002))
        const rest = await claimAt(store, base + 10_003, 10, { a: 1 })
        assert.deepEqual(ids(rest), [a2], 'the probe still holds one of the two slots')
        assert.equal((await store.get(a3))?.attempts, 0)
        assert.equal(rest[0]?.probe, undefined)
      })

      it('hands out a task of a held destination once its deadline has passed, so it can fail', async (t) => {
        const store = await fresh()
        if (!skipUnless(t, store, 'setDestination')) return
        const late = await destinationTask(store, 'a', base + 1, { deadline: new Date(base + 5) })
        await destinationTask(store, 'a', base + 2)
        await store.setDestination('a', { state: 'open', until: new Date(base + 600_000), reason: 'HTTP 503', openings: 1 }, new Date(base))
        assert.deepEqual(ids(await claimAt(store, base + 10)), [late])
      })

      it('attaches the result to a task of a held destination without leasing it: scheduled, due now, its attempts unspent', async (t) => {
        const store = await fresh()
        if (!skipUnless(t, store, 'setDestination')) return
        const attachAt = async (destination: string | undefined, at: number) => {
          const input = newTask(destination === undefined ? {} : { destination })
          await store.insert(input)
          return { id: input.id, lease: await store.attach(input.id, { body: '{"held":true}' }, { now: new Date(at), leaseMs }) }
        }
        await store.setDestination('a', { state: 'throttled', until: new Date(base + 10_000), reason: 'HTTP 429', openings: 0 }, new Date(base))
        await store.setDestination('b', { state: 'open', until: new Date(base + 1), reason: 'HTTP 503', openings: 1 }, new Date(base))
        await store.setDestination('c', { state: 'throttled', until: new Date(base + 1), reason: 'HTTP 429', openings: 0 }, new Date(base))
        const throttled = await attachAt('a', base + 5)
        assert.equal(throttled.lease, undefined, 'no lease while throttled')
        const task = await store.get(throttled.id)
        assert.equal(task?.status, 'scheduled')
        assert.equal(task?.attempts, 0)
        assert.equal(task?.body, '{"held":true}')
        assert.equal(task?.nextAttemptAt?.getTime(), base + 5)
        assert.equal((await attachAt('b', base + 5)).lease, undefined, 'an open breaker holds its destination past its cool-down: the probe is a claim')
        assert.ok((await attachAt('c', base + 5)).lease, 'a throttle that is over holds nothing')
        assert.ok((await attachAt('d', base + 5)).lease, 'nor does a destination never held')
        assert.ok((await attachAt(undefined, base + 5)).lease, 'nor a task without a destination')
        assert.deepEqual(ids(await claimAt(store, base + 9_999)).includes(throttled.id), false)
        assert.deepEqual(ids(await claimAt(store, base + 10_000, 10, { b: 1 })), [throttled.id], 'a claim takes it once the throttle is over')
      })

      it('counts failures for every caller (countDestinationFailure); an answer complete records resets the run, setDestination the tally', async (t) => {
        const store = await fresh()
        if (typeof store.countDestinationFailure !== 'function') return t.skip('the store has no countDestinationFailure')
        const window = 60_000
        const count = (at: number, destination = 'a') => store.countDestinationFailure!(destination, new Date(at), window)
        const answer = async (status: number, at: number, destination = 'a') => {
          const id = await destinationTask(store, destination, base)
          const [held] = await store.claim({ now: new Date(at - 100), limit: 1, leaseMs, perDestination: 100, inFlight: new Map() })
          assert.equal(held?.task.id, id)
          const attempt = attemptAt(1, at - 100, { status, durationMs: 100 })
          assert.equal(await store.complete(held!, attempt, retryAt(at + window * 10)), true)
        }
        assert.deepEqual(await count(base + 1_000), { inARow: 1, attempts: 1, failures: 1 })
        assert.deepEqual(await count(base + 2_000), { inARow: 2, attempts: 2, failures: 2 })
        assert.deepEqual(await count(base + 2_000, 'b'), { inARow: 1, attempts: 1, failures: 1 }, 'each destination on its own')
        await answer(204, base + 3_000)
        assert.deepEqual(await count(base + 4_000), { inARow: 1, attempts: 4, failures: 3 }, 'the answer ended the run and counts as an attempt')
        await answer(503, base + 5_000)
        await answer(408, base + 5_000)
        assert.deepEqual(await count(base + 6_000), { inARow: 2, attempts: 5, failures: 4 }, 'a 503 or 408 recorded is no answer (its failure is counted by the caller)')
        assert.deepEqual(await count(base + 1_000 + window), { inARow: 3, attempts: 1, failures: 1 }, 'a new window; the run goes on')
        await store.setDestination!('a', null, new Date(base + 70_000))
        assert.deepEqual(await count(base + 70_001), { inARow: 1, attempts: 1, failures: 1 }, 'lifting or setting a hold starts afresh')
        await answer(200, base + 70_001 + window)
        assert.deepEqual(await count(base + 70_002 + window), { inARow: 1, attempts: 1, failures: 1 }, 'an answer after the window lets the tally go')
        await answer(200, base + 200_000, 'c')
        assert.deepEqual(await count(base + 200_001, 'c'), { inARow: 1, attempts: 1, failures: 1 }, 'answers of a destination without a tally are not counted')
      })

      it('lists destinations with their state, attempts in flight, due tasks and last error', async (t) => {
        const store = await fresh()
        if (!skipUnless(t, store, 'listDestinations')) return
        await destinationTask(store, 'a', base + 1)
        await destinationTask(store, 'a', base + 2)
        await destinationTask(store, 'a', base + 3)
        await destinationTask(store, 'b', base + 4)
        assert.equal((await claimAt(store, base + 10, 1)).length, 1)
        await store.setDestination!('b', { state: 'open', until: new Date(base + 30_000), reason: 'ERR_CALLBACK_TIMEOUT: no answer', openings: 1 }, new Date(base))
        const listed = await store.listDestinations(new Date(base + 10))
        assert.deepEqual(listed.map(defined), [
          { destination: 'a', state: 'closed', openings: 0, inFlight: 1, due: 2 },
          { destination: 'b', state: 'open', until: new Date(base + 30_000), openings: 1, inFlight: 0, due: 1, lastError: 'ERR_CALLBACK_TIMEOUT: no answer' }
        ])
      })
    })

    lifecycleContract(runner, fresh)
    insertManyContract(runner, fresh)
  })
}

// ---- task lifecycle: outbox, pending expiry, pending listing (issue 11) -------------------------
// Kept apart from the cases above: what the store interface gained for tasks that carry their
// payload from creation and for pending tasks that must not wait for ever.

const expiredReason = 'ERR_CALLBACK_PENDING_EXPIRED: no result was attached'

function lifecycleContract(runner: ContractRunner, fresh: () => Promise<CallbackStore>): void {
  const { describe, it } = runner
  describe('outbox: a task inserted with its body', () => {
    it('is stored scheduled, due at its nextAttemptAt, and claimed with its body', async () => {
      const store = await fresh()
      const input = newTask({ body: '{"type":"report.ready","data":1}', nextAttemptAt: new Date(base + 5) })
      const { task, created } = await store.insert(input)
      assert.equal(created, true)
      assert.equal(task.status, 'scheduled')
      assert.deepEqual(task.nextAttemptAt, new Date(base + 5))
      assert.equal(task.body, input.body)
      assert.equal(await reclaimable(store, base + 4), false, 'not before it is due')
      const [lease] = await store.claim({ now: new Date(base + 5), limit: 10, leaseMs })
      assert.equal(lease?.task.id, input.id)
      assert.equal(lease?.task.body, input.body)
    })

    it('keeps its contentType', async () => {
      const store = await fresh()
      const input = newTask({ body: 'eyJhbGciOi...', contentType: 'application/jose', nextAttemptAt: new Date(base) })
      await store.insert(input)
      assert.equal((await store.get(input.id))?.contentType, 'application/jose')
    })

    it("counts against its destination's cap like any due task, whether inserted with its body or scheduled later", async (t) => {
      const store = await fresh()
      if (!skipUnless(t, store, 'setDestination')) return
      const outbox = [1, 2, 3].map((offset) => newTask({ body: `{"n":${offset}}`, nextAttemptAt: new Date(base + offset), destination: 'a' }))
      for (const input of outbox) await store.insert(input)
      const later = newTask({ destination: 'b' })
      await store.insert(later)
      if (typeof store.schedule === 'function') assert.equal((await store.schedule(later.id, { body: '{}' }, { now: new Date(base + 4) }))?.destination, 'b')
      else await store.release(await attachNow(store, later.id, base), new Date(base + 4))
      const leases = await store.claim({ now: new Date(base + 10), limit: 10, leaseMs, perDestination: 2, inFlight: new Map() })
      assert.deepEqual(leases.map((held) => held.task.id), [outbox[0]!.id, outbox[1]!.id, later.id])
      assert.equal(leases[0]?.task.destination, 'a')
      const waiting = await store.get(outbox[2]!.id)
      assert.equal(waiting?.status, 'scheduled')
      assert.equal(waiting?.attempts, 0)
      if (typeof store.listDestinations === 'function') {
        const listed = await store.listDestinations(new Date(base + 10))
        assert.deepEqual(listed.map(({ destination, inFlight, due }) => ({ destination, inFlight, due })), [
          { destination: 'a', inFlight: 2, due: 1 },
          { destination: 'b', inFlight: 1, due: 0 }
        ])
      }
    })
  })

  describe('schedule (optional): a result attached without a lease', () => {
    it('makes a pending task scheduled, due at now, with its body, and refuses any other', async (t) => {
      const store = await fresh()
      if (typeof store.schedule !== 'function') return t.skip('the store has no schedule')
      const input = newTask()
      await store.insert(input)
      const task = await store.schedule(input.id, { body: '{"data":2}' }, { now: new Date(base + 3) })
      assert.equal(task?.status, 'scheduled')
      assert.deepEqual(task?.nextAttemptAt, new Date(base + 3))
      assert.equal(await store.schedule(input.id, { body: '{"data":3}' }, { now: new Date(base + 4) }), undefined)
      assert.equal(await store.schedule('msg_unknown', { body: '{}' }, { now: new Date(base) }), undefined)
      const [lease] = await store.claim({ now: new Date(base + 3), limit: 10, leaseMs })
      assert.equal(lease?.task.body, '{"data":2}')
    })
  })

  describe('expirePending (optional): no stranded task', () => {
    it('fails the pending tasks whose expiry has come, and only those', async (t) => {
      const store = await fresh()
      if (typeof store.expirePending !== 'function') return t.skip('the store has no expirePending')
      const due = newTask({ nextAttemptAt: new Date(base + 10) })
      const later = newTask({ nextAttemptAt: new Date(base + 20) })
      const never = newTask()
      const attached = newTask({ nextAttemptAt: new Date(base + 10) })
      for (const input of [due, later, never, attached]) await store.insert(input)
      await attachNow(store, attached.id, base)
      assert.deepEqual(await store.expirePending({ now: new Date(base + 9), limit: 10, reason: expiredReason }), [])
      const expired = await store.expirePending({ now: new Date(base + 10), limit: 10, reason: expiredReason })
      assert.deepEqual(expired.map((task) => task.id), [due.id])
      assert.equal(expired[0]?.status, 'failed')
      const stored = await store.get(due.id)
      assert.equal(stored?.status, 'failed')
      assert.equal(stored?.lastError, expiredReason)
      assert.equal(stored?.attempts, 0)
      assert.equal((await store.get(later.id))?.status, 'pending')
      assert.equal((await store.get(never.id))?.status, 'pending')
      assert.equal((await store.get(attached.id))?.status, 'delivering')
      assert.deepEqual(await store.expirePending({ now: new Date(base + 10), limit: 10, reason: expiredReason }), [], 'each once')
      if (typeof store.list === 'function') {
        const failed = await store.list({ status: 'failed' })
        assert.deepEqual(failed.tasks.map((task) => task.id), [due.id])
      }
    })

    it('takes at most limit, earliest expiry first', async (t) => {
      const store = await fresh()
      if (typeof store.expirePending !== 'function') return t.skip('the store has no expirePending')
      const inputs = [3, 1, 2].map((offset) => newTask({ nextAttemptAt: new Date(base + offset) }))
      for (const input of inputs) await store.insert(input)
      const first = await store.expirePending({ now: new Date(base + 5), limit: 2, reason: expiredReason })
      assert.deepEqual(first.map((task) => task.id), [inputs[1]!.id, inputs[2]!.id])
      const rest = await store.expirePending({ now: new Date(base + 5), limit: 2, reason: expiredReason })
      assert.deepEqual(rest.map((task) => task.id), [inputs[0]!.id])
    })

    it('leaves a cancelled pending task alone', async (t) => {
      const store = await fresh()
      if (typeof store.expirePending !== 'function') return t.skip('the store has no expirePending')
      const input = newTask({ nextAttemptAt: new Date(base + 1) })
      await store.insert(input)
      assert.equal(await store.cancel(input.id), true)
      assert.deepEqual(await store.expirePending({ now: new Date(base + 5), limit: 10, reason: expiredReason }), [])
      assert.equal((await store.get(input.id))?.status, 'cancelled')
    })
  })

  describe('list (optional): every status', () => {
    it('lists a task under the status it is in, and only there', async (t) => {
      const store = await fresh()
      if (typeof store.list !== 'function') return t.skip('the store has no list')
      const make = async () => {
        const input = newTask()
        await store.insert(input)
        return input.id
      }
      const pending = await make()
      const scheduled = await scheduledTask(store, base + 60_000)
      const delivering = await make()
      await attachNow(store, delivering, base)
      const delivered = await make()
      await store.complete(await attachNow(store, delivered, base), attemptAt(1, base, { status: 204, outcome: 'delivered' }), { status: 'delivered' })
      const failed = await make()
      await store.complete(await attachNow(store, failed, base), attemptAt(1, base, { status: 400, outcome: 'failed' }), { status: 'failed', lastError: 'HTTP 400' })
      const cancelled = await make()
      await store.cancel(cancelled)
      const expected = { pending, scheduled, delivering, delivered, failed, cancelled }
      for (const [status, id] of Object.entries(expected)) {
        const listed: string[] = (await store.list({ status: status as keyof typeof expected })).tasks.map((task) => task.id)
        assert.deepEqual(listed, [id], `list({ status: '${status}' })`)
      }
    })
  })

  describe('list (optional): pending tasks', () => {
    it("lists pending tasks newest first, and not once their result came", async (t) => {
      const store = await fresh()
      if (typeof store.list !== 'function') return t.skip('the store has no list')
      const older = newTask({ createdAt: new Date(base) })
      const newer = newTask({ createdAt: new Date(base + 1000) })
      for (const input of [older, newer]) await store.insert(input)
      assert.deepEqual((await store.list({ status: 'pending' })).tasks.map((task) => task.id), [newer.id, older.id])
      const page = await store.list({ status: 'pending', limit: 1 })
      assert.deepEqual(page.tasks.map((task) => task.id), [newer.id])
      assert.deepEqual((await store.list({ status: 'pending', cursor: page.cursor! })).tasks.map((task) => task.id), [older.id])
      await attachNow(store, older.id, base + 2000)
      assert.deepEqual((await store.list({ status: 'pending' })).tasks.map((task) => task.id), [newer.id])
    })
  })
}

// ---- search: the filters of `list` (status, event, host, id, idempotency key, time range) ---------

/** Five tasks, one per state that matters here, on three hosts and two events; their ids, newest last. */
async function searchFixture(store: CallbackStore) {
  const pending = newTask({ createdAt: new Date(base + 1000), callbackUrl: 'https://a.example/hooks', idempotencyKey: `key-${randomUUID()}` })
  await store.insert(pending) // updatedAt base + 1000
  const delivered = newTask({ createdAt: new Date(base + 2000), callbackUrl: 'https://b.example:8443/hooks', event: 'invoice.paid' })
  await store.insert(delivered)
  assert.equal(await store.complete(await attachNow(store, delivered.id, base + 2000), attemptAt(1, base + 2000, { status: 200, outcome: 'delivered' }), { status: 'delivered' }), true) // base + 2042
  const failed = newTask({ createdAt: new Date(base + 3000), callbackUrl: 'https://a.example/other?x=1', event: 'invoice.paid' })
  await store.insert(failed)
  assert.equal(await store.complete(await attachNow(store, failed.id, base + 3000), attemptAt(1, base + 3000, { status: 400, outcome: 'failed' }), { status: 'failed', lastError: 'HTTP 400' }), true) // base + 3042
  const scheduled = newTask({ createdAt: new Date(base + 4000), callbackUrl: 'https://[::1]:8443/hooks' })
  await store.insert(scheduled)
  assert.equal(await store.release(await attachNow(store, scheduled.id, base + 4000), new Date(base + 9000)), true) // base + 4000
  const cancelled = newTask({ createdAt: new Date(base + 5000), callbackUrl: 'https://c.example/hooks' })
  await store.insert(cancelled)
  assert.equal(await store.cancel(cancelled.id), true) // base + 5000 (the wall clock is earlier than 2100)
  return { pending, delivered, failed, scheduled, cancelled }
}

function searchCases(runner: ContractRunner, fresh: () => Promise<CallbackStore>): void {
  const { describe, it } = runner
  describe('search (optional list filters)', () => {
    const ids = async (store: CallbackStore & Required<Pick<CallbackStore, 'list'>>, query: TaskListQuery) =>
      (await store.list(query)).tasks.map((task) => task.id)

    it('lists tasks in any state newest first, or in one state', async (t) => {
      const store = await fresh()
      if (!skipUnless(t, store, 'list')) return
      const f = await searchFixture(store)
      assert.deepEqual(await ids(store, {}), [f.cancelled.id, f.scheduled.id, f.failed.id, f.delivered.id, f.pending.id])
      for (const status of ['pending', 'scheduled', 'delivered', 'failed', 'cancelled'] as const) {
        assert.deepEqual(await ids(store, { status }), [f[status].id], status)
      }
      assert.deepEqual(await ids(store, { status: 'delivering' }), [])
    })

    it('finds tasks by event, by callback host (any case, port aside, IPv6 with or without brackets), by id and by idempotency key', async (t) => {
      const store = await fresh()
      if (!skipUnless(t, store, 'list')) return
      const f = await searchFixture(store)
      assert.deepEqual(await ids(store, { event: 'invoice.paid' }), [f.failed.id, f.delivered.id])
      assert.deepEqual(await ids(store, { host: 'a.example' }), [f.failed.id, f.pending.id])
      assert.deepEqual(await ids(store, { host: 'A.Example' }), [f.failed.id, f.pending.id])
      assert.deepEqual(await ids(store, { host: 'b.example' }), [f.delivered.id])
      assert.deepEqual(await ids(store, { host: '[::1]' }), [f.scheduled.id])
      assert.deepEqual(await ids(store, { host: '::1' }), [f.scheduled.id])
      assert.deepEqual(await ids(store, { host: 'example' }), [], 'a host matches whole, not in part')
      assert.deepEqual(await ids(store, { id: f.failed.id }), [f.failed.id])
      assert.deepEqual(await ids(store, { id: `unknown-${randomUUID()}` }), [])
      assert.deepEqual(await ids(store, { idempotencyKey: f.pending.idempotencyKey! }), [f.pending.id])
      assert.deepEqual(await ids(store, { idempotencyKey: `unknown-${randomUUID()}` }), [])
      const [found] = (await store.list({ id: f.failed.id })).tasks
      assert.equal(found?.lastError, 'HTTP 400', 'a search answers whole tasks')
    })

    it('keeps only tasks updated in a time range (since inclusive, until exclusive) and combines every filter', async (t) => {
      const store = await fresh()
      if (!skipUnless(t, store, 'list')) return
      const f = await searchFixture(store)
      assert.deepEqual(await ids(store, { since: new Date(base + 2042), until: new Date(base + 4000) }), [f.failed.id, f.delivered.id])
      assert.deepEqual(await ids(store, { until: new Date(base + 2042) }), [f.pending.id])
      assert.deepEqual(await ids(store, { event: 'invoice.paid', host: 'a.example' }), [f.failed.id])
      assert.deepEqual(await ids(store, { status: 'failed', host: 'b.example' }), [])
      assert.deepEqual(await ids(store, { status: 'failed', event: 'invoice.paid', since: new Date(base + 3042) }), [f.failed.id])
      assert.deepEqual(await ids(store, { id: f.failed.id, status: 'delivered' }), [], 'an id that does not match the other filters finds nothing')
      assert.deepEqual(await ids(store, { idempotencyKey: f.pending.idempotencyKey!, event: 'invoice.paid' }), [])
    })

    it('pages a filtered search by cursor without repeating or skipping a task', async (t) => {
      const store = await fresh()
      if (!skipUnless(t, store, 'list')) return
      const f = await searchFixture(store)
      const seen: string[][] = []
      let cursor: string | undefined
      for (let pages = 0; pages < 5; pages++) {
        const page = await store.list({ host: 'a.example', limit: 1, ...(cursor === undefined ? {} : { cursor }) })
        seen.push(page.tasks.map((task) => task.id))
        cursor = page.cursor
        if (cursor === undefined) break
      }
      assert.deepEqual(seen, [[f.failed.id], [f.pending.id]])
      const first = await store.list({ limit: 2 })
      const rest = await store.list({ limit: 10, cursor: first.cursor! })
      assert.deepEqual([...first.tasks, ...rest.tasks].map((task) => task.id), [f.cancelled.id, f.scheduled.id, f.failed.id, f.delivered.id, f.pending.id])
      assert.equal(rest.cursor, undefined)
    })

    it('summarizes: counts by status, the due backlog and its oldest task, attempts per bucket, the hosts failing most', async (t) => {
      const store = await fresh()
      if (typeof store.summarize !== 'function') return t.skip('the store has no summarize')
      const f = await searchFixture(store)
      const now = base + 10_500
      const summary = await store.summarize({ now: new Date(now), bucketMs: 1000, buckets: 12, countCap: 1000, hosts: 5 })
      assert.deepEqual(summary.counts, { pending: 1, scheduled: 1, delivering: 0, delivered: 1, failed: 1, cancelled: 1 })
      assert.equal(summary.due, 1)
      assert.equal(summary.oldestDueAt?.getTime(), base + 9000)
      assert.equal(summary.attempts.length, 12)
      assert.deepEqual(summary.attempts.map((bucket) => bucket.start.getTime()), Array.from({ length: 12 }, (_, i) => now - 1000 * (12 - i)))
      const at = (instant: number) => summary.attempts.findIndex((bucket) => bucket.start.getTime() < instant && instant <= bucket.start.getTime() + 1000)
      assert.deepEqual(summary.attempts[at(base + 2000)], { start: new Date(now - 9000), delivered: 1, failed: 0 })
      assert.deepEqual(summary.attempts[at(base + 3000)], { start: new Date(now - 8000), delivered: 0, failed: 1 })
      assert.equal(summary.attempts.reduce((sum, bucket) => sum + bucket.delivered + bucket.failed, 0), 2)
      assert.deepEqual(summary.failingHosts, [{ host: 'a.example', tasks: 1, lastError: 'HTTP 400', lastFailedAt: (await store.get(f.failed.id))!.updatedAt }])
      const capped = await store.summarize({ now: new Date(now), bucketMs: 1000, buckets: 12, countCap: 1, hosts: 0 })
      assert.equal(capped.counts.failed, 1)
      assert.deepEqual(capped.failingHosts, [])
    })

    it('refuses a filter of the wrong kind with a TypeError naming it', async (t) => {
      const store = await fresh()
      if (!skipUnless(t, store, 'list')) return
      await assert.rejects(async () => store.list({ event: '' }), (error: Error) => error instanceof TypeError && /event/.test(error.message))
      await assert.rejects(async () => store.list({ until: new Date(Number.NaN) }), (error: Error) => error instanceof TypeError && /until/.test(error.message))
      await assert.rejects(async () => store.list({ status: 'lost' as never }), (error: Error) => error instanceof TypeError && /status/.test(error.message))
    })
  })
}

// ---- insertMany (optional): many tasks in one round trip (issue 14) ----------------------------

function insertManyContract(runner: ContractRunner, fresh: () => Promise<CallbackStore>): void {
  const { describe, it } = runner
  describe('insertMany (optional): many tasks at once', () => {
    it('answers every task in the order given, created, with every field as given and as get reads it', async (t) => {
      const store = await fresh()
      if (!skipUnlessInsertMany(t, store)) return
      const jwk = { kty: 'OKP', crv: 'X25519', x: 'hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo', use: 'enc', alg: 'ECDH-ES', kid: 'k-1' }
      const inputs = [
        newTask({ idempotencyKey: `key-${randomUUID()}`, metadata: { orderId: 'o-1', nested: { tags: ['a'], none: null } }, destination: 'https://client.example' }),
        newTask({ body: '{"type":"report.ready","data":1}', contentType: 'application/json', nextAttemptAt: new Date(base + 5) }),
        newTask({ secret: ['whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'], encryptionKey: jwk, verifyIntent: true, deadline: new Date(base + 86_400_000) }),
        newTask({ nextAttemptAt: new Date(base + 60_000), encryptionKey: 'https://client.example/.well-known/jwks.json' }),
        newTask({ body: 'eyJhbGciOi...', contentType: 'application/jose' })
      ]
      const answers = await store.insertMany(inputs)
      assert.equal(answers.length, inputs.length)
      const expected = (input: NewCallbackTask) => {
        const withBody = input.body !== undefined
        const { nextAttemptAt, ...given } = input
        const due = withBody ? (nextAttemptAt ?? input.createdAt) : nextAttemptAt
        return { ...given, status: withBody ? 'scheduled' : 'pending', attempts: 0, ...(due === undefined ? {} : { nextAttemptAt: due }) }
      }
      for (const [index, input] of inputs.entries()) {
        const { task, created } = answers[index]!
        assert.equal(created, true, `task ${index} created`)
        const { updatedAt, ...rest } = defined(task)
        assert.deepEqual(rest, expected(input), `task ${index} as given`)
        assert.ok(updatedAt instanceof Date, 'updatedAt is a Date')
        const stored = await store.get(input.id)
        assert.ok(stored, `task ${index} is stored`)
        const { updatedAt: _updated, ...read } = defined(stored)
        assert.deepEqual(read, expected(input), `task ${index} as get reads it`)
      }
      // the caller's own copies
      answers[0]!.task.metadata!.orderId = 'changed'
      assert.equal((await store.get(inputs[0]!.id))?.metadata?.orderId, 'o-1')
      assert.deepEqual(await store.insertMany([]), [], 'an empty batch')
    })

    it('answers the stored task with created: false for a key stored before, and the first of two tasks of one batch with one key', async (t) => {
      const store = await fresh()
      if (!skipUnlessInsertMany(t, store)) return
      const before = newTask({ idempotencyKey: `before-${randomUUID()}` })
      await store.insert(before)
      const twice = `twice-${randomUUID()}`
      const inputs = [
        newTask(),
        newTask({ idempotencyKey: before.idempotencyKey!, callbackUrl: 'https://other.example/callbacks' }),
        newTask({ idempotencyKey: twice, body: '{"n":1}', nextAttemptAt: new Date(base) }),
        newTask({ idempotencyKey: twice, body: '{"n":2}', nextAttemptAt: new Date(base) }),
        newTask()
      ]
      const answers = await store.insertMany(inputs)
      assert.deepEqual(
        answers.map(({ task, created }) => [task.id, created]),
        [
          [inputs[0]!.id, true],
          [before.id, false],
          [inputs[2]!.id, true],
          [inputs[2]!.id, false],
          [inputs[4]!.id, true]
        ]
      )
      assert.equal(answers[1]!.task.callbackUrl, before.callbackUrl, 'the stored task, as stored')
      assert.equal(answers[3]!.task.body, '{"n":1}', "the first's task, with its body")
      assert.notEqual(answers[3]!.task, answers[2]!.task, 'each answer is its own copy')
      assert.equal(await store.get(inputs[1]!.id), undefined)
      assert.equal(await store.get(inputs[3]!.id), undefined)
      const leases = await store.claim({ now: new Date(base), limit: 10, leaseMs })
      assert.deepEqual(leases.map((lease) => lease.task.id), [inputs[2]!.id], 'one task for the key, due once')
    })

    it('creates exactly one task per key when batches with the same keys, in any order, race', async (t) => {
      const store = await fresh()
      if (!skipUnlessInsertMany(t, store)) return
      const keys = Array.from({ length: 10 }, (_, index) => `race-${index}-${randomUUID()}`)
      // each batch lists the keys in another order (a client's retry need not keep it)
      const batches = Array.from({ length: 5 }, (_, shift) =>
        [...keys.slice(shift * 3), ...keys.slice(0, shift * 3)].reverse().map((idempotencyKey) => newTask({ idempotencyKey }))
      )
      const answers = await Promise.all(batches.map((batch) => store.insertMany(batch)))
      for (const key of keys) {
        const forKey = batches.map((batch, b) => {
          const index = batch.findIndex((input) => input.idempotencyKey === key)
          return { input: batch[index]!, answer: answers[b]![index]! }
        })
        assert.equal(forKey.filter(({ answer }) => answer.created).length, 1, `exactly one batch created the task of ${key}`)
        assert.equal(new Set(forKey.map(({ answer }) => answer.task.id)).size, 1, `every batch got the same task for ${key}`)
        const id = forKey[0]!.answer.task.id
        for (const { input } of forKey) if (input.id !== id) assert.equal(await store.get(input.id), undefined)
      }
    })

    it('stores tasks with a body due and claimable, and pending tasks with their expiry', async (t) => {
      const store = await fresh()
      if (!skipUnlessInsertMany(t, store)) return
      const later = newTask({ body: '{"n":"later"}', nextAttemptAt: new Date(base + 20) })
      const sooner = newTask({ body: '{"n":"sooner"}', nextAttemptAt: new Date(base + 10) })
      const expiring = newTask({ nextAttemptAt: new Date(base + 10) })
      const waiting = newTask()
      await store.insertMany([later, expiring, sooner, waiting])
      assert.equal(await reclaimable(store, base + 9), false, 'nothing before it is due')
      const leases = await store.claim({ now: new Date(base + 20), limit: 10, leaseMs })
      assert.deepEqual(leases.map((lease) => [lease.task.id, lease.task.body]), [
        [sooner.id, sooner.body],
        [later.id, later.body]
      ], 'the tasks with a body, earliest due first; never a pending one')
      if (typeof store.expirePending === 'function') {
        const expired = await store.expirePending({ now: new Date(base + 10), limit: 10, reason: expiredReason })
        assert.deepEqual(expired.map((task) => task.id), [expiring.id])
      }
      assert.equal((await store.get(waiting.id))?.status, 'pending')
      if (typeof store.countDue === 'function') assert.equal(await store.countDue(new Date(base + 20)), 0)
    })

    it('stores nothing of a batch with an id already stored', async (t) => {
      const store = await fresh()
      if (!skipUnlessInsertMany(t, store)) return
      const stored = newTask()
      await store.insert(stored)
      const fresh1 = newTask({ body: '{}', nextAttemptAt: new Date(base) })
      const fresh2 = newTask({ idempotencyKey: `key-${randomUUID()}` })
      await assert.rejects(store.insertMany([fresh1, { ...stored, event: 'other' }, fresh2]))
      assert.equal(await store.get(fresh1.id), undefined)
      assert.equal(await store.get(fresh2.id), undefined)
      assert.equal((await store.get(stored.id))?.event, stored.event)
      assert.equal((await store.insert(newTask({ idempotencyKey: fresh2.idempotencyKey! }))).created, true, 'its key is still free')
    })

    it('calls subscribers for a batch with tasks due, announcing none later than the earliest', async (t) => {
      const store = await fresh()
      if (!skipUnlessInsertMany(t, store) || !skipUnlessSubscribe(t, store)) return
      const announced: Array<number | undefined> = []
      let woken: () => void = () => {}
      const called = new Promise<void>((resolve) => (woken = resolve))
      let listening = false
      const unsubscribe = store.subscribe((dueAt) => {
        if (!listening) return
        announced.push(dueAt)
        woken()
      })
      try {
        // a store may call the listener once its subscription holds; that call answers nothing here
        await new Promise((resolve) => setTimeout(resolve, 200))
        listening = true
        await store.insertMany([
          newTask({ body: '{"n":3}', nextAttemptAt: new Date(base + 30) }),
          newTask({ nextAttemptAt: new Date(base + 1) }),
          newTask({ body: '{"n":1}', nextAttemptAt: new Date(base + 10) }),
          newTask({ body: '{"n":2}', nextAttemptAt: new Date(base + 20) })
        ])
        await Promise.race([
          called,
          new Promise((_, reject) => setTimeout(() => reject(new Error('the listener was not called within 5 s')), 5000))
        ])
        // what may still be on its way (a notification through the server) lands
        await new Promise((resolve) => setTimeout(resolve, 200))
        for (const dueAt of announced) {
          if (dueAt !== undefined) assert.ok(dueAt <= base + 10, `announced ${new Date(dueAt).toISOString()}, after the earliest task is due`)
        }
      } finally {
        unsubscribe()
      }
    })
  })
}

function skipUnlessInsertMany(
  t: { skip(reason?: string): void },
  store: CallbackStore
): store is CallbackStore & Required<Pick<CallbackStore, 'insertMany'>> {
  if (typeof store.insertMany === 'function') return true
  t.skip('the store has no insertMany')
  return false
}

// ---- building blocks ------------------------------------------------------------------------

function newTask(overrides: Partial<NewCallbackTask> = {}): NewCallbackTask {
  const id = randomUUID()
  return {
    id,
    callbackUrl: `https://client.example/callbacks/${id}`,
    event: 'report.ready',
    createdAt: new Date(base),
    ...overrides
  }
}

/** A lease from attaching a body to a pending task at `now`. */
async function attachNow(store: CallbackStore, id: string, now: number): Promise<Lease> {
  const held = await store.attach(id, { body: `{"type":"report.ready","data":{"id":"${id}"}}` }, { now: new Date(now), leaseMs })
  assert.ok(held, `task ${id} could be attached`)
  return held
}

/** A new task, attached at `leasedAt` and released unattempted, due at `dueAt`. Its id. */
async function scheduledTask(store: CallbackStore, dueAt: number, leasedAt = base): Promise<string> {
  const input = newTask({ createdAt: new Date(leasedAt) })
  await store.insert(input)
  const held = await attachNow(store, input.id, leasedAt)
  assert.equal(await store.release(held, new Date(dueAt)), true)
  return input.id
}

function attemptAt(attempt: number, startedAt: number, extra: Partial<AttemptRecord> = {}): AttemptRecord {
  return { attempt, startedAt: new Date(startedAt), durationMs: 42, outcome: 'retry', ...extra }
}

function retryAt(at: number, lastError?: string) {
  return lastError === undefined
    ? { status: 'scheduled' as const, nextAttemptAt: new Date(at) }
    : { status: 'scheduled' as const, nextAttemptAt: new Date(at), lastError }
}

/** Whether anything at all would be reclaimed at `now` (far before any lease in these tests ends). */
async function reclaimable(store: CallbackStore, now: number): Promise<boolean> {
  return (await store.claim({ now: new Date(now), limit: 100, leaseMs })).length > 0
}

/**
 * `value` without its `undefined` properties: a store may build objects either way, but `null`
 * where nothing was given still fails the comparison, as a user reading `task.lastError ?? …`
 * would notice.
 */
function defined<T extends object>(value: T): T {
  return Object.fromEntries(Object.entries(value).filter(([, field]) => field !== undefined)) as T
}

/** A task that failed with one attempt at `at` (its `updatedAt` is then `at + 42`). Its id. */
async function failedTask(store: CallbackStore, at: number, reason: string): Promise<string> {
  const input = newTask({ createdAt: new Date(at) })
  await store.insert(input)
  const held = await attachNow(store, input.id, at)
  const attempt = attemptAt(1, at, { status: 400, outcome: 'failed' })
  assert.equal(await store.complete(held, attempt, { status: 'failed', lastError: reason }), true)
  return input.id
}

/** Whether the store has the optional `method`; skips the test when it has not. */
function skipUnless<M extends 'list' | 'redeliver' | 'countDue' | 'setDestination' | 'listDestinations'>(
  t: { skip(reason?: string): void },
  store: CallbackStore,
  method: M
): store is CallbackStore & Required<Pick<CallbackStore, M>> {
  if (typeof store[method] === 'function') return true
  t.skip(`the store has no ${method}`)
  return false
}

function skipUnlessSubscribe(t: { skip(reason?: string): void }, store: CallbackStore): store is CallbackStore & Required<Pick<CallbackStore, 'subscribe'>> {
  if (typeof store.subscribe === 'function') return true
  t.skip('the store has no subscribe')
  return false
}

/** Subscribes and resolves on the first call (within 5 s: a missing wake-up fails, a slow one does not). */
function nextWake(store: CallbackStore & Required<Pick<CallbackStore, 'subscribe'>>) {
  let unsubscribe: () => void = () => {}
  const called = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the listener was not called within 5 s')), 5000)
    unsubscribe = store.subscribe(() => {
      clearTimeout(timer)
      resolve()
    })
  })
  return { called, unsubscribe }
}

/**
 * Counts a subscribed listener's calls. `after(seen, what)` waits (5 s at most, then fails naming
 * `what`) for a call beyond the `seen` first ones; `quiet()` lets calls already on their way land.
 */
function wakeCounter(store: CallbackStore & Required<Pick<CallbackStore, 'subscribe'>>) {
  let calls = 0
  let waiting: (() => void) | undefined
  const unsubscribe = store.subscribe(() => {
    calls++
    waiting?.()
  })
  return {
    get calls() {
      return calls
    },
    unsubscribe,
    quiet: () => new Promise<void>((resolve) => setTimeout(resolve, 200)),
    after(seen: number, what: string): Promise<number> {
      if (calls > seen) return Promise.resolve(calls)
      return new Promise<number>((resolve, reject) => {
        const timer = setTimeout(() => {
          waiting = undefined
          reject(new Error(`the listener was not called after ${what} within 5 s`))
        }, 5000)
        waiting = () => {
          clearTimeout(timer)
          waiting = undefined
          resolve(calls)
        }
      })
    },
  }
}
