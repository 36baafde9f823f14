/**
 * A TCP proxy on 127.0.0.1 in front of a real server, that a test can cut (every connection reset,
 * new ones refused) and restore — the database "going away" without touching the shared server.
 */
import { connect, createServer, type Socket } from 'node:net'
import type { AddressInfo } from 'node:net'

export interface TcpProxy {
  port: number
  /** Resets every open connection and refuses new ones until `restore()`. */
  cut(): void
  restore(): void
  /** Connections accepted while up. */
  readonly connections: number
  close(): Promise<void>
}

export async function startTcpProxy(target: { host: string; port: number }): Promise<TcpProxy> {
  const open = new Set<Socket>()
  let down = false
  let connections = 0
  const server = createServer((client) => {
    if (down) {
      client.destroy()
      return
    }
    connections++
    const upstream = connect(target)
    open.add(client)
    open.add(upstream)
    const drop = () => {
      client.destroy()
      upstream.destroy()
      open.delete(client)
      open.delete(upstream)
    }
    client.on('error', drop).on('close', drop)
    upstream.on('error', drop).on('close', drop)
    client.pipe(upstream)
    upstream.pipe(client)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    port: (server.address() as AddressInfo).port,
    cut() {
      down = true
      for (const socket of open) socket.resetAndDestroy?.() ?? socket.destroy()
      open.clear()
    },
    restore() {
      down = false
    },
    get connections() {
      return connections
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of open) socket.destroy()
        server.close(() => resolve())
      })
  }
}
