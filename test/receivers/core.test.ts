import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createPublicKey, randomUUID } from 'node:crypto'
import type { KeyObject } from 'node:crypto'
import {
  CallbackError,
  createMemoryReplayGuard,
  encryptPayload,
  generateEncryptionKey,
  generateSigningKey,
  publicKeyToJwk,
  signPayload,
} from 'endpoint-callback'
import type { RemoteJwks, ReplayGuard } from 'endpoint-callback'
import { createReceiverCore } from '../../src/receivers/core.ts'
import { envelope, ROTATING, signed, WRONG_SECRET } from '../support/receiver-cases.ts'

test('a user-supplied replay guard decides duplicates, and only a 2xx answer is remembered', async () => {
  const calls: string[] = []
  const states = new Map<string, 'in-flight' | 'done'>()
  const guard: ReplayGuard = {
    async begin(id) {
      calls.push(`begin ${id}`)
      const state = states.get(id)
      if (state !== undefined) return state
      states.set(id, 'in-flight')
      return 'new'
    },
    async remember(id) {
      calls.push(`remember ${id}`)
      states.set(id, 'done')
    },
    async forget(id) {
      calls.push(`forget ${id}`)
      states.delete(id)
    },
  }
  const receiver = createReceiverCore({ ...ROTATING, replayGuard: guard })
  const first = await receiver.admit(signed('signPayload', { id: 'x' }))
  assert.ok(first.accepted)
  await first.settle(500)
  const second = await receiver.admit(signed('signPayload', { id: 'x' }))
  assert.ok(second.accepted, 'the failed delivery is processed again')
  await second.settle(204)
  const third = await receiver.admit(signed('signPayload', { id: 'x' }))
  assert.equal(third.accepted, false)
  assert.equal(third.status, 200)
  assert.deepEqual(calls, ['begin x', 'forget x', 'begin x', 'remember x', 'begin x'])
})

test('a guard that cannot record an outcome leaves duplicates at 409, never acknowledged unprocessed', async () => {
  const memory = createMemoryReplayGuard()
  const guard: ReplayGuard = {
    begin: (id) => memory.begin(id),
    remember: async () => {
      throw new Error('redis is down')
    },
    forget: async () => {
      throw new Error('redis is down')
    },
  }
  const receiver = createReceiverCore({ ...ROTATING, replayGuard: guard })
  const accepted = await receiver.admit(signed('signPayload', { id: 'y' }))
  assert.ok(accepted.accepted)
  await accepted.settle(200) // resolves although the guard failed: the answer has already gone out
  const duplicate = await receiver.admit(signed('signPayload', { id: 'y' }))
  assert.equal(duplicate.accepted, false)
  assert.equal(duplicate.status, 409)
})

test('a guard that cannot begin makes the receiver reject, so the framework answers 500 and the sender retries', async () => {
  const receiver = createReceiverCore({
    ...ROTATING,
    replayGuard: {
      begin: async () => {
        throw new Error('redis is down')
      },
      remember: async () => {},
      forget: async () => {},
    },
  })
  await assert.rejects(receiver.admit(signed('signPayload')), /redis is down/)
})

test('an answer given before the body was read asks for the connection to be closed', async () => {
  const receiver = createReceiverCore({ ...ROTATING, maxBodyBytes: 10, contentTypes: ['application/json'] })
  let reads = 0
  const read = async () => (reads++, '{}')
  const sent = signed('signPayload')
  const wrongType = await receiver.admit({ headers: { ...sent.headers, 'content-type': 'text/plain' }, body: read })
  assert.equal(wrongType.accepted, false)
  assert.equal(wrongType.status, 415)
  assert.equal(wrongType.headers['connection'], 'close')
  const declaredTooLarge = await receiver.admit({ headers: { ...sent.headers, 'content-length': '11' }, body: read })
  assert.equal(declaredTooLarge.accepted, false)
  assert.equal(declaredTooLarge.status, 413)
  assert.equal(declaredTooLarge.headers['connection'], 'close')
  assert.equal(reads, 0)
  const badSignature = await receiver.admit({ headers: sent.headers, body: read })
  assert.equal(badSignature.accepted, false)
  assert.equal(badSignature.status, 401)
  assert.equal(badSignature.headers['connection'], undefined, 'a fully read request keeps its connection')
})

test('the problem document says what failed without the error message, secret or signature', async () => {
  const receiver = createReceiverCore(ROTATING)
  const sent = signed('standardwebhooks')
  const answer = await receiver.admit({ ...sent, body: sent.body + ' ' })
  assert.equal(answer.accepted, false)
  assert.deepEqual(JSON.parse(answer.body), {
    type: 'urn:endpoint-callback:problem:signature-mismatch',
    title: 'Signature does not match',
    status: 401,
    code: 'ERR_CALLBACK_SIGNATURE_MISMATCH',
  })
})

// ---- security wiring: remote JWKS, encrypted callbacks, intent challenges ----------------------

function jwksStub(load: (refresh: boolean) => Promise<KeyObject[]>): RemoteJwks & { calls: boolean[] } {
  const calls: boolean[] = []
  const remote = async ({ refresh = false } = {}) => {
    calls.push(refresh)
    return load(refresh)
  }
  return Object.assign(remote, { calls, publicKeys: async () => [] as string[] })
}

function v1aSigned(signingKey: string, body = envelope({ reportId: 7 })) {
  const headers = signPayload({ id: `msg_${randomUUID()}`, timestamp: new Date(), body }, { signingKey })
  return { headers: { ...headers, 'content-type': 'application/json' }, body }
}

test("a sender's JWKS that cannot be loaded is answered 503 with retry-after, so the sender retries", async () => {
  const remote = jwksStub(async () => {
    throw new CallbackError('ERR_CALLBACK_JWKS', 'could not fetch the JWKS from https://sender.example/jwks.json')
  })
  const receiver = createReceiverCore({ jwks: remote })
  const outcome = await receiver.admit(v1aSigned(generateSigningKey().signingKey))
  assert.equal(outcome.accepted, false)
  assert.ok(!outcome.accepted)
  assert.equal(outcome.status, 503)
  assert.equal(outcome.headers['retry-after'], '30')
  assert.equal(JSON.parse(outcome.body).code, 'ERR_CALLBACK_JWKS')
  assert.doesNotMatch(outcome.body, /sender\.example/)
})

test('a v1a signature by a key the JWKS lacks makes one refetch, and verifies when the refetch brings the key', async () => {
  const { signingKey, publicKey } = generateSigningKey()
  const rotatedIn = createPublicKey({ key: publicKeyToJwk(publicKey), format: 'jwk' })
  const older = createPublicKey({ key: publicKeyToJwk(generateSigningKey().publicKey), format: 'jwk' })
  const before = [older]
  const after = [older, rotatedIn]
  const remote = jwksStub(async (refresh) => (refresh ? after : before))
  const receiver = createReceiverCore({ jwks: remote })
  const outcome = await receiver.admit(v1aSigned(signingKey))
  assert.ok(outcome.accepted)
  assert.deepEqual(remote.calls, [false, true])
  // A signature no published key made: one refetch, which changes nothing, then 401.
  const stranger = await receiver.admit(v1aSigned(generateSigningKey().signingKey))
  assert.ok(!stranger.accepted)
  assert.equal(stranger.status, 401)
  assert.deepEqual(remote.calls, [false, true, false, true])
})

test('requests without a v1a signature never make the receiver fetch the JWKS', async () => {
  const remote = jwksStub(async () => [])
  const receiver = createReceiverCore({ ...ROTATING, jwks: remote })
  assert.ok((await receiver.admit(signed('signPayload'))).accepted)
  const unsigned = await receiver.admit({ headers: { 'content-type': 'application/json' }, body: '{}' })
  assert.ok(!unsigned.accepted)
  assert.equal(unsigned.status, 400)
  assert.deepEqual(remote.calls, [])
})

test('an encrypted callback reaches the handler decrypted, and a tampered ciphertext is refused with 400', async () => {
  const { privateJwk, publicJwk } = await generateEncryptionKey()
  const receiver = createReceiverCore({ ...ROTATING, decryptionKey: privateJwk })
  const plaintext = envelope({ reportId: 9, secretSauce: 'tomato' })
  const { body } = await encryptPayload(plaintext, publicJwk)
  const request = signed('signPayload', { body })
  request.headers['content-type'] = 'application/jose'
  const outcome = await receiver.admit(request)
  assert.ok(outcome.accepted)
  assert.deepEqual(outcome.callback.data, { reportId: 9, secretSauce: 'tomato' })
  assert.equal(outcome.callback.type, 'report.ready')
  assert.equal(outcome.callback.body, plaintext)

  const parts = body.split('.')
  const ciphertext = parts[3]!
  parts[3] = (ciphertext[0] === 'A' ? 'B' : 'A') + ciphertext.slice(1)
  const tampered = signed('signPayload', { body: parts.join('.') })
  tampered.headers['content-type'] = 'application/jose'
  const refused = await receiver.admit(tampered)
  assert.ok(!refused.accepted)
  assert.equal(refused.status, 400)
  assert.equal(JSON.parse(refused.body).code, 'ERR_CALLBACK_DECRYPTION_FAILED')
  assert.doesNotMatch(refused.body, /tomato/)
})

test('an encrypted callback at a receiver without decryptionKey is a 500 misconfiguration, never handed over as ciphertext', async () => {
  const { publicJwk } = await generateEncryptionKey()
  const receiver = createReceiverCore(ROTATING)
  const request = signed('signPayload', { body: (await encryptPayload(envelope({ a: 1 }), publicJwk)).body })
  request.headers['content-type'] = 'application/jose; charset=utf-8'
  const outcome = await receiver.admit(request)
  assert.ok(!outcome.accepted)
  assert.equal(outcome.status, 500)
  assert.equal(outcome.error?.code, 'ERR_CALLBACK_DECRYPTION_KEY_MISSING')
})

test('decryption options are checked once, naming the option and never showing the key', () => {
  const publicOnly = { kty: 'OKP', crv: 'X25519', x: 'hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo' }
  assert.throws(() => createReceiverCore({ ...ROTATING, decryptionKey: publicOnly }), { name: 'TypeError', message: /^decryptionKey must be a private key/ })
  assert.throws(() => createReceiverCore({ ...ROTATING, decryptionKey: [] }), { name: 'TypeError', message: /^decryptionKey/ })
  assert.throws(() => createReceiverCore({ ...ROTATING, decryptionKey: 'x' as never }), { name: 'TypeError', message: /^decryptionKey/ })
  assert.throws(() => createReceiverCore({ ...ROTATING, keyManagementAlgorithms: [] }), { name: 'TypeError', message: /^keyManagementAlgorithms/ })
  assert.throws(() => createReceiverCore({ ...ROTATING, contentEncryptionAlgorithms: [''] as never }), {
    name: 'TypeError',
    message: /^contentEncryptionAlgorithms/,
  })
  assert.throws(() => createReceiverCore({ jwks: 'http://sender.example/jwks.json' }), { name: 'TypeError', message: /^jwks must use https:/ })
})

test('a verified intent challenge is echoed before the replay guard and the handler; an unsigned one is refused', async () => {
  const guard = createMemoryReplayGuard()
  const receiver = createReceiverCore({ ...ROTATING, replayGuard: guard })
  const challenge = 'x'.repeat(43)
  const request = signed('signPayload', { id: 'intent_abc', body: envelope({ challenge }, 'webhook.intent') })
  request.headers['webhook-intent'] = challenge
  const outcome = await receiver.admit({ method: 'POST', ...request })
  assert.ok(!outcome.accepted)
  assert.deepEqual({ status: outcome.status, body: outcome.body }, { status: 200, body: challenge })
  assert.equal(await guard.begin('intent_abc'), 'new', 'the challenge id is not remembered')

  const forged = signed('signPayload', { secret: WRONG_SECRET, body: envelope({ challenge }, 'webhook.intent') })
  forged.headers['webhook-intent'] = challenge
  const refused = await receiver.admit({ method: 'POST', ...forged })
  assert.ok(!refused.accepted)
  assert.equal(refused.status, 401)
  assert.doesNotMatch(refused.body, new RegExp(challenge))
})
