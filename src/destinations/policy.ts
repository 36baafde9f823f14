/**
 * The worker's side of destinations: what its claims ask of the store, and what each attempt's
 * outcome changes (a throttle, a breaker opening, a probe closing it). The state itself lives in
 * the store, so every worker on a durable store sees the same holds. Failures are counted in the
 * store too, where it can (`countDestinationFailure`: a write only for a failure, the answers that
 * follow counted by `complete` itself), so the thresholds hold over every worker together: ten
 * processes do not each send a dead host its five failures. A store without it leaves each worker
 * to count what it sees. `deliver`'s inline first attempt goes through the same outcome handling.
 */
import type { ResolvedSender } from '../sender.ts'
import type { AttemptRecord, DestinationHold, Lease, TransportResponse } from '../types.ts'
import { cooldownAfter, createFailureCounter, crossesThreshold, isDestinationFailure, resolveBreakerOptions, STREAK_ALONE } from './breaker.ts'
import type { BreakerOptions, ResolvedBreaker } from './breaker.ts'
import { throttleFor } from './throttle.ts'
import { withinDeadline } from '../store-deadline.ts'

/** The worker options about destinations. */
export interface DestinationOptions {
  /**
   * Attempts in flight per destination at most, in this worker (a task over the cap stays in the
   * store, keeping its place, and spends no attempt), so a destination that is slow or never
   * answers can hold only that many of the worker's `concurrency` slots. Default: a fifth of
   * `concurrency`, at least 2 — 2 with the default concurrency of 10.
   *
   * A destination that answers fast is not capped (a quick 5xx counts as fast too, unless its
   * breaker's count shows it failing): while its last attempt took under a second and
   * none of its attempts in flight has been running for a second, it may use any slot that is free
   * (the claim still takes due tasks earliest first, so other destinations' due tasks get the
   * slots it frees within that second). The cap is for the slow: one that turns slow is capped
   * again at once — no new task of it is claimed while one of its attempts has been running for a
   * second — and the slots it already holds are freed within one transport timeout.
   */
  perDestination?: number | undefined
  /** The circuit breaker's thresholds, or `false` for none. See {@link BreakerOptions} for the defaults. */
  breaker?: BreakerOptions | false | undefined
}

export interface DestinationPolicy {
  /** What the worker's claims pass to the store; `undefined` when the store cannot limit destinations. */
  readonly perDestination: number | undefined
  /** The worker's attempts in flight per destination, as its next claim passes them. */
  claimView(): ReadonlyMap<string, number>
  /**
   * A claim came back with fewer tasks than asked: the store may have passed over more tasks of
   * these leases' destinations, at their room. They count as capped until they drain to half.
   */
  shortClaim(leases: readonly Lease[]): void
  /** Counts an attempt on `lease` as started. */
  started(lease: Lease): void
  /**
   * Counts it as over; `true` when its destination had reached its cap (a claim may have skipped
   * tasks of it) and has now come down to half of it: time to claim again, a batch at a time.
   */
  ended(lease: Lease): boolean
  /**
   * Applies an attempt's outcome to its destination, before the attempt is recorded (so no
   * worker claims the destination's next task in between). Never rejects: store errors are emitted.
   */
  afterAttempt(lease: Lease, record: AttemptRecord, response: TransportResponse | undefined): Promise<void>
}

/** An attempt quicker than this, with none of its destination's running longer, counts as fast. */
const FAST_ATTEMPT_MS = 1_000
/** Fast destinations with nothing in flight that a claim's view still gives their room. */
const MAX_IDLE_FAST_IN_VIEW = 16
/** Destinations whose speed is remembered; the least recently seen are forgotten first. */
const MAX_REMEMBERED = 10_000

/** Checks the options once and returns the policy the worker calls. */
export function createDestinationPolicy(options: DestinationOptions, concurrency: number, sender: ResolvedSender): DestinationPolicy {
  let { perDestination } = options
  perDestination ??= Math.max(2, Math.floor(concurrency / 5))
  if (!Number.isSafeInteger(perDestination) || perDestination <= 0) throw new TypeError('perDestination must be a positive integer')
  const breaker = options.breaker === false ? undefined : resolveBreakerOptions(options.breaker)
  const { store } = sender
  const setDestination = store.setDestination?.bind(store)
  const inFlight = new Map<string, number>()
  const reachedCap = new Set<string>()
  if (setDestination === undefined) {
    return { perDestination: undefined, claimView: () => inFlight, shortClaim() {}, started() {}, ended: () => false, afterAttempt: async () => {} }
  }
  /**
   * Extra room of a fast destination over `perDestination`: every slot (work-conserving). Twice
   * `concurrency`, since its count includes attempts answered whose records are being written,
   * which hold no slot: its room is then never below the claim's limit (the free slots).
   */
  const bonus = Math.max(0, 2 * concurrency - perDestination)
  /** Destinations whose last attempt was fast. */
  const fast = new Set<string>()
  /** The destinations last seen fast, most recent first (at most MAX_IDLE_FAST_IN_VIEW). */
  const lastFast: string[] = []
  /** When each attempt in flight started (performance.now()). */
  const startedAt = new Map<Lease, number>()
  const capOf = (destination: string) => perDestination! + (fast.has(destination) ? bonus : 0)
  const outcomes = createOutcomeHandler(breaker, sender)!

  return {
    perDestination,
    claimView() {
      if (bonus === 0 || fast.size === 0) return inFlight
      const slowSince = performance.now() - FAST_ATTEMPT_MS
      const stuck = new Set<string>()
      for (const [lease, at] of startedAt) if (at < slowSince && lease.task.destination !== undefined) stuck.add(lease.task.destination)
      const view = new Map(inFlight)
      for (const [destination, count] of inFlight) if (fast.has(destination) && !stuck.has(destination)) view.set(destination, count - bonus)
      // A fast destination whose attempts all ended keeps its room too: the last few remembered
      // (a claim's view stays small), so a busy client's next batch is not cut to perDestination.
      let idle = 0
      for (const destination of lastFast) {
        if (idle >= MAX_IDLE_FAST_IN_VIEW) break
        if (view.has(destination) || !fast.has(destination)) continue
        view.set(destination, -bonus)
        idle++
      }
      return view
    },
    shortClaim(leases) {
      for (const lease of leases) if (lease.task.destination !== undefined) reachedCap.add(lease.task.destination)
    },
    started(lease) {
      const { destination } = lease.task
      if (destination === undefined) return
      startedAt.set(lease, performance.now())
      const count = (inFlight.get(destination) ?? 0) + 1
      inFlight.set(destination, count)
      if (count >= capOf(destination)) reachedCap.add(destination)
    },
    ended(lease) {
      const { destination } = lease.task
      if (destination === undefined) return false
      startedAt.delete(lease)
      const count = inFlight.get(destination) ?? 0
      const capped = reachedCap.has(destination) && count - 1 <= Math.floor(capOf(destination) / 2)
      if (capped) reachedCap.delete(destination)
      if (count <= 1) {
        inFlight.delete(destination)
        reachedCap.delete(destination)
      } else {
        inFlight.set(destination, count - 1)
      }
      return capped
    },
    async afterAttempt(lease, record, response) {
      const { destination } = lease.task
      if (destination === undefined) return
      const now = sender.now()
      // answered: the record being written next holds no connection to the destination
      startedAt.delete(lease)
      // (its speed is updated once the outcome is counted: a failure's count is a store round
      // trip, and the destination must not look slow meanwhile)
      const counting = outcomes(lease, record, response, now)
      if (counting !== undefined) await counting
      fast.delete(destination)
      // A quick 5xx holds a slot no longer than a quick 204, so a busy receiver having a bad
      // moment keeps its room (capping it made every claim look past its whole backlog); one that
      // is failing (its breaker's count says so) stays capped, so it cannot fill the free slots
      // with failures before its breaker opens.
      if (record.durationMs < FAST_ATTEMPT_MS && response !== undefined && (response.status < 500 || !outcomes.failing(destination))) {
        if (fast.size >= MAX_REMEMBERED) fast.delete(fast.values().next().value!)
        fast.add(destination)
        if (lastFast[0] !== destination) {
          const at = lastFast.indexOf(destination)
          if (at >= 0) lastFast.splice(at, 1)
          lastFast.unshift(destination)
          if (lastFast.length > MAX_IDLE_FAST_IN_VIEW) lastFast.pop()
        }
      }
    },
  }
}

/** Applies one attempt's outcome to its destination (see {@link DestinationPolicy.afterAttempt}); `now` is when it ended. */
export type OutcomeHandler = ((lease: Lease, record: AttemptRecord, response: TransportResponse | undefined, now?: Date) => Promise<void> | undefined) & {
  /** Whether what this process saw of `destination` shows it failing (see `FailureCounter.failing`); `false` without a breaker. */
  failing(destination: string): boolean
}

/**
 * What an attempt's outcome does to its destination, for a worker's attempts and `deliver`'s
 * inline ones alike: a `Retry-After` throttles it, failures count toward its breaker (in the store
 * when it can count them for every worker), a probe's outcome closes or reopens it. `undefined`
 * when the store keeps no destinations (no `setDestination`). Never rejects: store errors are emitted.
 */
export function createOutcomeHandler(breaker: ResolvedBreaker | undefined, sender: ResolvedSender): OutcomeHandler | undefined {
  const { store } = sender
  if (typeof store.setDestination !== 'function') return undefined
  const setDestination = store.setDestination.bind(store)
  const countShared = typeof store.countDestinationFailure === 'function' ? store.countDestinationFailure.bind(store) : undefined
  // What this process sees, every answer counted as it comes: the whole count for a store that
  // cannot count for every worker, and a check on the shared one for a store that can.
  const counter = breaker === undefined ? undefined : createFailureCounter(breaker)

  async function hold(destination: string, value: DestinationHold | null, now: Date): Promise<boolean> {
    try {
      await withinDeadline(setDestination(destination, value, now), sender.leaseMs, 'setDestination')
      return true
    } catch (error) {
      sender.emit({ type: 'error', error })
      return false
    }
  }

  /**
   * A failure this worker sees failing (see `FailureCounter.failing`), counted in the store for
   * every worker; `true` when the destination now crosses a threshold.
   */
  async function crossedShared(destination: string, now: Date): Promise<boolean> {
    try {
      const tally = await withinDeadline(countShared!(destination, now, breaker!.windowMs), sender.leaseMs, 'countDestinationFailure')
      // The store counts every worker's failures at once but answers only as their records commit
      // (in groups, after the answer): at 64 in flight its streak can be failures whose answered
      // neighbours are not counted yet. What this worker saw, answers included as they came,
      // agrees already (or it would not count); a long enough streak of its own opens it alone.
      return crossesThreshold(breaker!, tally) || counter!.streak(destination) >= STREAK_ALONE * breaker!.failures
    } catch (error) {
      sender.emit({ type: 'error', error })
      return false
    }
  }

  /** The breaker opens for the first time since it last closed. */
  async function open(destination: string, record: AttemptRecord, now: Date): Promise<void> {
    counter!.reset(destination)
    const reason = record.error ?? `HTTP ${record.status}`
    const until = new Date(now.getTime() + cooldownAfter(breaker!, 1))
    if (await hold(destination, { state: 'open', until, reason, openings: 1 }, now)) {
      sender.emit({ type: 'destination-unhealthy', destination, reason, until })
    }
  }

  /**
   * Most answers change nothing: a success, a failure of a destination this worker does not see
   * failing (or, without a breaker, anything but a throttle) is counted here and now, with no
   * promise made for it and no round trip to the store; the rest goes on asynchronously.
   */
  const handle = (lease: Lease, record: AttemptRecord, response: TransportResponse | undefined, at?: Date): Promise<void> | undefined => {
    const { destination } = lease.task
    if (destination === undefined) return undefined
    const now = at ?? sender.now()
    if (response !== undefined && throttleFor(response, now, sender.retry.maxRetryAfterMs) !== undefined) return settle(lease, destination, record, response, now)
    if (breaker === undefined) return undefined
    if (lease.probe !== undefined) return settle(lease, destination, record, response, now)
    const failed = isDestinationFailure(record)
    const crossed = counter!.record(destination, failed, now.getTime())
    if (!failed) return undefined
    if (countShared === undefined) return crossed ? open(destination, record, now) : undefined
    // Only a worker that itself sees the destination failing can open its breaker: until then its
    // failures need no round trip (answers are counted by the store's `complete`).
    if (!counter!.failing(destination)) return undefined
    return crossedShared(destination, now).then((opens) => (opens ? open(destination, record, now) : undefined))
  }

  /** A throttle, or a probe's outcome: the destination's hold is set in the store. */
  async function settle(lease: Lease, destination: string, record: AttemptRecord, response: TransportResponse | undefined, now: Date): Promise<void> {
    const wait = throttleFor(response, now, sender.retry.maxRetryAfterMs)
    if (wait !== undefined) {
      // The receiver is up and said how long to wait: a throttle, not a failure.
      const until = new Date(now.getTime() + wait)
      const reason = `HTTP ${record.status}: Retry-After asked to wait ${Math.ceil(wait / 1000)} s`
      counter?.reset(destination)
      if (await hold(destination, { state: 'throttled', until, reason, openings: 0 }, now)) {
        sender.emit({ type: 'destination-throttled', destination, reason, until })
      }
      return
    }
    if (breaker === undefined) return
    const failed = isDestinationFailure(record)
    const reason = record.error ?? `HTTP ${record.status}`
    if (lease.probe !== undefined) {
      if (failed) {
        const openings = lease.probe.openings + 1
        const until = new Date(now.getTime() + cooldownAfter(breaker, openings))
        if (await hold(destination, { state: 'open', until, reason, openings }, now)) {
          sender.emit({ type: 'destination-unhealthy', destination, reason, until })
        }
      } else if (await hold(destination, null, now)) {
        counter?.reset(destination)
        sender.emit({ type: 'destination-recovered', destination })
      }
    }
  }
  return Object.assign(handle, { failing: (destination: string) => counter?.failing(destination) ?? false })
}

const outcomeHandlers = new WeakMap<object, { handler: OutcomeHandler | undefined }>()

/**
 * The outcome handler for `deliver`'s inline attempts with these options: the breaker's thresholds
 * are the `breaker` option's when the object carries one (the worker's options passed to `deliver`
 * too), else the defaults. Resolved once per options object.
 */
export function inlineOutcomeHandler(options: DestinationOptions, sender: ResolvedSender): OutcomeHandler | undefined {
  let found = outcomeHandlers.get(options)
  if (found === undefined) {
    const breaker = options.breaker === false ? undefined : resolveBreakerOptions(options.breaker)
    found = { handler: createOutcomeHandler(breaker, sender) }
    outcomeHandlers.set(options, found)
  }
  return found.handler
}
