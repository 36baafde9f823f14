import { createDueListeners } from './due-listeners.ts'
import { createDueOrder } from './due-order.ts'
import { callbackHost, checkListQuery, listOrder, matchesListQuery, taskPage } from './task-list.ts'
import { randomFillSync } from 'node:crypto'
import { StoreError } from '../errors.ts'
import { checkOptionNames } from '../option-names.ts'
import type {
  AttemptRecord,
  AttemptResolution,
  CallbackStore,
  DestinationState,
  CallbackTask,
  Lease,
  NewCallbackTask,
  StoreCallOptions,
  TaskStatus,
  TaskSummary
} from '../types.ts'

/** Options of {@link createMemoryStore}. */
export interface MemoryStoreOptions {
  /**
   * How many attempts each task keeps in its history; the oldest are dropped first. Default 100
   * (the default retry schedule makes at most 8). The same option as the Redis store's.
   */
  attemptHistory?: number | undefined
  /**
   * How long a finished (delivered, failed, cancelled) task, its attempt history and its
   * idempotency key stay readable, in seconds from when it finished; 0 keeps them until the
   * process exits. Default 7 days, as in the Redis store. Each finished task holds about 1 KB
   * until then, so a busy process wants less. Finished tasks are let go while the store inserts
   * and claims, by the clock those calls are given.
   */
  retentionSeconds?: number | undefined
}

/**
 * What the store keeps per task, besides the numbers in its row (see `rows` below). Metadata is kept as
 * its JSON text (immutable, so no caller can reach into it, and it behaves as it will in a durable
 * store), and every entry is built by one literal so V8 gives them all one hidden class.
 */
interface Entry {
  readonly id: string
  status: TaskStatus
  readonly callbackUrl: string
  readonly event: string
  readonly idempotencyKey: string | undefined
  readonly secret: string | readonly string[] | undefined
  /** The receiver's encryption key as JSON text (a JWK or a URL string), like metadata. */
  readonly encryptionKey: string | undefined
  readonly verifyIntent: boolean
  readonly metadata: string | undefined
  body: string | undefined
  contentType: string | undefined
  attempts: number
  lastError: string | undefined
  /** Its index in `byNumber` and, times `ROW`, in `rows`; the due order refers to it by it. */
  readonly number: number
  /** Its destination, when it has one (see `claim` with `perDestination`). */
  readonly destination: string | undefined
  /** One attempt on its own (most tasks make only one), several in an array. */
  history: StoredAttempt | StoredAttempt[] | undefined
}

interface StoredAttempt {
  readonly attempt: number
  readonly startedAt: number
  readonly durationMs: number
  readonly status: number | undefined
  readonly error: string | undefined
  readonly responseBody: string | undefined
  readonly outcome: AttemptRecord['outcome']
}

/**
 * The embedded default store: tasks live in this process's memory, nothing to set up. Due tasks
 * are kept sorted by their due instant (`nextAttemptAt` while scheduled, lease expiry while
 * delivering), so a claim of k tasks takes them off the front, in O(k) whatever the number
 * stored; scheduling one costs O(log n). Every task handed out is a copy. Like every store, it
 * decides "due" only by the `now` the caller passes; its one clock reading is the `updatedAt` of
 * a cancellation, which counts towards retention.
 *
 * Finished tasks are kept for `retentionSeconds` (7 days by default), so an idempotency key keeps
 * answering that long; use a durable store when several processes share the work or tasks must
 * survive a restart.
 *
 * @example
 * ```ts
 * import { createMemoryStore, createCallbackTask, createWorker } from 'endpoint-callback'
 *
 * const sender = { store: createMemoryStore(), secret: process.env.CALLBACK_SECRET }
 * const task = await createCallbackTask({ callbackUrl, event: 'report.ready' }, sender)
 * createWorker(sender).start()
 * ```
 */
export function createMemoryStore(options: MemoryStoreOptions = {}): CallbackStore {
  if (options === null || typeof options !== 'object') throw new TypeError('createMemoryStore: options must be an object')
  checkOptionNames(options, MEMORY_STORE_OPTION_NAMES, 'createMemoryStore')
  const attemptHistory = options.attemptHistory ?? 100
  if (!Number.isSafeInteger(attemptHistory) || attemptHistory < 1) {
    throw new TypeError('attemptHistory must be a positive integer')
  }
  const retentionSeconds = options.retentionSeconds ?? 7 * 86_400
  if (typeof retentionSeconds !== 'number' || !Number.isFinite(retentionSeconds) || retentionSeconds < 0) {
    throw new TypeError('retentionSeconds must be a number of seconds >= 0 (0 keeps finished tasks)')
  }
  const retentionMs = retentionSeconds * 1000

  const tasks = new Map<string, Entry>()
  const byIdempotencyKey = new Map<string, Entry>()
  const due = createDueListeners()
  /** Entries by number; a let-go task leaves a hole, and its number goes to `freeNumbers`. */
  const byNumber: (Entry | undefined)[] = []
  const freeNumbers: number[] = []

  // ---- rows ------------------------------------------------------------------------------------
  // Each task's instants (epoch ms) and lease token sit in one Float64Array, a row of ROW numbers
  // per task at ROW·number. As fields of the entry, an instant would be a heap number V8 follows
  // a pointer to, and a fresh token string stored into a long-lived entry makes the garbage
  // collector remember that slot; with a million tasks each of those costs a cache miss on every
  // claimed task. In a row, a claim writes a task's lease with plain stores to one place, and a
  // number weighs 8 bytes instead of 24.
  //   DUE:      `nextAttemptAt` while scheduled, lease expiry while delivering, `NaN` otherwise
  //   UPDATED:  the last change; while delivering, the instant (caller's clock) the lease was taken
  //   CREATED:  when it was inserted
  //   DEADLINE: its deadline, `NaN` for none
  //   TOKEN:    three numbers, 32 random bits each: the current lease's token, while delivering
  const DUE = 0
  const UPDATED = 1
  const CREATED = 2
  const DEADLINE = 3
  const TOKEN = 4
  //   EXPIRES:  when a pending task expires (`NaN`: never, or not pending)
  const EXPIRES = 7
  let rows = new Float64Array(ROW * 1024)
  const updatedOf = (entry: Entry) => rows[entry.number * ROW + UPDATED]!
  const setUpdated = (entry: Entry, at: number) => {
    rows[entry.number * ROW + UPDATED] = at
  }

  /** Random words for lease tokens, drawn from the system's CSPRNG a thousand tokens' worth at a time. */
  const randomWords = new Uint32Array(3 * 1024)
  let randomAt = randomWords.length

  /** Gives task `number` a fresh lease: a new token, taken at `now`, over at `expires`. */
  const writeLease = (number: number, now: number, expires: number) => {
    if (randomAt === randomWords.length) {
      randomFillSync(randomWords)
      randomAt = 0
    }
    const row = number * ROW
    rows[row + DUE] = expires
    rows[row + UPDATED] = now
    rows[row + TOKEN] = randomWords[randomAt++]!
    rows[row + TOKEN + 1] = randomWords[randomAt++]!
    rows[row + TOKEN + 2] = randomWords[randomAt++]!
  }

  const tokenCodes: number[] = new Array<number>(24).fill(0)

  /**
   * The token of task `number`'s current lease: its 96 random bits as 24 hex digits, built as one
   * flat string (a concatenation would have to be flattened for each comparison).
   */
  const tokenOf = (number: number): string => {
    const row = number * ROW + TOKEN
    for (let word = 0; word < 3; word++) {
      const value = rows[row + word]!
      for (let digit = 0; digit < 8; digit++) tokenCodes[8 * word + digit] = hexCode[(value >>> (28 - 4 * digit)) & 15]!
    }
    return String.fromCharCode.apply(null, tokenCodes)
  }

  // ---- the due order --------------------------------------------------------------------------
  // Every task with a due instant has one (instant, number) pair in `order`, which keeps them
  // sorted; a claim takes the earliest off its front.

  const order = createDueOrder()
  /** Pending tasks by expiry, so the expired ones come off its front as due ones do off `order`. */
  const expiring = createDueOrder()

  /** A pending task leaves the expiry order: its result came, or it ended. */
  const unexpire = (number: number) => {
    const at = number * ROW + EXPIRES
    const was = rows[at]!
    if (Number.isNaN(was)) return
    expiring.delete(was, number)
    rows[at] = NaN
  }

  /** Sets when task `number` is due next (`NaN`: never, it is pending, taken or terminal). */
  const setDue = (number: number, due: number) => {
    const at = number * ROW + DUE
    const was = rows[at]!
    if (was === due) return
    if (!Number.isNaN(was)) order.delete(was, number)
    rows[at] = due
    if (!Number.isNaN(due)) order.add(due, number)
  }

  // ---- retention -------------------------------------------------------------------------------
  // Tasks in the order they finished, as (instant, number) in two arrays read from `finishedHead`.
  // Finishing instants come from the callers' clocks, so they are only roughly in order: a task
  // queued behind a later one waits for it, which only keeps it a little longer. An item is a
  // reminder, not a promise: when it comes up, the task is let go only if it is still finished
  // and has been for the whole retention (a failed task may have been redelivered since).

  const finishedAt: number[] = []
  const finishedNumber: number[] = []
  let finishedHead = 0

  const isFinished = (status: TaskStatus) => status === 'delivered' || status === 'failed' || status === 'cancelled'

  const noteFinished = (entry: Entry) => {
    if (retentionMs === 0) return
    finishedAt.push(updatedOf(entry))
    finishedNumber.push(entry.number)
  }

  /** Lets go of the tasks that finished at least the retention before `now`. */
  const letGo = (now: number) => {
    if (finishedHead === finishedAt.length || finishedAt[finishedHead]! + retentionMs > now) return
    do {
      const entry = byNumber[finishedNumber[finishedHead++]!]
      if (entry === undefined || !isFinished(entry.status) || updatedOf(entry) + retentionMs > now) continue
      tasks.delete(entry.id)
      if (entry.idempotencyKey !== undefined && byIdempotencyKey.get(entry.idempotencyKey) === entry) {
        byIdempotencyKey.delete(entry.idempotencyKey)
      }
      byNumber[entry.number] = undefined
      freeNumbers.push(entry.number)
    } while (finishedHead < finishedAt.length && finishedAt[finishedHead]! + retentionMs <= now)
    if (finishedHead >= 1024 && finishedHead >= finishedAt.length >> 1) {
      finishedAt.splice(0, finishedHead)
      finishedNumber.splice(0, finishedHead)
      finishedHead = 0
    }
  }

  // ---- copies out -----------------------------------------------------------------------------

  const toTask = (entry: Entry): CallbackTask => {
    const row = entry.number * ROW
    const task: CallbackTask = {
      id: entry.id,
      status: entry.status,
      callbackUrl: entry.callbackUrl,
      event: entry.event,
      attempts: entry.attempts,
      createdAt: new Date(rows[row + CREATED]!),
      updatedAt: new Date(rows[row + UPDATED]!)
    }
    if (entry.idempotencyKey !== undefined) task.idempotencyKey = entry.idempotencyKey
    if (entry.secret !== undefined) task.secret = typeof entry.secret === 'string' ? entry.secret : [...entry.secret]
    if (entry.encryptionKey !== undefined) task.encryptionKey = JSON.parse(entry.encryptionKey) as NonNullable<CallbackTask['encryptionKey']>
    if (entry.verifyIntent) task.verifyIntent = true
    if (entry.metadata !== undefined) task.metadata = JSON.parse(entry.metadata) as Record<string, unknown>
    if (entry.body !== undefined) task.body = entry.body
    if (entry.contentType !== undefined) task.contentType = entry.contentType
    const due = entry.status === 'pending' ? rows[row + EXPIRES]! : rows[row + DUE]!
    if (!Number.isNaN(due)) task.nextAttemptAt = new Date(due)
    const deadline = rows[row + DEADLINE]!
    if (!Number.isNaN(deadline)) task.deadline = new Date(deadline)
    if (entry.lastError !== undefined) task.lastError = entry.lastError
    if (entry.destination !== undefined) task.destination = entry.destination
    return task
  }

  const toLease = (entry: Entry): Lease => ({
    task: toTask(entry),
    token: tokenOf(entry.number),
    expiresAt: new Date(rows[entry.number * ROW + DUE]!)
  })

  const toAttempt = (stored: StoredAttempt): AttemptRecord => {
    const record: AttemptRecord = {
      attempt: stored.attempt,
      startedAt: new Date(stored.startedAt),
      durationMs: stored.durationMs,
      outcome: stored.outcome
    }
    if (stored.status !== undefined) record.status = stored.status
    if (stored.error !== undefined) record.error = stored.error
    if (stored.responseBody !== undefined) record.responseBody = stored.responseBody
    return record
  }

  // ---- leases ---------------------------------------------------------------------------------

  /** Leases a pending task (scheduled ones are leased by `claim`, a batch at a time). */
  const lease = (entry: Entry, now: number, leaseMs: number) => {
    entry.status = 'delivering'
    writeLease(entry.number, now, now + leaseMs)
    order.add(now + leaseMs, entry.number)
  }

  /** The entry `held` leases, or `undefined` once that lease is void (reclaimed, completed, cancelled). */
  const heldBy = (held: Lease): Entry | undefined => {
    const entry = tasks.get(held.task.id)
    return entry !== undefined && entry.status === 'delivering' && tokenOf(entry.number) === held.token ? entry : undefined
  }

  // ---- destinations ----------------------------------------------------------------------------
  // Holds (throttled, open, probing) by destination; attempts in flight are counted by the caller.

  const holds = new Map<string, { state: 'throttled' | 'open' | 'probing'; until: number; reason: string; openings: number }>()

  /** Whether a claim at `at` would skip `destination` (see `attach`). */
  const isHeld = (destination: string, at: number) => {
    const hold = holds.get(destination)
    return hold !== undefined && (hold.until > at || hold.state !== 'throttled')
  }

  /** Failures counted per destination for the breaker (see `countDestinationFailure`). */
  const tallies = new Map<string, { inARow: number; attempts: number; failures: number; expires: number }>()

  /** An answered attempt of `destination` at `at`: counted while it has a tally (see `complete`). */
  const countAnswer = (destination: string, at: number) => {
    const tally = tallies.get(destination)
    if (tally === undefined) return
    if (tally.expires <= at) tallies.delete(destination)
    else {
      tally.inARow = 0
      tally.attempts += 1
    }
  }

  /** How many more of `destination`'s tasks a claim at `at` may take, and whether the next is a probe. */
  function roomFor(destination: string, at: number, perDestination: number, inFlight: number): { left: number; probe: boolean } {
    const hold = holds.get(destination)
    let cap = perDestination
    let probe = false
    if (hold !== undefined) {
      if (hold.until > at) return { left: 0, probe }
      if (hold.state === 'throttled') holds.delete(destination)
      else {
        // open with its cool-down over, or a probe whose lease ran out: one (more) probe
        cap = 1
        probe = true
      }
    }
    // A count below 0 gives a destination the caller trusts more room; never a second probe.
    return { left: Math.max(0, cap - (probe ? Math.max(0, inFlight) : inFlight)), probe }
  }

  /**
   * Claims with per-destination limits: reads the due order from its front without taking
   * anything out, and takes out only the tasks chosen, so skipped tasks keep their place.
   */
  function takeLimited(
    at: number,
    limit: number,
    perDestination: number,
    inFlight: ReadonlyMap<string, number> | undefined
  ): { numbers: number[]; probes: Set<number> } {
    const numbers: number[] = []
    const probes = new Set<number>()
    const room = new Map<string, { left: number; probe: boolean }>()
    let skipped = 0
    order.scanDue(at, (number) => {
      const entry = byNumber[number]!
      const destination = entry.destination
      // A task past its deadline is claimed whatever its destination: it fails without sending.
      if (destination === undefined || rows[number * ROW + DEADLINE]! < at) {
        numbers.push(number)
      } else {
        let left = room.get(destination)
        if (left === undefined) room.set(destination, (left = roomFor(destination, at, perDestination, inFlight?.get(destination) ?? 0)))
        if (left.left > 0) {
          left.left--
          numbers.push(number)
          if (left.probe) probes.add(number)
        } else if (++skipped >= MAX_SKIPPED_PER_CLAIM) {
          return false
        }
      }
      return numbers.length < limit
    })
    for (const number of numbers) order.delete(rows[number * ROW + DUE]!, number)
    return { numbers, probes }
  }

  /** The task stored under `task`'s idempotency key, if any. */
  function storedUnder(task: NewCallbackTask): Entry | undefined {
    return task.idempotencyKey === undefined ? undefined : byIdempotencyKey.get(task.idempotencyKey)
  }

  function metadataOf(task: NewCallbackTask): string | undefined {
    if (task.metadata === undefined) return undefined
    try {
      return JSON.stringify(task.metadata)
    } catch (error) {
      throw new TypeError('metadata must be JSON-serialisable', { cause: error })
    }
  }

  /** Stores a new task (its id is free, its key unused): scheduled with a body, else pending. */
  function store(task: NewCallbackTask, metadata: string | undefined): Entry {
    if (tasks.has(task.id)) {
      throw new StoreError('ERR_CALLBACK_STORE', `a task with id ${JSON.stringify(task.id)} is already stored`)
    }
    const number = freeNumbers.pop() ?? byNumber.length
    if ((number + 1) * ROW > rows.length) {
      const grown = new Float64Array(rows.length * 2)
      grown.set(rows)
      rows = grown
    }
    const createdAt = task.createdAt.getTime()
    const withBody = task.body !== undefined
    const entry: Entry = {
      id: task.id,
      status: withBody ? 'scheduled' : 'pending',
      callbackUrl: task.callbackUrl,
      event: task.event,
      idempotencyKey: task.idempotencyKey,
      secret: Array.isArray(task.secret) ? [...task.secret] : task.secret,
      encryptionKey: task.encryptionKey === undefined ? undefined : JSON.stringify(task.encryptionKey),
      verifyIntent: task.verifyIntent === true,
      metadata,
      body: task.body,
      contentType: withBody ? task.contentType : undefined,
      attempts: 0,
      lastError: undefined,
      number,
      history: undefined,
      destination: task.destination
    }
    const row = number * ROW
    rows[row + DUE] = NaN
    rows[row + UPDATED] = createdAt
    rows[row + CREATED] = createdAt
    rows[row + DEADLINE] = task.deadline === undefined ? NaN : task.deadline.getTime()
    rows[row + EXPIRES] = NaN
    const next = task.nextAttemptAt === undefined ? NaN : task.nextAttemptAt.getTime()
    if (withBody) {
      setDue(number, Number.isNaN(next) ? createdAt : next)
    } else if (!Number.isNaN(next)) {
      rows[row + EXPIRES] = next
      expiring.add(next, number)
    }
    tasks.set(entry.id, entry)
    byNumber[number] = entry
    if (entry.idempotencyKey !== undefined) byIdempotencyKey.set(entry.idempotencyKey, entry)
    return entry
  }

  /** A task became due sooner: let subscribed workers look now rather than at their next poll. */
  const wake = due.wakeSoon

  return {
    async insert(task: NewCallbackTask, callOptions?: StoreCallOptions) {
      refuseTransaction(callOptions)
      letGo(task.createdAt.getTime())
      const existing = storedUnder(task)
      if (existing !== undefined) return { task: toTask(existing), created: false }
      const entry = store(task, metadataOf(task))
      if (entry.body !== undefined) wake()
      return { task: toTask(entry), created: true }
    },

    async insertMany(batch: readonly NewCallbackTask[], callOptions?: StoreCallOptions) {
      refuseTransaction(callOptions)
      if (batch.length === 0) return []
      letGo(batch[0]!.createdAt.getTime())
      // Everything that can refuse the batch is checked before the first task is stored: all or nothing.
      const metadata = batch.map(metadataOf)
      const ids = new Set<string>()
      const keys = new Set<string>()
      for (const task of batch) {
        const key = task.idempotencyKey
        if (key !== undefined && (keys.has(key) || byIdempotencyKey.has(key))) continue
        if (key !== undefined) keys.add(key)
        if (ids.has(task.id) || tasks.has(task.id)) {
          throw new StoreError('ERR_CALLBACK_STORE', `a task with id ${JSON.stringify(task.id)} is already stored`)
        }
        ids.add(task.id)
      }
      let earliest = Infinity
      const answers = batch.map((task, index) => {
        const existing = storedUnder(task)
        if (existing !== undefined) return { task: toTask(existing), created: false }
        const entry = store(task, metadata[index])
        if (entry.body !== undefined) earliest = Math.min(earliest, rows[entry.number * ROW + DUE]!)
        return { task: toTask(entry), created: true }
      })
      // one wake-up for the batch, at the earliest instant one of its tasks falls due
      if (earliest !== Infinity) wake(earliest)
      return answers
    },

    async get(id) {
      const entry = tasks.get(id)
      return entry === undefined ? undefined : toTask(entry)
    },

    async attach(id, result, { now, leaseMs }) {
      const entry = tasks.get(id)
      if (entry === undefined || entry.status !== 'pending') return undefined
      unexpire(entry.number)
      entry.body = result.body
      entry.contentType = result.contentType
      const at = now.getTime()
      if (entry.destination !== undefined && isHeld(entry.destination, at)) {
        // its destination is held back: a worker sends it once it may be tried again
        entry.status = 'scheduled'
        setUpdated(entry, Math.max(updatedOf(entry), at))
        setDue(entry.number, at)
        wake()
        return undefined
      }
      lease(entry, at, leaseMs)
      return toLease(entry)
    },

    async schedule(id, result, { now }, callOptions) {
      refuseTransaction(callOptions)
      const entry = tasks.get(id)
      if (entry === undefined || entry.status !== 'pending') return undefined
      unexpire(entry.number)
      entry.body = result.body
      entry.contentType = result.contentType
      entry.status = 'scheduled'
      const at = now.getTime()
      setUpdated(entry, Math.max(updatedOf(entry), at))
      setDue(entry.number, at)
      wake()
      return toTask(entry)
    },

    async expirePending({ now, limit, reason }) {
      const at = now.getTime()
      const expired: CallbackTask[] = []
      for (const number of expiring.takeDue(at, limit)) {
        const entry = byNumber[number]!
        rows[number * ROW + EXPIRES] = NaN
        if (entry.status !== 'pending') continue
        entry.status = 'failed'
        entry.lastError = reason
        setUpdated(entry, Math.max(updatedOf(entry), at))
        noteFinished(entry)
        expired.push(toTask(entry))
      }
      return expired
    },

    async claim({ now, limit, leaseMs, perDestination, inFlight }) {
      const at = now.getTime()
      letGo(at)
      const expires = at + leaseMs
      if (perDestination !== undefined) {
        const { numbers, probes } = takeLimited(at, limit, perDestination, inFlight)
        const taken = numbers.map((number) => byNumber[number]!)
        for (const entry of taken) entry.status = 'delivering'
        for (const number of numbers) writeLease(number, at, expires)
        for (const number of numbers) order.add(expires, number)
        return taken.map((entry) => {
          const leased = toLease(entry)
          if (entry.destination !== undefined) {
            const hold = holds.get(entry.destination)
            if (probes.has(entry.number) && hold !== undefined) {
              leased.probe = { openings: hold.openings }
              hold.state = 'probing'
              hold.until = expires
            }
          }
          return leased
        })
      }
      // One step at a time over the whole batch, each in a loop of its own: with a million tasks
      // they lie far apart in memory and the first touch of each misses the CPU's caches; in a
      // tight loop of independent touches the CPU waits for many such misses at once, where
      // spread through heavier code it would wait for them one by one.
      const numbers = order.takeDue(at, limit)
      const taken = numbers.map((number) => byNumber[number]!)
      for (const entry of taken) entry.status = 'delivering'
      for (const number of numbers) writeLease(number, at, expires)
      // Back in the order only once all are taken, so a lease that is already over
      // (leaseMs <= 0) cannot hand the same task out twice in one claim.
      for (const number of numbers) order.add(expires, number)
      return taken.map(toLease)
    },

    async complete(held, attempt, resolution: AttemptResolution) {
      const entry = heldBy(held)
      if (entry === undefined) return false
      const stored: StoredAttempt = {
        attempt: attempt.attempt,
        startedAt: attempt.startedAt.getTime(),
        durationMs: attempt.durationMs,
        status: attempt.status,
        error: attempt.error,
        responseBody: attempt.responseBody,
        outcome: attempt.outcome
      }
      const history = entry.history
      if (history === undefined || attemptHistory === 1) entry.history = stored
      else if (!Array.isArray(history)) entry.history = [history, stored]
      else {
        history.push(stored)
        if (history.length > attemptHistory) history.splice(0, history.length - attemptHistory)
      }
      entry.attempts += 1
      entry.status = resolution.status
      setUpdated(entry, Math.max(updatedOf(entry), stored.startedAt + stored.durationMs))
      if (tallies.size > 0 && entry.destination !== undefined && answered(stored.status)) countAnswer(entry.destination, stored.startedAt + stored.durationMs)
      // A delivered task's last failure is history (the attempts keep it), not its state.
      if (resolution.status === 'delivered') entry.lastError = undefined
      else if (resolution.lastError !== undefined) entry.lastError = resolution.lastError
      if (resolution.status === 'scheduled') {
        setDue(entry.number, resolution.nextAttemptAt.getTime())
        wake(resolution.nextAttemptAt.getTime())
      } else {
        setDue(entry.number, NaN)
        noteFinished(entry)
      }
      return true
    },

    async release(held, nextAttemptAt) {
      const entry = heldBy(held)
      if (entry === undefined) return false
      entry.status = 'scheduled'
      const due = nextAttemptAt === undefined ? updatedOf(entry) : nextAttemptAt.getTime()
      setDue(entry.number, due)
      wake(due)
      return true
    },

    async cancel(id) {
      const entry = tasks.get(id)
      if (entry === undefined) return false
      if (isFinished(entry.status)) return false
      unexpire(entry.number)
      entry.status = 'cancelled'
      setDue(entry.number, NaN)
      // no caller's clock here: the system clock, or the task's last change if that is later
      setUpdated(entry, Math.max(updatedOf(entry), Date.now()))
      noteFinished(entry)
      return true
    },

    async attempts(id) {
      const history = tasks.get(id)?.history
      if (history === undefined) return []
      return Array.isArray(history) ? history.map(toAttempt) : [toAttempt(history)]
    },

    // ---- inspection: a scan of every task, which is fine for an operator's occasional look ----

    async list(query) {
      const checked = checkListQuery(query)
      let candidates: Iterable<Entry> = tasks.values()
      // an id or an idempotency key names at most one task: no scan
      if (checked.id !== undefined) candidates = [tasks.get(checked.id)].filter((entry) => entry !== undefined)
      else if (checked.idempotencyKey !== undefined) candidates = [byIdempotencyKey.get(checked.idempotencyKey)].filter((entry) => entry !== undefined)
      const found: { entry: Entry; updatedAt: number; id: string }[] = []
      for (const entry of candidates) {
        const updatedAt = updatedOf(entry)
        if (matchesListQuery(entry, updatedAt, checked)) found.push({ entry, updatedAt, id: entry.id })
      }
      found.sort(listOrder)
      return taskPage(found.slice(0, checked.limit + 1).map((listed) => toTask(listed.entry)), checked.limit)
    },

    async summarize({ now, bucketMs, buckets, countCap, hosts }) {
      const at = now.getTime()
      const from = at - bucketMs * buckets
      const summary: TaskSummary = {
        counts: { pending: 0, scheduled: 0, delivering: 0, delivered: 0, failed: 0, cancelled: 0 },
        due: Math.min(order.countDue(at), countCap),
        attempts: Array.from({ length: buckets }, (_, index) => ({ start: new Date(at - bucketMs * (buckets - index)), delivered: 0, failed: 0 })),
        failingHosts: []
      }
      const failing = new Map<string, { host: string; tasks: number; lastError: string; lastFailedAt: Date }>()
      let oldest = Infinity
      for (const entry of tasks.values()) {
        summary.counts[entry.status] = Math.min(summary.counts[entry.status] + 1, countCap)
        const row = entry.number * ROW
        if ((entry.status === 'scheduled' || entry.status === 'delivering') && rows[row + DUE]! <= at) oldest = Math.min(oldest, rows[row + DUE]!)
        const history = entry.history === undefined ? [] : Array.isArray(entry.history) ? entry.history : [entry.history]
        for (const attempt of history) {
          if (attempt.startedAt <= from || attempt.startedAt > at) continue
          const bucket = summary.attempts[buckets - 1 - Math.floor((at - attempt.startedAt) / bucketMs)]
          if (bucket !== undefined) bucket[attempt.outcome === 'delivered' ? 'delivered' : 'failed'] += 1
        }
        const updatedAt = rows[row + UPDATED]!
        if ((entry.status === 'failed' || entry.status === 'scheduled') && entry.lastError !== undefined && updatedAt >= from) {
          const host = callbackHost(entry.callbackUrl)
          const seen = failing.get(host)
          if (seen === undefined) failing.set(host, { host, tasks: 1, lastError: entry.lastError, lastFailedAt: new Date(updatedAt) })
          else {
            seen.tasks += 1
            if (updatedAt > seen.lastFailedAt.getTime()) Object.assign(seen, { lastError: entry.lastError, lastFailedAt: new Date(updatedAt) })
          }
        }
      }
      if (oldest !== Infinity) summary.oldestDueAt = new Date(oldest)
      summary.failingHosts = [...failing.values()]
        .sort((a, b) => b.tasks - a.tasks || b.lastFailedAt.getTime() - a.lastFailedAt.getTime())
        .slice(0, hosts)
      return summary
    },

    async redeliver(id, { now }) {
      const entry = tasks.get(id)
      if (entry === undefined || entry.status !== 'failed') return false
      const at = now.getTime()
      entry.status = 'scheduled'
      setUpdated(entry, Math.max(updatedOf(entry), at))
      setDue(entry.number, at)
      wake()
      return true
    },

    async setDestination(destination, hold, now) {
      void now
      tallies.delete(destination)
      if (hold === null) holds.delete(destination)
      else holds.set(destination, { state: hold.state, until: hold.until.getTime(), reason: hold.reason, openings: hold.openings })
    },

    async countDestinationFailure(destination, now, windowMs) {
      const at = now.getTime()
      let tally = tallies.get(destination)
      if (tally === undefined) tallies.set(destination, (tally = { inARow: 0, attempts: 0, failures: 0, expires: -Infinity }))
      if (tally.expires <= at) Object.assign(tally, { attempts: 0, failures: 0, expires: at + windowMs })
      tally.inARow += 1
      tally.attempts += 1
      tally.failures += 1
      return { inARow: tally.inARow, attempts: tally.attempts, failures: tally.failures }
    },

    async listDestinations(now) {
      const at = now.getTime()
      const due = new Map<string, number>()
      const inFlight = new Map<string, number>()
      for (const entry of tasks.values()) {
        if (entry.destination === undefined || (entry.status !== 'scheduled' && entry.status !== 'delivering')) continue
        const counted = rows[entry.number * ROW + DUE]! <= at ? due : entry.status === 'delivering' ? inFlight : undefined
        counted?.set(entry.destination, (counted.get(entry.destination) ?? 0) + 1)
      }
      const names = new Set([...holds.keys(), ...inFlight.keys(), ...due.keys()])
      const found: DestinationState[] = []
      for (const destination of names) {
        const hold = holds.get(destination)
        const state: DestinationState = {
          destination,
          state: hold === undefined || (hold.state === 'throttled' && hold.until <= at) ? 'closed' : hold.state,
          openings: hold?.openings ?? 0,
          inFlight: inFlight.get(destination) ?? 0,
          due: due.get(destination) ?? 0
        }
        if (hold !== undefined && state.state !== 'closed') state.until = new Date(hold.until)
        if (hold !== undefined) state.lastError = hold.reason
        if (state.state !== 'closed' || state.inFlight > 0 || state.due > 0) found.push(state)
      }
      return found.sort((a, b) => b.due - a.due || (a.destination < b.destination ? -1 : 1))
    },

    async countDue(now) {
      return order.countDue(now.getTime())
    },

    subscribe(listener) {
      return due.add(listener)
    }
  }
}

/** The memory store is no database: it cannot join a caller's transaction, and says so rather than write outside it. */
function refuseTransaction(options: StoreCallOptions | undefined): void {
  if (options?.transaction !== undefined) {
    throw new TypeError('`transaction`: the memory store cannot join a database transaction; use the PostgreSQL store for the outbox pattern')
  }
}

const MEMORY_STORE_OPTION_NAMES: ReadonlySet<string> = new Set(['attemptHistory', 'retentionSeconds'])

/** Whether an attempt's HTTP status shows its destination up, for the breaker's tally: below 500, other than 408. */
const answered = (status: number | undefined) => status !== undefined && status < 500 && status !== 408

/** Due tasks a limited claim looks past (held or capped destinations) before it stops looking. */
const MAX_SKIPPED_PER_CLAIM = 10_000

/** Numbers per task in the store's `rows`: eight, 64 bytes. */
const ROW = 8

/** The character codes of the hex digits 0-9 and a-f. */
const hexCode = Array.from('0123456789abcdef', (digit) => digit.charCodeAt(0))
