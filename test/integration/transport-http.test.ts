import { test, describe, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { createServer } from 'node:http'
import type { IncomingMessage, Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { createHttpTransport, DeliveryError, UrlPolicyError, VERSION } from 'endpoint-callback'
import { loopbackServer } from '../support/ssrf.ts'
import { within } from '../support/waits.ts'

const LOCAL = { allowHttp: true, allowHosts: ['127.0.0.1'] }

interface Seen {
  method: string
  url: string
  headers: IncomingMessage['headers']
  body: string
}

let server: Server
let base: string
const seen: Seen[] = []

before(async () => {
  server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (chunk: Buffer) => chunks.push(chunk))
    req.on('end', () => {
      seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks).toString() })
      switch (new URL(req.url ?? '/', 'http://receiver').pathname) {
        case '/ok':
          res.writeHead(200, { 'content-type': 'application/json', 'x-receiver': 'yes' }).end('{"received":true}')
          return
        case '/big':
          res.writeHead(200).end('x'.repeat(100_000))
          return
        case '/redirect':
          res.writeHead(302, { location: `${base}/target` }).end()
          return
        case '/gone':
          res.writeHead(410).end('gone')
          return
        case '/close':
          req.socket.destroy()
          return
        case '/hang':
          return
        default:
          res.writeHead(404).end()
      }
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
})

after(async () => {
  server.closeAllConnections()
  await new Promise((resolve) => server.close(resolve))
})

const last = () => seen[seen.length - 1]!

describe('createHttpTransport on a loopback receiver', () => {
  test('a 200 comes back with its status, headers, body and duration', async () => {
    const transport = createHttpTransport({ urlPolicy: LOCAL })
    try {
      const response = await transport.send({ url: `${base}/ok`, headers: { 'webhook-id': 'msg_1' }, body: '{"type":"a"}' })
      assert.equal(response.status, 200)
      assert.equal(response.body, '{"received":true}')
      assert.equal(response.headers['x-receiver'], 'yes')
      assert.ok(response.durationMs >= 0 && Number.isFinite(response.durationMs))
    } finally {
      await transport.close()
    }
  })

  test('the request is a POST with the body, the given headers, our user-agent and a JSON content-type by default', async () => {
    const transport = createHttpTransport({ urlPolicy: LOCAL })
    try {
      await transport.send({
        url: `${base}/ok`,
        headers: { 'webhook-id': 'msg_2', 'Webhook-Timestamp': '1700000000', 'webhook-signature': 'v1,abc' },
        body: new TextEncoder().encode('{"data":1}'),
      })
      const request = last()
      assert.equal(request.method, 'POST')
      assert.equal(request.body, '{"data":1}')
      assert.equal(request.headers['user-agent'], `endpoint-callback/${VERSION}`)
      assert.equal(request.headers['content-type'], 'application/json')
      assert.equal(request.headers['webhook-id'], 'msg_2')
      assert.equal(request.headers['webhook-timestamp'], '1700000000')
      assert.equal(request.headers['webhook-signature'], 'v1,abc')

      await transport.send({ url: `${base}/ok`, headers: { 'Content-Type': 'application/jose', 'user-agent': 'spoof' }, body: 'eyJ' })
      assert.equal(last().headers['content-type'], 'application/jose')
      assert.equal(last().headers['user-agent'], `endpoint-callback/${VERSION}`)
    } finally {
      await transport.close()
    }
  })

  test('a response body longer than maxResponseBytes is cut to that many bytes', async () => {
    const transport = createHttpTransport({ urlPolicy: LOCAL, maxResponseBytes: 1000 })
    try {
      const response = await transport.send({ url: `${base}/big`, headers: {}, body: '{}' })
      assert.equal(response.status, 200)
      assert.equal(response.body, 'x'.repeat(1000))
      // The connection was dropped rather than drained, and the next request still works.
      assert.equal((await transport.send({ url: `${base}/ok`, headers: {}, body: '{}' })).status, 200)
    } finally {
      await transport.close()
    }
  })

  test('a 302 is returned as it is and its location is never requested', async () => {
    const transport = createHttpTransport({ urlPolicy: LOCAL })
    try {
      const before = seen.length
      const response = await transport.send({ url: `${base}/redirect`, headers: {}, body: '{}' })
      assert.equal(response.status, 302)
      assert.equal(response.headers.location, `${base}/target`)
      await new Promise((resolve) => setTimeout(resolve, 50))
      assert.deepEqual(
        seen.slice(before).map((request) => request.url),
        ['/redirect'],
      )
    } finally {
      await transport.close()
    }
  })

  test('a receiver status such as 410 is a response, not an error', async () => {
    const transport = createHttpTransport({ urlPolicy: LOCAL })
    try {
      const response = await transport.send({ url: `${base}/gone`, headers: {}, body: '{}' })
      assert.equal(response.status, 410)
      assert.equal(response.body, 'gone')
    } finally {
      await transport.close()
    }
  })

  test('a refused connection rejects with ERR_CALLBACK_CONNECTION and keeps the cause', async () => {
    const closed = await loopbackServer()
    const port = closed.port
    await closed.close()
    const transport = createHttpTransport({ urlPolicy: LOCAL })
    try {
      const error = await transport.send({ url: `http://127.0.0.1:${port}/`, headers: {}, body: '{}' }).catch((error: unknown) => error)
      assert.ok(error instanceof DeliveryError)
      assert.equal(error.code, 'ERR_CALLBACK_CONNECTION')
      assert.equal((error.cause as { code?: string }).code, 'ECONNREFUSED')
    } finally {
      await transport.close()
    }
  })

  test('a receiver that closes the socket mid-request rejects with ERR_CALLBACK_CONNECTION', async () => {
    const transport = createHttpTransport({ urlPolicy: LOCAL })
    try {
      await assert.rejects(transport.send({ url: `${base}/close`, headers: {}, body: '{}' }), { name: 'DeliveryError', code: 'ERR_CALLBACK_CONNECTION' })
    } finally {
      await transport.close()
    }
  })

  test('https to a receiver that does not speak TLS rejects with ERR_CALLBACK_TLS', async () => {
    const transport = createHttpTransport({ urlPolicy: { allowHosts: ['127.0.0.1'] } })
    try {
      await assert.rejects(transport.send({ url: `${base.replace('http:', 'https:')}/ok`, headers: {}, body: '{}' }), { code: 'ERR_CALLBACK_TLS' })
    } finally {
      await transport.close()
    }
  })

  test('a name that does not resolve rejects with ERR_CALLBACK_DNS', async () => {
    const lookup = (_name: string, _options: unknown, callback: (error: NodeJS.ErrnoException | null, addresses: []) => void) =>
      callback(Object.assign(new Error('getaddrinfo ENOTFOUND nowhere.example'), { code: 'ENOTFOUND' }), [])
    const transport = createHttpTransport({ lookup })
    try {
      await assert.rejects(transport.send({ url: 'https://nowhere.example/', headers: {}, body: '{}' }), { code: 'ERR_CALLBACK_DNS' })
    } finally {
      await transport.close()
    }
  })

  test('the request signal aborts the exchange with its reason', async () => {
    const transport = createHttpTransport({ urlPolicy: LOCAL, timeoutMs: 30_000 })
    try {
      const controller = new AbortController()
      const reason = new Error('worker stopping')
      const pending = transport.send({ url: `${base}/hang`, headers: {}, body: '{}', signal: controller.signal })
      setTimeout(() => controller.abort(reason), 50)
      await assert.rejects(pending, (error) => error === reason)
    } finally {
      await transport.close()
    }
  })

  test('loopback is refused by default, with no connection made', async () => {
    const receiver = await loopbackServer()
    const transport = createHttpTransport({ urlPolicy: { allowHttp: true } })
    try {
      const error = await transport.send({ url: `http://127.0.0.1:${receiver.port}/ok`, headers: {}, body: '{}' }).catch((error: unknown) => error)
      assert.ok(error instanceof UrlPolicyError)
      assert.equal(error.code, 'ERR_CALLBACK_URL_FORBIDDEN_ADDRESS')
      assert.equal(receiver.connections, 0)
    } finally {
      await transport.close()
      await receiver.close()
    }
  })

  test('plain http is refused without allowHttp even for an allowed host', async () => {
    const transport = createHttpTransport({ urlPolicy: { allowHosts: ['127.0.0.1'] } })
    try {
      await assert.rejects(transport.send({ url: `${base}/ok`, headers: {}, body: '{}' }), { code: 'ERR_CALLBACK_URL_PROTOCOL' })
    } finally {
      await transport.close()
    }
  })

  test('localhost works once allowed by name, through the system resolver', async () => {
    const transport = createHttpTransport({ urlPolicy: { allowHttp: true, allowHosts: ['localhost'] } })
    try {
      const port = new URL(base).port
      const response = await transport.send({ url: `http://localhost:${port}/ok`, headers: {}, body: '{}' })
      assert.equal(response.status, 200)
    } finally {
      await transport.close()
    }
  })

  test('after close() the transport refuses to send and closing again is harmless', async () => {
    const transport = createHttpTransport({ urlPolicy: LOCAL })
    assert.equal((await transport.send({ url: `${base}/ok`, headers: {}, body: '{}' })).status, 200)
    await transport.close()
    await transport.close()
    await assert.rejects(transport.send({ url: `${base}/ok`, headers: {}, body: '{}' }), { code: 'ERR_CALLBACK_CONNECTION', message: /closed/ })
  })

  test('no error message or cause repeats the path, query, headers or body of the request', async () => {
    const secret = 'whsec_TOPSECRET'
    const closed = await loopbackServer()
    const closedPort = closed.port
    await closed.close()
    const failing = (lookupError?: string) =>
      createHttpTransport({
        urlPolicy: LOCAL,
        timeoutMs: 300,
        ...(lookupError === undefined
          ? {}
          : { lookup: (_h: string, _o: unknown, callback: (error: NodeJS.ErrnoException, a: []) => void) => callback(Object.assign(new Error(`getaddrinfo ${lookupError}`), { code: lookupError }), []) }),
      })
    const scenarios: Array<[string, ReturnType<typeof failing>, string]> = [
      ['refused', failing(), `http://127.0.0.1:${closedPort}/${secret}?token=${secret}`],
      ['reset', failing(), `${base}/close?token=${secret}`],
      ['timeout', failing(), `${base}/hang?token=${secret}`],
      ['dns', failing('ENOTFOUND'), `https://unknown.example/${secret}`],
      ['tls', failing(), `${base.replace('http:', 'https:')}/${secret}`],
      ['policy', failing(), `http://10.0.0.1/${secret}?token=${secret}`],
    ]
    for (const [name, transport, url] of scenarios) {
      try {
        const error = await within(
          transport
            .send({ url, headers: { authorization: `Bearer ${secret}`, 'webhook-signature': `v1,${secret}` }, body: secret })
            .then(() => assert.fail(`${name}: resolved`), (error: unknown) => error),
          `${name}: the 300 ms deadline did not end the attempt`,
          10_000
        )
        assert.ok(error instanceof Error, name)
        for (let current: unknown = error; current instanceof Error; current = current.cause) {
          assert.doesNotMatch(`${current.message} ${String(current.stack)}`, /TOPSECRET/, `${name}: ${current.message}`)
        }
      } finally {
        await transport.close()
      }
    }
  })

  test('the transport declares its timeout, so senders can check their lease against it', async () => {
    const [byDefault, given] = [createHttpTransport(), createHttpTransport({ timeoutMs: 2500 })]
    assert.equal(byDefault.timeoutMs, 10_000)
    assert.equal(given.timeoutMs, 2500)
    await Promise.all([byDefault.close(), given.close()])
  })
})
