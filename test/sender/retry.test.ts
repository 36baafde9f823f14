import { test } from 'node:test'
import assert from 'node:assert/strict'
import { DEFAULT_RETRY_SCHEDULE, resolveRetryOptions, scheduleNextAttempt } from '../../src/retry.ts'

const now = new Date('2030-01-01T00:00:00Z')
const at = (ms: number) => new Date(now.getTime() + ms)

test('the default schedule waits 5 s, 5 min, 30 min, 2 h, 5 h, 10 h and 10 h between attempts', () => {
  const retry = resolveRetryOptions({ jitter: 0 })
  const delays = [1, 2, 3, 4, 5, 6, 7].map((attempts) => scheduleNextAttempt(retry, { attempts, now })!.getTime() - now.getTime())
  assert.deepEqual(delays, [5_000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 36_000_000])
  assert.deepEqual([...DEFAULT_RETRY_SCHEDULE], delays)
})

test('the schedule length bounds the attempts: after schedule.length + 1 attempts nothing is scheduled', () => {
  assert.equal(scheduleNextAttempt(resolveRetryOptions({}), { attempts: 8, now }), undefined)
  const short = resolveRetryOptions({ schedule: [100, 200], jitter: 0 })
  assert.deepEqual(scheduleNextAttempt(short, { attempts: 2, now }), at(200))
  assert.equal(scheduleNextAttempt(short, { attempts: 3, now }), undefined)
  assert.equal(scheduleNextAttempt(resolveRetryOptions({ schedule: [] }), { attempts: 1, now }), undefined)
})

test('jitter spreads a delay by at most ±20 % by default', () => {
  const retry = resolveRetryOptions({})
  assert.deepEqual(scheduleNextAttempt(retry, { attempts: 2, now, random: () => 0 }), at(240_000))
  assert.deepEqual(scheduleNextAttempt(retry, { attempts: 2, now, random: () => 1 }), at(360_000))
  for (let i = 0; i < 200; i++) {
    const delay = scheduleNextAttempt(retry, { attempts: 2, now })!.getTime() - now.getTime()
    assert.ok(delay >= 240_000 && delay <= 360_000, `${delay} is outside ±20 %`)
  }
})

test('a Retry-After hint delays the next attempt but never brings it forward', () => {
  const retry = resolveRetryOptions({ schedule: [5_000], jitter: 0 })
  assert.deepEqual(scheduleNextAttempt(retry, { attempts: 1, now, retryAfterMs: 60_000 }), at(60_000))
  assert.deepEqual(scheduleNextAttempt(retry, { attempts: 1, now, retryAfterMs: 1_000 }), at(5_000))
})

test('a Retry-After hint is capped by maxRetryAfterMs, 24 hours by default', () => {
  const week = 7 * 24 * 3600_000
  const byDefault = resolveRetryOptions({ schedule: [5_000], jitter: 0 })
  assert.deepEqual(scheduleNextAttempt(byDefault, { attempts: 1, now, retryAfterMs: week }), at(24 * 3600_000))
  const capped = resolveRetryOptions({ schedule: [5_000], jitter: 0, maxRetryAfterMs: 30_000 })
  assert.deepEqual(scheduleNextAttempt(capped, { attempts: 1, now, retryAfterMs: week }), at(30_000))
})

test('bad retry options are TypeErrors naming the option', () => {
  const cases: [unknown, RegExp][] = [
    [{ schedule: [1, -1] }, /retry\.schedule/],
    [{ schedule: 'fast' }, /retry\.schedule/],
    [{ schedule: [Infinity] }, /retry\.schedule/],
    [{ jitter: 2 }, /retry\.jitter/],
    [{ deadlineMs: 0 }, /retry\.deadlineMs/],
    [{ maxRetryAfterMs: -5 }, /retry\.maxRetryAfterMs/],
    [{ retryStatuses: [500] }, /retry\.retryStatuses is gone.*retry\.failStatuses/],
    [{ failStatuses: [410] }, /retry\.failStatuses/],
    [{ failStatuses: [200] }, /retry\.failStatuses/],
    [{ shedule: [1] }, /retry: unknown option `shedule` \(did you mean `schedule`\?\)/],
    ['often', /retry must be an object/],
  ]
  for (const [options, message] of cases) {
    assert.throws(() => resolveRetryOptions(options as never), (error: unknown) => error instanceof TypeError && message.test(error.message))
  }
})

test('the resolved schedule is a copy: changing the caller array later changes nothing', () => {
  const schedule = [1_000]
  const retry = resolveRetryOptions({ schedule, jitter: 0 })
  schedule[0] = 99
  assert.deepEqual(scheduleNextAttempt(retry, { attempts: 1, now }), at(1_000))
})
