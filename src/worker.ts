/**
 * The worker: claims due tasks from the store under a lease and makes their next attempt, in this
 * or any other process that shares the store.
 */
import { runAttempt } from './deliver.ts'
import { createDestinationPolicy } from './destinations/policy.ts'
import type { DestinationOptions } from './destinations/policy.ts'
import { CallbackError } from './errors.ts'
import { expirePendingTasks } from './pending-expiry.ts'
import { resolveSender } from './sender.ts'
import { withinDeadline } from './store-deadline.ts'
import { createWakeSchedule } from './wake-schedule.ts'
import type { Lease, SenderOptions } from './types.ts'

/** A sender's options plus how the worker polls. */
export interface WorkerOptions extends SenderOptions, DestinationOptions {
  /** How often to look for due tasks when the store cannot announce them, ms. Default 1000. */
  pollIntervalMs?: number | undefined
  /** Attempts in flight at most. Default 10. */
  concurrency?: number | undefined
  /** Tasks claimed per store call at most. Default: `concurrency`. */
  batchSize?: number | undefined
}

/** A running (or stopped) worker. */
export interface Worker {
  /**
   * Starts claiming and delivering. Calling it on a running worker does nothing; on one whose
   * `stop()` has not finished it throws a {@link CallbackError} with code
   * `ERR_CALLBACK_WORKER_STOPPING` (await `stop()`, then start it again).
   */
  start(): void
  /**
   * Stops claiming, waits for the attempts in flight to finish and gives back the tasks it claimed
   * but had not started. Resolves when nothing of the worker runs any more.
   */
  stop(): Promise<void>
  /** Looks for due tasks now rather than at the next poll. */
  wake(): void
  /** Whether the worker is started and not stopping. */
  readonly running: boolean
  /**
   * Attempts sending right now. An attempt whose answer is in and whose record is still being
   * written no longer counts: its slot already serves the next task.
   */
  readonly active: number
}

const MAX_BACKOFF_MS = 30_000

function workerSettings(options: WorkerOptions): { pollIntervalMs: number; concurrency: number; batchSize: number } {
  let { pollIntervalMs, concurrency, batchSize } = options
  pollIntervalMs ??= 1000
  concurrency ??= 10
  batchSize ??= concurrency
  if (!Number.isSafeInteger(pollIntervalMs) || pollIntervalMs <= 0) throw new TypeError('pollIntervalMs must be a positive integer of milliseconds')
  if (!Number.isSafeInteger(concurrency) || concurrency <= 0) throw new TypeError('concurrency must be a positive integer')
  if (!Number.isSafeInteger(batchSize) || batchSize <= 0) throw new TypeError('batchSize must be a positive integer')
  return { pollIntervalMs, concurrency, batchSize }
}

/**
 * Creates a worker over the sender's store. It claims due tasks in batches, each under a lease of
 * `leaseMs`, and delivers them with at most `concurrency` attempts in flight. A worker that dies
 * loses its leases and another worker claims those tasks again; a worker whose lease ran out cannot
 * record over a newer attempt (it emits `lease-lost` instead). Store errors while claiming are
 * emitted as `error` events and the worker backs off and keeps going; so are the errors a store
 * got over by itself (`store.subscribeErrors`: a statement on a connection that went silent, read
 * back or sent again), so a failing database is heard of even while every call ends well. With no
 * `onEvent` listener each distinct error is printed to stderr once. `start()` first checks the store (`store.check`:
 * schema migrated, keys usable). As it polls, the worker also fails the `pending` tasks whose
 * result never came in time (`pendingTimeoutMs`), emitting `failed` for each.
 *
 * Destinations (on stores with `setDestination`: memory, PostgreSQL, Redis): at most
 * `perDestination` attempts in flight per destination, a destination that answers with
 * `Retry-After` held back until then, and one that keeps failing held back by its circuit breaker
 * (`breaker`) — in each case its other tasks stay in the store, spending no attempt and holding no
 * slot, so one client's endpoint never holds up another's callbacks.
 *
 * A running worker keeps the process alive (like a server); `stop()` it for a clean exit.
 *
 * @example
 * ```ts
 * import { createWorker } from 'endpoint-callback'
 *
 * const worker = createWorker({ ...sender, concurrency: 32, onEvent: (event) => log(event.type) })
 * worker.start()
 * process.once('SIGTERM', () => worker.stop().then(() => process.exit(0)))
 * ```
 */
export function createWorker(options: WorkerOptions): Worker {
  const sender = resolveSender(options)
  const { pollIntervalMs, concurrency, batchSize } = workerSettings(options)
  const destinations = createDestinationPolicy(options, concurrency, sender)
  const { perDestination } = destinations

  const { store } = sender
  /** Attempts in flight. */
  let active = 0
  /** Attempts answered whose record is still being written. */
  let recording = 0
  /** Set by `stop()` while it waits for the last attempt in flight to finish. */
  let idle: (() => void) | undefined
  // Claiming again for every finished attempt would mean a store round trip per task; waiting for
  // half a batch of free slots keeps claims batched while the backlog drains.
  const refillAt = Math.max(1, Math.floor(Math.min(batchSize, concurrency) / 2))
  let running = false
  let loop: Promise<void> | undefined
  let unsubscribe: (() => void) | undefined
  let unsubscribeErrors: (() => void) | undefined
  let wakeWaiter: (() => void) | undefined
  let wokenEarly = false
  let backlog = false

  /** Instants (ms) tasks are known to fall due at, from announcements and own attempts. */
  const dueInstants = createWakeSchedule()
  /** The instant the last claim looked for due tasks at. */
  let lastClaimAt = -Infinity
  /** When the current wait ends (ms, by the sender's clock), while the loop waits. */
  let waitingUntil = Infinity
  let waitTimer: NodeJS.Timeout | undefined

  function wake(): void {
    if (wakeWaiter !== undefined) wakeWaiter()
    else wokenEarly = true
  }

  /**
   * A task falls due at `dueAt`: look now when it already is, otherwise make sure the loop wakes
   * at that instant rather than at its next poll.
   */
  function dueAt(at?: number): void {
    if (at === undefined || !running) return wake()
    const now = sender.now().getTime()
    if (at <= now) return wake()
    dueInstants.add(at)
    if (wakeWaiter !== undefined && at < waitingUntil) arm(at - now)
  }

  function arm(ms: number): void {
    clearTimeout(waitTimer)
    waitingUntil = sender.now().getTime() + ms
    waitTimer = setTimeout(wakeWaiter!, ms)
  }

  function wait(ms: number): Promise<void> {
    if (wokenEarly) {
      wokenEarly = false
      return Promise.resolve()
    }
    const now = sender.now().getTime()
    // instants the last claim already covered need no wake-up of their own
    const earliestDue = dueInstants.next(lastClaimAt)
    return new Promise((resolve) => {
      wakeWaiter = () => {
        clearTimeout(waitTimer)
        waitTimer = undefined
        waitingUntil = Infinity
        wakeWaiter = undefined
        resolve()
      }
      arm(Math.min(ms, Math.max(0, earliestDue - now)))
    })
  }

  // One async function per attempt rather than then/finally on runAttempt's promise: finally alone
  // adds three promises and two closures to every attempt.
  async function attempt(lease: Lease): Promise<void> {
    active++
    destinations.started(lease)
    let freed = false
    // The slot is free once the answer is classified: the record is then written while the next
    // attempt is already sending, and records that arrive together share one commit. Only when
    // records back up (a slow store) does a slot wait for its own.
    const answered = () => {
      if (recording >= concurrency) return
      freed = true
      active--
      recording++
      slotFreed()
    }
    try {
      const result = await runAttempt(lease, sender, undefined, answered, destinations.afterAttempt)
      // a store that announces nothing still gets this worker back on time for its own retries
      if (result.completed && result.resolution.status === 'scheduled') dueAt(result.resolution.nextAttemptAt.getTime())
    } catch (error) {
      sender.emit({ type: 'error', error })
    } finally {
      if (freed) recording--
      else active--
      // A destination at its cap may have tasks waiting that the last claim skipped: look again.
      if (destinations.ended(lease) && running) wake()
      slotFreed()
    }
  }

  function slotFreed(): void {
    if (active === 0 && recording === 0 && idle !== undefined) idle()
    else if (running && backlog && concurrency - active >= refillAt) wake()
  }

  async function giveBack(leases: Lease[]): Promise<void> {
    // Without a time, each task is due again when it was claimed: it keeps its place in line.
    await Promise.all(
      leases.map((lease) => withinDeadline(store.release(lease), sender.leaseMs, 'release').catch((error: unknown) => sender.emit({ type: 'error', error })))
    )
  }

  // Expired pending tasks are looked for once per poll interval, and at most once a second however
  // fast the worker polls or claims: expiry is measured in hours, not in milliseconds.
  const sweepIntervalMs = Math.max(pollIntervalMs, 1000)
  let sweptAt = -Infinity
  async function sweepExpired(): Promise<void> {
    const at = performance.now()
    if (at - sweptAt < sweepIntervalMs) return
    sweptAt = at
    try {
      await withinDeadline(expirePendingTasks(sender), sender.leaseMs, 'expirePending')
    } catch (error) {
      sender.emit({ type: 'error', error })
    }
  }

  async function claimLoop(): Promise<void> {
    // Checked once: an unmigrated schema or an unreachable server is reported before the first
    // claim (on stderr when nobody listens), and the worker keeps trying, as for any store error.
    if (typeof store.check === 'function') {
      try {
        await withinDeadline(store.check(), sender.leaseMs, 'check')
      } catch (error) {
        sender.emit({ type: 'error', error })
      }
    }
    let failures = 0
    while (running) {
      await sweepExpired()
      const free = concurrency - active
      if (free > 0) {
        const limit = Math.min(batchSize, free)
        let leases: Lease[]
        try {
          const now = sender.now()
          lastClaimAt = now.getTime()
          const claim =
            perDestination === undefined
              ? { now, limit, leaseMs: sender.leaseMs }
              : { now, limit, leaseMs: sender.leaseMs, perDestination, inFlight: destinations.claimView() }
          leases = await withinDeadline(store.claim(claim), sender.leaseMs, 'claim')
          failures = 0
        } catch (error) {
          sender.emit({ type: 'error', error })
          failures++
          await wait(Math.min(pollIntervalMs * 2 ** failures, Math.max(MAX_BACKOFF_MS, pollIntervalMs)))
          continue
        }
        if (!running) {
          await giveBack(leases)
          return
        }
        for (const lease of leases) void attempt(lease)
        backlog = leases.length === limit
        if (!backlog) destinations.shortClaim(leases)
        // More may be due right now: claim again while there is room, without waiting for a poll.
        if (backlog && concurrency - active > 0) continue
      } else {
        backlog = true
      }
      await wait(pollIntervalMs)
    }
  }

  let stopping: Promise<void> | undefined

  return {
    start() {
      if (running) return
      if (stopping !== undefined) {
        throw new CallbackError('ERR_CALLBACK_WORKER_STOPPING', 'the worker is stopping: await stop() before starting it again')
      }
      running = true
      wokenEarly = false
      unsubscribe = store.subscribe?.(dueAt)
      // what the store got over by itself (a statement read back or sent again) is heard of too
      unsubscribeErrors = store.subscribeErrors?.((error) => sender.emit({ type: 'error', error }))
      loop = claimLoop().catch((error: unknown) => sender.emit({ type: 'error', error }))
    },
    stop() {
      if (stopping !== undefined) return stopping
      if (!running) return Promise.resolve()
      running = false
      unsubscribe?.()
      unsubscribe = undefined
      wake()
      stopping = (async () => {
        await loop
        while (active > 0 || recording > 0) await new Promise<void>((resolve) => (idle = resolve))
        idle = undefined
        // only now: the last attempts' records may have needed the store to recover
        unsubscribeErrors?.()
        unsubscribeErrors = undefined
        loop = undefined
        stopping = undefined
      })()
      return stopping
    },
    wake,
    get running() {
      return running
    },
    get active() {
      return active
    },
  }
}
