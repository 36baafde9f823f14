/**
 * Options typed `?: T | undefined` promise that an option given as `undefined` means its default,
 * as a strict TypeScript project (exactOptionalPropertyTypes) passes `process.env.X` or a value it
 * may not have. These calls pass every optional option as `undefined` and check the defaults hold.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import {
  createCallbackTask,
  createHttpTransport,
  createMemoryStore,
  createWorker,
  deliver,
  generateSecret,
  signPayload,
  verifySignature,
} from 'endpoint-callback'
import type { SenderOptions } from 'endpoint-callback'
import { verifyRequest } from 'endpoint-callback/fetch'
import { createTestTransport } from '../support/sender.ts'

const unset: string | undefined = undefined

test('a sender, a task and a worker whose optional options are all undefined behave as with none given', async () => {
  const transport = createTestTransport(() => ({ status: 204 }))
  const sender: SenderOptions = {
    store: createMemoryStore({ retentionSeconds: undefined, attemptHistory: undefined }),
    transport,
    secret: generateSecret(),
    signingKey: undefined,
    keyRing: undefined,
    verifyIntent: undefined,
    urlPolicy: { allowHttp: undefined, allowHosts: undefined, allowPorts: undefined },
    retry: { schedule: undefined, jitter: undefined, deadlineMs: undefined, maxRetryAfterMs: undefined, failStatuses: undefined },
    leaseMs: undefined,
    now: undefined,
    onEvent: undefined,
    instrumentation: undefined,
    transaction: undefined,
  }
  const task = await createCallbackTask(
    { callbackUrl: 'https://client.example/hooks', event: 'report.ready', idempotencyKey: unset, secret: undefined, metadata: undefined, deadline: undefined },
    sender
  )
  assert.equal(task.status, 'pending')
  assert.equal(task.idempotencyKey, undefined)
  const report = await deliver(task.id, { ok: true }, sender)
  assert.equal(report.status, 'delivered')
  assert.match(transport.requests[0]!.headers['webhook-signature']!, /^v1,/)

  const worker = createWorker({ ...sender, pollIntervalMs: undefined, concurrency: undefined, batchSize: undefined })
  worker.start()
  await worker.stop()
})

test('verification and the fetch receiver take undefined options as their defaults', async () => {
  const secret = generateSecret()
  const body = '{"type":"t","timestamp":"2030-01-01T00:00:00.000Z","data":1}'
  const headers = signPayload({ id: 'msg_undefined', timestamp: new Date(), body }, { secret, signingKey: undefined })
  const options = { secret, publicKey: undefined, jwks: undefined, toleranceSeconds: undefined, now: undefined }
  assert.equal((await verifySignature({ headers, body }, options)).data, 1)
  const request = new Request('http://127.0.0.1/hooks', { method: 'POST', headers, body })
  const callback = await verifyRequest<number>(request, { ...options, maxBodyBytes: undefined, contentTypes: undefined, replayGuard: undefined, decryptionKey: undefined })
  assert.equal(callback.data, 1)
})

test('the HTTP transport takes undefined options as its defaults', async () => {
  const transport = createHttpTransport({ timeoutMs: undefined, maxResponseBytes: undefined, lookup: undefined })
  assert.equal(transport.timeoutMs, 10_000)
  await transport.close?.()
})
