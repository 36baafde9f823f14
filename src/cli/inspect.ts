/**
 * `endpoint-callback tasks | attempts | redeliver | cancel | destinations`: inspecting and repairing deliveries
 * in a PostgreSQL or Redis store, through the library's inspection calls. The driver (`pg` or
 * `ioredis`, optional peers) is loaded only when a command needs it.
 */
import { Command, InvalidArgumentError, Option } from 'commander'
import { TaskError } from '../errors.ts'
import { cancelTask, listAttempts, listDestinations, listTasks, redeliverFailed, redeliverTask } from '../inspect.ts'
import { createPostgresStore } from '../stores/postgres.ts'
import type { PostgresPool } from '../stores/postgres.ts'
import { createRedisStore } from '../stores/redis.ts'
import type { RedisClient } from '../stores/redis.ts'
import type { AttemptRecord, CallbackStore, CallbackTask, DestinationState, TaskListQuery, TaskStatus } from '../types.ts'
import { CliError, EXIT, printError, printLine } from './exit.ts'

/** The exit codes of the inspection commands, as `--help` shows them. */
export const INSPECT_EXIT_CODES_HELP = `
Exit codes:
  0  done: listed, redelivered, cancelled
  1  failed: unknown task, a task in another state, or the store failed
  2  usage or configuration error: bad option, a --store URL that is not
     postgres:// or redis://, or its driver (pg, ioredis) not installed`

const STATUSES: readonly TaskStatus[] = ['pending', 'scheduled', 'delivering', 'delivered', 'failed', 'cancelled']

/** Where the store is, as the shared options say. */
export interface StoreLocation {
  store: string
  schema?: string
  prefix?: string
}

/** A store opened from a URL, with the connection the command must close. */
export interface OpenedStore {
  store: CallbackStore
  close(): Promise<void>
}

/** `import(name)` for an optional peer dependency: a missing one is a usage error on one line. */
async function loadPeer(name: string, scheme: string): Promise<any> {
  try {
    return await import(name)
  } catch (error) {
    if ((error as { code?: unknown } | null)?.code === 'ERR_MODULE_NOT_FOUND') {
      throw new CliError(EXIT.usage, `--store ${scheme}//… needs the ${name} package: npm install ${name}`, { cause: error })
    }
    throw error
  }
}

/**
 * Opens the store a `--store` URL names: `postgres://` / `postgresql://` (a `pg` Pool, schema
 * `--schema`) or `redis://` / `rediss://` (an ioredis client, key prefix `--prefix`). The URL is
 * never printed: it may hold a password.
 */
export async function openStore(location: StoreLocation): Promise<OpenedStore> {
  let url: URL
  try {
    url = new URL(location.store)
  } catch {
    throw new CliError(EXIT.usage, '--store must be a URL: postgres://user@host/db or redis://host:6379')
  }
  const scheme = url.protocol
  if (scheme === 'postgres:' || scheme === 'postgresql:') {
    if (location.prefix !== undefined) throw new CliError(EXIT.usage, '--prefix is for a Redis store; a PostgreSQL store takes --schema')
    const pg = await loadPeer('pg', scheme)
    const Pool = (pg.default ?? pg).Pool as new (config: object) => PostgresPool & { on(event: 'error', listener: () => void): unknown; end(): Promise<void> }
    const pool = new Pool({ connectionString: location.store, max: 4, connectionTimeoutMillis: 10_000 })
    // An idle connection dropped by the server is the pool's to replace; the query that needs one reports it.
    pool.on('error', () => {})
    try {
      const store = createPostgresStore({ pool, listen: false, ...(location.schema === undefined ? {} : { schema: location.schema }) })
      return { store, close: () => pool.end() }
    } catch (error) {
      await pool.end()
      throw error
    }
  }
  if (scheme === 'redis:' || scheme === 'rediss:') {
    if (location.schema !== undefined) throw new CliError(EXIT.usage, '--schema is for a PostgreSQL store; a Redis store takes --prefix')
    const ioredis = await loadPeer('ioredis', scheme)
    const Redis = (ioredis.Redis ?? ioredis.default) as new (url: string, options: object) => RedisClient & {
      connect(): Promise<void>
      on(event: 'error', listener: (error: Error) => void): unknown
      disconnect(): void
      quit(): Promise<unknown>
    }
    // One try, no reconnecting: a command either reaches the server or says it could not.
    const client = new Redis(location.store, { lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: () => null, enableOfflineQueue: false })
    let refused: Error | undefined
    client.on('error', (error: Error) => (refused ??= error))
    try {
      await client.connect()
    } catch (error) {
      client.disconnect()
      // connect() only says "Connection is closed"; the error event said why
      const reason = (refused ?? (error as Error)).message
      throw new CliError(EXIT.failed, `ERR_CALLBACK_STORE: cannot connect to Redis at ${url.host}: ${reason}`, { cause: refused ?? error })
    }
    try {
      const store = createRedisStore({ client, subscribe: false, ...(location.prefix === undefined ? {} : { prefix: location.prefix }) })
      return { store, close: async () => void (await client.quit().catch(() => client.disconnect())) }
    } catch (error) {
      client.disconnect()
      throw error
    }
  }
  throw new CliError(EXIT.usage, `--store must be a postgres://, postgresql://, redis:// or rediss:// URL, not ${scheme}//…`)
}

/**
 * Where a command looked, for the lines that say it found nothing: the server (never the URL's
 * user or password) and the schema or key prefix.
 */
export function describeLocation(location: StoreLocation): string {
  let url: URL
  try {
    url = new URL(location.store)
  } catch {
    return 'the store'
  }
  if (url.protocol === 'redis:' || url.protocol === 'rediss:') {
    return `the Redis store at ${url.host}, key prefix "${location.prefix ?? 'endpoint-callback'}" (--prefix or CALLBACK_STORE_PREFIX)`
  }
  const database = decodeURIComponent(url.pathname.replace(/^\//, ''))
  return `the PostgreSQL store at ${url.host}${database === '' ? '' : `/${database}`}, schema "${location.schema ?? 'endpoint_callback'}" (--schema or CALLBACK_STORE_SCHEMA)`
}

async function withStore<T>(location: StoreLocation, run: (store: CallbackStore) => Promise<T>): Promise<T> {
  const opened = await openStore(location)
  try {
    return await run(opened.store)
  } catch (error) {
    // "does not exist" alone does not say where it was looked for: a wrong prefix looks the same.
    if (error instanceof TaskError && error.code === 'ERR_CALLBACK_TASK_NOT_FOUND') {
      throw new CliError(EXIT.failed, `${error.code}: ${error.message} in ${describeLocation(location)}`, { cause: error })
    }
    throw error
  } finally {
    await opened.close()
  }
}

/** What a listing shows of a task: never its secret, encryption key or body. */
function taskSummary(task: CallbackTask): Record<string, unknown> {
  const summary: Record<string, unknown> = {
    id: task.id,
    status: task.status,
    event: task.event,
    callbackUrl: task.callbackUrl,
    attempts: task.attempts,
    createdAt: task.createdAt.toISOString(),
    updatedAt: task.updatedAt.toISOString(),
  }
  if (task.nextAttemptAt !== undefined) summary.nextAttemptAt = task.nextAttemptAt.toISOString()
  if (task.lastError !== undefined) summary.lastError = task.lastError
  if (task.idempotencyKey !== undefined) summary.idempotencyKey = task.idempotencyKey
  if (task.metadata !== undefined) summary.metadata = task.metadata
  return summary
}

function taskLine(task: CallbackTask): string {
  const when = task.status === 'scheduled' && task.nextAttemptAt !== undefined ? `due ${task.nextAttemptAt.toISOString()}` : task.updatedAt.toISOString()
  const parts = [task.id, task.status, `${task.attempts} attempt${task.attempts === 1 ? '' : 's'}`, when, task.event, task.callbackUrl]
  if (task.lastError !== undefined) parts.push(task.lastError)
  return parts.join('  ')
}

function attemptLine(attempt: AttemptRecord): string {
  const result = attempt.status === undefined ? (attempt.error ?? 'no response') : `HTTP ${attempt.status}`
  const parts = [`#${attempt.attempt}`, attempt.startedAt.toISOString(), result, `${attempt.durationMs} ms`, attempt.outcome]
  if (attempt.responseBody !== undefined) parts.push(JSON.stringify(attempt.responseBody.slice(0, 120)))
  return parts.join('  ')
}

function attemptJson(attempt: AttemptRecord): Record<string, unknown> {
  return { ...attempt, startedAt: attempt.startedAt.toISOString() }
}

function instant(value: string): Date {
  const date = new Date(value)
  if (value.trim() === '' || Number.isNaN(date.getTime())) throw new InvalidArgumentError('expected an ISO-8601 date and time, e.g. 2025-01-31T12:00:00Z.')
  return date
}

function limit(value: string): number {
  const number = Number(value)
  if (!/^\d+$/.test(value) || number < 1 || number > 1000) throw new InvalidArgumentError('limit must be an integer from 1 to 1000.')
  return number
}

function statusOrAny(value: string): TaskStatus | 'any' {
  if (value !== 'any' && !(STATUSES as readonly string[]).includes(value)) throw new InvalidArgumentError(`status must be one of ${STATUSES.join(', ')} or any.`)
  return value as TaskStatus | 'any'
}

/** The search filters `tasks` and `redeliver --all-failed` share. */
interface SearchFlags {
  event?: string
  host?: string
  id?: string
  key?: string
  since?: Date
  until?: Date
}

/** The filters of a search, as the line that says it found nothing names them. */
function describeSearch(flags: SearchFlags): string {
  const filters = [
    flags.event === undefined ? undefined : `event ${JSON.stringify(flags.event)}`,
    flags.host === undefined ? undefined : `host ${JSON.stringify(flags.host)}`,
    flags.id === undefined ? undefined : `id ${JSON.stringify(flags.id)}`,
    flags.key === undefined ? undefined : `idempotency key ${JSON.stringify(flags.key)}`,
    flags.since === undefined ? undefined : `updated since ${flags.since.toISOString()}`,
    flags.until === undefined ? undefined : `updated before ${flags.until.toISOString()}`,
  ].filter((filter) => filter !== undefined)
  return filters.length === 0 ? '' : ` (${filters.join(', ')})`
}

function searchQuery(flags: SearchFlags): Omit<TaskListQuery, 'status' | 'limit' | 'cursor'> {
  return {
    ...(flags.event === undefined ? {} : { event: flags.event }),
    ...(flags.host === undefined ? {} : { host: flags.host }),
    ...(flags.id === undefined ? {} : { id: flags.id }),
    ...(flags.key === undefined ? {} : { idempotencyKey: flags.key }),
    ...(flags.since === undefined ? {} : { since: flags.since }),
    ...(flags.until === undefined ? {} : { until: flags.until }),
  }
}

interface StoreFlags {
  store: string
  schema?: string
  prefix?: string
  json?: boolean
}

/**
 * The store the flags name. CALLBACK_STORE_SCHEMA applies to a PostgreSQL store and
 * CALLBACK_STORE_PREFIX to a Redis one: a variable set for the other kind of store is not an
 * error, as the same flag on the command line is.
 */
function location(flags: StoreFlags, command: Command): StoreLocation {
  const redis = /^rediss?:/i.test(flags.store)
  const fromEnv = (name: 'schema' | 'prefix') => command.getOptionValueSource(name) === 'env'
  const schema = flags.schema !== undefined && !(redis && fromEnv('schema')) ? flags.schema : undefined
  const prefix = flags.prefix !== undefined && !(!redis && fromEnv('prefix')) ? flags.prefix : undefined
  return {
    store: flags.store,
    ...(schema === undefined ? {} : { schema }),
    ...(prefix === undefined ? {} : { prefix }),
  }
}

/** The options every inspection command shares. */
function storeCommand(program: Command, name: string, description: string): Command {
  return program
    .command(name)
    .description(description)
    .addOption(
      new Option('--store <url>', 'the store: postgres://user@host/db (needs pg) or redis://host:6379 (needs ioredis)')
        .env('CALLBACK_STORE_URL')
        .makeOptionMandatory()
    )
    .addOption(new Option('--schema <name>', 'PostgreSQL schema of the tables (default: endpoint_callback)').env('CALLBACK_STORE_SCHEMA'))
    .addOption(new Option('--prefix <prefix>', 'Redis key prefix (default: endpoint-callback)').env('CALLBACK_STORE_PREFIX'))
    .option('--json', 'print JSON lines')
    .addHelpText('after', INSPECT_EXIT_CODES_HELP)
}

/**
 * Where a redelivered task is by the time it is read back: a worker may have claimed it already,
 * and then its `nextAttemptAt` is the lease's expiry, not a due time.
 */
export function redeliveredState(task: CallbackTask): string {
  if (task.status === 'scheduled' && task.nextAttemptAt !== undefined) return `due ${task.nextAttemptAt.toISOString()}`
  if (task.status === 'delivering') return 'a worker is sending it now'
  return `already ${task.status}`
}

/** Adds `tasks`, `attempts`, `redeliver` and `cancel` to the program. */
export function addInspectCommands(program: Command, exit: (code: number) => void): void {
  storeCommand(
    program,
    'tasks',
    'Find tasks, most recently updated (for failed tasks: failed) first, one per line: id, status, attempts, ' +
      'when, event, URL and the last error. Every filter given must hold; without --status, failed tasks.'
  )
    .addOption(new Option('--status <status>', `which tasks: ${STATUSES.join(', ')}, or any`).default('failed').argParser(statusOrAny))
    .option('--event <event>', 'only tasks of this event')
    .option('--host <host>', 'only tasks whose callback URL has this host name (any case, port aside)')
    .option('--id <task-id>', 'only this task')
    .option('--key <idempotency-key>', 'only the task created with this idempotency key')
    .addOption(new Option('--since <iso>', 'only tasks updated (failed) at or after this instant').argParser(instant))
    .addOption(new Option('--until <iso>', 'only tasks updated before this instant').argParser(instant))
    .addOption(new Option('--limit <n>', 'tasks per page').default(100).argParser(limit))
    .option('--cursor <cursor>', 'the next page, as the last line of the previous one gave it')
    .action(async (flags: StoreFlags & SearchFlags & { status: TaskStatus | 'any'; limit: number; cursor?: string }, command: Command) => {
      const where = location(flags, command)
      await withStore(where, async (store) => {
        const page = await listTasks(
          {
            ...(flags.status === 'any' ? {} : { status: flags.status }),
            ...searchQuery(flags),
            limit: flags.limit,
            ...(flags.cursor === undefined ? {} : { cursor: flags.cursor }),
          },
          { store }
        )
        for (const task of page.tasks) printLine(flags.json ? JSON.stringify(taskSummary(task)) : taskLine(task))
        // one corrupted record must not hide the others: it is named on stderr, and listing goes on
        for (const { id, reason } of page.unreadable ?? []) process.stderr.write(`endpoint-callback: skipped task ${id}: it cannot be read (${reason})\n`)
        if (page.tasks.length === 0) {
          // stdout stays empty (a script sees no tasks); a person sees what was searched.
          printError(`no ${flags.status === 'any' ? '' : `${flags.status} `}tasks${describeSearch(flags)}${flags.cursor === undefined ? '' : ' after that cursor'} in ${describeLocation(where)}`)
        }
        if (page.cursor !== undefined) printLine(flags.json ? JSON.stringify({ cursor: page.cursor }) : `# more: --cursor ${page.cursor}`)
      })
      exit(EXIT.ok)
    })

  storeCommand(program, 'attempts', "List a task's attempts, oldest first: number, start, HTTP status or error, duration, outcome and the first bytes of the answer.")
    .argument('<task-id>', 'the task (its webhook-id)')
    .action(async (id: string, flags: StoreFlags, command: Command) => {
      const where = location(flags, command)
      await withStore(where, async (store) => {
        const attempts = await listAttempts(id, { store })
        for (const attempt of attempts) printLine(flags.json ? JSON.stringify(attemptJson(attempt)) : attemptLine(attempt))
        if (attempts.length === 0) printError(`task ${id} has no attempts yet, in ${describeLocation(where)}`)
      })
      exit(EXIT.ok)
    })

  storeCommand(
    program,
    'redeliver',
    'Make a failed task, or with --all-failed every task that failed since --since, due again now: a running worker sends it ' +
      'again with the same webhook-id and body, resuming its retry schedule where it stopped. Cancelled tasks stay cancelled.'
  )
    .argument('[task-id]', 'the failed task to redeliver')
    .option('--all-failed', 'redeliver every task that failed since --since')
    .addOption(new Option('--since <iso>', 'with --all-failed: tasks that failed at or after this instant').argParser(instant))
    .option('--event <event>', 'with --all-failed: only tasks of this event')
    .option('--host <host>', 'with --all-failed: only tasks whose callback URL has this host name')
    .action(async (id: string | undefined, flags: StoreFlags & SearchFlags & { allFailed?: boolean }, command: Command) => {
      if (id !== undefined && flags.allFailed) throw new CliError(EXIT.usage, 'give a task id or --all-failed, not both')
      if (id === undefined && !flags.allFailed) throw new CliError(EXIT.usage, 'redeliver needs a task id, or --all-failed --since <iso>')
      if (flags.allFailed && flags.since === undefined) throw new CliError(EXIT.usage, '--all-failed needs --since <iso> (1970-01-01T00:00:00Z for every failed task)')
      if (!flags.allFailed && (flags.since !== undefined || flags.event !== undefined || flags.host !== undefined)) {
        throw new CliError(EXIT.usage, '--since, --event and --host go with --all-failed')
      }
      const where = location(flags, command)
      await withStore(where, async (store) => {
        if (id !== undefined) {
          const task = await redeliverTask(id, { store })
          printLine(flags.json ? JSON.stringify(taskSummary(task)) : `redelivered ${task.id}: ${redeliveredState(task)}`)
          return
        }
        const { redelivered } = await redeliverFailed({ ...searchQuery(flags), since: flags.since! }, { store })
        if (flags.json) printLine(JSON.stringify({ redelivered }))
        else {
          for (const each of redelivered) printLine(`redelivered ${each}`)
          printLine(`${redelivered.length} task${redelivered.length === 1 ? '' : 's'} redelivered`)
        }
        if (redelivered.length === 0) printError(`no failed tasks${describeSearch(flags)} in ${describeLocation(where)}`)
      })
      exit(EXIT.ok)
    })

  storeCommand(
    program,
    'destinations',
    'List the destinations (callback URL origins, or what the sender maps tasks to) that are held back, have attempts in ' +
      'flight or tasks due, most due first, one per line: destination, state (closed, throttled, open, probing), until when, ' +
      'attempts in flight, tasks due and the last error.'
  ).action(async (flags: StoreFlags, command: Command) => {
    await withStore(location(flags, command), async (store) => {
      for (const one of await listDestinations({ store })) printLine(flags.json ? JSON.stringify(destinationJson(one)) : destinationLine(one))
    })
    exit(EXIT.ok)
  })

  storeCommand(program, 'cancel', 'Cancel a task that has not ended: it is never attempted again.')
    .argument('<task-id>', 'the task to cancel')
    .action(async (id: string, flags: StoreFlags, command: Command) => {
      await withStore(location(flags, command), async (store) => {
        const task = await cancelTask(id, { store })
        printLine(flags.json ? JSON.stringify(taskSummary(task)) : `cancelled ${task.id}`)
      })
      exit(EXIT.ok)
    })
}

function destinationJson(one: DestinationState): Record<string, unknown> {
  return { ...one, ...(one.until === undefined ? {} : { until: one.until.toISOString() }) }
}

function destinationLine(one: DestinationState): string {
  const until = one.until === undefined ? '-' : one.until.toISOString()
  return [one.destination, one.state, until, `in-flight=${one.inFlight}`, `due=${one.due}`, one.lastError ?? ''].join('\t').trimEnd()
}
