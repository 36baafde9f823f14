/**
 * Workers sharing a PostgreSQL or Redis store share what they know of destinations: a breaker one
 * of them opens stops them all, and each keeps the dead endpoint to its own cap meanwhile.
 * Each worker has its own store object and connection, as a worker in its own process would.
 */
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { setTimeout as sleep } from 'node:timers/promises'
import { createCallbackTask, createHttpTransport, createWorker, generateSecret } from 'endpoint-callback'
import type { DeliveryEvent, SenderOptions, Worker } from 'endpoint-callback'
import { makeDue, openDurableStore } from '../support/durable-stores.ts'
import type { DurableKind, DurableStore } from '../support/durable-stores.ts'
import { startEndpoint, tarpit } from '../support/hostile-endpoints.ts'
import { serviceSkip } from '../support/services.ts'

const urlPolicy = { allowHttp: true, allowHosts: ['127.0.0.1'] }

async function until(what: string, condition: () => boolean, ms = 15_000): Promise<void> {
  const end = Date.now() + ms
  while (!condition()) {
    if (Date.now() > end) throw new Error(`timed out waiting until ${what}`)
    await sleep(10)
  }
}

for (const kind of ['postgres', 'redis'] as DurableKind[]) {
  describe(`workers sharing one ${kind} store`, { skip: await serviceSkip(kind) }, () => {
    it('keep a dead endpoint to their cap, open its breaker for all, and deliver the healthy callbacks at once', async (t) => {
      const dead = await startEndpoint(tarpit)
      const arrivals: number[] = []
      const healthy = await startEndpoint((_request, response) => {
        arrivals.push(performance.now())
        response.writeHead(204).end()
      })
      const transport = createHttpTransport({ urlPolicy, timeoutMs: 1_000 })
      const main = await openDurableStore(kind)
      const others: DurableStore[] = []
      const workers: Worker[] = []
      t.after(async () => {
        await Promise.all(workers.map((worker) => worker.stop()))
        await transport.close()
        await Promise.all(others.map((other) => other.close()))
        await main.drop()
        await Promise.all([dead.close(), healthy.close()])
      })
      const sender: SenderOptions = { store: main.store, secret: generateSecret(), urlPolicy, transport, leaseMs: 5_000, retry: { schedule: [60_000] } }
      for (let i = 0; i < 20; i++) await makeDue(main.store, await createCallbackTask({ callbackUrl: dead.url, event: 'job.done' }, sender))
      for (let i = 0; i < 10; i++) await makeDue(main.store, await createCallbackTask({ callbackUrl: healthy.url, event: 'job.done' }, sender))

      const events: DeliveryEvent[] = []
      for (let n = 0; n < 3; n++) {
        const own = n === 0 ? main : await openDurableStore(kind, { name: main.name })
        if (n > 0) others.push(own)
        workers.push(
          createWorker({
            ...sender,
            store: own.store,
            pollIntervalMs: 50,
            perDestination: 2,
            breaker: { failures: 2, cooldownMs: 60_000 },
            onEvent: (event) => events.push(event),
          })
        )
      }
      const started = performance.now()
      for (const worker of workers) worker.start()

      await until('the healthy endpoint got its ten callbacks', () => arrivals.length === 10)
      const lateness = Math.max(...arrivals) - started
      assert.ok(lateness < 1_500, `the last healthy callback came ${Math.round(lateness)} ms after the start`)
      await until('the breaker opens', () => events.some((event) => event.type === 'destination-unhealthy'))
      assert.ok(dead.maxOpen <= 6, `the dead endpoint held ${dead.maxOpen} requests at once: more than 2 per worker`)
      await sleep(1_200) // the attempts in flight when it opened run into their timeout
      const received = dead.received
      await sleep(1_500)
      assert.equal(dead.received, received, 'no worker sends to it while its breaker is open')
      // The first worker to see 2 failures opens it for all: at most the first two rounds of 3 × 2.
      assert.ok(received <= 12, `the dead endpoint received ${received} attempts`)
      const listed = await main.store.listDestinations!(new Date())
      const deadState = listed.find((one) => one.destination === new URL(dead.url).origin)
      assert.equal(deadState?.state, 'open')
      assert.equal(deadState?.due, 20 - received)
    })

    it("count a failing endpoint's failures together: four workers send it its threshold and their attempts in flight, not four thresholds", async (t) => {
      // Answers 500 after a moment, so the workers' attempts overlap and spread over all four.
      const failing = await startEndpoint((_request, response) => void setTimeout(() => response.writeHead(500).end(), 40))
      const transport = createHttpTransport({ urlPolicy, timeoutMs: 2_000 })
      const main = await openDurableStore(kind)
      const others: DurableStore[] = []
      const workers: Worker[] = []
      t.after(async () => {
        await Promise.all(workers.map((worker) => worker.stop()))
        await transport.close()
        await Promise.all(others.map((other) => other.close()))
        await main.drop()
        await failing.close()
      })
      const sender: SenderOptions = { store: main.store, secret: generateSecret(), urlPolicy, transport, leaseMs: 5_000, retry: { schedule: [600_000] } }
      for (let i = 0; i < 40; i++) await makeDue(main.store, await createCallbackTask({ callbackUrl: failing.url, event: 'job.done' }, sender))
      const events: DeliveryEvent[] = []
      const count = 4
      for (let n = 0; n < count; n++) {
        const own = n === 0 ? main : await openDurableStore(kind, { name: main.name })
        if (n > 0) others.push(own)
        workers.push(
          createWorker({ ...sender, store: own.store, pollIntervalMs: 20, perDestination: 1, breaker: { failures: 5, cooldownMs: 600_000 }, onEvent: (event) => events.push(event) })
        )
      }
      for (const worker of workers) worker.start()
      await until('the breaker opens', () => events.some((event) => event.type === 'destination-unhealthy'))
      await until('the attempts in flight end', () => failing.open === 0)
      await sleep(300)
      const received = failing.received
      // Each worker counting on its own lets up to 4 × 4 + 1 = 17 through before one of them reaches 5.
      assert.ok(received <= 5 + (count - 1), `the failing endpoint received ${received} attempts: more than 5 and one in flight per other worker`)
      await sleep(300)
      assert.equal(failing.received, received, 'none after it opened')
    })
  })
}
