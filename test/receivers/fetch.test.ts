import { test } from 'node:test'
import assert from 'node:assert/strict'
import { ReceiverError, SignatureVerificationError } from 'endpoint-callback'
import { callbackHandler, verifyRequest } from 'endpoint-callback/fetch'
import type { ReceiverOptions } from 'endpoint-callback/fetch'
import { ROTATING, receiverCases, signed } from '../support/receiver-cases.ts'
import type { SignedCallback } from '../support/receiver-cases.ts'
import { receiverSuite } from '../support/receiver-suite.ts'
import { within } from '../support/waits.ts'

const MiB = 1024 * 1024

function webRequest(callback: SignedCallback): Request {
  return new Request('http://127.0.0.1/callbacks', { method: 'POST', headers: callback.headers, body: callback.body })
}

/** A body stream of `total` bytes made on demand, counting how much was pulled from it. */
function countingStream(total: number): { stream: ReadableStream<Uint8Array>; pulled: () => number } {
  const chunk = new Uint8Array(64 * 1024).fill(0x61)
  let pulled = 0
  const stream = new ReadableStream<Uint8Array>(
    {
      pull(controller) {
        if (pulled >= total) return controller.close()
        pulled += chunk.byteLength
        controller.enqueue(chunk)
      },
    },
    { highWaterMark: 0 }
  )
  return { stream, pulled: () => pulled }
}

for (const signer of ['standardwebhooks', 'signPayload'] as const) {
  test(`verifyRequest resolves or throws alike for Web Requests signed by ${signer}`, async (t) => {
    for (const testCase of receiverCases(signer)) {
      await t.test(testCase.name, async () => {
        const sent = testCase.request()
        if (testCase.code === undefined) {
          const callback = await verifyRequest(webRequest(sent), ROTATING)
          assert.equal(callback.id, sent.headers['webhook-id'])
          assert.equal(callback.type, 'report.ready')
          assert.deepEqual(callback.data, { reportId: 7, note: 'naïve ✓' })
          assert.equal(callback.body, sent.body)
        } else {
          await assert.rejects(verifyRequest(webRequest(sent), ROTATING), (error) => {
            assert.ok(error instanceof SignatureVerificationError)
            assert.equal(error.code, testCase.code)
            return true
          })
        }
      })
    }
  })
}

test('verifyRequest stops pulling a streamed body soon after maxBodyBytes and throws ERR_CALLBACK_BODY_TOO_LARGE', async () => {
  const { stream, pulled } = countingStream(50 * MiB)
  const request = new Request('http://127.0.0.1/callbacks', {
    method: 'POST',
    headers: signed('signPayload').headers,
    body: stream,
    duplex: 'half',
  } as RequestInit)
  await assert.rejects(verifyRequest(request, ROTATING), { name: 'ReceiverError', code: 'ERR_CALLBACK_BODY_TOO_LARGE' })
  assert.ok(pulled() <= 2 * MiB, `${pulled()} bytes were pulled from a 50 MiB stream`)
})

test('verifyRequest refuses a declared content-length over maxBodyBytes without reading the body', async () => {
  const { stream, pulled } = countingStream(10 * MiB)
  const request = new Request('http://127.0.0.1/callbacks', {
    method: 'POST',
    headers: { ...signed('signPayload').headers, 'content-length': String(10 * MiB) },
    body: stream,
    duplex: 'half',
  } as RequestInit)
  await assert.rejects(verifyRequest(request, { ...ROTATING, maxBodyBytes: 1024 }), { code: 'ERR_CALLBACK_BODY_TOO_LARGE' })
  assert.equal(pulled(), 0)
})

test('verifyRequest explains that a body read before it cannot be verified', async () => {
  const request = webRequest(signed('standardwebhooks'))
  await request.json()
  await assert.rejects(verifyRequest(request, ROTATING), (error) => {
    assert.ok(error instanceof ReceiverError)
    assert.equal(error.code, 'ERR_CALLBACK_RAW_BODY_UNAVAILABLE')
    assert.match(error.message, /request\.clone\(\)/)
    return true
  })
})

test('verifyRequest checks options once per options object and names the bad option', async () => {
  await assert.rejects(async () => verifyRequest(webRequest(signed('signPayload')), {} as ReceiverOptions), {
    name: 'TypeError',
    message: /secret/,
  })
  await assert.rejects(async () => verifyRequest(webRequest(signed('signPayload')), { ...ROTATING, maxBodyBytes: -5 }), {
    name: 'TypeError',
    message: /maxBodyBytes/,
  })
  await assert.rejects(async () => verifyRequest(webRequest(signed('signPayload')), { ...ROTATING, replayGuard: true }), {
    name: 'TypeError',
    message: /replayGuard.*callbackHandler/,
  })
  const options = { ...ROTATING }
  for (let i = 0; i < 3; i++) assert.equal((await verifyRequest(webRequest(signed('signPayload')), options)).type, 'report.ready')
})

test('callbackHandler lets a handler error through after forgetting the id, so the framework answers it', async () => {
  const handle = callbackHandler({ ...ROTATING, replayGuard: true }, () => {
    throw new Error('the database is down')
  })
  await assert.rejects(handle(webRequest(signed('signPayload', { id: 'msg_throws' }))), /the database is down/)
  await assert.rejects(handle(webRequest(signed('signPayload', { id: 'msg_throws' }))), /the database is down/, 'the retry ran the handler again')
})

test('callbackHandler passes the original Request to the handler', async () => {
  const handle = callbackHandler(ROTATING, (callback, request) => Response.json({ id: callback.id, url: request.url }))
  const sent = signed('standardwebhooks')
  const answer: unknown = await (await handle(webRequest(sent))).json()
  assert.deepEqual(answer, { id: sent.headers['webhook-id'], url: 'http://127.0.0.1/callbacks' })
})

test('callbackHandler answers a refusal with a problem document of only type, title, status and code', async () => {
  const handle = callbackHandler(ROTATING, () => new Response(null, { status: 204 }))
  const response = await handle(webRequest(signed('signPayload', { secret: 'whsec_' + 'B'.repeat(32) })))
  assert.equal(response.status, 401)
  assert.equal(response.headers.get('content-type'), 'application/problem+json; charset=utf-8')
  const problem = (await response.json()) as object
  assert.deepEqual(Object.keys(problem).sort(), ['code', 'status', 'title', 'type'])
})

receiverSuite('A fetch callbackHandler', async (options, handle) => {
  const handler = callbackHandler(options, async (callback) => {
    const status = await handle(callback)
    return Response.json({ id: callback.id, type: callback.type, data: callback.data }, { status })
  })
  return {
    async send(callback) {
      let response: Response
      try {
        response = await handler(webRequest(callback))
      } catch {
        response = new Response('internal error', { status: 500 }) // what a framework answers for a throw
      }
      return { status: response.status, contentType: response.headers.get('content-type'), body: await response.text() }
    },
    async hangUp(callback, when) {
      // a framework drops the Response when the client is gone; the handler runs on regardless
      void handler(webRequest(callback)).catch(() => {})
      await within(when, 'the handler was never entered for the request to hang up on')
    },
    async close() {},
  }
})
