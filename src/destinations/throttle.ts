/**
 * Throttling asked for by the receiver: a 429, 502, 503 or 504 with `Retry-After` holds its whole
 * destination back until then, as the Standard Webhooks spec asks of senders, so its other tasks
 * wait instead of each spending an attempt on the same answer.
 */
import { parseRetryAfter } from '../outcome.ts'
import type { TransportResponse } from '../types.ts'

const THROTTLE_STATUSES = new Set([429, 502, 503, 504])

/** How long the receiver asked its destination to wait, ms (capped at `maxMs`), or `undefined`. */
export function throttleFor(response: TransportResponse | undefined, now: Date, maxMs: number): number | undefined {
  if (response === undefined || !THROTTLE_STATUSES.has(response.status)) return undefined
  const wait = parseRetryAfter(response.headers['retry-after'], now)
  if (wait === undefined || wait <= 0) return undefined
  return Math.min(wait, maxMs)
}
