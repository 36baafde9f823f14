/**
 * A `CallbackStore` on PostgreSQL, for services that must not lose a callback when a process dies
 * and that run several worker processes on several machines.
 *
 * It takes the user's own `pg` Pool (anything with `query(text, values)`); `pg` is never imported.
 * Workers claim with `FOR UPDATE SKIP LOCKED`, each claim carries a lease token that fences its
 * completion, and `LISTEN/NOTIFY` wakes workers when a retry falls due.
 *
 * @module endpoint-callback/postgres
 */
import { announcedDueAt, createDueListeners } from './due-listeners.ts'
import { checkListQuery, parseStoredJson, readTaskPage } from './task-list.ts'
import type { DueListeners } from './due-listeners.ts'
import { createRecoveredErrors } from './recovered-errors.ts'
import { answerBatch, dedupeBatch, earliestDue, insertedTask } from './batch.ts'
import { createHash, randomUUID } from 'node:crypto'
import { StoreError } from '../errors.ts'
import { checkOptionNames } from '../option-names.ts'
import type {
  AttemptRecord,
  AttemptResolution,
  CallbackStore,
  CallbackTask,
  DestinationHold,
  DestinationState,
  Lease,
  NewCallbackTask,
  StoreCallOptions,
  TaskListQuery,
  TaskStatus,
  TaskSummary,
  TaskSummaryQuery,
  TerminalStatus
} from '../types.ts'
import {
  attemptRecordedSql,
  attachSql,
  cancelSql,
  claimLimitedSql,
  claimQuickSql,
  claimSql,
  clearDestinationSql,
  countDestinationFailureSql,
  holdDestinationSql,
  listDestinationsSql,
  completeBatchSql,
  completeSql,
  countDueSql,
  currentVersionSql,
  dueChannel,
  expirePendingSql,
  insertTaskSql,
  insertTasksSql,
  latestVersion,
  migrationScript,
  pruneSql,
  quoteIdentifier,
  redeliverSql,
  releaseSql,
  searchTasksSql,
  scheduleSql,
  selectAttemptsSql,
  selectTaskByIdempotencyKeySql,
  selectTaskSql,
  summaryAttemptsSql,
  summaryCountsSql,
  summaryDueSql,
  summaryEstimatesSql,
  summaryFailingHostsSql
} from './postgres-sql.ts'

/**
 * What the store needs of a `pg` Pool, PoolClient or Client: one method. With `prepare` (the
 * default) the store passes pg's `{ name, text, values }` form instead of `(text, values)`.
 */
export interface PostgresQueryable {
  query(
    text: string | { name: string; text: string; values?: unknown[] },
    values?: unknown[]
  ): Promise<{ rows: any[]; rowCount?: number | null }>
}

/** A connection taken from the pool (a `pg` PoolClient): for `LISTEN`, and for bounded queries. */
export interface PostgresListenConnection extends PostgresQueryable {
  /** `notification` with `{ channel, payload }`, `error`, `end`. */
  on(event: 'notification' | 'error' | 'end', listener: (...args: any[]) => void): unknown
  /** Takes the store's listeners off again before the connection goes back to the pool. */
  removeListener?(event: 'notification' | 'error' | 'end', listener: (...args: any[]) => void): unknown
  /** Gives the connection back; with `true` or an error, closes it instead. */
  release(destroy?: boolean | Error): void
}

/**
 * Whether `connect()` hands out a connection of its own (a pool), rather than connecting the object
 * itself (a `pg` Client or PoolClient, which carry `connectionParameters`, and which LISTEN could
 * only reconnect in a loop).
 */
function handsOutConnections(pool: PostgresPool | PostgresQueryable): pool is Required<PostgresPool> {
  return typeof (pool as PostgresPool).connect === 'function' && !('connectionParameters' in pool) && typeof (pool as { release?: unknown }).release !== 'function'
}

/** A `pg` Pool: queries, and (for `LISTEN`) hands out a connection of its own. */
export interface PostgresPool extends PostgresQueryable {
  connect?(): Promise<PostgresListenConnection>
  /** pg's Pool emits `error` when an idle connection breaks (a server restart). */
  on?(event: 'error', listener: (...args: any[]) => void): unknown
  /** pg's Pool settings; `max: 1` leaves no connection for queries once one listens. */
  options?: { max?: number }
  /** Present on a pg Pool (not on a single Client, whose connect() connects it instead). */
  readonly idleCount?: number
}

/** Options of {@link createPostgresStore}. */
export interface PostgresStoreOptions {
  /**
   * The user's `pg` Pool, or a connected `pg` Client (then the store does not `LISTEN`: workers
   * poll). The store never ends it.
   */
  pool: PostgresPool | PostgresQueryable
  /** Schema holding the tables (created by {@link migratePostgres}). Default `endpoint_callback`. */
  schema?: string | undefined
  /**
   * Send each statement as a named prepared statement (pg's `{ name, text, values }`), so
   * PostgreSQL parses and plans it once per connection: about a third more deliveries per second.
   * Default `true`. Set `false` behind PgBouncer in transaction mode (before 1.21), or when `query`
   * only takes `(text, values)`.
   */
  prepare?: boolean | undefined
  /**
   * Wake subscribed workers through `LISTEN/NOTIFY` on one connection taken from the pool (held
   * while a worker runs, so a pool of `max: 1` is refused with it).
   * Default `true` when `pool.connect` exists. Set `false` when `pool` is a single client.
   */
  listen?: boolean | undefined
  /**
   * How long one statement may take, ms, connection included. Default 30 000. A connection whose
   * statement gets no answer in time is closed rather than given back to the pool: when the
   * database's side died without a word (no FIN, no RST) it would otherwise hang every statement
   * sent on it. The call fails with `ERR_CALLBACK_STORE`, which the worker reports as an `error`
   * event before it carries on — except a completion, which the store reads back (and sends again
   * when it had not committed): it then succeeds, and its error goes to `subscribeErrors` instead.
   */
  timeoutMs?: number | undefined
}

/** Options naming the schema, for the migration and retention helpers. */
export interface PostgresSchemaOptions {
  /** Default `endpoint_callback`. */
  schema?: string | undefined
}

const defaultSchema = 'endpoint_callback'

/** The PostgreSQL store, with the schema it uses. */
export interface PostgresStore extends CallbackStore {
  readonly schema: string
  /** Many tasks in one round trip: see {@link CallbackStore.insertMany}. */
  insertMany(tasks: readonly NewCallbackTask[], options?: StoreCallOptions): Promise<Array<{ task: CallbackTask; created: boolean }>>
  subscribe(listener: (dueAt?: number) => void): () => void
  subscribeErrors(listener: (error: Error) => void): () => void
  close(): Promise<void>
}

/**
 * Creates a store on the user's `pg` Pool. Run {@link migratePostgres} once (at deploy or
 * start-up) before using it.
 *
 * For the outbox pattern, pass your open transaction client to `createCallbackTask` (with its
 * `payload`) or `deliver`: the task is written with that client, so it commits or rolls back
 * together with your own write, and a worker, woken by `NOTIFY` at the commit, sends it. Pass the
 * client you ran `BEGIN` on, never the pool (refused with a `TypeError`). Run `migratePostgres`
 * again after upgrading: version 6 adds the index of pending tasks by expiry.
 *
 * @example
 * ```ts
 * import pg from 'pg'
 * import { createCallbackTask, createWorker } from 'endpoint-callback'
 * import { createPostgresStore, migratePostgres } from 'endpoint-callback/postgres'
 *
 * const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL })
 * await migratePostgres(pool)
 * const sender = { store: createPostgresStore({ pool }), secret: process.env.CALLBACK_SECRET }
 *
 * const client = await pool.connect()
 * await client.query('BEGIN')
 * await client.query('INSERT INTO reports (id) VALUES ($1)', [reportId])
 * await createCallbackTask({ callbackUrl, event: 'report.requested', payload: { reportId } }, { ...sender, transaction: client })
 * await client.query('COMMIT')
 * client.release()
 *
 * createWorker(sender).start()
 * ```
 */
export function createPostgresStore(options: PostgresStoreOptions): PostgresStore {
  if (options === null || typeof options !== 'object') {
    throw new TypeError('createPostgresStore: options must be an object with a `pool`')
  }
  checkOptionNames(options, POSTGRES_STORE_OPTION_NAMES, 'createPostgresStore')
  // A pg Client's connect() has another shape than a Pool's: what it offers is told apart at run
  // time (handsOutConnections, idleCount), so from here the pool's optional members are all maybe-there.
  const pool = options.pool as PostgresPool
  if (pool === null || typeof pool !== 'object' || typeof pool.query !== 'function') {
    throw new TypeError('createPostgresStore: `pool` must have a query(text, values) method (a pg Pool)')
  }
  const schema = checkSchema(options.schema, 'createPostgresStore')
  const listen = options.listen ?? handsOutConnections(pool)
  if (typeof listen !== 'boolean') throw new TypeError('createPostgresStore: `listen` must be a boolean')
  if (listen && !handsOutConnections(pool)) {
    throw new TypeError('createPostgresStore: `listen` needs a `pool` whose connect() hands out a connection (a pg Pool, not a Client)')
  }
  // The LISTEN connection is held for as long as a worker runs: in a pool of one, every query would
  // wait for it forever.
  if (listen && pool.options?.max === 1) {
    throw new TypeError(
      'createPostgresStore: a `pool` of `max: 1` has no connection left for queries once one LISTENs: raise `max`, or pass `listen: false` (workers then poll)'
    )
  }

  const prepare = options.prepare ?? true
  if (typeof prepare !== 'boolean') throw new TypeError('createPostgresStore: `prepare` must be a boolean')
  const timeoutMs = options.timeoutMs ?? defaultTimeoutMs
  if (!Number.isSafeInteger(timeoutMs) || timeoutMs <= 0) {
    throw new TypeError('createPostgresStore: `timeoutMs` must be a positive integer of milliseconds')
  }
  // A pg Pool's queries are run on a connection the store takes itself, so that one which stops
  // answering can be closed; a single client (or the user's own query function) is only raced.
  const pooled = typeof pool.connect === 'function' && 'idleCount' in pool
  // Without a listener, pg's Pool turns an idle connection's error (a server restart) into an
  // uncaught exception. The pool has already dropped that connection: nothing else is needed.
  // One listener per pool, however many stores share it; it stays for the pool's life.
  if (pooled && typeof pool.on === 'function' && !guardedPools.has(pool)) {
    guardedPools.add(pool)
    pool.on('error', ignorePoolError)
  }

  const channel = dueChannel(schema)
  const sql = {
    insert: insertTaskSql(schema),
    insertMany: insertTasksSql(schema, false),
    insertManyKeyed: insertTasksSql(schema, true),
    schedule: scheduleSql(schema),
    version: currentVersionSql(schema),
    expirePending: expirePendingSql(schema),
    byKey: selectTaskByIdempotencyKeySql(schema),
    get: selectTaskSql(schema),
    attach: attachSql(schema),
    claim: claimSql(schema),
    claimLimited: claimLimitedSql(schema),
    claimQuick: claimQuickSql(schema),
    complete: completeSql(schema),
    completeBatch: completeBatchSql(schema),
    attemptRecorded: attemptRecordedSql(schema),
    release: releaseSql(schema),
    cancel: cancelSql(schema),
    attempts: selectAttemptsSql(schema),
    redeliver: redeliverSql(schema),
    countDue: countDueSql(schema),
    summaryCounts: summaryCountsSql(schema),
    summaryDue: summaryDueSql(schema),
    summaryAttempts: summaryAttemptsSql(schema),
    summaryHosts: summaryFailingHostsSql(schema),
    summaryEstimates: summaryEstimatesSql(schema),
    holdDestination: holdDestinationSql(schema),
    clearDestination: clearDestinationSql(schema),
    countDestinationFailure: countDestinationFailureSql(schema),
    listDestinations: listDestinationsSql(schema),
  }
  const listeners = createDueListeners()
  const recovered = createRecoveredErrors()
  // Workers in this process need not wait for the notification's round trip through the server.
  const wakeHere = listeners.wakeSoon
  let listener: ListenConnection | undefined

  // Names derive from the text (which holds the schema), so two stores on one connection never
  // clash over a name.
  const statementName = (text: string) => `ec_${createHash('sha1').update(text).digest('hex').slice(0, 20)}`
  const names = new Map(Object.values(sql).map((text) => [text, statementName(text)]))
  // searches: one text per combination of filters, built and named when first used
  const searches = new Map<string, string>()

  async function run(operation: string, db: PostgresQueryable, text: string, values: unknown[]) {
    let name: string | undefined
    if (prepare) {
      name = names.get(text)
      if (name === undefined) names.set(text, (name = statementName(text)))
    }
    const query = name === undefined ? undefined : { name, text, values }
    try {
      if (db === pool && pooled) return await boundedQuery(pool as Required<PostgresPool>, query ?? text, query === undefined ? values : undefined, timeoutMs)
      return await boundedCall(query === undefined ? db.query(text, values) : db.query(query), timeoutMs)
    } catch (error) {
      throw storeError(operation, schema, error)
    }
  }

  const completions = createCompletions({
    one: async (values) => (await run('complete', pool, sql.complete, [...values, channel])).rows[0]?.completed === 1,
    many: async (columns) => {
      const { rows } = await run('complete', pool, sql.completeBatch, [...columns, channel])
      return new Set<number>(rows[0]?.completed ?? [])
    },
    recorded: async (values) => (await run('complete', pool, sql.attemptRecorded, [values[0], values[6], values[7]])).rows.length > 0,
    recovered: recovered.report
  })

  return {
    schema,

    async insert(task: NewCallbackTask, callOptions?: StoreCallOptions) {
      const transaction = transactionOf(callOptions, pool)
      const db = transaction ?? pool
      const values = [
        task.id,
        task.callbackUrl,
        task.event,
        task.idempotencyKey ?? null,
        task.secret === undefined ? null : JSON.stringify(task.secret),
        task.metadata === undefined ? null : JSON.stringify(task.metadata),
        task.deadline?.toISOString() ?? null,
        task.createdAt.toISOString(),
        task.encryptionKey === undefined ? null : JSON.stringify(task.encryptionKey),
        task.verifyIntent === true ? true : null,
        task.body ?? null,
        task.body === undefined ? null : (task.contentType ?? null),
        task.nextAttemptAt?.toISOString() ?? (task.body === undefined ? null : task.createdAt.toISOString()),
        channel,
        task.destination ?? null
      ]
      // ON CONFLICT waits for a racing insert of the same key to commit, then yields: the row the
      // other caller stored is then visible to the lookup that follows.
      for (let round = 0; round < 3; round++) {
        const inserted = await run('insert', db, sql.insert, values)
        if (inserted.rows[0]) {
          // Inside a transaction the NOTIFY wakes workers at commit; waking them now would be early.
          if (transaction === undefined && task.body !== undefined) wakeHere()
          return { task: toTask(inserted.rows[0]), created: true }
        }
        if (task.idempotencyKey === undefined) break
        const existing = await run('insert', db, sql.byKey, [task.idempotencyKey])
        if (existing.rows[0]) return { task: toTask(existing.rows[0]), created: false }
      }
      throw new StoreError('ERR_CALLBACK_STORE', `PostgreSQL insert failed: task id ${task.id} is already stored`)
    },

    async insertMany(tasks: readonly NewCallbackTask[], callOptions?: StoreCallOptions) {
      const transaction = transactionOf(callOptions, pool)
      const db = transaction ?? pool
      const batch = dedupeBatch(tasks)
      const answers: Array<{ task: CallbackTask; created: boolean } | undefined> = new Array(batch.unique.length)
      let left = batch.unique.map((_, index) => index)
      // A key that a racing transaction committed while this statement waited on it is neither
      // inserted nor seen by the statement's snapshot: the next statement sees it.
      for (let round = 0; left.length > 0 && round < 3; round++) {
        const count = left.length
        const columns = Array.from({ length: 14 }, () => new Array<string | boolean | null>(count))
        const keys: string[] = []
        // the tasks of one createCallbackTasks call share their instants: each is written out once
        let lastTime = NaN
        let lastText = ''
        const iso = (date: Date) => {
          const time = date.getTime()
          if (time !== lastTime) {
            lastTime = time
            lastText = date.toISOString()
          }
          return lastText
        }
        for (let n = 0; n < count; n++) {
          const task = batch.unique[left[n]!]!
          const withBody = task.body !== undefined
          const createdAt = iso(task.createdAt)
          columns[0]![n] = task.id
          columns[1]![n] = task.callbackUrl
          columns[2]![n] = task.event
          columns[3]![n] = task.idempotencyKey ?? null
          if (task.idempotencyKey !== undefined) keys.push(task.idempotencyKey)
          columns[4]![n] = task.secret === undefined ? null : JSON.stringify(task.secret)
          columns[5]![n] = task.metadata === undefined ? null : JSON.stringify(task.metadata)
          columns[6]![n] = task.deadline?.toISOString() ?? null
          columns[7]![n] = createdAt
          columns[8]![n] = task.encryptionKey === undefined ? null : JSON.stringify(task.encryptionKey)
          columns[9]![n] = task.verifyIntent === true ? true : null
          columns[10]![n] = task.body ?? null
          columns[11]![n] = withBody ? (task.contentType ?? null) : null
          columns[12]![n] = task.nextAttemptAt === undefined ? (withBody ? createdAt : null) : iso(task.nextAttemptAt)
          columns[13]![n] = task.destination ?? null
        }
        // a column no task has goes empty: unnest pads it with nulls
        const values: unknown[] = columns.map((column) => (column.every((value) => value === null) ? [] : column))
        values.push(channel)
        if (keys.length > 0) values.push(keys)
        const { rows } = await run('insertMany', db, keys.length === 0 ? sql.insertMany : sql.insertManyKeyed, values)
        const inserted = new Set<string>()
        const existing = new Map<string, Record<string, unknown>>()
        for (const row of rows) {
          if (row.kind === 'inserted') inserted.add(row.id)
          else if (row.kind === 'existing') existing.set(row.idempotency_key, row)
        }
        const missing: number[] = []
        for (const index of left) {
          const task = batch.unique[index]!
          if (inserted.has(task.id)) {
            answers[index] = { task: insertedTask(task), created: true }
            continue
          }
          const stored = task.idempotencyKey === undefined ? undefined : existing.get(task.idempotencyKey)
          if (stored !== undefined) answers[index] = { task: toTask(stored), created: false }
          else missing.push(index)
        }
        left = missing
        // Inside a transaction the NOTIFY wakes workers at commit; waking them now would be early.
        if (transaction === undefined && inserted.size > 0) {
          const due = earliestDue(batch.unique.filter((task) => inserted.has(task.id)))
          if (due !== undefined) wakeHere(due)
        }
      }
      if (left.length > 0) {
        throw new StoreError('ERR_CALLBACK_STORE', `PostgreSQL insert failed: task id ${batch.unique[left[0]!]!.id} is neither stored nor found by its key`)
      }
      return answerBatch(batch, answers as Array<{ task: CallbackTask; created: boolean }>)
    },

    async get(id) {
      const { rows } = await run('get', pool, sql.get, [id])
      return rows[0] ? toTask(rows[0]) : undefined
    },

    async attach(id, result, lease) {
      const token = randomUUID()
      const expiresAt = new Date(lease.now.getTime() + lease.leaseMs)
      const { rows } = await run('attach', pool, sql.attach, [
        id,
        result.body,
        result.contentType ?? null,
        lease.now.toISOString(),
        expiresAt.toISOString(),
        token,
        channel
      ])
      if (rows[0]?.held === true) {
        // its destination is held back: scheduled for a worker, not leased
        wakeHere()
        return undefined
      }
      return rows[0] ? { task: toTask(rows[0]), token, expiresAt } : undefined
    },

    async schedule(id, result, { now }, callOptions) {
      const transaction = transactionOf(callOptions, pool)
      const { rows } = await run('schedule', transaction ?? pool, sql.schedule, [
        id,
        result.body,
        result.contentType ?? null,
        now.toISOString(),
        channel
      ])
      if (rows[0] && transaction === undefined) wakeHere()
      return rows[0] ? toTask(rows[0]) : undefined
    },

    async expirePending({ now, limit, reason }) {
      if (limit <= 0) return []
      const { rows } = await run('expirePending', pool, sql.expirePending, [now.toISOString(), limit, reason])
      return rows.map(toTask)
    },

    async check() {
      const { rows } = await run('check', pool, sql.version, [])
      const version = Number(rows[0]?.version ?? 0)
      if (version < latestVersion) {
        throw new StoreError(
          'ERR_CALLBACK_STORE',
          `PostgreSQL schema "${schema}" is at version ${version}, this version of endpoint-callback needs ${latestVersion}: run migratePostgres(pool, { schema: '${schema}' })`
        )
      }
    },

    async claim({ now, limit, leaseMs, perDestination, inFlight }) {
      if (limit <= 0) return []
      const expiresAt = new Date(now.getTime() + leaseMs)
      if (perDestination !== undefined) {
        const busy = new Map(inFlight)
        const leased: any[] = []
        const token = randomUUID()
        const quick = await run('claim', pool, sql.claimQuick, [
          now.toISOString(),
          limit,
          expiresAt.toISOString(),
          token,
          perDestination,
          JSON.stringify(Object.fromEntries(busy))
        ])
        for (const row of quick.rows) {
          if (row.id == null) continue
          leased.push(row)
          if (row.destination != null) busy.set(row.destination, (busy.get(row.destination) ?? 0) + 1)
        }
        // The ranked claim only when the quick one could not be enough: a destination had more due
        // than its room (others' tasks may wait behind), or a destination waits for its probe.
        const first = quick.rows[0]
        const more = leased.length < limit && (Number(first?.locked ?? 0) > leased.length || first?.probes === true)
        // Workers claiming side by side may choose the same rows; the one that finds them taken
        // claims again (a few times at most) rather than leaving its slots idle until its next poll.
        for (let round = 0; more && round < 4 && leased.length < limit; round++) {
          const { rows } = await run('claim', pool, sql.claimLimited, [
            now.toISOString(),
            limit - leased.length,
            expiresAt.toISOString(),
            randomUUID(),
            perDestination,
            JSON.stringify(Object.fromEntries(busy))
          ])
          let contended = false
          for (const row of rows) {
            if (row.id == null) {
              contended = true
              continue
            }
            leased.push(row)
            if (row.destination != null) busy.set(row.destination, (busy.get(row.destination) ?? 0) + 1)
          }
          if (!contended) break
          if (round === 3) {
            // Still taken: look again soon rather than at the next poll.
            setTimeout(wakeHere, 20).unref?.()
            break
          }
          // The other claim commits within milliseconds; after it, its rows are no longer due.
          await new Promise((resolve) => setTimeout(resolve, 5 * (round + 1)))
        }
        leased.sort((a, b) => time(a.due_at) - time(b.due_at) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
        return leased.map((row): Lease => {
          const lease: Lease = { task: toTask(row), token: row.lease_token, expiresAt: new Date(expiresAt) }
          if (row.probe === true) lease.probe = { openings: Number(row.probe_openings ?? 0) }
          return lease
        })
      }
      const { rows } = await run('claim', pool, sql.claim, [
        now.toISOString(),
        limit,
        expiresAt.toISOString(),
        randomUUID()
      ])
      // RETURNING has no order of its own; hand tasks out earliest due first.
      rows.sort((a, b) => time(a.due_at) - time(b.due_at) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
      return rows.map((row): Lease => ({ task: toTask(row), token: row.lease_token, expiresAt: new Date(expiresAt) }))
    },

    async complete(lease: Lease, attempt: AttemptRecord, resolution: AttemptResolution) {
      const finishedAt = new Date(attempt.startedAt.getTime() + Math.max(0, attempt.durationMs))
      const completed = await completions.add([
        lease.task.id,
        lease.token,
        resolution.status,
        resolution.status === 'scheduled' ? resolution.nextAttemptAt.toISOString() : null,
        resolution.lastError ?? null,
        finishedAt.toISOString(),
        attempt.attempt,
        attempt.startedAt.toISOString(),
        attempt.durationMs,
        attempt.status ?? null,
        attempt.error ?? null,
        attempt.responseBody ?? null,
        attempt.outcome
      ])
      if (completed && resolution.status === 'scheduled') wakeHere(resolution.nextAttemptAt.getTime())
      return completed
    },

    async release(lease: Lease, nextAttemptAt?: Date) {
      const { rows } = await run('release', pool, sql.release, [
        lease.task.id,
        lease.token,
        nextAttemptAt?.toISOString() ?? null,
        channel
      ])
      const released = rows[0]?.released === 1
      if (released) wakeHere(nextAttemptAt?.getTime())
      return released
    },

    async cancel(id) {
      const { rows } = await run('cancel', pool, sql.cancel, [id, new Date().toISOString()])
      return rows.length === 1
    },

    async attempts(id) {
      const { rows } = await run('attempts', pool, sql.attempts, [id])
      return rows.map(toAttempt)
    },

    async list(query: TaskListQuery) {
      const checked = checkListQuery(query)
      const shape = {
        status: checked.status,
        event: checked.event !== undefined,
        host: checked.host !== undefined,
        id: checked.id !== undefined,
        idempotencyKey: checked.idempotencyKey !== undefined,
        since: checked.since !== undefined,
        until: checked.until !== undefined,
        after: checked.after !== undefined
      }
      const key = JSON.stringify(shape)
      let text = searches.get(key)
      if (text === undefined) searches.set(key, (text = searchTasksSql(schema, shape)))
      const values: unknown[] = []
      if (checked.event !== undefined) values.push(checked.event)
      if (checked.host !== undefined) values.push(checked.host)
      if (checked.id !== undefined) values.push(checked.id)
      if (checked.idempotencyKey !== undefined) values.push(checked.idempotencyKey)
      if (checked.since !== undefined) values.push(checked.since.toISOString())
      if (checked.until !== undefined) values.push(checked.until.toISOString())
      if (checked.after !== undefined) values.push(new Date(checked.after.updatedAt).toISOString(), checked.after.id)
      values.push(checked.limit + 1)
      const { rows } = await run('list', pool, text, values)
      return readTaskPage(rows, checked.limit, toTask, (row) => String(row.id))
    },

    async redeliver(id: string, { now }: { now: Date }) {
      const { rows } = await run('redeliver', pool, sql.redeliver, [id, now.toISOString(), channel])
      const redelivered = rows[0]?.redelivered === 1
      if (redelivered) wakeHere()
      return redelivered
    },

    async setDestination(destination: string, hold: DestinationHold | null, now: Date) {
      if (hold === null) await run('setDestination', pool, sql.clearDestination, [destination])
      else {
        await run('setDestination', pool, sql.holdDestination, [
          destination,
          hold.state,
          hold.until.toISOString(),
          hold.reason,
          hold.openings,
          now.toISOString()
        ])
      }
    },

    async countDestinationFailure(destination: string, now: Date, windowMs: number) {
      const { rows } = await run('countDestinationFailure', pool, sql.countDestinationFailure, [
        destination,
        now.toISOString(),
        new Date(now.getTime() + windowMs).toISOString()
      ])
      const row = rows[0]
      return { inARow: Number(row?.in_a_row ?? 1), attempts: Number(row?.attempts ?? 1), failures: Number(row?.failures ?? 1) }
    },

    async listDestinations(now: Date) {
      const { rows } = await run('listDestinations', pool, sql.listDestinations, [now.toISOString()])
      const at = now.getTime()
      return rows.map((row): DestinationState => {
        const until = row.until == null ? undefined : date(row.until)
        const held = row.state != null && !(row.state === 'throttled' && until!.getTime() <= at)
        const found: DestinationState = {
          destination: row.destination,
          state: held ? row.state : 'closed',
          openings: Number(row.openings ?? 0),
          inFlight: Number(row.in_flight),
          due: Number(row.due)
        }
        if (held) found.until = until!
        if (row.reason != null) found.lastError = row.reason
        return found
      })
    },

    async countDue(now: Date) {
      const { rows } = await run('countDue', pool, sql.countDue, [now.toISOString()])
      return Number(rows[0]?.due ?? 0)
    },

    async summarize(query: TaskSummaryQuery): Promise<TaskSummary> {
      const { now, bucketMs, buckets, countCap, hosts } = query
      const since = new Date(now.getTime() - bucketMs * buckets)
      const [counts, due, attempts, failing, estimates] = await Promise.all([
        run('summarize', pool, sql.summaryCounts, [countCap]),
        run('summarize', pool, sql.summaryDue, [now.toISOString(), countCap]),
        run('summarize', pool, sql.summaryAttempts, [now.toISOString(), bucketMs, buckets]),
        run('summarize', pool, sql.summaryHosts, [since.toISOString(), hosts]),
        run('summarize', pool, sql.summaryEstimates, [schema])
      ])
      const summary: TaskSummary = {
        counts: Object.fromEntries(counts.rows.map((row) => [row.status, Number(row.count)])) as TaskSummary['counts'],
        due: Number(due.rows[0]?.due ?? 0),
        attempts: Array.from({ length: buckets }, (_, index) => ({
          start: new Date(now.getTime() - bucketMs * (buckets - index)),
          delivered: 0,
          failed: 0
        })),
        failingHosts: failing.rows.map((row) => ({
          host: row.host ?? '',
          tasks: Number(row.tasks),
          lastError: row.last_error ?? '',
          lastFailedAt: date(row.last_failed_at)
        }))
      }
      if (due.rows[0]?.oldest != null) summary.oldestDueAt = date(due.rows[0].oldest)
      for (const row of estimates.rows) {
        const status = row.status as TaskStatus
        if (summary.counts[status] >= countCap && Number(row.estimate) > countCap) (summary.estimates ??= {})[status] = Number(row.estimate)
      }
      for (const row of attempts.rows) {
        const bucket = summary.attempts[buckets - 1 - Number(row.bucket)]
        if (bucket === undefined) continue
        bucket.delivered += Number(row.delivered)
        bucket.failed += Number(row.failed)
      }
      return summary
    },

    subscribe(fn: (dueAt?: number) => void) {
      const remove = listeners.add(fn)
      if (listen && !listener) {
        listener = openListenConnection(pool as Required<PostgresPool>, channel, listeners, timeoutMs, (error) => recovered.report(storeError('LISTEN', schema, error)))
      }
      let removed = false
      return () => {
        if (removed) return
        removed = true
        remove()
        if (listeners.size === 0 && listener) {
          void listener.close()
          listener = undefined
        }
      }
    },

    subscribeErrors(fn: (error: Error) => void) {
      return recovered.add(fn)
    },

    async close() {
      const current = listener
      listener = undefined
      await current?.close()
    }
  }
}

const defaultTimeoutMs = 30_000

function ignorePoolError(): void {}

const guardedPools = new WeakSet<object>()

type QueryResult = { rows: any[]; rowCount?: number | null }

function timeoutError(timeoutMs: number): Error {
  return Object.assign(new Error(`no answer from PostgreSQL within ${timeoutMs} ms`), { code: 'ETIMEDOUT' })
}

/** A statement's own refusal (it carries a SQLSTATE): the connection is fine and goes back. */
function refusedByServer(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) && typeof (error as { severity?: unknown }).severity === 'string'
}

/** `call`, or a timeout error once `timeoutMs` passed. */
function boundedCall(call: Promise<QueryResult>, timeoutMs: number): Promise<QueryResult> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(timeoutError(timeoutMs)), timeoutMs)
    call.then(
      (result) => {
        clearTimeout(timer)
        resolve(result)
      },
      (error: unknown) => {
        clearTimeout(timer)
        reject(error)
      }
    )
  })
}

/**
 * pg's `pool.query`, with a bound on the whole of it: a connection whose statement outlives
 * `timeoutMs` is closed (released with an error), so a connection the server side silently
 * abandoned never goes back to the pool to hang the next statement.
 */
function boundedQuery(
  pool: Required<PostgresPool>,
  text: string | { name: string; text: string; values?: unknown[] },
  values: unknown[] | undefined,
  timeoutMs: number
): Promise<QueryResult> {
  return new Promise((resolve, reject) => {
    let client: PostgresListenConnection | undefined
    let settled = false
    const onError = (error: unknown) => finish(error instanceof Error ? error : new Error(String(error)))
    const finish = (error: Error | undefined, result?: QueryResult) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      const taken = client
      if (taken !== undefined) {
        // A dead connection keeps the listener, so its last error cannot go uncaught.
        if (error === undefined || refusedByServer(error)) {
          taken.removeListener?.('error', onError)
          taken.release()
        } else {
          taken.release(error)
        }
      }
      if (error === undefined) resolve(result!)
      else reject(error)
    }
    const timer = setTimeout(() => finish(timeoutError(timeoutMs)), timeoutMs)
    pool.connect().then(
      (taken) => {
        // A connection that came too late is fine: back to the pool with it.
        if (settled) return taken.release()
        client = taken
        taken.on('error', onError)
        const sent = values === undefined ? taken.query(text) : taken.query(text, values)
        sent.then(
          (result) => finish(undefined, result),
          (error: unknown) => finish(error instanceof Error ? error : new Error(String(error)))
        )
      },
      (error: unknown) => finish(error instanceof Error ? error : new Error(String(error)))
    )
  })
}

/** The values of one completion, in the order of `completeSql`'s parameters $1 to $13. */
type CompletionValues = unknown[]

interface PendingCompletion {
  values: CompletionValues
  resolve(completed: boolean): void
  reject(error: unknown): void
}

const maxCompletionsInFlight = 1
const maxCompletionBatch = 500

/**
 * Group commit for completions: the first completion goes out at once, and those that arrive while
 * statements are in flight go out together in the next one, so a busy worker commits many
 * attempts per round trip instead of one. Each completion resolves only once the statement that
 * recorded it has committed, so none is acknowledged earlier than it would be on its own.
 */
function createCompletions(send: {
  one(values: CompletionValues): Promise<boolean>
  many(columns: unknown[][]): Promise<Set<number>>
  /** Whether this completion's attempt is in the history: its statement committed. */
  recorded(values: CompletionValues): Promise<boolean>
  /** Told of the error a statement met when every completion it carried was settled all the same. */
  recovered(error: StoreError): void
}) {
  let queue: PendingCompletion[] = []
  let inFlight = 0
  let flushQueued = false

  /**
   * The connection broke before the answer came (no SQLSTATE: a reset, a timeout): the statement
   * may have committed. Its attempt record says whether it did; when it did not, the completion is
   * sent once more on its own (fenced by the token, so it cannot apply twice). Whether it was
   * settled that way (rather than rejected with `error`).
   */
  const settleUnknown = async (completion: PendingCompletion, error: unknown): Promise<boolean> => {
    try {
      completion.resolve((await send.recorded(completion.values)) || (await send.one(completion.values)))
      return true
    } catch {
      completion.reject(error)
      return false
    }
  }

  /**
   * Completions settled in spite of `error` resolve like any other, so their callers never see it:
   * it is reported instead, or nobody would hear that the database went silent. When any of them
   * was rejected with it, its caller reports it.
   */
  const settleAllUnknown = async (completions: PendingCompletion[], error: unknown) => {
    const settled = await Promise.all(completions.map((completion) => settleUnknown(completion, error)))
    if (settled.every(Boolean) && error instanceof StoreError) send.recovered(error)
  }

  const settleOne = async (completion: PendingCompletion) => {
    try {
      completion.resolve(await send.one(completion.values))
    } catch (error) {
      if (refusedByServer((error as { cause?: unknown }).cause)) completion.reject(error)
      else await settleAllUnknown([completion], error)
    }
  }

  const sendBatch = async (batch: PendingCompletion[]) => {
    if (batch.length === 1) return settleOne(batch[0]!)
    const columns = batch[0]!.values.map((_, column) => batch.map((completion) => completion.values[column]))
    let completed: Set<number>
    try {
      completed = await send.many(columns)
    } catch (error) {
      // The server refused the statement (its error has a SQLSTATE), so none of it committed: one
      // bad row (text PostgreSQL cannot store, say) must fail only its own completion. Without a
      // server's answer (the connection broke) the outcome is unknown: each completion finds out.
      if (refusedByServer((error as { cause?: unknown }).cause)) await Promise.all(batch.map(settleOne))
      else await settleAllUnknown(batch, error)
      return
    }
    batch.forEach((completion, index) => completion.resolve(completed.has(index + 1)))
  }

  const flush = () => {
    flushQueued = false
    while (queue.length > 0 && inFlight < maxCompletionsInFlight) {
      const batch = queue.length <= maxCompletionBatch ? queue : queue.slice(0, maxCompletionBatch)
      queue = queue.length <= maxCompletionBatch ? [] : queue.slice(maxCompletionBatch)
      inFlight++
      void sendBatch(batch).finally(() => {
        inFlight--
        flush()
      })
    }
  }

  return {
    add(values: CompletionValues): Promise<boolean> {
      return new Promise<boolean>((resolve, reject) => {
        queue.push({ values, resolve, reject })
        // completions settled in the same turn of the event loop share a statement
        if (!flushQueued && inFlight < maxCompletionsInFlight) {
          flushQueued = true
          queueMicrotask(flush)
        }
      })
    }
  }
}

interface ListenConnection {
  close(): Promise<void>
}

function ignore(): void {}

/**
 * Holds one connection that LISTENs, and opens a new one (backing off up to 5 s) whenever it
 * breaks. Every subscriber is woken once LISTEN holds, since notifications sent before (or while
 * the connection was down) are lost.
 */
function openListenConnection(
  pool: Required<PostgresPool>,
  channel: string,
  listeners: DueListeners,
  timeoutMs: number,
  report: (error: unknown) => void
): ListenConnection {
  let closed = false
  let current: PostgresListenConnection | undefined
  let retry: NodeJS.Timeout | undefined
  let backoffMs = 100
  const released = new WeakSet<PostgresListenConnection>()

  /** The listeners put on each connection, taken off when it is given back. */
  const attached = new WeakMap<PostgresListenConnection, Array<[event: 'notification' | 'error' | 'end', listener: (...args: any[]) => void]>>()

  const dispose = (client: PostgresListenConnection, destroy: boolean) => {
    if (released.has(client)) return
    released.add(client)
    // a pooled connection outlives this store: what stayed attached would pile up on it
    for (const [event, listener] of attached.get(client) ?? []) client.removeListener?.(event, listener)
    attached.delete(client)
    // a connection being destroyed may still report its end; nothing may be left to throw it
    if (destroy) client.on('error', ignore)
    try {
      client.release(destroy)
    } catch {
      // already given back by the pool after a fatal error
    }
  }

  /** The connection broke (or closed): a new one listens after a while, and the break is reported. */
  const drop = (client: PostgresListenConnection, error?: unknown) => {
    if (current !== client) return
    current = undefined
    dispose(client, true)
    schedule()
    report(error ?? new Error('the LISTEN connection closed'))
  }

  const schedule = () => {
    if (closed || retry) return
    retry = setTimeout(() => {
      retry = undefined
      void open()
    }, backoffMs)
    retry.unref()
    backoffMs = Math.min(backoffMs * 2, 5000)
  }

  const open = async () => {
    let client: PostgresListenConnection | undefined
    try {
      client = await pool.connect()
      const self = client
      const handlers: Array<[event: 'notification' | 'error' | 'end', listener: (...args: any[]) => void]> = [
        [
          'notification',
          (message: { channel: string; payload?: string }) => {
            if (message.channel === channel) listeners.wakeAll(announcedDueAt(message.payload))
          }
        ],
        ['error', (error: unknown) => drop(self, error)],
        ['end', () => drop(self)]
      ]
      attached.set(self, handlers)
      for (const [event, listener] of handlers) self.on(event, listener)
      await self.query(`LISTEN ${quoteIdentifier(channel)}`)
      if (closed) return dispose(self, false)
      current = self
      backoffMs = 100
      // whatever was announced before LISTEN took hold (or while the connection was down) is lost
      listeners.wakeAll()
    } catch (error) {
      if (client) dispose(client, true)
      schedule()
      if (!closed) report(error)
    }
  }

  void open()

  return {
    async close() {
      closed = true
      clearTimeout(retry)
      const client = current
      current = undefined
      if (!client) return
      try {
        // A connection that died silently would never answer: it is closed instead.
        await boundedCall(client.query(`UNLISTEN ${quoteIdentifier(channel)}`), timeoutMs)
        dispose(client, false)
      } catch {
        dispose(client, true)
      }
    }
  }
}

/** The result of {@link migratePostgres}. */
export interface MigrationResult {
  schema: string
  /** The version found before (0: none). */
  from: number
  /** The version now. */
  to: number
}

/**
 * Creates or upgrades the store's tables in `schema`. Safe to call on every start, from several
 * processes at once: it reads the applied version first, and the migration itself runs in one
 * transaction under an advisory lock, with statements that are idempotent.
 *
 * Pass a Pool (or an idle client): the script runs its own `BEGIN … COMMIT`.
 *
 * @example
 * ```ts
 * const { from, to } = await migratePostgres(pool, { schema: 'callbacks' })
 * ```
 */
export async function migratePostgres(
  pool: PostgresQueryable,
  options: PostgresSchemaOptions = {}
): Promise<MigrationResult> {
  if (pool === null || typeof pool !== 'object' || typeof pool.query !== 'function') {
    throw new TypeError('migratePostgres: `pool` must have a query(text, values) method (a pg Pool)')
  }
  const schema = checkSchema(options.schema, 'migratePostgres')
  const from = await appliedVersion(pool, schema)
  if (from >= latestVersion) return { schema, from, to: from }
  try {
    await pool.query(migrationScript(schema, from))
  } catch (error) {
    throw storeError('migration', schema, error)
  }
  return { schema, from, to: latestVersion }
}

async function appliedVersion(pool: PostgresQueryable, schema: string): Promise<number> {
  try {
    const { rows } = await pool.query(`${currentVersionSql(schema)}`)
    return Number(rows[0]?.version ?? 0)
  } catch (error) {
    const code = (error as { code?: unknown } | null)?.code
    if (code === '42P01' || code === '3F000') return 0 // no table / no schema yet
    throw storeError('migration', schema, error)
  }
}

/**
 * The SQL {@link migratePostgres} runs on an empty database, for people who apply migrations
 * with their own tool. Idempotent: running it twice changes nothing.
 *
 * @example
 * ```ts
 * import { writeFileSync } from 'node:fs'
 * writeFileSync('migrations/001_callbacks.sql', postgresSchemaSql({ schema: 'callbacks' }))
 * ```
 */
export function postgresSchemaSql(options: PostgresSchemaOptions = {}): string {
  return migrationScript(checkSchema(options.schema, 'postgresSchemaSql'), 0)
}

/** Options of {@link pruneTasks}. */
export interface PruneOptions extends PostgresSchemaOptions {
  /**
   * Delete tasks that finished more than this many seconds ago, as the memory and Redis stores'
   * `retentionSeconds` does (30 days: `30 * 86_400`).
   */
  retentionSeconds: number
  /** Which finished tasks to delete. Default `['delivered']`. */
  statuses?: TerminalStatus[] | undefined
  /** Rows per DELETE, so a large backlog never holds locks for long. Default 1000. */
  batchSize?: number | undefined
  /** The clock. Default `() => new Date()`. */
  now?: (() => Date) | undefined
}

/**
 * Retention: deletes finished tasks (and their attempt history) of the given `statuses` (by default
 * delivered ones only) that finished more than `retentionSeconds` ago, in batches. Returns how
 * many tasks were deleted. Run it from a cron.
 *
 * @example
 * ```ts
 * const deleted = await pruneTasks(pool, { schema: 'callbacks', retentionSeconds: 30 * 86_400 })
 * ```
 */
export async function pruneTasks(pool: PostgresQueryable, options: PruneOptions): Promise<number> {
  if (pool === null || typeof pool !== 'object' || typeof pool.query !== 'function') {
    throw new TypeError('pruneTasks: `pool` must have a query(text, values) method (a pg Pool)')
  }
  if (options === null || typeof options !== 'object') {
    throw new TypeError('pruneTasks: options must be an object with `retentionSeconds`')
  }
  const schema = checkSchema(options.schema, 'pruneTasks')
  const { retentionSeconds } = options
  if (typeof retentionSeconds !== 'number' || !Number.isFinite(retentionSeconds) || retentionSeconds < 0) {
    throw new TypeError('pruneTasks: `retentionSeconds` must be a number >= 0')
  }
  const statuses = options.statuses ?? ['delivered']
  if (
    !Array.isArray(statuses) ||
    statuses.length === 0 ||
    !statuses.every((status) => status === 'delivered' || status === 'failed' || status === 'cancelled')
  ) {
    throw new TypeError("pruneTasks: `statuses` must list some of 'delivered', 'failed', 'cancelled'")
  }
  const batchSize = options.batchSize ?? 1000
  if (!Number.isInteger(batchSize) || batchSize < 1) {
    throw new TypeError('pruneTasks: `batchSize` must be a positive integer')
  }
  const now = (options.now ?? (() => new Date()))()
  const cutoff = new Date(now.getTime() - retentionSeconds * 1000).toISOString()
  const text = pruneSql(schema)
  let deleted = 0
  for (;;) {
    let count: number
    try {
      count = (await pool.query(text, [statuses, cutoff, batchSize])).rowCount ?? 0
    } catch (error) {
      throw storeError('prune', schema, error)
    }
    deleted += count
    if (count < batchSize) return deleted
  }
}

function checkSchema(schema: unknown, where: string): string {
  if (schema === undefined) return defaultSchema
  if (typeof schema !== 'string' || !/^[A-Za-z_][A-Za-z0-9_]{0,49}$/.test(schema)) {
    throw new TypeError(
      `${where}: \`schema\` must be 1–50 letters, digits or underscores, not starting with a digit`
    )
  }
  return schema
}

/**
 * The caller's transaction client. A pool is refused: each of its queries may run on another
 * connection, outside any `BEGIN`, so the outbox's promise would silently not hold.
 */
function transactionOf(options: StoreCallOptions | undefined, pool: PostgresPool): PostgresQueryable | undefined {
  const transaction = options?.transaction
  if (transaction === undefined) return undefined
  if (transaction === null || typeof transaction !== 'object' || typeof (transaction as PostgresQueryable).query !== 'function') {
    throw new TypeError('`transaction` must be a pg client with an open transaction (it has no query method)')
  }
  const looksLikePool =
    typeof (transaction as { connect?: unknown }).connect === 'function' &&
    typeof (transaction as { release?: unknown }).release !== 'function' &&
    'totalCount' in transaction
  if (transaction === pool || looksLikePool) {
    throw new TypeError('`transaction` is a pool, not a transaction: pass the client you ran BEGIN on (const client = await pool.connect())')
  }
  return transaction as PostgresQueryable
}

const POSTGRES_STORE_OPTION_NAMES: ReadonlySet<string> = new Set(['pool', 'schema', 'prepare', 'listen', 'timeoutMs'])

function storeError(operation: string, schema: string, error: unknown): StoreError {
  const code = (error as { code?: unknown } | null)?.code
  const hint =
    code === '42P01' || code === '3F000' ? ` (has migratePostgres run for schema "${schema}"?)` : ''
  const reason = error instanceof Error ? `: ${error.message}` : ''
  return new StoreError('ERR_CALLBACK_STORE', `PostgreSQL ${operation} failed${reason}${hint}`, { cause: error })
}

function time(value: unknown): number {
  return value instanceof Date ? value.getTime() : new Date(value as string).getTime()
}

function date(value: unknown): Date {
  return new Date(time(value))
}

function toTask(row: Record<string, any>): CallbackTask {
  const task: CallbackTask = {
    id: row.id,
    status: row.status as TaskStatus,
    callbackUrl: row.callback_url,
    event: row.event,
    attempts: Number(row.attempts),
    createdAt: date(row.created_at),
    updatedAt: date(row.updated_at)
  }
  if (row.idempotency_key != null) task.idempotencyKey = row.idempotency_key
  if (row.secret != null) task.secret = parseStoredJson(row.secret, 'secret')
  if (row.metadata != null) task.metadata = parseStoredJson(row.metadata, 'metadata')
  if (row.encryption_key != null) task.encryptionKey = parseStoredJson(row.encryption_key, 'encryption_key')
  if (row.verify_intent === true) task.verifyIntent = true
  if (row.body != null) task.body = row.body
  if (row.content_type != null) task.contentType = row.content_type
  if (row.next_attempt_at != null) task.nextAttemptAt = date(row.next_attempt_at)
  if (row.deadline != null) task.deadline = date(row.deadline)
  if (row.last_error != null) task.lastError = row.last_error
  if (row.destination != null) task.destination = row.destination
  return task
}

function toAttempt(row: Record<string, any>): AttemptRecord {
  const attempt: AttemptRecord = {
    attempt: Number(row.attempt),
    startedAt: date(row.started_at),
    durationMs: Number(row.duration_ms),
    outcome: row.outcome
  }
  if (row.status != null) attempt.status = Number(row.status)
  if (row.error != null) attempt.error = row.error
  if (row.response_body != null) attempt.responseBody = row.response_body
  return attempt
}

