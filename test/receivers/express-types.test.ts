/**
 * What a strict TypeScript user of `endpoint-callback/express` writes: `req.rawBody` kept by a JSON
 * parser's `verify` hook, and the callback's data typed on `res.locals` by `callbackReceiver<T>`.
 * These compile under the repository's strict tsconfig (npm test type-checks them) and run here.
 */
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { once } from 'node:events'
import type { Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import express from 'express'
import { generateSecret, signPayload } from 'endpoint-callback'
import { callbackReceiver } from 'endpoint-callback/express'

const secret = generateSecret()
let server: Server
let url: string

before(async () => {
  const app = express()
  app.use(express.json({ verify: (req, _res, buf) => { req.rawBody = buf } }))
  app.post('/reports', callbackReceiver<{ pages: number }>({ secret }), (req, res) => {
    const pages: number = res.locals.callback.data.pages
    res.json({ pages: pages + 1, sameAsReq: req.callback === res.locals.callback, parsed: req.body })
  })
  server = app.listen(0, '127.0.0.1')
  await once(server, 'listening')
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
})

after(async () => {
  server?.closeAllConnections()
  await new Promise((resolve) => server?.close(resolve))
})

test('callbackReceiver<T> puts the verified callback on res.locals with its data typed, after a JSON parser that kept req.rawBody', async () => {
  const body = '{"type":"report.ready","timestamp":"2030-01-01T00:00:00.000Z","data":{"pages":3}}'
  const headers = signPayload({ id: 'msg_typed', timestamp: new Date(), body }, { secret })
  const response = await fetch(`${url}/reports`, { method: 'POST', headers: { ...headers, 'content-type': 'application/json' }, body, signal: AbortSignal.timeout(10_000) })
  assert.equal(response.status, 200)
  assert.deepEqual(await response.json(), { pages: 4, sameAsReq: true, parsed: JSON.parse(body) })
})
