/**
 * The circuit breaker's policy: when a destination counts as failing, and how long it rests.
 * Pure and clock-free (instants are passed in), so it is tested without waiting.
 *
 * Thresholds (defaults): the breaker opens after 5 failures in a row, or when at least half of at
 * least 10 attempts in the last minute failed — in both cases only while at least half of the
 * attempts since the window's first failure failed, so a busy destination that fails now and then
 * (and so, by chance, several times in a row) stays closed; 20 failures in a row open it whatever
 * came before. A failure is an attempt that got no answer (timeout,
 * refused or reset connection, DNS, TLS) or an answer 408 or 5xx without `Retry-After`; any other
 * answer (2xx, 4xx, 410) shows the destination is up. The counts are over every worker on the
 * store (PostgreSQL, Redis; the memory store: every worker in the process), the attempts of the
 * failure rate counted from the first failure in the window on. Each worker also counts what it
 * sees itself, every attempt of the window as it is answered, and a shared count opens the breaker
 * only when that view agrees the destination is failing (every attempt of the window failed, at
 * least half of at least 20 did, or 20 in a row): the store counts an answer only when its record commits, later
 * than the failures around it, and a window that starts at a failure is biased toward failing.
 * Once open, a single probe is sent after a
 * cool-down of 30 s that doubles each time the probe fails, up to 10 min; the first probe that
 * gets through closes it.
 */
import { checkOptionNames } from '../option-names.ts'
import type { AttemptRecord, DestinationTally } from '../types.ts'

/** Thresholds of the circuit breaker; see the module's defaults. */
export interface BreakerOptions {
  /**
   * Failures in a row that open the breaker, while at least `failureRate` of the attempts since the
   * window's first failure failed; four times as many open it in any case. Default 5.
   */
  failures?: number | undefined
  /** Share of failed attempts within `windowMs` that opens it (0 to 1). Default 0.5. */
  failureRate?: number | undefined
  /** Attempts within `windowMs` before `failureRate` applies. Default 10. */
  minAttempts?: number | undefined
  /** The window of `failureRate`, ms. Default 60 000. */
  windowMs?: number | undefined
  /** The first cool-down before a probe, ms; it doubles with each failed probe. Default 30 000. */
  cooldownMs?: number | undefined
  /** The longest cool-down, ms. Default 600 000. */
  maxCooldownMs?: number | undefined
}

export interface ResolvedBreaker {
  readonly failures: number
  readonly failureRate: number
  readonly minAttempts: number
  readonly windowMs: number
  readonly cooldownMs: number
  readonly maxCooldownMs: number
}

const BREAKER_OPTION_NAMES: ReadonlySet<string> = new Set(['failures', 'failureRate', 'minAttempts', 'windowMs', 'cooldownMs', 'maxCooldownMs'])

const positiveInteger = (value: unknown): value is number => Number.isSafeInteger(value) && (value as number) > 0

/** Checks `breaker` once (TypeError naming the option) and fills the defaults. */
export function resolveBreakerOptions(breaker: BreakerOptions | undefined): ResolvedBreaker {
  if (breaker === undefined) breaker = {}
  else if (breaker === null || typeof breaker !== 'object') throw new TypeError('breaker must be an object')
  checkOptionNames(breaker, BREAKER_OPTION_NAMES, 'breaker')
  let { failures, failureRate, minAttempts, windowMs, cooldownMs, maxCooldownMs } = breaker
  failures ??= 5
  failureRate ??= 0.5
  minAttempts ??= 10
  windowMs ??= 60_000
  cooldownMs ??= 30_000
  maxCooldownMs ??= Math.max(600_000, cooldownMs)
  if (!positiveInteger(failures)) throw new TypeError('breaker.failures must be a positive integer')
  if (typeof failureRate !== 'number' || !(failureRate > 0 && failureRate <= 1)) throw new TypeError('breaker.failureRate must be a number above 0 and at most 1')
  if (!positiveInteger(minAttempts)) throw new TypeError('breaker.minAttempts must be a positive integer')
  if (!positiveInteger(windowMs)) throw new TypeError('breaker.windowMs must be a positive integer of milliseconds')
  if (!positiveInteger(cooldownMs)) throw new TypeError('breaker.cooldownMs must be a positive integer of milliseconds')
  if (!positiveInteger(maxCooldownMs) || maxCooldownMs < cooldownMs) {
    throw new TypeError('breaker.maxCooldownMs must be an integer of milliseconds, at least breaker.cooldownMs')
  }
  return Object.freeze({ failures, failureRate, minAttempts, windowMs, cooldownMs, maxCooldownMs })
}

/** The cool-down after the breaker opened `openings` times in a row (1 for the first). */
export function cooldownAfter(breaker: ResolvedBreaker, openings: number): number {
  const doubled = breaker.cooldownMs * 2 ** Math.min(Math.max(openings - 1, 0), 30)
  return Math.min(doubled, breaker.maxCooldownMs)
}

const FAILURE_CODES = ['ERR_CALLBACK_TIMEOUT', 'ERR_CALLBACK_CONNECTION', 'ERR_CALLBACK_DNS', 'ERR_CALLBACK_TLS']

/** Whether an attempt says its destination is failing (see the module's comment). */
export function isDestinationFailure(record: AttemptRecord): boolean {
  if (record.status !== undefined) return record.status === 408 || record.status >= 500
  const { error } = record
  return error !== undefined && FAILURE_CODES.some((code) => error.startsWith(code))
}

/**
 * Whether a destination's tally (as a store counts it for every worker) crosses a threshold: its
 * share of failures since the window's first failure is at least `failureRate`, and either its
 * failures in a row reach `failures` or the window holds `minAttempts` attempts; or its failures
 * in a row reach four times `failures`.
 */
export function crossesThreshold(breaker: ResolvedBreaker, tally: DestinationTally): boolean {
  // Failing now and then is not failing: a busy destination that answers most attempts strings
  // `failures` failures together by chance (at 1,000 attempts a second and 20 % failing, several
  // times a minute), and opening on that would hold all its callbacks for a cool-down. So a
  // streak opens the breaker only while failures are also `failureRate` of the attempts counted
  // since the window's first failure. A destination that dies after failing now and then has
  // many answers in its window: four times `failures` in a row opens it whatever came before (20
  // in a row at 20 % failing is a one-in-10^14 chance).
  if (tally.inARow >= STREAK_ALONE * breaker.failures) return true
  if (tally.attempts <= 0 || tally.failures < breaker.failureRate * tally.attempts) return false
  return tally.inARow >= breaker.failures || tally.attempts >= breaker.minAttempts
}

/** Attempts a worker's own view needs, answers among them, before its failure share counts. */
const LOCAL_SAMPLE = 20

/** A streak this many times `failures` long opens the breaker however many answers came before it. */
export const STREAK_ALONE = 4

/** The outcomes one worker saw per destination, to decide when a breaker opens (a store that cannot count them). */
export interface FailureCounter {
  /** Counts an attempt at `at` (epoch ms); `true` when the destination now crosses a threshold. */
  record(destination: string, failed: boolean, at: number): boolean
  /**
   * Whether what this counter saw of `destination` shows it failing: every attempt in the window
   * failed, or at least `failureRate` of at least 20 (or `minAttempts`, if more) of them (its
   * last 512 at most), or four times `failures` in a row. It
   * counts every attempt, answers before the window's first failure too: a busy destination's
   * first few failures after a quiet spell are no sign that it fails.
   */
  failing(destination: string): boolean
  /** How many of `destination`'s last attempts failed in a row. */
  streak(destination: string): number
  /** Forgets a destination (its breaker opened or closed: counting starts afresh). */
  reset(destination: string): void
  /** Destinations tracked. */
  readonly size: number
}

/**
 * One destination's attempts in the window, oldest first: a ring (growing to 512) with its
 * failures counted, so recording an attempt costs the same with 1 or 512 of them.
 */
interface Tally {
  inARow: number
  /** When each attempt was answered (epoch ms), and whether it failed. */
  at: Float64Array
  failed: Uint8Array
  head: number
  size: number
  failures: number
}

function countOf(tally: Tally): DestinationTally {
  return { inARow: tally.inARow, attempts: tally.size, failures: tally.failures }
}

/** Forgets the oldest attempt. */
function dropOldest(tally: Tally): void {
  tally.failures -= tally.failed[tally.head]!
  tally.head = (tally.head + 1) % tally.at.length
  tally.size--
}

/** Adds an attempt, making room by growing the ring (up to MAX_WINDOW_ENTRIES) or forgetting the oldest. */
function push(tally: Tally, at: number, failed: boolean): void {
  let capacity = tally.at.length
  if (tally.size === capacity) {
    if (capacity < MAX_WINDOW_ENTRIES) {
      const grown = { at: new Float64Array(capacity * 2), failed: new Uint8Array(capacity * 2) }
      for (let i = 0; i < tally.size; i++) {
        grown.at[i] = tally.at[(tally.head + i) % capacity]!
        grown.failed[i] = tally.failed[(tally.head + i) % capacity]!
      }
      tally.at = grown.at
      tally.failed = grown.failed
      tally.head = 0
      capacity *= 2
    } else {
      dropOldest(tally)
    }
  }
  const slot = (tally.head + tally.size) % capacity
  tally.at[slot] = at
  tally.failed[slot] = failed ? 1 : 0
  tally.size++
  if (failed) tally.failures++
}

/** Attempts remembered per destination for the failure rate; older ones leave first. */
const MAX_WINDOW_ENTRIES = 512

/** A failure counter; `maxDestinations` bounds its memory (the least recently seen are dropped). */
export function createFailureCounter(breaker: ResolvedBreaker, maxDestinations = 10_000): FailureCounter {
  const tallies = new Map<string, Tally>()
  /** The destination recorded last: already the most recently used, it need not be moved. */
  let latest: string | undefined
  return {
    record(destination, failed, at) {
      let tally = tallies.get(destination)
      if (tally === undefined) {
        tally = { inARow: 0, at: new Float64Array(16), failed: new Uint8Array(16), head: 0, size: 0, failures: 0 }
        if (tallies.size >= maxDestinations) tallies.delete(tallies.keys().next().value!)
        tallies.set(destination, tally)
      } else if (destination !== latest) {
        // least recently used first: the one forgotten when there are too many
        tallies.delete(destination)
        tallies.set(destination, tally)
      }
      latest = destination
      tally.inARow = failed ? tally.inARow + 1 : 0
      while (tally.size > 0 && tally.at[tally.head]! <= at - breaker.windowMs) dropOldest(tally)
      push(tally, at, failed)
      if (!failed) return false
      return crossesThreshold(breaker, countOf(tally))
    },
    failing(destination) {
      const tally = tallies.get(destination)
      if (tally === undefined) return false
      const counted = countOf(tally)
      if (counted.inARow >= STREAK_ALONE * breaker.failures) return true
      // every attempt failed; or, with both answers and failures, a share worth trusting: at a
      // fifth failing, half of 10 attempts fail by chance once in 30 windows, half of 20 once in 400
      if (counted.attempts > 0 && counted.failures === counted.attempts) return true
      return counted.attempts >= Math.max(LOCAL_SAMPLE, breaker.minAttempts) && counted.failures >= breaker.failureRate * counted.attempts
    },
    streak(destination) {
      return tallies.get(destination)?.inARow ?? 0
    },
    reset(destination) {
      tallies.delete(destination)
      if (destination === latest) latest = undefined
    },
    get size() {
      return tallies.size
    },
  }
}
