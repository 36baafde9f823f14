import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { KeyObject } from 'node:crypto'
import { CompactEncrypt, decodeProtectedHeader, exportJWK, generateKeyPair } from 'jose'
import {
  CallbackError,
  ReceiverError,
  checkEncryptionKey,
  createRemoteEncryptionKey,
  decryptCallback,
  decryptPayload,
  encryptPayload,
  generateEncryptionKey,
  generateSigningKey,
  publicJwks,
  signPayload,
  verifySignature
} from 'endpoint-callback'
import { startLoopbackServer } from '../support/loopback-server.ts'

const envelope = JSON.stringify({ type: 'report.ready', timestamp: '2030-01-01T00:00:00.000Z', data: { reportUrl: 'https://files.example/r/7' } })

function isDecryptionFailure(secret: string) {
  return (error: unknown) =>
    error instanceof ReceiverError &&
    error.code === 'ERR_CALLBACK_DECRYPTION_FAILED' &&
    !error.message.includes(secret) &&
    !String(error.cause).includes(secret) &&
    !JSON.stringify(error).includes(secret)
}

/** Flips one character of the given compact JWE part (0 header … 4 tag). */
function tamper(jwe: string, part: number): string {
  const parts = jwe.split('.')
  const text = parts[part]!
  const index = Math.floor(text.length / 2)
  parts[part] = text.slice(0, index) + (text[index] === 'A' ? 'B' : 'A') + text.slice(index + 1)
  return parts.join('.')
}

test('an X25519 JWE round trip gives back the exact plaintext, as application/jose with ECDH-ES and A256GCM', async () => {
  const { privateJwk, publicJwk } = await generateEncryptionKey()
  assert.equal(publicJwk.d, undefined)
  assert.equal(publicJwk.use, 'enc')
  const encrypted = await encryptPayload(envelope, publicJwk)
  assert.equal(encrypted.contentType, 'application/jose')
  assert.equal(encrypted.body.split('.').length, 5)
  assert.ok(!encrypted.body.includes('reportUrl'))
  const header = decodeProtectedHeader(encrypted.body)
  assert.equal(header.alg, 'ECDH-ES')
  assert.equal(header.enc, 'A256GCM')
  assert.equal(header.kid, publicJwk.kid)
  assert.equal(header.cty, 'application/json')

  const decrypted = await decryptPayload(encrypted.body, privateJwk)
  assert.equal(decrypted.text, envelope)
  assert.deepEqual(Buffer.from(decrypted.plaintext), Buffer.from(envelope))
})

test('a P-256 recipient and bytes plaintext round trip as well', async () => {
  const { privateJwk, publicJwk } = await generateEncryptionKey({ crv: 'P-256' })
  const bytes = new Uint8Array([0, 1, 2, 250, 255])
  const { body } = await encryptPayload(bytes, publicJwk, { contentType: 'application/octet-stream' })
  const decrypted = await decryptPayload(Buffer.from(body), privateJwk)
  assert.deepEqual([...decrypted.plaintext], [...bytes])
  assert.equal(decrypted.protectedHeader.cty, 'application/octet-stream')

  // CryptoKey and KeyObject work on either side too.
  const pair = await generateKeyPair('ECDH-ES', { crv: 'X25519' })
  const toCryptoKey = await encryptPayload('plain text', pair.publicKey, { contentType: 'text/plain' })
  assert.equal((await decryptPayload(toCryptoKey.body, KeyObject.from(pair.privateKey))).text, 'plain text')
})

test('a tampered ciphertext, tag, iv or header is rejected with ERR_CALLBACK_DECRYPTION_FAILED and no key material', async () => {
  const { privateJwk, publicJwk } = await generateEncryptionKey()
  const { body } = await encryptPayload(envelope, publicJwk)
  for (const part of [0, 2, 3, 4]) {
    await assert.rejects(decryptPayload(tamper(body, part), privateJwk), isDecryptionFailure(privateJwk.d as string), `part ${part}`)
  }
  await assert.rejects(decryptPayload('not.a.jwe', privateJwk), isDecryptionFailure(privateJwk.d as string))
  const other = await generateEncryptionKey()
  await assert.rejects(decryptPayload(body, other.privateJwk), isDecryptionFailure(other.privateJwk.d as string))
})

test('during key rotation the receiver decrypts with whichever of its keys the sender used', async () => {
  const oldKey = await generateEncryptionKey()
  const newKey = await generateEncryptionKey({ crv: 'P-256' })
  const toOld = await encryptPayload(envelope, oldKey.publicJwk)
  const toNew = await encryptPayload(envelope, newKey.publicJwk)
  const { kid: _kid, ...newWithoutKid } = newKey.privateJwk
  for (const body of [toOld.body, toNew.body]) {
    assert.equal((await decryptPayload(body, [newWithoutKid, oldKey.privateJwk])).text, envelope)
  }
})

test('a JWE whose algorithms are not allowed is refused on the receiving side', async () => {
  const { privateJwk, publicJwk } = await generateEncryptionKey()
  const { alg: _alg, ...anyAlg } = publicJwk
  const keyWrapped = await new CompactEncrypt(new TextEncoder().encode(envelope))
    .setProtectedHeader({ alg: 'ECDH-ES+A256KW', enc: 'A256GCM' })
    .encrypt(anyAlg)
  const weakerEnc = await new CompactEncrypt(new TextEncoder().encode(envelope))
    .setProtectedHeader({ alg: 'ECDH-ES', enc: 'A128CBC-HS256' })
    .encrypt(anyAlg)
  const { alg: _privateAlg, ...privateAnyAlg } = privateJwk
  for (const jwe of [keyWrapped, weakerEnc]) {
    await assert.rejects(decryptPayload(jwe, privateAnyAlg), (error: unknown) => {
      assert.ok(isDecryptionFailure(privateJwk.d as string)(error))
      assert.match((error as Error).message, /algorithm is not allowed/)
      return true
    })
  }
  // The same tokens open once the receiver opts in, so the refusal above was the allow-list.
  const opened = await decryptPayload(keyWrapped, privateAnyAlg, { keyManagementAlgorithms: ['ECDH-ES+A256KW'] })
  assert.equal(opened.text, envelope)
  assert.equal((await decryptPayload(weakerEnc, privateAnyAlg, { contentEncryptionAlgorithms: ['A128CBC-HS256'] })).text, envelope)
})

test('the sender refuses algorithms outside its allow-list and keys that are not public encryption keys', async () => {
  const { privateJwk, publicJwk } = await generateEncryptionKey()
  await assert.rejects(encryptPayload(envelope, publicJwk, { enc: 'A128GCM' }), /contentEncryptionAlgorithms/)
  await assert.rejects(encryptPayload(envelope, publicJwk, { alg: 'RSA-OAEP' }), /keyManagementAlgorithms/)
  await assert.rejects(
    encryptPayload(envelope, privateJwk),
    (error: unknown) => error instanceof TypeError && /public key/.test(error.message) && !error.message.includes(privateJwk.d as string)
  )
  const { publicKey: signingJwk } = await generateKeyPair('Ed25519', { extractable: true })
  await assert.rejects(encryptPayload(envelope, await exportJWK(signingJwk)), /X25519/)
  await assert.rejects(encryptPayload(envelope, { ...publicJwk, use: 'sig' }), /use/)
  await assert.rejects(decryptPayload('a.b.c.d.e', publicJwk), /private key/)

  // The same checks, without I/O, for a task's encryptionKey at creation time.
  checkEncryptionKey(publicJwk)
  checkEncryptionKey('https://client.example/.well-known/jwks.json')
  assert.throws(() => checkEncryptionKey(privateJwk), (error: unknown) => error instanceof TypeError && /encryptionKey must be a public key/.test(error.message) && !error.message.includes(privateJwk.d as string))
  assert.throws(() => checkEncryptionKey('http://client.example/jwks'), /https/)
  assert.throws(() => checkEncryptionKey({ kty: 'OKP', crv: 'Ed25519', x: publicJwk.x }), /X25519/)
  assert.throws(() => checkEncryptionKey(42), /encryptionKey/)
  await assert.rejects(decryptPayload('a.b.c.d.e', privateJwk, { keyManagementAlgorithms: [] }), /keyManagementAlgorithms/)
})

test('a JWKS URL recipient resolves to the receiver use:enc key over loopback, never its signing key', async () => {
  const receiver = await generateEncryptionKey()
  const signing = await publicJwks(generateSigningKey().publicKey)
  const server = await startLoopbackServer((req, res) => {
    const keys = req.url === '/no-enc' ? signing.keys : [...signing.keys, receiver.publicJwk]
    res.writeHead(200, { 'content-type': 'application/jwk-set+json' }).end(JSON.stringify({ keys }))
  })
  after(() => server.close())

  const once = await encryptPayload(envelope, `${server.origin}/jwks`, { allowHttp: true })
  assert.equal(decodeProtectedHeader(once.body).kid, receiver.publicJwk.kid)
  assert.equal((await decryptPayload(once.body, receiver.privateJwk)).text, envelope)

  const cached = createRemoteEncryptionKey(`${server.origin}/jwks`, { allowHttp: true })
  const before = server.requests.length
  for (let i = 0; i < 3; i++) {
    const { body } = await encryptPayload(envelope, cached)
    assert.equal((await decryptPayload(body, receiver.privateJwk)).text, envelope)
  }
  assert.equal(server.requests.length, before + 1, 'the cached source fetched once')

  await assert.rejects(
    encryptPayload(envelope, `${server.origin}/no-enc`, { allowHttp: true }),
    (error: unknown) => error instanceof CallbackError && error.code === 'ERR_CALLBACK_JWKS'
  )
  await assert.rejects(encryptPayload(envelope, `${server.origin}/jwks`), /https/)
})

test('sign over the encrypted bytes, verify, then decrypt: the callback reads like an unencrypted one', async () => {
  const receiver = await generateEncryptionKey()
  const sender = generateSigningKey()
  const { body } = await encryptPayload(envelope, receiver.publicJwk)
  const headers = signPayload({ id: 'task_7', timestamp: new Date(), body }, { signingKey: sender.signingKey })

  const verified = await verifySignature({ headers, body }, { publicKey: sender.publicKey })
  assert.equal(verified.data, undefined, 'the envelope is not readable before decryption')
  const callback = await decryptCallback(verified, receiver.privateJwk)
  assert.equal(callback.id, 'task_7')
  assert.equal(callback.type, 'report.ready')
  assert.deepEqual(callback.data, { reportUrl: 'https://files.example/r/7' })

  // A ciphertext changed on the way fails the signature before decryption is even tried.
  await assert.rejects(
    verifySignature({ headers, body: tamper(body, 3) }, { publicKey: sender.publicKey }),
    (error: unknown) => error instanceof CallbackError && error.code === 'ERR_CALLBACK_SIGNATURE_MISMATCH'
  )
})
