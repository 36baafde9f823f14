/**
 * No stranded task: a `pending` task whose result never came (the process that accepted the job
 * died between its 202 and `deliver`) fails once it expires, with its own code and a `failed`
 * event, instead of waiting for ever. Workers sweep for them as they poll.
 */
import type { ResolvedSender } from './sender.ts'
import type { CallbackTask } from './types.ts'

/** The `lastError` of a pending task that expired. */
export const PENDING_EXPIRED_REASON =
  'ERR_CALLBACK_PENDING_EXPIRED: no result was attached (deliver) before the task expired (pendingTimeoutMs or its deadline)'

/** Tasks expired per store call at most. */
const EXPIRE_BATCH = 100

/**
 * When a pending task created at `createdAt` expires: after `pendingTimeoutMs`, or at its deadline
 * if that comes first; `undefined` for never.
 */
export function pendingExpiry(sender: ResolvedSender, createdAt: Date, deadline: Date | undefined): Date | undefined {
  const timeout = sender.pendingTimeoutMs
  const byTimeout = Number.isFinite(timeout) ? createdAt.getTime() + timeout : Infinity
  const at = Math.min(byTimeout, deadline?.getTime() ?? Infinity)
  return Number.isFinite(at) ? new Date(at) : undefined
}

/**
 * Fails the pending tasks that have expired by the sender's clock and emits a `failed` event for
 * each; returns how many. A store without `expirePending` has nothing to sweep.
 */
export async function expirePendingTasks(sender: ResolvedSender): Promise<number> {
  const { store } = sender
  if (typeof store.expirePending !== 'function') return 0
  let total = 0
  for (;;) {
    const expired = await store.expirePending({ now: sender.now(), limit: EXPIRE_BATCH, reason: PENDING_EXPIRED_REASON })
    total += expired.length
    if (sender.listening) {
      for (const task of expired) sender.emit({ type: 'failed', task: withoutSecret(task), reason: task.lastError ?? PENDING_EXPIRED_REASON })
    }
    if (expired.length < EXPIRE_BATCH) return total
  }
}

/** Events end up in logs: a task's own secret stays out of them. */
export function withoutSecret(task: CallbackTask): CallbackTask {
  if (task.secret === undefined) return task
  const { secret: _secret, ...rest } = task
  return rest
}
