import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import type { ServerResponse } from 'node:http'
import {
  CallbackError,
  DeliveryError,
  UrlPolicyError,
  answerIntentChallenge,
  createHttpTransport,
  generateSecret,
  signPayload,
  verifyIntent,
  verifySignature,
  type IntentAnswer
} from 'endpoint-callback'
import { startLoopbackServer, type ReceivedRequest } from '../support/loopback-server.ts'
import { within } from '../support/waits.ts'

const secret = generateSecret()
const transport = createHttpTransport({ urlPolicy: { allowHttp: true, allowHosts: ['127.0.0.1'] } })
after(() => transport.close?.())
const sign = (message: { id: string; timestamp: Date; body: string }) => signPayload(message, { secret })

function send(res: ServerResponse, answer: IntentAnswer) {
  res.writeHead(answer.status, answer.headers).end(answer.body)
}

/** What a receiver adapter does: verify the signature first, then answer a challenge if it is one. */
function receiver(receiverSecret: string) {
  return async (req: ReceivedRequest, res: ServerResponse) => {
    try {
      await verifySignature({ headers: req.headers, body: req.body }, { secret: receiverSecret })
    } catch {
      res.writeHead(401, { 'content-type': 'application/problem+json' }).end('{"title":"signature","status":401}')
      return
    }
    const answer = answerIntentChallenge({ method: req.method, headers: req.headers })
    if (answer) send(res, answer)
    else res.writeHead(204).end()
  }
}

function notVerified(error: unknown) {
  return error instanceof CallbackError && error.code === 'ERR_CALLBACK_INTENT_NOT_VERIFIED'
}

test('an endpoint that verifies the signed challenge and echoes it passes intent verification', async () => {
  const server = await startLoopbackServer(receiver(secret))
  after(() => server.close())
  await verifyIntent(`${server.origin}/callbacks`, { transport, sign })

  assert.equal(server.requests.length, 1)
  const [request] = server.requests
  assert.equal(request?.method, 'POST')
  const challenge = request?.headers['webhook-intent'] as string
  assert.match(challenge, /^[A-Za-z0-9_-]{43}$/)
  assert.match(request?.headers['webhook-id'] as string, /^intent_/, 'never the task id, so a replay guard cannot swallow the real callback')
  const body = JSON.parse(request?.body ?? '')
  assert.equal(body.type, 'webhook.intent')
  assert.equal(body.data.challenge, challenge)
})

test('an endpoint that does not hold the sender secret answers 401 and the URL is not verified', async () => {
  const server = await startLoopbackServer(receiver(generateSecret()))
  after(() => server.close())
  await assert.rejects(verifyIntent(`${server.origin}/callbacks`, { transport, sign }), (error: unknown) => {
    assert.ok(notVerified(error))
    assert.match((error as Error).message, /401/)
    assert.ok(!(error as Error).message.includes(secret))
    return true
  })
})

test('an endpoint that answers 2xx without the challenge, or with an earlier one, is not verified', async () => {
  const silent = await startLoopbackServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' }).end('ok')
  })
  after(() => silent.close())
  await assert.rejects(verifyIntent(`${silent.origin}/`, { transport, sign }), notVerified)

  // A replayer remembers the first challenge and echoes it forever: every challenge is fresh, so it fails.
  let remembered: string | undefined
  const replayer = await startLoopbackServer((req, res) => {
    remembered ??= req.headers['webhook-intent'] as string
    res.writeHead(200, { 'content-type': 'text/plain' }).end(remembered)
  })
  after(() => replayer.close())
  await verifyIntent(`${replayer.origin}/`, { transport, sign })
  await assert.rejects(verifyIntent(`${replayer.origin}/`, { transport, sign }), notVerified)

  const echoesBody = await startLoopbackServer((req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' }).end(req.body)
  })
  after(() => echoesBody.close())
  await assert.rejects(verifyIntent(`${echoesBody.origin}/`, { transport, sign }), notVerified)
})

test('an endpoint that never answers is given up after timeoutMs with a retryable ERR_CALLBACK_TIMEOUT', async () => {
  const hanging = await startLoopbackServer(() => {})
  after(() => hanging.close())
  await assert.rejects(
    within(verifyIntent(`${hanging.origin}/`, { transport, sign, timeoutMs: 200 }), 'the 200 ms intent timeout did not end the challenge', 10_000),
    (error: unknown) => error instanceof DeliveryError && error.code === 'ERR_CALLBACK_TIMEOUT'
  )
  assert.equal(hanging.requests.length, 1)

  // A worker that stops aborts the challenge with its own reason.
  const stop = new AbortController()
  const pending = verifyIntent(`${hanging.origin}/`, { transport, sign, signal: stop.signal })
  const reason = new Error('worker stopping')
  setTimeout(() => stop.abort(reason), 50)
  await assert.rejects(pending, (error: unknown) => error === reason)
})

test('a URL the policy refuses is never contacted and rejects with the UrlPolicyError', async () => {
  const server = await startLoopbackServer(receiver(secret))
  after(() => server.close())
  const guarded = createHttpTransport() // default policy: https only, no loopback
  after(() => guarded.close?.())
  await assert.rejects(verifyIntent(`${server.origin}/callbacks`, { transport: guarded, sign }), UrlPolicyError)
  await assert.rejects(
    verifyIntent(`https://127.0.0.1:${new URL(server.origin).port}/callbacks`, { transport: guarded, sign }),
    (error: unknown) => error instanceof UrlPolicyError && error.code === 'ERR_CALLBACK_URL_FORBIDDEN_ADDRESS'
  )
  assert.equal(server.requests.length, 0)
})

test('answerIntentChallenge answers only POST challenges, echoes well-formed ones and never reflects anything else', () => {
  const challenge = 'Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0Z2FycGx5'
  assert.deepEqual(answerIntentChallenge({ method: 'POST', headers: { 'webhook-intent': challenge } }), {
    status: 200,
    headers: { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' },
    body: challenge
  })
  assert.equal(answerIntentChallenge({ method: 'post', headers: new Headers({ 'Webhook-Intent': challenge }) })?.body, challenge)
  assert.equal(answerIntentChallenge({ method: 'POST', headers: { 'Webhook-Intent': [challenge] } })?.body, challenge)
  assert.equal(answerIntentChallenge({ method: 'GET', headers: { 'webhook-intent': challenge } }), undefined)
  assert.equal(answerIntentChallenge({ method: 'POST', headers: { 'webhook-id': 'task_1' } }), undefined)
  const hostile = '<script>alert(1)</script>'
  const refused = answerIntentChallenge({ method: 'POST', headers: { 'webhook-intent': hostile } })
  assert.equal(refused?.status, 400)
  assert.ok(!refused?.body.includes('script'))
})

test('verifyIntent checks its options before sending anything', async () => {
  await assert.rejects(verifyIntent('https://a.example/', {} as never), /transport/)
  await assert.rejects(verifyIntent('https://a.example/', { transport, timeoutMs: 0 }), /timeoutMs/)
  await assert.rejects(verifyIntent('https://a.example/', { transport, sign: 'no' as never }), /sign/)
  await assert.rejects(verifyIntent('', { transport }), /url/)
})
