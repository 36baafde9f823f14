/**
 * Property-based checks on hostile input: whatever arrives, verification either returns a verified
 * callback or fails with one of its documented errors, and nothing tampered with is ever accepted.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import fc from 'fast-check'
import {
  createSigner,
  createVerifier,
  generateSecret,
  generateSigningKey,
  signPayload,
  SignatureVerificationError,
  verifySignature,
} from 'endpoint-callback'

const secret = generateSecret()
const { signingKey, publicKey } = generateSigningKey()
const nowSeconds = 1_750_000_000
const clock = () => new Date(nowSeconds * 1000)
const verify = createVerifier({ secret, publicKey, now: clock })
const sign = createSigner({ secret, signingKey })

const verificationCodes = new Set([
  'ERR_CALLBACK_SIGNATURE_HEADERS_MISSING',
  'ERR_CALLBACK_SIGNATURE_TIMESTAMP_MALFORMED',
  'ERR_CALLBACK_SIGNATURE_TIMESTAMP_TOO_OLD',
  'ERR_CALLBACK_SIGNATURE_TIMESTAMP_TOO_NEW',
  'ERR_CALLBACK_SIGNATURE_MALFORMED',
  'ERR_CALLBACK_SIGNATURE_MISMATCH',
])

function assertDocumented(error: unknown): asserts error is SignatureVerificationError {
  assert.ok(error instanceof SignatureVerificationError, `unexpected ${String(error)}`)
  assert.ok(verificationCodes.has(error.code), error.code)
}

async function outcome(request: Parameters<typeof verify>[0]): Promise<'accepted' | string> {
  try {
    await verify(request)
    return 'accepted'
  } catch (error) {
    assertDocumented(error)
    return error.code
  }
}

const visibleId = fc.string({ minLength: 1, maxLength: 40, unit: fc.constantFrom(...'abcdefghijklmnopqrstuvwxyzABC0123456789_-.:/'.split('')) })
const bodyArbitrary = fc.oneof(
  fc.string({ maxLength: 300 }),
  fc.string({ maxLength: 100, unit: 'binary' }),
  fc.uint8Array({ maxLength: 300 }),
  fc.jsonValue().map((value) => JSON.stringify({ type: 'x.y', timestamp: '2025-01-01T00:00:00Z', data: value }))
)
const signatureHeaderText = fc.oneof(
  fc.string({ maxLength: 200 }),
  fc.array(fc.tuple(fc.constantFrom('v1', 'v1a', 'v2', '', 'V1', 'v1 '), fc.base64String({ maxLength: 100 })).map(([v, s]) => `${v},${s}`), { maxLength: 5 }).map((entries) => entries.join(' ')),
  fc.base64String({ minLength: 44, maxLength: 44 }).map((s) => `v1,${s}`),
  fc.base64String({ minLength: 88, maxLength: 88 }).map((s) => `v1a,${s}`)
)
const timestampText = fc.oneof(
  fc.string({ maxLength: 20 }),
  fc.integer({ min: nowSeconds - 1000, max: nowSeconds + 1000 }).map(String),
  fc.bigInt({ min: 0n, max: 10n ** 30n }).map(String),
  fc.double().map(String)
)
const headerValue = <T>(value: fc.Arbitrary<T>) => fc.option(fc.oneof(value, value.map((v) => [v])), { nil: undefined })

test('random headers, timestamps and bodies are never accepted, and never fail with anything but a documented verification error', async () => {
  await fc.assert(
    fc.asyncProperty(
      headerValue(fc.string({ maxLength: 50 })),
      headerValue(timestampText),
      headerValue(signatureHeaderText),
      fc.boolean(),
      fc.constantFrom('record', 'headers', 'upper', 'svix'),
      bodyArbitrary,
      async (id, timestamp, signature, extra, shape, body) => {
        const values = { id, timestamp, signature }
        const record: Record<string, string | string[] | undefined> = {}
        const prefix = shape === 'svix' ? 'svix-' : shape === 'upper' ? 'Webhook-' : 'webhook-'
        for (const [name, value] of Object.entries(values)) if (value !== undefined) record[prefix + name] = value
        if (extra) record['content-type'] = 'application/json'
        let headers: Parameters<typeof verify>[0]['headers'] = record
        if (shape === 'headers') {
          const fetchHeaders = new Headers()
          for (const [name, value] of Object.entries(record)) {
            // Fetch refuses values with control characters itself; that is the platform, not us.
            try {
              for (const item of [value ?? []].flat()) fetchHeaders.append(name, item)
            } catch {
              return
            }
          }
          headers = fetchHeaders
        }
        // no signature here was made with the secret or the key: nothing may pass
        assert.notEqual(await outcome({ headers, body }), 'accepted', JSON.stringify(record))
      }
    ),
    { numRuns: 1000 }
  )
})

test('a signed message cut short anywhere in its headers is never accepted and never crashes', async () => {
  await fc.assert(
    fc.asyncProperty(visibleId, bodyArbitrary, fc.constantFrom('webhook-id', 'webhook-timestamp', 'webhook-signature'), fc.nat(), async (id, body, header, cut) => {
      const headers: Record<string, string> = sign({ id, timestamp: nowSeconds, body })
      const value = headers[header]!
      const at = cut % value.length
      headers[header] = value.slice(0, at)
      const result = await outcome({ headers, body })
      // A shorter id or timestamp, or fewer signature characters, is never the signed message...
      // except cutting exactly between the two complete signatures, which leaves the v1 one intact.
      if (header === 'webhook-signature' && value.slice(0, at).trimEnd().split(' ').some((entry) => value.split(' ').includes(entry))) return
      assert.notEqual(result, 'accepted')
    }),
    { numRuns: 500 }
  )
})

test('every signed message verifies and gives back its id, timestamp and exact body', async () => {
  await fc.assert(
    fc.asyncProperty(visibleId, bodyArbitrary, fc.integer({ min: -300, max: 300 }), async (id, body, skew) => {
      const headers = sign({ id, timestamp: nowSeconds + skew, body })
      const callback = await verify({ headers, body })
      assert.equal(callback.id, id)
      assert.equal(callback.timestamp.getTime(), (nowSeconds + skew) * 1000)
      assert.equal(callback.body, typeof body === 'string' ? body : Buffer.from(body).toString('utf8'))
    }),
    { numRuns: 300 }
  )
})

test('a tampered body, id, timestamp or signature is never accepted', async () => {
  const tamper = fc.oneof(
    fc.record({ kind: fc.constant('body' as const), index: fc.nat(), delta: fc.integer({ min: 1, max: 255 }) }),
    fc.record({ kind: fc.constant('append' as const), extra: fc.uint8Array({ minLength: 1, maxLength: 8 }) }),
    fc.record({ kind: fc.constant('truncate' as const), index: fc.nat() }),
    fc.record({ kind: fc.constant('id' as const), other: visibleId }),
    fc.record({ kind: fc.constant('timestamp' as const), shift: fc.integer({ min: -300, max: 300 }).filter((n) => n !== 0) }),
    fc.record({ kind: fc.constant('leading-zero' as const) }),
    fc.record({ kind: fc.constant('signature' as const), index: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) })
  )
  await fc.assert(
    fc.asyncProperty(visibleId, fc.uint8Array({ minLength: 1, maxLength: 300 }), fc.boolean(), tamper, async (id, bytes, asText, change) => {
      const body = asText ? Buffer.from(bytes).toString('latin1') : bytes
      const headers: Record<string, string> = sign({ id, timestamp: nowSeconds, body })
      let sent: string | Uint8Array = body
      const raw = typeof body === 'string' ? Buffer.from(body) : Buffer.from(body)
      switch (change.kind) {
        case 'body': {
          const copy = Buffer.from(raw)
          const at = change.index % copy.length
          copy[at] = (copy[at]! + change.delta) % 256
          sent = copy
          break
        }
        case 'append':
          sent = Buffer.concat([raw, change.extra])
          break
        case 'truncate':
          sent = raw.subarray(0, change.index % raw.length)
          break
        case 'id':
          if (change.other === id) return
          headers['webhook-id'] = change.other
          break
        case 'timestamp':
          headers['webhook-timestamp'] = String(nowSeconds + change.shift)
          break
        case 'leading-zero':
          // The same number, but not the signed text.
          headers['webhook-timestamp'] = '0' + headers['webhook-timestamp']
          break
        case 'signature': {
          // Flip one bit inside each decoded signature and re-encode it canonically.
          headers['webhook-signature'] = headers['webhook-signature']!
            .split(' ')
            .map((entry) => {
              const [version, text] = entry.split(',') as [string, string]
              const decoded = Buffer.from(text, 'base64')
              decoded[change.index % decoded.length]! ^= 1 << change.bit
              return `${version},${decoded.toString('base64')}`
            })
            .join(' ')
          break
        }
      }
      const result = await outcome({ headers, body: sent })
      assert.notEqual(result, 'accepted', change.kind)
    }),
    { numRuns: 1000 }
  )
})

test('random secrets and keys are either accepted or refused with a TypeError, never anything else', () => {
  const keyText = fc.oneof(
    fc.string({ maxLength: 100 }),
    fc.base64String({ maxLength: 120 }).map((s) => 'whsec_' + s),
    fc.string({ maxLength: 100 }).map((s) => 'whsec_' + s),
    fc.base64String({ maxLength: 120 }).map((s) => 'whpk_' + s),
    fc.base64String({ maxLength: 120 }).map((s) => 'whsk_' + s),
    fc.uint8Array({ minLength: 0, maxLength: 80 }).map((b) => 'whsec_' + Buffer.from(b).toString('base64'))
  )
  const anyValue = fc.oneof(keyText, fc.array(keyText, { maxLength: 3 }), fc.anything())
  fc.assert(
    fc.property(anyValue, anyValue, anyValue, anyValue, (a, b, c, tolerance) => {
      for (const attempt of [
        () => createVerifier({ secret: a as string }),
        () => createVerifier({ publicKey: b as string }),
        () => createVerifier({ secret: a as string, toleranceSeconds: tolerance as number }),
        () => createSigner({ secret: a as string }),
        () => createSigner({ signingKey: c as string }),
      ]) {
        try {
          attempt()
        } catch (error) {
          assert.ok(error instanceof TypeError, `unexpected ${String(error)}`)
        }
      }
    }),
    { numRuns: 1000 }
  )
})

test('a signature made with any other secret is never accepted', async () => {
  await fc.assert(
    fc.asyncProperty(fc.uint8Array({ minLength: 24, maxLength: 64 }), visibleId, fc.string({ maxLength: 100 }), async (key, id, body) => {
      const other = 'whsec_' + Buffer.from(key).toString('base64')
      if (other === secret) return
      const headers = signPayload({ id, timestamp: nowSeconds, body }, { secret: other })
      assert.equal(await outcome({ headers, body }), 'ERR_CALLBACK_SIGNATURE_MISMATCH')
      await assert.rejects(verifySignature({ headers, body }, { secret, now: clock }), { code: 'ERR_CALLBACK_SIGNATURE_MISMATCH' })
    }),
    { numRuns: 200 }
  )
})
