/**
 * Callback URL intent verification, WebSub style: before a task's first delivery the sender POSTs
 * a signed challenge to the callback URL, and only an endpoint that verifies the signature and
 * echoes the challenge is sent the payload. It proves that the endpoint wants callbacks from this
 * sender — not that it wants this task's: with one secret shared by all of a service's clients,
 * every client's receiver verifies every challenge. So the sender may name who asked for the task
 * (`subscriber`, from the sender's `intentSubscriber`), inside the signed body, and a receiver with
 * `acceptIntent` refuses challenges meant for somebody else. Per-client secrets need none of this:
 * a challenge signed with another client's secret does not verify.
 *
 * Wire format of the challenge request:
 *
 * ```http
 * POST <callback URL>
 * content-type: application/json
 * webhook-intent: <challenge: 43 base64url characters, fresh every time>
 * webhook-id: intent_<random>        (never the task id: a replay guard must not remember it)
 * webhook-timestamp / webhook-signature: as for any callback, over the body below
 *
 * {"type":"webhook.intent","timestamp":"<ISO-8601>","data":{"challenge":"<challenge>","subscriber":"<who asked, if named>"}}
 * ```
 *
 * The endpoint answers 2xx with the challenge as the whole body (`text/plain`).
 */
import { randomBytes } from 'node:crypto'
import { CallbackError, DeliveryError } from './errors.ts'
import type { HeadersLike, Transport } from './types.ts'
import { VERSION } from './version.ts'

/** The request header that carries the challenge. */
export const INTENT_HEADER = 'webhook-intent'

/** The event name of the challenge body. */
export const INTENT_EVENT = 'webhook.intent'

/** What is signed for the challenge request (the shape of `signPayload`'s first argument). */
export interface IntentMessage {
  id: string
  timestamp: Date
  body: string
}

/** Options of {@link verifyIntent}. */
export interface VerifyIntentOptions {
  /** How the challenge is sent: the sender's transport (with its URL policy). */
  transport: Transport
  /**
   * Signature headers for the challenge, e.g. `(message) => signPayload(message, sender)`.
   * endpoint-callback receivers answer only challenges that verify, so leave it out only for
   * endpoints that do not check signatures.
   */
  sign?: ((message: IntentMessage) => Record<string, string>) | undefined
  /** Bound on the whole exchange, ms. Default 10 000. */
  timeoutMs?: number | undefined
  /** The clock. Default `() => new Date()`. */
  now?: (() => Date) | undefined
  /** Aborts the exchange (a worker stopping); the rejection is the signal's reason. */
  signal?: AbortSignal | undefined
  /**
   * Who asked for the callbacks (e.g. the client's account id), sent as `data.subscriber` in the
   * signed challenge, so a receiver can refuse a challenge meant for somebody else (`acceptIntent`).
   */
  subscriber?: string | undefined
}

/** What a receiver's `acceptIntent` is shown of a verified intent challenge. */
export interface IntentClaim {
  /** Who the sender says asked for the callbacks (`data.subscriber`), or `undefined` when it names nobody. */
  subscriber: string | undefined
  /** The challenge request's `webhook-id` (`intent_…`, never a task id). */
  id: string
  /** When the sender signed the challenge. */
  timestamp: Date
}

const MAX_SUBSCRIBER_LENGTH = 500

/** What a receiver sends back to an intent challenge. */
export interface IntentAnswer {
  status: number
  headers: Record<string, string>
  body: string
}

const CHALLENGE = /^[A-Za-z0-9_-]{16,128}$/

/**
 * Proves that a callback URL wants callbacks from this sender before anything else is sent to
 * it: POSTs a signed challenge and resolves when the endpoint answers 2xx with exactly that
 * challenge. Rejects with a `CallbackError` coded `ERR_CALLBACK_INTENT_NOT_VERIFIED` when it
 * answers anything else (never send this URL the payload); rejects with the transport's own
 * `UrlPolicyError` (refused URL) or `DeliveryError` (no answer: retry later, `ERR_CALLBACK_TIMEOUT`
 * when `timeoutMs` ran out).
 *
 * @example
 * ```ts
 * await verifyIntent(task.callbackUrl, {
 *   transport,
 *   sign: (message) => signPayload(message, { secret }),
 * })
 * ```
 */
export async function verifyIntent(url: string, options: VerifyIntentOptions): Promise<void> {
  if (typeof url !== 'string' || url === '') throw new TypeError('url must be a non-empty string')
  if (options === null || typeof options !== 'object') throw new TypeError('options must be an object')
  const { transport, sign, now = () => new Date(), signal, subscriber } = options
  let { timeoutMs } = options
  timeoutMs ??= 10_000
  if (typeof transport?.send !== 'function') throw new TypeError('transport must be a Transport (with send)')
  if (sign !== undefined && typeof sign !== 'function') throw new TypeError('sign must be a function')
  if (typeof now !== 'function') throw new TypeError('now must be a function returning a Date')
  if (!Number.isInteger(timeoutMs) || timeoutMs <= 0) throw new TypeError('timeoutMs must be a positive integer')
  if (signal !== undefined && !(signal instanceof AbortSignal)) throw new TypeError('signal must be an AbortSignal')
  if (subscriber !== undefined && (typeof subscriber !== 'string' || subscriber === '' || subscriber.length > MAX_SUBSCRIBER_LENGTH)) {
    throw new TypeError(`subscriber must be a non-empty string of at most ${MAX_SUBSCRIBER_LENGTH} characters`)
  }
  signal?.throwIfAborted()

  const challenge = randomBytes(32).toString('base64url')
  const timestamp = now()
  const id = `intent_${randomBytes(12).toString('base64url')}`
  const data = subscriber === undefined ? { challenge } : { challenge, subscriber }
  const body = JSON.stringify({ type: INTENT_EVENT, timestamp: timestamp.toISOString(), data })
  const headers: Record<string, string> = {
    'content-type': 'application/json',
    'user-agent': `endpoint-callback/${VERSION}`,
    ...sign?.({ id, timestamp, body }),
    [INTENT_HEADER]: challenge
  }

  const host = hostOf(url)
  const controller = new AbortController()
  const timedOut = new DeliveryError('ERR_CALLBACK_TIMEOUT', `intent verification of ${host} timed out after ${timeoutMs} ms`)
  let timer: NodeJS.Timeout | undefined
  let onAbort: (() => void) | undefined
  // The race keeps the bound even for a transport that ignores its signal.
  const deadline = new Promise<never>((_, reject) => {
    const stop = (reason: unknown) => {
      controller.abort(reason)
      reject(reason)
    }
    timer = setTimeout(() => stop(timedOut), timeoutMs)
    onAbort = () => stop(signal?.reason)
    signal?.addEventListener('abort', onAbort, { once: true })
  })
  let response
  try {
    response = await Promise.race([transport.send({ url, headers, body, signal: controller.signal }), deadline])
  } catch (error) {
    if (error instanceof CallbackError || (signal?.aborted === true && error === signal.reason)) throw error
    throw new CallbackError('ERR_CALLBACK_INTENT_NOT_VERIFIED', `intent verification of ${host} failed`, { cause: error })
  } finally {
    clearTimeout(timer)
    if (onAbort !== undefined) signal?.removeEventListener('abort', onAbort)
  }
  if (response.status < 200 || response.status > 299) {
    throw new CallbackError(
      'ERR_CALLBACK_INTENT_NOT_VERIFIED',
      `${host} did not confirm it wants these callbacks: it answered the challenge with ${response.status}`
    )
  }
  if (response.body.trim() !== challenge) {
    throw new CallbackError(
      'ERR_CALLBACK_INTENT_NOT_VERIFIED',
      `${host} did not confirm it wants these callbacks: it answered without echoing the challenge`
    )
  }
}

function hostOf(url: string): string {
  try {
    return new URL(url).host
  } catch {
    return 'the callback URL'
  }
}

function header(headers: HeadersLike, name: string): string | undefined {
  if (typeof headers.get === 'function') return (headers as { get(name: string): string | null }).get(name) ?? undefined
  const record = headers as Record<string, string | string[] | undefined>
  let value = record[name]
  if (value === undefined) {
    const key = Object.keys(record).find((candidate) => candidate.toLowerCase() === name)
    if (key !== undefined) value = record[key]
  }
  return Array.isArray(value) ? value[0] : value
}

/**
 * What a verified intent challenge claims: its `data.subscriber` (a string, or `undefined` when it
 * names nobody or is not shaped as a challenge body), id and time. For receivers' `acceptIntent`.
 */
export function intentClaim(callback: { id: string; timestamp: Date; data?: unknown }): IntentClaim {
  const data = callback.data
  const subscriber =
    data !== null && typeof data === 'object' && typeof (data as { subscriber?: unknown }).subscriber === 'string'
      ? (data as { subscriber: string }).subscriber
      : undefined
  return { subscriber, id: callback.id, timestamp: callback.timestamp }
}

/**
 * The answer to an intent challenge, or `undefined` when the request is not one (carry on with
 * the callback as usual). Pure: receivers call it right after the signature verified and before
 * the replay guard and the user's handler, and send what it returns. Answering only verified
 * challenges is what makes the echo mean "I want callbacks from this sender".
 *
 * @example
 * ```ts
 * const callback = await verifySignature({ headers: req.headers, body: rawBody }, { secret })
 * const answer = answerIntentChallenge({ method: req.method, headers: req.headers })
 * if (answer) return res.status(answer.status).set(answer.headers).send(answer.body)
 * ```
 */
export function answerIntentChallenge(request: { method?: string | undefined; headers: HeadersLike }): IntentAnswer | undefined {
  if (request?.method?.toUpperCase() !== 'POST') return undefined
  const challenge = header(request.headers, INTENT_HEADER)
  if (challenge === undefined) return undefined
  if (!CHALLENGE.test(challenge)) {
    // Echoing arbitrary text would turn the receiver into a reflector.
    return {
      status: 400,
      headers: { 'content-type': 'application/problem+json', 'cache-control': 'no-store' },
      body: JSON.stringify({ title: 'Malformed intent challenge', status: 400, code: 'ERR_CALLBACK_INTENT_NOT_VERIFIED' })
    }
  }
  return {
    status: 200,
    headers: { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' },
    body: challenge
  }
}
