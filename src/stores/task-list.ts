/**
 * `CallbackStore.list`, the part every store shares: the query checked once, and pages newest
 * first with a cursor `<updatedAt ms>:<id>` naming the last task of the page before.
 */
import { StoreError } from '../errors.ts'
import type { CallbackTask, TaskListQuery, TaskPage, TaskStatus } from '../types.ts'

export const TASK_STATUSES: readonly TaskStatus[] = ['pending', 'scheduled', 'delivering', 'delivered', 'failed', 'cancelled']

/** A checked list query. `after` is the cursor read: list only what comes after it. */
export interface CheckedListQuery {
  status: TaskStatus
  since: Date | undefined
  limit: number
  after: { updatedAt: number; id: string } | undefined
}

export function checkListQuery(query: TaskListQuery): CheckedListQuery {
  if (query === null || typeof query !== 'object') throw new TypeError('list: the query must be an object with a `status`')
  const { status, since, cursor } = query
  if (!TASK_STATUSES.includes(status)) throw new TypeError(`list: \`status\` must be one of ${TASK_STATUSES.join(', ')}`)
  if (since !== undefined && !(since instanceof Date && Number.isFinite(since.getTime()))) {
    throw new TypeError('list: `since` must be a valid Date')
  }
  const limit = query.limit ?? 100
  if (!Number.isSafeInteger(limit) || limit < 1 || limit > 1000) throw new TypeError('list: `limit` must be an integer from 1 to 1000')
  let after: CheckedListQuery['after']
  if (cursor !== undefined) {
    const match = typeof cursor === 'string' ? /^(\d{1,16}):(.+)$/s.exec(cursor) : null
    if (match === null) throw new TypeError('list: `cursor` must be the cursor of a page this store returned')
    after = { updatedAt: Number(match[1]), id: match[2]! }
  }
  return { status, since, limit, after }
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
