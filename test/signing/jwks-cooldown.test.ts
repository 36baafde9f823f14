import { test } from 'node:test'
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { createJwksHandler, createRemoteJwks, generateSigningKey, signPayload } from 'endpoint-callback'
import { createReceiverCore } from '../../src/receivers/core.ts'

/** A loopback JWKS endpoint that fails (500) until `heal()`, counting every fetch. */
async function flakyJwks(publicKey: string) {
  const publish = createJwksHandler(publicKey)
  let healthy = false
  let hits = 0
  const server = createServer((req, res) => {
    hits++
    if (healthy) publish(req, res)
    else res.writeHead(500).end('down')
  }).listen(0, '127.0.0.1')
  await once(server, 'listening')
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks`,
    hits: () => hits,
    heal: () => void (healthy = true),
    fail: () => void (healthy = false),
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  }
}

function signedBy(signingKey: string, at: Date) {
  const body = JSON.stringify({ type: 'report.ready', timestamp: at.toISOString(), data: {} })
  return { headers: { ...signPayload({ id: 'msg_1', timestamp: at, body }, { signingKey }) }, body }
}

test('while the sender JWKS fails, unknown signatures cause at most one fetch per cooldown', async () => {
  const sender = generateSigningKey()
  const jwks = await flakyJwks(sender.publicKey)
  let clock = new Date('2030-01-01T00:00:00Z')
  const now = () => clock
  try {
    const keys = createRemoteJwks(jwks.url, { allowHttp: true, cooldownMs: 30_000, now })
    const receiver = createReceiverCore({ jwks: keys, now })
    const forged = signedBy(generateSigningKey().signingKey, clock)

    for (let i = 0; i < 100; i++) {
      const answer = await receiver.admit(forged)
      assert.equal(answer.accepted, false)
      assert.equal(answer.status, 503, 'keys that cannot be loaded are answered 503')
    }
    assert.equal(jwks.hits(), 1, `${jwks.hits()} fetches for 100 requests inside one cooldown`)

    clock = new Date(clock.getTime() + 29_000)
    await receiver.admit(signedBy(generateSigningKey().signingKey, clock))
    assert.equal(jwks.hits(), 1, 'still inside the cooldown')

    clock = new Date(clock.getTime() + 1_000)
    for (let i = 0; i < 20; i++) await receiver.admit(signedBy(generateSigningKey().signingKey, clock))
    assert.equal(jwks.hits(), 2, 'one more fetch once the cooldown has passed')

    jwks.heal()
    clock = new Date(clock.getTime() + 30_000)
    const genuine = await receiver.admit(signedBy(sender.signingKey, clock))
    assert.equal(genuine.accepted, true, 'the sender is verified once its JWKS answers again')
    assert.equal(jwks.hits(), 3)
  } finally {
    await jwks.close()
  }
})

test('a refresh asked for while the JWKS fails keeps the keys already loaded and waits out the cooldown', async () => {
  const sender = generateSigningKey()
  const jwks = await flakyJwks(sender.publicKey)
  jwks.heal()
  let clock = new Date('2030-01-01T00:00:00Z')
  try {
    const keys = createRemoteJwks(jwks.url, { allowHttp: true, cooldownMs: 30_000, now: () => clock })
    assert.equal((await keys()).length, 1)
    clock = new Date(clock.getTime() + 31_000)
    jwks.fail()
    // Past the cooldown a refresh tries once, and says it failed.
    await assert.rejects(keys({ refresh: true }), { code: 'ERR_CALLBACK_JWKS' })
    assert.equal(jwks.hits(), 2)
    for (let i = 0; i < 10; i++) assert.equal((await keys({ refresh: true })).length, 1, 'the loaded keys are kept')
    assert.equal(jwks.hits(), 2, 'no refetch inside the cooldown after a failure')
  } finally {
    await jwks.close()
  }
})

test('a v1a request whose headers can never verify (stale, too many entries) costs no fetch', async () => {
  const sender = generateSigningKey()
  const jwks = await flakyJwks(sender.publicKey)
  jwks.heal()
  const clock = new Date('2030-01-01T00:00:00Z')
  try {
    const keys = createRemoteJwks(jwks.url, { allowHttp: true, now: () => clock })
    const receiver = createReceiverCore({ jwks: keys, now: () => clock })
    const stale = signedBy(sender.signingKey, new Date(clock.getTime() - 3_600_000))
    const answer = await receiver.admit(stale)
    assert.equal(answer.accepted === false && answer.status, 401)
    const crowded = signedBy(sender.signingKey, clock)
    crowded.headers['webhook-signature'] = Array(17).fill(crowded.headers['webhook-signature']).join(' ')
    const refused = await receiver.admit(crowded)
    assert.equal(refused.accepted === false && refused.status, 400)
    assert.equal(jwks.hits(), 0)
  } finally {
    await jwks.close()
  }
})
