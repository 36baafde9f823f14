/**
 * One attempt, quick retries and intent verification included, ends before its lease does: no
 * second worker may claim the task and send it while the first is still sending.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createCallbackTask, createMemoryStore, createWorker, deliver, DeliveryError, generateSecret } from 'endpoint-callback'
import type { Transport, TransportRequest, TransportResponse } from 'endpoint-callback'

const TIMEOUT_MS = 2_000
const LEASE_MS = 4_000

/**
 * A receiver whose connections reset: the first just before the transport's timeout, the next at
 * once, the third again just before the timeout, and so on.
 */
function resettingTransport(): Transport & { sends: Array<{ start: number; end: number }> } {
  const sends: Array<{ start: number; end: number }> = []
  return {
    timeoutMs: TIMEOUT_MS,
    sends,
    send(request: TransportRequest): Promise<TransportResponse> {
      const start = performance.now()
      const lasts = sends.length % 2 === 0 ? TIMEOUT_MS - 100 : 10
      return new Promise((_, reject) => {
        const timer = setTimeout(() => {
          sends.push({ start, end: performance.now() })
          reject(new DeliveryError('ERR_CALLBACK_CONNECTION', 'connection to client.example failed (ECONNRESET)'))
        }, lasts)
        request.signal?.addEventListener('abort', () => {
          clearTimeout(timer)
          sends.push({ start, end: performance.now() })
          reject(request.signal!.reason)
        })
      })
    },
  }
}

test('an attempt with quick retries ends inside its lease, so no second worker sends at the same time', { timeout: 30_000 }, async () => {
  const transport = resettingTransport()
  const sender = { store: createMemoryStore(), secret: generateSecret(), transport, leaseMs: LEASE_MS, retry: { schedule: [60_000] } }
  const worker = createWorker({ ...sender, pollIntervalMs: 50 })
  worker.start()
  try {
    const task = await createCallbackTask({ callbackUrl: 'https://client.example/callbacks', event: 'report.ready' }, sender)
    const started = performance.now()
    const report = await deliver(task, { ok: true }, sender)
    const took = performance.now() - started
    assert.equal(report.status, 'retrying')
    assert.ok(took < LEASE_MS, `the attempt took ${Math.round(took)} ms, longer than its ${LEASE_MS} ms lease`)
    // long enough for a worker to claim a lease that ran out
    await new Promise((resolve) => setTimeout(resolve, LEASE_MS + 500 - took))
  } finally {
    await worker.stop()
  }
  const sends = transport.sends.toSorted((a, b) => a.start - b.start)
  for (let i = 1; i < sends.length; i++) {
    assert.ok(sends[i]!.start >= sends[i - 1]!.end, `send ${i + 1} started while send ${i} was still running`)
  }
})

test('leaseMs must leave room for every exchange of an attempt, as the code bounds it', () => {
  const transport = resettingTransport()
  const base = { store: createMemoryStore(), secret: generateSecret(), transport }
  // one exchange needs the timeout and a tenth of the lease (at most 1 s) to record the attempt
  assert.throws(() => createWorker({ ...base, leaseMs: TIMEOUT_MS + 100 }), { name: 'TypeError', message: /leaseMs/ })
  assert.doesNotThrow(() => createWorker({ ...base, leaseMs: 2_300 }))
  // with intent verification, two exchanges
  assert.throws(() => createWorker({ ...base, verifyIntent: true, leaseMs: 2 * TIMEOUT_MS + 100 }), { name: 'TypeError', message: /leaseMs/ })
  assert.doesNotThrow(() => createWorker({ ...base, verifyIntent: true, leaseMs: 4_500 }))
})
