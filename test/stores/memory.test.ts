import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { createMemoryStore } from 'endpoint-callback'
import type { CallbackStore, Lease, NewCallbackTask } from 'endpoint-callback'
import { storeContract } from 'endpoint-callback/testing'

storeContract('memory', () => createMemoryStore())

const start = Date.UTC(2030, 0, 1)
const leaseMs = 30_000

function newTask(overrides: Partial<NewCallbackTask> = {}): NewCallbackTask {
  return { id: randomUUID(), callbackUrl: 'https://client.example/callbacks', event: 'report.ready', createdAt: new Date(start), ...overrides }
}

async function attached(store: CallbackStore, now = start): Promise<Lease> {
  const input = newTask()
  await store.insert(input)
  const held = await store.attach(input.id, { body: '{}' }, { now: new Date(now), leaseMs })
  assert.ok(held)
  return held
}

/** Counts listener calls; `settle` lets queued microtasks run. */
function counter(store: CallbackStore) {
  let calls = 0
  const unsubscribe = store.subscribe!(() => {
    calls++
  })
  return { get calls() { return calls }, unsubscribe }
}

const settle = () => new Promise((resolve) => setImmediate(resolve))

describe('createMemoryStore', () => {
  it('refuses an attemptHistory that is not a positive integer, naming the option', () => {
    for (const attemptHistory of [0, -1, 1.5, Number.NaN, '10' as unknown as number]) {
      assert.throws(() => createMemoryStore({ attemptHistory }), (error: unknown) => {
        assert.ok(error instanceof TypeError)
        assert.match(error.message, /attemptHistory/)
        return true
      })
    }
  })

  it('keeps only the newest attemptHistory attempts of a task', async () => {
    const store = createMemoryStore({ attemptHistory: 3 })
    let held = await attached(store)
    for (let n = 1; n <= 5; n++) {
      const resolution = { status: 'scheduled' as const, nextAttemptAt: new Date(start + n) }
      assert.equal(await store.complete(held, { attempt: n, startedAt: new Date(start + n), durationMs: 1, status: 500, outcome: 'retry' }, resolution), true)
      const [next] = await store.claim({ now: new Date(start + n), limit: 1, leaseMs })
      assert.ok(next)
      held = next
    }
    const history = await store.attempts(held.task.id)
    assert.deepEqual(history.map((attempt) => attempt.attempt), [3, 4, 5])
    assert.equal((await store.get(held.task.id))?.attempts, 5, 'the count still says how many were made')
  })

  it('refuses metadata that cannot be stored as JSON, storing nothing', async () => {
    const store = createMemoryStore()
    const metadata: Record<string, unknown> = {}
    metadata.self = metadata
    const input = newTask({ metadata })
    await assert.rejects(store.insert(input), (error: unknown) => {
      assert.ok(error instanceof TypeError)
      assert.match(error.message, /metadata/)
      return true
    })
    assert.equal(await store.get(input.id), undefined)
  })

  it('claims the earliest of many due tasks however they were scheduled and rescheduled', async () => {
    // many tasks, rescheduled later and earlier, cancelled in the middle
    const store = createMemoryStore()
    const due = new Map<string, number>()
    const leases: Lease[] = []
    for (let i = 0; i < 300; i++) leases.push(await attached(store))
    let seed = 7
    const random = () => (seed = (seed * 48271) % 2147483647) / 2147483647
    for (const held of leases) {
      const at = start + Math.floor(random() * 1_000_000)
      await store.release(held, new Date(at))
      due.set(held.task.id, at)
    }
    let round = 0
    for (const [id] of [...due].slice(0, 60)) {
      if (round++ % 3 === 0) {
        await store.cancel(id)
        due.delete(id)
      }
    }
    const seen: number[] = []
    for (;;) {
      const batch = await store.claim({ now: new Date(start + 2_000_000), limit: 17, leaseMs })
      if (batch.length === 0) break
      for (const held of batch) seen.push(due.get(held.task.id)!)
    }
    assert.equal(seen.length, due.size)
    assert.deepEqual(seen, [...due.values()].sort((a, b) => a - b))
  })

  it('keeps claiming in due order after thousands of reschedules of the same tasks', async () => {
    // each lease and each reschedule moves the task in the due order: it must end up in one place,
    // never twice and never lost
    const store = createMemoryStore()
    const leases = [await attached(store), await attached(store), await attached(store)]
    const ids = leases.map((held) => held.task.id)
    let now = start
    for (const [i, held] of leases.entries()) await store.release(held, new Date(now + i))
    for (let round = 0; round < 2500; round++) {
      const claimed = await store.claim({ now: new Date(now + 2), limit: 10, leaseMs })
      assert.deepEqual(claimed.map((held) => held.task.id), ids, `round ${round}`)
      now += 10
      for (const [i, held] of claimed.entries()) assert.equal(await store.release(held, new Date(now + i)), true)
    }
    await store.cancel(ids[1]!)
    const last = await store.claim({ now: new Date(now + leaseMs), limit: 10, leaseMs })
    assert.deepEqual(last.map((held) => held.task.id), [ids[0], ids[2]])
  })

  it('never hands one task out twice in one claim, even with a lease that is already over', async () => {
    const store = createMemoryStore()
    for (let i = 0; i < 5; i++) await store.release(await attached(store), new Date(start))
    const claimed = await store.claim({ now: new Date(start), limit: 10, leaseMs: 0 })
    assert.equal(claimed.length, 5)
    assert.equal(new Set(claimed.map((held) => held.task.id)).size, 5)
  })

  describe('retention', () => {
    const second = 1000
    const delivered = { attempt: 1, durationMs: 5, status: 200, outcome: 'delivered' as const }

    /** Inserts a task with `key`, leases it at `at` and completes it as delivered 5 ms later. */
    async function deliveredAt(store: CallbackStore, at: number, key: string): Promise<string> {
      const input = newTask({ idempotencyKey: key, createdAt: new Date(at) })
      await store.insert(input)
      const held = await store.attach(input.id, { body: '{}' }, { now: new Date(at), leaseMs })
      assert.ok(await store.complete(held!, { ...delivered, startedAt: new Date(at) }, { status: 'delivered' }))
      return input.id
    }

    it('lets a finished task and its idempotency key go once the retention has passed, by the clock of inserts and claims', async () => {
      const store = createMemoryStore({ retentionSeconds: 60 })
      const id = await deliveredAt(store, start, 'job-1')
      const finished = start + 5
      await store.claim({ now: new Date(finished + 60 * second - 1), limit: 10, leaseMs })
      assert.equal((await store.get(id))?.status, 'delivered', 'kept until the retention is over')
      const again = await store.insert(newTask({ idempotencyKey: 'job-1', createdAt: new Date(finished + 60 * second - 1) }))
      assert.equal(again.created, false, 'the key still answers with the task')
      assert.equal(again.task.id, id)

      await store.claim({ now: new Date(finished + 60 * second), limit: 10, leaseMs })
      assert.equal(await store.get(id), undefined)
      assert.deepEqual(await store.attempts(id), [])
      const fresh = await store.insert(newTask({ idempotencyKey: 'job-1', createdAt: new Date(finished + 61 * second) }))
      assert.equal(fresh.created, true, 'the key is free again')
    })

    it('keeps finished tasks for 7 days by default, and for good with retentionSeconds: 0', async () => {
      const week = 7 * 86_400 * second
      for (const [options, keptAfterAWeek] of [[{}, false], [{ retentionSeconds: 0 }, true]] as const) {
        const store = createMemoryStore(options)
        const id = await deliveredAt(store, start, 'job')
        await store.claim({ now: new Date(start + 5 + week - 1), limit: 1, leaseMs })
        assert.equal((await store.get(id))?.status, 'delivered')
        await store.claim({ now: new Date(start + 5 + 100 * week), limit: 1, leaseMs })
        assert.equal((await store.get(id)) !== undefined, keptAfterAWeek, JSON.stringify(options))
      }
    })

    it('keeps a failed task that was redelivered, and a cancelled one for the retention after its cancellation', async () => {
      const store = createMemoryStore({ retentionSeconds: 60 })
      const cancelled = await attached(store)
      await store.release(cancelled, new Date(start + 3_600_000))
      assert.equal(await store.cancel(cancelled.task.id), true)
      const cancelledAt = (await store.get(cancelled.task.id))!.updatedAt.getTime()
      const failedInput = newTask()
      await store.insert(failedInput)
      const held = await store.attach(failedInput.id, { body: '{}' }, { now: new Date(start), leaseMs })
      await store.complete(held!, { ...delivered, startedAt: new Date(start), status: 400, outcome: 'failed' }, { status: 'failed' })
      assert.equal(await store.redeliver!(failedInput.id, { now: new Date(start + 10 * second) }), true)

      const claimed = await store.claim({ now: new Date(cancelledAt + 60 * second - 1), limit: 10, leaseMs })
      assert.deepEqual(claimed.map((held) => held.task.id), [failedInput.id], 'redelivered, so no longer finished: due again')
      assert.equal((await store.get(cancelled.task.id))?.status, 'cancelled')
      await store.claim({ now: new Date(cancelledAt + 60 * second), limit: 10, leaseMs })
      assert.equal(await store.get(cancelled.task.id), undefined)
      assert.equal((await store.get(failedInput.id))?.status, 'delivering', 'the redelivered task stays')
    })

    it('reuses the room of tasks let go and still claims in due order', async () => {
      const store = createMemoryStore({ retentionSeconds: 1 })
      let now = start
      const due = new Map<string, number>()
      let seed = 3
      const random = () => (seed = (seed * 48271) % 2147483647) / 2147483647
      for (let round = 0; round < 20; round++) {
        for (let i = 0; i < 50; i++) await deliveredAt(store, now, `r${round}-${i}`)
        now += 2 * second
        for (let i = 0; i < 5; i++) {
          const held = await attached(store, now)
          const at = now + Math.floor(random() * 10 * second)
          await store.release(held, new Date(at))
          due.set(held.task.id, at)
        }
      }
      const claimed: number[] = []
      for (let batch = await store.claim({ now: new Date(now + 20 * second), limit: 7, leaseMs }); batch.length > 0;
        batch = await store.claim({ now: new Date(now + 20 * second), limit: 7, leaseMs })) {
        for (const held of batch) claimed.push(due.get(held.task.id)!)
      }
      assert.equal(claimed.length, due.size, 'every scheduled task claimed once')
      assert.deepEqual(claimed, [...due.values()].sort((a, b) => a - b))
      const listed = await store.list!({ status: 'delivered', limit: 1000 })
      assert.ok(listed.tasks.length < 100, `at most the last rounds' delivered tasks are left, found ${listed.tasks.length}`)
    })

    it('refuses a retentionSeconds that is not a number of seconds >= 0, naming the option', () => {
      for (const retentionSeconds of [-1, Number.NaN, Infinity, '60' as unknown as number]) {
        assert.throws(() => createMemoryStore({ retentionSeconds }), (error: unknown) => {
          assert.ok(error instanceof TypeError)
          assert.match(error.message, /retentionSeconds/)
          return true
        })
      }
    })
  })

  describe('subscribe', () => {
    it('wakes a listener after a release, asynchronously', async () => {
      const store = createMemoryStore()
      const held = await attached(store)
      const listener = counter(store)
      const released = store.release(held)
      assert.equal(listener.calls, 0, 'not called inside the store call')
      await released
      await settle()
      assert.equal(listener.calls, 1)
    })

    it('wakes a listener after a completion that schedules another attempt, not after a final one', async () => {
      const store = createMemoryStore()
      const retried = await attached(store)
      const delivered = await attached(store)
      const listener = counter(store)
      const attempt = { attempt: 1, startedAt: new Date(start), durationMs: 5, outcome: 'retry' as const }
      await store.complete(delivered, { ...attempt, outcome: 'delivered' }, { status: 'delivered' })
      await settle()
      assert.equal(listener.calls, 0)
      await store.complete(retried, attempt, { status: 'scheduled', nextAttemptAt: new Date(start + 5000) })
      await settle()
      assert.equal(listener.calls, 1)
    })

    it('wakes each listener once for releases made together', async () => {
      const store = createMemoryStore()
      const leases = [await attached(store), await attached(store), await attached(store)]
      const first = counter(store)
      const second = counter(store)
      await Promise.all(leases.map((held) => store.release(held)))
      await settle()
      assert.equal(first.calls, 1)
      assert.equal(second.calls, 1)
    })

    it('stops calling a listener once it unsubscribed, leaving the others', async () => {
      const store = createMemoryStore()
      const leases = [await attached(store), await attached(store)]
      const gone = counter(store)
      const staying = counter(store)
      gone.unsubscribe()
      await store.release(leases[0]!)
      await settle()
      assert.equal(gone.calls, 0)
      assert.equal(staying.calls, 1)
      staying.unsubscribe()
      await store.release(leases[1]!)
      await settle()
      assert.equal(staying.calls, 1)
    })

    it('refuses a listener that is not a function', () => {
      const store = createMemoryStore()
      assert.throws(() => store.subscribe!(42 as unknown as () => void), TypeError)
    })
  })
})
