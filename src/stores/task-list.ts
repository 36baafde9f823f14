/**
 * `CallbackStore.list`, the part every store shares: the query checked once, and pages newest
 * first with a cursor `<updatedAt ms>:<id>` naming the last task of the page before.
 */
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
