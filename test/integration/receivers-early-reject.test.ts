// Headers that can never verify are refused before the body is read: a client that sends such
// headers and then trickles a large body gets its 4xx at once and the connection closed, instead of
// holding the receiver open for as long as it cares to send.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { createServer } from 'node:http'
import type { RequestListener, Server } from 'node:http'
import { connect } from 'node:net'
import type { AddressInfo } from 'node:net'
import express from 'express'
import Koa from 'koa'
import { callbackReceiver as expressReceiver } from 'endpoint-callback/express'
import { callbackReceiver as koaReceiver } from 'endpoint-callback/koa'
import { callbackHandler, verifyRequest } from 'endpoint-callback/fetch'
import { ROTATING, signed } from '../support/receiver-cases.ts'

const BODY_BYTES = 1024 * 1024

/** Header sets that no body can make verify, with the status each must get. */
function hopeless(): Array<{ name: string; headers: Record<string, string>; status: number; code: string }> {
  const good = signed('signPayload').headers
  const { 'webhook-signature': _signature, ...unsigned } = good
  return [
    { name: 'timestamp 1', headers: { ...good, 'webhook-timestamp': '1' }, status: 401, code: 'ERR_CALLBACK_SIGNATURE_TIMESTAMP_TOO_OLD' },
    { name: 'timestamp in a year', headers: { ...good, 'webhook-timestamp': String(Math.floor(Date.now() / 1000) + 365 * 86400) }, status: 401, code: 'ERR_CALLBACK_SIGNATURE_TIMESTAMP_TOO_NEW' },
    { name: 'malformed signature list', headers: { ...good, 'webhook-signature': 'v1,not-base64 v1a,short' }, status: 400, code: 'ERR_CALLBACK_SIGNATURE_MALFORMED' },
    { name: 'missing signature header', headers: unsigned, status: 400, code: 'ERR_CALLBACK_SIGNATURE_HEADERS_MISSING' },
  ]
}

interface Exchange {
  status: number
  code: string
  /** Bytes of the body the client had sent when the answer arrived. */
  sentWhenAnswered: number
  /** Whether the server closed the connection within the wait. */
  closed: boolean
}

/**
 * Sends the headers with a 1 MiB content-length, then 1 KiB of body every 50 ms (a whole send would
 * take almost a minute). Resolves with the answer and whether the server then closed; fails after 5 s.
 */
function trickle(port: number, headers: Record<string, string>): Promise<Exchange> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1')
    let sent = 0
    let answer = ''
    let sentWhenAnswered = -1
    const timer = setInterval(() => {
      if (sent < BODY_BYTES && socket.writable) {
        socket.write('x'.repeat(1024))
        sent += 1024
      }
    }, 50)
    const give = (closed: boolean) => {
      clearInterval(timer)
      clearTimeout(deadline)
      socket.destroy()
      const match = /^HTTP\/1\.1 (\d{3})/.exec(answer)
      if (match === null) return reject(new Error(`no answer within 5 s (sent ${sent} bytes of body)`))
      const json = answer.slice(answer.indexOf('\r\n\r\n') + 4)
      const code = /"code":"([A-Z_]+)"/.exec(json)?.[1] ?? ''
      resolve({ status: Number(match[1]), code, sentWhenAnswered, closed })
    }
    const deadline = setTimeout(() => give(false), 5000)
    socket.on('data', (chunk) => {
      if (sentWhenAnswered < 0) sentWhenAnswered = sent
      answer += chunk.toString()
    })
    socket.on('end', () => give(true))
    socket.on('error', () => {}) // a reset after the answer is as good as a close
    socket.on('close', () => give(true))
    const lines = Object.entries({ ...headers, 'content-length': String(BODY_BYTES), host: '127.0.0.1' }).map(([name, value]) => `${name}: ${value}`)
    socket.write(`POST /callbacks HTTP/1.1\r\n${lines.join('\r\n')}\r\n\r\n`)
  })
}

async function listen(handler: RequestListener): Promise<{ server: Server; port: number }> {
  const server = createServer(handler).listen(0, '127.0.0.1')
  await once(server, 'listening')
  return { server, port: (server.address() as AddressInfo).port }
}

async function close(server: Server): Promise<void> {
  server.closeAllConnections()
  server.close()
  await once(server, 'close')
}

const apps: Record<string, () => RequestListener> = {
  express: () => {
    const app = express()
    app.post('/callbacks', expressReceiver(ROTATING), (_req, res) => void res.sendStatus(204))
    return app
  },
  koa: () => {
    const app = new Koa()
    app.use(koaReceiver(ROTATING))
    app.use((ctx) => void (ctx.status = 204))
    return app.callback()
  },
}

for (const [framework, makeApp] of Object.entries(apps)) {
  test(`${framework}: headers that can never verify are answered at once and the connection closed, the body left unread`, async (t) => {
    const { server, port } = await listen(makeApp())
    try {
      for (const testCase of hopeless()) {
        await t.test(testCase.name, async () => {
          const exchange = await trickle(port, testCase.headers)
          assert.equal(exchange.status, testCase.status)
          assert.equal(exchange.code, testCase.code)
          assert.ok(exchange.sentWhenAnswered < 64 * 1024, `answered only after ${exchange.sentWhenAnswered} body bytes`)
          assert.ok(exchange.closed, 'the server kept the connection open to read the rest of the body')
        })
      }
    } finally {
      await close(server)
    }
  })
}

/** A request whose body never ends and counts how often it was pulled. */
function endlessRequest(headers: Record<string, string>): { request: Request; pulls: () => number } {
  let pulls = 0
  const body = new ReadableStream<Uint8Array>(
    {
      pull(controller) {
        pulls++
        controller.enqueue(new Uint8Array(1024))
        return new Promise(() => {}) // and then nothing more, ever
      },
    },
    { highWaterMark: 0 }
  )
  const request = new Request('http://127.0.0.1/callbacks', { method: 'POST', headers, body, duplex: 'half' } as RequestInit)
  return { request, pulls: () => pulls }
}

test('fetch: callbackHandler and verifyRequest refuse hopeless headers without pulling the body', async (t) => {
  const handle = callbackHandler(ROTATING, () => new Response(null, { status: 204 }))
  for (const testCase of hopeless()) {
    await t.test(testCase.name, async () => {
      const handled = endlessRequest(testCase.headers)
      const response = await withDeadline(handle(handled.request))
      assert.equal(response.status, testCase.status)
      assert.equal(((await response.json()) as { code: string }).code, testCase.code)
      assert.equal(handled.pulls(), 0, 'the body was read')
      const verified = endlessRequest(testCase.headers)
      await assert.rejects(withDeadline(verifyRequest(verified.request, ROTATING)), { code: testCase.code })
      assert.equal(verified.pulls(), 0, 'the body was read')
    })
  }
})

function withDeadline<T>(promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error('no answer within 5 s: the receiver waits for a body that never ends')), 5000)
  })
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer))
}
