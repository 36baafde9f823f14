import { test } from 'node:test'
import assert from 'node:assert/strict'
import { cooldownAfter, createFailureCounter, isDestinationFailure, resolveBreakerOptions } from '../../src/destinations/breaker.ts'
import { throttleFor } from '../../src/destinations/throttle.ts'
import { originOf, resolveDestinationOf } from '../../src/destinations/destination.ts'
import type { AttemptRecord } from 'endpoint-callback'

const defaults = resolveBreakerOptions(undefined)
const at = Date.UTC(2030, 0, 1)

test('the breaker opens after 5 failures in a row by default, and a success in between starts the count again', () => {
  const counter = createFailureCounter(defaults)
  for (let i = 0; i < 4; i++) assert.equal(counter.record('a', true, at + i), false)
  assert.equal(counter.record('a', false, at + 4), false)
  for (let i = 0; i < 4; i++) assert.equal(counter.record('a', true, at + 5 + i), false)
  assert.equal(counter.record('a', true, at + 9), true)
})

test('it opens when half of at least 10 attempts in the last minute failed, and forgets attempts older than the window', () => {
  const counter = createFailureCounter(defaults)
  // alternating: never 5 in a row, but 50 % of 10 or more, counted from the first failure
  let opened = false
  for (let i = 0; i < 12; i++) opened = counter.record('b', i % 2 === 1, at + i * 1000)
  assert.equal(opened, true)
  const spread = createFailureCounter(defaults)
  // the same pattern spread over ten minutes: never 10 attempts within a minute
  for (let i = 0; i < 10; i++) assert.equal(spread.record('c', i % 2 === 1, at + i * 61_000), false)
})

test('destinations are counted apart, and a reset forgets one', () => {
  const counter = createFailureCounter(resolveBreakerOptions({ failures: 2 }))
  assert.equal(counter.record('a', true, at), false)
  assert.equal(counter.record('b', true, at), false)
  counter.reset('a')
  assert.equal(counter.record('a', true, at), false)
  assert.equal(counter.record('b', true, at), true)
})

test('the cool-down doubles with each failed probe up to its maximum', () => {
  assert.deepEqual([1, 2, 3, 4, 5, 6, 7, 50].map((openings) => cooldownAfter(defaults, openings)), [30_000, 60_000, 120_000, 240_000, 480_000, 600_000, 600_000, 600_000])
})

test('timeouts, refused connections, DNS and TLS errors, 408 and 5xx are failures; any other answer is not', () => {
  const record = (extra: Partial<AttemptRecord>): AttemptRecord => ({ attempt: 1, startedAt: new Date(at), durationMs: 1, outcome: 'retry', ...extra })
  for (const error of ['ERR_CALLBACK_TIMEOUT: x', 'ERR_CALLBACK_CONNECTION: x', 'ERR_CALLBACK_DNS: x', 'ERR_CALLBACK_TLS: x']) {
    assert.equal(isDestinationFailure(record({ error })), true, error)
  }
  assert.equal(isDestinationFailure(record({ error: 'ERR_CALLBACK_URL_FORBIDDEN_ADDRESS: x' })), false)
  for (const status of [408, 500, 502, 503, 504]) assert.equal(isDestinationFailure(record({ status })), true, String(status))
  for (const status of [200, 204, 400, 404, 410, 429]) assert.equal(isDestinationFailure(record({ status })), false, String(status))
})

test('Retry-After on 429, 502, 503 or 504 throttles, capped; other statuses and missing hints do not', () => {
  const now = new Date(at)
  const response = (status: number, retryAfter?: string) => ({ status, headers: retryAfter === undefined ? {} : { 'retry-after': retryAfter }, body: '', durationMs: 1 })
  assert.equal(throttleFor(response(429, '120'), now, 86_400_000), 120_000)
  assert.equal(throttleFor(response(503, new Date(at + 30_000).toUTCString()), now, 86_400_000), 30_000)
  assert.equal(throttleFor(response(429, '999999'), now, 60_000), 60_000)
  assert.equal(throttleFor(response(500, '120'), now, 86_400_000), undefined)
  assert.equal(throttleFor(response(429), now, 86_400_000), undefined)
  assert.equal(throttleFor(undefined, now, 86_400_000), undefined)
})

test("a task's destination is its callback URL's origin unless the sender maps it, and a bad mapping is a TypeError", () => {
  assert.equal(originOf('https://Hooks.Example.com:443/a?b'), 'https://hooks.example.com')
  assert.equal(originOf('https://hooks.example.com:8443/a'), 'https://hooks.example.com:8443')
  const task = { id: 't', callbackUrl: 'https://x.example/cb', event: 'e', metadata: { tenant: 'acme' } }
  assert.equal(resolveDestinationOf(undefined)(task), 'https://x.example')
  assert.equal(resolveDestinationOf((one: typeof task) => String(one.metadata.tenant))(task), 'acme')
  assert.throws(() => resolveDestinationOf('tenant'), { name: 'TypeError', message: /destination must be a function/ })
  assert.throws(() => resolveDestinationOf(() => '')(task), { name: 'TypeError', message: /destination\(task\) must return/ })
})

test('breaker options are checked once, naming the option', () => {
  assert.throws(() => resolveBreakerOptions({ failures: 0 }), /breaker\.failures/)
  assert.throws(() => resolveBreakerOptions({ failureRate: 2 }), /breaker\.failureRate/)
  assert.throws(() => resolveBreakerOptions({ cooldownMs: 1000, maxCooldownMs: 10 }), /breaker\.maxCooldownMs/)
})

test('createWorker checks perDestination and breaker at once', async () => {
  const { createMemoryStore, createWorker, generateSecret } = await import('endpoint-callback')
  const sender = { store: createMemoryStore(), secret: generateSecret() }
  assert.throws(() => createWorker({ ...sender, perDestination: 0 }), { name: 'TypeError', message: /perDestination/ })
  assert.throws(() => createWorker({ ...sender, breaker: { windowMs: -1 } }), { name: 'TypeError', message: /breaker\.windowMs/ })
  assert.doesNotThrow(() => createWorker({ ...sender, breaker: false }))
})

test('a streak among mostly answered attempts does not open the breaker; one four times as long does', () => {
  const counter = createFailureCounter(defaults)
  // answered attempts before the first failure do not count; from it on: 1 failure in 5, then 5 in a row
  for (let i = 0; i < 50; i++) assert.equal(counter.record('busy', false, at + i), false)
  let opened = false
  for (let i = 0; i < 40; i++) opened ||= counter.record('busy', i % 5 === 0, at + 100 + i)
  for (let i = 0; i < 5; i++) opened ||= counter.record('busy', true, at + 200 + i)
  assert.equal(opened, false, '5 in a row among 8 failures of 45 attempts')
  // the destination dies: it opens once half the window's attempts failed, by 20 in a row at the latest
  let more = 0
  while (!counter.record('busy', true, at + 300 + more)) more++
  assert.ok(5 + more + 1 <= 20, `opened after ${5 + more + 1} failures in a row`)
  const long = createFailureCounter(defaults)
  for (let i = 0; i < 200; i++) long.record('long', i % 5 === 0, at + i)
  let streak = 0
  while (!long.record('long', true, at + 1000 + streak)) streak++
  assert.equal(streak + 1, 20, 'four times `failures` in a row opens it after 200 mostly answered attempts')
})

test("a worker's own count keeps the window's last 512 attempts and their failures exactly, however many come", () => {
  const breaker = resolveBreakerOptions({ windowMs: 1_000, failures: 1_000_000 })
  const counter = createFailureCounter(breaker)
  const seen: Array<{ at: number; failed: boolean }> = []
  let random = 7
  let now = at
  for (let i = 0; i < 5_000; i++) {
    random = (random * 48271) % 2147483647
    now += random % 7 // bursts and gaps: up to 6 ms apart, so the window holds 300-1,000 attempts
    const failed = random % 100 < (i < 2_500 ? 30 : 60)
    counter.record('d', failed, now)
    seen.push({ at: now, failed })
    const window = seen.filter((one) => one.at > now - 1_000).slice(-512)
    const failures = window.filter((one) => one.failed).length
    const expected = failures === window.length || (window.length >= 20 && failures >= 0.5 * window.length)
    if (counter.failing('d') !== expected) assert.fail(`after ${i + 1} attempts: failing() is ${!expected}, ${failures} of ${window.length} failed`)
  }
})
