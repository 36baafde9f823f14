/**
 * A receiver on a real node:http server on 127.0.0.1 that answers from a script and remembers
 * every request it saw (headers and raw body), for tests of the sender against real sockets.
 */
import { createServer } from 'node:http'
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'

export interface ReceivedCallback {
  method: string
  path: string
  headers: IncomingHttpHeaders
  body: string
  /** `Date.now()` when the body had arrived. */
  at: number
}

/** Answers the request; `index` counts requests from 0. May leave the request hanging. */
export type ReceiverScript = (request: ReceivedCallback, response: ServerResponse, index: number, raw: IncomingMessage) => void

export interface TestReceiver {
  /** `http://127.0.0.1:<port>` */
  origin: string
  /** `origin` + `/callbacks` */
  url: string
  received: ReceivedCallback[]
  close(): Promise<void>
}

export async function startReceiver(script: ReceiverScript): Promise<TestReceiver> {
  const received: ReceivedCallback[] = []
  const server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (chunk: Buffer) => chunks.push(chunk))
    req.on('end', () => {
      const request = { method: req.method ?? '', path: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks).toString('utf8'), at: Date.now() }
      received.push(request)
      script(request, res, received.length - 1, req)
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  const origin = `http://127.0.0.1:${port}`
  return {
    origin,
    url: `${origin}/callbacks`,
    received,
    async close() {
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
}

/** Answers `status` with an optional body and headers. */
export function answer(response: ServerResponse, status: number, body = '', headers: Record<string, string> = {}): void {
  response.writeHead(status, headers).end(body)
}
