/**
 * The security features end to end on 127.0.0.1: a sender signing with a key ring and publishing it
 * as a JWKS, receivers verifying through that JWKS across a rotation, payloads encrypted for the
 * receiver's key and decrypted by the receiver middleware, and callback URL intent verification,
 * through the Express, Koa and fetch receivers and the real undici transport.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createServer } from 'node:http'
import type { IncomingMessage, RequestListener } from 'node:http'
import { setTimeout as sleep } from 'node:timers/promises'
import express from 'express'
import Koa from 'koa'
import { buildConnector } from 'undici'
import {
  createCallbackTask,
  createHttpTransport,
  createJwksHandler,
  createKeyRing,
  createMemoryStore,
  createRemoteJwks,
  createWorker,
  deliver,
  generateEncryptionKey,
  generateSecret,
  generateSigningKey,
  signPayload,
} from 'endpoint-callback'
import type { DeliveryEvent, HttpTransportOptions, KeyRing, SenderOptions, VerifiedCallback } from 'endpoint-callback'
import { callbackReceiver as expressReceiver } from 'endpoint-callback/express'
import type { ReceiverOptions } from 'endpoint-callback/express'
import { callbackHandler } from 'endpoint-callback/fetch'
import { callbackReceiver as koaReceiver } from 'endpoint-callback/koa'
import { listening } from '../support/http-harness.ts'
import type { Listening } from '../support/http-harness.ts'
import { createTestClock } from '../support/sender.ts'

// Loopback over plain http is refused by default; these tests opt in explicitly.
const urlPolicy = { allowHttp: true, allowHosts: ['127.0.0.1'] }

interface Received {
  callbacks: VerifiedCallback[]
  /** Every request the server saw: method, headers and raw body (before any middleware). */
  requests: Array<{ headers: IncomingMessage['headers']; body: string }>
}

/** Records each request's raw bytes, then hands the request on with its body intact. */
function recording(received: Received, next: RequestListener): RequestListener {
  return (req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (chunk: Buffer) => chunks.push(chunk))
    req.on('end', () => {
      const body = Buffer.concat(chunks)
      received.requests.push({ headers: req.headers, body: body.toString('utf8') })
      // Express and Koa read through rawBody when a parser kept it, as a real app's would.
      Object.assign(req, { rawBody: body })
      next(req, res)
    })
  }
}

type Framework = 'express' | 'koa' | 'fetch'

/** A receiver app of each framework: the middleware under test, then a handler that records. */
async function startReceiver(framework: Framework, options: ReceiverOptions, extra: Record<string, unknown> = {}): Promise<Listening & Received> {
  const received: Received = { callbacks: [], requests: [] }
  let handler: RequestListener
  if (framework === 'express') {
    const app = express()
    for (const [path, body] of Object.entries(extra)) app.get(path, (_req, res) => void res.json(body))
    app.post('/callbacks', expressReceiver(options), (req, res) => {
      received.callbacks.push(req.callback!)
      res.sendStatus(204)
    })
    handler = app
  } else if (framework === 'koa') {
    const app = new Koa()
    app.silent = true
    // As @koa/bodyparser does: the raw bytes kept on ctx.request.rawBody.
    app.use((ctx, next) => {
      Object.assign(ctx.request, { rawBody: (ctx.req as { rawBody?: Buffer }).rawBody })
      return next()
    })
    app.use(koaReceiver(options))
    app.use((ctx) => {
      received.callbacks.push(ctx.state.callback!)
      ctx.status = 204
    })
    handler = app.callback()
  } else {
    const handle = callbackHandler(options, (callback) => {
      received.callbacks.push(callback)
      return new Response(null, { status: 204 })
    })
    handler = (req, res) => {
      const body = (req as { rawBody?: Buffer }).rawBody
      const request = new Request(`http://127.0.0.1${req.url}`, {
        method: req.method!,
        headers: req.headers as Record<string, string>,
        ...(body === undefined || body.length === 0 ? {} : { body }),
      })
      handle(request).then(
        async (response) => {
          res.writeHead(response.status, Object.fromEntries(response.headers))
          res.end(Buffer.from(await response.arrayBuffer()))
        },
        () => res.writeHead(500).end()
      )
    }
  }
  const server = await listening(createServer(recording(received, handler)))
  return Object.assign(server, received)
}

/** A JWKS endpoint on 127.0.0.1 that counts fetches and can be taken down. */
async function startJwksServer(serve: RequestListener) {
  const state = { fetches: 0, down: false }
  const server = await listening(
    createServer((req, res) => {
      state.fetches++
      if (state.down) res.writeHead(503).end()
      else serve(req, res)
    }),
    '/.well-known/jwks.json'
  )
  return Object.assign(server, { state })
}

/** A key ring whose entries the test replaces, as a sender's configuration changes over its life. */
function replaceableRing(first: KeyRing): KeyRing & { use(next: KeyRing): void } {
  let current = first
  return {
    signingKeys: () => current.signingKeys(),
    publicKeys: () => current.publicKeys(),
    publicJwks: () => current.publicJwks(),
    use(next) {
      current = next
    },
  }
}

function sender(extra: Omit<Partial<SenderOptions>, 'transport'> & { transport?: HttpTransportOptions } = {}) {
  const { transport: transportOptions, ...rest } = extra
  const transport = createHttpTransport({ urlPolicy, ...transportOptions })
  const events: DeliveryEvent[] = []
  const options: SenderOptions = {
    store: createMemoryStore(),
    transport,
    urlPolicy,
    retry: { jitter: 0 },
    onEvent: (event) => events.push(event),
    ...rest,
  }
  return { options, transport, events }
}

async function until(condition: () => boolean | Promise<boolean>, ms = 5_000): Promise<void> {
  const end = Date.now() + ms
  while (!(await condition())) {
    if (Date.now() > end) throw new Error(`not within ${ms} ms: ${String(condition)}`)
    await sleep(10)
  }
}

test("a key ring's JWKS lets the receiver verify across a rotation: the new key is fetched once it signs, the old one retires", async (t) => {
  // The ring's own clock moves in hours; signatures keep the real time the receiver checks.
  let ringOffsetMs = 0
  const ringNow = () => new Date(Date.now() + ringOffsetMs)
  const keyA = generateSigningKey()
  const keyB = generateSigningKey()
  const ring = replaceableRing(createKeyRing([{ signingKey: keyA.signingKey }], { now: ringNow }))
  const jwks = await startJwksServer(createJwksHandler(ring))
  t.after(() => jwks.close())
  // cooldownMs 0: in production the 30 s cooldown bounds refetches; here each rotation step is immediate.
  const receiver = await startReceiver('express', { jwks: createRemoteJwks(jwks.url, { allowHttp: true, cooldownMs: 0 }) })
  t.after(() => receiver.close())
  const { options, transport } = sender({ keyRing: ring })
  t.after(() => transport.close())

  const send = async (n: number) => {
    const task = await createCallbackTask({ callbackUrl: receiver.url, event: 'report.ready' }, options)
    return (await deliver(task, { n }, options)).status
  }

  assert.equal(await send(1), 'delivered')
  assert.equal(jwks.state.fetches, 1)

  // Rotation announced: B is published now and signs in an hour; A signs until then.
  const switchAt = new Date(ringNow().getTime() + 3_600_000)
  ring.use(
    createKeyRing(
      [
        { signingKey: keyA.signingKey, notAfter: switchAt },
        { signingKey: keyB.signingKey, notBefore: switchAt },
      ],
      { now: ringNow, graceMs: 3_600_000 }
    )
  )
  assert.equal(await send(2), 'delivered')
  assert.equal(jwks.state.fetches, 1, 'A still signs: the cached keys verify it')

  ringOffsetMs += 3_600_000 + 1_000 // past the switch: only B signs
  assert.equal(await send(3), 'delivered')
  assert.equal(jwks.state.fetches, 2, 'B was unknown to the cache: one refetch brought it')
  assert.deepEqual((await ring.publicJwks()).keys.length, 2, 'A stays published for the grace period')

  ringOffsetMs += 2 * 3_600_000 // past the grace period: A is no longer published
  assert.deepEqual(ring.publicKeys(), [keyB.publicKey])
  assert.equal(await send(4), 'delivered')

  assert.deepEqual(
    receiver.callbacks.map((callback) => callback.data),
    [{ n: 1 }, { n: 2 }, { n: 3 }, { n: 4 }]
  )
  const signatures = receiver.requests.map((request) => String(request.headers['webhook-signature']).split(' ').length)
  assert.deepEqual(signatures, [1, 1, 1, 1], 'one v1a signature per callback: the key of that instant')

  // A key the sender never published is refused, however the refetch goes.
  const forged = signPayload({ id: 'msg_forged', timestamp: new Date(), body: '{"type":"x","data":1}' }, { signingKey: generateSigningKey().signingKey })
  const answer = await fetch(receiver.url, { method: 'POST', headers: { ...forged, 'content-type': 'application/json' }, body: '{"type":"x","data":1}' })
  assert.equal(answer.status, 401)
  assert.equal(receiver.callbacks.length, 4)
})

test("while the sender's JWKS is down the receiver answers 503 with retry-after, and the task is delivered on a later attempt", async (t) => {
  const keys = generateSigningKey()
  const jwks = await startJwksServer(createJwksHandler(keys.signingKey))
  jwks.state.down = true
  t.after(() => jwks.close())
  // Starts at the real time (the receiver checks timestamps against it) and moves when told. The
  // receiver's key set runs on it too: after a failed fetch it waits out its cooldown.
  const clock = createTestClock(new Date())
  const receiver = await startReceiver('koa', { jwks: createRemoteJwks(jwks.url, { allowHttp: true, now: clock.now }) })
  t.after(() => receiver.close())
  const { options, transport } = sender({ signingKey: keys.signingKey, now: clock.now })
  t.after(() => transport.close())

  const task = await createCallbackTask({ callbackUrl: receiver.url, event: 'report.ready' }, options)
  const report = await deliver(task, { ok: true }, options)
  assert.equal(report.status, 'retrying')
  assert.equal(report.response?.status, 503)
  assert.ok(report.nextAttemptAt!.getTime() >= clock.now().getTime() + 30_000, 'the retry-after hint is honoured')
  assert.equal(receiver.callbacks.length, 0)

  jwks.state.down = false
  clock.advance(31_000)
  const worker = createWorker({ ...options, pollIntervalMs: 20 })
  worker.start()
  t.after(() => worker.stop())
  await until(async () => (await options.store.get(task.id))?.status === 'delivered')
  assert.deepEqual(receiver.callbacks.map((callback) => callback.data), [{ ok: true }])
})

for (const framework of ['express', 'koa', 'fetch'] as const) {
  test(`${framework}: with verifyIntent and the receiver's encryption JWKS URL, the middleware echoes the challenge and the handler gets the decrypted callback`, async (t) => {
    const { privateJwk, publicJwk } = await generateEncryptionKey()
    const secret = generateSecret()
    const receiverJwks = await startJwksServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/jwk-set+json' }).end(JSON.stringify({ keys: [publicJwk] }))
    })
    t.after(() => receiverJwks.close())
    const receiver = await startReceiver(framework, { secret, decryptionKey: privateJwk, replayGuard: true })
    t.after(() => receiver.close())
    const { options, transport } = sender({ secret, verifyIntent: true })
    t.after(() => transport.close())

    const task = await createCallbackTask({ callbackUrl: receiver.url, event: 'report.ready', encryptionKey: receiverJwks.url }, options)
    const report = await deliver(task, { account: 'acct_7', balance: 99 }, options)
    assert.equal(report.status, 'delivered')
    assert.equal(receiverJwks.state.fetches, 1)

    // On the wire: the challenge (plain JSON, signed), then the payload as a JWE.
    assert.equal(receiver.requests.length, 2)
    const [challenge, payload] = receiver.requests
    assert.ok(challenge!.headers['webhook-intent'])
    assert.equal(payload!.headers['content-type'], 'application/jose')
    assert.equal(payload!.body.split('.').length, 5)
    assert.ok(!payload!.body.includes('acct_7'))
    // The handler ran once, for the callback only, with the plaintext.
    assert.equal(receiver.callbacks.length, 1)
    assert.equal(receiver.callbacks[0]!.id, task.id)
    assert.equal(receiver.callbacks[0]!.type, 'report.ready')
    assert.deepEqual(receiver.callbacks[0]!.data, { account: 'acct_7', balance: 99 })

    // A ciphertext changed on the way, re-signed by someone holding the secret: signature fine, decryption refused.
    const parts = payload!.body.split('.')
    parts[3] = (parts[3]![0] === 'A' ? 'B' : 'A') + parts[3]!.slice(1)
    const tampered = parts.join('.')
    const resigned = signPayload({ id: 'msg_tampered', timestamp: new Date(), body: tampered }, { secret })
    const refused = await fetch(receiver.url, { method: 'POST', headers: { ...resigned, 'content-type': 'application/jose' }, body: tampered })
    assert.equal(refused.status, 400)
    assert.equal(((await refused.json()) as { code: string }).code, 'ERR_CALLBACK_DECRYPTION_FAILED')
    // The same change under the sender's own signature: the signature, over the ciphertext, no longer holds.
    const original = { ...payload!.headers } as Record<string, string>
    const mismatched = await fetch(receiver.url, {
      method: 'POST',
      headers: { 'webhook-id': original['webhook-id']!, 'webhook-timestamp': original['webhook-timestamp']!, 'webhook-signature': original['webhook-signature']!, 'content-type': 'application/jose' },
      body: tampered,
    })
    assert.equal(mismatched.status, 401)
    assert.equal(receiver.callbacks.length, 1)
  })
}

test('a receiver that does not echo the challenge never gets the payload: the task ends failed and is not retried', async (t) => {
  const received: Array<{ headers: IncomingMessage['headers']; body: string }> = []
  const plain = await listening(
    createServer((req, res) => {
      const chunks: Buffer[] = []
      req.on('data', (chunk: Buffer) => chunks.push(chunk))
      req.on('end', () => {
        received.push({ headers: req.headers, body: Buffer.concat(chunks).toString('utf8') })
        res.writeHead(204).end()
      })
    })
  )
  t.after(() => plain.close())
  const { options, transport, events } = sender({ secret: generateSecret() })
  t.after(() => transport.close())

  const task = await createCallbackTask({ callbackUrl: plain.url, event: 'report.ready', verifyIntent: true }, options)
  const report = await deliver(task, { payroll: 'confidential-42' }, options)
  assert.equal(report.status, 'failed')
  assert.match(report.error!, /^ERR_CALLBACK_INTENT_NOT_VERIFIED: 127\.0\.0\.1:\d+ did not confirm it wants these callbacks/)
  const stored = await options.store.get(task.id)
  assert.equal(stored?.status, 'failed')
  assert.equal(received.length, 1)
  assert.ok(received[0]!.headers['webhook-intent'])
  assert.ok(!received.some((request) => request.body.includes('confidential-42')))
  assert.deepEqual(
    events.map((event) => event.type),
    ['attempt', 'failed']
  )
})

test("a receiver's encryption JWKS that does not answer at deliver time keeps the task: it is retried, and sent encrypted once the JWKS answers", async (t) => {
  const { privateJwk, publicJwk } = await generateEncryptionKey()
  const secret = generateSecret()
  const receiverJwks = await startJwksServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: [publicJwk] }))
  })
  receiverJwks.state.down = true
  t.after(() => receiverJwks.close())
  const receiver = await startReceiver('express', { secret, decryptionKey: privateJwk })
  t.after(() => receiver.close())
  const clock = createTestClock(new Date())
  const { options, transport } = sender({ secret, now: clock.now })
  t.after(() => transport.close())

  const task = await createCallbackTask({ callbackUrl: receiver.url, event: 'report.ready', encryptionKey: receiverJwks.url }, options)
  const report = await deliver(task, { card: '4242-4242' }, options)
  assert.equal(report.status, 'retrying')
  assert.match(report.error!, /^ERR_CALLBACK_JWKS: /)
  assert.equal(receiver.requests.length, 0, 'nothing is sent unencrypted')
  assert.equal((await options.store.get(task.id))?.status, 'scheduled')

  receiverJwks.state.down = false
  clock.advance(5_000)
  const worker = createWorker({ ...options, pollIntervalMs: 20 })
  worker.start()
  t.after(() => worker.stop())
  await until(async () => (await options.store.get(task.id))?.status === 'delivered')
  assert.equal(receiver.requests.length, 1)
  assert.equal(receiver.requests[0]!.headers['content-type'], 'application/jose')
  assert.ok(!receiver.requests[0]!.body.includes('4242'))
  assert.deepEqual(receiver.callbacks.map((callback) => callback.data), [{ card: '4242-4242' }])
})

test('an encryption JWKS URL whose name resolves to a private address is refused at connect time: the task fails, nothing is dialled', async (t) => {
  const receiver = await startReceiver('express', { secret: generateSecret() })
  t.after(() => receiver.close())
  const lookups: string[] = []
  const dialled: string[] = []
  const realConnector = buildConnector({})
  const { options, transport } = sender({
    secret: generateSecret(),
    transport: {
      // The JWKS name answers with a private address; nothing but loopback may ever be dialled.
      lookup: (hostname, _options, callback) => {
        lookups.push(hostname)
        callback(null, [{ address: '10.0.0.7', family: 4 }])
      },
      connect: (connectOptions, callback) => {
        dialled.push(connectOptions.hostname)
        if (connectOptions.hostname !== '127.0.0.1') return callback(new Error('test connector: refusing to dial'), null)
        return realConnector(connectOptions, callback)
      },
    },
  })
  t.after(() => transport.close())

  const task = await createCallbackTask(
    { callbackUrl: receiver.url, event: 'report.ready', encryptionKey: 'http://keys.client.example:8080/jwks.json' },
    options
  )
  const report = await deliver(task, { ok: true }, options)
  assert.equal(report.status, 'failed')
  assert.match(report.error!, /^ERR_CALLBACK_URL_FORBIDDEN_ADDRESS: the JWKS URL of the task's encryptionKey is refused/)
  assert.ok(lookups.includes('keys.client.example'), 'the JWKS fetch went through the guarded agent')
  assert.deepEqual(dialled, [])
  assert.equal(receiver.requests.length, 0)
})
