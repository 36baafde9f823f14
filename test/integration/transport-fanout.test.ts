/**
 * A name that resolves to a thousand addresses: one attempt dials a bounded few of them, not every
 * one three times over. The resolver and the connector are injected; no socket is ever opened.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createCallbackTask, createHttpTransport, createMemoryStore, deliver, generateSecret } from 'endpoint-callback'
import { refusingConnector, scriptedResolver } from '../support/ssrf.ts'

/** Addresses per connection the transport dials at most (documented in createHttpTransport). */
const MAX_ADDRESSES = 8
/** Connections per attempt: the first, and two quick retries of a refused connection. */
const CONNECTIONS_PER_ATTEMPT = 3

const thousand = Array.from({ length: 1000 }, (_, i) => `44.${Math.floor(i / 250)}.${i % 250}.1`)

test('one send dials at most a few of the addresses a name resolves to', async () => {
  const connect = refusingConnector()
  const transport = createHttpTransport({ lookup: scriptedResolver(thousand), connect, timeoutMs: 5_000 })
  try {
    await assert.rejects(transport.send({ url: 'https://many.example/callbacks', headers: {}, body: '{}' }), { code: 'ERR_CALLBACK_CONNECTION' })
  } finally {
    await transport.close()
  }
  assert.equal(connect.dialled.length, MAX_ADDRESSES)
  assert.deepEqual(connect.dialled.map((dial) => dial.hostname), thousand.slice(0, MAX_ADDRESSES), 'the first ones, in the resolver order')
})

test('one attempt, quick retries included, dials at most 3 × 8 addresses', async () => {
  const connect = refusingConnector()
  const transport = createHttpTransport({ lookup: scriptedResolver(thousand), connect, timeoutMs: 5_000 })
  const sender = { store: createMemoryStore(), secret: generateSecret(), transport }
  try {
    const task = await createCallbackTask({ callbackUrl: 'https://many.example/callbacks', event: 'report.ready' }, sender)
    const report = await deliver(task, { ok: true }, sender)
    assert.equal(report.status, 'retrying')
    assert.match(report.error ?? '', /ERR_CALLBACK_CONNECTION/)
  } finally {
    await transport.close()
  }
  assert.ok(connect.dialled.length > MAX_ADDRESSES, 'the quick retries ran')
  assert.ok(connect.dialled.length <= CONNECTIONS_PER_ATTEMPT * MAX_ADDRESSES, `${connect.dialled.length} dials for one attempt`)
})
