import { test } from 'node:test'
import assert from 'node:assert/strict'
import { classifyError, classifyResponse, describeError, parseRetryAfter } from '../../src/outcome.ts'
import { resolveRetryOptions } from '../../src/retry.ts'
import { CallbackError, DeliveryError, UrlPolicyError } from 'endpoint-callback'

const now = new Date('2030-01-01T00:00:00Z')
const retry = resolveRetryOptions({})
const response = (status: number, headers: Record<string, string> = {}) => ({ status, headers, body: '', durationMs: 1 })
const outcomeOf = (status: number) => classifyResponse(response(status), retry, now).outcome

test('every 2xx status counts as delivered', () => {
  for (const status of [200, 201, 202, 204, 299]) assert.equal(outcomeOf(status), 'delivered')
})

test('a redirect is never followed, and is retried on the schedule like any other non-2xx', () => {
  for (const status of [301, 302, 307, 308]) assert.equal(outcomeOf(status), 'retry')
  assert.match(classifyResponse(response(302), retry, now).reason!, /HTTP 302: redirects are not followed/)
})

test('408, 425, 429 and every 5xx are retried', () => {
  for (const status of [408, 425, 429, 500, 502, 503, 504, 599]) assert.equal(outcomeOf(status), 'retry', String(status))
})

test('410 Gone cancels the task', () => {
  assert.equal(outcomeOf(410), 'cancelled')
})

test('every other 4xx is retried by default, as Svix and Stripe do: a 401 mid-rotation, a 404 not deployed yet', () => {
  for (const status of [400, 401, 403, 404, 409, 413, 422]) assert.equal(outcomeOf(status), 'retry', String(status))
})

test('retry.failStatuses opts chosen statuses into failing at once', () => {
  const strict = resolveRetryOptions({ failStatuses: [400, 422, 301] })
  assert.deepEqual(classifyResponse(response(422), strict, now), { outcome: 'failed', reason: 'HTTP 422' })
  assert.equal(classifyResponse(response(301), strict, now).outcome, 'failed')
  assert.equal(classifyResponse(response(404), strict, now).outcome, 'retry')
  assert.equal(classifyResponse(response(410), strict, now).outcome, 'cancelled')
})

test('Retry-After is read from 429 and 503, in seconds or as an HTTP date', () => {
  assert.equal(classifyResponse(response(429, { 'retry-after': '120' }), retry, now).retryAfterMs, 120_000)
  const date = new Date(now.getTime() + 90_000).toUTCString()
  assert.equal(classifyResponse(response(503, { 'retry-after': date }), retry, now).retryAfterMs, 90_000)
  assert.equal(classifyResponse(response(500, { 'retry-after': '120' }), retry, now).retryAfterMs, undefined)
})

test('an unreadable Retry-After is ignored and a date in the past means no extra wait', () => {
  assert.equal(parseRetryAfter('soon', now), undefined)
  assert.equal(parseRetryAfter('-5', now), undefined)
  assert.equal(parseRetryAfter(undefined, now), undefined)
  assert.equal(parseRetryAfter(new Date(now.getTime() - 60_000).toUTCString(), now), 0)
  assert.equal(parseRetryAfter([' 7 '], now), 7_000)
})

test('network failures are retried and a refused address fails for good', () => {
  for (const code of ['ERR_CALLBACK_TIMEOUT', 'ERR_CALLBACK_CONNECTION', 'ERR_CALLBACK_DNS', 'ERR_CALLBACK_TLS'] as const) {
    const verdict = classifyError(new DeliveryError(code, 'boom'))
    assert.equal(verdict.outcome, 'retry')
    assert.equal(verdict.reason, `${code}: boom`)
  }
  const refused = classifyError(new UrlPolicyError('ERR_CALLBACK_URL_FORBIDDEN_ADDRESS', '10.0.0.1 is a private address'))
  assert.deepEqual(refused, { outcome: 'failed', reason: 'ERR_CALLBACK_URL_FORBIDDEN_ADDRESS: 10.0.0.1 is a private address' })
})

test('an error description is short and keeps the code', () => {
  assert.equal(describeError(Object.assign(new Error('reset'), { code: 'ECONNRESET' })), 'ECONNRESET: reset')
  assert.equal(describeError('odd'), 'Error: odd')
  assert.ok(describeError(new Error('x'.repeat(5000))).length <= 300)
})

test('a callback URL that did not show its intent fails for good: the payload is never sent to it', () => {
  const verdict = classifyError(new CallbackError('ERR_CALLBACK_INTENT_NOT_VERIFIED', 'client.example did not confirm it wants these callbacks'))
  assert.deepEqual(verdict, {
    outcome: 'failed',
    reason: 'ERR_CALLBACK_INTENT_NOT_VERIFIED: client.example did not confirm it wants these callbacks',
  })
})
