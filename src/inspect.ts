/**
 * Inspecting and repairing deliveries: a task's attempts, the failed tasks, redelivering them and
 * cancelling a task. Each call takes the sender's options object (only its `store` and `now` are
 * read) and works through the store's optional inspection methods, which the memory, PostgreSQL and
 * Redis stores have.
 */
import { TaskError } from './errors.ts'
import { withoutSecret } from './pending-expiry.ts'
import type { AttemptRecord, CallbackStore, CallbackTask, DestinationState, TaskListQuery, TaskPage } from './types.ts'

/** What the inspection calls read of a sender's options; a whole `SenderOptions` object will do. */
export interface InspectOptions {
  store: CallbackStore
  /** The clock a redelivered task is due by. Default `() => new Date()`. */
  now?: (() => Date) | undefined
}

/** Options of {@link redeliverFailed}: which failed tasks, by the filters of {@link listTasks}. */
export interface RedeliverFailedOptions extends Omit<TaskListQuery, 'status' | 'since' | 'limit' | 'cursor'> {
  /** Redeliver the tasks that failed at or after this instant. Required, so that "all" is a choice. */
  since: Date
}

/** What {@link redeliverFailed} did. */
export interface RedeliverFailedResult {
  /** The ids of the tasks now due again, most recently failed first. */
  redelivered: string[]
}

/** The store with the optional method `method`, or a TypeError saying it has none. */
function storeWith<M extends 'list' | 'redeliver' | 'listDestinations'>(options: InspectOptions, method: M): CallbackStore & Required<Pick<CallbackStore, M>> {
  if (options === null || typeof options !== 'object') throw new TypeError('options must be an object with a `store`')
  const { store } = options
  if (store === null || typeof store !== 'object') throw new TypeError('store is required (e.g. createPostgresStore({ pool }))')
  if (typeof store[method] !== 'function') {
    throw new TypeError(`store.${method} is missing: this store does not support inspection (the memory, PostgreSQL and Redis stores do)`)
  }
  return store as CallbackStore & Required<Pick<CallbackStore, M>>
}

function checkId(id: unknown): asserts id is string {
  if (typeof id !== 'string' || id === '') throw new TypeError('id must be a task id')
}

async function existing(store: CallbackStore, id: string): Promise<CallbackTask> {
  const task = await store.get(id)
  if (task === undefined) throw new TaskError('ERR_CALLBACK_TASK_NOT_FOUND', `task ${id} does not exist`)
  return task
}

/**
 * A page of the tasks matching every filter given — `status`, `event`, callback `host`, `id`,
 * `idempotencyKey`, `since`/`until` (when last updated) — most recently updated first. Pass the
 * page's `cursor` back for the next one. A task's own `secret` is left out, so a page can go to a
 * response or a log as it is.
 *
 * @example
 * ```ts
 * import { listTasks } from 'endpoint-callback'
 *
 * const { tasks, cursor } = await listTasks({ status: 'scheduled', limit: 50 }, sender)
 * const toOneClient = await listTasks({ host: 'hooks.example.com', event: 'report.ready' }, sender)
 * ```
 */
export function listTasks(query: TaskListQuery, options: InspectOptions): Promise<TaskPage> {
  return storeWith(options, 'list')
    .list(query)
    .then((page) => ({ ...page, tasks: page.tasks.map(withoutSecret) }))
}

/**
 * A page of failed tasks, most recently failed first, optionally only those that failed `since`.
 * Each has `lastError`, the reason of its last attempt.
 *
 * @example
 * ```ts
 * import { listFailedTasks } from 'endpoint-callback'
 *
 * const { tasks } = await listFailedTasks({ since: new Date(Date.now() - 86_400_000) }, sender)
 * for (const task of tasks) console.log(task.id, task.callbackUrl, task.lastError)
 * ```
 */
export function listFailedTasks(query: Omit<TaskListQuery, 'status'> = {}, options: InspectOptions): Promise<TaskPage> {
  return listTasks({ ...query, status: 'failed' }, options)
}

/**
 * The attempts made on a task, oldest first: when, how long, the HTTP status or the error, the
 * first bytes of the answer and what followed. Rejects with `ERR_CALLBACK_TASK_NOT_FOUND` for an
 * unknown task.
 *
 * @example
 * ```ts
 * import { listAttempts } from 'endpoint-callback'
 *
 * for (const attempt of await listAttempts(taskId, sender)) {
 *   console.log(attempt.attempt, attempt.startedAt, attempt.status ?? attempt.error, attempt.outcome)
 * }
 * ```
 */
export async function listAttempts(id: string, options: InspectOptions): Promise<AttemptRecord[]> {
  checkId(id)
  if (options === null || typeof options !== 'object' || options.store == null) throw new TypeError('options must be an object with a `store`')
  const { store } = options
  await existing(store, id)
  return store.attempts(id)
}

/**
 * Makes a failed task due again now; any worker sharing the store makes the attempt. The task keeps
 * its body (the same bytes, signed afresh), its `webhook-id`, its attempt history and count: the
 * retry schedule resumes where it stopped, so a task that had used every retry gets one more
 * attempt, and one that failed on a 4xx gets the retries it had left. A task past its `deadline`
 * fails again at once. Resolves with the task as it now is; rejects with
 * `ERR_CALLBACK_TASK_NOT_FOUND`, or `ERR_CALLBACK_TASK_STATE` when the task is not failed (a
 * cancelled task stays cancelled).
 *
 * @example
 * ```ts
 * import { redeliverTask } from 'endpoint-callback'
 *
 * const task = await redeliverTask(taskId, sender) // task.status === 'scheduled'
 * ```
 */
export async function redeliverTask(id: string, options: InspectOptions): Promise<CallbackTask> {
  checkId(id)
  const store = storeWith(options, 'redeliver')
  const now = (options.now ?? (() => new Date()))()
  if (!(await store.redeliver(id, { now }))) {
    const task = await existing(store, id)
    throw new TaskError('ERR_CALLBACK_TASK_STATE', `task ${id} is ${task.status}: only failed tasks are redelivered`)
  }
  return existing(store, id)
}

/**
 * Redelivers every task that failed at or after `since` — after an outage of the receivers, say —
 * as {@link redeliverTask} does for one, a page at a time. The other filters of {@link listTasks}
 * (`host`, `event`, `until`, …) narrow it down: `{ since, host: 'hooks.example.com' }`. A task that fails again while this runs
 * is not picked up twice.
 *
 * @example
 * ```ts
 * import { redeliverFailed } from 'endpoint-callback'
 *
 * const { redelivered } = await redeliverFailed({ since: new Date('2025-03-01T09:00:00Z') }, sender)
 * console.log(`${redelivered.length} callbacks are on their way again`)
 * ```
 */
export async function redeliverFailed(query: RedeliverFailedOptions, options: InspectOptions): Promise<RedeliverFailedResult> {
  if (query === null || typeof query !== 'object' || !(query.since instanceof Date) || !Number.isFinite(query.since.getTime())) {
    throw new TypeError('since must be a valid Date (new Date(0) for every failed task)')
  }
  const lister = storeWith(options, 'list')
  const store = storeWith(options, 'redeliver')
  const clock = options.now ?? (() => new Date())
  const redelivered: string[] = []
  let cursor: string | undefined
  do {
    // The cursor marks a position, not a row, so tasks leaving the failed state do not shift pages.
    const page = await lister.list({ ...query, status: 'failed', limit: 100, ...(cursor === undefined ? {} : { cursor }) })
    const now = clock()
    const done = await Promise.all(page.tasks.map((task) => store.redeliver(task.id, { now })))
    page.tasks.forEach((task, index) => {
      if (done[index]) redelivered.push(task.id)
    })
    cursor = page.cursor
  } while (cursor !== undefined)
  return { redelivered }
}

/**
 * Cancels a task that has not ended: it is never attempted again, and an attempt in flight cannot
 * record over it. Resolves with the cancelled task; rejects with `ERR_CALLBACK_TASK_NOT_FOUND`, or
 * `ERR_CALLBACK_TASK_STATE` when it was already delivered, failed or cancelled.
 *
 * @example
 * ```ts
 * import { cancelTask } from 'endpoint-callback'
 *
 * await cancelTask(taskId, sender)
 * ```
 */
export async function cancelTask(id: string, options: InspectOptions): Promise<CallbackTask> {
  checkId(id)
  if (options === null || typeof options !== 'object' || options.store == null) throw new TypeError('options must be an object with a `store`')
  const { store } = options
  if (!(await store.cancel(id))) {
    const task = await existing(store, id)
    throw new TaskError('ERR_CALLBACK_TASK_STATE', `task ${id} is ${task.status}: it has already ended`)
  }
  return existing(store, id)
}

/**
 * The destinations a worker would look at now: those held back (`throttled`, breaker `open` or
 * `probing`), with attempts in flight, or with tasks due — each with its state, until when it is
 * held, attempts in flight, tasks due and the last error that held it back; most due first, at
 * most 1000. On a durable store every worker shares this state.
 *
 * @example
 * ```ts
 * import { listDestinations } from 'endpoint-callback'
 *
 * for (const one of await listDestinations(sender)) {
 *   if (one.state !== 'closed') console.log(one.destination, one.state, 'until', one.until, one.lastError)
 * }
 * ```
 */
export async function listDestinations(options: InspectOptions): Promise<DestinationState[]> {
  const store = storeWith(options, 'listDestinations')
  return store.listDestinations((options.now ?? (() => new Date()))())
}
