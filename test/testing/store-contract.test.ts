/**
 * The store contract tests itself: run against stores broken on purpose, one promise at a time,
 * it must fail each of them, and it must fail them in the case written for that promise. A
 * contract that a broken store passes protects nobody's own store either.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createMemoryStore } from 'endpoint-callback'
import type { CallbackStore, Lease } from 'endpoint-callback'
import { defineStoreContract } from '../../src/testing/store-contract.ts'

interface Outcome {
  passed: string[]
  skipped: string[]
  /** Case title → the first line of its failure. */
  failed: Map<string, string>
}

/** Runs every contract case against stores from `factory`, one after another, and says how each ended. */
async function runContract(factory: () => CallbackStore): Promise<Outcome> {
  const cases: Array<{ title: string; body: (t: { skip(reason?: string): void }) => Promise<void> }> = []
  const afterEach: Array<() => Promise<void>> = []
  const path: string[] = []
  defineStoreContract(
    {
      describe(title, body) {
        path.push(title)
        try {
          body()
        } finally {
          path.pop()
        }
      },
      it(title, body) {
        cases.push({ title: [...path.slice(1), title].join(' › '), body })
      },
      afterEach(body) {
        afterEach.push(body)
      },
    },
    'under test',
    factory
  )
  const outcome: Outcome = { passed: [], skipped: [], failed: new Map() }
  for (const { title, body } of cases) {
    let skipped = false
    let timer: NodeJS.Timeout | undefined
    try {
      const deadline = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error('the case did not finish within 20 s')), 20_000)
      })
      await Promise.race([body({ skip: () => void (skipped = true) }), deadline])
      if (skipped) outcome.skipped.push(title)
      else outcome.passed.push(title)
    } catch (error) {
      outcome.failed.set(title, String((error as Error)?.message ?? error).split('\n')[0]!)
    } finally {
      clearTimeout(timer)
      for (const hook of afterEach) await hook()
    }
  }
  assert.ok(cases.length >= 60, `the contract registered only ${cases.length} cases`)
  return outcome
}

/** A memory store with some of its methods replaced by broken ones. */
function broken(replace: (inner: CallbackStore) => Partial<CallbackStore>): () => CallbackStore {
  return () => {
    const inner = createMemoryStore()
    return { ...inner, ...replace(inner) }
  }
}

/** Every claim of a task hands out the token of its first claim (a token derived from the task, say). */
const staleTokens = broken((inner) => {
  const firstToken = new Map<string, string>()
  const realToken = new Map<string, string>()
  const unmask = (lease: Lease): Lease =>
    lease.token === firstToken.get(lease.task.id) ? { ...lease, token: realToken.get(lease.task.id)! } : lease
  return {
    async claim(options) {
      return (await inner.claim(options)).map((lease) => {
        const id = lease.task.id
        realToken.set(id, lease.token)
        if (!firstToken.has(id)) firstToken.set(id, lease.token)
        return { ...lease, token: firstToken.get(id)! }
      })
    },
    complete: (lease, attempt, resolution) => inner.complete(unmask(lease), attempt, resolution),
    release: (lease, nextAttemptAt) => inner.release(unmask(lease), nextAttemptAt),
  }
})

/** Calls a new listener once, at once, and never again. */
const deafSubscribe = broken(() => ({
  subscribe(listener) {
    queueMicrotask(listener)
    return () => {}
  },
}))

const claimIgnoringLimit = broken((inner) => ({
  claim: (options) => inner.claim({ ...options, limit: Number.MAX_SAFE_INTEGER }),
}))

/** Takes whatever is scheduled or leased, due or not; the leases it hands out still end at now + leaseMs. */
const claimIgnoringDueTime = broken((inner) => ({
  claim({ now, limit, leaseMs }) {
    const farAhead = now.getTime() + 100 * 365 * 86_400_000
    return inner.claim({ now: new Date(farAhead), limit, leaseMs: leaseMs - (farAhead - now.getTime()) })
  },
}))

/** Completes whichever lease currently holds the task, whatever token the caller shows. */
const completeIgnoringToken = broken((inner) => {
  const current = new Map<string, string>()
  const note = (lease: Lease) => (current.set(lease.task.id, lease.token), lease)
  return {
    attach: async (id, result, lease) => {
      const held = await inner.attach(id, result, lease)
      return held === undefined ? undefined : note(held)
    },
    claim: async (options) => (await inner.claim(options)).map(note),
    complete: (lease, attempt, resolution) =>
      inner.complete({ ...lease, token: current.get(lease.task.id) ?? lease.token }, attempt, resolution),
  }
})

const insertWithoutIdempotency = broken((inner) => ({
  insert: ({ idempotencyKey: _ignored, ...task }, options) => inner.insert(task, options),
}))

/** Bulk inserts that forget every idempotency key: a replayed batch creates its tasks again. */
const insertManyWithoutIdempotency = broken((inner) => ({
  insertMany: (tasks, options) => inner.insertMany!(tasks.map(({ idempotencyKey: _ignored, ...task }) => task), options),
}))

const mutants: Array<{ name: string; factory: () => CallbackStore; caughtBy: string }> = [
  { name: 'stale tokens', factory: staleTokens, caughtBy: 'claim › gives a task a new token at every claim, however it came due again' },
  {
    name: 'stale tokens',
    factory: staleTokens,
    caughtBy: 'complete › refuses a completion and a release with the lease of an earlier claim while a newer claim holds the task',
  },
  {
    name: 'deaf subscribe',
    factory: deafSubscribe,
    caughtBy: 'subscribe (optional) › calls the listener again after each release, completion that schedules a retry, and redelivery',
  },
  { name: 'claim ignoring limit', factory: claimIgnoringLimit, caughtBy: 'claim › respects limit when many tasks are due' },
  {
    name: 'claim ignoring due time',
    factory: claimIgnoringDueTime,
    caughtBy: 'claim › does not lease a task before its nextAttemptAt, and does at that instant (in 2100)',
  },
  {
    name: 'complete ignoring the token',
    factory: completeIgnoringToken,
    caughtBy: 'complete › refuses a completion and a release with the lease of an earlier claim while a newer claim holds the task',
  },
  {
    name: 'complete ignoring the token',
    factory: completeIgnoringToken,
    caughtBy: 'complete › refuses a completion with a token that was never handed out',
  },
  {
    name: 'insert without idempotency',
    factory: insertWithoutIdempotency,
    caughtBy: 'insert and get › answers the stored task with created: false for an idempotency key it has seen',
  },
  {
    name: 'insert without idempotency',
    factory: insertWithoutIdempotency,
    caughtBy: 'insert and get › creates exactly one task when 20 inserts with one idempotency key race',
  },
  {
    name: 'insertMany without idempotency',
    factory: insertManyWithoutIdempotency,
    caughtBy:
      'insertMany (optional): many tasks at once › answers the stored task with created: false for a key stored before, and the first of two tasks of one batch with one key',
  },
  {
    name: 'insertMany without idempotency',
    factory: insertManyWithoutIdempotency,
    caughtBy: 'insertMany (optional): many tasks at once › creates exactly one task per key when batches with the same keys, in any order, race',
  },
]

test('the memory store the mutants are built on passes every contract case', async () => {
  const outcome = await runContract(() => createMemoryStore())
  assert.deepEqual([...outcome.failed], [], 'the unbroken memory store fails a case')
  assert.deepEqual(outcome.skipped, [], 'the memory store has every optional method')
})

const outcomes = new Map<() => CallbackStore, Promise<Outcome>>()
for (const { name, factory, caughtBy } of mutants) {
  test(`the contract catches a store with ${name}, in "${caughtBy}"`, async (t) => {
    if (!outcomes.has(factory)) outcomes.set(factory, runContract(factory))
    const outcome = await outcomes.get(factory)!
    t.diagnostic(`${name}: ${outcome.failed.size} failing cases: ${[...outcome.failed.keys()].join(' | ')}`)
    assert.ok(outcome.failed.size > 0, `a store with ${name} passed the whole contract`)
    assert.ok(
      outcome.failed.has(caughtBy),
      `a store with ${name} passed "${caughtBy}"; it failed only: ${[...outcome.failed.keys()].join(' | ')}`
    )
  })
}
