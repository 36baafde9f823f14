/**
 * deliver and the worker against real HTTP receivers on 127.0.0.1, through the default undici
 * transport: what the receiver sees, what the task records, and when the next attempt is due.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { setTimeout as sleep } from 'node:timers/promises'
import { Webhook } from 'standardwebhooks'
import { createCallbackTask, createHttpTransport, createMemoryStore, createWorker, deliver, generateSecret } from 'endpoint-callback'
import type { DeliveryEvent, SenderOptions, Transport } from 'endpoint-callback'
import { answer, startReceiver } from '../support/callback-receiver.ts'
import type { ReceiverScript, TestReceiver } from '../support/callback-receiver.ts'
import { createTestClock } from '../support/sender.ts'
import { within } from '../support/waits.ts'

// Loopback over plain http is refused by default; these tests opt in explicitly.
const urlPolicy = { allowHttp: true, allowHosts: ['127.0.0.1'] }

interface Setup {
  receiver: TestReceiver
  sender: SenderOptions
  clock: ReturnType<typeof createTestClock>
  secret: string
  events: DeliveryEvent[]
  [Symbol.asyncDispose](): Promise<void>
}

async function setup(script: ReceiverScript, options: { transport?: Transport; schedule?: number[] } = {}): Promise<Setup> {
  const receiver = await startReceiver(script)
  // Starts at the real time, so the standardwebhooks package (which reads the real clock) accepts
  // the timestamps; moves only when a test moves it.
  const clock = createTestClock(new Date())
  const secret = generateSecret()
  const events: DeliveryEvent[] = []
  const transport = options.transport ?? createHttpTransport({ urlPolicy })
  const sender: SenderOptions = {
    store: createMemoryStore(),
    secret,
    urlPolicy,
    transport,
    now: clock.now,
    retry: { jitter: 0, ...(options.schedule === undefined ? {} : { schedule: options.schedule }) },
    onEvent: (event) => events.push(event),
  }
  return {
    receiver,
    sender,
    clock,
    secret,
    events,
    async [Symbol.asyncDispose]() {
      await transport.close?.()
      await receiver.close()
    },
  }
}

async function until(condition: () => boolean | Promise<boolean>, ms = 5_000): Promise<void> {
  const end = Date.now() + ms
  while (!(await condition())) {
    if (Date.now() > end) throw new Error(`not within ${ms} ms: ${String(condition)}`)
    await sleep(5)
  }
}

test('a receiver answering 200 gets one signed POST that the standardwebhooks package verifies', async () => {
  await using s = await setup((_request, response) => answer(response, 200, 'thanks'))
  const task = await createCallbackTask({ callbackUrl: s.receiver.url, event: 'report.ready' }, s.sender)
  const report = await deliver(task.id, { reportId: 42 }, s.sender)

  assert.deepEqual({ status: report.status, attempts: report.attempts, code: report.response?.status, body: report.response?.body }, {
    status: 'delivered',
    attempts: 1,
    code: 200,
    body: 'thanks',
  })
  const [seen] = s.receiver.received
  assert.equal(seen!.method, 'POST')
  assert.equal(seen!.path, '/callbacks')
  assert.equal(seen!.headers['content-type'], 'application/json')
  assert.match(seen!.headers['user-agent']!, /^endpoint-callback\/\d+\.\d+\.\d+/)
  assert.equal(seen!.headers['webhook-id'], task.id)
  const verified = new Webhook(s.secret).verify(seen!.body, seen!.headers as Record<string, string>) as Record<string, unknown>
  assert.deepEqual(verified, { type: 'report.ready', timestamp: s.clock.now().toISOString(), data: { reportId: 42 } })
  const stored = await s.sender.store.get(task.id)
  assert.equal(stored?.status, 'delivered')
  const [attempt] = await s.sender.store.attempts(task.id)
  assert.deepEqual({ status: attempt?.status, outcome: attempt?.outcome, body: attempt?.responseBody }, { status: 200, outcome: 'delivered', body: 'thanks' })
  assert.ok(Number.isFinite(attempt!.durationMs) && attempt!.durationMs > 0, `the attempt's durationMs is ${attempt!.durationMs}`)
})

test('a receiver answering 500 then 200 gets the same webhook-id and body twice, 5 s apart by the schedule', async () => {
  await using s = await setup((_request, response, index) => answer(response, index === 0 ? 500 : 200))
  const task = await createCallbackTask({ callbackUrl: s.receiver.url, event: 'report.ready' }, s.sender)
  const start = s.clock.now().getTime()
  const first = await deliver(task.id, { reportId: 7 }, s.sender)
  assert.equal(first.status, 'retrying')
  assert.equal(first.nextAttemptAt?.getTime(), start + 5_000)
  assert.equal((await s.sender.store.get(task.id))?.status, 'scheduled')

  const worker = createWorker({ ...s.sender, pollIntervalMs: 10 })
  worker.start()
  try {
    s.clock.advance(4_999)
    await sleep(80)
    assert.equal(s.receiver.received.length, 1, 'not sent again before it is due')
    s.clock.advance(1)
    await until(async () => (await s.sender.store.get(task.id))?.status === 'delivered')
  } finally {
    await within(worker.stop(), 'stop() did not resolve')
  }

  const [a, b] = s.receiver.received
  assert.equal(s.receiver.received.length, 2)
  assert.equal(a!.headers['webhook-id'], task.id)
  assert.equal(b!.headers['webhook-id'], task.id)
  assert.equal(a!.body, b!.body, 'the body is built once and sent byte for byte')
  assert.equal(Number(b!.headers['webhook-timestamp']) - Number(a!.headers['webhook-timestamp']), 5, 'each attempt is signed with its own time')
  for (const seen of [a!, b!]) new Webhook(s.secret).verify(seen.body, seen.headers as Record<string, string>)
  const history = await s.sender.store.attempts(task.id)
  assert.deepEqual(history.map((attempt) => [attempt.attempt, attempt.status, attempt.outcome]), [[1, 500, 'retry'], [2, 200, 'delivered']])
  assert.equal(history[1]!.startedAt.getTime(), start + 5_000)
  assert.deepEqual(s.events.map((event) => event.type), ['attempt', 'retry-scheduled', 'attempt', 'delivered'])
})

test('a receiver answering 410 Gone cancels the task and is never called again', async () => {
  await using s = await setup((_request, response) => answer(response, 410))
  const task = await createCallbackTask({ callbackUrl: s.receiver.url, event: 'e' }, s.sender)
  const report = await deliver(task.id, {}, s.sender)
  assert.equal(report.status, 'cancelled')
  assert.equal((await s.sender.store.get(task.id))?.status, 'cancelled')
  assert.equal((await s.sender.store.claim({ now: new Date(s.clock.now().getTime() + 86_400_000), limit: 10, leaseMs: 60_000 })).length, 0)
})

test('a receiver answering 400 is retried by default, and fails the task at once when 400 is in retry.failStatuses, keeping what it said', async () => {
  await using s = await setup((_request, response) => answer(response, 400, '{"error":"unknown job"}'))
  const retried = await createCallbackTask({ callbackUrl: s.receiver.url, event: 'e' }, s.sender)
  assert.equal((await deliver(retried.id, {}, s.sender)).status, 'retrying')
  const strict = { ...s.sender, retry: { jitter: 0, failStatuses: [400] } }
  const task = await createCallbackTask({ callbackUrl: s.receiver.url, event: 'e' }, strict)
  const report = await deliver(task.id, {}, strict)
  assert.equal(report.status, 'failed')
  assert.equal(report.nextAttemptAt, undefined)
  const stored = await s.sender.store.get(task.id)
  assert.deepEqual({ status: stored?.status, lastError: stored?.lastError }, { status: 'failed', lastError: 'HTTP 400' })
  assert.equal((await s.sender.store.attempts(task.id))[0]?.responseBody, '{"error":"unknown job"}')
})

test('a receiver answering 302 is retried on the schedule and the redirect is not followed', async () => {
  await using elsewhere = await setup((_request, response) => answer(response, 200))
  await using s = await setup((_request, response) => answer(response, 302, '', { location: elsewhere.receiver.url }))
  const task = await createCallbackTask({ callbackUrl: s.receiver.url, event: 'e' }, s.sender)
  const report = await deliver(task.id, {}, s.sender)
  assert.equal(report.status, 'retrying')
  assert.match(report.error!, /HTTP 302/)
  assert.equal(elsewhere.receiver.received.length, 0)
  assert.equal(s.receiver.received.length, 1)
})

test('a 429 with Retry-After puts the next attempt at the hint when it is later than the schedule', async () => {
  await using s = await setup((_request, response, index) => answer(response, index === 0 ? 429 : 204, '', index === 0 ? { 'retry-after': '120' } : {}))
  const task = await createCallbackTask({ callbackUrl: s.receiver.url, event: 'e' }, s.sender)
  const start = s.clock.now().getTime()
  const report = await deliver(task.id, {}, s.sender)
  assert.equal(report.status, 'retrying')
  assert.equal(report.nextAttemptAt?.getTime(), start + 120_000)

  const worker = createWorker({ ...s.sender, pollIntervalMs: 10 })
  worker.start()
  try {
    s.clock.advance(60_000) // past the 5 s schedule, not past the hint
    await sleep(80)
    assert.equal(s.receiver.received.length, 1)
    s.clock.advance(60_000)
    await until(async () => (await s.sender.store.get(task.id))?.status === 'delivered')
  } finally {
    await within(worker.stop(), 'stop() did not resolve')
  }
  assert.equal(s.receiver.received[1]!.headers['webhook-id'], task.id)
})

test('a receiver that hangs is cut off by the transport timeout and the task is retried later', async () => {
  const transport = createHttpTransport({ urlPolicy, timeoutMs: 300 })
  await using s = await setup(() => {}, { transport })
  const task = await createCallbackTask({ callbackUrl: s.receiver.url, event: 'e' }, s.sender)
  const start = s.clock.now().getTime()
  const report = await within(deliver(task.id, {}, s.sender), 'the 300 ms transport timeout did not end the attempt', 10_000)
  assert.equal(report.status, 'retrying')
  assert.equal(report.nextAttemptAt?.getTime(), start + 5_000)
  assert.equal(s.receiver.received.length, 1, 'a timeout is not retried inside the attempt')
  const [attempt] = await s.sender.store.attempts(task.id)
  assert.match(attempt!.error!, /^ERR_CALLBACK_TIMEOUT: /)
  assert.equal(attempt!.status, undefined)
  assert.ok(attempt!.durationMs >= 250, `took ${attempt!.durationMs} ms`)
})

test('a receiver that closes the socket is retried quickly inside the attempt, then scheduled', async () => {
  await using s = await setup((_request, _response, _index, raw) => raw.socket.destroy())
  const task = await createCallbackTask({ callbackUrl: s.receiver.url, event: 'e' }, s.sender)
  const report = await deliver(task.id, {}, s.sender)
  assert.equal(report.status, 'retrying')
  assert.equal(report.attempts, 1)
  assert.equal(s.receiver.received.length, 3, 'one try and two quick retries')
  assert.equal(new Set(s.receiver.received.map((seen) => seen.headers['webhook-id'])).size, 1)
  const stored = await s.sender.store.get(task.id)
  assert.match(stored!.lastError!, /^ERR_CALLBACK_CONNECTION: /)
})

test('a receiver that comes back after closing the socket once gets the callback within the same attempt', async () => {
  await using s = await setup((_request, response, index, raw) => (index === 0 ? raw.socket.destroy() : answer(response, 204)))
  const task = await createCallbackTask({ callbackUrl: s.receiver.url, event: 'e' }, s.sender)
  const report = await deliver(task.id, {}, s.sender)
  assert.equal(report.status, 'delivered')
  assert.equal(report.attempts, 1)
  assert.equal(s.receiver.received.length, 2)
})

test('a task whose receivers keep failing fails after schedule.length + 1 attempts', async () => {
  await using s = await setup((_request, response) => answer(response, 503), { schedule: [1_000, 2_000] })
  const task = await createCallbackTask({ callbackUrl: s.receiver.url, event: 'e' }, s.sender)
  assert.equal((await deliver(task.id, {}, s.sender)).status, 'retrying')
  const worker = createWorker({ ...s.sender, pollIntervalMs: 10 })
  worker.start()
  try {
    s.clock.advance(1_000)
    // The second attempt is recorded (and its retry scheduled from the clock's time) before the clock moves on.
    await until(async () => (await s.sender.store.get(task.id))?.attempts === 2)
    s.clock.advance(2_000)
    await until(async () => (await s.sender.store.get(task.id))?.status === 'failed')
    s.clock.advance(3_600_000)
    await sleep(50)
  } finally {
    await within(worker.stop(), 'stop() did not resolve')
  }
  assert.equal(s.receiver.received.length, 3)
  const stored = await s.sender.store.get(task.id)
  assert.equal(stored?.attempts, 3)
  assert.match(stored!.lastError!, /HTTP 503 \(no attempts left after 3\)/)
  assert.equal(s.events.at(-1)?.type, 'failed')
})
