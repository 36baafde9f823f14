/**
 * Interoperability, both ways, with the `standardwebhooks` reference library and with `svix` 1.x.
 * Both check timestamps against the real clock, so every message here is signed "now".
 * Neither JavaScript library implements `v1a` (Ed25519), so this covers `v1` only; `v1a` is held to
 * the published Go vector in vectors.test.ts.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Webhook as StandardWebhook } from 'standardwebhooks'
import { Webhook as SvixWebhook } from 'svix'
import { generateSecret, signPayload, verifySignature } from 'endpoint-callback'

const secret = generateSecret()
const libraries = [
  { name: 'standardwebhooks', library: new StandardWebhook(secret) },
  { name: 'svix', library: new SvixWebhook(secret) },
]

function envelope(data: unknown): string {
  return JSON.stringify({ type: 'report.ready', timestamp: new Date().toISOString(), data })
}

// UTF-8 beyond ASCII on purpose: both sides must sign the bytes, not the UTF-16 code units.
const bodies = [envelope({ reportId: 7 }), envelope({ name: 'Zoë 🎉 — 東京', list: [1, 2, 3] }), envelope({ big: 'x'.repeat(70_000) })]

function theyAccept(library: { verify(payload: string, headers: Record<string, string>): unknown }, body: string, headers: Record<string, string>): boolean {
  try {
    library.verify(body, headers)
    return true
  } catch {
    return false
  }
}

async function weAccept(body: string | Buffer, headers: Record<string, string>): Promise<boolean> {
  try {
    await verifySignature({ headers, body }, { secret })
    return true
  } catch (error) {
    assert.equal((error as Error).name, 'SignatureVerificationError')
    return false
  }
}

for (const { name, library } of libraries) {
  test(`what we sign, ${name} verifies`, () => {
    for (const body of bodies) {
      const headers = signPayload({ id: 'task_interop', timestamp: new Date(), body }, { secret })
      assert.deepEqual(library.verify(body, headers), JSON.parse(body))
      assert.deepEqual(library.verify(Buffer.from(body), headers), JSON.parse(body))
    }
  })

  test(`what ${name} signs, we verify`, async () => {
    for (const body of bodies) {
      const timestamp = new Date()
      const headers = {
        'webhook-id': 'msg_interop',
        'webhook-timestamp': String(Math.floor(timestamp.getTime() / 1000)),
        'webhook-signature': library.sign('msg_interop', timestamp, body),
      }
      const callback = await verifySignature({ headers, body: Buffer.from(body) }, { secret })
      assert.equal(callback.id, 'msg_interop')
      assert.deepEqual(callback.data, JSON.parse(body).data)
      assert.equal(callback.body, body)
    }
  })

  test(`what we reject, ${name} rejects too`, async () => {
    const body = bodies[1]!
    const seconds = Math.floor(Date.now() / 1000)
    const good = signPayload({ id: 'task_interop', timestamp: seconds, body }, { secret })
    const sig = good['webhook-signature']
    const signedAt = (t: number) => signPayload({ id: 'task_interop', timestamp: t, body }, { secret })
    const without = (header: keyof typeof good) => {
      const copy: Record<string, string> = { ...good }
      delete copy[header]
      return copy
    }
    const cases: Array<[string, string, Record<string, string>]> = [
      ['a changed body', body.replace('Zoë', 'Zoe'), good],
      ['a body with a trailing newline', body + '\n', good],
      ['another id', body, { ...good, 'webhook-id': 'task_other' }],
      ['a shifted timestamp', body, { ...good, 'webhook-timestamp': String(seconds - 1) }],
      ['a signature from another secret', body, signPayload({ id: 'task_interop', timestamp: seconds, body }, { secret: generateSecret() })],
      ['a flipped signature byte', body, { ...good, 'webhook-signature': sig.slice(0, 5) + (sig[5] === 'A' ? 'B' : 'A') + sig.slice(6) }],
      ['a truncated signature', body, { ...good, 'webhook-signature': sig.slice(0, 20) }],
      ['a bare version', body, { ...good, 'webhook-signature': 'v1,' }],
      ['only an unknown version', body, { ...good, 'webhook-signature': 'v2' + sig.slice(2) }],
      ['a signature with stray low bits', body, { ...good, 'webhook-signature': sig.slice(0, -2) + String.fromCharCode(sig.charCodeAt(sig.length - 2) + 1) + '=' }],
      ['no id', body, without('webhook-id')],
      ['no timestamp', body, without('webhook-timestamp')],
      ['no signature', body, without('webhook-signature')],
      ['a timestamp that is not a number', body, { ...good, 'webhook-timestamp': 'hello' }],
      ['a timestamp six minutes old', body, signedAt(seconds - 360)],
      ['a timestamp six minutes ahead', body, signedAt(seconds + 360)],
    ]
    for (const [what, sentBody, headers] of cases) {
      assert.equal(await weAccept(sentBody, headers), false, `we accept ${what}`)
      assert.equal(theyAccept(library, sentBody, headers), false, `${name} accepts ${what}`)
    }
    // And the untouched request is accepted by both, so the rejections above mean something.
    assert.equal(await weAccept(body, good), true)
    assert.equal(theyAccept(library, body, good), true)
  })
}

test('svix-* headers signed by svix verify with us, and ours verify with svix under svix-* names', async () => {
  const svix = new SvixWebhook(secret)
  const body = bodies[0]!
  const timestamp = new Date()
  const theirs = {
    'svix-id': 'msg_svix',
    'svix-timestamp': String(Math.floor(timestamp.getTime() / 1000)),
    'svix-signature': svix.sign('msg_svix', timestamp, body),
  }
  assert.equal((await verifySignature({ headers: theirs, body }, { secret })).id, 'msg_svix')
  const ours = signPayload({ id: 'task_svix', timestamp, body }, { secret })
  const renamed = { 'svix-id': ours['webhook-id'], 'svix-timestamp': ours['webhook-timestamp'], 'svix-signature': ours['webhook-signature'] }
  assert.deepEqual(svix.verify(body, renamed), JSON.parse(body))
})

test('a rotation header with two of our signatures verifies with either secret in the reference library', () => {
  const next = generateSecret()
  const body = bodies[0]!
  const headers = signPayload({ id: 'task_rotate', timestamp: new Date(), body }, { secret: [secret, next] })
  assert.deepEqual(new StandardWebhook(secret).verify(body, headers), JSON.parse(body))
  assert.deepEqual(new StandardWebhook(next).verify(body, headers), JSON.parse(body))
})
