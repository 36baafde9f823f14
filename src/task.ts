/**
 * Recording a callback task: the moment a service accepts a job and promises to call back.
 */
import { createHash, randomFillSync, timingSafeEqual } from 'node:crypto'
import { StoreError, TaskError, UrlPolicyError } from './errors.ts'
import { attachableBody } from './deliver.ts'
import { pendingExpiry, withoutSecret } from './pending-expiry.ts'
import { resolveSender } from './sender.ts'
import type { ResolvedSender } from './sender.ts'
import { checkEncryptionKey } from './signing/jwe.ts'
import { createSigner } from './signing/standard-webhooks.ts'
import { checkCallbackUrl } from './transports/url-policy.ts'
import type { CallbackTask, NewCallbackTask, SenderOptions } from './types.ts'
import { checkOptionNames } from './option-names.ts'
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
  /**
   * Fail instead of delivering after this instant. Default: creation + `retry.deadlineMs`, if set.
   * It also ends a `pending` task that is still waiting for its result then.
   */
  deadline?: Date | undefined
  /**
   * The result, when it is known already (outbox): the task is stored with its body, `scheduled`
   * and due at once, and a worker sends it — with `transaction`, only after your commit. Without
   * it the task waits `pending` for `deliver`. `null` is a result too (`data: null`).
   */
  payload?: unknown
}

/**
 * What {@link createCallbackTask} returns: the task as stored, without its own `secret` (so it can
 * go into a response or a log as it is), and whether this call created it.
 */
export type CreatedCallbackTask = CallbackTask & {
  /**
   * `true` when this call stored the task; `false` when its `idempotencyKey` named a task stored
   * before (a replayed request): then skip the work already done, or call `deliver` again, which
   * answers with that task's current report rather than sending twice.
   */
  created: boolean
}

const MAX_EVENT_LENGTH = 200
const MAX_IDEMPOTENCY_KEY_LENGTH = 255

/**
 * Validates the callback URL with the URL policy, stores a `pending` task and returns it with
 * `created: true`. With an `idempotencyKey` that is already stored, returns the stored task with
 * `created: false` instead of a new one (also when two calls race); a different `callbackUrl`,
 * `event`, `secret` or `encryptionKey` under the same key is an `ERR_CALLBACK_IDEMPOTENCY_CONFLICT`
 * (the message names the field, never its value), as Stripe answers a key reused with other
 * parameters. Bad input is a `TypeError` naming the field, or a `UrlPolicyError` for a refused URL;
 * either way nothing is stored. A task that neither its own `secret` nor the sender could sign is
 * refused the same way. The task returned never holds its `secret`.
 *
 * A `pending` task waits for `deliver` at most `pendingTimeoutMs` (24 h by default; its `deadline`
 * if sooner), then fails with `ERR_CALLBACK_PENDING_EXPIRED`.
 *
 * Outbox: pass `payload` to store the task with its result, due at once, and `transaction` in the
 * options to insert inside your own database transaction: the task commits or rolls back with your
 * write, and a worker sends it after the commit (on PostgreSQL, woken by `NOTIFY`). Nothing is ever
 * sent for a rolled-back task.
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
export async function createCallbackTask(input: CallbackTaskInput, options: SenderOptions): Promise<CreatedCallbackTask> {
  const sender = resolveSender(options)
  const prepared = prepareTask(input, sender, sender.now(), 'createCallbackTask input')
  const task = prepared instanceof Promise ? await prepared : prepared
  const { transaction } = options
  const { task: stored, created } =
    transaction === undefined ? await sender.store.insert(task) : await sender.store.insert(task, { transaction })
  return answered(stored, created, task)
}

/** One item of what {@link createCallbackTasks} resolves with, at the index of its input. */
export type CallbackTaskResult =
  /** The item is stored: the task, with `created: false` when its idempotency key named a task already stored. */
  | { ok: true; task: CreatedCallbackTask }
  /**
   * The item is not stored: a `TypeError` or `UrlPolicyError` for bad input (as
   * {@link createCallbackTask} would throw), a `CallbackError` coded `ERR_CALLBACK_PAYLOAD_INVALID`
   * for a payload that is not JSON, or a `TaskError` coded `ERR_CALLBACK_IDEMPOTENCY_CONFLICT`.
   */
  | { ok: false; error: Error }

/** The most items one {@link createCallbackTasks} call takes. */
const MAX_TASKS_PER_CALL = 10_000

/**
 * Records many callback tasks at once, in one round trip to the store: each item is what
 * {@link createCallbackTask} takes, checked the same way (URL policy, fields, idempotency), and
 * answered at its own index. An item that is refused does not stop the others: its entry is
 * `{ ok: false, error }` and it is not stored. An `idempotencyKey` stored before answers that task
 * with `created: false`, as does the second of two items of one call with the same key (it answers
 * the first's task; a different `callbackUrl`, `event`, `secret` or `encryptionKey` is an
 * `ERR_CALLBACK_IDEMPOTENCY_CONFLICT` entry).
 *
 * At most 10,000 items per call; more, or `inputs` that is not an array, is a `TypeError` before
 * anything is stored. An empty array answers `[]` without calling the store.
 *
 * With `transaction` in the options (PostgreSQL), the tasks are inserted inside your transaction
 * and commit or roll back with it; the memory and Redis stores refuse it with a `TypeError`.
 *
 * When the store fails (it is unreachable, a query times out), the call rejects with its
 * `StoreError` and no entry is answered. What was stored then: on PostgreSQL nothing (the batch is
 * one statement); on Redis nothing if the script did not run, all of it if it did (one script,
 * which Redis runs whole); with a store of your own that has no `insertMany`, the items before the
 * failing one (they are inserted one at a time). Retrying the call with the same idempotency keys
 * is safe: what was stored answers `created: false`.
 *
 * @example
 * ```ts
 * import { createCallbackTasks, createMemoryStore } from 'endpoint-callback'
 *
 * const sender = { store: createMemoryStore(), secret: process.env.CALLBACK_SECRET }
 * const results = await createCallbackTasks(
 *   [
 *     { callbackUrl: 'https://a.example/hooks', event: 'report.ready', idempotencyKey: 'job-1', payload: { reportId: 1 } },
 *     { callbackUrl: 'https://b.example/hooks', event: 'report.ready', idempotencyKey: 'job-2', payload: { reportId: 2 } }
 *   ],
 *   sender
 * )
 * for (const result of results) {
 *   if (result.ok) console.log(result.task.id, result.task.created ? 'created' : 'seen before')
 *   else console.error(result.error.message)
 * }
 * ```
 */
export async function createCallbackTasks(inputs: readonly CallbackTaskInput[], options: SenderOptions): Promise<CallbackTaskResult[]> {
  const sender = resolveSender(options)
  if (!Array.isArray(inputs)) throw new TypeError('createCallbackTasks: inputs must be an array of task inputs')
  if (inputs.length > MAX_TASKS_PER_CALL) {
    throw new TypeError(`createCallbackTasks: at most ${MAX_TASKS_PER_CALL} inputs per call (got ${inputs.length}); split them into several calls`)
  }
  const results: CallbackTaskResult[] = new Array(inputs.length)
  if (inputs.length === 0) return results
  const createdAt = sender.now()
  const prepared: NewCallbackTask[] = []
  const at: number[] = []
  for (let index = 0; index < inputs.length; index++) {
    try {
      prepared.push(await prepareTask(inputs[index], sender, createdAt, `createCallbackTasks input ${index}`))
      at.push(index)
    } catch (error) {
      results[index] = { ok: false, error: asError(error) }
    }
  }
  if (prepared.length > 0) {
    const { store } = sender
    const { transaction } = options
    const storeOptions = transaction === undefined ? undefined : { transaction }
    let stored: Array<{ task: CallbackTask; created: boolean }>
    if (typeof store.insertMany === 'function') {
      stored = await store.insertMany(prepared, storeOptions)
      if (!Array.isArray(stored) || stored.length !== prepared.length) {
        throw new StoreError('ERR_CALLBACK_STORE', `insertMany answered ${Array.isArray(stored) ? stored.length : 'no'} results for ${prepared.length} tasks`)
      }
    } else {
      // A store of an older shape: one insert after another, in order, so a key repeated in the
      // batch finds the first item's task.
      stored = []
      for (const task of prepared) stored.push(storeOptions === undefined ? await store.insert(task) : await store.insert(task, storeOptions))
    }
    for (let item = 0; item < prepared.length; item++) {
      const { task, created } = stored[item]!
      try {
        results[at[item]!] = { ok: true, task: answered(task, created, prepared[item]!) }
      } catch (error) {
        results[at[item]!] = { ok: false, error: asError(error) }
      }
    }
  }
  return results
}

function asError(error: unknown): Error {
  return error instanceof Error ? error : new Error(String(error))
}

/**
 * One input checked and turned into the task a store inserts: the URL policy, every field, the
 * secret and, with a payload, its body. Throws what {@link createCallbackTask} documents; stores nothing.
 */
function prepareTask(input: CallbackTaskInput | undefined, sender: ResolvedSender, createdAt: Date, who: string): NewCallbackTask | Promise<NewCallbackTask> {
  if (input === null || typeof input !== 'object') throw new TypeError(`${who} must be an object`)
  checkOptionNames(input, TASK_INPUT_NAMES, who)
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
  // A lone surrogate has no UTF-8 form: a durable store would keep U+FFFD in its place, and the key
  // or event read back would no longer match the one given.
  if (!isWellFormed(event)) throw new TypeError('event must be well-formed text (it has a lone surrogate)')
  if (idempotencyKey !== undefined && !isWellFormed(idempotencyKey)) throw new TypeError('idempotencyKey must be well-formed text (it has a lone surrogate)')
  if (secret !== undefined) {
    // Decoding it now turns a client's malformed secret into a 400 at intake, not a failed delivery later.
    createSigner({ secret })
  } else if (sender.requireTaskSecret) {
    throw new TypeError('secret is required: the sender sets requireTaskSecret, so every task brings its own secret')
  } else if (!sender.canSign) {
    throw new TypeError('secret: neither the task nor the sender has a secret, signingKey or keyRing')
  }
  const taskEncryptionKey = encryptionKey === undefined ? undefined : checkTaskEncryptionKey(encryptionKey, sender.urlPolicy)
  if (verifyIntent !== undefined && typeof verifyIntent !== 'boolean') throw new TypeError('verifyIntent must be a boolean')
  const { transportTimeoutMs } = sender
  if (verifyIntent === true && transportTimeoutMs !== undefined && sender.leaseMs <= 2 * transportTimeoutMs) {
    // The challenge and the callback are two exchanges inside one lease.
    throw new TypeError(`verifyIntent needs leaseMs (${sender.leaseMs}) above twice the transport timeout (${transportTimeoutMs} ms)`)
  }
  if (metadata !== undefined) checkMetadata(metadata)

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
  if (Object.hasOwn(input, 'payload')) return withBody(task, taskEncryptionKey, input.payload, sender)
  const expiresAt = pendingExpiry(sender, createdAt, taskDeadline)
  if (expiresAt !== undefined) task.nextAttemptAt = expiresAt
  // without a payload nothing is awaited: the task is ready now
  return task
}

/** The task due at once with its payload's body (outbox, bulk create). */
async function withBody(task: NewCallbackTask, encryptionKey: NewCallbackTask['encryptionKey'], payload: unknown, sender: ResolvedSender): Promise<NewCallbackTask> {
  const attached = await attachableBody(task.event, encryptionKey, payload, sender)
  task.body = attached.body
  if (attached.contentType !== undefined) task.contentType = attached.contentType
  task.nextAttemptAt = task.createdAt
  return task
}

/**
 * What the caller gets for a task the store answered: the task without its secret, or an
 * `ERR_CALLBACK_IDEMPOTENCY_CONFLICT` when its key names a task stored with other parameters.
 */
function answered(stored: CallbackTask, created: boolean, given: NewCallbackTask): CreatedCallbackTask {
  if (!created) {
    const differs = idempotencyMismatch(stored, given)
    if (differs !== undefined) {
      throw new TaskError('ERR_CALLBACK_IDEMPOTENCY_CONFLICT', `idempotencyKey is already used by task ${stored.id} with a different ${differs}`)
    }
  }
  const returned = withoutSecret(stored) as CreatedCallbackTask
  returned.created = created
  return returned
}

/** Whether `text` is valid UTF-16 (no lone surrogate): ES2024's `isWellFormed`, in Node since 20.0. */
function isWellFormed(text: string): boolean {
  return (text as string & { isWellFormed(): boolean }).isWellFormed()
}

const TASK_INPUT_NAMES: ReadonlySet<string> = new Set([
  'callbackUrl',
  'event',
  'idempotencyKey',
  'secret',
  'encryptionKey',
  'verifyIntent',
  'metadata',
  'deadline',
  'payload',
])

/**
 * The first field by which a replay differs from the task its idempotency key already names; the
 * name only, never the value (secrets).
 */
function idempotencyMismatch(stored: CallbackTask, given: NewCallbackTask): string | undefined {
  if (stored.callbackUrl !== given.callbackUrl) return 'callbackUrl'
  if (stored.event !== given.event) return 'event'
  if (!sameSecret(stored.secret, given.secret)) return 'secret'
  if (canonical(stored.encryptionKey) !== canonical(given.encryptionKey)) return 'encryptionKey'
  return undefined
}

/** Compared by digest in constant time: how long the comparison takes says nothing of the stored secret. */
function sameSecret(a: CallbackTask['secret'], b: CallbackTask['secret']): boolean {
  const digest = (secret: CallbackTask['secret']) => createHash('sha256').update(canonical(secret)).digest()
  return timingSafeEqual(digest(a), digest(b))
}

/** JSON with object keys sorted, so a key stored and read back compares equal to the one given. */
function canonical(value: unknown): string {
  if (value === undefined) return ''
  return JSON.stringify(value, (_key, inner: unknown) =>
    inner !== null && typeof inner === 'object' && !Array.isArray(inner)
      ? Object.fromEntries(Object.entries(inner as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
      : inner
  )
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
