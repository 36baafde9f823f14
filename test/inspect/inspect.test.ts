/**
 * The inspection calls over the memory store: what an operator sees of a task's attempts and of
 * failed tasks, and what a redelivery or a cancellation does to what the receiver gets.
 */
import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import {
  cancelTask,
  createCallbackTask,
  createMemoryStore,
  createWorker,
  deliver,
  generateSecret,
  listAttempts,
  listFailedTasks,
  listTasks,
  redeliverFailed,
  redeliverTask,
} from 'endpoint-callback'
import type { CallbackStore, DeliveryEvent, SenderOptions } from 'endpoint-callback'
import { createTestClock, createTestTransport } from '../support/sender.ts'
import type { TestReply } from '../support/sender.ts'

function setup(answer: (url: string, index: number) => TestReply, schedule: number[] = [1000]) {
  const clock = createTestClock()
  const transport = createTestTransport((request, index) => answer(request.url, index))
  const waiters: Array<{ type: string; resolve: (event: DeliveryEvent) => void }> = []
  const sender: SenderOptions = {
    store: createMemoryStore(),
    secret: generateSecret(),
    transport,
    now: clock.now,
    retry: { schedule, jitter: 0, failStatuses: [400, 422] },
    onEvent(event) {
      // one waiter per event, so `work(type, 2)` waits for two of them
      const index = waiters.findIndex((waiter) => waiter.type === event.type)
      if (index !== -1) waiters.splice(index, 1)[0]!.resolve(event)
    },
  }
  /** Runs a worker until it has emitted `count` events of `type`. */
  async function work(type: DeliveryEvent['type'], count = 1): Promise<void> {
    const worker = createWorker({ ...sender, pollIntervalMs: 10 })
    // Every waiter is in place before the worker starts: two events may come in one tick.
    const seen = Promise.all(Array.from({ length: count }, () => new Promise<DeliveryEvent>((resolve) => waiters.push({ type, resolve }))))
    worker.start()
    await seen
    await worker.stop()
  }
  return { clock, transport, sender, work }
}

async function failedTask(s: ReturnType<typeof setup>, path: string): Promise<string> {
  const task = await createCallbackTask({ callbackUrl: `https://client.example${path}`, event: 'report.ready' }, s.sender)
  const report = await deliver(task, { path }, s.sender)
  assert.equal(report.status, 'failed')
  return task.id
}

describe('inspection', () => {
  test('lists a task’s attempts oldest first, and refuses an unknown task with ERR_CALLBACK_TASK_NOT_FOUND', async () => {
    const s = setup((_url, index) => (index === 0 ? { status: 503, body: 'busy' } : { status: 204 }))
    const task = await createCallbackTask({ callbackUrl: 'https://client.example/hooks', event: 'report.ready' }, s.sender)
    assert.equal((await deliver(task, {}, s.sender)).status, 'retrying')
    s.clock.advance(1000)
    await s.work('delivered')

    const attempts = await listAttempts(task.id, s.sender)
    assert.deepEqual(
      attempts.map(({ attempt, status, responseBody, outcome }) => ({ attempt, status, responseBody, outcome })),
      [
        { attempt: 1, status: 503, responseBody: 'busy', outcome: 'retry' },
        { attempt: 2, status: 204, responseBody: undefined, outcome: 'delivered' },
      ]
    )
    await assert.rejects(listAttempts('no-such-task', s.sender), { code: 'ERR_CALLBACK_TASK_NOT_FOUND', message: /no-such-task/ })
    assert.deepEqual(await listAttempts(task.id, { store: s.sender.store }), attempts, 'the store alone is enough')
  })

  test('redelivers a failed task: a worker sends the same webhook-id and body again, and the history shows both attempts', async () => {
    const s = setup((_url, index) => (index === 0 ? { status: 400, body: 'unknown account' } : { status: 204 }))
    const id = await failedTask(s, '/hooks')
    const [failed] = (await listFailedTasks({}, s.sender)).tasks
    assert.equal(failed?.id, id)
    assert.equal(failed?.lastError, 'HTTP 400')

    s.clock.advance(60_000)
    const task = await redeliverTask(id, s.sender)
    assert.equal(task.status, 'scheduled')
    assert.equal(task.nextAttemptAt?.getTime(), s.clock.now().getTime(), 'due at once')
    await s.work('delivered')

    const [first, second] = s.transport.requests
    assert.equal(second?.headers['webhook-id'], id)
    assert.equal(second?.headers['webhook-id'], first?.headers['webhook-id'])
    assert.equal(second?.body, first?.body)
    assert.notEqual(second?.headers['webhook-timestamp'], first?.headers['webhook-timestamp'], 'signed afresh')
    assert.deepEqual((await listAttempts(id, s.sender)).map((attempt) => attempt.status), [400, 204])
    assert.equal((await s.sender.store.get(id))?.status, 'delivered')
    assert.deepEqual((await listFailedTasks({}, s.sender)).tasks, [])
  })

  test('resumes the retry schedule where it stopped: a task that used every retry gets one more attempt', async () => {
    const s = setup(() => ({ status: 503 }), [1000])
    const task = await createCallbackTask({ callbackUrl: 'https://client.example/hooks', event: 'report.ready' }, s.sender)
    await deliver(task, {}, s.sender)
    s.clock.advance(1000)
    await s.work('failed')
    assert.equal((await s.sender.store.get(task.id))?.attempts, 2)

    await redeliverTask(task.id, s.sender)
    await s.work('failed')
    const after = await s.sender.store.get(task.id)
    assert.equal(after?.status, 'failed')
    assert.equal(after?.attempts, 3)
    assert.match(after?.lastError ?? '', /no attempts left after 3/)
    assert.equal(s.transport.requests.length, 3)
  })

  test('redelivers every task that failed since a time and leaves earlier failures alone', async () => {
    const s = setup((url, index) => (index < 3 ? { status: 422 } : { status: 204 }))
    const early = await failedTask(s, '/early')
    s.clock.advance(60_000)
    const since = s.clock.now()
    const later = await failedTask(s, '/later')
    s.clock.advance(1000)
    const latest = await failedTask(s, '/latest')

    const { redelivered } = await redeliverFailed({ since }, s.sender)
    assert.deepEqual(redelivered, [latest, later])
    await s.work('delivered', 2)
    assert.equal((await s.sender.store.get(later))?.status, 'delivered')
    assert.equal((await s.sender.store.get(latest))?.status, 'delivered')
    assert.equal((await s.sender.store.get(early))?.status, 'failed')
    assert.deepEqual((await listFailedTasks({}, s.sender)).tasks.map((task) => task.id), [early])
    assert.deepEqual(await redeliverFailed({ since }, s.sender), { redelivered: [] }, 'nothing failed since then any more')
  })

  test('redelivers more failed tasks than fit on one page', async () => {
    const s = setup(() => ({ status: 400 }))
    const ids: string[] = []
    for (let i = 0; i < 230; i++) {
      s.clock.advance(1)
      ids.push(await failedTask(s, `/hooks/${i}`))
    }
    const { redelivered } = await redeliverFailed({ since: new Date(0) }, s.sender)
    // Each once, none left out (their order is by failure time, which the attempts' durations move).
    assert.deepEqual([...redelivered].sort(), [...ids].sort())
    assert.deepEqual((await listTasks({ status: 'scheduled', limit: 1000 }, s.sender)).tasks.length, 230)
  })

  test('refuses to redeliver a task that did not fail, naming its status, and changes nothing', async () => {
    const s = setup((url) => (url.endsWith('/gone') ? { status: 410 } : { status: 204 }))
    const delivered = await createCallbackTask({ callbackUrl: 'https://client.example/ok', event: 'a' }, s.sender)
    await deliver(delivered, {}, s.sender)
    const gone = await createCallbackTask({ callbackUrl: 'https://client.example/gone', event: 'a' }, s.sender)
    assert.equal((await deliver(gone, {}, s.sender)).status, 'cancelled')

    await assert.rejects(redeliverTask(delivered.id, s.sender), { code: 'ERR_CALLBACK_TASK_STATE', message: /is delivered: only failed tasks/ })
    await assert.rejects(redeliverTask(gone.id, s.sender), { code: 'ERR_CALLBACK_TASK_STATE', message: /is cancelled/ })
    await assert.rejects(redeliverTask('no-such-task', s.sender), { code: 'ERR_CALLBACK_TASK_NOT_FOUND' })
    assert.equal((await s.sender.store.get(gone.id))?.status, 'cancelled')
  })

  test('cancels a task waiting for its retry, which is then never sent again; an ended task is refused', async () => {
    const s = setup(() => ({ status: 503 }))
    const task = await createCallbackTask({ callbackUrl: 'https://client.example/hooks', event: 'a' }, s.sender)
    await deliver(task, {}, s.sender)
    const cancelled = await cancelTask(task.id, s.sender)
    assert.equal(cancelled.status, 'cancelled')

    s.clock.advance(10 * 60_000)
    const [lease] = await s.sender.store.claim({ now: s.clock.now(), limit: 10, leaseMs: 60_000 })
    assert.equal(lease, undefined, 'no worker will claim it')
    assert.equal(s.transport.requests.length, 1)
    await assert.rejects(cancelTask(task.id, s.sender), { code: 'ERR_CALLBACK_TASK_STATE', message: /is cancelled: it has already ended/ })
    await assert.rejects(cancelTask('no-such-task', s.sender), { code: 'ERR_CALLBACK_TASK_NOT_FOUND' })
  })

  test('a store without the inspection methods, or a missing since, is a TypeError naming what is missing', async () => {
    const { list: _list, redeliver: _redeliver, ...bare } = createMemoryStore()
    const store = bare as CallbackStore
    assert.throws(() => listFailedTasks({}, { store }), { name: 'TypeError', message: /store\.list is missing/ })
    await assert.rejects(redeliverTask('x', { store }), { name: 'TypeError', message: /store\.redeliver is missing/ })
    await assert.rejects(redeliverFailed({} as never, { store: createMemoryStore() }), { name: 'TypeError', message: /since must be a valid Date/ })
    await assert.rejects(redeliverTask('', { store: createMemoryStore() }), { name: 'TypeError', message: /id must be a task id/ })
    await assert.rejects(listTasks({ status: 'failed', limit: 0 }, { store: createMemoryStore() }), { name: 'TypeError', message: /limit/ })
  })
})
