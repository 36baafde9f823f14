/**
 * The default transport: one undici `Agent` per transport, every connection vetted by the URL
 * policy after DNS and before the socket opens.
 */
import { lookup as dnsLookup } from 'node:dns'
import type { LookupAddress, LookupAllOptions } from 'node:dns'
import { isIP } from 'node:net'
import { Agent, buildConnector } from 'undici'
import type { Dispatcher } from 'undici'
import { CallbackError, DeliveryError, UrlPolicyError } from '../errors.ts'
import type { Transport, TransportRequest, TransportResponse, UrlPolicy } from '../types.ts'
import { VERSION } from '../version.ts'
import { checkOptionNames } from '../option-names.ts'
import { checkAddress, checkCallbackUrl, checkHost, checkTarget, compileUrlPolicy } from './url-policy.ts'
import type { CompiledUrlPolicy } from './url-policy.ts'

/**
 * A `dns.lookup`-compatible resolver. The transport always calls it with `{ all: true }` and reads
 * every address it returns; a resolver that answers with one address (`callback(null, address,
 * family)`) works too.
 */
export type LookupFunction = (
  hostname: string,
  options: LookupAllOptions,
  callback: (error: NodeJS.ErrnoException | null, addresses: LookupAddress[]) => void,
) => void

/** Options of {@link createHttpTransport}. */
export interface HttpTransportOptions {
  /**
   * Time for the whole exchange — DNS, connect, TLS, sending, headers and reading the body — in
   * ms. Default 10 000. A receiver that trickles its answer is cut off when it runs out.
   */
  timeoutMs?: number | undefined
  /** Response bytes kept (as `body`); the rest is discarded and the connection closed. Default 64 KiB. */
  maxResponseBytes?: number | undefined
  /** The resolver every hostname goes through (default `dns.lookup`); inject one in tests. */
  lookup?: LookupFunction | undefined
  /** Opt-ins past the default SSRF policy: `allowHttp`, `allowHosts`, `allowPorts`. */
  urlPolicy?: UrlPolicy | undefined
  /** Sockets per origin. Default: unlimited (undici's default). */
  connections?: number | undefined
  /** How long an idle keep-alive socket is kept, ms. Default 4 000 (undici's default). */
  keepAliveTimeoutMs?: number | undefined
  /**
   * Socket and TLS options for undici's connector (e.g. `ca` for a private CA), or your own undici
   * connector function. Either way the transport resolves and vets the address first and calls the
   * connector with `hostname` set to one vetted IP address and `servername` to the URL's host, so
   * a connector never resolves a name by itself. A function is the documented seam for tests that
   * must see which address would be dialled without opening a socket.
   */
  connect?: buildConnector.BuildOptions | buildConnector.connector | undefined
}

/** The transport {@link createHttpTransport} returns: its timeout is known and it can always be closed. */
export interface HttpTransport extends Transport {
  /** `timeoutMs` as configured: the longest one `send` takes. */
  readonly timeoutMs: number
  /**
   * The transport's guarded undici `Agent`, for other requests that must obey the same URL policy
   * (e.g. fetching a JWKS: `fetch(url, { dispatcher })`). Every connection it opens is vetted as
   * the transport's own are: scheme, port, literal address, name and every resolved address.
   * It is closed by {@link HttpTransport.close}.
   */
  readonly dispatcher: Dispatcher
  /**
   * The `urlPolicy` it was created with, or `undefined` for the default policy. A sender given
   * this transport must have the same policy (or none, and then it takes this one).
   */
  readonly urlPolicy: UrlPolicy | undefined
  /**
   * A transport with the same settings that obeys `urlPolicy`, closed with this one. A sender whose
   * `urlPolicy` is given beside a transport created without one sends through it, so the sender's
   * policy governs every request.
   */
  withUrlPolicy(urlPolicy: UrlPolicy): HttpTransport
  /** Closes the transport's connection pool; sending afterwards rejects. Idempotent. */
  close(): Promise<void>
}

const HTTP_TRANSPORT_OPTION_NAMES: ReadonlySet<string> = new Set([
  'timeoutMs',
  'maxResponseBytes',
  'lookup',
  'urlPolicy',
  'connections',
  'keepAliveTimeoutMs',
  'connect',
])

const DEFAULT_TIMEOUT_MS = 10_000
const DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024
const USER_AGENT = `endpoint-callback/${VERSION}`

/** Errors after which the next vetted address of the same name is worth a try. */
const NEXT_ADDRESS_CODES = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL', 'ETIMEDOUT', 'UND_ERR_CONNECT_TIMEOUT'])
const DNS_CODES = new Set(['ENOTFOUND', 'EAI_AGAIN', 'EAI_FAIL', 'EAI_NODATA', 'ENODATA', 'EAI_NONAME', 'ESERVFAIL', 'ENONAME'])
const TIMEOUT_CODES = new Set(['ETIMEDOUT', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT'])
/** Checked callback URLs kept per transport. */
const TARGET_CACHE_SIZE = 1024
const TLS_CODE = /^(ERR_TLS_|ERR_SSL_|ERR_OSSL_|CERT_|UNABLE_TO_|DEPTH_ZERO_|SELF_SIGNED_|HOSTNAME_MISMATCH|INVALID_CA|INVALID_PURPOSE|PATH_LENGTH_EXCEEDED)/

/**
 * The default {@link Transport}: POSTs with undici on one `Agent` owned by the transport (never the
 * global dispatcher). Every callback URL is checked by the URL policy; every name is resolved
 * through `lookup`, and the connection is refused when any returned address is not globally
 * routable (unless `urlPolicy.allowHosts` opts it in), so DNS rebinding cannot reach an internal
 * address. A name's addresses are dialled Happy Eyeballs style (IPv6 and IPv4 alternating, the
 * next one 250 ms after the last, or at once when it fails), so one that drops packets does not
 * cost the attempt; at most 8 addresses per connection (a name may resolve to thousands). Redirects are returned, never followed. `timeoutMs` bounds the whole exchange and at most
 * `maxResponseBytes` of the answer are read.
 *
 * Rejects with `UrlPolicyError` (`ERR_CALLBACK_URL_*`) when the policy refuses, and with
 * `DeliveryError` `ERR_CALLBACK_TIMEOUT`, `ERR_CALLBACK_CONNECTION`, `ERR_CALLBACK_DNS` or
 * `ERR_CALLBACK_TLS` (the original error as `cause`) when no response arrives. When the request's
 * own `signal` aborts, rejects with that signal's reason, as `fetch` does. Messages name the host,
 * never the path, query, headers or body.
 *
 * @example
 * ```ts
 * const transport = createHttpTransport({ timeoutMs: 5_000 })
 * const sender = { store: createMemoryStore(), secret, transport }
 * // local development: call a receiver on this machine over plain http
 * const local = createHttpTransport({ urlPolicy: { allowHttp: true, allowHosts: ['127.0.0.1'] } })
 * // ...
 * await transport.close()
 * ```
 */
export function createHttpTransport(options: HttpTransportOptions = {}): HttpTransport {
  if (options === null || typeof options !== 'object') throw new TypeError('createHttpTransport options must be an object')
  checkOptionNames(options, HTTP_TRANSPORT_OPTION_NAMES, 'createHttpTransport')
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS
  if (typeof timeoutMs !== 'number' || !Number.isFinite(timeoutMs) || timeoutMs <= 0 || timeoutMs > 2 ** 31 - 1) {
    throw new TypeError('timeoutMs must be a positive number of milliseconds (at most 2^31 - 1)')
  }
  const maxResponseBytes = options.maxResponseBytes ?? DEFAULT_MAX_RESPONSE_BYTES
  if (!Number.isSafeInteger(maxResponseBytes) || maxResponseBytes < 0) {
    throw new TypeError('maxResponseBytes must be a non-negative integer')
  }
  const lookup: LookupFunction = options.lookup ?? (dnsLookup as LookupFunction)
  if (typeof lookup !== 'function') throw new TypeError('lookup must be a dns.lookup-compatible function')
  if (options.connections !== undefined && (!Number.isSafeInteger(options.connections) || options.connections < 1)) {
    throw new TypeError('connections must be a positive integer')
  }
  const keepAliveTimeoutMs = options.keepAliveTimeoutMs
  if (keepAliveTimeoutMs !== undefined && (!Number.isSafeInteger(keepAliveTimeoutMs) || keepAliveTimeoutMs < 1)) {
    throw new TypeError('keepAliveTimeoutMs must be a positive integer')
  }
  const policy = compileUrlPolicy(options.urlPolicy)
  const dial = baseConnector(options.connect, timeoutMs)

  const agent = new Agent({
    connect: guardedConnector(dial, lookup, policy, timeoutMs),
    // Our own timer bounds the whole exchange; these only keep undici's defaults from being longer.
    headersTimeout: timeoutMs,
    bodyTimeout: timeoutMs,
    ...(options.connections === undefined ? {} : { connections: options.connections }),
    ...(keepAliveTimeoutMs === undefined ? {} : { keepAliveTimeout: keepAliveTimeoutMs }),
  })
  let closed = false
  const deadlines: Deadlines = { first: undefined, last: undefined, timer: undefined }

  // The policy is fixed for the transport's life, so a URL that passed once passes again: the
  // checked parts are kept by the URL's text (parsing it and its address costs a few µs a send).
  // Bounded: cleared when full.
  const targets = new Map<string, Target>()
  const targetOf = (text: string): Target => {
    let target = targets.get(text)
    if (target === undefined) {
      const url = checkCallbackUrl(text, policy)
      target = { origin: url.origin, path: url.search === '' ? url.pathname : `${url.pathname}${url.search}`, host: url.hostname }
      if (targets.size >= TARGET_CACHE_SIZE) targets.clear()
      targets.set(text, target)
    }
    return target
  }

  const siblings: HttpTransport[] = []

  return {
    timeoutMs,
    dispatcher: agent,
    urlPolicy: options.urlPolicy,

    withUrlPolicy(urlPolicy: UrlPolicy): HttpTransport {
      const sibling = createHttpTransport({ ...options, urlPolicy })
      if (closed) void sibling.close()
      else siblings.push(sibling)
      return sibling
    },

    // Not an async function: it would wrap the exchange's promise in one more, and resolving a
    // promise with a promise costs extra turns of the microtask queue. Failures still reject.
    send(req: TransportRequest): Promise<TransportResponse> {
      try {
        if (closed) throw new DeliveryError('ERR_CALLBACK_CONNECTION', 'the HTTP transport is closed')
        const target = targetOf(req.url)
        const headers = requestHeaders(req.headers)
        const callerSignal = req.signal
        callerSignal?.throwIfAborted()
        return exchange(agent, target, headers, req.body, callerSignal, timeoutMs, maxResponseBytes, deadlines)
      } catch (error) {
        return Promise.reject(error)
      }
    },

    async close(): Promise<void> {
      if (closed) return
      closed = true
      await Promise.all([agent.close(), ...siblings.map((sibling) => sibling.close())])
    },
  }
}

function requestHeaders(given: Record<string, string>): Record<string, string> {
  const headers: Record<string, string> = { 'content-type': 'application/json' }
  if (given != null) for (const name of Object.keys(given)) headers[name.toLowerCase()] = given[name]!
  headers['user-agent'] = USER_AGENT
  return headers
}

/** What a send needs of a checked callback URL. */
interface Target {
  origin: string
  /** Path and query, as undici's `request` builds them from a URL. */
  path: string
  /** For messages: the host, never the path or query. */
  host: string
}

/** One exchange in flight: the undici handler and everything it needs, in one object. */
interface Exchange extends Dispatcher.DispatchHandler {
  readonly target: Target
  readonly limit: number
  readonly timeoutMs: number
  readonly started: number
  readonly resolve: (response: TransportResponse) => void
  readonly reject: (error: unknown) => void
  readonly callerSignal: AbortSignal | undefined
  onCallerAbort: (() => void) | undefined
  readonly deadlines: Deadlines
  /** When our timeout gives up on the exchange (performance.now() time). */
  readonly deadline: number
  /** Neighbours in the transport's deadline list while the exchange is in flight. */
  previous: Exchange | undefined
  next: Exchange | undefined
  abort: ((reason?: Error) => void) | undefined
  settled: boolean
  status: number
  rawHeaders: Buffer[] | undefined
  chunks: Buffer[] | undefined
  size: number
}

/**
 * One POST on the agent through undici's dispatcher interface: the status, headers and at most
 * `limit` bytes of the body, or a rejection. `request()` wraps the same dispatch in an
 * AsyncResource, a Readable for the body and an AbortSignal listener per request, and the timer
 * then needs an AbortController of its own; on loopback that cost about a third of the
 * transport's CPU per delivery. Here one object is the handler and holds the state, and one timer
 * covers the whole exchange. It speaks undici's callback interface (onConnect/onHeaders/...), the
 * one its client calls: a handler with the newer onRequestStart/onResponseStart methods is wrapped
 * in an adapter and a controller per request and its headers parsed by undici and again for the
 * trailers, together about 1 µs more per delivery (5 % of the transport's CPU).
 */
function exchange(
  agent: Dispatcher,
  target: Target,
  headers: Record<string, string>,
  body: string | Uint8Array,
  callerSignal: AbortSignal | undefined,
  timeoutMs: number,
  limit: number,
  deadlines: Deadlines,
): Promise<TransportResponse> {
  return new Promise((resolve, reject) => {
    const started = performance.now()
    // The handler's methods live on a shared prototype: written into the literal, they would be
    // five new closures per exchange.
    const x = {
      __proto__: exchangeHandler,
      target,
      limit,
      timeoutMs,
      started,
      deadlines,
      deadline: started + timeoutMs,
      previous: undefined,
      next: undefined,
      resolve,
      reject,
      callerSignal,
      onCallerAbort: undefined,
      abort: undefined,
      settled: false,
      status: 0,
      rawHeaders: undefined,
      chunks: undefined,
      size: 0,
    } as Exchange
    watch(deadlines, x)
    if (callerSignal !== undefined) {
      x.onCallerAbort = () => giveUp(x, callerSignal.reason)
      callerSignal.addEventListener('abort', x.onCallerAbort, { once: true })
    }
    try {
      agent.dispatch({ origin: target.origin, path: target.path, method: 'POST', headers, body }, x)
    } catch (error) {
      if (settle(x)) reject(deliveryError(error, target.host))
    }
  })
}

/** The undici handler methods of every {@link Exchange}, which is both handler and state. */
const exchangeHandler = {
  onConnect(this: Exchange, abort: (reason?: Error) => void) {
    this.abort = abort
    // Given up while waiting for DNS or a connection, when there was nothing to abort yet.
    if (this.settled) abort(new DeliveryError('ERR_CALLBACK_CONNECTION', 'the exchange was given up'))
  },
  onHeaders(this: Exchange, statusCode: number, rawHeaders: Buffer[]) {
    // 1xx answers are informational; the final status follows.
    if (statusCode >= 200) {
      this.status = statusCode
      this.rawHeaders = rawHeaders
    }
    return true
  },
  onData(this: Exchange, chunk: Buffer) {
    if (this.settled) return true
    const chunks = (this.chunks ??= [])
    if (this.size + chunk.byteLength <= this.limit) {
      chunks.push(chunk)
      this.size += chunk.byteLength
      return true
    }
    // Enough read: keep what fits and drop the connection rather than drain an endless body.
    chunks.push(chunk.subarray(0, this.limit - this.size))
    this.size = this.limit
    finish(this)
    this.abort?.(new DeliveryError('ERR_CALLBACK_CONNECTION', `the response body is longer than ${this.limit} bytes`))
    return true
  },
  onComplete(this: Exchange) {
    finish(this)
  },
  onError(this: Exchange, error: Error) {
    if (settle(this)) this.reject(deliveryError(error, this.target.host))
  },
}

/** Marks the exchange settled and stops its timer; `false` when it already was. */
function settle(x: Exchange): boolean {
  if (x.settled) return false
  x.settled = true
  unwatch(x.deadlines, x)
  if (x.onCallerAbort !== undefined) x.callerSignal!.removeEventListener('abort', x.onCallerAbort)
  return true
}

function finish(x: Exchange): void {
  if (!settle(x)) return
  const { chunks, size } = x
  const body = chunks === undefined || size === 0 ? '' : chunks.length === 1 ? chunks[0]!.toString('utf8') : Buffer.concat(chunks, size).toString('utf8')
  x.resolve({ status: x.status, headers: responseHeaders(x.rawHeaders), body, durationMs: performance.now() - x.started })
}

/**
 * undici's raw header pairs as one object, the way undici's own parse builds it: names in lower
 * case, values as latin1 text, a repeated header as an array of its values in order.
 */
function responseHeaders(raw: Buffer[] | undefined): Record<string, string | string[]> {
  const headers: Record<string, string | string[]> = {}
  if (raw === undefined) return headers
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!.toString('latin1').toLowerCase()
    const value = raw[i + 1]!.toString('latin1')
    const seen = Object.hasOwn(headers, name) ? headers[name] : undefined
    if (seen === undefined) {
      // A plain assignment to __proto__ would set the object's prototype instead.
      if (name === '__proto__') Object.defineProperty(headers, name, { value, enumerable: true, configurable: true, writable: true })
      else headers[name] = value
    } else if (typeof seen === 'string') headers[name] = [seen, value]
    else seen.push(value)
  }
  return headers
}

/** Our timeout or the caller's abort: reject now, and stop the request wherever it is. */
function giveUp(x: Exchange, reason: unknown): void {
  if (!settle(x)) return
  x.reject(reason)
  // Before the request is on a socket (DNS, connecting) there is nothing to abort yet; it is
  // aborted as soon as it gets one (onRequestStart).
  x.abort?.(reason as Error)
}

/**
 * The exchanges in flight on one transport, oldest first. All have the same `timeoutMs`, so this is
 * also deadline order, and one timer serves them all: armed for the first deadline, it times out
 * whatever is due when it fires and re-arms for the next. A timer per exchange (setTimeout and
 * clearTimeout each time) cost more than the list's few pointer writes.
 */
interface Deadlines {
  first: Exchange | undefined
  last: Exchange | undefined
  /** Held (ref'd) only while an exchange is in flight, as a timer per exchange would be. */
  timer: ReturnType<typeof setTimeout> | undefined
}

function watch(list: Deadlines, x: Exchange): void {
  const last = list.last
  x.previous = last
  list.last = x
  if (last === undefined) {
    list.first = x
    if (list.timer === undefined) armDeadlines(list, x.deadline - x.started)
    else list.timer.ref()
  } else {
    last.next = x
  }
}

function unwatch(list: Deadlines, x: Exchange): void {
  const { previous, next } = x
  if (previous === undefined) list.first = next
  else previous.next = next
  if (next === undefined) list.last = previous
  else next.previous = previous
  x.previous = undefined
  x.next = undefined
  if (list.first === undefined) list.timer?.unref()
}

function armDeadlines(list: Deadlines, ms: number): void {
  list.timer = setTimeout(deadlinesDue, Math.max(1, Math.ceil(ms)), list)
  if (list.first === undefined) list.timer.unref()
}

function deadlinesDue(list: Deadlines): void {
  list.timer = undefined
  const now = performance.now()
  // timeOut settles the exchange, which takes it off the list.
  for (let x = list.first; x !== undefined && x.deadline <= now; x = list.first) timeOut(x)
  if (list.first !== undefined) armDeadlines(list, list.first.deadline - now)
}

function timeOut(x: Exchange): void {
  // Built only when it fires: an Error captures a stack, and most attempts finish in time.
  giveUp(x, new DeliveryError('ERR_CALLBACK_TIMEOUT', `callback to ${x.target.host} timed out after ${x.timeoutMs} ms`))
}

function baseConnector(connect: HttpTransportOptions['connect'], timeoutMs: number): buildConnector.connector {
  if (typeof connect === 'function') return connect
  if (connect !== undefined && (connect === null || typeof connect !== 'object')) {
    throw new TypeError('connect must be undici connector options or a connector function')
  }
  const given = (connect ?? {}) as buildConnector.BuildOptions & { lookup?: unknown; socketPath?: unknown; path?: unknown }
  if (given.lookup !== undefined) throw new TypeError('connect.lookup is not supported: pass the resolver as the lookup option')
  if (given.socketPath != null || given.path != null) throw new TypeError('connect.socketPath is not supported by the HTTP transport')
  return buildConnector({ timeout: timeoutMs, ...given })
}

/**
 * Resolves the host through `lookup`, refuses the connection when any answer is forbidden, then
 * dials the vetted addresses (never a name), so what was checked is what is connected to.
 */
function guardedConnector(dial: buildConnector.connector, lookup: LookupFunction, policy: CompiledUrlPolicy, timeoutMs: number): buildConnector.connector {
  return (options, callback) => {
    // The transport checked the whole URL already; this repeats scheme and port for requests that
    // reach the agent some other way (the exposed dispatcher, a redirect followed by a caller).
    try {
      checkTarget(options.protocol, options.port, policy)
    } catch (error) {
      callback(error as Error, null)
      return
    }
    const hostname = options.hostname.startsWith('[') ? options.hostname.slice(1, -1) : options.hostname
    vettedAddresses(hostname, lookup, policy, timeoutMs).then(
      (addresses) => {
        const servername = options.servername ?? (isIP(hostname) === 0 ? hostname : undefined)
        dialFirstToAnswer(interleaveFamilies(addresses).slice(0, MAX_ADDRESSES_PER_CONNECTION), dial, options, servername, callback)
      },
      (error: Error) => callback(error, null),
    )
  }
}

/**
 * Addresses dialled per connection at most. Every address of the answer is still vetted (one
 * forbidden address refuses the name), but a name that resolves to a thousand must not cost a
 * thousand connects (times three with an attempt's quick retries): at most 8 per connection, so at
 * most 24 per attempt.
 */
const MAX_ADDRESSES_PER_CONNECTION = 8

/**
 * How long one address gets before the next is dialled as well: RFC 8305's "Connection Attempt
 * Delay", as node's own `autoSelectFamily` does it.
 */
const NEXT_ADDRESS_DELAY_MS = 250

/**
 * Happy Eyeballs (RFC 8305) over vetted addresses: dials the first, then the next as soon as one
 * fails in a way another address may not (refused, unreachable, timed out) or has had
 * {@link NEXT_ADDRESS_DELAY_MS} without an answer, so an address that silently drops packets (an
 * IPv6 route that goes nowhere, say) does not use up the whole attempt. The first socket wins;
 * any that connect later are closed. Another error (TLS, say) ends it at once; when every address
 * failed, the last error is reported.
 */
function dialFirstToAnswer(
  addresses: string[],
  dial: buildConnector.connector,
  options: buildConnector.Options,
  servername: string | undefined,
  callback: buildConnector.Callback,
): void {
  let settled = false
  let next = 0
  let pending = 0
  let delay: NodeJS.Timeout | undefined
  const settle = (error: Error | null, socket: Parameters<buildConnector.Callback>[1]) => {
    settled = true
    clearTimeout(delay)
    if (error !== null) callback(error, null)
    else callback(null, socket!)
  }
  const dialNext = () => {
    clearTimeout(delay)
    const target: buildConnector.Options = { ...options, hostname: addresses[next++]! }
    if (servername !== undefined) target.servername = servername
    if (next < addresses.length) {
      delay = setTimeout(dialNext, NEXT_ADDRESS_DELAY_MS)
      delay.unref()
    }
    pending++
    dial(target, (error, socket) => {
      pending--
      if (settled) {
        socket?.destroy()
        return
      }
      if (error === null) settle(null, socket)
      else if (!NEXT_ADDRESS_CODES.has(codeOf(error) ?? '')) settle(error, null)
      else if (next < addresses.length) dialNext()
      else if (pending === 0) settle(error, null)
    })
  }
  dialNext()
}

/** The addresses in the resolver's order, but alternating between IPv6 and IPv4 from the first one's family on (RFC 8305, section 4). */
function interleaveFamilies(addresses: string[]): string[] {
  const first = isIP(addresses[0]!)
  const same = addresses.filter((address) => isIP(address) === first)
  const other = addresses.filter((address) => isIP(address) !== first)
  if (other.length === 0) return addresses
  const ordered: string[] = []
  for (let i = 0; i < Math.max(same.length, other.length); i++) {
    if (i < same.length) ordered.push(same[i]!)
    if (i < other.length) ordered.push(other[i]!)
  }
  return ordered
}

async function vettedAddresses(hostname: string, lookup: LookupFunction, policy: CompiledUrlPolicy, timeoutMs: number): Promise<string[]> {
  checkHost(hostname.includes(':') ? `[${hostname}]` : hostname, policy)
  if (isIP(hostname) !== 0) return [hostname]
  const answers = await resolve(hostname, lookup, timeoutMs)
  const trusted = policy.allowNames.has(hostname.toLowerCase().replace(/\.+$/, ''))
  const addresses = new Set<string>()
  for (const answer of answers) {
    const address = typeof answer === 'string' ? answer : answer?.address
    // Any forbidden answer refuses the whole name: with a public and a private answer, the next
    // lookup (or the next address tried) could be the private one.
    if (!trusted || typeof address !== 'string' || isIP(address) === 0) checkAddress(String(address), policy, hostname)
    addresses.add(address as string)
  }
  if (addresses.size === 0) {
    throw new DeliveryError('ERR_CALLBACK_DNS', `callback host ${hostname} resolved to no address`)
  }
  return [...addresses]
}

/** A resolver that never answers must not hold a connection slot forever: it gets `timeoutMs`. */
function resolve(hostname: string, lookup: LookupFunction, timeoutMs: number): Promise<Array<LookupAddress | string>> {
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => {
      reject(new DeliveryError('ERR_CALLBACK_TIMEOUT', `resolving callback host ${hostname} timed out after ${timeoutMs} ms`))
    }, timeoutMs)
    try {
      lookup(hostname, { all: true, family: 0 }, (error, addresses: LookupAddress[] | string) => {
        clearTimeout(timer)
        if (error) reject(error)
        else resolvePromise(Array.isArray(addresses) ? addresses : [addresses])
      })
    } catch (error) {
      clearTimeout(timer)
      reject(error)
    }
  })
}

function codeOf(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code
  return typeof code === 'string' ? code : undefined
}

/** Maps what undici and node report to our codes, keeping the original as `cause`. */
function deliveryError(error: unknown, host: string): Error {
  // The policy may refuse inside the connector; undici hands that error back, possibly wrapped.
  for (let current: unknown = error, depth = 0; current != null && depth < 5; current = (current as { cause?: unknown }).cause, depth++) {
    if (current instanceof CallbackError) return current
  }
  const code = codeOf(error)
  if (code === 'UND_ERR_INVALID_ARG') return error as Error
  if (code !== undefined && DNS_CODES.has(code)) {
    return new DeliveryError('ERR_CALLBACK_DNS', `callback host ${host} could not be resolved (${code})`, { cause: error })
  }
  if (code !== undefined && TIMEOUT_CODES.has(code)) {
    return new DeliveryError('ERR_CALLBACK_TIMEOUT', `callback to ${host} timed out (${code})`, { cause: error })
  }
  if (code !== undefined && TLS_CODE.test(code)) {
    return new DeliveryError('ERR_CALLBACK_TLS', `TLS with ${host} failed (${code})`, { cause: error })
  }
  return new DeliveryError('ERR_CALLBACK_CONNECTION', `connection to ${host} failed${code === undefined ? '' : ` (${code})`}`, { cause: error })
}
