/**
 * A task's life on every store, as a sending service sees it: a task recorded with its payload is
 * sent by a worker (outbox); a task whose process died between the 202 and `deliver` ends failed
 * with its own code instead of waiting for ever; replays are told apart; nothing of an old failure
 * or a client's secret sticks where it should not.
 */
import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { createCallbackTask, createMemoryStore, createWorker, deliver, generateSecret, listTasks, verifySignature } from 'endpoint-callback'
import type { CallbackStore, DeliveryEvent, SenderOptions } from 'endpoint-callback'
import { openDurableStore } from '../support/durable-stores.ts'
import type { DurableStore } from '../support/durable-stores.ts'
import { createTestClock, createTestTransport } from '../support/sender.ts'
import type { TestReply } from '../support/sender.ts'
import { serviceSkip } from '../support/services.ts'

const callbackUrl = 'https://client.example.com/callbacks'
const skips = { memory: false, postgres: await serviceSkip('postgres'), redis: await serviceSkip('redis') } as const

/** Waits until `check` holds, at most `ms`, failing with `what`. */
async function until(check: () => boolean | Promise<boolean>, what: string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

for (const kind of ['memory', 'postgres', 'redis'] as const) {
  describe(`task lifecycle on the ${kind} store`, { skip: skips[kind] }, () => {
    let durable: DurableStore | undefined
    let store: CallbackStore

    before(async () => {
      if (kind === 'memory') store = createMemoryStore()
      else {
        durable = await openDurableStore(kind)
        store = durable.store
      }
    })
    after(async () => {
      await durable?.drop()
    })

    function sender(reply: (index: number) => TestReply, extra: Partial<SenderOptions> = {}) {
      const clock = createTestClock()
      const events: DeliveryEvent[] = []
      const transport = createTestTransport((_request, index) => reply(index))
      const options: SenderOptions = {
        store,
        secret: generateSecret(),
        transport,
        now: clock.now,
        retry: { jitter: 0, schedule: [1_000, 1_000] },
        onEvent: (event) => events.push(event),
        ...extra,
      }
      return { options, clock, events, transport }
    }

    it('records a task with its payload, due at once, and a worker sends it (outbox)', async () => {
      const { options, transport } = sender(() => ({ status: 204 }))
      const task = await createCallbackTask({ callbackUrl, event: 'order.placed', payload: { order: 7 } }, options)
      assert.equal(task.status, 'scheduled')
      assert.equal(task.created, true)
      const worker = createWorker({ ...options, pollIntervalMs: 50 })
      worker.start()
      try {
        await until(async () => (await store.get(task.id))?.status === 'delivered', 'the worker to deliver the outbox task')
      } finally {
        await worker.stop()
      }
      assert.equal(transport.requests.length, 1)
      const request = transport.requests[0]!
      const callback = await verifySignature({ headers: request.headers, body: request.body }, { secret: options.secret!, now: options.now! })
      assert.deepEqual(callback.data, { order: 7 })
      assert.equal(callback.id, task.id)
    })

    it('fails a pending task whose result never came, with its own code and a failed event, found by a worker', async () => {
      const { options, clock, events } = sender(() => ({ status: 204 }), { pendingTimeoutMs: 60_000 })
      // the process that accepted the job dies right after its 202: nobody ever calls deliver
      const stranded = await createCallbackTask({ callbackUrl, event: 'report.ready' }, options)
      const bounded = await createCallbackTask({ callbackUrl, event: 'report.ready', deadline: new Date(clock.now().getTime() + 10_000) }, options)
      assert.equal(stranded.status, 'pending')
      assert.deepEqual(stranded.nextAttemptAt, new Date(clock.now().getTime() + 60_000), 'a pending task shows when it expires')
      assert.deepEqual(bounded.nextAttemptAt, new Date(clock.now().getTime() + 10_000), 'a deadline applies to a pending task too')

      const worker = createWorker({ ...options, pollIntervalMs: 20 })
      worker.start()
      try {
        clock.advance(30_000)
        await until(async () => (await store.get(bounded.id))?.status === 'failed', 'the task past its deadline to fail')
        assert.equal((await store.get(stranded.id))?.status, 'pending', 'not expired before its time')
        clock.advance(31_000)
        await until(async () => (await store.get(stranded.id))?.status === 'failed', 'the stranded task to fail')
      } finally {
        await worker.stop()
      }
      const failed = await store.get(stranded.id)
      assert.match(failed!.lastError!, /^ERR_CALLBACK_PENDING_EXPIRED: /)
      assert.equal(failed!.attempts, 0)
      const event = events.find((each) => each.type === 'failed' && each.task.id === stranded.id)
      assert.ok(event !== undefined && event.type === 'failed')
      assert.match(event.reason, /^ERR_CALLBACK_PENDING_EXPIRED: /)
      const listed = await listTasks({ status: 'failed' }, options)
      assert.ok(listed.tasks.some((task) => task.id === stranded.id), 'an expired task is listed with the failures')
      await assert.rejects(deliver(stranded.id, {}, options), { code: 'ERR_CALLBACK_TASK_STATE', message: /never got its result \(ERR_CALLBACK_PENDING_EXPIRED/ })
    })

    it('lists pending tasks, newest first, without their secrets', async () => {
      const { options, clock } = sender(() => ({ status: 204 }))
      const secret = generateSecret()
      const older = await createCallbackTask({ callbackUrl, event: 'listed', secret }, options)
      clock.advance(1_000)
      const newer = await createCallbackTask({ callbackUrl, event: 'listed' }, options)
      const page = await listTasks({ status: 'pending', limit: 1000 }, options)
      const ids = page.tasks.filter((task) => task.event === 'listed').map((task) => task.id)
      assert.deepEqual(ids, [newer.id, older.id])
      assert.ok(!JSON.stringify(page).includes(secret))
      // a task whose result came is no longer pending
      await deliver(older.id, {}, options)
      const after = await listTasks({ status: 'pending', limit: 1000 }, options)
      assert.ok(!after.tasks.some((task) => task.id === older.id))
    })

    it('clears lastError once a task is delivered', async () => {
      const { options, clock } = sender((index) => ({ status: index === 0 ? 503 : 204 }))
      const task = await createCallbackTask({ callbackUrl, event: 'e' }, options)
      assert.equal((await deliver(task.id, {}, options)).status, 'retrying')
      assert.equal((await store.get(task.id))?.lastError, 'HTTP 503')
      clock.advance(1_000)
      const worker = createWorker({ ...options, pollIntervalMs: 20 })
      worker.start()
      try {
        await until(async () => (await store.get(task.id))?.status === 'delivered', 'the retry to deliver')
      } finally {
        await worker.stop()
      }
      assert.equal((await store.get(task.id))?.lastError, undefined)
      assert.equal((await store.attempts(task.id))[0]?.status, 503, 'the history keeps the failure')
    })

    it('answers a replay of an idempotency key with created: false, and a changed secret, encryptionKey or URL with a conflict', async () => {
      const { options } = sender(() => ({ status: 204 }))
      const secret = generateSecret()
      const key = `order-${kind}`
      const first = await createCallbackTask({ callbackUrl, event: 'e', idempotencyKey: key, secret }, options)
      const replay = await createCallbackTask({ callbackUrl, event: 'e', idempotencyKey: key, secret }, options)
      assert.equal(first.created, true)
      assert.equal(replay.created, false)
      assert.equal(replay.id, first.id)
      const conflicts: Array<[Record<string, unknown>, string]> = [
        [{ secret: generateSecret() }, 'secret'],
        [{ secret, encryptionKey: 'https://client.example.com/jwks.json' }, 'encryptionKey'],
        [{ secret, callbackUrl: 'https://elsewhere.example.com/cb' }, 'callbackUrl'],
      ]
      for (const [changed, field] of conflicts) {
        await assert.rejects(createCallbackTask({ callbackUrl, event: 'e', idempotencyKey: key, ...changed }, options), {
          code: 'ERR_CALLBACK_IDEMPOTENCY_CONFLICT',
          message: new RegExp(`with a different ${field}$`),
        })
      }
    })

    if (kind !== 'postgres') {
      it('refuses a transaction it cannot join, in createCallbackTask and deliver, writing nothing', async () => {
        const { options } = sender(() => ({ status: 204 }))
        await assert.rejects(createCallbackTask({ callbackUrl, event: 'e', payload: 1 }, { ...options, transaction: {} }), {
          name: 'TypeError',
          message: new RegExp(`the ${kind === 'memory' ? 'memory' : 'Redis'} store cannot join a database transaction`),
        })
        const task = await createCallbackTask({ callbackUrl, event: 'e' }, options)
        await assert.rejects(deliver(task.id, {}, { ...options, transaction: {} }), { name: 'TypeError', message: /cannot join a database transaction/ })
        assert.equal((await store.get(task.id))?.status, 'pending')
      })
    }
  })
}
