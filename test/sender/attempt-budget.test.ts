/**
 * One attempt, quick retries and intent verification included, ends before its lease does: no
 * second worker may claim the task and send it while the first is still sending.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createCallbackTask, createMemoryStore, createWorker, deliver, DeliveryError, generateEncryptionKey, generateSecret } from 'endpoint-callback'
import type { Transport, TransportRequest, TransportResponse } from 'endpoint-callback'
import { startLoopbackServer } from '../support/loopback-server.ts'

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

test('a callback is not sent when what came before it (a slow JWKS) left no room for it in the lease', { timeout: 30_000 }, async () => {
  const { publicJwk } = await generateEncryptionKey()
  // the receiver's JWKS answers, but slowly
  const jwks = await startLoopbackServer((_, res) => {
    setTimeout(() => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: [publicJwk] })), 1_500)
  })
  const sends: Array<{ start: number; end: number }> = []
  const transport: Transport = {
    timeoutMs: TIMEOUT_MS,
    send: () => {
      const start = performance.now()
      return new Promise((resolve) =>
        setTimeout(() => {
          sends.push({ start, end: performance.now() })
          resolve({ status: 200, headers: {}, body: '', durationMs: performance.now() - start })
        }, TIMEOUT_MS - 100)
      )
    },
  }
  const store = createMemoryStore()
  const urlPolicy = { allowHttp: true, allowHosts: ['127.0.0.1'] }
  // the shortest lease the validation allows for one exchange of 2 s
  const sender = { store, transport, urlPolicy, secret: generateSecret(), leaseMs: 2_300, retry: { schedule: [60_000] } }
  const task = await createCallbackTask({ callbackUrl: 'https://client.example/callbacks', event: 'report.ready', encryptionKey: `${jwks.origin}/jwks.json` }, sender)
  // attached as plaintext, due now: the worker's attempt fetches the key
  const now = new Date()
  const lease = await store.attach(task.id, { body: JSON.stringify({ type: 'report.ready', timestamp: now.toISOString(), data: {} }) }, { now, leaseMs: 60_000 })
  assert.ok(lease !== undefined && (await store.release(lease, now)))
  const worker = createWorker({ ...sender, pollIntervalMs: 50 })
  worker.start()
  try {
    await new Promise((resolve) => setTimeout(resolve, 5_000))
  } finally {
    await worker.stop()
    await jwks.close()
  }
  for (let i = 1; i < sends.length; i++) {
    assert.ok(sends[i]!.start >= sends[i - 1]!.end, `send ${i + 1} started while send ${i} was still running`)
  }
  const stored = await store.get(task.id)
  assert.equal(stored?.status, 'scheduled')
  assert.match(stored?.lastError ?? '', /^ERR_CALLBACK_TIMEOUT: .*lease/)
})
