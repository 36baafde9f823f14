/**
 * When the next attempt of a task is due. Pure functions over resolved options, so the worker and
 * `deliver` share one schedule and tests can drive it with a fixed clock and a fixed random source.
 */
import { checkOptionNames } from './option-names.ts'
import type { RetryOptions } from './types.ts'

/** 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h: eight attempts over about 28 hours. */
export const DEFAULT_RETRY_SCHEDULE: readonly number[] = Object.freeze([
  5_000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 36_000_000,
])

const DEFAULT_JITTER = 0.2
const RETRY_OPTION_NAMES: ReadonlySet<string> = new Set(['schedule', 'jitter', 'deadlineMs', 'maxRetryAfterMs', 'failStatuses'])
const DEFAULT_MAX_RETRY_AFTER_MS = 24 * 60 * 60 * 1000

/** `RetryOptions` checked once, defaults filled. */
export interface ResolvedRetry {
  readonly schedule: readonly number[]
  readonly jitter: number
  readonly deadlineMs: number | undefined
  readonly maxRetryAfterMs: number
  /** Statuses that fail at once; every other non-2xx but 410 is retried. */
  readonly failStatuses: ReadonlySet<number>
}

function isDuration(value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value) && value >= 0
}

/** Validates `retry` (TypeError naming the option) and fills the defaults. */
export function resolveRetryOptions(retry: RetryOptions | undefined): ResolvedRetry {
  if (retry === undefined) retry = {}
  else if (typeof retry !== 'object' || retry === null) throw new TypeError('retry must be an object')
  const { schedule = DEFAULT_RETRY_SCHEDULE, jitter = DEFAULT_JITTER, deadlineMs } = retry
  if ('retryStatuses' in retry) {
    throw new TypeError(
      'retry.retryStatuses is gone: every answer but 2xx and 410 is now retried; list the statuses that should fail at once in retry.failStatuses'
    )
  }
  checkOptionNames(retry, RETRY_OPTION_NAMES, 'retry')
  const { maxRetryAfterMs = DEFAULT_MAX_RETRY_AFTER_MS, failStatuses = [] } = retry

  if (!Array.isArray(schedule) || !schedule.every(isDuration)) {
    throw new TypeError('retry.schedule must be an array of delays in milliseconds (finite numbers >= 0)')
  }
  if (typeof jitter !== 'number' || !(jitter >= 0 && jitter <= 1)) {
    throw new TypeError('retry.jitter must be a number from 0 to 1')
  }
  if (deadlineMs !== undefined && !(isDuration(deadlineMs) && deadlineMs > 0)) {
    throw new TypeError('retry.deadlineMs must be a positive number of milliseconds')
  }
  if (!isDuration(maxRetryAfterMs)) {
    throw new TypeError('retry.maxRetryAfterMs must be a number of milliseconds >= 0')
  }
  if (
    !Array.isArray(failStatuses) ||
    !failStatuses.every((status) => Number.isInteger(status) && status >= 300 && status <= 599 && status !== 410)
  ) {
    throw new TypeError('retry.failStatuses must be an array of HTTP status codes from 300 to 599 (410 always cancels)')
  }
  return Object.freeze({
    schedule: Object.freeze([...schedule]),
    jitter,
    deadlineMs,
    maxRetryAfterMs,
    failStatuses: new Set(failStatuses),
  })
}

/**
 * When the attempt after `attempts` attempts is due, or `undefined` when the schedule is used up.
 * A `Retry-After` hint (already in ms) moves it later, never earlier, and is capped.
 */
export function scheduleNextAttempt(
  retry: ResolvedRetry,
  next: { attempts: number; now: Date; retryAfterMs?: number | undefined; random?: () => number }
): Date | undefined {
  const base = retry.schedule[next.attempts - 1]
  if (base === undefined) return undefined
  const random = next.random ?? Math.random
  // Spread retries of tasks that failed together, so a receiver coming back is not hit all at once.
  let delay = retry.jitter === 0 ? base : base * (1 + retry.jitter * (2 * random() - 1))
  if (next.retryAfterMs !== undefined) delay = Math.max(delay, Math.min(next.retryAfterMs, retry.maxRetryAfterMs))
  return new Date(next.now.getTime() + Math.round(delay))
}
