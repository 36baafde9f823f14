/**
 * A retry arrives when it falls due, not at the worker's next poll: the worker wakes at the due
 * instant the store announces (NOTIFY, pub/sub, in process) or that its own attempt scheduled.
 * The poll interval is set far above the retry delay, so a worker that waited for its poll would
 * be seconds late.
 */
import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { setTimeout as sleep } from 'node:timers/promises'
import { createCallbackTask, createHttpTransport, createMemoryStore, createWorker, deliver, generateSecret } from 'endpoint-callback'
import type { CallbackStore, SenderOptions } from 'endpoint-callback'
import { answer, startReceiver } from '../support/callback-receiver.ts'
import { openDurableStore } from '../support/durable-stores.ts'
import type { DurableKind } from '../support/durable-stores.ts'
import { serviceSkip } from '../support/services.ts'

const urlPolicy = { allowHttp: true, allowHosts: ['127.0.0.1'] }
const RETRY_MS = 300
const POLL_MS = 10_000
/** Generous for a busy machine; a worker that waited for its poll would be ~10 s late. */
const LATE_LIMIT_MS = 250

async function until<T>(what: string, probe: () => T | undefined, ms = 5_000): Promise<T> {
  const end = Date.now() + ms
  for (;;) {
    const value = probe()
    if (value !== undefined) return value
    if (Date.now() > end) throw new Error(`${what}: not within ${ms} ms`)
    await sleep(5)
  }
}

/**
 * Sends `count` tasks' first attempts from `sendingStore`, 40 ms apart (a receiver answering 500 to
 * each first attempt), while a worker runs on `workerStore`, and returns how late each retry
 * reached the receiver after it fell due.
 */
async function retryLateness(sendingStore: CallbackStore, workerStore: CallbackStore, count = 5): Promise<number[]> {
  const firstSeen = new Set<string>()
  const receiver = await startReceiver((request, response) => {
    const id = String(request.headers['webhook-id'])
    const first = !firstSeen.has(id)
    firstSeen.add(id)
    answer(response, first ? 500 : 204)
  })
  const transport = createHttpTransport({ urlPolicy })
  const secret = generateSecret()
  const retry = { schedule: [RETRY_MS], jitter: 0 }
  // the 500s are staged: five in a row are not to open the destination's breaker
  const sending: SenderOptions & { breaker: false } = { store: sendingStore, secret, urlPolicy, transport, retry, breaker: false }
  const worker = createWorker({ store: workerStore, secret, urlPolicy, transport, retry, pollIntervalMs: POLL_MS })
  try {
    worker.start()
    // let the worker's first claim (and the store's subscription) settle
    await sleep(200)
    const due = new Map<string, number>()
    for (let i = 0; i < count; i++) {
      const task = await createCallbackTask({ callbackUrl: receiver.url, event: 'job.done' }, sending)
      const report = await deliver(task.id, { ok: true }, sending)
      assert.equal(report.status, 'retrying', 'the first attempt meets a 500')
      due.set(task.id, report.nextAttemptAt!.getTime())
      await sleep(40)
    }
    await until(`all ${count} retries reaching the receiver`, () => (receiver.received.length >= 2 * count ? true : undefined))
    // each retry: the second request with its id
    return [...due].map(([id, at]) => receiver.received.filter((request) => request.headers['webhook-id'] === id)[1]!.at - at)
  } finally {
    await worker.stop()
    await receiver.close()
  }
}

function assertOnTime(late: number[]): void {
  assert.ok(late.every((ms) => ms >= -5 && ms < LATE_LIMIT_MS), `the retries arrived ${late.join(', ')} ms after they fell due`)
}

test('memory store: retries due in 300 ms, each at its own instant, arrive on time although the poll is 10 s', async () => {
  const store = createMemoryStore()
  assertOnTime(await retryLateness(store, store))
})

for (const kind of ['postgres', 'redis'] as DurableKind[]) {
  describe(`${kind} store`, async () => {
    const skip = await serviceSkip(kind)
    test('retries scheduled by another process arrive on time, each, woken by the due time the store announced', { skip }, async () => {
      const sending = await openDurableStore(kind)
      // the worker's store is a second store object on the same tasks, as in another process:
      // it only learns of the retry through the store's announcement
      const working = await openDurableStore(kind, { name: sending.name })
      try {
        assertOnTime(await retryLateness(sending.store, working.store))
      } finally {
        await working.close()
        await sending.drop()
      }
    })
  })
}
