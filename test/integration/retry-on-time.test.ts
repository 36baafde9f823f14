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
 * Sends a task's first attempt from `sendingStore` (a receiver answering 500 once), while a worker
 * runs on `workerStore`, and returns how late the retry reached the receiver.
 */
async function retryLateness(sendingStore: CallbackStore, workerStore: CallbackStore): Promise<number> {
  const receiver = await startReceiver((_request, response, index) => answer(response, index === 0 ? 500 : 204))
  const transport = createHttpTransport({ urlPolicy })
  const secret = generateSecret()
  const retry = { schedule: [RETRY_MS], jitter: 0 }
  const sending: SenderOptions = { store: sendingStore, secret, urlPolicy, transport, retry }
  const worker = createWorker({ store: workerStore, secret, urlPolicy, transport, retry, pollIntervalMs: POLL_MS })
  try {
    worker.start()
    // let the worker's first claim (and the store's subscription) settle
    await sleep(200)
    const task = await createCallbackTask({ callbackUrl: receiver.url, event: 'job.done' }, sending)
    const report = await deliver(task.id, { ok: true }, sending)
    assert.equal(report.status, 'retrying', 'the first attempt meets a 500')
    const dueAt = report.nextAttemptAt!.getTime()
    const second = await until('the retry reaching the receiver', () => receiver.received[1])
    return second.at - dueAt
  } finally {
    await worker.stop()
    await receiver.close()
  }
}

test('memory store: a retry due in 300 ms arrives on time although the poll is 10 s', async () => {
  const store = createMemoryStore()
  const late = await retryLateness(store, store)
  assert.ok(late >= -5 && late < LATE_LIMIT_MS, `the retry arrived ${late} ms after it fell due`)
})

for (const kind of ['postgres', 'redis'] as DurableKind[]) {
  describe(`${kind} store`, async () => {
    const skip = await serviceSkip(kind)
    test('a retry scheduled by another process arrives on time, woken by the due time the store announced', { skip }, async () => {
      const sending = await openDurableStore(kind)
      // the worker's store is a second store object on the same tasks, as in another process:
      // it only learns of the retry through the store's announcement
      const working = await openDurableStore(kind, { name: sending.name })
      try {
        const late = await retryLateness(sending.store, working.store)
        assert.ok(late >= -5 && late < LATE_LIMIT_MS, `the retry arrived ${late} ms after it fell due`)
      } finally {
        await working.close()
        await sending.drop()
      }
    })
  })
}
