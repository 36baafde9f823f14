import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { verify as ed25519Verify } from 'node:crypto'
import { MockAgent } from 'undici'
import {
  CallbackError,
  createJwksHandler,
  createKeyRing,
  createRemoteJwks,
  generateSigningKey,
  jwkToPublicKey,
  jwkToSigningKey,
  keyId,
  publicJwks,
  publicKeyToJwk,
  signingKeyToJwk,
  signPayload,
  verifySignature,
  type KeyRing
} from 'endpoint-callback'

// RFC 8037, appendix A.1 and A.3: an Ed25519 key and its RFC 7638 thumbprint.
const RFC8037_D = 'nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A'
const RFC8037_X = '11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo'
const RFC8037_THUMBPRINT = 'kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k'
const rfcSigningKey = `whsk_${Buffer.concat([Buffer.from(RFC8037_D, 'base64url'), Buffer.from(RFC8037_X, 'base64url')]).toString('base64')}`
const rfcPublicKey = `whpk_${Buffer.from(RFC8037_X, 'base64url').toString('base64')}`

/** A node:http server on 127.0.0.1 that counts the requests reaching `handler`. */
async function serve(handler: (req: IncomingMessage, res: ServerResponse) => void) {
  let hits = 0
  const server = createServer((req, res) => {
    hits += 1
    handler(req, res)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  after(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      })
  )
  return { origin: `http://127.0.0.1:${port}`, hits: () => hits }
}

function signedCallback(signingKey: string, body = '{"type":"report.ready","data":{"n":1}}') {
  const timestamp = new Date()
  return { headers: signPayload({ id: 'task_1', timestamp, body }, { signingKey }), body }
}

/** Whether any of the keys verifies the request's v1a signature (what a verifier does with them). */
async function verifiesWith(publicKey: string[], request: { headers: Record<string, string>; body: string }) {
  try {
    await verifySignature(request, { publicKey })
    return true
  } catch (error) {
    assert.equal((error as CallbackError).code, 'ERR_CALLBACK_SIGNATURE_MISMATCH')
    return false
  }
}

test('a whsk_ key converts to the Ed25519 JWK of RFC 8037 and back', () => {
  assert.deepEqual(signingKeyToJwk(rfcSigningKey), { kty: 'OKP', crv: 'Ed25519', x: RFC8037_X, d: RFC8037_D })
  assert.deepEqual(publicKeyToJwk(rfcPublicKey), { kty: 'OKP', crv: 'Ed25519', x: RFC8037_X })
  assert.deepEqual(publicKeyToJwk(rfcSigningKey), { kty: 'OKP', crv: 'Ed25519', x: RFC8037_X })
  assert.equal(jwkToSigningKey({ kty: 'OKP', crv: 'Ed25519', x: RFC8037_X, d: RFC8037_D }), rfcSigningKey)
  assert.equal(jwkToPublicKey({ kty: 'OKP', crv: 'Ed25519', x: RFC8037_X }), rfcPublicKey)
})

test('the key id is the RFC 7638 thumbprint given in RFC 8037', async () => {
  assert.equal(await keyId(rfcPublicKey), RFC8037_THUMBPRINT)
  assert.equal(await keyId(rfcSigningKey), RFC8037_THUMBPRINT)
  const jwks = await publicJwks(rfcSigningKey)
  assert.equal(jwks.keys[0]?.kid, RFC8037_THUMBPRINT)
})

test('malformed keys are refused with a TypeError that never contains the key', () => {
  const { signingKey } = generateSigningKey()
  const other = generateSigningKey().signingKey
  const mismatched = `whsk_${Buffer.concat([
    Buffer.from(signingKey.slice(5), 'base64').subarray(0, 32),
    Buffer.from(other.slice(5), 'base64').subarray(32)
  ]).toString('base64')}`
  const bad = [`${signingKey}!`, signingKey.slice(0, -8), mismatched, signingKey.replace('whsk_', 'whpk_')]
  for (const key of bad) {
    assert.throws(
      () => signingKeyToJwk(key),
      (error: unknown) => error instanceof TypeError && !error.message.includes(key.slice(5, 25)),
      `refused: ${key.length} characters`
    )
  }
  assert.throws(() => jwkToSigningKey({ kty: 'OKP', crv: 'Ed25519', x: RFC8037_X, d: signingKeyToJwk(other).d as string }), TypeError)
  assert.throws(() => jwkToPublicKey({ kty: 'EC', crv: 'P-256', x: RFC8037_X }), /OKP JWK/)
  assert.throws(() => createKeyRing([{ signingKey: mismatched }]), /entries\[0\]\.signingKey/)
  assert.throws(() => createKeyRing([]), /entries/)
  assert.throws(() => createKeyRing([{ signingKey, notBefore: new Date(2), notAfter: new Date(1) }]), /notBefore/)
  assert.throws(() => createKeyRing([{ signingKey }, { signingKey }]), /listed twice/)
  assert.throws(() => createKeyRing([{ signingKey }], { graceMs: -1 }), /graceMs/)
})

test('the published JWKS lists each public key once, with kid and use, and no private member', async () => {
  const a = generateSigningKey()
  const b = generateSigningKey()
  const jwks = await publicJwks([a.signingKey, a.publicKey, b.publicKey])
  assert.equal(jwks.keys.length, 2)
  for (const jwk of jwks.keys) {
    assert.deepEqual(Object.keys(jwk).sort(), ['crv', 'kid', 'kty', 'use', 'x'])
    assert.equal(jwk.use, 'sig')
    assert.equal(jwk.kid, await keyId(jwk))
  }
  assert.deepEqual(jwks.keys.map((jwk) => jwkToPublicKey(jwk)), [a.publicKey, b.publicKey])
  assert.ok(!JSON.stringify(jwks).includes(signingKeyToJwk(a.signingKey).d as string))
})

test('the JWKS handler serves the set over loopback as a cacheable jwk-set and refuses other methods', async () => {
  const { signingKey, publicKey } = generateSigningKey()
  const server = await serve(createJwksHandler(signingKey, { maxAgeSeconds: 60 }))
  const response = await fetch(`${server.origin}/.well-known/jwks.json`)
  assert.equal(response.status, 200)
  assert.equal(response.headers.get('content-type'), 'application/jwk-set+json')
  assert.equal(response.headers.get('cache-control'), 'public, max-age=60')
  const jwks = (await response.json()) as { keys: { x: string }[] }
  assert.deepEqual(jwks.keys.map((jwk) => jwkToPublicKey(jwk)), [publicKey])

  const post = await fetch(`${server.origin}/.well-known/jwks.json`, { method: 'POST' })
  assert.equal(post.status, 405)
  assert.equal(post.headers.get('allow'), 'GET, HEAD')
  assert.throws(() => createJwksHandler(signingKey, { maxAgeSeconds: -1 }), /maxAgeSeconds/)
  assert.throws(() => createJwksHandler('whsk_nope'), TypeError)
})

test('a v1a signature verifies with the keys fetched from the sender JWKS over loopback, and a stranger does not', async () => {
  const sender = generateSigningKey()
  const server = await serve(createJwksHandler(createKeyRing([{ signingKey: sender.signingKey }])))
  const senderKeys = createRemoteJwks(`${server.origin}/jwks`, { allowHttp: true })

  const request = signedCallback(sender.signingKey)
  assert.equal(await verifiesWith(await senderKeys.publicKeys(), request), true)

  // The KeyObjects verify the Standard Webhooks content `${id}.${timestamp}.${body}` directly too.
  const [key] = await senderKeys()
  const content = Buffer.from(`${request.headers['webhook-id']}.${request.headers['webhook-timestamp']}.${request.body}`)
  const signature = Buffer.from(request.headers['webhook-signature'].slice('v1a,'.length), 'base64')
  assert.equal(ed25519Verify(null, content, key!, signature), true)

  const stranger = signedCallback(generateSigningKey().signingKey)
  assert.equal(await verifiesWith(await senderKeys.publicKeys(), stranger), false)
  assert.equal(server.hits(), 1, 'keys are cached between calls')
})

test('rotation: the new key is published before it signs, and the old one is accepted for its grace period only', async () => {
  const oldKey = generateSigningKey()
  const newKey = generateSigningKey()
  const switchAt = new Date('2030-01-01T00:00:00Z')
  let clock = new Date('2029-12-31T23:00:00Z')
  const ring: KeyRing = createKeyRing(
    [
      { signingKey: oldKey.signingKey, notAfter: switchAt },
      { signingKey: newKey.signingKey, notBefore: switchAt }
    ],
    { now: () => clock, graceMs: 30 * 60 * 1000 }
  )
  const server = await serve(createJwksHandler(ring))
  // cooldownMs 0: each unknown signature may refetch at once, so the test sees every change.
  const senderKeys = createRemoteJwks(`${server.origin}/jwks`, { allowHttp: true, cooldownMs: 0 })
  const verifyAfterRefresh = async (request: ReturnType<typeof signedCallback>) =>
    (await verifiesWith(await senderKeys.publicKeys(), request)) ||
    verifiesWith(await senderKeys.publicKeys({ refresh: true }), request)

  // An hour before the switch: only the old key signs, both are published.
  assert.deepEqual(ring.signingKeys(), [oldKey.signingKey])
  assert.deepEqual((await senderKeys.publicKeys()).sort(), [oldKey.publicKey, newKey.publicKey].sort())
  const signedByOld = signedCallback(ring.signingKeys()[0]!)

  // After the switch: only the new key signs; receivers already hold it.
  clock = new Date('2030-01-01T00:10:00Z')
  assert.deepEqual(ring.signingKeys(), [newKey.signingKey])
  const signedByNew = signedCallback(ring.signingKeys()[0]!)
  const hitsAtSwitch = server.hits()
  assert.equal(await verifiesWith(await senderKeys.publicKeys(), signedByNew), true)
  assert.equal(server.hits(), hitsAtSwitch, 'verified with the copy fetched before the switch')
  // Within the grace period the old key is still published and accepted.
  assert.equal(await verifyAfterRefresh(signedByOld), true)
  assert.deepEqual(ring.publicKeys().sort(), [oldKey.publicKey, newKey.publicKey].sort())

  // After the grace period the old key is gone from the JWKS; once the receiver's copy is
  // renewed (cacheMaxAgeMs, forced here) a signature by the old key is refused.
  clock = new Date('2030-01-01T00:31:00Z')
  const hitsBefore = server.hits()
  await senderKeys({ refresh: true })
  assert.equal(server.hits(), hitsBefore + 1)
  assert.deepEqual(await senderKeys.publicKeys(), [newKey.publicKey])
  assert.equal(await verifyAfterRefresh(signedByOld), false)
  assert.equal(await verifyAfterRefresh(signedByNew), true)
})

test('an unknown signature refetches the JWKS at most once per cooldown', async () => {
  const sender = generateSigningKey()
  const server = await serve(createJwksHandler(sender.publicKey))
  const senderKeys = createRemoteJwks(`${server.origin}/jwks`, { allowHttp: true, cooldownMs: 60_000 })
  await senderKeys()
  for (let i = 0; i < 5; i++) await senderKeys({ refresh: true })
  assert.equal(server.hits(), 1)

  const eager = createRemoteJwks(`${server.origin}/jwks`, { allowHttp: true, cooldownMs: 0 })
  await eager()
  await eager({ refresh: true })
  assert.equal(server.hits(), 3)
})

test('the JWKS fetch goes through the given undici dispatcher, so it can use the guarded agent', async () => {
  const sender = generateSigningKey()
  const agent = new MockAgent()
  agent.disableNetConnect()
  agent
    .get('https://sender.example')
    .intercept({ path: '/.well-known/jwks.json', method: 'GET' })
    .reply(200, JSON.stringify(await publicJwks(sender.publicKey)), { headers: { 'content-type': 'application/json' } })
  const senderKeys = createRemoteJwks('https://sender.example/.well-known/jwks.json', { dispatcher: agent })
  assert.deepEqual(await senderKeys.publicKeys(), [sender.publicKey])
  agent.assertNoPendingInterceptors()

  const refusing = new MockAgent()
  refusing.disableNetConnect() // what a guard that refuses the address looks like to fetch
  const refused = createRemoteJwks('https://internal.example/jwks', { dispatcher: refusing })
  await assert.rejects(refused(), (error: unknown) => error instanceof CallbackError && error.code === 'ERR_CALLBACK_JWKS')
  await agent.close()
  await refusing.close()

  // A fetch function works the same way and is handed jose's GET, manual redirects and signal.
  const seen: { url: string; redirect: string; aborted: boolean }[] = []
  const viaFetch = createRemoteJwks('https://sender.example/jwks', {
    fetch: async (url, init) => {
      seen.push({ url, redirect: init.redirect, aborted: init.signal.aborted })
      return new Response(JSON.stringify(await publicJwks(sender.publicKey)), { status: 200 })
    }
  })
  assert.deepEqual(await viaFetch.publicKeys(), [sender.publicKey])
  assert.deepEqual(seen, [{ url: 'https://sender.example/jwks', redirect: 'manual', aborted: false }])
})

test('a JWKS endpoint that fails, redirects, floods or leaks a private key is refused with ERR_CALLBACK_JWKS', async () => {
  const sender = generateSigningKey()
  const privateJwk = { ...signingKeyToJwk(sender.signingKey), use: 'sig' }
  let redirectTargetHits = 0
  const server = await serve((req, res) => {
    if (req.url === '/missing') res.writeHead(404).end()
    else if (req.url === '/redirect') res.writeHead(302, { location: '/target' }).end()
    else if (req.url === '/target') {
      redirectTargetHits += 1
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: [] }))
    } else if (req.url === '/huge') {
      res.writeHead(200, { 'content-type': 'application/json' }).end(`{"keys":[],"pad":"${'x'.repeat(10_000)}"}`)
    } else if (req.url === '/private') {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: [privateJwk] }))
    } else if (req.url === '/other-keys') {
      res.writeHead(200).end(JSON.stringify({ keys: [{ kty: 'EC', crv: 'P-256', x: 'a', y: 'b', use: 'sig' }] }))
    } else res.writeHead(200).end('not json')
  })
  for (const path of ['/missing', '/redirect', '/huge', '/private', '/other-keys', '/garbage']) {
    const keys = createRemoteJwks(`${server.origin}${path}`, { allowHttp: true, maxResponseBytes: 4096 })
    await assert.rejects(
      keys(),
      (error: unknown) =>
        error instanceof CallbackError &&
        error.code === 'ERR_CALLBACK_JWKS' &&
        !error.message.includes(privateJwk.d as string) &&
        !String(error.cause).includes(privateJwk.d as string),
      path
    )
  }
  assert.equal(redirectTargetHits, 0, 'a redirect is never followed')
})

test('JWKS options are checked when the source is created', () => {
  assert.throws(() => createRemoteJwks('http://127.0.0.1/jwks'), /https/)
  assert.throws(() => createRemoteJwks('not a url'), /url must be an absolute URL/)
  assert.throws(() => createRemoteJwks('https://a.example/jwks', { cooldownMs: -1 }), /cooldownMs/)
  assert.throws(() => createRemoteJwks('https://a.example/jwks', { timeoutMs: 0 }), /timeoutMs/)
  assert.throws(() => createRemoteJwks('https://a.example/jwks', { maxResponseBytes: 0 }), /maxResponseBytes/)
})
