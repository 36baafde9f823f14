/**
 * What the stores' `insertMany` share: a batch with an idempotency key given twice is stored once
 * (the first item), and the tasks a store created are answered as they were given, without reading
 * them back.
 */
import type { CallbackTask, NewCallbackTask } from '../types.ts'

/** A batch without its repeated keys, and where each item's answer comes from. */
export interface DedupedBatch {
  /** The tasks to store: the batch less the items whose key an earlier item already has. */
  unique: NewCallbackTask[]
  /** For each item of the batch, the index in `unique` of the task that answers it. */
  source: number[]
  /** Whether the item repeats an earlier item's key (it answers that task, never `created`). */
  repeated: boolean[]
}

/** Splits off the items whose idempotency key an earlier item of the batch has. */
export function dedupeBatch(tasks: readonly NewCallbackTask[]): DedupedBatch {
  const unique: NewCallbackTask[] = []
  const source: number[] = new Array(tasks.length)
  const repeated: boolean[] = new Array(tasks.length)
  let firstOfKey: Map<string, number> | undefined
  for (let index = 0; index < tasks.length; index++) {
    const task = tasks[index]!
    const key = task.idempotencyKey
    if (key !== undefined) {
      firstOfKey ??= new Map()
      const first = firstOfKey.get(key)
      if (first !== undefined) {
        source[index] = first
        repeated[index] = true
        continue
      }
      firstOfKey.set(key, unique.length)
    }
    source[index] = unique.length
    repeated[index] = false
    unique.push(task)
  }
  return { unique, source, repeated }
}

/**
 * The answers for the whole batch from the answers for its unique tasks: a repeated item gets its
 * own copy of the first's task, with `created: false`.
 */
export function answerBatch(
  batch: DedupedBatch,
  answers: ReadonlyArray<{ task: CallbackTask; created: boolean }>
): Array<{ task: CallbackTask; created: boolean }> {
  if (batch.unique.length === batch.source.length) return answers as Array<{ task: CallbackTask; created: boolean }>
  return batch.source.map((from, index) =>
    batch.repeated[index] ? { task: structuredClone(answers[from]!.task), created: false } : answers[from]!
  )
}

/**
 * The task as `insert` stores it, built from what was given rather than read back: `pending`, or
 * `scheduled` with a body (due at `nextAttemptAt`, else at creation); no attempts. Every object in
 * it is the caller's own copy, as a store hands out.
 */
export function insertedTask(task: NewCallbackTask): CallbackTask {
  const withBody = task.body !== undefined
  const created: CallbackTask = {
    id: task.id,
    status: withBody ? 'scheduled' : 'pending',
    callbackUrl: task.callbackUrl,
    event: task.event,
    attempts: 0,
    createdAt: new Date(task.createdAt.getTime()),
    updatedAt: new Date(task.createdAt.getTime())
  }
  if (task.idempotencyKey !== undefined) created.idempotencyKey = task.idempotencyKey
  if (task.secret !== undefined) created.secret = typeof task.secret === 'string' ? task.secret : [...task.secret]
  if (task.metadata !== undefined) created.metadata = JSON.parse(JSON.stringify(task.metadata)) as Record<string, unknown>
  if (task.encryptionKey !== undefined) {
    created.encryptionKey = typeof task.encryptionKey === 'string' ? task.encryptionKey : JSON.parse(JSON.stringify(task.encryptionKey))
  }
  if (task.verifyIntent === true) created.verifyIntent = true
  if (withBody) {
    created.body = task.body!
    if (task.contentType !== undefined) created.contentType = task.contentType
    created.nextAttemptAt = new Date((task.nextAttemptAt ?? task.createdAt).getTime())
  } else if (task.nextAttemptAt !== undefined) {
    created.nextAttemptAt = new Date(task.nextAttemptAt.getTime())
  }
  if (task.deadline !== undefined) created.deadline = new Date(task.deadline.getTime())
  if (task.destination !== undefined) created.destination = task.destination
  return created
}

/** The earliest due instant (ms) of the tasks with a body, or `undefined` when none has one. */
export function earliestDue(tasks: Iterable<NewCallbackTask>): number | undefined {
  let earliest: number | undefined
  for (const task of tasks) {
    if (task.body === undefined) continue
    const due = (task.nextAttemptAt ?? task.createdAt).getTime()
    if (earliest === undefined || due < earliest) earliest = due
  }
  return earliest
}
