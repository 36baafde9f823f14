/**
 * Seams for the SSRF and transport tests: a resolver that answers what the test says, a connector
 * that records the address it was asked to dial and refuses (so no packet leaves the machine), and
 * raw loopback servers that count the connections they accept.
 */
import { createServer } from 'node:net'
import type { AddressInfo, Server, Socket } from 'node:net'
import type { LookupAddress } from 'node:dns'
import type { buildConnector } from 'undici'
import type { LookupFunction } from 'endpoint-callback'

/** What a scripted resolver answers for one call: addresses, or a DNS error code. */
export type ResolverAnswer = string[] | { error: string }

/**
 * A `dns.lookup`-compatible resolver answering from a script; `answers` is used in turn, the last
 * one repeating. `calls` lists the names asked for.
 */
export function scriptedResolver(...answers: ResolverAnswer[]): LookupFunction & { calls: string[] } {
  const calls: string[] = []
  const lookup = (hostname: string, _options: unknown, callback: (error: NodeJS.ErrnoException | null, addresses: LookupAddress[]) => void) => {
    const answer = answers[Math.min(calls.length, answers.length - 1)] ?? []
    calls.push(hostname)
    setImmediate(() => {
      if (!Array.isArray(answer)) {
        callback(Object.assign(new Error(`getaddrinfo ${answer.error} ${hostname}`), { code: answer.error, hostname }), [])
        return
      }
      callback(null, answer.map((address) => ({ address, family: address.includes(':') ? 6 : 4 })))
    })
  }
  return Object.assign(lookup as LookupFunction, { calls })
}

/** A connector that records what it was asked to dial and never opens a socket. */
export function refusingConnector(): buildConnector.connector & { dialled: Array<{ hostname: string; port: string; servername?: string }> } {
  const dialled: Array<{ hostname: string; port: string; servername?: string }> = []
  const connect: buildConnector.connector = (options, callback) => {
    dialled.push({ hostname: options.hostname, port: options.port, ...(options.servername ? { servername: options.servername } : {}) })
    setImmediate(() => callback(Object.assign(new Error('connect ECONNREFUSED (test connector never dials)'), { code: 'ECONNREFUSED' }), null))
  }
  return Object.assign(connect, { dialled })
}

/** A TCP server on 127.0.0.1 that counts connections and runs `onConnection` for each. */
export interface LoopbackServer {
  port: number
  connections: number
  sockets: Socket[]
  close(): Promise<void>
}

export async function loopbackServer(onConnection: (socket: Socket) => void = (socket) => socket.destroy()): Promise<LoopbackServer> {
  const sockets: Socket[] = []
  const state = { connections: 0 }
  const server: Server = createServer((socket) => {
    state.connections++
    sockets.push(socket)
    socket.on('error', () => {})
    onConnection(socket)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    port,
    get connections() {
      return state.connections
    },
    sockets,
    async close() {
      for (const socket of sockets) socket.destroy()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
}

/** Reads one HTTP/1.1 request head (and ignores the body) before `then` runs. */
export function afterRequestHead(socket: Socket, then: (head: string) => void): void {
  let received = ''
  const onData = (chunk: Buffer) => {
    received += chunk.toString('latin1')
    const end = received.indexOf('\r\n\r\n')
    if (end === -1) return
    socket.off('data', onData)
    socket.on('data', () => {})
    then(received.slice(0, end))
  }
  socket.on('data', onData)
}
