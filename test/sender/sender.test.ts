import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createCallbackTask, createHttpTransport, createKeyRing, createMemoryStore, deliver, generateSecret, generateSigningKey } from 'endpoint-callback'
import type { KeyRing, SenderOptions } from 'endpoint-callback'
import { resolveSender } from '../../src/sender.ts'
import { createTestTransport } from '../support/sender.ts'

const callbackUrl = 'https://client.example.com/callbacks'

test('one options object is validated once and reused, so later changes to it have no effect', async () => {
  let reads = 0
  const secret = generateSecret()
  const sender = {
    store: createMemoryStore(),
    transport: createTestTransport(() => ({ status: 204 })),
    get secret() {
      reads++
      return secret
    },
  }
  for (let i = 0; i < 5; i++) {
    const task = await createCallbackTask({ callbackUrl, event: 'e' }, sender)
    await deliver(task.id, {}, sender)
  }
  assert.equal(reads, 1)
  assert.equal(resolveSender(sender), resolveSender(sender))
})

test('bad sender options are TypeErrors naming the option', () => {
  const store = createMemoryStore()
  const secret = generateSecret()
  const cases: [unknown, RegExp][] = [
    [{ secret }, /store/],
    [{ store: { ...store, claim: 'no' }, secret }, /store\.claim/],
    [{ store, secret, transport: {} }, /transport/],
    [{ store, secret: 'whsec_short' }, /secret/],
    [{ store, signingKey: 'whsk_nope' }, /signingKey/],
    [{ store, secret, urlPolicy: { allowHosts: ['not a host/99'] } }, /allowHosts/],
    [{ store, secret, retry: { jitter: -1 } }, /retry\.jitter/],
    [{ store, secret, leaseMs: 0 }, /leaseMs/],
    [{ store, secret, now: 'today' }, /now/],
    [{ store, secret, onEvent: 'log' }, /onEvent/],
    [null, /options/],
  ]
  for (const [options, message] of cases) {
    assert.throws(() => resolveSender(options as SenderOptions), (error: unknown) => error instanceof TypeError && message.test(error.message), String(message))
  }
})

test('a lease no longer than the transport timeout is refused, since it could run out mid-attempt', () => {
  const store = createMemoryStore()
  const secret = generateSecret()
  // the default transport times out after 10 s
  assert.throws(() => resolveSender({ store, secret, leaseMs: 10_000 }), /leaseMs \(10000\) must exceed the transport timeout \(10000 ms\)/)
  // an attempt must also leave a tenth of the lease (at most 1 s) to be recorded
  assert.throws(() => resolveSender({ store, secret, leaseMs: 10_001 }), /at least 11000/)
  assert.equal(resolveSender({ store, secret, leaseMs: 11_000 }).leaseMs, 11_000)
  const slow = createTestTransport(() => ({ status: 204 }), { timeoutMs: 90_000 })
  assert.throws(() => resolveSender({ store, secret, transport: slow }), /leaseMs \(60000\)/)
  assert.equal(resolveSender({ store, secret, transport: slow, leaseMs: 120_000 }).leaseMs, 120_000)
  const http = createHttpTransport({ timeoutMs: 90_000 })
  assert.throws(() => resolveSender({ store, secret, transport: http }), /leaseMs \(60000\) must exceed the transport timeout \(90000 ms\)/)
})

test('a sender without a transport gets one default transport, shared by copies of its options', async () => {
  const urlPolicy = { allowHttp: true }
  const sender = { store: createMemoryStore(), secret: generateSecret(), urlPolicy }
  await createCallbackTask({ callbackUrl, event: 'e' }, sender)
  const resolved = resolveSender(sender)
  const transport = resolved.transport
  assert.equal(typeof transport.send, 'function')
  assert.equal(resolved.transport, transport)
  // `{ ...sender, transaction }` for the outbox is a new options object: it must not open a new pool
  assert.equal(resolveSender({ ...sender, now: () => new Date() }).transport, transport)
  assert.notEqual(resolveSender({ ...sender, urlPolicy: { allowHttp: true } }).transport, transport, 'another policy, another transport')
})

test('keyRing and verifyIntent are checked once, each TypeError naming the option', async () => {
  const store = createMemoryStore()
  const transport = createTestTransport(() => ({ status: 204 }))
  const future = new Date(Date.now() + 86_400_000)
  const notYet = createKeyRing([{ signingKey: generateSigningKey().signingKey, notBefore: future }])
  assert.throws(() => resolveSender({ store, transport, keyRing: {} as KeyRing }), { name: 'TypeError', message: /^keyRing must be a key ring/ })
  assert.throws(() => resolveSender({ store, transport, keyRing: notYet }), {
    name: 'TypeError',
    message: /^keyRing: no key of the ring signs now, and there is no secret or signingKey/,
  })
  // With a secret to sign in the meantime, a ring whose key starts later is fine.
  assert.equal(resolveSender({ store, transport, keyRing: notYet, secret: generateSecret() }).canSign, true)
  assert.throws(() => resolveSender({ store, transport, secret: generateSecret(), verifyIntent: 1 as unknown as boolean }), {
    name: 'TypeError',
    message: 'verifyIntent must be a boolean',
  })
  const slow = createTestTransport(() => ({ status: 204 }), { timeoutMs: 40_000 })
  assert.throws(() => resolveSender({ store, transport: slow, secret: generateSecret(), verifyIntent: true }), {
    name: 'TypeError',
    message: /^leaseMs \(60000\) must exceed twice the transport timeout \(40000 ms\) with verifyIntent/,
  })
})
