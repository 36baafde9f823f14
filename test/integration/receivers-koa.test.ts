import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createServer } from 'node:http'
import Koa from 'koa'
import type { Middleware } from 'koa'
import { ReceiverError } from 'endpoint-callback'
import { callbackReceiver } from 'endpoint-callback/koa'
import type { ReceiverOptions } from 'endpoint-callback/koa'
import { listening } from '../support/http-harness.ts'
import { ROTATING, peakMemoryDuring, signed, streamOversized } from '../support/receiver-cases.ts'
import { receiverSuite } from '../support/receiver-suite.ts'
import type { StartHarness } from '../support/receiver-suite.ts'

const MiB = 1024 * 1024

function koaApp(): Koa {
  const app = new Koa()
  app.silent = true // the tests assert on errors themselves
  return app
}

const startKoa: StartHarness = (options, handle) => {
  const app = koaApp()
  app.use(callbackReceiver(options))
  app.use(async (ctx) => {
    const callback = ctx.state.callback!
    const status = await handle(callback)
    ctx.status = status
    ctx.body = { id: callback.id, type: callback.type, data: callback.data }
  })
  return listening(createServer(app.callback()))
}

receiverSuite('Koa', startKoa)

/** A JSON body parser as @koa/bodyparser behaves: parsed body, and the text when asked to keep it. */
function jsonBodyParser(keepRawBody: boolean): Middleware {
  return async (ctx, next) => {
    const chunks: Buffer[] = []
    for await (const chunk of ctx.req) chunks.push(chunk as Buffer)
    const text = Buffer.concat(chunks).toString('utf8')
    const request = ctx.request as typeof ctx.request & { body?: unknown; rawBody?: string }
    request.body = JSON.parse(text)
    if (keepRawBody) request.rawBody = text
    await next()
  }
}

test('Koa stops reading a chunked body streamed far past maxBodyBytes and answers 413', async () => {
  let calls = 0
  const app = koaApp()
  app.use(callbackReceiver(ROTATING))
  app.use((ctx) => void (calls++, (ctx.status = 200)))
  const server = await listening(createServer(app.callback()))
  try {
    const { result, peakGrowth } = await peakMemoryDuring(() =>
      streamOversized(server.url, signed('standardwebhooks').headers, 50 * MiB)
    )
    assert.equal(result.status, 413)
    assert.equal(JSON.parse(result.body).code, 'ERR_CALLBACK_BODY_TOO_LARGE')
    assert.ok(server.bytesRead() < 4 * MiB, `the server read ${server.bytesRead()} bytes of a 50 MiB stream`)
    assert.ok(peakGrowth < 16 * MiB, `memory in use grew by ${peakGrowth} bytes while streaming`)
    assert.equal(calls, 0)
  } finally {
    await server.close()
  }
})

test('Koa refuses a declared content-length over maxBodyBytes before reading the body', async () => {
  const app = koaApp()
  app.use(callbackReceiver({ ...ROTATING, maxBodyBytes: 1024 }))
  app.use((ctx) => void (ctx.status = 200))
  const server = await listening(createServer(app.callback()))
  try {
    const headers = { ...signed('signPayload').headers, 'content-length': String(20 * MiB) }
    const result = await streamOversized(server.url, headers, 20 * MiB)
    assert.equal(result.status, 413)
    assert.ok(server.bytesRead() < 4 * MiB, `the server read ${server.bytesRead()} bytes`)
  } finally {
    await server.close()
  }
})

test('Koa fails with a configuration error naming the fix when a body parser consumed the body first', async () => {
  const errors: unknown[] = []
  let calls = 0
  const app = koaApp()
  app.on('error', (error) => errors.push(error))
  app.use(jsonBodyParser(false))
  app.use(callbackReceiver(ROTATING))
  app.use((ctx) => void (calls++, (ctx.status = 200)))
  const server = await listening(createServer(app.callback()))
  try {
    const answer = await server.send(signed('signPayload'))
    assert.equal(answer.status, 500)
    const [error] = errors
    assert.ok(error instanceof ReceiverError)
    assert.equal(error.code, 'ERR_CALLBACK_RAW_BODY_UNAVAILABLE')
    assert.match(error.message, /before the body parser/)
    assert.match(error.message, /rawBody/)
    assert.equal(calls, 0, 'never verified against re-serialised JSON')
  } finally {
    await server.close()
  }
})

test('Koa verifies the text a body parser kept on ctx.request.rawBody', async () => {
  const app = koaApp()
  app.use(jsonBodyParser(true))
  app.use(callbackReceiver(ROTATING))
  app.use((ctx) => {
    ctx.body = { parsed: (ctx.request as { body?: { data?: unknown } }).body?.data, verified: ctx.state.callback!.data }
  })
  const server = await listening(createServer(app.callback()))
  try {
    const sent = signed('standardwebhooks', { body: '{ "type": "report.ready",  "data": { "reportId": 7 } }' })
    const answer = await server.send(sent)
    assert.equal(answer.status, 200, answer.body)
    assert.deepEqual(JSON.parse(answer.body), { parsed: { reportId: 7 }, verified: { reportId: 7 } })
    const tampered = await server.send({ ...sent, body: sent.body.replace('7', '9') })
    assert.equal(tampered.status, 401)
  } finally {
    await server.close()
  }
})

test('Koa callbackReceiver checks its options when it is created, naming the option', () => {
  assert.throws(() => callbackReceiver({} as ReceiverOptions), { name: 'TypeError', message: /secret/ })
  assert.throws(() => callbackReceiver({ ...ROTATING, maxBodyBytes: 1.5 }), { name: 'TypeError', message: /maxBodyBytes/ })
  assert.throws(() => callbackReceiver({ ...ROTATING, toleranceSeconds: -1 }), { name: 'TypeError', message: /toleranceSeconds/ })
})
