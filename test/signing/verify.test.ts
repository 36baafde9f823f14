import { test } from 'node:test'
import assert from 'node:assert/strict'
import {
  createVerifier,
  generateSecret,
  generateSigningKey,
  signPayload,
  SignatureVerificationError,
  verifySignature,
} from 'endpoint-callback'
import type { VerifyOptions } from 'endpoint-callback'

const secret = generateSecret()
const now = new Date('2025-06-01T12:00:00Z')
const clock = () => now
const body = JSON.stringify({ type: 'report.ready', timestamp: now.toISOString(), data: { reportId: 7, name: 'Zoë' } })
const signed = signPayload({ id: 'task_42', timestamp: now, body }, { secret })

test('a callback verifies and gives its id, timestamp, type, data and raw body', async () => {
  const callback = await verifySignature({ headers: signed, body }, { secret, now: clock })
  assert.deepEqual(callback, {
    id: 'task_42',
    timestamp: new Date(Math.floor(now.getTime() / 1000) * 1000),
    type: 'report.ready',
    data: { reportId: 7, name: 'Zoë' },
    body,
  })
})

test('the headers may be Fetch Headers, Node-style lower-case records or records in any case', async () => {
  const shapes = [
    new Headers(signed),
    { ...signed, 'content-type': 'application/json' },
    { 'Webhook-Id': signed['webhook-id'], 'WEBHOOK-TIMESTAMP': signed['webhook-timestamp'], 'Webhook-Signature': signed['webhook-signature'] },
    { 'webhook-id': [signed['webhook-id']], 'webhook-timestamp': signed['webhook-timestamp'], 'webhook-signature': [signed['webhook-signature']] },
  ]
  for (const headers of shapes) {
    const callback = await verifySignature({ headers, body }, { secret, now: clock })
    assert.equal(callback.id, 'task_42')
  }
})

test('svix-id, svix-timestamp and svix-signature are accepted in place of the webhook-* names', async () => {
  const headers = {
    'svix-id': signed['webhook-id'],
    'svix-timestamp': signed['webhook-timestamp'],
    'svix-signature': signed['webhook-signature'],
  }
  const callback = await verifySignature({ headers, body }, { secret, now: clock })
  assert.equal(callback.id, 'task_42')
  const fetchCallback = await verifySignature({ headers: new Headers(headers), body }, { secret, now: clock })
  assert.equal(fetchCallback.type, 'report.ready')
})

test('the body may be a string, a Buffer, a Uint8Array view into a larger buffer or an ArrayBuffer', async () => {
  const bytes = Buffer.from(body)
  const padded = new Uint8Array(bytes.length + 10)
  padded.set(bytes, 5)
  const shapes = [body, bytes, new Uint8Array(bytes), padded.subarray(5, 5 + bytes.length), bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length)]
  for (const shape of shapes) {
    const callback = await verifySignature({ headers: signed, body: shape }, { secret, now: clock })
    assert.equal(callback.body, body)
  }
})

test('bytes that are not valid UTF-8 are verified as received, not after a text round-trip', async () => {
  const raw = Uint8Array.from([0xff, 0xfe, 0x00, 0x41, 0xc3])
  const headers = signPayload({ id: 'task_bin', timestamp: now, body: raw }, { secret })
  const callback = await verifySignature({ headers, body: raw }, { secret, now: clock })
  assert.equal(callback.data, undefined)
  // The same bytes after a lossy decode and re-encode are different bytes: they must not verify.
  const roundTripped = Buffer.from(Buffer.from(raw).toString('utf8'))
  await assert.rejects(verifySignature({ headers, body: roundTripped }, { secret, now: clock }), {
    code: 'ERR_CALLBACK_SIGNATURE_MISMATCH',
  })
})

test('a validly signed body that is not JSON verifies with data undefined; other JSON is given as data', async () => {
  for (const [text, data, type] of [
    ['plain text, not JSON', undefined, undefined],
    ['{"broken": ', undefined, undefined],
    ['', undefined, undefined],
    ['{"hello":"world"}', { hello: 'world' }, undefined],
    ['[1,2,3]', [1, 2, 3], undefined],
    ['{"type":"a.b","data":null}', null, 'a.b'],
  ] as const) {
    const headers = signPayload({ id: 'task_t', timestamp: now, body: text }, { secret })
    const callback = await verifySignature({ headers, body: text }, { secret, now: clock })
    assert.deepEqual(callback.data, data, text)
    assert.equal(callback.type, type, text)
    assert.equal(callback.body, text)
  }
})

test('any of several secrets may match, so a receiver can rotate without downtime', async () => {
  const next = generateSecret()
  const callback = await verifySignature({ headers: signed, body }, { secret: [next, secret], now: clock })
  assert.equal(callback.id, 'task_42')
  const { signingKey, publicKey } = generateSigningKey()
  const edSigned = signPayload({ id: 'task_ed', timestamp: now, body }, { signingKey })
  const mixed = await verifySignature({ headers: edSigned, body }, { secret: next, publicKey: [generateSigningKey().publicKey, publicKey], now: clock })
  assert.equal(mixed.id, 'task_ed')
})

test('unknown signature versions are ignored and a header with only them does not verify', async () => {
  const headers = { ...signed, 'webhook-signature': `v9,abc v2,${signed['webhook-signature'].slice(3)} ${signed['webhook-signature']}` }
  assert.equal((await verifySignature({ headers, body }, { secret, now: clock })).id, 'task_42')
  const only = { ...signed, 'webhook-signature': `v2,${signed['webhook-signature'].slice(3)}` }
  await assert.rejects(verifySignature({ headers: only, body }, { secret, now: clock }), { code: 'ERR_CALLBACK_SIGNATURE_MISMATCH' })
})

test('a changed body, id, timestamp or signature is rejected with a mismatch', async () => {
  const ts = signed['webhook-timestamp']
  const sig = signed['webhook-signature']
  const flipped = sig.slice(0, 10) + (sig[10] === 'A' ? 'B' : 'A') + sig.slice(11)
  const cases = [
    { headers: signed, body: body.replace('7', '8') },
    { headers: signed, body: body + '\n' },
    { headers: { ...signed, 'webhook-id': 'task_43' }, body },
    { headers: { ...signed, 'webhook-timestamp': String(Number(ts) + 1) }, body },
    { headers: { ...signed, 'webhook-signature': flipped }, body },
  ]
  for (const request of cases) {
    await assert.rejects(verifySignature(request, { secret, now: clock }), (error: unknown) => {
      assert.ok(error instanceof SignatureVerificationError)
      assert.equal(error.code, 'ERR_CALLBACK_SIGNATURE_MISMATCH')
      return true
    })
  }
  await assert.rejects(verifySignature({ headers: signed, body }, { secret: generateSecret(), now: clock }), {
    code: 'ERR_CALLBACK_SIGNATURE_MISMATCH',
  })
})

test('a signature spelled with stray bits or invalid characters is not accepted as the same signature', async () => {
  const sig = signed['webhook-signature'].slice(3)
  // Same 32 bytes to a lenient decoder: a character it skips, and no padding.
  for (const variant of [`v1,${sig.slice(0, 20)}!${sig.slice(20)}`, `v1,${sig.slice(0, -1)}`, `v1,${sig} `.trim() + '=']) {
    await assert.rejects(verifySignature({ headers: { ...signed, 'webhook-signature': variant }, body }, { secret, now: clock }), {
      code: 'ERR_CALLBACK_SIGNATURE_MALFORMED',
    })
  }
})

test('timestamps must be digits only and within the tolerance, which is configurable', async () => {
  for (const timestamp of ['', ' 1748779200', '1748779200.0', '-1', '+1748779200', '1e9', '0x68', '12345678901234567']) {
    const headers = { ...signed, 'webhook-timestamp': timestamp }
    await assert.rejects(verifySignature({ headers, body }, { secret, now: clock }), {
      code: timestamp === '' ? 'ERR_CALLBACK_SIGNATURE_HEADERS_MISSING' : 'ERR_CALLBACK_SIGNATURE_TIMESTAMP_MALFORMED',
    })
  }
  const later = () => new Date(now.getTime() + 60_000)
  await verifySignature({ headers: signed, body }, { secret, now: later })
  await assert.rejects(verifySignature({ headers: signed, body }, { secret, now: later, toleranceSeconds: 30 }), {
    code: 'ERR_CALLBACK_SIGNATURE_TIMESTAMP_TOO_OLD',
  })
  const earlier = () => new Date(now.getTime() - 60_000)
  await assert.rejects(verifySignature({ headers: signed, body }, { secret, now: earlier, toleranceSeconds: 30 }), {
    code: 'ERR_CALLBACK_SIGNATURE_TIMESTAMP_TOO_NEW',
  })
})

test('a header that is empty or only spaces is missing or malformed, never a match', async () => {
  await assert.rejects(verifySignature({ headers: { ...signed, 'webhook-signature': '' }, body }, { secret, now: clock }), {
    code: 'ERR_CALLBACK_SIGNATURE_HEADERS_MISSING',
  })
  await assert.rejects(verifySignature({ headers: { ...signed, 'webhook-signature': '   ' }, body }, { secret, now: clock }), {
    code: 'ERR_CALLBACK_SIGNATURE_MALFORMED',
  })
  await assert.rejects(verifySignature({ headers: {}, body }, { secret, now: clock }), (error: Error) => {
    assert.match(error.message, /webhook-id, webhook-timestamp, webhook-signature/)
    return true
  })
})

test('error messages never contain the secret or the expected signature', async () => {
  const requests = [
    { headers: signed, body: body + 'x' },
    { headers: { ...signed, 'webhook-signature': 'v1,nope' }, body },
    { headers: { ...signed, 'webhook-timestamp': 'soon' }, body },
  ]
  for (const request of requests) {
    await assert.rejects(verifySignature(request, { secret, now: clock }), (error: Error) => {
      const text = `${error.message} ${String(error.stack)}`
      assert.ok(!text.includes(secret.slice(6)))
      assert.ok(!text.includes(signed['webhook-signature'].slice(3)))
      return true
    })
  }
})

test('bad options are a TypeError naming the option, raised when the verifier is created', () => {
  const cases: Array<[VerifyOptions, RegExp]> = [
    [{}, /secret or publicKey/],
    [{ secret: 'not-a-secret' }, /^secret must start with "whsec_"/],
    [{ secret: 'whsec_***' }, /^secret is not valid base64/],
    [{ secret: 'whsec_' }, /^secret is empty/],
    [{ secret: [] }, /^secret must not be an empty array/],
    [{ secret: [secret, 'whsec_a'] }, /^secret\[1\] is not valid base64/],
    [{ publicKey: 'whpk_AAAA' }, /^publicKey must hold 32 bytes/],
    [{ publicKey: secret }, /^publicKey must start with "whpk_"/],
    [{ secret, toleranceSeconds: -1 }, /^toleranceSeconds/],
    [{ secret, toleranceSeconds: Number.NaN }, /^toleranceSeconds/],
    [{ secret, now: 'yesterday' as unknown as () => Date }, /^now/],
  ]
  for (const [options, message] of cases) {
    assert.throws(() => createVerifier(options), (error: unknown) => error instanceof TypeError && message.test(error.message))
  }
})

test('verifySignature rejects (not throws) for bad options and for a body that is not raw bytes', async () => {
  const pending = verifySignature({ headers: signed, body }, { secret: 'whsec_!' })
  assert.ok(pending instanceof Promise)
  await assert.rejects(pending, TypeError)
  await assert.rejects(verifySignature({ headers: signed, body: { parsed: true } as unknown as string }, { secret, now: clock }), /body must be the raw body/)
})

test('a secret replaced on the same options object takes effect on the next call', async () => {
  const options: VerifyOptions = { secret, now: clock }
  await verifySignature({ headers: signed, body }, options)
  options.secret = generateSecret()
  await assert.rejects(verifySignature({ headers: signed, body }, options), { code: 'ERR_CALLBACK_SIGNATURE_MISMATCH' })
  const list = [generateSecret()]
  options.secret = list
  await assert.rejects(verifySignature({ headers: signed, body }, options), { code: 'ERR_CALLBACK_SIGNATURE_MISMATCH' })
  list.push(secret)
  assert.equal((await verifySignature({ headers: signed, body }, options)).id, 'task_42')
})

test('createVerifier gives a reusable function with the same results', async () => {
  const verify = createVerifier({ secret, now: clock })
  const callback = await verify<{ reportId: number }>({ headers: signed, body })
  assert.equal(callback.data.reportId, 7)
  await assert.rejects(verify({ headers: signed, body: '' }), { code: 'ERR_CALLBACK_SIGNATURE_MISMATCH' })
})

test('a secret that verified before is still refused when given as a public key', async () => {
  await verifySignature({ headers: signed, body }, { secret, now: clock })
  assert.throws(() => createVerifier({ publicKey: secret }), /^TypeError: publicKey must start with "whpk_"/)
})
