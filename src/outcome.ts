/**
 * What an attempt led to. One table for the worker and `deliver`, so a status means the same thing
 * whoever sent it.
 */
import { CallbackError, UrlPolicyError } from './errors.ts'
import type { AttemptRecord, TransportResponse } from './types.ts'
import type { ResolvedRetry } from './retry.ts'

/** The verdict on one attempt, before the schedule is consulted. */
export interface AttemptVerdict {
  outcome: AttemptRecord['outcome']
  /** Why it was not delivered, for `lastError` and the attempt record. */
  reason?: string
  /** A `Retry-After` hint in ms from `now`, when the receiver gave one with 429 or 503. */
  retryAfterMs?: number
}

const MAX_REASON_LENGTH = 300

/**
 * Parses `Retry-After`: delta seconds or an HTTP date. Returns ms from `now` (0 for a date in the
 * past), or `undefined` when absent or unreadable.
 */
export function parseRetryAfter(value: string | string[] | undefined, now: Date): number | undefined {
  if (Array.isArray(value)) value = value[0]
  if (value === undefined) return undefined
  value = value.trim()
  if (/^\d+$/.test(value)) return Number(value) * 1000
  // An HTTP date always names the day or month; Date.parse alone would read '-5' as a year.
  const at = /[a-z]/i.test(value) ? Date.parse(value) : Number.NaN
  if (Number.isNaN(at)) return undefined
  return Math.max(0, at - now.getTime())
}

/**
 * Classifies a response: 2xx delivered; 410 cancels; every other status (3xx, never followed; 4xx;
 * 5xx) is retried on the schedule, as Svix and Stripe do, unless listed in `retry.failStatuses`.
 */
export function classifyResponse(response: TransportResponse, retry: ResolvedRetry, now: Date): AttemptVerdict {
  const { status } = response
  if (status >= 200 && status <= 299) return { outcome: 'delivered' }
  const reason = `HTTP ${status}`
  if (status === 410) return { outcome: 'cancelled', reason: `${reason}: the receiver asked to stop` }
  const redirect = status >= 300 && status <= 399
  const described = redirect ? `${reason}: redirects are not followed` : reason
  if (retry.failStatuses.has(status)) return { outcome: 'failed', reason: described }
  if (status === 429 || status === 503) {
    const retryAfterMs = parseRetryAfter(response.headers['retry-after'], now)
    return retryAfterMs === undefined ? { outcome: 'retry', reason } : { outcome: 'retry', reason, retryAfterMs }
  }
  if (status >= 300 && status <= 599) return { outcome: 'retry', reason: described }
  return { outcome: 'failed', reason: `${reason}: not a valid final status` }
}

/**
 * Classifies a send that produced no response: a refused address, and a callback URL that did not
 * show its intent (`ERR_CALLBACK_INTENT_NOT_VERIFIED`: the payload is never sent), fail for good;
 * timeouts, resets, DNS and TLS errors (and anything unexpected from a transport) are retried.
 */
export function classifyError(error: unknown): AttemptVerdict {
  const reason = describeError(error)
  if (error instanceof UrlPolicyError) return { outcome: 'failed', reason }
  if (error instanceof CallbackError && error.code === 'ERR_CALLBACK_INTENT_NOT_VERIFIED') return { outcome: 'failed', reason }
  return { outcome: 'retry', reason }
}

/** `CODE: message`, short enough to store. Error messages of this library never carry secrets. */
export function describeError(error: unknown): string {
  let text: string
  if (error instanceof CallbackError) text = `${error.code}: ${error.message}`
  else if (error instanceof Error) {
    const code = (error as { code?: unknown }).code
    text = `${typeof code === 'string' ? code : error.name}: ${error.message}`
  } else text = `Error: ${String(error)}`
  return text.length > MAX_REASON_LENGTH ? `${text.slice(0, MAX_REASON_LENGTH - 1)}…` : text
}
