/**
 * Making and reading the key material of Standard Webhooks: `whsec_` HMAC secrets, `whsk_` Ed25519
 * signing keys (64 bytes, seed‖public, as Svix writes them) and `whpk_` public keys (32 bytes).
 *
 * Every decoder here is strict: Node's `Buffer.from(text, 'base64')` skips characters it does not
 * know and ignores bad padding, so a typo in a secret would silently become a different, shorter
 * key. Instead, anything that is not canonical standard base64 is a `TypeError` naming the option.
 * Messages never contain the value itself.
 */
import { createPrivateKey, createPublicKey, createSecretKey, generateKeyPairSync, randomBytes } from 'node:crypto'
import type { KeyObject } from 'node:crypto'

/** Prefix of an HMAC-SHA256 secret. */
export const SECRET_PREFIX = 'whsec_'
/** Prefix of an Ed25519 signing (private) key. */
export const SIGNING_KEY_PREFIX = 'whsk_'
/** Prefix of an Ed25519 public key. */
export const PUBLIC_KEY_PREFIX = 'whpk_'

/** Bounds of a secret a sender may sign with (Standard Webhooks: 24 to 64 random bytes). */
export const MIN_SECRET_BYTES = 24
export const MAX_SECRET_BYTES = 64

// Standard alphabet, padding optional; the canonical check below catches stray trailing bits.
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}(?:==)?|[A-Za-z0-9+/]{3}=?)?$/

/**
 * Decodes standard base64 strictly: only `A–Z a–z 0–9 + /`, correct padding (or none), and no
 * non-zero bits after the last byte. Returns `undefined` for anything else.
 */
export function decodeBase64Strict(text: string): Buffer | undefined {
  if (!BASE64.test(text)) return undefined
  const bytes = Buffer.from(text, 'base64')
  // Two encodings that differ only in the unused low bits of the last character decode alike;
  // accepting both would make one secret writable two ways.
  const canonical = bytes.toString('base64')
  const unpadded = text.endsWith('=') ? text : text + '='.repeat((4 - (text.length % 4)) % 4)
  return canonical === unpadded ? bytes : undefined
}

/** Which bounds apply to a secret: signing needs 24–64 bytes, verifying accepts any non-empty one. */
export type SecretUse = 'sign' | 'verify'

/**
 * Reads one `whsec_…` secret and returns its key. Throws a `TypeError` naming `option` when the
 * prefix is missing, the base64 is bad, or the length is out of bounds.
 *
 * On `'verify'` a secret shorter than 24 bytes is accepted: other Standard Webhooks senders issue
 * such secrets and the published libraries verify with them, so refusing them would only break a
 * receiver. Signing and generating stay within 24–64 bytes.
 */
export function decodeSecret(value: unknown, option: string, use: SecretUse): KeyObject {
  if (typeof value !== 'string') throw new TypeError(`${option} must be a string starting with "${SECRET_PREFIX}"`)
  if (!value.startsWith(SECRET_PREFIX)) throw new TypeError(`${option} must start with "${SECRET_PREFIX}"`)
  const bytes = decodeBase64Strict(value.slice(SECRET_PREFIX.length))
  if (bytes === undefined) throw new TypeError(`${option} is not valid base64 after "${SECRET_PREFIX}"`)
  if (bytes.length === 0) throw new TypeError(`${option} is empty`)
  if (use === 'sign' && (bytes.length < MIN_SECRET_BYTES || bytes.length > MAX_SECRET_BYTES)) {
    throw new TypeError(
      `${option} must hold ${MIN_SECRET_BYTES} to ${MAX_SECRET_BYTES} bytes to sign with, not ${bytes.length}`
    )
  }
  return createSecretKey(bytes)
}

/** The DER of a PKCS#8 Ed25519 private key up to its 32-byte seed (RFC 8410). */
const ED25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex')

/** Reads one `whsk_…` key (64 bytes, seed‖public) into a private key; the halves must match. */
export function decodeSigningKey(value: unknown, option: string): KeyObject {
  if (typeof value !== 'string') throw new TypeError(`${option} must be a string starting with "${SIGNING_KEY_PREFIX}"`)
  if (!value.startsWith(SIGNING_KEY_PREFIX)) throw new TypeError(`${option} must start with "${SIGNING_KEY_PREFIX}"`)
  const bytes = decodeBase64Strict(value.slice(SIGNING_KEY_PREFIX.length))
  if (bytes === undefined) throw new TypeError(`${option} is not valid base64 after "${SIGNING_KEY_PREFIX}"`)
  if (bytes.length !== 64) {
    throw new TypeError(`${option} must hold 64 bytes (Ed25519 seed and public key), not ${bytes.length}`)
  }
  const x = bytes.subarray(32).toString('base64url')
  // From the seed alone (PKCS#8), then compared with the stored public half: a key whose halves
  // disagree would sign with a key the receiver was never given. (A JWK with both halves is
  // refused or not depending on the Node version, with a message that names nothing.)
  const key = createPrivateKey({ key: Buffer.concat([ED25519_PKCS8_PREFIX, bytes.subarray(0, 32)]), format: 'der', type: 'pkcs8' })
  if (createPublicKey(key).export({ format: 'jwk' }).x !== x) {
    throw new TypeError(`${option} is inconsistent: its public half does not belong to its seed`)
  }
  return key
}

/** Reads one `whpk_…` key (32 bytes) into a public key. */
export function decodePublicKey(value: unknown, option: string): KeyObject {
  if (typeof value !== 'string') throw new TypeError(`${option} must be a string starting with "${PUBLIC_KEY_PREFIX}"`)
  if (!value.startsWith(PUBLIC_KEY_PREFIX)) throw new TypeError(`${option} must start with "${PUBLIC_KEY_PREFIX}"`)
  const bytes = decodeBase64Strict(value.slice(PUBLIC_KEY_PREFIX.length))
  if (bytes === undefined) throw new TypeError(`${option} is not valid base64 after "${PUBLIC_KEY_PREFIX}"`)
  if (bytes.length !== 32) throw new TypeError(`${option} must hold 32 bytes (Ed25519 public key), not ${bytes.length}`)
  try {
    return createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: bytes.toString('base64url') }, format: 'jwk' })
  } catch (cause) {
    throw new TypeError(`${option} is not an Ed25519 public key`, { cause })
  }
}

/**
 * Turns `value` (one item or a list) into a non-empty list, or `undefined` when absent. Throws a
 * `TypeError` naming `option` for an empty list.
 */
export function listOption(value: unknown, option: string): unknown[] | undefined {
  if (value === undefined) return undefined
  if (Array.isArray(value)) {
    if (value.length === 0) throw new TypeError(`${option} must not be an empty array`)
    return value
  }
  return [value]
}

/**
 * A new HMAC secret: `whsec_` and the base64 of 32 random bytes. Give it to the receiver once,
 * over a channel you trust; keep it out of logs.
 *
 * @example
 * ```ts
 * import { generateSecret } from 'endpoint-callback'
 * const secret = generateSecret() // 'whsec_3q2+7w…'
 * ```
 */
export function generateSecret(): string {
  return SECRET_PREFIX + randomBytes(32).toString('base64')
}

/**
 * A new Ed25519 key pair for `v1a` signatures: sign with `signingKey` (`whsk_`, 64 bytes seed‖public),
 * publish `publicKey` (`whpk_`, 32 bytes) to receivers, who then need no shared secret.
 *
 * @example
 * ```ts
 * import { generateSigningKey } from 'endpoint-callback'
 * const { signingKey, publicKey } = generateSigningKey()
 * // sender: { signingKey }   receiver: verifySignature(request, { publicKey })
 * ```
 */
export function generateSigningKey(): { signingKey: string; publicKey: string } {
  const { privateKey } = generateKeyPairSync('ed25519')
  const jwk = privateKey.export({ format: 'jwk' })
  const seed = Buffer.from(jwk.d ?? '', 'base64url')
  const pub = Buffer.from(jwk.x ?? '', 'base64url')
  return {
    signingKey: SIGNING_KEY_PREFIX + Buffer.concat([seed, pub]).toString('base64'),
    publicKey: PUBLIC_KEY_PREFIX + pub.toString('base64'),
  }
}
