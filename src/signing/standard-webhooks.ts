/**
 * The sending half of Standard Webhooks 1.0: `v1` (HMAC-SHA256) and `v1a` (Ed25519) signatures over
 * the bytes of `${id}.${timestamp}.` followed by the body bytes, exactly as sent.
 */
import { createHmac, sign as ed25519Sign } from 'node:crypto'
import type { KeyObject } from 'node:crypto'
import { decodeSecret, decodeSigningKey, listOption } from './secrets.ts'

/**
 * The three headers every signed callback carries. A type alias, not an interface, so that it is
 * assignable to `Record<string, string>` (transport headers, `HeadersLike`).
 */
export type SignatureHeaders = {
  'webhook-id': string
  'webhook-timestamp': string
  'webhook-signature': string
}

/** What is signed: the task id, the attempt's time and the exact body bytes. */
export interface SignableMessage {
  /** `webhook-id`: visible ASCII, no spaces (it travels in a header). */
  id: string
  /** Unix seconds, or a `Date` (rounded down to the second). */
  timestamp: number | Date
  /** The body exactly as it will be sent; a string is sent as UTF-8. */
  body: string | Uint8Array
}

/** Keys to sign with: each one adds a signature to the header (rotation). */
export interface SignOptions {
  /** `whsec_…` secret(s), 24–64 bytes: `v1` signatures. */
  secret?: string | string[] | undefined
  /** `whsk_…` Ed25519 signing key(s): `v1a` signatures. */
  signingKey?: string | string[] | undefined
}

/** A compiled signer: keys decoded once, called for every attempt. */
export type Signer = (message: SignableMessage) => SignatureHeaders

/**
 * Whether `id` is non-empty visible ASCII: it goes into a header, and a space would split the
 * signature list of a receiver that echoes it. A loop rather than a regex: the regex test was
 * most of what signing cost beside the HMAC itself.
 */
function isHeaderSafeId(id: string): boolean {
  const length = id.length
  if (length === 0) return false
  for (let i = 0; i < length; i++) {
    const code = id.charCodeAt(i)
    if (code < 0x21 || code > 0x7e) return false
  }
  return true
}

/**
 * Decodes the keys once and returns a function that signs messages with all of them. Throws a
 * `TypeError` naming `secret` or `signingKey` for a bad key, or when neither is given.
 *
 * @example
 * ```ts
 * const sign = createSigner({ secret: process.env.CALLBACK_SECRET })
 * const headers = sign({ id: task.id, timestamp: new Date(), body })
 * await fetch(url, { method: 'POST', headers: { ...headers, 'content-type': 'application/json' }, body })
 * ```
 */
export function createSigner(options: SignOptions): Signer {
  if (options === null || typeof options !== 'object') throw new TypeError('options must be an object')
  const secrets = listOption(options.secret, 'secret')
  const signingKeys = listOption(options.signingKey, 'signingKey')
  if (secrets === undefined && signingKeys === undefined) {
    throw new TypeError('secret or signingKey is required to sign')
  }
  const hmacKeys: KeyObject[] = (secrets ?? []).map((value, index) =>
    decodeSecret(value, secrets!.length > 1 ? `secret[${index}]` : 'secret', 'sign')
  )
  const privateKeys: KeyObject[] = (signingKeys ?? []).map((value, index) =>
    decodeSigningKey(value, signingKeys!.length > 1 ? `signingKey[${index}]` : 'signingKey')
  )

  return function sign(message: SignableMessage): SignatureHeaders {
    if (message === null || typeof message !== 'object') throw new TypeError('message must be an object')
    const { id, body } = message
    if (typeof id !== 'string' || !isHeaderSafeId(id)) {
      throw new TypeError('id must be a non-empty string of visible ASCII characters')
    }
    const timestamp = unixSeconds(message.timestamp)
    const isText = typeof body === 'string'
    if (!isText && !(body instanceof Uint8Array)) throw new TypeError('body must be a string or a Uint8Array')

    const prefix = `${id}.${timestamp}.`
    let signature = ''
    for (const key of hmacKeys) {
      // Prefix and body go in separately: no concatenated copy of a large body.
      const digest = createHmac('sha256', key).update(prefix).update(body).digest('base64')
      signature += signature === '' ? `v1,${digest}` : ` v1,${digest}`
    }
    if (privateKeys.length > 0) {
      // Ed25519 (pure EdDSA) hashes the message twice, so it needs it whole: one copy, shared by all keys.
      const content = Buffer.concat([Buffer.from(prefix), isText ? Buffer.from(body) : body])
      for (const key of privateKeys) {
        const digest = ed25519Sign(null, content, key).toString('base64')
        signature += signature === '' ? `v1a,${digest}` : ` v1a,${digest}`
      }
    }
    return { 'webhook-id': id, 'webhook-timestamp': String(timestamp), 'webhook-signature': signature }
  }
}

function unixSeconds(timestamp: unknown): number {
  if (typeof timestamp === 'number') {
    if (Number.isSafeInteger(timestamp) && timestamp >= 0) return timestamp
  } else if (timestamp instanceof Date) {
    const ms = timestamp.getTime()
    if (Number.isFinite(ms) && ms >= 0) return Math.floor(ms / 1000)
  }
  throw new TypeError('timestamp must be a non-negative integer of Unix seconds or a valid Date')
}

/**
 * The `webhook-id`, `webhook-timestamp` and `webhook-signature` headers for these bytes: for
 * senders that post by themselves, and for receivers' own tests. Several secrets or keys give one
 * signature each, space-separated. When signing many messages with the same keys, build the signer
 * once with {@link createSigner}.
 *
 * @example
 * ```ts
 * import { signPayload } from 'endpoint-callback'
 * const body = JSON.stringify({ type: 'report.ready', timestamp: new Date().toISOString(), data: { id: 7 } })
 * const headers = signPayload({ id: 'task_123', timestamp: new Date(), body }, { secret })
 * // { 'webhook-id': 'task_123', 'webhook-timestamp': '1735689600', 'webhook-signature': 'v1,…' }
 * ```
 */
export function signPayload(message: SignableMessage, options: SignOptions): SignatureHeaders {
  if (options === null || typeof options !== 'object') throw new TypeError('options must be an object')
  const cached = signerCache.get(options)
  if (cached !== undefined && sameValue(cached.secret, options.secret) && sameValue(cached.signingKey, options.signingKey)) {
    return cached.sign(message)
  }
  const sign = createSigner(options)
  signerCache.set(options, { secret: snapshot(options.secret), signingKey: snapshot(options.signingKey), sign })
  return sign(message)
}

// One signer per options object, so a sender passing the same options on every call decodes its
// keys once; rebuilt when `secret` or `signingKey` changed since, also an array edited in place.
const signerCache = new WeakMap<object, { secret: unknown; signingKey: unknown; sign: Signer }>()

function snapshot(value: unknown): unknown {
  return Array.isArray(value) ? [...value] : value
}

function sameValue(snapshotted: unknown, value: unknown): boolean {
  if (!Array.isArray(snapshotted)) return snapshotted === value
  if (!Array.isArray(value) || value.length !== snapshotted.length) return false
  for (let i = 0; i < value.length; i++) if (value[i] !== snapshotted[i]) return false
  return true
}
