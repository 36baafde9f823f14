import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createSigner, generateSecret, generateSigningKey, signPayload, verifySignature } from 'endpoint-callback'

const secret = generateSecret()
const now = new Date('2025-01-01T00:00:00Z')
const seconds = Math.floor(now.getTime() / 1000)
const body = JSON.stringify({ type: 'report.ready', timestamp: now.toISOString(), data: { reportId: 7 } })

test('a signed callback carries the id, the timestamp in Unix seconds and a v1 signature', () => {
  const headers = signPayload({ id: 'task_1', timestamp: now, body }, { secret })
  assert.equal(headers['webhook-id'], 'task_1')
  assert.equal(headers['webhook-timestamp'], String(seconds))
  assert.match(headers['webhook-signature'], /^v1,[A-Za-z0-9+/]{43}=$/)
})

test('a Date timestamp is rounded down to the second and a number is taken as Unix seconds', () => {
  const fromDate = signPayload({ id: 'task_1', timestamp: new Date(now.getTime() + 999), body }, { secret })
  const fromNumber = signPayload({ id: 'task_1', timestamp: seconds, body }, { secret })
  assert.deepEqual(fromDate, fromNumber)
})

test('a string body and the same bytes as a Uint8Array sign alike', () => {
  const text = '{"emoji":"🎉","accent":"é"}'
  const asText = signPayload({ id: 'task_1', timestamp: seconds, body: text }, { secret })
  const asBytes = signPayload({ id: 'task_1', timestamp: seconds, body: new TextEncoder().encode(text) }, { secret })
  assert.deepEqual(asText, asBytes)
})

test('several secrets and signing keys give one signature each, in order', async () => {
  const second = generateSecret()
  const { signingKey, publicKey } = generateSigningKey()
  const headers = signPayload({ id: 'task_1', timestamp: now, body }, { secret: [secret, second], signingKey })
  const entries = headers['webhook-signature'].split(' ')
  assert.deepEqual(entries.map((entry) => entry.split(',')[0]), ['v1', 'v1', 'v1a'])
  for (const options of [{ secret }, { secret: second }, { publicKey }]) {
    const callback = await verifySignature({ headers, body }, { ...options, now: () => now })
    assert.equal(callback.id, 'task_1')
  }
})

test('an Ed25519-only sender is verified with the public key alone', async () => {
  const { signingKey, publicKey } = generateSigningKey()
  const headers = signPayload({ id: 'task_1', timestamp: now, body }, { signingKey })
  assert.match(headers['webhook-signature'], /^v1a,[A-Za-z0-9+/]{86}==$/)
  const callback = await verifySignature({ headers, body }, { publicKey, now: () => now })
  assert.equal(callback.type, 'report.ready')
  await assert.rejects(verifySignature({ headers, body }, { secret, now: () => now }), {
    code: 'ERR_CALLBACK_SIGNATURE_MISMATCH',
  })
})

test('createSigner refuses bad keys at once, naming the option and never echoing the value', () => {
  const cases: Array<[Parameters<typeof createSigner>[0], RegExp]> = [
    [{}, /secret or signingKey/],
    [{ secret: [] }, /^secret must not be an empty array/],
    [{ secret: 'MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw' }, /^secret must start with "whsec_"/],
    [{ secret: 'whsec_MfKQ9r8GKYqrTwjUPD8I!PZIo2LaLaSw' }, /^secret is not valid base64/],
    [{ secret: 'whsec_' }, /^secret is empty/],
    [{ secret: 'whsec_c2hvcnQ=' }, /^secret must hold 24 to 64 bytes/],
    [{ secret: [secret, 'whsec_c2hvcnQ=='] }, /^secret\[1\] is not valid base64/],
    [{ signingKey: 'whsk_c2hvcnQ=' }, /^signingKey must hold 64 bytes/],
    [{ signingKey: secret }, /^signingKey must start with "whsk_"/],
  ]
  for (const [options, message] of cases) {
    assert.throws(
      () => createSigner(options),
      (error: unknown) => {
        assert.ok(error instanceof TypeError)
        assert.match(error.message, message)
        assert.ok(!error.message.includes('MfKQ9r8GKYqrTwjUPD8'), 'the message must not echo the secret')
        return true
      }
    )
  }
})

test('a signing key whose public half does not belong to its seed is refused', () => {
  const a = generateSigningKey().signingKey
  const b = generateSigningKey().signingKey
  const seed = Buffer.from(a.slice(5), 'base64').subarray(0, 32)
  const otherPublic = Buffer.from(b.slice(5), 'base64').subarray(32)
  const mixed = 'whsk_' + Buffer.concat([seed, otherPublic]).toString('base64')
  assert.throws(() => createSigner({ signingKey: mixed }), /signingKey is inconsistent/)
})

test('the signer refuses an id that cannot travel in a header, and a bad timestamp or body', () => {
  const sign = createSigner({ secret })
  assert.throws(() => sign({ id: '', timestamp: seconds, body }), /^TypeError: id/)
  assert.throws(() => sign({ id: 'a b', timestamp: seconds, body }), /^TypeError: id/)
  assert.throws(() => sign({ id: 'a\r\nx-evil: 1', timestamp: seconds, body }), /^TypeError: id/)
  assert.throws(() => sign({ id: 'a', timestamp: 1.5, body }), /^TypeError: timestamp/)
  assert.throws(() => sign({ id: 'a', timestamp: -1, body }), /^TypeError: timestamp/)
  assert.throws(() => sign({ id: 'a', timestamp: new Date(Number.NaN), body }), /^TypeError: timestamp/)
  assert.throws(() => sign({ id: 'a', timestamp: seconds, body: 42 as unknown as string }), /^TypeError: body/)
})

test('generated secrets hold 32 random bytes and generated key pairs belong together', async () => {
  const a = generateSecret()
  assert.match(a, /^whsec_[A-Za-z0-9+/]{43}=$/)
  assert.equal(Buffer.from(a.slice(6), 'base64').length, 32)
  assert.notEqual(a, generateSecret())
  const { signingKey, publicKey } = generateSigningKey()
  const full = Buffer.from(signingKey.slice(5), 'base64')
  assert.equal(full.length, 64)
  assert.deepEqual(full.subarray(32), Buffer.from(publicKey.slice(5), 'base64'))
  const headers = signPayload({ id: 'task_1', timestamp: now, body }, { signingKey })
  await verifySignature({ headers, body }, { publicKey, now: () => now })
})

test('signPayload follows a secret replaced or rotated in place on the same options object', async () => {
  const options: { secret: string | string[] } = { secret }
  const first = signPayload({ id: 'task_1', timestamp: now, body }, options)
  const next = generateSecret()
  options.secret = next
  const second = signPayload({ id: 'task_1', timestamp: now, body }, options)
  assert.notEqual(first['webhook-signature'], second['webhook-signature'])
  await verifySignature({ headers: second, body }, { secret: next, now: () => now })
  const list = [next]
  options.secret = list
  list.push(secret)
  const both = signPayload({ id: 'task_1', timestamp: now, body }, options)
  assert.equal(both['webhook-signature'].split(' ').length, 2)
})
