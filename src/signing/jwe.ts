/**
 * Encrypted callback bodies: a compact JWE (ECDH-ES + A256GCM by default) for the receiver's
 * public key, sent as `application/jose` and signed over the encrypted bytes like any body.
 * Both sides hold algorithm allow-lists, so neither can be talked into a weaker algorithm.
 */
import { KeyObject, webcrypto } from 'node:crypto'
import {
  calculateJwkThumbprint,
  CompactEncrypt,
  compactDecrypt,
  decodeProtectedHeader,
  errors,
  exportJWK,
  generateKeyPair,
  type CompactJWEHeaderParameters,
  type JSONWebKeySet,
  type JWEContentEncryptionAlgorithm,
  type JWEKeyManagementAlgorithm,
  type JWK
} from 'jose'
import { CallbackError, ReceiverError } from '../errors.ts'
import type { VerifiedCallback } from '../types.ts'
import { loadKeySet, openRemoteKeySet, type JwksFetchOptions } from './jwks-remote.ts'

/** The content type of an encrypted body. */
export const JOSE_CONTENT_TYPE = 'application/jose'

/** A public key to encrypt for, as resolved from a JWKS. */
export interface EncryptionKey {
  key: JWK
  kid?: string
}

/** A cached lookup of the receiver's encryption key; see {@link createRemoteEncryptionKey}. */
export type EncryptionKeySource = () => Promise<EncryptionKey>

/**
 * Whom to encrypt for: a public JWK (EC P-256/384/521 or OKP X25519), a `KeyObject`/`CryptoKey`,
 * the URL of the receiver's JWKS (its first `use: 'enc'` key is taken), or a cached source.
 */
export type EncryptionRecipient = JWK | KeyObject | webcrypto.CryptoKey | string | URL | EncryptionKeySource

/** The algorithm allow-lists, the same option names jose uses. */
export interface JweAlgorithmOptions {
  /** Key management algorithms allowed. Default `['ECDH-ES']`. */
  keyManagementAlgorithms?: JWEKeyManagementAlgorithm[] | undefined
  /** Content encryption algorithms allowed. Default `['A256GCM']`. */
  contentEncryptionAlgorithms?: JWEContentEncryptionAlgorithm[] | undefined
}

/** Options of {@link encryptPayload}. */
export interface EncryptPayloadOptions extends JweAlgorithmOptions, JwksFetchOptions {
  /** Key management algorithm. Default: the key's `alg` when it has one, else `'ECDH-ES'`. */
  alg?: JWEKeyManagementAlgorithm | undefined
  /** Content encryption algorithm. Default `'A256GCM'`. */
  enc?: JWEContentEncryptionAlgorithm | undefined
  /** Media type of the plaintext, sent as the `cty` header. Default `'application/json'`. */
  contentType?: string | undefined
  /** With a JWKS URL: take the `use: 'enc'` key with this `kid`. */
  kid?: string | undefined
}

/** An encrypted body, ready to sign and send. */
export interface EncryptedPayload {
  /** The compact JWE. Sign exactly these bytes. */
  body: string
  contentType: typeof JOSE_CONTENT_TYPE
}

/** A private key to decrypt with: a private JWK, a `KeyObject` or a `CryptoKey`. */
export type DecryptionKey = JWK | KeyObject | webcrypto.CryptoKey

/** What {@link decryptPayload} returns. */
export interface DecryptedPayload {
  plaintext: Uint8Array
  /** The plaintext as UTF-8 text. */
  text: string
  protectedHeader: CompactJWEHeaderParameters
}

const DEFAULT_ALGS: JWEKeyManagementAlgorithm[] = ['ECDH-ES']
const DEFAULT_ENCS: JWEContentEncryptionAlgorithm[] = ['A256GCM']
const ENCRYPTION_CURVES: Record<string, readonly string[]> = { EC: ['P-256', 'P-384', 'P-521'], OKP: ['X25519'] }

function allowList<T extends string>(value: T[] | undefined, fallback: T[], option: string): T[] {
  if (value === undefined) return fallback
  if (!Array.isArray(value) || value.length === 0 || !value.every((item) => typeof item === 'string' && item !== '')) {
    throw new TypeError(`${option} must be a non-empty array of algorithm names`)
  }
  return value
}

// Node 20 has the class on globalThis only (not on crypto.webcrypto), and @types/node 20 omits it.
const CryptoKeyClass = (globalThis as { CryptoKey?: abstract new () => unknown }).CryptoKey

function isCryptoKey(value: unknown): value is webcrypto.CryptoKey {
  return CryptoKeyClass !== undefined && value instanceof CryptoKeyClass
}

function isEncryptionJwk(jwk: JWK): boolean {
  return typeof jwk.kty === 'string' && (ENCRYPTION_CURVES[jwk.kty]?.includes(jwk.crv as string) ?? false)
}

/** Picks the receiver's encryption key out of its JWKS: `use: 'enc'`, public, allowed `alg`. */
function selectEncryptionKey(jwks: JSONWebKeySet, source: string, algs: readonly string[], kid?: string): EncryptionKey {
  const candidates = jwks.keys.filter(
    (jwk) =>
      jwk.use === 'enc' &&
      isEncryptionJwk(jwk) &&
      (jwk.alg === undefined || algs.includes(jwk.alg)) &&
      (kid === undefined || jwk.kid === kid)
  )
  if (candidates.some((jwk) => jwk.d !== undefined)) {
    throw new CallbackError('ERR_CALLBACK_JWKS', `the JWKS at ${source} publishes private key material`)
  }
  const [first] = candidates
  if (first === undefined) {
    throw new CallbackError('ERR_CALLBACK_JWKS', `the JWKS at ${source} has no usable "use": "enc" key`)
  }
  return first.kid === undefined ? { key: first } : { key: first, kid: first.kid }
}

/**
 * A cached lookup of a receiver's public encryption key from its JWKS URL: its first
 * `use: 'enc'` key (EC or X25519) whose `alg`, if any, is allowed. The fetch goes through
 * `dispatcher` or `fetch` like every sender request. Pass it to {@link encryptPayload} as the
 * recipient.
 *
 * @example
 * ```ts
 * const recipient = createRemoteEncryptionKey('https://client.example/.well-known/jwks.json', { dispatcher })
 * const { body, contentType } = await encryptPayload(JSON.stringify(envelope), recipient)
 * ```
 */
export function createRemoteEncryptionKey(
  url: string | URL,
  options: JwksFetchOptions & JweAlgorithmOptions & { kid?: string; cacheMaxAgeMs?: number } = {}
): EncryptionKeySource {
  const algs = allowList(options.keyManagementAlgorithms, DEFAULT_ALGS, 'keyManagementAlgorithms')
  const remote = openRemoteKeySet(url, options)
  return async () => selectEncryptionKey(await loadKeySet(remote, false), remote.source, algs, options.kid)
}

/**
 * Checks, without any I/O, that `value` can be a task's encryption key: a public EC/X25519 JWK
 * (not a private one, not a signing key) or an https URL of a JWKS (http with `allowHttp`). For
 * `createCallbackTask`, so a bad key is a `TypeError` when the task is made, not at delivery.
 *
 * @example
 * ```ts
 * checkEncryptionKey(input.encryptionKey) // throws TypeError naming encryptionKey
 * ```
 */
export function checkEncryptionKey(value: unknown, options: { allowHttp?: boolean; option?: string } = {}): asserts value is JWK | string {
  const { allowHttp = false, option = 'encryptionKey' } = options
  if (typeof value === 'string') {
    let url: URL
    try {
      url = new URL(value)
    } catch (cause) {
      throw new TypeError(`${option} must be a public JWK or the absolute URL of a JWKS`, { cause })
    }
    if (url.protocol !== 'https:' && !(allowHttp && url.protocol === 'http:')) {
      throw new TypeError(`${option} must be an https: JWKS URL`)
    }
    return
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new TypeError(`${option} must be a public JWK or the absolute URL of a JWKS`)
  }
  checkRecipientJwk(value as JWK, option)
}

function checkRecipientJwk(jwk: JWK, option: string): void {
  // Never echo the key: a mistaken private JWK would end up in logs.
  if (jwk.d !== undefined || jwk.k !== undefined) throw new TypeError(`${option} must be a public key`)
  if (!isEncryptionJwk(jwk)) throw new TypeError(`${option} must be an EC (P-256/384/521) or OKP X25519 JWK`)
  if (jwk.use !== undefined && jwk.use !== 'enc') throw new TypeError(`${option} is not an encryption key (use)`)
}

async function resolveRecipient(
  recipient: EncryptionRecipient,
  options: EncryptPayloadOptions,
  algs: readonly string[]
): Promise<{ key: JWK | KeyObject | webcrypto.CryptoKey; kid?: string; alg?: string }> {
  if (typeof recipient === 'function') return recipient()
  if (typeof recipient === 'string' || recipient instanceof URL) {
    const remote = openRemoteKeySet(recipient, options, 'recipient')
    return selectEncryptionKey(await loadKeySet(remote, false), remote.source, algs, options.kid)
  }
  if (recipient instanceof KeyObject || isCryptoKey(recipient)) {
    if (recipient.type !== 'public') throw new TypeError('recipient must be a public key')
    return { key: recipient }
  }
  if (typeof recipient !== 'object' || recipient === null) {
    throw new TypeError('recipient must be a public JWK, a KeyObject, a CryptoKey or a JWKS URL')
  }
  checkRecipientJwk(recipient, 'recipient')
  return {
    key: recipient,
    ...(recipient.kid === undefined ? {} : { kid: recipient.kid }),
    ...(recipient.alg === undefined ? {} : { alg: recipient.alg })
  }
}

/**
 * Encrypts a callback body for its receiver as a compact JWE. The result's `body` is what gets
 * signed and sent, with `content-type: application/jose`.
 *
 * @example
 * ```ts
 * const envelope = JSON.stringify({ type: 'report.ready', timestamp: new Date().toISOString(), data })
 * const { body, contentType } = await encryptPayload(envelope, task.encryptionKey) // JWK or JWKS URL
 * const headers = signPayload({ id: task.id, timestamp, body }, { signingKey })
 * ```
 */
export async function encryptPayload(
  plaintext: string | Uint8Array,
  recipient: EncryptionRecipient,
  options: EncryptPayloadOptions = {}
): Promise<EncryptedPayload> {
  const algs = allowList(options.keyManagementAlgorithms, DEFAULT_ALGS, 'keyManagementAlgorithms')
  const encs = allowList(options.contentEncryptionAlgorithms, DEFAULT_ENCS, 'contentEncryptionAlgorithms')
  if (typeof plaintext !== 'string' && !(plaintext instanceof Uint8Array)) {
    throw new TypeError('plaintext must be a string or a Uint8Array')
  }
  const { key, kid, alg: keyAlg } = await resolveRecipient(recipient, options, algs)
  const alg = options.alg ?? keyAlg ?? 'ECDH-ES'
  const enc = options.enc ?? 'A256GCM'
  if (!algs.includes(alg)) throw new TypeError(`alg "${alg}" is not in keyManagementAlgorithms`)
  if (!encs.includes(enc)) throw new TypeError(`enc "${enc}" is not in contentEncryptionAlgorithms`)
  if (keyAlg !== undefined && keyAlg !== alg) throw new TypeError(`alg "${alg}" does not match the key's alg "${keyAlg}"`)

  const bytes = typeof plaintext === 'string' ? new TextEncoder().encode(plaintext) : plaintext
  try {
    const body = await new CompactEncrypt(bytes)
      .setProtectedHeader({ alg, enc, cty: options.contentType ?? 'application/json', ...(kid === undefined ? {} : { kid }) })
      .encrypt(key)
    return { body, contentType: JOSE_CONTENT_TYPE }
  } catch (cause) {
    throw new TypeError('recipient is not a usable public encryption key for this algorithm', { cause })
  }
}

function checkDecryptionKey(key: unknown, option: string): asserts key is DecryptionKey {
  if (key instanceof KeyObject || isCryptoKey(key)) {
    if (key.type !== 'private') throw new TypeError(`${option} must be a private key`)
    return
  }
  if (typeof key !== 'object' || key === null || typeof (key as JWK).kty !== 'string') {
    throw new TypeError(`${option} must be a private JWK, a KeyObject or a CryptoKey`)
  }
  if ((key as JWK).d === undefined) throw new TypeError(`${option} must be a private key`)
}

function reason(error: unknown): string {
  // Fixed words per failure: jose's own messages stay in `cause`, nothing about the key goes out.
  if (error instanceof errors.JOSEAlgNotAllowed) return 'its algorithm is not allowed'
  if (error instanceof errors.JWEDecryptionFailed) return 'it does not decrypt with the key (tampered, or encrypted for another key)'
  if (error instanceof errors.JWEInvalid) return 'it is not a valid compact JWE'
  if (error instanceof errors.JOSENotSupported) return 'its algorithm is not supported'
  return 'it could not be decrypted'
}

/**
 * Decrypts a compact JWE body with the receiver's private key(s). Several keys may be given
 * (rotation): the one whose JWK `kid` matches the header is tried first, then the others. Only
 * the allowed algorithms are accepted. Every failure, tampering included, rejects with a
 * `ReceiverError` coded `ERR_CALLBACK_DECRYPTION_FAILED`.
 *
 * @example
 * ```ts
 * const cb = await verifySignature({ headers, body: rawBody }, { publicKey })
 * const { text } = await decryptPayload(cb.body, JSON.parse(process.env.CALLBACK_DECRYPTION_JWK!))
 * ```
 */
export async function decryptPayload(
  jwe: string | Uint8Array,
  key: DecryptionKey | readonly DecryptionKey[],
  options: JweAlgorithmOptions = {}
): Promise<DecryptedPayload> {
  const keyManagementAlgorithms = allowList(options.keyManagementAlgorithms, DEFAULT_ALGS, 'keyManagementAlgorithms')
  const contentEncryptionAlgorithms = allowList(options.contentEncryptionAlgorithms, DEFAULT_ENCS, 'contentEncryptionAlgorithms')
  const keys: readonly unknown[] = Array.isArray(key) ? key : [key]
  if (keys.length === 0) throw new TypeError('key must be a private key or a non-empty array of them')
  keys.forEach((item, index) => checkDecryptionKey(item, Array.isArray(key) ? `key[${index}]` : 'key'))
  const text = typeof jwe === 'string' ? jwe : new TextDecoder().decode(jwe)

  let kid: string | undefined
  try {
    kid = decodeProtectedHeader(text).kid
  } catch (cause) {
    throw new ReceiverError('ERR_CALLBACK_DECRYPTION_FAILED', 'the payload did not decrypt: it is not a valid compact JWE', { cause })
  }
  const ordered = [...(keys as DecryptionKey[])].sort(
    (a, b) => Number(kidOf(b) === kid && kid !== undefined) - Number(kidOf(a) === kid && kid !== undefined)
  )
  let failure: unknown
  for (const candidate of ordered) {
    try {
      const result = await compactDecrypt(text, candidate, { keyManagementAlgorithms, contentEncryptionAlgorithms })
      return {
        plaintext: result.plaintext,
        text: new TextDecoder().decode(result.plaintext),
        protectedHeader: result.protectedHeader
      }
    } catch (error) {
      failure ??= error
      // An algorithm outside the allow-list fails the same way for every key.
      if (error instanceof errors.JOSEAlgNotAllowed) break
    }
  }
  throw new ReceiverError('ERR_CALLBACK_DECRYPTION_FAILED', `the payload did not decrypt: ${reason(failure)}`, { cause: failure })
}

function kidOf(key: DecryptionKey): string | undefined {
  return key instanceof KeyObject || isCryptoKey(key) ? undefined : key.kid
}

/**
 * Opens a verified callback whose body is a JWE: decrypts it and reads the JSON envelope, so
 * `type`, `data` and `body` (now the plaintext) are as for an unencrypted callback. Verify first:
 * the signature covers the encrypted bytes.
 *
 * @example
 * ```ts
 * let cb = await verifySignature({ headers, body: rawBody }, { secret })
 * if (headers['content-type'] === 'application/jose') cb = await decryptCallback(cb, privateJwk)
 * cb.data
 * ```
 */
export async function decryptCallback<T = unknown>(
  callback: VerifiedCallback,
  key: DecryptionKey | readonly DecryptionKey[],
  options: JweAlgorithmOptions = {}
): Promise<VerifiedCallback<T>> {
  const { text } = await decryptPayload(callback.body, key, options)
  let parsed: unknown
  try {
    parsed = JSON.parse(text)
  } catch (cause) {
    throw new ReceiverError('ERR_CALLBACK_DECRYPTION_FAILED', 'the decrypted payload is not JSON', { cause })
  }
  const envelope = typeof parsed === 'object' && parsed !== null && 'data' in parsed ? (parsed as { type?: unknown; data: T }) : undefined
  const { type: _type, ...rest } = callback
  return {
    ...rest,
    ...(typeof envelope?.type === 'string' ? { type: envelope.type } : {}),
    data: envelope === undefined ? (parsed as T) : envelope.data,
    body: text
  }
}

/** A receiver's encryption key pair, from {@link generateEncryptionKey}. */
export interface EncryptionKeyPair {
  /** Keep secret; give it to `decryptPayload` / the receiver. */
  privateJwk: JWK
  /** Publish it (in a JWKS) or store it with the task: `use: 'enc'`, `alg`, `kid` set. */
  publicJwk: JWK
}

/**
 * A fresh encryption key pair for a receiver (X25519 by default; P-256 for peers without X25519).
 *
 * @example
 * ```ts
 * const { privateJwk, publicJwk } = await generateEncryptionKey()
 * // serve { keys: [publicJwk] } at /.well-known/jwks.json, keep privateJwk in the secret store
 * ```
 */
export async function generateEncryptionKey(options: { crv?: 'X25519' | 'P-256' } = {}): Promise<EncryptionKeyPair> {
  const { crv = 'X25519' } = options
  if (crv !== 'X25519' && crv !== 'P-256') throw new TypeError('crv must be "X25519" or "P-256"')
  const { publicKey, privateKey } = await generateKeyPair('ECDH-ES', { crv, extractable: true })
  const publicJwk = await exportJWK(publicKey)
  const kid = await calculateJwkThumbprint(publicJwk, 'sha256')
  const meta = { kid, use: 'enc', alg: 'ECDH-ES' }
  return { privateJwk: { ...(await exportJWK(privateKey)), ...meta }, publicJwk: { ...publicJwk, ...meta } }
}
