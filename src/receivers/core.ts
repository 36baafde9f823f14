/**
 * The receiving side without a framework: raw bytes and headers in, a verified callback or an HTTP
 * answer out. The Express, Koa and fetch files only map their request and response onto this.
 */
import { KeyObject } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { CallbackError, ReceiverError } from '../errors.ts'
import type { CallbackErrorCode } from '../errors.ts'
import { answerIntentChallenge, intentClaim } from '../intent.ts'
import type { IntentAnswer, IntentClaim } from '../intent.ts'
import { decryptCallback, JOSE_CONTENT_TYPE } from '../signing/jwe.ts'
import type { DecryptionKey, JweAlgorithmOptions } from '../signing/jwe.ts'
import type { BodyLike, HeadersLike, ReplayGuard, VerifiedCallback, VerifyOptions } from '../types.ts'
import { createVerifier } from '../verify.ts'
import { createMemoryReplayGuard } from './replay-guard.ts'

/** Options of every receiver: the verification options plus what the HTTP request around it needs. */
export interface ReceiverOptions extends VerifyOptions {
  /**
   * Largest body accepted, bytes. Default 1 MiB. Checked while reading: past it the receiver stops
   * reading and answers 413; a `content-length` above it is refused before reading at all.
   */
  maxBodyBytes?: number | undefined
  /**
   * When given, only these media types are accepted (`application/json`, or `application/*`);
   * anything else, or no `content-type`, is answered 415 before the body is read.
   */
  contentTypes?: string[] | undefined
  /**
   * Dedupe on `webhook-id`. `true` keeps ids in this process's memory
   * ({@link createMemoryReplayGuard} with its defaults); or pass any {@link ReplayGuard}, such as
   * a Redis-backed one shared by several processes. A duplicate of a delivery that was answered
   * 2xx is acknowledged without reaching the handler; a duplicate of one still being handled gets
   * 409; a delivery whose handler failed is forgotten, so the sender's retry runs it again.
   */
  replayGuard?: boolean | ReplayGuard | undefined
  /**
   * The receiver's private key(s) (a private JWK, `KeyObject` or `CryptoKey`; several while
   * rotating) for callbacks sent encrypted (`content-type: application/jose`). They are decrypted
   * after the signature verified (it covers the encrypted bytes), so `callback.data` and
   * `callback.body` are the plaintext. A body that does not decrypt is answered 400
   * (`ERR_CALLBACK_DECRYPTION_FAILED`). An encrypted callback that arrives while no key is
   * configured is a receiver misconfiguration (`ERR_CALLBACK_DECRYPTION_KEY_MISSING`, 500, passed to
   * the framework's error handling), so the sender keeps retrying until it is fixed.
   */
  decryptionKey?: DecryptionKey | DecryptionKey[] | undefined
  /** Key management algorithms accepted for encrypted callbacks. Default `['ECDH-ES']`. */
  keyManagementAlgorithms?: JweAlgorithmOptions['keyManagementAlgorithms'] | undefined
  /** Content encryption algorithms accepted for encrypted callbacks. Default `['A256GCM']`. */
  contentEncryptionAlgorithms?: JweAlgorithmOptions['contentEncryptionAlgorithms'] | undefined
  /**
   * Decides whether to answer a verified intent challenge, from whom the sender says asked for the
   * callbacks (`subscriber`, named by the sender's `intentSubscriber`). Without it every verified
   * challenge is echoed. A refusal is answered 403, and the sender never sends that task's
   * payload. With a secret shared by all of a sender's clients this is what keeps another client
   * from pointing its callbacks at this endpoint (when the sender verifies intent for every task).
   *
   * @example
   * ```ts
   * callbackReceiver({ secret, acceptIntent: (intent) => intent.subscriber === 'acct_42' })
   * ```
   */
  acceptIntent?: ((intent: IntentClaim) => boolean | Promise<boolean>) | undefined
}

/** The problem document (RFC 9457) a receiver answers with. Never holds a secret or a signature. */
export interface CallbackProblem {
  type: string
  title: string
  status: number
  code: CallbackErrorCode
}

/** What a receiver is handed: headers, and the raw body or a way to read it within a limit. */
export interface IncomingCallback {
  /** The request method; intent challenges are answered only for `POST`. Default `POST`. */
  method?: string
  headers: HeadersLike
  /** The raw bytes, or a reader that rejects with `ERR_CALLBACK_BODY_TOO_LARGE` past `limit`. */
  body: BodyLike | ((limit: number) => BodyLike | Promise<BodyLike>)
}

/** An HTTP answer the receiver gives instead of running the handler. */
export interface ReceiverAnswer {
  accepted: false
  status: number
  headers: Record<string, string>
  /** JSON text. */
  body: string
  /** Why, when the answer is a refusal (absent for an acknowledged duplicate). */
  error?: CallbackError
}

/** The callback verified and the handler should run; `settle` reports how it was answered. */
export interface ReceiverAcceptance {
  accepted: true
  callback: VerifiedCallback
  /** Whether a replay guard waits for `settle`; without one it does nothing. */
  guarded: boolean
  /**
   * Tells the replay guard how the handler answered: a 2xx status remembers the id, anything else
   * (or `undefined`: it threw) forgets it. A client hanging up is no answer: until the handler
   * answers, the id stays in flight and a retry meets 409. Never rejects.
   */
  settle(status: number | undefined): Promise<void>
}

/** A receiver with its options validated once. */
export interface CallbackReceiverCore {
  readonly maxBodyBytes: number
  /** Content type, size and signature; throws a `CallbackError` saying what failed. No replay guard. */
  verify(request: IncomingCallback): Promise<VerifiedCallback>
  /** `verify`, then the replay guard, with every expected refusal turned into an answer. */
  admit(request: IncomingCallback): Promise<ReceiverAcceptance | ReceiverAnswer>
}

const DEFAULT_MAX_BODY_BYTES = 1024 * 1024

const STATUS: Partial<Record<CallbackErrorCode, number>> = {
  ERR_CALLBACK_SIGNATURE_HEADERS_MISSING: 400,
  ERR_CALLBACK_SIGNATURE_TIMESTAMP_MALFORMED: 400,
  ERR_CALLBACK_SIGNATURE_MALFORMED: 400,
  ERR_CALLBACK_SIGNATURE_TIMESTAMP_TOO_OLD: 401,
  ERR_CALLBACK_SIGNATURE_TIMESTAMP_TOO_NEW: 401,
  ERR_CALLBACK_SIGNATURE_MISMATCH: 401,
  ERR_CALLBACK_DUPLICATE_IN_FLIGHT: 409,
  ERR_CALLBACK_BODY_TOO_LARGE: 413,
  ERR_CALLBACK_CONTENT_TYPE: 415,
  ERR_CALLBACK_DECRYPTION_FAILED: 400,
  ERR_CALLBACK_RAW_BODY_UNAVAILABLE: 500,
  ERR_CALLBACK_DECRYPTION_KEY_MISSING: 500,
  // The sender's published keys could not be loaded: our side is briefly unable, the sender retries.
  ERR_CALLBACK_JWKS: 503,
}

/** `retry-after` of a 503 for keys that could not be loaded: the remote JWKS's default cooldown. */
const JWKS_RETRY_AFTER_SECONDS = '30'

// Fixed titles rather than error messages, so an answer can never carry what a message might.
const TITLE: Partial<Record<CallbackErrorCode, string>> = {
  ERR_CALLBACK_SIGNATURE_HEADERS_MISSING: 'Signature headers missing',
  ERR_CALLBACK_SIGNATURE_TIMESTAMP_MALFORMED: 'Signature timestamp malformed',
  ERR_CALLBACK_SIGNATURE_MALFORMED: 'Signature malformed',
  ERR_CALLBACK_SIGNATURE_TIMESTAMP_TOO_OLD: 'Signature timestamp too old',
  ERR_CALLBACK_SIGNATURE_TIMESTAMP_TOO_NEW: 'Signature timestamp too far in the future',
  ERR_CALLBACK_SIGNATURE_MISMATCH: 'Signature does not match',
  ERR_CALLBACK_DUPLICATE_IN_FLIGHT: 'A delivery with this webhook-id is still being processed',
  ERR_CALLBACK_BODY_TOO_LARGE: 'Body too large',
  ERR_CALLBACK_CONTENT_TYPE: 'Unsupported content type',
  ERR_CALLBACK_DECRYPTION_FAILED: 'Payload could not be decrypted',
  ERR_CALLBACK_RAW_BODY_UNAVAILABLE: 'Receiver misconfigured',
  ERR_CALLBACK_DECRYPTION_KEY_MISSING: 'Receiver misconfigured',
  ERR_CALLBACK_JWKS: "The sender's keys could not be loaded",
  ERR_CALLBACK_INTENT_NOT_VERIFIED: 'Intent refused: these callbacks are not meant for this receiver',
}

/** The HTTP status a receiver answers for `error`, or `undefined` when it is not a receiving error. */
export function statusFor(error: unknown): number | undefined {
  return error instanceof CallbackError ? STATUS[error.code] : undefined
}

/** Creates a receiver core; validates `options` once (a `TypeError` names the option). */
export function createReceiverCore(options: ReceiverOptions): CallbackReceiverCore {
  if (typeof options !== 'object' || options === null) throw new TypeError('options must be an object')
  let { maxBodyBytes, contentTypes, replayGuard, decryptionKey, keyManagementAlgorithms, contentEncryptionAlgorithms, acceptIntent, ...verifyOptions } =
    options
  if (acceptIntent !== undefined && typeof acceptIntent !== 'function') {
    throw new TypeError('acceptIntent must be a function (intent) => boolean, e.g. (intent) => intent.subscriber === myAccountId')
  }
  maxBodyBytes ??= DEFAULT_MAX_BODY_BYTES
  if (!Number.isSafeInteger(maxBodyBytes) || maxBodyBytes < 0) {
    throw new TypeError('maxBodyBytes must be a non-negative integer number of bytes')
  }
  const limit = maxBodyBytes
  const accepts = contentTypes === undefined ? undefined : mediaTypeMatcher(contentTypes)
  const guard = replayGuardFrom(replayGuard)
  const verifier = createVerifier(verifyOptions)
  const decryptionKeys = decryptionKey === undefined ? undefined : checkDecryptionKeys(decryptionKey)
  const algorithms: JweAlgorithmOptions = {}
  if (keyManagementAlgorithms !== undefined) algorithms.keyManagementAlgorithms = algorithmList(keyManagementAlgorithms, 'keyManagementAlgorithms')
  if (contentEncryptionAlgorithms !== undefined) {
    algorithms.contentEncryptionAlgorithms = algorithmList(contentEncryptionAlgorithms, 'contentEncryptionAlgorithms')
  }

  // `progress.bodyRead` tells admit whether an answer leaves unread bytes on the connection.
  async function check(request: IncomingCallback, progress: { bodyRead: boolean }): Promise<VerifiedCallback> {
    const { headers } = request
    if (accepts !== undefined) {
      const type = headerValue(headers, 'content-type')
      if (type === undefined || !accepts(type)) {
        throw new ReceiverError(
          'ERR_CALLBACK_CONTENT_TYPE',
          `content-type ${type === undefined ? '(none)' : JSON.stringify(type.slice(0, 100))} is not one of contentTypes`
        )
      }
    }
    let body = request.body
    if (typeof body === 'function') {
      const declared = headerValue(headers, 'content-length')
      if (declared !== undefined && Number(declared) > limit) throw tooLarge(limit)
      // Headers that can never verify are refused before a byte of the body is read: a client
      // trickling a large body behind a stale timestamp must not hold the connection open.
      verifier.checkHeaders(headers)
      body = await body(limit)
    }
    progress.bodyRead = true
    if (byteLength(body) > limit) throw tooLarge(limit)
    const callback = await verifier({ headers, body })
    // Decrypted only once the signature holds: nobody but the sender can make us spend a decryption.
    if (!isMediaType(headerValue(headers, 'content-type'), JOSE_CONTENT_TYPE)) return callback
    if (decryptionKeys === undefined) {
      throw new ReceiverError(
        'ERR_CALLBACK_DECRYPTION_KEY_MISSING',
        'an encrypted callback (application/jose) arrived, but the receiver has no decryptionKey to open it'
      )
    }
    return decryptCallback(callback, decryptionKeys, algorithms)
  }

  function verify(request: IncomingCallback): Promise<VerifiedCallback> {
    return check(request, { bodyRead: false })
  }

  async function admit(request: IncomingCallback): Promise<ReceiverAcceptance | ReceiverAnswer> {
    let callback: VerifiedCallback
    const progress = { bodyRead: false }
    try {
      callback = await check(request, progress)
    } catch (error) {
      const answer = answerFor(error)
      if (answer === undefined) throw error
      // A body left unread on the socket must not be read and thrown away, possibly for a long
      // time: closing the connection after the answer is what actually stops the client.
      if (!progress.bodyRead) answer.headers['connection'] = 'close'
      return answer
    }
    // A verified intent challenge is answered here, before the replay guard and the handler: it is
    // the sender asking whether we want its callbacks, not a callback.
    const intent = await answerIntent(request, callback, acceptIntent)
    if (intent !== undefined) return { accepted: false, ...intent }
    if (guard === undefined) return { accepted: true, callback, guarded: false, settle: settleNothing }
    const id = callback.id
    const state = await guard.begin(id)
    if (state === 'done') {
      return {
        accepted: false,
        status: 200,
        headers: { 'content-type': 'application/json; charset=utf-8' },
        body: JSON.stringify({ id, duplicate: true }),
      }
    }
    if (state === 'in-flight') {
      const answer = problemAnswer(
        new ReceiverError('ERR_CALLBACK_DUPLICATE_IN_FLIGHT', `a delivery with webhook-id ${JSON.stringify(id)} is still being processed`),
        409
      )
      answer.headers['retry-after'] = '5'
      return answer
    }
    return {
      accepted: true,
      callback,
      guarded: true,
      async settle(status) {
        // A guard that cannot record the outcome leaves the id in flight until its own timeout:
        // duplicates then get 409 and are retried, never acknowledged unprocessed.
        try {
          if (status !== undefined && status >= 200 && status < 300) await guard.remember(id)
          else await guard.forget(id)
        } catch {}
      },
    }
  }

  return { maxBodyBytes: limit, verify, admit }
}

const settleNothing = async (): Promise<void> => {}

/** The answer to a verified intent challenge (the echo, or 403 when `accept` refuses it), or `undefined`. */
async function answerIntent(
  request: IncomingCallback,
  callback: VerifiedCallback,
  accept: ((intent: IntentClaim) => boolean | Promise<boolean>) | undefined
): Promise<IntentAnswer | undefined> {
  const answer = answerIntentChallenge({ method: request.method ?? 'POST', headers: request.headers })
  if (answer === undefined || accept === undefined || answer.status !== 200) return answer
  if ((await accept(intentClaim(callback))) === true) return answer
  return problemAnswer(new ReceiverError('ERR_CALLBACK_INTENT_NOT_VERIFIED', 'acceptIntent refused this intent challenge'), 403)
}

/** The problem answer for `error`, or `undefined` when it is not a receiving error. */
export function answerFor(error: unknown): ReceiverAnswer | undefined {
  const status = statusFor(error)
  return status === undefined ? undefined : problemAnswer(error as CallbackError, status)
}

function problemAnswer(error: CallbackError, status: number): ReceiverAnswer {
  const problem: CallbackProblem = {
    type: `urn:endpoint-callback:problem:${error.code.slice('ERR_CALLBACK_'.length).toLowerCase().replaceAll('_', '-')}`,
    title: TITLE[error.code] ?? 'Callback refused',
    status,
    code: error.code,
  }
  const headers: Record<string, string> = { 'content-type': 'application/problem+json; charset=utf-8' }
  if (error.code === 'ERR_CALLBACK_JWKS') headers['retry-after'] = JWKS_RETRY_AFTER_SECONDS
  return { accepted: false, status, headers, body: JSON.stringify(problem), error }
}

/** Whether a `content-type` value names `mediaType` (parameters and case aside). */
function isMediaType(value: string | undefined, mediaType: string): boolean {
  if (value === undefined) return false
  const semicolon = value.indexOf(';')
  return (semicolon < 0 ? value : value.slice(0, semicolon)).trim().toLowerCase() === mediaType
}

// Node 20 has the class on globalThis only, and @types/node 20 omits it.
const CryptoKeyClass = (globalThis as { CryptoKey?: abstract new () => { type: string } }).CryptoKey

/** The decryption key(s), checked once. Messages never show the key. */
function checkDecryptionKeys(value: unknown): DecryptionKey[] {
  const keys: unknown[] = Array.isArray(value) ? value : [value]
  if (keys.length === 0) throw new TypeError('decryptionKey must be a private key or a non-empty array of them')
  keys.forEach((key, index) => {
    const option = Array.isArray(value) ? `decryptionKey[${index}]` : 'decryptionKey'
    if (key instanceof KeyObject || (CryptoKeyClass !== undefined && key instanceof CryptoKeyClass)) {
      if ((key as { type: string }).type !== 'private') throw new TypeError(`${option} must be a private key`)
      return
    }
    if (key === null || typeof key !== 'object' || typeof (key as { kty?: unknown }).kty !== 'string') {
      throw new TypeError(`${option} must be a private JWK, a KeyObject or a CryptoKey`)
    }
    if ((key as { d?: unknown }).d === undefined) throw new TypeError(`${option} must be a private key (a JWK with "d")`)
  })
  return keys as DecryptionKey[]
}

function algorithmList<T extends string>(value: unknown, option: string): T[] {
  if (!Array.isArray(value) || value.length === 0 || !value.every((item) => typeof item === 'string' && item !== '')) {
    throw new TypeError(`${option} must be a non-empty array of algorithm names`)
  }
  return [...value] as T[]
}

function tooLarge(limit: number): ReceiverError {
  return new ReceiverError('ERR_CALLBACK_BODY_TOO_LARGE', `the callback body is larger than maxBodyBytes (${limit} bytes)`)
}

function replayGuardFrom(option: boolean | ReplayGuard | undefined): ReplayGuard | undefined {
  if (option === undefined || option === false) return undefined
  if (option === true) return createMemoryReplayGuard()
  if (
    typeof option !== 'object' ||
    option === null ||
    typeof option.begin !== 'function' ||
    typeof option.remember !== 'function' ||
    typeof option.forget !== 'function'
  ) {
    throw new TypeError('replayGuard must be true, false, or a ReplayGuard with begin, remember and forget')
  }
  return option
}

function mediaTypeMatcher(contentTypes: unknown): (value: string) => boolean {
  if (!Array.isArray(contentTypes) || contentTypes.length === 0) {
    throw new TypeError('contentTypes must be a non-empty array of media types such as "application/json"')
  }
  const exact = new Set<string>()
  const families = new Set<string>()
  for (const entry of contentTypes) {
    if (typeof entry !== 'string' || !/^[\w.+-]+\/(\*|[\w.+-]+)$/.test(entry.trim())) {
      throw new TypeError(`contentTypes must hold media types such as "application/json" or "application/*", got ${JSON.stringify(entry)}`)
    }
    const type = entry.trim().toLowerCase()
    if (type.endsWith('/*')) families.add(type.slice(0, -1))
    else exact.add(type)
  }
  return (value) => {
    const type = (value.split(';', 1)[0] ?? '').trim().toLowerCase()
    if (exact.has(type)) return true
    const slash = type.indexOf('/')
    return slash > 0 && families.has(type.slice(0, slash + 1))
  }
}

function headerValue(headers: HeadersLike, name: string): string | undefined {
  if (typeof headers.get === 'function') return (headers as { get(name: string): string | null }).get(name) ?? undefined
  const value = (headers as Record<string, string | string[] | undefined>)[name]
  return Array.isArray(value) ? value[0] : value
}

function byteLength(body: BodyLike): number {
  return typeof body === 'string' ? Buffer.byteLength(body) : body.byteLength
}

/**
 * Reads a Node request body, rejecting with `ERR_CALLBACK_BODY_TOO_LARGE` as soon as more than
 * `limit` bytes arrived. It then stops reading (the stream stays paused, so TCP backpressure holds
 * the client back) and drops what it had, so memory stays bounded whatever the client sends.
 */
export function readNodeBody(request: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let size = 0
    const cleanup = () => {
      request.off('data', onData)
      request.off('end', onEnd)
      request.off('error', onError)
      request.off('close', onClose)
    }
    const onData = (chunk: Buffer | string) => {
      const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : chunk
      size += bytes.byteLength
      if (size > limit) {
        cleanup()
        request.pause()
        chunks.length = 0
        reject(tooLarge(limit))
        return
      }
      chunks.push(bytes)
    }
    const onEnd = () => {
      cleanup()
      resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size))
    }
    const onError = (error: Error) => {
      cleanup()
      reject(error)
    }
    const onClose = () => {
      cleanup()
      reject(Object.assign(new Error('the request was aborted before its body was read'), { code: 'ECONNRESET' }))
    }
    request.on('data', onData)
    request.once('end', onEnd)
    request.once('error', onError)
    request.once('close', onClose)
  })
}

/**
 * Whether something (a body parser) already read this Node request, so its bytes are gone unless
 * it kept them.
 */
export function nodeBodyConsumed(request: IncomingMessage): boolean {
  return request.readableDidRead || request.readableEnded || (request as { _body?: unknown })._body === true
}

/** The error for a body that a parser consumed without keeping the bytes; `how` says what to mount. */
export function rawBodyUnavailable(how: string): ReceiverError {
  return new ReceiverError(
    'ERR_CALLBACK_RAW_BODY_UNAVAILABLE',
    `A body parser read the request before the callback receiver, and the raw bytes the signature covers are gone (re-serialised JSON would not verify). ${how}`
  )
}

/**
 * Settles an acceptance when the handler answers on the Node response: with the status it ends
 * the response with. A client hanging up first settles nothing: the handler still runs, so a retry
 * must meet 409 until it answers — a 2xx then remembers the id, anything else (Express's error
 * handler ends with a 500) forgets it. A handler that never answers is bounded by the guard's own
 * in-flight timeout.
 */
export function settleOnResponse(response: ServerResponse, acceptance: ReceiverAcceptance): void {
  if (!acceptance.guarded) return
  let settled = false
  const settle = () => {
    if (settled) return
    settled = true
    void acceptance.settle(response.statusCode)
  }
  // Ending the response is the handler's answer; after a hang-up Node emits no 'finish' for it.
  const end = response.end
  response.end = function (this: ServerResponse, ...args: unknown[]) {
    settle()
    return (end as (...rest: unknown[]) => ServerResponse).apply(this, args)
  } as ServerResponse['end']
  response.once('finish', settle)
}

/**
 * Runs the rest of a middleware chain (Koa's `next`) and settles an acceptance with the status it
 * left, or as failed when it threw; a client hanging up meanwhile changes nothing.
 */
export async function settleAfter(acceptance: ReceiverAcceptance, run: () => Promise<unknown>, status: () => number): Promise<void> {
  if (!acceptance.guarded) {
    await run()
    return
  }
  try {
    await run()
  } catch (error) {
    await acceptance.settle(undefined)
    throw error
  }
  await acceptance.settle(status())
}

/**
 * Reads a Web body stream, rejecting with `ERR_CALLBACK_BODY_TOO_LARGE` (and cancelling the stream)
 * as soon as more than `limit` bytes arrived.
 */
export async function readWebBody(stream: ReadableStream<Uint8Array> | null, limit: number): Promise<Uint8Array> {
  if (stream === null) return new Uint8Array(0)
  const reader = stream.getReader()
  const chunks: Uint8Array[] = []
  let size = 0
  for (;;) {
    const { done, value } = await reader.read()
    if (done) break
    size += value.byteLength
    if (size > limit) {
      chunks.length = 0
      await reader.cancel().catch(() => {})
      throw tooLarge(limit)
    }
    chunks.push(value)
  }
  return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size)
}
