/**
 * The defaults security depends on, pinned: each test uses the default (no option given) and
 * fails if it moves either way. A change here is a change to the documented guarantees.
 */
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import {
  createJwksHandler,
  createKeyRing,
  createMemoryReplayGuard,
  createRemoteJwks,
  createVerifier,
  generateSigningKey,
  SignatureVerificationError,
} from 'endpoint-callback'
import { DEFAULT_RETRY_SCHEDULE } from '../../src/retry.ts'
import { CURRENT_SECRET, signed } from '../support/receiver-cases.ts'

const second = 1000
const hour = 3600 * second
const day = 24 * hour

test('verification accepts a timestamp up to 300 s off by default, and not 301 s', async () => {
  const at = Date.UTC(2030, 0, 1, 12, 0, 0)
  const verify = createVerifier({ secret: CURRENT_SECRET, now: () => new Date(at) })
  for (const offset of [-300, 300]) {
    const { headers, body } = signed('signPayload', { timestamp: new Date(at + offset * second) })
    await verify({ headers, body }) // resolves
  }
  for (const offset of [-301, 301]) {
    const { headers, body } = signed('signPayload', { timestamp: new Date(at + offset * second) })
    await assert.rejects(verify({ headers, body }), (error: unknown) => {
      assert.ok(error instanceof SignatureVerificationError, `a timestamp ${offset} s off was not refused as stale`)
      assert.match(error.code, /TIMESTAMP/)
      return true
    })
  }
})

test('the memory replay guard remembers a processed id for 3 days by default, longer than the whole default retry schedule', async () => {
  const start = Date.UTC(2030, 0, 1)
  let now = start
  const guard = createMemoryReplayGuard({ now: () => new Date(now) })
  assert.equal(await guard.begin('msg_1'), 'new')
  await guard.remember('msg_1')
  now = start + 3 * day - 1
  assert.equal(await guard.begin('msg_1'), 'done', 'forgotten before 3 days')
  now = start + 3 * day
  assert.equal(await guard.begin('msg_1'), 'new', 'still remembered after 3 days')
  // every redelivery of a task, even the last one with its +20 % jitter, must meet the id
  const lastRetry = DEFAULT_RETRY_SCHEDULE.reduce((sum, delay) => sum + delay, 0) * 1.2
  assert.ok(lastRetry < 3 * day, `the retry schedule (${lastRetry} ms with jitter) outlasts the replay guard's 3 days`)
})

test('a key ring keeps a retired key published for 1 hour by default, and not longer', () => {
  const switchAt = Date.UTC(2030, 6, 1)
  let now = switchAt
  const retired = generateSigningKey()
  const next = generateSigningKey()
  const ring = createKeyRing(
    [
      { signingKey: retired.signingKey, notAfter: new Date(switchAt) },
      { signingKey: next.signingKey, notBefore: new Date(switchAt) },
    ],
    { now: () => new Date(now) }
  )
  assert.deepEqual(ring.signingKeys(), [next.signingKey], 'the retired key no longer signs')
  now = switchAt + hour - 1
  assert.ok(ring.publicKeys().includes(retired.publicKey), 'the retired key was unpublished before 1 hour')
  now = switchAt + hour
  assert.deepEqual(ring.publicKeys(), [next.publicKey], 'the retired key is still published after 1 hour')
})

test('an unknown signature refetches the JWKS at most once per 30 s by default', async (t) => {
  const sender = generateSigningKey()
  const handler = createJwksHandler(sender.publicKey)
  let fetches = 0
  const server = createServer((req, res) => {
    fetches++
    handler(req, res)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  after(() => server.close())
  // jose measures the cooldown with Date.now(): move it, not the test's real time
  const realNow = Date.now
  let skew = 0
  Date.now = () => realNow() + skew
  t.after(() => (Date.now = realNow))
  const senderKeys = createRemoteJwks(`http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks`, { allowHttp: true })
  await senderKeys()
  assert.equal(fetches, 1)
  skew = 29 * second
  await senderKeys({ refresh: true })
  assert.equal(fetches, 1, 'refetched within 29 s of the last fetch')
  skew = 30 * second + 100
  await senderKeys({ refresh: true })
  assert.equal(fetches, 2, 'no refetch once 30 s had passed')
})
