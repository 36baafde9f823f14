/**
 * The receiving half of Standard Webhooks 1.0: checks `webhook-id`, `webhook-timestamp` and
 * `webhook-signature` (or their `svix-*` twins) against the raw body received.
 */
import { createHmac, timingSafeEqual, verify as ed25519Verify } from 'node:crypto'
import type { KeyObject } from 'node:crypto'
import { SignatureVerificationError } from './errors.ts'
import type { BodyLike, HeadersLike, VerifiedCallback, VerifyOptions } from './types.ts'
import { createRemoteJwks } from './signing/jwks-remote.ts'
import type { RemoteJwks } from './signing/jwks-remote.ts'
import { decodePublicKey, decodeSecret, listOption } from './signing/secrets.ts'

/** What a verifier reads: the headers and the raw body, exactly as received. */
export interface VerifiableRequest {
  headers: HeadersLike
  body: BodyLike
}

/** A compiled verifier: options checked once, called for every request. */
export interface Verifier {
  <T = unknown>(request: VerifiableRequest): Promise<VerifiedCallback<T>>
  /**
   * Throws the `SignatureVerificationError` that the headers alone already decide, whatever the
   * body: missing headers, a timestamp outside the tolerance, a signature list that is malformed or
   * holds more than 16 entries, or no entry of a kind these keys can check. A receiver calls it
   * before reading the body, so a request that can never verify costs no body read.
   */
  checkHeaders(headers: HeadersLike): void
}

const DEFAULT_TOLERANCE_SECONDS = 300
// 16 digits keep the value a safe integer; more cannot be a Unix time in seconds anyway.
const MAX_TIMESTAMP_DIGITS = 16
const UNKNOWN_VERSION = /^v[0-9]+[a-z]?$/

// Value of each base64 character, -1 for anything else. Signatures are checked in place against it
// (no regex, no copy) because this runs on every request.
const BASE64_VALUE = new Int8Array(128).fill(-1)
for (const [index, char] of [...'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'].entries()) {
  BASE64_VALUE[char.charCodeAt(0)] = index
}

// The HMAC digest is taken as a latin1 string rather than a Buffer, and both sides of the
// comparison are written into these two reused buffers: node builds a Buffer returned from native
// code (digest(), Buffer.from(text, 'base64')) at a cost of about half a microsecond each, an
// eighth of a whole 1 KiB verify. Verification is synchronous, so nothing else uses them meanwhile.
const EXPECTED = Buffer.alloc(32)
const GIVEN = Buffer.alloc(32)

/** Decodes `text[start, start + 43)`, already checked as a canonical v1 signature, into `GIVEN`. */
function decodeV1Signature(text: string, start: number): Buffer {
  let at = 0
  for (let i = start; i < start + 40; i += 4) {
    const word =
      (BASE64_VALUE[text.charCodeAt(i)]! << 18) |
      (BASE64_VALUE[text.charCodeAt(i + 1)]! << 12) |
      (BASE64_VALUE[text.charCodeAt(i + 2)]! << 6) |
      BASE64_VALUE[text.charCodeAt(i + 3)]!
    GIVEN[at++] = word >> 16
    GIVEN[at++] = (word >> 8) & 255
    GIVEN[at++] = word & 255
  }
  const word =
    (BASE64_VALUE[text.charCodeAt(start + 40)]! << 18) |
    (BASE64_VALUE[text.charCodeAt(start + 41)]! << 12) |
    (BASE64_VALUE[text.charCodeAt(start + 42)]! << 6)
  GIVEN[at++] = word >> 16
  GIVEN[at] = (word >> 8) & 255
  return GIVEN
}

/** Whether the latin1 `digest` equals `given`, in constant time. */
function digestMatches(digest: string, given: Buffer): boolean {
  for (let i = 0; i < 32; i++) EXPECTED[i] = digest.charCodeAt(i)
  return timingSafeEqual(EXPECTED, given)
}

/**
 * Whether `text[start, end)` is the canonical, padded base64 of exactly `bytes` bytes (32 for v1,
 * 64 for v1a): the last character carries no stray bits, so one signature has exactly one accepted
 * spelling, as in the reference libraries (which compare the base64 text).
 */
function isCanonicalSignature(text: string, start: number, end: number, bytes: 32 | 64): boolean {
  const padding = bytes === 32 ? 1 : 2 // 32 bytes → 43 characters + '=', 64 → 86 + '=='
  const length = bytes === 32 ? 44 : 88
  if (end - start !== length) return false
  const last = end - padding - 1
  for (let i = start; i < last; i++) {
    const code = text.charCodeAt(i)
    if (code > 127 || BASE64_VALUE[code]! < 0) return false
  }
  const code = text.charCodeAt(last)
  if (code > 127) return false
  const value = BASE64_VALUE[code]!
  // The last data character holds 4 (v1) or 2 (v1a) bits of data; the rest must be zero.
  if (value < 0 || (value & (bytes === 32 ? 3 : 15)) !== 0) return false
  for (let i = last + 1; i < end; i++) if (text.charCodeAt(i) !== 61 /* = */) return false
  return true
}

/**
 * Most entries a signature header may hold. A sender sends one per key it signs with, a few while
 * it rotates; a header with more is refused as malformed before anything is hashed.
 */
const MAX_SIGNATURE_ENTRIES = 16

/**
 * Most distinct `v1a` entries checked per request. Each check hashes the whole body once per
 * configured key, so this bounds a forged request at twice the work of checking one genuine
 * signature; a sender signs with one key, two while it rotates. Later `v1a` entries are ignored.
 */
const MAX_ED25519_ENTRIES = 2

function noWellFormedEntry(): SignatureVerificationError {
  return new SignatureVerificationError(
    'ERR_CALLBACK_SIGNATURE_MALFORMED',
    'webhook-signature holds no well-formed "v1,<base64>" or "v1a,<base64>" entry'
  )
}

function tooManyEntries(): SignatureVerificationError {
  return new SignatureVerificationError(
    'ERR_CALLBACK_SIGNATURE_MALFORMED',
    `webhook-signature holds more than ${MAX_SIGNATURE_ENTRIES} entries`
  )
}

// The Ed25519 group order L, little-endian, as S is encoded.
const GROUP_ORDER = Buffer.from('edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010', 'hex')

/**
 * False for 64 bytes that no Ed25519 verification can accept, decided without hashing: S must be
 * below the group order (RFC 8032 5.1.7), and R, compared as bytes with a canonical encoding, must
 * have its y coordinate below p = 2^255 - 19.
 */
function couldBeEd25519Signature(signature: Buffer): boolean {
  if (signature.length !== 64) return false
  for (let i = 31; i >= 0; i--) {
    const s = signature[32 + i]!
    const l = GROUP_ORDER[i]!
    if (s < l) break
    if (s > l || i === 0) return false
  }
  // y >= p only when its bytes read ed..ff ff..ff 7f (sign bit aside).
  if ((signature[31]! & 0x7f) !== 0x7f || signature[0]! < 0xed) return true
  for (let i = 1; i < 31; i++) if (signature[i] !== 0xff) return true
  return false
}

/** The timestamp header as a number, or -1 unless it is 1 to 16 ASCII digits. */
function parseTimestamp(text: string): number {
  const length = text.length
  if (length > MAX_TIMESTAMP_DIGITS) return -1
  let value = 0
  for (let i = 0; i < length; i++) {
    const digit = text.charCodeAt(i) - 48
    if (digit < 0 || digit > 9) return -1
    value = value * 10 + digit
  }
  return value
}

// Decoded keys by their text, so `verifySignature(request, { secret })` with a fresh options object
// per call does not pay for base64 and key import every time. One map per kind of key: a `whsec_`
// string given as `publicKey` must fail as such, not find the secret decoded earlier. Bounded:
// cleared when full.
const KEY_CACHE_LIMIT = 256
const secretCache = new Map<string, KeyObject>()
const publicKeyCache = new Map<string, KeyObject>()

function cachedKey(
  cache: Map<string, KeyObject>,
  value: unknown,
  option: string,
  decode: (value: unknown, option: string) => KeyObject
): KeyObject {
  if (typeof value === 'string') {
    const hit = cache.get(value)
    if (hit !== undefined) return hit
  }
  const key = decode(value, option)
  if (cache.size >= KEY_CACHE_LIMIT) cache.clear()
  cache.set(value as string, key)
  return key
}

const decodeVerifySecret = (value: unknown, option: string): KeyObject => decodeSecret(value, option, 'verify')

/**
 * Checks the options once and returns a function that verifies requests with them. Throws a
 * `TypeError` naming `secret`, `publicKey`, `toleranceSeconds` or `now` for a bad option, or when
 * neither a secret nor a public key is given. The function resolves with the verified callback or
 * rejects with a `SignatureVerificationError` whose `code` says why.
 *
 * @example
 * ```ts
 * const verify = createVerifier({ secret: process.env.CALLBACK_SECRET })
 * const callback = await verify({ headers: req.headers, body: rawBody })
 * callback.id // dedupe on it
 * ```
 */
export function createVerifier(options: VerifyOptions): Verifier {
  const check = compileVerifier(options)
  const verify = function verify<T>(request: VerifiableRequest): Promise<VerifiedCallback<T>> {
    try {
      return Promise.resolve(check(request)) as Promise<VerifiedCallback<T>>
    } catch (error) {
      return Promise.reject(error)
    }
  }
  return Object.assign(verify, { checkHeaders: check.checkHeaders })
}

/** Synchronous unless the options name a JWKS, whose keys may have to be fetched first. */
type CompiledVerifier = ((request: VerifiableRequest) => VerifiedCallback | Promise<VerifiedCallback>) & {
  checkHeaders(headers: HeadersLike): void
}

function compileVerifier(options: VerifyOptions): CompiledVerifier {
  if (options === null || typeof options !== 'object') throw new TypeError('options must be an object')
  const secrets = listOption(options.secret, 'secret')
  const publicKeys = listOption(options.publicKey, 'publicKey')
  const remote = remoteJwksOption(options.jwks)
  if (secrets === undefined && publicKeys === undefined && remote === undefined) {
    throw new TypeError('secret or publicKey (or jwks) is required to verify')
  }
  const hmacKeys = (secrets ?? []).map((value, index) =>
    cachedKey(secretCache, value, secrets!.length > 1 ? `secret[${index}]` : 'secret', decodeVerifySecret)
  )
  const edKeys = (publicKeys ?? []).map((value, index) =>
    cachedKey(publicKeyCache, value, publicKeys!.length > 1 ? `publicKey[${index}]` : 'publicKey', decodePublicKey)
  )
  const tolerance = options.toleranceSeconds ?? DEFAULT_TOLERANCE_SECONDS
  if (typeof tolerance !== 'number' || !Number.isFinite(tolerance) || tolerance < 0) {
    throw new TypeError('toleranceSeconds must be a finite number of seconds, 0 or more')
  }
  const now = options.now
  if (now !== undefined && typeof now !== 'function') throw new TypeError('now must be a function returning a Date')

  // The key that verified last is tried first: a receiver holding old and new keys while the sender
  // rotates then pays one verification per genuine request, not one per key. Ed25519 keys are
  // public, so trying them in an order that depends on past requests gives nothing away.
  let preferredKey: KeyObject | undefined

  /**
   * Whether one of `entries` (distinct, canonical base64, at most MAX_ED25519_ENTRIES) verifies
   * with a static or remote key. Entries that can never verify are dropped before any hashing.
   */
  function ed25519Matches(prefix: string, bytes: string | Uint8Array, entries: string[], remoteKeys: readonly KeyObject[] | undefined): boolean {
    let content: Buffer | undefined
    const preferred =
      preferredKey !== undefined && (edKeys.includes(preferredKey) || remoteKeys?.includes(preferredKey) === true) ? preferredKey : undefined
    const matches = (key: KeyObject, given: Buffer): boolean => {
      // Ed25519 needs the message whole: one copy, made only when an entry is checked.
      content ??= Buffer.concat([Buffer.from(prefix), typeof bytes === 'string' ? Buffer.from(bytes) : bytes])
      if (!ed25519Verify(null, content, key, given)) return false
      preferredKey = key
      return true
    }
    for (const entry of entries) {
      const given = Buffer.from(entry, 'base64')
      if (!couldBeEd25519Signature(given)) continue
      if (preferred !== undefined && matches(preferred, given)) return true
      for (const key of edKeys) if (key !== preferred && matches(key, given)) return true
      if (remoteKeys !== undefined) for (const key of remoteKeys) if (key !== preferred && matches(key, given)) return true
    }
    return false
  }

  /** The id, timestamp and signature headers, present and with a timestamp within the tolerance. */
  function signatureHeaders(headers: HeadersLike) {
    let id = header(headers, 'webhook-id')
    let timestampText: string | undefined
    let signatureText: string | undefined
    if (id !== undefined) {
      timestampText = header(headers, 'webhook-timestamp')
      signatureText = header(headers, 'webhook-signature')
    } else {
      id = header(headers, 'svix-id')
      timestampText = header(headers, 'svix-timestamp')
      signatureText = header(headers, 'svix-signature')
    }
    if (id === undefined || timestampText === undefined || signatureText === undefined) {
      throw new SignatureVerificationError(
        'ERR_CALLBACK_SIGNATURE_HEADERS_MISSING',
        `missing ${missingNames(id, timestampText, signatureText)} header`
      )
    }

    const timestamp = parseTimestamp(timestampText)
    if (timestamp < 0) {
      throw new SignatureVerificationError(
        'ERR_CALLBACK_SIGNATURE_TIMESTAMP_MALFORMED',
        'webhook-timestamp must be integer Unix seconds (digits only)'
      )
    }
    const nowMs = now === undefined ? Date.now() : now().getTime()
    if (!Number.isFinite(nowMs)) throw new TypeError('now must return a valid Date')
    const nowSeconds = Math.floor(nowMs / 1000)
    if (timestamp < nowSeconds - tolerance) {
      throw new SignatureVerificationError(
        'ERR_CALLBACK_SIGNATURE_TIMESTAMP_TOO_OLD',
        `webhook-timestamp is more than ${tolerance} s in the past`
      )
    }
    if (timestamp > nowSeconds + tolerance) {
      throw new SignatureVerificationError(
        'ERR_CALLBACK_SIGNATURE_TIMESTAMP_TOO_NEW',
        `webhook-timestamp is more than ${tolerance} s in the future`
      )
    }
    return { id, timestampText, timestamp, signatureText }
  }

  /**
   * Everything the headers alone decide, so a receiver can refuse before reading the body: missing
   * headers, a timestamp outside the tolerance, a signature list that is malformed, too long, or
   * holds no entry of a kind these keys can check (a mismatch whatever the body).
   */
  function checkHeaders(headers: HeadersLike): void {
    if (headers === null || typeof headers !== 'object') throw new TypeError('headers must be a Headers object or a record')
    const { signatureText } = signatureHeaders(headers)
    let entries = 0
    let wellFormed = 0
    let checkable = false
    const length = signatureText.length
    let start = 0
    while (start < length) {
      let end = signatureText.indexOf(' ', start)
      if (end < 0) end = length
      if (end > start && ++entries > MAX_SIGNATURE_ENTRIES) throw tooManyEntries()
      if (signatureText.startsWith('v1,', start)) {
        if (isCanonicalSignature(signatureText, start + 3, end, 32)) {
          wellFormed++
          if (hmacKeys.length > 0) checkable = true
        }
      } else if (signatureText.startsWith('v1a,', start)) {
        if (isCanonicalSignature(signatureText, start + 4, end, 64)) {
          wellFormed++
          if (edKeys.length > 0 || remote !== undefined) checkable = true
        }
      } else {
        const comma = signatureText.indexOf(',', start)
        if (comma > start && comma < end - 1 && UNKNOWN_VERSION.test(signatureText.slice(start, comma))) wellFormed++
      }
      start = end + 1
    }
    if (wellFormed === 0) throw noWellFormedEntry()
    if (!checkable) throw new SignatureVerificationError('ERR_CALLBACK_SIGNATURE_MISMATCH', 'no signature matched')
  }

  // `remoteKeys`: the sender's keys from its JWKS, checked after the static ones.
  function check(request: VerifiableRequest, remoteKeys?: readonly KeyObject[]): VerifiedCallback {
    if (request === null || typeof request !== 'object') throw new TypeError('request must be { headers, body }')
    const { headers, body } = request
    if (headers === null || typeof headers !== 'object') throw new TypeError('headers must be a Headers object or a record')
    const bytes = bodyBytes(body)

    const { id, timestampText, timestamp, signatureText } = signatureHeaders(headers)

    const prefix = `${id}.${timestampText}.`
    let wellFormed = 0
    let entries = 0
    let matched = false
    let hmacDigests: string[] | undefined
    // Ed25519 entries are checked after the walk, at most MAX_ED25519_ENTRIES distinct ones: each
    // check hashes the whole body once per key, so their number is what a forger controls.
    let edEntries: string[] | undefined
    // Entries are separated by single spaces; extra spaces are tolerated. Walked in place: no split.
    const length = signatureText.length
    let start = 0
    while (start < length) {
      let end = signatureText.indexOf(' ', start)
      if (end < 0) end = length
      if (end > start && ++entries > MAX_SIGNATURE_ENTRIES) throw tooManyEntries()
      const comma = signatureText.indexOf(',', start)
      if (comma > start && comma < end) {
        const versionLength = comma - start
        const isV1 = signatureText.charCodeAt(start) === 118 /* v */ && signatureText.charCodeAt(start + 1) === 49 /* 1 */
        if (versionLength === 2 && isV1) {
          if (isCanonicalSignature(signatureText, comma + 1, end, 32)) {
            wellFormed++
            if (!matched && hmacKeys.length > 0) {
              if (hmacDigests === undefined) {
                hmacDigests = new Array<string>(hmacKeys.length)
                for (let k = 0; k < hmacKeys.length; k++) {
                  // 'binary' is node's name for latin1: one character per byte.
                  hmacDigests[k] = createHmac('sha256', hmacKeys[k]!).update(prefix).update(bytes).digest('binary')
                }
              }
              const given = decodeV1Signature(signatureText, comma + 1)
              // Compare against every key, without stopping early, so timing says nothing about which.
              for (let k = 0; k < hmacDigests.length; k++) if (digestMatches(hmacDigests[k]!, given)) matched = true
            }
          }
        } else if (versionLength === 3 && isV1 && signatureText.charCodeAt(start + 2) === 97 /* a */) {
          if (isCanonicalSignature(signatureText, comma + 1, end, 64)) {
            wellFormed++
            if (edKeys.length > 0 || remoteKeys !== undefined) {
              const entry = signatureText.slice(comma + 1, end)
              edEntries ??= []
              if (edEntries.length < MAX_ED25519_ENTRIES && !edEntries.includes(entry)) edEntries.push(entry)
            }
          }
        } else if (end > comma + 1 && UNKNOWN_VERSION.test(signatureText.slice(start, comma))) {
          // A version this library does not know yet: well-formed, just not ours to check.
          wellFormed++
        }
      }
      start = end + 1
    }
    // HMAC first: it is the cheaper check, and once it matched no Ed25519 entry is looked at.
    if (!matched && edEntries !== undefined) matched = ed25519Matches(prefix, bytes, edEntries, remoteKeys)
    if (!matched) {
      if (wellFormed === 0) throw noWellFormedEntry()
      throw new SignatureVerificationError('ERR_CALLBACK_SIGNATURE_MISMATCH', 'no signature matched')
    }

    const text =
      typeof bytes === 'string'
        ? bytes
        : // toString() without arguments is UTF-8 and goes straight to the decoder, skipping the
          // encoding lookup that toString('utf8') pays for.
          Buffer.isBuffer(bytes)
          ? bytes.toString()
          : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString()
    return envelope(id, new Date(timestamp * 1000), text)
  }
  const verify: (request: VerifiableRequest) => VerifiedCallback | Promise<VerifiedCallback> =
    remote === undefined ? check : (request) => verifyWithJwks(check, checkHeaders, remote, request)
  return Object.assign(verify, { checkHeaders })
}

// Remote key sets by URL, shared by every verifier in the process that names the same JWKS, so a
// fresh options object per request does not mean a fresh fetch. Bounded: cleared when full.
const REMOTE_JWKS_LIMIT = 64
const remoteJwksByUrl = new Map<string, RemoteJwks>()

function remoteJwksOption(value: unknown): RemoteJwks | undefined {
  if (value === undefined) return undefined
  if (typeof value === 'function' && typeof (value as Partial<RemoteJwks>).publicKeys === 'function') return value as RemoteJwks
  if (typeof value !== 'string') throw new TypeError("jwks must be the https URL of the sender's JWKS or a createRemoteJwks() key set")
  let remote = remoteJwksByUrl.get(value)
  if (remote === undefined) {
    try {
      remote = createRemoteJwks(value)
    } catch (error) {
      const message = (error as Error).message.replace(/^url /, '').replace('(allowHttp permits http:)', '(for plain http pass createRemoteJwks(url, { allowHttp: true }))')
      throw new TypeError(`jwks ${message}`, { cause: error })
    }
    if (remoteJwksByUrl.size >= REMOTE_JWKS_LIMIT) remoteJwksByUrl.clear()
    remoteJwksByUrl.set(value, remote)
  }
  return remote
}

/**
 * Verifies with the sender's published keys as well. The JWKS is consulted only for a request that
 * carries a well-formed `v1a` entry and headers that could verify, so nothing else (unsigned,
 * stale or HMAC-only requests) makes the receiver fetch; when no key matched, it is fetched again once, as the sender may have rotated,
 * and the request is checked again only if the keys changed (the cooldown bounds the refetches a
 * flood of bad signatures can cause).
 */
async function verifyWithJwks(
  check: (request: VerifiableRequest, remoteKeys?: readonly KeyObject[]) => VerifiedCallback,
  checkHeaders: (headers: HeadersLike) => void,
  remote: RemoteJwks,
  request: VerifiableRequest
): Promise<VerifiedCallback> {
  if (!hasV1aEntry(request)) return check(request)
  // Headers that can never verify (stale, malformed, too many entries) must not cost a fetch.
  checkHeaders(request.headers)
  const keys = await remote()
  try {
    return check(request, keys)
  } catch (error) {
    if (!(error instanceof SignatureVerificationError) || error.code !== 'ERR_CALLBACK_SIGNATURE_MISMATCH') throw error
    const fresh = await remote({ refresh: true })
    if (fresh.length === keys.length && fresh.every((key, index) => key === keys[index])) throw error
    return check(request, fresh)
  }
}

/** Whether the request's signature header holds a canonical `v1a,<base64>` entry. */
function hasV1aEntry(request: VerifiableRequest): boolean {
  const headers = request?.headers
  if (headers === null || typeof headers !== 'object') return false
  const signature = header(headers, header(headers, 'webhook-id') !== undefined ? 'webhook-signature' : 'svix-signature')
  if (signature === undefined) return false
  let start = 0
  while (start < signature.length) {
    let end = signature.indexOf(' ', start)
    if (end < 0) end = signature.length
    if (signature.startsWith('v1a,', start) && isCanonicalSignature(signature, start + 4, end, 64)) return true
    start = end + 1
  }
  return false
}

function bodyBytes(body: unknown): string | Uint8Array {
  if (typeof body === 'string' || body instanceof Uint8Array) return body
  if (body instanceof ArrayBuffer) return new Uint8Array(body)
  throw new TypeError('body must be the raw body: a string, Buffer, Uint8Array or ArrayBuffer')
}

function header(headers: HeadersLike, name: string): string | undefined {
  // Fast path: Node's IncomingHttpHeaders, lower-case names, one value each.
  let value: unknown = (headers as Record<string, unknown>)[name]
  if (typeof value === 'string') return value === '' ? undefined : value
  if (typeof headers.get === 'function') {
    value = (headers as { get(name: string): string | null }).get(name)
  } else {
    const record = headers as Record<string, string | string[] | undefined>
    if (value === undefined) {
      // Node lower-cases incoming names; a hand-written record may not.
      for (const key of Object.keys(record)) {
        if (key.length === name.length && key.toLowerCase() === name) {
          value = record[key]
          break
        }
      }
    }
  }
  if (Array.isArray(value)) value = value.join(', ')
  if (typeof value !== 'string' || value === '') return undefined
  return value
}

function missingNames(id: unknown, timestamp: unknown, signature: unknown): string {
  const names: string[] = []
  if (id === undefined) names.push('webhook-id')
  if (timestamp === undefined) names.push('webhook-timestamp')
  if (signature === undefined) names.push('webhook-signature')
  return names.join(', ')
}

function envelope(id: string, timestamp: Date, body: string): VerifiedCallback {
  // Only text that can be JSON is parsed: a plain-text body verifies without paying for an exception.
  const first = body.charCodeAt(0)
  if (first === 0x7b /* { */ || first === 0x5b /* [ */ || first === 0x20 || first === 0x0a || first === 0x0d || first === 0x09) {
    let parsed: unknown
    try {
      parsed = JSON.parse(body)
    } catch {
      return { id, timestamp, data: undefined, body }
    }
    if (parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed)) {
      const fields = parsed as { type?: unknown; data?: unknown }
      if (typeof fields.type === 'string') return { id, timestamp, type: fields.type, data: fields.data, body }
    }
    return { id, timestamp, data: parsed, body }
  }
  return { id, timestamp, data: undefined, body }
}

interface CachedVerifier {
  secret: unknown
  publicKey: unknown
  jwks: unknown
  toleranceSeconds: unknown
  now: unknown
  secretItems: unknown[] | undefined
  publicKeyItems: unknown[] | undefined
  check: CompiledVerifier
}

// One compiled verifier per options object; rebuilt when one of its fields (or an array's items)
// changed since, so rotating a secret in place still takes effect.
const verifierCache = new WeakMap<object, CachedVerifier>()

function sameItems(items: unknown[] | undefined, value: unknown): boolean {
  if (items === undefined) return !Array.isArray(value)
  if (!Array.isArray(value) || value.length !== items.length) return false
  for (let i = 0; i < items.length; i++) if (items[i] !== value[i]) return false
  return true
}

function verifierFor(options: VerifyOptions): CompiledVerifier {
  if (options === null || typeof options !== 'object') throw new TypeError('options must be an object')
  const cached = verifierCache.get(options)
  if (
    cached !== undefined &&
    cached.secret === options.secret &&
    cached.publicKey === options.publicKey &&
    cached.jwks === options.jwks &&
    cached.toleranceSeconds === options.toleranceSeconds &&
    cached.now === options.now &&
    sameItems(cached.secretItems, options.secret) &&
    sameItems(cached.publicKeyItems, options.publicKey)
  ) {
    return cached.check
  }
  const check = compileVerifier(options)
  verifierCache.set(options, {
    secret: options.secret,
    publicKey: options.publicKey,
    jwks: options.jwks,
    toleranceSeconds: options.toleranceSeconds,
    now: options.now,
    secretItems: Array.isArray(options.secret) ? [...options.secret] : undefined,
    publicKeyItems: Array.isArray(options.publicKey) ? [...options.publicKey] : undefined,
    check,
  })
  return check
}

/**
 * Verifies a received callback against the raw body: headers as a Fetch `Headers`, Node's
 * `IncomingHttpHeaders` or a plain record (any case; `svix-*` names too), body as the exact bytes
 * received. Resolves with `{ id, timestamp, type, data, body }`; rejects with a
 * `SignatureVerificationError` (`code` says why) or, for bad options, a `TypeError` naming the
 * option. Several secrets or public keys may be given (rotation): any may match.
 *
 * A JSON body `{ type, timestamp, data }` gives `type` and `data`; another JSON object or array
 * gives the parsed value as `data`; any other body still verifies, with `data` undefined.
 *
 * @example
 * ```ts
 * import { verifySignature, SignatureVerificationError } from 'endpoint-callback'
 * try {
 *   const callback = await verifySignature({ headers: req.headers, body: rawBody }, { secret })
 *   await handle(callback.id, callback.type, callback.data)
 * } catch (error) {
 *   if (error instanceof SignatureVerificationError) res.status(401).end()
 *   else throw error
 * }
 * ```
 */
export function verifySignature<T = unknown>(
  request: VerifiableRequest,
  options: VerifyOptions
): Promise<VerifiedCallback<T>> {
  try {
    return Promise.resolve(verifierFor(options)(request)) as Promise<VerifiedCallback<T>>
  } catch (error) {
    return Promise.reject(error)
  }
}
