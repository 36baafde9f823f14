// Intent verification across tenants: a service with one sender-wide secret serves clients A and
// B. A names B's URL; B's receiver must be able to refuse the challenge, so B's handler never gets
// A's data as a genuine callback.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import express from 'express'
import {
  createCallbackTask,
  createHttpTransport,
  createMemoryStore,
  deliver,
  generateSecret,
  signPayload,
  verifyIntent,
} from 'endpoint-callback'
import type { CallbackTask, SenderOptions, Transport, VerifiedCallback } from 'endpoint-callback'
import { callbackReceiver } from 'endpoint-callback/express'
import type { ReceiverOptions } from 'endpoint-callback/express'
import { createReceiverCore } from '../../src/receivers/core.ts'

const secret = generateSecret() // the service's one secret, given to every client (the README's setup)
const transport = createHttpTransport({ urlPolicy: { allowHttp: true, allowHosts: ['127.0.0.1'] } })
after(() => transport.close?.())

/** Client B's endpoint: an Express receiver with `options`, recording what its handler was given. */
async function clientEndpoint(options: ReceiverOptions) {
  const handled: VerifiedCallback[] = []
  const app = express()
  app.post('/callbacks', callbackReceiver(options), (req, res) => {
    handled.push(req.callback!)
    res.sendStatus(204)
  })
  const server = createServer(app).listen(0, '127.0.0.1')
  await once(server, 'listening')
  after(() => new Promise<void>((resolve) => server.close(() => resolve())))
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/callbacks`, handled }
}

function service(): SenderOptions {
  return {
    store: createMemoryStore(),
    secret,
    transport,
    urlPolicy: { allowHttp: true, allowHosts: ['127.0.0.1'] },
    verifyIntent: true,
    // The service knows which client asked for each task: it keeps the account in the metadata.
    intentSubscriber: (task: CallbackTask) => task.metadata?.['account'] as string | undefined,
  }
}

test("client A naming client B's URL: B's receiver refuses the challenge and its handler never sees A's data", async () => {
  const b = await clientEndpoint({ secret, acceptIntent: (intent) => intent.subscriber === 'acct_B' })
  const sender = service()

  const fromA = await createCallbackTask({ callbackUrl: b.url, event: 'report.ready', metadata: { account: 'acct_A' } }, sender)
  const report = await deliver(fromA.id, { secretReport: 'A' }, sender)
  // the 403 is retried on the schedule like any non-2xx but 410 (retry.failStatuses would end it
  // at once); either way the payload is never sent
  assert.equal(report.status, 'retrying')
  assert.equal(b.handled.length, 0, "B's handler ran for a callback A asked for")
  assert.match((await sender.store.get(fromA.id))!.lastError ?? '', /ERR_CALLBACK_INTENT_NOT_VERIFIED.*403/)

  const fromB = await createCallbackTask({ callbackUrl: b.url, event: 'report.ready', metadata: { account: 'acct_B' } }, sender)
  assert.equal((await deliver(fromB.id, { report: 'B' }, sender)).status, 'delivered')
  assert.deepEqual(b.handled.map((callback) => callback.data), [{ report: 'B' }])
})

test('the subscriber is named in the signed challenge body, and a challenge without one is refused by a receiver that asks', async () => {
  const seen: Array<string | undefined> = []
  const receiver = createReceiverCore({ secret, acceptIntent: (intent) => (seen.push(intent.subscriber), intent.subscriber === 'acct_B') })
  const requests: Array<{ headers: Record<string, string>; body: string }> = []
  const capture: Transport = {
    send: async (request) => {
      requests.push({ headers: request.headers, body: String(request.body) })
      return { status: 500, headers: {}, body: '', durationMs: 0 }
    },
  }
  const sign = (message: { id: string; timestamp: Date; body: string }) => signPayload(message, { secret })
  for (const subscriber of ['acct_B', 'acct_A', undefined]) {
    await verifyIntent('http://127.0.0.1:9/callbacks', { transport: capture, sign, ...(subscriber === undefined ? {} : { subscriber }) }).catch(() => {})
  }
  const answers = await Promise.all(requests.map((request) => receiver.admit({ method: 'POST', ...request })))
  assert.deepEqual(seen, ['acct_B', 'acct_A', undefined])
  assert.deepEqual(
    answers.map((answer) => answer.accepted === false && answer.status),
    [200, 403, 403]
  )
  assert.equal(JSON.parse(requests[0]!.body).data.subscriber, 'acct_B')
  const echoed = answers[0]!
  assert.ok(!echoed.accepted)
  assert.equal(echoed.body, requests[0]!.headers['webhook-intent'])
})

test('a receiver without acceptIntent answers every verified challenge, as before', async () => {
  const b = await clientEndpoint({ secret })
  const sender = service()
  const task = await createCallbackTask({ callbackUrl: b.url, event: 'report.ready', metadata: { account: 'acct_A' } }, sender)
  assert.equal((await deliver(task.id, { any: 1 }, sender)).status, 'delivered')
})

test('intentSubscriber and acceptIntent must be functions, and verifyIntent checks the subscriber it is given', async () => {
  assert.throws(() => createReceiverCore({ secret, acceptIntent: 'acct_B' as never }), /acceptIntent must be a function/)
  await assert.rejects(
    createCallbackTask({ callbackUrl: 'https://b.example/cb', event: 'e' }, { ...service(), intentSubscriber: 'acct' as never }),
    /intentSubscriber must be a function/
  )
  await assert.rejects(verifyIntent('https://b.example/cb', { transport, subscriber: 7 as never }), /subscriber must be a non-empty string/)
})
