import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createHmac, createPrivateKey, createPublicKey } from 'node:crypto'
import { signPayload, verifySignature } from 'endpoint-callback'
import { asymmetricVector, decoySignatures, malformedTimestamps, signingVectors } from '../support/vectors.ts'

// The vectors are fixed in time; the clock is set to their timestamp.
const at = (seconds: number) => () => new Date(seconds * 1000)

function headersFor(vector: { id: string; timestamp: number }, signature: string): Record<string, string> {
  return { 'webhook-id': vector.id, 'webhook-timestamp': String(vector.timestamp), 'webhook-signature': signature }
}

for (const vector of signingVectors) {
  test(`signing the published vector from ${vector.source} gives its exact signature`, () => {
    const headers = signPayload({ id: vector.id, timestamp: vector.timestamp, body: vector.payload }, { secret: vector.secret })
    assert.equal(headers['webhook-signature'], vector.signature)
    assert.equal(headers['webhook-timestamp'], String(vector.timestamp))
  })

  test(`the published vector from ${vector.source} verifies, as text and as bytes`, async () => {
    for (const body of [vector.payload, Buffer.from(vector.payload), new TextEncoder().encode(vector.payload).buffer]) {
      const callback = await verifySignature(
        { headers: headersFor(vector, vector.signature), body },
        { secret: vector.secret, now: at(vector.timestamp) }
      )
      assert.equal(callback.id, vector.id)
      assert.equal(callback.timestamp.getTime(), vector.timestamp * 1000)
      assert.equal(callback.body, vector.payload)
      assert.deepEqual(callback.data, JSON.parse(vector.payload))
    }
  })
}

const [first] = signingVectors

test('the valid signature among the published decoys (v1 wrong, v2 unknown) verifies', async () => {
  const [a, b, c] = decoySignatures.multi
  const signature = [a, b, first.signature, c].join(' ')
  const callback = await verifySignature(
    { headers: headersFor(first, signature), body: first.payload },
    { secret: first.secret, now: at(first.timestamp) }
  )
  assert.equal(callback.id, first.id)
})

test('the published non-matching signatures are rejected as a mismatch', async () => {
  const cases = [
    decoySignatures.rustSingle,
    decoySignatures.rustMulti.join(' '),
    decoySignatures.lastCharChanged,
    decoySignatures.multi.join(' '),
  ]
  for (const signature of cases) {
    await assert.rejects(
      verifySignature({ headers: headersFor(first, signature), body: first.payload }, { secret: first.secret, now: at(first.timestamp) }),
      { name: 'SignatureVerificationError', code: 'ERR_CALLBACK_SIGNATURE_MISMATCH' },
      signature
    )
  }
})

test('the published garbage, partial and unversioned signatures are rejected as malformed', async () => {
  for (const signature of [decoySignatures.garbage, decoySignatures.truncatedTail, ...decoySignatures.partial, decoySignatures.noVersion]) {
    await assert.rejects(
      verifySignature({ headers: headersFor(first, signature), body: first.payload }, { secret: first.secret, now: at(first.timestamp) }),
      { name: 'SignatureVerificationError', code: 'ERR_CALLBACK_SIGNATURE_MALFORMED' },
      signature
    )
  }
})

test('the published malformed timestamps are rejected before any signature is checked', async () => {
  for (const timestamp of malformedTimestamps) {
    const headers = { ...headersFor(first, first.signature), 'webhook-timestamp': timestamp }
    await assert.rejects(verifySignature({ headers, body: first.payload }, { secret: first.secret, now: at(first.timestamp) }), {
      code: 'ERR_CALLBACK_SIGNATURE_TIMESTAMP_MALFORMED',
    })
  }
})

test('the published vector is rejected one second past the tolerance on either side, accepted at its edge', async () => {
  const request = { headers: headersFor(first, first.signature), body: first.payload }
  const options = { secret: first.secret }
  await verifySignature(request, { ...options, now: at(first.timestamp + 300) })
  await verifySignature(request, { ...options, now: at(first.timestamp - 300) })
  await assert.rejects(verifySignature(request, { ...options, now: at(first.timestamp + 301) }), {
    code: 'ERR_CALLBACK_SIGNATURE_TIMESTAMP_TOO_OLD',
  })
  await assert.rejects(verifySignature(request, { ...options, now: at(first.timestamp - 301) }), {
    code: 'ERR_CALLBACK_SIGNATURE_TIMESTAMP_TOO_NEW',
  })
})

test('each missing header of the published vector is reported as missing', async () => {
  for (const name of ['webhook-id', 'webhook-timestamp', 'webhook-signature']) {
    const headers = headersFor(first, first.signature)
    delete headers[name]
    await assert.rejects(
      verifySignature({ headers, body: first.payload }, { secret: first.secret, now: at(first.timestamp) }),
      (error: Error & { code?: string }) => {
        assert.equal(error.code, 'ERR_CALLBACK_SIGNATURE_HEADERS_MISSING')
        assert.match(error.message, new RegExp(name))
        return true
      }
    )
  }
})

// The Go suite keys Ed25519 by its 32-byte seed; our `whsk_` form is seed‖public (64 bytes), so
// the public half is derived here from the published seed.
function ed25519FromSeed(seedBase64: string): { signingKey: string; publicKey: string } {
  const seed = Buffer.from(seedBase64, 'base64')
  // PKCS#8 wrapping of a bare Ed25519 seed (RFC 8410): a fixed 16-byte header, then the seed.
  const pkcs8 = Buffer.concat([Buffer.from('302e020100300506032b657004220420', 'hex'), seed])
  const key = createPrivateKey({ key: pkcs8, format: 'der', type: 'pkcs8' })
  const pub = Buffer.from(createPublicKey(key).export({ format: 'jwk' }).x ?? '', 'base64url')
  return {
    signingKey: 'whsk_' + Buffer.concat([seed, pub]).toString('base64'),
    publicKey: 'whpk_' + pub.toString('base64'),
  }
}

test(`signing the published Ed25519 vector from ${asymmetricVector.source} gives its exact v1a signature`, async () => {
  const { signingKey, publicKey } = ed25519FromSeed(asymmetricVector.seed)
  const message = { id: asymmetricVector.id, timestamp: asymmetricVector.timestamp, body: asymmetricVector.payload }
  const headers = signPayload(message, { signingKey })
  assert.equal(headers['webhook-signature'], asymmetricVector.signature)

  const callback = await verifySignature(
    { headers: headersFor(asymmetricVector, asymmetricVector.signature), body: asymmetricVector.payload },
    { publicKey, now: at(asymmetricVector.timestamp) }
  )
  assert.equal(callback.id, asymmetricVector.id)
  await assert.rejects(
    verifySignature(
      { headers: headersFor(asymmetricVector, asymmetricVector.signature), body: asymmetricVector.payload + ' ' },
      { publicKey, now: at(asymmetricVector.timestamp) }
    ),
    { code: 'ERR_CALLBACK_SIGNATURE_MISMATCH' }
  )
})

// No published vector uses a secret under 24 bytes (the shortest, above, is exactly 24), yet other
// Standard Webhooks senders and the reference libraries accept any non-empty secret. So verify does
// too; only signing holds to the 24–64 bytes of the specification.
test('a secret shorter than 24 bytes still verifies, but cannot be used to sign', async () => {
  const short = 'whsec_' + Buffer.from('sixteen byte key').toString('base64')
  const { id, timestamp, payload } = first
  const digest = createHmac('sha256', Buffer.from('sixteen byte key')).update(`${id}.${timestamp}.${payload}`).digest('base64')
  const callback = await verifySignature(
    { headers: headersFor(first, `v1,${digest}`), body: payload },
    { secret: short, now: at(timestamp) }
  )
  assert.equal(callback.id, id)
  assert.throws(() => signPayload({ id, timestamp, body: payload }, { secret: short }), /secret must hold 24 to 64 bytes to sign with, not 16/)
})
