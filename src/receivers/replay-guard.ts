import type { ReplayGuard } from '../types.ts'

/** Options of {@link createMemoryReplayGuard}. */
export interface MemoryReplayGuardOptions {
  /**
   * How long a processed `webhook-id` is remembered, ms. Default 3 days: longer than the default
   * retry schedule of a sender (about 28 h), so every redelivery of a task meets its id.
   */
  ttlMs?: number | undefined
  /**
   * How many ids are kept at most. Default 100 000. Past it the oldest processed ids are dropped
   * first: a very late redelivery of one of them is then processed again (at least once), never
   * acknowledged without having been processed.
   */
  maxEntries?: number | undefined
  /**
   * How long an id may stay in flight before it is treated as abandoned, ms. Default 10 minutes.
   * Receivers settle every id when the handler answers (or throws), also after the client hung up;
   * this only bounds what a handler that never answers could leave behind.
   */
  inFlightTimeoutMs?: number | undefined
  /** The clock. Default `() => new Date()`. */
  now?: (() => Date) | undefined
}

interface Entry {
  state: 'in-flight' | 'done'
  expiresAt: number
}

/**
 * A {@link ReplayGuard} that keeps `webhook-id`s in this process's memory. Enough for one receiver
 * process; several processes behind a load balancer need a shared guard (the Redis one).
 *
 * Receivers create one when given `replayGuard: true`.
 *
 * @example
 * ```ts
 * import { createMemoryReplayGuard } from 'endpoint-callback'
 * import { callbackReceiver } from 'endpoint-callback/express'
 *
 * const replayGuard = createMemoryReplayGuard({ ttlMs: 24 * 3600_000 })
 * app.post('/callbacks', callbackReceiver({ secret, replayGuard }), handler)
 * ```
 */
export function createMemoryReplayGuard(options: MemoryReplayGuardOptions = {}): ReplayGuard {
  let { ttlMs, maxEntries, inFlightTimeoutMs, now } = options
  ttlMs ??= 3 * 24 * 3600_000
  maxEntries ??= 100_000
  inFlightTimeoutMs ??= 10 * 60_000
  now ??= () => new Date()
  if (!Number.isFinite(ttlMs) || ttlMs <= 0) throw new TypeError('ttlMs must be a positive number of milliseconds')
  if (!Number.isSafeInteger(maxEntries) || maxEntries < 1) throw new TypeError('maxEntries must be a positive integer')
  if (!Number.isFinite(inFlightTimeoutMs) || inFlightTimeoutMs <= 0) {
    throw new TypeError('inFlightTimeoutMs must be a positive number of milliseconds')
  }
  if (typeof now !== 'function') throw new TypeError('now must be a function returning a Date')
  const clock = now
  const limits = { ttlMs, maxEntries, inFlightTimeoutMs }

  // A Map iterates in insertion order and every write re-inserts, so the front holds the entries
  // that expire first: sweeping from the front keeps each call O(1) amortised.
  const entries = new Map<string, Entry>()

  function sweep(at: number): void {
    for (const [id, entry] of entries) {
      if (entry.expiresAt > at) break
      entries.delete(id)
    }
  }

  function put(id: string, entry: Entry): void {
    entries.delete(id)
    entries.set(id, entry)
    if (entries.size <= limits.maxEntries) return
    for (const [oldId, old] of entries) {
      if (entries.size <= limits.maxEntries) break
      // Dropping an in-flight id could let its duplicate through while the first still runs.
      if (old.state === 'done') entries.delete(oldId)
    }
  }

  return {
    async begin(id) {
      const at = clock().getTime()
      sweep(at)
      const entry = entries.get(id)
      if (entry !== undefined && entry.expiresAt > at) return entry.state
      put(id, { state: 'in-flight', expiresAt: at + limits.inFlightTimeoutMs })
      return 'new'
    },
    async remember(id) {
      put(id, { state: 'done', expiresAt: clock().getTime() + limits.ttlMs })
    },
    async forget(id) {
      entries.delete(id)
    },
  }
}
