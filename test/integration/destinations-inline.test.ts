/**
 * `deliver`'s inline first attempt and destinations: a held destination gets no inline attempt
 * (the task waits for a worker, its attempt unspent), and an inline attempt's own outcome holds
 * its destination as a worker's would (a Retry-After throttles it; failures open its breaker).
 * On every store that keeps destinations, against real loopback endpoints, with a fixed clock.
 */
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { createCallbackTask, createHttpTransport, createMemoryStore, deliver, generateSecret } from 'endpoint-callback'
import type { CallbackStore, DeliveryEvent, SenderOptions } from 'endpoint-callback'
import { openDurableStore } from '../support/durable-stores.ts'
import { startEndpoint } from '../support/hostile-endpoints.ts'
import type { Handler } from '../support/hostile-endpoints.ts'
import { serviceSkip } from '../support/services.ts'

const urlPolicy = { allowHttp: true, allowHosts: ['127.0.0.1'] }
const t0 = Date.UTC(2030, 0, 1)

type Kind = 'memory' | 'postgres' | 'redis'

async function open(kind: Kind): Promise<{ store: CallbackStore; close(): Promise<void> }> {
  if (kind === 'memory') return { store: createMemoryStore(), close: async () => {} }
  const durable = await openDurableStore(kind)
  return { store: durable.store, close: () => durable.drop() }
}

async function setup(kind: Kind, t: { after(fn: () => Promise<void>): void }, handler: Handler, extra: Partial<SenderOptions> & { breaker?: unknown } = {}) {
  const endpoint = await startEndpoint(handler)
  const transport = createHttpTransport({ urlPolicy, timeoutMs: 2_000 })
  const opened = await open(kind)
  const events: DeliveryEvent[] = []
  let now = t0
  const sender = {
    store: opened.store,
    secret: generateSecret(),
    urlPolicy,
    transport,
    now: () => new Date(now),
    retry: { schedule: [60_000, 60_000, 60_000] },
    onEvent: (event: DeliveryEvent) => events.push(event),
    ...extra,
  } as SenderOptions
  t.after(async () => {
    await transport.close()
    await opened.close()
    await endpoint.close()
  })
  const newTask = () => createCallbackTask({ callbackUrl: endpoint.url, event: 'job.done' }, sender)
  return { endpoint, store: opened.store, sender, events, newTask, origin: new URL(endpoint.url).origin, advance: (ms: number) => (now += ms) }
}

for (const kind of ['memory', 'postgres', 'redis'] as Kind[]) {
  const skip = kind === 'memory' ? false : await serviceSkip(kind)
  describe(`deliver's inline attempt and destinations (${kind} store)`, { skip }, () => {
    it('sends nothing to a throttled or open destination: the task waits for a worker with its attempts unspent', async (t) => {
      const { endpoint, store, sender, newTask, origin } = await setup(kind, t, (_request, response) => response.writeHead(204).end())
      for (const state of ['throttled', 'open'] as const) {
        await store.setDestination!(origin, { state, until: new Date(t0 + 30_000), reason: 'HTTP 503', openings: state === 'open' ? 1 : 0 }, new Date(t0))
        const task = await newTask()
        const report = await deliver(task, { n: 1 }, sender)
        assert.equal(report.status, 'retrying', state)
        assert.equal(report.attempts, 0, state)
        assert.equal(endpoint.received, 0, `no inline attempt while ${state}`)
        const stored = await store.get(task.id)
        assert.equal(stored?.status, 'scheduled')
        assert.equal(stored?.attempts, 0)
        assert.ok(stored?.body?.includes('"n":1'), 'the result is attached')
        assert.equal(stored?.nextAttemptAt?.getTime(), t0, 'due at once, its place kept')
        // a worker takes it once the hold is over (here: lifted), not before
        const claimOptions = { now: new Date(t0 + 1), limit: 10, leaseMs: 60_000, perDestination: 2, inFlight: new Map() }
        assert.deepEqual(await store.claim(claimOptions), [], 'held: no claim takes it either')
        await store.setDestination!(origin, null, new Date(t0 + 2))
        const claimed = await store.claim({ ...claimOptions, now: new Date(t0 + 3) })
        assert.deepEqual(claimed.map((lease) => lease.task.id), [task.id])
        await store.complete(claimed[0]!, { attempt: 1, startedAt: new Date(t0 + 3), durationMs: 1, outcome: 'delivered', status: 204 }, { status: 'delivered' })
      }
      // a healthy destination still gets its inline attempt
      const report = await deliver(await newTask(), { n: 2 }, sender)
      assert.equal(report.status, 'delivered')
      assert.equal(endpoint.received, 1)
    })

    it("lets an inline attempt's 429 with Retry-After throttle its destination for the next deliver", async (t) => {
      const { endpoint, store, sender, events, newTask, origin } = await setup(kind, t, (_request, response) =>
        response.writeHead(429, { 'retry-after': '120' }).end()
      )
      const first = await deliver(await newTask(), {}, sender)
      assert.equal(first.status, 'retrying')
      assert.equal(first.attempts, 1)
      assert.ok(events.some((event) => event.type === 'destination-throttled' && event.destination === origin))
      const second = await newTask()
      const report = await deliver(second, {}, sender)
      assert.deepEqual([report.status, report.attempts, endpoint.received], ['retrying', 0, 1], 'the second task waits: nothing sent')
      const listed = (await store.listDestinations!(new Date(t0))).find((one) => one.destination === origin)
      assert.equal(listed?.state, 'throttled')
      assert.equal(listed?.until?.getTime(), t0 + 120_000)
    })

    it("counts inline failures toward the breaker, with the options' thresholds", async (t) => {
      const { endpoint, store, sender, events, newTask, origin } = await setup(kind, t, (_request, response) => response.writeHead(500).end(), {
        breaker: { failures: 3 },
      })
      for (let n = 0; n < 3; n++) assert.equal((await deliver(await newTask(), {}, sender)).attempts, 1)
      assert.equal(endpoint.received, 3)
      assert.ok(events.some((event) => event.type === 'destination-unhealthy' && event.destination === origin), 'the third failure opened it')
      const report = await deliver(await newTask(), {}, sender)
      assert.deepEqual([report.status, report.attempts, endpoint.received], ['retrying', 0, 3], 'open: nothing more is sent inline')
      assert.equal((await store.listDestinations!(new Date(t0))).find((one) => one.destination === origin)?.state, 'open')
    })
  })
}

describe('a store whose destination calls never answer', () => {
  it('holds no attempt past the lease: the throttle or the failure count is given up as an error event, the attempt still recorded', async () => {
    const { createTestTransport } = await import('../support/sender.ts')
    const memory = createMemoryStore()
    const never = () => new Promise<never>(() => {})
    const store: CallbackStore = { ...memory, setDestination: never, countDestinationFailure: never }
    const events: DeliveryEvent[] = []
    let status = 429
    const transport = createTestTransport(() => (status === 429 ? { status, headers: { 'retry-after': '60' } } : { status }))
    const sender = { store, secret: generateSecret(), transport, leaseMs: 400, onEvent: (event: DeliveryEvent) => events.push(event) }
    for (const answer of [429, 500]) {
      status = answer
      const task = await createCallbackTask({ callbackUrl: 'https://client.example/hook', event: 'job.done' }, sender)
      const started = performance.now()
      const report = await deliver(task, {}, sender)
      assert.ok(performance.now() - started < 5_000, `deliver took ${Math.round(performance.now() - started)} ms`)
      assert.deepEqual([report.status, report.attempts], ['retrying', 1], `the ${answer} is recorded`)
    }
    const errors = events.filter((event) => event.type === 'error').map((event) => String((event as { error: Error }).error.message))
    assert.equal(errors.length, 2)
    assert.match(errors[0]!, /setDestination did not answer within 400 ms/)
    assert.match(errors[1]!, /countDestinationFailure did not answer within 400 ms/)
  })
})
