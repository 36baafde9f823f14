/**
 * One client's endpoint never holds up another's callbacks: per-destination caps, throttling from
 * `Retry-After` and the circuit breaker, against real endpoints on 127.0.0.1.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { setTimeout as sleep } from 'node:timers/promises'
import { createCallbackTask, createHttpTransport, createMemoryStore, createWorker, generateSecret } from 'endpoint-callback'
import type { DeliveryEvent, SenderOptions, Worker } from 'endpoint-callback'
import { startEndpoint, tarpit, trickle } from '../support/hostile-endpoints.ts'
import { createTestClock } from '../support/sender.ts'

const urlPolicy = { allowHttp: true, allowHosts: ['127.0.0.1'] }

async function until(what: string, condition: () => boolean | Promise<boolean>, ms = 10_000): Promise<void> {
  const end = Date.now() + ms
  while (!(await condition())) {
    if (Date.now() > end) throw new Error(`timed out waiting until ${what}`)
    await sleep(10)
  }
}

/** Records `count` tasks to `url` and makes them due now, as tasks waiting for a worker are. */
async function enqueue(sender: SenderOptions, url: string, count: number): Promise<string[]> {
  const ids: string[] = []
  const now = sender.now?.() ?? new Date()
  for (let i = 0; i < count; i++) {
    const task = await createCallbackTask({ callbackUrl: url, event: 'job.done' }, sender)
    const lease = await sender.store.attach(task.id, { body: JSON.stringify({ type: 'job.done', data: i }) }, { now, leaseMs: 1 })
    assert.ok(lease)
    assert.ok(await sender.store.release(lease))
    ids.push(task.id)
  }
  return ids
}

test('endpoints that never answer or trickle do not delay a healthy endpoint, and never hold more than their cap of slots', async (t) => {
  const dead = await startEndpoint(tarpit)
  const slow = await startEndpoint(trickle)
  const arrivals: number[] = []
  const healthy = await startEndpoint((_request, response) => {
    arrivals.push(performance.now())
    response.writeHead(204).end()
  })
  const transport = createHttpTransport({ urlPolicy, timeoutMs: 2_000 })
  const sender: SenderOptions = { store: createMemoryStore(), secret: generateSecret(), urlPolicy, transport, leaseMs: 10_000 }
  let worker: Worker | undefined
  t.after(async () => {
    await worker?.stop()
    await transport.close()
    await Promise.all([dead.close(), slow.close(), healthy.close()])
  })

  // The bad endpoints' tasks are due first: a shared queue would serve them first.
  await enqueue(sender, dead.url, 30)
  await enqueue(sender, slow.url, 30)
  const healthyIds = await enqueue(sender, healthy.url, 10)
  const started = performance.now()
  worker = createWorker({ ...sender, pollIntervalMs: 50 })
  worker.start()

  await until('the healthy endpoint got its ten callbacks', () => arrivals.length === 10)
  const lateness = Math.max(...arrivals) - started
  assert.ok(lateness < 1_500, `the last healthy callback arrived ${Math.round(lateness)} ms after the start (a 2 s timeout blocks for longer)`)
  // The record is written just after the answer arrives: give it a moment.
  await until('the healthy tasks are recorded as delivered', async () => {
    const tasks = await Promise.all(healthyIds.map((id) => sender.store.get(id)))
    return tasks.every((task) => task?.status === 'delivered')
  }, 2_000)
  // Default perDestination with concurrency 10 is 2: the rest of each backlog waits in the store.
  assert.ok(dead.maxOpen <= 2, `the tarpit held ${dead.maxOpen} requests at once`)
  assert.ok(slow.maxOpen <= 2, `the trickling endpoint held ${slow.maxOpen} requests at once`)
  assert.ok(worker.active <= 4, `${worker.active} attempts in flight: only the capped ones may be`)
})

test("a 429 with Retry-After holds the destination's other tasks back until then, without spending their attempts", async (t) => {
  const clock = createTestClock()
  let throttled = true
  const endpoint = await startEndpoint((_request, response) => {
    if (throttled) response.writeHead(429, { 'retry-after': '120' }).end()
    else response.writeHead(204).end()
  })
  const transport = createHttpTransport({ urlPolicy, timeoutMs: 2_000 })
  const events: DeliveryEvent[] = []
  const sender: SenderOptions = {
    store: createMemoryStore(),
    secret: generateSecret(),
    urlPolicy,
    transport,
    now: clock.now,
    retry: { jitter: 0 },
    onEvent: (event) => events.push(event),
  }
  const worker = createWorker({ ...sender, pollIntervalMs: 20, perDestination: 1 })
  t.after(async () => {
    await worker.stop()
    await transport.close()
    await endpoint.close()
  })
  const ids = await enqueue(sender, endpoint.url, 5)
  worker.start()

  await until('the destination is throttled', () => events.some((event) => event.type === 'destination-throttled'))
  const throttle = events.find((event) => event.type === 'destination-throttled')!
  assert.equal(throttle.type === 'destination-throttled' && throttle.until.getTime(), clock.now().getTime() + 120_000)
  await sleep(300)
  assert.equal(endpoint.received, 1, 'only the first task was sent while the destination asked to wait')
  const attempts = await Promise.all(ids.map(async (id) => (await sender.store.get(id))!.attempts))
  assert.deepEqual(attempts.sort(), [0, 0, 0, 0, 1])

  throttled = false
  clock.advance(119_000)
  worker.wake()
  await sleep(300)
  assert.equal(endpoint.received, 1, 'nothing is sent before Retry-After has passed')
  clock.advance(1_000)
  worker.wake()
  await until('every task is delivered', async () => {
    const tasks = await Promise.all(ids.map((id) => sender.store.get(id)))
    return tasks.every((task) => task?.status === 'delivered')
  })
  const final = await Promise.all(ids.map(async (id) => (await sender.store.get(id))!.attempts))
  assert.deepEqual(final.sort(), [1, 1, 1, 1, 2], 'the deferred tasks spent one attempt each: the one that delivered')
})

test('the circuit breaker opens on a burst of 503s, sends a single probe after each cool-down, and closes on the first success', async (t) => {
  const clock = createTestClock()
  let failing = true
  const endpoint = await startEndpoint((_request, response) => {
    response.writeHead(failing ? 503 : 204).end()
  })
  const transport = createHttpTransport({ urlPolicy, timeoutMs: 2_000 })
  const events: DeliveryEvent[] = []
  const sender: SenderOptions = {
    store: createMemoryStore(),
    secret: generateSecret(),
    urlPolicy,
    transport,
    now: clock.now,
    retry: { jitter: 0, schedule: [3_600_000, 3_600_000] },
    onEvent: (event) => events.push(event),
  }
  const worker = createWorker({ ...sender, pollIntervalMs: 20, perDestination: 1, breaker: { failures: 3, cooldownMs: 30_000 } })
  t.after(async () => {
    await worker.stop()
    await transport.close()
    await endpoint.close()
  })
  const ids = await enqueue(sender, endpoint.url, 10)
  const of = (type: DeliveryEvent['type']) => events.filter((event) => event.type === type)
  worker.start()

  await until('the breaker opens', () => of('destination-unhealthy').length === 1)
  const opened = of('destination-unhealthy')[0]!
  assert.ok(opened.type === 'destination-unhealthy')
  assert.equal(opened.destination, new URL(endpoint.url).origin)
  assert.equal(opened.reason, 'HTTP 503')
  assert.equal(opened.until.getTime(), clock.now().getTime() + 30_000)
  await sleep(300)
  assert.equal(endpoint.received, 3, 'nothing is sent while the breaker is open')
  let spent = await Promise.all(ids.map(async (id) => (await sender.store.get(id))!.attempts))
  assert.equal(spent.filter((n) => n === 0).length, 7, 'the deferred tasks spent no attempt')

  clock.advance(30_000)
  worker.wake()
  await until('a probe fails and the breaker opens again', () => of('destination-unhealthy').length === 2)
  const reopened = of('destination-unhealthy')[1]!
  assert.ok(reopened.type === 'destination-unhealthy')
  assert.equal(reopened.until.getTime(), clock.now().getTime() + 60_000, 'the cool-down doubles after a failed probe')
  await sleep(200)
  assert.equal(endpoint.received, 4, 'a single probe')

  failing = false
  clock.advance(60_000)
  worker.wake()
  await until('the breaker closes', () => of('destination-recovered').length === 1)
  await until('the waiting tasks are delivered', async () => {
    const tasks = await Promise.all(ids.map((id) => sender.store.get(id)))
    return tasks.filter((task) => task?.status === 'delivered').length === 6
  })
  spent = await Promise.all(ids.map(async (id) => (await sender.store.get(id))!.attempts))
  // 3 tasks failed before it opened and 1 probe failed (each waits for its retry in an hour); the
  // other 6 were deferred for free and delivered at their first attempt.
  assert.deepEqual(spent, [1, 1, 1, 1, 1, 1, 1, 1, 1, 1])
})

test('a task whose deadline passed while its destination was held fails without being sent', async (t) => {
  const clock = createTestClock()
  const endpoint = await startEndpoint((_request, response) => response.writeHead(503).end())
  const transport = createHttpTransport({ urlPolicy, timeoutMs: 2_000 })
  const sender: SenderOptions = { store: createMemoryStore(), secret: generateSecret(), urlPolicy, transport, now: clock.now, retry: { deadlineMs: 60_000 } }
  const worker = createWorker({ ...sender, pollIntervalMs: 20, perDestination: 1, breaker: { failures: 1, cooldownMs: 600_000 } })
  t.after(async () => {
    await worker.stop()
    await transport.close()
    await endpoint.close()
  })
  const ids = await enqueue(sender, endpoint.url, 3)
  worker.start()
  await until('one attempt was made', () => endpoint.received === 1)
  await sleep(200)
  clock.advance(61_000)
  worker.wake()
  await until('every task failed', async () => {
    const tasks = await Promise.all(ids.map((id) => sender.store.get(id)))
    return tasks.every((task) => task?.status === 'failed')
  })
  assert.equal(endpoint.received, 1, 'the breaker stayed open: the deadline ended the others unsent')
})

test('a destination that answers fast may use the free slots; one that hangs stays at its cap', async (t) => {
  const quick = await startEndpoint((_request, response) => {
    setTimeout(() => response.writeHead(204).end(), 30)
  })
  const dead = await startEndpoint(tarpit)
  const transport = createHttpTransport({ urlPolicy, timeoutMs: 3_000 })
  const sender: SenderOptions = { store: createMemoryStore(), secret: generateSecret(), urlPolicy, transport, leaseMs: 10_000 }
  const worker = createWorker({ ...sender, pollIntervalMs: 50, concurrency: 10, perDestination: 2 })
  t.after(async () => {
    await worker.stop()
    await transport.close()
    await Promise.all([quick.close(), dead.close()])
  })
  await enqueue(sender, dead.url, 20)
  const ids = await enqueue(sender, quick.url, 60)
  worker.start()
  await until('the fast destination got its callbacks', async () => {
    const tasks = await Promise.all(ids.map((id) => sender.store.get(id)))
    return tasks.every((task) => task?.status === 'delivered')
  })
  // 10 slots, 2 of them held by the tarpit: the fast destination may use the other 8.
  assert.ok(quick.maxOpen > 5 && quick.maxOpen <= 8, `the fast destination had ${quick.maxOpen} requests at once (5 < n <= 8)`)
  assert.ok(dead.maxOpen <= 2, `the tarpit held ${dead.maxOpen} requests at once`)
})

test('a destination that answers fast with 5xx is still fast: its retries do not cap it to perDestination', async (t) => {
  // Every task's first attempt is answered 503 at once (no Retry-After), its retry 204: a busy,
  // quick receiver having a bad moment. It holds no slot for long, so it is not capped; capping it
  // made every claim look past its whole backlog of due tasks.
  const seen = new Set<string>()
  const flaky = await startEndpoint((request, response) => {
    const id = String(request.headers['webhook-id'])
    const first = !seen.has(id)
    seen.add(id)
    setTimeout(() => response.writeHead(first ? 503 : 204).end(), 30)
  })
  const transport = createHttpTransport({ urlPolicy, timeoutMs: 3_000 })
  const sender: SenderOptions = { store: createMemoryStore(), secret: generateSecret(), urlPolicy, transport, leaseMs: 10_000, retry: { schedule: [1_000], jitter: 0 } }
  const worker = createWorker({ ...sender, pollIntervalMs: 50, concurrency: 10, perDestination: 2, breaker: false })
  t.after(async () => {
    await worker.stop()
    await transport.close()
    await flaky.close()
  })
  const ids = await enqueue(sender, flaky.url, 60)
  worker.start()
  await until('every first attempt was answered', () => seen.size === ids.length)
  // only 503s so far: the retries are due a second after
  const openDuringFailures = flaky.maxOpen
  await until('every callback was delivered on its retry', async () => {
    const tasks = await Promise.all(ids.map((id) => sender.store.get(id)))
    return tasks.every((task) => task?.status === 'delivered')
  })
  assert.ok(openDuringFailures > 5, `while it answered 503, the quick destination had at most ${openDuringFailures} requests at once: capped to perDestination`)
})
