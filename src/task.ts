/**
 * Recording a callback task: the moment a service accepts a job and promises to call back.
 */
import { randomFillSync } from 'node:crypto'
import { TaskError, UrlPolicyError } from './errors.ts'
import { resolveSender } from './sender.ts'
import { checkEncryptionKey } from './signing/jwe.ts'
import { createSigner } from './signing/standard-webhooks.ts'
import { checkCallbackUrl } from './transports/url-policy.ts'
import type { CallbackTask, NewCallbackTask, SenderOptions } from './types.ts'
import type { JWK } from 'jose'

/** What a service knows when it accepts a job. */
export interface CallbackTaskInput {
  /** Where to deliver the result; checked against the sender's URL policy before anything is stored. */
  callbackUrl: string
  /** The event name, sent as the body's `type` (e.g. `report.ready`). */
  event: string
  /** The same key returns the same task, never a second one (e.g. the client's request id). */
  idempotencyKey?: string | undefined
  /** The client's own `whsec_…` secret(s); overrides the sender's for this task (WebSub style). */
  secret?: string | string[] | undefined
  /**
   * The receiver's public encryption key: a public JWK (EC P-256/384/521 or X25519, `alg`
   * `ECDH-ES` if any) or the https URL of its JWKS (its first `use: "enc"` key is taken, fetched
   * through the sender's URL policy). The body is then sent as a JWE (ECDH-ES + A256GCM,
   * `content-type: application/jose`), signed over the encrypted bytes.
   */
  encryptionKey?: JWK | string | undefined
  /**
   * Prove the callback URL wants these callbacks (a signed challenge it must echo) before each
   * attempt sends the payload. Also on for every task when the sender sets `verifyIntent`.
   */
  verifyIntent?: boolean | undefined
  /** Your own data about the task, stored and returned as given (JSON-serialisable). */
  metadata?: Record<string, unknown> | undefined
  /** Fail instead of delivering after this instant. Default: creation + `retry.deadlineMs`, if set. */
  deadline?: Date | undefined
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
  const { callbackUrl, event, idempotencyKey, secret, encryptionKey, verifyIntent, metadata, deadline } = input

  if (typeof callbackUrl !== 'string' || callbackUrl === '') throw new TypeError('callbackUrl must be a non-empty string')
  const href = sender.checkedUrl(callbackUrl)
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
  const taskEncryptionKey = encryptionKey === undefined ? undefined : checkTaskEncryptionKey(encryptionKey, sender.urlPolicy)
  if (verifyIntent !== undefined && typeof verifyIntent !== 'boolean') throw new TypeError('verifyIntent must be a boolean')
  const { transportTimeoutMs } = sender
  if (verifyIntent === true && transportTimeoutMs !== undefined && sender.leaseMs <= 2 * transportTimeoutMs) {
    // The challenge and the callback are two exchanges inside one lease.
    throw new TypeError(`verifyIntent needs leaseMs (${sender.leaseMs}) above twice the transport timeout (${transportTimeoutMs} ms)`)
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

  const task: NewCallbackTask = { id: createTaskId(createdAt), callbackUrl: href, event, createdAt }
  if (idempotencyKey !== undefined) task.idempotencyKey = idempotencyKey
  if (secret !== undefined) task.secret = typeof secret === 'string' ? secret : [...secret]
  if (taskEncryptionKey !== undefined) task.encryptionKey = taskEncryptionKey
  if (verifyIntent === true) task.verifyIntent = true
  if (metadata !== undefined) task.metadata = metadata
  if (taskDeadline !== undefined) task.deadline = taskDeadline
  task.destination = sender.destinationOf(task)

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

/**
 * A public encryption JWK (copied, so later changes to the caller's object do not reach the store)
 * or a JWKS URL that the URL policy accepts now, as it will be checked again when it is fetched.
 */
function checkTaskEncryptionKey(key: unknown, policy: Parameters<typeof checkCallbackUrl>[1]): JWK | string {
  checkEncryptionKey(key, { allowHttp: policy.allowHttp })
  if (typeof key === 'string') {
    try {
      return checkCallbackUrl(key, policy).href
    } catch (error) {
      if (!(error instanceof UrlPolicyError)) throw error
      throw new UrlPolicyError(error.code, `encryptionKey is refused by the URL policy (${error.message})`, { cause: error })
    }
  }
  // The sender encrypts with ECDH-ES + A256GCM only: a key bound to another algorithm could never be used.
  if (key.alg !== undefined && key.alg !== 'ECDH-ES') throw new TypeError('encryptionKey.alg must be "ECDH-ES" when given')
  let copy: JWK
  try {
    copy = JSON.parse(JSON.stringify(key)) as JWK
  } catch (error) {
    throw new TypeError('encryptionKey must be a JSON-serialisable JWK', { cause: error })
  }
  return copy
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
