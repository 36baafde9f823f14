/**
 * A busy destination that fails now and then is not a failing destination. A receiver that answers
 * 500 to a fifth of the requests strings five failures together by chance every few hundred
 * requests; the breaker must not take that for a dead host and hold all its callbacks for a
 * cool-down. A destination that then really dies must still be stopped.
 *
 * One worker on each store; with concurrency 1 where the order of the attempts matters.
 */
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { setTimeout as sleep } from 'node:timers/promises'
import { createCallbackTask, createCallbackTasks, createHttpTransport, createMemoryStore, createWorker, generateSecret } from 'endpoint-callback'
import type { CallbackStore, DeliveryEvent, SenderOptions } from 'endpoint-callback'
import { makeDue, openDurableStore } from '../support/durable-stores.ts'
import { startEndpoint } from '../support/hostile-endpoints.ts'
import { serviceSkip } from '../support/services.ts'

const urlPolicy = { allowHttp: true, allowHosts: ['127.0.0.1'] }
const TASKS = 120
const BUSY_TASKS = 3_000

async function until(what: string, condition: () => boolean, ms = 30_000): Promise<void> {
  const end = Date.now() + ms
  while (!condition()) {
    if (Date.now() > end) throw new Error(`timed out waiting until ${what}`)
    await sleep(10)
  }
}

async function openStore(kind: 'memory' | 'postgres' | 'redis'): Promise<{ store: CallbackStore; close(): Promise<void> }> {
  if (kind === 'memory') return { store: createMemoryStore(), close: async () => {} }
  const durable = await openDurableStore(kind)
  return { store: durable.store, close: () => durable.drop() }
}

for (const kind of ['memory', 'postgres', 'redis'] as const) {
  describe(`the breaker on the ${kind} store`, { skip: kind === 'memory' ? false : await serviceSkip(kind) }, () => {
    it('stays closed for a busy destination that fails a fifth of its requests, five in a row among them', async (t) => {
      // Request n (1-based) is answered 500 when n is a multiple of 5, and for the streak 41–45:
      // 27 failures in the first 120 requests, never more than a quarter since the first one.
      let requests = 0
      let longestStreak = 0
      let streak = 0
      const endpoint = await startEndpoint((_request, response) => {
        requests++
        const fails = requests % 5 === 0 || (requests >= 41 && requests <= 45)
        streak = fails ? streak + 1 : 0
        longestStreak = Math.max(longestStreak, streak)
        response.writeHead(fails ? 500 : 204).end()
      })
      const transport = createHttpTransport({ urlPolicy, timeoutMs: 5_000 })
      const { store, close } = await openStore(kind)
      const events: DeliveryEvent[] = []
      const sender: SenderOptions = { store, secret: generateSecret(), urlPolicy, transport, retry: { schedule: Array<number>(20).fill(20), jitter: 0 } }
      const worker = createWorker({ ...sender, concurrency: 1, pollIntervalMs: 20, onEvent: (event) => events.push(event) })
      t.after(async () => {
        await worker.stop()
        await transport.close()
        await close()
        await endpoint.close()
      })
      for (let i = 0; i < TASKS; i++) await makeDue(store, await createCallbackTask({ callbackUrl: endpoint.url, event: 'job.done' }, sender))
      worker.start()
      await until(`all ${TASKS} callbacks are delivered`, () => events.filter((event) => event.type === 'delivered').length === TASKS)
      assert.ok(longestStreak >= 5, `the receiver answered 500 ${longestStreak} times in a row at most: the test needs a streak of 5`)
      const opened = events.filter((event) => event.type === 'destination-unhealthy')
      assert.deepEqual(opened, [], 'the breaker never opened for a destination that answers four requests of five')
    })

    it('stays closed at 64 in flight when a fifth of the first attempts are answered 500', async (t) => {
      // The store counts failures as they come and answers as their records commit, in groups:
      // its streak can be failures whose answered neighbours are not counted yet.
      const seen = new Set<string>()
      let failedFirst = 0
      const endpoint = await startEndpoint((request, response) => {
        const id = String(request.headers['webhook-id'])
        const first = !seen.has(id)
        seen.add(id)
        // every fifth task by its id's last character, deterministic per id
        const fails = first && id.charCodeAt(id.length - 1) % 5 === 0
        if (fails) failedFirst++
        response.writeHead(fails ? 500 : 204).end()
      })
      const transport = createHttpTransport({ urlPolicy, timeoutMs: 5_000 })
      const { store: opened, close } = await openStore(kind)
      // each failure the worker has the store count for every worker is a round trip
      let sharedCounts = 0
      const store = new Proxy(opened, {
        get(target, name) {
          const value = Reflect.get(target, name, target) as unknown
          if (name !== 'countDestinationFailure' || typeof value !== 'function') return value
          return (...args: unknown[]) => {
            sharedCounts++
            return (value as (...a: unknown[]) => unknown).apply(target, args)
          }
        }
      })
      const events: DeliveryEvent[] = []
      const sender: SenderOptions = { store, secret: generateSecret(), urlPolicy, transport, retry: { schedule: [20], jitter: 0 } }
      const worker = createWorker({ ...sender, concurrency: 64, onEvent: (event) => events.push(event) })
      t.after(async () => {
        await worker.stop()
        await transport.close()
        await close()
        await endpoint.close()
      })
      const created = await createCallbackTasks(
        Array.from({ length: BUSY_TASKS }, () => ({ callbackUrl: endpoint.url, event: 'job.done', payload: { ok: true } })),
        sender
      )
      assert.ok(created.every((one) => one.ok))
      worker.start()
      await until(
        `all ${BUSY_TASKS} callbacks are delivered`,
        () => events.some((event) => event.type === 'destination-unhealthy') || events.filter((event) => event.type === 'delivered').length === BUSY_TASKS,
        60_000
      )
      assert.ok(failedFirst > BUSY_TASKS / 10, `${failedFirst} first attempts were answered 500`)
      const unhealthy = events.filter((event) => event.type === 'destination-unhealthy')
      assert.deepEqual(unhealthy, [], 'the breaker never opened for a destination that answers most attempts')
      // a failure of a destination the worker does not see failing cannot open its breaker: it costs no round trip
      assert.ok(sharedCounts <= failedFirst / 20, `${sharedCounts} of ${failedFirst} failures were counted in the store one by one`)
    })

    it('still opens within 20 failures in a row once that busy destination dies', async (t) => {
      // answers four requests of five, then from the 21st on none
      const DIES_AFTER = 20
      let requests = 0
      const endpoint = await startEndpoint((_request, response) => {
        requests++
        response.writeHead(requests > DIES_AFTER || requests % 5 === 0 ? 500 : 204).end()
      })
      const transport = createHttpTransport({ urlPolicy, timeoutMs: 5_000 })
      const { store, close } = await openStore(kind)
      const events: DeliveryEvent[] = []
      const sender: SenderOptions = { store, secret: generateSecret(), urlPolicy, transport, retry: { schedule: [60_000] } }
      const worker = createWorker({ ...sender, concurrency: 1, pollIntervalMs: 20, onEvent: (event) => events.push(event) })
      t.after(async () => {
        await worker.stop()
        await transport.close()
        await close()
        await endpoint.close()
      })
      for (let i = 0; i < 60; i++) await makeDue(store, await createCallbackTask({ callbackUrl: endpoint.url, event: 'job.done' }, sender))
      worker.start()
      await until('the breaker opens', () => events.some((event) => event.type === 'destination-unhealthy'))
      // Its window began at request 5's failure and holds 16 or so attempts, 4 of them failed: it
      // opens once half have failed (8 more), and never later than 20 in a row.
      assert.ok(requests - DIES_AFTER <= 21, `the dead destination received ${requests - DIES_AFTER} requests before its breaker opened`)
    })
  })
}
