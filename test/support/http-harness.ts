/**
 * Runs a Node `http.Server` on 127.0.0.1 for receiver tests and talks to it over a real socket.
 */
import type { Server, Socket } from 'node:net'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { request as httpRequest } from 'node:http'
import { within } from './waits.ts'
import type { Answer, Harness } from './receiver-suite.ts'
import type { SignedCallback } from './receiver-cases.ts'

export interface Listening extends Harness {
  url: string
  /** Bytes the server read from all its connections so far. */
  bytesRead(): number
}

/** Listens on an ephemeral loopback port; `path` is appended to the URL. */
export async function listening(server: Server, path = '/callbacks'): Promise<Listening> {
  const sockets = new Set<Socket>()
  let closedBytes = 0
  server.on('connection', (socket: Socket) => {
    sockets.add(socket)
    socket.once('close', () => {
      closedBytes += socket.bytesRead
      sockets.delete(socket)
    })
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => resolve())
  })
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('no TCP address')
  const url = `http://127.0.0.1:${address.port}${path}`
  return {
    url,
    bytesRead: () => closedBytes + [...sockets].reduce((sum, socket) => sum + socket.bytesRead, 0),
    send: (callback) => post(url, callback),
    async hangUp(callback, when) {
      // the receiver's own 'close' listeners come first (they were added when the request arrived)
      const seenClosed = new Promise<void>((resolve) => {
        server.once('request', (_request: IncomingMessage, response: ServerResponse) =>
          response.once('close', () => setImmediate(resolve))
        )
      })
      const request = httpRequest(url, { method: 'POST', headers: callback.headers, agent: false })
      request.on('error', () => {})
      request.end(callback.body)
      await within(when, 'the handler was never entered for the request to hang up on')
      request.destroy()
      await within(seenClosed, 'the server never saw the client hang up')
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy()
        server.close(() => resolve())
      }),
  }
}

/** POSTs a signed callback and reads the whole answer. */
export async function post(url: string, callback: SignedCallback): Promise<Answer> {
  const response = await fetch(url, { method: 'POST', headers: callback.headers, body: callback.body })
  return { status: response.status, contentType: response.headers.get('content-type'), body: await response.text() }
}
