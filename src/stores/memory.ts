import { createDueListeners } from './due-listeners.ts'
import { checkListQuery, taskPage } from './task-list.ts'
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
  /** The receiver's encryption key as JSON text (a JWK or a URL string), like metadata. */
  readonly encryptionKey: string | undefined
  readonly verifyIntent: boolean
  readonly metadata: string | undefined
  body: string | undefined
  contentType: string | undefined
  attempts: number
  /** `nextAttemptAt` while scheduled, lease expiry while delivering, `NaN` otherwise. */
  due: number
  readonly deadline: number | undefined
  readonly createdAt: number
  /** While delivering: the instant (caller's clock) the lease was taken, when a bare release is due. */
  updatedAt: number
  lastError: string | undefined
  token: string | undefined
  /** Its index in `byNumber`, which the due heap refers to it by. */
  readonly number: number
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
 * sit in a heap keyed by their due instant (`nextAttemptAt` while scheduled, lease expiry
 * while delivering), so a claim costs O(k log n) for k tasks whatever the number stored. Every
 * task handed out is a copy. Like every store, it decides "due" only by the `now` the caller
 * passes (its one clock reading, the `updatedAt` of a cancellation, is never compared).
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
  const due = createDueListeners()

  // ---- the due heap ----------------------------------------------------------------------------
  // A 4-ary min-heap of (due instant, entry number) pairs, interleaved in one Float64Array and
  // laid out so that the four children of a node fill one 64-byte cache line: finding the earliest
  // child costs one memory read, and sifting never touches an entry. With a million tasks that is
  // what keeps a claim about as quick as with ten thousand. A task whose due instant changes gets
  // a new item; the old one is recognised as stale when it surfaces (its instant no longer equals
  // the task's `due`) and dropped, and the heap is rebuilt from its live items when stale ones
  // outnumber them.

  const byNumber: Entry[] = []
  /** Item i lives at [2(i+3), 2(i+3)+1]: three unused leading items align each group of children. */
  let items = new Float64Array(2 * 1024)
  let size = 0
  /** Tasks with a due instant (scheduled or delivering); the heap holds at least one item for each. */
  let live = 0

  const siftUp = (key: number, number: number, i: number) => {
    while (i > 0) {
      const parent = (i - 1) >> 2
      const parentAt = (parent + 3) << 1
      const parentKey = items[parentAt]!
      if (parentKey <= key) break
      const at = (i + 3) << 1
      items[at] = parentKey
      items[at + 1] = items[parentAt + 1]!
      i = parent
    }
    const at = (i + 3) << 1
    items[at] = key
    items[at + 1] = number
  }

  const siftDown = (key: number, number: number, i: number) => {
    for (;;) {
      const first = 4 * i + 1
      if (first >= size) break
      const end = first + 4 < size ? first + 4 : size
      let best = first
      let bestKey = items[(first + 3) << 1]!
      for (let child = first + 1; child < end; child++) {
        const childKey = items[(child + 3) << 1]!
        if (childKey < bestKey) {
          best = child
          bestKey = childKey
        }
      }
      if (key <= bestKey) break
      const at = (i + 3) << 1
      items[at] = bestKey
      items[at + 1] = items[((best + 3) << 1) + 1]!
      i = best
    }
    const at = (i + 3) << 1
    items[at] = key
    items[at + 1] = number
  }

  const push = (key: number, number: number) => {
    if ((size + 4) << 1 > items.length) {
      const grown = new Float64Array(items.length * 2)
      grown.set(items)
      items = grown
    }
    siftUp(key, number, size++)
  }

  const removeTop = () => {
    size--
    if (size === 0) return
    const lastAt = (size + 3) << 1
    siftDown(items[lastAt]!, items[lastAt + 1]!, 0)
  }

  /** Drops stale items (and duplicates of live ones) and restores heap order, in O(size). */
  const rebuild = () => {
    const seen = new Set<number>()
    let kept = 0
    for (let i = 0; i < size; i++) {
      const at = (i + 3) << 1
      const key = items[at]!
      const number = items[at + 1]!
      if (byNumber[number]!.due !== key || seen.has(number)) continue
      seen.add(number)
      const keptAt = (kept + 3) << 1
      items[keptAt] = key
      items[keptAt + 1] = number
      kept++
    }
    size = kept
    for (let i = (size - 2) >> 2; i >= 0; i--) {
      const at = (i + 3) << 1
      siftDown(items[at]!, items[at + 1]!, i)
    }
  }

  /** Sets when `entry` is due next (`NaN`: never, it is pending, taken or terminal). */
  const setDue = (entry: Entry, due: number) => {
    const was = entry.due
    entry.due = due
    if (Number.isNaN(due)) {
      if (!Number.isNaN(was)) live--
      return
    }
    if (Number.isNaN(was)) live++
    push(due, entry.number)
    if (size > 2 * live + 4096) rebuild()
  }

  /** The earliest task due at or before `at`, now taken out of the heap, or `undefined`. */
  const takeDue = (at: number): Entry | undefined => {
    while (size > 0) {
      const key = items[6]!
      if (key > at) return undefined
      const entry = byNumber[items[7]!]!
      removeTop()
      if (entry.due !== key) continue // stale: the task moved or left since this item was pushed
      setDue(entry, NaN)
      return entry
    }
    return undefined
  }

  /**
   * How many tasks are due at or before `at`: a walk down the heap that stops at every item due
   * later, so it costs O(due + stale items above them), not O(tasks).
   */
  const countDueAt = (at: number): number => {
    const counted = new Set<number>()
    const stack = size > 0 ? [0] : []
    while (stack.length > 0) {
      const i = stack.pop()!
      const itemAt = (i + 3) << 1
      const key = items[itemAt]!
      if (key > at) continue
      const number = items[itemAt + 1]!
      if (byNumber[number]!.due === key) counted.add(number)
      for (let child = 4 * i + 1; child <= 4 * i + 4 && child < size; child++) stack.push(child)
    }
    return counted.size
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
    if (entry.encryptionKey !== undefined) task.encryptionKey = JSON.parse(entry.encryptionKey) as NonNullable<CallbackTask['encryptionKey']>
    if (entry.verifyIntent) task.verifyIntent = true
    if (entry.metadata !== undefined) task.metadata = JSON.parse(entry.metadata) as Record<string, unknown>
    if (entry.body !== undefined) task.body = entry.body
    if (entry.contentType !== undefined) task.contentType = entry.contentType
    if (!Number.isNaN(entry.due)) task.nextAttemptAt = new Date(entry.due)
    if (entry.deadline !== undefined) task.deadline = new Date(entry.deadline)
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
    entry.updatedAt = now
    setDue(entry, now + leaseMs)
  }

  /** The entry `held` leases, or `undefined` once that lease is void (reclaimed, completed, cancelled). */
  const heldBy = (held: Lease): Entry | undefined => {
    const entry = tasks.get(held.task.id)
    return entry !== undefined && entry.status === 'delivering' && entry.token === held.token ? entry : undefined
  }

  /** A task became due sooner: let subscribed workers look now rather than at their next poll. */
  const wake = due.wakeSoon

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
        encryptionKey: task.encryptionKey === undefined ? undefined : JSON.stringify(task.encryptionKey),
        verifyIntent: task.verifyIntent === true,
        metadata,
        body: undefined,
        contentType: undefined,
        attempts: 0,
        due: NaN,
        deadline: task.deadline?.getTime(),
        createdAt,
        updatedAt: createdAt,
        lastError: undefined,
        token: undefined,
        number: byNumber.length,
        history: undefined
      }
      tasks.set(entry.id, entry)
      byNumber.push(entry)
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
      while (taken.length < limit) {
        const entry = takeDue(at)
        if (entry === undefined) break
        taken.push(entry)
      }
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
      const history = entry.history
      if (history === undefined || maxAttemptHistory === 1) entry.history = stored
      else if (!Array.isArray(history)) entry.history = [history, stored]
      else {
        history.push(stored)
        if (history.length > maxAttemptHistory) history.splice(0, history.length - maxAttemptHistory)
      }
      entry.attempts += 1
      entry.token = undefined
      entry.status = resolution.status
      entry.updatedAt = Math.max(entry.updatedAt, stored.startedAt + stored.durationMs)
      if (resolution.lastError !== undefined) entry.lastError = resolution.lastError
      if (resolution.status === 'scheduled') {
        setDue(entry, resolution.nextAttemptAt.getTime())
        wake()
      } else {
        setDue(entry, NaN)
      }
      return true
    },

    async release(held, nextAttemptAt) {
      const entry = heldBy(held)
      if (entry === undefined) return false
      entry.status = 'scheduled'
      entry.token = undefined
      setDue(entry, nextAttemptAt === undefined ? entry.updatedAt : nextAttemptAt.getTime())
      wake()
      return true
    },

    async cancel(id) {
      const entry = tasks.get(id)
      if (entry === undefined) return false
      if (entry.status === 'delivered' || entry.status === 'failed' || entry.status === 'cancelled') return false
      entry.status = 'cancelled'
      entry.token = undefined
      setDue(entry, NaN)
      // no caller's clock here; the time of a cancellation is for people reading, never compared
      entry.updatedAt = Math.max(entry.updatedAt, Date.now())
      return true
    },

    async attempts(id) {
      const history = tasks.get(id)?.history
      if (history === undefined) return []
      return Array.isArray(history) ? history.map(toAttempt) : [toAttempt(history)]
    },

    // ---- inspection: a scan of every task, which is fine for an operator's occasional look ----

    async list(query) {
      const { status, since, limit, after } = checkListQuery(query)
      const from = since === undefined ? -Infinity : since.getTime()
      const found: Entry[] = []
      for (const entry of tasks.values()) {
        if (entry.status !== status || entry.updatedAt < from) continue
        if (after !== undefined && !comesAfter(entry, after)) continue
        found.push(entry)
      }
      found.sort((a, b) => b.updatedAt - a.updatedAt || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0))
      return taskPage(found.slice(0, limit + 1).map(toTask), limit)
    },

    async redeliver(id, { now }) {
      const entry = tasks.get(id)
      if (entry === undefined || entry.status !== 'failed') return false
      const at = now.getTime()
      entry.status = 'scheduled'
      entry.token = undefined
      entry.updatedAt = Math.max(entry.updatedAt, at)
      setDue(entry, at)
      wake()
      return true
    },

    async countDue(now) {
      return countDueAt(now.getTime())
    },

    subscribe(listener) {
      return due.add(listener)
    }
  }
}

/** Whether `entry` comes after the cursor in the list's order (newest first, then id descending). */
function comesAfter(entry: { updatedAt: number; id: string }, cursor: { updatedAt: number; id: string }): boolean {
  return entry.updatedAt < cursor.updatedAt || (entry.updatedAt === cursor.updatedAt && entry.id < cursor.id)
}
