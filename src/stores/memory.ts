import { randomUUID } from 'node:crypto'
import { StoreError } from '../errors.ts'
import type {
  AttemptRecord,
  AttemptResolution,
  CallbackStore,
  CallbackTask,
  Lease,
  NewCallbackTask,
  TaskStatus
} from '../types.ts'

/** Options of {@link createMemoryStore}. */
export interface MemoryStoreOptions {
  /**
   * How many attempts each task keeps in its history; the oldest are dropped first. Default 100
   * (the default retry schedule makes at most 8).
   */
  maxAttemptHistory?: number
}

/**
 * What the store keeps per task. Instants are epoch milliseconds rather than `Date`s (a `Date`
 * weighs several times a number), metadata is kept as its JSON text (immutable, so no caller can
 * reach into it, and it behaves as it will in a durable store), and every entry is built by one
 * literal so V8 gives them all one hidden class.
 */
interface Entry {
  readonly id: string
  status: TaskStatus
  readonly callbackUrl: string
  readonly event: string
  readonly idempotencyKey: string | undefined
  readonly secret: string | readonly string[] | undefined
  readonly metadata: string | undefined
  body: string | undefined
  contentType: string | undefined
  attempts: number
  /** `nextAttemptAt` while scheduled, lease expiry while delivering, `NaN` otherwise. */
  due: number
  readonly deadline: number
  readonly createdAt: number
  updatedAt: number
  lastError: string | undefined
  token: string | undefined
  /** The instant (caller's clock) the current lease was taken: a release without a time is due then. */
  leasedAt: number
  /** Position in the due heap, -1 when not in it. */
  slot: number
  history: StoredAttempt[] | undefined
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
 * sit in a binary heap keyed by their due instant (`nextAttemptAt` while scheduled, lease expiry
 * while delivering), so a claim costs O(k log n) for k tasks whatever the number stored. Every
 * task handed out is a copy. Like every store, it decides "due" by the `now` the caller passes and
 * never reads a clock of its own.
 *
 * Tasks are kept until the process exits (terminal ones too, so an idempotency key keeps
 * answering); use a durable store when several processes share the work or tasks must survive a
 * restart.
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
  const maxAttemptHistory = options.maxAttemptHistory ?? 100
  if (!Number.isSafeInteger(maxAttemptHistory) || maxAttemptHistory < 1) {
    throw new TypeError('maxAttemptHistory must be a positive integer')
  }

  const tasks = new Map<string, Entry>()
  const byIdempotencyKey = new Map<string, Entry>()
  const heap: Entry[] = []
  const listeners = new Set<() => void>()
  let wakeQueued = false

  // ---- the due heap: a min-heap of entries on `due`, each entry knowing its slot -------------

  const place = (entry: Entry, slot: number) => {
    heap[slot] = entry
    entry.slot = slot
  }

  const siftUp = (entry: Entry, slot: number) => {
    while (slot > 0) {
      const parentSlot = (slot - 1) >> 1
      const parent = heap[parentSlot]!
      if (parent.due <= entry.due) break
      place(parent, slot)
      slot = parentSlot
    }
    place(entry, slot)
  }

  const siftDown = (entry: Entry, slot: number) => {
    const length = heap.length
    for (;;) {
      let childSlot = 2 * slot + 1
      if (childSlot >= length) break
      let child = heap[childSlot]!
      const rightSlot = childSlot + 1
      if (rightSlot < length) {
        const right = heap[rightSlot]!
        if (right.due < child.due) {
          childSlot = rightSlot
          child = right
        }
      }
      if (entry.due <= child.due) break
      place(child, slot)
      slot = childSlot
    }
    place(entry, slot)
  }

  /** Puts `entry` in the heap at its (new) `due`, or moves it there if it is in already. */
  const enqueue = (entry: Entry) => {
    if (entry.slot < 0) {
      heap.push(entry)
      siftUp(entry, heap.length - 1)
      return
    }
    const slot = entry.slot
    if (slot > 0 && heap[(slot - 1) >> 1]!.due > entry.due) siftUp(entry, slot)
    else siftDown(entry, slot)
  }

  const dequeue = (entry: Entry) => {
    const slot = entry.slot
    if (slot < 0) return
    entry.slot = -1
    const last = heap.pop()!
    if (last === entry) return
    heap[slot] = last
    last.slot = slot
    enqueue(last)
  }

  const takeEarliest = (): Entry => {
    const first = heap[0]!
    dequeue(first)
    return first
  }

  // ---- copies out -----------------------------------------------------------------------------

  const toTask = (entry: Entry): CallbackTask => {
    const task: CallbackTask = {
      id: entry.id,
      status: entry.status,
      callbackUrl: entry.callbackUrl,
      event: entry.event,
      attempts: entry.attempts,
      createdAt: new Date(entry.createdAt),
      updatedAt: new Date(entry.updatedAt)
    }
    if (entry.idempotencyKey !== undefined) task.idempotencyKey = entry.idempotencyKey
    if (entry.secret !== undefined) task.secret = typeof entry.secret === 'string' ? entry.secret : [...entry.secret]
    if (entry.metadata !== undefined) task.metadata = JSON.parse(entry.metadata) as Record<string, unknown>
    if (entry.body !== undefined) task.body = entry.body
    if (entry.contentType !== undefined) task.contentType = entry.contentType
    if (!Number.isNaN(entry.due)) task.nextAttemptAt = new Date(entry.due)
    if (!Number.isNaN(entry.deadline)) task.deadline = new Date(entry.deadline)
    if (entry.lastError !== undefined) task.lastError = entry.lastError
    return task
  }

  const toLease = (entry: Entry): Lease => ({
    task: toTask(entry),
    token: entry.token!,
    expiresAt: new Date(entry.due)
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

  const lease = (entry: Entry, now: number, leaseMs: number) => {
    entry.status = 'delivering'
    entry.token = randomUUID()
    entry.due = now + leaseMs
    entry.leasedAt = now
    entry.updatedAt = now
    enqueue(entry)
  }

  /** The entry `held` leases, or `undefined` once that lease is void (reclaimed, completed, cancelled). */
  const heldBy = (held: Lease): Entry | undefined => {
    const entry = tasks.get(held.task.id)
    return entry !== undefined && entry.status === 'delivering' && entry.token === held.token ? entry : undefined
  }

  /** A task became due sooner: let subscribed workers look now rather than at their next poll. */
  const wake = () => {
    if (listeners.size === 0 || wakeQueued) return
    wakeQueued = true
    queueMicrotask(() => {
      wakeQueued = false
      for (const listener of [...listeners]) {
        try {
          listener()
        } catch (error) {
          // one listener's failure must not keep the others asleep; it still surfaces
          queueMicrotask(() => {
            throw error
          })
        }
      }
    })
  }

  return {
    async insert(task: NewCallbackTask) {
      if (task.idempotencyKey !== undefined) {
        const existing = byIdempotencyKey.get(task.idempotencyKey)
        if (existing !== undefined) return { task: toTask(existing), created: false }
      }
      if (tasks.has(task.id)) {
        throw new StoreError('ERR_CALLBACK_STORE', `a task with id ${JSON.stringify(task.id)} is already stored`)
      }
      let metadata: string | undefined
      if (task.metadata !== undefined) {
        try {
          metadata = JSON.stringify(task.metadata)
        } catch (error) {
          throw new TypeError('metadata must be JSON-serialisable', { cause: error })
        }
      }
      const createdAt = task.createdAt.getTime()
      const entry: Entry = {
        id: task.id,
        status: 'pending',
        callbackUrl: task.callbackUrl,
        event: task.event,
        idempotencyKey: task.idempotencyKey,
        secret: Array.isArray(task.secret) ? [...task.secret] : task.secret,
        metadata,
        body: undefined,
        contentType: undefined,
        attempts: 0,
        due: NaN,
        deadline: task.deadline === undefined ? NaN : task.deadline.getTime(),
        createdAt,
        updatedAt: createdAt,
        lastError: undefined,
        token: undefined,
        leasedAt: NaN,
        slot: -1,
        history: undefined
      }
      tasks.set(entry.id, entry)
      if (entry.idempotencyKey !== undefined) byIdempotencyKey.set(entry.idempotencyKey, entry)
      return { task: toTask(entry), created: true }
    },

    async get(id) {
      const entry = tasks.get(id)
      return entry === undefined ? undefined : toTask(entry)
    },

    async attach(id, result, { now, leaseMs }) {
      const entry = tasks.get(id)
      if (entry === undefined || entry.status !== 'pending') return undefined
      entry.body = result.body
      entry.contentType = result.contentType
      lease(entry, now.getTime(), leaseMs)
      return toLease(entry)
    },

    async claim({ now, limit, leaseMs }) {
      const at = now.getTime()
      const taken: Entry[] = []
      while (taken.length < limit && heap.length > 0 && heap[0]!.due <= at) taken.push(takeEarliest())
      // Leased only once all are taken, so a lease that is already over (leaseMs <= 0) cannot
      // hand the same task out twice in one claim.
      for (const entry of taken) lease(entry, at, leaseMs)
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
      if (entry.history === undefined) {
        // a literal of one, not push onto [], which would reserve room for 17
        entry.history = [stored]
      } else {
        entry.history.push(stored)
        if (entry.history.length > maxAttemptHistory) entry.history.splice(0, entry.history.length - maxAttemptHistory)
      }
      entry.attempts += 1
      entry.token = undefined
      entry.leasedAt = NaN
      entry.status = resolution.status
      entry.updatedAt = Math.max(entry.updatedAt, stored.startedAt + stored.durationMs)
      if (resolution.lastError !== undefined) entry.lastError = resolution.lastError
      if (resolution.status === 'scheduled') {
        entry.due = resolution.nextAttemptAt.getTime()
        enqueue(entry)
        wake()
      } else {
        entry.due = NaN
        dequeue(entry)
      }
      return true
    },

    async release(held, nextAttemptAt) {
      const entry = heldBy(held)
      if (entry === undefined) return false
      entry.status = 'scheduled'
      entry.token = undefined
      entry.due = nextAttemptAt === undefined ? entry.leasedAt : nextAttemptAt.getTime()
      entry.leasedAt = NaN
      enqueue(entry)
      wake()
      return true
    },

    async cancel(id) {
      const entry = tasks.get(id)
      if (entry === undefined) return false
      if (entry.status === 'delivered' || entry.status === 'failed' || entry.status === 'cancelled') return false
      entry.status = 'cancelled'
      entry.token = undefined
      entry.leasedAt = NaN
      entry.due = NaN
      // no caller's clock here; the time of a cancellation is for people reading, never compared
      entry.updatedAt = Math.max(entry.updatedAt, Date.now())
      dequeue(entry)
      return true
    },

    async attempts(id) {
      const history = tasks.get(id)?.history
      return history === undefined ? [] : history.map(toAttempt)
    },

    subscribe(listener) {
      if (typeof listener !== 'function') throw new TypeError('listener must be a function')
      // a wrapper per subscription, so the same function subscribed twice unsubscribes one at a time
      const subscription = () => listener()
      listeners.add(subscription)
      return () => {
        listeners.delete(subscription)
      }
    }
  }
}
