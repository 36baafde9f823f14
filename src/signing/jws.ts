/**
 * Published Ed25519 keys (`v1a`) as a JSON Web Key Set: conversions between the Standard Webhooks
 * key strings (`whsk_…`, `whpk_…`) and OKP JWKs, key ids, a key ring for rotation and a ready
 * request handler that serves the set.
 */
import { createPublicKey } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { calculateJwkThumbprint, type JSONWebKeySet, type JWK } from 'jose'
import { decodePublicKey, decodeSigningKey, PUBLIC_KEY_PREFIX, SIGNING_KEY_PREFIX } from './secrets.ts'

/** An Ed25519 public key as published in a JWKS. */
export interface PublishedSigningJwk {
  kty: 'OKP'
  crv: 'Ed25519'
  /** base64url of the 32 public key bytes. */
  x: string
  /** RFC 7638 thumbprint unless the key ring gave one. */
  kid: string
  use: 'sig'
}

/** The JWKS that `publicJwks` returns and `createJwksHandler` serves. */
export interface SigningJwks extends JSONWebKeySet {
  keys: PublishedSigningJwk[]
}

/** One key of a {@link KeyRing}. */
export interface KeyRingEntry {
  /** `whsk_…` Ed25519 signing key. */
  signingKey: string
  /** Key id to publish. Default: the RFC 7638 thumbprint of the public key. */
  kid?: string | undefined
  /** The key signs from this instant on; it is published from the moment it is in the ring. */
  notBefore?: Date | undefined
  /** The key stops signing at this instant; it stays published for `graceMs` more. */
  notAfter?: Date | undefined
}

/** Options of {@link createKeyRing}. */
export interface KeyRingOptions {
  /** The clock. Default `() => new Date()`. */
  now?: (() => Date) | undefined
  /**
   * How long a key stays published after its `notAfter`, ms. Default one hour: it covers requests
   * signed just before the switch and receivers whose JWKS cache is still young.
   */
  graceMs?: number | undefined
}

/**
 * Keys over time: which sign now, which are published. A key is published as soon as it is in
 * the ring, so receivers can fetch it before its `notBefore`; it signs inside
 * `[notBefore, notAfter)`; it stays published (accepted) until `notAfter + graceMs`.
 */
export interface KeyRing {
  /** The `whsk_…` keys that sign at this instant (every one of them signs: one `v1a` entry each). */
  signingKeys(): string[]
  /** The `whpk_…` keys published at this instant, for receivers in the same process. */
  publicKeys(): string[]
  /** The JWKS to publish at this instant. */
  publicJwks(): Promise<SigningJwks>
}

/** What {@link publicJwks} and {@link createJwksHandler} publish. */
export type JwksSource = string | readonly string[] | KeyRing

/** Options of {@link createJwksHandler}. */
export interface JwksHandlerOptions {
  /** `cache-control: public, max-age=…`, seconds. Default 300. */
  maxAgeSeconds?: number | undefined
}

/** A Node `(req, res)` handler; it also works as Express middleware (`app.get(path, handler)`). */
export type JwksHandler = (req: IncomingMessage, res: ServerResponse) => void

const BASE64URL = /^[A-Za-z0-9_-]+$/

function decodeBase64url(value: unknown, length: number, option: string): Buffer {
  const bytes = typeof value === 'string' && BASE64URL.test(value) ? Buffer.from(value, 'base64url') : undefined
  if (bytes?.length !== length || bytes.toString('base64url') !== value) {
    throw new TypeError(`${option} must be the base64url of ${length} bytes`)
  }
  return bytes
}

function okpJwk(jwk: { x?: string | undefined; d?: string | undefined }): JWK {
  return jwk.d === undefined
    ? { kty: 'OKP', crv: 'Ed25519', x: jwk.x as string }
    : { kty: 'OKP', crv: 'Ed25519', x: jwk.x as string, d: jwk.d }
}

function assertEd25519Jwk(jwk: unknown, option: string): asserts jwk is JWK {
  if (typeof jwk !== 'object' || jwk === null || (jwk as JWK).kty !== 'OKP' || (jwk as JWK).crv !== 'Ed25519') {
    throw new TypeError(`${option} must be an OKP JWK with crv "Ed25519"`)
  }
}

/**
 * The private OKP JWK (`d` and `x`) of a `whsk_…` signing key.
 *
 * @example
 * ```ts
 * const jwk = signingKeyToJwk(process.env.CALLBACK_SIGNING_KEY!) // { kty: 'OKP', crv: 'Ed25519', x, d }
 * ```
 */
export function signingKeyToJwk(signingKey: string): JWK {
  // secrets.ts decodes strictly and checks that the public half belongs to the seed.
  return okpJwk(decodeSigningKey(signingKey, 'signingKey').export({ format: 'jwk' }))
}

/**
 * The public OKP JWK of a `whpk_…` public key, or of the public half of a `whsk_…` signing key.
 *
 * @example
 * ```ts
 * publicKeyToJwk('whpk_…') // { kty: 'OKP', crv: 'Ed25519', x: '…' }
 * ```
 */
export function publicKeyToJwk(key: string): JWK {
  return okpJwk({ x: publicX(key) })
}

/** The base64url public key of a `whsk_…` or `whpk_…` string; errors name `option`. */
function publicX(key: unknown, option?: string): string {
  const decoded =
    typeof key === 'string' && key.startsWith(SIGNING_KEY_PREFIX)
      ? createPublicKey(decodeSigningKey(key, option ?? 'signingKey'))
      : decodePublicKey(key, option ?? 'publicKey')
  return decoded.export({ format: 'jwk' }).x as string
}

/**
 * The `whsk_…` signing key (base64 of seed ‖ public key) of a private Ed25519 JWK.
 *
 * @example
 * ```ts
 * const { privateKey } = await generateKeyPair('Ed25519', { extractable: true }) // jose
 * const signingKey = jwkToSigningKey(await exportJWK(privateKey))
 * ```
 */
export function jwkToSigningKey(jwk: JWK): string {
  assertEd25519Jwk(jwk, 'jwk')
  const seed = decodeBase64url(jwk.d, 32, 'jwk.d')
  const publicKey = decodeBase64url(jwk.x, 32, 'jwk.x')
  const signingKey = SIGNING_KEY_PREFIX + Buffer.concat([seed, publicKey]).toString('base64')
  decodeSigningKey(signingKey, 'jwk') // refuses an `x` that does not belong to `d`
  return signingKey
}

/**
 * The `whpk_…` public key of an Ed25519 JWK (private or public).
 *
 * @example
 * ```ts
 * const publicKey = jwkToPublicKey({ kty: 'OKP', crv: 'Ed25519', x: '…' }) // 'whpk_…'
 * ```
 */
export function jwkToPublicKey(jwk: JWK): string {
  assertEd25519Jwk(jwk, 'jwk')
  return PUBLIC_KEY_PREFIX + decodeBase64url(jwk.x, 32, 'jwk.x').toString('base64')
}

/**
 * The key id a key is published under: the RFC 7638 SHA-256 thumbprint of its public JWK, so
 * sender and receiver derive the same id without agreeing on anything.
 *
 * @example
 * ```ts
 * await keyId('whpk_…') // 'kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k'
 * ```
 */
export async function keyId(key: string | JWK): Promise<string> {
  const jwk = typeof key === 'string' ? publicKeyToJwk(key) : key
  if (typeof key !== 'string') assertEd25519Jwk(jwk, 'key')
  return calculateJwkThumbprint({ kty: 'OKP', crv: 'Ed25519', x: jwk.x as string }, 'sha256')
}

interface RingKey {
  signingKey: string
  publicKey: string
  jwk: { kty: 'OKP'; crv: 'Ed25519'; x: string }
  kid: string | undefined
  notBefore: number
  notAfter: number
}

function toDate(value: unknown, option: string): number | undefined {
  if (value === undefined) return undefined
  if (!(value instanceof Date) || Number.isNaN(value.getTime())) throw new TypeError(`${option} must be a valid Date`)
  return value.getTime()
}

/**
 * A key ring for rotating `v1a` signing keys without a window in which receivers cannot verify.
 *
 * Rotation: add the new key with a `notBefore` at least one receiver cache lifetime ahead (it is
 * published at once, signs from then on) and give the old key the same instant as `notAfter` (it
 * stops signing then and stays published for `graceMs`). Remove the old entry any time after that.
 *
 * @example
 * ```ts
 * const ring = createKeyRing([
 *   { signingKey: oldKey, notAfter: new Date('2025-07-01T00:00:00Z') },
 *   { signingKey: newKey, notBefore: new Date('2025-07-01T00:00:00Z') },
 * ])
 * app.get('/.well-known/jwks.json', createJwksHandler(ring))
 * await deliver(task.id, result, { store, signingKey: ring.signingKeys() })
 * ```
 */
export function createKeyRing(entries: readonly KeyRingEntry[], options: KeyRingOptions = {}): KeyRing {
  if (!Array.isArray(entries) || entries.length === 0) throw new TypeError('entries must be a non-empty array')
  const { now = () => new Date(), graceMs = 60 * 60 * 1000 } = options
  if (typeof now !== 'function') throw new TypeError('now must be a function returning a Date')
  if (!Number.isFinite(graceMs) || graceMs < 0) throw new TypeError('graceMs must be a non-negative number')

  const seen = new Set<string>()
  const keys: RingKey[] = entries.map((entry, index) => {
    const option = `entries[${index}]`
    if (typeof entry !== 'object' || entry === null) throw new TypeError(`${option} must be an object`)
    if (typeof entry.signingKey !== 'string' || !entry.signingKey.startsWith(SIGNING_KEY_PREFIX)) {
      throw new TypeError(`${option}.signingKey must be a "${SIGNING_KEY_PREFIX}…" signing key`)
    }
    const x = publicX(entry.signingKey, `${option}.signingKey`)
    if (seen.has(x)) throw new TypeError(`${option}.signingKey is listed twice`)
    seen.add(x)
    if (entry.kid !== undefined && (typeof entry.kid !== 'string' || entry.kid === '')) {
      throw new TypeError(`${option}.kid must be a non-empty string`)
    }
    const notBefore = toDate(entry.notBefore, `${option}.notBefore`) ?? -Infinity
    const notAfter = toDate(entry.notAfter, `${option}.notAfter`) ?? Infinity
    if (notBefore >= notAfter) throw new TypeError(`${option}.notBefore must be before its notAfter`)
    return {
      signingKey: entry.signingKey,
      publicKey: PUBLIC_KEY_PREFIX + Buffer.from(x, 'base64url').toString('base64'),
      jwk: { kty: 'OKP', crv: 'Ed25519', x },
      kid: entry.kid,
      notBefore,
      notAfter
    }
  })

  const instant = (): number => now().getTime()
  const published = (at: number) => keys.filter((key) => at < key.notAfter + graceMs)

  return {
    signingKeys() {
      const at = instant()
      return keys.filter((key) => key.notBefore <= at && at < key.notAfter).map((key) => key.signingKey)
    },
    publicKeys() {
      return published(instant()).map((key) => key.publicKey)
    },
    async publicJwks() {
      const current = published(instant())
      for (const key of current) key.kid ??= await calculateJwkThumbprint(key.jwk, 'sha256')
      return { keys: current.map((key) => ({ ...key.jwk, kid: key.kid as string, use: 'sig' as const })) }
    }
  }
}

function isKeyRing(source: JwksSource): source is KeyRing {
  return typeof source === 'object' && !Array.isArray(source)
}

/** Validates a list of key strings once and returns the publishing function for it. */
function staticJwks(source: string | readonly string[]): () => Promise<SigningJwks> {
  const list: readonly unknown[] = typeof source === 'string' ? [source] : source
  const byX = new Map<string, { kty: 'OKP'; crv: 'Ed25519'; x: string }>()
  list.forEach((key, index) => {
    const option = typeof source === 'string' ? 'keys' : `keys[${index}]`
    if (typeof key !== 'string') throw new TypeError(`${option} must be a "whsk_…" or "whpk_…" key string`)
    const x = publicX(key, option)
    byX.set(x, { kty: 'OKP', crv: 'Ed25519', x })
  })
  let jwks: Promise<SigningJwks> | undefined
  return () =>
    (jwks ??= Promise.all(
      [...byX.values()].map(async (jwk) => ({ ...jwk, kid: await calculateJwkThumbprint(jwk, 'sha256'), use: 'sig' as const }))
    ).then((keys) => ({ keys })))
}

function jwksOf(source: JwksSource): () => Promise<SigningJwks> {
  if (isKeyRing(source)) {
    if (typeof source.publicJwks !== 'function') throw new TypeError('keys must be key strings or a key ring')
    return () => source.publicJwks()
  }
  if (typeof source !== 'string' && !Array.isArray(source)) throw new TypeError('keys must be key strings or a key ring')
  return staticJwks(source)
}

/**
 * The public JWKS of Ed25519 keys: only `kty`, `crv`, `x`, `kid` and `use: 'sig'` per key, never
 * private material. Takes `whsk_…` or `whpk_…` strings (one or many) or a {@link KeyRing}.
 *
 * @example
 * ```ts
 * const jwks = await publicJwks(process.env.CALLBACK_SIGNING_KEY!)
 * // { keys: [{ kty: 'OKP', crv: 'Ed25519', x: '…', kid: '…', use: 'sig' }] }
 * return Response.json(jwks, { headers: { 'content-type': 'application/jwk-set+json' } }) // fetch frameworks
 * ```
 */
export function publicJwks(keys: JwksSource): Promise<SigningJwks> {
  return jwksOf(keys)()
}

/**
 * A request handler that serves the public JWKS (`GET`/`HEAD`, `application/jwk-set+json`,
 * cacheable) for receivers to fetch. With a key ring it serves what is published at request time.
 *
 * @example
 * ```ts
 * const ring = createKeyRing([{ signingKey: process.env.CALLBACK_SIGNING_KEY! }])
 * app.get('/.well-known/jwks.json', createJwksHandler(ring)) // Express
 * http.createServer(createJwksHandler(ring)).listen(8080) // node:http
 * ```
 */
export function createJwksHandler(keys: JwksSource, options: JwksHandlerOptions = {}): JwksHandler {
  const jwks = jwksOf(keys)
  let { maxAgeSeconds } = options
  maxAgeSeconds ??= 300
  if (!Number.isInteger(maxAgeSeconds) || maxAgeSeconds < 0) {
    throw new TypeError('maxAgeSeconds must be a non-negative integer')
  }
  const cacheControl = `public, max-age=${maxAgeSeconds}`
  return (req, res) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'application/problem+json' })
      res.end(JSON.stringify({ title: 'Method Not Allowed', status: 405 }))
      return
    }
    jwks().then(
      (set) => {
        const body = JSON.stringify(set)
        res.writeHead(200, {
          'content-type': 'application/jwk-set+json',
          'content-length': Buffer.byteLength(body),
          'cache-control': cacheControl
        })
        res.end(req.method === 'HEAD' ? undefined : body)
      },
      () => {
        // Nothing from the failure goes out: it could only concern key material.
        res.writeHead(500, { 'content-type': 'application/problem+json' })
        res.end(JSON.stringify({ title: 'JWKS unavailable', status: 500 }))
      }
    )
  }
}
