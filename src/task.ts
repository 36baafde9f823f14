/**
 * Recording a callback task: the moment a service accepts a job and promises to call back.
 */
import { randomFillSync } from 'node:crypto'
import { TaskError } from './errors.ts'
import { resolveSender } from './sender.ts'
import { createSigner } from './signing/standard-webhooks.ts'
import { checkCallbackUrl } from './transports/url-policy.ts'
import type { CallbackTask, NewCallbackTask, SenderOptions } from './types.ts'

/** What a service knows when it accepts a job. */
export interface CallbackTaskInput {
  /** Where to deliver the result; checked against the sender's URL policy before anything is stored. */
  callbackUrl: string
  /** The event name, sent as the body's `type` (e.g. `report.ready`). */
  event: string
  /** The same key returns the same task, never a second one (e.g. the client's request id). */
  idempotencyKey?: string
  /** The client's own `whsec_…` secret(s); overrides the sender's for this task (WebSub style). */
  secret?: string | string[]
  /** Your own data about the task, stored and returned as given (JSON-serialisable). */
  metadata?: Record<string, unknown>
  /** Fail instead of delivering after this instant. Default: creation + `retry.deadlineMs`, if set. */
  deadline?: Date
}

const MAX_EVENT_LENGTH = 200
const MAX_IDEMPOTENCY_KEY_LENGTH = 255

/**
 * Validates the callback URL with the URL policy, stores a `pending` task and returns it. With an
 * `idempotencyKey` that is already stored, returns the stored task instead of a new one (also when
 * two calls race); a different URL or event under the same key is an
 * `ERR_CALLBACK_IDEMPOTENCY_CONFLICT`. Bad input is a `TypeError` naming the field, or a
 * `UrlPolicyError` for a refused URL; either way nothing is stored.
 *
 * Pass `transaction` in the options to insert inside your own database transaction (outbox): the
 * task then commits or rolls back with your write.
 *
 * @example
 * ```ts
 * import { createCallbackTask, createMemoryStore } from 'endpoint-callback'
 *
 * const sender = { store: createMemoryStore(), secret: process.env.CALLBACK_SECRET }
 * app.post('/reports', async (req, res) => {
 *   const task = await createCallbackTask(
 *     { callbackUrl: req.body.callbackUrl, event: 'report.ready', idempotencyKey: req.get('idempotency-key') },
 *     sender
 *   )
 *   res.status(202).json({ id: task.id })
 * })
 * ```
 */
export async function createCallbackTask(input: CallbackTaskInput, options: SenderOptions): Promise<CallbackTask> {
  const sender = resolveSender(options)
  if (input === null || typeof input !== 'object') throw new TypeError('input must be an object')
  const { callbackUrl, event, idempotencyKey, secret, metadata, deadline } = input

  if (typeof callbackUrl !== 'string' || callbackUrl === '') throw new TypeError('callbackUrl must be a non-empty string')
  const url = checkCallbackUrl(callbackUrl, sender.urlPolicy)
  if (typeof event !== 'string' || event === '' || event.length > MAX_EVENT_LENGTH) {
    throw new TypeError(`event must be a non-empty string of at most ${MAX_EVENT_LENGTH} characters`)
  }
  if (
    idempotencyKey !== undefined &&
    (typeof idempotencyKey !== 'string' || idempotencyKey === '' || idempotencyKey.length > MAX_IDEMPOTENCY_KEY_LENGTH)
  ) {
    throw new TypeError(`idempotencyKey must be a non-empty string of at most ${MAX_IDEMPOTENCY_KEY_LENGTH} characters`)
  }
  if (secret !== undefined) {
    // Decoding it now turns a client's malformed secret into a 400 at intake, not a failed delivery later.
    createSigner({ secret })
  } else if (!sender.canSign) {
    throw new TypeError('secret: neither the task nor the sender has a secret or signingKey')
  }
  if (metadata !== undefined) checkMetadata(metadata)

  const createdAt = sender.now()
  let taskDeadline: Date | undefined
  if (deadline !== undefined) {
    if (!(deadline instanceof Date) || Number.isNaN(deadline.getTime())) throw new TypeError('deadline must be a valid Date')
    if (deadline.getTime() <= createdAt.getTime()) throw new TypeError('deadline must be in the future')
    taskDeadline = new Date(deadline.getTime())
  } else if (sender.retry.deadlineMs !== undefined) {
    taskDeadline = new Date(createdAt.getTime() + sender.retry.deadlineMs)
  }

  const task: NewCallbackTask = { id: createTaskId(createdAt), callbackUrl: url.href, event, createdAt }
  if (idempotencyKey !== undefined) task.idempotencyKey = idempotencyKey
  if (secret !== undefined) task.secret = typeof secret === 'string' ? secret : [...secret]
  if (metadata !== undefined) task.metadata = metadata
  if (taskDeadline !== undefined) task.deadline = taskDeadline

  const { transaction } = options
  const { task: stored, created } =
    transaction === undefined ? await sender.store.insert(task) : await sender.store.insert(task, { transaction })
  if (!created && (stored.callbackUrl !== task.callbackUrl || stored.event !== event)) {
    throw new TaskError(
      'ERR_CALLBACK_IDEMPOTENCY_CONFLICT',
      `idempotencyKey is already used by task ${stored.id} with a different callbackUrl or event`
    )
  }
  return stored
}

function checkMetadata(metadata: unknown): void {
  if (metadata === null || typeof metadata !== 'object' || Array.isArray(metadata)) {
    throw new TypeError('metadata must be a plain object')
  }
  try {
    JSON.stringify(metadata)
  } catch (error) {
    throw new TypeError('metadata must be JSON-serialisable', { cause: error })
  }
}

/**
 * `msg_` + 10 characters of creation time + 16 random characters: header-safe, unique, and sorted
 * by creation, which keeps ids of one period together in store indexes and logs.
 */
function createTaskId(createdAt: Date): string {
  const time = Math.max(0, createdAt.getTime()).toString(36).padStart(10, '0')
  if (entropyOffset + ID_RANDOM_BYTES > entropy.length) {
    // One system call for many ids: asking the kernel for 12 bytes per task was a tenth of the
    // cost of recording one.
    randomFillSync(entropy)
    entropyOffset = 0
  }
  const random = entropy.toString('base64url', entropyOffset, entropyOffset + ID_RANDOM_BYTES)
  entropyOffset += ID_RANDOM_BYTES
  return `msg_${time}${random}`
}

const ID_RANDOM_BYTES = 12
const entropy = Buffer.alloc(ID_RANDOM_BYTES * 512)
let entropyOffset = entropy.length
