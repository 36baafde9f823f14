import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createServer } from 'node:http'
import express from 'express'
import type { ErrorRequestHandler } from 'express'
import { ReceiverError } from 'endpoint-callback'
import { callbackReceiver } from 'endpoint-callback/express'
import type { ReceiverOptions } from 'endpoint-callback/express'
import { listening, post } from '../support/http-harness.ts'
import { ROTATING, envelope, peakMemoryDuring, signed, streamOversized } from '../support/receiver-cases.ts'
import { receiverSuite } from '../support/receiver-suite.ts'
import type { StartHarness } from '../support/receiver-suite.ts'

const MiB = 1024 * 1024

const startExpress: StartHarness = (options, handle) => {
  const app = express()
  app.post('/callbacks', callbackReceiver(options), async (req, res) => {
    const callback = req.callback!
    const status = await handle(callback)
    res.status(status).json({ id: callback.id, type: callback.type, data: callback.data })
  })
  return listening(createServer(app))
}

receiverSuite('Express', startExpress)

test('Express stops reading a chunked body streamed far past maxBodyBytes and answers 413', async () => {
  let calls = 0
  const app = express()
  app.post('/callbacks', callbackReceiver(ROTATING), (_req, res) => void (calls++, res.sendStatus(200)))
  const server = await listening(createServer(app))
  try {
    const { result, peakGrowth } = await peakMemoryDuring(() =>
      streamOversized(server.url, signed('signPayload').headers, 50 * MiB)
    )
    assert.equal(result.status, 413)
    assert.equal(JSON.parse(result.body).code, 'ERR_CALLBACK_BODY_TOO_LARGE')
    assert.ok(result.bytesSent < 50 * MiB, `the client could push all ${result.bytesSent} bytes`)
    assert.ok(server.bytesRead() < 4 * MiB, `the server read ${server.bytesRead()} bytes of a 50 MiB stream`)
    assert.ok(peakGrowth < 16 * MiB, `memory in use grew by ${peakGrowth} bytes while streaming`)
    assert.equal(calls, 0)
  } finally {
    await server.close()
  }
})

test('Express refuses a declared content-length over maxBodyBytes before reading the body', async () => {
  const app = express()
  app.post('/callbacks', callbackReceiver({ ...ROTATING, maxBodyBytes: 1024 }), (_req, res) => void res.sendStatus(200))
  const server = await listening(createServer(app))
  try {
    const headers = { ...signed('signPayload').headers, 'content-length': String(20 * MiB) }
    const result = await streamOversized(server.url, headers, 20 * MiB)
    assert.equal(result.status, 413)
    assert.ok(server.bytesRead() < 4 * MiB, `the server read ${server.bytesRead()} bytes`)
  } finally {
    await server.close()
  }
})

test('Express fails with a configuration error naming the fix when express.json() consumed the body first', async () => {
  const errors: unknown[] = []
  let calls = 0
  const app = express()
  app.use(express.json())
  app.post('/callbacks', callbackReceiver(ROTATING), (_req, res) => void (calls++, res.sendStatus(200)))
  const onError: ErrorRequestHandler = (error, _req, res, _next) => {
    errors.push(error)
    res.status(500).json({ code: (error as ReceiverError).code })
  }
  app.use(onError)
  const server = await listening(createServer(app))
  try {
    const answer = await server.send(signed('standardwebhooks'))
    assert.equal(answer.status, 500)
    assert.equal(JSON.parse(answer.body).code, 'ERR_CALLBACK_RAW_BODY_UNAVAILABLE')
    const [error] = errors
    assert.ok(error instanceof ReceiverError)
    assert.equal(error.code, 'ERR_CALLBACK_RAW_BODY_UNAVAILABLE')
    assert.match(error.message, /express\.raw\(/)
    assert.match(error.message, /before express\.json\(\)/)
    assert.equal(calls, 0, 'never verified against re-serialised JSON')
  } finally {
    await server.close()
  }
})

test('Express answers 500 through its default error handler when no error handler is mounted', async () => {
  const app = express()
  app.use(express.json())
  app.post('/callbacks', callbackReceiver(ROTATING), (_req, res) => void res.sendStatus(200))
  app.set('env', 'test') // keeps finalhandler from printing the stack during the test run
  const server = await listening(createServer(app))
  try {
    assert.equal((await server.send(signed('signPayload'))).status, 500)
  } finally {
    await server.close()
  }
})

test('Express verifies the Buffer that express.raw() left on req.body', async () => {
  const app = express()
  app.post('/callbacks', express.raw({ type: '*/*' }), callbackReceiver(ROTATING), (req, res) => {
    res.json({ data: req.callback!.data })
  })
  const server = await listening(createServer(app))
  try {
    const valid = await server.send(signed('standardwebhooks'))
    assert.equal(valid.status, 200)
    assert.deepEqual(JSON.parse(valid.body).data, { reportId: 7, note: 'naïve ✓' })
    const sent = signed('signPayload')
    const tampered = await server.send({ ...sent, body: sent.body.replace('7', '8') })
    assert.equal(tampered.status, 401)
  } finally {
    await server.close()
  }
})

test('Express verifies the bytes a verify callback kept on req.rawBody, alongside the parsed JSON', async () => {
  const app = express()
  app.use(express.json({ verify: (req, _res, buf) => void ((req as { rawBody?: Buffer }).rawBody = buf) }))
  app.post('/callbacks', callbackReceiver(ROTATING), (req, res) => {
    res.json({ parsed: req.body.data, verified: req.callback!.data })
  })
  const server = await listening(createServer(app))
  try {
    // Spacing that JSON.stringify would not reproduce: only the kept bytes can verify.
    const sent = signed('standardwebhooks', { body: '{ "type": "report.ready",  "data": { "reportId": 7 } }' })
    const answer = await server.send(sent)
    assert.equal(answer.status, 200, answer.body)
    assert.deepEqual(JSON.parse(answer.body), { parsed: { reportId: 7 }, verified: { reportId: 7 } })
  } finally {
    await server.close()
  }
})

test('Express callbackReceiver checks its options when it is created, naming the option', () => {
  assert.throws(() => callbackReceiver({} as ReceiverOptions), { name: 'TypeError', message: /secret/ })
  assert.throws(() => callbackReceiver({ ...ROTATING, maxBodyBytes: -1 }), { name: 'TypeError', message: /maxBodyBytes/ })
  assert.throws(() => callbackReceiver({ ...ROTATING, contentTypes: ['json'] }), { name: 'TypeError', message: /contentTypes/ })
  assert.throws(() => callbackReceiver({ ...ROTATING, replayGuard: {} as never }), { name: 'TypeError', message: /replayGuard/ })
  assert.throws(() => callbackReceiver({ secret: 'whsec_!!' }), { name: 'TypeError', message: /secret/ })
})

test('Express keeps the connection usable for the next callback after a refusal', async () => {
  const server = await startExpress(ROTATING, () => 200)
  try {
    const url = (server as { url?: string }).url!
    assert.equal((await post(url, signed('signPayload', { secret: 'whsec_' + 'A'.repeat(32) }))).status, 401)
    assert.equal((await post(url, signed('signPayload', { body: envelope([1, 2]) }))).status, 200)
  } finally {
    await server.close()
  }
})
