/**
 * A store of the user's own whose calls may never answer: the worker gives up on each after
 * `leaseMs`, reports it as an `error` event, and carries on.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createCallbackTask, createMemoryStore, createWorker, deliver, generateSecret } from 'endpoint-callback'
import type { CallbackStore, DeliveryEvent } from 'endpoint-callback'
import { createTestTransport } from '../support/sender.ts'

test('a claim and a completion that never answer fail as error events, and the worker carries on', { timeout: 30_000 }, async () => {
  const inner = createMemoryStore()
  const hang = { claims: 1, completions: 1 }
  const store: CallbackStore = Object.create(inner) as CallbackStore
  store.claim = (options) => (hang.claims-- > 0 ? new Promise(() => {}) : inner.claim(options))
  store.complete = (lease, attempt, resolution) =>
    attempt.outcome === 'delivered' && hang.completions-- > 0 ? new Promise(() => {}) : inner.complete(lease, attempt, resolution)
  // the first attempt (by deliver) meets a busy receiver; the worker makes the others
  const transport = createTestTransport((_, index) => ({ status: index === 0 ? 503 : 200 }), { timeoutMs: 100 })
  const errors: unknown[] = []
  const sender = {
    store,
    transport,
    secret: generateSecret(),
    leaseMs: 500,
    retry: { schedule: [10, 10, 10] },
    onEvent: (event: DeliveryEvent) => event.type === 'error' && errors.push(event.error),
  }
  const task = await createCallbackTask({ callbackUrl: 'https://client.example/callbacks', event: 'report.ready' }, sender)
  assert.equal((await deliver(task, { ok: true }, sender)).status, 'retrying')
  const worker = createWorker({ ...sender, pollIntervalMs: 20 })
  worker.start()
  try {
    const deadline = Date.now() + 15_000
    while ((await inner.get(task.id))?.status !== 'delivered') {
      if (Date.now() > deadline) throw new Error(`not delivered within 15 s; ${errors.length} errors, ${worker.active} active`)
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
    // An attempt whose completion hung may still be inside its own deadline when a later attempt
    // (after the lease ran out) has delivered: it must let go within that deadline, not hang.
    const released = Date.now() + 2_000
    while (worker.active > 0 && Date.now() < released) await new Promise((resolve) => setTimeout(resolve, 20))
    assert.equal(worker.active, 0, 'no attempt is left hanging')
  } finally {
    await worker.stop()
  }
  assert.deepEqual(
    errors.map((error) => (error as Error).message),
    ["the store's claim did not answer within 500 ms", "the store's complete did not answer within 500 ms"]
  )
})
