/**
 * A real node:http server on 127.0.0.1 for tests that fetch JWKS or answer challenges. It records
 * every request it received, so tests can assert what reached it (and how often).
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'

export interface ReceivedRequest {
  method: string
  url: string
  headers: IncomingMessage['headers']
  body: string
}

export interface LoopbackServer {
  /** `http://127.0.0.1:<port>` */
  origin: string
  requests: ReceivedRequest[]
  close(): Promise<void>
}

/** Starts a server whose handler sees the request with its body already read. */
export async function startLoopbackServer(
  handler: (req: ReceivedRequest, res: ServerResponse) => void | Promise<void>
): Promise<LoopbackServer> {
  const requests: ReceivedRequest[] = []
  const server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (chunk: Buffer) => chunks.push(chunk))
    req.on('end', () => {
      const received = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks).toString('utf8') }
      requests.push(received)
      Promise.resolve(handler(received, res)).catch((error: unknown) => {
        res.writeHead(500).end(String(error))
      })
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    origin: `http://127.0.0.1:${port}`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      })
  }
}
