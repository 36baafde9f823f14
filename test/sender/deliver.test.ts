import { test } from 'node:test'
import assert from 'node:assert/strict'
import {
  CallbackError,
  createCallbackTask,
  createMemoryStore,
  deliver,
  DeliveryError,
  generateSecret,
  TaskError,
  UrlPolicyError,
  verifySignature,
} from 'endpoint-callback'
import type { DeliveryEvent, SenderOptions, TransportRequest } from 'endpoint-callback'
import { createTestClock, createTestTransport } from '../support/sender.ts'
import type { TestReply } from '../support/sender.ts'

const callbackUrl = 'https://client.example.com/callbacks'

function setup(handler: (request: TransportRequest, index: number) => TestReply | Promise<TestReply>, extra: Partial<SenderOptions> = {}) {
  const clock = createTestClock()
  const secret = generateSecret()
  const transport = createTestTransport(handler)
  const events: DeliveryEvent[] = []
  const sender: SenderOptions = {
    store: createMemoryStore(),
    secret,
    transport,
    now: clock.now,
    retry: { jitter: 0 },
    onEvent: (event) => events.push(event),
    ...extra,
  }
  return { clock, secret, transport, events, sender }
}

test('a 2xx answer delivers the task and the receiver can verify what it got', async () => {
  const { sender, transport, secret, clock } = setup(() => ({ status: 204 }))
  const task = await createCallbackTask({ callbackUrl, event: 'report.ready' }, sender)
  const report = await deliver(task.id, { reportUrl: 'https://files.example.com/r/7' }, sender)

  assert.equal(report.status, 'delivered')
  assert.equal(report.attempts, 1)
  assert.equal(report.response?.status, 204)
  const [request] = transport.requests
  assert.equal(request!.url, callbackUrl)
  assert.equal(request!.headers['content-type'], 'application/json')
  assert.equal(request!.headers['webhook-id'], task.id)
  const callback = await verifySignature({ headers: request!.headers, body: request!.body }, { secret, now: clock.now })
  assert.equal(callback.id, task.id)
  assert.equal(callback.type, 'report.ready')
  assert.deepEqual(callback.data, { reportUrl: 'https://files.example.com/r/7' })
  assert.deepEqual(JSON.parse(callback.body), {
    type: 'report.ready',
    timestamp: clock.now().toISOString(),
    data: { reportUrl: 'https://files.example.com/r/7' },
  })
  const stored = await sender.store.get(task.id)
  assert.equal(stored?.status, 'delivered')
  const [attempt] = await sender.store.attempts(task.id)
  assert.equal(attempt?.status, 204)
  assert.equal(attempt?.outcome, 'delivered')
})

test('a task object returned by createCallbackTask can be delivered as well as its id', async () => {
  const { sender } = setup(() => ({ status: 200 }))
  const task = await createCallbackTask({ callbackUrl, event: 'e' }, sender)
  assert.equal((await deliver(task, { ok: true }, sender)).status, 'delivered')
})

test('a 500 schedules the next attempt after the first delay of the schedule and keeps the body', async () => {
  const { sender, clock, events } = setup(() => ({ status: 500, body: 'database is down' }))
  const task = await createCallbackTask({ callbackUrl, event: 'e' }, sender)
  const report = await deliver(task.id, { n: 1 }, sender)

  assert.equal(report.status, 'retrying')
  assert.deepEqual(report.nextAttemptAt, new Date(clock.now().getTime() + 5_000))
  assert.equal(report.error, 'HTTP 500')
  const stored = await sender.store.get(task.id)
  assert.equal(stored?.status, 'scheduled')
  assert.equal(stored?.lastError, 'HTTP 500')
  assert.deepEqual(stored?.nextAttemptAt, report.nextAttemptAt)
  assert.equal(JSON.parse(stored!.body!).data.n, 1)
  const [attempt] = await sender.store.attempts(task.id)
  assert.equal(attempt?.responseBody, 'database is down')
  assert.deepEqual(events.map((event) => event.type), ['attempt', 'retry-scheduled'])
})

test('a payload that cannot be serialised is rejected and the task stays pending', async () => {
  const { sender, transport } = setup(() => ({ status: 204 }))
  const task = await createCallbackTask({ callbackUrl, event: 'e' }, sender)
  const circular: Record<string, unknown> = {}
  circular.self = circular
  for (const payload of [{ big: 10n }, circular]) {
    await assert.rejects(deliver(task.id, payload, sender), (error: unknown) => error instanceof CallbackError && error.code === 'ERR_CALLBACK_PAYLOAD_INVALID')
  }
  assert.equal((await sender.store.get(task.id))?.status, 'pending')
  assert.equal(transport.requests.length, 0)
  assert.equal((await deliver(task.id, { fixed: true }, sender)).status, 'delivered')
})

test('an unknown task and a task whose result is already attached are TaskErrors with codes', async () => {
  const { sender } = setup(() => ({ status: 204 }))
  await assert.rejects(deliver('msg_nope', {}, sender), (error: unknown) => error instanceof TaskError && error.code === 'ERR_CALLBACK_TASK_NOT_FOUND')
  const task = await createCallbackTask({ callbackUrl, event: 'e' }, sender)
  await deliver(task.id, {}, sender)
  await assert.rejects(deliver(task.id, {}, sender), (error: unknown) => error instanceof TaskError && error.code === 'ERR_CALLBACK_TASK_STATE')
  await assert.rejects(deliver(task, {}, sender), (error: unknown) => error instanceof TaskError && error.code === 'ERR_CALLBACK_TASK_STATE')
  await assert.rejects(deliver(42 as never, {}, sender), TypeError)
})

test('a per-task secret signs instead of the sender\'s', async () => {
  const { sender, transport, secret, clock } = setup(() => ({ status: 204 }))
  const own = generateSecret()
  const task = await createCallbackTask({ callbackUrl, event: 'e', secret: own }, sender)
  await deliver(task.id, {}, sender)
  const request = transport.requests[0]!
  await verifySignature({ headers: request.headers, body: request.body }, { secret: own, now: clock.now })
  await assert.rejects(verifySignature({ headers: request.headers, body: request.body }, { secret, now: clock.now }), /signature/i)
})

test('a refused connection is retried quickly inside the attempt before it counts as failed', async () => {
  const { sender, transport } = setup((_request, index) => {
    if (index < 2) throw new DeliveryError('ERR_CALLBACK_CONNECTION', 'connection refused by client.example.com')
    return { status: 200 }
  })
  const task = await createCallbackTask({ callbackUrl, event: 'e' }, sender)
  const report = await deliver(task.id, {}, sender)
  assert.equal(report.status, 'delivered')
  assert.equal(report.attempts, 1)
  assert.equal(transport.requests.length, 3)
  assert.equal(new Set(transport.requests.map((request) => request.body)).size, 1)
})

test('a timeout is not retried inside the attempt: it goes to the durable schedule', async () => {
  const { sender, transport } = setup(() => {
    throw new DeliveryError('ERR_CALLBACK_TIMEOUT', 'callback to client.example.com timed out after 10000 ms')
  })
  const task = await createCallbackTask({ callbackUrl, event: 'e' }, sender)
  const report = await deliver(task.id, {}, sender)
  assert.equal(report.status, 'retrying')
  assert.equal(transport.requests.length, 1)
  const [attempt] = await sender.store.attempts(task.id)
  assert.equal(attempt?.error, 'ERR_CALLBACK_TIMEOUT: callback to client.example.com timed out after 10000 ms')
  assert.equal(attempt?.status, undefined)
})

test('an address refused at connect time fails the task for good', async () => {
  const { sender } = setup(() => {
    throw new UrlPolicyError('ERR_CALLBACK_URL_FORBIDDEN_ADDRESS', 'client.example.com resolves to 10.0.0.8, a private address')
  })
  const task = await createCallbackTask({ callbackUrl, event: 'e' }, sender)
  const report = await deliver(task.id, {}, sender)
  assert.equal(report.status, 'failed')
  assert.match(report.error!, /^ERR_CALLBACK_URL_FORBIDDEN_ADDRESS/)
  assert.equal((await sender.store.get(task.id))?.status, 'failed')
})

test('a task past its deadline fails without a request being sent', async () => {
  const { sender, transport, clock, events } = setup(() => ({ status: 204 }))
  const task = await createCallbackTask({ callbackUrl, event: 'e', deadline: new Date(clock.now().getTime() + 1_000) }, sender)
  clock.advance(2_000)
  const report = await deliver(task.id, {}, sender)
  assert.equal(report.status, 'failed')
  assert.match(report.error!, /^ERR_CALLBACK_DEADLINE_EXCEEDED/)
  assert.equal(transport.requests.length, 0)
  assert.deepEqual(events.map((event) => event.type), ['attempt', 'failed'])
})

test('a retry that would land after the deadline fails the task now instead', async () => {
  const { sender, clock } = setup(() => ({ status: 503 }))
  const task = await createCallbackTask({ callbackUrl, event: 'e', deadline: new Date(clock.now().getTime() + 3_000) }, sender)
  const report = await deliver(task.id, {}, sender)
  assert.equal(report.status, 'failed')
  assert.match(report.error!, /^ERR_CALLBACK_DEADLINE_EXCEEDED: .*\(last: HTTP 503\)$/)
  const [attempt] = await sender.store.attempts(task.id)
  assert.equal(attempt?.status, 503)
  assert.equal(attempt?.outcome, 'failed')
})

test('a 410 cancels the task and a 400 fails it, each announced once', async () => {
  for (const [status, expected] of [[410, 'cancelled'], [400, 'failed']] as const) {
    const { sender, events } = setup(() => ({ status }))
    const task = await createCallbackTask({ callbackUrl, event: 'e' }, sender)
    const report = await deliver(task.id, {}, sender)
    assert.equal(report.status, expected)
    assert.equal((await sender.store.get(task.id))?.status, expected)
    assert.deepEqual(events.map((event) => event.type), ['attempt', expected])
  }
})

test('a listener that throws or rejects does not change the outcome of a delivery', async () => {
  const { sender } = setup(() => ({ status: 204 }), {
    onEvent: (event) => {
      if (event.type === 'attempt') throw new Error('metrics backend is down')
      return Promise.reject(new Error('async listener failed')) as never
    },
  })
  const task = await createCallbackTask({ callbackUrl, event: 'e' }, sender)
  assert.equal((await deliver(task.id, {}, sender)).status, 'delivered')
})

test('no secret reaches the attempt records, the task\'s last error or the events', async () => {
  const { sender, events, secret } = setup(() => {
    throw new DeliveryError('ERR_CALLBACK_CONNECTION', 'socket hang up')
  })
  const own = generateSecret()
  const task = await createCallbackTask({ callbackUrl, event: 'e', secret: own }, sender)
  await deliver(task.id, {}, sender)
  const seen = JSON.stringify({ attempts: await sender.store.attempts(task.id), lastError: (await sender.store.get(task.id))?.lastError, events })
  assert.equal(events.length, 2)
  for (const key of [secret, own]) assert.ok(!seen.includes(key.slice('whsec_'.length)))
})
