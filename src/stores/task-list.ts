/**
 * `CallbackStore.list`, the part every store shares: the query checked once, the filters as one
 * predicate (for stores that scan), and pages newest first with a cursor `<updatedAt ms>:<id>`
 * naming the last task of the page before.
 */
import { StoreError } from '../errors.ts'
import type { CallbackTask, TaskListQuery, TaskPage, TaskStatus } from '../types.ts'

export const TASK_STATUSES: readonly TaskStatus[] = ['pending', 'scheduled', 'delivering', 'delivered', 'failed', 'cancelled']

/** A checked list query. `after` is the cursor read: list only what comes after it. */
export interface CheckedListQuery {
  status: TaskStatus | undefined
  event: string | undefined
  /** Lower case, an IPv6 address in brackets, as {@link callbackHost} gives it. */
  host: string | undefined
  id: string | undefined
  idempotencyKey: string | undefined
  since: Date | undefined
  until: Date | undefined
  limit: number
  after: { updatedAt: number; id: string } | undefined
}

function checkText(value: unknown, name: string): string | undefined {
  if (value === undefined) return undefined
  if (typeof value !== 'string' || value === '' || value.length > 2048) throw new TypeError(`list: \`${name}\` must be a non-empty string`)
  return value
}

function checkDate(value: unknown, name: string): Date | undefined {
  if (value === undefined) return undefined
  if (!(value instanceof Date && Number.isFinite(value.getTime()))) throw new TypeError(`list: \`${name}\` must be a valid Date`)
  return value
}

export function checkListQuery(query: TaskListQuery): CheckedListQuery {
  if (query === null || typeof query !== 'object') throw new TypeError('list: the query must be an object')
  const { status, cursor } = query
  if (status !== undefined && !TASK_STATUSES.includes(status)) throw new TypeError(`list: \`status\` must be one of ${TASK_STATUSES.join(', ')}`)
  const host = checkText(query.host, 'host')
  const limit = query.limit ?? 100
  if (!Number.isSafeInteger(limit) || limit < 1 || limit > 1000) throw new TypeError('list: `limit` must be an integer from 1 to 1000')
  let after: CheckedListQuery['after']
  if (cursor !== undefined) {
    const match = typeof cursor === 'string' ? /^(\d{1,16}):(.+)$/s.exec(cursor) : null
    if (match === null) throw new TypeError('list: `cursor` must be the cursor of a page this store returned')
    after = { updatedAt: Number(match[1]), id: match[2]! }
  }
  return {
    status,
    event: checkText(query.event, 'event'),
    host: host === undefined ? undefined : normalizeHost(host),
    id: checkText(query.id, 'id'),
    idempotencyKey: checkText(query.idempotencyKey, 'idempotencyKey'),
    since: checkDate(query.since, 'since'),
    until: checkDate(query.until, 'until'),
    limit,
    after
  }
}

/** A host as a user types it, as {@link callbackHost} reads it from a URL. */
function normalizeHost(host: string): string {
  const lower = host.trim().toLowerCase()
  return lower.includes(':') && !lower.startsWith('[') ? `[${lower}]` : lower
}

/** The host name of a callback URL (lower case, no port, IPv6 in brackets); '' when it does not parse. */
export function callbackHost(url: string): string {
  try {
    return new URL(url).hostname
  } catch {
    return ''
  }
}

export interface ListedFields {
  readonly id: string
  readonly status: TaskStatus
  readonly event: string
  readonly callbackUrl: string
  readonly idempotencyKey?: string | undefined
}

/** Whether a task updated at `updatedAt` (epoch ms) passes every filter of `query`, the cursor included. */
export function matchesListQuery(task: ListedFields, updatedAt: number, query: CheckedListQuery): boolean {
  return (
    (query.status === undefined || task.status === query.status) &&
    (query.event === undefined || task.event === query.event) &&
    (query.id === undefined || task.id === query.id) &&
    (query.idempotencyKey === undefined || task.idempotencyKey === query.idempotencyKey) &&
    (query.since === undefined || updatedAt >= query.since.getTime()) &&
    (query.until === undefined || updatedAt < query.until.getTime()) &&
    (query.after === undefined || comesAfter({ updatedAt, id: task.id }, query.after)) &&
    (query.host === undefined || callbackHost(task.callbackUrl) === query.host)
  )
}

/** Whether `entry` comes after the cursor in the list's order (newest first, then id descending). */
export function comesAfter(entry: { updatedAt: number; id: string }, cursor: { updatedAt: number; id: string }): boolean {
  return entry.updatedAt < cursor.updatedAt || (entry.updatedAt === cursor.updatedAt && entry.id < cursor.id)
}

/** Newest first, then id descending: the order of every page. */
export function listOrder(a: { updatedAt: number; id: string }, b: { updatedAt: number; id: string }): number {
  return b.updatedAt - a.updatedAt || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0)
}

/** The page of the first `limit` of `found`, which holds one task more when another page follows. */
export function taskPage(found: readonly CallbackTask[], limit: number): TaskPage {
  const tasks = found.slice(0, limit)
  const page: TaskPage = { tasks }
  const last = tasks[tasks.length - 1]
  if (found.length > limit && last !== undefined) page.cursor = `${last.updatedAt.getTime()}:${last.id}`
  return page
}

/**
 * {@link taskPage} over stored rows: a row that cannot be read is skipped and named in
 * `unreadable`, so one corrupted record does not hide every other.
 */
export function readTaskPage<Row>(rows: readonly Row[], limit: number, read: (row: Row) => CallbackTask, idOf: (row: Row) => string): TaskPage {
  const tasks: CallbackTask[] = []
  const unreadable: Array<{ id: string; reason: string }> = []
  // the row one past the page only says that another page follows
  for (const row of rows.slice(0, limit)) {
    try {
      tasks.push(read(row))
    } catch (error) {
      unreadable.push({ id: idOf(row), reason: unreadableReason(error) })
    }
  }
  const page: TaskPage = { tasks }
  // After an unreadable last row the next page starts at the last readable one, naming it again.
  const last = tasks[tasks.length - 1]
  if (rows.length > limit && last !== undefined) page.cursor = `${last.updatedAt.getTime()}:${last.id}`
  if (unreadable.length > 0) page.unreadable = unreadable
  return page
}

/** Why a stored record cannot be read, in words of the store's own: never the parser's, which quote the text. */
export function unreadableReason(error: unknown): string {
  return error instanceof StoreError ? error.message : 'the stored task cannot be read'
}

/** A stored JSON field, parsed; a field that is not JSON fails without quoting it (it may hold a secret). */
export function parseStoredJson(text: string, field: string): any {
  try {
    return JSON.parse(text)
  } catch {
    throw new StoreError('ERR_CALLBACK_STORE', `the stored ${field} is not valid JSON`)
  }
}
