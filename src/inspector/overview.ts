/**
 * The numbers of the overview: from the store's `summarize` when it has one (memory, PostgreSQL,
 * Redis), otherwise from the newest tasks `list` pages through (users' own stores), which the page
 * then says.
 */
import { callbackHost } from '../stores/task-list.ts'
import type { CallbackStore, CallbackTask, TaskSummary, TaskSummaryQuery } from '../types.ts'

export interface Overview {
  summary: TaskSummary
  /** Set when the summary was made from only the newest tasks: how many were read. */
  sampledTasks?: number
}

/** The overview's query: 24 hourly buckets ending now, counts capped, ten hosts. */
export function overviewQuery(now: Date, countCap: number): TaskSummaryQuery {
  return { now, bucketMs: 3_600_000, buckets: 24, countCap, hosts: 10 }
}

export async function readOverview(store: CallbackStore, query: TaskSummaryQuery): Promise<Overview> {
  if (typeof store.summarize === 'function') return { summary: await store.summarize(query) }
  if (typeof store.list !== 'function') throw new TypeError('the inspector needs a store with list (the memory, PostgreSQL and Redis stores have it)')
  return summarizeNewest(store as CallbackStore & Required<Pick<CallbackStore, 'list'>>, query)
}

const samplePages = 10
const samplePageSize = 1000

/** A summary of the newest tasks: attempts are read off each task's last change. */
async function summarizeNewest(store: CallbackStore & Required<Pick<CallbackStore, 'list'>>, query: TaskSummaryQuery): Promise<Overview> {
  const { now, bucketMs, buckets, countCap, hosts } = query
  const at = now.getTime()
  const from = at - bucketMs * buckets
  const tasks: CallbackTask[] = []
  let cursor: string | undefined
  let pages = 0
  do {
    const page = await store.list({ limit: samplePageSize, ...(cursor === undefined ? {} : { cursor }) })
    tasks.push(...page.tasks)
    cursor = page.cursor
  } while (cursor !== undefined && ++pages < samplePages)
  const summary: TaskSummary = {
    counts: { pending: 0, scheduled: 0, delivering: 0, delivered: 0, failed: 0, cancelled: 0 },
    due: typeof store.countDue === 'function' ? Math.min(await store.countDue(now), countCap) : 0,
    attempts: Array.from({ length: buckets }, (_, index) => ({ start: new Date(at - bucketMs * (buckets - index)), delivered: 0, failed: 0 })),
    failingHosts: []
  }
  const failing = new Map<string, TaskSummary['failingHosts'][number]>()
  let oldest = Infinity
  for (const task of tasks) {
    summary.counts[task.status] = Math.min(summary.counts[task.status] + 1, countCap)
    const due = task.nextAttemptAt?.getTime()
    if ((task.status === 'scheduled' || task.status === 'delivering') && due !== undefined && due <= at) oldest = Math.min(oldest, due)
    const updated = task.updatedAt.getTime()
    if (updated <= from || updated > at) continue
    const failed = task.lastError !== undefined && (task.status === 'failed' || task.status === 'scheduled')
    const bucket = summary.attempts[buckets - 1 - Math.floor((at - updated) / bucketMs)]
    if (bucket !== undefined && (failed || task.status === 'delivered')) bucket[failed ? 'failed' : 'delivered'] += 1
    if (!failed) continue
    const host = callbackHost(task.callbackUrl)
    const seen = failing.get(host)
    if (seen === undefined) failing.set(host, { host, tasks: 1, lastError: task.lastError!, lastFailedAt: task.updatedAt })
    else seen.tasks += 1 // newest first: the first seen has the newest error
  }
  if (oldest !== Infinity) summary.oldestDueAt = new Date(oldest)
  summary.failingHosts = [...failing.values()].sort((a, b) => b.tasks - a.tasks || b.lastFailedAt.getTime() - a.lastFailedAt.getTime()).slice(0, hosts)
  return { summary, sampledTasks: tasks.length }
}
