import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import { lookup as dnsLookup } from 'node:dns'
import { createHttpTransport, UrlPolicyError } from 'endpoint-callback'
import type { HttpTransportOptions } from 'endpoint-callback'
import { refusingConnector, scriptedResolver } from '../support/ssrf.ts'

describe('createHttpTransport options', () => {
  test('bad options are TypeErrors that name the option, thrown at creation', () => {
    const cases: Array<[unknown, RegExp]> = [
      [null, /options must be an object/],
      [{ timeoutMs: 0 }, /^timeoutMs /],
      [{ timeoutMs: -5 }, /^timeoutMs /],
      [{ timeoutMs: Number.POSITIVE_INFINITY }, /^timeoutMs /],
      [{ timeoutMs: '1000' }, /^timeoutMs /],
      [{ maxResponseBytes: -1 }, /^maxResponseBytes /],
      [{ maxResponseBytes: 1.5 }, /^maxResponseBytes /],
      [{ lookup: 'dns' }, /^lookup /],
      [{ connections: 0 }, /^connections /],
      [{ keepAliveTimeoutMs: 0 }, /^keepAliveTimeoutMs /],
      [{ connect: 'tls' }, /^connect /],
      [{ connect: { lookup: dnsLookup } }, /^connect\.lookup .*lookup option/],
      [{ connect: { socketPath: '/tmp/receiver.sock' } }, /^connect\.socketPath /],
      [{ urlPolicy: { allowHosts: ['10.0.0.0/40'] } }, /^urlPolicy\.allowHosts\[0\] /],
    ]
    for (const [options, message] of cases) {
      assert.throws(() => createHttpTransport(options as HttpTransportOptions), (error: unknown) => error instanceof TypeError && message.test(error.message), JSON.stringify(options))
    }
  })

  test('node\'s own dns.lookup is accepted as the resolver', async () => {
    const transport = createHttpTransport({ lookup: dnsLookup, maxResponseBytes: 0, timeoutMs: 1 })
    assert.equal(transport.timeoutMs, 1)
    await transport.close()
  })

  test('a refused URL rejects before the resolver or the connector is asked anything', async () => {
    const lookup = scriptedResolver(['93.184.216.34'])
    const connect = refusingConnector()
    const transport = createHttpTransport({ lookup, connect })
    try {
      await assert.rejects(transport.send({ url: 'https://10.0.0.1/hook', headers: {}, body: '' }), UrlPolicyError)
      await assert.rejects(transport.send({ url: 'http://example.com/hook', headers: {}, body: '' }), { code: 'ERR_CALLBACK_URL_PROTOCOL' })
      assert.deepEqual(lookup.calls, [])
      assert.deepEqual(connect.dialled, [])
    } finally {
      await transport.close()
    }
  })

  test('an already aborted signal rejects with its reason without resolving anything', async () => {
    const lookup = scriptedResolver(['93.184.216.34'])
    const transport = createHttpTransport({ lookup, connect: refusingConnector() })
    try {
      const reason = new Error('stopped')
      await assert.rejects(transport.send({ url: 'https://example.com/', headers: {}, body: '', signal: AbortSignal.abort(reason) }), (error) => error === reason)
      assert.deepEqual(lookup.calls, [])
    } finally {
      await transport.close()
    }
  })

  test('a resolver that throws instead of calling back is reported as a delivery error, not a crash', async () => {
    const transport = createHttpTransport({
      lookup: () => {
        throw Object.assign(new Error('resolver exploded'), { code: 'EAI_FAIL' })
      },
      connect: refusingConnector(),
    })
    try {
      await assert.rejects(transport.send({ url: 'https://example.com/', headers: {}, body: '' }), { name: 'DeliveryError', code: 'ERR_CALLBACK_DNS' })
    } finally {
      await transport.close()
    }
  })

  test('a resolver answering one address the non-"all" way is still vetted', async () => {
    const connect = refusingConnector()
    const single = ((_host: string, _options: unknown, callback: (error: null, address: string, family: number) => void) =>
      callback(null, '127.0.0.1', 4)) as unknown as HttpTransportOptions['lookup'] & {}
    const transport = createHttpTransport({ lookup: single, connect })
    try {
      await assert.rejects(transport.send({ url: 'https://example.com/', headers: {}, body: '' }), { code: 'ERR_CALLBACK_URL_FORBIDDEN_ADDRESS' })
      assert.deepEqual(connect.dialled, [])
    } finally {
      await transport.close()
    }
  })
})
