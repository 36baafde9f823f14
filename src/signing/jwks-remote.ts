/**
 * The receiving side of published keys: a sender's JWKS URL turned into the Ed25519 public keys
 * that verify its `v1a` signatures. jose's `createRemoteJWKSet` does the fetching, caching and
 * cooldown; this module bounds the exchange and routes it through the caller's fetch or undici
 * dispatcher (the SSRF-guarded agent).
 */
import { KeyObject } from 'node:crypto'
import { createRemoteJWKSet, customFetch, importJWK, type JSONWebKeySet, type JWK, type RemoteJWKSet } from 'jose'
import { fetch as undiciFetch, type Dispatcher } from 'undici'
import { CallbackError } from '../errors.ts'
import { PUBLIC_KEY_PREFIX } from './secrets.ts'

/** The fetch shape jose calls: a GET with `redirect: 'manual'` and an abort signal. */
export type JwksFetch = (
  url: string,
  init: { method: 'GET'; headers: Headers; redirect: 'manual'; signal: AbortSignal }
) => Promise<Response>

/** How a JWKS document is fetched. Shared by signing-key and encryption-key lookups. */
export interface JwksFetchOptions {
  /** Sends the request through this undici dispatcher, e.g. the sender's SSRF-guarded agent. */
  dispatcher?: Dispatcher | undefined
  /** A fetch implementation to use instead (takes precedence over `dispatcher`). */
  fetch?: JwksFetch | undefined
  /** Allow a plain `http:` JWKS URL (local development, tests). Default `false`. */
  allowHttp?: boolean | undefined
  /** Bound on the whole fetch, body included, ms. Default 5000. */
  timeoutMs?: number | undefined
  /** Largest JWKS document read, bytes. Default 256 KiB. */
  maxResponseBytes?: number | undefined
  /** Extra request headers (e.g. an API key the JWKS endpoint wants). */
  headers?: Record<string, string> | undefined
}

/** Options of {@link createRemoteJwks}. */
export interface RemoteJwksOptions extends JwksFetchOptions {
  /**
   * After a fetch, successful or not, how long no other is made, ms. Default 30 000. An unknown
   * signature waits it out, and so does a request while the JWKS cannot be loaded (it is refused
   * with the last failure instead of fetching again).
   */
  cooldownMs?: number | undefined
  /** How long fetched keys are used before they are fetched again, ms. Default 600 000 (10 min). */
  cacheMaxAgeMs?: number | undefined
  /** The clock for the cooldown and the keys' age. Default `() => new Date()`. */
  now?: (() => Date) | undefined
}

/**
 * The current Ed25519 public keys of a sender. Call it with `{ refresh: true }` after no key
 * matched: it fetches again unless the last fetch is younger than the cooldown, so a flood of bad
 * signatures costs at most one fetch per cooldown.
 */
export interface RemoteJwks {
  (options?: { refresh?: boolean }): Promise<KeyObject[]>
  /** The same keys as `whpk_…` strings, for `verifySignature(request, { publicKey })`. */
  publicKeys(options?: { refresh?: boolean }): Promise<string[]>
}

/** An opened remote key set and a counter that moves on every successful fetch. */
export interface RemoteKeySet {
  set: RemoteJWKSet
  /** Where the keys come from, for messages: origin and path only (a query may carry a token). */
  source: string
  generation(): number
  /** Milliseconds on the set's clock. */
  now(): number
  cooldownMs: number
  cacheMaxAgeMs: number
  /** Whether a failed fetch holds off the next one for a cooldown (receivers) or not (senders' attempts). */
  holdFailures: boolean
  /** When the last fetch started, when the last successful one did, and why the last one failed. */
  state: { attemptedAt?: number; loadedAt?: number; failure?: CallbackError | undefined }
}

const DEFAULT_MAX_RESPONSE_BYTES = 256 * 1024

function nonNegative(value: unknown, option: string): void {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
    throw new TypeError(`${option} must be a non-negative number`)
  }
}

async function readCapped(response: Response, maxBytes: number): Promise<Uint8Array> {
  const declared = Number(response.headers.get('content-length'))
  if (declared > maxBytes) {
    await response.body?.cancel()
    throw new CallbackError('ERR_CALLBACK_JWKS', `the JWKS response is larger than maxResponseBytes (${maxBytes})`)
  }
  const chunks: Uint8Array[] = []
  let size = 0
  if (response.body) {
    for await (const chunk of response.body as AsyncIterable<Uint8Array>) {
      size += chunk.byteLength
      if (size > maxBytes) {
        await response.body.cancel().catch(() => {})
        throw new CallbackError('ERR_CALLBACK_JWKS', `the JWKS response is larger than maxResponseBytes (${maxBytes})`)
      }
      chunks.push(chunk)
    }
  }
  return Buffer.concat(chunks)
}

/**
 * Opens a jose remote JWKS for `url` whose fetch goes through the caller's fetch or dispatcher,
 * reads at most `maxResponseBytes` and counts successful fetches. Validates every option once.
 */
export function openRemoteKeySet(
  url: string | URL,
  options: JwksFetchOptions & { cooldownMs?: number | undefined; cacheMaxAgeMs?: number | undefined; now?: (() => Date) | undefined; holdFailures?: boolean | undefined },
  option = 'url'
): RemoteKeySet {
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch (cause) {
    throw new TypeError(`${option} must be an absolute URL`, { cause })
  }
  const { allowHttp = false, timeoutMs = 5000, maxResponseBytes = DEFAULT_MAX_RESPONSE_BYTES } = options
  const { cooldownMs = 30_000, cacheMaxAgeMs = 600_000, dispatcher, fetch: fetchOption, headers } = options
  if (parsed.protocol !== 'https:' && !(allowHttp && parsed.protocol === 'http:')) {
    throw new TypeError(`${option} must use https: (allowHttp permits http:)`)
  }
  if (!Number.isInteger(timeoutMs) || timeoutMs <= 0) throw new TypeError('timeoutMs must be a positive integer')
  if (!Number.isInteger(maxResponseBytes) || maxResponseBytes <= 0) {
    throw new TypeError('maxResponseBytes must be a positive integer')
  }
  nonNegative(cooldownMs, 'cooldownMs')
  nonNegative(cacheMaxAgeMs, 'cacheMaxAgeMs')
  const { now: clock, holdFailures = false } = options
  if (clock !== undefined && typeof clock !== 'function') throw new TypeError('now must be a function returning a Date')
  if (fetchOption !== undefined && typeof fetchOption !== 'function') throw new TypeError('fetch must be a function')
  if (dispatcher !== undefined && typeof dispatcher?.dispatch !== 'function') {
    throw new TypeError('dispatcher must be an undici Dispatcher')
  }

  let fetched = 0
  const send: JwksFetch =
    fetchOption ??
    (dispatcher
      ? (target, init) =>
          undiciFetch(target, { ...init, headers: [...init.headers], dispatcher }) as unknown as Promise<Response>
      : (target, init) => fetch(target, init))

  const bounded: JwksFetch = async (target, init) => {
    const response = await send(target, init)
    // jose refuses anything but 200; a redirect is never followed (redirect: 'manual').
    if (response.status !== 200) {
      await response.body?.cancel().catch(() => {})
      return new Response(null, { status: response.status })
    }
    const body = await readCapped(response, maxResponseBytes)
    fetched += 1
    return new Response(body, { status: 200, headers: { 'content-type': 'application/json' } })
  }

  const set = createRemoteJWKSet(parsed, {
    timeoutDuration: timeoutMs,
    cooldownDuration: cooldownMs,
    cacheMaxAge: cacheMaxAgeMs,
    ...(headers === undefined ? {} : { headers }),
    [customFetch]: bounded
  })
  return {
    set,
    source: `${parsed.origin}${parsed.pathname}`,
    generation: () => fetched,
    now: clock === undefined ? Date.now : () => clock().getTime(),
    cooldownMs,
    cacheMaxAgeMs,
    holdFailures,
    state: {}
  }
}

/**
 * Loads the key set when it was never loaded, is stale, or (`refresh`) is out of its cooldown.
 * The clock and the cooldown are ours, not jose's: jose starts its cooldown only after a successful
 * fetch, so a JWKS that keeps failing was fetched again for every request that asked.
 */
export async function loadKeySet(remote: RemoteKeySet, refresh: boolean): Promise<JSONWebKeySet> {
  const { set, state } = remote
  const now = remote.now()
  const loaded = set.jwks() !== undefined
  const needed = !loaded || state.loadedAt === undefined || now - state.loadedAt >= remote.cacheMaxAgeMs
  const coolingDown = state.attemptedAt !== undefined && now - state.attemptedAt < remote.cooldownMs
  if (needed || (refresh && !coolingDown)) {
    if (remote.holdFailures && coolingDown && state.failure !== undefined) {
      // The last fetch failed less than a cooldown ago: refuse with it (keys we must have) or keep
      // the keys we have (a refresh), rather than asking a failing endpoint again.
      if (needed) {
        const wait = Math.max(0, state.attemptedAt! + remote.cooldownMs - now)
        throw new CallbackError('ERR_CALLBACK_JWKS', `${state.failure.message}; not fetched again for ${wait} ms`, { cause: state.failure })
      }
    } else {
      state.attemptedAt = now
      try {
        await set.reload()
        state.loadedAt = now
        state.failure = undefined
      } catch (cause) {
        const failure =
          cause instanceof CallbackError ? cause : new CallbackError('ERR_CALLBACK_JWKS', `could not fetch the JWKS from ${remote.source}`, { cause })
        state.failure = failure
        throw failure
      }
    }
  }
  const jwks = set.jwks()
  if (jwks === undefined) throw new CallbackError('ERR_CALLBACK_JWKS', `no JWKS loaded from ${remote.source}`)
  return jwks
}

function isVerificationKey(jwk: JWK): boolean {
  return (
    jwk.kty === 'OKP' &&
    jwk.crv === 'Ed25519' &&
    (jwk.use === undefined || jwk.use === 'sig') &&
    (jwk.key_ops === undefined || (Array.isArray(jwk.key_ops) && jwk.key_ops.includes('verify'))) &&
    (jwk.alg === undefined || jwk.alg === 'EdDSA' || jwk.alg === 'Ed25519')
  )
}

/**
 * The Ed25519 public keys a sender publishes at a JWKS URL, for verifying its `v1a` signatures.
 * Keys are cached (`cacheMaxAgeMs`); an unknown signature may trigger one refetch per
 * `cooldownMs`, and so may requests while the JWKS cannot be loaded: within the cooldown after a
 * failed fetch they are refused with that failure, without fetching. The fetch goes through `dispatcher` (give it the guarded agent) or `fetch`, bounded
 * by `timeoutMs` and `maxResponseBytes`. Failures reject with a `CallbackError` coded
 * `ERR_CALLBACK_JWKS`; a JWKS that publishes private key material is refused whole.
 *
 * @example
 * ```ts
 * const senderKeys = createRemoteJwks('https://api.example.com/.well-known/jwks.json')
 * const verify = async (request: VerifiableRequest) => {
 *   try {
 *     return await verifySignature(request, { publicKey: await senderKeys.publicKeys() })
 *   } catch (error) {
 *     if ((error as CallbackError).code !== 'ERR_CALLBACK_SIGNATURE_MISMATCH') throw error
 *     // The sender may have rotated: look again (at most once per cooldown).
 *     return verifySignature(request, { publicKey: await senderKeys.publicKeys({ refresh: true }) })
 *   }
 * }
 * ```
 */
export function createRemoteJwks(url: string | URL, options: RemoteJwksOptions = {}): RemoteJwks {
  const remote = openRemoteKeySet(url, { ...options, holdFailures: true })
  const imported = new Map<string, KeyObject>()
  let cached: { generation: number; keys: KeyObject[]; publicKeys: string[] } | undefined

  const importKeys = async (jwks: JSONWebKeySet): Promise<KeyObject[]> => {
    const candidates = jwks.keys.filter(isVerificationKey)
    if (candidates.some((jwk) => jwk.d !== undefined)) {
      throw new CallbackError('ERR_CALLBACK_JWKS', `the JWKS at ${remote.source} publishes private key material`)
    }
    const keys: KeyObject[] = []
    for (const jwk of candidates) {
      const x = jwk.x as string
      let key = imported.get(x)
      if (key === undefined) {
        try {
          key = KeyObject.from(
            (await importJWK({ kty: 'OKP', crv: 'Ed25519', x }, 'Ed25519')) as Parameters<typeof KeyObject.from>[0]
          )
        } catch {
          continue // one malformed entry must not take the sender's other keys down with it
        }
        imported.set(x, key)
      }
      keys.push(key)
    }
    if (keys.length === 0) throw new CallbackError('ERR_CALLBACK_JWKS', `the JWKS at ${remote.source} has no Ed25519 key`)
    return keys
  }

  const current = async (refresh: boolean) => {
    const jwks = await loadKeySet(remote, refresh)
    const generation = remote.generation()
    if (cached?.generation !== generation) {
      const keys = await importKeys(jwks)
      const publicKeys = keys.map((key) => PUBLIC_KEY_PREFIX + Buffer.from(key.export({ format: 'jwk' }).x as string, 'base64url').toString('base64'))
      cached = { generation, keys, publicKeys }
    }
    return cached
  }
  return Object.assign(async ({ refresh = false } = {}) => (await current(refresh)).keys, {
    publicKeys: async ({ refresh = false } = {}) => (await current(refresh)).publicKeys
  })
}
