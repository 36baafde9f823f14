/**
 * A receiver on 127.0.0.1 that records every callback it is sent, by `webhook-id`.
 */
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'

export interface LoopbackReceiver {
  url: string
  /** How many requests each webhook-id arrived in. */
  seen: Map<string, number>
  /** When each webhook-id first arrived (ms, `Date.now()`). */
  firstSeenAt: Map<string, number>
  /** The `x-sent-by` header of each webhook-id's first request, where the sender set one. */
  firstSentBy: Map<string, string>
  /** Requests received in all. */
  readonly requests: number
  close(): Promise<void>
}

export interface ReceiverOptions {
  /** Time before answering, ms, so that deliveries are in flight. Default 0. */
  delayMs?: number
  /** The status to answer. Default 200. */
  status?: (id: string) => number
}

export async function startLoopbackReceiver(options: ReceiverOptions = {}): Promise<LoopbackReceiver> {
  const seen = new Map<string, number>()
  const firstSeenAt = new Map<string, number>()
  const firstSentBy = new Map<string, string>()
  let requests = 0
  const server = createServer((req, res) => {
    const id = String(req.headers['webhook-id'] ?? '')
    requests++
    seen.set(id, (seen.get(id) ?? 0) + 1)
    if (!firstSeenAt.has(id)) {
      firstSeenAt.set(id, Date.now())
      const by = req.headers['x-sent-by']
      if (typeof by === 'string') firstSentBy.set(id, by)
    }
    req.resume()
    req.on('end', () => {
      const answer = () => {
        res.writeHead(options.status?.(id) ?? 200, { 'content-type': 'text/plain' })
        res.end('ok')
      }
      if (options.delayMs) setTimeout(answer, options.delayMs)
      else answer()
    })
  })
  server.keepAliveTimeout = 10_000
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}/callbacks`,
    seen,
    firstSeenAt,
    firstSentBy,
    get requests() {
      return requests
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      })
  }
}
