// The work a forged request can make a receiver do, counted in Ed25519 verifications (each one
// hashes the whole body) rather than timed, so the assertions hold on a busy machine. The figure in
// CPU time is bench/receive.ts's.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import crypto from 'node:crypto'
import { syncBuiltinESMExports } from 'node:module'
import { createVerifier, generateSigningKey, signPayload } from 'endpoint-callback'
import type { VerifyOptions } from 'endpoint-callback'

const now = new Date('2025-06-01T12:00:00Z')
const clock = () => now
const body = JSON.stringify({ type: 'report.ready', timestamp: now.toISOString(), data: { blob: 'x'.repeat(64 * 1024) } })
const keys = [generateSigningKey(), generateSigningKey(), generateSigningKey()]
const options: VerifyOptions = { publicKey: keys.map((key) => key.publicKey), now: clock }

/** Runs `work` with node:crypto's `verify` counted (the ESM binding follows via syncBuiltinESMExports). */
async function countVerifications(work: () => Promise<unknown>): Promise<number> {
  const original = crypto.verify
  let count = 0
  crypto.verify = ((...args: Parameters<typeof crypto.verify>) => {
    count++
    return (original as (...a: unknown[]) => unknown)(...args)
  }) as typeof crypto.verify
  syncBuiltinESMExports()
  try {
    await work()
  } finally {
    crypto.verify = original
    syncBuiltinESMExports()
  }
  return count
}

/** `n` distinct v1a entries that look right (a real R, an S below the group order) but sign nothing here. */
function forgedEntries(n: number): string {
  const stranger = generateSigningKey()
  const real = signPayload({ id: 'other', timestamp: now, body: 'other' }, { signingKey: stranger.signingKey })['webhook-signature']
  const bytes = Buffer.from(real.slice(4), 'base64')
  const entries: string[] = []
  for (let i = 0; i < n; i++) {
    bytes[32] = i & 255 // the lowest byte of S: the value stays below the group order
    bytes[33] = i >> 8
    entries.push(`v1a,${bytes.toString('base64')}`)
  }
  return entries.join(' ')
}

const headersFor = (signature: string) => ({ 'webhook-id': 'msg_1', 'webhook-timestamp': String(now.getTime() / 1000), 'webhook-signature': signature })

test('a genuine request signed by the last of three configured keys costs at most three verifications', async () => {
  const verify = createVerifier(options)
  const headers = signPayload({ id: 'msg_1', timestamp: now, body }, { signingKey: keys[2]!.signingKey })
  const count = await countVerifications(async () => assert.equal((await verify({ headers, body })).id, 'msg_1'))
  assert.ok(count >= 1 && count <= 3, `${count} verifications`)
})

test('an unsigned request with 170 crafted v1a entries is refused without verifying any', async () => {
  const verify = createVerifier(options)
  const count = await countVerifications(() =>
    assert.rejects(verify({ headers: headersFor(forgedEntries(170)), body }), { code: 'ERR_CALLBACK_SIGNATURE_MALFORMED' })
  )
  assert.equal(count, 0, 'more entries than any sender sends are refused from the header alone')
})

test('crafted v1a entries within the entry limit cost at most twice a genuine request: two entries per key', async () => {
  const verify = createVerifier(options)
  const count = await countVerifications(() =>
    assert.rejects(verify({ headers: headersFor(forgedEntries(16)), body }), { code: 'ERR_CALLBACK_SIGNATURE_MISMATCH' })
  )
  assert.ok(count <= 2 * keys.length, `${count} verifications for 16 forged entries and ${keys.length} keys`)
})

test('a repeated entry is verified once', async () => {
  const verify = createVerifier({ publicKey: keys[0]!.publicKey, now: clock })
  const entry = forgedEntries(1)
  const count = await countVerifications(() =>
    assert.rejects(verify({ headers: headersFor(Array(12).fill(entry).join(' ')), body }), { code: 'ERR_CALLBACK_SIGNATURE_MISMATCH' })
  )
  assert.equal(count, 1)
})

test('entries that can never verify (S not below the group order, R not a canonical encoding) cost no verification', async () => {
  const verify = createVerifier(options)
  const base = Buffer.from(forgedEntries(1).slice(4), 'base64')
  const bigS = Buffer.from(base)
  bigS.fill(0xff, 32) // S = 2^256 - 1
  const bigR = Buffer.from(base)
  bigR.fill(0xff, 0, 32) // y = 2^255 - 1 > p
  const signature = [bigS, bigR].map((bytes) => `v1a,${bytes.toString('base64')}`).join(' ')
  const count = await countVerifications(() =>
    assert.rejects(verify({ headers: headersFor(signature), body }), { code: 'ERR_CALLBACK_SIGNATURE_MISMATCH' })
  )
  assert.equal(count, 0)
})

test('a sender mid-rotation whose first signature is by a key the receiver has not got yet still verifies', async () => {
  const unknown = generateSigningKey()
  const headers = signPayload({ id: 'msg_1', timestamp: now, body }, { signingKey: [unknown.signingKey, keys[1]!.signingKey] })
  const callback = await createVerifier(options)({ headers, body })
  assert.equal(callback.id, 'msg_1')
})

test('a key that matched before is tried first, so a rotated receiver pays one verification per genuine request', async () => {
  const verify = createVerifier(options)
  const headers = signPayload({ id: 'msg_1', timestamp: now, body }, { signingKey: keys[2]!.signingKey })
  await verify({ headers, body })
  assert.equal(await countVerifications(() => verify({ headers, body })), 1)
})

test('checkHeaders refuses from the headers alone what no body can make verify, and passes what might', () => {
  const verify = createVerifier(options)
  const good = signPayload({ id: 'msg_1', timestamp: now, body }, { signingKey: keys[0]!.signingKey })
  verify.checkHeaders(good)
  verify.checkHeaders({ ...good, 'webhook-signature': forgedEntries(16) }) // well-formed: only the body can tell
  const refused: Array<[Record<string, string>, string]> = [
    [{ ...good, 'webhook-timestamp': '1' }, 'ERR_CALLBACK_SIGNATURE_TIMESTAMP_TOO_OLD'],
    [{ ...good, 'webhook-timestamp': 'soon' }, 'ERR_CALLBACK_SIGNATURE_TIMESTAMP_MALFORMED'],
    [{ 'webhook-id': 'msg_1', 'webhook-timestamp': good['webhook-timestamp'] }, 'ERR_CALLBACK_SIGNATURE_HEADERS_MISSING'],
    [{ ...good, 'webhook-signature': 'v1a,abc' }, 'ERR_CALLBACK_SIGNATURE_MALFORMED'],
    [{ ...good, 'webhook-signature': forgedEntries(17) }, 'ERR_CALLBACK_SIGNATURE_MALFORMED'],
    // Only an HMAC entry, and no secret to check it with: a mismatch whatever the body.
    [{ ...good, 'webhook-signature': `v1,${Buffer.alloc(32).toString('base64')}` }, 'ERR_CALLBACK_SIGNATURE_MISMATCH'],
  ]
  for (const [headers, code] of refused) assert.throws(() => verify.checkHeaders(headers), { code })
})
