/**
 * One `SenderOptions` object, checked once. `createCallbackTask`, `deliver` and `createWorker` all
 * take the same plain object; the first call resolves it (keys decoded, URL policy compiled,
 * defaults filled) and later calls with the same object reuse that work, so an attempt never
 * re-validates or re-parses a key.
 */
import { createSigner } from './signing/standard-webhooks.ts'
import type { Signer } from './signing/standard-webhooks.ts'
import type { JWK } from 'jose'
import { createRemoteEncryptionKey } from './signing/jwe.ts'
import type { EncryptionKeySource } from './signing/jwe.ts'
import type { KeyRing } from './signing/jws.ts'
import { checkCallbackUrl, compileUrlPolicy } from './transports/url-policy.ts'
import type { CompiledUrlPolicy } from './transports/url-policy.ts'
import { createHttpTransport } from './transports/http.ts'
import type { HttpTransport } from './transports/http.ts'
import { resolveRetryOptions } from './retry.ts'
import { attemptBudgetMs, minimumLeaseMs } from './attempt-budget.ts'
import { checkOptionNames } from './option-names.ts'
import { describeError } from './outcome.ts'
import { resolveDestinationOf } from './destinations/destination.ts'
import type { DestinationTask } from './destinations/destination.ts'
import type { ResolvedRetry } from './retry.ts'
import type { CallbackStore, CallbackTask, DeliveryEvent, DeliveryInstrumentation, SenderOptions, Transport, UrlPolicy } from './types.ts'

/** How long a claim holds a task unless `leaseMs` says otherwise. */
export const DEFAULT_LEASE_MS = 60_000
/** Timeout of the transport a sender creates for itself (the whole exchange, body included). */
export const DEFAULT_TRANSPORT_TIMEOUT_MS = 10_000

const STORE_METHODS = ['insert', 'get', 'attach', 'claim', 'complete', 'release', 'cancel', 'attempts'] as const
// Per-task secrets are few in practice (one per client); the bound only keeps a stream of
// distinct secrets from growing memory without end.
const TASK_SIGNER_CACHE_SIZE = 1000
// Receivers' JWKS URLs, one cached key lookup each; bounded like the task signers.
const ENCRYPTION_KEY_CACHE_SIZE = 1000
// Callback URLs the policy accepted; cleared when full.
const CHECKED_URL_CACHE_SIZE = 1000

/** How long a pending task waits for its result unless `pendingTimeoutMs` says otherwise: 24 h. */
export const DEFAULT_PENDING_TIMEOUT_MS = 24 * 60 * 60 * 1000

/**
 * Every option a sender's object may carry: `createCallbackTask`, `deliver` and `createWorker` take
 * the same object, so the worker's own options are known here too.
 */
export const SENDER_OPTION_NAMES: ReadonlySet<string> = new Set([
  'store',
  'transport',
  'secret',
  'signingKey',
  'keyRing',
  'verifyIntent',
  'urlPolicy',
  'retry',
  'leaseMs',
  'now',
  'onEvent',
  'instrumentation',
  'transaction',
  'pendingTimeoutMs',
  'requireTaskSecret',
  'intentSubscriber',
  'destination',
  // createWorker
  'pollIntervalMs',
  'concurrency',
  'batchSize',
  'perDestination',
  'breaker',
])

/** A `SenderOptions` object after validation. Internal: the public surface is the plain object. */
export interface ResolvedSender {
  readonly store: CallbackStore
  /** The given transport, or the default one, created on first use. */
  readonly transport: Transport
  /** The longest one send may take, when known; attempts keep their quick retries inside the lease. */
  readonly transportTimeoutMs: number | undefined
  /** Whether the sender itself can sign (a task without its own secret needs this). */
  readonly canSign: boolean
  /** Whether every task must bring its own secret (`requireTaskSecret`). */
  readonly requireTaskSecret: boolean
  /** How long a pending task waits for its result, ms (`Infinity`: for ever). */
  readonly pendingTimeoutMs: number
  readonly urlPolicy: CompiledUrlPolicy
  /**
   * The callback URL's normalised text (`href`) once the URL policy accepts it; throws as
   * `checkCallbackUrl` does. Accepted texts are remembered: the policy never changes, and parsing
   * a URL and its address took about a sixth of recording and delivering a task.
   */
  checkedUrl(text: string): string
  readonly retry: ResolvedRetry
  /** The destination of a task about to be stored: the `destination` option, or the URL's origin. */
  destinationOf(task: DestinationTask): string
  readonly leaseMs: number
  readonly now: () => Date
  /** Calls `onEvent`; a listener that throws or rejects never disturbs a delivery. */
  readonly emit: (event: DeliveryEvent) => void
  /** Whether anyone listens, so events are only built when they will be read. */
  readonly listening: boolean
  /** Tracing and metrics hooks, or `undefined`: then an attempt pays one check for them. */
  readonly instrumentation: DeliveryInstrumentation | undefined
  /** Whether every task's attempts first prove the callback URL's intent (`verifyIntent`). */
  readonly verifyIntent: boolean
  /** Who asked for a task's callbacks, named in its intent challenge (`intentSubscriber`). */
  readonly intentSubscriber: ((task: CallbackTask) => string | undefined) | undefined
  /**
   * The signer for this task: its own secret when it has one, else the sender's keys (with a key
   * ring, the keys that sign at this instant). Throws a `TypeError` when there is nothing to sign
   * with; the message never holds key material.
   */
  signerFor(task: CallbackTask): Signer
  /**
   * Whom to encrypt a task's body for: a JWK as it is, a JWKS URL as a cached lookup whose fetch
   * goes through the guarded agent, so the URL policy applies to it as to the callback URL.
   */
  encryptionRecipient(key: JWK | string): JWK | EncryptionKeySource
}

const resolved = new WeakMap<object, ResolvedSender>()

// One default transport (one connection pool) per URL policy object, shared by every options
// object that names it: `{ ...sender, transaction }` is a new object, and must not open a new pool.
const defaultTransports = new WeakMap<UrlPolicy, HttpTransport>()
let defaultTransportWithoutPolicy: HttpTransport | undefined

function defaultTransport(urlPolicy: UrlPolicy | undefined): HttpTransport {
  if (urlPolicy === undefined) {
    return (defaultTransportWithoutPolicy ??= createHttpTransport({ timeoutMs: DEFAULT_TRANSPORT_TIMEOUT_MS }))
  }
  let transport = defaultTransports.get(urlPolicy)
  if (transport === undefined) {
    transport = createHttpTransport({ timeoutMs: DEFAULT_TRANSPORT_TIMEOUT_MS, urlPolicy })
    defaultTransports.set(urlPolicy, transport)
  }
  return transport
}

/**
 * Validates `options` once (TypeError naming the option) and caches the result against the object,
 * so pass the same object on every call. Options are read once: changing the object later has no
 * effect.
 */
export function resolveSender(options: SenderOptions): ResolvedSender {
  if (options === null || typeof options !== 'object') throw new TypeError('sender options must be an object')
  let sender = resolved.get(options)
  if (sender === undefined) {
    sender = buildSender(options)
    resolved.set(options, sender)
  }
  return sender
}

function buildSender(options: SenderOptions): ResolvedSender {
  checkOptionNames(options, SENDER_OPTION_NAMES, 'sender options')
  const { store, transport: givenTransport, secret, signingKey, keyRing, retry, onEvent } = options
  let { urlPolicy } = options
  let { verifyIntent } = options
  let { leaseMs, now } = options

  if (store === null || typeof store !== 'object') throw new TypeError('store is required (e.g. createMemoryStore())')
  for (const method of STORE_METHODS) {
    if (typeof store[method] !== 'function') throw new TypeError(`store.${method} must be a function`)
  }
  if (givenTransport !== undefined && (givenTransport === null || typeof givenTransport.send !== 'function')) {
    throw new TypeError('transport must have a send(request) function')
  }
  const signer = secret === undefined && signingKey === undefined ? undefined : createSigner(signingKeyOptions(secret, signingKey))
  if (keyRing !== undefined) {
    if (keyRing === null || typeof keyRing !== 'object' || typeof keyRing.signingKeys !== 'function') {
      throw new TypeError('keyRing must be a key ring from createKeyRing()')
    }
    if (signer === undefined && ringKeys(keyRing).length === 0) {
      throw new TypeError('keyRing: no key of the ring signs now, and there is no secret or signingKey to sign with')
    }
  }
  const requireTaskSecret = options.requireTaskSecret ?? false
  if (typeof requireTaskSecret !== 'boolean') throw new TypeError('requireTaskSecret must be a boolean')
  if (signer === undefined && keyRing === undefined && !requireTaskSecret) {
    // Found now rather than as a failed attempt after every retry of the schedule.
    throw new TypeError(
      'secret, signingKey or keyRing is required to sign callbacks (or set requireTaskSecret: true when every task brings its own secret)'
    )
  }
  const pendingTimeoutMs = options.pendingTimeoutMs ?? DEFAULT_PENDING_TIMEOUT_MS
  if (typeof pendingTimeoutMs !== 'number' || !(pendingTimeoutMs > 0) || (Number.isFinite(pendingTimeoutMs) && !Number.isSafeInteger(pendingTimeoutMs))) {
    throw new TypeError('pendingTimeoutMs must be a positive integer of milliseconds, or Infinity')
  }
  urlPolicy = agreedUrlPolicy(urlPolicy, givenTransport)
  verifyIntent ??= false
  if (typeof verifyIntent !== 'boolean') throw new TypeError('verifyIntent must be a boolean')
  const { intentSubscriber } = options
  if (intentSubscriber !== undefined && typeof intentSubscriber !== 'function') {
    throw new TypeError('intentSubscriber must be a function (task) => string naming who asked for the task')
  }
  const compiledPolicy = compileUrlPolicy(urlPolicy)
  const resolvedRetry = resolveRetryOptions(retry)
  const destinationOf = resolveDestinationOf(options.destination)

  leaseMs ??= DEFAULT_LEASE_MS
  if (!Number.isSafeInteger(leaseMs) || leaseMs <= 0) throw new TypeError('leaseMs must be a positive integer of milliseconds')
  now ??= () => new Date()
  if (typeof now !== 'function') throw new TypeError('now must be a function returning a Date')
  if (onEvent !== undefined && typeof onEvent !== 'function') throw new TypeError('onEvent must be a function')
  const { instrumentation } = options
  if (instrumentation !== undefined && (instrumentation === null || typeof instrumentation.startAttempt !== 'function')) {
    throw new TypeError('instrumentation must have a startAttempt(task, attempt) function (e.g. createOpenTelemetry())')
  }

  const transportTimeoutMs = givenTransport === undefined ? DEFAULT_TRANSPORT_TIMEOUT_MS : declaredTimeout(givenTransport)
  // A lease that ran out mid-attempt would let a second worker send the same callback while the
  // first is still waiting for its answer. With intent verification an attempt makes two
  // exchanges: the challenge, then the callback. (Quick retries only start when they fit.)
  if (transportTimeoutMs !== undefined && attemptBudgetMs(leaseMs) < (verifyIntent ? 2 : 1) * transportTimeoutMs) {
    const exchanges = verifyIntent ? 2 : 1
    throw new TypeError(
      `leaseMs (${leaseMs}) must exceed ${exchanges === 2 ? 'twice ' : ''}the transport timeout (${transportTimeoutMs} ms)${exchanges === 2 ? ' with verifyIntent' : ''}, ` +
        `by a tenth of itself (at most 1 s) to record the attempt: at least ${minimumLeaseMs(exchanges, transportTimeoutMs)}`
    )
  }

  let transport = governedTransport(givenTransport, urlPolicy)
  const taskSigners = new Map<string, Signer>()
  const listener = onEvent
  const staticSigningKeys = signingKey === undefined ? [] : typeof signingKey === 'string' ? [signingKey] : signingKey
  // The ring's keys change with time; the signer is rebuilt only when the list of keys does.
  let ringSigner: { keys: string[]; signer: Signer } | undefined
  const encryptionKeys = new Map<string, EncryptionKeySource>()
  let jwksTransport: HttpTransport | undefined

  // Created on first use, so a process that only records tasks opens no connection pool.
  const currentTransport = (): Transport => (transport ??= defaultTransport(urlPolicy))

  const senderSigner = (): Signer => {
    if (keyRing === undefined) {
      if (signer === undefined) throw new TypeError('secret: neither the task nor the sender has a secret or signingKey')
      return signer
    }
    const keys = ringKeys(keyRing)
    if (ringSigner === undefined || !sameKeys(ringSigner.keys, keys)) {
      if (keys.length === 0 && signer === undefined) {
        // A gap between one key's notAfter and the next one's notBefore: nothing may sign now.
        throw new TypeError('keyRing: no key of the ring signs at this instant, and there is no secret or signingKey')
      }
      ringSigner = {
        keys,
        signer: keys.length === 0 ? signer! : createSigner(signingKeyOptions(secret, [...staticSigningKeys, ...keys])),
      }
    }
    return ringSigner.signer
  }

  const checkedUrls = new Map<string, string>()

  // A JWKS URL comes from a client: fetch it only through an agent that enforces the URL policy.
  const guardedDispatcher = () => {
    const dispatcher = (currentTransport() as Partial<HttpTransport>).dispatcher
    if (dispatcher !== undefined && typeof dispatcher.dispatch === 'function') return dispatcher
    return (jwksTransport ??= defaultTransport(urlPolicy)).dispatcher
  }

  return {
    store,
    get transport() {
      return currentTransport()
    },
    transportTimeoutMs,
    canSign: signer !== undefined || keyRing !== undefined,
    requireTaskSecret,
    pendingTimeoutMs,
    verifyIntent,
    intentSubscriber,
    urlPolicy: compiledPolicy,
    checkedUrl(text) {
      let href = checkedUrls.get(text)
      if (href === undefined) {
        href = checkCallbackUrl(text, compiledPolicy).href
        if (checkedUrls.size >= CHECKED_URL_CACHE_SIZE) checkedUrls.clear()
        checkedUrls.set(text, href)
      }
      return href
    },
    retry: resolvedRetry,
    destinationOf,
    leaseMs,
    now,
    listening: listener !== undefined,
    instrumentation,
    emit:
      listener === undefined
        ? (event) => {
            if (event.type === 'error') reportUnheard(event.error)
          }
        : (event) => {
            try {
              const result: unknown = listener(event)
              if (result instanceof Promise) result.catch(() => {})
            } catch {
              // A logging or metrics hook must not turn a delivered callback into a failed one.
            }
          },
    signerFor(task) {
      if (task.secret === undefined) return senderSigner()
      const key = typeof task.secret === 'string' ? task.secret : task.secret.join(' ')
      let taskSigner = taskSigners.get(key)
      if (taskSigner === undefined) {
        taskSigner = createSigner({ secret: task.secret })
        if (taskSigners.size >= TASK_SIGNER_CACHE_SIZE) taskSigners.delete(taskSigners.keys().next().value!)
        taskSigners.set(key, taskSigner)
      }
      return taskSigner
    },
    encryptionRecipient(key) {
      if (typeof key !== 'string') return key
      let source = encryptionKeys.get(key)
      if (source === undefined) {
        source = createRemoteEncryptionKey(key, { dispatcher: guardedDispatcher(), allowHttp: urlPolicy?.allowHttp === true })
        if (encryptionKeys.size >= ENCRYPTION_KEY_CACHE_SIZE) encryptionKeys.delete(encryptionKeys.keys().next().value!)
        encryptionKeys.set(key, source)
      }
      return source
    },
  }
}

/** The ring's signing keys now, checked: a ring of the user's own making must hand back strings. */
function ringKeys(keyRing: KeyRing): string[] {
  const keys: unknown = keyRing.signingKeys()
  if (!Array.isArray(keys) || !keys.every((key) => typeof key === 'string')) {
    throw new TypeError('keyRing.signingKeys() must return an array of "whsk_…" keys')
  }
  return keys as string[]
}

function sameKeys(a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}

function signingKeyOptions(secret: string | string[] | undefined, signingKey: string | string[] | undefined) {
  return { ...(secret === undefined ? {} : { secret }), ...(signingKey === undefined ? {} : { signingKey }) }
}

function declaredTimeout(transport: Transport): number | undefined {
  const { timeoutMs } = transport
  return typeof timeoutMs === 'number' && Number.isFinite(timeoutMs) ? timeoutMs : undefined
}

/**
 * One URL policy per sender. A transport that declares its own (`createHttpTransport({ urlPolicy })`)
 * must agree with the sender's, which then is that one when the sender names none: a URL accepted
 * at creation must never be refused by the transport at delivery.
 */
function agreedUrlPolicy(urlPolicy: UrlPolicy | undefined, transport: Transport | undefined): UrlPolicy | undefined {
  const own = transport === undefined ? undefined : (transport as Partial<HttpTransport>).urlPolicy
  if (own === undefined) return urlPolicy
  if (urlPolicy === undefined) return own
  if (policyText(urlPolicy) !== policyText(own)) {
    throw new TypeError(
      'urlPolicy: the transport was created with a different urlPolicy than the sender; give the policy to one of them, or the same to both'
    )
  }
  return urlPolicy
}

function policyText(policy: UrlPolicy): string {
  const sorted = (list: readonly unknown[] | undefined) => (list === undefined ? undefined : [...list].map(String).sort())
  return JSON.stringify([policy.allowHttp === true, sorted(policy.allowHosts) ?? [], sorted(policy.allowPorts) ?? null])
}

/**
 * The transport the sender sends through: a transport made by `createHttpTransport` without a policy
 * of its own obeys the sender's `urlPolicy` (a sibling with the same settings, closed with it); any
 * other transport as given.
 */
function governedTransport(transport: Transport | undefined, urlPolicy: UrlPolicy | undefined): Transport | undefined {
  if (transport === undefined || urlPolicy === undefined) return transport
  const http = transport as Partial<HttpTransport>
  if (http.urlPolicy !== undefined || typeof http.withUrlPolicy !== 'function') return transport
  // One twin per transport and policy object: `{ ...sender, transaction }` must not open a new pool.
  let twins = governedTwins.get(transport)
  if (twins === undefined) governedTwins.set(transport, (twins = new WeakMap()))
  let twin = twins.get(urlPolicy)
  if (twin === undefined) twins.set(urlPolicy, (twin = http.withUrlPolicy(urlPolicy)))
  return twin
}

const governedTwins = new WeakMap<Transport, WeakMap<UrlPolicy, HttpTransport>>()

// Causes already printed, so a worker that fails on every poll prints each one once.
const reported = new Set<string>()
const MAX_REPORTED = 100

/**
 * An `error` event nobody listens to, printed to stderr once per distinct cause, as Node prints an
 * unhandled `'error'`: a worker on a schema that was never migrated must not fail in silence.
 */
function reportUnheard(error: unknown): void {
  const cause = describeError(error)
  if (reported.has(cause) || reported.size >= MAX_REPORTED) return
  reported.add(cause)
  process.stderr.write(`endpoint-callback: ${cause}\n  (printed once per cause because no onEvent listener is set; pass onEvent to see every error event)\n`)
}
