import { test } from 'node:test'
import assert from 'node:assert/strict'
import {
  CallbackError,
  createCallbackTask,
  createKeyRing,
  createMemoryStore,
  decryptCallback,
  deliver,
  DeliveryError,
  generateEncryptionKey,
  generateSecret,
  generateSigningKey,
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

test('an unknown task is a TaskError with its code, and a bad task argument a TypeError', async () => {
  const { sender } = setup(() => ({ status: 204 }))
  await assert.rejects(deliver('msg_nope', {}, sender), (error: unknown) => error instanceof TaskError && error.code === 'ERR_CALLBACK_TASK_NOT_FOUND')
  await assert.rejects(deliver(42 as never, {}, sender), TypeError)
})

test('deliver called again for a task that has its result sends nothing and answers the current report', async () => {
  const { sender, transport } = setup((_request, index) => ({ status: index === 0 ? 503 : 204 }), { retry: { jitter: 0, schedule: [5_000] } })
  const task = await createCallbackTask({ callbackUrl, event: 'e' }, sender)
  const first = await deliver(task.id, { n: 1 }, sender)
  assert.equal(first.status, 'retrying')
  // a replayed request: the same task, another payload; nothing is sent, nothing throws after a 202
  const again = await deliver(task, { n: 2 }, sender)
  assert.deepEqual(again, { status: 'retrying', attempts: 1, nextAttemptAt: first.nextAttemptAt, error: 'HTTP 503' })
  assert.equal(transport.requests.length, 1)
  assert.deepEqual(JSON.parse((await sender.store.get(task.id))!.body!).data, { n: 1 }, 'the first payload stands')
})

test('deliver called again after delivery answers delivered', async () => {
  const { sender, transport } = setup(() => ({ status: 204 }))
  const task = await createCallbackTask({ callbackUrl, event: 'e' }, sender)
  await deliver(task.id, {}, sender)
  assert.deepEqual(await deliver(task.id, {}, sender), { status: 'delivered', attempts: 1 })
  assert.equal(transport.requests.length, 1)
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

test('a 401 or 404 is retried on the schedule, not failed at the first attempt', async () => {
  for (const status of [401, 403, 404, 409, 422]) {
    const { sender, events } = setup(() => ({ status }))
    const task = await createCallbackTask({ callbackUrl, event: 'e' }, sender)
    const report = await deliver(task.id, {}, sender)
    assert.equal(report.status, 'retrying', String(status))
    assert.deepEqual(events.map((event) => event.type), ['attempt', 'retry-scheduled'])
  }
})

test('a 410 cancels the task and a status listed in retry.failStatuses fails it, each announced once', async () => {
  for (const [status, expected] of [[410, 'cancelled'], [400, 'failed']] as const) {
    const { sender, events } = setup(() => ({ status }), { retry: { jitter: 0, failStatuses: [400] } })
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

// ---- signing keys, encryption and intent ----------------------------------------------------

/** The setup's sender without its secret, so only its key ring can sign. */
function keyRingOnly<T extends { sender: SenderOptions }>(made: T): T {
  delete made.sender.secret
  return made
}

test("a task whose stored secret cannot be decoded fails at once, saying why without the secret, and nothing is sent", async () => {
  const { sender, transport, events } = setup(() => ({ status: 204 }))
  const badSecret = 'whsec_!!not-base64-but-still-private!!'
  const { task } = await sender.store.insert({ id: 'msg_badsecret', callbackUrl, event: 'report.ready', secret: badSecret, createdAt: new Date() })
  const report = await deliver(task.id, { ok: true }, sender)
  assert.equal(report.status, 'failed')
  assert.equal(transport.requests.length, 0)
  const stored = await sender.store.get(task.id)
  assert.equal(stored?.status, 'failed')
  assert.match(stored!.lastError!, /^ERR_CALLBACK_TASK_STATE: the task's secret cannot sign \(TypeError: secret is not valid base64/)
  const [attempt] = await sender.store.attempts(task.id)
  assert.equal(attempt?.outcome, 'failed')
  const everything = JSON.stringify({ report, stored: { ...stored, secret: undefined }, attempt, events })
  assert.ok(!everything.includes('not-base64-but-still-private'))
})

test('a key ring signs with the keys of the instant, so a delivery before and one after the switch use the old and the new key', async () => {
  const clock = createTestClock()
  const switchAt = new Date(clock.now().getTime() + 60_000)
  const old = generateSigningKey()
  const next = generateSigningKey()
  const keyRing = createKeyRing(
    [
      { signingKey: old.signingKey, notAfter: switchAt },
      { signingKey: next.signingKey, notBefore: switchAt },
    ],
    { now: clock.now }
  )
  const { sender, transport } = keyRingOnly(setup(() => ({ status: 204 }), { keyRing, now: clock.now }))
  const verifies = async (index: number, publicKey: string) =>
    verifySignature({ headers: transport.requests[index]!.headers, body: transport.requests[index]!.body }, { publicKey, now: clock.now }).then(
      () => true,
      () => false
    )

  await deliver(await createCallbackTask({ callbackUrl, event: 'report.ready' }, sender), { n: 1 }, sender)
  clock.advance(60_000)
  await deliver(await createCallbackTask({ callbackUrl, event: 'report.ready' }, sender), { n: 2 }, sender)
  assert.deepEqual(
    [await verifies(0, old.publicKey), await verifies(0, next.publicKey), await verifies(1, old.publicKey), await verifies(1, next.publicKey)],
    [true, false, false, true]
  )
  assert.match(transport.requests[1]!.headers['webhook-signature']!, /^v1a,[^ ]+$/)
})

test('a key ring with a gap between two keys retries the attempt instead of failing the task', async () => {
  const clock = createTestClock()
  const gapStart = new Date(clock.now().getTime() + 1_000)
  const keyRing = createKeyRing(
    [
      { signingKey: generateSigningKey().signingKey, notAfter: gapStart },
      { signingKey: generateSigningKey().signingKey, notBefore: new Date(gapStart.getTime() + 3_600_000) },
    ],
    { now: clock.now }
  )
  const { sender, transport } = keyRingOnly(setup(() => ({ status: 204 }), { keyRing, now: clock.now }))
  const task = await createCallbackTask({ callbackUrl, event: 'report.ready' }, sender)
  clock.advance(2_000)
  const report = await deliver(task, { ok: true }, sender)
  assert.equal(report.status, 'retrying')
  assert.equal(transport.requests.length, 0)
  assert.match(report.error!, /keyRing: no key of the ring signs at this instant/)
})

test('with an encryptionKey the body is sent and stored as a JWE, signed over the encrypted bytes', async () => {
  const { privateJwk, publicJwk } = await generateEncryptionKey()
  const { sender, transport, secret, clock } = setup(() => ({ status: 204 }))
  const task = await createCallbackTask({ callbackUrl, event: 'report.ready', encryptionKey: publicJwk }, sender)
  const report = await deliver(task, { account: 'acct_42', balance: 1234 }, sender)
  assert.equal(report.status, 'delivered')
  const [request] = transport.requests
  assert.equal(request!.headers['content-type'], 'application/jose')
  assert.equal(String(request!.body).split('.').length, 5)
  assert.ok(!String(request!.body).includes('acct_42'))
  const verified = await verifySignature({ headers: request!.headers, body: request!.body }, { secret, now: clock.now })
  const opened = await decryptCallback(verified, privateJwk)
  assert.deepEqual(opened.data, { account: 'acct_42', balance: 1234 })
  assert.equal(opened.type, 'report.ready')
  const stored = await sender.store.get(task.id)
  assert.equal(stored?.body, request!.body)
  assert.equal(stored?.contentType, 'application/jose')
})

test('a task attached without encryption is still encrypted on its attempt: the payload never leaves in the clear', async () => {
  const { publicJwk } = await generateEncryptionKey()
  const { sender, transport } = setup(() => ({ status: 204 }))
  const task = await createCallbackTask({ callbackUrl, event: 'report.ready', encryptionKey: publicJwk }, sender)
  // A caller passing only { id, event } skips the read that would have told deliver about the key.
  await deliver({ id: task.id, event: task.event } as typeof task, { card: '4242' }, sender)
  const [request] = transport.requests
  assert.equal(request!.headers['content-type'], 'application/jose')
  assert.ok(!String(request!.body).includes('4242'))
})

test('with verifyIntent the challenge is echoed first and signed like a callback, then the payload is sent', async () => {
  const { sender, transport, secret, clock } = setup(
    (request) => (request.headers['webhook-intent'] ? { status: 200, body: request.headers['webhook-intent'] } : { status: 204 }),
    { verifyIntent: true }
  )
  const task = await createCallbackTask({ callbackUrl, event: 'report.ready' }, sender)
  const report = await deliver(task, { ok: true }, sender)
  assert.equal(report.status, 'delivered')
  assert.equal(transport.requests.length, 2)
  const [challenge, payload] = transport.requests
  assert.match(challenge!.headers['webhook-id']!, /^intent_/)
  const verified = await verifySignature({ headers: challenge!.headers, body: challenge!.body }, { secret, now: clock.now })
  assert.equal(verified.type, 'webhook.intent')
  assert.equal(payload!.headers['webhook-id'], task.id)
})

test('an endpoint that does not echo the challenge is never sent the payload, and the task fails', async () => {
  const { sender, transport } = setup(() => ({ status: 204 }))
  const task = await createCallbackTask({ callbackUrl, event: 'report.ready', verifyIntent: true }, sender)
  const report = await deliver(task, { secretReport: 'do-not-leak' }, sender)
  assert.equal(report.status, 'failed')
  assert.equal(transport.requests.length, 1)
  assert.ok(transport.requests[0]!.headers['webhook-intent'])
  assert.ok(!String(transport.requests[0]!.body).includes('do-not-leak'))
  assert.match(report.error!, /^ERR_CALLBACK_INTENT_NOT_VERIFIED: client\.example\.com did not confirm/)
})

test('a challenge answered 503 with Retry-After is retried at the hinted time rather than failed, and 410 cancels', async () => {
  const { sender, transport, clock } = setup(() => ({ status: 503, headers: { 'retry-after': '120' } }), { verifyIntent: true })
  const report = await deliver(await createCallbackTask({ callbackUrl, event: 'report.ready' }, sender), {}, sender)
  assert.equal(report.status, 'retrying')
  assert.deepEqual(report.nextAttemptAt, new Date(clock.now().getTime() + 120_000))
  assert.equal(transport.requests.length, 1)

  const gone = setup(() => ({ status: 410 }), { verifyIntent: true })
  const cancelled = await deliver(await createCallbackTask({ callbackUrl, event: 'report.ready' }, gone.sender), {}, gone.sender)
  assert.equal(cancelled.status, 'cancelled')
})
