/**
 * Endpoints a client might give as its callback URL, on 127.0.0.1: one that accepts and never
 * answers (tarpit), one that answers a byte a second (trickle), and one whose answer the test sets.
 * Each counts the requests it received and how many it holds open at once.
 */
import { createServer } from 'node:http'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'

export interface HostileEndpoint {
  /** `http://127.0.0.1:<port>/hook` */
  url: string
  /** Requests received so far. */
  readonly received: number
  /** Requests open right now, and the most ever open at once. */
  readonly open: number
  readonly maxOpen: number
  close(): Promise<void>
}

export type Handler = (request: IncomingMessage, response: ServerResponse) => void

/** A tarpit: reads the request, never answers. */
export const tarpit: Handler = () => {}

/** Answers 200 with a body of one byte a second, forever. */
export const trickle: Handler = (_request, response) => {
  response.writeHead(200, { 'content-type': 'text/plain' })
  const timer = setInterval(() => response.write('.'), 1000)
  response.on('close', () => clearInterval(timer))
}

/** Starts an endpoint; `handler` may be swapped through the returned object's `handle`. */
export async function startEndpoint(handler: Handler): Promise<HostileEndpoint & { handle: Handler }> {
  let received = 0
  let open = 0
  let maxOpen = 0
  const endpoint = {
    handle: handler,
    url: '',
    get received() {
      return received
    },
    get open() {
      return open
    },
    get maxOpen() {
      return maxOpen
    },
    close: async () => {},
  }
  const server = createServer((request, response) => {
    received++
    open++
    maxOpen = Math.max(maxOpen, open)
    response.on('close', () => open--)
    request.resume()
    request.on('end', () => endpoint.handle(request, response))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  endpoint.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`
  endpoint.close = () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections()
      server.close(() => resolve())
    })
  return endpoint
}
