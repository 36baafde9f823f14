import { test } from 'node:test'
import assert from 'node:assert/strict'
import { setTimeout as sleep } from 'node:timers/promises'
import { CallbackError, createCallbackTask, createMemoryStore, createWorker, deliver, generateSecret, StoreError } from 'endpoint-callback'
import type { CallbackStore, DeliveryEvent, SenderOptions } from 'endpoint-callback'
import { createTestClock, createTestTransport } from '../support/sender.ts'
import { within } from '../support/waits.ts'

const callbackUrl = 'https://client.example.com/callbacks'

async function until(condition: () => boolean | Promise<boolean>, ms = 5_000, what = 'the condition'): Promise<void> {
  const end = Date.now() + ms
  while (!(await condition())) {
    if (Date.now() > end) throw new Error(`${what}: not met within ${ms} ms`)
    await sleep(5)
  }
}

test('the worker makes the retry once it is due by the injected clock, and not before', async () => {
  const clock = createTestClock()
  let calls = 0
  const transport = createTestTransport(() => ({ status: ++calls === 1 ? 500 : 204 }))
  const sender: SenderOptions = { store: createMemoryStore(), secret: generateSecret(), transport, now: clock.now, retry: { jitter: 0 } }
  const task = await createCallbackTask({ callbackUrl, event: 'e' }, sender)
  assert.equal((await deliver(task.id, {}, sender)).status, 'retrying')

  const worker = createWorker({ ...sender, pollIntervalMs: 10 })
  worker.start()
  try {
    await sleep(60)
    assert.equal(transport.requests.length, 1, 'nothing is sent before the retry is due')
    clock.advance(5_000)
    await until(async () => (await sender.store.get(task.id))?.status === 'delivered')
    assert.equal(transport.requests.length, 2)
    assert.equal(transport.requests[1]!.headers['webhook-id'], task.id)
    assert.equal(transport.requests[1]!.body, transport.requests[0]!.body)
  } finally {
    await within(worker.stop(), 'stop() did not resolve')
  }
})

test('store errors while claiming are reported as error events and the worker keeps going', async () => {
  const inner = createMemoryStore()
  let failing = 3
  const store: CallbackStore = {
    ...inner,
    claim(options) {
      if (failing-- > 0) return Promise.reject(new StoreError('ERR_CALLBACK_STORE', 'connection to the database lost'))
      return inner.claim(options)
    },
  }
  const clock = createTestClock()
  const events: DeliveryEvent[] = []
  let calls = 0
  const transport = createTestTransport(() => ({ status: ++calls === 1 ? 503 : 200 }))
  const sender = { store, secret: generateSecret(), transport, now: clock.now, retry: { jitter: 0 }, onEvent: (event: DeliveryEvent) => events.push(event) }
  const task = await createCallbackTask({ callbackUrl, event: 'e' }, sender)
  await deliver(task.id, {}, sender)
  clock.advance(5_000)
  const worker = createWorker({ ...sender, pollIntervalMs: 5 })
  worker.start()
  try {
    await until(async () => (await store.get(task.id))?.status === 'delivered')
    const errors = events.filter((event) => event.type === 'error')
    assert.equal(errors.length, 3)
    assert.ok(errors.every((event) => event.type === 'error' && event.error instanceof StoreError))
  } finally {
    await within(worker.stop(), 'stop() did not resolve')
  }
})

test('errors the store recovered from by itself reach onEvent while the worker runs, from start until stop has finished', async () => {
  const inner = createMemoryStore()
  const listeners = new Set<(error: Error) => void>()
  const report = (message: string) => listeners.forEach((listener) => listener(new StoreError('ERR_CALLBACK_STORE', message)))
  let completing: (() => void) | undefined
  const store: CallbackStore = {
    ...inner,
    subscribeErrors(listener) {
      listeners.add(listener)
      return () => listeners.delete(listener)
    },
    async complete(lease, attempt, resolution) {
      // the record is held back until the test lets it go, as by a store that is recovering
      await new Promise<void>((resolve) => (completing = resolve))
      return inner.complete(lease, attempt, resolution)
    },
  }
  const events: DeliveryEvent[] = []
  const sender = { store, secret: generateSecret(), transport: createTestTransport(() => ({ status: 200 })), onEvent: (event: DeliveryEvent) => events.push(event) }
  const task = await createCallbackTask({ callbackUrl, event: 'e' }, sender)
  await inner.schedule!(task.id, { body: '{}' }, { now: new Date() })
  report('before start')
  const worker = createWorker({ ...sender, pollIntervalMs: 5 })
  worker.start()
  assert.equal(listeners.size, 1, 'the worker subscribed on start')
  report('while running')
  await until(() => completing !== undefined, 5_000, 'the attempt was recording')
  const stopped = worker.stop()
  report('while the last record is written')
  completing!()
  await within(stopped, 'stop() did not resolve')
  assert.equal(listeners.size, 0, 'the worker unsubscribed once stopped')
  report('after stop')
  const reported = events.flatMap((event) => (event.type === 'error' ? [(event.error as Error).message] : []))
  assert.deepEqual(reported, ['while running', 'while the last record is written'])
  assert.equal((await inner.get(task.id))?.status, 'delivered')
})

test('stop waits for the attempts in flight and gives back tasks it claimed but had not started', async () => {
  const clock = createTestClock()
  const inner = createMemoryStore()
  let releaseClaim: () => void = () => {}
  let claims = 0
  const store: CallbackStore = {
    ...inner,
    async claim(options) {
      claims++
      const leases = await inner.claim(options)
      // The second claim is still on its way back when stop() is called.
      if (claims === 2) await new Promise<void>((resolve) => (releaseClaim = resolve))
      return leases
    },
  }
  let answer: () => void = () => {}
  const transport = createTestTransport((_request, index) =>
    index < 2 ? { status: 500 } : new Promise((resolve) => (answer = () => resolve({ status: 204 })))
  )
  const sender = { store, secret: generateSecret(), transport, now: clock.now, retry: { jitter: 0 } }
  const first = await createCallbackTask({ callbackUrl, event: 'e' }, sender)
  const second = await createCallbackTask({ callbackUrl, event: 'e' }, sender)
  await deliver(first.id, {}, sender)
  await deliver(second.id, {}, sender)
  clock.advance(5_000)

  const worker = createWorker({ ...sender, pollIntervalMs: 5, batchSize: 1, concurrency: 2 })
  worker.start()
  await until(() => transport.requests.length === 3 && claims === 2)
  const stopped = worker.stop()
  assert.equal(worker.running, false)
  assert.throws(() => worker.start(), (error: unknown) => {
    assert.ok(error instanceof CallbackError)
    assert.equal(error.code, 'ERR_CALLBACK_WORKER_STOPPING')
    return true
  }, 'no restart while stop() still waits')
  let done = false
  void stopped.then(() => (done = true))
  await sleep(20)
  assert.equal(done, false, 'stop waits for the attempt in flight')
  answer()
  releaseClaim()
  await within(stopped, 'stop() did not resolve once the attempt and the claim had ended')
  assert.equal(worker.active, 0)
  const states = [(await store.get(first.id))?.status, (await store.get(second.id))?.status].sort()
  assert.deepEqual(states, ['delivered', 'scheduled'])
  assert.equal(transport.requests.length, 3, 'the task given back was not sent')
  worker.start()
  assert.equal(worker.running, true, 'a stopped worker starts again')
  await within(worker.stop(), 'stop() did not resolve')
})

test('a worker whose lease ran out does not record over the new holder and only reports lease-lost', async () => {
  const clock = createTestClock()
  const store = createMemoryStore()
  let stall: () => void = () => {}
  const transport = createTestTransport((_request, index) => {
    if (index === 0) return { status: 500 }
    if (index === 1) return new Promise((resolve) => (stall = () => resolve({ status: 200, body: 'late' })))
    return { status: 204 }
  })
  const base = { store, secret: generateSecret(), transport, now: clock.now, retry: { jitter: 0 }, leaseMs: 1_000 }
  const task = await createCallbackTask({ callbackUrl, event: 'e' }, base)
  await deliver(task.id, {}, base)
  clock.advance(5_000)

  const slowEvents: DeliveryEvent[] = []
  const slow = createWorker({ ...base, pollIntervalMs: 5, onEvent: (event) => slowEvents.push(event) })
  slow.start()
  await until(() => transport.requests.length === 2)
  const stopping = slow.stop()

  clock.advance(1_001) // the slow worker's lease is over
  const fresh = createWorker({ ...base, pollIntervalMs: 5 })
  fresh.start()
  await until(async () => (await store.get(task.id))?.status === 'delivered')
  await within(fresh.stop(), 'stop() did not resolve')

  stall()
  await within(stopping, 'the slow worker did not stop once its attempt ended')
  assert.deepEqual(slowEvents.map((event) => event.type), ['lease-lost'])
  const history = await store.attempts(task.id)
  assert.deepEqual(history.map((attempt) => attempt.status), [500, 204])
  assert.equal((await store.get(task.id))?.status, 'delivered')
})

test('leaseMs must exceed the transport timeout, and bad worker options are TypeErrors naming them', () => {
  const store = createMemoryStore()
  const secret = generateSecret()
  assert.throws(() => createWorker({ store, secret, leaseMs: 10_000 }), /leaseMs \(10000\) must exceed the transport timeout \(10000 ms\)/)
  const transport = createTestTransport(() => ({ status: 204 }), { timeoutMs: 30_000 })
  assert.throws(() => createWorker({ store, secret, transport, leaseMs: 20_000 }), /leaseMs/)
  assert.throws(() => createWorker({ store, secret, concurrency: 0 }), /concurrency/)
  assert.throws(() => createWorker({ store, secret, pollIntervalMs: -1 }), /pollIntervalMs/)
  assert.throws(() => createWorker({ store, secret, batchSize: 1.5 }), /batchSize/)
  assert.throws(() => createWorker({ store: {} as never, secret }), /store\.insert/)
})

test('attempts in flight never exceed concurrency: 10 due tasks, a transport that hangs, concurrency 2, exactly 2 sends', async () => {
  const clock = createTestClock()
  const store = createMemoryStore()
  const hanging: Array<() => void> = []
  let calls = 0
  const transport = createTestTransport(() =>
    ++calls <= 10 ? { status: 503 } : new Promise((resolve) => hanging.push(() => resolve({ status: 204 })))
  )
  // the 503s are staged: ten in a row are not to open the destination's breaker
  const sender = { store, secret: generateSecret(), transport, now: clock.now, retry: { jitter: 0 }, breaker: false as const }
  for (let i = 0; i < 10; i++) {
    const task = await createCallbackTask({ callbackUrl, event: 'e' }, sender)
    await deliver(task.id, {}, sender)
  }
  clock.advance(5_000)
  const worker = createWorker({ ...sender, pollIntervalMs: 5, batchSize: 10, concurrency: 2 })
  worker.start()
  try {
    await until(() => transport.requests.length >= 12, 5_000, `2 sends in flight (saw ${transport.requests.length - 10})`)
    // every poll in between would claim again if the worker ignored its limit
    await sleep(200)
    assert.equal(transport.requests.length - 10, 2, 'sends started while 2 hung, with concurrency 2')
    assert.equal(worker.active, 2)
    assert.equal(await store.countDue!(clock.now()), 8, 'the 8 others were left due, not claimed')
  } finally {
    const stopped = worker.stop()
    for (const answer of hanging.splice(0)) answer()
    await within(stopped, 'stop() did not resolve once the hanging sends were answered')
  }
})

test('stop() resolves only once the attempt in flight has ended and is recorded', async () => {
  const clock = createTestClock()
  const store = createMemoryStore()
  let answer: () => void = () => {}
  const transport = createTestTransport((_request, index) =>
    index === 0 ? { status: 503 } : new Promise((resolve) => (answer = () => resolve({ status: 204 })))
  )
  const sender = { store, secret: generateSecret(), transport, now: clock.now, retry: { jitter: 0 } }
  const task = await createCallbackTask({ callbackUrl, event: 'e' }, sender)
  await deliver(task.id, {}, sender)
  clock.advance(5_000)
  const worker = createWorker({ ...sender, pollIntervalMs: 5 })
  worker.start()
  await until(() => transport.requests.length === 2, 5_000, 'the retry was never sent')
  let stopped = false
  const stopping = worker.stop().then(() => (stopped = true))
  await sleep(100)
  assert.equal(stopped, false, 'stop() resolved while the attempt was still in flight')
  answer()
  await within(stopping, 'stop() did not resolve once the attempt ended')
  assert.equal(worker.active, 0)
  assert.equal((await store.get(task.id))?.status, 'delivered', 'stop() resolved before the attempt was recorded')
})

test('a stale completion arriving while the newer holder is still sending is refused, and the newer holder records its own', async () => {
  const clock = createTestClock()
  const store = createMemoryStore()
  let stallStale: () => void = () => {}
  let stallCurrent: () => void = () => {}
  const transport = createTestTransport((_request, index) => {
    if (index === 0) return { status: 500 }
    if (index === 1) return new Promise((resolve) => (stallStale = () => resolve({ status: 200, body: 'late' })))
    return new Promise((resolve) => (stallCurrent = () => resolve({ status: 204 })))
  })
  const base = { store, secret: generateSecret(), transport, now: clock.now, retry: { jitter: 0 }, leaseMs: 1_000 }
  const task = await createCallbackTask({ callbackUrl, event: 'e' }, base)
  await deliver(task.id, {}, base)
  clock.advance(5_000)

  const staleEvents: DeliveryEvent[] = []
  const stale = createWorker({ ...base, pollIntervalMs: 5, onEvent: (event) => staleEvents.push(event) })
  stale.start()
  await until(() => transport.requests.length === 2, 5_000, 'the first worker never sent the retry')
  const stopping = stale.stop()
  clock.advance(1_001) // the first worker's lease is over
  const current = createWorker({ ...base, pollIntervalMs: 5 })
  current.start()
  try {
    await until(() => transport.requests.length === 3, 5_000, 'the second worker never claimed the expired task')
    // the first worker's answer comes in now, while the second is still waiting for its own
    stallStale()
    await within(stopping, 'the first worker did not stop once its attempt ended')
    assert.deepEqual(staleEvents.map((event) => event.type), ['lease-lost'])
    const meanwhile = await store.get(task.id)
    assert.equal(meanwhile?.status, 'delivering', 'the stale completion was recorded over the newer holder')
    assert.equal(meanwhile?.attempts, 1)
    stallCurrent()
    await until(async () => (await store.get(task.id))?.status === 'delivered', 5_000, 'the newer holder never recorded its delivery')
    assert.deepEqual((await store.attempts(task.id)).map((attempt) => attempt.status), [500, 204])
  } finally {
    stallCurrent()
    await within(current.stop(), 'stop() did not resolve')
  }
})
