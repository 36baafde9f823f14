/**
 * Delivering a callback: `deliver` attaches the result and makes the first attempt at once; the
 * worker makes the later ones. Both run {@link runAttempt}, so an attempt is signed, sent,
 * classified and recorded the same way wherever it happens.
 */
import pRetry from 'p-retry'
import { CallbackError, DeliveryError, TaskError, UrlPolicyError } from './errors.ts'
import { verifyIntent } from './intent.ts'
import { inlineOutcomeHandler } from './destinations/policy.ts'
import type { DestinationOptions } from './destinations/policy.ts'
import { classifyError, classifyResponse, describeError } from './outcome.ts'
import { recordableText } from './recorded-text.ts'
import { attemptBudgetMs } from './attempt-budget.ts'
import type { AttemptVerdict } from './outcome.ts'
import { scheduleNextAttempt } from './retry.ts'
import { resolveSender } from './sender.ts'
import { missedDeadline, withinDeadline } from './store-deadline.ts'
import type { ResolvedSender } from './sender.ts'
import { encryptPayload, JOSE_CONTENT_TYPE } from './signing/jwe.ts'
import type { Signer } from './signing/standard-webhooks.ts'
import type {
  AttemptRecord,
  AttemptResolution,
  CallbackTask,
  DeliveryReport,
  Lease,
  SenderOptions,
  Transport,
  TransportRequest,
  TransportResponse,
} from './types.ts'

/** How much of a response body is kept in the attempt record. */
const RECORDED_RESPONSE_CHARS = 1024
/** Quick retries of a refused or reset connection inside one attempt, before the durable schedule. */
const QUICK_RETRIES = 2
const QUICK_RETRY_WINDOW_MS = 1_000
const QUICK_RETRY_FIRST_DELAY_MS = 150
const CONTENT_TYPE_JSON = 'application/json'

/** Called by {@link runAttempt} once an attempt is over, before it is recorded (the worker's destinations). */
export type BeforeRecord = (lease: Lease, record: AttemptRecord, response: TransportResponse | undefined) => Promise<void> | undefined

/** What one attempt did, and whether its record was stored. */
export interface AttemptResult {
  record: AttemptRecord
  resolution: AttemptResolution
  /** `false` when the lease was lost: another worker owns the task and nothing was recorded. */
  completed: boolean
  response?: TransportResponse
}

/**
 * Attaches `payload` to a `pending` task and makes the first delivery attempt right away. The body
 * is the JSON envelope `{ type, timestamp, data }`, built once and sent byte for byte on every
 * attempt, signed each time with a fresh timestamp and the task id as `webhook-id`.
 *
 * When the task's destination is held back (the receiver asked to wait with `Retry-After`, or its
 * circuit breaker is open) and the store keeps destinations, nothing is sent inline: the task is
 * left scheduled, spending no attempt, and it resolves `retrying` with `attempts: 0`, as for the
 * outbox below; a worker sends it once the destination may be tried. The inline attempt's own
 * outcome counts for its destination as a worker's does (a `Retry-After` throttles it, failures
 * count toward its breaker, with the `breaker` option of `options` when it has one).
 *
 * Resolves with what happened: `delivered`, `retrying` (the next attempt is stored as due at
 * `nextAttemptAt`; a worker picks it up), `failed` or `cancelled` (410 Gone). A receiver's failure
 * never rejects; an unknown task (`ERR_CALLBACK_TASK_NOT_FOUND`), a payload that is not
 * JSON-serialisable (`ERR_CALLBACK_PAYLOAD_INVALID`) or bad options do, before anything is stored,
 * and so does a task that ended without a result (`ERR_CALLBACK_TASK_STATE`: a pending task that
 * expired, or was cancelled).
 *
 * Idempotent: called again for a task that already has its result (a replayed request, a retried
 * job), it sends nothing and resolves with the task's current report (`delivered`, `retrying` with
 * `nextAttemptAt`, `failed` or `cancelled`). The payload of the first call stands; a different
 * payload given later is ignored, never sent.
 *
 * Outbox: with `transaction` in the options, the result is attached inside that transaction and the
 * task scheduled, due now; nothing is sent inline. It resolves `retrying` with `attempts: 0`, and a
 * worker sends the task once the transaction commits (nothing, if it rolls back). The store must
 * offer `schedule` (the PostgreSQL store does; memory and Redis refuse a transaction). For a task
 * created in that same transaction, pass the task rather than its id (or give `createCallbackTask`
 * the `payload` directly): its id cannot be looked up outside the transaction before the commit.
 *
 * @example
 * ```ts
 * import { deliver } from 'endpoint-callback'
 *
 * const report = await deliver(task.id, { reportUrl }, sender)
 * if (report.status === 'retrying') console.log(`receiver is down, next try at ${report.nextAttemptAt}`)
 * ```
 */
export async function deliver(
  taskOrId: string | Pick<CallbackTask, 'id'> | CallbackTask,
  payload: unknown,
  options: SenderOptions
): Promise<DeliveryReport> {
  const sender = resolveSender(options)
  const id = typeof taskOrId === 'string' ? taskOrId : taskOrId?.id
  if (typeof id !== 'string' || id === '') throw new TypeError('taskOrId must be a task or a task id')

  // A task's event never changes, so the task returned by createCallbackTask saves a read.
  let event = typeof taskOrId === 'object' ? (taskOrId as Partial<CallbackTask>).event : undefined
  let encryptionKey = typeof taskOrId === 'object' ? (taskOrId as Partial<CallbackTask>).encryptionKey : undefined
  if (typeof event !== 'string') {
    const task = await sender.store.get(id)
    if (task === undefined) throw new TaskError('ERR_CALLBACK_TASK_NOT_FOUND', `task ${id} does not exist`)
    event = task.event
    encryptionKey = task.encryptionKey
  }
  const attached = await attachableBody(event, encryptionKey, payload, sender)
  const { transaction } = options
  if (transaction !== undefined) return scheduleInTransaction(id, attached, transaction, sender)
  // A store that keeps destinations does not lease a task whose destination is held back (a
  // throttle, an open breaker): it leaves it scheduled for a worker, reported as `retrying`.
  const lease = await sender.store.attach(id, attached, { now: sender.now(), leaseMs: sender.leaseMs })
  if (lease === undefined) return currentReport(id, sender)

  // The inline attempt's outcome reaches its destination as a worker's does.
  const result = await runAttempt(lease, sender, undefined, undefined, inlineOutcomeHandler(options as SenderOptions & DestinationOptions, sender))
  const report: DeliveryReport = { status: reportStatus(result), attempts: result.record.attempt }
  if (result.resolution.status === 'scheduled' && result.completed) report.nextAttemptAt = result.resolution.nextAttemptAt
  if (result.response !== undefined) {
    const { status, body: responseBody, durationMs } = result.response
    report.response = { status, body: responseBody, durationMs }
  }
  if (result.resolution.lastError !== undefined) report.error = result.resolution.lastError
  return report
}

/**
 * The body a task's result is stored with. Encrypted once, so the store holds (and every attempt
 * sends) the ciphertext. When that cannot be done now (the receiver's JWKS does not answer), the
 * plaintext is attached and each attempt encrypts it before sending, retrying as for a receiver
 * that is down: the task is never lost, and the payload is never sent unencrypted.
 */
export async function attachableBody(
  event: string,
  encryptionKey: CallbackTask['encryptionKey'],
  payload: unknown,
  sender: ResolvedSender
): Promise<{ body: string; contentType?: string }> {
  const body = buildBody(event, payload, sender.now())
  return encryptionKey === undefined ? { body } : encryptOrDefer(body, encryptionKey, sender)
}

/** Outbox: the result attached and the task made due inside the caller's transaction, sent by a worker after it commits. */
async function scheduleInTransaction(
  id: string,
  attached: { body: string; contentType?: string },
  transaction: unknown,
  sender: ResolvedSender
): Promise<DeliveryReport> {
  const { store } = sender
  if (typeof store.schedule !== 'function') {
    throw new TypeError('transaction: this store cannot attach a result inside a transaction (it has no schedule method); the PostgreSQL store can')
  }
  const now = sender.now()
  const task = await store.schedule(id, attached, { now }, { transaction })
  if (task === undefined) return currentReport(id, sender)
  return { status: 'retrying', attempts: 0, nextAttemptAt: task.nextAttemptAt ?? now }
}

/**
 * The report of a task whose result was attached before: `deliver` called again sends nothing. A
 * task that never had a result (expired or cancelled while pending) is a state error.
 */
async function currentReport(id: string, sender: ResolvedSender): Promise<DeliveryReport> {
  const current = await sender.store.get(id)
  if (current === undefined) throw new TaskError('ERR_CALLBACK_TASK_NOT_FOUND', `task ${id} does not exist`)
  if (current.body === undefined) {
    const why = current.lastError === undefined ? '' : ` (${current.lastError})`
    throw new TaskError('ERR_CALLBACK_TASK_STATE', `task ${id} is ${current.status} and never got its result${why}`)
  }
  const status = current.status === 'scheduled' || current.status === 'delivering' || current.status === 'pending' ? 'retrying' : current.status
  const report: DeliveryReport = { status, attempts: current.attempts }
  if (status === 'retrying' && current.nextAttemptAt !== undefined) report.nextAttemptAt = current.nextAttemptAt
  if (current.lastError !== undefined && status !== 'delivered') report.error = current.lastError
  return report
}

function reportStatus(result: AttemptResult): DeliveryReport['status'] {
  // A lost lease means a worker took the task over: it is still on its way.
  if (!result.completed) return 'retrying'
  const { status } = result.resolution
  return status === 'scheduled' ? 'retrying' : status
}

function buildBody(event: string, payload: unknown, now: Date): string {
  try {
    return JSON.stringify({ type: event, timestamp: now.toISOString(), data: payload ?? null })
  } catch (error) {
    throw new CallbackError('ERR_CALLBACK_PAYLOAD_INVALID', `the payload cannot be serialised as JSON: ${(error as Error).message}`, {
      cause: error,
    })
  }
}

/**
 * One attempt on a leased task: checks the deadline, signs, sends (with quick retries of a refused
 * connection), classifies, schedules what follows and records it through `store.complete`, then
 * emits the events. Never throws for the receiver's failures; rejects only when the store does.
 * `answered` is called once the outcome is known, before the record is written.
 */
export async function runAttempt(
  lease: Lease,
  sender: ResolvedSender,
  signal?: AbortSignal,
  answered?: () => void,
  beforeRecord?: BeforeRecord
): Promise<AttemptResult> {
  const { task } = lease
  const attempt = task.attempts + 1
  const startedAt = sender.now()
  const clockStart = performance.now()
  let verdict: AttemptVerdict
  let response: TransportResponse | undefined
  let failure: unknown
  const probe = sender.instrumentation === undefined ? undefined : sender.instrumentation.startAttempt(task, attempt)

  const expired = task.deadline !== undefined && startedAt.getTime() > task.deadline.getTime()
  const deadline = clockStart + attemptBudgetMs(sender.leaseMs)
  let prepared = expired || task.body === undefined ? undefined : prepareAttempt(task, task.body, sender, signal)
  // Encrypting (a JWKS to fetch) and verifying intent take time of the attempt's budget.
  const waited = prepared instanceof Promise
  if (prepared instanceof Promise) prepared = await prepared

  if (expired) {
    verdict = { outcome: 'failed', reason: `ERR_CALLBACK_DEADLINE_EXCEEDED: the deadline ${task.deadline!.toISOString()} has passed` }
  } else if (prepared === undefined) {
    verdict = { outcome: 'failed', reason: 'ERR_CALLBACK_TASK_STATE: the task has no body to send' }
  } else if ('outcome' in prepared) {
    // Refused before sending anything: nothing to sign with, no way to encrypt, or no intent shown.
    verdict = prepared
  } else if (waited && sender.transportTimeoutMs !== undefined && deadline - performance.now() < sender.transportTimeoutMs) {
    // Sent now, the callback could still be on its way when the lease runs out and another worker
    // sends it too: it waits for the next attempt (the fetched key is cached by then).
    verdict = {
      outcome: 'retry',
      reason: `ERR_CALLBACK_TIMEOUT: encrypting or verifying intent left no room in the lease for the exchange (${sender.transportTimeoutMs} ms)`,
    }
  } else {
    try {
      const signed = prepared.sign({ id: task.id, timestamp: startedAt, body: prepared.body })
      const headers: Record<string, string> = {
        'webhook-id': signed['webhook-id'],
        'webhook-timestamp': signed['webhook-timestamp'],
        'webhook-signature': signed['webhook-signature'],
        'content-type': prepared.contentType,
      }
      if (probe !== undefined && probe.headers !== undefined) addHeaders(headers, probe.headers)
      const request: TransportRequest = { url: task.callbackUrl, headers, body: prepared.body }
      // Every exchange ends inside the attempt's budget: a transport that declares its timeout is
      // only started when it fits, one that does not is aborted at the end of the budget.
      const bound = sender.transportTimeoutMs === undefined ? AbortSignal.timeout(Math.max(1, Math.floor(deadline - performance.now()))) : undefined
      const requestSignal = bound === undefined ? signal : signal === undefined ? bound : AbortSignal.any([signal, bound])
      if (requestSignal !== undefined) request.signal = requestSignal
      response = await sendWithQuickRetries(sender, request, deadline)
      verdict = classifyResponse(response, sender.retry, sender.now())
    } catch (error) {
      failure = error
      verdict = classifyError(error)
    }
  }

  // Reasons may quote what a receiver or a transport said: stored, they must be valid text.
  if (verdict.reason !== undefined) verdict = { ...verdict, reason: recordableText(verdict.reason) }
  let record: AttemptRecord = {
    attempt,
    startedAt,
    durationMs: Math.round(performance.now() - clockStart),
    outcome: verdict.outcome,
  }
  if (response !== undefined) {
    record.status = response.status
    if (response.body !== '') record.responseBody = recordableText(response.body, RECORDED_RESPONSE_CHARS)
  } else if (verdict.reason !== undefined) {
    record.error = verdict.reason
  }

  let resolution = resolve(task, record, verdict, sender)
  if (probe !== undefined) probe.end(record, failure)
  // Before the slot is freed and the record frees the task: a throttle or an open breaker must
  // hold its destination before any worker can claim the destination's next task.
  if (beforeRecord !== undefined) {
    // most outcomes are counted at once, with nothing to wait for
    const counting = beforeRecord(lease, record, response)
    if (counting !== undefined) await counting
  }
  answered?.()
  let completed: boolean
  try {
    completed = await withinDeadline(sender.store.complete(lease, record, resolution), sender.leaseMs, 'complete')
  } catch (error) {
    // The receiver's words are the one part of the record that comes from outside: a store that
    // refuses them must not keep the attempt from counting (else the task is sent again at every
    // lease expiry, outside any schedule). Record it once more without them; when that fails too,
    // the store itself is failing and the error stands. A store that did not answer in time is
    // not asked again: it may still record the first.
    const bare = missedDeadline(error) ? undefined : withoutOutsideText(record, resolution)
    if (bare === undefined) throw error
    sender.emit({ type: 'error', error })
    ;({ record, resolution } = bare)
    completed = await withinDeadline(sender.store.complete(lease, record, resolution), sender.leaseMs, 'complete')
  }
  const result: AttemptResult = { record, resolution, completed }
  if (response !== undefined) result.response = response
  if (sender.listening) announce(taskAfter(task, result, sender), result, sender)
  return result
}

const STORED_TEXT_REFUSED = "ERR_CALLBACK_STORE: the answer's text could not be stored"

/**
 * The record and resolution with every text that came from outside left out (the answer's first
 * characters; an error's message, keeping its code), or `undefined` when there was none to leave out.
 */
function withoutOutsideText(
  record: AttemptRecord,
  resolution: AttemptResolution
): { record: AttemptRecord; resolution: AttemptResolution } | undefined {
  if (record.responseBody === undefined && record.error === undefined && resolution.lastError === undefined) return undefined
  const bare: AttemptRecord = { attempt: record.attempt, startedAt: record.startedAt, durationMs: record.durationMs, outcome: record.outcome }
  if (record.status !== undefined) bare.status = record.status
  bare.error = record.error === undefined ? STORED_TEXT_REFUSED : codeOf(record.error)
  const bareResolution: AttemptResolution = { ...resolution }
  if (resolution.lastError === undefined) delete bareResolution.lastError
  else bareResolution.lastError = codeOf(resolution.lastError)
  return { record: bare, resolution: bareResolution }
}

/** The leading code of a reason (`ERR_CALLBACK_TIMEOUT`, `HTTP 503`), words the library wrote itself. */
function codeOf(reason: string): string {
  return /^[A-Za-z0-9_ ]{1,64}(?=:|$)/.exec(reason)?.[0] ?? 'ERR_CALLBACK_STORE: the reason could not be stored'
}

/** The task as this attempt left it, for events. Built only when someone listens. */
function taskAfter(task: CallbackTask, result: AttemptResult, sender: ResolvedSender): CallbackTask {
  const { resolution } = result
  // Events end up in logs: a client's own secret is left out. Copied field by field, since a
  // spread followed by `delete` would turn every event's task into a slow dictionary object.
  const after: CallbackTask = {
    id: task.id,
    status: resolution.status,
    callbackUrl: task.callbackUrl,
    event: task.event,
    attempts: result.record.attempt,
    createdAt: task.createdAt,
    updatedAt: sender.now(),
  }
  if (task.idempotencyKey !== undefined) after.idempotencyKey = task.idempotencyKey
  if (task.metadata !== undefined) after.metadata = task.metadata
  if (task.body !== undefined) after.body = task.body
  if (task.contentType !== undefined) after.contentType = task.contentType
  if (task.encryptionKey !== undefined) after.encryptionKey = task.encryptionKey
  if (task.verifyIntent !== undefined) after.verifyIntent = task.verifyIntent
  if (resolution.status === 'scheduled') after.nextAttemptAt = resolution.nextAttemptAt
  if (task.deadline !== undefined) after.deadline = task.deadline
  const lastError = resolution.lastError ?? task.lastError
  if (lastError !== undefined) after.lastError = lastError
  return after
}

/** What an attempt signs and sends, once keys, encryption and intent verification allow it. */
interface PreparedAttempt {
  sign: Signer
  body: string
  contentType: string
}

/**
 * Everything before the send that may refuse an attempt: the keys to sign with, the encryption of
 * the body, the callback URL's intent. Returns a verdict instead when the payload must not be sent.
 * Synchronous unless the task asks for encryption or intent verification.
 */
function prepareAttempt(
  task: CallbackTask,
  body: string,
  sender: ResolvedSender,
  signal: AbortSignal | undefined
): PreparedAttempt | AttemptVerdict | Promise<PreparedAttempt | AttemptVerdict> {
  let sign: Signer
  try {
    sign = sender.signerFor(task)
  } catch (error) {
    // A task's own secret that cannot sign never will (no retry helps); a sender's key ring that
    // signs nothing at this instant (a gap in its schedule) may sign again later.
    if (task.secret === undefined) return { outcome: 'retry', reason: describeError(error) }
    return { outcome: 'failed', reason: `ERR_CALLBACK_TASK_STATE: the task's secret cannot sign (${describeError(error)})` }
  }
  const contentType = task.contentType ?? CONTENT_TYPE_JSON
  const encrypt = task.encryptionKey !== undefined && contentType !== JOSE_CONTENT_TYPE
  const intent = sender.verifyIntent || task.verifyIntent === true
  if (!encrypt && !intent) return { sign, body, contentType }
  return guardAttempt(task, { sign, body, contentType }, encrypt, intent, sender, signal)
}

async function guardAttempt(
  task: CallbackTask,
  prepared: PreparedAttempt,
  encrypt: boolean,
  intent: boolean,
  sender: ResolvedSender,
  signal: AbortSignal | undefined
): Promise<PreparedAttempt | AttemptVerdict> {
  if (encrypt) {
    try {
      const encrypted = await encryptPayload(prepared.body, sender.encryptionRecipient(task.encryptionKey!))
      prepared = { sign: prepared.sign, body: encrypted.body, contentType: encrypted.contentType }
    } catch (error) {
      return encryptionVerdict(error)
    }
  }
  if (intent) {
    const refused = await intentVerdict(task, prepared.sign, sender, signal)
    if (refused !== undefined) return refused
  }
  return prepared
}

async function encryptOrDefer(
  body: string,
  key: NonNullable<CallbackTask['encryptionKey']>,
  sender: ResolvedSender
): Promise<{ body: string; contentType?: string }> {
  try {
    return await encryptPayload(body, sender.encryptionRecipient(key))
  } catch {
    return { body }
  }
}

/** The first `UrlPolicyError` in an error's `cause` chain: a JWKS fetch the guarded agent refused. */
function policyRefusal(error: unknown): UrlPolicyError | undefined {
  for (let depth = 0; depth < 8 && error !== null && typeof error === 'object'; depth++) {
    if (error instanceof UrlPolicyError) return error
    error = (error as { cause?: unknown }).cause
  }
  return undefined
}

function encryptionVerdict(error: unknown): AttemptVerdict {
  const refused = policyRefusal(error)
  if (refused !== undefined) {
    return { outcome: 'failed', reason: `${refused.code}: the JWKS URL of the task's encryptionKey is refused: ${refused.message}` }
  }
  // The receiver's JWKS did not answer, or has no usable key yet (mid-rotation): try again later.
  if (error instanceof CallbackError) return { outcome: 'retry', reason: describeError(error) }
  if (error instanceof TypeError) {
    return { outcome: 'failed', reason: `ERR_CALLBACK_TASK_STATE: the task's encryptionKey cannot encrypt (${describeError(error)})` }
  }
  return { outcome: 'retry', reason: describeError(error) }
}

/**
 * Proves the callback URL's intent; `undefined` when it did. A non-2xx answer is classified as an
 * attempt's would be (retried unless listed in `retry.failStatuses`; 410 cancels the task), as is no
 * answer at all; a 2xx that does not echo the challenge is refused for good.
 */
async function intentVerdict(
  task: CallbackTask,
  sign: Signer,
  sender: ResolvedSender,
  signal: AbortSignal | undefined
): Promise<AttemptVerdict | undefined> {
  const { transport } = sender
  let answer: TransportResponse | undefined
  const watched: Transport = { send: async (request) => (answer = await transport.send(request)) }
  try {
    const subscriber = sender.intentSubscriber?.(task)
    await verifyIntent(task.callbackUrl, {
      transport: watched,
      sign: (message) => sign(message),
      ...(subscriber === undefined ? {} : { subscriber }),
      now: sender.now,
      ...(sender.transportTimeoutMs === undefined ? {} : { timeoutMs: Math.max(1, Math.ceil(sender.transportTimeoutMs)) }),
      ...(signal === undefined ? {} : { signal }),
    })
    return undefined
  } catch (error) {
    const reason = describeError(error)
    if (answer !== undefined && error instanceof CallbackError && error.code === 'ERR_CALLBACK_INTENT_NOT_VERIFIED') {
      const verdict = classifyResponse(answer, sender.retry, sender.now())
      if (verdict.outcome === 'retry') {
        return verdict.retryAfterMs === undefined ? { outcome: 'retry', reason } : { outcome: 'retry', reason, retryAfterMs: verdict.retryAfterMs }
      }
      if (verdict.outcome === 'cancelled') return { outcome: 'cancelled', reason }
      return { outcome: 'failed', reason }
    }
    return { ...classifyError(error), reason }
  }
}

/** Turns a verdict into what follows: the schedule and the deadline decide whether a retry happens. */
function resolve(task: CallbackTask, record: AttemptRecord, verdict: AttemptVerdict, sender: ResolvedSender): AttemptResolution {
  const lastError = verdict.reason
  if (verdict.outcome !== 'retry') {
    return lastError === undefined ? { status: verdict.outcome } : { status: verdict.outcome, lastError }
  }
  const now = sender.now()
  const nextAttemptAt = scheduleNextAttempt(sender.retry, { attempts: record.attempt, now, retryAfterMs: verdict.retryAfterMs })
  if (nextAttemptAt === undefined) {
    record.outcome = 'failed'
    return { status: 'failed', lastError: `${lastError} (no attempts left after ${record.attempt})` }
  }
  if (task.deadline !== undefined && nextAttemptAt.getTime() > task.deadline.getTime()) {
    record.outcome = 'failed'
    return {
      status: 'failed',
      lastError: `ERR_CALLBACK_DEADLINE_EXCEEDED: the next attempt would come after the deadline ${task.deadline.toISOString()} (last: ${lastError})`,
    }
  }
  return lastError === undefined ? { status: 'scheduled', nextAttemptAt } : { status: 'scheduled', nextAttemptAt, lastError }
}

function announce(task: CallbackTask, result: AttemptResult, sender: ResolvedSender): void {
  const { record: attempt, resolution } = result
  if (!result.completed) {
    sender.emit({ type: 'lease-lost', task, attempt })
    return
  }
  sender.emit({ type: 'attempt', task, attempt })
  switch (resolution.status) {
    case 'delivered':
      sender.emit({ type: 'delivered', task, attempt })
      break
    case 'scheduled':
      sender.emit({ type: 'retry-scheduled', task, attempt, nextAttemptAt: resolution.nextAttemptAt })
      break
    case 'failed':
      sender.emit({ type: 'failed', task, attempt, reason: resolution.lastError ?? 'failed' })
      break
    case 'cancelled':
      sender.emit({ type: 'cancelled', task, attempt })
      break
  }
}

/** Instrumentation headers (`traceparent`) go alongside the signed ones, never in their place. */
function addHeaders(headers: Record<string, string>, extra: Record<string, string>): void {
  for (const [name, value] of Object.entries(extra)) {
    const key = name.toLowerCase()
    if (!(key in headers)) headers[key] = value
  }
}

function isConnectionFailure(error: unknown): boolean {
  return error instanceof DeliveryError && error.code === 'ERR_CALLBACK_CONNECTION'
}

/**
 * A refused or reset connection is often a receiver restarting: two more tries within about a
 * second save a durable retry minutes later. A try starts only while a whole exchange (the
 * transport's timeout) still fits before `deadline` (performance.now() time), so the last one
 * cannot outlive the lease. Everything else (timeouts, DNS, TLS, any response) goes to the durable
 * schedule.
 */
async function sendWithQuickRetries(sender: ResolvedSender, request: TransportRequest, deadline: number): Promise<TransportResponse> {
  const { transport } = sender
  try {
    // Most sends succeed: they go straight to the transport, without p-retry's bookkeeping.
    return await transport.send(request)
  } catch (error) {
    // p-retry starts no try later than `window` after now.
    const window = Math.min(QUICK_RETRY_WINDOW_MS, deadline - performance.now() - (sender.transportTimeoutMs ?? 0))
    if (!isConnectionFailure(error) || window <= 0) throw error
    // p-retry's first call replays the failure just seen, so its backoff applies from the first retry.
    return pRetry((call) => (call === 1 ? Promise.reject(error) : transport.send(request)), {
      retries: QUICK_RETRIES,
      minTimeout: QUICK_RETRY_FIRST_DELAY_MS,
      factor: 3,
      maxRetryTime: window,
      shouldRetry: ({ error: next }) => isConnectionFailure(next),
      ...(request.signal === undefined ? {} : { signal: request.signal }),
    })
  }
}
