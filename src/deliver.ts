/**
 * Delivering a callback: `deliver` attaches the result and makes the first attempt at once; the
 * worker makes the later ones. Both run {@link runAttempt}, so an attempt is signed, sent,
 * classified and recorded the same way wherever it happens.
 */
import pRetry from 'p-retry'
import { CallbackError, DeliveryError, TaskError } from './errors.ts'
import { classifyError, classifyResponse } from './outcome.ts'
import type { AttemptVerdict } from './outcome.ts'
import { scheduleNextAttempt } from './retry.ts'
import { resolveSender } from './sender.ts'
import type { ResolvedSender } from './sender.ts'
import type {
  AttemptRecord,
  AttemptResolution,
  CallbackTask,
  DeliveryReport,
  Lease,
  SenderOptions,
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
 * Resolves with what happened: `delivered`, `retrying` (the next attempt is stored as due at
 * `nextAttemptAt`; a worker picks it up), `failed` or `cancelled` (410 Gone). A receiver's failure
 * never rejects; an unknown task (`ERR_CALLBACK_TASK_NOT_FOUND`), a task that already has its result
 * (`ERR_CALLBACK_TASK_STATE`), a payload that is not JSON-serialisable
 * (`ERR_CALLBACK_PAYLOAD_INVALID`) or bad options do, before anything is stored.
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
  if (typeof event !== 'string') {
    const task = await sender.store.get(id)
    if (task === undefined) throw new TaskError('ERR_CALLBACK_TASK_NOT_FOUND', `task ${id} does not exist`)
    event = task.event
  }
  const body = buildBody(event, payload, sender.now())
  const lease = await sender.store.attach(id, { body }, { now: sender.now(), leaseMs: sender.leaseMs })
  if (lease === undefined) {
    const current = await sender.store.get(id)
    if (current === undefined) throw new TaskError('ERR_CALLBACK_TASK_NOT_FOUND', `task ${id} does not exist`)
    throw new TaskError('ERR_CALLBACK_TASK_STATE', `task ${id} is ${current.status}, not pending: its result is already attached`)
  }

  const result = await runAttempt(lease, sender)
  const report: DeliveryReport = { status: reportStatus(result), attempts: result.record.attempt }
  if (result.resolution.status === 'scheduled' && result.completed) report.nextAttemptAt = result.resolution.nextAttemptAt
  if (result.response !== undefined) {
    const { status, body: responseBody, durationMs } = result.response
    report.response = { status, body: responseBody, durationMs }
  }
  if (result.resolution.lastError !== undefined) report.error = result.resolution.lastError
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
 */
export async function runAttempt(lease: Lease, sender: ResolvedSender, signal?: AbortSignal): Promise<AttemptResult> {
  const { task } = lease
  const attempt = task.attempts + 1
  const startedAt = sender.now()
  const clockStart = performance.now()
  let verdict: AttemptVerdict
  let response: TransportResponse | undefined
  let failure: unknown
  const probe = sender.instrumentation === undefined ? undefined : sender.instrumentation.startAttempt(task, attempt)

  if (task.deadline !== undefined && startedAt.getTime() > task.deadline.getTime()) {
    verdict = { outcome: 'failed', reason: `ERR_CALLBACK_DEADLINE_EXCEEDED: the deadline ${task.deadline.toISOString()} has passed` }
  } else if (task.body === undefined) {
    verdict = { outcome: 'failed', reason: 'ERR_CALLBACK_TASK_STATE: the task has no body to send' }
  } else {
    try {
      const signed = sender.signerFor(task)({ id: task.id, timestamp: startedAt, body: task.body })
      const headers: Record<string, string> = {
        'webhook-id': signed['webhook-id'],
        'webhook-timestamp': signed['webhook-timestamp'],
        'webhook-signature': signed['webhook-signature'],
        'content-type': task.contentType ?? CONTENT_TYPE_JSON,
      }
      if (probe !== undefined && probe.headers !== undefined) addHeaders(headers, probe.headers)
      const request: TransportRequest = { url: task.callbackUrl, headers, body: task.body }
      if (signal !== undefined) request.signal = signal
      response = await sendWithQuickRetries(sender, request)
      verdict = classifyResponse(response, sender.retry, sender.now())
    } catch (error) {
      failure = error
      verdict = classifyError(error)
    }
  }

  const record: AttemptRecord = {
    attempt,
    startedAt,
    durationMs: Math.round(performance.now() - clockStart),
    outcome: verdict.outcome,
  }
  if (response !== undefined) {
    record.status = response.status
    if (response.body !== '') record.responseBody = response.body.slice(0, RECORDED_RESPONSE_CHARS)
  } else if (verdict.reason !== undefined) {
    record.error = verdict.reason
  }

  const resolution = resolve(task, record, verdict, sender)
  if (probe !== undefined) probe.end(record, failure)
  const completed = await sender.store.complete(lease, record, resolution)
  const result: AttemptResult = { record, resolution, completed }
  if (response !== undefined) result.response = response
  if (sender.listening) announce(taskAfter(task, result, sender), result, sender)
  return result
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
  if (resolution.status === 'scheduled') after.nextAttemptAt = resolution.nextAttemptAt
  if (task.deadline !== undefined) after.deadline = task.deadline
  const lastError = resolution.lastError ?? task.lastError
  if (lastError !== undefined) after.lastError = lastError
  return after
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
 * second save a durable retry minutes later. The window stays inside the lease, so the last try
 * cannot outlive it. Everything else (timeouts, DNS, TLS, any response) goes to the durable schedule.
 */
async function sendWithQuickRetries(sender: ResolvedSender, request: TransportRequest): Promise<TransportResponse> {
  const { transport } = sender
  try {
    // Most sends succeed: they go straight to the transport, without p-retry's bookkeeping.
    return await transport.send(request)
  } catch (error) {
    const window = Math.min(QUICK_RETRY_WINDOW_MS, sender.leaseMs - (sender.transportTimeoutMs ?? 0) - QUICK_RETRY_WINDOW_MS)
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
