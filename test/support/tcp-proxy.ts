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
  /**
   * The far side of every open connection dies silently: nothing more is forwarded either way, and
   * no FIN or RST is sent, so the client only learns of it from its own timeouts. New connections
   * go through as usual (the database came back on a new connection). With `clientPort`, only the
   * connection the client opened from that local port dies: one statement's connection, say.
   */
  silence(only?: { clientPort: number }): void
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
    live.add({ client, upstream })
    const forget = () => live.forEach((pair) => pair.client === client && live.delete(pair))
    client.on('close', forget)
  })
  const live = new Set<{ client: Socket; upstream: Socket }>()
  /** Silenced sockets are kept open (and referenced) until close(), as a dead peer leaves them. */
  const silenced: Socket[] = []
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
    silence(only) {
      for (const pair of live) {
        const { client, upstream } = pair
        if (only !== undefined && client.remotePort !== only.clientPort) continue
        client.unpipe(upstream)
        upstream.unpipe(client)
        // whatever arrives from now on is read and dropped, so no side sees back-pressure either
        client.removeAllListeners('data').on('data', () => {})
        upstream.removeAllListeners('data').on('data', () => {})
        open.delete(client)
        open.delete(upstream)
        silenced.push(client, upstream)
        live.delete(pair)
      }
    },
    get connections() {
      return connections
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of open) socket.destroy()
        for (const socket of silenced) socket.destroy()
        server.close(() => resolve())
      })
  }
}
